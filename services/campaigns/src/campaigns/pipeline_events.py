"""Consumer of the pipeline service's deal and order events: won deals are kept for campaign
attribution (deals won by recipients within 30 days), and loyalty earns on won deals and
paid orders and reverses on reopened deals and refunded orders."""

from __future__ import annotations

import uuid
from decimal import Decimal, InvalidOperation

from sqlmodel.ext.asyncio.session import AsyncSession

from campaigns import loyalty
from campaigns.common import Actor, execute, from_ts
from chassis.consumer import Consumer
from chassis.events import IncomingEvent
from crm.pipeline.v1 import pipeline_pb2 as pb

consumer = Consumer("campaigns-pipeline", context="pipeline", aggregates=["deal", "order"])


def _actor(event: IncomingEvent, actor: str) -> Actor:
    return Actor(event.tenant, actor or "system:pipeline", "crm/pipeline")


def _amount(value: str) -> Decimal | None:
    try:
        d = Decimal(value)
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def _contact(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


@consumer.on("crm.pipeline.deal.won.v1")
async def deal_won(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(pb.DealWon)
    deal = msg.deal
    amount = _amount(deal.amount.amount)
    contact = _contact(deal.contact_id)
    won_at = from_ts(deal.closed_at) or event.time
    if amount is None:
        return
    await execute(
        session,
        "INSERT INTO deal_outcomes (tenant_id, deal_id, contact_id, amount, currency, won_at, "
        "status) "
        "VALUES (:t, :d, :c, :a, :cur, :at, 'won') ON CONFLICT (tenant_id, deal_id) DO UPDATE SET "
        "contact_id = EXCLUDED.contact_id, amount = EXCLUDED.amount, currency = EXCLUDED.currency, "
        "won_at = EXCLUDED.won_at, status = 'won'",
        {
            "t": event.tenant,
            "d": uuid.UUID(deal.id or event.aggregate_id),
            "c": contact,
            "a": amount,
            "cur": deal.amount.currency,
            "at": won_at,
        },
    )
    if contact is not None:
        await loyalty.earn(
            session,
            _actor(event, msg.meta.actor),
            "deal_won",
            contact,
            amount,
            deal.amount.currency,
            f"deal:{deal.id or event.aggregate_id}",
            won_at,
        )


@consumer.on("crm.pipeline.deal.reopened.v1")
async def deal_reopened(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(pb.DealReopened)
    deal_id = msg.deal.id or event.aggregate_id
    await execute(
        session,
        "UPDATE deal_outcomes SET status = 'reopened' WHERE tenant_id = :t AND deal_id = :d",
        {"t": event.tenant, "d": uuid.UUID(deal_id)},
    )
    contact = _contact(msg.deal.contact_id)
    if contact is not None:
        await loyalty.reverse(
            session, _actor(event, msg.meta.actor), contact, f"deal:{deal_id}", "deal_reopened"
        )


@consumer.on("crm.pipeline.order.paid.v1")
async def order_paid(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(pb.OrderPaid)
    order = msg.order
    amount = _amount(order.amount.amount)
    contact = _contact(order.contact_id)
    if amount is None or contact is None:
        return
    paid = from_ts(order.paid_at) or event.time
    await loyalty.earn(
        session,
        _actor(event, msg.meta.actor),
        "order_paid",
        contact,
        amount,
        order.amount.currency,
        f"order:{order.id or event.aggregate_id}",
        paid,
    )


@consumer.on("crm.pipeline.order.refunded.v1")
async def order_refunded(session: AsyncSession, event: IncomingEvent) -> None:
    msg = event.parse(pb.OrderRefunded)
    contact = _contact(msg.order.contact_id)
    if contact is not None:
        await loyalty.reverse(
            session,
            _actor(event, msg.meta.actor),
            contact,
            f"order:{msg.order.id or event.aggregate_id}",
            "order_refunded",
        )
