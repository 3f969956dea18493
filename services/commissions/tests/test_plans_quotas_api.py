"""Plans, versions, assignments and quotas over HTTP, with bad input."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from httpx import AsyncClient

PLAN: dict[str, Any] = {
    "name": "AE",
    "period": "quarter",
    "currency": "USD",
    "effective_from": "2026-01-01",
    "tiers": [
        {"from": "0", "to": "0.5", "rate": "0.05"},
        {"from": "0.5", "to": None, "rate": "0.10"},
    ],
}


class TestCreatePlan:
    async def test_created_with_version_history_and_etag(
        self, client: AsyncClient, api: Any
    ) -> None:
        r = await client.post("/v1/commission-plans", json=PLAN, headers=api.h())
        assert r.status_code == 201, r.text
        body = r.json()
        assert r.headers["ETag"] == '"1"'
        assert body["latest_version"] == 1
        [v] = body["versions"]
        assert v["tiers"][1] == {"from": "0.5", "to": None, "rate": "0.10"}
        assert v["created_by"] == "u-admin"
        assert await api.outbox_count("crm.commissions.plan.changed.v1") == 1
        r = await client.get(f"/v1/commission-plans/{body['id']}", headers=api.rep("u-a"))
        assert r.status_code == 200

    @pytest.mark.parametrize(
        ("tiers", "path"),
        [
            ([{"from": "0", "to": "0.5", "rate": "0.05"}, {"from": "0.6", "to": None,
              "rate": "0.1"}], ["tiers", 1, "from"]),
            ([{"from": "0.1", "to": None, "rate": "0.05"}], ["tiers", 0, "from"]),
            ([{"from": "0", "to": "1", "rate": "0.05"}], ["tiers", 0, "to"]),
            ([{"from": "0", "to": "1", "rate": "0.05"}, {"from": "0.5", "to": None,
              "rate": "0.1"}], ["tiers", 1, "from"]),
            ([], ["tiers"]),
        ],
    )  # fmt: skip
    async def test_bad_tiers_are_422_naming_the_field_and_create_nothing(
        self, client: AsyncClient, api: Any, tiers: list[dict[str, Any]], path: list[Any]
    ) -> None:
        r = await client.post("/v1/commission-plans", json={**PLAN, "tiers": tiers},
                              headers=api.h())  # fmt: skip
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert path in [e["path"] for e in r.json()["errors"]]
        assert await api.fetchval("SELECT count(*) FROM plans") == 0

    @pytest.mark.parametrize(
        ("patch", "path"),
        [
            ({"currency": "usd"}, ["currency"]),
            ({"period": "week"}, ["period"]),
            ({"cap": "-1"}, ["cap"]),
            ({"tiers": [{"from": "0", "to": None, "rate": 0.1, "extra": 1}]},
             ["tiers", 0, "extra"]),
            ({"tier_mode": "flat"}, ["tier_mode"]),
            ({"clawback_days": -1}, ["clawback_days"]),
            ({"spiffs": [{"product": "X", "amount_per_unit": "1"},
                         {"product": "X", "amount_per_unit": "2"}]}, ["spiffs", 1, "product"]),
        ],
    )  # fmt: skip
    async def test_other_bad_fields_are_422(
        self, client: AsyncClient, api: Any, patch: dict[str, Any], path: list[Any]
    ) -> None:
        r = await client.post("/v1/commission-plans", json={**PLAN, **patch}, headers=api.h())
        assert r.status_code == 422, r.text
        assert path in [e["path"] for e in r.json()["errors"]]

    async def test_only_an_admin_creates_plans(self, client: AsyncClient, api: Any) -> None:
        for headers in (api.rep("u-a"), api.manager("u-m")):
            r = await client.post("/v1/commission-plans", json=PLAN, headers=headers)
            assert r.status_code == 403
        assert await api.fetchval("SELECT count(*) FROM plans") == 0

    async def test_another_tenants_plan_is_404(self, client: AsyncClient, api: Any) -> None:
        plan = await api.plan()
        r = await client.get(f"/v1/commission-plans/{plan['id']}", headers=api.h(tenant="beta"))
        assert r.status_code == 404


class TestPlanVersions:
    async def test_put_adds_a_version_and_keeps_history(
        self, client: AsyncClient, api: Any
    ) -> None:
        plan = await api.plan()
        url = f"/v1/commission-plans/{plan['id']}"
        v2 = {**PLAN, "name": "AE v2", "effective_from": "2026-07-01"}
        r = await client.put(url, json=v2, headers=api.h())
        assert r.status_code == 428
        r = await client.put(url, json=v2, headers=api.h(**{"If-Match": '"7"'}))
        assert r.status_code == 412
        r = await client.put(url, json=v2, headers=api.h(**{"If-Match": '"1"'}))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["latest_version"] == 2
        assert [v["effective_from"] for v in body["versions"]] == ["2026-01-01", "2026-07-01"]
        assert r.headers["ETag"] == '"2"'

    async def test_period_and_currency_are_fixed(self, client: AsyncClient, api: Any) -> None:
        plan = await api.plan()
        r = await client.put(
            f"/v1/commission-plans/{plan['id']}", json={**PLAN, "currency": "EUR"},
            headers=api.h(**{"If-Match": '"1"'}),
        )  # fmt: skip
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == ["currency"]

    async def test_a_new_version_recomputes_retroactively(
        self, client: AsyncClient, api: Any, events: Any
    ) -> None:
        from datetime import UTC, datetime

        plan = await api.plan(tier_basis="amount", cap=None,
                              tiers=[{"from": "0", "to": None, "rate": "0.05"}])  # fmt: skip
        await api.assign(plan, user_id="u-a")
        await events.deal_won(str(uuid.uuid4()), "1000.00", "u-a",
                              datetime(2026, 11, 5, tzinfo=UTC))  # fmt: skip
        await api.wait_statement("u-a", "2026-Q4", payout="50.00")
        body = {**PLAN, "tier_basis": "amount", "effective_from": "2026-11-01",
                "tiers": [{"from": "0", "to": None, "rate": "0.08"}]}  # fmt: skip
        r = await client.put(f"/v1/commission-plans/{plan['id']}", json=body,
                             headers=api.h(**{"If-Match": '"2"'}))  # fmt: skip
        assert r.status_code == 200, r.text
        st = await api.statement("u-a", "2026-Q4")
        assert st["payout"] == "80.00"
        assert st["plan_version"] == 2


class TestAssignments:
    @pytest.mark.parametrize(
        "body",
        [
            {"effective_from": "2026-01-01"},
            {"user_id": "u-a", "team_id": str(uuid.UUID(int=1)), "effective_from": "2026-01-01"},
            {"user_id": "u-a", "effective_from": "2026-02-01", "effective_to": "2026-01-01"},
            {"user_id": "u-a", "effective_from": "not a date"},
        ],
    )
    async def test_bad_assignments_are_422(
        self, client: AsyncClient, api: Any, body: dict[str, Any]
    ) -> None:
        plan = await api.plan()
        r = await client.post(f"/v1/commission-plans/{plan['id']}/assignments", json=body,
                              headers=api.h())  # fmt: skip
        assert r.status_code == 422, r.text
        assert await api.fetchval("SELECT count(*) FROM plan_assignments") == 0

    async def test_listed(self, client: AsyncClient, api: Any) -> None:
        plan = await api.plan()
        a = await api.assign(plan, user_id="u-a", effective_to="2026-12-31")
        r = await client.get(f"/v1/commission-plans/{plan['id']}/assignments", headers=api.h())
        assert [x["id"] for x in r.json()["items"]] == [a["id"]]
        assert a["effective_to"] == "2026-12-31"


class TestQuotas:
    async def test_admin_sets_and_replaces_a_quota(self, client: AsyncClient, api: Any) -> None:
        url = "/v1/quotas/u-a/2026-Q4"
        r = await client.put(url, json={"amount": "100000.00", "currency": "USD"},
                             headers=api.h())  # fmt: skip
        assert r.status_code == 201, r.text
        assert r.json()["amount"] == "100000.00"
        assert r.json()["id"] == "user:u-a:2026-Q4"
        r = await client.put(url, json={"amount": "120000.00", "currency": "USD"},
                             headers=api.h())  # fmt: skip
        assert r.status_code == 428
        r = await client.put(url, json={"amount": "120000.00", "currency": "USD"},
                             headers=api.h(**{"If-Match": '"1"'}))  # fmt: skip
        assert r.status_code == 200
        assert r.json()["version"] == 2
        assert await api.outbox_count("crm.commissions.quota.set.v1") == 2
        r = await client.get(url, headers=api.rep("u-a"))
        assert r.json()["amount"] == "120000.00"
        assert (await client.get(url, headers=api.rep("u-b"))).status_code == 404

    async def test_a_rep_setting_any_quota_gets_403(self, client: AsyncClient, api: Any) -> None:
        for url in ("/v1/quotas/u-a/2026-Q4", "/v1/quotas/u-b/2026-Q4",
                    f"/v1/quotas/teams/{uuid.uuid4()}/2026-Q4"):  # fmt: skip
            r = await client.put(url, json={"amount": "1.00", "currency": "USD"},
                                 headers=api.rep("u-a"))  # fmt: skip
            assert r.status_code == 403, url
        assert await api.fetchval("SELECT count(*) FROM quotas") == 0

    async def test_managers_set_quotas_of_their_team_only(
        self, client: AsyncClient, api: Any, events: Any
    ) -> None:
        east, sub, west = (str(uuid.uuid4()) for _ in range(3))
        await events.team(east, "East", [("u-m", "manager"), ("u-a", "rep")])
        await events.team(sub, "East SMB", [("u-s", "rep")], parent_id=east)
        await events.team(west, "West", [("u-w", "rep")])
        await api.wait_team(west, 1)
        body = {"amount": "5000.00", "currency": "USD"}
        for user, status in (("u-a", 201), ("u-s", 201), ("u-w", 403), ("u-m", 403)):
            r = await client.put(f"/v1/quotas/{user}/2026-Q4", json=body,
                                 headers=api.manager("u-m"))  # fmt: skip
            assert r.status_code == status, (user, r.text)
        r = await client.put(f"/v1/quotas/teams/{east}/2026-Q4", json=body,
                             headers=api.manager("u-m"))  # fmt: skip
        assert r.status_code == 201
        assert r.json()["team_id"] == east
        r = await client.put(f"/v1/quotas/teams/{west}/2026-Q4", json=body,
                             headers=api.manager("u-m"))  # fmt: skip
        assert r.status_code == 403

    @pytest.mark.parametrize(
        ("url", "body", "path"),
        [
            ("/v1/quotas/u-a/2026-Q5", {"amount": "1", "currency": "USD"}, ["period"]),
            ("/v1/quotas/u-a/2026-Q4", {"amount": "-1", "currency": "USD"}, ["amount"]),
            ("/v1/quotas/u-a/2026-Q4", {"amount": "abc", "currency": "USD"}, ["amount"]),
            ("/v1/quotas/u-a/2026-Q4", {"amount": "1", "currency": "dollars"}, ["currency"]),
            ("/v1/quotas/teams/not-a-uuid/2026-Q4", {"amount": "1", "currency": "USD"},
             ["team_id"]),
        ],
    )  # fmt: skip
    async def test_bad_quota_input_is_422(
        self, client: AsyncClient, api: Any, url: str, body: dict[str, Any], path: list[str]
    ) -> None:
        r = await client.put(url, json=body, headers=api.h())
        assert r.status_code == 422, r.text
        assert path in [e["path"] for e in r.json()["errors"]]
        assert await api.fetchval("SELECT count(*) FROM quotas") == 0


class TestQuotaReads:
    async def test_lists_only_visible_quotas_and_team_quota_reads(
        self, client: AsyncClient, api: Any, events: Any
    ) -> None:
        team = str(uuid.uuid4())
        await events.team(team, "East", [("u-m", "manager"), ("u-a", "rep")])
        await api.wait_team(team, 2)
        await api.quota("u-a", "2026-Q4", "100.00")
        await api.quota("u-b", "2026-Q4", "200.00")
        r = await client.get("/v1/quotas", params={"period": "2026-Q4"}, headers=api.h())
        assert [q["user_id"] for q in r.json()["items"]] == ["u-a", "u-b"]
        r = await client.get("/v1/quotas", headers=api.manager("u-m"))
        assert [q["user_id"] for q in r.json()["items"]] == ["u-a"]
        r = await client.get("/v1/quotas", headers=api.rep("u-b"))
        assert [q["amount"] for q in r.json()["items"]] == ["200.00"]
        body = {"amount": "300.00", "currency": "USD"}
        r = await client.put(f"/v1/quotas/teams/{team}/2026-Q4", json=body, headers=api.h())
        assert r.status_code == 201
        r = await client.get(f"/v1/quotas/teams/{team}/2026-Q4", headers=api.rep("u-a"))
        assert r.json()["amount"] == "300.00"
        r = await client.get(f"/v1/quotas/teams/{team}/2026-Q4", headers=api.rep("u-b"))
        assert r.status_code == 404
        r = await client.get("/v1/quotas", params={"period": "Q4"}, headers=api.h())
        assert r.status_code == 422


class TestBookSnapshot:
    async def test_a_plan_created_while_the_book_loads_is_left_for_the_next_load(
        self, api: Any, db_url: str
    ) -> None:
        """Plans and their versions are read by two statements; a plan committed between them
        must not break the load (it was a 500 on a concurrent assignment)."""
        import asyncpg

        from chassis.db import asyncpg_dsn
        from commissions.org import Book

        first = await api.plan()
        conn = await asyncpg.connect(asyncpg_dsn(db_url))
        made: list[dict[str, Any]] = []

        class Interleaved:
            async def fetch(self, query: str, *args: Any) -> Any:
                rows = await conn.fetch(query, *args)
                if "FROM plans" in query and not made:
                    made.append(await api.plan(name="Committed meanwhile"))
                return rows

        try:
            book = await Book.load(Interleaved(), "acme")
            again = await Book.load(conn, "acme")
        finally:
            await conn.close()
        assert list(book.plans) == [first["id"]]
        assert book.plans[first["id"]].versions
        assert set(again.plans) == {first["id"], made[0]["id"]}
