"""Consumers of the contacts service's events.

- contact.merged: tickets, CSAT surveys and NPS invitations of the merged contacts move to
  the survivor (each re-pointed ticket: version + 1, ticket.updated with changed_fields
  ["requester_contact_id"]).
- contact.erased: personal data goes: the descriptions and every comment body of the
  contact's tickets are blanked, the subject becomes "[erased]", CSAT and NPS comments are
  removed (scores stay for statistics; the contact id is a pseudonym). Each ticket:
  ticket.updated with changed_fields ["subject", "description", "comments"].
- contact.deleted: tickets keep their history but lose the link to the contact
  (requester_contact_id NULL; ticket.updated).
- custom_field.defined: the local replica of `ticket` custom field definitions.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.consumer import Consumer
from chassis.events import IncomingEvent
from crm.contacts.v1 import contacts_pb2 as cpb
from crm.tickets.v1 import tickets_pb2 as pb
from tickets import events, sla
from tickets.ticketing import COLS

consumer = Consumer("contacts-events", context="contacts", aggregates=["contact", "custom_field"])
ACTOR = "system:contacts"


async def _emit_updated(
    session: AsyncSession, tenant: str, rows: list[dict[str, Any]], changed: list[str], origin: str
) -> None:
    clocks = await sla.load_clocks(session, tenant, [r["id"] for r in rows])
    by_ticket: dict[Any, list[dict[str, Any]]] = {}
    for c in clocks:
        by_ticket.setdefault(c["ticket_id"], []).append(c)
    for row in rows:
        msg = pb.TicketUpdated(
            ticket=events.ticket_message(row, sla.current_clocks(by_ticket.get(row["id"], [])))
        )
        events.emit(
            session,
            msg,
            tenant=tenant,
            aggregate_id=row["id"],
            version=row["version"],
            actor=ACTOR,
            origin=origin,
            occurred_at=row["updated_at"],
            changed=changed,
        )


@consumer.on("crm.contacts.contact.merged.v1")
async def contact_merged(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(cpb.ContactMerged)
    merged = [m for m in msg.merged_ids if m and m != msg.survivor_id]
    if not merged:
        return
    params = {
        "t": event.tenant,
        "ids": merged,
        "survivor": msg.survivor_id,
        "now": datetime.now(UTC),
    }
    rows = (
        await session.execute(
            text(
                "UPDATE tickets SET requester_contact_id = CAST(:survivor AS uuid), "
                "updated_at = :now, "
                "version = version + 1 WHERE tenant_id = :t "
                f"AND requester_contact_id = ANY(CAST(:ids AS uuid[])) RETURNING {COLS}"
            ),
            params,
        )
    ).mappings()
    updated = [dict(r) for r in rows]
    for table in ("csat_surveys", "nps_invitations"):
        await session.execute(
            text(
                f"UPDATE {table} SET contact_id = CAST(:survivor AS uuid) WHERE tenant_id = :t "
                "AND contact_id = ANY(CAST(:ids AS uuid[]))"
            ),
            params,
        )
    await _emit_updated(session, event.tenant, updated, ["requester_contact_id"], event.source)


@consumer.on("crm.contacts.contact.erased.v1")
async def contact_erased(session: AsyncSession, event: IncomingEvent) -> None:
    params = {"t": event.tenant, "id": event.aggregate_id, "now": datetime.now(UTC)}
    rows = (
        await session.execute(
            text(
                "UPDATE tickets SET subject = '[erased]', description = '', updated_at = :now, "
                "version = version + 1 WHERE tenant_id = :t "
                f"AND requester_contact_id = CAST(:id AS uuid) RETURNING {COLS}"
            ),
            params,
        )
    ).mappings()
    updated = [dict(r) for r in rows]
    await session.execute(
        text(
            "UPDATE ticket_comments SET body = '' WHERE tenant_id = :t AND ticket_id IN "
            "(SELECT id FROM tickets WHERE tenant_id = :t "
            "AND requester_contact_id = CAST(:id AS uuid))"
        ),
        params,
    )
    for table in ("csat_surveys", "nps_invitations"):
        await session.execute(
            text(
                f"UPDATE {table} SET comment = NULL WHERE tenant_id = :t "
                "AND contact_id = CAST(:id AS uuid)"
            ),
            params,
        )
    await _emit_updated(
        session, event.tenant, updated, ["subject", "description", "comments"], event.source
    )


@consumer.on("crm.contacts.contact.deleted.v1")
async def contact_deleted(session: AsyncSession, event: IncomingEvent) -> None:
    rows = (
        await session.execute(
            text(
                "UPDATE tickets SET requester_contact_id = NULL, updated_at = :now, "
                "version = version + 1 WHERE tenant_id = :t "
                f"AND requester_contact_id = CAST(:id AS uuid) RETURNING {COLS}"
            ),
            {"t": event.tenant, "id": event.aggregate_id, "now": datetime.now(UTC)},
        )
    ).mappings()
    await _emit_updated(
        session, event.tenant, [dict(r) for r in rows], ["requester_contact_id"], event.source
    )


@consumer.on("crm.contacts.custom_field.defined.v1")
async def custom_field_defined(session: AsyncSession, event: IncomingEvent) -> None:
    d = event.parse(cpb.CustomFieldDefined).definition
    if d.object_type != "ticket":
        return
    await session.execute(
        text(
            "INSERT INTO custom_field_definitions (tenant_id, object_type, key, label, type, "
            "required, options, version) VALUES (:t, :ot, :key, :label, :type, :req, :opts, :v) "
            "ON CONFLICT (tenant_id, object_type, key) DO UPDATE SET label = EXCLUDED.label, "
            "type = EXCLUDED.type, required = EXCLUDED.required, options = EXCLUDED.options, "
            "version = EXCLUDED.version, deleted = false "
            "WHERE custom_field_definitions.version <= EXCLUDED.version"
        ),
        {
            "t": event.tenant,
            "ot": d.object_type,
            "key": d.key,
            "label": d.label,
            "type": d.type,
            "req": d.required,
            "opts": list(d.options),
            "v": d.version or event.version,
        },
    )
