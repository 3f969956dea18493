"""The tickets service app: `build(settings)` for tests, `create()` for uvicorn --factory.

Besides the chassis parts (relay, consumers), it runs the durable SLA scheduler
(chassis.scheduler) over `sla_clocks.next_fire_at`, woken after every commit that wrote
outbox rows (every ticket write does)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI

from chassis import outbox
from chassis.app import ServiceSpec, create_app
from chassis.db import Database
from chassis.scheduler import Scheduler
from chassis.settings import load_settings
from tickets import api, handlers, sla
from tickets.settings import TicketsSettings

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
SERVICE = "tickets"

__all__ = ["MIGRATIONS", "TicketsSettings", "build", "create"]


async def _start_scheduler(app: FastAPI) -> None:
    settings: TicketsSettings = app.state.settings
    db: Database = app.state.db
    scheduler = Scheduler(
        "sla",
        db,
        sla.fire_due,
        next_due=sla.next_due,
        poll_seconds=settings.scheduler_poll_seconds,
        batch_size=settings.scheduler_batch_size,
    )
    app.state.sla_scheduler = scheduler
    app.state.sla_unhook = outbox.on_commit(scheduler.wake)
    await scheduler.start()


async def _stop_scheduler(app: FastAPI) -> None:
    unhook: Callable[[], None] | None = getattr(app.state, "sla_unhook", None)
    if unhook is not None:
        unhook()
    scheduler: Scheduler | None = getattr(app.state, "sla_scheduler", None)
    if scheduler is not None:
        await scheduler.stop()


def _spec() -> ServiceSpec:
    return ServiceSpec(
        name=SERVICE,
        title="Tickets",
        description="Support tickets, routing, SLA with business hours, knowledge base, "
        "CSAT and NPS.",
        routers=api.ROUTERS,
        migrations_dir=MIGRATIONS,
        produces="tickets",
        consumers=[handlers.consumer],
        on_startup=[_start_scheduler],
        on_shutdown=[_stop_scheduler],
        openapi_tags=[
            {"name": t}
            for t in (
                "tickets",
                "groups",
                "sla",
                "knowledge base",
                "surveys",
                "public surveys",
                "reports",
            )
        ],
    )


def build(settings: TicketsSettings) -> FastAPI:
    return create_app(_spec(), settings)


def create() -> FastAPI:
    return build(load_settings(TicketsSettings, SERVICE))
