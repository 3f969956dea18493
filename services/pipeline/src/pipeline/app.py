"""The pipeline service app: `build(settings)` for tests, `create()` for uvicorn --factory.

Three independent parts plug in here, each exposing ROUTERS, CONSUMERS, ON_STARTUP and
ON_SHUTDOWN: `core` (teams, pipelines, deals, orders), `engagement` (activities, tasks,
playbooks) and `analytics` (forecast, reports).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from chassis.app import ServiceSpec, create_app
from chassis.settings import load_settings
from pipeline import analytics, core, engagement
from pipeline.settings import PipelineSettings

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
SERVICE = "pipeline"
PARTS = (core, engagement, analytics)

__all__ = ["MIGRATIONS", "PipelineSettings", "build", "create"]


def _spec(settings: PipelineSettings) -> ServiceSpec:
    return ServiceSpec(
        name=SERVICE,
        title="Pipeline",
        description="Sales org, pipelines and deals, orders, activities, tasks, forecasting, "
        "funnel analytics and playbooks.",
        routers=[r for part in PARTS for r in part.ROUTERS],
        migrations_dir=MIGRATIONS,
        produces="pipeline",
        consumers=[c for part in PARTS for c in part.CONSUMERS],
        on_startup=[h for part in PARTS for h in part.ON_STARTUP],
        on_shutdown=[h for part in PARTS for h in part.ON_SHUTDOWN],
        openapi_tags=[
            {"name": t}
            for t in (
                "teams",
                "pipelines",
                "deals",
                "orders",
                "activities",
                "tasks",
                "playbooks",
                "forecast",
                "reports",
            )
        ],
    )


def build(settings: PipelineSettings) -> FastAPI:
    return create_app(_spec(settings), settings)


def create() -> FastAPI:
    return build(load_settings(PipelineSettings, SERVICE))
