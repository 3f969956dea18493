"""`make bench`: the performance budget of ARCHITECTURE.md section 7, each figure as a ratio
to a baseline measured in the same run on the same machine.

Starts its own embedded PostgreSQL and nats-server (temporary data), the contacts service,
the gateway and the baseline app (FastAPI + raw asyncpg) as uvicorn processes, then drives
them with bench/loadgen.py. Results go to stdout and bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from loadgen import build_request, read_response, run_closed_loop, run_open_loop

from chassis import devkeys
from chassis.infra import NatsProcess, Postgres, ensure_database, free_port
from chassis.migrations import upgrade
from chassis.settings import with_database

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


class Stack:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}

    async def start(self) -> None:
        self.pg = Postgres(self.base / "pg")
        self.nats = NatsProcess(self.base / "nats")
        self.nats.start()
        self.jwt = self.base / "jwt"
        devkeys.ensure_dev_keys(self.jwt)
        server = self.pg.url()
        self.urls = {}
        for name, mig in (
            ("contacts", "services/contacts/migrations"),
            ("gateway", "gateway/migrations"),
        ):
            db = f"crm_{name}"
            await ensure_database(server, db)
            self.urls[name] = with_database(server, db)
            await upgrade(ROOT / mig, self.urls[name], f"alembic_version_{name}")
        await ensure_database(server, "bench_baseline")
        self.urls["baseline"] = with_database(server, "bench_baseline")
        self.ports = {"contacts": free_port(), "gateway": free_port(), "baseline": free_port()}
        env = {
            **os.environ,
            "CRM_ENV": "dev",
            "CRM_DATABASE_URL": server,
            "CRM_NATS_URL": self.nats.url,
            "CRM_JWKS_FILE": str(self.jwt / "jwks.json"),
            "CRM_LOG_LEVEL": "WARNING",
            "GATEWAY_RATE_LIMIT_PER_SECOND": "0",
            "GATEWAY_TOKEN_RATE_LIMIT_PER_SECOND": "0",
            "GATEWAY_UPSTREAMS": json.dumps(
                {"contacts": f"http://127.0.0.1:{self.ports['contacts']}"}
            ),
            "BASELINE_DSN": self.urls["baseline"],
        }
        apps = {
            "contacts": "contacts.app:create",
            "gateway": "gateway.app:create",
            "baseline": "baseline_app:app",
        }
        for name, target in apps.items():
            factory = ["--factory"] if name != "baseline" else []
            log = open(self.base / f"{name}.log", "wb")  # noqa: SIM115
            self.procs[name] = subprocess.Popen(
                [
                    PY,
                    "-m",
                    "uvicorn",
                    *factory,
                    target,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.ports[name]),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                env=env,
                cwd=str(Path(__file__).parent),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        for name in apps:
            path = "/readyz" if name != "baseline" else "/docs"
            self._wait_http(self.ports[name], path)

    @staticmethod
    def _wait_http(port: int, path: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"port {port}{path} not ready")

    def rss_mb(self, name: str) -> float:
        return psutil.Process(self.procs[name].pid).memory_info().rss / 2**20

    def stop(self) -> None:
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.nats.stop()
        self.pg.stop()


def auth(stack: Stack, tenant: str = "acme") -> dict[str, str]:
    token = devkeys.mint_token(stack.jwt, tenant=tenant, roles=["admin"], sub="bench")
    return {"Authorization": f"Bearer {token}"}


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


async def wait_rm(stack: Stack, tenant: str, n: int, timeout: float = 600) -> float:
    """Wait until the read model holds `n` documents of `tenant`; returns the time it did.

    The count scans the tenant's documents, so it is itself load on the machine under test:
    one connection, and the pause between counts scales with what is still missing at the
    rate seen so far (long while far off, 20 ms when close), instead of a count every 50 ms.
    """
    start = time.perf_counter()
    conn = await asyncpg.connect(stack.urls["gateway"])
    try:
        first: int | None = None
        while True:
            have: int = await conn.fetchval(
                "SELECT count(*) FROM customer_360 WHERE tenant_id = $1", tenant
            )
            now = time.perf_counter()
            if have >= n:
                return now
            if now - start > timeout:
                raise RuntimeError(f"read model did not reach {n} for {tenant}")
            first = have if first is None else first
            rate = (have - first) / (now - start) if have > first else 0.0
            pause = (n - have) / rate / 4 if rate else 0.05
            await asyncio.sleep(min(1.0, max(0.02, pause)))
    finally:
        await conn.close()


def contact_item(i: int, prefix: str) -> dict[str, Any]:
    return {
        "first_name": f"First{i}",
        "last_name": f"Last{i}",
        "email": f"{prefix}{i}@example.com",
        "external_ids": {"erp": f"{prefix}-{i}"},
        "tags": ["bench"],
        "lifecycle_stage": "lead",
    }


async def bench_read(stack: Stack, duration: float) -> dict[str, Any]:
    h = auth(stack)
    ids: list[str] = []
    for b in range(2):
        status, body = await http(
            stack.ports["gateway"],
            "POST",
            "/v1/contacts/batch",
            h,
            {"items": [contact_item(b * 1000 + i, "read") for i in range(1000)]},
        )
        assert status == 200, (status, body)
        ids += [r["id"] for r in body["items"] if r.get("id")]
    await wait_rm(stack, "acme", len(ids))
    gw = await asyncpg.connect(stack.urls["gateway"])
    docs = await gw.fetch(
        "SELECT contact_id, doc::text AS doc FROM customer_360 WHERE tenant_id = 'acme'"
    )
    await gw.close()
    base = await asyncpg.connect(stack.urls["baseline"])
    await base.executemany(
        "INSERT INTO bench_docs (id, doc) VALUES ($1, $2::jsonb) ON CONFLICT DO NOTHING",
        [(uuid.UUID(str(r["contact_id"])), r["doc"]) for r in docs],
    )
    await base.close()
    hdr = h
    gw_req = [build_request("GET", f"/v1/customers/{i}/360", hdr) for i in ids]
    bl_req = [build_request("GET", f"/doc/{i}", {}) for i in ids]
    n = len(ids)
    out = {}
    for name, port, reqs in (
        ("baseline", stack.ports["baseline"], bl_req),
        ("gateway", stack.ports["gateway"], gw_req),
    ):
        await run_closed_loop(port, lambda i, r=reqs: r[i % n], concurrency=32, duration=2)
        res = await run_closed_loop(
            port, lambda i, r=reqs: r[i % n], concurrency=32, duration=duration
        )
        out[name] = res
    b, g = out["baseline"], out["gateway"]
    return {
        "baseline_rps": b.rps,
        "gateway_rps": g.rps,
        "ratio": g.rps / b.rps,
        "baseline_p99_ms": b.p99 * 1e3,
        "gateway_p99_ms": g.p99 * 1e3,
        "p99_ratio": g.p99 / b.p99,
        "gateway_statuses": g.statuses,
    }


async def bench_create(stack: Stack, duration: float) -> dict[str, Any]:
    h = {**auth(stack), "Content-Type": "application/json"}
    run_id = uuid.uuid4().hex[:6]

    def gw(i: int) -> bytes:
        body = json.dumps(
            {"first_name": "Ada", "last_name": f"L{i}", "email": f"c{run_id}{i}@example.com"}
        ).encode()
        return build_request("POST", "/v1/contacts", h, body)

    def bl(i: int) -> bytes:
        body = json.dumps(
            {"first_name": "Ada", "last_name": f"L{i}", "email": f"b{run_id}{i}@example.com"}
        ).encode()
        return build_request("POST", "/contacts", {"Content-Type": "application/json"}, body)

    out = {}
    for name, port, make in (
        ("baseline", stack.ports["baseline"], bl),
        ("gateway", stack.ports["gateway"], gw),
    ):
        out[name] = await run_closed_loop(port, make, concurrency=16, duration=duration)
    b, g = out["baseline"], out["gateway"]
    return {
        "baseline_rps": b.rps,
        "gateway_rps": g.rps,
        "ratio": g.rps / b.rps,
        "gateway_p99_ms": g.p99 * 1e3,
        "gateway_statuses": g.statuses,
    }


WARM_UP_SECONDS = 3


async def bench_lag(stack: Stack, rate: float, duration: float) -> dict[str, Any]:
    tenant = "lag"
    h = {**auth(stack, tenant), "Content-Type": "application/json"}

    def make(i: int, prefix: str = "lag") -> bytes:
        body = json.dumps(
            {"first_name": "Lag", "last_name": f"L{i}", "email": f"{prefix}{i}@example.com"}
        ).encode()
        return build_request("POST", "/v1/contacts", h, body)

    # Warm up at the same rate first, as the other scenarios do, and leave those writes out:
    # the first writes into a fresh stack pay one-time costs (statements prepared on each
    # pooled connection of contacts, the relay and the consumers; the relay's first publish;
    # per-tenant caches). At 50 writes/s those first ~10 writes took 40-110 ms against a
    # p50 of 10 ms, which alone set the p99 of a 1,000-write run.
    warm = await run_open_loop(
        stack.ports["gateway"], lambda i: make(i, "warm"), rate=rate, duration=WARM_UP_SECONDS
    )
    res = await run_open_loop(stack.ports["gateway"], make, rate=rate, duration=duration)
    created = res.statuses.get(201, 0)
    await wait_rm(stack, tenant, created + warm.statuses.get(201, 0), timeout=120)
    c = await asyncpg.connect(stack.urls["contacts"])
    made = {
        str(r["id"]): r["created_at"]
        for r in await c.fetch(
            "SELECT id, created_at FROM contacts WHERE tenant_id = $1 AND email LIKE 'lag%'",
            tenant,
        )
    }
    await c.close()
    g = await asyncpg.connect(stack.urls["gateway"])
    seen = {
        str(r["contact_id"]): r["updated_at"]
        for r in await g.fetch(
            "SELECT contact_id, updated_at FROM customer_360 WHERE tenant_id = $1", tenant
        )
    }
    await g.close()
    lags = sorted((seen[k] - made[k]).total_seconds() for k in made if k in seen)
    p = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))] * 1e3  # noqa: E731
    return {
        "rate": rate,
        "writes": created,
        "warm_up_writes": warm.statuses.get(201, 0),
        "achieved_rate": created / res.elapsed,
        "lag_p50_ms": p(0.5),
        "lag_p99_ms": p(0.99),
        "write_p99_ms": res.p99 * 1e3,
    }


async def bench_batch(stack: Stack, total: int) -> dict[str, Any]:
    tenant = "bulk"
    h = auth(stack, tenant)
    batches = [
        [contact_item(b * 1000 + i, "bulk") for i in range(1000)] for b in range(total // 1000)
    ]
    queue = list(range(len(batches)))
    start = time.perf_counter()

    async def worker() -> None:
        while queue:
            b = queue.pop()
            status, body = await http(
                stack.ports["gateway"], "POST", "/v1/contacts/batch", h, {"items": batches[b]}
            )
            assert status == 200, (status, str(body)[:300])

    await asyncio.gather(*(worker() for _ in range(2)))
    api_done = time.perf_counter()
    end = await wait_rm(stack, tenant, total)
    rows_s = total / (end - start)
    # baseline: raw executemany upsert of the same rows
    conn = await asyncpg.connect(stack.urls["baseline"])
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS bench_upsert (tenant_id text, ext text, "
        "email text, first_name text, last_name text, data jsonb, "
        "PRIMARY KEY (tenant_id, ext))"
    )
    t0 = time.perf_counter()
    for batch in batches:
        await conn.executemany(
            "INSERT INTO bench_upsert VALUES ('bulk', $1, $2, $3, $4, $5) "
            "ON CONFLICT (tenant_id, ext) DO UPDATE SET email = EXCLUDED.email, "
            "data = EXCLUDED.data",
            [
                (
                    it["external_ids"]["erp"],
                    it["email"],
                    it["first_name"],
                    it["last_name"],
                    json.dumps(it),
                )
                for it in batch
            ],
        )
    base_rows_s = total / (time.perf_counter() - t0)
    await conn.close()
    return {
        "rows": total,
        "api_seconds": api_done - start,
        "until_read_model_seconds": end - start,
        "rows_per_s": rows_s,
        "baseline_rows_per_s": base_rows_s,
        "ratio": rows_s / base_rows_s,
    }


# Scenario name -> module (in bench/) with `async def run() -> dict`.
SERVICE_BENCHES = {
    "pipeline": "pipeline_bench",
    "tickets": "tickets_bench",
    "commissions": "commissions_bench",
    "campaigns": "campaigns_bench",
    "gateway": "gateway_bench",
}
# The scenarios that need the shared stack above (the others start their own).
STACK_SCENARIOS = ("read", "create", "lag", "batch")


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The scalar figures of a service bench (nested details stay in latest.json)."""
    out: dict[str, Any] = {}
    for key, value in result.items():
        if isinstance(value, dict):
            out.update(
                {f"{key}.{k}": v for k, v in value.items() if not isinstance(v, dict | list)}
            )
        elif not isinstance(value, list):
            out[key] = value
    return out


