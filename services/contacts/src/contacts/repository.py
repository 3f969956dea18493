"""Every query of the service. Each function takes the tenant and filters by it; `owner`
(when not None) further restricts contacts/companies to those a sales rep owns.

Rows travel as plain dicts (SQLAlchemy Core, no ORM identity map): the batch path handles a
thousand rows per request and the read path must stay cheap."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.sql.expression import cast as sql_cast
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.db import ReadPool
from chassis.driver import raw_connection
from contacts.models import (  # noqa: F401 - registers the tables on SQLModel.metadata
    Company,
    CompanyExternalId,
    Contact,
    ContactExternalId,
    CustomFieldDefinition,
    ImportJob,
    ImportRowError,
)
from contacts.validation import FieldSpec

Row = dict[str, Any]

contacts_t = SQLModel.metadata.tables["contacts"]
contact_ext_t = SQLModel.metadata.tables["contact_external_ids"]
companies_t = SQLModel.metadata.tables["companies"]
company_ext_t = SQLModel.metadata.tables["company_external_ids"]
fields_t = SQLModel.metadata.tables["custom_field_definitions"]
jobs_t = SQLModel.metadata.tables["import_jobs"]
job_errors_t = SQLModel.metadata.tables["import_errors"]

_COMPUTED = {"search_text", "name_norm"}
CONTACT_COLUMNS = [c for c in contacts_t.c if c.name not in _COMPUTED]
CONTACT_WRITABLE = [c.name for c in CONTACT_COLUMNS if c.name not in ("tenant_id", "id")]
COMPANY_WRITABLE = [c.name for c in companies_t.c if c.name not in ("tenant_id", "id")]


def _live(t: Table) -> ColumnElement[bool]:
    cond: ColumnElement[bool] = t.c.deleted_at.is_(None)
    if t is contacts_t:
        cond = and_(cond, t.c.merged_into_id.is_(None), t.c.erased_at.is_(None))
    return cond


async def _rows(session: AsyncSession, stmt: Any) -> list[Row]:
    return [dict(r) for r in (await session.execute(stmt)).mappings().all()]


# --- contacts -------------------------------------------------------------------------------


def _any_of(column: Any, values: list[Any]) -> Any:
    """`= ANY(:array)`: one statement whatever the number of values. `IN (...)` is rendered
    with one parameter per value at every execution, so SQLAlchemy compiles it each time and
    PostgreSQL prepares a new statement for each list length."""
    return any_(bindparam(None, values, type_=ARRAY(column.type)))


def _contact_select(tenant: str) -> Select[Any]:
    return select(*CONTACT_COLUMNS).where(contacts_t.c.tenant_id == tenant)


def _read_by_id(table: Table, columns: Sequence[Any]) -> str:
    names = ", ".join(f'"{c.name}"' for c in columns)
    return f"SELECT {names} FROM {table.name} WHERE tenant_id = $1 AND id = $2"


_READ_CONTACT = _read_by_id(contacts_t, CONTACT_COLUMNS)
_READ_COMPANY = _read_by_id(companies_t, list(companies_t.c))


async def _read_one(pool: ReadPool, sql: str, tenant: str, row_id: uuid.UUID) -> Row | None:
    """One row for a plain read: a cached prepared statement on the raw read pool, outside
    any transaction. Through the session the same read cost a BEGIN, a statement compiled by
    SQLAlchemy and a COMMIT. JSON columns are decoded, so the row has the shape the session
    gives (tested)."""
    record = await pool.fetchrow(sql, tenant, row_id)
    if record is None:
        return None
    row: Row = dict(record)
    for name in _JSON_COLUMNS:
        if row.get(name) is not None:
            row[name] = json.loads(row[name])
    return row


async def read_contact(pool: ReadPool, tenant: str, contact_id: uuid.UUID) -> Row | None:
    return await _read_one(pool, _READ_CONTACT, tenant, contact_id)


async def read_company(pool: ReadPool, tenant: str, company_id: uuid.UUID) -> Row | None:
    return await _read_one(pool, _READ_COMPANY, tenant, company_id)


async def get_contact(
    session: AsyncSession, tenant: str, contact_id: uuid.UUID, *, for_update: bool = False
) -> Row | None:
    """The contact in any state (live, merged, erased, deleted)."""
    rows = await get_contacts(session, tenant, [contact_id], for_update=for_update)
    return rows[0] if rows else None


async def get_contacts(
    session: AsyncSession, tenant: str, ids: Sequence[uuid.UUID], *, for_update: bool = False
) -> list[Row]:
    if not ids:
        return []
    stmt = (
        _contact_select(tenant)
        .where(contacts_t.c.id == _any_of(contacts_t.c.id, list(ids)))
        .order_by(contacts_t.c.id)
    )
    if for_update:
        stmt = stmt.with_for_update()
    return await _rows(session, stmt)


async def contact_ids_by_external(
    session: AsyncSession, tenant: str, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], uuid.UUID]:
    pairs = list(set(keys))
    if not pairs:
        return {}
    # two array parameters instead of 2 x N scalars; one primary-key probe per key (a plain
    # join may become a hash join over all of the tenant's ids)
    rows = await (await _raw(session)).fetch(
        "SELECT k.system, k.external_id, x.contact_id "
        "FROM unnest($2::text[], $3::text[]) AS k(system, external_id) "
        "CROSS JOIN LATERAL (SELECT contact_id FROM contact_external_ids WHERE tenant_id = $1 "
        "AND system = k.system AND external_id = k.external_id LIMIT 1) AS x",
        tenant,
        [p[0] for p in pairs],
        [p[1] for p in pairs],
    )
    return {(r["system"], r["external_id"]): r["contact_id"] for r in rows}


async def live_contact_ids_by_email(
    session: AsyncSession, tenant: str, emails: Iterable[str], owner: str | None
) -> dict[str, list[uuid.UUID]]:
    values = list(set(emails))
    if not values:
        return {}
    stmt = (
        select(contacts_t.c.email, contacts_t.c.id)
        .where(
            contacts_t.c.tenant_id == tenant,
            contacts_t.c.email == _any_of(contacts_t.c.email, values),
            _live(contacts_t),
        )
        .order_by(contacts_t.c.created_at, contacts_t.c.id)
    )
    if owner is not None:
        stmt = stmt.where(contacts_t.c.owner_id == owner)
    out: dict[str, list[uuid.UUID]] = {}
    for r in (await session.execute(stmt)).all():
        out.setdefault(r.email, []).append(r.id)
    return out


_raw = raw_connection


_JSON_COLUMNS = {"custom_fields", "external_ids", "consent"}


_COPY_FROM = 20  # below this many rows a prepared INSERT is cheaper than COPY's set-up
_CONTACT_NAMES = [c.name for c in CONTACT_COLUMNS]
_INSERT_CONTACT = (
    f"INSERT INTO contacts ({', '.join(_CONTACT_NAMES)}) VALUES "
    f"({', '.join(f'${i + 1}' for i in range(len(_CONTACT_NAMES)))})"
)


async def insert_contacts(session: AsyncSession, rows: Sequence[Row]) -> None:
    """In the session's transaction: COPY (binary) for the batch path's bulk inserts, one
    prepared INSERT for the few rows of a single create."""
    if not rows:
        return
    names = _CONTACT_NAMES
    records = [
        tuple(
            (json.dumps(r.get(n)) if r.get(n) is not None else None)
            if n in _JSON_COLUMNS
            else r.get(n)
            for n in names
        )
        for r in rows
    ]
    driver = await _raw(session)
    if len(records) < _COPY_FROM:
        await driver.executemany(_INSERT_CONTACT, records)
    else:
        await driver.copy_records_to_table("contacts", records=records, columns=names)


async def update_contacts(session: AsyncSession, rows: Sequence[Row]) -> None:
    if not rows:
        return
    stmt = (
        update(contacts_t)
        .where(
            contacts_t.c.tenant_id == bindparam("k_tenant"),
            contacts_t.c.id == bindparam("k_id"),
        )
        .values({name: bindparam(name) for name in CONTACT_WRITABLE})
    )
    await session.execute(
        stmt,
        [
            {"k_tenant": r["tenant_id"], "k_id": r["id"], **{n: r.get(n) for n in CONTACT_WRITABLE}}
            for r in rows
        ],
    )


async def add_contact_external_ids(
    session: AsyncSession, tenant: str, entries: Sequence[tuple[str, str, uuid.UUID]]
) -> None:
    if entries:
        driver = await _raw(session)
        await driver.copy_records_to_table(
            "contact_external_ids",
            records=[(tenant, s, e, cid) for s, e, cid in entries],
            columns=["tenant_id", "system", "external_id", "contact_id"],
        )


async def remove_contact_external_ids(
    session: AsyncSession, tenant: str, keys: Sequence[tuple[str, str]]
) -> None:
    if keys:
        t = contact_ext_t
        await session.execute(
            delete(t).where(
                t.c.tenant_id == tenant, tuple_(t.c.system, t.c.external_id).in_(list(keys))
            )
        )


async def remove_external_ids_of_contacts(
    session: AsyncSession, tenant: str, ids: Sequence[uuid.UUID]
) -> None:
    t = contact_ext_t
    await session.execute(delete(t).where(t.c.tenant_id == tenant, t.c.contact_id.in_(ids)))


async def repoint_merged(
    session: AsyncSession, tenant: str, loser_ids: Sequence[uuid.UUID], survivor_id: uuid.UUID
) -> None:
    """Losers become tombstones (versions untouched: tombstones are terminal); their external
    ids and older tombstones now point at the survivor."""
    c, x = contacts_t, contact_ext_t
    await session.execute(
        update(c)
        .where(
            c.c.tenant_id == tenant,
            or_(c.c.id.in_(loser_ids), c.c.merged_into_id.in_(loser_ids)),
        )
        .values(merged_into_id=survivor_id)
    )
    await session.execute(
        update(x)
        .where(x.c.tenant_id == tenant, x.c.contact_id.in_(loser_ids))
        .values(contact_id=survivor_id)
    )


async def scrub_tombstones(
    session: AsyncSession, tenant: str, survivor_id: uuid.UUID, now: datetime
) -> None:
    """Erase the personal data of the contacts once merged into `survivor_id`."""
    c = contacts_t
    await session.execute(
        update(c)
        .where(
            c.c.tenant_id == tenant,
            c.c.merged_into_id == survivor_id,
        )
        .values(
            first_name=None,
            last_name=None,
            email=None,
            phone=None,
            custom_fields={},
            external_ids={},
            tags=[],
            consent=None,
            lead_source=None,
            erased_at=now,
        )
    )


async def company_ids_that_exist(
    session: AsyncSession, tenant: str, ids: Iterable[uuid.UUID]
) -> set[uuid.UUID]:
    values = list(set(ids))
    if not values:
        return set()
    stmt = select(companies_t.c.id).where(
        companies_t.c.tenant_id == tenant,
        companies_t.c.id == _any_of(companies_t.c.id, values),
        _live(companies_t),
    )
    return set((await session.execute(stmt)).scalars().all())


async def company_names(
    session: AsyncSession, tenant: str, ids: Iterable[uuid.UUID | None]
) -> dict[uuid.UUID, str]:
    values = list({i for i in ids if i is not None})
    if not values:
        return {}
    stmt = select(companies_t.c.id, companies_t.c.name).where(
        companies_t.c.tenant_id == tenant, companies_t.c.id == _any_of(companies_t.c.id, values)
    )
    return {r.id: r.name for r in (await session.execute(stmt)).all()}


@dataclass
class ContactFilter:
    q: str | None = None
    tag: str | None = None
    owner_id: str | None = None
    lifecycle_stage: str | None = None
    company_id: uuid.UUID | None = None
    updated_after: datetime | None = None
    custom_fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sort:
    field: str
    descending: bool


CONTACT_SORTS = ("created_at", "updated_at", "last_name", "first_name", "email")


def _sort_expr(t: Table, name: str) -> ColumnElement[Any]:
    col = t.c[name]
    if name in ("created_at", "updated_at"):
        return cast(ColumnElement[Any], col)
    return func.lower(func.coalesce(col, literal("")))


def _like(q: str) -> str:
    escaped = q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _keyset(
    stmt: Select[Any], t: Table, sort: Sort, after: tuple[Any, uuid.UUID] | None, limit: int
) -> Select[Any]:
    expr = _sort_expr(t, sort.field)
    if after is not None:
        key = tuple_(expr, t.c.id)
        bound = tuple_(literal(after[0]), literal(after[1]))
        stmt = stmt.where(key < bound if sort.descending else key > bound)
    if sort.descending:
        stmt = stmt.order_by(expr.desc(), t.c.id.desc())
    else:
        stmt = stmt.order_by(expr, t.c.id)
    return stmt.limit(limit + 1)


def sort_value(row: Row, sort: Sort) -> Any:
    value = row.get(sort.field)
    if sort.field in ("created_at", "updated_at"):
        return value
    return (value or "").lower()


async def list_contacts(
    session: AsyncSession,
    tenant: str,
    owner: str | None,
    f: ContactFilter,
    sort: Sort,
    after: tuple[Any, uuid.UUID] | None,
    limit: int,
) -> list[Row]:
    """Live contacts, `limit + 1` rows (the extra one says whether a next page exists)."""
    c = contacts_t
    stmt = _contact_select(tenant).where(_live(c))
    if owner is not None:
        stmt = stmt.where(c.c.owner_id == owner)
    if f.q:
        pattern = _like(f.q)
        companies = select(companies_t.c.id).where(
            companies_t.c.tenant_id == tenant,
            _live(companies_t),
            func.lower(companies_t.c.name).like(pattern),
        )
        stmt = stmt.where(or_(c.c.search_text.like(pattern), c.c.company_id.in_(companies)))
    if f.tag:
        stmt = stmt.where(c.c.tags.contains(sql_cast([f.tag], ARRAY(Text))))
    if f.owner_id:
        stmt = stmt.where(c.c.owner_id == f.owner_id)
    if f.lifecycle_stage:
        stmt = stmt.where(c.c.lifecycle_stage == f.lifecycle_stage)
    if f.company_id:
        stmt = stmt.where(c.c.company_id == f.company_id)
    if f.updated_after:
        stmt = stmt.where(c.c.updated_at > f.updated_after)
    if f.custom_fields:
        stmt = stmt.where(c.c.custom_fields.contains(sql_cast(f.custom_fields, JSONB)))
    return await _rows(session, _keyset(stmt, c, sort, after, limit))


async def duplicate_candidates(
    session: AsyncSession, tenant: str, owner: str | None, target: Row, limit: int = 200
) -> list[Row]:
    c = contacts_t
    clauses: list[ColumnElement[bool]] = []
    if target.get("email"):
        clauses.append(c.c.email == target["email"])
    if target.get("phone"):
        clauses.append(c.c.phone == target["phone"])
    name = " ".join(p for p in (target.get("first_name"), target.get("last_name")) if p).lower()
    if name:
        clauses.append(c.c.name_norm.op("%")(name))
    if not clauses:
        return []
    stmt = _contact_select(tenant).where(_live(c), c.c.id != target["id"], or_(*clauses))
    if owner is not None:
        stmt = stmt.where(c.c.owner_id == owner)
    return await _rows(session, stmt.limit(limit))


# --- companies ------------------------------------------------------------------------------


async def get_company(
    session: AsyncSession, tenant: str, company_id: uuid.UUID, *, for_update: bool = False
) -> Row | None:
    stmt = select(companies_t).where(
        companies_t.c.tenant_id == tenant, companies_t.c.id == company_id
    )
    if for_update:
        stmt = stmt.with_for_update()
    rows = await _rows(session, stmt)
    return rows[0] if rows else None


async def company_ids_by_external(
    session: AsyncSession, tenant: str, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], uuid.UUID]:
    pairs = list(set(keys))
    if not pairs:
        return {}
    t = company_ext_t
    stmt = select(t.c.system, t.c.external_id, t.c.company_id).where(
        t.c.tenant_id == tenant, tuple_(t.c.system, t.c.external_id).in_(pairs)
    )
    return {(r.system, r.external_id): r.company_id for r in (await session.execute(stmt)).all()}


async def insert_company(session: AsyncSession, row: Row) -> None:
    await session.execute(insert(companies_t).values(**row))


async def update_company(session: AsyncSession, row: Row) -> None:
    await session.execute(
        update(companies_t)
        .where(
            companies_t.c.tenant_id == row["tenant_id"],
            companies_t.c.id == row["id"],
        )
        .values({n: row[n] for n in COMPANY_WRITABLE})
    )


async def add_company_external_ids(
    session: AsyncSession, tenant: str, entries: Sequence[tuple[str, str, uuid.UUID]]
) -> None:
    if entries:
        await session.execute(
            insert(company_ext_t),
            [
                {"tenant_id": tenant, "system": s, "external_id": e, "company_id": cid}
                for s, e, cid in entries
            ],
        )


async def remove_company_external_ids(
    session: AsyncSession, tenant: str, keys: Sequence[tuple[str, str]]
) -> None:
    if keys:
        t = company_ext_t
        await session.execute(
            delete(t).where(
                t.c.tenant_id == tenant, tuple_(t.c.system, t.c.external_id).in_(list(keys))
            )
        )


async def remove_external_ids_of_company(
    session: AsyncSession, tenant: str, company_id: uuid.UUID
) -> None:
    t = company_ext_t
    await session.execute(delete(t).where(t.c.tenant_id == tenant, t.c.company_id == company_id))


async def count_live_contacts_of_company(
    session: AsyncSession, tenant: str, company_id: uuid.UUID
) -> int:
    stmt = (
        select(func.count())
        .select_from(contacts_t)
        .where(
            contacts_t.c.tenant_id == tenant,
            contacts_t.c.company_id == company_id,
            _live(contacts_t),
        )
    )
    return int((await session.execute(stmt)).scalar_one())


COMPANY_SORTS = ("created_at", "updated_at", "name", "domain")


async def list_companies(
    session: AsyncSession,
    tenant: str,
    owner: str | None,
    q: str | None,
    tag: str | None,
    updated_after: datetime | None,
    sort: Sort,
    after: tuple[Any, uuid.UUID] | None,
    limit: int,
) -> list[Row]:
    t = companies_t
    stmt = select(t).where(t.c.tenant_id == tenant, _live(t))
    if owner is not None:
        stmt = stmt.where(t.c.owner_id == owner)
    if q:
        pattern = _like(q)
        stmt = stmt.where(or_(func.lower(t.c.name).like(pattern), t.c.domain.like(pattern)))
    if tag:
        stmt = stmt.where(t.c.tags.contains(sql_cast([tag], ARRAY(Text))))
    if updated_after:
        stmt = stmt.where(t.c.updated_at > updated_after)
    return await _rows(session, _keyset(stmt, t, sort, after, limit))


# --- custom field definitions ---------------------------------------------------------------


_FIELD_SPECS = (
    "SELECT key, type, required, options FROM custom_field_definitions "
    "WHERE tenant_id = $1 AND object_type = $2"
)


async def field_specs(session: AsyncSession, tenant: str, object_type: str) -> dict[str, FieldSpec]:
    """Every write starts here, so it goes straight to the driver (a cached prepared
    statement) instead of through SQLAlchemy's per-statement work."""
    driver = await _raw(session)
    return {
        r["key"]: FieldSpec(r["key"], r["type"], r["required"], tuple(r["options"]))
        for r in await driver.fetch(_FIELD_SPECS, tenant, object_type)
    }


