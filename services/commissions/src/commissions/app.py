"""The commissions service app: `build(settings)` for tests, `create()` for uvicorn --factory."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from chassis.app import ServiceSpec, create_app
from chassis.settings import load_settings
from commissions.api import ROUTERS
from commissions.handlers import pipeline
from commissions.settings import CommissionsSettings

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
SERVICE = "commissions"

__all__ = ["MIGRATIONS", "CommissionsSettings", "build", "create"]


def _spec() -> ServiceSpec:
    return ServiceSpec(
        name=SERVICE,
        title="Commissions",
        description="Commission plans, quotas, credits, statements, leaderboards, disputes "
        "and period close.",
        routers=ROUTERS,
        migrations_dir=MIGRATIONS,
        produces="commissions",
        consumers=[pipeline],
        openapi_tags=[
            {"name": t}
            for t in (
                "commission plans",
                "quotas",
                "statements",
                "periods",
                "adjustments",
                "disputes",
                "leaderboard",
            )
        ],
    )


def build(settings: CommissionsSettings) -> FastAPI:
    return create_app(_spec(), settings)


def create() -> FastAPI:
    return build(load_settings(CommissionsSettings, SERVICE))
