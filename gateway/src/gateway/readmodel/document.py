"""The 360 document store: one JSONB document per customer (contact) in `customer_360`.

Every section is owned by the handlers of one producing context (`sections/<context>.py`);
they change their section through these helpers, inside the consumer's transaction, and
never touch another section. A document whose contact was deleted, erased or merged away is a
tombstone row (`doc` NULL, nothing personal kept) so that a late event cannot revive it;
a `pending` row (`doc` NULL) is a customer known from another context's items only.

Document shape:
`{"customer_id", "contact": {...}, "company": {...} | null, "deals": [], "orders": [],
"tickets": [], "campaigns": [], "tasks": [], "sequences": [], "segments": [],
"loyalty": null,
"metrics": {}, "as_of": "<RFC 3339>",
"versions": {"contact": n, "company": m}}`
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.driver import raw_connection

# The sections other contexts fill, with their value for a customer they know nothing about.
EMPTY_SECTIONS: dict[str, Any] = {
    "deals": [],
    "orders": [],
    "tickets": [],
    "campaigns": [],
    "tasks": [],
    "sequences": [],
    "segments": [],
    "loyalty": None,
    "metrics": {},
}


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# One statement for a whole run of documents: the rows come as parallel arrays (cheaper for
# PostgreSQL than one execution per row, and one prepared statement on the driver).
_UPSERT_CONTACTS = """
INSERT INTO customer_360 AS c (tenant_id, contact_id, company_id, owner_id, contact_version,
                               updated_at, sort_name, search_text, rfm_segment, health_score,
                               health_band, churn_risk, revision, doc)
SELECT u.tenant, u.contact_id, u.company_id, u.owner_id, u.version, now(), lower(u.name),
       lower(u.name || ' ' || COALESCE(u.email, '') || ' ' || COALESCE(co.doc ->> 'name', '')),
       u.rfm_segment, u.health_score, u.health_band, u.churn_risk, u.changes,
       CAST(u.skeleton AS jsonb) || jsonb_build_object(
           'customer_id', CAST(u.contact_id AS text), 'contact', CAST(u.contact AS jsonb),
           'company', co.doc, 'as_of', u.as_of,
           'versions', jsonb_strip_nulls(jsonb_build_object(
               'contact', u.version, 'company', co.version)))
FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::text[], $5::bigint[], $6::text[],
            $7::text[], $8::text[], $9::integer[], $10::text[], $11::numeric[], $12::text[],
            $13::text[], $14::text[], $15::bigint[])
     WITH ORDINALITY AS u(tenant, contact_id, company_id, owner_id, version, name, email,
                          rfm_segment, health_score, health_band, churn_risk, skeleton,
                          contact, as_of, changes, n)
LEFT JOIN rm_companies co ON co.tenant_id = u.tenant AND co.company_id = u.company_id
ORDER BY u.n
ON CONFLICT (tenant_id, contact_id) DO UPDATE SET
    company_id = EXCLUDED.company_id, owner_id = EXCLUDED.owner_id,
    -- `changes`: the versions of the contact this row stands for (see upsert_contacts)
    contact_version = EXCLUDED.contact_version, updated_at = now(),
    revision = c.revision + EXCLUDED.revision,
    state = 'active', sort_name = EXCLUDED.sort_name, search_text = EXCLUDED.search_text,
    -- a `pending` row's document is born here, with the metrics of the parameters
    rfm_segment = CASE WHEN c.doc IS NULL THEN EXCLUDED.rfm_segment ELSE c.rfm_segment END,
    health_score = CASE WHEN c.doc IS NULL THEN EXCLUDED.health_score ELSE c.health_score END,
    health_band = CASE WHEN c.doc IS NULL THEN EXCLUDED.health_band ELSE c.health_band END,
    churn_risk = CASE WHEN c.doc IS NULL THEN EXCLUDED.churn_risk ELSE c.churn_risk END,
    doc = COALESCE(c.doc, EXCLUDED.doc) || jsonb_build_object(
        'contact', EXCLUDED.doc -> 'contact', 'company', EXCLUDED.doc -> 'company',
        'as_of', EXCLUDED.doc -> 'as_of',
        -- c.doc is NULL on a `pending` row: its versions start from nothing
        'versions', COALESCE(c.doc -> 'versions', '{}'::jsonb) - 'company'
                    || (EXCLUDED.doc -> 'versions'))
