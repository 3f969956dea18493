"""Consumers of the pipeline service's events: deals and orders become credits (one row per
source and credited user, upserted), teams become the local sales-org replica; every change
recomputes the statements it touches.

A redelivered event is dropped by the chassis inbox; even if it were applied twice, the
upserts write the same rows and the recomputation finds the same content hash, so nothing
changes. The consumer applies each deal's events in version order."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.consumer import Consumer
from chassis.driver import raw_connection
from chassis.events import IncomingEvent
from commissions.calc import split_percents, version_at
from commissions.engine import Engine, Pair
from commissions.events import Emitter
from crm.pipeline.v1 import pipeline_pb2 as pp

pipeline = Consumer("pipeline", context="pipeline", aggregates=["deal", "order", "team"])


def _when(ts: Timestamp, fallback: datetime) -> datetime:
    if ts.seconds or ts.nanos:
        return ts.ToDatetime(tzinfo=UTC)
    return fallback


def _decimal(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() else None


def _units(items: Any) -> dict[str, str]:
    units: dict[str, Decimal] = defaultdict(lambda: Decimal(0))
    for li in items:
        qty = _decimal(li.quantity)
        if li.product and qty is not None:
            units[li.product] += qty
    return {k: format(v, "f") for k, v in sorted(units.items())}


def _engine(session: AsyncSession, ev: IncomingEvent) -> Engine:
    return Engine(session, Emitter(session, ev.tenant, "system", "pipeline-events"))


async def _credit_source(
    engine: Engine,
    kind: str,
    source_id: str,
    credit_day: date,
    amount: Decimal,
    currency: str,
    percents: dict[str, Decimal],
    units: dict[str, str],
) -> set[Pair]:
    """Upsert the credits of one deal/order; drop users no longer credited."""
    conn = await engine.conn()
    tenant = engine.tenant
    old = await conn.fetch(
        "SELECT user_id, credit_date FROM credits WHERE tenant_id = $1 AND source_kind = $2 "
        "AND source_id = $3",
        tenant,
        kind,
        source_id,
    )
    users = sorted(percents)
    now = datetime.now(UTC)
    await conn.executemany(
        "INSERT INTO credits (tenant_id, source_kind, source_id, user_id, credit_date, amount, "
        "currency, percent, units, clawed_back_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, "
        "$7, $8, $9::jsonb, NULL, $10) ON CONFLICT (tenant_id, source_kind, source_id, user_id) "
        "DO UPDATE SET credit_date = EXCLUDED.credit_date, amount = EXCLUDED.amount, "
        "currency = EXCLUDED.currency, percent = EXCLUDED.percent, units = EXCLUDED.units, "
        "clawed_back_at = NULL, updated_at = EXCLUDED.updated_at",
        [
            (tenant, kind, source_id, u, credit_day, amount, currency, percents[u],
             json.dumps(units), now)
            for u in users
        ],
    )  # fmt: skip
    await conn.execute(
        "DELETE FROM credits WHERE tenant_id = $1 AND source_kind = $2 AND source_id = $3 "
        "AND NOT (user_id = ANY($4::text[]))",
        tenant,
        kind,
        source_id,
        users,
    )
    items = [(r["user_id"], r["credit_date"]) for r in old] + [(u, credit_day) for u in users]
    return await engine.pairs_for_dates(items)


async def _claw_back(engine: Engine, kind: str, source_id: str, at: datetime) -> set[Pair]:
    """A deal reopened or deleted, or an order refunded: credits dated at most the plan's
    clawback_days before `at` are removed (kept as clawed back, for the explanation)."""
    conn = await engine.conn()
    book = await engine.book()
    rows = await conn.fetch(
        "SELECT user_id, credit_date FROM credits WHERE tenant_id = $1 AND source_kind = $2 "
        "AND source_id = $3 AND clawed_back_at IS NULL",
        engine.tenant,
        kind,
        source_id,
    )
    removed: list[str] = []
    for r in rows:
        plan = book.plan_for(r["user_id"], r["credit_date"], r["credit_date"])
        window = 0
        if plan is not None:
            v = version_at(plan.versions, r["credit_date"])
            window = v.clawback_days if v is not None else 0
        if (at.date() - r["credit_date"]).days <= window:
            removed.append(r["user_id"])
    if not removed:
        return set()
    await conn.execute(
        "UPDATE credits SET clawed_back_at = $5, updated_at = $5 WHERE tenant_id = $1 "
        "AND source_kind = $2 AND source_id = $3 AND user_id = ANY($4::text[])",
        engine.tenant,
        kind,
        source_id,
        removed,
        at,
    )
    return await engine.pairs_for_dates(
        (r["user_id"], r["credit_date"]) for r in rows if r["user_id"] in removed
    )


async def apply_deal(engine: Engine, deal: pp.Deal) -> set[Pair]:
    if deal.status != "won" or not (deal.closed_at.seconds or deal.closed_at.nanos):
        return set()
    amount = _decimal(deal.amount.amount)
    if amount is None or amount < 0:
        return set()
    splits = [(s.user_id, p) for s in deal.splits if (p := _decimal(s.percent)) is not None]
    percents = split_percents(deal.owner_id, splits)
    day = deal.closed_at.ToDatetime(tzinfo=UTC).date()
    return await _credit_source(
        engine, "deal", deal.id, day, amount, deal.amount.currency.upper(), percents,
        _units(deal.line_items),
    )  # fmt: skip


@pipeline.on("crm.pipeline.deal.won.v1")
async def on_deal_won(session: AsyncSession, ev: IncomingEvent) -> None:
    engine = _engine(session, ev)
    await engine.recompute(await apply_deal(engine, ev.parse(pp.DealWon).deal))


@pipeline.on("crm.pipeline.deal.updated.v1")
async def on_deal_updated(session: AsyncSession, ev: IncomingEvent) -> None:
    """A won deal's amount, splits, line items or close date changed: credit it anew."""
    engine = _engine(session, ev)
    await engine.recompute(await apply_deal(engine, ev.parse(pp.DealUpdated).deal))