def verdict(ok: bool) -> str:
    return "meets goal" if ok else "MISSES goal"


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--batch-rows", type=int, default=100_000)
    parser.add_argument("--lag-rate", type=float, default=300)
    parser.add_argument(
        "--only",
        default="read,create,lag,batch," + ",".join(SERVICE_BENCHES),
        help="comma-separated scenarios to run",
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    results: dict[str, Any] = {}
    memory: dict[str, float] = {}
    if only & set(STACK_SCENARIOS):
        with tempfile.TemporaryDirectory(prefix="crm-bench-") as tmp:
            stack = Stack(Path(tmp))
            await stack.start()
            try:
                await asyncio.sleep(2)
                memory = {n: stack.rss_mb(n) for n in ("contacts", "gateway")}
                results["idle_rss_mb"] = memory
                if "read" in only:
                    results["read_360"] = await bench_read(stack, args.duration)
                if "create" in only:
                    results["create_contact"] = await bench_create(stack, args.duration)
                if "lag" in only:
                    results["write_to_360_lag"] = await bench_lag(
                        stack, args.lag_rate, args.duration
                    )
                if "batch" in only:
                    results["batch_upsert"] = await bench_batch(stack, args.batch_rows)
            finally:
                stack.stop()
    # The services' own benches start their own PostgreSQL and NATS (after the stack stopped,
    # so they do not compete with it for the two cores).
    for name, module in SERVICE_BENCHES.items():
        if name in only:
            bench = importlib.import_module(module)
            results[name] = await bench.run()
    r = results
    lines = []
    if "read_360" in r:
        x = r["read_360"]
        lines.append(
            f"360 read: gateway {x['gateway_rps']:.0f} req/s vs baseline {x['baseline_rps']:.0f}"
            f" -> {x['ratio']:.2f}x (goal >= 0.6x, {verdict(x['ratio'] >= 0.6)}); p99 "
            f"{x['gateway_p99_ms']:.1f} ms vs {x['baseline_p99_ms']:.1f} ms -> "
            f"{x['p99_ratio']:.2f}x (goal <= 3x, {verdict(x['p99_ratio'] <= 3)})"
        )
    if "create_contact" in r:
        x = r["create_contact"]
        lines.append(
            f"create contact: gateway {x['gateway_rps']:.0f}/s vs baseline "
            f"{x['baseline_rps']:.0f}/s -> {x['ratio']:.2f}x (goal >= 0.5x, "
            f"{verdict(x['ratio'] >= 0.5)})"
        )
    if "write_to_360_lag" in r:
        x = r["write_to_360_lag"]
        ok = x["lag_p50_ms"] <= 25 and x["lag_p99_ms"] <= 150
        lines.append(
            f"write->360 lag at {x['achieved_rate']:.0f} writes/s: p50 {x['lag_p50_ms']:.1f} ms,"
            f" p99 {x['lag_p99_ms']:.1f} ms (goal p50 <= 25, p99 <= 150: {verdict(ok)})"
        )
    if "batch_upsert" in r:
        x = r["batch_upsert"]
        lines.append(
            f"batch upsert {x['rows']} rows until in the read model: {x['rows_per_s']:.0f} "
            f"rows/s vs executemany {x['baseline_rows_per_s']:.0f} -> {x['ratio']:.3f}x "
            f"(goal >= 0.2x, {verdict(x['ratio'] >= 0.2)})"
        )
    if memory:
        lines.append(
            "idle RSS: "
            + ", ".join(f"{k} {v:.0f} MB" for k, v in memory.items())
            + f" (goal <= 120 MB, {verdict(max(memory.values()) <= 120)})"
        )
    for name in SERVICE_BENCHES:
        if name in r:
            lines.append(f"{name}: {json.dumps(summary(r[name]), default=str)}")
    print("\n".join(lines))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
