"""Housekeeping of the chassis tables, which would otherwise grow forever: a `Scheduler` that
deletes, in batches, oldest first,

- outbox rows sent more than `outbox_keep_hours` ago (kept a while so an operator can see
  what went out, or re-send a window by clearing `sent_at`);
- inbox rows older than the stream retention plus a day: JetStream can only redeliver a
  message it still holds, so an older event id can never come back to be deduplicated;
- idempotency keys past their 24 hours (the middleware ignores them already; only a reuse of
  the same key deleted them).

Every replica runs it; deletes of the same rows are harmless, and each batch is its own
short transaction. A full batch runs the next one at once, otherwise it sleeps
`housekeeping_seconds`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.db import Database
from chassis.scheduler import Scheduler

# Oldest first along the primary key: sent rows are the low ids.
_PRUNE_OUTBOX = text("""
DELETE FROM outbox WHERE id IN (
    SELECT id FROM outbox WHERE sent_at < :before ORDER BY id LIMIT :limit)
""")

# No index on processed_at: rows are appended in time order, so the scan finds the old ones
# at the start of the heap and stops after `limit`.
_PRUNE_INBOX = text("""
DELETE FROM inbox WHERE ctid IN (
    SELECT ctid FROM inbox WHERE processed_at < :before LIMIT :limit)
""")


_PRUNE_IDEMPOTENCY = text("""
DELETE FROM idempotency_keys WHERE ctid IN (
    SELECT ctid FROM idempotency_keys WHERE created_at < :before LIMIT :limit)
""")

IDEMPOTENCY_KEEP = timedelta(hours=24)


def housekeeper(
    db: Database,
    *,
    service: str,
    outbox_keep: timedelta,
    inbox_keep: timedelta,
    every_seconds: float,
    batch_size: int = 5000,
) -> Scheduler:
    async def prune(session: AsyncSession, now: datetime, limit: int) -> int:
        sent = await session.execute(_PRUNE_OUTBOX, {"before": now - outbox_keep, "limit": limit})
        seen = await session.execute(_PRUNE_INBOX, {"before": now - inbox_keep, "limit": limit})
        keys = await session.execute(
            _PRUNE_IDEMPOTENCY, {"before": now - IDEMPOTENCY_KEEP, "limit": limit}
        )
        # the largest: a full batch of any of them runs the pass again at once
        return max(_count(sent), _count(seen), _count(keys))

    return Scheduler(
        f"housekeeping-{service}",
        db,
        prune,
        poll_seconds=every_seconds,
        batch_size=batch_size,
    )


def _count(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
