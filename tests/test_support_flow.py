"""Through the gateway, across services: a ticket from a contact is answered and solved in the
tickets service; the customer answers the CSAT survey on the public route (no token); the
360 view and timeline show the ticket, its SLA state and the score."""

from __future__ import annotations

from typing import Any

from chassis.testing import wait_for


class TestTicketToCsat:
    async def test_ticket_solved_csat_answered_and_seen_in_the_360(self, platform: Any) -> None:
        client, infra = platform.client, platform.infra
        admin = infra.auth()
        agent = infra.auth(roles=["support_agent"], sub="agent-1")

        r = await client.post(
            "/v1/sla-policies",
            json={
                "name": "Urgent 24x7",
                "position": 1,
                "business_hours_id": None,
                "conditions": {"priority": ["urgent"]},
                "targets": {
                    "urgent": {"first_response": 60, "next_response": 120, "resolution": 480}
                },
            },
            headers=admin,
        )
        assert r.status_code == 201, r.text
        r = await client.post("/v1/contacts", json={"first_name": "Ada"}, headers=admin)
        assert r.status_code == 201, r.text
        contact = r.json()["id"]
        r = await client.post(
            "/v1/tickets",
            json={
                "subject": "Cannot log in",
                "description": "Since this morning",
                "requester_contact_id": contact,
                "channel": "email",
                "priority": "urgent",
            },
            headers=agent,
        )
        assert r.status_code == 201, r.text
        ticket = r.json()
        r = await client.post(
            f"/v1/tickets/{ticket['id']}/comments",
            json={"body": "Looking into it", "public": True},
            headers=agent,
        )
        assert r.status_code == 201, r.text
        current = await client.get(f"/v1/tickets/{ticket['id']}", headers=agent)
        r = await client.patch(
            f"/v1/tickets/{ticket['id']}",
            json={"status": "solved"},
            headers={**agent, "If-Match": current.headers["etag"]},
        )
        assert r.status_code == 200, r.text
        solved = (await client.get(f"/v1/tickets/{ticket['id']}", headers=agent)).json()
        assert solved["status"] == "solved"
        assert solved["csat"]["status"] == "requested"
        token = solved["csat"]["survey_url"].rsplit("/", 1)[1]

        # The public route needs no token, and answers only once.
        r = await client.post(f"/v1/public/csat/{token}", json={"score": 5, "comment": "Fast!"})
        assert r.status_code == 200, r.text
        again = await client.post(f"/v1/public/csat/{token}", json={"score": 1})
        assert again.status_code == 409, again.text
        assert again.headers["content-type"] == "application/problem+json"

        async def view() -> dict[str, Any] | None:
            r = await client.get(f"/v1/customers/{contact}/360", headers=admin)
            if r.status_code != 200:
                return None
            doc = dict(r.json())
            ok = doc["tickets"] and doc["metrics"].get("last_csat")
            return doc if ok and doc["tickets"][0]["status"] == "solved" else None

        doc = await wait_for(view, timeout=20, message="solved ticket and CSAT in the 360")
        assert doc["tickets"][0]["id"] == ticket["id"]
        assert doc["tickets"][0]["sla"]["first_response"]["fulfilled_at"] is not None
        assert doc["metrics"]["last_csat"]["score"] == 5
        assert doc["metrics"]["open_tickets"] == 0
        timeline = await client.get(f"/v1/customers/{contact}/timeline", headers=admin)
        kinds = [e["kind"] for e in timeline.json()["items"]]
        assert {"ticket.created", "ticket.solved", "csat.answered"} <= set(kinds)
