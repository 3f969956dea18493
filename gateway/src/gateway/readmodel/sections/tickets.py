"""The `tickets` section and the service metrics, from the tickets service's events; ticket,
SLA-breach and survey entries on the timeline.

Items in `rm_items`: "tickets" (one per ticket, with its SLA clocks), "sla_breaches" (one per
breached clock), "csat" (one per answered CSAT survey), "nps" (one per answered NPS
invitation). The document gets:

- `tickets`: the open tickets (any status but solved and closed) and the 5 most recently
  created solved or closed ones, newest first, each with `sla: {metric: {due_at,
  fulfilled_at, breached, paused}}`.
- `metrics.open_tickets`, `metrics.sla_breaches` (all breaches ever) and
  `metrics.sla_breaches_90d`, `metrics.last_csat` ({score, ticket_id, answered_at}),
  `metrics.nps` ({score, category, survey_id, answered_at}: the latest answer).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.message import Message
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.consumer import Consumer
from chassis.events import IncomingEvent
from crm.common.v1.common_pb2 import EventMeta
from crm.tickets.v1 import tickets_pb2 as pb
from gateway.readmodel import document
from gateway.readmodel.sections.common import (
    Run,
    datetime_of,
    on_run,
    opt,
    time_of,
    timeline_entry,
)

consumer = Consumer(
    "customer-360-tickets",
    context="tickets",
    aggregates=["ticket", "sla", "csat_survey", "nps_invitation"],
)

TICKETS, BREACHES, CSAT, NPS = "tickets", "sla_breaches", "csat", "nps"
CLOSED = frozenset({"solved", "closed"})
RECENT_CLOSED = 5


def ticket_item(t: pb.Ticket) -> dict[str, Any]:
    return {
        "id": t.id,
        "subject": t.subject,
        "status": t.status,
        "priority": t.priority,
        "type": opt(t.type),
        "channel": opt(t.channel),
        "group_id": opt(t.group_id),
        "assignee_id": opt(t.assignee_id),
        "tags": list(t.tags),
        "created_at": time_of(t.created_at),
        "updated_at": time_of(t.updated_at),
        "solved_at": time_of(t.solved_at),
        "closed_at": time_of(t.closed_at),
        "sla": {
            c.metric: {
                "due_at": time_of(c.due_at),
                "fulfilled_at": time_of(c.fulfilled_at),
                "breached": c.breached,
                "paused": c.paused,
            }
            for c in t.sla
        },
        "version": t.version,
    }


@document.section_builder
async def build(session: AsyncSession, tenant: str, contact_ids: list[str]) -> None:
    items = await document.items_of(
        session,
        tenant=tenant,
        contact_ids=contact_ids,
        sections={TICKETS: None, BREACHES: None, CSAT: 1, NPS: 1},
    )
    since = datetime.now(UTC) - timedelta(days=90)
    out: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for contact_id, sections in items.items():
        tickets = sections.get(TICKETS, [])
        open_ = [t for t in tickets if t["status"] not in CLOSED]
        closed = [t for t in tickets if t["status"] in CLOSED][:RECENT_CLOSED]
        breaches = sections.get(BREACHES, [])
        csat = sections.get(CSAT, [])
        nps = sections.get(NPS, [])
        out[contact_id] = (
            {TICKETS: open_ + closed},
            {
                "open_tickets": len(open_),
                "sla_breaches": len(breaches),
                "sla_breaches_90d": sum(
                    1
                    for b in breaches
                    if b["due_at"] and datetime.fromisoformat(b["due_at"]) >= since
                ),
                "last_csat": csat[0] if csat else None,
                "nps": nps[0] if nps else None,
            },
        )
    await document.write_sections(session, tenant=tenant, sections=out)


def _put(
    run: Run,
    event: IncomingEvent,
    meta: EventMeta,
    section: str,
    contact_id: str,
    item: dict[str, Any],
    sort_at: datetime | None,
    kind: str | None,
    summary: str = "",
    **data: Any,
) -> None:
    run.put(event, meta, section, event.aggregate_id, contact_id, item, sort_at)
    if kind is not None:
        run.record(event, contact_id, timeline_entry(event, meta, kind, summary, **data))


# ce-type -> (message, timeline kind or None: no entry)
_TICKET_EVENTS: dict[str, tuple[type[Message], str | None]] = {
    "crm.tickets.ticket.created.v1": (pb.TicketCreated, "ticket.created"),
    "crm.tickets.ticket.updated.v1": (pb.TicketUpdated, None),
    "crm.tickets.ticket.status_changed.v1": (pb.TicketStatusChanged, None),
    "crm.tickets.ticket.assigned.v1": (pb.TicketAssigned, None),
    "crm.tickets.ticket.commented.v1": (pb.TicketCommented, None),
    "crm.tickets.ticket.solved.v1": (pb.TicketSolved, "ticket.solved"),
    "crm.tickets.ticket.reopened.v1": (pb.TicketReopened, "ticket.reopened"),
    "crm.tickets.ticket.closed.v1": (pb.TicketClosed, "ticket.closed"),
}


def _on_ticket(ce_type: str, cls: type[Message], kind: str | None) -> None:
    def collect(run: Run, event: IncomingEvent) -> None:
        msg: Any = event.parse(cls)
        t: pb.Ticket = msg.ticket
        verb = (kind or "").removeprefix("ticket.")
        _put(
            run,
            event,
            msg.meta,
            TICKETS,
            t.requester_contact_id,
            ticket_item(t),
            datetime_of(t.created_at),
            kind,
            f"Ticket {verb}: {t.subject}",
            ticket_id=t.id,
            priority=t.priority,
        )

    on_run(consumer, ce_type, build, collect)


for _ce_type, (_cls, _kind) in _TICKET_EVENTS.items():
    _on_ticket(_ce_type, _cls, _kind)


def _sla_breached(run: Run, event: IncomingEvent) -> None:
    msg = event.parse(pb.SlaBreached)
    c = msg.clock
    _put(
        run,
        event,
        msg.meta,
        BREACHES,
        c.requester_contact_id,
        {"ticket_id": c.ticket_id, "metric": c.metric, "due_at": time_of(c.due_at)},
        datetime_of(c.due_at),
        "ticket.sla_breached",
        f"SLA breached: {c.metric.replace('_', ' ')}",
        ticket_id=c.ticket_id,
        metric=c.metric,
    )


def _csat_answered(run: Run, event: IncomingEvent) -> None:
    msg = event.parse(pb.CsatAnswered)
    _put(
        run,
        event,
        msg.meta,
        CSAT,
        msg.contact_id,
        {
            "score": msg.score,
            "ticket_id": msg.ticket_id,
            "answered_at": time_of(msg.answered_at),
        },
        datetime_of(msg.answered_at),
        "csat.answered",
        f"CSAT answered: {msg.score}/5",
        ticket_id=msg.ticket_id,
        score=msg.score,
    )


def _nps_answered(run: Run, event: IncomingEvent) -> None:
    msg = event.parse(pb.NpsAnswered)
    _put(
        run,
        event,
        msg.meta,
        NPS,
        msg.contact_id,
        {
            "score": msg.score,
            "category": msg.category,
            "survey_id": msg.survey_id,
            "answered_at": time_of(msg.answered_at),
        },
        datetime_of(msg.answered_at),
        "nps.answered",
        f"NPS answered: {msg.score} ({msg.category})",
        survey_id=msg.survey_id,
        score=msg.score,
    )


on_run(consumer, "crm.tickets.sla.breached.v1", build, _sla_breached)
on_run(consumer, "crm.tickets.csat_survey.answered.v1", build, _csat_answered)
on_run(consumer, "crm.tickets.nps_invitation.answered.v1", build, _nps_answered)
