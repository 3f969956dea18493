"""`make load`: a reproducible mixed-traffic run against the whole local stack.

1. Starts the stack as `make run` does (embedded PostgreSQL, nats-server with
   `sync_interval: always`, migrations, every service of stack.toml and its helper
   processes), but on free ports and in a temporary data directory, so it runs beside a
   `make run` and leaves nothing behind. `LOAD_GATEWAY_URL=http://127.0.0.1:8000` uses a
   running stack instead (tokens from `CRM_DATA_DIR`, default `.data`).
2. Seeds a tenant through the public API with scripts/demo.py (companies, contacts, a sales
   org and pipeline with deals, support setup and tickets), then waits until every customer
   the scenario reads is in the 360 read model.
3. Starts a local webhook receiver (load/receiver.py) and subscribes it four times
   (contacts, pipeline, tickets, everything), so each write fans out to two deliveries.
4. Measures each process's idle CPU, then runs locust headless (load/locustfile.py) for
   LOAD_DURATION while a thread samples the memory and CPU of every process every
   LOAD_SAMPLE_SECONDS.
5. Waits for the webhook deliveries to drain and writes load/results/<UTC time>.json plus a
   printed summary: error rate, p99 per route, events lag p99 (event time -> the gateway's
   event log, and write -> visible in the 360 from the locust LAG samples), webhook
   deliveries, RSS per process at the end of warm-up and at the end (flagged above +10 %),
   CPU milliseconds per request per process, PostgreSQL WAL bytes and database growth per
   write (docs/capacity.md sizes from these).

Exit status 0 only when the run passed: no failed request, no lag sample timed out, every
webhook delivery arrived with a valid signature, no process grew more than 10 % after
warm-up. Settings (environment): see load/README.md.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil  # type: ignore[import-untyped]

from chassis import devkeys
from chassis.devstack import load_processes, load_stack
from chassis.infra import NatsProcess, Postgres, ensure_database, free_port
from chassis.migrations import upgrade_sync
from chassis.settings import with_database

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
PY = sys.executable
GROWTH_LIMIT = 0.10


def parse_duration(text: str) -> int:
    """`90`, `90s`, `10m`, `1h30m` -> seconds (the forms locust's `-t` accepts)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    parts = re.findall(r"(\d+)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"LOAD_DURATION: cannot read {text!r} (use 90s, 10m, 1h30m)")
    scale = {"h": 3600, "m": 60, "s": 1}
    return sum(int(n) * scale[u] for n, u in parts)


@dataclass(frozen=True)
class Options:
    duration_s: int = parse_duration(os.environ.get("LOAD_DURATION", "10m"))
    users: int = int(os.environ.get("LOAD_USERS", "16"))
    spawn_rate: float = float(os.environ.get("LOAD_SPAWN_RATE", "4"))
    rate_per_user: float = float(os.environ.get("LOAD_RATE_PER_USER", "8"))
    tenant: str = os.environ.get("LOAD_TENANT", "load")
    contacts: int = int(os.environ.get("LOAD_CONTACTS", "2000"))
    read_set: int = int(os.environ.get("LOAD_READ_SET", "1000"))
    lag_sample: int = int(os.environ.get("LOAD_LAG_SAMPLE", "10"))
    sample_seconds: float = float(os.environ.get("LOAD_SAMPLE_SECONDS", "5"))
    idle_seconds: float = float(os.environ.get("LOAD_IDLE_SECONDS", "15"))
    gateway_url: str | None = os.environ.get("LOAD_GATEWAY_URL")
    gateway_db: str | None = os.environ.get("LOAD_GATEWAY_DATABASE_URL")
    keep: bool = os.environ.get("LOAD_KEEP", "") == "1"

    @property
    def warmup_s(self) -> float:
        """Memory is compared from here on: caches, pools and the JIT-less interpreter's
        arenas fill during the first minutes."""
        return min(120.0, self.duration_s / 3)


def log(message: str) -> None:
    print(f"[load] {message}", flush=True)


# --- the stack ---------------------------------------------------------------------------


@dataclass
class Stack:
    """The local stack: ours (started here, free ports) or an already running one."""

    base: Path
    gateway_url: str = ""
    gateway_db: str | None = None
    jwt_dir: Path = Path()
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    pg: Postgres | None = None
    nats: NatsProcess | None = None

    def start(self) -> None:
        services = load_stack(ROOT / "stack.toml")
        self.jwt_dir = self.base / "jwt"
        devkeys.ensure_dev_keys(self.jwt_dir)
        self.pg = Postgres(self.base / "pg")
        server = self.pg.url()
        self.nats = NatsProcess(self.base / "nats")
        self.nats.start()
        for name, svc in services.items():
            db = f"crm_{name.replace('-', '_')}"
            asyncio.run(ensure_database(server, db))
            upgrade_sync(
                ROOT / svc["migrations"],
                with_database(server, db),
                f"alembic_version_{name.replace('-', '_')}",
            )
        self.gateway_db = with_database(server, "crm_gateway")
        ports = {name: free_port() for name in services}
        smtp_port = free_port()
        env = {
            **os.environ,
            "CRM_ENV": "dev",
            "CRM_DATABASE_URL": server,
            "CRM_NATS_URL": self.nats.url,
            "CRM_JWKS_FILE": str(self.jwt_dir / "jwks.json"),
            "CRM_LOG_LEVEL": "WARNING",
            "CAMPAIGNS_SMTP_PORT": str(smtp_port),
            "GATEWAY_UPSTREAMS": json.dumps(
                {n: f"http://127.0.0.1:{p}" for n, p in ports.items() if n != "gateway"}
            ),
        }
        (self.base / "logs").mkdir(parents=True, exist_ok=True)
        for name, svc in services.items():
            self._spawn(
                name,
                [
                    *(PY, "-m", "uvicorn", "--factory", svc["app"], "--host", "127.0.0.1"),
                    *("--port", str(ports[name]), "--no-access-log", "--log-level", "warning"),
                ],
                env,
            )
        for name, proc in load_processes(ROOT / "stack.toml").items():
            command = proc["command"].format(python=PY, data=self.base)
            # helper processes listen on fixed local ports in `make run`: move them aside
            command = re.sub(r"--port \d+", f"--port {smtp_port}", command)
            self._spawn(name, command.split(), env)
        for name, port in ports.items():
            wait_http(f"http://127.0.0.1:{port}/readyz", f"{name} /readyz")
        self.gateway_url = f"http://127.0.0.1:{ports['gateway']}"

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        out = open(self.base / "logs" / f"{name}.log", "wb")  # noqa: SIM115 - the child's
        self.procs[name] = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=out)

    def processes(self) -> dict[str, list[psutil.Process]]:
        """Name -> the processes whose memory is sampled under that name."""
        found = {name: [psutil.Process(p.pid)] for name, p in self.procs.items()}
        if self.nats is not None and self.nats.proc is not None:
            found["nats"] = [psutil.Process(self.nats.proc.pid)]
        if self.pg is not None:
            pid = int((self.base / "pg" / "postmaster.pid").read_text().split()[0])
            found["postgres"] = [psutil.Process(pid)]
        return found

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.nats is not None:
            self.nats.stop()
        if self.pg is not None:
            self.pg.stop()


