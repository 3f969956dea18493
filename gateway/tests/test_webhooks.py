"""Partner webhooks end to end: events published on NATS are logged by the gateway and
delivered, signed, to a receiver on a real local port."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
import json
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import nats
import pytest
import uvicorn
from google.protobuf.message import Message
from httpx import ASGITransport, AsyncClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chassis.db import asyncpg_dsn
from chassis.events import OutgoingEvent
from chassis.infra import free_port
from chassis.testing import Infra, running, wait_for
from crm.common.v1.common_pb2 import EventMeta
from crm.contacts.v1 import contacts_pb2
from crm.customers.v1.customers_pb2 import WebhookSubscriptionDisabled
from crm.pipeline.v1 import pipeline_pb2
from crm.registry import ce_type_for
from gateway.app import build
from gateway.settings import GatewaySettings
from gateway.webhooks import signing, ssrf
from gateway.webhooks.dispatcher import DISABLED, Dispatcher

# --- a partner's receiver ------------------------------------------------------------------


def standard_webhooks_valid(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The partner's check, written from the Standard Webhooks spec (not the gateway's code):
    any `v1,` signature of HMAC-SHA256(base64-decoded secret, id.timestamp.body)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for sig in headers["webhook-signature"].split():
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    event: dict[str, Any]
    status: int
    verified: bool


@dataclass
class Receiver:
    url: str = ""
    secrets: list[str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    # (event) -> status to answer; default 200
    answer: Callable[[dict[str, Any]], int] = lambda _event: 200
    reply_body: bytes = b"ok"
    delay: float = 0.0

    def delivered(self) -> list[dict[str, Any]]:
        return [r.event for r in self.received if r.status == 200]

    def of(self, subject: str) -> list[Received]:
        return [r for r in self.received if r.event["subject"] == subject]


def receiver_app(rx: Receiver) -> Starlette:
    async def hook(request: Request) -> Response:
        body = await request.body()
        if rx.delay:
            await asyncio.sleep(rx.delay)
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified = bool(rx.secrets) and any(
            standard_webhooks_valid(s, headers, body) for s in rx.secrets
        )
        event = json.loads(body)
        status = rx.answer(event) if verified else 401
        rx.received.append(Received(headers, body, event, status, verified))
        return Response(rx.reply_body, status_code=status)

    return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            receiver_app(rx), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
    )
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    await wait_for(started, message="receiver listening")
    rx.url = f"http://127.0.0.1:{port}/hook"
    yield rx
    server.should_exit = True
    await task


# --- events and the gateway ------------------------------------------------------------------


class Publisher:
    def __init__(self, nc: Any) -> None:
        self.js = nc.jetstream()
        self.versions: dict[str, int] = defaultdict(int)

    async def emit(self, tenant: str, cls: type[Message], aggregate_id: str, **fields: Any) -> Any:
        self.versions[aggregate_id] += 1
        version = self.versions[aggregate_id]
        msg = cls(meta=EventMeta(tenant_id=tenant, aggregate_id=aggregate_id, version=version))
        for k, v in fields.items():
            getattr(msg, k).CopyFrom(v)
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

    async def deal(self, deal_id: str, tenant: str = "acme", name: str = "Deal") -> Any:
        cls = pipeline_pb2.DealCreated if self.versions[deal_id] == 0 else pipeline_pb2.DealUpdated
        return await self.emit(tenant, cls, deal_id, deal=pipeline_pb2.Deal(id=deal_id, name=name))

    async def contact(self, contact_id: str, tenant: str = "acme") -> Any:
        return await self.emit(
            tenant,
            contacts_pb2.ContactCreated,
            contact_id,
            contact=contacts_pb2.Contact(id=contact_id, first_name="Ada"),
        )


@pytest.fixture
async def publisher(crm_infra: Infra) -> AsyncIterator[Publisher]:
    nc = await nats.connect(crm_infra.nats_url)
    try:
        yield Publisher(nc)
    finally:
        await nc.close()


@dataclass
class Gateway:
    app: Any
    client: AsyncClient
    admin: dict[str, str]


@pytest.fixture
def start_gateway(
    crm_infra: Infra, db_url: str, upstream_url: str
) -> Callable[..., contextlib.AbstractAsyncContextManager[Gateway]]:
    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Gateway]:
        values: dict[str, Any] = {
            "upstreams": {"contacts": upstream_url},
            "gc_freeze_at_startup": False,
            "webhooks_allow_private_targets": True,
            "webhooks_retry_schedule": [0.2, 0.2, 0.2],
            "webhooks_retry_jitter": 0.0,
            "webhooks_poll_seconds": 0.2,
        }
        values.update(overrides)
        app = build(crm_infra.settings(GatewaySettings, "gateway", db_url, **values))
        async with running(app):
            transport = ASGITransport(app, raise_app_exceptions=False)
            async with AsyncClient(transport=transport, base_url="http://gw") as c:
                yield Gateway(app, c, crm_infra.auth(roles=["admin"]))

    return start


@pytest.fixture
async def gw(
    start_gateway: Callable[..., contextlib.AbstractAsyncContextManager[Gateway]],
) -> AsyncIterator[Gateway]:
    async with start_gateway() as g:
        yield g


async def subscribe(
    gw: Gateway, rx: Receiver, types: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    r = await gw.client.post(
        "/v1/webhooks",
        json={"url": rx.url, "event_types": types or ["crm.pipeline.deal.*"], **extra},
        headers=gw.admin,
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    rx.secrets = [body["secret"]]
    return body


async def deliveries(gw: Gateway, webhook_id: str, **params: Any) -> list[dict[str, Any]]:
    r = await gw.client.get(
        f"/v1/webhooks/{webhook_id}/deliveries", params=params, headers=gw.admin
    )
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def until(probe: Callable[[], Any], message: str, timeout: float = 15.0) -> Any:
    async def check() -> Any:
        return probe()

    return await wait_for(check, timeout=timeout, message=message)


# --- unit checks -----------------------------------------------------------------------------


def test_signature_matches_the_standard_webhooks_example() -> None:
    # the example of the Standard Webhooks specification
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    msg_id, ts, body = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
    assert (
        signing.sign(secret, msg_id, ts, body) == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )
    header = signing.signature_header([secret, signing.new_secret()], msg_id, ts, body)
    assert len(header.split()) == 2
    assert signing.verify(secret, msg_id, ts, body, header)
    assert not signing.verify(secret, msg_id, ts, body + b" ", header)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("ff02::1", False),
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ("64:ff9b::5db8:d822", True),  # NAT64 of 93.184.216.34
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert ssrf.is_public(ipaddress.ip_address(address)) is public


async def test_a_public_target_is_pinned_to_the_checked_address() -> None:
    target = await ssrf.check("https://93.184.216.34:8443/in?x=1", allow_private=False)
    assert target.pinned
    assert target.url == "https://93.184.216.34:8443/in?x=1"
    assert target.host_header == "93.184.216.34:8443"


# --- the API -----------------------------------------------------------------------------------


async def test_crud_secret_shown_once_and_concurrency(gw: Gateway, receiver: Receiver) -> None:
    created = await subscribe(gw, receiver, description="ERP")
    wid = created["id"]
    assert created["secret"].startswith("whsec_")
    assert created["active"] is True
    assert created["event_types"] == ["crm.pipeline.deal.*"]

    r = await gw.client.get(f"/v1/webhooks/{wid}", headers=gw.admin)
    assert r.status_code == 200
    assert "secret" not in r.json()
    etag = r.headers["etag"]
    listed = (await gw.client.get("/v1/webhooks", headers=gw.admin)).json()
    assert [w["id"] for w in listed["items"]] == [wid]
    assert "secret" not in listed["items"][0]

    patch = {"description": "ERP sync", "event_types": ["crm.pipeline.*"]}
    r = await gw.client.patch(f"/v1/webhooks/{wid}", json=patch, headers=gw.admin)
    assert r.status_code == 428
    r = await gw.client.patch(
        f"/v1/webhooks/{wid}", json=patch, headers={**gw.admin, "If-Match": '"99"'}
    )
    assert r.status_code == 412
    r = await gw.client.patch(
        f"/v1/webhooks/{wid}", json=patch, headers={**gw.admin, "If-Match": etag}
    )
    assert r.status_code == 200, r.text
    assert r.json()["description"] == "ERP sync"
    assert r.json()["event_types"] == ["crm.pipeline.*"]
    assert r.headers["etag"] != etag

    r = await gw.client.delete(
        f"/v1/webhooks/{wid}", headers={**gw.admin, "If-Match": r.headers["etag"]}
    )
    assert r.status_code == 204
    r = await gw.client.get(f"/v1/webhooks/{wid}", headers=gw.admin)
    assert r.status_code == 404


async def test_bad_input_is_422_and_changes_nothing(gw: Gateway) -> None:
    cases = [
        ({"url": "ftp://partner.example/x", "event_types": ["crm.*"]}, ["url"]),
        ({"url": "https://partner.example/x", "event_types": []}, ["event_types"]),
        ({"url": "https://partner.example/x", "event_types": ["crm.Pipeline"]}, ["event_types", 0]),
        ({"url": "https://93.184.216.34/x", "event_types": ["crm.*"], "extra": 1}, ["extra"]),
        ({"event_types": ["crm.*"]}, ["url"]),
    ]
    for body, path in cases:
        r = await gw.client.post("/v1/webhooks", json=body, headers=gw.admin)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["errors"][0]["path"] == path, r.text
    listed = (await gw.client.get("/v1/webhooks", headers=gw.admin)).json()
    assert listed["items"] == []


async def test_auth_tenants_and_roles(gw: Gateway, receiver: Receiver, crm_infra: Infra) -> None:
    created = await subscribe(gw, receiver)
    assert (await gw.client.get("/v1/webhooks")).status_code == 401
    for role in ("sales_manager", "erp_sync", "partner"):
        h = crm_infra.auth(roles=[role])
        assert (await gw.client.get("/v1/webhooks", headers=h)).status_code == 403
        r = await gw.client.post(
            "/v1/webhooks", json={"url": receiver.url, "event_types": ["crm.*"]}, headers=h
        )
        assert r.status_code == 403
    globex = crm_infra.auth(tenant="globex", roles=["admin"])
    assert (await gw.client.get(f"/v1/webhooks/{created['id']}", headers=globex)).status_code == 404
    assert (await gw.client.get("/v1/webhooks", headers=globex)).json()["items"] == []
    r = await gw.client.get(f"/v1/webhooks/{created['id']}/deliveries", headers=globex)
    assert r.status_code == 404


async def test_ssrf_refusals(
    start_gateway: Callable[..., contextlib.AbstractAsyncContextManager[Gateway]],
    receiver: Receiver,
    publisher: Publisher,
    db_url: str,
) -> None:
    async with start_gateway(webhooks_allow_private_targets=False) as gw:
        for url in [
            "http://127.0.0.1:9/hook",
            "http://10.0.0.5/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:8080/hook",
            "http://[::ffff:10.0.0.1]/hook",
            "http://localhost/hook",
            "https://0.0.0.0/",
            "file:///etc/passwd",
            "gopher://example.com/",
        ]:
            r = await gw.client.post(
                "/v1/webhooks", json={"url": url, "event_types": ["crm.*"]}, headers=gw.admin
            )
            assert r.status_code == 422, (url, r.text)
            assert r.json()["errors"][0]["path"] == ["url"]
        ok = await gw.client.post(
            "/v1/webhooks",
            json={"url": "https://93.184.216.34/hook", "event_types": ["crm.*"]},
            headers=gw.admin,
        )
        assert ok.status_code == 201

        # a subscription to a private target that got in anyway (allowed when it was made)
        # is refused again at send time: nothing reaches the receiver
        conn = await asyncpg.connect(asyncpg_dsn(db_url))
        wid = uuid.uuid4()
        try:
            await conn.execute(
                "UPDATE webhook_subscriptions SET active = false WHERE id = $1",
                uuid.UUID(ok.json()["id"]),
            )
            await conn.execute(
                "INSERT INTO webhook_subscriptions (id, tenant_id, url, event_types, type_likes, "
                "secret) VALUES ($1, 'acme', $2, '{crm.*}', '{crm.%}', $3)",
                wid,
                receiver.url,
                signing.new_secret(),
            )
        finally:
            await conn.close()
        await publisher.deal(str(uuid.uuid4()))

        async def refused() -> Any:
            items = await deliveries(gw, str(wid))
            return items if items and items[0]["attempts"] >= 1 else None

        items = await wait_for(refused, timeout=15, message="a refused attempt")
        assert items[0]["status"] == "pending"
        assert items[0]["error"].startswith("refused:")
        assert "127.0.0.1" in items[0]["error"]
        assert receiver.received == []


async def test_delivery_signed_cloudevent_in_order_per_aggregate(
    gw: Gateway, receiver: Receiver, publisher: Publisher
) -> None:
    sub = await subscribe(gw, receiver)
    a, b, contact = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    for i in range(4):
        await publisher.deal(a, name=f"A{i}")
        if i < 3:
            await publisher.deal(b, name=f"B{i}")
    await publisher.contact(contact)  # not subscribed
    await until(lambda: len(receiver.delivered()) >= 7, "7 deliveries")
    assert all(r.verified for r in receiver.received)
    assert [int(e["sequence"]) for e in receiver.delivered() if e["subject"] == a] == [1, 2, 3, 4]
    assert [int(e["sequence"]) for e in receiver.delivered() if e["subject"] == b] == [1, 2, 3]
    first = receiver.of(a)[0]
    ev = first.event
    assert first.headers["content-type"].startswith("application/cloudevents+json")
    assert first.headers["webhook-id"] == ev["id"]
    assert abs(int(first.headers["webhook-timestamp"]) - datetime.now(UTC).timestamp()) < 60
    assert ev["specversion"] == "1.0"
    assert ev["type"] == "crm.pipeline.deal.created.v1"
    assert ev["source"] == "crm/pipeline"
    assert ev["datacontenttype"] == "application/json"
    assert ev["tenant"] == "acme"
    assert ev["data"]["deal"] == {"id": a, "name": "A0"}
    assert ev["data"]["meta"]["version"] == "1"  # int64 as a string, the JSON mapping
    assert ev["time"].endswith("Z")

    async def recorded() -> Any:
        items = await deliveries(gw, sub["id"])
        return items if {i["status"] for i in items} == {"delivered"} else None

    items = await wait_for(recorded, timeout=10, message="attempts recorded")
    assert len(items) == 7
    assert all(i["attempts"] == 1 and i["response_code"] == 200 for i in items)
    assert all(i["latency_ms"] is not None and i["response_excerpt"] == "ok" for i in items)
    assert not any(i["type"].startswith("crm.contacts") for i in items)
    # keyset pagination, newest first
    page = await gw.client.get(
        f"/v1/webhooks/{sub['id']}/deliveries", params={"limit": 4}, headers=gw.admin
    )
    body = page.json()
    assert len(body["items"]) == 4
    rest = await deliveries(gw, sub["id"], cursor=body["next_cursor"])
    ids = [int(i["id"]) for i in body["items"] + rest]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == 7


async def test_retry_after_500_blocks_only_its_aggregate(
    gw: Gateway, receiver: Receiver, publisher: Publisher
) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    failures: dict[str, int] = defaultdict(int)

    def answer(event: dict[str, Any]) -> int:
        if event["subject"] == a and event["sequence"] == "1" and failures[a] < 2:
            failures[a] += 1
            return 500
        return 200

    receiver.answer = answer
    sub = await subscribe(gw, receiver)
    await publisher.deal(a)
    await publisher.deal(a)
    await publisher.deal(b)
    await until(lambda: len(receiver.delivered()) >= 3, "3 deliveries")
    order = [(r.event["subject"], r.event["sequence"], r.status) for r in receiver.received]
    # a's first event: 500, 500, then 200; its second only after that; b not held back
    assert [o for o in order if o[0] == a] == [
        (a, "1", 500),
        (a, "1", 500),
        (a, "1", 200),
        (a, "2", 200),
    ]
    assert order.index((b, "1", 200)) < order.index((a, "1", 200))
    ids = {r.headers["webhook-id"] for r in receiver.of(a) if r.event["sequence"] == "1"}
    assert len(ids) == 1  # the same message id on every attempt

    async def recorded() -> Any:
        items = {(i["type"], i["aggregate"]): i for i in await deliveries(gw, sub["id"])}
        first = items[("crm.pipeline.deal.created.v1", f"pipeline.deal:{a}")]
        return first if first["status"] == "delivered" else None

    first = await wait_for(recorded, timeout=10, message="attempts recorded")
    assert first["attempts"] == 3
    assert first["response_code"] == 200


async def test_disabled_when_the_schedule_is_exhausted(
    start_gateway: Callable[..., contextlib.AbstractAsyncContextManager[Gateway]],
    receiver: Receiver,
    publisher: Publisher,
    db_url: str,
) -> None:
    receiver.answer = lambda _e: 503
    receiver.reply_body = b"x" * 4000
    async with start_gateway(webhooks_retry_schedule=[0.05, 0.05]) as gw:
        sub = await subscribe(gw, receiver)
        deal = str(uuid.uuid4())
        await publisher.deal(deal)
        await publisher.deal(deal)

        async def disabled() -> Any:
            r = await gw.client.get(f"/v1/webhooks/{sub['id']}", headers=gw.admin)
            return r.json() if not r.json()["active"] else None

        state = await wait_for(disabled, timeout=15, message="subscription disabled")
        assert state["disabled_at"] is not None
        assert "failed 3 times" in state["disabled_reason"]
        # and an event says so, once, with the subscription's new version
        conn = await asyncpg.connect(asyncpg_dsn(db_url))
        try:
            rows = await conn.fetch(
                "SELECT payload FROM outbox WHERE headers->>'ce-type' = $1", DISABLED
            )
        finally:
            await conn.close()
        assert len(rows) == 1
        event = WebhookSubscriptionDisabled.FromString(rows[0]["payload"])
        assert event.subscription_id == sub["id"]
        assert event.meta.version == state["version"]
        assert event.url == sub["url"]
        assert "failed 3 times" in event.reason
        items = await deliveries(gw, sub["id"])
        by_seq = sorted(items, key=lambda i: int(i["id"]))
        assert by_seq[0]["status"] == "failed"
        assert by_seq[0]["attempts"] == 3
        assert by_seq[0]["response_code"] == 503
        assert len(by_seq[0]["response_excerpt"]) == 1024
        # the second event of the aggregate never went out: it waits behind the failed one
        assert by_seq[1]["status"] == "pending"
        assert by_seq[1]["attempts"] == 0
        assert len(receiver.received) == 3
        assert {r.event["sequence"] for r in receiver.received} == {"1"}

        # re-enabled, the waiting delivery goes out
        receiver.answer = lambda _e: 200
        r = await gw.client.get(f"/v1/webhooks/{sub['id']}", headers=gw.admin)
        r = await gw.client.patch(
            f"/v1/webhooks/{sub['id']}",
            json={"active": True},
            headers={**gw.admin, "If-Match": r.headers["etag"]},
        )
        assert r.status_code == 200
        assert r.json()["disabled_reason"] is None
        await until(lambda: len(receiver.delivered()) == 1, "the held delivery")
        assert receiver.delivered()[0]["sequence"] == "2"


async def test_replay_from_the_event_log(
    gw: Gateway, receiver: Receiver, publisher: Publisher
) -> None:
    sub = await subscribe(gw, receiver, types=["crm.pipeline.*"])
    deal = str(uuid.uuid4())
    before = datetime.now(UTC) - timedelta(minutes=1)
    for _ in range(3):
        await publisher.deal(deal)
    await until(lambda: len(receiver.delivered()) == 3, "3 deliveries")
    first_ids = [r.headers["webhook-id"] for r in receiver.received]

    after = datetime.now(UTC) + timedelta(minutes=1)
    r = await gw.client.post(
        f"/v1/webhooks/{sub['id']}/replay",
        json={"from": before.isoformat(), "to": after.isoformat()},
        headers=gw.admin,
    )
    assert r.status_code == 202, r.text
    assert r.json() == {"scheduled": 3}
    await until(lambda: len(receiver.delivered()) == 6, "3 replayed deliveries")
    replayed = receiver.received[3:]
    assert [x.headers["webhook-id"] for x in replayed] == first_ids
    assert [x.event["sequence"] for x in replayed] == ["1", "2", "3"]
    assert all(x.verified for x in replayed)
    items = await deliveries(gw, sub["id"])
    assert sum(1 for i in items if i["replay"]) == 3

    # only some types
    r = await gw.client.post(
        f"/v1/webhooks/{sub['id']}/replay",
        json={
            "from": before.isoformat(),
            "to": after.isoformat(),
            "event_types": ["crm.pipeline.deal.created.v1"],
        },
        headers=gw.admin,
    )
    assert r.json() == {"scheduled": 1}
    await until(lambda: len(receiver.delivered()) == 7, "1 replayed delivery")
    assert receiver.received[-1].event["type"] == "crm.pipeline.deal.created.v1"

    # an empty or reversed range
    r = await gw.client.post(
        f"/v1/webhooks/{sub['id']}/replay",
        json={"from": after.isoformat(), "to": before.isoformat()},
        headers=gw.admin,
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["path"] == ["to"]
    r = await gw.client.post(
        f"/v1/webhooks/{sub['id']}/replay",
        json={"from": "2020-01-01T00:00:00", "to": after.isoformat()},
        headers=gw.admin,
    )
    assert r.status_code == 422  # no time zone
    assert len(await deliveries(gw, sub["id"])) == 7


async def test_secret_rotation_overlap(
    gw: Gateway, receiver: Receiver, publisher: Publisher
) -> None:
    sub = await subscribe(gw, receiver)
    old = sub["secret"]
    r = await gw.client.post(
        f"/v1/webhooks/{sub['id']}/rotate-secret", json={"overlap_seconds": 3600}, headers=gw.admin
    )
    assert r.status_code == 200, r.text
    new = r.json()["secret"]
    assert new != old
    assert r.json()["previous_secret_expires_at"] is not None

    receiver.secrets = [old, new]
    deal = str(uuid.uuid4())
    await publisher.deal(deal)
    await until(lambda: len(receiver.delivered()) == 1, "a delivery during the overlap")
    got = receiver.received[0]
    assert len(got.headers["webhook-signature"].split()) == 2
    assert standard_webhooks_valid(old, got.headers, got.body)
    assert standard_webhooks_valid(new, got.headers, got.body)

    # rotating again without overlap: only the newest secret signs
    r = await gw.client.post(
        f"/v1/webhooks/{sub['id']}/rotate-secret", json={"overlap_seconds": 0}, headers=gw.admin
    )
    newest = r.json()["secret"]
    assert r.json()["previous_secret_expires_at"] is None
    receiver.secrets = [old, new, newest]
    await publisher.deal(deal)
    await until(lambda: len(receiver.delivered()) == 2, "a delivery after the overlap")
    got = receiver.received[-1]
    assert len(got.headers["webhook-signature"].split()) == 1
    assert standard_webhooks_valid(newest, got.headers, got.body)
    assert not standard_webhooks_valid(new, got.headers, got.body)
    assert not standard_webhooks_valid(old, got.headers, got.body)


async def test_two_dispatchers_share_the_work_without_duplicates_or_reordering(
    start_gateway: Callable[..., contextlib.AbstractAsyncContextManager[Gateway]],
    receiver: Receiver,
    publisher: Publisher,
) -> None:
    """A second replica's sending loop on the same database: every delivery goes out once,
    each aggregate in order. One queue and one delivery per claim and a slow receiver, so the
    two loops take turns."""
    receiver.delay = 0.02
    async with start_gateway(webhooks_batch_size=1, webhooks_burst=1) as gw:
        second = Dispatcher(gw.app.state.db, gw.app.state.settings)
        await second.start()
        try:
            sub = await subscribe(gw, receiver)
            deals = [str(uuid.uuid4()) for _ in range(8)]
            for _ in range(5):
                for d in deals:
                    await publisher.deal(d)
            await until(lambda: len(receiver.delivered()) >= 40, "40 deliveries", timeout=30)

            async def recorded() -> Any:
                items = await deliveries(gw, sub["id"], limit=200)
                return items if {i["status"] for i in items} == {"delivered"} else None

            items = await wait_for(recorded, timeout=10, message="attempts recorded")
        finally:
            await second.stop()
        assert gw.app.state.webhooks.scheduler.fired_total > 0
        assert second.scheduler.fired_total > 0
    assert len(items) == 40
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert len(ids) == len(set(ids)) == 40
    for d in deals:
        assert [e["sequence"] for e in receiver.delivered() if e["subject"] == d] == [
            "1",
            "2",
            "3",
            "4",
            "5",
        ]


async def test_a_slow_receiver_times_out_and_is_retried(
    start_gateway: Callable[..., contextlib.AbstractAsyncContextManager[Gateway]],
    receiver: Receiver,
    publisher: Publisher,
) -> None:
    receiver.delay = 1.5
    async with start_gateway(webhooks_timeout=0.3, webhooks_connect_timeout=0.3) as gw:
        sub = await subscribe(gw, receiver)
        await publisher.deal(str(uuid.uuid4()))

        async def timed_out() -> Any:
            items = await deliveries(gw, sub["id"])
            return items if items and items[0]["attempts"] >= 1 else None

        first = (await wait_for(timed_out, timeout=10, message="a timed-out attempt"))[0]
        assert first["status"] == "pending"
        assert "Timeout" in first["error"]
        assert first["response_code"] is None
        assert first["latency_ms"] < 1500

        receiver.delay = 0.0

        async def delivered() -> Any:
            items = await deliveries(gw, sub["id"])
            return items[0] if items[0]["status"] == "delivered" else None

        done = await wait_for(delivered, timeout=10, message="delivered after the timeout")
        assert done["attempts"] >= 2
        assert done["response_code"] == 200
