"""Lead scoring (rules, max_times, conditions, decay, lead.qualified) and touchpoints
(linking, lead capture once per email)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from httpx import AsyncClient

from campaigns.scoring import decayed
from chassis.testing import wait_for

MODEL = {
    "name": "default",
    "rules": [
        {"on": "email.clicked", "points": 30},
        {"on": "touchpoint.web_form", "points": 25, "max_times": 2},
        {"on": {"all": [{"field": "lifecycle_stage", "op": "eq", "value": "sql"}]}, "points": 10},
    ],
    "half_life_days": "30",
    "threshold": "45",
}


class TestDecay:
    def test_half_life(self) -> None:
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        assert decayed(100, t0, t0 + timedelta(days=30), 30) == 50
        assert abs(decayed(100, t0, t0 + timedelta(days=60), 30) - 25) < 1e-9
        assert decayed(100, t0, t0 + timedelta(days=600), 0) == 100
        assert decayed(100, t0, t0 - timedelta(days=1), 30) == 100  # never grows


class TestScoring:
    async def test_rules_threshold_and_conditions(
        self, client: AsyncClient, upstream: Any, db: asyncpg.Connection
    ) -> None:
        r = await client.post("/v1/scoring-models", json=MODEL)
        assert r.status_code == 201, r.text
        contact = await upstream.contact(lifecycle_stage="lead", owner_id="rep-1")
        await upstream.wait_contact(contact)
        for _ in range(3):
            r = await client.post(
                "/v1/touchpoints",
                json={"channel": "web_form", "contact_id": contact, "source": "pricing"},
            )
            assert r.status_code == 201, r.text
        scores = (await client.get(f"/v1/contacts/{contact}/scores")).json()
        assert [(s["model"], s["score"], s["qualified"]) for s in scores] == [
            ("default", "50.00", True)
        ]
        qualified = await db.fetch(
            "SELECT payload FROM outbox WHERE ce_type = 'crm.campaigns.lead.qualified.v1'"
        )
        assert len(qualified) == 1
        await upstream.contact(cid=contact, lifecycle_stage="sql")
        await upstream.contact(cid=contact, lifecycle_stage="sql", first_name="Changed")
        await upstream.wait_contact(contact, 3)
        scores = (await client.get(f"/v1/contacts/{contact}/scores")).json()
        assert scores[0]["score"] == "60.00"
        assert (
            await db.fetchval(
                "SELECT count(*) FROM outbox WHERE ce_type = 'crm.campaigns.lead.qualified.v1'"
            )
            == 1
        )
        r = await client.post(
            "/v1/segments/preview",
            json={"filter": {"all": [{"field": "score.default", "op": "gte", "value": 55}]}},
        )
        assert [m["contact_id"] for m in r.json()["items"]] == [contact]

    async def test_bad_models_are_422(self, client: AsyncClient, db: asyncpg.Connection) -> None:
        cases = [
            ({**MODEL, "rules": [{"on": "email.sneezed", "points": 1}]}, ["rules", 0, "on"]),
            (
                {
                    **MODEL,
                    "rules": [
                        {"on": {"all": [{"field": "nope", "op": "eq", "value": 1}]}, "points": 1}
                    ],
                },
                ["rules", 0, "on", "all", 0, "field"],
            ),
            ({**MODEL, "threshold": "-1"}, ["threshold"]),
            ({**MODEL, "name": "has space"}, ["name"]),
        ]
        for body, path in cases:
            r = await client.post("/v1/scoring-models", json=body)
            assert r.status_code == 422, body
            assert r.json()["errors"][0]["path"] == path
        assert await db.fetchval("SELECT count(*) FROM scoring_models") == 0

    async def test_scores_of_unknown_contact_is_404(self, client: AsyncClient) -> None:
        r = await client.get(f"/v1/contacts/{uuid.uuid4()}/scores")
        assert r.status_code == 404


class TestTouchpoints:
    async def test_unknown_email_captures_a_lead_once_then_links(
        self, client: AsyncClient, upstream: Any, db: asyncpg.Connection
    ) -> None:
        for source in ("form-a", "form-b"):
            r = await client.post(
                "/v1/touchpoints",
                json={
                    "channel": "web_form",
                    "email": "New.Person@Example.com",
                    "source": source,
                    "data": {"first_name": "New"},
                },
            )
            assert r.status_code == 201, r.text
            assert r.json()["contact_id"] is None
        captured = await db.fetch(
            "SELECT payload FROM outbox WHERE ce_type = 'crm.campaigns.lead.captured.v1'"
        )
        assert len(captured) == 1
        from crm.campaigns.v1.campaigns_pb2 import LeadCaptured

        msg = LeadCaptured.FromString(captured[0]["payload"])
        assert (msg.email, msg.channel, msg.source, msg.first_name) == (
            "new.person@example.com",
            "web_form",
            "form-a",
            "New",
        )
        # the contacts service creates the lead; the replica sees it and links both touchpoints
        cid = await upstream.contact(email="new.person@example.com", lead_source="web_form")
        await upstream.wait_contact(cid)

        async def linked() -> bool:
            n = await db.fetchval(
                "SELECT count(*) FROM touchpoints WHERE contact_id = $1 AND version = 2",
                uuid.UUID(cid),
            )
            return bool(n == 2)

        await wait_for(linked, message="touchpoints linked")
        page = (await client.get("/v1/touchpoints", params={"contact_id": cid, "limit": 1})).json()
        assert len(page["items"]) == 1
        assert page["next_cursor"]
        page2 = (
            await client.get(
                "/v1/touchpoints",
                params={"contact_id": cid, "limit": 1, "cursor": page["next_cursor"]},
            )
        ).json()
        assert {page["items"][0]["source"], page2["items"][0]["source"]} == {"form-a", "form-b"}
        assert page2["next_cursor"] is None

    async def test_known_email_links_at_once(
        self, client: AsyncClient, upstream: Any, db: asyncpg.Connection
    ) -> None:
        cid = await upstream.contact(email="known@example.com")
        await upstream.wait_contact(cid)
        r = await client.post(
            "/v1/touchpoints", json={"channel": "chat", "email": "KNOWN@example.com"}
        )
        assert r.json()["contact_id"] == cid
        assert (
            await db.fetchval(
                "SELECT count(*) FROM outbox WHERE ce_type = 'crm.campaigns.lead.captured.v1'"
            )
            == 0
        )

    async def test_bad_touchpoints_are_422(
        self, client: AsyncClient, db: asyncpg.Connection
    ) -> None:
        cases = [
            ({"channel": "web_form"}, []),
            ({"channel": "pigeon", "email": "a@b.example"}, ["channel"]),
            ({"channel": "chat", "email": "not-an-email"}, ["email"]),
            ({"channel": "chat", "contact_id": str(uuid.uuid4())}, ["contact_id"]),
            ({"channel": "chat", "email": "a@b.example", "occurred_at": "2026-01-01T00:00:00"}, []),
        ]
        for body, path in cases:
            r = await client.post("/v1/touchpoints", json=body)
            assert r.status_code == 422, body
            assert r.json()["errors"][0]["path"] == path, r.json()
        assert await db.fetchval("SELECT count(*) FROM touchpoints") == 0
