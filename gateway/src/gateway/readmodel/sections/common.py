"""What every section module needs to turn an event into document values and timeline
entries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.consumer import Consumer
from chassis.events import IncomingEvent
from crm.common.v1.common_pb2 import EventMeta
from gateway.readmodel import document, timeline
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


@dataclass
class Run:
    """What a run of events (one type, stream order) does to the read model, gathered by a
    batch handler and applied by `apply` with a few statements whatever its length."""

    puts: list[document.ItemPut] = field(default_factory=list)
    drops: list[tuple[str, str, str]] = field(default_factory=list)  # (tenant, section, id)
    entries: list[tuple[str, str, Entry]] = field(default_factory=list)  # (tenant, contact, …)

    def put(
        self,
        event: IncomingEvent,
        meta: EventMeta,
        section: str,
        item_id: str,
        contact_id: str,
        item: dict[str, Any],
        sort_at: datetime | None,
    ) -> None:
        """Store the item (version-gated by the event's version) for `contact_id` (empty: no
        customer, e.g. a deal of a company only)."""
        at = occurred(meta, event)
        self.puts.append(
            document.ItemPut(
                event.tenant, section, item_id, contact_id or None, item, event.version,
                sort_at or at, at,
            )
        )  # fmt: skip

    def drop(self, event: IncomingEvent, section: str) -> None:
        self.drops.append((event.tenant, section, event.aggregate_id))

    def record(self, event: IncomingEvent, contact_id: str, entry: Entry) -> None:
        """A timeline entry (once per event and customer, whatever the redeliveries)."""
        if contact_id:
            self.entries.append((event.tenant, contact_id, entry))

    async def apply(self, session: AsyncSession, build: document.SectionBuild) -> None:
        """Items with one statement (and the `pending` rows), each touched customer rebuilt
        once (`build`, then the metrics when an item they read changed), `as_of` with one
        statement, timeline entries with one executemany."""
        touched = await document.put_items(session, self.puts)
        dropped = await document.drop_items(session, self.drops)
        changed = {p.section for p in self.puts} | {d[1] for d in self.drops}
        for tenant in sorted({*touched, *dropped}):
            ids = sorted({*touched.get(tenant, {}), *dropped.get(tenant, [])})
            await build(session, tenant, ids, changed=changed)
        for tenant, as_of in touched.items():
            await document.touch(session, tenant=tenant, as_of=as_of)
        await timeline.record_many(session, self.entries)


Collect = Callable[[Run, IncomingEvent], None]


def on_run(
    consumer: Consumer, ce_type: str, build: document.SectionBuild, collect: Collect
) -> None:
    """Handle `ce_type` a run at a time: `collect(run, event)` says what each event does, in
    stream order; the run is then applied at once (`Run.apply`)."""

    @consumer.on_many(ce_type)
    async def handle(session: AsyncSession, events: list[IncomingEvent]) -> None:
        run = Run()
        for event in events:
            collect(run, event)
        await run.apply(session, build)
