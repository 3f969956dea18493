# ruff: noqa: E402  (the real `gateway` package must be restored before the imports below)
"""Fixtures: the gateway against the real PostgreSQL and NATS of the chassis plugin, a small
upstream service on a real local port, and a publisher of contacts events."""

from __future__ import annotations

import sys


def _unshadow_gateway_package() -> None:
    """pytest's importlib mode imports this file as `gateway.tests.conftest`, and to do so
    first registers the repository directory `gateway/` as a namespace package `gateway`,
    hiding the real package (gateway/src/gateway). Put the real one back."""
    shadow = sys.modules.get("gateway")
    if shadow is not None and getattr(shadow, "__file__", None) is None:
        del sys.modules["gateway"]
        import gateway

        gateway.tests = sys.modules.get("gateway.tests")  # type: ignore[attr-defined]


_unshadow_gateway_package()

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import nats
import pytest
import uvicorn
from fastapi import FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from google.protobuf.timestamp_pb2 import Timestamp
from httpx import ASGITransport, AsyncClient
from pydantic import BaseModel

from chassis.events import OutgoingEvent
from chassis.infra import free_port
from chassis.testing import Infra, running, wait_for
from crm.common.v1.common_pb2 import EventMeta, Money
from crm.contacts.v1 import contacts_pb2 as pb
from crm.registry import ce_type_for
from gateway.app import MIGRATIONS, build
from gateway.settings import GatewaySettings

# --- a stand-in for an upstream service --------------------------------------------------


class TimelineEntry(BaseModel):
    """Clashes on purpose with the gateway's own TimelineEntry schema."""

    something_else: int


class ContactIn(BaseModel):
    first_name: str


def upstream_app() -> FastAPI:
    app = FastAPI(title="contacts-stub")

    def echo(request: Request, body: bytes) -> dict[str, Any]:
        return {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": dict(request.headers),
            "body": body.decode(),
            "peer_port": request.client.port if request.client else None,
        }

    @app.post("/v1/contacts", status_code=201)
    async def create(request: Request, body: ContactIn) -> JSONResponse:
        raw = await request.body()
        return JSONResponse(
            echo(request, raw),
            status_code=201,
            headers={"ETag": '"1"', "Location": "/v1/contacts/c-1", "Set-Cookie": "session=secret"},
        )

    @app.patch("/v1/contacts/{cid}")
    async def patch(
        cid: str, request: Request, if_match: Annotated[str | None, Header()] = None
    ) -> Response:
        if if_match != '"1"':
            return JSONResponse(
                {
                    "type": "about:blank",
                    "title": "Precondition failed",
                    "status": 412,
                    "current_etag": '"1"',
                },
                status_code=412,
                media_type="application/problem+json",
            )
        return JSONResponse(echo(request, await request.body()), headers={"ETag": '"2"'})

    @app.get("/v1/companies/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(3)
        return {"late": "yes"}

    @app.get("/v1/companies/big")
    async def big() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(64):
                yield bytes([65 + i % 26]) * 16384

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    @app.get("/v1/companies/entries", response_model=list[TimelineEntry])
    async def entries() -> list[TimelineEntry]:
        return []

    @app.get("/internal/debug")
    async def internal() -> dict[str, str]:
        return {"internal": "yes"}

    @app.api_route(
        "/v1/{rest:path}",
        methods=["GET", "HEAD", "PUT", "DELETE", "POST", "PATCH"],
        include_in_schema=False,
    )
    async def anything(rest: str, request: Request) -> JSONResponse:
        return JSONResponse(
            echo(request, await request.body()),
            headers={"Idempotent-Replayed": "true", "X-Upstream": "yes"},
        )

    return app


@pytest.fixture(scope="session")
async def upstream_url() -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            upstream_app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
    )
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    await wait_for(started, message="upstream stub listening")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


# --- the gateway ---------------------------------------------------------------------------


@pytest.fixture
async def db_url(crm_infra: Infra, clean_streams: None) -> str:
    return await crm_infra.database("crm_gateway", MIGRATIONS, "alembic_version_gateway")


GatewayFactory = Callable[..., contextlib.AbstractAsyncContextManager[AsyncClient]]


@pytest.fixture
def gateway(crm_infra: Infra, db_url: str, upstream_url: str) -> GatewayFactory:
    """`async with gateway(**settings) as client`: a running gateway app."""

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[AsyncClient]:
        overrides.setdefault("upstreams", {"contacts": upstream_url})
        overrides.setdefault("gc_freeze_at_startup", False)
        settings = crm_infra.settings(GatewaySettings, "gateway", db_url, **overrides)
        app = build(settings)
        async with running(app):
            transport = ASGITransport(app, raise_app_exceptions=False)
            async with AsyncClient(transport=transport, base_url="http://gw") as c:
                yield c

    return start


@pytest.fixture
async def client(gateway: GatewayFactory) -> AsyncIterator[AsyncClient]:
    async with gateway() as c:
        yield c


# --- contacts events -----------------------------------------------------------------------


