"""Cross-service fixtures: every service on a real local port (uvicorn, with its relay,
consumers and schedulers) behind the gateway (in process, with its read-model consumers),
all on the real PostgreSQL and NATS of the chassis plugin."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

import campaigns.app as campaigns_app
import commissions.app as commissions_app
import contacts.app as contacts_app
import gateway.app as gateway_app
import pipeline.app as pipeline_app
import tickets.app as tickets_app
from chassis.infra import free_port
from chassis.settings import ServiceSettings
from chassis.testing import Infra, running, wait_for
from gateway.settings import GatewaySettings


@dataclass(frozen=True)
class ServiceDef:
    name: str
    migrations: Path
    settings: type[ServiceSettings]
    build: Callable[[Any], FastAPI]


SERVICES = (
    ServiceDef(
        "contacts", contacts_app.MIGRATIONS, contacts_app.ContactsSettings, contacts_app.build
    ),
    ServiceDef(
        "pipeline", pipeline_app.MIGRATIONS, pipeline_app.PipelineSettings, pipeline_app.build
    ),
    ServiceDef(
        "commissions",
        commissions_app.MIGRATIONS,
        commissions_app.CommissionsSettings,
        commissions_app.build,
    ),
    ServiceDef("tickets", tickets_app.MIGRATIONS, tickets_app.TicketsSettings, tickets_app.build),
    ServiceDef(
        "campaigns", campaigns_app.MIGRATIONS, campaigns_app.CampaignsSettings, campaigns_app.build
    ),
)


@dataclass
class Platform:
    client: AsyncClient
    infra: Infra
    gateway_db: str
    gateway: FastAPI
    urls: dict[str, str] = field(default_factory=dict)
    dbs: dict[str, str] = field(default_factory=dict)
    apps: dict[str, FastAPI] = field(default_factory=dict)

    @property
    def contacts_db(self) -> str:
        return self.dbs["contacts"]


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """The app on a real local port (its lifespan included); yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    try:
        await wait_for(started, message=f"service on port {port} listening")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def platform(crm_infra: Infra, clean_streams: None) -> AsyncIterator[Platform]:
    gateway_db = await crm_infra.database(
        "crm_gateway", gateway_app.MIGRATIONS, "alembic_version_gateway"
    )
    async with contextlib.AsyncExitStack() as stack:
        urls: dict[str, str] = {}
        dbs: dict[str, str] = {}
        apps: dict[str, FastAPI] = {}
        for svc in SERVICES:
            dbs[svc.name] = await crm_infra.database(
                f"crm_{svc.name}", svc.migrations, f"alembic_version_{svc.name}"
            )
            apps[svc.name] = svc.build(crm_infra.settings(svc.settings, svc.name, dbs[svc.name]))
            urls[svc.name] = await stack.enter_async_context(serve(apps[svc.name]))
        gapp = gateway_app.build(
            crm_infra.settings(
                GatewaySettings,
                "gateway",
                gateway_db,
                upstreams=urls,
                rate_limit_per_second=100_000,
                rate_limit_burst=100_000,
                token_rate_limit_per_second=0,
            )
        )
        async with running(gapp):
            transport = ASGITransport(gapp, raise_app_exceptions=False)
            async with AsyncClient(transport=transport, base_url="http://gw", timeout=30) as c:
                yield Platform(c, crm_infra, gateway_db, gapp, urls, dbs, apps)
