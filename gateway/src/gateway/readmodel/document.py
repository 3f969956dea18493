"""The 360 document store: one JSONB document per customer (contact) in `customer_360`.

Every section is owned by the handlers of one producing context (`sections/<context>.py`);
they change their section through these helpers, inside the consumer's transaction, and
never touch another section. A document whose contact was deleted, erased or merged away is a
tombstone row (`doc` NULL, nothing personal kept) so that a late event cannot revive it.

Document shape:
`{"customer_id", "contact": {...}, "company": {...} | null, "deals": [], "orders": [],
"tickets": [], "campaigns": [], "loyalty": null, "metrics": {}, "as_of": "<RFC 3339>",
"versions": {"contact": n, "company": m}}`
"""

from __future__ import annotations

import json
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
    "loyalty": None,
    "metrics": {},
}


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


_UPSERT_CONTACT = text("""
INSERT INTO customer_360 AS c (tenant_id, contact_id, company_id, owner_id, contact_version,
                               updated_at, doc)
SELECT CAST(:tenant AS text), CAST(:contact_id AS uuid), CAST(:company_id AS uuid),
       CAST(:owner_id AS text), CAST(:version AS bigint), now(),
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
    contact_version = EXCLUDED.contact_version, updated_at = now(),
    doc = c.doc || jsonb_build_object(
        'contact', EXCLUDED.doc -> 'contact', 'company', EXCLUDED.doc -> 'company',
        'as_of', EXCLUDED.doc -> 'as_of',
        'versions', (c.doc -> 'versions') - 'company' || (EXCLUDED.doc -> 'versions'))
WHERE c.state = 'active' AND c.contact_version < EXCLUDED.contact_version
""")


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
        "skeleton": _json(EMPTY_SECTIONS),
        "as_of": rfc3339(as_of),
    }


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
    contact_version = GREATEST(c.contact_version, EXCLUDED.contact_version), updated_at = now()
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
            updated_at = now()
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
        UPDATE customer_360 SET updated_at = now(), doc = doc || jsonb_build_object(
            'company', CAST(:company AS jsonb), 'as_of', CAST(:as_of AS text),
            'versions', (doc -> 'versions') - 'company'
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


# Helpers for the sections other contexts own (deals, orders, tickets, campaigns, ...).


async def set_section(
    session: AsyncSession,
    *,
    tenant: str,
    contact_id: str,
    section: str,
    value: Any,
    as_of: datetime,
) -> None:
    """Replace one section of a customer's document (a no-op for an unknown customer)."""
    await session.execute(
        text("""
        UPDATE customer_360 SET updated_at = now(),
            doc = doc || jsonb_build_object(CAST(:section AS text), CAST(:value AS jsonb),
                                            'as_of', CAST(:as_of AS text))
        WHERE tenant_id = :tenant AND contact_id = CAST(:contact_id AS uuid)
          AND doc IS NOT NULL
    """),
        {
            "tenant": tenant,
            "contact_id": contact_id,
            "section": section,
            "value": _json(value),
            "as_of": rfc3339(as_of),
        },
    )


_REPLACE_SECTION_ITEM = text("""
UPDATE customer_360 SET updated_at = now(),
    doc = doc || jsonb_build_object(
        CAST(:section AS text),
        COALESCE((SELECT jsonb_agg(e) FROM jsonb_array_elements(
                      COALESCE(doc -> CAST(:section AS text), '[]'::jsonb)) AS e
                  WHERE e ->> 'id' IS DISTINCT FROM CAST(:item_id AS text)), '[]'::jsonb)
            || CAST(:items AS jsonb),
        'as_of', CAST(:as_of AS text))
WHERE tenant_id = :tenant AND contact_id = CAST(:contact_id AS uuid)
  AND doc IS NOT NULL
""")


async def _replace_section_item(
    session: AsyncSession,
    *,
    tenant: str,
    contact_id: str,
    section: str,
    item_id: str,
    item: dict[str, Any] | None,
    as_of: datetime,
) -> None:
    """Drop the item with `item_id` from a list section, then append `item` if given."""
    await session.execute(
        _REPLACE_SECTION_ITEM,
        {
            "tenant": tenant,
            "contact_id": contact_id,
            "section": section,
            "item_id": item_id,
            "items": _json([item] if item is not None else []),
            "as_of": rfc3339(as_of),
        },
    )


async def put_section_item(
    session: AsyncSession,
    *,
    tenant: str,
    contact_id: str,
    section: str,
    item: dict[str, Any],
    as_of: datetime,
) -> None:
    """Insert or replace (by its `id`) one item of a list section, e.g. a deal."""
    await _replace_section_item(
        session,
        tenant=tenant,
        contact_id=contact_id,
        section=section,
        item_id=str(item["id"]),
        item=item,
        as_of=as_of,
    )


async def remove_section_item(
    session: AsyncSession,
    *,
    tenant: str,
    contact_id: str,
    section: str,
    item_id: str,
    as_of: datetime,
) -> None:
    """Remove one item (by its `id`) from a list section."""
    await _replace_section_item(
        session,
        tenant=tenant,
        contact_id=contact_id,
        section=section,
        item_id=item_id,
        item=None,
        as_of=as_of,
    )