WHERE c.state IN ('active', 'pending') AND c.contact_version < EXCLUDED.contact_version
"""
_UPSERT_COLUMNS = (
    "tenant",
    "contact_id",
    "company_id",
    "owner_id",
    "version",
    "name",
    "email",
    "rfm_segment",
    "health_score",
    "health_band",
    "churn_risk",
    "skeleton",
    "contact",
    "as_of",
    "changes",
)


def skeleton(metrics: dict[str, Any] | None = None) -> str:
    """The `skeleton` parameter of `contact_params`: what a new document starts with (its
    `metrics` when given); an existing document keeps its own."""
    if metrics is None:
        return _EMPTY_SKELETON
    return _json({**EMPTY_SECTIONS, "metrics": metrics})


_EMPTY_SKELETON = _json(EMPTY_SECTIONS)


def contact_params(
    *,
    tenant: str,
    contact_id: str,
    company_id: str | None,
    owner_id: str | None,
    version: int,
    contact: dict[str, Any],
    as_of: datetime,
) -> dict[str, Any]:
    return {
        "tenant": tenant,
        "contact_id": contact_id,
        "company_id": company_id,
        "owner_id": owner_id,
        "version": version,
        "contact": _json(contact),
        "skeleton": skeleton(),
        "as_of": rfc3339(as_of),
        # list columns (migration 0004)
        "name": f"{contact.get('first_name') or ''} {contact.get('last_name') or ''}".strip(),
        "email": contact.get("email"),
        **metric_columns(None),
    }


def metric_columns(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """The list columns (migration 0004) that mirror `metrics`: written with them."""
    m = metrics or {}
    health = m.get("health") or {}
    return {
        "rfm_segment": (m.get("rfm") or {}).get("segment"),
        "health_score": health.get("score"),
        "health_band": health.get("band"),
        "churn_risk": (m.get("churn_risk") or {}).get("score") or "0",
    }


@dataclass(frozen=True)
class Start:
    """What a new document starts with, rendered once for many `contact_params`."""

    skeleton: str
    columns: dict[str, Any]

    @classmethod
    def with_metrics(cls, metrics: dict[str, Any]) -> Start:
        return cls(skeleton(metrics), metric_columns(metrics))


def start_with(params: dict[str, Any], start: Start) -> None:
    """Make the `contact_params` of a new document start with `start` (its metrics)."""
    params["skeleton"] = start.skeleton
    params.update(start.columns)


async def upsert_contacts(session: AsyncSession, params: list[dict[str, Any]]) -> None:
    """Create each document, or replace its contact (and embedded company) section, from
    `contact_params` in order, with one statement.

    A statement may change a row only once, so of several versions of one contact only the
    last is written: each version replaces the whole contact section, so the result is the
    one the versions in turn would leave, and the revision (the ETag) still counts each."""
    if not params:
        return
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for p in params:
        key = (p["tenant"], p["contact_id"])
        earlier = last.pop(key, None)  # keep the order of the last occurrence
        last[key] = {**p, "changes": 1 + (earlier["changes"] if earlier else 0)}
    rows = list(last.values())
    driver = await raw_connection(session)
    await driver.execute(_UPSERT_CONTACTS, *([r[c] for r in rows] for c in _UPSERT_COLUMNS))


_TOMBSTONE = text("""
INSERT INTO customer_360 AS c (tenant_id, contact_id, state, contact_version)
VALUES (:tenant, CAST(:contact_id AS uuid), :state, :version)
ON CONFLICT (tenant_id, contact_id) DO UPDATE SET
    state = EXCLUDED.state, doc = NULL, company_id = NULL, owner_id = NULL,
    sort_name = NULL, search_text = NULL, rfm_segment = NULL, health_score = NULL,
    health_band = NULL, churn_risk = 0,
    contact_version = GREATEST(c.contact_version, EXCLUDED.contact_version), updated_at = now(),
    revision = c.revision + 1
