"""The local replica of contacts, kept from the contacts service's events (created, updated,
merged, erased, deleted), so segmentation and sending never call contacts at read time.

A snapshot is applied only when its version is newer than the stored one. An erased contact
keeps its id (deliveries and ledgers refer to it) and loses every personal field; a merged
contact becomes a tombstone pointing at the survivor; a deleted one is marked deleted. None
of them is ever a segment member or a recipient again."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from google.protobuf import json_format
from sqlmodel.ext.asyncio.session import AsyncSession

from campaigns import reactions
from campaigns.common import Row, execute, from_ts, now, one
from chassis.consumer import Consumer
from chassis.events import IncomingEvent
from crm.contacts.v1 import contacts_pb2 as pb

consumer = Consumer("campaigns-contacts", context="contacts", aggregates=["contact"])

CONSENT = {
    pb.CONSENT_STATUS_GRANTED: "granted",
    pb.CONSENT_STATUS_DENIED: "denied",
}

COLUMNS = (
    "version",
    "first_name",
    "last_name",
    "email",
    "phone",
    "company_id",
    "owner_id",
    "lifecycle_stage",
    "lead_source",
    "tags",
    "custom_fields",
    "email_marketing",
    "legal_basis",
    "consent_updated_at",
    "created_at",
    "updated_at",
    "merged_into_id",
)

_UPSERT = (
    "INSERT INTO contacts (tenant_id, id, version, first_name, last_name, email, phone, "
    "company_id, owner_id, lifecycle_stage, lead_source, tags, custom_fields, email_marketing, "
    "legal_basis, consent_updated_at, created_at, updated_at, merged_into_id) VALUES (:tenant_id, "
    ":id, :version, :first_name, :last_name, :email, :phone, :company_id, :owner_id, "
    ":lifecycle_stage, :lead_source, CAST(:tags AS text[]), CAST(:custom_fields AS jsonb), "
    ":email_marketing, :legal_basis, :consent_updated_at, :created_at, :updated_at, "
    ":merged_into_id) ON CONFLICT (tenant_id, id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS)
    + ", deleted_at = NULL WHERE contacts.version < EXCLUDED.version "
    "AND contacts.erased_at IS NULL RETURNING id"
)


def _text(value: str) -> str | None:
    return value or None


def snapshot_row(tenant: str, c: pb.Contact, occurred: datetime) -> Row:
    """The replica row of a contact snapshot (emails lower-cased: they are matched by value)."""
    cf: dict[str, Any] = (
        json_format.MessageToDict(c.custom_fields) if c.HasField("custom_fields") else {}
    )
    created = from_ts(c.created_at) or occurred
    return {
        "tenant_id": tenant,
        "id": uuid.UUID(c.id),
        "version": c.version,
        "first_name": _text(c.first_name),
        "last_name": _text(c.last_name),
        "email": _text(c.email.strip().lower()),
        "phone": _text(c.phone),
        "company_id": _text(c.company_id),
        "owner_id": _text(c.owner_id),
        "lifecycle_stage": _text(c.lifecycle_stage),
        "lead_source": _text(c.lead_source),
        "tags": list(dict.fromkeys(c.tags)),
        "custom_fields": json.dumps(cf),
        "email_marketing": CONSENT.get(c.consent.email_marketing, "unknown"),
        "legal_basis": _text(c.consent.legal_basis),
        "consent_updated_at": from_ts(c.consent.updated_at),
        "created_at": created,
        "updated_at": from_ts(c.updated_at) or created,
        "merged_into_id": uuid.UUID(c.merged_into_id) if c.merged_into_id else None,
    }


async def get_contact(session: AsyncSession, tenant: str, contact_id: uuid.UUID) -> Row | None:
    return await one(
        session,
        "SELECT * FROM contacts WHERE tenant_id = :t AND id = :i",
        {"t": tenant, "i": contact_id},
    )


async def upsert(session: AsyncSession, row: Row) -> bool:
    """Apply a snapshot; False when the stored one is as new or the contact was erased."""
    return await one(session, _UPSERT, row) is not None


async def _apply_snapshot(
    session: AsyncSession, event: IncomingEvent, contact: pb.Contact, created: bool
) -> None:
    row = snapshot_row(event.tenant, contact, event.time)
    before = await get_contact(session, event.tenant, row["id"])
    if await upsert(session, row):
        await reactions.contact_changed(session, event.tenant, row["id"], before, created)


@consumer.on("crm.contacts.contact.created.v1")
async def contact_created(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(pb.ContactCreated)
    await _apply_snapshot(session, event, msg.contact, True)


@consumer.on("crm.contacts.contact.updated.v1")
async def contact_updated(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(pb.ContactUpdated)
    await _apply_snapshot(session, event, msg.contact, False)


@consumer.on("crm.contacts.contact.merged.v1")
async def contact_merged(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(pb.ContactMerged)
    survivor = uuid.UUID(msg.survivor_id or event.aggregate_id)
    losers = [uuid.UUID(i) for i in msg.merged_ids if i and uuid.UUID(i) != survivor]
    if msg.HasField("survivor"):
        await _apply_snapshot(session, event, msg.survivor, False)
    if losers:
        await execute(
            session,
            "UPDATE contacts SET merged_into_id = :s, updated_at = :now "
            "WHERE tenant_id = :t AND id = ANY(:ids)",
            {"s": survivor, "now": now(), "t": event.tenant, "ids": losers},
        )
        await reactions.contacts_merged(session, event.tenant, survivor, losers)


@consumer.on("crm.contacts.contact.erased.v1")
async def contact_erased(session: AsyncSession, event: IncomingEvent) -> None:
    contact = uuid.UUID(event.aggregate_id)
    at = now()
    await execute(
        session,
        "INSERT INTO contacts (tenant_id, id, version, created_at, updated_at, erased_at) "
        "VALUES (:t, :i, :v, :now, :now, :now) ON CONFLICT (tenant_id, id) DO UPDATE SET "
        "first_name = NULL, last_name = NULL, email = NULL, phone = NULL, company_id = NULL, "
        "owner_id = NULL, lead_source = NULL, tags = '{}', custom_fields = '{}', "
        "email_marketing = 'unknown', legal_basis = NULL, version = GREATEST(contacts.version, "
        ":v), updated_at = :now, erased_at = :now",
        {"t": event.tenant, "i": contact, "v": event.version, "now": at},
    )
    await reactions.contact_gone(session, event.tenant, contact, "erased", erase=True)


@consumer.on("crm.contacts.contact.deleted.v1")
async def contact_deleted(session: AsyncSession, event: IncomingEvent) -> None:
    contact = uuid.UUID(event.aggregate_id)
    await execute(
        session,
        "UPDATE contacts SET deleted_at = :now, version = GREATEST(version, :v) "
        "WHERE tenant_id = :t AND id = :i",
        {"t": event.tenant, "i": contact, "v": event.version, "now": now()},
    )
    await reactions.contact_gone(session, event.tenant, contact, "deleted", erase=False)
