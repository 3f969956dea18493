"""From a logged event to webhook deliveries: one pending delivery per matching active
subscription, and its (subscription, aggregate) queue marked as having work.

`log_and_fan_out` (gateway.feed.log) runs `FANOUT_SQL` on the rows it has just inserted, in
the consumer's transaction, so an event is logged and queued for delivery atomically. The
dispatchers of this process are woken after that transaction commits."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import event
from sqlmodel.ext.asyncio.session import AsyncSession

# Statement suffix over a CTE `logged(position, tenant_id, event_id, ce_type, aggregate,
# aggregate_id)` of freshly logged events. Deliveries get ids in event order, so within a
# (subscription, aggregate) queue id order is version order. The queue row, when it exists,
# is only bumped (its backoff stays): the dispatcher uses `bumps` to see work that arrived
# while it held the queue.
FANOUT_SQL = """
, fanned AS (
    INSERT INTO webhook_deliveries
        (subscription_id, tenant_id, event_position, event_id, ce_type, aggregate_key)
    SELECT s.id, l.tenant_id, l.position, l.event_id, l.ce_type,
           l.aggregate || ':' || l.aggregate_id
    FROM logged l
    JOIN webhook_subscriptions s
      ON s.tenant_id = l.tenant_id AND s.active AND l.ce_type LIKE ANY (s.type_likes)
    ORDER BY l.position, s.id
    RETURNING subscription_id, aggregate_key
)
INSERT INTO webhook_queues AS q (subscription_id, aggregate_key, next_attempt_at)
SELECT DISTINCT subscription_id, aggregate_key, now() FROM fanned
ORDER BY subscription_id, aggregate_key  -- one lock order for every writer of queues
ON CONFLICT (subscription_id, aggregate_key) DO UPDATE SET bumps = q.bumps + 1
RETURNING 1
"""

_wakers: set[Callable[[], None]] = set()


def add_waker(fn: Callable[[], None]) -> None:
    _wakers.add(fn)


def remove_waker(fn: Callable[[], None]) -> None:
    _wakers.discard(fn)


def wake_all() -> None:
    for fn in list(_wakers):
        fn()


def wake_after_commit(session: AsyncSession) -> None:
    """Wake this process's dispatchers once `session`'s transaction has committed."""

    def committed(_session: object) -> None:
        wake_all()

    event.listen(session.sync_session, "after_commit", committed, once=True)