""")


async def tombstone(
    session: AsyncSession, *, tenant: str, contact_id: str, state: str, version: int
) -> None:
    """Drop the document, keeping only that it existed: `deleted`, `erased` or `merged`."""
    await session.execute(
        _TOMBSTONE, {"tenant": tenant, "contact_id": contact_id, "state": state, "version": version}
    )


async def tombstone_many(
    session: AsyncSession, *, tenant: str, contact_ids: list[str], state: str
) -> None:
    await session.execute(
        text("""
        INSERT INTO customer_360 AS c (tenant_id, contact_id, state, contact_version)
        SELECT CAST(:tenant AS text), id, CAST(:state AS text), 0
        FROM unnest(CAST(:ids AS uuid[])) AS id
        ON CONFLICT (tenant_id, contact_id) DO UPDATE SET
            state = EXCLUDED.state, doc = NULL, company_id = NULL, owner_id = NULL,
            sort_name = NULL, search_text = NULL, rfm_segment = NULL, health_score = NULL,
            health_band = NULL, churn_risk = 0,
            updated_at = now(), revision = c.revision + 1
    """),
        {"tenant": tenant, "ids": contact_ids, "state": state},
    )


async def upsert_company(
    session: AsyncSession, *, tenant: str, company_id: str, company: dict[str, Any], version: int
) -> bool:
    """Keep the company's latest snapshot (for contacts linked to it later)."""
    row = (
        await session.execute(
            text("""
        INSERT INTO rm_companies AS r (tenant_id, company_id, doc, version)
        VALUES (:tenant, CAST(:company_id AS uuid), CAST(:doc AS jsonb), :version)
        ON CONFLICT (tenant_id, company_id) DO UPDATE
            SET doc = EXCLUDED.doc, version = EXCLUDED.version
            WHERE r.version < EXCLUDED.version
        RETURNING 1
    """),
            {"tenant": tenant, "company_id": company_id, "doc": _json(company), "version": version},
        )
    ).first()
    return row is not None


async def embed_company(
    session: AsyncSession,
    *,
    tenant: str,
    company_id: str,
    company: dict[str, Any] | None,
    version: int | None,
    as_of: datetime,
) -> None:
    """Put the company (None: remove it) into every document whose contact works there:
    one UPDATE over the (tenant_id, company_id) index."""
    await session.execute(
        text("""
        UPDATE customer_360 SET updated_at = now(), revision = revision + 1,
          search_text = lower(btrim(COALESCE(doc #>> '{contact,first_name}', '') || ' '
                                    || COALESCE(doc #>> '{contact,last_name}', ''))
                              || ' ' || COALESCE(doc #>> '{contact,email}', '') || ' '
                              || COALESCE(CAST(:company AS jsonb) ->> 'name', '')),
          doc = doc || jsonb_build_object(
            'company', CAST(:company AS jsonb), 'as_of', CAST(:as_of AS text),
            'versions', COALESCE(doc -> 'versions', '{}'::jsonb) - 'company'
                        || jsonb_strip_nulls(jsonb_build_object(
                               'company', CAST(:version AS bigint))))
        WHERE tenant_id = :tenant AND company_id = CAST(:company_id AS uuid)
          AND doc IS NOT NULL
    """),
        {
            "tenant": tenant,
            "company_id": company_id,
            "company": _json(company) if company is not None else "null",
            "version": version,
            "as_of": rfc3339(as_of),
        },
    )


async def delete_company(session: AsyncSession, *, tenant: str, company_id: str) -> None:
    await session.execute(
        text(
            "DELETE FROM rm_companies WHERE tenant_id = :tenant "
            "AND company_id = CAST(:company_id AS uuid)"
        ),
        {"tenant": tenant, "company_id": company_id},
    )


# The sections other contexts own (deals, orders, tickets, loyalty, ...). Their events come on
# other streams than the contact's, in any order relative to it, so their items live in
# `rm_items` (one row per item, whatever the document) and each section module registers a
# builder that writes its part of the document from those items: after its own events, and
# when a document is created for a customer that already has items.

Builder = Callable[[AsyncSession, str, list[str]], Awaitable[None]]
_BUILDERS: list[Builder] = []
# Run after the section builders: what is derived from every section (analytics metrics),
# each with the item sections it reads (None: any).
_AFTER_BUILDERS: list[tuple[Builder, frozenset[str] | None]] = []


class SectionBuild(Protocol):
    """A registered builder followed by the after-builders (what `section_builder` returns)."""

    async def __call__(
        self,
        session: AsyncSession,
        tenant: str,
        contact_ids: list[str],
        *,
        changed: Collection[str] | None = None,
    ) -> None: ...