async def list_definitions(session: AsyncSession, tenant: str, object_type: str) -> list[Row]:
    stmt = (
        select(fields_t)
        .where(fields_t.c.tenant_id == tenant, fields_t.c.object_type == object_type)
        .order_by(fields_t.c.key)
    )
    return await _rows(session, stmt)


async def get_definition(
    session: AsyncSession, tenant: str, object_type: str, key: str, *, for_update: bool = False
) -> Row | None:
    stmt = select(fields_t).where(
        fields_t.c.tenant_id == tenant, fields_t.c.object_type == object_type, fields_t.c.key == key
    )
    if for_update:
        stmt = stmt.with_for_update()
    rows = await _rows(session, stmt)
    return rows[0] if rows else None


async def insert_definition(session: AsyncSession, row: Row) -> None:
    await session.execute(insert(fields_t).values(**row))


async def update_definition(session: AsyncSession, row: Row) -> None:
    await session.execute(
        update(fields_t)
        .where(
            fields_t.c.tenant_id == row["tenant_id"],
            fields_t.c.id == row["id"],
        )
        .values(
            label=row["label"],
            required=row["required"],
            options=row["options"],
            version=row["version"],
            updated_at=row["updated_at"],
        )
    )


async def delete_definition(session: AsyncSession, tenant: str, definition_id: uuid.UUID) -> None:
    await session.execute(
        delete(fields_t).where(fields_t.c.tenant_id == tenant, fields_t.c.id == definition_id)
    )


