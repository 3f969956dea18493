"""Cross-service fixtures: the contacts service on a real local port (uvicorn, with its
relay) behind the gateway (in process, with its read-model consumer), both on the real
PostgreSQL and NATS of the chassis plugin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import uvicorn
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

import contacts.app as contacts_app
import gateway.app as gateway_app
from chassis.infra import free_port
from chassis.testing import Infra, running, wait_for
from gateway.settings import GatewaySettings


@dataclass
class Platform:
    client: AsyncClient
    infra: Infra
    contacts_url: str
    gateway_db: str
    contacts_db: str
    gateway: FastAPI
    contacts: FastAPI


@pytest.fixture
async def platform(crm_infra: Infra, clean_streams: None) -> AsyncIterator[Platform]:
    contacts_db = await crm_infra.database(
        "crm_contacts", contacts_app.MIGRATIONS, "alembic_version_contacts"
    )
    gateway_db = await crm_infra.database(
        "crm_gateway", gateway_app.MIGRATIONS, "alembic_version_gateway"
    )
    capp = contacts_app.build(
        crm_infra.settings(contacts_app.ContactsSettings, "contacts", contacts_db)
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(capp, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    await wait_for(started, message="contacts service listening")
    url = f"http://127.0.0.1:{port}"
    gapp = gateway_app.build(
        crm_infra.settings(
            GatewaySettings,
            "gateway",
            gateway_db,
            upstreams={"contacts": url},
            rate_limit_per_second=100_000,
            rate_limit_burst=100_000,
        )
    )
    try:
        async with running(gapp):
            transport = ASGITransport(gapp, raise_app_exceptions=False)
            async with AsyncClient(transport=transport, base_url="http://gw", timeout=30) as c:
                yield Platform(c, crm_infra, url, gateway_db, contacts_db, gapp, capp)
    finally:
        server.should_exit = True
        await task