def section_builder(fn: Builder) -> SectionBuild:
    """Register `fn(session, tenant, contact_ids)`, which rewrites its sections of those
    customers' documents from `rm_items` (see `items_of` and `write_sections`). Returns
    `fn` followed by the after-builders: what a section's handlers call. `changed`: the item
    sections that changed (None: unknown), so an after-builder that reads none of them is
    skipped (the metrics do not change when only a task or a lead score did)."""
    _BUILDERS.append(fn)

    @functools.wraps(fn)
    async def build_then_derive(
        session: AsyncSession,
        tenant: str,
        contact_ids: list[str],
        *,
        changed: Collection[str] | None = None,
    ) -> None:
        if not contact_ids:
            return
        await fn(session, tenant, contact_ids)
        for after, reads in _AFTER_BUILDERS:
            if changed is None or reads is None or not reads.isdisjoint(changed):
                await after(session, tenant, contact_ids)

    return build_then_derive


def after_builders(fn: Builder, *, reads: Collection[str] | None = None) -> Builder:
    """Register `fn(session, tenant, contact_ids)` to run after a section's builder (and once
    after all of them in `rebuild`): for values derived from several sections. `reads`: the
    item sections `fn` depends on (None: any)."""
    _AFTER_BUILDERS.append((fn, frozenset(reads) if reads is not None else None))
    return fn


@dataclass(frozen=True)
class ItemPut:
    """One event's item: what `put_items` stores (unless a newer version is stored)."""

    tenant: str
    section: str
    item_id: str
    contact_id: str | None
    item: dict[str, Any]
    version: int
    sort_at: datetime
    as_of: datetime  # when the event occurred: the documents it touches are `as_of` then


# One statement for the winners of a run (one per item: its highest version). `old` is the
# stored row before the statement (all CTEs see the same snapshot), `put` what was written.
_PUT_ITEMS = text("""
WITH input AS (
    SELECT * FROM unnest(CAST(:tenants AS text[]), CAST(:sections AS text[]),
                         CAST(:item_ids AS text[]), CAST(:contact_ids AS uuid[]),
                         CAST(:items AS text[]), CAST(:versions AS bigint[]),
                         CAST(:sort_ats AS timestamptz[]))
        AS i(tenant_id, section, item_id, contact_id, item, version, sort_at)
), old AS (
    SELECT r.tenant_id, r.section, r.item_id, r.contact_id, r.version
    FROM rm_items r JOIN input i USING (tenant_id, section, item_id)
), put AS (
    INSERT INTO rm_items AS r (tenant_id, section, item_id, contact_id, item, version, sort_at)
    SELECT tenant_id, section, item_id, contact_id, CAST(item AS jsonb), version, sort_at
    FROM input ORDER BY tenant_id, section, item_id
    ON CONFLICT (tenant_id, section, item_id) DO UPDATE SET
        contact_id = EXCLUDED.contact_id, item = EXCLUDED.item, version = EXCLUDED.version,
        sort_at = EXCLUDED.sort_at
    WHERE r.version < EXCLUDED.version
    RETURNING r.tenant_id, r.section, r.item_id
)
SELECT p.tenant_id, p.section, p.item_id, CAST(o.contact_id AS text), o.version
FROM put p LEFT JOIN old o USING (tenant_id, section, item_id)
""")


# A section event for a customer whose document does not exist yet leaves a `pending` row
# (no document) that the contact's first event turns into the document. The row is what
# serializes the two consumers: whichever inserts it second waits for the first to commit,
# so the contact's `rebuild` always sees the items, or the item's builder the document.
# Rows are inserted in key order, as every batch here locks them, against deadlocks.
_ENSURE_ROWS = text("""
INSERT INTO customer_360 (tenant_id, contact_id, state, contact_version)
SELECT t, c, 'pending', 0
FROM unnest(CAST(:tenants AS text[]), CAST(:ids AS uuid[])) AS k(t, c)
ORDER BY t, c
ON CONFLICT (tenant_id, contact_id) DO NOTHING
""")

Touched = dict[str, dict[str, datetime]]
"""tenant -> {contact_id: `as_of` of the last applied event that touched it}."""