# --- import jobs ----------------------------------------------------------------------------

JOB_SUMMARY = [c for c in jobs_t.c if c.name != "content"]


async def insert_job(session: AsyncSession, row: Row) -> None:
    await session.execute(insert(jobs_t).values(**row))


async def get_job(
    session: AsyncSession, tenant: str, job_id: uuid.UUID, *, with_content: bool = False
) -> Row | None:
    cols = list(jobs_t.c) if with_content else JOB_SUMMARY
    rows = await _rows(
        session, select(*cols).where(jobs_t.c.tenant_id == tenant, jobs_t.c.id == job_id)
    )
    return rows[0] if rows else None


async def update_job(session: AsyncSession, tenant: str, job_id: uuid.UUID, **values: Any) -> None:
    await session.execute(
        update(jobs_t).where(jobs_t.c.tenant_id == tenant, jobs_t.c.id == job_id).values(**values)
    )


async def unfinished_jobs(session: AsyncSession) -> list[tuple[str, uuid.UUID]]:
    """Jobs of every tenant still queued or running (startup recovery; no tenant yet)."""
    stmt = (
        select(jobs_t.c.tenant_id, jobs_t.c.id)
        .where(jobs_t.c.status.in_(["queued", "running"]))
        .order_by(jobs_t.c.created_at)
    )
    return [(r.tenant_id, r.id) for r in (await session.execute(stmt)).all()]


async def add_job_errors(
    session: AsyncSession,
    tenant: str,
    job_id: uuid.UUID,
    errors: Sequence[tuple[int, str | None, str]],
) -> None:
    if errors:
        await session.execute(
            insert(job_errors_t),
            [
                {"tenant_id": tenant, "job_id": job_id, "row": r, "field": f, "message": m}
                for r, f, m in errors
            ],
        )


async def delete_job_errors_from(
    session: AsyncSession, tenant: str, job_id: uuid.UUID, first_row: int
) -> None:
    t = job_errors_t
    await session.execute(
        delete(t).where(t.c.tenant_id == tenant, t.c.job_id == job_id, t.c.row >= first_row)
    )


async def job_errors(
    session: AsyncSession, tenant: str, job_id: uuid.UUID, limit: int
) -> list[Row]:
    t = job_errors_t
    stmt = (
        select(t.c.row, t.c.field, t.c.message)
        .where(t.c.tenant_id == tenant, t.c.job_id == job_id)
        .order_by(t.c.row, t.c.id)
        .limit(limit)
    )
    return await _rows(session, stmt)