def running_stack(options: Options) -> Stack:
    """A stack started elsewhere (`make run`): its processes found by their listening ports."""
    data = Path(os.environ.get("CRM_DATA_DIR", ROOT / ".data"))
    stack = Stack(base=data, gateway_url=str(options.gateway_url), gateway_db=options.gateway_db)
    stack.jwt_dir = data / "jwt"
    return stack


def discover(stack: Stack) -> dict[str, list[psutil.Process]]:
    if stack.procs or stack.pg is not None:
        return stack.processes()
    wanted = {int(s["port"]): n for n, s in load_stack(ROOT / "stack.toml").items()}
    wanted[4222] = "nats"
    found: dict[str, list[psutil.Process]] = {}
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.pid:
            name = wanted.get(conn.laddr.port)
            if name:
                found[name] = [psutil.Process(conn.pid)]
    for proc in psutil.process_iter(["name", "ppid"]):
        if proc.info["name"] == "postgres":
            parent = psutil.Process(proc.info["ppid"]) if proc.info["ppid"] else None
            if parent is None or parent.name() != "postgres":
                found.setdefault("postgres", []).append(proc)
    return found


def wait_http(url: str, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - local URL
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s ({url})")


# --- memory --------------------------------------------------------------------------------


def memory_mb(procs: list[psutil.Process]) -> float:
    """One process: its RSS. PostgreSQL (postmaster + backends, which share their buffers):
    the sum of the proportional set sizes, so shared memory is counted once."""
    total = 0.0
    for root in procs:
        tree = [root, *root.children(recursive=True)]
        if len(tree) == 1:
            total += root.memory_info().rss
            continue
        for p in tree:
            try:
                total += p.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
    return round(total / 2**20, 1)


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User + system CPU of the processes, their live children and their reaped children
    (PostgreSQL backends that ended are in the postmaster's children times)."""
    total = 0.0
    for root in procs:
        t = root.cpu_times()
        total += t.user + t.system + t.children_user + t.children_system
        for child in root.children(recursive=True):
            try:
                c = child.cpu_times()
                total += c.user + c.system
            except psutil.NoSuchProcess:
                continue
    return total


class Sampler(threading.Thread):
    """Samples every process's memory until stopped: [(seconds since start, {name: MB})],
    and its CPU seconds at the first and the last sample (CPU per request is what sizes the
    platform; wall-clock rates on a shared machine are not)."""

    def __init__(self, procs: dict[str, list[psutil.Process]], every: float) -> None:
        super().__init__(daemon=True)
        self.procs, self.every = procs, every
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.cpu_first: dict[str, float] = {}
        self.cpu_last: dict[str, float] = {}
        self.halt = threading.Event()
        self.started_at = time.monotonic()

    def _sample(self) -> None:
        sample: dict[str, float] = {}
        for name, procs in self.procs.items():
            try:
                sample[name] = memory_mb(procs)
                self.cpu_last[name] = cpu_seconds(procs)
                self.cpu_first.setdefault(name, self.cpu_last[name])
            except psutil.NoSuchProcess:
                sample[name] = 0.0
        self.samples.append((round(time.monotonic() - self.started_at, 1), sample))

    def run(self) -> None:
        while not self.halt.is_set():
            self._sample()
            self.halt.wait(self.every)
        self._sample()

    def cpu_report(self, requests: int, idle_per_s: dict[str, float]) -> dict[str, Any]:
        """CPU seconds per process over the run, and CPU milliseconds per HTTP request once
        what the process burns when idle (pollers, timers) is taken off."""
        window = self.samples[-1][0] - self.samples[0][0]
        used = {n: self.cpu_last[n] - self.cpu_first[n] for n in self.cpu_last}
        net = {n: max(0.0, v - idle_per_s.get(n, 0.0) * window) for n, v in used.items()}

        def per_request(values: dict[str, float]) -> dict[str, float | None]:
            return {
                n: round(1000 * v / requests, 2) if requests else None
                for n, v in sorted(values.items())
            }

        return {
            "window_s": window,
            "seconds": {n: round(v, 1) for n, v in sorted(used.items())},
            "idle_cores": {n: round(v, 3) for n, v in sorted(idle_per_s.items())},
            "ms_per_request": per_request(used),
            "net_ms_per_request": per_request(net),
            "total_seconds": round(sum(used.values()), 1),
            "total_ms_per_request": round(1000 * sum(used.values()) / requests, 2)
            if requests
            else None,
            "total_net_ms_per_request": round(1000 * sum(net.values()) / requests, 2)
            if requests
            else None,
        }


def idle_cpu(procs: dict[str, list[psutil.Process]], seconds: float) -> dict[str, float]:
    """CPU cores each process uses with no traffic (relay and scheduler polling, consumers'
    fetches), measured over `seconds` before the run."""
    before = {n: cpu_seconds(p) for n, p in procs.items()}
    time.sleep(seconds)
    return {n: (cpu_seconds(p) - before[n]) / seconds for n, p in procs.items()}


def memory_report(samples: list[tuple[float, dict[str, float]]], warmup_s: float) -> dict[str, Any]:
    warm = next((s for t, s in samples if t >= warmup_s), samples[-1][1])
    end = samples[-1][1]
    report = {}
    for name in sorted(end):
        before, after = warm.get(name, 0.0), end[name]
        growth = (after - before) / before if before else 0.0
        report[name] = {
            "warmup_mb": before,
            "end_mb": after,
            "max_mb": max(s.get(name, 0.0) for _, s in samples),
            "growth_pct": round(100 * growth, 1),
            "flag": growth > GROWTH_LIMIT,
        }
    return report


# --- seeding and webhooks ----------------------------------------------------------------


def seed(stack: Stack, options: Options) -> None:
    env = {
        **os.environ,
        "CRM_GATEWAY_URL": stack.gateway_url,
        "CRM_DATA_DIR": str(stack.jwt_dir.parent),
        "DEMO_TENANT": options.tenant,
        "DEMO_CONTACTS": str(options.contacts),
        "DEMO_COMPANIES": str(max(10, options.contacts // 10)),
    }
    done = subprocess.run(
        [PY, str(ROOT / "scripts" / "demo.py")], env=env, cwd=ROOT, capture_output=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"seeding failed: {done.stderr.decode()[-2000:]}")
    log(done.stderr.decode().strip().splitlines()[-1])


def pages(client: httpx.Client, path: str, want: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(items) < want:
        params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        r = client.get(path, params=params)
        r.raise_for_status()
        items += r.json()["items"]
        cursor = r.json().get("next_cursor")
        if not cursor:
            break
    return items


async def wait_visible(gateway: str, token: str, ids: list[str], timeout: float = 300) -> None:
    """Every customer the scenario reads must be in the read model before the clock starts
    (a 404 there would be a seeding artefact, not an error of the platform)."""
    sem = asyncio.Semaphore(16)
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=gateway, headers=headers, timeout=30) as client:

        async def one(contact_id: str) -> None:
            async with sem:
                while (await client.get(f"/v1/customers/{contact_id}/360")).status_code != 200:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"customer {contact_id} not in the 360 read model")
                    await asyncio.sleep(0.5)

        await asyncio.gather(*(one(i) for i in ids))


SUBSCRIPTIONS = {
    "contacts": ["crm.contacts.*"],
    "pipeline": ["crm.pipeline.*"],
    "tickets": ["crm.tickets.*"],
    "everything": ["*"],
}


def subscribe(client: httpx.Client, receiver: str) -> dict[str, str]:
    """One subscription per entry of SUBSCRIPTIONS; their secrets go to the receiver."""
    ids, secrets = {}, {}
    for name, patterns in SUBSCRIPTIONS.items():
        r = client.post(
            "/v1/webhooks",
            json={
                "url": f"{receiver}/hooks/{name}",
                "event_types": patterns,
                "description": f"load test: {name}",
                "active": True,
            },
        )
        r.raise_for_status()
        ids[name], secrets[name] = r.json()["id"], r.json()["secret"]
    httpx.post(f"{receiver}/secrets", json=secrets).raise_for_status()
    return ids


def drain_webhooks(client: httpx.Client, ids: dict[str, str], timeout: float = 180) -> int:
    """Seconds-bounded wait until no subscription has a pending delivery; returns how many
    were still pending (0 when drained)."""
    deadline = time.monotonic() + timeout
    pending = -1
    while time.monotonic() < deadline:
        pending = 0
        for sub in ids.values():
            r = client.get(f"/v1/webhooks/{sub}/deliveries", params={"status": "pending"})
            r.raise_for_status()
            pending += len(r.json()["items"])
        if pending == 0:
            return 0
        time.sleep(1)
    return pending


# --- results ---------------------------------------------------------------------------------


def read_locust_csv(prefix: Path) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    rows = []
    with open(f"{prefix}_stats.csv", newline="") as f:
        for row in csv.DictReader(f):

            def num(key: str, r: dict[str, str] = row) -> float:
                value = r.get(key) or "0"
                return float(value) if value != "N/A" else 0.0

            rows.append(
                {
                    "type": row["Type"],
                    "name": row["Name"],
                    "count": int(num("Request Count")),
                    "failures": int(num("Failure Count")),
                    "rps": round(num("Requests/s"), 1),
                    "p50_ms": num("50%"),
                    "p95_ms": num("95%"),
                    "p99_ms": num("99%"),
                    "max_ms": round(num("Max Response Time"), 1),
                }
            )
    with open(f"{prefix}_failures.csv", newline="") as f:
        failures = list(csv.DictReader(f))
    return rows, failures


async def wal_and_sizes(db: str) -> dict[str, Any]:
    """The server's WAL position and every CRM database's size: taken before and after the
    run, the difference is the write volume (replication, backups and disks size from it)."""
    conn = await asyncpg.connect(db)
    try:
        lsn = await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        sizes = await conn.fetch(
            "SELECT datname, pg_database_size(datname) AS bytes FROM pg_database "
            "WHERE datname LIKE 'crm_%'"
        )
    finally:
        await conn.close()
    return {"wal_bytes": int(lsn), "db_bytes": {r["datname"]: r["bytes"] for r in sizes}}


def volume_report(
    before: dict[str, Any], after: dict[str, Any], requests: int, writes: int, events: int
) -> dict[str, Any]:
    wal = after["wal_bytes"] - before["wal_bytes"]
    growth = {
        name: after["db_bytes"][name] - before["db_bytes"].get(name, 0)
        for name in sorted(after["db_bytes"])
    }
    return {
        "wal_bytes": wal,
        "wal_bytes_per_write": round(wal / writes) if writes else None,
        "wal_bytes_per_event": round(wal / events) if events else None,
        "wal_bytes_per_request": round(wal / requests) if requests else None,
        "db_growth_bytes": growth,
        "db_growth_bytes_per_write": {
            n: round(g / writes) if writes else None for n, g in growth.items()
        },
    }


async def event_log_lag(db: str, tenant: str, since: datetime, until: datetime) -> dict[str, Any]:
    """Event time (the write, in the producing service) -> the row in the gateway's event log
    (the consumer's transaction), for every event of the run."""
    conn = await asyncpg.connect(db)
    try:
        row = await conn.fetchrow(
            """
            SELECT count(*) AS events,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99,
                   max(ms) AS max
            FROM (SELECT extract(epoch FROM logged_at - time) * 1000 AS ms
                  FROM event_log WHERE tenant_id = $1 AND time >= $2 AND time < $3) AS lag
            """,
            tenant,
            since,
            until,
        )
        statuses = await conn.fetch(
            "SELECT status, count(*) AS n FROM webhook_deliveries WHERE tenant_id = $1 "
            "GROUP BY status",
            tenant,
        )
    finally:
        await conn.close()
    seconds = (until - since).total_seconds()
    return {
        "events": row["events"],
        "events_per_s": round(row["events"] / seconds, 1) if seconds else None,
        "p50_ms": round(float(row["p50"] or 0), 1),
        "p99_ms": round(float(row["p99"] or 0), 1),
        "max_ms": round(float(row["max"] or 0), 1),
        "webhook_deliveries": {r["status"]: r["n"] for r in statuses},
    }


def summarize(report: dict[str, Any]) -> str:
    lines = [
        f"load run {report['started_at']}: {report['duration_s']} s, {report['users']} users, "
        f"{report['requests']['total']} requests ({report['requests']['rps']} req/s), "
        f"error rate {report['requests']['error_rate']:.4%}",
        f"{'route':<42}{'count':>8}{'fail':>6}{'req/s':>8}{'p50':>7}{'p99':>7}{'max':>8}",
    ]
    for r in report["routes"]:
        lines.append(
            f"{r['type'] + ' ' + r['name']:<42.42}{r['count']:>8}{r['failures']:>6}"
            f"{r['rps']:>8}{r['p50_ms']:>7.0f}{r['p99_ms']:>7.0f}{r['max_ms']:>8.0f}"
        )
    lag = report["events_lag"]
    if lag.get("event_log"):
        e = lag["event_log"]
        lines.append(
            f"events lag (event time -> gateway event log): {e['events']} events "
            f"({e['events_per_s']}/s), p50 {e['p50_ms']} ms, p99 {e['p99_ms']} ms"
        )
    for name, v in lag["visible_360"].items():
        lines.append(f"{name}: {v['count']} samples, p50 {v['p50_ms']} ms, p99 {v['p99_ms']} ms")
    w = report["webhooks"]
    lines.append(
        f"webhooks: {w['receiver']['unique']} unique deliveries received "
        f"({w['receiver']['received']} with retries), bad signatures "
        f"{w['receiver']['bad_signature']}, pending after drain {w['pending_after_drain']}, "
        f"event -> receiver p50 {w['receiver']['lag_ms']['p50']} ms, "
        f"p99 {w['receiver']['lag_ms']['p99']} ms"
    )
    lines.append(f"memory (MB, warm-up at {report['warmup_s']:.0f} s -> end):")
    for name, m in report["memory"].items():
        flag = "  GROWTH > 10%" if m["flag"] else ""
        lines.append(
            f"  {name:<12}{m['warmup_mb']:>8} -> {m['end_mb']:>8}  ({m['growth_pct']:+}%){flag}"
        )
    cpu = report.get("cpu")
    if cpu:
        per = ", ".join(f"{n} {v}" for n, v in cpu["net_ms_per_request"].items() if v)
        lines.append(
            f"CPU: {cpu['total_seconds']} s in all, {cpu['total_ms_per_request']} ms per request; "
            f"without idle use {cpu['total_net_ms_per_request']} ms ({per})"
        )
    volume = report.get("volume")
    if volume:
        lines.append(
            f"PostgreSQL WAL: {volume['wal_bytes'] / 2**20:.1f} MB, "
            f"{volume['wal_bytes_per_write']} bytes per write, "
            f"{volume['wal_bytes_per_event']} per event"
        )
    lines.append(f"verdict: {'PASS' if report['passed'] else 'FAIL'} {report['checks']}")
    return "\n".join(lines)


def build_report(
    options: Options,
    started_at: datetime,
    rows: list[dict[str, Any]],
    failures: list[dict[str, str]],
    memory: dict[str, Any],
    event_log: dict[str, Any] | None,
    webhooks: dict[str, Any],
) -> dict[str, Any]:
    http = [r for r in rows if r["name"] != "Aggregated" and r["type"] != "LAG"]
    lags = [r for r in rows if r["type"] == "LAG"]
    total = sum(r["count"] for r in http)
    writes = sum(r["count"] for r in http if r["type"] in ("POST", "PATCH", "PUT", "DELETE"))
    failed = sum(r["failures"] for r in http)
    delivered = event_log["webhook_deliveries"].get("delivered", 0) if event_log else None
    checks = {
        "errors_zero": failed == 0,
        "lag_samples_in_time": all(r["failures"] == 0 for r in lags),
        "webhooks_delivered": webhooks["pending_after_drain"] == 0
        and webhooks["receiver"]["bad_signature"] == 0
        and delivered in (None, webhooks["receiver"]["unique"]),
        "memory_growth_within_10pct": not any(m["flag"] for m in memory.values()),
    }
    return {
        "started_at": started_at.isoformat(),
        "duration_s": options.duration_s,
        "warmup_s": options.warmup_s,
        "users": options.users,
        "rate_per_user": options.rate_per_user,
        "tenant": options.tenant,
        "seeded_contacts": options.contacts,
        "requests": {
            "total": total,
            "writes": writes,
            "failures": failed,
            "error_rate": failed / total if total else 0.0,
            "rps": round(sum(r["rps"] for r in http), 1),
        },
        "routes": http + lags,
        "failures": failures,
        "events_lag": {
            "event_log": event_log,
            "visible_360": {r["name"]: r for r in lags},
        },
        "webhooks": webhooks,
        "memory": memory,
        "checks": checks,
        "passed": all(checks.values()),
        "machine": {"cpus": os.cpu_count(), "load_avg_end": os.getloadavg()},
    }


# --- the run ---------------------------------------------------------------------------------


def run_locust(stack: Stack, options: Options, config: Path, prefix: Path) -> None:
    argv = [PY, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless"]
    argv += ["-u", str(options.users), "-r", str(options.spawn_rate)]
    argv += ["-t", f"{options.duration_s}s", "--host", stack.gateway_url, "--csv", str(prefix)]
    argv += ["--only-summary", "--stop-timeout", "5", "--exit-code-on-error", "0"]
    env = {**os.environ, "LOAD_CONFIG": str(config)}
    with open(prefix.parent / "locust.log", "wb") as out:
        done = subprocess.run(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"locust exited {done.returncode}: see {prefix.parent}/locust.log")


def scenario_config(stack: Stack, options: Options, client: httpx.Client) -> dict[str, Any]:
    contacts = [c["id"] for c in pages(client, "/v1/contacts", options.read_set)]
    contacts = contacts[: options.read_set]
    deals = [d["id"] for d in pages(client, "/v1/deals", 1000) if d["status"] == "open"]
    tickets = [
        t["id"]
        for t in pages(client, "/v1/tickets", 1000)
        if t["status"] not in ("solved", "closed")
    ]
    pipeline = next(p for p in pages(client, "/v1/pipelines", 200) if p["name"] == "New business")
    stages = [s["id"] for s in pipeline["stages"] if not s["is_won"] and not s["is_lost"]]
    tokens = [
        devkeys.mint_token(stack.jwt_dir, tenant=options.tenant, roles=["admin"], sub=f"load-{i}")
        for i in range(options.users)
    ]
    return {
        "gateway": stack.gateway_url,
        "users": options.users,
        "rate_per_user": options.rate_per_user,
        "lag_sample": options.lag_sample,
        "tokens": tokens,
        "contacts": contacts,
        "deals": deals,
        "tickets": tickets,
        "pipeline_id": pipeline["id"],
        "open_stage_ids": stages,
    }


def start_receiver(base: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    out = open(base / "receiver.log", "wb")  # noqa: SIM115 - the child's
    proc = subprocess.Popen(
        [PY, str(HERE / "receiver.py"), "--port", str(port)], stdout=out, stderr=out
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/stats", "webhook receiver", timeout=30)
    return proc, url


def main() -> int:
    options = Options()
    base = Path(tempfile.mkdtemp(prefix="crm-load-"))
    stack = running_stack(options) if options.gateway_url else Stack(base=base)
    receiver: subprocess.Popen[bytes] | None = None
    try:
        if not options.gateway_url:
            log(f"starting the stack in {base}")
            stack.start()
        log(f"gateway {stack.gateway_url}; seeding tenant '{options.tenant}'")
        seed(stack, options)
        admin = devkeys.mint_token(
            stack.jwt_dir, tenant=options.tenant, roles=["admin"], sub="load-admin"
        )
        client = httpx.Client(
            base_url=stack.gateway_url, headers={"Authorization": f"Bearer {admin}"}, timeout=60
        )
        config = scenario_config(stack, options, client)
        asyncio.run(wait_visible(stack.gateway_url, admin, config["contacts"]))
        receiver, receiver_url = start_receiver(base)
        subscriptions = subscribe(client, receiver_url)
        config_path = base / "config.json"
        config_path.write_text(json.dumps(config))
        procs = discover(stack)
        procs["receiver"] = [psutil.Process(receiver.pid)]
        log(
            f"{len(config['contacts'])} customers, {len(config['deals'])} open deals, "
            f"{len(config['tickets'])} tickets; locust: {options.users} users x "
            f"{options.rate_per_user} req/s for {options.duration_s} s; "
            f"sampling {', '.join(sorted(procs))}"
        )
        idle = idle_cpu(procs, options.idle_seconds)
        sampler = Sampler(procs, options.sample_seconds)
        volume_before = asyncio.run(wal_and_sizes(stack.gateway_db)) if stack.gateway_db else None
        started_at = datetime.now(UTC)
        sampler.start()
        run_locust(stack, options, config_path, base / "locust")
        sampler.halt.set()
        sampler.join()
        ended_at = datetime.now(UTC)
        log("locust done; waiting for the webhook deliveries to drain")
        pending = drain_webhooks(client, subscriptions)
        received = httpx.get(f"{receiver_url}/stats").json()
        event_log = (
            asyncio.run(event_log_lag(stack.gateway_db, options.tenant, started_at, ended_at))
            if stack.gateway_db
            else None
        )
        rows, failures = read_locust_csv(base / "locust")
        report = build_report(
            options,
            started_at,
            rows,
            failures,
            memory_report(sampler.samples, options.warmup_s),
            event_log,
            {"subscriptions": SUBSCRIPTIONS, "pending_after_drain": pending, "receiver": received},
        )
        report["cpu"] = sampler.cpu_report(report["requests"]["total"], idle)
        if volume_before is not None and stack.gateway_db:
            report["volume"] = volume_report(
                volume_before,
                asyncio.run(wal_and_sizes(stack.gateway_db)),
                report["requests"]["total"],
                report["requests"]["writes"],
                event_log["events"] if event_log else 0,
            )
        report["memory_samples"] = sampler.samples
        results = HERE / "results"
        results.mkdir(exist_ok=True)
        out = results / f"{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
        out.write_text(json.dumps(report, indent=2, default=str))
        print(summarize(report), flush=True)
        log(f"report: {out.relative_to(ROOT)}")
        return 0 if report["passed"] else 1
    finally:
        if receiver is not None:
            receiver.terminate()
            receiver.wait(10)
        if not options.gateway_url:
            stack.stop()
        if options.keep:
            log(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
