"""Durable timers: a background loop that fires what is due, exactly once, across restarts
and replicas.

The chassis owns the loop; the service owns the timers. A timer is a persisted fire time
in the service's own table (e.g. `tasks.remind_at` with `reminded_at IS NULL`). The
service gives a `fire` function that, inside one transaction:

1. claims due rows with ``SELECT ... WHERE fire_at <= now() AND fired IS NULL
   ORDER BY fire_at LIMIT :limit FOR UPDATE SKIP LOCKED``,
2. marks each claimed timer fired and adds its event to the outbox,
3. returns how many it fired.

The scheduler commits that transaction with `chassis.db.commit` (outbox rows first), so the
mark and the event are one atomic write: a crash before the commit fires again after
restart, a commit never fires twice, and `SKIP LOCKED` keeps two replicas from claiming
the same row. When `fire` fired a full batch the loop runs again at once; otherwise it
sleeps until `wake()` (call it after writing a timer that may be due soon) or the poll
interval, whichever is first. `next_due` (optional) tells how soon the next timer is due so
a timer due in 200 ms does not wait for a 5 s poll.

Work that must not hold a transaction open (HTTP calls under a lease, e.g. webhook
deliveries) returns `AfterCommit(count, work)` from `fire` instead of a count: `fire`
claims (takes the lease) in the scheduler's transaction, the chassis commits it, then
`work()` runs with no transaction open and records its results in its own
`chassis.db.unit_of_work`. The service never commits.

```python
async def fire(session: AsyncSession, now: datetime, limit: int) -> int: ...
async def next_due(session: AsyncSession) -> datetime | None: ...

scheduler = Scheduler("task-reminders", db, fire, next_due=next_due, poll_seconds=5)
await scheduler.start()   # on_startup
scheduler.wake()          # after a write that set a fire time
await scheduler.stop()    # on_shutdown
```
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.db import Database, unit_of_work
from chassis.tasks import cancel_and_wait

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AfterCommit:
    """What `fire` returns when part of its work must run after the claim is committed."""

    count: int
    work: Callable[[], Awaitable[None]]


FireFn = Callable[[AsyncSession, datetime, int], Awaitable["int | AfterCommit"]]
NextDueFn = Callable[[AsyncSession], Awaitable[datetime | None]]


class Scheduler:
    """Runs `fire(session, now, limit)` whenever something may be due; see the module docstring."""

    def __init__(
        self,
        name: str,
        db: Database,
        fire: FireFn,
        *,
        next_due: NextDueFn | None = None,
        poll_seconds: float = 5.0,
        batch_size: int = 100,
        error_backoff_seconds: float = 1.0,
    ) -> None:
        self.name = name
        self.db = db
        self.fire = fire
        self.next_due = next_due
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self.error_backoff_seconds = error_backoff_seconds
        self.fired_total = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Look for due timers now (cheap; safe to call from any request handler)."""
        self._wake.set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"scheduler-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def run_once(self, now: datetime | None = None) -> int:
        """Fire what is due at `now` (default: the current time) in one transaction."""
        async with unit_of_work(self.db) as session:
            result = await self.fire(session, now or datetime.now(UTC), self.batch_size)
        if isinstance(result, AfterCommit):
            await result.work()
            result = result.count
        self.fired_total += result
        return result

    async def _sleep_seconds(self) -> float:
        if self.next_due is None:
            return self.poll_seconds
        async with self.db.sessionmaker() as session:
            due = await self.next_due(session)
            await session.rollback()
        if due is None:
            return self.poll_seconds
        wait = (due - datetime.now(UTC)).total_seconds()
        return min(self.poll_seconds, max(0.0, wait))

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                fired = await self.run_once()
                if fired >= self.batch_size:
                    continue
                sleep = await self._sleep_seconds()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler %s failed; retrying", self.name)
                sleep = self.error_backoff_seconds
            if sleep > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=sleep)
