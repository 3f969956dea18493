"""What the rest of the service does when something happens to a contact: link pending
touchpoints by email, apply lead-scoring rules, enroll into or exit sequences. The replica
consumer, the tracking endpoints and touchpoints call in here, so those modules do not
depend on each other."""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from campaigns.common import Row, one


async def contact_changed(
    session: AsyncSession, tenant: str, contact_id: uuid.UUID, before: Row | None, created: bool
) -> None:
    from campaigns import memberships, scoring, sequences, touchpoints

    contact = await one(
        session,
        "SELECT * FROM contacts WHERE tenant_id = :t AND id = :i",
        {"t": tenant, "i": contact_id},
    )
    if (
        contact is None
        or contact["merged_into_id"] is not None
        or contact["deleted_at"] is not None
    ):
        return
    if contact["email"] and (before is None or before["email"] != contact["email"]):
        await touchpoints.link_by_email(session, tenant, contact_id, contact["email"])
    if created:
        await scoring.apply_event(session, tenant, contact_id, "contact.created")
    await scoring.apply_fields(session, tenant, contact_id)
    await sequences.on_contact_changed(session, tenant, contact, created)
    await memberships.refresh_contact(session, tenant, contact_id)


async def contacts_merged(
    session: AsyncSession, tenant: str, survivor: uuid.UUID, losers: list[uuid.UUID]
) -> None:
    from campaigns import loyalty, memberships, scoring, sequences, touchpoints

    await touchpoints.repoint(session, tenant, survivor, losers)
    await scoring.merge(session, tenant, survivor, losers)
    await loyalty.merge(session, tenant, survivor, losers)
    for loser in losers:
        await sequences.exit_contact(session, tenant, loser, "merged")
        await memberships.contact_gone(session, tenant, loser)
    await memberships.refresh_contact(session, tenant, survivor)


async def contact_gone(
    session: AsyncSession, tenant: str, contact_id: uuid.UUID, reason: str, *, erase: bool
) -> None:
    from campaigns import memberships, sequences, touchpoints

    await sequences.exit_contact(session, tenant, contact_id, reason)
    await memberships.contact_gone(session, tenant, contact_id)
    await session.execute(
        text(
            "UPDATE deliveries SET status = 'skipped', last_error = :r WHERE tenant_id = :t "
            "AND contact_id = :c AND status = 'pending'"
        ),
        {"t": tenant, "c": contact_id, "r": f"contact {reason}"},
    )
    if erase:
        await touchpoints.erase(session, tenant, contact_id)
        await session.execute(
            text("DELETE FROM lead_scores WHERE tenant_id = :t AND contact_id = :c"),
            {"t": tenant, "c": contact_id},
        )
        await session.execute(
            text("UPDATE deliveries SET email = '' WHERE tenant_id = :t AND contact_id = :c"),
            {"t": tenant, "c": contact_id},
        )


async def email_engaged(session: AsyncSession, tenant: str, delivery: Row, event: str) -> None:
    """First open or click of an email: scoring rules on `email.opened` / `email.clicked`."""
    from campaigns import scoring

    await scoring.apply_event(session, tenant, delivery["contact_id"], event)


async def unsubscribed(session: AsyncSession, tenant: str, contact_id: uuid.UUID) -> None:
    """A contact unsubscribed: its active sequence enrollments exit."""
    from campaigns import sequences

    await sequences.exit_contact(session, tenant, contact_id, "unsubscribed")


async def touchpoint_linked(
    session: AsyncSession, tenant: str, contact_id: uuid.UUID, channel: str
) -> None:
    from campaigns import scoring, sequences

    await scoring.apply_event(session, tenant, contact_id, "touchpoint.recorded")
    await scoring.apply_event(session, tenant, contact_id, f"touchpoint.{channel}")
    await sequences.on_touchpoint(session, tenant, contact_id, channel)
