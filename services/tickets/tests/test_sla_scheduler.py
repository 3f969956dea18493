"""The SLA scheduler sends sla.warning and sla.breached exactly once per clock, also across a
restart (a clock due while the service was down fires after it starts again)."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from chassis.testing import running, wait_for

POLICY = {
    "name": "Fast",
    "position": 1,
    "warning_minutes": 30,
    "targets": {"normal": {"first_response": 60, "resolution": 600}},
}


async def sla_events(db: asyncpg.Connection) -> list[tuple[str, str, int]]:
    rows = await db.fetch(
        "SELECT ce_type, aggregate_id, aggregate_version FROM outbox "
        "WHERE ce_type LIKE 'crm.tickets.sla.%' ORDER BY aggregate_id, aggregate_version"
    )
    return [(r[0], r[1], r[2]) for r in rows]


async def create_ticket(app: FastAPI, admin: dict[str, str]) -> str:
    transport = ASGITransport(app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://test") as c:
        r = await c.post("/v1/sla-policies", json=POLICY, headers=admin)
        assert r.status_code == 201, r.text
        r = await c.post(
            "/v1/tickets", json={"subject": "Down", "priority": "normal"}, headers=admin
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


class TestScheduler:
    async def test_warning_then_breach_once(
        self, make_app: Callable[..., FastAPI], admin: dict[str, str], db: asyncpg.Connection
    ) -> None:
        async with running(make_app()) as app:
            tid = await create_ticket(app, admin)
            clock = await db.fetchval(
                "SELECT id FROM sla_clocks WHERE ticket_id = $1 AND metric = 'first_response'",
                tid,
            )
            # Bring the warning time to now: the scheduler sends it (and only it).
            await db.execute(
                "UPDATE sla_clocks SET warn_at = now(), next_fire_at = now(), "
                "due_at = now() + interval '1 second' WHERE id = $1",
                clock,
            )
            app.state.sla_scheduler.wake()

            async def both() -> list[tuple[str, str, int]] | None:
                ev = [e for e in await sla_events(db) if e[1] == str(clock)]
                return ev if len(ev) >= 2 else None

            ev = await wait_for(both, timeout=10, message="warning and breach")
            assert ev == [
                ("crm.tickets.sla.warning.v1", str(clock), 1),
                ("crm.tickets.sla.breached.v1", str(clock), 2),
            ]
            t = (
                await AsyncClient(transport=ASGITransport(app), base_url="http://test").get(
                    f"/v1/tickets/{tid}", headers=admin
                )
            ).json()
            assert t["sla"]["first_response"]["breached"] is True
            assert t["sla"]["resolution"]["breached"] is False

    async def test_restart_fires_missed_clock_once(
        self, make_app: Callable[..., FastAPI], admin: dict[str, str], db: asyncpg.Connection
    ) -> None:
        async with running(make_app()) as app:
            tid = await create_ticket(app, admin)
        # While the service is down, both clocks become overdue.
        await db.execute(
            "UPDATE sla_clocks SET due_at = now() - interval '1 minute', "
            "warn_at = now() - interval '2 minutes', next_fire_at = now() - interval '2 minutes' "
            "WHERE ticket_id = $1",
            tid,
        )
        assert await sla_events(db) == []
        async with running(make_app()):

            async def fired() -> bool:
                return len(await sla_events(db)) >= 2

            await wait_for(fired, timeout=10, message="breaches after restart")
        # Another restart (two replicas at once) sends nothing more.
        async with running(make_app()), running(make_app()), running(make_app()) as app3:
            await app3.state.sla_scheduler.run_once()
        ev = await sla_events(db)
        # The warning is skipped when the breach is already due; one breach per clock.
        assert sorted(e[0] for e in ev) == ["crm.tickets.sla.breached.v1"] * 2
        assert len({e[1] for e in ev}) == 2
        assert all(e[2] == 1 for e in ev)
        assert (
            await db.fetchval(
                "SELECT count(*) FROM sla_clocks WHERE ticket_id = $1 AND breached_at IS NOT NULL "
                "AND next_fire_at IS NULL",
                tid,
            )
            == 2
        )

    async def test_late_reply_breaches_once(
        self, make_app: Callable[..., FastAPI], admin: dict[str, str], db: asyncpg.Connection
    ) -> None:
        # The scheduler polls rarely here, so the late reply sends the breach itself.
        async with running(make_app(scheduler_poll_seconds=600)) as app:
            await app.state.sla_scheduler.stop()
            tid = await create_ticket(app, admin)
            await db.execute(
                "UPDATE sla_clocks SET due_at = now() - interval '1 minute', "
                "next_fire_at = now() - interval '1 minute' "
                "WHERE ticket_id = $1 AND metric = 'first_response'",
                tid,
            )
            transport = ASGITransport(app, raise_app_exceptions=False)
            async with AsyncClient(transport=transport, base_url="http://test") as c:
                r = await c.post(f"/v1/tickets/{tid}/comments", json={"body": "hi"}, headers=admin)
                assert r.status_code == 201
                t = (await c.get(f"/v1/tickets/{tid}", headers=admin)).json()
            assert t["sla"]["first_response"]["breached"] is True
            assert await app.state.sla_scheduler.run_once() == 0
        assert [e[0] for e in await sla_events(db)] == ["crm.tickets.sla.breached.v1"]

    async def test_two_replicas_fire_each_clock_once(
        self, make_app: Callable[..., FastAPI], admin: dict[str, str], db: asyncpg.Connection
    ) -> None:
        async with running(make_app()) as app:
            await create_ticket(app, admin)
            transport = ASGITransport(app, raise_app_exceptions=False)
            async with AsyncClient(transport=transport, base_url="http://test") as c:
                for _ in range(24):
                    r = await c.post("/v1/tickets", json={"subject": "x"}, headers=admin)
                    assert r.status_code == 201
        n = await db.execute(
            "UPDATE sla_clocks SET due_at = now() - interval '1 minute', "
            "next_fire_at = now() - interval '1 minute'"
        )
        assert n == "UPDATE 50"
        async with (
            running(make_app(scheduler_batch_size=5)),
            running(make_app(scheduler_batch_size=5)),
        ):

            async def all_fired() -> bool:
                return len(await sla_events(db)) >= 50

            await wait_for(all_fired, timeout=20, message="50 breaches")
        ev = await sla_events(db)
        assert len(ev) == 50
        assert len({e[1] for e in ev}) == 50
