"""Settings of the pipeline service (env prefix PIPELINE_, falling back to CRM_)."""

from __future__ import annotations

from chassis.settings import ServiceSettings


class PipelineSettings(ServiceSettings):
    # How often the task scheduler looks for due reminders and overdue tasks (it is also
    # woken in-process when a task is written).
    scheduler_poll_seconds: float = 5.0
    # Largest batch of POST /v1/deals/batch and /v1/orders/batch.
    batch_max_items: int = 1000
