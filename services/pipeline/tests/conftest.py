"""Fixtures: a migrated database, the running app (relay, consumers, scheduler included) and
an HTTP client. Tests cannot import this module (importlib mode): helpers come through
fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from chassis.testing import Infra, running
from pipeline.app import MIGRATIONS, PipelineSettings, build


@pytest.fixture
async def db_url(crm_infra: Infra, clean_streams: None) -> str:
    return await crm_infra.database("crm_pipeline", MIGRATIONS, "alembic_version_pipeline")


@pytest.fixture
async def app(crm_infra: Infra, db_url: str) -> AsyncIterator[FastAPI]:
    settings = crm_infra.settings(PipelineSettings, "pipeline", db_url, scheduler_poll_seconds=0.2)
    application = build(settings)
    async with running(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    transport = ASGITransport(app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://test") as c:
        yield c
