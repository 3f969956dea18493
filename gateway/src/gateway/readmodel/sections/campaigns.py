"""Marketing and loyalty in the 360, from the campaigns service's events; email, touchpoint,
sequence and loyalty entries on the timeline.

Items in `rm_items`: "emails" (one per delivery, with opened/clicked flags carried across its
events), "lead_scores" (one per contact and scoring model), "loyalty" (one per program
membership), "enrollments" (one per sequence enrollment). The document gets:

- `campaigns`: the 10 most recent emails {id, campaign_id, sequence_id, subject, status,
  opened, clicked, unsubscribed, sent_at}.
- `loyalty`: the membership with the highest balance {program_id, tier, balance,
  points_365d} plus `programs` (every membership); null when none.
- `sequences`: the enrollments {id, sequence_id, step, status, exit_reason}.
- `metrics.lead_scores` ([{model_id, model, score}]) and `metrics.email_engagement`
  ({sent, opened, clicked} over the stored emails).

- `segments`: the segments the customer is a member of ([{id, name, type}]), from
  `contact_segments.changed` (the campaigns service re-evaluates them when the contact or a
  segment changes, and periodically for time-based conditions).
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.consumer import Consumer
from chassis.events import IncomingEvent
from crm.campaigns.v1 import campaigns_pb2 as pb
from crm.common.v1.common_pb2 import EventMeta
from gateway.readmodel import document, timeline
from gateway.readmodel.sections.common import datetime_of, occurred, opt, time_of, timeline_entry

consumer = Consumer(
    "customer-360-campaigns",
    context="campaigns",
    aggregates=[
        "email",
        "lead_score",
        "loyalty_member",
        "enrollment",
        "touchpoint",
        "contact_segments",
    ],
)

EMAILS, SCORES, LOYALTY, ENROLLMENTS = "emails", "lead_scores", "loyalty", "enrollments"
SEGMENTS = "segments"
RECENT_EMAILS = 10


@document.section_builder
async def build(session: AsyncSession, tenant: str, contact_ids: list[str]) -> None:
    items = await document.items_of(
        session,
        tenant=tenant,
        contact_ids=contact_ids,
        sections={EMAILS: None, SCORES: None, LOYALTY: None, ENROLLMENTS: None, SEGMENTS: 1},
    )
    for contact_id, sections in items.items():
        emails = sections.get(EMAILS, [])
        members = sorted(sections.get(LOYALTY, []), key=lambda m: -int(m["balance"]))
        loyalty = {**members[0], "programs": members} if members else None
        await document.write_sections(
            session,
            tenant=tenant,
            contact_id=contact_id,
            values={
                "campaigns": emails[:RECENT_EMAILS],
                "loyalty": loyalty,
                "sequences": sections.get(ENROLLMENTS, []),
                "segments": (sections.get(SEGMENTS) or [{"segments": []}])[0]["segments"],
            },
            metrics={
                "lead_scores": sorted(sections.get(SCORES, []), key=lambda s: s["model"]),
                "email_engagement": {
                    "sent": len(emails),
                    "opened": sum(1 for e in emails if e["opened"]),
                    "clicked": sum(1 for e in emails if e["clicked"]),
                },
            },
        )


async def _put(
    session: AsyncSession,
    event: IncomingEvent,
    meta: EventMeta,
    section: str,
    item_id: str,
    contact_id: str,
    item: dict[str, Any],
    entry: tuple[str, str, dict[str, Any]] | None,
) -> None:
    touched = await document.put_item(
        session,
        tenant=event.tenant,
        section=section,
        item_id=item_id,
        contact_id=contact_id or None,
        item=item,
        version=event.version,
        sort_at=occurred(meta, event),
    )
    if touched:
        await build(session, event.tenant, touched)
        await document.touch(
            session, tenant=event.tenant, contact_ids=touched, as_of=occurred(meta, event)
        )
    if entry is not None and contact_id:
        kind, summary, data = entry
        await timeline.record(
            session, event.tenant, contact_id, timeline_entry(event, meta, kind, summary, **data)
        )


# ce-type -> (message, what the event says about the delivery, timeline summary or None)
_EMAIL_EVENTS: dict[str, tuple[type[Message], str, str | None]] = {
    "crm.campaigns.email.sent.v1": (pb.EmailSent, "sent", "Email sent"),
    "crm.campaigns.email.delivered.v1": (pb.EmailDelivered, "delivered", None),
    "crm.campaigns.email.bounced.v1": (pb.EmailBounced, "bounced", "Email bounced"),
    "crm.campaigns.email.opened.v1": (pb.EmailOpened, "opened", "Email opened"),
    "crm.campaigns.email.clicked.v1": (pb.EmailClicked, "clicked", "Email link clicked"),
    "crm.campaigns.email.unsubscribed.v1": (
        pb.EmailUnsubscribed,
        "unsubscribed",
        "Unsubscribed from marketing email",
    ),
}


def _on_email(ce_type: str, cls: type[Message], what: str, summary: str | None) -> None:
    @consumer.on(ce_type)
    async def handle(session: AsyncSession, event: IncomingEvent) -> None:
        msg: Any = event.parse(cls)
        e: pb.Email = msg.email
        email_id = e.id or event.aggregate_id
        old = await document.get_item(
            session, tenant=event.tenant, section=EMAILS, item_id=email_id
        )
        item = {
            "id": email_id,
            "campaign_id": opt(e.campaign_id),
            "sequence_id": opt(e.sequence_id),
            "subject": e.subject,
            "status": e.status,
            "opened": bool(old and old["opened"]) or what in ("opened", "clicked"),
            "clicked": bool(old and old["clicked"]) or what == "clicked",
            "unsubscribed": bool(old and old["unsubscribed"]) or what == "unsubscribed",
            "sent_at": (old or {}).get("sent_at")
            or (document.rfc3339(occurred(msg.meta, event)) if what == "sent" else None),
        }
        # Only the first open and the first click of an email go on the timeline.
        first = getattr(msg, "first", True)
        entry = None
        if summary is not None and first:
            entry = (f"email.{what}", f"{summary}: {e.subject}", {"email_id": email_id})
        await _put(session, event, msg.meta, EMAILS, email_id, e.contact_id, item, entry)


for _ce_type, (_cls, _what, _summary) in _EMAIL_EVENTS.items():
    _on_email(_ce_type, _cls, _what, _summary)


@consumer.on("crm.campaigns.lead_score.changed.v1")
async def lead_score_changed(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(pb.LeadScoreChanged)
    item = {"model_id": msg.model_id, "model": msg.model, "score": msg.score}
    await _put(
        session,
        event,
        msg.meta,
        SCORES,
        f"{msg.contact_id}:{msg.model_id}",
        msg.contact_id,
        item,
        None,
    )


_LOYALTY_EVENTS: dict[str, tuple[type[Message], str]] = {
    "crm.campaigns.loyalty_member.points_earned.v1": (pb.PointsEarned, "earned"),
    "crm.campaigns.loyalty_member.points_redeemed.v1": (pb.PointsRedeemed, "redeemed"),
    "crm.campaigns.loyalty_member.points_reversed.v1": (pb.PointsReversed, "reversed"),
    "crm.campaigns.loyalty_member.points_expired.v1": (pb.PointsExpired, "expired"),
    "crm.campaigns.loyalty_member.tier_changed.v1": (pb.TierChanged, "tier_changed"),
    "crm.campaigns.loyalty_member.merged.v1": (pb.LoyaltyMemberMerged, "merged"),
}


def _on_loyalty(ce_type: str, cls: type[Message], what: str) -> None:
    @consumer.on(ce_type)
    async def handle(session: AsyncSession, event: IncomingEvent) -> None:
        msg: Any = event.parse(cls)
        m: pb.LoyaltyMember = msg.member
        item = {
            "program_id": m.program_id,
            "tier": opt(m.tier),
            "balance": m.balance,
            "points_365d": m.points_365d,
        }
        entry = None
        if what == "tier_changed":
            entry = ("loyalty.tier_changed", f"Loyalty tier: {m.tier}", {"tier": m.tier})
        elif what != "merged":
            points = abs(msg.entry.points)
            entry = (f"loyalty.{what}", f"{points} loyalty points {what}", {"points": points})
        await _put(session, event, msg.meta, LOYALTY, m.id, m.contact_id, item, entry)


for _ce_type, (_cls, _what) in _LOYALTY_EVENTS.items():
    _on_loyalty(_ce_type, _cls, _what)


@consumer.on("crm.campaigns.enrollment.changed.v1")
async def enrollment_changed(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(pb.EnrollmentChanged)
    e = msg.enrollment
    item = {
        "id": e.id,
        "sequence_id": e.sequence_id,
        "step": e.step,
        "status": e.status,
        "exit_reason": opt(e.exit_reason),
    }
    entry = None
    if msg.change in ("enrolled", "exited", "completed"):
        entry = (f"sequence.{msg.change}", f"Sequence {msg.change}", {"sequence_id": e.sequence_id})
    await _put(session, event, msg.meta, ENROLLMENTS, e.id, e.contact_id, item, entry)


@consumer.on("crm.campaigns.contact_segments.changed.v1")
async def contact_segments_changed(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(pb.ContactSegmentsChanged)
    item = {
        "segments": [{"id": s.id, "name": s.name, "type": s.type} for s in msg.segments],
    }
    await _put(session, event, msg.meta, SEGMENTS, msg.contact_id, msg.contact_id, item, None)


@consumer.on("crm.campaigns.touchpoint.recorded.v1")
async def touchpoint_recorded(session: AsyncSession, event: IncomingEvent) -> None:
    """Timeline only: every channel a customer came through."""
    msg = event.parse(pb.TouchpointRecorded)
    t = msg.touchpoint
    if not t.contact_id:
        return  # an unknown email: recorded again (version > 1) once linked to a contact
    when = datetime_of(t.occurred_at)
    await timeline.record(
        session,
        event.tenant,
        t.contact_id,
        timeline_entry(
            event,
            msg.meta,
            f"touchpoint.{t.channel}",
            f"Touchpoint: {t.channel.replace('_', ' ')}" + (f" ({t.source})" if t.source else ""),
            touchpoint_id=t.id,
            occurred_at=time_of(t.occurred_at) if when else None,
        ),
    )
