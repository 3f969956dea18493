"""End to end through NATS: pipeline events -> credits -> statements, clawbacks in open and
closed periods, idempotent redelivery and order independence."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from httpx import AsyncClient

from chassis.testing import wait_for


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(hour=12, tzinfo=UTC)


def did() -> str:
    return str(uuid.uuid4())


def lines_of(st: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [line for line in st["lines"] if line["kind"] == kind]


class TestDealWonToStatement:
    async def test_won_deals_make_a_statement_and_a_reopen_claws_back(
        self, api: Any, events: Any
    ) -> None:
        plan = await api.plan()
        await api.assign(plan, user_id="u-a")
        await api.quota("u-a", "2026-Q4", "100000.00")
        d1, d2 = did(), did()
        await events.deal_won(d1, "70000.00", "u-a", at("2026-11-02"))
        await events.deal_won(d2, "50000.00", "u-a", at("2026-11-10"),
                              items=[("Onboarding", "3")])  # fmt: skip
        # 2500 + 5000 + 3000 of tiers, 300 of spiffs
        st = await api.wait_statement("u-a", "2026-Q4", payout="10800.00")
        assert st["credit"] == "120000.00"
        assert st["quota"] == "100000.00"
        assert st["attainment"] == "1.2000"
        assert st["status"] == "draft"
        assert st["plan_id"] == plan["id"]
        assert {line["deal_id"] for line in lines_of(st, "deal")} == {d1, d2}
        assert [Decimal(t["base"]) for t in lines_of(st, "tier")] == [50000, 50000, 20000]
        assert [Decimal(s["payout"]) for s in lines_of(st, "spiff")] == [300]
        version = st["version"]

        await events.deal_reopened(d2, "50000.00", "u-a", at("2026-11-20"))
        st = await api.wait_statement("u-a", "2026-Q4", payout="4500.00")
        assert st["credit"] == "70000.00"
        assert st["version"] > version
        claw = lines_of(st, "clawback")
        assert [c["deal_id"] for c in claw] == [d2]
        assert await api.outbox_count("crm.commissions.statement.updated.v1") == st["version"]

    async def test_closed_period_clawback_is_booked_into_the_next_open_period(
        self, api: Any, events: Any, client: AsyncClient
    ) -> None:
        plan = await api.plan()
        await api.assign(plan, user_id="u-a")
        await api.quota("u-a", "2026-Q3", "100000.00")
        d1, d2 = did(), did()
        await events.deal_won(d1, "60000.00", "u-a", at("2026-09-10"))
        await events.deal_won(d2, "40000.00", "u-a", at("2026-09-20"))
        q3 = await api.wait_statement("u-a", "2026-Q3", payout="7500.00")
        r = await client.post("/v1/periods/2026-Q3/close", headers=api.h())
        assert r.status_code == 200, r.text
        assert r.json()["statements"] == 1
        locked = await api.statement("u-a", "2026-Q3")
        assert locked["locked"] is True

        await events.deal_reopened(d2, "40000.00", "u-a", at("2026-10-05"))
        # Q3 without d2: 60000 -> 2500 + 1000 = 3500, so -4000 lands in Q4
        q4 = await api.wait_statement("u-a", "2026-Q4", payout="-4000.00")
        adj = lines_of(q4, "adjustment")
        assert len(adj) == 1
        assert adj[0]["type"] == "clawback"
        assert adj[0]["origin_period"] == "2026-Q3"
        assert Decimal(adj[0]["payout"]) == Decimal("-4000.00")
        after = await api.statement("u-a", "2026-Q3")
        assert after["payout"] == q3["payout"] == "7500.00"
        assert after["version"] == locked["version"]
        assert after["lines"] == locked["lines"]
        r = await client.get("/v1/adjustments", params={"user_id": "u-a"}, headers=api.h())
        [booked] = r.json()["items"]
        assert booked["kind"] == "clawback"
        assert booked["period"] == "2026-Q4"
        assert booked["created_by"] == "system"
        assert await api.outbox_count("crm.commissions.adjustment.booked.v1") == 1

        # a second change of the closed period books only the further difference
        await events.deal_won(d2, "40000.00", "u-a", at("2026-09-20"))
        q4 = await api.wait_statement("u-a", "2026-Q4", payout="0.00")
        assert [a["type"] for a in lines_of(q4, "adjustment")] == ["clawback", "correction"]

    async def test_reopen_after_the_clawback_window_keeps_the_credit(
        self, api: Any, events: Any
    ) -> None:
        plan = await api.plan(clawback_days=10)
        await api.assign(plan, user_id="u-a")
        await api.quota("u-a", "2026-Q4", "100000.00")
        d1 = did()
        await events.deal_won(d1, "10000.00", "u-a", at("2026-11-02"))
        st = await api.wait_statement("u-a", "2026-Q4", payout="500.00")
        await events.deal_reopened(d1, "10000.00", "u-a", at("2026-11-30"))
        await api.wait_consumed(2)
        again = await api.statement("u-a", "2026-Q4")
        assert again["payout"] == "500.00"
        assert again["version"] == st["version"]

    async def test_splits_credit_each_user(self, api: Any, events: Any) -> None:
        plan = await api.plan(tier_basis="amount", cap=None, tiers=[
            {"from": "0", "to": None, "rate": "0.10"}])  # fmt: skip
        await api.assign(plan, user_id="u-a")
        await api.assign(plan, user_id="u-b")
        await events.deal_won(did(), "10000.00", "u-a", at("2026-11-02"),
                              splits=[("u-a", "60"), ("u-b", "40")])  # fmt: skip
        a = await api.wait_statement("u-a", "2026-Q4", payout="600.00")
        b = await api.wait_statement("u-b", "2026-Q4", payout="400.00")
        assert Decimal(a["credit"]) + Decimal(b["credit"]) == Decimal("10000.00")
        assert lines_of(b, "deal")[0]["split"] == "40"

    async def test_orders_credit_an_order_paid_plan_and_refunds_claw_back(
        self, api: Any, events: Any
    ) -> None:
        plan = await api.plan(credit_on="order_paid", tier_basis="amount", cap=None,
                              tiers=[{"from": "0", "to": None, "rate": "0.05"}])  # fmt: skip
        await api.assign(plan, user_id="u-a")
        o1 = did()
        await events.order_paid(o1, "2000.00", "u-a", at("2026-11-02"))
        await events.deal_won(did(), "99999.00", "u-a", at("2026-11-03"))  # not this plan's
        st = await api.wait_statement("u-a", "2026-Q4", payout="100.00")
        assert [line["order_id"] for line in lines_of(st, "order")] == [o1]
        await events.order_refunded(o1, "2000.00", "u-a", at("2026-11-15"))
        st = await api.wait_statement("u-a", "2026-Q4", payout="0.00")
        assert st["credit"] == "0.00"

    async def test_team_assignment_applies_to_members(self, api: Any, events: Any) -> None:
        team = did()
        await events.team(team, "East", [("u-m", "manager"), ("u-t", "rep")])
        await api.wait_team(team, 2)
        plan = await api.plan(tier_basis="amount", cap=None,
                              tiers=[{"from": "0", "to": None, "rate": "0.10"}])  # fmt: skip
        await api.assign(plan, team_id=team)
        await events.deal_won(did(), "1000.00", "u-t", at("2026-11-02"))
        st = await api.wait_statement("u-t", "2026-Q4", payout="100.00")
        assert st["plan_id"] == plan["id"]


class TestIdempotence:
    async def test_a_redelivered_or_repeated_event_changes_nothing(
        self, api: Any, events: Any
    ) -> None:
        plan = await api.plan()
        await api.assign(plan, user_id="u-a")
        await api.quota("u-a", "2026-Q4", "100000.00")
        d1 = did()
        won = await events.deal_won(d1, "70000.00", "u-a", at("2026-11-02"))
        st = await api.wait_statement("u-a", "2026-Q4", payout="4500.00")
        await events.redeliver(won)
        # the same state again as an update (a sync replaying it)
        await events.deal_updated(d1, "70000.00", "u-a", at("2026-11-02"))
        # a sentinel after them in the stream: once it is applied, so were they
        sentinel = did()
        await events.deal_won(sentinel, "0.00", "u-x", at("2026-11-02"))
        await wait_for(
            lambda: api.fetchval("SELECT count(*) FROM credits WHERE source_id = $1", sentinel),
            message="sentinel credit",
        )
        again = await api.statement("u-a", "2026-Q4")
        assert again["version"] == st["version"]
        assert again["lines"] == st["lines"]
        assert await api.outbox_count("crm.commissions.statement.updated.v1") == st["version"]

    async def test_recomputation_is_independent_of_event_order(self, api: Any, events: Any) -> None:
        deals = [(did(), amount, f"2026-11-{day:02d}") for amount, day in
                 (("30000.00", 3), ("45000.50", 9), ("12345.67", 17))]  # fmt: skip
        for tenant, order in (("acme", [0, 1, 2]), ("beta", [2, 0, 1])):
            plan = await api.plan(tenant=tenant)
            await api.assign(plan, tenant=tenant, user_id="u-a")
            await api.quota("u-a", "2026-Q4", "100000.00", tenant=tenant)
            for i in order:
                d, amount, day = deals[i]
                await events.deal_won(d, amount, "u-a", at(day), tenant=tenant,
                                      items=[("Onboarding", "1")])  # fmt: skip
        a = await api.wait_statement("u-a", "2026-Q4", payout="6534.62")
        b = await api.wait_statement("u-a", "2026-Q4", payout="6534.62", tenant="beta")
        assert a["lines"] == b["lines"]
        assert (a["credit"], a["attainment"]) == (b["credit"], b["attainment"]) == (
            "87346.17", "0.8735")  # fmt: skip


class TestChangesAfterApproval:
    async def test_a_changed_approved_statement_needs_approval_again(
        self, api: Any, events: Any, client: AsyncClient
    ) -> None:
        plan = await api.plan()
        await api.assign(plan, user_id="u-a")
        await api.quota("u-a", "2026-Q4", "100000.00")
        d1 = did()
        await events.deal_won(d1, "10000.00", "u-a", at("2026-11-02"))
        st = await api.wait_statement("u-a", "2026-Q4", payout="500.00")
        r = await client.post(f"/v1/statements/{st['id']}/approve",
                              headers=api.h(**{"If-Match": f'"{st["version"]}"'}))  # fmt: skip
        assert r.json()["status"] == "approved"
        await events.deal_updated(d1, "20000.00", "u-a", at("2026-11-02"))
        st = await api.wait_statement("u-a", "2026-Q4", payout="1000.00")
        assert st["status"] == "draft"
        assert st["approved_by"] is None

    async def test_a_paid_statement_is_corrected_in_the_next_period(
        self, api: Any, events: Any, client: AsyncClient
    ) -> None:
        plan = await api.plan()
        await api.assign(plan, user_id="u-a")
        await api.quota("u-a", "2026-Q4", "100000.00")
        d1 = did()
        await events.deal_won(d1, "10000.00", "u-a", at("2026-11-02"))
        st = await api.wait_statement("u-a", "2026-Q4", payout="500.00")
        for action in ("approve", "pay"):
            r = await client.post(f"/v1/statements/{st['id']}/{action}",
                                  headers=api.h(**{"If-Match": "*"}))  # fmt: skip
            assert r.status_code == 200, r.text
        await events.deal_reopened(d1, "10000.00", "u-a", at("2026-11-20"))
        q1 = await api.wait_statement("u-a", "2027-Q1", payout="-500.00")
        assert [a["type"] for a in lines_of(q1, "adjustment")] == ["clawback"]
        paid = await api.statement("u-a", "2026-Q4")
        assert (paid["status"], paid["payout"]) == ("paid", "500.00")


class TestOrgReplica:
    async def test_team_events_maintain_the_replica(self, api: Any, events: Any) -> None:
        east, sub = did(), did()
        await events.team(east, "East", [("u-m", "manager"), ("u-a", "rep")])
        await events.team(sub, "East SMB", [("u-b", "rep")], parent_id=east)
        await api.wait_team(sub, 1)
        await events.team(east, "East", [("u-m", "manager")])
        await api.wait_team(east, 1)
        assert await api.fetchval("SELECT parent_id FROM teams WHERE id = $1",
                                  uuid.UUID(sub)) == uuid.UUID(east)  # fmt: skip
        await events.team_deleted(sub)
        await wait_for(
            lambda: api.fetchval("SELECT count(*) = 1 FROM teams"), message="team deleted"
        )
        assert await api.fetchval("SELECT count(*) FROM team_members WHERE team_id = $1",
                                  uuid.UUID(sub)) == 0  # fmt: skip


class TestOtherSources:
    async def test_a_deleted_deal_is_clawed_back_and_other_currencies_are_reported(
        self, api: Any, events: Any
    ) -> None:
        plan = await api.plan(tier_basis="amount", cap=None,
                              tiers=[{"from": "0", "to": None, "rate": "0.10"}])  # fmt: skip
        await api.assign(plan, user_id="u-a")
        d1, d2 = did(), did()
        await events.deal_won(d1, "1000.00", "u-a", at("2026-11-02"))
        await events.deal_won(d2, "500.00", "u-a", at("2026-11-03"), currency="EUR")

        # Both events change the statement (the EUR deal only adds an excluded line, not
        # payout): wait for the second one too.
        async def both_applied() -> dict[str, Any] | None:
            st = await api.statement("u-a", "2026-Q4")
            return st if st and st["payout"] == "100.00" and lines_of(st, "excluded") else None

        st = await wait_for(both_applied, timeout=15, message="both deals in the statement")
        [excluded] = lines_of(st, "excluded")
        assert (excluded["deal_id"], excluded["currency"]) == (d2, "EUR")
        assert st["credit"] == "1000.00"
        await events.deal_deleted(d1, "u-a", at("2026-11-04"))
        st = await api.wait_statement("u-a", "2026-Q4", payout="0.00")
        assert [c["deal_id"] for c in lines_of(st, "clawback")] == [d1]
