"""`/v1/admin/{service}/dead-letters…`: proxied with the path rewritten to the service's
`/admin/dead-letters…`, the gateway's own dead letters served locally."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from httpx import AsyncClient

from chassis.db import asyncpg_dsn
from chassis.infra import free_port
from chassis.testing import Infra, wait_for

PROBLEM = "application/problem+json"


def service_stub(seen: list[dict[str, Any]]) -> FastAPI:
    """A service's admin API: records and echoes what reached it."""
    app = FastAPI()

    @app.api_route("/{rest:path}", methods=["GET", "POST", "DELETE"])
    async def anything(rest: str, request: Request) -> JSONResponse:
        echo = {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "authorization": request.headers.get("authorization"),
            "traceparent": request.headers.get("traceparent"),
        }
        seen.append(echo)
        return JSONResponse(echo)

    return app


@pytest.fixture(scope="module")
async def stub() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            service_stub(seen), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
    )
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    await wait_for(started, message="service stub listening")
    yield f"http://127.0.0.1:{port}", seen
    server.should_exit = True
    await task


@pytest.fixture
async def gw(gateway: Any, stub: tuple[str, list[dict[str, Any]]]) -> AsyncIterator[AsyncClient]:
    async with gateway(upstreams={"pipeline": stub[0]}) as c:
        yield c


async def insert_dead_letter(url: str, tenant: str, consumer: str = "gateway-customer-360") -> int:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "6b1c1b1e-8f5e-4d0c-9d1e-3a8e9f2b7c11",
        "ce-source": "crm/contacts",
        "ce-type": "crm.contacts.contact.created.v1",
        "ce-time": "2026-01-01T00:00:00Z",
        "ce-subject": "c-1",
        "ce-tenant": tenant,
        "ce-sequence": "1",
        "ce-dataschema": "crm.contacts.v1.ContactCreated",
        "content-type": "application/protobuf",
    }
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return int(
            await conn.fetchval(
                "INSERT INTO dead_letters (consumer, event_id, subject, headers, payload, error, "
                "deliveries) VALUES ($1, $2, $3, $4::jsonb, $5, 'ValueError()', 8) RETURNING id",
                consumer,
                headers["ce-id"],
                f"crm.contacts.{tenant}.contact.created",
                json.dumps(headers),
                b"",
            )
        )
    finally:
        await conn.close()


class TestProxied:
    async def test_the_path_is_rewritten_and_the_rest_forwarded(
        self, gw: AsyncClient, crm_infra: Infra, stub: tuple[str, list[dict[str, Any]]]
    ) -> None:
        auth = crm_infra.auth()
        base = "/v1/admin/pipeline/dead-letters"
        cases = [
            ("GET", f"{base}?consumer=pipeline-x&limit=5", "", "consumer=pipeline-x&limit=5"),
            ("GET", f"{base}/42", "/42", ""),
            ("POST", f"{base}/42/replay", "/42/replay", ""),
            ("DELETE", f"{base}/42", "/42", ""),
        ]
        for method, path, rest, query in cases:
            r = await gw.request(method, path, headers=auth)
            assert r.status_code == 200, (path, r.text)
            echo = r.json()
            assert (echo["method"], echo["path"], echo["query"]) == (
                method,
                "/admin/dead-letters" + rest,
                query,
            )
            assert echo["authorization"] == auth["Authorization"]
            assert echo["traceparent"]
            assert int(r.headers["ratelimit-limit"]) > 0

    async def test_other_paths_and_services_never_reach_an_upstream(
        self, gw: AsyncClient, crm_infra: Infra, stub: tuple[str, list[dict[str, Any]]]
    ) -> None:
        seen = stub[1]
        before = len(seen)
        auth = crm_infra.auth()
        for path in [
            "/v1/admin/nowhere/dead-letters",
            "/v1/admin/pipeline/dead-letters/42/other",
            "/v1/admin/pipeline/dead-letters/%2e%2e/%2e%2e/v1/deals",
            "/v1/admin/pipeline/dead-lettersx",
            "/v1/admin/Pipeline/dead-letters",
        ]:
            r = await gw.get(path, headers=auth)
            assert r.status_code == 404, path
            assert r.headers["content-type"] == PROBLEM
        r = await gw.get("/v1/admin/pipeline/dead-letters")
        assert r.status_code == 401
        r = await gw.put("/v1/admin/pipeline/dead-letters/42", headers=auth)
        assert r.status_code == 405
        assert len(seen) == before


class TestLocal:
    async def test_the_gateways_own_dead_letters_are_served_here(
        self, gw: AsyncClient, crm_infra: Infra, db_url: str
    ) -> None:
        mine = await insert_dead_letter(db_url, "acme")
        theirs = await insert_dead_letter(db_url, "globex")
        base = "/v1/admin/gateway/dead-letters"
        admin = crm_infra.auth("acme")

        r = await gw.get(base, headers=admin)
        assert r.status_code == 200
        assert [i["id"] for i in r.json()["items"]] == [mine]
        r = await gw.get(f"{base}/{mine}", headers=admin)
        assert r.json()["consumer"] == "gateway-customer-360"
        assert r.json()["payload_encoding"] == "json"  # crm.registry types are known here
        assert (await gw.get(f"{base}/{theirs}", headers=admin)).status_code == 404
        r = await gw.get(base, headers=crm_infra.auth("acme", roles=["sales_manager"]))
        assert r.status_code == 403
        r = await gw.put(f"{base}/{mine}", headers=admin)
        assert r.status_code == 405

        gone = await insert_dead_letter(db_url, "acme", consumer="gateway-retired")
        r = await gw.post(f"{base}/{gone}/replay", headers=admin)
        assert r.status_code == 409  # no such consumer runs here: discard it instead
        assert (await gw.delete(f"{base}/{gone}", headers=admin)).status_code == 204
        assert (await gw.get(f"{base}/{gone}", headers=admin)).status_code == 404

        # The chassis' unprefixed routes are not part of the gateway's surface.
        assert (await gw.get("/admin/dead-letters", headers=admin)).status_code == 404
