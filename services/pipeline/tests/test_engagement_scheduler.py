"""The durable task timers: `task.reminder_due` at remind_at and `task.overdue` at due_at, for
open tasks, exactly once per fire time: not early, not for a completed task, again after the
time moved, once across a restart, a timer due during downtime after the restart, and once
with two app instances (replicas) on one database."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import nats
import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from chassis.db import asyncpg_dsn
from chassis.testing import Infra, running, wait_for
from crm.pipeline.v1 import pipeline_pb2 as pb
from pipeline.app import PipelineSettings, build

REMINDER = "crm.pipeline.task.reminder_due.v1"
OVERDUE = "crm.pipeline.task.overdue.v1"


class Timers:
    def __init__(self, infra: Infra, db_url: str) -> None:
        self.infra = infra
        self.db_url = db_url
        self.h = infra.auth(roles=["sales_rep"], sub="u-rep1")

    @contextlib.asynccontextmanager
    async def app(self, poll_seconds: float = 0.2) -> AsyncIterator[AsyncClient]:
        """A running app instance (relay, consumers, scheduler) on the shared database."""
        settings = self.infra.settings(
            PipelineSettings, "pipeline", self.db_url, scheduler_poll_seconds=poll_seconds
        )
        application: FastAPI = build(settings)
        async with running(application):
            transport = ASGITransport(application, raise_app_exceptions=False)
            async with AsyncClient(transport=transport, base_url="http://test") as c:
                yield c

    async def task(self, client: AsyncClient, **fields: Any) -> dict[str, Any]:
        body = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in fields.items()}
        body.setdefault("title", "Call back")
        r = await client.post("/v1/tasks", json=body, headers=self.h)
        assert r.status_code == 201, r.text
        return dict(r.json())

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

    async def fired(self) -> Counter[tuple[str, str]]:
        """(ce-type, task id) -> number of timer events on the stream."""
        return Counter(
            (m.headers["ce-type"], m.headers["ce-subject"])
            for m in await self.stream()
            if m.headers["ce-type"] in (REMINDER, OVERDUE)
        )

    async def wait_fired(self, expected: dict[tuple[str, str], int], timeout: float = 10) -> None:
        async def probe() -> bool:
            got = await self.fired()
            return all(got[k] >= n for k, n in expected.items())

        await wait_for(probe, timeout=timeout, message=f"timer events {expected}")

    async def trail(self, aggregate_id: str) -> str:
        """What the outbox and the stream hold for one aggregate (for failure messages)."""
        conn = await asyncpg.connect(asyncpg_dsn(self.db_url))
        try:
            rows = await conn.fetch(
                "SELECT id, ce_type, aggregate_version, created_at, sent_at FROM outbox "
                "WHERE aggregate_id = $1 ORDER BY id",
                aggregate_id,
            )
        finally:
            await conn.close()
        outbox = [
            f"id={r['id']} {r['ce_type']} v{r['aggregate_version']} "
            f"created={clock(r['created_at'])} sent={clock(r['sent_at'])}"
            for r in rows
        ]
        stream = [
            f"seq={m.seq} {m.headers['ce-type']} v{m.headers['ce-sequence']} "
            f"time={m.headers['ce-time']} id={m.headers['ce-id']}"
            for m in await self.stream()
            if m.headers["ce-subject"] == aggregate_id
        ]
        return "outbox: " + "; ".join(outbox) + " | stream: " + "; ".join(stream)

    async def outbox_rows(self) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(asyncpg_dsn(self.db_url))
        try:
            return list(
                await conn.fetch(
                    "SELECT ce_type, aggregate_id, aggregate_version FROM outbox "
                    "ORDER BY aggregate_id, aggregate_version"
                )
            )
        finally:
            await conn.close()


@pytest.fixture
def timers(crm_infra: Infra, db_url: str) -> Timers:
    return Timers(crm_infra, db_url)


def soon(ms: int) -> datetime:
    return datetime.now(UTC) + timedelta(milliseconds=ms)


def clock(t: datetime | None) -> str:
    return "-" if t is None else f"{t:%H:%M:%S.%f}"


def settle() -> Any:
    """Several scheduler polls (0.2 s each): long enough for any second firing to show."""
    return asyncio.sleep(1.0)


class TestTimersFire:
    async def test_reminder_then_overdue_each_once_and_not_early(self, timers: Timers) -> None:
        async with timers.app() as client:
            remind, due = soon(500), soon(900)
            t = await timers.task(client, remind_at=remind, due_at=due, priority="high")
            # "Not early" is checked on the events' own times below: a wall-clock check here
            # raced with a slow POST under CI load (the reminder was already legitimately due).
            await timers.wait_fired({(REMINDER, t["id"]): 1, (OVERDUE, t["id"]): 1})
            await settle()
            assert await timers.fired() == Counter({(REMINDER, t["id"]): 1, (OVERDUE, t["id"]): 1})
            msgs = [m for m in await timers.stream() if m.headers["ce-subject"] == t["id"]]
            # failed once in CI (overdue stored before reminder_due, cause not found): the
            # message says what the outbox and the stream held
            trail = await timers.trail(t["id"])
            assert [m.headers["ce-type"].split(".")[3] for m in msgs] == [
                "created",
                "reminder_due",
                "overdue",
            ], trail
            assert [m.headers["ce-sequence"] for m in msgs] == ["1", "2", "3"], trail
            reminder = pb.TaskReminderDue.FromString(msgs[1].data)
            overdue = pb.TaskOverdue.FromString(msgs[2].data)
            assert reminder.meta.occurred_at.ToDatetime(tzinfo=UTC) >= remind
            assert overdue.meta.occurred_at.ToDatetime(tzinfo=UTC) >= due
            assert (reminder.task.version, overdue.task.version) == (2, 3)
            assert reminder.task.priority == "high"
            assert overdue.task.assignee_id == "u-rep1"
            r = await client.get(f"/v1/tasks/{t['id']}", headers=timers.h)
            body = r.json()
            assert r.headers["ETag"] == '"3"'
            assert datetime.fromisoformat(body["reminder_fired_for"]) == remind
            assert datetime.fromisoformat(body["overdue_fired_for"]) == due

    async def test_past_due_task_fires_at_once(self, timers: Timers) -> None:
        async with timers.app() as client:
            t = await timers.task(client, due_at=soon(-60_000))
            await timers.wait_fired({(OVERDUE, t["id"]): 1}, timeout=3)
            await settle()
            assert await timers.fired() == Counter({(OVERDUE, t["id"]): 1})

    async def test_a_write_wakes_the_scheduler_and_next_due_keeps_time(
        self, timers: Timers
    ) -> None:
        # With a 30 s poll, only the wake-up after the commit and next_due can be this prompt.
        async with timers.app(poll_seconds=30) as client:
            await asyncio.sleep(0.3)  # the scheduler is asleep now
            past = await timers.task(client, due_at=soon(-1000))
            await timers.wait_fired({(OVERDUE, past["id"]): 1}, timeout=2)
            remind = soon(800)
            later = await timers.task(client, remind_at=remind)
            await timers.wait_fired({(REMINDER, later["id"]): 1}, timeout=3)
            msg = next(m for m in await timers.stream() if m.headers["ce-type"] == REMINDER)
            fired_at = pb.TaskReminderDue.FromString(msg.data).meta.occurred_at
            assert fired_at.ToDatetime(tzinfo=UTC) >= remind

    async def test_completed_or_cancelled_task_never_fires(self, timers: Timers) -> None:
        async with timers.app() as client:
            # far enough ahead that a loaded machine finishes the PATCHes before they are due
            # (a timer that already fired bumps the version: 412); the witness is due after
            # them, so its firing proves their time passed without them firing.
            done = await timers.task(client, remind_at=soon(3000), due_at=soon(3500))
            cancelled = await timers.task(client, due_at=soon(3500))
            for t, status in ((done, "done"), (cancelled, "cancelled")):
                r = await client.patch(
                    f"/v1/tasks/{t['id']}",
                    json={"status": status},
                    headers={**timers.h, "If-Match": '"1"'},
                )
                assert r.status_code == 200, r.text
            witness = await timers.task(client, due_at=soon(4000))
            await timers.wait_fired({(OVERDUE, witness["id"]): 1})
            await settle()
            assert await timers.fired() == Counter({(OVERDUE, witness["id"]): 1})

    async def test_moving_the_time_re_arms_and_other_edits_do_not(self, timers: Timers) -> None:
        async with timers.app() as client:
            first = soon(300)
            t = await timers.task(client, remind_at=first, due_at=soon(60_000))
            await timers.wait_fired({(REMINDER, t["id"]): 1})
            url = f"/v1/tasks/{t['id']}"
            r = await client.get(url, headers=timers.h)
            version = r.json()["version"]
            assert version == 2  # the fired reminder bumped the version
            r = await client.patch(
                url,
                json={"title": "Call back now"},
                headers={**timers.h, "If-Match": f'"{version}"'},
            )
            assert r.status_code == 200
            await settle()
            assert (await timers.fired())[(REMINDER, t["id"])] == 1
            second = soon(400)
            r = await client.patch(
                url, json={"remind_at": second.isoformat()}, headers={**timers.h, "If-Match": '"3"'}
            )
            assert r.status_code == 200, r.text
            await timers.wait_fired({(REMINDER, t["id"]): 2})
            await settle()
            assert (await timers.fired())[(REMINDER, t["id"])] == 2
            reminders = [
                pb.TaskReminderDue.FromString(m.data)
                for m in await timers.stream()
                if m.headers["ce-type"] == REMINDER
            ]
            assert [e.task.remind_at.ToDatetime(tzinfo=UTC) for e in reminders] == [first, second]
            assert [e.meta.version for e in reminders] == [2, 5]


class TestTimersAcrossRestartsAndReplicas:
    async def test_restart_fires_nothing_twice_and_catches_up(self, timers: Timers) -> None:
        async with timers.app() as client:
            fired_before = await timers.task(client, remind_at=soon(300), due_at=soon(400))
            await timers.wait_fired(
                {(REMINDER, fired_before["id"]): 1, (OVERDUE, fired_before["id"]): 1}
            )
            # due while no instance runs
            during_downtime = await timers.task(client, remind_at=soon(1200), due_at=soon(1300))
        await asyncio.sleep(1.6)
        rows = await timers.outbox_rows()
        assert not [
            r
            for r in rows
            if str(r["aggregate_id"]) == during_downtime["id"] and r["aggregate_version"] > 1
        ]
        async with timers.app() as client:
            await timers.wait_fired(
                {(REMINDER, during_downtime["id"]): 1, (OVERDUE, during_downtime["id"]): 1}
            )
            await settle()
            assert await timers.fired() == Counter(
                {
                    (REMINDER, fired_before["id"]): 1,
                    (OVERDUE, fired_before["id"]): 1,
                    (REMINDER, during_downtime["id"]): 1,
                    (OVERDUE, during_downtime["id"]): 1,
                }
            )
            r = await client.get(f"/v1/tasks/{during_downtime['id']}", headers=timers.h)
            assert r.json()["version"] == 3

    async def test_two_instances_fire_each_timer_once(self, timers: Timers) -> None:
        n = 40
        async with timers.app() as one, timers.app() as two:
            made = []
            for i in range(n):
                client = one if i % 2 else two
                # all become due within a short window, so both instances race for them
                made.append(await timers.task(client, remind_at=soon(700), due_at=soon(800)))
            expected = {(kind, t["id"]): 1 for t in made for kind in (REMINDER, OVERDUE)}
            await timers.wait_fired(expected, timeout=20)
            await settle()
            assert await timers.fired() == Counter(expected)
        rows = await timers.outbox_rows()
        versions: dict[str, list[int]] = {}
        for r in rows:
            versions.setdefault(str(r["aggregate_id"]), []).append(r["aggregate_version"])
        assert all(v == [1, 2, 3] for v in versions.values()), versions
        assert len(versions) == n
