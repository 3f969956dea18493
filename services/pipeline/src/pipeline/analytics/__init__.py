"""Forecasting (snapshots, accuracy, manager adjustments, quota replica) and reports."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter

from chassis.app import Hook
from chassis.consumer import Consumer

ROUTERS: Sequence[APIRouter] = ()
CONSUMERS: Sequence[Consumer] = ()
ON_STARTUP: Sequence[Hook] = ()
ON_SHUTDOWN: Sequence[Hook] = ()
