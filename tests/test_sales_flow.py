"""Through the gateway, across services: a deal is won in the pipeline service; the 360 view,
the forecast (with the quota set in commissions) and the rep's commission statement follow;
reopening the deal claws the commission back."""

from __future__ import annotations

from typing import Any

from chassis.testing import wait_for

PLAN = {
    "name": "Account Executive 2026",
    "period": "quarter",
    "currency": "USD",
    "effective_from": "2026-01-01",
    "credit_on": "deal_won",
    "tier_basis": "attainment",
    "tier_mode": "graduated",
    "tiers": [
        {"from": "0", "to": "0.5", "rate": "0.05"},
        {"from": "0.5", "to": "1.0", "rate": "0.10"},
        {"from": "1.0", "to": None, "rate": "0.15"},
    ],
    "cap": "50000.00",
    "spiffs": [{"product": "Onboarding", "amount_per_unit": "100.00"}],
    "clawback_days": 90,
}
STAGES = [
    {"name": "Qualify", "probability": 10, "forecast_category": "pipeline"},
    {"name": "Negotiation", "probability": 70, "forecast_category": "commit"},
    {"name": "Won", "probability": 100, "forecast_category": "closed", "is_won": True},
    {"name": "Lost", "probability": 0, "forecast_category": "omitted", "is_lost": True},
]


class TestDealToCommission:
    async def test_won_deal_reaches_360_forecast_and_statement_then_claws_back(
        self, platform: Any
    ) -> None:
        client, infra = platform.client, platform.infra
        admin = infra.auth()
        rep = infra.auth(roles=["sales_rep"], sub="u-rep1")

        async def post(path: str, body: dict[str, Any], h: dict[str, str]) -> dict[str, Any]:
            r = await client.post(path, json=body, headers=h)
            assert r.status_code in (200, 201), f"{path}: {r.status_code} {r.text}"
            return dict(r.json())

        contact = await post("/v1/contacts", {"first_name": "Ada", "owner_id": "u-rep1"}, admin)
        pipeline = await post("/v1/pipelines", {"name": "New business", "stages": STAGES}, admin)
        plan = await post("/v1/commission-plans", PLAN, admin)
        await post(
            f"/v1/commission-plans/{plan['id']}/assignments",
            {"user_id": "u-rep1", "effective_from": "2026-01-01", "effective_to": None},
            admin,
        )
        r = await client.put(
            "/v1/quotas/u-rep1/2026-Q4",
            json={"amount": "100000.00", "currency": "USD"},
            headers={**admin, "If-Match": "*"},
        )
        assert r.status_code in (200, 201), r.text

        deal = await post(
            "/v1/deals",
            {
                "name": "Acme renewal",
                "contact_id": contact["id"],
                "owner_id": "u-rep1",
                "pipeline_id": pipeline["id"],
                "stage_id": pipeline["stages"][1]["id"],
                "currency": "USD",
                "expected_close_date": "2026-12-15",
                "line_items": [
                    {"product": "License", "quantity": 1, "unit_price": "59800.00"},
                    {"product": "Onboarding", "quantity": 2, "unit_price": "100.00"},
                ],
            },
            rep,
        )
        assert deal["amount"] == "60000.00"
        won = await post(f"/v1/deals/{deal['id']}/won", {"closed_at": "2026-11-20T10:00:00Z"}, rep)
        assert won["status"] == "won"

        async def view(until: Any) -> dict[str, Any] | None:
            r = await client.get(f"/v1/customers/{contact['id']}/360", headers=rep)
            if r.status_code != 200:
                return None
            doc = dict(r.json())
            return doc if until(doc) else None

        doc = await wait_for(
            lambda: view(lambda d: d["deals"] and d["deals"][0]["status"] == "won"),
            timeout=20,
            message="won deal in the 360",
        )
        assert doc["deals"][0]["stage_name"] == "Won"
        assert doc["metrics"]["lifetime_value"] == [{"currency": "USD", "amount": "60000.00"}]
        timeline = await client.get(f"/v1/customers/{contact['id']}/timeline", headers=rep)
        assert "deal.won" in [e["kind"] for e in timeline.json()["items"]]

        # 50000 x 5% + 10000 x 10% + 2 onboarding units x 100 = 3700
        async def statement(payout: str) -> dict[str, Any] | None:
            r = await client.get(
                "/v1/statements", params={"user_id": "u-rep1", "period": "2026-Q4"}, headers=rep
            )
            if r.status_code != 200 or not r.json()["items"]:
                return None
            st = dict(r.json()["items"][0])
            return st if st["payout"] == payout else None

        st = await wait_for(lambda: statement("3700.00"), timeout=20, message="statement")
        assert st["credit"] == "60000.00"
        assert st["attainment"] == "0.6000"

        async def forecast() -> dict[str, Any] | None:
            r = await client.get(
                "/v1/forecast", params={"period": "2026-Q4", "group_by": "owner"}, headers=rep
            )
            assert r.status_code == 200, r.text
            groups = r.json()["groups"]
            return groups[0] if groups and groups[0]["quota"] is not None else None

        group = await wait_for(forecast, timeout=20, message="forecast with the quota")
        assert group["key"] == "u-rep1"
        assert group["closed_won"] == "60000.00"
        assert group["quota"] == "100000.00"
        assert group["gap"] == "40000.00"

        # Reopened within the clawback window: the credit goes, in the open period.
        await post(f"/v1/deals/{deal['id']}/reopen", {}, rep)
        st = await wait_for(lambda: statement("0.00"), timeout=20, message="clawback")
        assert st["credit"] == "0.00"
        await wait_for(
            lambda: view(lambda d: d["deals"][0]["status"] == "open"),
            timeout=20,
            message="reopened deal in the 360",
        )
