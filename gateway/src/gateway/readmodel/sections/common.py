"""What every section module needs to turn an event into document values and timeline
entries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from chassis.events import IncomingEvent
from crm.common.v1.common_pb2 import EventMeta
from gateway.readmodel import document
from gateway.readmodel.timeline import Entry


def time_of(ts: Timestamp) -> str | None:
    """RFC 3339 text of a protobuf timestamp; None when unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return document.rfc3339(ts.ToDatetime(tzinfo=UTC))


def datetime_of(ts: Timestamp) -> datetime | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=UTC)


def opt(value: str) -> str | None:
    """Protobuf's empty string is "unknown": None in the document."""
    return value or None


def occurred(meta: EventMeta, event: IncomingEvent) -> datetime:
    if meta.HasField("occurred_at"):
        return meta.occurred_at.ToDatetime(tzinfo=UTC)
    return event.time


def timeline_entry(
    event: IncomingEvent, meta: EventMeta, kind: str, summary: str, **data: Any
) -> Entry:
    details: dict[str, Any] = {"actor": meta.actor or None, "origin": meta.origin or None}
    details.update(data)
    return Entry(event.id, occurred(meta, event), kind, summary, details)
