"""The dead-letter admin API against real PostgreSQL and nats-server: a poison event is
dead-lettered without blocking others, listed, inspected, replayed once the handler is fixed
(exactly once), discarded; admins only, each tenant sees its own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import nats
import pytest
from google.protobuf.wrappers_pb2 import StringValue
from httpx import ASGITransport, AsyncClient
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.app import ServiceSpec, create_app
from chassis.consumer import Consumer
from chassis.db import asyncpg_dsn
from chassis.events import IncomingEvent, OutgoingEvent
from chassis.settings import ServiceSettings
from chassis.tables import metadata
from chassis.testing import Infra, running, wait_for

CREATED = "crm.dlctx.widget.created.v1"
PREFIX = "/admin/dead-letters"


@dataclass
class Handler:
    """The service's handler; `broken` names make it fail (until a "deploy" fixes it)."""

    broken: set[str] = field(default_factory=lambda: {"poison"})

    async def __call__(self, session: AsyncSession, event: IncomingEvent) -> None:
        name = event.parse(StringValue).value
        if name in self.broken:
            raise ValueError(f"cannot handle {name}")
        await session.execute(
            text("INSERT INTO dl_effects (event_id, widget_id, version) VALUES (:e, :w, :v)"),
            {"e": event.id, "w": event.aggregate_id, "v": event.version},
        )


@dataclass
class Service:
    client: AsyncClient
    url: str
    handler: Handler
    infra: Infra

    async def sql(self, query: str, *args: object) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(asyncpg_dsn(self.url))
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    async def effects(self, widget: str) -> list[int]:
        rows = await self.sql(
            "SELECT version FROM dl_effects WHERE widget_id = $1 ORDER BY version", widget
        )
        return [r["version"] for r in rows]

    async def listed(self, tenant: str = "acme", **params: Any) -> list[dict[str, Any]]:
        r = await self.client.get(PREFIX, params=params, headers=self.infra.auth(tenant))
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    async def dead_letters(self, n: int, tenant: str = "acme") -> list[dict[str, Any]]:
        async def probe() -> list[dict[str, Any]]:
            items = await self.listed(tenant)
            return items if len(items) >= n else []

        return await wait_for(probe, timeout=30, message=f"{n} dead letters")


