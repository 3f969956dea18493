"""The customer timeline: one row per event that concerned the customer, newest first.

Entries carry a short human summary and small, non-personal details (changed field names,
actor, origin), never the changed values."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.driver import raw_connection


@dataclass(frozen=True)
class Entry:
    event_id: str
    occurred_at: datetime
    kind: str
    summary: str
    data: dict[str, Any] = field(default_factory=dict)

    def params(self, tenant: str) -> dict[str, Any]:
        return {
            "tenant": tenant,
            "event_id": self.event_id,
            "occurred_at": self.occurred_at,
            "kind": self.kind,
            "summary": self.summary,
            "data": json.dumps(self.data, separators=(",", ":")),
        }


_RECORD = text("""
    INSERT INTO timeline (tenant_id, contact_id, occurred_at, kind, summary, data, event_id)
    VALUES (:tenant, CAST(:contact_id AS uuid), :occurred_at, :kind, :summary,
            CAST(:data AS jsonb), CAST(:event_id AS uuid))
    ON CONFLICT (event_id, contact_id) DO NOTHING
""")


async def record(session: AsyncSession, tenant: str, contact_id: str, entry: Entry) -> None:
    """Add an entry to a customer's timeline (once per event, whatever the redeliveries)."""
    await session.execute(_RECORD, {**entry.params(tenant), "contact_id": contact_id})


_RECORD_MANY = """
    INSERT INTO timeline (tenant_id, contact_id, occurred_at, kind, summary, data, event_id)
    SELECT u.tenant, u.contact_id, u.occurred_at, u.kind, u.summary, CAST(u.data AS jsonb),
           u.event_id
    FROM unnest($1::text[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],
                $7::uuid[]) WITH ORDINALITY
         AS u(tenant, contact_id, occurred_at, kind, summary, data, event_id, n)
    ORDER BY u.n
    ON CONFLICT (event_id, contact_id) DO NOTHING
"""


async def record_many(session: AsyncSession, items: list[tuple[str, str, Entry]]) -> None:
    """`record` for many (tenant, contact_id, entry), in order, with one statement."""
    if not items:
        return
    driver = await raw_connection(session)
    await driver.execute(
        _RECORD_MANY,
        [tenant for tenant, _, _ in items],
        [cid for _, cid, _ in items],
        [e.occurred_at for _, _, e in items],
        [e.kind for _, _, e in items],
        [e.summary for _, _, e in items],
        [json.dumps(e.data, separators=(",", ":")) for _, _, e in items],
        [e.event_id for _, _, e in items],
    )


async def record_for_company(
    session: AsyncSession, tenant: str, company_id: str, entry: Entry
) -> None:
    """Add an entry to the timeline of every customer working at the company."""
    await session.execute(
        text("""
        INSERT INTO timeline (tenant_id, contact_id, occurred_at, kind, summary, data, event_id)
        SELECT tenant_id, contact_id, CAST(:occurred_at AS timestamptz), CAST(:kind AS text),
               CAST(:summary AS text), CAST(:data AS jsonb), CAST(:event_id AS uuid)
        FROM customer_360
        WHERE tenant_id = :tenant AND company_id = CAST(:company_id AS uuid)
          AND doc IS NOT NULL
        ON CONFLICT (event_id, contact_id) DO NOTHING
    """),
        {**entry.params(tenant), "company_id": company_id},
    )


async def repoint(session: AsyncSession, tenant: str, from_ids: list[str], to_id: str) -> None:
    """Move the entries of merged-away customers to the survivor (an event already on the
    survivor's timeline, e.g. a company change seen by both, is kept once)."""
    params = {"tenant": tenant, "ids": from_ids, "to": to_id}
    await session.execute(
        text("""
        DELETE FROM timeline t
        WHERE t.tenant_id = :tenant AND t.contact_id = ANY(CAST(:ids AS uuid[]))
          AND (EXISTS (SELECT 1 FROM timeline s
                       WHERE s.event_id = t.event_id AND s.contact_id = CAST(:to AS uuid))
               OR t.id <> (SELECT min(d.id) FROM timeline d
                           WHERE d.event_id = t.event_id
                             AND d.contact_id = ANY(CAST(:ids AS uuid[]))))
    """),
        params,
    )
    await session.execute(
        text("""
        UPDATE timeline SET contact_id = CAST(:to AS uuid)
        WHERE tenant_id = :tenant AND contact_id = ANY(CAST(:ids AS uuid[]))
    """),
        params,
    )


async def purge(session: AsyncSession, tenant: str, contact_id: str) -> None:
    await session.execute(
        text(
            "DELETE FROM timeline WHERE tenant_id = :tenant "
            "AND contact_id = CAST(:contact_id AS uuid)"
        ),
        {"tenant": tenant, "contact_id": contact_id},
    )