@pipeline.on("crm.pipeline.deal.reopened.v1")
async def on_deal_reopened(session: AsyncSession, ev: IncomingEvent) -> None:
    msg = ev.parse(pp.DealReopened)
    engine = _engine(session, ev)
    at = _when(msg.meta.occurred_at, ev.time)
    await engine.recompute(await _claw_back(engine, "deal", msg.deal.id or ev.aggregate_id, at))


@pipeline.on("crm.pipeline.deal.deleted.v1")
async def on_deal_deleted(session: AsyncSession, ev: IncomingEvent) -> None:
    msg = ev.parse(pp.DealDeleted)
    engine = _engine(session, ev)
    at = _when(msg.meta.occurred_at, ev.time)
    await engine.recompute(await _claw_back(engine, "deal", msg.deal.id or ev.aggregate_id, at))


@pipeline.on("crm.pipeline.order.paid.v1")
async def on_order_paid(session: AsyncSession, ev: IncomingEvent) -> None:
    order = ev.parse(pp.OrderPaid).order
    amount = _decimal(order.amount.amount)
    if amount is None or amount < 0 or not order.owner_id:
        return
    engine = _engine(session, ev)
    day = _when(order.paid_at, ev.time).date()
    units: dict[str, Decimal] = defaultdict(lambda: Decimal(0))
    for line in order.lines:
        qty = _decimal(line.quantity)
        if line.product and qty is not None:
            units[line.product] += qty
    pairs = await _credit_source(
        engine, "order", order.id, day, amount, order.amount.currency.upper(),
        {order.owner_id: Decimal(100)}, {k: format(v, "f") for k, v in sorted(units.items())},
    )  # fmt: skip
    await engine.recompute(pairs)


@pipeline.on("crm.pipeline.order.refunded.v1")
async def on_order_refunded(session: AsyncSession, ev: IncomingEvent) -> None:
    msg = ev.parse(pp.OrderRefunded)
    engine = _engine(session, ev)
    at = _when(msg.order.refunded_at, _when(msg.meta.occurred_at, ev.time))
    await engine.recompute(await _claw_back(engine, "order", msg.order.id or ev.aggregate_id, at))


async def _upsert_team(session: AsyncSession, ev: IncomingEvent, team: pp.Team) -> None:
    conn = await raw_connection(session)
    tid = uuid.UUID(team.id or ev.aggregate_id)
    engine = _engine(session, ev)
    book = await engine.book()
    before = book.org.users_of(book.org.with_descendants({str(tid)}))
    parent = uuid.UUID(team.parent_id) if team.parent_id else None
    await conn.execute(
        "INSERT INTO teams (tenant_id, id, name, parent_id, version) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (tenant_id, id) DO UPDATE SET name = EXCLUDED.name, "
        "parent_id = EXCLUDED.parent_id, version = EXCLUDED.version",
        ev.tenant,
        tid,
        team.name,
        parent,
        ev.version,
    )
    await conn.execute(
        "DELETE FROM team_members WHERE tenant_id = $1 AND team_id = $2", ev.tenant, tid
    )
    members = {m.user_id: m.role for m in team.members if m.user_id}
    await conn.executemany(
        "INSERT INTO team_members (tenant_id, team_id, user_id, role) VALUES ($1, $2, $3, $4)",
        [(ev.tenant, tid, u, r) for u, r in sorted(members.items())],
    )
    engine.forget()
    book = await engine.book()
    after = book.org.users_of(book.org.with_descendants({str(tid)}))
    await engine.recompute(await engine.pairs_for_users(before | after))


@pipeline.on("crm.pipeline.team.created.v1")
async def on_team_created(session: AsyncSession, ev: IncomingEvent) -> None:
    await _upsert_team(session, ev, ev.parse(pp.TeamCreated).team)


@pipeline.on("crm.pipeline.team.updated.v1")
async def on_team_updated(session: AsyncSession, ev: IncomingEvent) -> None:
    await _upsert_team(session, ev, ev.parse(pp.TeamUpdated).team)


@pipeline.on("crm.pipeline.team.deleted.v1")
async def on_team_deleted(session: AsyncSession, ev: IncomingEvent) -> None:
    conn = await raw_connection(session)
    tid = uuid.UUID(ev.aggregate_id)
    engine = _engine(session, ev)
    book = await engine.book()
    before = book.org.users_of(book.org.with_descendants({str(tid)}))
    await conn.execute(
        "DELETE FROM team_members WHERE tenant_id = $1 AND team_id = $2", ev.tenant, tid
    )
    await conn.execute("DELETE FROM teams WHERE tenant_id = $1 AND id = $2", ev.tenant, tid)
    engine.forget()
    await engine.recompute(await engine.pairs_for_users(before))
