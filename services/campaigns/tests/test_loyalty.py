"""Loyalty: earning from pipeline events, reversal, tiers, expiry, redemption (including
concurrent redemptions that must never overdraw), bad input."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from httpx import AsyncClient

from campaigns.loyalty import points_for, tier_for
from chassis.testing import wait_for

PROGRAM = {
    "name": "Rewards",
    "currency": "USD",
    "points_per_unit": "1",
    "earn_on": "deal_won",
    "tiers": [{"name": "Silver", "min_points": 0}, {"name": "Gold", "min_points": 5000}],
    "points_expire_days": 365,
}


async def balance_is(client: AsyncClient, contact: str, balance: int) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        r = await client.get(f"/v1/loyalty/members/{contact}")
        body: dict[str, Any] = r.json()
        return body if r.status_code == 200 and body["balance"] == balance else None

    return await wait_for(probe, timeout=10, message=f"balance {balance}")


class TestMath:
    def test_points_are_floored(self) -> None:
        from decimal import Decimal

        assert points_for(Decimal("6000.99"), Decimal("1")) == 6000
        assert points_for(Decimal("10.5"), Decimal("1.5")) == 15
        assert points_for(Decimal("0.99"), Decimal("1")) == 0

    def test_tiers(self) -> None:
        tiers = PROGRAM["tiers"]
        assert tier_for(tiers, 0)[0] == "Silver"  # type: ignore[arg-type]
        tier, nxt = tier_for(tiers, 4999)  # type: ignore[arg-type]
        assert tier == "Silver"
        assert nxt is not None
        assert nxt.points_needed == 1
        assert tier_for(tiers, 5000) == ("Gold", None)  # type: ignore[arg-type]


class TestEarning:
    async def test_deal_won_earns_and_reopen_reverses(
        self, client: AsyncClient, upstream: Any, db: asyncpg.Connection
    ) -> None:
        r = await client.post("/v1/loyalty/programs", json=PROGRAM)
        assert r.status_code == 201, r.text
        contact = await upstream.contact()
        await upstream.wait_contact(contact)
        deal = await upstream.deal_won("acme", contact, "6000.75")
        member = await balance_is(client, contact, 6000)
        assert (member["tier"], member["points_365d"], member["next_tier"]) == ("Gold", 6000, None)
        assert [(h["kind"], h["points"], h["source"]) for h in member["history"]] == [
            ("earn", 6000, f"deal:{deal}")
        ]
        await upstream.deal_reopened("acme", contact, "6000.75", deal)
        member = await balance_is(client, contact, 0)
        assert member["tier"] == "Silver"
        assert member["next_tier"] == {"name": "Gold", "min_points": 5000, "points_needed": 5000}
        types = [
            r["ce_type"]
            for r in await db.fetch(
                "SELECT ce_type FROM outbox WHERE ce_type LIKE 'crm.campaigns.loyalty_member.%' "
                "ORDER BY aggregate_version"
            )
        ]
        assert types == [
            "crm.campaigns.loyalty_member.points_earned.v1",
            "crm.campaigns.loyalty_member.tier_changed.v1",
            "crm.campaigns.loyalty_member.points_reversed.v1",
            "crm.campaigns.loyalty_member.tier_changed.v1",
        ]
        # the ledger is append-only: the earn entry is still there
        kinds = [r["kind"] for r in await db.fetch("SELECT kind FROM loyalty_ledger ORDER BY seq")]
        assert kinds == ["earn", "reverse"]

    async def test_order_paid_and_refunded(self, client: AsyncClient, upstream: Any) -> None:
        await client.post(
            "/v1/loyalty/programs",
            json={**PROGRAM, "earn_on": "order_paid", "points_per_unit": "2"},
        )
        contact = await upstream.contact()
        await upstream.wait_contact(contact)
        order = await upstream.order_paid("acme", contact, "10.60")
        await balance_is(client, contact, 21)
        await upstream.order_refunded("acme", contact, "10.60", order)
        member = await balance_is(client, contact, 0)
        assert [h["kind"] for h in member["history"]] == ["reverse", "earn"]

    async def test_expired_points_leave_the_balance(
        self, client: AsyncClient, upstream: Any, db: asyncpg.Connection
    ) -> None:
        await client.post("/v1/loyalty/programs", json={**PROGRAM, "points_expire_days": 1})
        contact = await upstream.contact()
        await upstream.wait_contact(contact)
        await upstream.deal_won(
            "acme", contact, "100", closed=datetime.now(UTC) - timedelta(days=2)
        )
        await upstream.deal_won("acme", contact, "50")
        member = await balance_is(client, contact, 50)
        assert sorted((h["kind"], h["points"]) for h in member["history"]) == [
            ("earn", 50),
            ("earn", 100),
            ("expire", -100),
        ]
        assert (
            await db.fetchval(
                "SELECT count(*) FROM outbox WHERE ce_type = "
                "'crm.campaigns.loyalty_member.points_expired.v1'"
            )
            == 1
        )


class TestRedeem:
    async def test_short_balance_is_422_and_changes_nothing(
        self, client: AsyncClient, upstream: Any, db: asyncpg.Connection
    ) -> None:
        await client.post("/v1/loyalty/programs", json=PROGRAM)
        contact = await upstream.contact()
        await upstream.wait_contact(contact)
        await upstream.deal_won("acme", contact, "100")
        await balance_is(client, contact, 100)
        before = await db.fetchval("SELECT count(*) FROM loyalty_ledger")
        r = await client.post(
            f"/v1/loyalty/members/{contact}/redeem", json={"points": 101, "reason": "mug"}
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == ["points"]
        r = await client.post(
            f"/v1/loyalty/members/{contact}/redeem", json={"points": 0, "reason": "mug"}
        )
        assert r.status_code == 422
        assert await db.fetchval("SELECT count(*) FROM loyalty_ledger") == before
        r = await client.post(
            f"/v1/loyalty/members/{contact}/redeem", json={"points": 40, "reason": "mug"}
        )
        assert r.status_code == 200
        assert r.json()["balance"] == 60

    async def test_concurrent_redemptions_never_overdraw(
        self, client: AsyncClient, upstream: Any, db: asyncpg.Connection
    ) -> None:
        await client.post("/v1/loyalty/programs", json=PROGRAM)
        contact = await upstream.contact()
        await upstream.wait_contact(contact)
        await upstream.deal_won("acme", contact, "500")
        await balance_is(client, contact, 500)
        results = await asyncio.gather(
            *(
                client.post(
                    f"/v1/loyalty/members/{contact}/redeem", json={"points": 100, "reason": f"r{i}"}
                )
                for i in range(12)
            )
        )
        codes = sorted(r.status_code for r in results)
        assert codes == [200] * 5 + [422] * 7
        assert await db.fetchval("SELECT balance FROM loyalty_members") == 0
        assert await db.fetchval("SELECT sum(points) FROM loyalty_ledger") == 0
        assert await db.fetchval("SELECT sum(remaining) FROM loyalty_lots") == 0


class TestPrograms:
    async def test_bad_programs_are_422(self, client: AsyncClient, db: asyncpg.Connection) -> None:
        cases = [
            ({**PROGRAM, "points_per_unit": "-1"}, "points_per_unit"),
            ({**PROGRAM, "points_per_unit": 1.5}, "points_per_unit"),
            ({**PROGRAM, "currency": "usd"}, "currency"),
            ({**PROGRAM, "earn_on": "signup"}, "earn_on"),
            (
                {
                    **PROGRAM,
                    "tiers": [
                        {"name": "Gold", "min_points": 10},
                        {"name": "Silver", "min_points": 0},
                    ],
                },
                None,
            ),
        ]
        for body, field in cases:
            r = await client.post("/v1/loyalty/programs", json=body)
            assert r.status_code == 422, body
            if field:
                assert r.json()["errors"][0]["path"] == [field]
        assert await db.fetchval("SELECT count(*) FROM loyalty_programs") == 0

    async def test_member_needs_a_program(self, client: AsyncClient, upstream: Any) -> None:
        contact = await upstream.contact()
        await upstream.wait_contact(contact)
        r = await client.get(f"/v1/loyalty/members/{contact}")
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == ["program_id"]


class TestMerge:
    async def test_member_and_score_follow_the_survivor(
        self, client: AsyncClient, upstream: Any, db: asyncpg.Connection
    ) -> None:
        await client.post("/v1/loyalty/programs", json=PROGRAM)
        await client.post(
            "/v1/scoring-models",
            json={
                "name": "m",
                "rules": [{"on": "touchpoint.chat", "points": 7}],
                "threshold": "100",
            },
        )
        survivor = await upstream.contact()
        loser = await upstream.contact()
        await upstream.wait_contact(survivor)
        await upstream.wait_contact(loser)
        await upstream.deal_won("acme", loser, "300")
        await balance_is(client, loser, 300)
        await client.post("/v1/touchpoints", json={"channel": "chat", "contact_id": loser})
        await upstream.merged("acme", survivor, [loser])
        member = await balance_is(client, survivor, 300)
        assert [h["kind"] for h in member["history"]] == ["earn"]
        scores = (await client.get(f"/v1/contacts/{survivor}/scores")).json()
        assert scores[0]["score"] == "7.00"
        merged = await db.fetchval(
            "SELECT count(*) FROM outbox WHERE ce_type = 'crm.campaigns.loyalty_member.merged.v1'"
        )
        assert merged == 1


class TestTierSweep:
    async def test_stale_tier_is_reevaluated(
        self, client: AsyncClient, upstream: Any, db: asyncpg.Connection
    ) -> None:
        await client.post("/v1/loyalty/programs", json={**PROGRAM, "points_expire_days": 0})
        contact = await upstream.contact()
        await upstream.wait_contact(contact)
        await upstream.deal_won("acme", contact, "6000")
        await balance_is(client, contact, 6000)
        # a year later the points have left the window; nothing was booked since
        await db.execute(
            "UPDATE loyalty_ledger SET occurred_at = occurred_at - interval '400 days';"
            "UPDATE loyalty_members SET tier_checked_at = now() - interval '2 days'"
        )

        async def silver() -> bool:
            return bool(await db.fetchval("SELECT tier = 'Silver' FROM loyalty_members"))

        await wait_for(silver, message="tier re-evaluated")
        changes = await db.fetchval(
            "SELECT count(*) FROM outbox WHERE ce_type = "
            "'crm.campaigns.loyalty_member.tier_changed.v1'"
        )
        assert changes == 2  # up to Gold on earning, down to Silver by the sweep
