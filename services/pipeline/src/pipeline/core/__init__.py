"""Sales org (teams), pipelines and stages, deals with stage history, orders; the consumers
of contacts events for them."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter

from chassis.app import Hook
from chassis.consumer import Consumer
from pipeline.core.api import ROUTERS as _ROUTERS
from pipeline.core.consumers import consumer

ROUTERS: Sequence[APIRouter] = tuple(_ROUTERS)
CONSUMERS: Sequence[Consumer] = (consumer,)
ON_STARTUP: Sequence[Hook] = ()
ON_SHUTDOWN: Sequence[Hook] = ()
