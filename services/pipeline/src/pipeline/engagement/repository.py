"""Every query of activities, tasks and playbooks. Each takes the tenant and filters by it
(the scheduler's claims are the one cross-tenant read: timers of every tenant fire).

Rows travel as plain dicts. Statements are SQL text with bound parameters; column names in
the dynamic parts come from fixed whitelists, never from input."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

Row = dict[str, Any]

ACTIVITY_COLUMNS = (
    "type",
    "subject",
    "body",
    "contact_id",
    "deal_id",
    "owner_id",
    "occurred_at",
    "duration_seconds",
    "outcome",
)
TASK_COLUMNS = (
    "title",
    "due_at",
    "remind_at",
    "assignee_id",
    "contact_id",
    "deal_id",
    "status",
    "priority",
    "completed_at",
)
PLAYBOOK_COLUMNS = ("title", "body", "stage_ids", "tags", "attachments")
_WRITABLE = {
    "activities": {*ACTIVITY_COLUMNS, "updated_at", "version"},
    "tasks": {*TASK_COLUMNS, "updated_at", "version"},
    "playbooks": {*PLAYBOOK_COLUMNS, "updated_at", "version"},
}


async def _rows(session: AsyncSession, sql: str, params: Mapping[str, Any]) -> list[Row]:
    result = await session.execute(text(sql), dict(params))
    return [dict(r) for r in result.mappings().all()]


async def _one(session: AsyncSession, sql: str, params: Mapping[str, Any]) -> Row | None:
    rows = await _rows(session, sql, params)
    return rows[0] if rows else None


# --- generic row writes ----------------------------------------------------------------------


async def insert(session: AsyncSession, table: str, row: Mapping[str, Any]) -> Row:
    assert table in _WRITABLE
    cols = list(row)
    sql = (
        f"INSERT INTO {table} ({', '.join(cols)}) "
        f"VALUES ({', '.join(':' + c for c in cols)}) RETURNING *"
    )
    out = await _one(session, sql, row)
    assert out is not None
    return out


async def get(
    session: AsyncSession, table: str, tenant: str, row_id: uuid.UUID, *, for_update: bool = False
) -> Row | None:
    assert table in _WRITABLE
    lock = " FOR UPDATE" if for_update else ""
    return await _one(
        session,
        f"SELECT * FROM {table} WHERE tenant_id = :tenant AND id = :id{lock}",
        {"tenant": tenant, "id": row_id},
    )


async def update(
    session: AsyncSession, table: str, tenant: str, row_id: uuid.UUID, values: Mapping[str, Any]
) -> Row:
    allowed = _WRITABLE[table]
    assert set(values) <= allowed, set(values) - allowed
    sets = ", ".join(f"{c} = :v_{c}" for c in values)
    params = {f"v_{c}": v for c, v in values.items()} | {"tenant": tenant, "id": row_id}
    out = await _one(
        session,
        f"UPDATE {table} SET {sets} WHERE tenant_id = :tenant AND id = :id RETURNING *",
        params,
    )
    assert out is not None
    return out


async def delete(session: AsyncSession, table: str, tenant: str, row_id: uuid.UUID) -> None:
    assert table in _WRITABLE
    await session.execute(
        text(f"DELETE FROM {table} WHERE tenant_id = :tenant AND id = :id"),
        {"tenant": tenant, "id": row_id},
    )


# --- deals and stages (owned by core; read only) ---------------------------------------------


async def live_deal(session: AsyncSession, tenant: str, deal_id: uuid.UUID) -> Row | None:
    return await _one(
        session,
        "SELECT id, owner_id, stage_id, pipeline_id, contact_id FROM deals "
        "WHERE tenant_id = :tenant AND id = :id AND deleted_at IS NULL",
        {"tenant": tenant, "id": deal_id},
    )


async def existing_stage_ids(
    session: AsyncSession, tenant: str, ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    if not ids:
        return set()
    rows = await _rows(
        session,
        "SELECT id FROM stages WHERE tenant_id = :tenant AND id = ANY(CAST(:ids AS uuid[])) "
        "AND deleted_at IS NULL",
        {"tenant": tenant, "ids": list(ids)},
    )
    return {uuid.UUID(str(r["id"])) for r in rows}


# --- lists -----------------------------------------------------------------------------------


@dataclass
class Query:
    """A WHERE clause built from optional filters."""

    clauses: list[str]
    params: dict[str, Any]

    @classmethod
    def for_tenant(cls, tenant: str) -> Query:
        return cls(["tenant_id = :tenant"], {"tenant": tenant})

    def where(self, clause: str, **params: Any) -> None:
        self.clauses.append(clause)
        self.params.update(params)

    def eq(self, column: str, value: Any) -> None:
        if value is not None:
            self.where(f"{column} = :f_{column}", **{f"f_{column}": value})

    def owners(self, column: str, owners: Iterable[str] | None) -> None:
        if owners is not None:
            self.where(f"{column} = ANY(CAST(:scope AS text[]))", scope=sorted(owners))

    @property
    def sql(self) -> str:
        return " AND ".join(self.clauses)


async def list_activities(
    session: AsyncSession, q: Query, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[Row]:
    """Newest first; `limit + 1` rows (the extra one says whether a next page exists)."""
    if after is not None:
        q.where("(occurred_at, id) < (:c_at, :c_id)", c_at=after[0], c_id=after[1])
    return await _rows(
        session,
        f"SELECT * FROM activities WHERE {q.sql} ORDER BY occurred_at DESC, id DESC LIMIT :limit",
        q.params | {"limit": limit + 1},
    )


DUE_KEY = "coalesce(due_at, 'infinity'::timestamptz)"


async def list_tasks(
    session: AsyncSession, q: Query, after: tuple[datetime | None, uuid.UUID] | None, limit: int
) -> list[Row]:
    """Soonest due first, tasks without a due time last; `limit + 1` rows."""
    if after is not None:
        due, after_id = after
        if due is None:
            q.where("(due_at IS NULL AND id > :c_id)", c_id=after_id)
        else:
            q.where(f"({DUE_KEY}, id) > (:c_due, :c_id)", c_due=due, c_id=after_id)
    return await _rows(
        session,
        f"SELECT * FROM tasks WHERE {q.sql} ORDER BY {DUE_KEY}, id LIMIT :limit",
        q.params | {"limit": limit + 1},
    )


async def list_playbooks(
    session: AsyncSession, q: Query, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[Row]:
    if after is not None:
        q.where("(created_at, id) > (:c_at, :c_id)", c_at=after[0], c_id=after[1])
    return await _rows(
        session,
        f"SELECT * FROM playbooks WHERE {q.sql} ORDER BY created_at, id LIMIT :limit",
        q.params | {"limit": limit + 1},
    )


async def playbooks_for_stage(session: AsyncSession, tenant: str, stage_id: Any) -> list[Row]:
    return await _rows(
        session,
        "SELECT * FROM playbooks WHERE tenant_id = :tenant "
        "AND stage_ids @> ARRAY[CAST(:stage AS uuid)] ORDER BY title, id LIMIT 200",
        {"tenant": tenant, "stage": str(stage_id)},
    )


# --- reactions to contacts events (set-based: one statement per table) -----------------------


async def repoint_contact(
    session: AsyncSession,
    table: str,
    tenant: str,
    from_ids: Sequence[uuid.UUID],
    to_id: uuid.UUID | None,
    at: datetime,
) -> list[Row]:
    """Point every row of `table` referencing one of `from_ids` at `to_id` (None: clear it),
    bumping versions; returns the rows after the change."""
    assert table in ("activities", "tasks")
    if not from_ids:
        return []
    return await _rows(
        session,
        f"UPDATE {table} SET contact_id = CAST(:to_id AS uuid), version = version + 1, "
        "updated_at = :at WHERE tenant_id = :tenant "
        "AND contact_id = ANY(CAST(:from_ids AS uuid[])) RETURNING *",
        {"tenant": tenant, "from_ids": list(from_ids), "to_id": to_id, "at": at},
    )


ERASED_SUBJECT = "[erased]"


async def erase_activities_of(
    session: AsyncSession, tenant: str, contact_id: uuid.UUID, at: datetime
) -> list[Row]:
    """Purge the personal data of a contact's activities: body gone, subject replaced, the
    link to the contact cleared."""
    return await _rows(
        session,
        "UPDATE activities SET body = NULL, subject = :erased, contact_id = NULL, "
        "version = version + 1, updated_at = :at "
        "WHERE tenant_id = :tenant AND contact_id = :contact RETURNING *",
        {"tenant": tenant, "contact": contact_id, "erased": ERASED_SUBJECT, "at": at},
    )


# --- the task timers (all tenants) -----------------------------------------------------------

PENDING_REMINDER = (
    "status = 'open' AND remind_at IS NOT NULL AND reminder_fired_for IS DISTINCT FROM remind_at"
)
PENDING_OVERDUE = (
    "status = 'open' AND due_at IS NOT NULL AND overdue_fired_for IS DISTINCT FROM due_at"
)


async def claim_due_timers(
    session: AsyncSession, now: datetime, limit: int
) -> tuple[list[tuple[str, uuid.UUID]], list[tuple[str, uuid.UUID]]]:
    """Lock the tasks whose reminder, and those whose overdue timer, is due at `now` (rows
    another transaction holds are skipped: another replica is firing them)."""
    keys: list[list[tuple[str, uuid.UUID]]] = []
    for pending, column in ((PENDING_REMINDER, "remind_at"), (PENDING_OVERDUE, "due_at")):
        rows = await _rows(
            session,
            f"SELECT tenant_id, id FROM tasks WHERE {pending} AND {column} <= :now "
            f"ORDER BY {column} LIMIT :limit FOR UPDATE SKIP LOCKED",
            {"now": now, "limit": limit},
        )
        keys.append([(r["tenant_id"], r["id"]) for r in rows])
    return keys[0], keys[1]


async def mark_fired(
    session: AsyncSession, marks: Sequence[tuple[str, uuid.UUID, bool, bool]]
) -> list[Row]:
    """Record, for each locked task, that its reminder and/or overdue timer fired for the
    current fire time, and bump its version once per fired timer. Returns the rows after the
    change with `fired_reminder` / `fired_overdue`."""
    if not marks:
        return []
    return await _rows(
        session,
        "UPDATE tasks t SET "
        "reminder_fired_for = CASE WHEN k.r THEN t.remind_at ELSE t.reminder_fired_for END, "
        "overdue_fired_for = CASE WHEN k.o THEN t.due_at ELSE t.overdue_fired_for END, "
        "version = t.version + k.r::int + k.o::int "
        "FROM unnest(CAST(:tenants AS text[]), CAST(:ids AS uuid[]), "
        "CAST(:r AS boolean[]), CAST(:o AS boolean[])) AS k(tenant_id, id, r, o) "
        "WHERE t.tenant_id = k.tenant_id AND t.id = k.id "
        "RETURNING t.*, k.r AS fired_reminder, k.o AS fired_overdue",
        {
            "tenants": [m[0] for m in marks],
            "ids": [m[1] for m in marks],
            "r": [m[2] for m in marks],
            "o": [m[3] for m in marks],
        },
    )


async def next_timer(session: AsyncSession) -> datetime | None:
    value = (
        await session.execute(
            text(
                f"SELECT least((SELECT min(remind_at) FROM tasks WHERE {PENDING_REMINDER}), "
                f"(SELECT min(due_at) FROM tasks WHERE {PENDING_OVERDUE}))"
            )
        )
    ).scalar()
    return value if isinstance(value, datetime) else None


# --- the activities report -------------------------------------------------------------------


async def activity_figures(
    session: AsyncSession,
    tenant: str,
    start: datetime,
    end: datetime,
    unit: str,
    owners: Iterable[str] | None,
) -> list[Row]:
    """Per owner and type, in one aggregation: a total row (`bucket` NULL) and one row per
    UTC day or ISO week."""
    assert unit in ("day", "week")
    q = Query.for_tenant(tenant)
    q.where("occurred_at >= :start AND occurred_at < :end", start=start, end=end)
    q.owners("owner_id", owners)
    return await _rows(
        session,
        "SELECT owner_id, type, bucket, count(*) AS count, "
        "coalesce(sum(duration_seconds), 0) AS total, avg(duration_seconds) AS average "
        f"FROM (SELECT owner_id, type, duration_seconds, "
        f"CAST(date_trunc('{unit}', occurred_at AT TIME ZONE 'UTC') AS date) AS bucket "
        f"FROM activities WHERE {q.sql}) a "
        "GROUP BY GROUPING SETS ((owner_id, type, bucket), (owner_id, type)) "
        "ORDER BY owner_id, type, bucket NULLS FIRST",
        q.params,
    )
