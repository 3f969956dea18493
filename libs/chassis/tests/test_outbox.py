"""The outbox rows belong to the caller's transaction: a rollback leaves none behind."""

from __future__ import annotations

import asyncpg
from google.protobuf.wrappers_pb2 import StringValue

from chassis import outbox
from chassis.db import Database, asyncpg_dsn, commit
from chassis.events import OutgoingEvent


def event(n: int) -> OutgoingEvent:
    return OutgoingEvent(
        message=StringValue(value=str(n)),
        ce_type="crm.testctx.widget.created.v1",
        tenant="acme",
        aggregate_id=f"w{n}",
        version=1,
        source="test",
    )


async def outbox_count(url: str) -> int:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM outbox"))
    finally:
        await conn.close()


class TestOutboxTransaction:
    async def test_rows_flushed_first_in_a_session_roll_back_with_it(self, db_url: str) -> None:
        db = Database(db_url, pool_size=2)
        try:
            async with db.sessionmaker() as session:
                outbox.add(session, event(1))
                await outbox.flush_events(session)  # the very first statement of the session
                await session.rollback()
            assert await outbox_count(db_url) == 0
            async with db.sessionmaker() as session:
                outbox.add(session, event(2))
                outbox.add(session, event(3))
                await commit(session)
            assert await outbox_count(db_url) == 2
        finally:
            await db.dispose()
