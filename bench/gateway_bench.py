"""Gateway benchmarks: the 360 read under a steady event load, timeline pages of long
timelines, and the webhook fan-out rate to a local receiver.

Standalone: starts its own embedded PostgreSQL and nats-server (temporary data), migrates the
gateway database and runs the gateway as a uvicorn process (JWT checks and rate-limit code on
the path, limits turned off). The bench publishes the services' events to JetStream itself
(no upstream service runs), drives HTTP with bench/loadgen.py and receives webhooks on a
small asyncio HTTP server in this process. Prints one JSON dict; `run()` returns it.

1. 360 read under load: GET /v1/customers/{id}/360 on 2,000 customers, first alone, then while
   1,000 events/s (contact.updated and deal.updated) are published for the read model; the
   loaded figures are ratios to the unloaded ones. Also the achieved apply rate, the backlog
   of the read model's consumers and the contact-update lag (publish -> start of the
   transaction that applied it, from `customer_360.updated_at`).
2. Timeline page: GET …/timeline?limit=50 on customers with 2,000 entries (grown with one
   INSERT … SELECT), the first page and a deep page (cursor after 1,500 entries), p99 against
   the same keyset query run with raw asyncpg from this process (no HTTP).
3. Webhook fan-out: 10 subscriptions matching every event, 600 events (120 contacts x 5
   versions) published at once: deliveries/s until all are in, publish -> delivery p50/p99,
   signatures, duplicates and per-aggregate order checked.

    .venv/bin/python bench/gateway_bench.py [--duration 10] [--rate 1000]
    .venv/bin/python bench/run.py --only gateway   (same, results into bench/results)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import nats
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

sys.path.insert(0, str(Path(__file__).parent))
from loadgen import Result, build_request, read_response, run_closed_loop

from chassis import devkeys
from chassis.db import asyncpg_dsn
from chassis.events import OutgoingEvent
from chassis.http import decode_cursor
from chassis.infra import NatsProcess, Postgres, ensure_database, free_port
from chassis.migrations import upgrade
from chassis.settings import with_database
from crm.common.v1.common_pb2 import EventMeta, Money
from crm.contacts.v1 import contacts_pb2 as cpb
from crm.pipeline.v1 import pipeline_pb2 as ppb
from crm.registry import ce_type_for

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TENANT = "acme"
HOOKS_TENANT = "hooks"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
# The read model's consumers (durable = "<service>-<consumer name>") and the event log's.
READ_MODEL_DURABLES = [
    ("CRM_CONTACTS", "gateway-customer-360"),
    ("CRM_PIPELINE", "gateway-customer-360-pipeline"),
]
EVENT_LOG_DURABLES = [
    ("CRM_CONTACTS", "gateway-events-contacts"),
    ("CRM_PIPELINE", "gateway-events-pipeline"),
]
Durables = list[tuple[str, str]]  # (stream, durable consumer)


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def _ts(t: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(t)
    return ts


# --- events, built the way the services publish them ---------------------------------------


def _meta(
    tenant: str, aggregate_id: str, version: int, changed: list[str] | None = None
) -> EventMeta:
    return EventMeta(
        tenant_id=tenant,
        aggregate_id=aggregate_id,
        version=version,
        actor="bench",
        origin="bench",
        occurred_at=_ts(T0 + timedelta(seconds=version)),
        changed_fields=changed or [],
    )


def _wrap(msg: Message, tenant: str, aggregate_id: str, version: int, source: str) -> OutgoingEvent:
    return OutgoingEvent(
        message=msg,
        ce_type=ce_type_for(msg),
        tenant=tenant,
        aggregate_id=aggregate_id,
        version=version,
        source=source,
    )


def contact_event(tenant: str, cid: str, version: int) -> OutgoingEvent:
    contact = cpb.Contact(
        id=cid,
        version=version,
        first_name="Ada",
        last_name=f"Bench{version}",
        email=f"{cid[:8]}@example.com",
        owner_id="u-bench",
    )
    meta = _meta(tenant, cid, version, ["last_name"] if version > 1 else None)
    msg: Message = (
        cpb.ContactCreated(meta=meta, contact=contact)
        if version == 1
        else cpb.ContactUpdated(meta=meta, contact=contact)
    )
    return _wrap(msg, tenant, cid, version, "crm/contacts")


def deal_event(tenant: str, did: str, contact_id: str, version: int) -> OutgoingEvent:
    deal = ppb.Deal(
        id=did,
        contact_id=contact_id,
        version=version,
        name="Bench renewal",
        owner_id="u-bench",
        pipeline_id="p1",
        stage_id="s1",
        stage_name="Qualify",
        amount=Money(amount=f"{1000 + version}.00", currency="USD"),
        status="open",
        created_at=_ts(T0),
    )
    meta = _meta(tenant, did, version, ["amount"] if version > 1 else None)
    msg: Message = (
        ppb.DealCreated(meta=meta, deal=deal)
        if version == 1
        else ppb.DealUpdated(meta=meta, deal=deal)
    )
    return _wrap(msg, tenant, did, version, "crm/pipeline")


async def publish(js: JetStreamContext, events: list[OutgoingEvent], chunk: int = 200) -> None:
    """Publish in order, `chunk` acks in flight at a time (an aggregate's versions must not
    overtake each other, so callers put at most one event per aggregate in a chunk or accept
    that the consumer re-orders them)."""
    for i in range(0, len(events), chunk):
        await asyncio.gather(
            *(
                js.publish(e.subject, e.message.SerializeToString(), headers=e.headers())
                for e in events[i : i + chunk]
            )
        )


async def backlog(js: JetStreamContext, durables: Durables) -> int:
    """Events not yet applied (pending + delivered but unacked) over the given consumers."""
    total = 0
    for stream, durable in durables:
        info = await js.consumer_info(stream, durable)
        total += (info.num_pending or 0) + (info.num_ack_pending or 0)
    return total


async def wait_drained(js: JetStreamContext, durables: Durables, timeout: float = 300) -> float:
    """perf_counter when every consumer has applied everything published so far."""
    deadline = time.perf_counter() + timeout
    while await backlog(js, durables) > 0:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"consumers {durables} not drained")
        await asyncio.sleep(0.05)
    return time.perf_counter()


async def wait_consumers(js: JetStreamContext, timeout: float = 60) -> None:
    deadline = time.perf_counter() + timeout
    for stream, durable in READ_MODEL_DURABLES + EVENT_LOG_DURABLES:
        while True:
            try:
                await js.consumer_info(stream, durable)
                break
            except Exception:
                if time.perf_counter() > deadline:
                    raise
                await asyncio.sleep(0.2)


# --- the gateway process --------------------------------------------------------------------


class GatewayStack:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.pg = Postgres(self.base / "pg")
        self.nats = NatsProcess(self.base / "nats")
        self.nats.start()
        self.jwt = self.base / "jwt"
        devkeys.ensure_dev_keys(self.jwt)
        server = self.pg.url()
        await ensure_database(server, "crm_gateway")
        self.url = with_database(server, "crm_gateway")
        await upgrade(ROOT / "gateway/migrations", self.url, "alembic_version_gateway")
        self.port = free_port()
        env = {
            **os.environ,
            "CRM_ENV": "dev",
            "CRM_DATABASE_URL": server,
            "CRM_NATS_URL": self.nats.url,
            "CRM_JWKS_FILE": str(self.jwt / "jwks.json"),
            "CRM_LOG_LEVEL": "WARNING",
            "GATEWAY_RATE_LIMIT_PER_SECOND": "0",
            "GATEWAY_TOKEN_RATE_LIMIT_PER_SECOND": "0",
            "GATEWAY_UPSTREAMS": "{}",
            "GATEWAY_WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true",
        }
        log = open(self.base / "gateway.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                PY,
                "-m",
                "uvicorn",
                "--factory",
                "gateway.app:create",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            env=env,
            cwd=str(Path(__file__).parent),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("gateway not ready; see gateway.log")

    def auth(self, tenant: str, roles: list[str]) -> dict[str, str]:
        token = devkeys.mint_token(self.jwt, tenant=tenant, roles=roles, sub="bench")
        return {"Authorization": f"Bearer {token}"}

    async def dead_letters(self) -> dict[str, int]:
        """Events the consumers gave up on: a failing handler shows here, not as an error."""
        conn = await asyncpg.connect(asyncpg_dsn(self.url))
        try:
            rows = await conn.fetch("SELECT consumer, count(*) FROM dead_letters GROUP BY 1")
            return {str(r[0]): int(r[1]) for r in rows}
        finally:
            await conn.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            # kept for a look after the run (the data directory goes away)
            results = Path(__file__).parent / "results"
            results.mkdir(exist_ok=True)
            shutil.copyfile(self.base / "gateway.log", results / "gateway_bench.gateway.log")
        self.nats.stop()
        self.pg.stop()


async def http(
    port: int, method: str, path: str, headers: dict[str, str], body: Any = None
) -> tuple[int, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    raw = json.dumps(body).encode() if body is not None else b""
    h = {**headers, "Content-Type": "application/json"} if body is not None else headers
    writer.write(build_request(method, path, h, raw))
    status, data = await read_response(reader)
    writer.close()
    return status, json.loads(data) if data else None


# --- 1. the 360 read under a steady event load -----------------------------------------------


@dataclass
class LoadState:
    """Versions published so far and when (perf_counter and wall clock) each was sent."""

    contact_version: dict[str, int]
    deal_version: dict[str, int]
    sent_at: dict[tuple[str, int], float] = field(default_factory=dict)  # wall clock
    published: int = 0


async def steady_publisher(
    js: JetStreamContext,
    state: LoadState,
    deals: dict[str, str],
    rate: float,
    deal_share: float,
    stop: asyncio.Event,
) -> tuple[float, float]:
    """Publish at `rate` events/s until `stop`: contact.updated round-robin over the contact
    group, deal.updated over the deal group (`deal_share` of the events). Ticks of 10 ms,
    each tick's events published concurrently (distinct aggregates within a tick as long as
    a tick holds fewer events than each group has aggregates)."""
    contacts = list(state.contact_version)
    deal_ids = list(deals)
    ci = di = 0
    start = time.perf_counter()
    while not stop.is_set():
        due = int((time.perf_counter() - start) * rate)
        batch: list[OutgoingEvent] = []
        while state.published + len(batch) < due:
            n = state.published + len(batch)
            if deal_ids and (n % 100) < deal_share * 100:
                did = deal_ids[di % len(deal_ids)]
                di += 1
                state.deal_version[did] += 1
                batch.append(deal_event(TENANT, did, deals[did], state.deal_version[did]))
            else:
                cid = contacts[ci % len(contacts)]
                ci += 1
                state.contact_version[cid] += 1
                version = state.contact_version[cid]
                state.sent_at[(cid, version)] = time.time()
                batch.append(contact_event(TENANT, cid, version))
        if batch:
            await publish(js, batch, chunk=len(batch))
            state.published += len(batch)
        await asyncio.sleep(0.01)
    return start, time.perf_counter()


async def lag_sampler(url: str, state: LoadState, stop: asyncio.Event, lags: list[float]) -> None:
    """Every 0.5 s: contacts whose document changed since the last look; each (contact,
    version) seen gives one lag sample (`updated_at` is the applying transaction's start)."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    seen: set[tuple[str, int]] = set()
    since = datetime.now(UTC) - timedelta(seconds=5)
    try:
        while True:
            rows = await conn.fetch(
                "SELECT contact_id, contact_version, updated_at FROM customer_360 "
                "WHERE tenant_id = $1 AND updated_at > $2",
                TENANT,
                since,
            )
            for r in rows:
                key = (str(r["contact_id"]), int(r["contact_version"]))
                if key in state.sent_at and key not in seen:
                    seen.add(key)
                    lags.append(r["updated_at"].timestamp() - state.sent_at[key])
                since = max(since, r["updated_at"] - timedelta(seconds=1))
            if stop.is_set():
                return
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def timeline_rows(conn: asyncpg.Connection) -> int:
    """Events applied so far: every contact.updated and deal event adds one timeline row."""
    n: int = await conn.fetchval("SELECT count(*) FROM timeline WHERE tenant_id = $1", TENANT)
    return n


async def backlog_sampler(
    js: JetStreamContext, stop: asyncio.Event, samples: dict[str, list[int]]
) -> None:
    """Every 0.25 s, each consumer's backlog: which of them falls behind."""
    while not stop.is_set():
        read_model = 0
        for stream, durable in READ_MODEL_DURABLES + EVENT_LOG_DURABLES:
            left = await backlog(js, [(stream, durable)])
            samples.setdefault(durable.removeprefix("gateway-"), []).append(left)
            if (stream, durable) in READ_MODEL_DURABLES:
                read_model += left
        samples.setdefault("read_model", []).append(read_model)
        await asyncio.sleep(0.25)


def _read_figures(name: str, res: Result) -> dict[str, Any]:
    return {
        f"{name}_rps": round(res.rps),
        f"{name}_p50_ms": round(res.p50 * 1e3, 2),
        f"{name}_p99_ms": round(res.p99 * 1e3, 2),
    }


async def bench_read_under_load(
    stack: GatewayStack,
    js: JetStreamContext,
    ids: list[str],
    state: LoadState,
    deals: dict[str, str],
    *,
    rate: float,
    duration: float,
    deal_share: float,
) -> dict[str, Any]:
    h = stack.auth(TENANT, ["admin"])
    reqs = [build_request("GET", f"/v1/customers/{i}/360", h) for i in ids]
    n = len(reqs)

    def make(i: int) -> bytes:
        return reqs[(i * 7919) % n]

    await run_closed_loop(stack.port, make, concurrency=32, duration=2)
    quiet = await run_closed_loop(stack.port, make, concurrency=32, duration=duration)

    stop = asyncio.Event()
    sampled = asyncio.Event()
    lags: list[float] = []
    backlogs: dict[str, list[int]] = {}
    pub = asyncio.create_task(steady_publisher(js, state, deals, rate, deal_share, stop))
    sampler = asyncio.create_task(lag_sampler(stack.url, state, sampled, lags))
    await asyncio.sleep(2)  # the load is steady before the reads are measured
    conn = await asyncpg.connect(asyncpg_dsn(stack.url))
    applied_before = await timeline_rows(conn)
    bl = asyncio.create_task(backlog_sampler(js, stop, backlogs))
    w0 = time.perf_counter()
    loaded = await run_closed_loop(stack.port, make, concurrency=32, duration=duration)
    window = time.perf_counter() - w0
    applied_in_window = await timeline_rows(conn) - applied_before
    await conn.close()
    stop.set()
    pub_start, pub_end = await pub
    await bl
    drained = await wait_drained(js, READ_MODEL_DURABLES)
    sampled.set()
    await sampler
    published = state.published
    return {
        "customers": n,
        "concurrency": 32,
        **_read_figures("quiet", quiet),
        **_read_figures("loaded", loaded),
        "statuses": {"quiet": quiet.statuses, "loaded": loaded.statuses},
        "rps_ratio": round(loaded.rps / quiet.rps, 3),
        "p50_ratio": round(loaded.p50 / quiet.p50, 2),
        "p99_ratio": round(loaded.p99 / quiet.p99, 2),
        "target_event_rate": rate,
        "deal_share": deal_share,
        "events_published": published,
        "publish_rate": round(published / (pub_end - pub_start)),
        "apply_rate_during_reads": round(applied_in_window / window),
        # publish start -> everything applied (includes the tail after publishing stopped)
        "apply_rate_overall": round(published / (drained - pub_start)),
        "drain_after_publish_s": round(drained - pub_end, 2),
        # events published but not yet applied, per consumer (read_model: the two 360 ones)
        "backlog_max": {k: max(v) for k, v in backlogs.items()},
        "backlog_max_read_model": max(backlogs.get("read_model", [0])),
        "contact_lag_samples": len(lags),
        "contact_lag_p50_ms": round(_pct(lags, 50) * 1e3, 1),
        "contact_lag_p99_ms": round(_pct(lags, 99) * 1e3, 1),
    }


# --- 2. timeline pages -------------------------------------------------------------------------

_KEYSET = (
    "SELECT id, occurred_at, kind, summary, data, event_id FROM timeline "
    "WHERE tenant_id = $1 AND contact_id = $2 AND (occurred_at, id) < ($3, $4) "
    "ORDER BY occurred_at DESC, id DESC LIMIT $5"
)
_FIRST = (
    "SELECT id, occurred_at, kind, summary, data, event_id FROM timeline "
    "WHERE tenant_id = $1 AND contact_id = $2 "
    "ORDER BY occurred_at DESC, id DESC LIMIT $3"
)


async def _deep_cursor(stack: GatewayStack, h: dict[str, str], cid: str, pages: int) -> str:
    """The cursor after `pages` pages of 50, followed through the API."""
    cursor = ""
    for _ in range(pages):
        q = f"?limit=50&cursor={cursor}" if cursor else "?limit=50"
        status, body = await http(stack.port, "GET", f"/v1/customers/{cid}/timeline{q}", h)
        assert status == 200, (status, body)
        cursor = body["next_cursor"]
        assert cursor, "timeline shorter than expected"
    return cursor


async def _sql_closed_loop(
    pool: asyncpg.Pool,
    query: Callable[[asyncpg.Connection, int], Awaitable[Any]],
    *,
    concurrency: int,
    duration: float,
) -> Result:
    result = Result()
    counter = 0
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal counter
        while time.perf_counter() < deadline:
            i = counter
            counter += 1
            t0 = time.perf_counter()
            async with pool.acquire() as conn:
                await query(conn, i)
            result.latencies.append(time.perf_counter() - t0)
            result.statuses[200] = result.statuses.get(200, 0) + 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - start
    return result


def _cycle(reqs: list[bytes]) -> Callable[[int], bytes]:
    return lambda i: reqs[i % len(reqs)]


async def bench_timeline(
    stack: GatewayStack, ids: list[str], *, deep_pages: int, duration: float
) -> dict[str, Any]:
    h = stack.auth(TENANT, ["admin"])
    conn = await asyncpg.connect(asyncpg_dsn(stack.url))
    entries = await conn.fetchval(
        "SELECT min(n) FROM (SELECT count(*) AS n FROM timeline WHERE tenant_id = $1 "
        "AND contact_id = ANY($2::uuid[]) GROUP BY contact_id) c",
        TENANT,
        ids,
    )
    await conn.close()
    cursors = {cid: await _deep_cursor(stack, h, cid, deep_pages) for cid in ids}
    n = len(ids)
    first = [build_request("GET", f"/v1/customers/{c}/timeline?limit=50", h) for c in ids]
    deep = [
        build_request("GET", f"/v1/customers/{c}/timeline?limit=50&cursor={cursors[c]}", h)
        for c in ids
    ]
    keys = []
    for c in ids:
        after = decode_cursor(cursors[c]) or {}
        keys.append((uuid.UUID(c), datetime.fromisoformat(str(after["t"])), int(after["i"])))

    async def sql_first(conn: asyncpg.Connection, i: int) -> Any:
        return await conn.fetch(_FIRST, TENANT, keys[i % n][0], 51)

    async def sql_deep(conn: asyncpg.Connection, i: int) -> Any:
        cid, t, last = keys[i % n]
        return await conn.fetch(_KEYSET, TENANT, cid, t, last, 51)

    pool = await asyncpg.create_pool(asyncpg_dsn(stack.url), min_size=16, max_size=16)
    out: dict[str, Any] = {}
    try:
        for name, reqs, query in (("first_page", first, sql_first), ("deep_page", deep, sql_deep)):
            make = _cycle(reqs)
            await run_closed_loop(stack.port, make, concurrency=16, duration=1)
            api = await run_closed_loop(stack.port, make, concurrency=16, duration=duration)
            await _sql_closed_loop(pool, query, concurrency=16, duration=1)
            base = await _sql_closed_loop(pool, query, concurrency=16, duration=duration)
            out[name] = {
                "customers": n,
                "entries_per_customer": entries,
                "offset": 0 if name == "first_page" else deep_pages * 50,
                "rps": round(api.rps),
                "p50_ms": round(api.p50 * 1e3, 2),
                "p99_ms": round(api.p99 * 1e3, 2),
                "statuses": api.statuses,
                "asyncpg_rps": round(base.rps),
                "asyncpg_p99_ms": round(base.p99 * 1e3, 2),
                "p99_ratio": round(api.p99 / base.p99, 2),
                "rps_ratio": round(api.rps / base.rps, 3),
            }
    finally:
        await pool.close()
    return out


# --- 3. webhook fan-out -----------------------------------------------------------------------


@dataclass
class Receiver:
    """A minimal HTTP/1.1 keep-alive server: records each delivery (subscription from the
    path, webhook-id, arrival time), checks its signature, answers 204."""

    secrets: dict[str, bytes] = field(default_factory=dict)  # path -> HMAC key
    arrivals: dict[tuple[str, str], float] = field(default_factory=dict)
    sequences: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    duplicates: int = 0
    bad_signatures: int = 0
    received: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = 0
    connections: set[asyncio.StreamWriter] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {}
                for line in lines[1:]:
                    if line:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.record(path, headers, body, time.perf_counter())
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        finally:
            self.connections.discard(writer)
            writer.close()

    async def close(self) -> None:
        """Hang up on the sender's keep-alive connections: their handlers end on EOF."""
        for writer in list(self.connections):
            writer.close()
        for _ in range(50):
            if not self.connections:
                return
            await asyncio.sleep(0.02)

    def record(self, path: str, headers: dict[str, str], body: bytes, at: float) -> None:
        self.received += 1
        msg_id = headers.get("webhook-id", "")
        key = (path, msg_id)
        if key in self.arrivals:
            self.duplicates += 1
            return
        self.arrivals[key] = at
        secret = self.secrets.get(path)
        signed = f"{msg_id}.{headers.get('webhook-timestamp', '')}.".encode() + body
        expected = (
            base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()
            if secret
            else None
        )
        sigs = headers.get("webhook-signature", "").split()
        if expected is None or not any(
            s.startswith("v1,") and hmac.compare_digest(s[3:], expected) for s in sigs
        ):
            self.bad_signatures += 1
        event = json.loads(body)
        self.sequences.setdefault((path, str(event.get("subject"))), []).append(
            int(event.get("sequence", 0))
        )
        if len(self.arrivals) >= self.expected:
            self.done.set()


async def bench_webhooks(
    stack: GatewayStack,
    js: JetStreamContext,
    *,
    subscriptions: int,
    aggregates: int,
    per_aggregate: int,
    timeout: float = 180,
) -> dict[str, Any]:
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    h = stack.auth(HOOKS_TENANT, ["admin"])
    try:
        for i in range(subscriptions):
            path = f"/hook/{i}"
            status, body = await http(
                stack.port,
                "POST",
                "/v1/webhooks",
                h,
                {
                    "url": f"http://127.0.0.1:{port}{path}",
                    "event_types": ["crm.*"],
                    "description": f"bench {i}",
                },
            )
            assert status == 201, (status, body)
            receiver.secrets[path] = base64.b64decode(body["secret"].removeprefix("whsec_"))
        contacts = [str(uuid.uuid4()) for _ in range(aggregates)]
        # version-major order: one event per aggregate in each publish chunk
        events = [
            contact_event(HOOKS_TENANT, cid, v)
            for v in range(1, per_aggregate + 1)
            for cid in contacts
        ]
        receiver.expected = len(events) * subscriptions
        sent: dict[str, float] = {}
        start = time.perf_counter()
        for i in range(0, len(events), aggregates):
            chunk = events[i : i + aggregates]
            t = time.perf_counter()
            for e in chunk:
                sent[str(e.id)] = t
            await publish(js, chunk, chunk=len(chunk))
        published = time.perf_counter()
        with contextlib.suppress(TimeoutError):  # reported as delivered < expected
            await asyncio.wait_for(receiver.done.wait(), timeout)
        arrivals = receiver.arrivals
        lat = [at - sent[mid] for (_, mid), at in arrivals.items() if mid in sent]
        last = max(arrivals.values(), default=start)
        first = min(arrivals.values(), default=start)
        out_of_order = sum(1 for seq in receiver.sequences.values() if seq != sorted(seq))
        return {
            "subscriptions": subscriptions,
            "events": len(events),
            "aggregates": aggregates,
            "expected_deliveries": receiver.expected,
            "delivered": len(arrivals),
            "duplicates": receiver.duplicates,
            "bad_signatures": receiver.bad_signatures,
            "queues_out_of_order": out_of_order,
            "publish_s": round(published - start, 2),
            "first_delivery_after_s": round(first - start, 3),
            "all_delivered_after_s": round(last - start, 2),
            "deliveries_per_s": round(len(arrivals) / (last - start)) if last > start else 0,
            "latency_p50_ms": round(_pct(lat, 50) * 1e3, 1),
            "latency_p99_ms": round(_pct(lat, 99) * 1e3, 1),
        }
    finally:
        server.close()
        await receiver.close()
        await server.wait_closed()


# --- seeding and the whole run ------------------------------------------------------------------


async def seed(
    js: JetStreamContext, customers: int, timeline_customers: int, rates: dict[str, Any]
) -> tuple[list[str], LoadState, dict[str, str], list[str]]:
    """Customers for the 360 reads (a contact group and a deal group) and the customers that get
    long timelines, through the consumers like real events; the apply rate of each kind
    (nothing else running) goes into `rates`."""
    ids = [str(uuid.uuid4()) for _ in range(customers)]
    contact_group = ids[: customers // 2]
    # a deal for one customer in ten (deal events apply far slower than contact events)
    deals = {str(uuid.uuid4()): cid for cid in ids[customers // 2 :: 5]}
    long_ids = [str(uuid.uuid4()) for _ in range(timeline_customers)]
    t0 = time.perf_counter()
    await publish(js, [contact_event(TENANT, cid, 1) for cid in ids + long_ids])
    t1 = await wait_drained(js, READ_MODEL_DURABLES)
    await publish(js, [deal_event(TENANT, did, cid, 1) for did, cid in deals.items()])
    t2 = await wait_drained(js, READ_MODEL_DURABLES)
    rates["seed_contact_created_per_s"] = round((len(ids) + len(long_ids)) / (t1 - t0))
    rates["seed_deal_created_per_s"] = round(len(deals) / (t2 - t1))
    state = LoadState(
        contact_version=dict.fromkeys(contact_group, 1), deal_version=dict.fromkeys(deals, 1)
    )
    return ids, state, deals, long_ids


async def fill_timelines(url: str, contact_ids: list[str], entries: int) -> None:
    """Grow each timeline to `entries` rows with one INSERT … SELECT: the figure is about
    reading long timelines (applying events is measured by the 360 scenario), and 10,000
    events through the consumers would take most of the time budget."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute(
            "INSERT INTO timeline (tenant_id, contact_id, occurred_at, kind, summary, data, "
            "event_id) "
            "SELECT $1, c, $3::timestamptz - make_interval(secs => n), 'contact.updated', "
            "'Contact updated: last_name', '{\"changed_fields\": [\"last_name\"]}'::jsonb, "
            "gen_random_uuid() "
            "FROM unnest($2::uuid[]) AS c, generate_series(1, $4) AS n",
            TENANT,
            contact_ids,
            T0,
            entries - 1,
        )
        await conn.execute("ANALYZE timeline")
    finally:
        await conn.close()


async def run(
    duration: float = 10,
    rate: float = 1000,
    customers: int = 2000,
    deal_share: float = 0.25,
    timeline_customers: int = 5,
    timeline_entries: int = 2000,
    webhook_subscriptions: int = 10,
    webhook_events: int = 600,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        stack = GatewayStack(Path(tmp))
        try:
            await stack.start()
            nc = await nats.connect(stack.nats.url)
            js = nc.jetstream()
            try:
                await wait_consumers(js)
                t0 = time.perf_counter()
                result: dict[str, Any] = {}
                ids, state, deals, long_ids = await seed(js, customers, timeline_customers, result)
                seeded = await wait_drained(js, READ_MODEL_DURABLES + EVENT_LOG_DURABLES)
                await fill_timelines(stack.url, long_ids, timeline_entries)
                result["seed_events"] = customers + timeline_customers + len(deals)
                result["seed_seconds"] = round(seeded - t0, 1)
                result["read_360_under_load"] = await bench_read_under_load(
                    stack,
                    js,
                    ids,
                    state,
                    deals,
                    rate=rate,
                    duration=duration,
                    deal_share=deal_share,
                )
                await wait_drained(js, EVENT_LOG_DURABLES)
                pages = await bench_timeline(stack, long_ids, deep_pages=30, duration=duration / 2)
                result["timeline_first_page"] = pages["first_page"]
                result["timeline_deep_page"] = pages["deep_page"]
                result["webhook_fanout"] = await bench_webhooks(
                    stack,
                    js,
                    subscriptions=webhook_subscriptions,
                    aggregates=webhook_events // 5,
                    per_aggregate=5,
                )
                dead = await stack.dead_letters()
                result["dead_letters"] = sum(dead.values())
                result["dead_letters_by_consumer"] = dead
                return result
            finally:
                await nc.close()
        finally:
            stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--webhook-events", type=int, default=600)
    args = parser.parse_args()
    result = asyncio.run(
        run(args.duration, args.rate, args.customers, webhook_events=args.webhook_events)
    )
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
