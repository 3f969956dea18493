"""Outbox -> relay -> JetStream -> consumer, against real PostgreSQL and nats-server."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import nats
from google.protobuf.wrappers_pb2 import StringValue
from httpx import AsyncClient

from chassis.bus import Bus, StreamSpec
from chassis.db import asyncpg_dsn
from chassis.events import OutgoingEvent
from chassis.relay import Relay
from chassis.testing import Infra, wait_for


async def fetch(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def stream_messages(infra: Infra, stream: str = "CRM_TESTCTX") -> list[nats.aio.msg.Msg]:
    nc = await nats.connect(infra.nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            out.append(await js.get_msg(stream, seq))
        return out
    finally:
        await nc.close()


async def publish_raw(infra: Infra, event: OutgoingEvent, msg_id: str | None = None) -> None:
    nc = await nats.connect(infra.nats_url)
    try:
        headers = event.headers()
        if msg_id:
            headers["Nats-Msg-Id"] = msg_id
        await nc.jetstream().publish(
            event.subject, event.message.SerializeToString(), headers=headers
        )
    finally:
        await nc.close()


class TestRelay:
    async def test_every_event_published_once_in_order(
        self, client: AsyncClient, crm_infra: Infra, db_url: str
    ) -> None:
        h = crm_infra.auth()
        ids = []
        for i in range(20):
            r = await client.post("/v1/widgets", json={"name": f"w{i}"}, headers=h)
            ids.append(r.json()["id"])
        for v in (1, 2, 3):
            r = await client.patch(
                f"/v1/widgets/{ids[0]}", json={"name": f"r{v}"}, headers={**h, "If-Match": f'"{v}"'}
            )
            assert r.status_code == 200
        await wait_for(lambda: _all_sent(db_url), message="relay")
        msgs = await stream_messages(crm_infra)
        assert len(msgs) == 23
        assert len({m.headers["Nats-Msg-Id"] for m in msgs}) == 23
        first = [int(m.headers["ce-sequence"]) for m in msgs if m.headers["ce-subject"] == ids[0]]
        assert first == [1, 2, 3, 4]
        assert msgs[0].subject == "crm.testctx.acme.widget.created"

    async def test_resent_rows_are_dropped_as_duplicates(
        self, client: AsyncClient, crm_infra: Infra, db_url: str
    ) -> None:
        h = crm_infra.auth()
        for i in range(5):
            await client.post("/v1/widgets", json={"name": f"w{i}"}, headers=h)
        await wait_for(lambda: _all_sent(db_url), message="relay")
        # A relay that crashed after the broker stored a batch but before marking it sent
        # publishes the same rows again: the broker must drop them.
        conn = await asyncpg.connect(asyncpg_dsn(db_url))
        try:
            await conn.execute("UPDATE outbox SET sent_at = NULL WHERE id <= 3")
            await conn.execute("NOTIFY crm_outbox")
        finally:
            await conn.close()
        await client.post("/v1/widgets", json={"name": "after"}, headers=h)
        await wait_for(lambda: _all_sent(db_url), message="relay re-send")
        msgs = await stream_messages(crm_infra)
        assert len(msgs) == 6


class TestStandbyRelay:
    async def test_wakes_the_leader_over_one_kept_connection(
        self, crm_infra: Infra, db_url: str
    ) -> None:
        """A replica that is not the relay tells the leader about its commits with NOTIFY,
        one per short window, always on the same connection (not one connection each)."""
        bus = Bus(crm_infra.nats_url, name="standby-test")
        standby = Relay(db_url, bus, StreamSpec.for_context("testctx"), service="standby-test")
        listener = await asyncpg.connect(asyncpg_dsn(db_url))
        woken: list[str] = []
        await listener.add_listener("crm_outbox", lambda *args: woken.append(args[2]))
        try:
            for _ in range(3):
                standby.committed()  # not the leader: it never started, so it notifies
                await asyncio.sleep(0.05)
            await wait_for(lambda: _eq(lambda: _len(woken), 3), message="three wake-ups")
            backends = await listener.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                standby.notify_name,
            )
            assert len(backends) == 1
        finally:
            await standby.stop()
            await listener.close()

        async def closed() -> bool:  # stop() closes it (the backend exits just after)
            rows = await fetch(
                db_url,
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                standby.notify_name,
            )
            return not rows

        await wait_for(closed, message="the notify connection closed")


async def _len(items: list[str]) -> int:
    return len(items)


async def _all_sent(url: str) -> bool:
    rows = await fetch(
        url,
        "SELECT count(*) FILTER (WHERE sent_at IS NULL) AS unsent, count(*) AS total FROM outbox",
    )
    return bool(rows[0]["total"]) and rows[0]["unsent"] == 0


def widget_event(wid: str, version: int, name: str, tenant: str = "acme") -> OutgoingEvent:
    return OutgoingEvent(
        message=StringValue(value=name),
        ce_type="crm.testctx.widget.renamed.v1",
        tenant=tenant,
        aggregate_id=wid,
        version=version,
        source="test",
    )


class TestConsumer:
    async def test_applies_each_event_once(
        self, client: AsyncClient, crm_infra: Infra, db_url: str
    ) -> None:
        h = crm_infra.auth()
        for i in range(10):
            await client.post("/v1/widgets", json={"name": f"w{i}"}, headers=h)

        async def logged() -> int:
            return len(await fetch(db_url, "SELECT 1 FROM widget_log"))

        assert await wait_for(lambda: _eq(logged, 10), message="10 applied")
        rows = await fetch(db_url, "SELECT count(*) AS n FROM inbox")
        assert rows[0]["n"] == 10

    async def test_redelivered_event_has_no_second_effect(
        self, client: AsyncClient, crm_infra: Infra, db_url: str
    ) -> None:
        wid = str(uuid.uuid4())
        ev = widget_event(wid, 1, "once")
        await publish_raw(crm_infra, ev)
        # the same event under another broker message id: JetStream keeps both, the inbox not
        await publish_raw(crm_infra, ev, msg_id=str(uuid.uuid4()))
        await publish_raw(crm_infra, widget_event(wid, 2, "second"))
        await wait_for(lambda: _eq(lambda: _count(db_url, wid), 2), message="two applied")
        rows = await fetch(
            db_url, "SELECT name FROM widget_log WHERE widget_id = $1 ORDER BY version", wid
        )
        assert [r["name"] for r in rows] == ["once", "second"]

    async def test_versions_apply_in_order_and_gaps_wait(
        self, client: AsyncClient, crm_infra: Infra, db_url: str
    ) -> None:
        wid = str(uuid.uuid4())
        await publish_raw(crm_infra, widget_event(wid, 2, "v2"))
        await publish_raw(crm_infra, widget_event(wid, 3, "v3"))
        await publish_raw(crm_infra, widget_event(wid, 1, "v1"))
        await wait_for(
            lambda: _eq(lambda: _count(db_url, wid), 3), timeout=15, message="gap filled"
        )
        rows = await fetch(
            db_url, "SELECT version FROM widget_log WHERE widget_id = $1 ORDER BY ctid", wid
        )
        assert [r["version"] for r in rows] == [1, 2, 3]
        # an older version arriving late is a no-op
        await publish_raw(crm_infra, widget_event(wid, 2, "stale"))
        await publish_raw(crm_infra, widget_event(wid, 4, "v4"))
        await wait_for(lambda: _eq(lambda: _count(db_url, wid), 4), message="v4")
        names = [
            r["name"]
            for r in await fetch(db_url, "SELECT name FROM widget_log WHERE widget_id = $1", wid)
        ]
        assert "stale" not in names

    async def test_poison_event_is_dead_lettered_and_others_flow(
        self, client: AsyncClient, crm_infra: Infra, db_url: str
    ) -> None:
        bad, good = str(uuid.uuid4()), str(uuid.uuid4())
        await publish_raw(crm_infra, widget_event(bad, 1, "poison"))
        await publish_raw(crm_infra, widget_event(good, 1, "fine"))
        await wait_for(lambda: _eq(lambda: _count(db_url, good), 1), message="good applied")

        async def dead() -> list[asyncpg.Record]:
            return await fetch(db_url, "SELECT * FROM dead_letters")

        rows = await wait_for(dead, timeout=30, message="dead letter")
        assert rows[0]["consumer"] == "testctx-widget-log"
        assert "poison" in rows[0]["error"]
        assert json.loads(rows[0]["headers"])["ce-subject"] == bad
        assert await _count(db_url, bad) == 0


class TestBatchHandlers:
    async def test_runs_of_one_type_are_applied_together_in_order(
        self, client: AsyncClient, crm_infra: Infra, db_url: str
    ) -> None:
        wid = str(uuid.uuid4())
        other = str(uuid.uuid4())
        tagged = "crm.testctx.widget.tagged.v1"

        def ev(agg: str, version: int, name: str, ce_type: str = tagged) -> OutgoingEvent:
            return OutgoingEvent(
                message=StringValue(value=name),
                ce_type=ce_type,
                tenant="acme",
                aggregate_id=agg,
                version=version,
                source="t",
            )

        for e in (
            ev(wid, 1, "a"),
            ev(wid, 2, "b"),
            ev(other, 1, "x"),
            ev(wid, 3, "r", "crm.testctx.widget.renamed.v1"),
            ev(wid, 4, "c"),
        ):
            await publish_raw(crm_infra, e)
        await wait_for(lambda: _eq(lambda: _count(db_url, wid), 4), message="all applied")
        rows = await fetch(
            db_url, "SELECT version, name FROM widget_log WHERE widget_id = $1 ORDER BY ctid", wid
        )
        assert [r["version"] for r in rows] == [1, 2, 3, 4]
        names = [r["name"] for r in rows]
        assert names[2] == "r"  # the per-event handler ran between the runs
        assert all(
            n.split("/run")[0] == want for n, want in zip(names, "abrc", strict=True) if "/run" in n
        )
        assert await _count(db_url, other) == 1


async def _count(url: str, wid: str) -> int:
    rows = await fetch(url, "SELECT count(*) AS n FROM widget_log WHERE widget_id = $1", wid)
    return int(rows[0]["n"])


async def _eq(probe, expected: int) -> bool:  # type: ignore[no-untyped-def]
    return bool(await probe() == expected)
