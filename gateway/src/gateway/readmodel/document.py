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
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

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


_UPSERT_CONTACT = text("""
INSERT INTO customer_360 AS c (tenant_id, contact_id, company_id, owner_id, contact_version,
                               updated_at, sort_name, search_text, rfm_segment, health_score,
                               health_band, churn_risk, doc)
SELECT CAST(:tenant AS text), CAST(:contact_id AS uuid), CAST(:company_id AS uuid),
       CAST(:owner_id AS text), CAST(:version AS bigint), now(), lower(CAST(:name AS text)),
       lower(CAST(:name AS text) || ' ' || COALESCE(CAST(:email AS text), '') || ' '
             || COALESCE(co.doc ->> 'name', '')),
       CAST(:rfm_segment AS text), CAST(:health_score AS integer), CAST(:health_band AS text),
       CAST(:churn_risk AS numeric),
       CAST(:skeleton AS jsonb) || jsonb_build_object(
           'customer_id', CAST(:contact_id AS text), 'contact', CAST(:contact AS jsonb),
           'company', co.doc, 'as_of', CAST(:as_of AS text),
           'versions', jsonb_strip_nulls(jsonb_build_object(
               'contact', CAST(:version AS bigint), 'company', co.version)))
FROM (SELECT 1) AS one
LEFT JOIN rm_companies co
       ON co.tenant_id = :tenant AND co.company_id = CAST(:company_id AS uuid)
ON CONFLICT (tenant_id, contact_id) DO UPDATE SET
    company_id = EXCLUDED.company_id, owner_id = EXCLUDED.owner_id,
    contact_version = EXCLUDED.contact_version, updated_at = now(), revision = c.revision + 1,
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
""")


def skeleton(metrics: dict[str, Any] | None = None) -> str:
    """The `skeleton` parameter of `contact_params`: what a new document starts with (its
    `metrics` when given); an existing document keeps its own."""
    return _json(EMPTY_SECTIONS if metrics is None else {**EMPTY_SECTIONS, "metrics": metrics})


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


