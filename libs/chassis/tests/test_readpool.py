"""The raw read pool: connections go to waiters in arrival order, and a release skips the
reset query without leaving a transaction open."""

from __future__ import annotations

import asyncio

from chassis.db import Database


class TestReadPool:
    async def test_a_released_connection_goes_to_the_longest_waiter(self, db_url: str) -> None:
        """asyncpg's own pool would hand the connection to the newcomer: it asks after the
        release, but before the woken waiters ran."""
        db = Database(db_url, pool_size=1, read_pool_size=1)
        try:
            pool = await db.pool()
            order: list[str] = []
            held = asyncio.Event()
            release = asyncio.Event()

            def newcomer() -> None:
                tasks.append(asyncio.create_task(reader("newcomer")))

            async def holder() -> None:
                async with pool.acquire():
                    held.set()
                    await release.wait()
                    # runs first among the steps the release schedules: the newcomer asks
                    # right after the connection is back, before the woken waiter runs
                    asyncio.get_running_loop().call_soon(newcomer)

            async def reader(name: str) -> None:
                await pool.fetchval("SELECT 1")
                order.append(name)

            tasks = [asyncio.create_task(holder())]
            await held.wait()
            tasks += [asyncio.create_task(reader(f"waiter{i}")) for i in range(3)]
            await asyncio.sleep(0.05)  # all three wait for the connection
            release.set()
            await tasks[0]
            await asyncio.gather(*tasks[1:])
            assert order == ["waiter0", "waiter1", "waiter2", "newcomer"]
        finally:
            await db.dispose()

    async def test_a_transaction_left_open_is_rolled_back_at_release(self, db_url: str) -> None:
        db = Database(db_url, pool_size=1, read_pool_size=1)
        try:
            pool = await db.pool()
            await pool.execute("CREATE TABLE readpool_probe (n int)")
            async with pool.acquire() as conn:
                await conn.execute("BEGIN")
                await conn.execute("INSERT INTO readpool_probe VALUES (1)")
            assert await pool.fetchval("SELECT count(*) FROM readpool_probe") == 0
            async with pool.acquire() as conn:
                assert not conn.is_in_transaction()
            # the one connection served every call: session state is not reset, only ended
            assert pool.pool.get_size() == 1
        finally:
            await db.dispose()

    async def test_callers_arriving_together_share_one_pool(self, db_url: str) -> None:
        db = Database(db_url, pool_size=2, read_pool_size=2)
        try:
            pools = await asyncio.gather(*(db.pool() for _ in range(10)))
            assert all(p is pools[0] for p in pools)
        finally:
            await db.dispose()