async def put_items(session: AsyncSession, puts: list[ItemPut]) -> Touched:
    """Apply a run of items in stream order with one statement, as if one by one: an item
    is replaced only by a newer version (an older one is a no-op). Returns the customers
    whose documents must be rebuilt: each applied item's customer and, when it moved, the
    previous one (also the intermediate ones of an item moved twice in the run), each with
    the time of the last event that touched it."""
    if not puts:
        return {}
    winners: dict[tuple[str, str, str], ItemPut] = {}
    for p in puts:
        key = (p.tenant, p.section, p.item_id)
        if key not in winners or winners[key].version < p.version:
            winners[key] = p
    rows = await session.execute(
        _PUT_ITEMS,
        {
            "tenants": [p.tenant for p in winners.values()],
            "sections": [p.section for p in winners.values()],
            "item_ids": [p.item_id for p in winners.values()],
            "contact_ids": [p.contact_id for p in winners.values()],
            "items": [_json(p.item) for p in winners.values()],
            "versions": [p.version for p in winners.values()],
            "sort_ats": [p.sort_at for p in winners.values()],
        },
    )
    # key -> (version, contact) stored before the run, for the items the statement wrote
    state: dict[tuple[str, str, str], tuple[int, str | None]] = {
        (r[0], r[1], r[2]): (-1 if r[4] is None else int(r[4]), r[3]) for r in rows
    }
    touched: Touched = {}
    pending: set[tuple[str, str]] = set()
    for p in puts:  # replay the run over the stored versions: which events applied
        key = (p.tenant, p.section, p.item_id)
        if key not in state or p.version <= state[key][0]:
            continue
        previous = state[key][1]
        state[key] = (p.version, p.contact_id)
        of_tenant = touched.setdefault(p.tenant, {})
        for cid in (p.contact_id, previous):
            if cid is not None:
                of_tenant[cid] = p.as_of
        if p.contact_id is not None:
            pending.add((p.tenant, p.contact_id))
    if pending:
        keys = sorted(pending)
        await session.execute(
            _ENSURE_ROWS, {"tenants": [k[0] for k in keys], "ids": [k[1] for k in keys]}
        )
    return touched


async def get_items(
    session: AsyncSession, *, tenant: str, section: str, item_ids: list[str]
) -> dict[str, tuple[dict[str, Any], int]]:
    """The stored items and their versions (to carry forward what an event does not
    repeat): {item_id: (item, version)}."""
    rows = await session.execute(
        text(
            "SELECT item_id, item, version FROM rm_items WHERE tenant_id = :tenant "
            "AND section = :section AND item_id = ANY(CAST(:ids AS text[]))"
        ),
        {"tenant": tenant, "section": section, "ids": item_ids},
    )
    return {r[0]: (dict(r[1]), int(r[2])) for r in rows}


async def drop_items(
    session: AsyncSession, keys: list[tuple[str, str, str]]
) -> dict[str, list[str]]:
    """Remove items ((tenant, section, item_id) each) with one statement; returns the
    customers whose documents must be rebuilt, per tenant."""
    if not keys:
        return {}
    rows = await session.execute(
        text("""
        DELETE FROM rm_items r
        USING unnest(CAST(:tenants AS text[]), CAST(:sections AS text[]),
                     CAST(:ids AS text[])) AS k(t, s, i)
        WHERE r.tenant_id = k.t AND r.section = k.s AND r.item_id = k.i
        RETURNING r.tenant_id, CAST(r.contact_id AS text)
    """),
        {
            "tenants": [k[0] for k in keys],
            "sections": [k[1] for k in keys],
            "ids": [k[2] for k in keys],
        },
    )
    out: dict[str, list[str]] = {}
    for tenant, cid in rows:
        if cid is not None and cid not in out.setdefault(tenant, []):
            out[tenant].append(cid)
    return out


