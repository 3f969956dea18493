"""The event log: every registered event of every producing context's stream, as the
protobuf JSON mapping of its message, kept `event_log_retention_days`.

One chassis consumer per context (`events-<context>`, durable `gateway-events-<context>`)
with a batch handler for each of the context's ce-types, built from `crm.registry.EVENT_TYPES`
at import time: a type registered later is logged without a change here, a new context gets
its own consumer. The consumers follow every aggregate of their stream (`aggregates=["*"]`):
the chassis orders and dedups per `aggregate_of(ce_type)` and uses the listed aggregates only
for the durable's subject filter, which it never updates once the durable exists, so an
explicit list would silently miss aggregates added later. Events whose type this build does
not know (a newer producer) advance the aggregate's position without being logged.

Data is JSON with the proto field names (snake_case, as everywhere in the API); 64-bit
integers are strings and fields at their default value are left out (the canonical mapping).
"""

from __future__ import annotations

import json

from google.protobuf import json_format
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.consumer import Consumer
from chassis.driver import raw_connection
from chassis.events import IncomingEvent
from crm.registry import EVENT_TYPES
from gateway.webhooks.fanout import FANOUT_SQL, wake_after_commit

_LOG_SQL = (
    """
WITH logged AS (
    INSERT INTO event_log
        (tenant_id, event_id, ce_type, source, aggregate, aggregate_id, version, time, data)
    SELECT t, e, c, s, a, i, v, tm, d::jsonb
    FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::bigint[], $8::timestamptz[], $9::text[])
         WITH ORDINALITY AS u(t, e, c, s, a, i, v, tm, d, n)
    ORDER BY n
    RETURNING position, tenant_id, event_id, ce_type, aggregate, aggregate_id
)"""
    + FANOUT_SQL
)


def event_json(event: IncomingEvent) -> str:
    message = event.parse(EVENT_TYPES[event.type])
    return json.dumps(
        json_format.MessageToDict(message, preserving_proto_field_name=True),
        separators=(",", ":"),
    )


async def log_events(session: AsyncSession, events: list[IncomingEvent]) -> None:
    """Append a run of events (stream order) to the log and queue their webhook deliveries,
    with one statement (prepared, on the driver connection: it runs for every batch)."""
    driver = await raw_connection(session)
    queued = await driver.fetch(
        _LOG_SQL,
        [e.tenant for e in events],
        [e.id for e in events],
        [e.type for e in events],
        [e.source for e in events],
        [e.aggregate for e in events],
        [e.aggregate_id for e in events],
        [e.version for e in events],
        [e.time for e in events],
        [event_json(e) for e in events],
    )
    if queued:
        wake_after_commit(session)


def build_consumers() -> list[Consumer]:
    by_context: dict[str, list[str]] = {}
    for ce_type in EVENT_TYPES:
        by_context.setdefault(ce_type.split(".")[1], []).append(ce_type)
    consumers = []
    for context in sorted(by_context):
        consumer = Consumer(f"events-{context}", context=context, aggregates=["*"])
        for ce_type in by_context[context]:
            consumer.on_many(ce_type)(log_events)
        consumers.append(consumer)
    return consumers


CONSUMERS: list[Consumer] = build_consumers()
