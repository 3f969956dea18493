"""Durable JetStream pull consumers with explicit ack, an inbox for exactly-once effects,
per-aggregate version ordering, bounded redelivery with backoff and a dead-letter table.

A fetched batch is applied in one transaction (inbox rows, positions and the handlers'
effects together); if anything in it fails, the batch is rolled back and retried one event
per transaction, so a poison event is isolated and never blocks the good ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from opentelemetry import context as otel_context
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis import deadletters, outbox, telemetry
from chassis.bus import Bus, StreamSpec
from chassis.db import Database, commit
from chassis.driver import raw_connection
from chassis.events import IncomingEvent, MalformedEvent
from chassis.tasks import cancel_and_wait

log = logging.getLogger("chassis.consumer")

DEFAULT_ACK_WAIT = 30.0
# How much longer than the ack wait the last retry of a version gap waits (see _retry_later).
GAP_GRACE_SECONDS = 5.0
FAILING_MEMORY_SECONDS = 120.0
# A batch starting sooner than this after the previous one ended means events are flowing.
BUSY_GAP_SECONDS = 0.05

_SEEN = "SELECT event_id FROM inbox WHERE consumer = $1 AND event_id = ANY($2::uuid[])"
# One primary-key probe per key (LATERAL ... LIMIT 1 keeps the planner from turning it into a
# hash join over every position of the consumer: a scan that grows with the table, and the
# plan a prepared statement would keep for a lone event after a few big batches).
_POSITIONS = (
    "SELECT k.a, k.i, p.version FROM unnest($2::text[], $3::text[]) AS k(a, i) "
    "CROSS JOIN LATERAL (SELECT version FROM consumer_positions WHERE consumer = $1 "
    "AND aggregate = k.a AND aggregate_id = k.i LIMIT 1) AS p"
)
_RECORD_SEEN = "INSERT INTO inbox (consumer, event_id) SELECT $1, unnest($2::uuid[])"
_MOVE = (
    "INSERT INTO consumer_positions (consumer, aggregate, aggregate_id, version) "
    "SELECT $1, a, i, v FROM unnest($2::text[], $3::text[], $4::bigint[]) AS k(a, i, v) "
    "ON CONFLICT (consumer, aggregate, aggregate_id) DO UPDATE SET version = EXCLUDED.version "
    "WHERE consumer_positions.version < EXCLUDED.version"
)

Handler = Callable[[AsyncSession, IncomingEvent], Awaitable[None]]
BatchHandler = Callable[[AsyncSession, list[IncomingEvent]], Awaitable[None]]
ReplayOutcome = Literal["applied", "skipped", "gap"]
K = TypeVar("K")  # what identifies a delivery: a NATS message, or the event id on a replay


def _pending_after(m: Msg) -> int:
    """How many messages the consumer still has for us after `m` (0 when unknown)."""
    try:
        return int(m.metadata.num_pending or 0)
    except Exception:
        return 0


@dataclass
class Consumer:
    """A named durable consumer of one producing context's stream, with handlers per ce-type.

    It follows whole aggregates (every event of `aggregates`), so versions have no holes; event
    types without a handler still advance the aggregate's position."""

    name: str
    context: str
    aggregates: list[str]
    handlers: dict[str, Handler] = field(default_factory=dict)
    batch_handlers: dict[str, BatchHandler] = field(default_factory=dict)

    def on(self, ce_type: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.handlers[ce_type] = fn
            return fn

        return register

    def on_many(self, ce_type: str) -> Callable[[BatchHandler], BatchHandler]:
        """Register a handler that takes a run of consecutive events of one type at once (in
        stream order, each already deduplicated and version-checked), so it can write them
        with one statement instead of one per event."""

        def register(fn: BatchHandler) -> BatchHandler:
            self.batch_handlers[ce_type] = fn
            return fn

        return register

    @property
    def filter_subjects(self) -> list[str]:
        return [f"crm.{self.context}.*.{a}.>" for a in self.aggregates]


@dataclass
class _Outcome(Generic[K]):
    ack: list[K] = field(default_factory=list)
    gap: list[tuple[K, str]] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)  # event ids whose handlers ran


