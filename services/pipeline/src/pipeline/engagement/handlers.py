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
from crm.campaigns.v1.campaigns_pb2 import SequenceTaskRequested
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


# -- requests from the campaigns service ---------------------------------------------------

campaigns_consumer = Consumer(
    "pipeline-campaigns", context="campaigns", aggregates=["sequence_task"]
)

# The assignee of a task asked for a contact without an owner: admins see it and reassign it.
UNASSIGNED = "unassigned"


@campaigns_consumer.on("crm.campaigns.sequence_task.requested.v1")
async def sequence_task_requested(session: AsyncSession, event: IncomingEvent) -> None:
    """A nurture sequence's create_task step: a task with the id the request names, so a
    redelivered request creates nothing."""
    msg = event.parse(SequenceTaskRequested)
    task_id = uuid.UUID(event.aggregate_id)
    if await repo.get(session, "tasks", event.tenant, task_id) is not None:
        return
    now = datetime.now(UTC)
    contact = uuid.UUID(msg.contact_id) if msg.contact_id else None
    row = await repo.insert(
        session,
        "tasks",
        {
            "tenant_id": event.tenant,
            "id": task_id,
            "title": msg.title or "Follow up",
            "due_at": msg.due_at.ToDatetime(tzinfo=UTC) if msg.HasField("due_at") else None,
            "remind_at": None,
            "assignee_id": msg.assignee_id or UNASSIGNED,
            "contact_id": contact,
            "deal_id": None,
            "status": "open",
            "priority": msg.priority if msg.priority in ("low", "normal", "high") else "normal",
            "completed_at": None,
            "created_by": "service:campaigns",
            "created_at": now,
            "updated_at": now,
            "version": 1,
        },
    )
    EventSink(session, Actor("service:campaigns", "crm/campaigns")).task_created(row)
