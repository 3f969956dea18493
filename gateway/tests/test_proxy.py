"""The streaming proxy against a real upstream on a local port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from httpx import ASGITransport, AsyncClient

from chassis.db import asyncpg_dsn
from chassis.infra import free_port
from chassis.testing import Infra, running
from gateway.app import MIGRATIONS, build
from gateway.settings import GatewaySettings

PROBLEM = "application/problem+json"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(scope="module")
async def shared(crm_infra: Infra, upstream_url: str) -> AsyncIterator[tuple[AsyncClient, str]]:
    """One gateway for the tests that need no special settings (starting one costs ~1 s)."""
    url = await crm_infra.database("crm_gateway", MIGRATIONS, "alembic_version_gateway")
    settings = crm_infra.settings(
        GatewaySettings,
        "gateway",
        url,
        upstreams={"contacts": upstream_url},
        gc_freeze_at_startup=False,
        max_body_bytes=1 << 20,
    )
    app = build(settings)
    async with running(app):
        transport = ASGITransport(app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://gw") as c:
            yield c, url


@pytest.fixture
def gw(shared: tuple[AsyncClient, str]) -> AsyncClient:
    return shared[0]


class TestForwarding:
    async def test_request_and_response_are_forwarded(
        self, gw: AsyncClient, crm_infra: Infra
    ) -> None:
        auth = crm_infra.auth()
        r = await gw.post(
            "/v1/contacts?dry_run=false&tag=a%20b",
            json={"first_name": "Ada"},
            headers={
                **auth,
                "Idempotency-Key": "k-1",
                "X-Origin": "erp:sap",
                "X-Request-Id": "req-7",
                "If-None-Match": '"0"',
                "X-Not-Forwarded": "secret",
                "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01",
            },
        )
        assert r.status_code == 201
        assert r.headers["etag"] == '"1"'
        assert r.headers["location"] == "/v1/contacts/c-1"
        assert r.headers["content-type"] == "application/json"
        assert int(r.headers["ratelimit-limit"]) > 0
        seen = r.json()
        assert seen["method"] == "POST"
        assert seen["path"] == "/v1/contacts"
        assert seen["query"] == "dry_run=false&tag=a%20b"
        assert seen["body"] == '{"first_name":"Ada"}'
        h = seen["headers"]
        assert h["authorization"] == auth["Authorization"]
        assert h["idempotency-key"] == "k-1"
        assert h["x-origin"] == "erp:sap"
        assert h["x-request-id"] == "req-7"
        assert h["if-none-match"] == '"0"'
        assert h["content-type"] == "application/json"
        assert "x-not-forwarded" not in h
        assert h["traceparent"].split("-")[1] == TRACE_ID  # same trace, the gateway's span

    async def test_pooled_client_keeps_no_cookies(self, gw: AsyncClient, crm_infra: Infra) -> None:
        first = await gw.post("/v1/contacts", json={"first_name": "A"}, headers=crm_infra.auth())
        assert first.headers["set-cookie"] == "session=secret"  # the caller's business
        second = await gw.get("/v1/contacts/x", headers=crm_infra.auth(tenant="globex"))
        assert "cookie" not in second.json()["headers"]

    async def test_upstream_errors_pass_through(self, gw: AsyncClient, crm_infra: Infra) -> None:
        r = await gw.patch(
            "/v1/contacts/c-1",
            json={"first_name": "B"},
            headers={**crm_infra.auth(), "If-Match": '"0"'},
        )
        assert r.status_code == 412
        assert r.headers["content-type"] == PROBLEM
        assert r.json()["current_etag"] == '"1"'
        ok = await gw.patch(
            "/v1/contacts/c-1",
            json={"first_name": "B"},
            headers={**crm_infra.auth(), "If-Match": '"1"'},
        )
        assert ok.status_code == 200
        assert ok.headers["etag"] == '"2"'
        assert ok.json()["headers"]["if-match"] == '"1"'

    async def test_prefixes_route_and_nothing_else(self, gw: AsyncClient, crm_infra: Infra) -> None:
        h = crm_infra.auth()
        for path in (
            "/v1/companies",
            "/v1/companies/a/b",
            "/v1/custom-fields",
            "/v1/contacts/by-external-id/sap/00%2F1",
        ):
            r = await gw.delete(path, headers=h)
            assert r.status_code == 200, path
            assert r.json()["method"] == "DELETE"
        r = await gw.get("/v1/contacts/by-external-id/sap/00%2F1", headers=h)
        assert r.json()["path"] == "/v1/contacts/by-external-id/sap/00/1"
        r = await gw.get("/v1/contactsx", headers=h)
        assert r.status_code == 404
        assert r.headers["content-type"] == PROBLEM

    async def test_idempotency_is_left_to_the_upstream(
        self, gw: AsyncClient, crm_infra: Infra, shared: tuple[AsyncClient, str]
    ) -> None:
        h = {**crm_infra.auth(), "Idempotency-Key": "same"}
        for _ in range(2):
            r = await gw.put("/v1/contacts/c-9", json={"x": 1}, headers=h)
            # the upstream's replay marker passes through untouched
            assert r.headers["idempotent-replayed"] == "true"
            assert r.json()["headers"]["idempotency-key"] == "same"
            r = await gw.post("/v1/contacts", json={"first_name": "A"}, headers=h)
            assert r.status_code == 201
            assert "idempotent-replayed" not in r.headers  # not replayed by the gateway
        conn = await asyncpg.connect(asyncpg_dsn(shared[1]))
        try:
            assert await conn.fetchval("SELECT count(*) FROM idempotency_keys") == 0
        finally:
            await conn.close()


class TestConnections:
    async def test_keep_alive_connections_are_reused(
        self, gw: AsyncClient, crm_infra: Infra
    ) -> None:
        h = crm_infra.auth()
        ports = {(await gw.get("/v1/contacts/x", headers=h)).json()["peer_port"] for _ in range(10)}
        assert len(ports) == 1
        head = await gw.head("/v1/contacts/x", headers=h)
        assert head.status_code == 200
        assert head.content == b""
        after = await gw.get("/v1/contacts/x", headers=h)  # HEAD's connection is not reused
        assert after.status_code == 200
        assert after.json()["method"] == "GET"


class TestStreaming:
    async def test_large_response_body(self, gw: AsyncClient, crm_infra: Infra) -> None:
        r = await gw.get("/v1/companies/big", headers=crm_infra.auth())
        assert r.status_code == 200
        assert len(r.content) == 64 * 16384
        assert r.content[:3] == b"AAA"
        assert r.content[16384:16387] == b"BBB"

    async def test_large_and_chunked_request_bodies(
        self, gw: AsyncClient, crm_infra: Infra
    ) -> None:
        body = b"x" * 600_000
        r = await gw.put("/v1/contacts/c-1/attachment", content=body, headers=crm_infra.auth())
        assert len(r.json()["body"]) == 600_000

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"y" * 1000

        r = await gw.post("/v1/companies/import", content=chunks(), headers=crm_infra.auth())
        assert r.json()["body"] == "y" * 10_000

    async def test_body_over_the_limit_is_413(self, gw: AsyncClient, crm_infra: Infra) -> None:
        r = await gw.put("/v1/contacts/c-1", content=b"x" * (2 << 20), headers=crm_infra.auth())
        assert r.status_code == 413


class TestAccess:
    @pytest.mark.parametrize(
        "headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic dXNlcjpwYXNz"}]
    )
    async def test_no_valid_token_is_401(self, gw: AsyncClient, headers: dict[str, str]) -> None:
        r = await gw.get("/v1/contacts", headers=headers)
        assert r.status_code == 401
        assert r.headers["content-type"] == PROBLEM
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["status"] == 401

    async def test_expired_token_is_401(self, gw: AsyncClient, crm_infra: Infra) -> None:
        from chassis import devkeys

        token = devkeys.mint_token(
            crm_infra.jwt_dir, tenant="acme", roles=["admin"], ttl_seconds=-60
        )
        r = await gw.get("/v1/contacts", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401

    async def test_one_caller_cannot_spend_the_tenants_budget(
        self, gateway: Any, crm_infra: Infra
    ) -> None:
        async with gateway(token_rate_limit_per_second=0.5, token_rate_limit_burst=2) as c:
            busy = crm_infra.auth(sub="integration-1")
            assert [(await c.get("/v1/contacts", headers=busy)).status_code for _ in range(2)] == [
                200,
                200,
            ]
            r = await c.get("/v1/contacts", headers=busy)
            assert r.status_code == 429
            assert "this caller" in r.json()["detail"]
            # another user of the same tenant is not held back
            assert (
                await c.get("/v1/contacts", headers=crm_infra.auth(sub="u-2"))
            ).status_code == 200

    async def test_over_the_rate_limit_is_429(self, gateway: Any, crm_infra: Infra) -> None:
        async with gateway(rate_limit_per_second=0.5, rate_limit_burst=3) as c:
            h = crm_infra.auth()
            statuses = [(await c.get("/v1/contacts", headers=h)).status_code for _ in range(3)]
            assert statuses == [200, 200, 200]
            r = await c.get("/v1/contacts", headers=h)
            assert r.status_code == 429
            assert r.headers["content-type"] == PROBLEM
            assert r.headers["retry-after"] == "2"
            assert r.headers["ratelimit-limit"] == "3"
            assert r.headers["ratelimit-remaining"] == "0"
            # the gateway's own endpoints share the tenant's bucket
            r = await c.get("/v1/customers/00000000-0000-0000-0000-000000000000/360", headers=h)
            assert r.status_code == 429
            assert r.headers["retry-after"] == "2"
            # other tenants have their own bucket
            r = await c.get("/v1/contacts", headers=crm_infra.auth(tenant="globex"))
            assert r.status_code == 200


class TestUpstreamFailures:
    async def test_upstream_down_is_502(self, gateway: Any, crm_infra: Infra) -> None:
        async with gateway(upstreams={"contacts": f"http://127.0.0.1:{free_port()}"}) as c:
            r = await c.get("/v1/contacts", headers=crm_infra.auth())
            assert r.status_code == 502
            assert r.headers["content-type"] == PROBLEM
            assert r.json()["title"] == "Bad gateway"
            # the merged document still serves the gateway's own paths
            doc = (await c.get("/openapi.json")).json()
            assert "/v1/customers/{contact_id}/360" in doc["paths"]

    async def test_upstream_too_slow_is_504(self, gateway: Any, crm_infra: Infra) -> None:
        async with gateway(proxy_read_timeout=0.3) as c:
            r = await c.get("/v1/companies/slow", headers=crm_infra.auth())
            assert r.status_code == 504
            assert r.headers["content-type"] == PROBLEM


class TestPublicRoutes:
    async def test_public_route_needs_no_token_and_never_forwards_one(
        self, gateway: Any, upstream_url: str, crm_infra: Infra
    ) -> None:
        async with gateway(upstreams={"tickets": upstream_url}, public_rate_limit_burst=3) as c:
            r = await c.post("/v1/public/csat/tok-1", json={"score": 5})
            assert r.status_code == 200, r.text
            assert r.json()["path"] == "/v1/public/csat/tok-1"
            r = await c.post("/v1/public/csat/tok-1", json={"score": 5}, headers=crm_infra.auth())
            assert "authorization" not in r.json()["headers"]
            # The rest of the tickets API still wants a token.
            assert (await c.get("/v1/tickets")).status_code == 401
            # Strict per-client limit: burst of 3, the 4th is refused (two already spent).
            assert (await c.post("/v1/public/nps/tok-2", json={})).status_code == 200
            refused = await c.post("/v1/public/nps/tok-2", json={})
            assert refused.status_code == 429
            assert refused.headers["content-type"] == "application/problem+json"
            assert "public" in refused.json()["detail"]


class TestNestedRoutes:
    async def test_contact_scores_and_segments_go_to_campaigns(
        self, gateway: Any, upstream_url: str, crm_infra: Infra
    ) -> None:
        down = f"http://127.0.0.1:{free_port()}"
        async with gateway(upstreams={"contacts": upstream_url, "campaigns": down}) as c:
            h = crm_infra.auth()
            contact = await c.get("/v1/contacts/c-1", headers=h)
            assert contact.status_code == 200
            assert contact.json()["path"] == "/v1/contacts/c-1"
            for view in ("scores", "segments"):
                r = await c.get(f"/v1/contacts/c-1/{view}", headers=h)
                assert r.status_code == 502, r.text
                assert "campaigns" in r.json()["detail"]


class TestHygiene:
    async def test_request_id_cors_and_gzip(
        self, gateway: Any, upstream_url: str, crm_infra: Infra
    ) -> None:
        async with gateway(
            upstreams={"contacts": upstream_url}, cors_origins=["https://app.example.com"]
        ) as c:
            h = crm_infra.auth()
            # A request id is made up when missing, kept when sent, forwarded and returned.
            r = await c.get("/v1/contacts/c-1", headers=h)
            made = r.headers["x-request-id"]
            assert len(made) == 36
            assert r.json()["headers"]["x-request-id"] == made
            r = await c.get("/v1/contacts/c-1", headers={**h, "X-Request-Id": "req-42"})
            assert r.headers["x-request-id"] == "req-42"
            assert r.json()["headers"]["x-request-id"] == "req-42"
            r = await c.get("/v1/contacts/c-1", headers={**h, "X-Request-Id": "bad id\x7f"})
            assert r.headers["x-request-id"] != "bad id\x7f"

            # CORS: a preflight from the frontend origin is answered here; others are not.
            pre = await c.options(
                "/v1/contacts",
                headers={
                    "Origin": "https://app.example.com",
                    "Access-Control-Request-Method": "PATCH",
                    "Access-Control-Request-Headers": "authorization,if-match",
                },
            )
            assert pre.status_code == 200
            assert pre.headers["access-control-allow-origin"] == "https://app.example.com"
            assert "PATCH" in pre.headers["access-control-allow-methods"]
            other = await c.options(
                "/v1/contacts",
                headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
            )
            assert "access-control-allow-origin" not in other.headers
            r = await c.get("/v1/contacts/c-1", headers={**h, "Origin": "https://app.example.com"})
            assert r.headers["access-control-allow-origin"] == "https://app.example.com"
            assert "ETag" in r.headers["access-control-expose-headers"]

            # gzip for clients that ask, untouched for those that do not.
            big = await c.get("/v1/companies/big", headers={**h, "Accept-Encoding": "gzip"})
            assert big.status_code == 200
            assert big.headers["content-encoding"] == "gzip"
            assert len(big.content) == 64 * 16384  # httpx decoded it
            plain = await c.get("/v1/companies/big", headers={**h, "Accept-Encoding": "identity"})
            assert "content-encoding" not in plain.headers
