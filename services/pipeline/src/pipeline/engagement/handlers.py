"""Consumer of contacts events for activities and tasks: a merge re-points them to the
survivor, an erasure purges the personal data of the contact's activities, a deletion clears
the link. Every changed row gets a version bump and one `updated` event; each reaction is
one statement per table."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.consumer import Consumer
from chassis.events import IncomingEvent
from crm.common.v1.common_pb2 import EventMeta
from crm.contacts.v1.contacts_pb2 import ContactDeleted, ContactErased, ContactMerged
from pipeline.engagement import repository as repo
from pipeline.engagement.events import Actor, EventSink

consumer = Consumer("pipeline-engagement", context="contacts", aggregates=["contact"])

ORIGIN = "crm/contacts"


def _sink(session: AsyncSession, meta: EventMeta) -> EventSink:
    return EventSink(session, Actor(meta.actor or "system:contacts", ORIGIN))


async def _repoint(
    session: AsyncSession,
    sink: EventSink,
    tenant: str,
    from_ids: list[uuid.UUID],
    to_id: uuid.UUID | None,
) -> None:
    now = datetime.now(UTC)
    for row in await repo.repoint_contact(session, "activities", tenant, from_ids, to_id, now):
        sink.activity_updated(row, ["contact_id"])
    for row in await repo.repoint_contact(session, "tasks", tenant, from_ids, to_id, now):
        sink.task_updated(row, ["contact_id"])


@consumer.on("crm.contacts.contact.merged.v1")
async def contact_merged(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(ContactMerged)
    survivor = uuid.UUID(msg.survivor_id or event.aggregate_id)
    merged = [uuid.UUID(i) for i in msg.merged_ids if i and uuid.UUID(i) != survivor]
    await _repoint(session, _sink(session, msg.meta), event.tenant, merged, survivor)


@consumer.on("crm.contacts.contact.erased.v1")
async def contact_erased(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(ContactErased)
    contact = uuid.UUID(event.aggregate_id)
    sink = _sink(session, msg.meta)
    now = datetime.now(UTC)
    for row in await repo.erase_activities_of(session, event.tenant, contact, now):
        sink.activity_updated(row, ["subject", "body", "contact_id"])
    for row in await repo.repoint_contact(session, "tasks", event.tenant, [contact], None, now):
        sink.task_updated(row, ["contact_id"])


@consumer.on("crm.contacts.contact.deleted.v1")
async def contact_deleted(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(ContactDeleted)
    contact = uuid.UUID(event.aggregate_id)
    await _repoint(session, _sink(session, msg.meta), event.tenant, [contact], None)