@pytest.fixture
async def svc(crm_infra: Infra, clean_streams: None) -> AsyncIterator[Service]:
    url = await crm_infra.database("chassis_deadletters")
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS dl_effects (event_id uuid, widget_id text, version bigint)"
        )
    finally:
        await conn.close()
    from sqlalchemy.ext.asyncio import create_async_engine

    from chassis.db import sqlalchemy_url

    engine = create_async_engine(sqlalchemy_url(url))
    async with engine.begin() as c:
        await c.run_sync(metadata.create_all)
    await engine.dispose()

    handler = Handler()
    ledger = Consumer("ledger", context="dlctx", aggregates=["widget"])
    ledger.on(CREATED)(handler)
    ledger.on("crm.dlctx.widget.renamed.v1")(handler)
    spec = ServiceSpec(name="dltest", title="dead letters", consumers=[ledger])
    app = create_app(spec, crm_infra.settings(ServiceSettings, "dltest", url))
    async with running(app):
        transport = ASGITransport(app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://t") as c:
            yield Service(c, url, handler, crm_infra)


def event(
    widget: str,
    version: int,
    name: str,
    tenant: str = "acme",
    ce_type: str = CREATED,
) -> OutgoingEvent:
    return OutgoingEvent(
        message=StringValue(value=name),
        ce_type=ce_type,
        tenant=tenant,
        aggregate_id=widget,
        version=version,
        source="crm/dlctx",
    )


async def publish(infra: Infra, *events: OutgoingEvent, raw: dict[str, Any] | None = None) -> None:
    nc = await nats.connect(infra.nats_url)
    try:
        js = nc.jetstream()
        for ev in events:
            await js.publish(ev.subject, ev.message.SerializeToString(), headers=ev.headers())
        if raw is not None:
            await js.publish(raw["subject"], raw["data"], headers=raw.get("headers"))
    finally:
        await nc.close()


def gauge() -> float | None:
    return REGISTRY.get_sample_value(
        "crm_dead_letters", {"service": "dltest", "consumer": "ledger"}
    )


async def gauge_at(n: float) -> None:
    async def probe() -> bool:
        return gauge() == n

    await wait_for(probe, message=f"crm_dead_letters == {n}")


class TestDeadLettering:
    async def test_poison_is_dead_lettered_listed_and_inspected(self, svc: Service) -> None:
        bad, good, odd = (str(uuid.uuid4()) for _ in range(3))
        poison = event(bad, 1, "poison")
        unknown_type = event(odd, 1, "x")
        headers = unknown_type.headers()
        headers["ce-dataschema"] = "crm.nowhere.v1.Unknown"  # no such message: parse fails
        await publish(
            svc.infra,
            poison,
            event(good, 1, "fine"),
            raw={"subject": unknown_type.subject, "data": b"\x0a\x01x", "headers": headers},
        )
        await wait_for(lambda: svc.effects(good), message="the good event applied")
        items = await svc.dead_letters(2)
        first = next(i for i in items if i["event_id"] == str(poison.id))
        assert first["consumer"] == "dltest-ledger"
        assert first["type"] == CREATED
        assert first["tenant"] == "acme"
        assert (first["aggregate_id"], first["version"]) == (bad, 1)
        assert "cannot handle poison" in first["error"]
        assert first["deliveries"] == 4  # consumer_max_deliver in tests

        r = await svc.client.get(f"{PREFIX}/{first['id']}", headers=svc.infra.auth())
        assert r.status_code == 200
        detail = r.json()
        assert detail["headers"]["ce-tenant"] == "acme"
        assert detail["headers"]["ce-dataschema"] == "google.protobuf.StringValue"
        assert (detail["payload_encoding"], detail["payload"]) == ("json", "poison")

        other = next(i for i in items if i["aggregate_id"] == odd)
        r = await svc.client.get(f"{PREFIX}/{other['id']}", headers=svc.infra.auth())
        assert (r.json()["payload_encoding"], r.json()["payload"]) == ("base64", "CgF4")
        assert await svc.effects(bad) == []
        await gauge_at(2)

    async def test_a_malformed_message_is_listed_by_subject_tenant_and_not_replayable(
        self, svc: Service
    ) -> None:
        await publish(svc.infra, raw={"subject": "crm.dlctx.acme.widget.created", "data": b"junk"})
        (item,) = await svc.dead_letters(1)
        assert item["event_id"] == ""
        assert item["error"].startswith("malformed")
        assert await svc.listed("globex") == []
        r = await svc.client.post(f"{PREFIX}/{item['id']}/replay", headers=svc.infra.auth())
        assert r.status_code == 422
        r = await svc.client.delete(f"{PREFIX}/{item['id']}", headers=svc.infra.auth())
        assert r.status_code == 204
        assert await svc.listed() == []
        assert gauge() == 0


class TestReplay:
    async def test_replay_after_the_fix_applies_in_order_exactly_once(self, svc: Service) -> None:
        w = str(uuid.uuid4())
        v1, v2 = event(w, 1, "poison"), event(w, 2, "later", ce_type="crm.dlctx.widget.renamed.v1")
        await publish(svc.infra, v1, v2)  # v2 waits for v1 (a gap), then is dead-lettered too
        items = await svc.dead_letters(2)
        by_version = {i["version"]: i["id"] for i in items}
        auth = svc.infra.auth()

        r = await svc.client.post(f"{PREFIX}/{by_version[1]}/replay", headers=auth)
        assert r.status_code == 409  # still broken: the dead letter stays with the new error
        assert "cannot handle poison" in r.json()["error"]
        r = await svc.client.get(f"{PREFIX}/{by_version[1]}", headers=auth)
        assert r.json()["deliveries"] == 5

        r = await svc.client.post(f"{PREFIX}/{by_version[2]}/replay", headers=auth)
        assert r.status_code == 409
        assert r.json()["earlier_dead_letters"] == [by_version[1]]

        svc.handler.broken.clear()  # the fix is deployed
        r = await svc.client.post(f"{PREFIX}/{by_version[1]}/replay", headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["outcome"] == "applied"
        r = await svc.client.post(f"{PREFIX}/{by_version[1]}/replay", headers=auth)
        assert r.status_code == 404  # replayed and gone
        r = await svc.client.post(f"{PREFIX}/{by_version[2]}/replay", headers=auth)
        assert r.json()["outcome"] == "applied"
        assert await svc.effects(w) == [1, 2]
        assert await svc.listed() == []
        assert gauge() == 0

    async def test_the_same_event_stored_twice_applies_once_even_concurrently(
        self, svc: Service
    ) -> None:
        w = str(uuid.uuid4())
        await publish(svc.infra, event(w, 1, "poison"))
        (item,) = await svc.dead_letters(1)
        # The same event dead-lettered twice (e.g. published again under another message id).
        await svc.sql(
            "INSERT INTO dead_letters (consumer, event_id, subject, headers, payload, error, "
            "deliveries) SELECT consumer, event_id, subject, headers, payload, error, deliveries "
            "FROM dead_letters WHERE id = $1",
            item["id"],
        )
        ids = [i["id"] for i in await svc.listed()]
        assert len(ids) == 2
        svc.handler.broken.clear()
        auth = svc.infra.auth()
        replies = await asyncio.gather(
            *(svc.client.post(f"{PREFIX}/{i}/replay", headers=auth) for i in [*ids, *ids])
        )
        codes = sorted(r.status_code for r in replies)
        assert codes == [200, 200, 404, 404]
        outcomes = sorted(r.json()["outcome"] for r in replies if r.status_code == 200)
        assert outcomes == ["applied", "skipped"]
        assert await svc.effects(w) == [1]
        assert await svc.listed() == []


class TestAccess:
    async def test_admins_only_and_each_tenant_sees_its_own(self, svc: Service) -> None:
        a, g = str(uuid.uuid4()), str(uuid.uuid4())
        await publish(svc.infra, event(a, 1, "poison"), event(g, 1, "poison", tenant="globex"))
        (mine,) = await svc.dead_letters(1, "acme")
        (theirs,) = await svc.dead_letters(1, "globex")
        assert (mine["aggregate_id"], theirs["aggregate_id"]) == (a, g)

        rep = svc.infra.auth("acme", roles=["sales_manager"])
        for method, path in [
            ("GET", PREFIX),
            ("GET", f"{PREFIX}/{mine['id']}"),
            ("POST", f"{PREFIX}/{mine['id']}/replay"),
            ("DELETE", f"{PREFIX}/{mine['id']}"),
        ]:
            r = await svc.client.request(method, path, headers=rep)
            assert r.status_code == 403, (method, path)
        r = await svc.client.get(PREFIX)
        assert r.status_code == 401

        acme = svc.infra.auth("acme")
        for method, path in [
            ("GET", f"{PREFIX}/{theirs['id']}"),
            ("POST", f"{PREFIX}/{theirs['id']}/replay"),
            ("DELETE", f"{PREFIX}/{theirs['id']}"),
        ]:
            r = await svc.client.request(method, path, headers=acme)
            assert r.status_code == 404, (method, path)
        assert [i["id"] for i in await svc.listed("globex")] == [theirs["id"]]

    async def test_filter_by_consumer_and_keyset_pages(self, svc: Service) -> None:
        widgets = [str(uuid.uuid4()) for _ in range(3)]
        await publish(svc.infra, *(event(w, 1, "poison") for w in widgets))
        await svc.dead_letters(3)
        assert await svc.listed(consumer="dltest-other") == []
        seen: list[int] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2, "consumer": "dltest-ledger"}
            if cursor:
                params["cursor"] = cursor
            r = await svc.client.get(PREFIX, params=params, headers=svc.infra.auth())
            body = r.json()
            seen += [i["id"] for i in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == 3
        assert seen == sorted(seen)
        r = await svc.client.get(PREFIX, params={"cursor": "bm9wZQ"}, headers=svc.infra.auth())
        assert r.status_code == 422
