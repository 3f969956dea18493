"""The scheduler fires each due timer exactly once: across two competing replicas, across a
restart, and not before its time; a failing fire commits nothing and is retried."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.db import Database, asyncpg_dsn, unit_of_work
from chassis.scheduler import AfterCommit, Scheduler
from chassis.testing import wait_for

SCHEMA = """
CREATE TABLE IF NOT EXISTS timers (id int PRIMARY KEY, fire_at timestamptz NOT NULL,
                                   fired_at timestamptz);
CREATE TABLE IF NOT EXISTS fired (id int NOT NULL, by text NOT NULL);
TRUNCATE timers, fired;
"""


def fire_fn(replica: str, fail: list[bool] | None = None):  # type: ignore[no-untyped-def]
    async def fire(session: AsyncSession, now: datetime, limit: int) -> int:
        rows = (
            await session.execute(
                text(
                    "SELECT id FROM timers WHERE fired_at IS NULL AND fire_at <= :now "
                    "ORDER BY fire_at LIMIT :limit FOR UPDATE SKIP LOCKED"
                ),
                {"now": now, "limit": limit},
            )
        ).all()
        for (timer_id,) in rows:
            await session.execute(
                text("UPDATE timers SET fired_at = :now WHERE id = :id"),
                {"now": now, "id": timer_id},
            )
            await session.execute(
                text("INSERT INTO fired (id, by) VALUES (:id, :by)"),
                {"id": timer_id, "by": replica},
            )
            await asyncio.sleep(0.001)  # let the other replica interleave
        if fail and fail[0]:
            fail[0] = False
            raise RuntimeError("boom after marking")
        return len(rows)

    return fire


async def next_due(session: AsyncSession) -> datetime | None:
    value = (
        await session.execute(text("SELECT min(fire_at) FROM timers WHERE fired_at IS NULL"))
    ).scalar()
    return value if isinstance(value, datetime) else None


async def setup(url: str, timers: list[tuple[int, datetime]]) -> asyncpg.Connection:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    await conn.execute(SCHEMA)
    await conn.executemany("INSERT INTO timers (id, fire_at) VALUES ($1, $2)", timers)
    return conn


class TestScheduler:
    async def test_two_replicas_fire_each_timer_once(self, db_url: str) -> None:
        now = datetime.now(UTC)
        conn = await setup(db_url, [(i, now - timedelta(seconds=i)) for i in range(300)])
        dbs = [Database(db_url, pool_size=2), Database(db_url, pool_size=2)]
        schedulers = [
            Scheduler(f"r{n}", db, fire_fn(f"r{n}"), poll_seconds=0.05, batch_size=20)
            for n, db in enumerate(dbs)
        ]
        try:
            for s in schedulers:
                await s.start()

            async def all_fired() -> bool:
                return int(await conn.fetchval("SELECT count(*) FROM fired")) >= 300

            await wait_for(all_fired, timeout=20, message="every timer fired")
            await asyncio.sleep(0.2)
            assert await conn.fetchval("SELECT count(*) FROM fired") == 300
            assert await conn.fetchval("SELECT count(DISTINCT id) FROM fired") == 300
            assert sum(s.fired_total for s in schedulers) == 300
        finally:
            for s in schedulers:
                await s.stop()
            for db in dbs:
                await db.dispose()
            await conn.close()

    async def test_future_timer_waits_for_its_time_and_wake_is_prompt(self, db_url: str) -> None:
        now = datetime.now(UTC)
        conn = await setup(db_url, [(1, now + timedelta(milliseconds=400))])
        db = Database(db_url, pool_size=2)
        scheduler = Scheduler("s", db, fire_fn("s"), next_due=next_due, poll_seconds=30)
        try:
            await scheduler.start()
            await asyncio.sleep(0.2)
            assert await conn.fetchval("SELECT count(*) FROM fired") == 0

            async def fired(n: int) -> bool:
                return int(await conn.fetchval("SELECT count(*) FROM fired")) >= n

            # next_due makes it wake at the timer's time although the poll is 30 s.
            await wait_for(lambda: fired(1), timeout=3, message="timer fired at its time")
            fired_at = await conn.fetchval("SELECT fired_at FROM timers WHERE id = 1")
            assert fired_at >= now + timedelta(milliseconds=400)
            # A timer written later is picked up on wake(), not after the 30 s poll.
            await conn.execute("INSERT INTO timers (id, fire_at) VALUES (2, now())")
            scheduler.wake()
            await wait_for(lambda: fired(2), timeout=3, message="woken scheduler fired")
        finally:
            await scheduler.stop()
            await db.dispose()
            await conn.close()

    async def test_failed_fire_commits_nothing_then_fires_once(self, db_url: str) -> None:
        now = datetime.now(UTC)
        conn = await setup(db_url, [(1, now), (2, now)])
        db = Database(db_url, pool_size=2)
        fail = [True]
        scheduler = Scheduler("s", db, fire_fn("s", fail), poll_seconds=0.05)
        scheduler.error_backoff_seconds = 0.05
        try:
            with pytest.raises(RuntimeError):
                await scheduler.run_once()
            assert await conn.fetchval("SELECT count(*) FROM fired") == 0
            assert await conn.fetchval("SELECT count(*) FROM timers WHERE fired_at IS NULL") == 2
            # "Restart": a new scheduler on the same table fires both, once.
            await scheduler.start()

            async def done() -> bool:
                return int(await conn.fetchval("SELECT count(*) FROM fired")) == 2

            await wait_for(done, timeout=5, message="fired after the failure")
            await asyncio.sleep(0.2)
            assert await conn.fetchval("SELECT count(*) FROM fired") == 2
        finally:
            await scheduler.stop()
            await db.dispose()
            await conn.close()


class TestAfterCommit:
    async def test_work_runs_after_the_claim_is_committed(self, db_url: str) -> None:
        now = datetime.now(UTC)
        conn = await setup(db_url, [(1, now), (2, now)])
        db = Database(db_url, pool_size=2)
        seen: list[int] = []

        async def fire(session: AsyncSession, at: datetime, limit: int) -> int | AfterCommit:
            claimed = [
                r[0]
                for r in await session.execute(
                    text("UPDATE timers SET fired_at = :at WHERE fired_at IS NULL RETURNING id"),
                    {"at": at},
                )
            ]

            async def work() -> None:
                # Another connection sees the claim: it was committed before the work.
                seen.append(
                    int(
                        await conn.fetchval(
                            "SELECT count(*) FROM timers WHERE fired_at IS NOT NULL"
                        )
                    )
                )
                async with unit_of_work(db) as recording:
                    await recording.execute(
                        text("INSERT INTO fired (id, by) SELECT unnest(CAST(:ids AS int[])), 'w'"),
                        {"ids": claimed},
                    )

            return AfterCommit(len(claimed), work)

        scheduler = Scheduler("s", db, fire)
        try:
            assert await scheduler.run_once() == 2
            assert seen == [2]
            assert await conn.fetchval("SELECT count(*) FROM fired WHERE by = 'w'") == 2
            assert scheduler.fired_total == 2
        finally:
            await db.dispose()
            await conn.close()
