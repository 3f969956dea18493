"""The outbox relay: one active per service (PostgreSQL advisory lock), woken by
LISTEN/NOTIFY with polling as the correctness path. Publishes unsent rows in commit order as
JetStream atomic batches carrying `Nats-Msg-Id = event id`, and marks them sent only after the
batch's commit ack (one or two rows go out as plain acknowledged publishes, in order: lower
latency). A batch refused for a duplicate id (a re-send after a crash) is re-sent one message
at a time, so the broker drops exactly the duplicates.

The relay's own connection commits without waiting for the WAL flush: a mark-sent lost in a
database crash only means a re-send, which the broker (Nats-Msg-Id) and the consumers' inboxes
drop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from chassis import outbox, telemetry
from chassis.bus import Bus, StreamSpec
from chassis.db import asyncpg_dsn
from chassis.outbox import NOTIFY_CHANNEL
from chassis.tasks import cancel_and_wait

log = logging.getLogger("chassis.relay")

ERR_BATCH_DUPLICATE = 10201  # the atomic batch contains an already-stored message id
# Up to this many rows are published one acknowledged message at a time instead of as an
# atomic batch: lower latency for the few events of a single write.
SEQUENTIAL_UP_TO = 2


class PublishError(Exception):
    pass


class Relay:
    def __init__(
        self,
        database_url: str,
        bus: Bus,
        stream: StreamSpec,
        *,
        service: str,
        batch_size: int = 500,
        poll_seconds: float = 1.0,
    ) -> None:
        self.dsn = asyncpg_dsn(database_url)
        self.bus = bus
        self.stream = stream
        self.service = service
        self.batch_size = min(batch_size, 1000)
        self.poll_seconds = poll_seconds
        self.lock_key = zlib.crc32(f"crm-relay:{service}".encode())
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.is_leader = False
        self._stream_ready = False
        self._notify_task: asyncio.Task[None] | None = None
        self._notify_conn: asyncpg.Connection | None = None
        self.notify_name = f"crm-relay-notify-{service}"
        self._unregister: Callable[[], None] = lambda: None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"relay-{self.service}")
        self._unregister = outbox.on_commit(self.committed)

    def committed(self) -> None:
        """Rows were committed in this process: wake the relay here if it leads, else tell
        the leader (another replica) with one NOTIFY per short window."""
        if self.is_leader:
            self._wake.set()
        elif self._notify_task is None or self._notify_task.done():
            self._notify_task = asyncio.create_task(self._notify_leader())

    async def _notify_leader(self) -> None:
        """One NOTIFY for the commits of a short window, on a connection kept for it: a
        standby replica that writes steadily would otherwise open (and PostgreSQL fork) a
        backend for every window, up to 100 a second."""
        await asyncio.sleep(0.01)
        try:
            if self._notify_conn is None or self._notify_conn.is_closed():
                self._notify_conn = await asyncpg.connect(
                    self.dsn, server_settings={"application_name": self.notify_name}
                )
            await self._notify_conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")
        except Exception as e:  # the leader's polling still finds the rows
            log.debug("relay wake-up of the leader failed: %r", e)
            await self._close_notify()

    async def _close_notify(self) -> None:
        conn, self._notify_conn = self._notify_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    async def stop(self) -> None:
        self._unregister()
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self._notify_task is not None:
            await cancel_and_wait(self._notify_task)
        await self._close_notify()

    def wake(self, *_: Any) -> None:
        self._wake.set()

    async def _run(self) -> None:
        delay = 0.2
        while True:
            try:
                conn: asyncpg.Connection = await asyncpg.connect(self.dsn)
                try:
                    await self._lead(conn)
                finally:
                    self.is_leader = False
                    with contextlib.suppress(Exception):
                        await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("relay failed; restarting in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _lead(self, conn: asyncpg.Connection) -> None:
        while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.lock_key):
            await asyncio.sleep(2.0)  # another replica is the relay; take over if it dies
        self.is_leader = True
        await conn.execute("SET synchronous_commit = off")
        await conn.add_listener(NOTIFY_CHANNEL, self.wake)
        log.info("relay of %s is leader", self.service)
        backoff = 0.1
        while True:
            # A commit from now on sets the wake-up again; every commit before it is visible
            # to the fetch below (`committed` runs once the commit returned).
            self._wake.clear()
            rows = await conn.fetch(
                "SELECT id, subject, headers, payload FROM outbox WHERE sent_at IS NULL "
                "ORDER BY id LIMIT $1",
                self.batch_size,
            )
            telemetry.OUTBOX_BACKLOG.labels(self.service).set(len(rows))
            if not rows:
                await self._idle()
                continue
            try:
                await self._publish(rows)
            except Exception as e:  # nats-py raises its own error types when disconnected
                self._stream_ready = False
                log.warning("publish failed (%r); retrying in %.1fs", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            await conn.execute(
                "UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])",
                [r["id"] for r in rows],
            )
            telemetry.EVENTS_PUBLISHED.labels(self.service).inc(len(rows))
            if len(rows) < self.batch_size:
                # the fetch took all there was: wait for the next commit instead of asking
                # again (at a trickle that empty fetch was a third of the relay's queries)
                telemetry.OUTBOX_BACKLOG.labels(self.service).set(0)
                await self._idle()

    async def _idle(self) -> None:
        """Until a commit wakes the relay, or the poll interval passed (rows written by a
        process that could not wake it)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    async def _publish(self, rows: Sequence[asyncpg.Record]) -> None:
        if not self.bus.connected or self.bus.nc is None:
            raise PublishError("NATS not connected")
        if not self._stream_ready:
            await self.bus.ensure_stream(self.stream)
            self._stream_ready = True
        if len(rows) <= SEQUENTIAL_UP_TO:
            # a lone event (the common case at a trickle): a plain acknowledged publish is
            # ~1.2 ms where an atomic batch commit is ~4 ms (measured with sync_interval
            # always); one at a time in order, so ordering holds without the batch
            await self._publish_one_by_one(rows)
            return
        nc = self.bus.nc
        batch_id = uuid.uuid4().hex
        last = len(rows)
        for i, row in enumerate(rows, 1):
            headers = json.loads(row["headers"])
            headers["Nats-Batch-Id"] = batch_id
            headers["Nats-Batch-Sequence"] = str(i)
            if i < last:
                await nc.publish(row["subject"], row["payload"], headers=headers)
                continue
            headers["Nats-Batch-Commit"] = "1"
            reply = await nc.request(row["subject"], row["payload"], timeout=10, headers=headers)
            ack = json.loads(reply.data or b"{}")
            error = ack.get("error")
            if error is None:
                return
            if error.get("err_code") == ERR_BATCH_DUPLICATE:
                await self._publish_one_by_one(rows)
                return
            raise PublishError(f"batch refused: {error}")

    async def _publish_one_by_one(self, rows: Sequence[asyncpg.Record]) -> None:
        js = self.bus.js
        for row in rows:
            headers = json.loads(row["headers"])
            ack = await js.publish(row["subject"], row["payload"], timeout=10, headers=headers)
            if ack.duplicate:
                log.info("broker dropped duplicate %s", headers.get("Nats-Msg-Id"))
