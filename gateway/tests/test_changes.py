"""The event log and the ERP change feed: GET /v1/changes against real PostgreSQL and NATS."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import nats
import pytest
from fastapi import FastAPI
from google.protobuf.message import Message
from httpx import ASGITransport, AsyncClient

from chassis.db import asyncpg_dsn
from chassis.events import OutgoingEvent
from chassis.testing import Infra, running, wait_for
from crm.common.v1.common_pb2 import EventMeta
from crm.contacts.v1 import contacts_pb2
from crm.pipeline.v1 import pipeline_pb2
from crm.registry import EVENT_TYPES, ce_type_for
from gateway.app import build
from gateway.feed import log as feed_log
from gateway.feed import patterns
from gateway.settings import GatewaySettings


class Publisher:
    """Publishes events of any registered type the way the services do (binary CloudEvents,
    protobuf body), numbering versions per aggregate."""

    def __init__(self, nc: Any) -> None:
        self.js = nc.jetstream()
        self.versions: dict[str, int] = defaultdict(int)

    async def emit(self, tenant: str, cls: type[Message], aggregate_id: str, **fields: Any) -> Any:
        self.versions[aggregate_id] += 1
        version = self.versions[aggregate_id]
        meta = EventMeta(tenant_id=tenant, aggregate_id=aggregate_id, version=version)
        msg = cls(meta=meta, **fields)
        ce_type = ce_type_for(msg)
        ev = OutgoingEvent(
            message=msg,
            ce_type=ce_type,
            tenant=tenant,
            aggregate_id=aggregate_id,
            version=version,
            source=f"crm/{ce_type.split('.')[1]}",
        )
        await self.js.publish(ev.subject, msg.SerializeToString(), headers=ev.headers())
        return ev

    async def deal(self, tenant: str, deal_id: str, name: str = "Deal") -> Any:
        cls = pipeline_pb2.DealCreated if self.versions[deal_id] == 0 else pipeline_pb2.DealUpdated
        return await self.emit(
            tenant, cls, deal_id, deal=pipeline_pb2.Deal(id=deal_id, name=name, status="open")
        )

    async def contact(self, tenant: str, contact_id: str, first_name: str = "Ada") -> Any:
        cls = (
            contacts_pb2.ContactCreated
            if self.versions[contact_id] == 0
            else contacts_pb2.ContactUpdated
        )
        return await self.emit(
            tenant,
            cls,
            contact_id,
            contact=contacts_pb2.Contact(id=contact_id, first_name=first_name),
        )


@pytest.fixture
async def publisher(crm_infra: Infra) -> AsyncIterator[Publisher]:
    nc = await nats.connect(crm_infra.nats_url)
    try:
        yield Publisher(nc)
    finally:
        await nc.close()


@pytest.fixture
async def feed(
    crm_infra: Infra, db_url: str, upstream_url: str
) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
    settings = crm_infra.settings(
        GatewaySettings,
        "gateway",
        db_url,
        upstreams={"contacts": upstream_url},
        gc_freeze_at_startup=False,
    )
    app = build(settings)
    async with running(app):
        transport = ASGITransport(app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://gw") as c:
            yield app, c


def erp(crm_infra: Infra, tenant: str = "acme") -> dict[str, str]:
    return crm_infra.auth(tenant=tenant, roles=["erp_sync"], sub="sap-sync")


async def changes(client: AsyncClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    r = await client.get("/v1/changes", params=params, headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def wait_changes(
    client: AsyncClient, headers: dict[str, str], count: int, **params: Any
) -> dict[str, Any]:
    async def probe() -> Any:
        body = await changes(client, headers, **params)
        return body if len(body["items"]) >= count else None

    return await wait_for(probe, timeout=15, message=f"{count} changes")


def test_consumers_cover_every_registered_type() -> None:
    covered = {t for c in feed_log.CONSUMERS for t in c.batch_handlers}
    assert covered == set(EVENT_TYPES)
    contexts = {t.split(".")[1] for t in EVENT_TYPES}
    assert {c.context for c in feed_log.CONSUMERS} == contexts
    # every aggregate of the stream: the filter never needs to change for a new aggregate
    assert all(c.filter_subjects == [f"crm.{c.context}.*.*.>"] for c in feed_log.CONSUMERS)


def test_patterns() -> None:
    assert patterns.matches("crm.pipeline.deal.*", "crm.pipeline.deal.stage_changed.v1")
    assert not patterns.matches("crm.pipeline.deal.*", "crm.pipeline.dealer.created.v1")
    assert patterns.matches("*.created.v1", "crm.contacts.contact.created.v1")
    # `_` is literal in the LIKE form, `*` is the only wildcard
    assert patterns.like("crm.tickets.sla_policy.*") == "crm.tickets.sla\\_policy.%"


async def test_feed_resumes_exactly_after_a_cursor(
    feed: tuple[FastAPI, AsyncClient], crm_infra: Infra, publisher: Publisher
) -> None:
    _, client = feed
    h = erp(crm_infra)
    contact, deal = str(uuid.uuid4()), str(uuid.uuid4())
    for i in range(4):
        await publisher.contact("acme", contact, first_name=f"Ada{i}")
        await publisher.deal("acme", deal, name=f"Deal {i}")
    everything = await wait_changes(client, h, 8, limit=100)
    items = everything["items"]
    assert len(items) == 8
    assert everything["has_more"] is False
    for subject in (contact, deal):
        versions = [i["sequence"] for i in items if i["subject"] == subject]
        assert versions == [1, 2, 3, 4]
    first = next(i for i in items if i["subject"] == deal)
    assert first["type"] == "crm.pipeline.deal.created.v1"
    assert first["aggregate"] == "pipeline.deal"
    assert first["source"] == "crm/pipeline"
    assert first["data"]["deal"] == {"id": deal, "name": "Deal 0", "status": "open"}
    assert first["data"]["meta"]["tenant_id"] == "acme"

    # page by page with limit=3: the same changes, none twice, none skipped
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["after"] = cursor
        page = await changes(client, h, **params)
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        assert cursor
        if not page["has_more"]:
            break
    assert seen == [i["id"] for i in items]

    # resume from the middle with an item's own cursor
    middle = await changes(client, h, after=items[4]["cursor"])
    assert [i["id"] for i in middle["items"]] == [i["id"] for i in items[5:]]

    # an idle poll returns nothing and a cursor that still resumes exactly
    idle = await changes(client, h, after=cursor)
    assert idle["items"] == []
    assert idle["next_cursor"]
    await publisher.deal("acme", deal, name="Deal 4")
    await publisher.contact("acme", contact, first_name="Ada4")
    fresh = await wait_changes(client, h, 2, after=idle["next_cursor"])
    # two streams, two consumers: no order between them, exactly the two new changes
    assert sorted((i["subject"], i["sequence"]) for i in fresh["items"]) == sorted(
        [(deal, 5), (contact, 5)]
    )


async def test_types_filter_and_bad_input(
    feed: tuple[FastAPI, AsyncClient], crm_infra: Infra, publisher: Publisher
) -> None:
    _, client = feed
    h = erp(crm_infra)
    contact, deal = str(uuid.uuid4()), str(uuid.uuid4())
    await publisher.contact("acme", contact)
    await publisher.deal("acme", deal)
    await publisher.deal("acme", deal)
    await wait_changes(client, h, 3)
    deals = await changes(client, h, types="crm.pipeline.deal.*")
    assert [i["type"] for i in deals["items"]] == [
        "crm.pipeline.deal.created.v1",
        "crm.pipeline.deal.updated.v1",
    ]
    both = await changes(client, h, types="crm.contacts.*.created.v1,crm.pipeline.deal.updated.v1")
    assert {i["type"] for i in both["items"]} == {
        "crm.contacts.contact.created.v1",
        "crm.pipeline.deal.updated.v1",
    }
    none = await changes(client, h, types="crm.tickets.*")
    assert none["items"] == []

    for params, path in [
        ({"types": "crm.pipeline.DEAL;drop"}, ["types"]),
        ({"limit": "0"}, ["query", "limit"]),
        ({"limit": "5000"}, ["limit"]),
        ({"after": "not-a-cursor"}, ["after"]),
    ]:
        r = await client.get("/v1/changes", params=params, headers=h)
        assert r.status_code == 422, (params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["errors"][0]["path"] == path


async def test_tenant_isolation_and_access(
    feed: tuple[FastAPI, AsyncClient], crm_infra: Infra, publisher: Publisher
) -> None:
    _, client = feed
    ours, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    await publisher.deal("acme", ours)
    await publisher.deal("globex", theirs)
    await publisher.deal("globex", theirs)
    acme = await wait_changes(client, erp(crm_infra, "acme"), 1)
    globex = await wait_changes(client, erp(crm_infra, "globex"), 2)
    # give the log time to hold everything, then look again
    await wait_changes(client, erp(crm_infra, "globex"), 2)
    acme = await changes(client, erp(crm_infra, "acme"))
    assert [i["subject"] for i in acme["items"]] == [ours]
    assert {i["subject"] for i in globex["items"]} == {theirs}
    # a cursor of another tenant reveals nothing either
    cross = await changes(client, erp(crm_infra, "acme"), after=globex["items"][0]["cursor"])
    assert all(i["subject"] != theirs for i in cross["items"])

    r = await client.get("/v1/changes")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    r = await client.get("/v1/changes", headers=crm_infra.auth(roles=["sales_rep"]))
    assert r.status_code == 403
    r = await client.get("/v1/changes", headers=crm_infra.auth(roles=["admin"]))
    assert r.status_code == 200


async def test_expired_cursor_is_410_with_the_earliest_valid_one(
    feed: tuple[FastAPI, AsyncClient], crm_infra: Infra, publisher: Publisher, db_url: str
) -> None:
    app, client = feed
    h = erp(crm_infra)
    deal = str(uuid.uuid4())
    for _ in range(5):
        await publisher.deal("acme", deal)
    items = (await wait_changes(client, h, 5))["items"]
    old_cursor = items[0]["cursor"]

    # the first three are older than the retention (30 days by default)
    conn = await asyncpg.connect(asyncpg_dsn(db_url))
    try:
        await conn.execute(
            "UPDATE event_log SET logged_at = now() - interval '40 days' "
            "WHERE event_id = ANY($1::uuid[])",
            [i["id"] for i in items[:3]],
        )
    finally:
        await conn.close()
    assert await app.state.event_log_pruner.run_once() == 3

    r = await client.get("/v1/changes", params={"after": old_cursor}, headers=h)
    assert r.status_code == 410, r.text
    problem = r.json()
    assert r.headers["content-type"].startswith("application/problem+json")
    earliest = problem["earliest_cursor"]
    assert earliest == items[2]["cursor"]
    rest = await changes(client, h, after=earliest)
    assert [i["id"] for i in rest["items"]] == [i["id"] for i in items[3:]]
    # without a cursor the feed starts at the earliest retained change
    start = await changes(client, h)
    assert [i["id"] for i in start["items"]] == [i["id"] for i in items[3:]]
    # a cursor after the horizon is still valid
    assert (await changes(client, h, after=items[3]["cursor"]))["items"][0]["id"] == items[4]["id"]


_INSERT = (
    "INSERT INTO event_log (tenant_id, event_id, ce_type, source, aggregate, aggregate_id, "
    "version, time, data) VALUES ('acme', $1, 'crm.pipeline.deal.created.v1', 'crm/pipeline', "
    "'pipeline.deal', $2, 1, now(), '{}'::jsonb) RETURNING position"
)


async def test_a_late_commit_is_never_skipped(
    feed: tuple[FastAPI, AsyncClient], crm_infra: Infra, db_url: str
) -> None:
    """Positions are taken at insert time, rows appear at commit time: a transaction holding a
    smaller position that commits after a larger one must still reach a reader that has
    already polled past the larger one."""
    _, client = feed
    h = erp(crm_infra)
    a = await asyncpg.connect(asyncpg_dsn(db_url))
    b = await asyncpg.connect(asyncpg_dsn(db_url))
    try:
        # B gets its transaction id first, A takes the smaller position, B the larger one.
        tb = b.transaction()
        await tb.start()
        await b.fetchval("SELECT pg_current_xact_id()")
        ta = a.transaction()
        await ta.start()
        late, early = str(uuid.uuid4()), str(uuid.uuid4())
        pos_late = await a.fetchval(_INSERT, uuid.UUID(late), str(uuid.uuid4()))
        pos_early = await b.fetchval(_INSERT, uuid.UUID(early), str(uuid.uuid4()))
        assert pos_late < pos_early
        await tb.commit()  # the larger position is visible, the smaller one is not yet

        first = await changes(client, h)
        assert [i["id"] for i in first["items"]] == [early]
        cursor = first["next_cursor"]

        # Second case: A (still open, smaller position) vs C committing a larger position
        # with a larger transaction id: C is held back while A runs.
        c_id = str(uuid.uuid4())
        await b.fetchval(_INSERT, uuid.UUID(c_id), str(uuid.uuid4()))
        held = await changes(client, h, after=cursor)
        assert held["items"] == []
        cursor = held["next_cursor"]

        await ta.commit()
        after = await changes(client, h, after=cursor)
        assert [i["id"] for i in after["items"]] == [late, c_id]
        # and a reader from the start sees each once, in feed order
        assert [i["id"] for i in (await changes(client, h))["items"]] == [early, late, c_id]
    finally:
        await a.close()
        await b.close()
