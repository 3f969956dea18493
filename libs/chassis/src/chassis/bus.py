"""The NATS connection of a service: connects in the background and keeps reconnecting, so a
broker outage never blocks startup or makes the service unready (the outbox absorbs it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

from chassis.tasks import cancel_and_wait

log = logging.getLogger("chassis.bus")


@dataclass(frozen=True)
class StreamSpec:
    """The stream a service produces into: one per service, capturing `crm.<context>.>`."""

    name: str
    subjects: list[str]
    replicas: int = 1
    duplicate_window_seconds: float = 600.0
    max_age_seconds: float = 30 * 86400.0

    @classmethod
    def for_context(
        cls, context: str, replicas: int = 1, max_age_seconds: float = 30 * 86400.0
    ) -> StreamSpec:
        return cls(
            name=f"CRM_{context.upper()}",
            subjects=[f"crm.{context}.>"],
            replicas=replicas,
            max_age_seconds=max_age_seconds,
        )


class Bus:
    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self.nc: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    @property
    def js(self) -> JetStreamContext:
        if self.nc is None:
            raise ConnectionError("NATS not connected yet")
        return self.nc.jetstream()

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect_forever(), name=f"bus-{self.name}")

    async def _connect_forever(self) -> None:
        delay = 0.2
        while True:
            try:
                self.nc = await nats.connect(
                    self.url,
                    name=self.name,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnect,
                    reconnected_cb=self._on_reconnect,
                )
                self._ready.set()
                log.info("connected to NATS at %s", self.url)
                return
            except Exception as e:  # the broker may be down at startup
                log.warning("NATS not reachable (%s), retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _on_error(self, e: Exception) -> None:
        log.debug("NATS error: %s", e)

    async def _on_disconnect(self) -> None:
        log.warning("NATS disconnected")

    async def _on_reconnect(self) -> None:
        log.info("NATS reconnected")

    async def ensure_stream(self, spec: StreamSpec, *, owner: bool = True) -> None:
        """Create the stream if it is missing; its producer (`owner`) also brings an existing
        stream's configuration up to date. A consumer only creates it (so it can bind before
        the producer's first start) and never overwrites the producer's settings."""
        config = StreamConfig(
            name=spec.name,
            subjects=spec.subjects,
            storage=StorageType.FILE,
            num_replicas=spec.replicas,
            duplicate_window=spec.duplicate_window_seconds,
            max_age=spec.max_age_seconds,
            allow_atomic=True,
        )
        try:
            await self.js.stream_info(spec.name)
            if owner:
                await self.js.update_stream(config)
        except NotFoundError:
            await self.js.add_stream(config)

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self.nc is not None:
            # close() flushes what is buffered; drain() can wait its full 30 s timeout on a
            # pull subscription whose fetch was just interrupted. Nothing unacked is lost:
            # the relay marks rows sent only after the ack, consumers ack after commit.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.close(), 5.0)
