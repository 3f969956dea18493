"""The periodic full pass: per tenant, recompute the RFM quintile breakpoints and the primary
currency from the current population, then rescore every customer (recency grows, breaches
leave the 90-day window, ... without any event), in batches.

A chassis `Scheduler` (`analytics_full_pass_seconds`, default hourly per tenant). Each
`fire` works on one due tenant (`rfm_breakpoints.next_pass_at`, claimed with `FOR UPDATE
SKIP LOCKED`, so replicas share tenants): the first batch stores the new breakpoints, each
batch rescores up to `limit` customers after `pass_cursor` (contact id order) and moves the
cursor; the last one schedules the next pass. Customers a consumer holds at that moment are
skipped: the consumer rescores them itself. Tenants appear when their first customer is
scored (incremental scoring queues them) or, for documents from before this pass existed,
when nothing else is due."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from fastapi import FastAPI
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.db import Database
from chassis.scheduler import Scheduler
from gateway.readmodel.analytics import metrics, scoring
from gateway.settings import GatewaySettings

_START = "00000000-0000-0000-0000-000000000000"

_CLAIM = text("""
SELECT tenant_id, CAST(pass_cursor AS text) FROM rfm_breakpoints
WHERE next_pass_at <= :now ORDER BY next_pass_at LIMIT 1 FOR UPDATE SKIP LOCKED
""")

_DISCOVER = text("""
INSERT INTO rfm_breakpoints (tenant_id)
SELECT DISTINCT tenant_id FROM customer_360 WHERE doc IS NOT NULL
ON CONFLICT (tenant_id) DO NOTHING
""")


def population_cuts(rfms: list[dict[str, Any]]) -> tuple[metrics.Cuts, int]:
    """Breakpoints of the customers that bought (an RFM segment), and the primary currency:
    the one with the largest total."""
    totals: dict[str, Decimal] = {}
    for r in rfms:
        for m in r.get("monetary") or []:
            totals[m["currency"]] = totals.get(m["currency"], Decimal(0)) + Decimal(m["amount"])
    currency = max(totals, key=lambda c: (totals[c], c)) if totals else None
    cuts = dict(scoring.DEFAULT_BREAKPOINTS)
    for name, values in (
        ("recency", [float(r["recency_days"]) for r in rfms]),
        ("frequency", [float(r["frequency"]) for r in rfms]),
        ("monetary", [scoring.monetary_value(r.get("monetary") or [], currency) for r in rfms]),
    ):
        found = scoring.breakpoints(values)
        if found is not None:
            cuts[name] = found
    return metrics.Cuts(cuts, currency), len(rfms)


async def recompute_cuts(session: AsyncSession, tenant: str, now: datetime) -> metrics.Cuts:
    rows = await session.execute(
        text("""
        SELECT doc #> '{metrics,rfm}' FROM customer_360
        WHERE tenant_id = :tenant AND doc IS NOT NULL AND rfm_segment IS NOT NULL
    """),
        {"tenant": tenant},
    )
    cuts, population = population_cuts([r[0] for r in rows])
    await session.execute(
        text("""
        UPDATE rfm_breakpoints SET recency = :r, frequency = :f, monetary = :m,
            currency = :currency, population = :n, computed_at = :now
        WHERE tenant_id = :tenant
    """),
        {
            "tenant": tenant,
            "r": cuts.cuts["recency"],
            "f": cuts.cuts["frequency"],
            "m": cuts.cuts["monetary"],
            "currency": cuts.currency,
            "n": population,
            "now": now,
        },
    )
    return cuts


async def run_pass(session: AsyncSession, now: datetime, limit: int, interval: timedelta) -> int:
    """One batch of one due tenant's pass; how many customers it rescored."""
    claimed = (await session.execute(_CLAIM, {"now": now})).first()
    if claimed is None:
        await session.execute(_DISCOVER)
        claimed = (await session.execute(_CLAIM, {"now": now})).first()
        if claimed is None:
            return 0
    tenant, cursor = claimed
    if cursor is None:
        cuts = await recompute_cuts(session, tenant, now)
        cursor = _START
    else:
        cuts = await metrics.load_cuts(session, tenant)
    ids = [
        r[0]
        for r in await session.execute(
            text("""
            SELECT CAST(contact_id AS text) FROM customer_360
            WHERE tenant_id = :tenant AND doc IS NOT NULL AND contact_id > CAST(:after AS uuid)
            ORDER BY contact_id LIMIT :limit
        """),
            {"tenant": tenant, "after": cursor, "limit": limit},
        )
    ]
    await metrics.refresh(session, tenant, ids, now=now, cuts=cuts, skip_locked=True)
    done = len(ids) < limit
    await session.execute(
        text("""
        UPDATE rfm_breakpoints SET pass_cursor = CAST(:cursor AS uuid),
            next_pass_at = CASE WHEN :done THEN CAST(:next AS timestamptz) ELSE next_pass_at END
        WHERE tenant_id = :tenant
    """),
        {
            "tenant": tenant,
            "cursor": None if done else ids[-1],
            "done": done,
            "next": now + interval,
        },
    )
    if not done:
        return len(ids)  # a full batch: the scheduler calls again at once
    # Finished; another tenant due: report a full batch so that the loop goes on at once.
    return limit if await _any_due(session, now) else len(ids)


async def _any_due(session: AsyncSession, now: datetime) -> bool:
    row = await session.execute(
        text("SELECT 1 FROM rfm_breakpoints WHERE next_pass_at <= :now LIMIT 1"), {"now": now}
    )
    return row.first() is not None


async def next_due(session: AsyncSession) -> datetime | None:
    # At least a second away: a due tenant another replica is working on is skipped (SKIP
    # LOCKED), and must not make this loop spin.
    row = await session.execute(
        text(
            "SELECT GREATEST(min(next_pass_at), now() + interval '1 second') "
            "FROM rfm_breakpoints HAVING count(*) > 0"
        )
    )
    due: datetime | None = row.scalar_one_or_none()
    return due


async def schedule_now(session: AsyncSession, tenant: str) -> None:
    """Start the tenant's pass over (new weights): right after this transaction commits."""
    await session.execute(
        text("""
        INSERT INTO rfm_breakpoints (tenant_id) VALUES (:tenant)
        ON CONFLICT (tenant_id) DO UPDATE SET next_pass_at = now(), pass_cursor = NULL
    """),
        {"tenant": tenant},
    )
    metrics.wake_after_commit(session)


def full_pass(db: Database, settings: GatewaySettings) -> Scheduler:
    interval = timedelta(seconds=settings.analytics_full_pass_seconds)

    async def fire(session: AsyncSession, now: datetime, limit: int) -> int:
        return await run_pass(session, now, limit, interval)

    return Scheduler(
        "analytics-full-pass",
        db,
        fire,
        next_due=next_due,
        poll_seconds=settings.analytics_full_pass_seconds,
        batch_size=settings.analytics_batch_size,
        error_backoff_seconds=30.0,
    )


async def start(app: FastAPI) -> None:
    """on_startup: run the full pass in the background (`app.state.analytics_pass`)."""
    scheduler = full_pass(app.state.db, app.state.settings)
    app.state.analytics_pass = scheduler
    metrics.add_waker(scheduler.wake)
    await scheduler.start()


async def stop(app: FastAPI) -> None:
    scheduler: Scheduler | None = getattr(app.state, "analytics_pass", None)
    if scheduler is not None:
        metrics.remove_waker(scheduler.wake)
        await scheduler.stop()
