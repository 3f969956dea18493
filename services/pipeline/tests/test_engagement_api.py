"""Activities, tasks, playbooks and the activities report through the HTTP API; visibility by
the sales org; the contacts consumer (merge, erase, delete).

Teams and deals are seeded with SQL (the core API is built separately)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import nats
import pytest
from httpx import AsyncClient, Response

from chassis.db import asyncpg_dsn
from chassis.events import OutgoingEvent
from chassis.testing import Infra, wait_for
from crm.common.v1.common_pb2 import EventMeta
from crm.contacts.v1 import contacts_pb2 as cpb
from crm.pipeline.v1 import pipeline_pb2 as pb


class Eng:
    """Arranging helpers: tokens, SQL seeding of the sales org and deals, the event stream."""

    def __init__(self, client: AsyncClient, infra: Infra, db_url: str) -> None:
        self.client = client
        self.infra = infra
        self.db_url = db_url

    def h(self, sub: str = "admin-1", role: str = "admin", tenant: str = "acme") -> dict[str, str]:
        return self.infra.auth(tenant=tenant, roles=[role], sub=sub)

    def rep(self, sub: str) -> dict[str, str]:
        return self.h(sub, "sales_rep")

    def mgr(self, sub: str) -> dict[str, str]:
        return self.h(sub, "sales_manager")

    async def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(asyncpg_dsn(self.db_url))
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    async def team(
        self, members: dict[str, str], parent: uuid.UUID | None = None, tenant: str = "acme"
    ) -> uuid.UUID:
        team_id = uuid.uuid4()
        now = datetime.now(UTC)
        await self.sql(
            "INSERT INTO teams (tenant_id, id, name, parent_id, created_at, updated_at, version) "
            "VALUES ($1, $2, $3, $4, $5, $5, 1)",
            tenant,
            team_id,
            f"team-{team_id.hex[:6]}",
            parent,
            now,
        )
        for user, role in members.items():
            await self.sql(
                "INSERT INTO team_members (tenant_id, team_id, user_id, role) "
                "VALUES ($1, $2, $3, $4)",
                tenant,
                team_id,
                user,
                role,
            )
        return team_id

    async def stages(self, n: int = 2, tenant: str = "acme") -> tuple[uuid.UUID, list[uuid.UUID]]:
        pipeline_id, now = uuid.uuid4(), datetime.now(UTC)
        await self.sql(
            "INSERT INTO pipelines (tenant_id, id, name, created_at, updated_at, version) "
            "VALUES ($1, $2, 'New business', $3, $3, 1)",
            tenant,
            pipeline_id,
            now,
        )
        ids = [uuid.uuid4() for _ in range(n)]
        for pos, stage_id in enumerate(ids):
            await self.sql(
                "INSERT INTO stages (tenant_id, id, pipeline_id, name, position, probability, "
                "forecast_category) VALUES ($1, $2, $3, $4, $5, 10, 'pipeline')",
                tenant,
                stage_id,
                pipeline_id,
                f"s{pos}",
                pos,
            )
        return pipeline_id, ids

    async def deal(
        self, owner: str, stage: tuple[uuid.UUID, uuid.UUID] | None = None, tenant: str = "acme"
    ) -> str:
        if stage is None:
            pipeline_id, ids = await self.stages(1, tenant)
            stage = (pipeline_id, ids[0])
        deal_id, now = uuid.uuid4(), datetime.now(UTC)
        await self.sql(
            "INSERT INTO deals (tenant_id, id, name, owner_id, pipeline_id, stage_id, amount, "
            "currency, created_at, updated_at, version) "
            "VALUES ($1, $2, 'Deal', $3, $4, $5, 100, 'USD', $6, $6, 1)",
            tenant,
            deal_id,
            owner,
            stage[0],
            stage[1],
            now,
        )
        return str(deal_id)

    async def post(
        self, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> dict[str, Any]:
        r = await self.client.post(path, json=body, headers=headers)
        assert r.status_code == 201, r.text
        assert r.headers["ETag"] == f'"{r.json()["version"]}"'
        return dict(r.json())

    async def patch(
        self, path: str, body: dict[str, Any], headers: dict[str, str], version: int
    ) -> Response:
        return await self.client.patch(
            path, json=body, headers={**headers, "If-Match": f'"{version}"'}
        )

    async def events(self, count: int, subject_filter: str = "") -> list[Any]:
        """Wait until CRM_PIPELINE holds `count` matching messages; return them all."""

        async def probe() -> list[Any]:
            msgs = [m for m in await self.stream() if subject_filter in m.subject]
            return msgs if len(msgs) >= count else []

        return await wait_for(probe, timeout=10, message=f"{count} events {subject_filter}")

    async def stream(self) -> list[Any]:
        nc = await nats.connect(self.infra.nats_url)
        try:
            js = nc.jetstream()
            try:
                info = await js.stream_info("CRM_PIPELINE")
            except nats.js.errors.NotFoundError:
                return []
            if not info.state.messages:
                return []
            return [
                await js.get_msg("CRM_PIPELINE", seq)
                for seq in range(info.state.first_seq, info.state.last_seq + 1)
            ]
        finally:
            await nc.close()

    async def publish_contact_event(self, message: Any, contact_id: str, version: int = 1) -> None:
        message.meta.CopyFrom(
            EventMeta(tenant_id="acme", aggregate_id=contact_id, version=version, actor="u-merger")
        )
        ev = OutgoingEvent(
            message=message,
            ce_type={
                "ContactMerged": "crm.contacts.contact.merged.v1",
                "ContactErased": "crm.contacts.contact.erased.v1",
                "ContactDeleted": "crm.contacts.contact.deleted.v1",
            }[type(message).__name__],
            tenant="acme",
            aggregate_id=contact_id,
            version=version,
            source="crm/contacts",
        )
        nc = await nats.connect(self.infra.nats_url)
        try:
            await nc.jetstream().publish(
                ev.subject, ev.message.SerializeToString(), headers=ev.headers()
            )
        finally:
            await nc.close()


@pytest.fixture
def eng(client: AsyncClient, crm_infra: Infra, db_url: str) -> Eng:
    return Eng(client, crm_infra, db_url)


def parse(msg: Any, cls: Any) -> Any:
    assert msg.headers["ce-dataschema"] == cls.DESCRIPTOR.full_name
    out = cls()
    out.ParseFromString(msg.data)
    return out


def problem_paths(r: Response) -> list[Sequence[Any]]:
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    return [e["path"] for e in r.json().get("errors", [])]


# --- activities ------------------------------------------------------------------------------


class TestLogActivity:
    async def test_defaults_and_event_without_body(self, eng: Eng) -> None:
        contact = str(uuid.uuid4())
        a = await eng.post(
            "/v1/activities",
            {
                "type": "call",
                "subject": "Discovery",
                "body": "secret notes",
                "contact_id": contact,
                "duration_seconds": 600,
                "outcome": "connected",
            },
            eng.rep("u-rep1"),
        )
        assert a["owner_id"] == "u-rep1"
        assert a["version"] == 1
        assert a["body"] == "secret notes"
        occurred = datetime.fromisoformat(a["occurred_at"])
        assert abs((occurred - datetime.now(UTC)).total_seconds()) < 10
        (msg,) = await eng.events(1, ".activity.")
        assert msg.subject == "crm.pipeline.acme.activity.logged"
        assert msg.headers["ce-sequence"] == "1"
        ev = parse(msg, pb.ActivityLogged)
        assert ev.activity.contact_id == contact
        assert ev.activity.duration_seconds == 600
        assert (ev.meta.actor, ev.meta.version) == ("u-rep1", 1)
        assert b"secret notes" not in msg.data

    @pytest.mark.parametrize(
        ("body", "path"),
        [
            ({"type": "fax"}, ["type"]),
            ({"subject": "no type"}, ["type"]),
            ({"type": "call", "duration_seconds": -1}, ["duration_seconds"]),
            ({"type": "call", "occurred_at": "2026-11-01T10:00:00"}, ["occurred_at"]),
            ({"type": "call", "contact_id": "nope"}, ["contact_id"]),
            ({"type": "call", "colour": "red"}, ["colour"]),
        ],
    )
    async def test_bad_input_is_422_and_writes_nothing(
        self, eng: Eng, body: dict[str, Any], path: list[str]
    ) -> None:
        r = await eng.client.post("/v1/activities", json=body, headers=eng.h())
        assert r.status_code == 422, r.text
        assert path in problem_paths(r)
        assert await eng.sql("SELECT 1 FROM activities") == []
        assert await eng.sql("SELECT 1 FROM outbox") == []

    async def test_deal_must_be_visible(self, eng: Eng) -> None:
        theirs = await eng.deal("u-rep2")
        mine = await eng.deal("u-rep1")
        r = await eng.client.post(
            "/v1/activities", json={"type": "note", "deal_id": theirs}, headers=eng.rep("u-rep1")
        )
        assert r.status_code == 422
        assert ["deal_id"] in problem_paths(r)
        r = await eng.client.post(
            "/v1/activities",
            json={"type": "note", "deal_id": str(uuid.uuid4())},
            headers=eng.rep("u-rep1"),
        )
        assert r.status_code == 422
        a = await eng.post("/v1/activities", {"type": "note", "deal_id": mine}, eng.rep("u-rep1"))
        assert a["deal_id"] == mine
        assert len(await eng.sql("SELECT 1 FROM activities")) == 1

    async def test_owner_outside_scope_is_403(self, eng: Eng) -> None:
        await eng.team({"u-mgr": "manager", "u-rep1": "rep"})
        r = await eng.client.post(
            "/v1/activities", json={"type": "call", "owner_id": "u-rep2"}, headers=eng.rep("u-rep1")
        )
        assert r.status_code == 403
        r = await eng.client.post(
            "/v1/activities", json={"type": "call", "owner_id": "u-rep9"}, headers=eng.mgr("u-mgr")
        )
        assert r.status_code == 403
        a = await eng.post(
            "/v1/activities", {"type": "call", "owner_id": "u-rep1"}, eng.mgr("u-mgr")
        )
        assert a["owner_id"] == "u-rep1"
        assert a["created_by"] == "u-mgr"
        assert len(await eng.sql("SELECT 1 FROM activities")) == 1


class TestActivityVisibility:
    async def test_rep_vs_rep_and_manager_sees_sub_team(self, eng: Eng) -> None:
        top = await eng.team({"u-mgr": "manager", "u-rep1": "rep"})
        await eng.team({"u-rep2": "rep"}, parent=top)
        a1 = await eng.post("/v1/activities", {"type": "call"}, eng.rep("u-rep1"))
        a2 = await eng.post("/v1/activities", {"type": "email"}, eng.rep("u-rep2"))
        a3 = await eng.post("/v1/activities", {"type": "visit"}, eng.rep("u-out"))
        r = await eng.client.get(f"/v1/activities/{a2['id']}", headers=eng.rep("u-rep1"))
        assert r.status_code == 404
        r = await eng.client.get("/v1/activities", headers=eng.rep("u-rep1"))
        assert [x["id"] for x in r.json()["items"]] == [a1["id"]]
        r = await eng.client.get("/v1/activities", headers=eng.mgr("u-mgr"))
        assert {x["id"] for x in r.json()["items"]} == {a1["id"], a2["id"]}
        r = await eng.client.get(f"/v1/activities/{a2['id']}", headers=eng.mgr("u-mgr"))
        assert r.status_code == 200
        r = await eng.client.get(f"/v1/activities/{a3['id']}", headers=eng.mgr("u-mgr"))
        assert r.status_code == 404
        r = await eng.client.get("/v1/activities", headers=eng.h())
        assert len(r.json()["items"]) == 3
        # another tenant sees nothing
        r = await eng.client.get(f"/v1/activities/{a1['id']}", headers=eng.h(tenant="other"))
        assert r.status_code == 404
        # an invisible activity cannot be changed or deleted either
        r = await eng.patch(f"/v1/activities/{a2['id']}", {"subject": "x"}, eng.rep("u-rep1"), 1)
        assert r.status_code == 404
        r = await eng.client.delete(
            f"/v1/activities/{a2['id']}", headers={**eng.rep("u-rep1"), "If-Match": '"1"'}
        )
        assert r.status_code == 404


class TestListActivities:
    async def test_filters_and_keyset_pagination(self, eng: Eng) -> None:
        base = datetime(2026, 11, 2, 9, tzinfo=UTC)
        contact = str(uuid.uuid4())
        ids = []
        for i in range(7):
            a = await eng.post(
                "/v1/activities",
                {
                    "type": "call" if i % 2 == 0 else "email",
                    "occurred_at": (base + timedelta(hours=i)).isoformat(),
                    "contact_id": contact if i < 3 else None,
                    "owner_id": "u-a" if i < 5 else "u-b",
                },
                eng.h(),
            )
            ids.append(a["id"])
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 3}
            if cursor:
                params["cursor"] = cursor
            r = await eng.client.get("/v1/activities", params=params, headers=eng.h())
            assert r.status_code == 200
            seen += [x["id"] for x in r.json()["items"]]
            cursor = r.json()["next_cursor"]
            if not cursor:
                break
        assert seen == list(reversed(ids))  # newest first, each once

        async def ids_for(**params: Any) -> list[str]:
            r = await eng.client.get("/v1/activities", params=params, headers=eng.h())
            assert r.status_code == 200, r.text
            return [x["id"] for x in r.json()["items"]]

        assert await ids_for(type="call") == [ids[6], ids[4], ids[2], ids[0]]
        assert await ids_for(contact_id=contact) == [ids[2], ids[1], ids[0]]
        assert await ids_for(owner_id="u-b") == [ids[6], ids[5]]
        assert await ids_for(
            occurred_from=(base + timedelta(hours=2)).isoformat(),
            occurred_to=(base + timedelta(hours=4)).isoformat(),
        ) == [ids[3], ids[2]]
        r = await eng.client.get("/v1/activities", params={"type": "fax"}, headers=eng.h())
        assert r.status_code == 422
        r = await eng.client.get("/v1/activities", params={"cursor": "garbage"}, headers=eng.h())
        assert r.status_code == 422
        assert ["cursor"] in problem_paths(r)


class TestUpdateDeleteActivity:
    async def test_patch_with_if_match_then_delete(self, eng: Eng) -> None:
        a = await eng.post("/v1/activities", {"type": "call", "subject": "s"}, eng.rep("u-rep1"))
        url = f"/v1/activities/{a['id']}"
        r = await eng.client.patch(url, json={"subject": "t"}, headers=eng.rep("u-rep1"))
        assert r.status_code == 428
        r = await eng.patch(url, {"subject": "t"}, eng.rep("u-rep1"), 7)
        assert r.status_code == 412
        r = await eng.patch(url, {"duration_seconds": -5}, eng.rep("u-rep1"), 1)
        assert r.status_code == 422
        r = await eng.patch(url, {"type": None}, eng.rep("u-rep1"), 1)
        assert r.status_code == 422
        assert ["type"] in problem_paths(r)
        r = await eng.patch(url, {"owner_id": "u-rep2"}, eng.rep("u-rep1"), 1)
        assert r.status_code == 403
        r = await eng.patch(url, {"subject": "t", "outcome": "voicemail"}, eng.rep("u-rep1"), 1)
        assert r.status_code == 200, r.text
        assert r.headers["ETag"] == '"2"'
        assert (r.json()["subject"], r.json()["version"]) == ("t", 2)
        # an unchanged write bumps nothing
        r = await eng.patch(url, {"subject": "t"}, eng.rep("u-rep1"), 2)
        assert r.json()["version"] == 2
        r = await eng.client.delete(url, headers={**eng.rep("u-rep1"), "If-Match": '"2"'})
        assert r.status_code == 204
        assert (await eng.client.get(url, headers=eng.rep("u-rep1"))).status_code == 404
        msgs = await eng.events(3, ".activity.")
        assert [m.subject.rsplit(".", 1)[1] for m in msgs] == ["logged", "updated", "deleted"]
        assert [m.headers["ce-sequence"] for m in msgs] == ["1", "2", "3"]
        up = parse(msgs[1], pb.ActivityUpdated)
        assert list(up.meta.changed_fields) == ["subject", "outcome"]
        assert parse(msgs[2], pb.ActivityDeleted).activity.version == 3


# --- tasks -----------------------------------------------------------------------------------


class TestCreateTask:
    async def test_defaults_and_event(self, eng: Eng) -> None:
        deal = await eng.deal("u-rep1")
        due = datetime.now(UTC) + timedelta(days=2)
        t = await eng.post(
            "/v1/tasks",
            {
                "title": "Call back",
                "due_at": due.isoformat(),
                "remind_at": (due - timedelta(hours=1)).isoformat(),
                "deal_id": deal,
            },
            eng.rep("u-rep1"),
        )
        assert (t["assignee_id"], t["status"], t["priority"]) == ("u-rep1", "open", "normal")
        assert t["reminder_fired_for"] is None
        assert t["overdue_fired_for"] is None
        (msg,) = await eng.events(1, ".task.")
        ev = parse(msg, pb.TaskCreated)
        assert ev.task.title == "Call back"
        assert ev.task.deal_id == deal
        assert ev.task.due_at.ToDatetime(tzinfo=UTC) == due.replace(microsecond=due.microsecond)

    @pytest.mark.parametrize(
        ("body", "path"),
        [
            ({"due_at": "2026-12-01T10:00:00Z"}, ["title"]),
            (
                {
                    "title": "t",
                    "due_at": "2026-12-01T10:00:00Z",
                    "remind_at": "2026-12-01T11:00:00Z",
                },
                ["remind_at"],
            ),
            ({"title": "t", "priority": "asap"}, ["priority"]),
            ({"title": "t", "status": "waiting"}, ["status"]),
            ({"title": ""}, ["title"]),
            ({"title": "t", "deal_id": str(uuid.uuid4())}, ["deal_id"]),
        ],
    )
    async def test_bad_input_is_422_and_writes_nothing(
        self, eng: Eng, body: dict[str, Any], path: list[str]
    ) -> None:
        r = await eng.client.post("/v1/tasks", json=body, headers=eng.h())
        assert r.status_code == 422, r.text
        assert path in problem_paths(r)
        assert await eng.sql("SELECT 1 FROM tasks") == []

    async def test_invisible_deal_and_assignee_out_of_scope(self, eng: Eng) -> None:
        theirs = await eng.deal("u-rep2")
        r = await eng.client.post(
            "/v1/tasks", json={"title": "t", "deal_id": theirs}, headers=eng.rep("u-rep1")
        )
        assert r.status_code == 422
        assert ["deal_id"] in problem_paths(r)
        r = await eng.client.post(
            "/v1/tasks", json={"title": "t", "assignee_id": "u-rep2"}, headers=eng.rep("u-rep1")
        )
        assert r.status_code == 403
        assert await eng.sql("SELECT 1 FROM tasks") == []


class TestTaskListAndVisibility:
    async def test_filters_pagination_and_scope(self, eng: Eng) -> None:
        top = await eng.team({"u-mgr": "manager", "u-rep1": "rep"})
        await eng.team({"u-rep2": "rep"}, parent=top)
        base = datetime(2026, 12, 1, tzinfo=UTC)
        deal = await eng.deal("u-rep1")
        made = []
        for i, (who, due) in enumerate(
            [("u-rep1", 3), ("u-rep2", 1), ("u-rep1", None), ("u-rep1", 2), ("u-rep9", 0)]
        ):
            body: dict[str, Any] = {"title": f"t{i}", "assignee_id": who}
            if due is not None:
                body["due_at"] = (base + timedelta(days=due)).isoformat()
            if i == 0:
                body["deal_id"] = deal
            made.append(await eng.post("/v1/tasks", body, eng.h()))
        t0, t1, t2, t3, t4 = (t["id"] for t in made)

        async def ids(headers: dict[str, str], **params: Any) -> list[str]:
            out, cursor = [], None
            while True:
                p = {**params, "limit": 2, **({"cursor": cursor} if cursor else {})}
                r = await eng.client.get("/v1/tasks", params=p, headers=headers)
                assert r.status_code == 200, r.text
                out += [x["id"] for x in r.json()["items"]]
                cursor = r.json()["next_cursor"]
                if not cursor:
                    return out

        assert await ids(eng.h()) == [t4, t1, t3, t0, t2]  # soonest due first, no due last
        assert await ids(eng.rep("u-rep1")) == [t3, t0, t2]
        assert await ids(eng.mgr("u-mgr")) == [t1, t3, t0, t2]
        assert await ids(eng.h(), due_before=(base + timedelta(days=2)).isoformat()) == [t4, t1]
        assert await ids(eng.h(), deal_id=deal) == [t0]
        assert await ids(eng.h(), assignee_id="u-rep1") == [t3, t0, t2]
        r = await eng.client.get(f"/v1/tasks/{t1}", headers=eng.rep("u-rep1"))
        assert r.status_code == 404
        r = await eng.client.get(f"/v1/tasks/{t1}", headers=eng.mgr("u-mgr"))
        assert r.status_code == 200
        r = await eng.client.get(f"/v1/tasks/{t1}", headers=eng.h(tenant="other"))
        assert r.status_code == 404
        assert await ids(eng.mgr("u-mgr"), assignee_id="u-rep9") == []
        r = await eng.patch(f"/v1/tasks/{t0}", {"status": "done"}, eng.h(), 1)
        assert r.status_code == 200
        assert await ids(eng.h(), status="open") == [t4, t1, t3, t2]
        assert await ids(eng.h(), status="done") == [t0]
        r = await eng.client.get("/v1/tasks", params={"status": "later"}, headers=eng.h())
        assert r.status_code == 422


class TestUpdateDeleteTask:
    async def test_patch_rules_and_events(self, eng: Eng) -> None:
        due = datetime.now(UTC) + timedelta(days=3)
        t = await eng.post("/v1/tasks", {"title": "t", "due_at": due.isoformat()}, eng.rep("u-r"))
        url = f"/v1/tasks/{t['id']}"
        late = (due + timedelta(hours=1)).isoformat()
        r = await eng.patch(url, {"remind_at": late}, eng.rep("u-r"), 1)
        assert r.status_code == 422
        assert ["remind_at"] in problem_paths(r)
        r = await eng.patch(url, {"title": None}, eng.rep("u-r"), 1)
        assert r.status_code == 422
        r = await eng.patch(url, {"assignee_id": "u-other"}, eng.rep("u-r"), 1)
        assert r.status_code == 403
        r = await eng.client.patch(url, json={"title": "x"}, headers=eng.rep("u-r"))
        assert r.status_code == 428
        r = await eng.patch(url, {"status": "done", "priority": "urgent"}, eng.rep("u-r"), 1)
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["status"], body["priority"], body["version"]) == ("done", "urgent", 2)
        assert body["completed_at"] is not None
        r = await eng.patch(url, {"status": "open"}, eng.rep("u-r"), 2)
        assert r.json()["completed_at"] is None
        r = await eng.client.delete(url, headers={**eng.rep("u-r"), "If-Match": '"1"'})
        assert r.status_code == 412
        r = await eng.client.delete(url, headers={**eng.rep("u-r"), "If-Match": '"3"'})
        assert r.status_code == 204
        msgs = await eng.events(4, ".task.")
        assert [m.subject.rsplit(".", 1)[1] for m in msgs] == [
            "created",
            "updated",
            "updated",
            "deleted",
        ]
        assert [m.headers["ce-sequence"] for m in msgs] == ["1", "2", "3", "4"]
        assert list(parse(msgs[1], pb.TaskUpdated).meta.changed_fields) == ["status", "priority"]
        assert parse(msgs[3], pb.TaskDeleted).task.version == 4


# --- playbooks -------------------------------------------------------------------------------


class TestPlaybooks:
    async def test_crud_roles_and_validation(self, eng: Eng) -> None:
        _, (s1, s2) = await eng.stages(2)
        body = {
            "title": "Negotiation checklist",
            "body": "## Steps",
            "stage_ids": [str(s1)],
            "tags": ["negotiation"],
            "attachments": ["https://example.com/pricing.pdf"],
        }
        r = await eng.client.post("/v1/playbooks", json=body, headers=eng.rep("u-rep1"))
        assert r.status_code == 403
        p = await eng.post("/v1/playbooks", body, eng.mgr("u-mgr"))
        assert p["attachments"] == ["https://example.com/pricing.pdf"]
        assert p["stage_ids"] == [str(s1)]
        for bad, path in [
            ({**body, "attachments": ["ftp://example.com/x"]}, ["attachments", 0]),
            ({**body, "attachments": ["not a url"]}, ["attachments", 0]),
            ({**body, "stage_ids": [str(uuid.uuid4())]}, ["stage_ids", 0]),
            ({**body, "title": None}, ["title"]),
        ]:
            r = await eng.client.post("/v1/playbooks", json=bad, headers=eng.h())
            assert r.status_code == 422, r.text
            assert path in problem_paths(r), (bad, r.json())
        assert len(await eng.sql("SELECT 1 FROM playbooks")) == 1
        # anyone in the tenant reads, other tenants do not
        r = await eng.client.get(f"/v1/playbooks/{p['id']}", headers=eng.rep("u-rep1"))
        assert r.status_code == 200
        assert r.json()["title"] == body["title"]
        r = await eng.client.get(f"/v1/playbooks/{p['id']}", headers=eng.h(tenant="other"))
        assert r.status_code == 404
        url = f"/v1/playbooks/{p['id']}"
        r = await eng.patch(url, {"stage_ids": [str(s1), str(s2)]}, eng.rep("u-rep1"), 1)
        assert r.status_code == 403
        r = await eng.patch(url, {"stage_ids": [str(s1), str(s2)]}, eng.h(), 1)
        assert r.status_code == 200
        assert r.json()["version"] == 2
        r = await eng.client.get("/v1/playbooks", params={"stage_id": str(s2)}, headers=eng.h())
        assert [x["id"] for x in r.json()["items"]] == [p["id"]]
        r = await eng.client.get("/v1/playbooks", params={"tag": "other"}, headers=eng.h())
        assert r.json()["items"] == []
        r = await eng.client.delete(url, headers={**eng.h(), "If-Match": '"2"'})
        assert r.status_code == 204
        assert (await eng.client.get(url, headers=eng.h())).status_code == 404

    async def test_list_pages_through_every_playbook_once(self, eng: Eng) -> None:
        made = [
            (await eng.post("/v1/playbooks", {"title": f"p{i}"}, eng.h()))["id"] for i in range(5)
        ]
        seen, cursor = [], None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            r = await eng.client.get("/v1/playbooks", params=params, headers=eng.rep("u-rep1"))
            assert r.status_code == 200
            seen += [x["id"] for x in r.json()["items"]]
            cursor = r.json()["next_cursor"]
            if not cursor:
                break
        assert seen == made
        r = await eng.client.get("/v1/playbooks", headers=eng.h(tenant="other"))
        assert r.json()["items"] == []

    async def test_deal_playbook_follows_stage_and_visibility(self, eng: Eng) -> None:
        pipeline_id, (s1, s2) = await eng.stages(2)
        p1 = await eng.post("/v1/playbooks", {"title": "Qualify", "stage_ids": [str(s1)]}, eng.h())
        await eng.post("/v1/playbooks", {"title": "Close", "stage_ids": [str(s2)]}, eng.h())
        deal = await eng.deal("u-rep1", (pipeline_id, s1))
        r = await eng.client.get(f"/v1/deals/{deal}/playbook", headers=eng.rep("u-rep1"))
        assert r.status_code == 200, r.text
        assert r.json()["stage_id"] == str(s1)
        assert [x["id"] for x in r.json()["items"]] == [p1["id"]]
        await eng.sql("UPDATE deals SET stage_id = $1", s2)
        r = await eng.client.get(f"/v1/deals/{deal}/playbook", headers=eng.rep("u-rep1"))
        assert [x["title"] for x in r.json()["items"]] == ["Close"]
        r = await eng.client.get(f"/v1/deals/{deal}/playbook", headers=eng.rep("u-rep2"))
        assert r.status_code == 404
        r = await eng.client.get(f"/v1/deals/{uuid.uuid4()}/playbook", headers=eng.h())
        assert r.status_code == 404


# --- the activities report -------------------------------------------------------------------


class TestActivityReport:
    async def test_math_buckets_and_scope(self, eng: Eng) -> None:
        top = await eng.team({"u-mgr": "manager", "u-a": "rep"})
        sub = await eng.team({"u-b": "rep"}, parent=top)
        mon = datetime(2026, 11, 2, 10, tzinfo=UTC)  # a Monday
        rows = [
            ("u-a", "call", mon, 60),
            ("u-a", "call", mon + timedelta(hours=2), 120),
            ("u-a", "call", mon + timedelta(days=1), None),  # no duration recorded
            ("u-a", "call", mon + timedelta(days=7), 300),  # next week
            ("u-a", "email", mon, None),
            ("u-b", "call", mon + timedelta(days=2), 90),
            ("u-c", "meeting", mon, 1800),  # outside the manager's teams
            ("u-a", "call", mon - timedelta(days=1), 999),  # before the range
        ]
        for owner, kind, at, dur in rows:
            body: dict[str, Any] = {"type": kind, "owner_id": owner, "occurred_at": at.isoformat()}
            if dur is not None:
                body["duration_seconds"] = dur
            await eng.post("/v1/activities", body, eng.h())
        params = {"from": "2026-11-02", "to": "2026-11-15", "group_by": "day"}
        r = await eng.client.get("/v1/reports/activities", params=params, headers=eng.h())
        assert r.status_code == 200, r.text
        rep = r.json()
        assert (rep["from"], rep["to"], rep["group_by"]) == ("2026-11-02", "2026-11-15", "day")
        by = {(i["owner_id"], i["type"]): i for i in rep["items"]}
        assert set(by) == {("u-a", "call"), ("u-a", "email"), ("u-b", "call"), ("u-c", "meeting")}
        a_call = by[("u-a", "call")]
        assert (a_call["count"], a_call["total_duration_seconds"]) == (4, 480)
        assert a_call["average_duration_seconds"] == 160.0  # 480 / 3 recorded durations
        assert [
            (b["start"], b["count"], b["total_duration_seconds"]) for b in a_call["buckets"]
        ] == [
            ("2026-11-02", 2, 180),
            ("2026-11-03", 1, 0),
            ("2026-11-09", 1, 300),
        ]
        assert a_call["buckets"][0]["average_duration_seconds"] == 90.0
        assert a_call["buckets"][1]["average_duration_seconds"] is None
        assert by[("u-a", "email")]["average_duration_seconds"] is None

        params["group_by"] = "week"
        r = await eng.client.get("/v1/reports/activities", params=params, headers=eng.h())
        weeks = {(i["owner_id"], i["type"]): i for i in r.json()["items"]}[("u-a", "call")]
        assert [(b["start"], b["count"]) for b in weeks["buckets"]] == [
            ("2026-11-02", 3),
            ("2026-11-09", 1),
        ]

        async def owners(headers: dict[str, str], **extra: Any) -> set[str]:
            r = await eng.client.get(
                "/v1/reports/activities", params={**params, **extra}, headers=headers
            )
            assert r.status_code == 200, r.text
            return {i["owner_id"] for i in r.json()["items"]}

        assert await owners(eng.mgr("u-mgr")) == {"u-a", "u-b"}
        assert await owners(eng.rep("u-b")) == {"u-b"}
        assert await owners(eng.h(), team_id=str(sub)) == {"u-b"}
        assert await owners(eng.h(), team_id=str(top)) == {"u-a", "u-b"}
        assert await owners(eng.mgr("u-mgr"), owner_id="u-c") == set()
        r = await eng.client.get(
            "/v1/reports/activities",
            params={**params, "team_id": str(uuid.uuid4())},
            headers=eng.h(),
        )
        assert r.status_code == 404

    @pytest.mark.parametrize("group_by", ["day", "week"])
    async def test_matches_a_direct_computation_on_random_data(
        self, eng: Eng, group_by: str
    ) -> None:
        rnd = random.Random(20261126)
        start = datetime(2026, 10, 1, tzinfo=UTC)
        rows = []
        for _ in range(300):
            at = start + timedelta(minutes=rnd.randrange(0, 60 * 24 * 45))
            dur = rnd.choice([None, 0, rnd.randrange(1, 4000)])
            rows.append((rnd.choice(["u-a", "u-b", "u-c"]), rnd.choice(["call", "visit"]), at, dur))
        now = datetime.now(UTC)
        conn = await asyncpg.connect(asyncpg_dsn(eng.db_url))
        try:
            await conn.executemany(
                "INSERT INTO activities (tenant_id, id, type, owner_id, occurred_at, "
                "duration_seconds, created_at, updated_at, version) "
                "VALUES ('acme', $1, $2, $3, $4, $5, $6, $6, 1)",
                [(uuid.uuid4(), kind, owner, at, dur, now) for owner, kind, at, dur in rows],
            )
        finally:
            await conn.close()
        first, last = date(2026, 10, 5), date(2026, 11, 3)

        def bucket(at: datetime) -> str:
            d = at.date()
            return (d - timedelta(days=d.weekday()) if group_by == "week" else d).isoformat()

        def figures(durations: list[int | None]) -> tuple[int, int, float | None]:
            known = [d for d in durations if d is not None]
            avg = round(sum(known) / len(known), 2) if known else None
            return len(durations), sum(known), avg

        groups: dict[tuple[str, str], dict[str, list[int | None]]] = {}
        for owner, kind, at, dur in rows:
            if first <= at.date() <= last:
                groups.setdefault((owner, kind), {}).setdefault(bucket(at), []).append(dur)
        expected = {
            key: (
                figures([d for ds in by_bucket.values() for d in ds]),
                [(b, *figures(ds)) for b, ds in sorted(by_bucket.items())],
            )
            for key, by_bucket in groups.items()
        }
        r = await eng.client.get(
            "/v1/reports/activities",
            params={"from": first.isoformat(), "to": last.isoformat(), "group_by": group_by},
            headers=eng.h(),
        )
        assert r.status_code == 200, r.text
        got = {
            (i["owner_id"], i["type"]): (
                (i["count"], i["total_duration_seconds"], i["average_duration_seconds"]),
                [
                    (
                        b["start"],
                        b["count"],
                        b["total_duration_seconds"],
                        b["average_duration_seconds"],
                    )
                    for b in i["buckets"]
                ],
            )
            for i in r.json()["items"]
        }
        assert got == expected

    async def test_bad_parameters(self, eng: Eng) -> None:
        for params, path in [
            ({"from": "2026-11-10", "to": "2026-11-01"}, ["to"]),
            (
                {"from": "2026-11-01", "to": "2026-11-10", "group_by": "month"},
                ["query", "group_by"],
            ),
            ({"from": "nope", "to": "2026-11-10"}, ["query", "from"]),
            ({"to": "2026-11-10"}, ["query", "from"]),
            ({"from": "2020-01-01", "to": "2026-11-10"}, ["to"]),
        ]:
            r = await eng.client.get("/v1/reports/activities", params=params, headers=eng.h())
            assert r.status_code == 422, (params, r.text)
            assert path in problem_paths(r), (params, r.json())


# --- contacts events -------------------------------------------------------------------------


class TestContactsConsumer:
    async def test_merge_repoints_activities_and_tasks(self, eng: Eng) -> None:
        survivor, dup, other = (str(uuid.uuid4()) for _ in range(3))
        a = await eng.post("/v1/activities", {"type": "call", "contact_id": dup}, eng.h())
        keep = await eng.post("/v1/activities", {"type": "call", "contact_id": other}, eng.h())
        t = await eng.post("/v1/tasks", {"title": "t", "contact_id": dup}, eng.h())
        msg = cpb.ContactMerged(survivor_id=survivor, merged_ids=[dup])
        await eng.publish_contact_event(msg, survivor)

        async def repointed() -> bool:
            r = await eng.client.get(f"/v1/activities/{a['id']}", headers=eng.h())
            return bool(r.json()["contact_id"] == survivor)

        await wait_for(repointed, message="activity re-pointed")
        r = await eng.client.get(f"/v1/tasks/{t['id']}", headers=eng.h())
        assert (r.json()["contact_id"], r.json()["version"]) == (survivor, 2)
        r = await eng.client.get(f"/v1/activities/{keep['id']}", headers=eng.h())
        assert (r.json()["contact_id"], r.json()["version"]) == (other, 1)
        msgs = await eng.events(2, ".updated")
        up = {m.headers["ce-subject"]: m for m in msgs}
        ev = parse(up[a["id"]], pb.ActivityUpdated)
        assert (ev.activity.contact_id, ev.meta.version, ev.meta.actor) == (survivor, 2, "u-merger")
        assert parse(up[t["id"]], pb.TaskUpdated).task.contact_id == survivor

    async def test_erase_purges_activity_personal_data(self, eng: Eng) -> None:
        gone = str(uuid.uuid4())
        a = await eng.post(
            "/v1/activities",
            {
                "type": "meeting",
                "subject": "Lunch with Ada",
                "body": "Ada's kids",
                "contact_id": gone,
            },
            eng.h(),
        )
        t = await eng.post("/v1/tasks", {"title": "follow up", "contact_id": gone}, eng.h())
        await eng.publish_contact_event(cpb.ContactErased(), gone)

        async def erased() -> bool:
            rows = await eng.sql("SELECT body, subject, contact_id, version FROM activities")
            return bool(rows[0]["version"] == 2)

        await wait_for(erased, message="activity erased")
        r = (await eng.client.get(f"/v1/activities/{a['id']}", headers=eng.h())).json()
        assert (r["body"], r["subject"], r["contact_id"]) == (None, "[erased]", None)
        r = (await eng.client.get(f"/v1/tasks/{t['id']}", headers=eng.h())).json()
        assert (r["contact_id"], r["version"]) == (None, 2)
        msgs = await eng.events(2, ".updated")
        for m in msgs:
            assert b"Ada" not in m.data
            assert gone.encode() not in m.data

    async def test_delete_clears_the_contact(self, eng: Eng) -> None:
        gone = str(uuid.uuid4())
        a = await eng.post(
            "/v1/activities", {"type": "note", "body": "b", "contact_id": gone}, eng.h()
        )
        await eng.publish_contact_event(cpb.ContactDeleted(), gone)

        async def cleared() -> bool:
            r = await eng.client.get(f"/v1/activities/{a['id']}", headers=eng.h())
            return r.json()["contact_id"] is None

        await wait_for(cleared, message="contact cleared")
        r = (await eng.client.get(f"/v1/activities/{a['id']}", headers=eng.h())).json()
        assert (r["body"], r["version"]) == ("b", 2)
