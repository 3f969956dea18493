"""The service starts on its migrated database, answers its health checks and serves an
OpenAPI document with every route the gateway forwards."""

from __future__ import annotations

from httpx import AsyncClient


async def test_ready_and_openapi(client: AsyncClient) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 200, r.text
    paths = (await client.get("/openapi.json")).json()["paths"]
    prefixes = [
        "/v1/commission-plans",
        "/v1/quotas",
        "/v1/statements",
        "/v1/periods",
        "/v1/adjustments",
        "/v1/disputes",
        "/v1/leaderboard",
        "/v1/commissions",
    ]
    for prefix in prefixes:
        assert any(p.startswith(prefix) for p in paths), prefix


async def test_requests_need_a_token(client: AsyncClient) -> None:
    r = await client.get("/v1/statements")
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
