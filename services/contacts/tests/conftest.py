"""Fixtures: a migrated database, the running app (relay included) and a small API helper.
Tests cannot import this module (importlib mode): helpers come through fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import nats
import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response

from chassis.db import asyncpg_dsn
from chassis.testing import Infra, running, wait_for
from contacts.app import MIGRATIONS, ContactsSettings, build


@pytest.fixture
async def db_url(crm_infra: Infra, clean_streams: None) -> str:
    return await crm_infra.database("crm_contacts", MIGRATIONS, "alembic_version_contacts")


@pytest.fixture
async def app(crm_infra: Infra, db_url: str) -> AsyncIterator[FastAPI]:
    settings = crm_infra.settings(ContactsSettings, "contacts", db_url, import_chunk_size=2)
    application = build(settings)
    async with running(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    transport = ASGITransport(app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


class Api:
    """Thin helpers over the HTTP API for arranging test data."""

    def __init__(self, client: AsyncClient, infra: Infra, db_url: str) -> None:
        self.client = client
        self.infra = infra
        self.db_url = db_url

    def h(
        self, role: str = "admin", sub: str = "user-1", tenant: str = "acme", **extra: str
    ) -> dict[str, str]:
        return {**self.infra.auth(tenant=tenant, roles=[role], sub=sub), **extra}

    async def contact(self, headers: dict[str, str] | None = None, **fields: Any) -> dict[str, Any]:
        r = await self.client.post("/v1/contacts", json=fields, headers=headers or self.h())
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def company(self, headers: dict[str, str] | None = None, **fields: Any) -> dict[str, Any]:
        fields.setdefault("name", "Acme Corp")
        r = await self.client.post("/v1/companies", json=fields, headers=headers or self.h())
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def field(
        self, key: str, type_: str, object_type: str = "contact", **extra: Any
    ) -> dict[str, Any]:
        r = await self.client.post(
            f"/v1/custom-fields/{object_type}",
            json={"key": key, "label": key.title(), "type": type_, **extra},
            headers=self.h(),
        )
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def patch(
        self, contact: dict[str, Any], headers: dict[str, str] | None = None, **fields: Any
    ) -> Response:
        return await self.client.patch(
            f"/v1/contacts/{contact['id']}",
            json=fields,
            headers={**(headers or self.h()), "If-Match": f'"{contact["version"]}"'},
        )

    async def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(asyncpg_dsn(self.db_url))
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    async def check_get_returns(self, path: str, created: dict[str, Any]) -> None:
        """GET `path` answers exactly what the create answered, with its version as ETag."""
        r = await self.client.get(path, headers=self.h())
        assert r.status_code == 200
        assert r.json() == created
        assert r.headers["etag"] == f'"{created["version"]}"'

    async def check_plain_read(self, app: FastAPI, read: Any, get: Any, row_id: Any) -> None:
        """`read` (raw pool, what GET uses) gives the row `get` (session, what writes use)
        gives, value for value and type for type, and nothing to another tenant."""
        db = app.state.db
        raw = await read(await db.pool(), "acme", row_id)
        async with db.sessionmaker() as session:
            orm = await get(session, "acme", row_id)
        assert raw is not None
        assert orm is not None
        assert raw == orm
        assert {k: type(v) for k, v in raw.items()} == {k: type(v) for k, v in orm.items()}
        assert await read(await db.pool(), "other", row_id) is None

    async def events(self, count: int, subject_filter: str = "") -> list[Any]:
        """Wait until the CRM_CONTACTS stream holds `count` matching messages; return them."""

        async def probe() -> list[Any] | None:
            msgs = [m for m in await self._stream() if subject_filter in m.subject]
            return msgs if len(msgs) >= count else None

        return await wait_for(probe, timeout=10, message=f"{count} events {subject_filter}")

    async def _stream(self) -> list[Any]:
        nc = await nats.connect(self.infra.nats_url)
        try:
            js = nc.jetstream()
            try:
                info = await js.stream_info("CRM_CONTACTS")
            except nats.js.errors.NotFoundError:
                return []
            return [
                await js.get_msg("CRM_CONTACTS", seq)
                for seq in range(info.state.first_seq, info.state.last_seq + 1)
                if info.state.messages
            ]
        finally:
            await nc.close()


@pytest.fixture
def api(client: AsyncClient, crm_infra: Infra, db_url: str) -> Api:
    return Api(client, crm_infra, db_url)
