"""A tiny service built on the chassis, to test the chassis itself against real PostgreSQL
and NATS: a `widget` aggregate whose events it publishes and consumes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

import asyncpg
import pytest
from fastapi import APIRouter, Header, Response
from google.protobuf.wrappers_pb2 import StringValue
from httpx import ASGITransport, AsyncClient
from pydantic import BaseModel
from sqlalchemy import text

from chassis import outbox
from chassis.app import ServiceSpec, create_app
from chassis.auth import PrincipalDep
from chassis.consumer import Consumer
from chassis.db import SessionDep, asyncpg_dsn
from chassis.events import IncomingEvent, OutgoingEvent
from chassis.http import check_if_match, set_etag
from chassis.problems import NotFound
from chassis.settings import ServiceSettings
from chassis.tables import metadata
from chassis.testing import Infra, running

WIDGET_CREATED = "crm.testctx.widget.created.v1"
WIDGET_RENAMED = "crm.testctx.widget.renamed.v1"


class WidgetIn(BaseModel):
    name: str


router = APIRouter()


@router.post("/v1/widgets", status_code=201)
async def create_widget(
    body: WidgetIn, session: SessionDep, principal: PrincipalDep, response: Response
) -> dict[str, object]:
    wid = str(uuid.uuid4())
    await session.execute(
        text("INSERT INTO widgets (tenant_id, id, name, version) VALUES (:t, :i, :n, 1)"),
        {"t": principal.tenant, "i": wid, "n": body.name},
    )
    outbox.add(
        session,
        OutgoingEvent(
            message=StringValue(value=body.name),
            ce_type=WIDGET_CREATED,
            tenant=principal.tenant,
            aggregate_id=wid,
            version=1,
            source="crm/testctx",
        ),
    )
    set_etag(response, 1)
    return {"id": wid, "name": body.name, "version": 1}


@router.patch("/v1/widgets/{wid}")
async def rename_widget(
    wid: str,
    body: WidgetIn,
    session: SessionDep,
    principal: PrincipalDep,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> dict[str, object]:
    row = (
        await session.execute(
            text("SELECT version FROM widgets WHERE tenant_id = :t AND id = :i FOR UPDATE"),
            {"t": principal.tenant, "i": wid},
        )
    ).first()
    if row is None:
        raise NotFound(f"widget {wid} not found")
    check_if_match(if_match, row[0])
    version = row[0] + 1
    await session.execute(
        text("UPDATE widgets SET name = :n, version = :v WHERE tenant_id = :t AND id = :i"),
        {"n": body.name, "v": version, "t": principal.tenant, "i": wid},
    )
    outbox.add(
        session,
        OutgoingEvent(
            message=StringValue(value=body.name),
            ce_type=WIDGET_RENAMED,
            tenant=principal.tenant,
            aggregate_id=wid,
            version=version,
            source="crm/testctx",
        ),
    )
    set_etag(response, version)
    return {"id": wid, "name": body.name, "version": version}


@router.post("/v1/explode")
async def explode(session: SessionDep, principal: PrincipalDep) -> dict[str, str]:
    await session.execute(
        text("INSERT INTO widgets (tenant_id, id, name, version) VALUES (:t, 'boom', 'x', 1)"),
        {"t": principal.tenant},
    )
    raise RuntimeError("fails after a write")


@router.post("/v1/widgets/fixed", status_code=201)
async def create_fixed_widget(session: SessionDep, principal: PrincipalDep) -> dict[str, str]:
    """Inserts a fixed key: the second call violates the primary key (a write race)."""
    await session.execute(
        text("INSERT INTO widgets (tenant_id, id, name, version) VALUES (:t, 'fixed', 'f', 1)"),
        {"t": principal.tenant},
    )
    return {"id": "fixed"}


@router.post("/v1/widgets/deferred", status_code=201)
async def create_deferred_clash(session: SessionDep, principal: PrincipalDep) -> dict[str, str]:
    """Writes two rows that clash on a DEFERRED unique constraint: the statement succeeds and
    only the COMMIT fails."""
    await session.execute(
        text("INSERT INTO deferred_pairs (k) VALUES ('same'), ('same')"),
    )
    return {"id": "never"}


widget_log = Consumer("widget-log", context="testctx", aggregates=["widget"])
POISON = "poison"


@widget_log.on(WIDGET_CREATED)
@widget_log.on(WIDGET_RENAMED)
async def record(session: object, event: IncomingEvent) -> None:
    name = event.parse(StringValue).value
    if name == POISON:
        raise ValueError("poison event")
    await session.execute(  # type: ignore[attr-defined]
        text("INSERT INTO widget_log (event_id, widget_id, version, name) VALUES (:e, :w, :v, :n)"),
        {"e": event.id, "w": event.aggregate_id, "v": event.version, "n": name},
    )


WIDGET_TAGGED = "crm.testctx.widget.tagged.v1"


@widget_log.on_many(WIDGET_TAGGED)
async def record_tags(session: object, events: list[IncomingEvent]) -> None:
    await session.execute(  # type: ignore[attr-defined]
        text("INSERT INTO widget_log (event_id, widget_id, version, name) VALUES (:e, :w, :v, :n)"),
        [
            {
                "e": ev.id,
                "w": ev.aggregate_id,
                "v": ev.version,
                "n": f"{ev.parse(StringValue).value}/run{len(events)}",
            }
            for ev in events
        ],
    )


SCHEMA = """
CREATE TABLE IF NOT EXISTS widgets (tenant_id text, id text, name text, version bigint,
                                    PRIMARY KEY (tenant_id, id));
CREATE TABLE IF NOT EXISTS widget_log (event_id text, widget_id text, version bigint, name text);
CREATE TABLE IF NOT EXISTS deferred_pairs (
    k text, CONSTRAINT deferred_pairs_k UNIQUE (k) DEFERRABLE INITIALLY DEFERRED);
"""


async def make_database(infra: Infra) -> str:
    url = await infra.database("chassis_test")
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute(SCHEMA)
    finally:
        await conn.close()
    from sqlalchemy.ext.asyncio import create_async_engine

    from chassis.db import sqlalchemy_url

    engine = create_async_engine(sqlalchemy_url(url))
    async with engine.begin() as c:
        await c.run_sync(metadata.create_all)
    await engine.dispose()
    return url


def widget_app(infra: Infra, url: str, **overrides: object):  # type: ignore[no-untyped-def]
    settings = infra.settings(ServiceSettings, "testctx", url, **overrides)
    spec = ServiceSpec(
        name="testctx", title="test", routers=[router], produces="testctx", consumers=[widget_log]
    )
    return create_app(spec, settings)


@pytest.fixture
async def db_url(crm_infra: Infra, clean_streams: None) -> str:
    return await make_database(crm_infra)


@pytest.fixture
async def client(crm_infra: Infra, db_url: str) -> AsyncIterator[AsyncClient]:
    app = widget_app(crm_infra, db_url, max_body_bytes=4096)
    async with running(app):
        transport = ASGITransport(app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://t") as c:
            yield c
