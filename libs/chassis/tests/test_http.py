from __future__ import annotations

import asyncpg
from httpx import AsyncClient
from sqlalchemy import text

from chassis.db import asyncpg_dsn
from chassis.testing import Infra

PROBLEM = "application/problem+json"


class TestProblems:
    async def test_missing_token_is_401_problem(self, client: AsyncClient) -> None:
        r = await client.post("/v1/widgets", json={"name": "a"})
        assert r.status_code == 401
        assert r.headers["content-type"] == PROBLEM
        assert r.json()["status"] == 401

    async def test_validation_error_names_the_field(
        self, client: AsyncClient, crm_infra: Infra
    ) -> None:
        r = await client.post("/v1/widgets", json={"nom": "a"}, headers=crm_infra.auth())
        assert r.status_code == 422
        assert r.headers["content-type"] == PROBLEM
        assert r.json()["errors"][0]["path"] == ["name"]

    async def test_body_over_the_limit_is_413(self, client: AsyncClient, crm_infra: Infra) -> None:
        r = await client.post("/v1/widgets", json={"name": "x" * 10_000}, headers=crm_infra.auth())
        assert r.status_code == 413
        assert r.headers["content-type"] == PROBLEM

    async def test_unknown_route_is_404_problem(self, client: AsyncClient) -> None:
        r = await client.get("/v1/nothing")
        assert r.status_code == 404
        assert r.headers["content-type"] == PROBLEM

    async def test_failure_midway_changes_nothing(
        self, client: AsyncClient, crm_infra: Infra, db_url: str
    ) -> None:
        r = await client.post("/v1/explode", headers=crm_infra.auth())
        assert r.status_code == 500
        assert r.headers["content-type"] == PROBLEM
        conn = await asyncpg.connect(asyncpg_dsn(db_url))
        try:
            assert await conn.fetchval("SELECT count(*) FROM widgets WHERE id = 'boom'") == 0
        finally:
            await conn.close()


class TestWriteRaces:
    async def test_unique_violation_is_409_not_500(
        self, client: AsyncClient, crm_infra: Infra
    ) -> None:
        h = crm_infra.auth()
        assert (await client.post("/v1/widgets/fixed", headers=h)).status_code == 201
        again = await client.post("/v1/widgets/fixed", headers=h)
        assert again.status_code == 409
        assert again.headers["content-type"] == PROBLEM
        assert "retry" in again.json()["detail"]

    async def test_a_failing_commit_is_the_response(
        self, client: AsyncClient, crm_infra: Infra, db_url: str
    ) -> None:
        """The commit happens before the response is sent: a write whose COMMIT fails (here a
        deferred constraint) answers an error, never the 201 of a write that did not land."""
        r = await client.post("/v1/widgets/deferred", headers=crm_infra.auth())
        assert r.status_code == 409, r.text
        assert r.headers["content-type"] == PROBLEM
        conn = await asyncpg.connect(asyncpg_dsn(db_url))
        try:
            assert await conn.fetchval("SELECT count(*) FROM deferred_pairs") == 0
        finally:
            await conn.close()


class TestConcurrency:
    async def test_if_match_required_then_checked(
        self, client: AsyncClient, crm_infra: Infra
    ) -> None:
        h = crm_infra.auth()
        created = await client.post("/v1/widgets", json={"name": "a"}, headers=h)
        assert created.headers["etag"] == '"1"'
        wid = created.json()["id"]
        r = await client.patch(f"/v1/widgets/{wid}", json={"name": "b"}, headers=h)
        assert r.status_code == 428
        r = await client.patch(
            f"/v1/widgets/{wid}", json={"name": "b"}, headers={**h, "If-Match": '"1"'}
        )
        assert r.status_code == 200
        assert r.headers["etag"] == '"2"'
        stale = await client.patch(
            f"/v1/widgets/{wid}", json={"name": "c"}, headers={**h, "If-Match": '"1"'}
        )
        assert stale.status_code == 412
        assert stale.json()["current_etag"] == '"2"'

    async def test_other_tenant_gets_404(self, client: AsyncClient, crm_infra: Infra) -> None:
        created = await client.post("/v1/widgets", json={"name": "a"}, headers=crm_infra.auth())
        wid = created.json()["id"]
        r = await client.patch(
            f"/v1/widgets/{wid}",
            json={"name": "b"},
            headers={**crm_infra.auth(tenant="globex"), "If-Match": '"1"'},
        )
        assert r.status_code == 404


class TestIdempotency:
    async def test_same_key_same_body_replays(
        self, client: AsyncClient, crm_infra: Infra, db_url: str
    ) -> None:
        h = {**crm_infra.auth(), "Idempotency-Key": "k-1"}
        first = await client.post("/v1/widgets", json={"name": "a"}, headers=h)
        second = await client.post("/v1/widgets", json={"name": "a"}, headers=h)
        assert first.status_code == second.status_code == 201
        assert second.json() == first.json()
        assert second.headers["idempotent-replayed"] == "true"
        assert second.headers["etag"] == first.headers["etag"]
        conn = await asyncpg.connect(asyncpg_dsn(db_url))
        try:
            assert await conn.fetchval("SELECT count(*) FROM widgets") == 1
        finally:
            await conn.close()

    async def test_same_key_other_body_is_422(self, client: AsyncClient, crm_infra: Infra) -> None:
        h = {**crm_infra.auth(), "Idempotency-Key": "k-2"}
        assert (await client.post("/v1/widgets", json={"name": "a"}, headers=h)).status_code == 201
        r = await client.post("/v1/widgets", json={"name": "other"}, headers=h)
        assert r.status_code == 422
        assert r.headers["content-type"] == PROBLEM

    async def test_keys_are_scoped_by_tenant(self, client: AsyncClient, crm_infra: Infra) -> None:
        a = await client.post(
            "/v1/widgets",
            json={"name": "a"},
            headers={**crm_infra.auth(), "Idempotency-Key": "k-3"},
        )
        b = await client.post(
            "/v1/widgets",
            json={"name": "a"},
            headers={**crm_infra.auth(tenant="globex"), "Idempotency-Key": "k-3"},
        )
        assert a.json()["id"] != b.json()["id"]

    async def test_failed_request_can_be_retried(
        self, client: AsyncClient, crm_infra: Infra, db_url: str
    ) -> None:
        h = {**crm_infra.auth(), "Idempotency-Key": "k-4"}
        assert (await client.post("/v1/explode", headers=h)).status_code == 500
        again = await client.post("/v1/explode", headers=h)
        assert again.status_code == 500
        assert "idempotent-replayed" not in again.headers


class TestOps:
    async def test_health_ready_metrics(self, client: AsyncClient) -> None:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["database"] == "ok"
        metrics = await client.get("/metrics")
        assert "crm_http_request_seconds" in metrics.text
        _ = text  # keep import used for type checkers
