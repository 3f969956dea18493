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
from gateway.readmodel import document
from gateway.readmodel.sections.common import (
    Run,
    datetime_of,
    occurred,
    on_run,
    opt,
    time_of,
    timeline_entry,
)

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
    out: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for contact_id, sections in items.items():
        emails = sections.get(EMAILS, [])
        members = sorted(sections.get(LOYALTY, []), key=lambda m: -int(m["balance"]))
        loyalty = {**members[0], "programs": members} if members else None
        out[contact_id] = (
            {
                "campaigns": emails[:RECENT_EMAILS],
                "loyalty": loyalty,
                "sequences": sections.get(ENROLLMENTS, []),
                "segments": (sections.get(SEGMENTS) or [{"segments": []}])[0]["segments"],
            },
            {
                "lead_scores": sorted(sections.get(SCORES, []), key=lambda s: s["model"]),
                "email_engagement": {
                    "sent": len(emails),
                    "opened": sum(1 for e in emails if e["opened"]),
                    "clicked": sum(1 for e in emails if e["clicked"]),
                },
            },
        )
    await document.write_sections(session, tenant=tenant, sections=out)


def _put(
    run: Run,
    event: IncomingEvent,
    meta: EventMeta,
    section: str,
    item_id: str,
    contact_id: str,
    item: dict[str, Any],
    entry: tuple[str, str, dict[str, Any]] | None,
) -> None:
    run.put(event, meta, section, item_id, contact_id, item, None)
    if entry is not None:
        kind, summary, data = entry
        run.record(event, contact_id, timeline_entry(event, meta, kind, summary, **data))


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
    @consumer.on_many(ce_type)
    async def handle(session: AsyncSession, events: list[IncomingEvent]) -> None:
        parsed: list[tuple[IncomingEvent, Any]] = [(e, e.parse(cls)) for e in events]
        # The stored deliveries (flags are carried across their events), then each event's
        # item over the previous one of the run, as if applied one by one.
        stored: dict[tuple[str, str], tuple[dict[str, Any], int]] = {}
        by_tenant: dict[str, list[str]] = {}
        for event, msg in parsed:
            by_tenant.setdefault(event.tenant, []).append(msg.email.id or event.aggregate_id)
        for tenant, ids in by_tenant.items():
            found = await document.get_items(session, tenant=tenant, section=EMAILS, item_ids=ids)
            stored.update({(tenant, i): v for i, v in found.items()})
        run = Run()
        for event, msg in parsed:
            email_id = msg.email.id or event.aggregate_id
            key = (event.tenant, email_id)
            old = stored[key][0] if key in stored else None
            item = _email_item(msg.email, email_id, what, old, msg.meta, event)
            if key not in stored or stored[key][1] < event.version:
                stored[key] = (item, event.version)
            # Only the first open and the first click of an email go on the timeline.
            entry = None
            if summary is not None and getattr(msg, "first", True):
                subject = f"{summary}: {msg.email.subject}"
                entry = (f"email.{what}", subject, {"email_id": email_id})
            _put(run, event, msg.meta, EMAILS, email_id, msg.email.contact_id, item, entry)
        await run.apply(session, build)


def _email_item(
    e: pb.Email,
    email_id: str,
    what: str,
    old: dict[str, Any] | None,
    meta: EventMeta,
    event: IncomingEvent,
) -> dict[str, Any]:
    return {
        "id": email_id,
        "campaign_id": opt(e.campaign_id),
        "sequence_id": opt(e.sequence_id),
        "subject": e.subject,
        "status": e.status,
        "opened": bool(old and old["opened"]) or what in ("opened", "clicked"),
        "clicked": bool(old and old["clicked"]) or what == "clicked",
        "unsubscribed": bool(old and old["unsubscribed"]) or what == "unsubscribed",
        "sent_at": (old or {}).get("sent_at")
        or (document.rfc3339(occurred(meta, event)) if what == "sent" else None),
    }


for _ce_type, (_cls, _what, _summary) in _EMAIL_EVENTS.items():
    _on_email(_ce_type, _cls, _what, _summary)


def _lead_score_changed(run: Run, event: IncomingEvent) -> None:
    msg = event.parse(pb.LeadScoreChanged)
    item = {"model_id": msg.model_id, "model": msg.model, "score": msg.score}
    _put(
        run,
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
    def collect(run: Run, event: IncomingEvent) -> None:
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
        _put(run, event, msg.meta, LOYALTY, m.id, m.contact_id, item, entry)

    on_run(consumer, ce_type, build, collect)


for _ce_type, (_cls, _what) in _LOYALTY_EVENTS.items():
    _on_loyalty(_ce_type, _cls, _what)


def _enrollment_changed(run: Run, event: IncomingEvent) -> None:
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
    _put(run, event, msg.meta, ENROLLMENTS, e.id, e.contact_id, item, entry)


def _contact_segments_changed(run: Run, event: IncomingEvent) -> None:
    msg = event.parse(pb.ContactSegmentsChanged)
    item = {
        "segments": [{"id": s.id, "name": s.name, "type": s.type} for s in msg.segments],
    }
    _put(run, event, msg.meta, SEGMENTS, msg.contact_id, msg.contact_id, item, None)


def _touchpoint_recorded(run: Run, event: IncomingEvent) -> None:
    """Timeline only: every channel a customer came through (an unknown email has no
    contact: it is recorded again, version > 1, once linked to one)."""
    msg = event.parse(pb.TouchpointRecorded)
    t = msg.touchpoint
    when = datetime_of(t.occurred_at)
    entry = timeline_entry(
        event,
        msg.meta,
        f"touchpoint.{t.channel}",
        f"Touchpoint: {t.channel.replace('_', ' ')}" + (f" ({t.source})" if t.source else ""),
        touchpoint_id=t.id,
        occurred_at=time_of(t.occurred_at) if when else None,
    )
    run.record(event, t.contact_id, entry)


on_run(consumer, "crm.campaigns.lead_score.changed.v1", build, _lead_score_changed)
on_run(consumer, "crm.campaigns.enrollment.changed.v1", build, _enrollment_changed)
on_run(consumer, "crm.campaigns.contact_segments.changed.v1", build, _contact_segments_changed)
on_run(consumer, "crm.campaigns.touchpoint.recorded.v1", build, _touchpoint_recorded)
