"""A duplicate that arrives after JetStream's duplicate window is stored again by the broker
(its `Nats-Msg-Id` dedup has forgotten the id) and delivered again: the consumer's inbox must
still apply it once. Here the window is shrunk to half a second on the test stream."""

from __future__ import annotations

import uuid

import asyncpg
import nats
import pytest
from httpx import AsyncClient
from nats.js import JetStreamContext

from chassis.db import asyncpg_dsn
from chassis.testing import Infra, wait_for

STREAM = "CRM_TESTCTX"
DURABLE = "testctx-widget-log"
WINDOW_SECONDS = 0.5

pytestmark = pytest.mark.timeout(120)


async def count(url: str, sql: str, *args: object) -> int:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


async def shrink_window(js: JetStreamContext, seconds: float = WINDOW_SECONDS) -> float:
    """Set the stream's duplicate window; returns the window it had."""
    config = (await js.stream_info(STREAM)).config
    before = float(config.duplicate_window or 0)
    config.duplicate_window = seconds
    await js.update_stream(config)
    return before


async def window_passed(js: JetStreamContext) -> None:
    """Publish a marker id (on a subject no consumer follows) and wait until the broker takes
    it again: every id stored before the marker is then out of the window too.

    The broker forgets ids on a purge timer, which a change of the window restarts. Once (in
    CI) the marker stayed a duplicate for 30 s: if it has not gone after a few seconds, the
    window is set again to a slightly different value (a change restarts the purge; the
    stream's owner may also have put its own window back), and the failure says what it
    was."""
    marker = {"Nats-Msg-Id": f"marker-{uuid.uuid4()}"}
    await js.publish("crm.testctx.acme.marker.set", b"", headers=marker)

    async def forgotten() -> bool:
        ack = await js.publish("crm.testctx.acme.marker.set", b"", headers=marker)
        return not ack.duplicate

    seen: list[float] = []
    for attempt in range(1, 4):
        try:
            await wait_for(forgotten, timeout=8, interval=0.1, message="duplicate window passed")
            return
        except AssertionError:
            seen.append(await shrink_window(js, WINDOW_SECONDS + 0.1 * attempt))
    await wait_for(
        forgotten,
        timeout=8,
        interval=0.1,
        message=f"duplicate window passed (windows found when re-set: {seen})",
    )


async def consumed_all(js: JetStreamContext) -> None:
    """Wait until the widget consumer has acked everything up to the stream's last message
    (the re-sent copy)."""
    last = (await js.stream_info(STREAM)).state.last_seq

    async def done() -> bool:
        info = await js.consumer_info(STREAM, DURABLE)
        delivered = info.delivered.stream_seq if info.delivered else 0
        return bool((delivered or 0) >= last and not info.num_pending and not info.num_ack_pending)

    await wait_for(done, timeout=30, message="consumer caught up")


async def copies(js: JetStreamContext, event_id: str) -> int:
    info = await js.stream_info(STREAM)
    if not info.state.messages:
        return 0
    n = 0
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(STREAM, seq)
        n += (msg.headers or {}).get("Nats-Msg-Id") == event_id
    return n


class TestDuplicateAfterWindow:
    async def test_relay_resend_after_the_window_is_applied_once(
        self, client: AsyncClient, crm_infra: Infra, db_url: str
    ) -> None:
        r = await client.post("/v1/widgets", json={"name": "once"}, headers=crm_infra.auth())
        wid = r.json()["id"]

        async def applied() -> bool:
            n = await count(db_url, "SELECT count(*) FROM widget_log WHERE widget_id = $1", wid)
            return n == 1

        await wait_for(applied, message="first delivery applied")
        event_id = await _event_id(db_url, wid)
        nc = await nats.connect(crm_infra.nats_url)
        try:
            js = nc.jetstream()
            await shrink_window(js)
            await window_passed(js)
            # a relay that crashed before marking its batch sent, restarted after the window
            conn = await asyncpg.connect(asyncpg_dsn(db_url))
            try:
                await conn.execute("UPDATE outbox SET sent_at = NULL")
                await conn.execute("NOTIFY crm_outbox")
            finally:
                await conn.close()

            async def resent() -> bool:
                return await copies(js, event_id) == 2

            await wait_for(resent, timeout=30, message="the broker stored the re-send")
            await consumed_all(js)
        finally:
            await nc.close()
        assert await count(db_url, "SELECT count(*) FROM widget_log WHERE widget_id = $1", wid) == 1
        assert (
            await count(
                db_url, "SELECT count(*) FROM inbox WHERE event_id = $1", uuid.UUID(event_id)
            )
            == 1
        )

    async def test_republished_event_after_the_window_is_applied_once(
        self, client: AsyncClient, crm_infra: Infra, db_url: str
    ) -> None:
        r = await client.post("/v1/widgets", json={"name": "once"}, headers=crm_infra.auth())
        wid = r.json()["id"]
        event_id = await _event_id(db_url, wid)
        nc = await nats.connect(crm_infra.nats_url)
        try:
            js = nc.jetstream()

            async def first() -> bool:
                return await copies(js, event_id) == 1

            await wait_for(first, message="published")
            original = await js.get_msg(STREAM, (await js.stream_info(STREAM)).state.last_seq)
            await shrink_window(js)
            await window_passed(js)
            # e.g. a partner or a replay tool publishing a copy of the message it once saw
            assert original.subject is not None
            ack = await js.publish(original.subject, original.data or b"", headers=original.headers)
            assert not ack.duplicate
            await consumed_all(js)
        finally:
            await nc.close()
        assert await count(db_url, "SELECT count(*) FROM widget_log WHERE widget_id = $1", wid) == 1
        assert (
            await count(
                db_url, "SELECT count(*) FROM inbox WHERE event_id = $1", uuid.UUID(event_id)
            )
            == 1
        )


async def _event_id(url: str, widget_id: str) -> str:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return str(
            await conn.fetchval("SELECT event_id FROM outbox WHERE aggregate_id = $1", widget_id)
        )
    finally:
        await conn.close()
