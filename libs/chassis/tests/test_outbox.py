"""The outbox rows belong to the caller's transaction: a rollback leaves none behind."""

from __future__ import annotations

import json

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

    async def test_a_bulk_unit_of_work_is_copied_in_order_and_rolls_back(self, db_url: str) -> None:
        # From COPY_FROM events the rows go by COPY: same columns, ids in the order added.
        n = outbox.COPY_FROM + 5
        db = Database(db_url, pool_size=2)
        try:
            async with db.sessionmaker() as session:
                for i in range(n):
                    outbox.add(session, event(i))
                await outbox.flush_events(session)
                await session.rollback()
            assert await outbox_count(db_url) == 0
            added = [event(i) for i in range(n)]
            async with db.sessionmaker() as session:
                for e in added:
                    outbox.add(session, e)
                await commit(session)
            conn = await asyncpg.connect(asyncpg_dsn(db_url))
            try:
                rows = await conn.fetch(
                    "SELECT event_id, tenant_id, ce_type, aggregate_id, aggregate_version, "
                    "headers, payload, created_at, sent_at FROM outbox ORDER BY id"
                )
            finally:
                await conn.close()
            assert [r["event_id"] for r in rows] == [e.id for e in added]
            assert [StringValue.FromString(r["payload"]).value for r in rows] == [
                str(i) for i in range(n)
            ]
            first = rows[0]
            assert (first["tenant_id"], first["ce_type"], first["aggregate_id"]) == (
                "acme",
                "crm.testctx.widget.created.v1",
                "w0",
            )
            assert first["aggregate_version"] == 1
            assert first["sent_at"] is None
            assert first["created_at"] == added[0].time
            headers = json.loads(first["headers"])
            assert headers["ce-id"] == headers["Nats-Msg-Id"] == str(added[0].id)
            assert headers["ce-type"] == "crm.testctx.widget.created.v1"
        finally:
            await db.dispose()
