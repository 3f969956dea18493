"""What other services ask of contacts through events (the campaigns service):

- `consent.withdrawn` (an unsubscribe link): consent.<channel> = denied;
- `lead.qualified` (a score crossed its MQL threshold): lifecycle_stage -> mql when it was
  lower (unset, subscriber or lead);
- `lead.captured` (a touchpoint from an unknown email): a new lead contact (email, names,
  lifecycle_stage lead, lead_source = channel) unless a live contact has that email — one
  per email, whatever the concurrency (a transaction-scoped advisory lock on the email);
- `contact_tag.requested` (a sequence step): the tag is added unless present.

Each goes through the same writer as the API (validation, version, contact.updated /
contact.created events). A request about a contact merged away applies to its survivor; one
about a deleted or erased contact is dropped. Writes run as the `service` role with origin
`campaigns`.
"""

from __future__ import annotations

import uuid
from datetime import UTC
from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.auth import Principal
from chassis.consumer import Consumer
from chassis.events import IncomingEvent
from contacts import repository as repo
from contacts.access import Caller
from contacts.models.schemas import ContactIn
from contacts.service import ContactService
from contacts.writer import Write, raise_for
from crm.campaigns.v1 import campaigns_pb2 as pb

consumer = Consumer(
    "contacts-campaigns", context="campaigns", aggregates=["consent", "lead", "contact_tag"]
)

LOWER_THAN_MQL = (None, "subscriber", "lead")
# Phone numbers are never written here; the region only satisfies the writer.
_REGION = "US"


def _service(session: AsyncSession, tenant: str) -> ContactService:
    principal = Principal(sub="service:campaigns", tenant=tenant, roles=frozenset({"service"}))
    return ContactService(session, Caller(principal, "campaigns"), _REGION)


async def _live(session: AsyncSession, tenant: str, contact_id: str) -> dict[str, Any] | None:
    """The live contact (following one merge), locked; None when gone."""
    try:
        cid: uuid.UUID | None = uuid.UUID(contact_id)
    except ValueError:
        return None
    for _ in range(5):  # a survivor may itself have been merged later
        assert cid is not None
        row = await repo.get_contact(session, tenant, cid, for_update=True)
        if row is None or row["deleted_at"] is not None or row["erased_at"] is not None:
            return None
        if row["merged_into_id"] is None:
            return row
        cid = row["merged_into_id"]
    return None


async def _update(session: AsyncSession, tenant: str, row: dict[str, Any], body: ContactIn) -> None:
    service = _service(session, tenant)
    [outcome] = await service.writer.apply(
        [Write(0, body, set(body.model_fields_set), target_id=row["id"])],
        locked={row["id"]: row},
    )
    raise_for(outcome)


@consumer.on("crm.campaigns.consent.withdrawn.v1")
async def consent_withdrawn(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(pb.ConsentWithdrawn)
    if msg.channel != "email_marketing":
        return
    row = await _live(session, event.tenant, msg.contact_id)
    if row is None:
        return
    consent = row.get("consent") or {}
    if consent.get("email_marketing") == "denied":
        return
    at = msg.at.ToDatetime(tzinfo=UTC) if msg.HasField("at") else event.time
    body = ContactIn.model_validate(
        {
            "consent": {
                "email_marketing": "denied",
                "legal_basis": consent.get("legal_basis"),
                "updated_at": at,
            }
        }
    )
    await _update(session, event.tenant, row, body)


@consumer.on("crm.campaigns.lead.qualified.v1")
async def lead_qualified(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(pb.LeadQualified)
    row = await _live(session, event.tenant, msg.contact_id)
    if row is None or row.get("lifecycle_stage") not in LOWER_THAN_MQL:
        return
    await _update(session, event.tenant, row, ContactIn(lifecycle_stage="mql"))


@consumer.on("crm.campaigns.lead.captured.v1")
async def lead_captured(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(pb.LeadCaptured)
    email = msg.email.strip().lower()
    if not email:
        return
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"lead-email:{event.tenant}:{email}"},
    )
    existing = await repo.live_contact_ids_by_email(session, event.tenant, [email], None)
    if existing.get(email):
        return
    body = ContactIn.model_validate(
        {
            "email": email,
            "first_name": msg.first_name or None,
            "last_name": msg.last_name or None,
            "lifecycle_stage": "lead",
            "lead_source": msg.channel or "touchpoint",
        }
    )
    service = _service(session, event.tenant)
    [outcome] = await service.writer.apply(
        [Write(0, body, set(body.model_fields_set), create_only=True)]
    )
    raise_for(outcome)


@consumer.on("crm.campaigns.contact_tag.requested.v1")
async def contact_tag_requested(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(pb.ContactTagRequested)
    row = await _live(session, event.tenant, msg.contact_id)
    if row is None or not msg.tag:
        return
    tags = list(row.get("tags") or [])
    if msg.tag in tags:
        return
    await _update(session, event.tenant, row, ContactIn.model_validate({"tags": [*tags, msg.tag]}))
