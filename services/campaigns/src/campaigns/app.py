"""The campaigns service app: `build(settings)` for tests, `create()` for uvicorn --factory."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from campaigns import (
    campaigns,
    loyalty,
    memberships,
    pipeline_events,
    replica,
    scoring,
    segments,
    sending,
    sequences,
    templates,
    touchpoints,
    tracking,
)
from campaigns.settings import CampaignsSettings
from chassis.app import ServiceSpec, create_app
from chassis.settings import load_settings

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
SERVICE = "campaigns"

__all__ = ["MIGRATIONS", "CampaignsSettings", "build", "create"]


async def _add_timer_loops(app: FastAPI) -> None:
    """Sequence steps and loyalty expiry run on the same woken-after-commit schedulers."""
    poll = app.state.settings.scheduler_poll_seconds
    found = sending.loops(app)
    found.all["sequences"] = sequences.scheduler(app.state.db, poll)
    found.all["loyalty-expiry"] = loyalty.scheduler(app.state.db, poll)
    found.all["loyalty-tiers"] = loyalty.tier_scheduler(app.state.db, poll)
    found.all["segment-memberships"] = memberships.scheduler(
        app.state.db, poll, app.state.settings.segment_refresh_seconds
    )


def _spec() -> ServiceSpec:
    return ServiceSpec(
        name=SERVICE,
        title="Campaigns",
        description="Segments, email templates and campaigns with tracking, nurture sequences, "
        "lead scoring, touchpoints and loyalty.",
        routers=[
            segments.router,
            segments.contact_router,
            templates.router,
            campaigns.router,
            tracking.router,
            loyalty.router,
            scoring.router,
            touchpoints.router,
            sequences.router,
        ],
        migrations_dir=MIGRATIONS,
        produces="campaigns",
        consumers=[replica.consumer, pipeline_events.consumer],
        on_startup=[sending.add_sending_loops, _add_timer_loops, sending.start_loops],
        on_shutdown=[sending.stop_loops],
        openapi_tags=[
            {"name": t}
            for t in (
                "segments",
                "email-templates",
                "campaigns",
                "loyalty",
                "scoring",
                "touchpoints",
                "sequences",
                "public",
            )
        ],
    )


def build(settings: CampaignsSettings) -> FastAPI:
    return create_app(_spec(), settings)


def create() -> FastAPI:
    return build(load_settings(CampaignsSettings, SERVICE))
