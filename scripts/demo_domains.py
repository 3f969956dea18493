"""The sales and support parts of `make demo` (see demo.py): a sales org, a pipeline, deals
in every stage (some won and lost), activities, tasks, a commission plan with quotas,
support hours, an SLA policy, knowledge base articles and tickets. Idempotent like the rest:
deals and tickets are upserted by external id, and what has no external id (teams,
pipelines, plans, activities, ...) is only created when the tenant has none yet."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

REPS = {"East": ["u-rep1", "u-rep2", "u-rep3"], "West": ["u-rep4", "u-rep5"]}
MANAGERS = {"East": "u-mgr-east", "West": "u-mgr-west"}
STAGES = [
    {"name": "Qualify", "probability": 10, "forecast_category": "pipeline"},
    {"name": "Discovery", "probability": 25, "forecast_category": "pipeline"},
    {"name": "Proposal", "probability": 50, "forecast_category": "best_case"},
    {"name": "Negotiation", "probability": 75, "forecast_category": "commit"},
    {"name": "Won", "probability": 100, "forecast_category": "closed", "is_won": True},
    {"name": "Lost", "probability": 0, "forecast_category": "omitted", "is_lost": True},
]
PRODUCTS = [("License", "1200.00"), ("Support", "300.00"), ("Onboarding", "950.00")]
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
ARTICLES = [
    ("Reset your password", "Open **Settings > Security** and choose *Reset password*."),
    ("Export invoices", "Invoices can be exported as CSV from **Billing > Invoices**."),
    ("Set up single sign-on", "SSO works with any SAML 2.0 or OIDC identity provider."),
    ("Webhook timeouts", "Webhook receivers must answer within 10 seconds."),
    ("Change your plan", "Upgrade or downgrade at any time from **Billing > Plan**."),
]
SUBJECTS = [
    "Cannot log in",
    "Invoice missing",
    "SSO error after IdP change",
    "Webhook deliveries failing",
    "How do I downgrade?",
]


def _items(r: httpx.Response) -> list[dict[str, Any]]:
    r.raise_for_status()
    return list(r.json()["items"])


async def _ensure(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], key: str = "name"
) -> dict[str, Any]:
    """The object of `path` whose `key` equals the body's, created when missing."""
    for item in _items(await client.get(path, params={"limit": 200})):
        if item.get(key) == body[key]:
            return item
    r = await client.post(path, json=body)
    r.raise_for_status()
    return dict(r.json())


