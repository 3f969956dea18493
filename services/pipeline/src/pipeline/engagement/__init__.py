"""Activities, tasks with their durable reminder/overdue scheduler, playbooks, the activities
report, the consumer of contacts events for them and of the campaigns service's task
requests."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter

from chassis.app import Hook
from chassis.consumer import Consumer
from pipeline.engagement.api import ROUTERS as _ROUTERS
from pipeline.engagement.handlers import campaigns_consumer, consumer
from pipeline.engagement.timers import start_scheduler, stop_scheduler

ROUTERS: Sequence[APIRouter] = _ROUTERS
CONSUMERS: Sequence[Consumer] = (consumer, campaigns_consumer)
ON_STARTUP: Sequence[Hook] = (start_scheduler,)
ON_SHUTDOWN: Sequence[Hook] = (stop_scheduler,)