class ConsumerRunner:
    def __init__(
        self,
        consumer: Consumer,
        db: Database,
        bus: Bus,
        *,
        service: str,
        batch_size: int = 200,
        max_deliver: int = 8,
        replicas: int = 1,
    ) -> None:
        self.consumer = consumer
        self.db = db
        self.bus = bus
        self.service = service
        self.durable = f"{service}-{consumer.name}"
        self.batch_size = batch_size
        self.max_deliver = max_deliver
        # the durable's ack wait (read back at subscribe: an existing durable keeps its own)
        self.ack_wait = DEFAULT_ACK_WAIT
        # aggregate -> when one of its events last failed in a handler here (see _retry_later)
        self._failing: dict[tuple[str, str], float] = {}
        self.stream = StreamSpec.for_context(consumer.context, replicas)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.subscribed = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self.durable}")

    async def stop(self) -> None:
        # nats-py's fetch can swallow a cancellation while it waits (asyncio.wait_for on 3.11),
        # so ask the loop to finish its current fetch first and cancel only as a fallback.
        self._stopping = True
        if self._task is None:
            return
        done, _ = await asyncio.wait([self._task], timeout=3.0)
        if not done:
            await cancel_and_wait(self._task)

    async def _subscribe(self) -> Any:
        await self.bus.wait_connected()
        await self.bus.ensure_stream(self.stream, owner=False)
        config = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            filter_subjects=self.consumer.filter_subjects,
            max_deliver=self.max_deliver,
            ack_wait=DEFAULT_ACK_WAIT,
            max_ack_pending=10_000,
        )
        js = self.bus.js
        try:
            info = await js.consumer_info(self.stream.name, self.durable)
        except NotFoundError:
            info = await js.add_consumer(self.stream.name, config)
        self.ack_wait = info.config.ack_wait or DEFAULT_ACK_WAIT
        return await js.pull_subscribe_bind(self.durable, stream=self.stream.name)

    async def _run(self) -> None:
        delay = 0.2
        while not self._stopping:
            try:
                sub = await self._subscribe()
                self.subscribed.set()
                delay = 0.2
                last_done = 0.0
                while not self._stopping:
                    # Wake on the first message. At a trickle (nothing behind it, the last
                    # batch long done) apply it at once; under load wait a few ms for more, so
                    # that batches grow with the rate instead of one transaction per event. A
                    # single fetch(batch_size) would hold the first message until the batch
                    # filled or the wait ran out.
                    try:
                        msgs = await sub.fetch(1, timeout=1.0)
                    except TimeoutError:
                        continue
                    busy = time.monotonic() - last_done < BUSY_GAP_SECONDS
                    if busy or _pending_after(msgs[-1]):
                        with contextlib.suppress(TimeoutError):
                            msgs += await sub.fetch(self.batch_size - 1, timeout=0.005)
                    await self.process(msgs)
                    last_done = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if self._stopping:
                    return
                log.warning("consumer %s: %r; resubscribing in %.1fs", self.durable, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def process(self, msgs: Sequence[Msg]) -> None:
        events: list[tuple[Msg, IncomingEvent]] = []
        for m in msgs:
            try:
                events.append((m, IncomingEvent.from_nats(m.subject, m.headers, m.data)))
            except MalformedEvent as e:
                await self._dead_letter(m, None, f"malformed: {e}")
        if not events:
            return
        try:
            outcome = await self._apply_in_transaction(events)
        except Exception:
            log.warning("batch of %d failed; retrying one by one", len(events), exc_info=True)
            outcome = _Outcome[Msg]()
            for m, ev in events:
                try:
                    single = await self._apply_in_transaction([(m, ev)])
                except Exception as e:
                    await self._failed(m, ev, repr(e))
                    continue
                outcome.ack += single.ack
                outcome.gap += single.gap
        for m in outcome.ack:
            await m.ack()
        for m, why in outcome.gap:
            await self._retry_later(m, why, gap=True)
        telemetry.EVENTS_CONSUMED.labels(self.service, self.consumer.name, "applied").inc(
            len(outcome.ack)
        )

    async def _apply_in_transaction(self, events: list[tuple[Msg, IncomingEvent]]) -> _Outcome[Msg]:
        async with self.db.sessionmaker() as session:
            try:
                outcome = await self._apply(session, events)
                await commit(session)
                return outcome
            except BaseException:
                outbox.discard(session)
                await session.rollback()
                raise

    async def replay(self, session: AsyncSession, ev: IncomingEvent) -> tuple[ReplayOutcome, str]:
        """Run one stored event (a dead letter) through the delivery path, in the caller's
        transaction: the same inbox dedup, version order and handlers as a delivery, so a
        replay has an effect at most once however often it is asked for."""
        outcome = await self._apply(session, [(ev.id, ev)])
        if outcome.gap:
            return "gap", outcome.gap[0][1]
        if outcome.applied:
            return "applied", f"applied version {ev.version}"
        return "skipped", "already applied (inbox), or older than the applied version"

    async def _apply(
        self, session: AsyncSession, events: list[tuple[K, IncomingEvent]]
    ) -> _Outcome[K]:
        name = self.durable
        # The bookkeeping goes straight to the driver connection under the session (same
        # transaction, cached prepared statements): it runs for every delivered batch.
        driver = await raw_connection(session)
        seen = {str(r[0]) for r in await driver.fetch(_SEEN, name, [ev.id for _, ev in events])}
        keys = {(ev.aggregate, ev.aggregate_id) for _, ev in events}
        positions: dict[tuple[str, str], int] = {
            (r[0], r[1]): r[2]
            for r in await driver.fetch(
                _POSITIONS, name, [k[0] for k in keys], [k[1] for k in keys]
            )
        }
        outcome = _Outcome[K]()
        run: list[IncomingEvent] = []  # consecutive applicable events of one type
        applied: list[str] = []
        moved: dict[tuple[str, str], int] = {}
        for m, ev in events:
            key = (ev.aggregate, ev.aggregate_id)
            current = positions.get(key, 0)
            if ev.id in seen or ev.version <= current:
                outcome.ack.append(m)  # already applied, or older than what is applied
                continue
            if ev.version > current + 1:
                outcome.gap.append((m, f"version gap: have {current}, got {ev.version}"))
                continue
            if run and run[0].type != ev.type:
                await self._dispatch(session, run)
                run = []
            run.append(ev)
            positions[key] = moved[key] = ev.version
            applied.append(ev.id)
            seen.add(ev.id)
            outcome.ack.append(m)
        if run:
            await self._dispatch(session, run)
        if applied:
            await driver.execute(_RECORD_SEEN, name, applied)
            outcome.applied = applied
        if moved:
            await driver.execute(
                _MOVE, name, [k[0] for k in moved], [k[1] for k in moved], list(moved.values())
            )
        return outcome

    async def _dispatch(self, session: AsyncSession, run: list[IncomingEvent]) -> None:
        ce_type = run[0].type
        many = self.consumer.batch_handlers.get(ce_type)
        handler = self.consumer.handlers.get(ce_type)
        if many is None and handler is None:
            return
        tracer = telemetry.tracer("chassis.consumer")
        token = otel_context.attach(telemetry.context_from_headers(run[0].headers))
        try:
            if many is not None:
                with tracer.start_as_current_span(
                    f"consume {ce_type}", attributes={"messaging.batch.message_count": len(run)}
                ):
                    await many(session, run)
                return
            assert handler is not None
            for ev in run:
                with tracer.start_as_current_span(
                    f"consume {ce_type}", attributes={"messaging.message.id": ev.id}
                ):
                    await handler(session, ev)
        finally:
            otel_context.detach(token)

    @staticmethod
    def _deliveries(m: Msg) -> int:
        try:
            return int(m.metadata.num_delivered)
        except Exception:
            return 1

    async def _retry_later(self, m: Msg, why: str, *, gap: bool = False) -> None:
        n = self._deliveries(m)
        if n >= self.max_deliver:
            ev = None
            with contextlib.suppress(MalformedEvent):
                ev = IncomingEvent.from_nats(m.subject, m.headers, m.data)
            await self._dead_letter(m, ev, why)
            return
        delay = min(0.1 * 2**n, 10.0)
        if gap and n == self.max_deliver - 1 and not await self._earlier_failed(m):
            # The missing version may be in the hands of a consumer process that died or
            # froze: JetStream hands it out again only after the ack wait. The last try of a
            # gap waits that out, or the later version is dead-lettered while the earlier one
            # is merely in flight, and every version after it becomes a gap for good.
            delay = max(delay, await self._current_ack_wait() + GAP_GRACE_SECONDS)
        await m.nak(delay=delay)

    async def _earlier_failed(self, m: Msg) -> bool:
        """An earlier event of the message's aggregate failed in a handler here lately, or is
        dead-lettered: it is not in flight elsewhere, so waiting longer cannot fill the gap."""
        try:
            ev = IncomingEvent.from_nats(m.subject, m.headers, m.data)
        except MalformedEvent:
            return False
        failed_at = self._failing.get((ev.aggregate, ev.aggregate_id))
        if failed_at is not None and time.monotonic() - failed_at < FAILING_MEMORY_SECONDS:
            return True
        async with self.db.sessionmaker() as session:
            found = await session.execute(
                text(
                    "SELECT 1 FROM dead_letters WHERE consumer = :c "
                    "AND headers->>'ce-tenant' = :t AND headers->>'ce-subject' = :a "
                    "AND split_part(subject, '.', 2) || '.' || split_part(subject, '.', 4) = :agg "
                    "LIMIT 1"
                ),
                {"c": self.durable, "t": ev.tenant, "a": ev.aggregate_id, "agg": ev.aggregate},
            )
            return found.first() is not None

    async def _current_ack_wait(self) -> float:
        """The durable's ack wait now (an operator may have changed it since we subscribed)."""
        with contextlib.suppress(Exception):
            info = await self.bus.js.consumer_info(self.stream.name, self.durable)
            self.ack_wait = info.config.ack_wait or self.ack_wait
        return self.ack_wait

    async def _failed(self, m: Msg, ev: IncomingEvent, error: str) -> None:
        log.warning("consumer %s: event %s (%s) failed: %s", self.durable, ev.id, ev.type, error)
        telemetry.EVENTS_CONSUMED.labels(self.service, self.consumer.name, "failed").inc()
        now = time.monotonic()
        if len(self._failing) > 10_000:
            self._failing = {
                k: t for k, t in self._failing.items() if now - t < FAILING_MEMORY_SECONDS
            }
        self._failing[(ev.aggregate, ev.aggregate_id)] = now
        await self._retry_later(m, error)

    async def _dead_letter(self, m: Msg, ev: IncomingEvent | None, error: str) -> None:
        log.error("consumer %s: dead-lettering %s: %s", self.durable, m.subject, error)
        async with self.db.sessionmaker() as session:
            await session.execute(
                text(
                    "INSERT INTO dead_letters (consumer, event_id, subject, headers, payload, "
                    "error, deliveries) VALUES (:c, :e, :s, CAST(:h AS jsonb), :p, :err, :n)"
                ),
                {
                    "c": self.durable,
                    "e": ev.id if ev else "",
                    "s": m.subject,
                    "h": json.dumps(dict(m.headers or {})),
                    "p": m.data,
                    "err": error[:2000],
                    "n": self._deliveries(m),
                },
            )
            await session.commit()
        telemetry.EVENTS_CONSUMED.labels(self.service, self.consumer.name, "dead").inc()
        await deadletters.refresh_gauge(self.db, self.service)
        await m.term()