async def items_of(
    session: AsyncSession,
    *,
    tenant: str,
    contact_ids: list[str],
    sections: dict[str, int | None],
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The items of `sections` (name -> at most this many, newest first; None: all) of each
    customer: {contact_id: {section: [item, ...]}} (sections without items are absent)."""
    result: dict[str, dict[str, list[dict[str, Any]]]] = {c: {} for c in contact_ids}
    if not contact_ids:
        return result
    rows = await session.execute(
        text("""
        SELECT contact_id, section, item FROM (
            SELECT CAST(contact_id AS text) AS contact_id, section, item,
                   row_number() OVER (PARTITION BY contact_id, section
                                      ORDER BY sort_at DESC, item_id) AS n
            FROM rm_items
            WHERE tenant_id = :tenant AND contact_id = ANY(CAST(:ids AS uuid[]))
              AND section = ANY(:sections)
        ) ranked
        WHERE n <= COALESCE(CAST(CAST(:limits AS jsonb) ->> section AS bigint), n)
        ORDER BY contact_id, section, n
    """),
        {
            "tenant": tenant,
            "ids": contact_ids,
            "sections": list(sections),
            "limits": _json({k: v for k, v in sections.items() if v is not None}),
        },
    )
    for contact_id, section, item in rows:
        result[contact_id].setdefault(section, []).append(item)
    return result


_WRITE_SECTIONS = text("""
UPDATE customer_360 SET updated_at = now(), revision = revision + 1,
    doc = doc || CAST(:values AS jsonb)
              || jsonb_build_object('metrics', COALESCE(doc -> 'metrics', '{}'::jsonb)
                                               || CAST(:metrics AS jsonb))
WHERE tenant_id = :tenant AND contact_id = CAST(:contact_id AS uuid) AND doc IS NOT NULL
""")


async def write_sections(
    session: AsyncSession,
    *,
    tenant: str,
    sections: dict[str, tuple[dict[str, Any], dict[str, Any]]],
) -> None:
    """Set top-level keys of customers' documents and merge keys into their `metrics`:
    {contact_id: (values, metrics)}, one executemany in contact order (a no-op for a
    customer without a document: its builder runs again when the document appears)."""
    if sections:
        await session.execute(
            _WRITE_SECTIONS,
            [
                {
                    "tenant": tenant,
                    "contact_id": cid,
                    "values": _json(values),
                    "metrics": _json(metrics),
                }
                for cid, (values, metrics) in sorted(sections.items())
            ],
        )


async def touch(session: AsyncSession, *, tenant: str, as_of: dict[str, datetime]) -> None:
    """Record that events up to `as_of[contact_id]` are applied to these documents."""
    if not as_of:
        return
    ids = sorted(as_of)
    await session.execute(
        text("""
        UPDATE customer_360 c SET doc = c.doc || jsonb_build_object('as_of', k.as_of)
        FROM unnest(CAST(:ids AS uuid[]), CAST(:as_ofs AS text[])) AS k(id, as_of)
        WHERE c.tenant_id = :tenant AND c.contact_id = k.id AND c.doc IS NOT NULL
    """),
        {"tenant": tenant, "ids": ids, "as_ofs": [rfc3339(as_of[i]) for i in ids]},
    )


async def repoint_items(
    session: AsyncSession, *, tenant: str, from_ids: list[str], to_id: str
) -> None:
    """Merge: the items of merged-away customers belong to the survivor (facts such as an
    answered survey are never re-sent by their producer), then rebuild the survivor."""
    await session.execute(
        text("""
        UPDATE rm_items SET contact_id = CAST(:to AS uuid)
        WHERE tenant_id = :tenant AND contact_id = ANY(CAST(:ids AS uuid[]))
    """),
        {"tenant": tenant, "ids": from_ids, "to": to_id},
    )
    await rebuild(session, tenant, [to_id])


async def purge_items(session: AsyncSession, *, tenant: str, contact_id: str) -> None:
    """Deletion or erasure: no item stays attached to the customer."""
    await session.execute(
        text("DELETE FROM rm_items WHERE tenant_id = :tenant AND contact_id = CAST(:id AS uuid)"),
        {"tenant": tenant, "id": contact_id},
    )


async def rebuild(session: AsyncSession, tenant: str, contact_ids: list[str]) -> None:
    """Run every section builder for the customers of `contact_ids` that have items (after
    their documents were created: the items may have arrived first)."""
    if not contact_ids or not _BUILDERS:
        return
    driver = await raw_connection(session)  # a cached prepared statement: runs per batch
    rows = await driver.fetch(
        "SELECT DISTINCT CAST(contact_id AS text) FROM rm_items "
        "WHERE tenant_id = $1 AND contact_id = ANY($2::uuid[])",
        tenant,
        contact_ids,
    )
    with_items = [r[0] for r in rows]
    if with_items:
        for build in _BUILDERS:
            await build(session, tenant, with_items)
        for after, _reads in _AFTER_BUILDERS:
            await after(session, tenant, with_items)
