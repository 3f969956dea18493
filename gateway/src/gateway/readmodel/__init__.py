"""The 360 read model: per customer one precomputed JSONB document and a timeline, kept by
event handlers (one module per producing context under `sections/`), read by `api`."""

from __future__ import annotations

from chassis.consumer import Consumer
from gateway.readmodel.sections import campaigns, contacts, pipeline, tickets

CONSUMERS: list[Consumer] = [
    contacts.consumer,
    pipeline.consumer,
    tickets.consumer,
    campaigns.consumer,
]
