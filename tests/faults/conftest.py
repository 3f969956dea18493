"""Fault-injection fixtures: the contacts service and the gateway as real child processes
(`python -m uvicorn --factory ...`, configured through the same environment variables as
`make run`), so a test can SIGKILL, SIGSTOP and SIGCONT them, on the real PostgreSQL and
nats-server of the chassis plugin (`crm_infra`).

Before the gateway starts, the fixture creates the contacts stream and the gateway's durable
consumers of it itself, with a short ack wait: the chassis binds to an existing durable and
never changes it, and its own ack wait (30 s) would make every "past the ack wait" case take
half a minute. Everything else (filters, explicit ack, max_deliver) is what the chassis
would have created."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy

import contacts.app as contacts_app
import gateway.app as gateway_app
from chassis.bus import Bus, StreamSpec
from chassis.db import asyncpg_dsn
from chassis.infra import free_port
from chassis.testing import Infra, wait_for
from gateway.feed import log as feed_log
from gateway.readmodel import CONSUMERS as READMODEL_CONSUMERS

ACK_WAIT_SECONDS = 3.0
MAX_DELIVER = 7
STREAM = "CRM_CONTACTS"
TENANT = "fault"
# The gateway's durable consumers of the contacts stream (chassis: "<service>-<consumer>").
GATEWAY_DURABLES = {
    f"gateway-{c.name}": c.filter_subjects
    for c in [*READMODEL_CONSUMERS, *feed_log.CONSUMERS]
    if c.context == "contacts"
}


def _die_with_parent() -> None:
    """Runs in the child before exec: Linux sends it SIGKILL if pytest dies first, so no
    service outlives an interrupted run."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class ServiceProcess:
    """One uvicorn process of a service; `kill`/`pause`/`resume`/`start` inject faults."""

    name: str
    factory: str
    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.starts += 1
        log.write(f"\n===== start #{self.starts} =====\n".encode())
        log.flush()
        command = [
            sys.executable, "-m", "uvicorn", "--factory", self.factory,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        self.proc = subprocess.Popen(
            command, env=self.env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec
        )
        log.close()

    async def ready(self, timeout: float = 90.0) -> None:
        last: list[str] = []

        async def answers() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited; see {self.log_path}")
            try:
                async with httpx.AsyncClient(timeout=2) as c:
                    r = await c.get(f"{self.url}/readyz")
            except httpx.HTTPError as e:
                last[:] = [repr(e)]
                return False
            last[:] = [f"{r.status_code} {r.text}"]
            return r.status_code == 200

        try:
            await wait_for(answers, timeout=timeout, interval=0.1, message=f"{self.name} ready")
        except AssertionError as e:
            raise AssertionError(f"{e}: {last}; log: {self.log_path}") from None

    async def restart(self) -> None:
        self.start()
        await self.ready()

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, nothing is flushed or acked."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """End of test: SIGKILL too (nothing to keep; a graceful stop costs seconds)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def log_count(self, needle: str) -> int:
        return self.log_path.read_text(errors="replace").count(needle)


@dataclass
class Durable:
    """A snapshot of one JetStream durable consumer's counters."""

    name: str
    ack_pending: int
    pending: int
    waiting: int  # open pull requests
    delivered: int  # deliveries, redeliveries included (the consumer sequence)
    last_stream_seq: int

    @property
    def redeliveries(self) -> int:
        """Every stream message matches the gateway's filters here and delivery starts at
        sequence 1, so deliveries beyond the highest delivered sequence were redeliveries."""
        return self.delivered - self.last_stream_seq

    @classmethod
    def of(cls, info: ConsumerInfo) -> Durable:
        return cls(
            name=info.name,
            ack_pending=info.num_ack_pending or 0,
            pending=info.num_pending or 0,
            waiting=info.num_waiting or 0,
            delivered=info.delivered.consumer_seq or 0 if info.delivered else 0,
            last_stream_seq=info.delivered.stream_seq or 0 if info.delivered else 0,
        )


@dataclass
class FaultStack:
    infra: Infra
    contacts: ServiceProcess
    gateway: ServiceProcess
    contacts_db: str
    gateway_db: str
    make_gateway: Callable[[str], ServiceProcess]
    extra: list[ServiceProcess] = field(default_factory=list)
    # the harness's constants, for tests (which cannot import this module)
    tenant: str = TENANT
    ack_wait_seconds: float = ACK_WAIT_SECONDS
    max_deliver: int = MAX_DELIVER
    stream: str = STREAM
    durable_names: tuple[str, ...] = tuple(GATEWAY_DURABLES)

    def headers(self) -> dict[str, str]:
        return self.infra.auth(tenant=TENANT)

    def add_gateway(self, name: str) -> ServiceProcess:
        """Another gateway replica (same database, same durables)."""
        replica = self.make_gateway(name)
        self.extra.append(replica)
        return replica

    def load(self, **kw: Any) -> Load:
        """Write load straight to the contacts service (see `Load`); call `start()`."""
        return Load(self.contacts.url, self.headers(), **kw)

    async def fetch(self, url: str, sql: str, *args: object) -> list[asyncpg.Record]:
        return await fetch(url, sql, *args)

    async def scalar(self, url: str, sql: str, *args: object) -> int:
        return await scalar(url, sql, *args)

    async def durables(self) -> list[Durable]:
        nc = await nats.connect(self.infra.nats_url)
        try:
            js = nc.jetstream()
            return [Durable.of(await js.consumer_info(STREAM, d)) for d in GATEWAY_DURABLES]
        finally:
            await nc.close()

    async def set_ack_wait(self, seconds: float) -> None:
        """Change the ack wait of the gateway's durables (e.g. back to the chassis's own)."""
        nc = await nats.connect(self.infra.nats_url)
        try:
            js = nc.jetstream()
            for durable in GATEWAY_DURABLES:
                config = (await js.consumer_info(STREAM, durable)).config
                config.ack_wait = seconds
                await js.add_consumer(STREAM, config)  # same name: an update
        finally:
            await nc.close()

    async def stream_order(self) -> list[tuple[str, int]]:
        """(aggregate id, version) of every message of the contacts stream, in stream order."""
        nc = await nats.connect(self.infra.nats_url)
        try:
            js = nc.jetstream()
            total = (await js.stream_info(STREAM)).state.messages
            sub = await js.pull_subscribe(
                "crm.contacts.>",
                stream=STREAM,
                config=ConsumerConfig(
                    ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, max_waiting=1
                ),
            )
            out: list[tuple[str, int]] = []
            while len(out) < total:
                for m in await sub.fetch(1000, timeout=10):
                    h = m.headers or {}
                    out.append((h["ce-subject"], int(h["ce-sequence"])))
            await sub.unsubscribe()
            return out
        finally:
            await nc.close()

    async def stream_messages(self) -> int:
        nc = await nats.connect(self.infra.nats_url)
        try:
            return int((await nc.jetstream().stream_info(STREAM)).state.messages)
        finally:
            await nc.close()

    async def converged(self, timeout: float = 90.0) -> None:
        """Wait until every outbox row is published and applied by each gateway durable."""

        async def done() -> bool:
            unsent = await scalar(
                self.contacts_db, "SELECT count(*) FROM outbox WHERE sent_at IS NULL"
            )
            produced = await scalar(self.contacts_db, "SELECT count(*) FROM outbox")
            applied = await fetch(
                self.gateway_db,
                "SELECT count(*) AS n FROM unnest(CAST($1 AS text[])) AS d(name) "
                "LEFT JOIN inbox ON inbox.consumer = d.name GROUP BY d.name",
                list(GATEWAY_DURABLES),
            )
            return not unsent and all(r["n"] >= produced for r in applied)

        await wait_for(done, timeout=timeout, interval=0.25, message="every event applied")

    async def assert_exactly_once(self, foreign: int = 0) -> int:
        """The invariants of the matrix; returns the number of events checked. `foreign`:
        messages the test published into the stream itself (not from the outbox)."""
        outbox = await fetch(
            self.contacts_db,
            "SELECT event_id, aggregate_id, aggregate_version FROM outbox WHERE tenant_id = $1",
            TENANT,
        )
        event_ids = {str(r["event_id"]) for r in outbox}
        assert len(event_ids) == len(outbox) > 0
        # 0 lost: every event in the gateway's event log, every contact in the 360 model at the
        # version the contacts service has
        logged = await fetch(
            self.gateway_db,
            "SELECT event_id, aggregate_id, version, position FROM event_log WHERE tenant_id = $1 "
            "ORDER BY position",
            TENANT,
        )
        assert {str(r["event_id"]) for r in logged} == event_ids
        contacts = {
            str(r["id"]): r["version"]
            for r in await fetch(
                self.contacts_db, "SELECT id, version FROM contacts WHERE tenant_id = $1", TENANT
            )
        }
        views = {
            str(r["contact_id"]): r["contact_version"]
            for r in await fetch(
                self.gateway_db,
                "SELECT contact_id, contact_version FROM customer_360 WHERE tenant_id = $1",
                TENANT,
            )
        }
        missing = contacts.keys() - views.keys()
        behind = {c: (v, views[c]) for c, v in contacts.items() if views.get(c, v) != v}
        assert not missing, f"{len(missing)} contacts not in the 360 model: {list(missing)[:3]}"
        assert not behind, f"{len(behind)} at another version: {list(behind.items())[:3]}"
        assert len(views) == len(contacts), "contacts in the 360 model that do not exist"
        # 0 applied twice: one event-log row, one timeline entry and one inbox row per event
        assert len(logged) == len(event_ids), "an event was logged twice"
        timeline = await fetch(
            self.gateway_db,
            "SELECT event_id, count(*) AS n FROM timeline WHERE tenant_id = $1 GROUP BY event_id",
            TENANT,
        )
        assert {str(r["event_id"]) for r in timeline} == event_ids
        assert all(r["n"] == 1 for r in timeline)
        for durable in GATEWAY_DURABLES:
            inbox = await fetch(
                self.gateway_db,
                "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM inbox "
                "WHERE consumer = $1",
                durable,
            )
            assert inbox[0]["n"] == inbox[0]["d"] == len(event_ids), durable
        # order: per aggregate the log holds versions 1, 2, 3... in that order (never regresses)
        seen: dict[str, list[int]] = {}
        for r in logged:
            seen.setdefault(r["aggregate_id"], []).append(r["version"])
        for aggregate, versions in seen.items():
            assert versions == list(range(1, len(versions) + 1)), (aggregate, versions)
        # the broker kept each event once (re-sent batches dropped by Nats-Msg-Id)
        assert await self.stream_messages() == len(event_ids) + foreign
        return len(event_ids)


async def fetch(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def scalar(url: str, sql: str, *args: object) -> int:
    rows = await fetch(url, sql, *args)
    return int(rows[0][0] or 0)


def service_env(
    infra: Infra, contacts_db: str, gateway_db: str, contacts_url: str
) -> dict[str, str]:
    """What `make run` sets (chassis.devstack), pointed at the test servers, plus the test
    settings of `crm_infra.settings` (fast polling, small pools)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CRM_", "CONTACTS_", "GATEWAY_", "OTEL_"))
    }
    env.update(
        {
            "CRM_ENV": "test",
            "CRM_NATS_URL": infra.nats_url,
            "CRM_JWKS_FILE": str(infra.jwt_dir / "jwks.json"),
            "CRM_RELAY_POLL_SECONDS": "0.5",
            "CRM_DB_POOL_SIZE": "5",
            "CRM_CONSUMER_MAX_DELIVER": str(MAX_DELIVER),
            "CRM_LOG_JSON": "false",
            "CRM_LOG_LEVEL": "INFO",
            "CONTACTS_DATABASE_URL": contacts_db,
            "GATEWAY_DATABASE_URL": gateway_db,
            "GATEWAY_UPSTREAMS": json.dumps({"contacts": contacts_url}),
            "GATEWAY_RATE_LIMIT_PER_SECOND": "0",
            "GATEWAY_TOKEN_RATE_LIMIT_PER_SECOND": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


async def create_gateway_durables(infra: Infra) -> None:
    """The contacts stream and the gateway's durables on it, as the chassis would create them
    but with a short ack wait."""
    bus = Bus(infra.nats_url, name="fault-setup")
    bus.start()
    try:
        await bus.wait_connected(10)
        await bus.ensure_stream(StreamSpec.for_context("contacts"))
        for durable, subjects in GATEWAY_DURABLES.items():
            await bus.js.add_consumer(
                STREAM,
                ConsumerConfig(
                    durable_name=durable,
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    filter_subjects=subjects,
                    max_deliver=MAX_DELIVER,
                    ack_wait=ACK_WAIT_SECONDS,
                    max_ack_pending=10_000,
                ),
            )
    finally:
        await bus.close()


@pytest.fixture
async def stack(crm_infra: Infra, clean_streams: None, tmp_path: Path) -> AsyncIterator[FaultStack]:
    contacts_db = await crm_infra.database(
        "crm_contacts", contacts_app.MIGRATIONS, "alembic_version_contacts"
    )
    gateway_db = await crm_infra.database(
        "crm_gateway", gateway_app.MIGRATIONS, "alembic_version_gateway"
    )
    await create_gateway_durables(crm_infra)
    contacts_port = free_port()
    env = service_env(crm_infra, contacts_db, gateway_db, f"http://127.0.0.1:{contacts_port}")

    def make_gateway(name: str) -> ServiceProcess:
        return ServiceProcess(name, "gateway.app:create", env, tmp_path / f"{name}.log")

    contacts = ServiceProcess(
        "contacts", "contacts.app:create", env, tmp_path / "contacts.log", port=contacts_port
    )
    gateway = make_gateway("gateway")
    fs = FaultStack(crm_infra, contacts, gateway, contacts_db, gateway_db, make_gateway)
    try:
        contacts.start()
        gateway.start()
        await asyncio.gather(contacts.ready(), gateway.ready())
        yield fs
    finally:
        for p in [contacts, gateway, *fs.extra]:
            p.stop()


@dataclass
class Load:
    """Writers upserting batches of contacts (by external id) straight to the contacts
    service, until stopped: each batch creates new contacts and updates earlier ones (so
    aggregates reach versions > 1). A write that fails because the service is down is
    retried; whether it committed does not matter, the contacts database is the truth."""

    url: str
    headers: dict[str, str]
    batch: int = 40
    writers: int = 2
    ok: int = 0
    failed: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._write(w)) for w in range(self.writers)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def _items(self, writer: int, round_: int) -> list[dict[str, Any]]:
        items = []
        for i in range(self.batch):
            if i % 4 == 3 and round_ > 0:  # a quarter: update a contact of an earlier round
                n, name = f"{writer}-{round_ // 2}-{i}", f"changed-{round_}"
            else:
                n, name = f"{writer}-{round_}-{i}", "new"
            items.append(
                {"external_ids": {"load": n}, "email": f"c{n}@example.com", "last_name": name}
            )
        return items

    async def _write(self, writer: int) -> None:
        round_ = 0
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                body = {"items": self._items(writer, round_)}
                try:
                    r = await client.post("/v1/contacts/batch", json=body, headers=self.headers)
                except httpx.HTTPError:
                    self.failed += 1
                    await asyncio.sleep(0.05)  # the service is down: retry the same batch
                    continue
                assert r.status_code == 200, r.text
                self.ok += 1
                round_ += 1
