"""Sequences: steps on durable timers, branches on engagement, add_tag / create_task events,
segment and event triggers, one active enrollment per contact, exits."""

from __future__ import annotations

import email
import re
import uuid
from typing import Any

import asyncpg
from httpx import AsyncClient

from campaigns.smtp_sink import SmtpSink
from chassis.testing import wait_for
from crm.campaigns.v1 import campaigns_pb2 as pb

TEMPLATE = {
    "name": "Nurture",
    "subject": "Hi {{ contact.first_name }}",
    "html": "<p>Hello</p>",
    "text": "Hello",
}


async def template(client: AsyncClient) -> str:
    return str((await client.post("/v1/email-templates", json=TEMPLATE)).json()["id"])


async def enrollments(client: AsyncClient, sid: str) -> dict[str, dict[str, Any]]:
    items = (await client.get(f"/v1/sequences/{sid}/enrollments")).json()["items"]
    return {e["contact_id"]: e for e in items}


async def settle(client: AsyncClient, sid: str, n: int) -> dict[str, dict[str, Any]]:
    async def probe() -> dict[str, dict[str, Any]] | None:
        found = await enrollments(client, sid)
        done = [e for e in found.values() if e["status"] != "active"]
        return found if len(done) == n else None

    return await wait_for(probe, timeout=20, message=f"{n} enrollments finished")


class TestRunner:
    async def test_branch_on_open_then_tag_or_task(
        self, client: AsyncClient, upstream: Any, sink: SmtpSink, db: asyncpg.Connection
    ) -> None:
        tid = await template(client)
        opener = await upstream.contact(owner_id="rep-7")
        silent = await upstream.contact(owner_id="rep-9")
        await upstream.wait_contact(opener)
        await upstream.wait_contact(silent)
        steps = [
            {"type": "send_email", "template_id": tid},
            {"type": "wait", "seconds": 2},
            {"type": "branch", "if": {"opened": True}, "then": 3, "else": 5},
            {"type": "add_tag", "tag": "engaged"},
            {"type": "exit"},
            {"type": "create_task", "title": "Call them", "due_in_days": 2, "priority": "high"},
        ]
        r = await client.post("/v1/sequences", json={"name": "Onboarding", "steps": steps})
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        for c in (opener, silent):
            r = await client.post(f"/v1/sequences/{sid}/enrollments", json={"contact_id": c})
            assert r.status_code == 201, r.text
        r = await client.post(f"/v1/sequences/{sid}/enrollments", json={"contact_id": opener})
        assert r.status_code == 409
        await wait_for(lambda: _count(sink, 2), message="two nurture emails")
        mail = next(
            email.message_from_bytes(m.read_bytes())
            for m in sink.messages()
            if email.message_from_bytes(m.read_bytes())["To"] == f"{opener[:8]}@example.com"
        )
        html = next(
            p.get_payload(decode=True) for p in mail.walk() if p.get_content_type() == "text/html"
        )
        assert isinstance(html, bytes)
        pixel = re.search(r'http://public\.test(/v1/public/t/o/[^"]+)"', html.decode())
        assert pixel
        waiting = await enrollments(client, sid)
        assert waiting[opener]["status"] == "active"
        assert waiting[opener]["step"] == 2
        await client.get(pixel.group(1))
        done = await settle(client, sid, 2)
        assert (done[opener]["status"], done[opener]["exit_reason"]) == ("exited", "exit_step")
        assert done[silent]["status"] == "completed"
        tags = [
            pb.ContactTagRequested.FromString(r["payload"])
            for r in await db.fetch(
                "SELECT payload FROM outbox WHERE ce_type = "
                "'crm.campaigns.contact_tag.requested.v1'"
            )
        ]
        assert [(t.contact_id, t.tag) for t in tags] == [(opener, "engaged")]
        tasks = [
            pb.SequenceTaskRequested.FromString(r["payload"])
            for r in await db.fetch(
                "SELECT payload FROM outbox WHERE ce_type = "
                "'crm.campaigns.sequence_task.requested.v1'"
            )
        ]
        assert [(t.contact_id, t.assignee_id, t.title, t.priority) for t in tasks] == [
            (silent, "rep-9", "Call them", "high")
        ]
        assert tasks[0].HasField("due_at")
        # one email per step and enrollment, however often the runner ran
        assert (
            await db.fetchval("SELECT count(*) FROM deliveries WHERE enrollment_id IS NOT NULL")
            == 2
        )

    async def test_segment_trigger_and_exits(
        self, client: AsyncClient, upstream: Any, db: asyncpg.Connection
    ) -> None:
        tid = await template(client)
        early = await upstream.contact(tags=["trial"])
        late = await upstream.contact(tags=[])
        replier = await upstream.contact(tags=["trial"])
        for c in (early, late, replier):
            await upstream.wait_contact(c)
        seg = (
            await client.post(
                "/v1/segments",
                json={
                    "name": "trial",
                    "filter": {"all": [{"field": "tags", "op": "contains", "value": "trial"}]},
                },
            )
        ).json()["id"]
        steps = [{"type": "wait", "days": 3}, {"type": "send_email", "template_id": tid}]
        r = await client.post(
            "/v1/sequences",
            json={
                "name": "Trial",
                "steps": steps,
                "trigger": {"type": "segment", "segment_id": seg},
            },
        )
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        assert set(await enrollments(client, sid)) == {early, replier}
        await upstream.contact(cid=late, tags=["trial"])
        await wait_for(
            lambda: _enrolled(client, sid, late),
            message="late contact enrolled on entering the segment",
        )
        await upstream.erased("acme", early)
        r = await client.post(
            "/v1/touchpoints", json={"channel": "email_reply", "contact_id": replier}
        )
        assert r.status_code == 201
        done = await settle(client, sid, 2)
        assert done[early]["exit_reason"] == "erased"
        assert done[replier]["exit_reason"] == "replied"
        assert done[late]["status"] == "active"
        assert done[late]["step_type"] == "send_email"

    async def test_event_trigger_on_contact_created_with_tag(
        self, client: AsyncClient, upstream: Any
    ) -> None:
        r = await client.post(
            "/v1/sequences",
            json={
                "name": "Welcome",
                "steps": [{"type": "wait", "days": 1}],
                "trigger": {"type": "event", "event": "contact.created", "tag": "newsletter"},
            },
        )
        sid = r.json()["id"]
        tagged = await upstream.contact(tags=["newsletter"])
        other = await upstream.contact(tags=[])
        await upstream.wait_contact(other)
        await wait_for(lambda: _enrolled(client, sid, tagged), message="tagged contact enrolled")
        assert other not in await enrollments(client, sid)


