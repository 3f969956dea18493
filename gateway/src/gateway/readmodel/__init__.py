"""The 360 read model: per customer one precomputed JSONB document and a timeline, kept by
event handlers (one module per producing context under `sections/`), read by `api`; the
cross-domain metrics (RFM, health, churn risk) are derived by `analytics`."""

from __future__ import annotations

from chassis.consumer import Consumer
from gateway.readmodel.analytics import metrics as _metrics  # noqa: F401  (registers refresh)
from gateway.readmodel.sections import campaigns, contacts, pipeline, tickets

CONSUMERS: list[Consumer] = [
    contacts.consumer,
    pipeline.consumer,
    tickets.consumer,
    campaigns.consumer,
]
