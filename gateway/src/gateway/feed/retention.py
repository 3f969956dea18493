"""Retention of the event log (and of finished webhook deliveries): a chassis `Scheduler`
that deletes rows older than `event_log_retention_days`, oldest first, in batches, and moves
the horizon (the newest pruned row) that makes older change-feed cursors expire (410).

Deleting is safe with replicas: two pruners delete disjoint rows or nothing, and the horizon
only moves forward."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.db import Database
from chassis.scheduler import Scheduler
from gateway.settings import GatewaySettings

_PRUNE_LOG = """
WITH doomed AS (
    SELECT position FROM event_log WHERE logged_at < :cutoff
    ORDER BY logged_at LIMIT :limit FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM event_log e USING doomed d WHERE e.position = d.position
    RETURNING e.txid, e.position
), newest AS (
    SELECT txid, position FROM gone ORDER BY txid DESC, position DESC LIMIT 1
), horizon AS (
    INSERT INTO event_log_horizon AS h (id, txid, position)
    SELECT 1, txid, position FROM newest
    ON CONFLICT (id) DO UPDATE
    SET txid = EXCLUDED.txid, position = EXCLUDED.position, pruned_at = now()
    WHERE (h.txid, h.position) < (EXCLUDED.txid, EXCLUDED.position)
)
SELECT count(*) FROM gone
"""

_PRUNE_DELIVERIES = """
DELETE FROM webhook_deliveries WHERE id IN (
    SELECT id FROM webhook_deliveries
    WHERE created_at < :cutoff AND status <> 'pending' LIMIT :limit
)
"""


def cutoff(settings: GatewaySettings, now: datetime) -> datetime:
    return now - timedelta(days=settings.event_log_retention_days)


async def prune(session: AsyncSession, settings: GatewaySettings, now: datetime, limit: int) -> int:
    """Delete up to `limit` expired log rows (and finished deliveries); how many log rows."""
    params = {"cutoff": cutoff(settings, now), "limit": limit}
    pruned = int((await session.execute(text(_PRUNE_LOG), params)).scalar_one())
    await session.execute(text(_PRUNE_DELIVERIES), params)
    return pruned


def pruner(db: Database, settings: GatewaySettings) -> Scheduler:
    async def fire(session: AsyncSession, now: datetime, limit: int) -> int:
        return await prune(session, settings, now, limit)

    return Scheduler(
        "event-log-retention",
        db,
        fire,
        poll_seconds=settings.event_log_prune_seconds,
        batch_size=5000,
        error_backoff_seconds=30.0,
    )