async def load_sales(
    client: httpx.AsyncClient, rng: random.Random, contact_ids: list[str]
) -> dict[str, int]:
    for team, reps in REPS.items():
        members = [{"user_id": u, "role": "rep"} for u in reps]
        members.append({"user_id": MANAGERS[team], "role": "manager"})
        await _ensure(client, "/v1/teams", {"name": team, "parent_id": None, "members": members})
    pipeline = await _ensure(client, "/v1/pipelines", {"name": "New business", "stages": STAGES})
    stages = pipeline["stages"]
    open_stages = [s for s in stages if not s["is_won"] and not s["is_lost"]]
    reps = [u for team in REPS.values() for u in team]
    today = datetime.now(UTC).date()

    items, fate = [], []
    for i in range(400):
        lines = [
            {"product": p, "quantity": rng.randint(1, 20), "unit_price": price}
            for p, price in rng.sample(PRODUCTS, rng.randint(1, 3))
        ]
        items.append(
            {
                "name": f"Deal {i}",
                "contact_id": rng.choice(contact_ids),
                "owner_id": rng.choice(reps),
                "pipeline_id": pipeline["id"],
                "stage_id": rng.choice(open_stages)["id"],
                "currency": "USD",
                "expected_close_date": (today + timedelta(days=rng.randint(-30, 150))).isoformat(),
                "line_items": lines,
                "external_ids": {"demo": f"deal-{i}"},
            }
        )
        fate.append(rng.choices(["open", "won", "lost"], weights=[6, 3, 1])[0])
    r = await client.post("/v1/deals/batch", json={"items": items})
    results = _items(r)
    closed = 0
    for result, wanted in zip(results, fate, strict=True):
        if wanted == "open" or result["status"] != "created":
            continue  # decided once, when the deal was created
        when = datetime.now(UTC) - timedelta(days=rng.randint(0, 80), hours=rng.randint(0, 23))
        body: dict[str, Any] = {"closed_at": when.isoformat()}
        if wanted == "lost":
            body["lost_reason"] = rng.choice(["price", "timing", "competitor", "no decision"])
        (await client.post(f"/v1/deals/{result['id']}/{wanted}", json=body)).raise_for_status()
        closed += 1

    if not _items(await client.get("/v1/activities", params={"limit": 1})):
        for i in range(300):
            deal = rng.choice(results)
            kind = rng.choice(["call", "call", "meeting", "email", "note", "visit"])
            body = {
                "type": kind,
                "subject": f"{kind.title()} {i}",
                "deal_id": deal["id"],
                "contact_id": items[results.index(deal)]["contact_id"],
                "owner_id": items[results.index(deal)]["owner_id"],
                "occurred_at": (
                    datetime.now(UTC) - timedelta(hours=rng.randint(1, 900))
                ).isoformat(),
                "duration_seconds": rng.randint(60, 3600) if kind in ("call", "meeting") else None,
            }
            (await client.post("/v1/activities", json=body)).raise_for_status()
    if not _items(await client.get("/v1/tasks", params={"limit": 1})):
        for _ in range(60):
            due = datetime.now(UTC) + timedelta(hours=rng.randint(-48, 240))
            body = {
                "title": rng.choice(["Call back", "Send proposal", "Follow up", "Book demo"]),
                "due_at": due.isoformat(),
                "remind_at": (due - timedelta(hours=1)).isoformat(),
                "assignee_id": rng.choice(reps),
                "deal_id": rng.choice(results)["id"],
                "priority": rng.choice(["low", "normal", "high"]),
            }
            (await client.post("/v1/tasks", json=body)).raise_for_status()

    plans = _items(await client.get("/v1/commission-plans", params={"limit": 200}))
    if not any(p["name"] == PLAN["name"] for p in plans):
        r = await client.post("/v1/commission-plans", json=PLAN)
        r.raise_for_status()
        for rep in reps:
            (
                await client.post(
                    f"/v1/commission-plans/{r.json()['id']}/assignments",
                    json={"user_id": rep, "effective_from": "2026-01-01", "effective_to": None},
                )
            ).raise_for_status()
    quarter = f"{today.year}-Q{(today.month - 1) // 3 + 1}"
    for rep in reps:
        r = await client.put(
            f"/v1/quotas/{rep}/{quarter}",
            json={"amount": "250000.00", "currency": "USD"},
            headers={"If-Match": "*"},
        )
        r.raise_for_status()
    return {"deals": len(results), "closed": closed}


async def load_support(
    client: httpx.AsyncClient, rng: random.Random, contact_ids: list[str]
) -> dict[str, int]:
    hours = await _ensure(
        client,
        "/v1/business-hours",
        {
            "name": "New York office",
            "timezone": "America/New_York",
            "weekly": {d: [["09:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri")},
            "holidays": [f"{datetime.now(UTC).year}-12-25"],
        },
    )
    await _ensure(
        client,
        "/v1/sla-policies",
        {
            "name": "Priority support",
            "position": 1,
            "business_hours_id": hours["id"],
            "conditions": {"priority": ["urgent", "high"]},
            "targets": {
                "urgent": {"first_response": 60, "next_response": 120, "resolution": 480},
                "high": {"first_response": 240, "next_response": 480, "resolution": 1440},
            },
        },
    )
    if not _items(await client.get("/v1/kb/articles", params={"limit": 1})):
        for title, body in ARTICLES:
            r = await client.post(
                "/v1/kb/articles",
                json={"title": title, "body": body, "locale": "en", "status": "published"},
            )
            r.raise_for_status()
    for i in range(120):
        r = await client.put(
            f"/v1/tickets/by-external-id/demo/ticket-{i}",
            json={
                "subject": rng.choice(SUBJECTS),
                "description": "Reported through the demo loader.",
                "requester_contact_id": rng.choice(contact_ids),
                "channel": rng.choice(["email", "web", "chat", "phone"]),
                "priority": rng.choice(["low", "normal", "normal", "high", "urgent"]),
            },
        )
        r.raise_for_status()
    return {"tickets": 120}
