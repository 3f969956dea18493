"""Tickets API: business hours and SLA policies, SLA clocks on the ticket, comments, status
rules, routing, concurrency and bad input."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg
from httpx import AsyncClient

from tickets.businesstime import Calendar, add_business

NY_HOURS = {
    "name": "New York office",
    "timezone": "America/New_York",
    "weekly": {
        "mon": [["09:00", "12:00"], ["13:00", "17:00"]],
        "tue": [["09:00", "17:00"]],
        "wed": [["09:00", "17:00"]],
        "thu": [["09:00", "17:00"]],
        "fri": [["09:00", "17:00"]],
    },
    "holidays": ["2026-12-25"],
}


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def policy(client: AsyncClient, h: dict[str, str], **kw: Any) -> dict[str, Any]:
    body = {
        "name": "Default",
        "position": 10,
        "targets": {
            p: {"first_response": 60, "next_response": 120, "resolution": 480}
            for p in ("low", "normal", "high", "urgent")
        },
        **kw,
    }
    r = await client.post("/v1/sla-policies", json=body, headers=h)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def ticket(client: AsyncClient, h: dict[str, str], **kw: Any) -> dict[str, Any]:
    body = {"subject": "Cannot log in", "description": "Password reset fails", "channel": "email"}
    body.update(kw)
    r = await client.post("/v1/tickets", json=body, headers=h)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def outbox_types(db: asyncpg.Connection, aggregate_id: str) -> list[str]:
    rows = await db.fetch(
        "SELECT ce_type FROM outbox WHERE aggregate_id = $1 ORDER BY aggregate_version",
        aggregate_id,
    )
    return [r["ce_type"] for r in rows]


class TestBusinessHours:
    async def test_create_and_read(self, client: AsyncClient, admin: dict[str, str]) -> None:
        r = await client.post("/v1/business-hours", json=NY_HOURS, headers=admin)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["weekly"]["mon"] == [["09:00", "12:00"], ["13:00", "17:00"]]
        assert body["holidays"] == ["2026-12-25"]
        assert r.headers["etag"] == '"1"'

    async def test_holidays_seeded_from_country(
        self, client: AsyncClient, admin: dict[str, str]
    ) -> None:
        body = {**NY_HOURS, "holiday_country": "US", "holiday_years": [2026]}
        r = await client.post("/v1/business-hours", json=body, headers=admin)
        assert r.status_code == 201, r.text
        assert "2026-07-04" in r.json()["holidays"] or "2026-07-03" in r.json()["holidays"]

    async def test_invalid_timezone_and_overlap_are_422(
        self, client: AsyncClient, admin: dict[str, str], db: asyncpg.Connection
    ) -> None:
        r = await client.post(
            "/v1/business-hours", json={**NY_HOURS, "timezone": "Mars/Base"}, headers=admin
        )
        assert r.status_code == 422
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["errors"][0]["path"] == ["timezone"]
        overlap = {**NY_HOURS, "weekly": {"mon": [["09:00", "12:00"], ["11:00", "13:00"]]}}
        r = await client.post("/v1/business-hours", json=overlap, headers=admin)
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == ["weekly", "mon", "1"]
        assert await db.fetchval("SELECT count(*) FROM business_hours") == 0
        assert await db.fetchval("SELECT count(*) FROM outbox") == 0

    async def test_agent_cannot_create(self, client: AsyncClient, agent: dict[str, str]) -> None:
        r = await client.post("/v1/business-hours", json=NY_HOURS, headers=agent)
        assert r.status_code == 403


class TestSlaOnTicket:
    async def test_first_match_by_position_and_due_times(
        self, client: AsyncClient, admin: dict[str, str]
    ) -> None:
        bh = (await client.post("/v1/business-hours", json=NY_HOURS, headers=admin)).json()
        catch_all = await policy(client, admin, name="All", position=5)
        urgent = await policy(
            client,
            admin,
            name="Priority support",
            position=1,
            business_hours_id=bh["id"],
            conditions={"priority": ["urgent", "high"]},
            targets={"urgent": {"first_response": 60, "next_response": 120, "resolution": 480}},
        )
        t = await ticket(client, admin, priority="urgent")
        assert t["sla"]["policy_id"] == urgent["id"]
        assert t["csat"] is None
        fr = t["sla"]["first_response"]
        assert fr["fulfilled_at"] is None
        assert fr["breached"] is False
        # Business time: the due instant lies within New York office hours.
        due = ts(fr["due_at"])
        cal = Calendar.build(NY_HOURS["timezone"], NY_HOURS["weekly"], [date(2026, 12, 25)])
        assert due == add_business(cal, ts(t["created_at"]), 60)
        assert ts(t["sla"]["resolution"]["due_at"]) == add_business(cal, ts(t["created_at"]), 480)
        assert set(t["sla"]) == {"policy_id", "first_response", "next_response", "resolution"}
        assert t["sla"]["next_response"] is None
        normal = await ticket(client, admin, priority="normal")
        assert normal["sla"]["policy_id"] == catch_all["id"]
        # 24x7: exactly 60 calendar minutes.
        assert ts(normal["sla"]["first_response"]["due_at"]) - ts(
            normal["created_at"]
        ) == timedelta(minutes=60)
        got = await client.get(f"/v1/tickets/{normal['id']}", headers=admin)
        assert got.json()["sla"] == normal["sla"]

    async def test_clocks_follow_comments_and_status(
        self, client: AsyncClient, admin: dict[str, str], db: asyncpg.Connection
    ) -> None:
        await policy(client, admin)
        contact = str(uuid.uuid4())
        t = await ticket(client, admin, requester_contact_id=contact)
        tid = t["id"]
        r = await client.post(
            f"/v1/tickets/{tid}/comments", json={"body": "note", "public": False}, headers=admin
        )
        assert r.status_code == 201
        t = (await client.get(f"/v1/tickets/{tid}", headers=admin)).json()
        assert t["sla"]["first_response"]["fulfilled_at"] is None  # internal note does not count
        r = await client.post(
            f"/v1/tickets/{tid}/comments", json={"body": "Looking into it"}, headers=admin
        )
        assert r.status_code == 201
        t = (await client.get(f"/v1/tickets/{tid}", headers=admin)).json()
        assert t["sla"]["first_response"]["fulfilled_at"] is not None
        assert t["sla"]["first_response"]["breached"] is False
        # requester replies: next response clock starts; the agent reply fulfils it
        r = await client.post(
            f"/v1/tickets/{tid}/comments",
            json={"body": "still broken", "author": "requester"},
            headers=admin,
        )
        assert r.status_code == 201
        t = (await client.get(f"/v1/tickets/{tid}", headers=admin)).json()
        nr = t["sla"]["next_response"]
        assert nr["due_at"] is not None
        assert nr["fulfilled_at"] is None
        await client.post(f"/v1/tickets/{tid}/comments", json={"body": "fixed?"}, headers=admin)
        t = (await client.get(f"/v1/tickets/{tid}", headers=admin)).json()
        assert t["sla"]["next_response"]["fulfilled_at"] is not None
        # pending pauses resolution: no due time; open resumes with a later due time
        before = ts(t["sla"]["resolution"]["due_at"])
        r = await client.patch(
            f"/v1/tickets/{tid}",
            json={"status": "pending"},
            headers={**admin, "If-Match": f'"{t["version"]}"'},
        )
        assert r.status_code == 200, r.text
        assert r.json()["sla"]["resolution"]["due_at"] is None
        r = await client.patch(
            f"/v1/tickets/{tid}",
            json={"status": "open"},
            headers={**admin, "If-Match": r.headers["etag"]},
        )
        assert ts(r.json()["sla"]["resolution"]["due_at"]) >= before
        # solved: resolution fulfilled, CSAT requested with a survey link
        r = await client.patch(
            f"/v1/tickets/{tid}",
            json={"status": "solved"},
            headers={**admin, "If-Match": r.headers["etag"]},
        )
        body = r.json()
        assert body["status"] == "solved"
        assert body["solved_at"] is not None
        assert body["sla"]["resolution"]["fulfilled_at"] is not None
        assert body["csat"]["status"] == "requested"
        assert body["csat"]["survey_url"].startswith("https://crm.test/v1/public/csat/")
        types = await outbox_types(db, tid)
        assert types[0] == "crm.tickets.ticket.created.v1"
        assert types.count("crm.tickets.ticket.commented.v1") == 4
        assert types[-1] == "crm.tickets.ticket.solved.v1"
        versions = await db.fetch(
            "SELECT aggregate_version FROM outbox WHERE aggregate_id = $1 ORDER BY 1", tid
        )
        assert [v[0] for v in versions] == list(range(1, len(versions) + 1))
        assert versions[-1][0] == body["version"]
        csat = await db.fetchrow(
            "SELECT * FROM outbox WHERE ce_type = 'crm.tickets.csat_survey.requested.v1'"
        )
        assert csat is not None


class TestStatusRules:
    async def test_closed_is_final_and_requester_reopens_solved(
        self, client: AsyncClient, admin: dict[str, str], db: asyncpg.Connection
    ) -> None:
        t = await ticket(client, admin, requester_contact_id=str(uuid.uuid4()))
        tid = t["id"]
        r = await client.patch(
            f"/v1/tickets/{tid}", json={"status": "closed"}, headers={**admin, "If-Match": '"1"'}
        )
        assert r.status_code == 409
        r = await client.patch(
            f"/v1/tickets/{tid}", json={"status": "solved"}, headers={**admin, "If-Match": '"1"'}
        )
        assert r.status_code == 200
        r = await client.post(
            f"/v1/tickets/{tid}/comments",
            json={"body": "not fixed", "author": "requester"},
            headers=admin,
        )
        assert r.status_code == 201
        t = (await client.get(f"/v1/tickets/{tid}", headers=admin)).json()
        assert t["status"] == "open"
        assert t["solved_at"] is None
        assert (await outbox_types(db, tid))[-1] == "crm.tickets.ticket.reopened.v1"
        etag = f'"{t["version"]}"'
        r = await client.patch(
            f"/v1/tickets/{tid}", json={"status": "solved"}, headers={**admin, "If-Match": etag}
        )
        r = await client.patch(
            f"/v1/tickets/{tid}",
            json={"status": "closed"},
            headers={**admin, "If-Match": r.headers["etag"]},
        )
        assert r.status_code == 200
        assert r.json()["closed_at"] is not None
        version = r.json()["version"]
        r = await client.patch(
            f"/v1/tickets/{tid}",
            json={"subject": "x"},
            headers={**admin, "If-Match": r.headers["etag"]},
        )
        assert r.status_code == 409
        r = await client.post(f"/v1/tickets/{tid}/comments", json={"body": "hello"}, headers=admin)
        assert r.status_code == 409
        assert (await client.get(f"/v1/tickets/{tid}", headers=admin)).json()["version"] == version

    async def test_if_match_required_and_stale(
        self, client: AsyncClient, admin: dict[str, str]
    ) -> None:
        t = await ticket(client, admin)
        r = await client.patch(f"/v1/tickets/{t['id']}", json={"priority": "high"}, headers=admin)
        assert r.status_code == 428
        r = await client.patch(
            f"/v1/tickets/{t['id']}",
            json={"priority": "high"},
            headers={**admin, "If-Match": '"7"'},
        )
        assert r.status_code == 412
        r = await client.patch(
            f"/v1/tickets/{t['id']}",
            json={"priority": "high"},
            headers={**admin, "If-Match": '"1"'},
        )
        assert r.status_code == 200
        assert r.json()["priority"] == "high"
        assert r.json()["version"] == 2

    async def test_bad_input_is_422_and_changes_nothing(
        self, client: AsyncClient, admin: dict[str, str], db: asyncpg.Connection
    ) -> None:
        r = await client.post("/v1/tickets", json={"subject": "x", "channel": "fax"}, headers=admin)
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == ["channel"]
        r = await client.post(
            "/v1/tickets", json={"subject": "x", "custom_fields": {"nope": 1}}, headers=admin
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == ["custom_fields", "nope"]
        r = await client.post(
            "/v1/tickets", json={"subject": "x", "group_id": str(uuid.uuid4())}, headers=admin
        )
        assert r.status_code == 422
        assert await db.fetchval("SELECT count(*) FROM tickets") == 0


class TestVisibility:
    async def test_other_tenant_and_roles(
        self, client: AsyncClient, admin: dict[str, str], crm_infra: Any
    ) -> None:
        t = await ticket(client, admin)
        other = crm_infra.auth(tenant="globex", roles=["admin"])
        assert (await client.get(f"/v1/tickets/{t['id']}", headers=other)).status_code == 404
        partner = crm_infra.auth(tenant="acme", roles=["partner"])
        assert (await client.get(f"/v1/tickets/{t['id']}", headers=partner)).status_code == 404
        rep = crm_infra.auth(tenant="acme", roles=["sales_rep"])
        assert (await client.get(f"/v1/tickets/{t['id']}", headers=rep)).status_code == 200
        r = await client.post(f"/v1/tickets/{t['id']}/comments", json={"body": "hi"}, headers=rep)
        assert r.status_code == 403
        agent = crm_infra.auth(tenant="acme", roles=["agent"], sub="a-9")
        r = await client.post(f"/v1/tickets/{t['id']}/comments", json={"body": "hi"}, headers=agent)
        assert r.status_code == 201


class TestRouting:
    async def test_round_robin_least_open_and_manual(
        self, client: AsyncClient, admin: dict[str, str]
    ) -> None:
        g = await client.post(
            "/v1/groups", json={"name": "Tier 1", "agents": ["a", "b"]}, headers=admin
        )
        assert g.status_code == 201
        gid = g.json()["id"]
        got = [(await ticket(client, admin, group_id=gid))["assignee_id"] for _ in range(3)]
        assert got == ["a", "b", "a"]
        manual = await ticket(client, admin, group_id=gid, assignee_id="zed")
        assert manual["assignee_id"] == "zed"
        r = await client.patch(
            f"/v1/groups/{gid}",
            json={"strategy": "least_open", "agents": ["a", "b", "c"]},
            headers={**admin, "If-Match": '"1"'},
        )
        assert r.status_code == 200
        assert (await ticket(client, admin, group_id=gid))["assignee_id"] == "c"
        # a: 2 open, b: 1, c: 1 -> b (earlier in the list)
        assert (await ticket(client, admin, group_id=gid))["assignee_id"] == "b"

    async def test_list_tickets_paginates(self, client: AsyncClient, admin: dict[str, str]) -> None:
        ids = [(await ticket(client, admin, subject=f"t{i}"))["id"] for i in range(5)]
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/v1/tickets", params=params, headers=admin)).json()
            seen += [i["id"] for i in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == ids


class TestRetargetAndReport:
    async def test_priority_change_moves_to_the_matching_policy(
        self, client: AsyncClient, admin: dict[str, str]
    ) -> None:
        await policy(client, admin, name="All", position=5)
        urgent = await policy(
            client,
            admin,
            name="Urgent",
            position=1,
            conditions={"priority": ["urgent"]},
            targets={"urgent": {"first_response": 15, "resolution": 120}},
        )
        t = await ticket(client, admin)
        created = ts(t["created_at"])
        r = await client.patch(
            f"/v1/tickets/{t['id']}",
            json={"priority": "urgent"},
            headers={**admin, "If-Match": '"1"'},
        )
        body = r.json()
        assert body["sla"]["policy_id"] == urgent["id"]
        # 15 minutes from the change (the time already consumed counts against the target)
        due = ts(body["sla"]["first_response"]["due_at"])
        assert (
            created + timedelta(minutes=14) < due <= ts(body["updated_at"]) + timedelta(minutes=15)
        )
        assert body["sla"]["next_response"] is None

    async def test_sla_report(self, client: AsyncClient, admin: dict[str, str]) -> None:
        await policy(client, admin)
        a = await ticket(client, admin, assignee_id="ann", priority="high")
        await ticket(client, admin, assignee_id="bob")
        await client.post(f"/v1/tickets/{a['id']}/comments", json={"body": "hi"}, headers=admin)
        r = await client.get("/v1/reports/sla", params={"group_by": "agent"}, headers=admin)
        assert r.status_code == 200, r.text
        items = {i["key"]: i for i in r.json()["items"]}
        assert items["ann"]["targets"] == 1
        assert items["ann"]["met"] == 1
        assert items["ann"]["met_pct"] == "100.0"
        assert items["ann"]["median_first_response_minutes"]["business"] is not None
        assert items["bob"]["targets"] == 0
        assert items["bob"]["met_pct"] is None
        by_priority = (
            await client.get("/v1/reports/sla", params={"group_by": "priority"}, headers=admin)
        ).json()
        assert [i["key"] for i in by_priority["items"]] == ["high", "normal"]
        r = await client.get("/v1/reports/sla", params={"group_by": "planet"}, headers=admin)
        assert r.status_code == 422
        r = await client.get(
            "/v1/reports/sla",
            params={"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
            headers=admin,
        )
        assert r.status_code == 422

    async def test_policy_newly_applying_starts_clocks_from_creation(
        self, client: AsyncClient, admin: dict[str, str]
    ) -> None:
        await policy(
            client,
            admin,
            name="VIP",
            position=1,
            conditions={"tags": ["vip"]},
        )
        t = await ticket(client, admin)
        assert t["sla"] is None
        r = await client.patch(
            f"/v1/tickets/{t['id']}", json={"tags": ["vip"]}, headers={**admin, "If-Match": '"1"'}
        )
        body = r.json()
        created = ts(t["created_at"])
        assert ts(body["sla"]["first_response"]["due_at"]) == created + timedelta(minutes=60)
        assert ts(body["sla"]["resolution"]["due_at"]) == created + timedelta(minutes=480)
        r = await client.patch(
            f"/v1/tickets/{t['id']}",
            json={"tags": []},
            headers={**admin, "If-Match": r.headers["etag"]},
        )
        assert r.json()["sla"] is None


class TestUpsertByExternalId:
    async def test_create_update_and_ambiguous(
        self, client: AsyncClient, admin: dict[str, str]
    ) -> None:
        url = "/v1/tickets/by-external-id/zendesk/4711"
        r = await client.put(url, json={"subject": "Imported", "priority": "high"}, headers=admin)
        assert r.status_code == 201, r.text
        first = r.json()
        assert first["external_ids"] == {"zendesk": "4711"}
        r = await client.put(url, json={"subject": "Imported (edited)"}, headers=admin)
        assert r.status_code == 200
        assert r.json()["id"] == first["id"]
        assert r.json()["subject"] == "Imported (edited)"
        assert r.json()["priority"] == "high"  # not sent: unchanged
        assert r.json()["version"] == 2
        r = await client.put(url, json={"subject": "Imported (edited)"}, headers=admin)
        assert r.json()["version"] == 2  # same data: no new version
        for _ in range(2):
            await client.post(
                "/v1/tickets", json={"subject": "dup", "external_ids": {"erp": "9"}}, headers=admin
            )
        r = await client.put(
            "/v1/tickets/by-external-id/erp/9", json={"subject": "x"}, headers=admin
        )
        assert r.status_code == 409
        r = await client.put(
            "/v1/tickets/by-external-id/BAD SYSTEM/1", json={"subject": "x"}, headers=admin
        )
        assert r.status_code == 422