def start_with_metrics(params: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Make the `contact_params` of a new document start with these metrics."""
    params["skeleton"] = skeleton(metrics)
    params.update(metric_columns(metrics))


async def upsert_contacts(session: AsyncSession, params: list[dict[str, Any]]) -> None:
    """Create each document, or replace its contact (and embedded company) section: one
    executemany of `contact_params`, in order."""
    if params:
        await session.execute(_UPSERT_CONTACT, params)


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
# Run after the section builders: what is derived from every section (analytics metrics).
_AFTER_BUILDERS: list[Builder] = []


def section_builder(fn: Builder) -> Builder:
    """Register `fn(session, tenant, contact_ids)`, which rewrites its sections of those
    customers' documents from `rm_items` (see `items_of` and `write_sections`). Returns
    `fn` followed by the after-builders: what a section's handlers call."""
    _BUILDERS.append(fn)

    @functools.wraps(fn)
    async def build_then_derive(session: AsyncSession, tenant: str, contact_ids: list[str]) -> None:
        await fn(session, tenant, contact_ids)
        for after in _AFTER_BUILDERS:
            await after(session, tenant, contact_ids)

    return build_then_derive


def after_builders(fn: Builder) -> Builder:
    """Register `fn(session, tenant, contact_ids)` to run after a section's builder (and once
    after all of them in `rebuild`): for values derived from several sections."""
    _AFTER_BUILDERS.append(fn)
    return fn


_PUT_ITEM = text("""
WITH old AS (
    SELECT contact_id FROM rm_items
    WHERE tenant_id = :tenant AND section = :section AND item_id = :item_id
), put AS (
    INSERT INTO rm_items AS r (tenant_id, section, item_id, contact_id, item, version, sort_at)
    VALUES (:tenant, :section, :item_id, CAST(:contact_id AS uuid), CAST(:item AS jsonb),
            :version, :sort_at)
    ON CONFLICT (tenant_id, section, item_id) DO UPDATE SET
        contact_id = EXCLUDED.contact_id, item = EXCLUDED.item, version = EXCLUDED.version,
        sort_at = EXCLUDED.sort_at
    WHERE r.version < EXCLUDED.version
    RETURNING contact_id
)
SELECT CAST(contact_id AS text) FROM put
UNION SELECT CAST(contact_id AS text) FROM old WHERE EXISTS (SELECT 1 FROM put)
""")


# A section event for a customer whose document does not exist yet leaves a `pending` row
# (no document) that the contact's first event turns into the document. The row is what
# serializes the two consumers: whichever inserts it second waits for the first to commit,
# so the contact's `rebuild` always sees the items, or the item's builder the document.
_ENSURE_ROW = text("""
INSERT INTO customer_360 (tenant_id, contact_id, state, contact_version)
VALUES (:tenant, CAST(:contact_id AS uuid), 'pending', 0)
ON CONFLICT (tenant_id, contact_id) DO NOTHING
""")


async def put_item(
    session: AsyncSession,
    *,
    tenant: str,
    section: str,
    item_id: str,
    contact_id: str | None,
    item: dict[str, Any],
    version: int,
    sort_at: datetime,
) -> list[str]:
    """Insert or replace an item (unless a newer version is stored). Returns the customers
    whose documents must be rebuilt: the item's customer and, when it moved, the previous one."""
    rows = await session.execute(
        _PUT_ITEM,
        {
            "tenant": tenant,
            "section": section,
            "item_id": item_id,
            "contact_id": contact_id,
            "item": _json(item),
            "version": version,
            "sort_at": sort_at,
        },
    )
    touched = [r[0] for r in rows if r[0] is not None]
    if contact_id is not None and touched:
        await session.execute(_ENSURE_ROW, {"tenant": tenant, "contact_id": contact_id})
    return touched


async def get_item(
    session: AsyncSession, *, tenant: str, section: str, item_id: str
) -> dict[str, Any] | None:
    """The stored item (to carry forward what an event does not repeat)."""
    row = (
        await session.execute(
            text(
                "SELECT item FROM rm_items WHERE tenant_id = :tenant AND section = :section "
                "AND item_id = :id"
            ),
            {"tenant": tenant, "section": section, "id": item_id},
        )
    ).first()
    return dict(row[0]) if row is not None else None


async def drop_item(session: AsyncSession, *, tenant: str, section: str, item_id: str) -> list[str]:
    """Remove an item; returns the customer whose document must be rebuilt."""
    rows = await session.execute(
        text("""
        DELETE FROM rm_items WHERE tenant_id = :tenant AND section = :section AND item_id = :id
        RETURNING CAST(contact_id AS text)
    """),
        {"tenant": tenant, "section": section, "id": item_id},
    )
    return [r[0] for r in rows if r[0] is not None]


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


async def write_sections(
    session: AsyncSession,
    *,
    tenant: str,
    contact_id: str,
    values: dict[str, Any],
    metrics: dict[str, Any] | None = None,
) -> None:
    """Set top-level keys of a customer's document and merge keys into its `metrics` (a no-op
    for a customer without a document: its builder runs again when the document appears)."""
    await session.execute(
        text("""
        UPDATE customer_360 SET updated_at = now(), revision = revision + 1,
            doc = doc || CAST(:values AS jsonb)
                      || jsonb_build_object('metrics', COALESCE(doc -> 'metrics', '{}'::jsonb)
                                                       || CAST(:metrics AS jsonb))
        WHERE tenant_id = :tenant AND contact_id = CAST(:contact_id AS uuid)
          AND doc IS NOT NULL
    """),
        {
            "tenant": tenant,
            "contact_id": contact_id,
            "values": _json(values),
            "metrics": _json(metrics or {}),
        },
    )


async def touch(
    session: AsyncSession, *, tenant: str, contact_ids: list[str], as_of: datetime
) -> None:
    """Record that events up to `as_of` are applied to these documents."""
    await session.execute(
        text("""
        UPDATE customer_360 SET doc = doc || jsonb_build_object('as_of', CAST(:as_of AS text))
        WHERE tenant_id = :tenant AND contact_id = ANY(CAST(:ids AS uuid[])) AND doc IS NOT NULL
    """),
        {"tenant": tenant, "ids": contact_ids, "as_of": rfc3339(as_of)},
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
    rows = await session.execute(
        text("""
        SELECT DISTINCT CAST(contact_id AS text) FROM rm_items
        WHERE tenant_id = :tenant AND contact_id = ANY(CAST(:ids AS uuid[]))
    """),
        {"tenant": tenant, "ids": contact_ids},
    )
    with_items = [r[0] for r in rows]
    if with_items:
        for build in _BUILDERS:
            await build(session, tenant, with_items)
        for after in _AFTER_BUILDERS:
            await after(session, tenant, with_items)
