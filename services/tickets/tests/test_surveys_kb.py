"""CSAT and NPS through public token endpoints, reports, and the knowledge base search."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import asyncpg
from httpx import AsyncClient


async def solved_ticket(client: AsyncClient, h: dict[str, str], **kw: Any) -> dict[str, Any]:
    body = {"subject": "Help", "requester_contact_id": str(uuid.uuid4()), **kw}
    t = (await client.post("/v1/tickets", json=body, headers=h)).json()
    r = await client.patch(
        f"/v1/tickets/{t['id']}", json={"status": "solved"}, headers={**h, "If-Match": '"1"'}
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


class TestCsat:
    async def test_answer_once(
        self, client: AsyncClient, admin: dict[str, str], db: asyncpg.Connection
    ) -> None:
        t = await solved_ticket(client, admin, assignee_id="agent-7")
        url = t["csat"]["survey_url"]
        token = url.rsplit("/", 1)[1]
        # only the hash is stored
        stored = await db.fetchval("SELECT token_hash FROM csat_surveys")
        assert stored == hashlib.sha256(token.encode()).digest()
        assert token.encode() not in bytes(stored)
        r = await client.post(f"/v1/public/csat/{token}", json={"score": 6})
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == ["score"]
        r = await client.post(f"/v1/public/csat/{token}", json={"score": 5, "comment": "great"})
        assert r.status_code == 200, r.text
        r = await client.post(f"/v1/public/csat/{token}", json={"score": 1, "comment": "changed"})
        assert r.status_code == 409
        view = (await client.get(f"/v1/tickets/{t['id']}", headers=admin)).json()["csat"]
        assert view == {"status": "answered", "survey_url": None, "score": 5, "comment": "great"}
        listed = (await client.get("/v1/tickets", headers=admin)).json()["items"]
        assert listed[0]["csat"] == view
        assert (
            await db.fetchval(
                "SELECT count(*) FROM outbox WHERE ce_type = 'crm.tickets.csat_survey.answered.v1'"
            )
            == 1
        )
        await solved_ticket(client, admin, assignee_id="agent-8")
        report = (await client.get("/v1/reports/csat", headers=admin)).json()
        assert report["responses"] == 1
        assert report["average"] == "5.00"
        assert report["satisfied_pct"] == "100.0"
        by_agent = (
            await client.get("/v1/reports/csat", params={"group_by": "agent"}, headers=admin)
        ).json()
        assert [(i["key"], i["responses"]) for i in by_agent["items"]] == [("agent-7", 1)]

    async def test_expired_and_unknown_tokens(
        self, client: AsyncClient, admin: dict[str, str], db: asyncpg.Connection
    ) -> None:
        t = await solved_ticket(client, admin)
        token = t["csat"]["survey_url"].rsplit("/", 1)[1]
        await db.execute("UPDATE csat_surveys SET expires_at = now() - interval '1 second'")
        r = await client.post(f"/v1/public/csat/{token}", json={"score": 4})
        assert r.status_code == 410
        assert await db.fetchval("SELECT answered_at FROM csat_surveys") is None
        view = (await client.get(f"/v1/tickets/{t['id']}", headers=admin)).json()["csat"]
        assert view["status"] == "expired"
        r = await client.post("/v1/public/csat/not-a-token", json={"score": 4})
        assert r.status_code == 404


class TestNps:
    async def test_survey_answers_and_report(
        self, client: AsyncClient, admin: dict[str, str], db: asyncpg.Connection
    ) -> None:
        contacts = [str(uuid.uuid4()) for _ in range(4)]
        r = await client.post(
            "/v1/surveys/nps", json={"name": "Q4 NPS", "contact_ids": contacts}, headers=admin
        )
        assert r.status_code == 201, r.text
        body = r.json()
        assert [i["contact_id"] for i in body["invitations"]] == contacts
        tokens = [i["survey_url"].rsplit("/", 1)[1] for i in body["invitations"]]
        assert body["invitations"][0]["survey_url"].startswith("https://crm.test/v1/public/nps/")
        for token, score in zip(tokens, (10, 9, 7, 3), strict=True):
            r = await client.post(f"/v1/public/nps/{token}", json={"score": score})
            assert r.status_code == 200, r.text
        r = await client.post(f"/v1/public/nps/{tokens[0]}", json={"score": 0})
        assert r.status_code == 409
        r = await client.post(f"/v1/public/nps/{tokens[0]}", json={"score": 11})
        assert r.status_code == 422
        report = (
            await client.get("/v1/reports/nps", params={"survey_id": body["id"]}, headers=admin)
        ).json()
        assert report["responses"] == 4
        assert (report["promoters"], report["passives"], report["detractors"]) == (2, 1, 1)
        assert report["nps"] == "25.0"
        assert (
            await db.fetchval(
                "SELECT count(*) FROM outbox "
                "WHERE ce_type = 'crm.tickets.nps_invitation.invited.v1'"
            )
            == 4
        )

    async def test_bad_input(
        self,
        client: AsyncClient,
        admin: dict[str, str],
        agent: dict[str, str],
        db: asyncpg.Connection,
    ) -> None:
        r = await client.post(
            "/v1/surveys/nps", json={"name": "x", "contact_ids": []}, headers=admin
        )
        assert r.status_code == 422
        r = await client.post(
            "/v1/surveys/nps", json={"name": "x", "contact_ids": ["not-a-uuid"]}, headers=admin
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == ["contact_ids", 0]
        body = {"name": "x", "contact_ids": [str(uuid.uuid4())]}
        r = await client.post("/v1/surveys/nps", json=body, headers=agent)
        assert r.status_code == 403
        assert await db.fetchval("SELECT count(*) FROM nps_surveys") == 0


ARTICLES = [
    ("Reset your password", "Open settings and choose reset password. A link is emailed.", "en"),
    (
        "Billing overview",
        "Invoices are sent monthly. To reset billing contacts, ask an admin.",
        "en",
    ),
    (
        "Passwort zurücksetzen",
        "Öffnen Sie die Einstellungen und wählen Sie Passwort zurücksetzen.",
        "de",
    ),
    ("Login problems", "If you cannot log in, reset your password or clear cookies.", "en"),
]


class TestKnowledgeBase:
    async def _seed(self, client: AsyncClient, h: dict[str, str]) -> list[str]:
        ids = []
        for title, body, locale in ARTICLES:
            r = await client.post(
                "/v1/kb/articles",
                json={"title": title, "body": body, "locale": locale, "status": "published"},
                headers=h,
            )
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        r = await client.post(
            "/v1/kb/articles",
            json={"title": "Password secrets (draft)", "body": "password", "status": "draft"},
            headers=h,
        )
        ids.append(r.json()["id"])
        return ids

    async def test_search_ranks_title_over_body(
        self, client: AsyncClient, agent: dict[str, str]
    ) -> None:
        ids = await self._seed(client, agent)
        r = await client.get(
            "/v1/kb/search", params={"q": "reset password", "locale": "en"}, headers=agent
        )
        assert r.status_code == 200, r.text
        hits = r.json()["items"]
        assert [h["id"] for h in hits][:2] == [ids[0], ids[3]]
        assert ids[4] not in [h["id"] for h in hits]  # drafts are not searched
        assert "<mark>" in hits[0]["snippet"]
        # stemming: "passwords resetting" matches the same articles
        r = await client.get(
            "/v1/kb/search", params={"q": "passwords resetting", "locale": "en"}, headers=agent
        )
        assert r.json()["items"][0]["id"] == ids[0]
        # German config and locale filter
        r = await client.get(
            "/v1/kb/search", params={"q": "Passwort", "locale": "de"}, headers=agent
        )
        assert [h["id"] for h in r.json()["items"]] == [ids[2]]
        # no locale: every article in its own language
        r = await client.get("/v1/kb/search", params={"q": "password"}, headers=agent)
        first_page = await client.get(
            "/v1/kb/search", params={"q": "password", "limit": 1}, headers=agent
        )
        second = await client.get(
            "/v1/kb/search",
            params={"q": "password", "limit": 1, "cursor": first_page.json()["next_cursor"]},
            headers=agent,
        )
        assert [h["id"] for h in first_page.json()["items"] + second.json()["items"]] == [
            h["id"] for h in r.json()["items"]
        ]
        assert second.json()["next_cursor"] is None
        assert set(h["id"] for h in r.json()["items"]) == {ids[0], ids[3]}
        # websearch syntax: exclusion
        r = await client.get(
            "/v1/kb/search", params={"q": "reset -password", "locale": "en"}, headers=agent
        )
        assert [h["id"] for h in r.json()["items"]] == [ids[1]]

    async def test_suggested_articles(self, client: AsyncClient, agent: dict[str, str]) -> None:
        ids = await self._seed(client, agent)
        t = (
            await client.post(
                "/v1/tickets",
                json={"subject": "Cannot log in", "description": "I forgot my password"},
                headers=agent,
            )
        ).json()
        r = await client.get(f"/v1/tickets/{t['id']}/suggested-articles", headers=agent)
        assert r.status_code == 200
        got = [h["id"] for h in r.json()["items"]]
        assert got[0] == ids[3]
        assert ids[0] in got
        assert ids[4] not in got

    async def test_draft_visibility_and_bad_input(
        self, client: AsyncClient, agent: dict[str, str], crm_infra: Any
    ) -> None:
        ids = await self._seed(client, agent)
        rep = crm_infra.auth(tenant="acme", roles=["sales_rep"])
        assert (await client.get(f"/v1/kb/articles/{ids[4]}", headers=rep)).status_code == 404
        assert (await client.get(f"/v1/kb/articles/{ids[0]}", headers=rep)).status_code == 200
        r = await client.post(
            "/v1/kb/articles", json={"title": "x", "locale": "english!"}, headers=agent
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == ["locale"]
        r = await client.post("/v1/kb/articles", json={"title": "x"}, headers=rep)
        assert r.status_code == 403