class TestValidation:
    async def test_bad_sequences_are_422(self, client: AsyncClient, db: asyncpg.Connection) -> None:
        tid = await template(client)
        cases = [
            ([{"type": "teleport"}], None, ["steps", 0, "type"]),
            (
                [{"type": "send_email", "template_id": str(uuid.uuid4())}],
                None,
                ["steps", 0, "template_id"],
            ),
            ([{"type": "wait"}], None, ["steps", 0]),
            ([{"type": "branch", "if": {"opened": True}, "then": 9}], None, ["steps", 0, "then"]),
            ([{"type": "branch", "if": {"weather": "sunny"}}], None, ["steps", 0, "if"]),
            (
                [{"type": "send_email", "template_id": tid}],
                {"type": "segment", "segment_id": str(uuid.uuid4())},
                ["trigger", "segment_id"],
            ),
            ([{"type": "send_email", "template_id": tid}], {"type": "cron"}, ["trigger", "type"]),
        ]
        for steps, trigger, path in cases:
            body: dict[str, Any] = {"name": "x", "steps": steps}
            if trigger:
                body["trigger"] = trigger
            r = await client.post("/v1/sequences", json=body)
            assert r.status_code == 422, body
            assert r.json()["errors"][0]["path"] == path, r.json()
        assert await db.fetchval("SELECT count(*) FROM sequences") == 0


async def _count(sink: SmtpSink, n: int) -> bool:
    return len(sink.messages()) >= n


async def _enrolled(client: AsyncClient, sid: str, contact: str) -> bool:
    return contact in await enrollments(client, sid)
