"""Fixtures for the schemathesis fuzz run: every service and the gateway on a real local port.

schemathesis drives its cases synchronously (Hypothesis, `requests`), so the apps cannot live
on pytest-asyncio's loop: that loop does not run while a sync test blocks it. They run instead
on one event loop in a background thread (an anyio blocking portal), under uvicorn with their
full lifespan (engine, NATS, relay, consumers, schedulers), on the chassis plugin's real
PostgreSQL and nats-server. The stack is started once per test module.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from anyio.from_thread import start_blocking_portal
from fastapi import FastAPI

import campaigns.app as campaigns_app
import commissions.app as commissions_app
import contacts.app as contacts_app
import gateway.app as gateway_app
import pipeline.app as pipeline_app
import tickets.app as tickets_app
from chassis.infra import free_port
from chassis.settings import ServiceSettings
from chassis.testing import Infra, wait_for
from gateway.settings import GatewaySettings

# The tenant every fuzz request acts in, as an admin (so role checks never hide a route).
TENANT = "fuzz"


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


@dataclass(frozen=True)
class Stack:
    """Base URLs of the running apps (service name or "gateway") and an admin token."""

    urls: dict[str, str]
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """The app under uvicorn on a free local port, lifespan included; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started or task.done()

    try:
        await wait_for(started, timeout=60, message=f"app on port {port} listening")
        if task.done():
            task.result()
            raise RuntimeError(f"uvicorn on port {port} exited at startup")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def run_platform(infra: Infra) -> AsyncIterator[dict[str, str]]:
    """Every service, then the gateway routed to them; yields name -> base URL."""
    await infra.reset_streams()
    async with contextlib.AsyncExitStack() as stack:
        urls: dict[str, str] = {}
        for svc in SERVICES:
            db = await infra.database(
                f"crm_{svc.name}", svc.migrations, f"alembic_version_{svc.name}"
            )
            app = svc.build(infra.settings(svc.settings, svc.name, db))
            urls[svc.name] = await stack.enter_async_context(serve(app))
        gateway_db = await infra.database(
            "crm_gateway", gateway_app.MIGRATIONS, "alembic_version_gateway"
        )
        gateway = gateway_app.build(
            infra.settings(
                GatewaySettings,
                "gateway",
                gateway_db,
                upstreams=dict(urls),
                rate_limit_per_second=100_000,
                rate_limit_burst=100_000,
                token_rate_limit_per_second=0,
                public_rate_limit_per_second=0,
                gc_freeze_at_startup=False,
            )
        )
        urls["gateway"] = await stack.enter_async_context(serve(gateway))
        yield urls


@pytest.fixture(scope="module")
def fuzz_stack(crm_infra: Infra) -> Iterator[Stack]:
    """The platform on a background event loop (see the module docstring), for one module:
    stopped before other test directories reuse the same databases and streams."""
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(run_platform(crm_infra)) as urls,
    ):
        yield Stack(urls=urls, token=crm_infra.token(tenant=TENANT, roles=["admin"]))
