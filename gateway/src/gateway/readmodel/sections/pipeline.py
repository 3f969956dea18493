"""The `deals`, `orders` and `tasks` sections and the sales metrics, from the pipeline
service's events; deal, order and activity entries on the timeline.

Items are kept in `rm_items` (sections "deals", "orders", "tasks", "activities") and the
document is rebuilt from them for the customers an event touched:

- `deals`: every deal of the customer (open and closed), newest first, with its stage.
- `orders`: every order, newest first.
- `tasks`: the open tasks.
- `metrics.lifetime_value`: per currency, paid orders plus won deals that no order of the
  customer fulfils (an order with that deal_id), so a deal and its order count once;
  refunded and cancelled orders count nothing. `metrics.open_deals`, `metrics.won_deals`,
  `metrics.open_tasks`, `metrics.last_activity` ({id, type, subject, occurred_at, owner_id}).

A deal or order of a company only (no contact) is in no customer's document.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from google.protobuf.message import Message
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.consumer import Consumer
from chassis.events import IncomingEvent
from crm.common.v1.common_pb2 import EventMeta
from crm.pipeline.v1 import pipeline_pb2 as pb
from gateway.readmodel import document
from gateway.readmodel.sections.common import (
    Collect,
    Run,
    datetime_of,
    on_run,
    opt,
    time_of,
    timeline_entry,
)

consumer = Consumer(
    "customer-360-pipeline", context="pipeline", aggregates=["deal", "order", "activity", "task"]
)

DEALS, ORDERS, TASKS, ACTIVITIES = "deals", "orders", "tasks", "activities"


def deal_item(d: pb.Deal) -> dict[str, Any]:
    return {
        "id": d.id,
        "name": d.name,
        "status": d.status,
        "pipeline_id": d.pipeline_id,
        "stage_id": d.stage_id,
        "stage_name": d.stage_name,
        "amount": d.amount.amount,
        "currency": d.amount.currency,
        "expected_close_date": opt(d.expected_close_date),
        "forecast_category": opt(d.forecast_category),
        "owner_id": opt(d.owner_id),
        "company_id": opt(d.company_id),
        "lost_reason": opt(d.lost_reason),
        "closed_at": time_of(d.closed_at),
        "created_at": time_of(d.created_at),
        "updated_at": time_of(d.updated_at),
        "version": d.version,
    }


def order_item(o: pb.Order) -> dict[str, Any]:
    return {
        "id": o.id,
        "number": opt(o.number),
        "status": o.status,
        "amount": o.amount.amount,
        "currency": o.amount.currency,
        "deal_id": opt(o.deal_id),
        "ordered_at": time_of(o.ordered_at),
        "paid_at": time_of(o.paid_at),
        "refunded_at": time_of(o.refunded_at),
        "version": o.version,
    }


def task_item(t: pb.Task) -> dict[str, Any]:
    return {
        "id": t.id,
        "title": t.title,
        "status": t.status,
        "priority": t.priority,
        "due_at": time_of(t.due_at),
        "remind_at": time_of(t.remind_at),
        "assignee_id": opt(t.assignee_id),
        "deal_id": opt(t.deal_id),
        "version": t.version,
    }


def activity_item(a: pb.Activity) -> dict[str, Any]:
    return {
        "id": a.id,
        "type": a.type,
        "subject": a.subject,
        "occurred_at": time_of(a.occurred_at),
        "owner_id": opt(a.owner_id),
        "deal_id": opt(a.deal_id),
        "duration_seconds": a.duration_seconds or None,
        "outcome": opt(a.outcome),
    }


def lifetime_value(
    deals: list[dict[str, Any]], orders: list[dict[str, Any]]
) -> list[dict[str, str]]:
    totals: dict[str, Decimal] = {}
    fulfilled = {o["deal_id"] for o in orders if o.get("deal_id")}
    for o in orders:
        if o["status"] == "paid":
            totals[o["currency"]] = totals.get(o["currency"], Decimal(0)) + Decimal(o["amount"])
    for d in deals:
        if d["status"] == "won" and d["id"] not in fulfilled:
            totals[d["currency"]] = totals.get(d["currency"], Decimal(0)) + Decimal(d["amount"])
    return [{"currency": c, "amount": str(totals[c])} for c in sorted(totals)]


@document.section_builder
async def build(session: AsyncSession, tenant: str, contact_ids: list[str]) -> None:
    items = await document.items_of(
        session,
        tenant=tenant,
        contact_ids=contact_ids,
        sections={DEALS: None, ORDERS: None, TASKS: None, ACTIVITIES: 1},
    )
    out: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for contact_id, sections in items.items():
        deals = sections.get(DEALS, [])
        orders = sections.get(ORDERS, [])
        open_tasks = [t for t in sections.get(TASKS, []) if t["status"] == "open"]
        last = sections.get(ACTIVITIES, [])
        out[contact_id] = (
            {DEALS: deals, ORDERS: orders, TASKS: open_tasks},
            {
                "lifetime_value": lifetime_value(deals, orders),
                "open_deals": sum(1 for d in deals if d["status"] == "open"),
                "won_deals": sum(1 for d in deals if d["status"] == "won"),
                "open_tasks": len(open_tasks),
                "last_activity": last[0] if last else None,
            },
        )
    await document.write_sections(session, tenant=tenant, sections=out)


def _money(m: Any) -> str:
    return f"{m.amount} {m.currency}"


_DEAL_EVENTS: dict[str, tuple[type[Message], str]] = {
    "crm.pipeline.deal.created.v1": (pb.DealCreated, "created"),
    "crm.pipeline.deal.updated.v1": (pb.DealUpdated, "updated"),
    "crm.pipeline.deal.stage_changed.v1": (pb.DealStageChanged, "stage_changed"),
    "crm.pipeline.deal.won.v1": (pb.DealWon, "won"),
    "crm.pipeline.deal.lost.v1": (pb.DealLost, "lost"),
    "crm.pipeline.deal.reopened.v1": (pb.DealReopened, "reopened"),
}


def _deal_summary(what: str, d: pb.Deal, meta: EventMeta) -> str:
    name = d.name
    if what == "created":
        return f"Deal {name!r} created ({_money(d.amount)}, {d.stage_name})"
    if what == "stage_changed":
        return f"Deal {name!r} moved to {d.stage_name}"
    if what == "won":
        return f"Deal {name!r} won ({_money(d.amount)})"
    if what == "lost":
        reason = f": {d.lost_reason}" if d.lost_reason else ""
        return f"Deal {name!r} lost{reason}"
    if what == "reopened":
        return f"Deal {name!r} reopened ({d.stage_name})"
    fields = ", ".join(meta.changed_fields[:5])
    return f"Deal {name!r} updated" + (f": {fields}" if fields else "")


def _on_deal(ce_type: str, cls: type[Message], what: str) -> None:
    def collect(run: Run, event: IncomingEvent) -> None:
        msg: Any = event.parse(cls)
        d: pb.Deal = msg.deal
        item = deal_item(d)
        run.put(event, msg.meta, DEALS, event.aggregate_id, d.contact_id, item,
                datetime_of(d.created_at))  # fmt: skip
        entry = timeline_entry(
            event,
            msg.meta,
            f"deal.{what}",
            _deal_summary(what, d, msg.meta),
            deal_id=d.id,
            stage_id=d.stage_id,
            changed_fields=list(msg.meta.changed_fields) or None,
        )
        run.record(event, d.contact_id, entry)

    on_run(consumer, ce_type, build, collect)


for _ce_type, (_cls, _what) in _DEAL_EVENTS.items():
    _on_deal(_ce_type, _cls, _what)


def _deal_deleted(run: Run, event: IncomingEvent) -> None:
    msg = event.parse(pb.DealDeleted)
    run.drop(event, DEALS)
    entry = timeline_entry(
        event, msg.meta, "deal.deleted", f"Deal {msg.deal.name!r} deleted", deal_id=msg.deal.id
    )
    run.record(event, msg.deal.contact_id, entry)


on_run(consumer, "crm.pipeline.deal.deleted.v1", build, _deal_deleted)


_ORDER_EVENTS: dict[str, tuple[type[Message], str]] = {
    "crm.pipeline.order.upserted.v1": (pb.OrderUpserted, "upserted"),
    "crm.pipeline.order.paid.v1": (pb.OrderPaid, "paid"),
    "crm.pipeline.order.refunded.v1": (pb.OrderRefunded, "refunded"),
}


def _on_order(ce_type: str, cls: type[Message], what: str) -> None:
    def collect(run: Run, event: IncomingEvent) -> None:
        msg: Any = event.parse(cls)
        o: pb.Order = msg.order
        label = f"Order {o.number}" if o.number else "Order"
        summary = {
            "upserted": f"{label} recorded ({_money(o.amount)}, {o.status})",
            "paid": f"{label} paid ({_money(o.amount)})",
            "refunded": f"{label} refunded ({_money(o.amount)})",
        }[what]
        run.put(event, msg.meta, ORDERS, event.aggregate_id, o.contact_id, order_item(o),
                datetime_of(o.ordered_at))  # fmt: skip
        run.record(
            event,
            o.contact_id,
            timeline_entry(event, msg.meta, f"order.{what}", summary, order_id=o.id),
        )

    on_run(consumer, ce_type, build, collect)


for _ce_type, (_cls, _what) in _ORDER_EVENTS.items():
    _on_order(_ce_type, _cls, _what)


_TYPE_LABEL = {"call": "Call", "meeting": "Meeting", "visit": "Visit", "email": "Email"}


def _activity_logged(run: Run, event: IncomingEvent) -> None:
    msg = event.parse(pb.ActivityLogged)
    a = msg.activity
    label = _TYPE_LABEL.get(a.type, "Note")
    run.put(event, msg.meta, ACTIVITIES, event.aggregate_id, a.contact_id, activity_item(a),
            datetime_of(a.occurred_at))  # fmt: skip
    entry = timeline_entry(
        event,
        msg.meta,
        f"activity.{a.type or 'note'}",
        f"{label} logged" + (f": {a.subject}" if a.subject else ""),
        activity_id=a.id,
        deal_id=opt(a.deal_id),
        duration_seconds=a.duration_seconds or None,
        outcome=opt(a.outcome),
    )
    run.record(event, a.contact_id, entry)


def _activity_updated(run: Run, event: IncomingEvent) -> None:
    msg = event.parse(pb.ActivityUpdated)
    a = msg.activity
    run.put(event, msg.meta, ACTIVITIES, event.aggregate_id, a.contact_id, activity_item(a),
            datetime_of(a.occurred_at))  # fmt: skip


def _dropper(section: str) -> Collect:
    def collect(run: Run, event: IncomingEvent) -> None:
        run.drop(event, section)

    return collect


on_run(consumer, "crm.pipeline.activity.logged.v1", build, _activity_logged)
on_run(consumer, "crm.pipeline.activity.updated.v1", build, _activity_updated)
on_run(consumer, "crm.pipeline.activity.deleted.v1", build, _dropper(ACTIVITIES))


_TASK_EVENTS: dict[str, type[Message]] = {
    "crm.pipeline.task.created.v1": pb.TaskCreated,
    "crm.pipeline.task.updated.v1": pb.TaskUpdated,
    "crm.pipeline.task.reminder_due.v1": pb.TaskReminderDue,
    "crm.pipeline.task.overdue.v1": pb.TaskOverdue,
}


def _on_task(ce_type: str, cls: type[Message]) -> None:
    created = ce_type == "crm.pipeline.task.created.v1"

    def collect(run: Run, event: IncomingEvent) -> None:
        msg: Any = event.parse(cls)
        t: pb.Task = msg.task
        run.put(event, msg.meta, TASKS, event.aggregate_id, t.contact_id, task_item(t),
                datetime_of(t.due_at))  # fmt: skip
        if created:
            entry = timeline_entry(
                event, msg.meta, "task.created", f"Task created: {t.title}", task_id=t.id
            )
            run.record(event, t.contact_id, entry)

    on_run(consumer, ce_type, build, collect)


for _ce_type, _cls in _TASK_EVENTS.items():
    _on_task(_ce_type, _cls)


on_run(consumer, "crm.pipeline.task.deleted.v1", build, _dropper(TASKS))
