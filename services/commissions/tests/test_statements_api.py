"""Statements, approval and payment, period close, adjustments, disputes, leaderboard and the
estimator over HTTP, with the BOLA/BFLA matrix: a rep sees only their own, a manager their
teams', an admin the tenant; approving needs a manager, paying and closing an admin."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from httpx import AsyncClient

EAST, WEST = str(uuid.UUID(int=11)), str(uuid.UUID(int=12))


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(hour=12, tzinfo=UTC)


@pytest.fixture
async def org(api: Any, events: Any) -> dict[str, dict[str, Any]]:
    """East: manager u-m, reps u-a and u-b; West: manager u-n, rep u-c. One plan for all;
    u-a and u-b both at 60000 credit (a tie), u-c at 30000, quotas 100000."""
    await events.team(EAST, "East", [("u-m", "manager"), ("u-a", "rep"), ("u-b", "rep")])
    await events.team(WEST, "West", [("u-n", "manager"), ("u-c", "rep")])
    await api.wait_team(WEST, 2)
    plan = await api.plan()
    for user in ("u-a", "u-b", "u-c"):
        await api.assign(plan, user_id=user)
        await api.quota(user, "2026-Q4", "100000.00")
    for user, amount in (("u-a", "60000.00"), ("u-b", "60000.00"), ("u-c", "30000.00")):
        await events.deal_won(str(uuid.uuid4()), amount, user, at("2026-11-03"))
    out = {}
    for user, payout in (("u-a", "3500.00"), ("u-b", "3500.00"), ("u-c", "1500.00")):
        out[user] = await api.wait_statement(user, "2026-Q4", payout=payout)
    return out


class TestVisibility:
    async def test_a_rep_sees_only_their_own_statements(
        self, client: AsyncClient, api: Any, org: dict[str, Any]
    ) -> None:
        r = await client.get("/v1/statements", headers=api.rep("u-a"))
        assert [s["user_id"] for s in r.json()["items"]] == ["u-a"]
        r = await client.get("/v1/statements", params={"user_id": "u-b"}, headers=api.rep("u-a"))
        assert r.json()["items"] == []
        own = await client.get(f"/v1/statements/{org['u-a']['id']}", headers=api.rep("u-a"))
        assert own.status_code == 200
        assert own.headers["ETag"] == f'"{org["u-a"]["version"]}"'
        other = await client.get(f"/v1/statements/{org['u-b']['id']}", headers=api.rep("u-a"))
        assert other.status_code == 404

    async def test_a_manager_sees_their_teams_and_an_admin_the_tenant(
        self, client: AsyncClient, api: Any, org: dict[str, Any]
    ) -> None:
        r = await client.get("/v1/statements", headers=api.manager("u-m"))
        assert [s["user_id"] for s in r.json()["items"]] == ["u-a", "u-b"]
        r = await client.get(f"/v1/statements/{org['u-c']['id']}", headers=api.manager("u-m"))
        assert r.status_code == 404
        r = await client.get("/v1/statements", headers=api.h())
        assert [s["user_id"] for s in r.json()["items"]] == ["u-a", "u-b", "u-c"]
        r = await client.get(f"/v1/statements/{org['u-c']['id']}", headers=api.h(tenant="beta"))
        assert r.status_code == 404
        r = await client.get("/v1/statements", headers=api.h("marketer", "u-x"))
        assert r.json()["items"] == []

    async def test_keyset_pagination(
        self, client: AsyncClient, api: Any, org: dict[str, Any]
    ) -> None:
        r = await client.get("/v1/statements", params={"limit": 2}, headers=api.h())
        first = r.json()
        assert len(first["items"]) == 2
        r = await client.get("/v1/statements", params={"limit": 2, "cursor": first["next_cursor"]},
                             headers=api.h())  # fmt: skip
        assert [s["user_id"] for s in r.json()["items"]] == ["u-c"]
        assert r.json()["next_cursor"] is None
        r = await client.get("/v1/statements", params={"cursor": "garbage!"}, headers=api.h())
        assert r.status_code == 422


class TestApproveAndPay:
    async def test_draft_approved_by_manager_then_paid_by_admin(
        self, client: AsyncClient, api: Any, org: dict[str, Any]
    ) -> None:
        st = org["u-a"]
        url = f"/v1/statements/{st['id']}"
        etag = {"If-Match": f'"{st["version"]}"'}
        r = await client.post(f"{url}/approve", headers=api.rep("u-a") | etag)
        assert r.status_code == 403
        r = await client.post(f"{url}/approve", headers=api.manager("u-n") | etag)
        assert r.status_code == 404  # not their team: invisible
        r = await client.post(f"{url}/approve", headers=api.manager("u-m"))
        assert r.status_code == 428
        r = await client.post(f"{url}/pay", headers=api.h() | etag)
        assert r.status_code == 409  # a draft is not paid
        r = await client.post(f"{url}/approve", headers=api.manager("u-m") | etag)
        assert r.status_code == 200, r.text
        approved = r.json()
        assert approved["status"] == "approved"
        assert approved["approved_by"] == "u-m"
        etag = {"If-Match": r.headers["ETag"]}
        r = await client.post(f"{url}/pay", headers=api.manager("u-m") | etag)
        assert r.status_code == 403
        r = await client.post(f"{url}/pay", headers=api.h() | etag)
        assert r.status_code == 200
        assert r.json()["status"] == "paid"
        assert r.json()["paid_by"] == "u-admin"
        actions = await api.fetch("SELECT action, actor FROM audit_log WHERE object_id = $1 "
                                  "ORDER BY id", st["id"])  # fmt: skip
        assert [(a["action"], a["actor"]) for a in actions] == [
            ("statement.approved", "u-m"), ("statement.paid", "u-admin")]  # fmt: skip

    async def test_a_manager_cannot_approve_their_own_statement(
        self, client: AsyncClient, api: Any, org: dict[str, Any], events: Any
    ) -> None:
        plan = (await client.get("/v1/commission-plans", headers=api.h())).json()["items"][0]
        await api.assign(plan, user_id="u-m")
        await events.deal_won(str(uuid.uuid4()), "1000.00", "u-m", at("2026-11-03"))
        st = await api.wait_statement("u-m", "2026-Q4")
        r = await client.post(f"/v1/statements/{st['id']}/approve",
                              headers=api.manager("u-m") | {"If-Match": "*"})  # fmt: skip
        assert r.status_code == 403


class TestPeriodClose:
    async def test_only_an_admin_closes_and_only_once(
        self, client: AsyncClient, api: Any, org: dict[str, Any]
    ) -> None:
        r = await client.post("/v1/periods/2026-Q4/close", headers=api.manager("u-m"))
        assert r.status_code == 403
        r = await client.post("/v1/periods/2026-Q4/close", headers=api.rep("u-a"))
        assert r.status_code == 403
        r = await client.post("/v1/periods/2026-Q4/close", headers=api.h())
        assert r.status_code == 200
        assert r.json()["statements"] == 3
        r = await client.post("/v1/periods/2026-Q4/close", headers=api.h())
        assert r.status_code == 409
        r = await client.get("/v1/periods/2026-Q4", headers=api.h())
        assert r.json()["closed"] is True
        assert await api.outbox_count("crm.commissions.period.closed.v1") == 1
        r = await client.post("/v1/periods/2026-Q9/close", headers=api.h())
        assert r.status_code == 422

    async def test_manual_adjustment_into_a_closed_period_is_refused(
        self, client: AsyncClient, api: Any, org: dict[str, Any]
    ) -> None:
        await client.post("/v1/periods/2026-Q4/close", headers=api.h())
        body = {"user_id": "u-a", "period": "2026-Q4", "amount": "100.00", "reason": "bonus"}
        r = await client.post("/v1/adjustments", json=body, headers=api.h())
        assert r.status_code == 409

    async def test_recompute_is_idempotent(
        self, client: AsyncClient, api: Any, org: dict[str, Any]
    ) -> None:
        r = await client.post("/v1/periods/2026-Q4/recompute", headers=api.h())
        assert r.json() == {"period": "2026-Q4", "statements": 3, "created": 0, "updated": 0,
                            "unchanged": 3}  # fmt: skip


class TestAdjustments:
    async def test_manager_books_an_adjustment_with_an_audit_trail(
        self, client: AsyncClient, api: Any, org: dict[str, Any]
    ) -> None:
        body = {"user_id": "u-a", "period": "2026-Q4", "amount": "250.50", "reason": "SPIF"}
        r = await client.post("/v1/adjustments", json=body, headers=api.rep("u-a"))
        assert r.status_code == 403
        r = await client.post("/v1/adjustments", json=body, headers=api.manager("u-n"))
        assert r.status_code == 403
        r = await client.post("/v1/adjustments", json=body, headers=api.manager("u-m"))
        assert r.status_code == 201, r.text
        adj = r.json()
        assert adj["created_by"] == "u-m"
        assert adj["kind"] == "manual"
        st = await api.statement("u-a", "2026-Q4")
        assert st["payout"] == "3750.50"
        r = await client.get(f"/v1/adjustments/{adj['id']}", headers=api.rep("u-b"))
        assert r.status_code == 404
        r = await client.get(f"/v1/adjustments/{adj['id']}", headers=api.rep("u-a"))
        assert r.status_code == 200
        r = await client.get("/v1/commissions/audit", params={"object_id": adj["id"]},
                             headers=api.h())  # fmt: skip
        [entry] = r.json()["items"]
        assert entry["actor"] == "u-m"
        assert entry["details"]["amount"] == "250.50"
        r = await client.get("/v1/commissions/audit", headers=api.manager("u-m"))
        assert r.status_code == 403

    @pytest.mark.parametrize(
        ("patch", "path"),
        [
            ({"amount": "ten"}, ["amount"]),
            ({"period": "Q4-2026"}, ["period"]),
            ({"reason": ""}, ["reason"]),
            ({"period": "2026-11"}, ["period"]),  # the plan is quarterly
        ],
    )
    async def test_bad_adjustments_are_422(
        self, client: AsyncClient, api: Any, org: dict[str, Any], patch: dict[str, Any],
        path: list[str],
    ) -> None:  # fmt: skip
        body = {"user_id": "u-a", "period": "2026-Q4", "amount": "1.00", "reason": "x", **patch}
        r = await client.post("/v1/adjustments", json=body, headers=api.h())
        assert r.status_code == 422, r.text
        assert path in [e["path"] for e in r.json()["errors"]]
        assert await api.fetchval("SELECT count(*) FROM adjustments") == 0


class TestDisputes:
    async def test_rep_disputes_a_line_and_the_manager_accepts_with_an_adjustment(
        self, client: AsyncClient, api: Any, org: dict[str, Any]
    ) -> None:
        st = org["u-a"]
        line = next(x for x in st["lines"] if x["kind"] == "deal")["id"]
        url = f"/v1/statements/{st['id']}/disputes"
        body = {"line_id": line, "reason": "split should be mine", "expected_amount": "200"}
        r = await client.post(url, json={**body, "line_id": "deal:nope"}, headers=api.rep("u-a"))
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == ["line_id"]
        r = await client.post(url, json=body, headers=api.rep("u-b"))
        assert r.status_code == 404
        r = await client.post(url, json=body, headers=api.manager("u-m"))
        assert r.status_code == 403
        r = await client.post(url, json=body, headers=api.rep("u-a"))
        assert r.status_code == 201, r.text
        dispute = r.json()
        assert dispute["status"] == "open"
        assert (await client.get(f"/v1/disputes/{dispute['id']}", headers=api.rep("u-b"))
                ).status_code == 404  # fmt: skip
        r = await client.get("/v1/disputes", headers=api.rep("u-a"))
        assert [d["id"] for d in r.json()["items"]] == [dispute["id"]]

        durl = f"/v1/disputes/{dispute['id']}"
        patch = {"status": "accepted", "resolution": "agreed", "adjustment_amount": "200.00"}
        r = await client.patch(durl, json=patch, headers=api.rep("u-a") | {"If-Match": '"1"'})
        assert r.status_code == 403
        r = await client.patch(durl, json=patch, headers=api.manager("u-n") | {"If-Match": '"1"'})
        assert r.status_code == 404
        r = await client.patch(durl, json=patch, headers=api.manager("u-m"))
        assert r.status_code == 428
        r = await client.patch(durl, json=patch, headers=api.manager("u-m") | {"If-Match": '"1"'})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "accepted"
        assert r.json()["adjustment_id"] is not None
        after = await api.statement("u-a", "2026-Q4")
        assert after["payout"] == "3700.00"
        assert [a["type"] for a in after["lines"] if a["kind"] == "adjustment"] == ["dispute"]
        r = await client.patch(durl, json=patch, headers=api.manager("u-m") | {"If-Match": '"2"'})
        assert r.status_code == 409
        assert await api.outbox_count("crm.commissions.dispute.opened.v1") == 1
        assert await api.outbox_count("crm.commissions.dispute.resolved.v1") == 1

    async def test_rejecting_books_nothing(
        self, client: AsyncClient, api: Any, org: dict[str, Any]
    ) -> None:
        st = org["u-a"]
        r = await client.post(f"/v1/statements/{st['id']}/disputes",
                              json={"line_id": "tier:1:0", "reason": "rate"},
                              headers=api.rep("u-a"))  # fmt: skip
        assert r.status_code == 201
        durl = f"/v1/disputes/{r.json()['id']}"
        bad = {"status": "rejected", "resolution": "no", "adjustment_amount": "5"}
        r = await client.patch(durl, json=bad, headers=api.manager("u-m") | {"If-Match": '"1"'})
        assert r.status_code == 422
        ok = {"status": "rejected", "resolution": "rate is right"}
        r = await client.patch(durl, json=ok, headers=api.manager("u-m") | {"If-Match": '"1"'})
        assert r.status_code == 200
        assert await api.fetchval("SELECT count(*) FROM adjustments") == 0


class TestLeaderboard:
    async def test_ranked_with_shared_ties_and_visible_to_the_team(
        self, client: AsyncClient, api: Any, org: dict[str, Any]
    ) -> None:
        r = await client.get("/v1/leaderboard", params={"period": "2026-Q4"}, headers=api.h())
        assert r.json()["items"] == [
            {"rank": 1, "user_id": "u-a", "value": "0.6000"},
            {"rank": 1, "user_id": "u-b", "value": "0.6000"},
            {"rank": 3, "user_id": "u-c", "value": "0.3000"},
        ]
        r = await client.get("/v1/leaderboard", params={"period": "2026-Q4", "metric": "credit"},
                             headers=api.rep("u-b"))  # fmt: skip
        assert [(e["rank"], e["user_id"]) for e in r.json()["items"]] == [(1, "u-a"), (1, "u-b")]
        r = await client.get("/v1/leaderboard", headers=api.rep("u-a"),
                             params={"period": "2026-Q4", "metric": "deals_won",
                                     "team_id": WEST})  # fmt: skip
        assert r.status_code == 404
        r = await client.get("/v1/leaderboard", headers=api.manager("u-n"),
                             params={"period": "2026-Q4", "team_id": WEST})  # fmt: skip
        assert [e["user_id"] for e in r.json()["items"]] == ["u-c"]
        r = await client.get("/v1/leaderboard", params={"period": "2026-Q4", "metric": "x"},
                             headers=api.h())  # fmt: skip
        assert r.status_code == 422


class TestEstimate:
    async def test_what_would_i_earn(
        self, client: AsyncClient, api: Any, org: dict[str, Any]
    ) -> None:
        params = {"amount": "50000.00", "currency": "USD", "close_date": "2026-12-01",
                  "item": "Onboarding:2"}  # fmt: skip
        r = await client.get("/v1/commissions/estimate", params=params, headers=api.rep("u-a"))
        assert r.status_code == 200, r.text
        est = r.json()
        # 60000 -> 110000: 4000 more at 10%, 10000 at 15%, plus 200 of spiffs
        assert est["payout_before"] == "3500.00"
        assert est["payout_after"] == "9200.00"
        assert est["earned"] == "5700.00"
        assert (await api.statement("u-a", "2026-Q4"))["payout"] == "3500.00"  # nothing saved
        r = await client.get("/v1/commissions/estimate", params={**params, "user_id": "u-b"},
                             headers=api.rep("u-a"))  # fmt: skip
        assert r.status_code == 404
        r = await client.get("/v1/commissions/estimate", params={**params, "user_id": "u-b"},
                             headers=api.manager("u-m"))  # fmt: skip
        assert r.status_code == 200
        r = await client.get("/v1/commissions/estimate", params={**params, "item": "junk"},
                             headers=api.rep("u-a"))  # fmt: skip
        assert r.status_code == 422
        r = await client.get("/v1/commissions/estimate", params={**params, "amount": "-5"},
                             headers=api.rep("u-a"))  # fmt: skip
        assert r.status_code == 422
