"""The service starts on its migrated database and answers its health checks."""

from __future__ import annotations

from httpx import AsyncClient


async def test_ready(client: AsyncClient) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 200, r.text
