"""Housekeeping keeps the chassis tables bounded: old sent outbox rows, inbox rows older than
the stream can redeliver and expired idempotency keys go; everything else stays. The stream
itself is bounded by age, and a consumer never overwrites its producer's stream settings."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from httpx import AsyncClient

from chassis.bus import Bus, StreamSpec
from chassis.db import Database, asyncpg_dsn
from chassis.housekeeping import housekeeper
from chassis.testing import Infra, wait_for


async def _scalar(url: str, sql: str) -> int:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


class TestHousekeeping:
    async def test_prunes_only_what_can_no_longer_matter(
        self, client: AsyncClient, crm_infra: Infra, db_url: str
    ) -> None:
        h = crm_infra.auth()
        for i in range(6):
            r = await client.post("/v1/widgets", json={"name": f"w{i}"}, headers=h)
            assert r.status_code == 201

        async def flowed() -> bool:
            sent = await _scalar(db_url, "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL")
            seen = await _scalar(db_url, "SELECT count(*) FROM inbox")
            return sent == 6 and seen == 6

        await wait_for(flowed, message="events sent and consumed")
        conn = await asyncpg.connect(asyncpg_dsn(db_url))
        try:
            # three sent 4 days ago (past the 72 h default), three just now
            await conn.execute(
                "UPDATE outbox SET sent_at = now() - interval '4 days' "
                "WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT 3)"
            )
            # two consumed 32 days ago (past 30 days of stream retention + 1)
            await conn.execute(
                "UPDATE inbox SET processed_at = now() - interval '32 days' "
                "WHERE event_id IN (SELECT event_id FROM inbox ORDER BY event_id LIMIT 2)"
            )
            await conn.execute(
                "INSERT INTO idempotency_keys (tenant_id, key, request_hash, created_at) VALUES "
                "('acme', 'old', 'h', now() - interval '25 hours'), ('acme', 'new', 'h', now())"
            )
        finally:
            await conn.close()

        db = Database(db_url)
        # the settings' defaults: sent rows kept 72 h, inbox 30 days of stream retention + 1
        cleaner = housekeeper(
            db,
            service="testctx",
            outbox_keep=timedelta(hours=72),
            inbox_keep=timedelta(days=31),
            every_seconds=3600,
        )
        try:
            assert await cleaner.run_once() == 3
            assert await cleaner.run_once() == 0  # nothing left to prune
        finally:
            await db.dispose()

        assert await _scalar(db_url, "SELECT count(*) FROM outbox") == 3
        assert await _scalar(db_url, "SELECT min(sent_at) > now() - interval '1 hour' FROM outbox")
        assert await _scalar(db_url, "SELECT count(*) FROM inbox") == 4
        keys = await _scalar(db_url, "SELECT count(*) FROM idempotency_keys WHERE key = 'new'")
        assert keys == 1
        assert await _scalar(db_url, "SELECT count(*) FROM idempotency_keys") == 1

    async def test_stream_bounded_by_age_and_owned_by_its_producer(
        self, client: AsyncClient, crm_infra: Infra
    ) -> None:
        bus = Bus(crm_infra.nats_url, "test-housekeeping")
        bus.start()
        try:
            await bus.wait_connected(10)
            # the producer (the app) created its stream with the default retention
            await wait_for(lambda: _has_stream(bus), message="stream created by the relay")
            info = await bus.js.stream_info("CRM_TESTCTX")
            assert info.config.max_age == 30 * 86400
            # a consumer starting with other settings binds without changing them
            other = StreamSpec.for_context("testctx", max_age_seconds=3600)
            await bus.ensure_stream(other, owner=False)
            assert (await bus.js.stream_info("CRM_TESTCTX")).config.max_age == 30 * 86400
            # the producer's own settings are applied
            await bus.ensure_stream(other)
            assert (await bus.js.stream_info("CRM_TESTCTX")).config.max_age == 3600
        finally:
            await bus.close()


async def _has_stream(bus: Bus) -> bool:
    try:
        await bus.js.stream_info("CRM_TESTCTX")
    except Exception:
        return False
    return True
