"""Forecasting (snapshots, accuracy, manager adjustments, quota replica) and reports."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter

from chassis.app import Hook
from chassis.consumer import Consumer
from pipeline.analytics import quotas
from pipeline.analytics.api import forecast_router, init_rate_cache, reports_router

ROUTERS: Sequence[APIRouter] = (forecast_router, reports_router)
CONSUMERS: Sequence[Consumer] = (quotas.consumer,)
ON_STARTUP: Sequence[Hook] = (init_rate_cache,)
ON_SHUTDOWN: Sequence[Hook] = ()
