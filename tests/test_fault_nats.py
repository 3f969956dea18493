"""Kill nats-server (SIGKILL) during 2,000 writes: every write still answers 201 (the outbox
absorbs the outage), every event arrives once NATS is back, none twice in effect."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import nats

from chassis.db import asyncpg_dsn
from chassis.testing import wait_for

WRITES = 2000


async def scalar(url: str, sql: str) -> int:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


class TestNatsKilledDuringWrites:
    async def test_outbox_absorbs_the_outage(self, platform: Any) -> None:
        h = platform.infra.auth(tenant="fault")
        statuses: list[int] = []
        sem = asyncio.Semaphore(8)

        async def write(i: int) -> None:
            async with sem:
                r = await platform.client.post(
                    "/v1/contacts",
                    json={"first_name": "F", "last_name": str(i), "email": f"f{i}@example.com"},
                    headers=h,
                )
                statuses.append(r.status_code)

        first = [asyncio.create_task(write(i)) for i in range(300)]
        await asyncio.gather(*first)
        platform.infra.nats.kill()
        try:
            await asyncio.gather(*(write(i) for i in range(300, WRITES)))
        finally:
            platform.infra.nats.start()
        assert statuses.count(201) == WRITES, {s: statuses.count(s) for s in set(statuses)}

        async def all_in_read_model() -> bool:
            n = await scalar(
                platform.gateway_db,
                "SELECT count(*) FROM customer_360 WHERE tenant_id = 'fault'",
            )
            return n == WRITES

        await wait_for(all_in_read_model, timeout=90, message="every event in the 360 model")
        assert (
            await scalar(platform.contacts_db, "SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            == 0
        )
        # none twice in effect: one created entry per contact in the timeline
        assert (
            await scalar(
                platform.gateway_db,
                "SELECT count(*) FROM timeline "
                "WHERE tenant_id = 'fault' AND kind = 'contact.created'",
            )
            == WRITES
        )
        # and the broker stored each event once (Nats-Msg-Id dedup of re-sent batches)
        nc = await nats.connect(platform.infra.nats_url)
        try:
            info = await nc.jetstream().stream_info("CRM_CONTACTS")
            assert info.state.messages == WRITES
        finally:
            await nc.close()
