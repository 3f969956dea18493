"""Consumers of contacts events (durable `pipeline-core`).

- contact merged: deals and orders of the merged contacts move to the survivor;
- contact deleted or erased: deals and orders stay, without the contact (contact_id cleared);
- company deleted: deals stay, without the company (company_id cleared); orders keep it
  unless they have a contact (an order needs a contact or a company);
- custom field defined: the local replica of definitions (deal custom fields validate
  against it).

Each deal or order changed here gets a version bump and one event (deal.updated with
changed_fields ["contact_id"] or ["company_id"], order.upserted), with the actor of the
contacts event and the origin "crm/contacts". Soft-deleted deals are left as they are."""

from __future__ import annotations

import uuid
from typing import Literal

from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.consumer import Consumer
from chassis.events import IncomingEvent
from crm.contacts.v1 import contacts_pb2
from pipeline.core import deal_repo
from pipeline.core.common import fetch, now
from pipeline.core.events import EventSink
from pipeline.core.fields import upsert_definition
from pipeline.core.orders import SELECT as ORDER_SELECT

ORIGIN = "crm/contacts"

consumer = Consumer("core", context="contacts", aggregates=["contact", "company", "custom_field"])

# The column is one of two literals below, never input.
_DEALS = (
    "UPDATE deals SET {col} = $3, version = version + 1, updated_at = $4 "
    "WHERE tenant_id = $1 AND {col} = ANY($2::uuid[]) AND deleted_at IS NULL RETURNING id"
)
_ORDERS = (
    "UPDATE orders SET {col} = $3, version = version + 1, updated_at = $4 "
    "WHERE tenant_id = $1 AND {col} = ANY($2::uuid[]) {extra} RETURNING id"
)


async def repoint(
    session: AsyncSession,
    tenant: str,
    actor: str,
    column: Literal["contact_id", "company_id"],
    from_ids: list[uuid.UUID],
    to_id: uuid.UUID | None,
) -> None:
    """Set `column` to `to_id` (None clears it) on the live deals and the orders that point
    at one of `from_ids` (set-based), with one event per changed aggregate."""
    if not from_ids:
        return
    events = EventSink(session, tenant, actor, ORIGIN)
    ts = now()
    sql = _DEALS.format(col=column)
    deal_ids = [r["id"] for r in await fetch(session, sql, tenant, from_ids, to_id, ts)]
    for row in await deal_repo.get_deals(session, tenant, deal_ids):
        events.deal_updated(row, [column])
    # an order needs a contact or a company: a company is cleared only beside a contact
    extra = "AND contact_id IS NOT NULL" if column == "company_id" and to_id is None else ""
    sql = _ORDERS.format(col=column, extra=extra)
    order_ids = [r["id"] for r in await fetch(session, sql, tenant, from_ids, to_id, ts)]
    if order_ids:
        for row in await fetch(
            session, ORDER_SELECT + " AND o.id = ANY($2::uuid[]) ORDER BY o.id", tenant, order_ids
        ):
            events.order_changed(row, row["status"], [column])


@consumer.on("crm.contacts.contact.merged.v1")
async def on_contact_merged(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(contacts_pb2.ContactMerged)
    merged = [uuid.UUID(i) for i in msg.merged_ids if i != msg.survivor_id]
    survivor = uuid.UUID(msg.survivor_id)
    await repoint(session, event.tenant, msg.meta.actor, "contact_id", merged, survivor)


@consumer.on("crm.contacts.contact.deleted.v1")
async def on_contact_deleted(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(contacts_pb2.ContactDeleted)
    contact = [uuid.UUID(event.aggregate_id)]
    await repoint(session, event.tenant, msg.meta.actor, "contact_id", contact, None)


@consumer.on("crm.contacts.contact.erased.v1")
async def on_contact_erased(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(contacts_pb2.ContactErased)
    contact = [uuid.UUID(event.aggregate_id)]
    await repoint(session, event.tenant, msg.meta.actor, "contact_id", contact, None)


@consumer.on("crm.contacts.company.deleted.v1")
async def on_company_deleted(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(contacts_pb2.CompanyDeleted)
    company = [uuid.UUID(event.aggregate_id)]
    await repoint(session, event.tenant, msg.meta.actor, "company_id", company, None)


@consumer.on("crm.contacts.custom_field.defined.v1")
async def on_custom_field_defined(session: AsyncSession, event: IncomingEvent) -> None:
    d = event.parse(contacts_pb2.CustomFieldDefined).definition
    await upsert_definition(
        session,
        event.tenant,
        d.object_type,
        d.key,
        d.label,
        d.type,
        d.required,
        list(d.options),
        d.version,
    )