def _ts(t: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(t)
    return ts


class ContactsEvents:
    """Builds contacts events the way the contacts service publishes them, and publishes
    them to JetStream."""

    T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)

    def __init__(self, nc: Any) -> None:
        self.js = nc.jetstream()
        self.clock = 0

    def _meta(
        self, tenant: str, aggregate_id: str, version: int, changed: list[str] | None = None
    ) -> EventMeta:
        self.clock += 1
        return EventMeta(
            tenant_id=tenant,
            aggregate_id=aggregate_id,
            version=version,
            actor="user-1",
            origin="web",
            occurred_at=_ts(self.T0 + timedelta(seconds=self.clock)),
            changed_fields=changed or [],
        )

    @staticmethod
    def contact(cid: str, version: int, **fields: Any) -> pb.Contact:
        values: dict[str, Any] = {
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email": "ada@example.com",
        }
        values.update(fields)
        return pb.Contact(id=cid, version=version, **values)

    @staticmethod
    def company(cid: str, version: int, **fields: Any) -> pb.Company:
        values: dict[str, Any] = {
            "name": "Analytical Engines",
            "domain": "engines.example",
            "annual_revenue": Money(amount="1000000.00", currency="EUR"),
        }
        values.update(fields)
        return pb.Company(id=cid, version=version, **values)

    def contact_created(
        self, tenant: str, cid: str, version: int = 1, **fields: Any
    ) -> OutgoingEvent:
        msg = pb.ContactCreated(
            meta=self._meta(tenant, cid, version), contact=self.contact(cid, version, **fields)
        )
        return self.wrap(msg, tenant, cid, version)

    def contact_updated(
        self, tenant: str, cid: str, version: int, changed: list[str], **fields: Any
    ) -> OutgoingEvent:
        msg = pb.ContactUpdated(
            meta=self._meta(tenant, cid, version, changed),
            contact=self.contact(cid, version, **fields),
        )
        return self.wrap(msg, tenant, cid, version)

    def contact_merged(
        self, tenant: str, survivor: str, version: int, losers: list[str], **fields: Any
    ) -> OutgoingEvent:
        msg = pb.ContactMerged(
            meta=self._meta(tenant, survivor, version),
            survivor_id=survivor,
            merged_ids=losers,
            survivor=self.contact(survivor, version, **fields),
        )
        return self.wrap(msg, tenant, survivor, version)

    def contact_deleted(self, tenant: str, cid: str, version: int) -> OutgoingEvent:
        return self.wrap(
            pb.ContactDeleted(meta=self._meta(tenant, cid, version)), tenant, cid, version
        )

    def contact_erased(self, tenant: str, cid: str, version: int) -> OutgoingEvent:
        return self.wrap(
            pb.ContactErased(meta=self._meta(tenant, cid, version)), tenant, cid, version
        )

    def company_created(
        self, tenant: str, cid: str, version: int = 1, **fields: Any
    ) -> OutgoingEvent:
        msg = pb.CompanyCreated(
            meta=self._meta(tenant, cid, version), company=self.company(cid, version, **fields)
        )
        return self.wrap(msg, tenant, cid, version)

    def company_updated(
        self, tenant: str, cid: str, version: int, changed: list[str], **fields: Any
    ) -> OutgoingEvent:
        msg = pb.CompanyUpdated(
            meta=self._meta(tenant, cid, version, changed),
            company=self.company(cid, version, **fields),
        )
        return self.wrap(msg, tenant, cid, version)

    def company_deleted(self, tenant: str, cid: str, version: int) -> OutgoingEvent:
        return self.wrap(
            pb.CompanyDeleted(meta=self._meta(tenant, cid, version)), tenant, cid, version
        )

    @staticmethod
    def wrap(msg: Any, tenant: str, aggregate_id: str, version: int) -> OutgoingEvent:
        return OutgoingEvent(
            message=msg,
            ce_type=ce_type_for(msg),
            tenant=tenant,
            aggregate_id=aggregate_id,
            version=version,
            source="crm/contacts",
        )

    async def publish(self, *events: OutgoingEvent, msg_id: str | None = None) -> None:
        for ev in events:
            headers = ev.headers()
            if msg_id:
                headers["Nats-Msg-Id"] = msg_id
            await self.js.publish(ev.subject, ev.message.SerializeToString(), headers=headers)


@pytest.fixture
async def events(crm_infra: Infra) -> AsyncIterator[ContactsEvents]:
    nc = await nats.connect(crm_infra.nats_url)
    try:
        yield ContactsEvents(nc)
    finally:
        await nc.close()


@pytest.fixture
def new_id() -> Callable[[], str]:
    return lambda: str(uuid.uuid4())


@pytest.fixture
def read_360(client: AsyncClient, crm_infra: Infra) -> Callable[..., Any]:
    """`await read_360(id, until=lambda doc: ...)`: poll the 360 endpoint until `until` holds
    (default: the document exists) and return the response."""

    async def read(
        cid: str,
        until: Callable[[dict[str, Any]], bool] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Any:
        h = headers or crm_infra.auth()

        async def probe() -> Any:
            r = await client.get(f"/v1/customers/{cid}/360", headers=h)
            if r.status_code != 200:
                return None
            if until is not None and not until(json.loads(r.content)):
                return None
            return r

        return await wait_for(probe, timeout=timeout, message=f"360 of {cid}")

    return read
