"""Fixtures: a migrated database, the running app (relay, consumers, SLA scheduler) and an
HTTP client. Tests cannot import this module (importlib mode): helpers come via fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from chassis.db import asyncpg_dsn
from chassis.testing import Infra, running
from tickets.app import MIGRATIONS, TicketsSettings, build


@pytest.fixture
async def db_url(crm_infra: Infra, clean_streams: None) -> str:
    return await crm_infra.database("crm_tickets", MIGRATIONS, "alembic_version_tickets")


@pytest.fixture
def make_app(crm_infra: Infra, db_url: str) -> Callable[..., FastAPI]:
    def make(**overrides: Any) -> FastAPI:
        values: dict[str, Any] = {
            "scheduler_poll_seconds": 0.2,
            "public_base_url": "https://crm.test",
        }
        values.update(overrides)
        return build(crm_infra.settings(TicketsSettings, "tickets", db_url, **values))

    return make


@pytest.fixture
async def app(make_app: Callable[..., FastAPI]) -> AsyncIterator[FastAPI]:
    async with running(make_app()) as application:
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    transport = ASGITransport(app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(asyncpg_dsn(db_url))
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def admin(crm_infra: Infra) -> dict[str, str]:
    return crm_infra.auth(tenant="acme", roles=["admin"], sub="admin-1")


@pytest.fixture
def agent(crm_infra: Infra) -> dict[str, str]:
    return crm_infra.auth(tenant="acme", roles=["support_agent"], sub="agent-1")
