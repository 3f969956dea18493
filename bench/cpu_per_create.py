"""CPU milliseconds per created contact, per process: where the create path spends the
machine (`python bench/cpu_per_create.py`).

Starts the same stack as `make bench` (bench/run.py), then creates contacts for 15 s at
concurrency 16, three ways: through the gateway, straight to the contacts service, and to the
baseline app (raw asyncpg two-insert transaction). For each way it reports the CPU time every
process used (contacts, gateway, PostgreSQL backends, nats-server, this load generator),
divided by the contacts created, including the time the event pipeline took to drain (relay,
read-model consumers). The total bounds throughput on this machine: cores / total.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from loadgen import build_request, run_closed_loop
from run import Stack, auth


def _cpu(p: psutil.Process) -> float:
    try:
        t = p.cpu_times()
        return float(t.user + t.system + t.children_user + t.children_system)
    except psutil.NoSuchProcess:
        return 0.0


def _infra(stack: Stack) -> dict[str, list[psutil.Process]]:
    """PostgreSQL and nats-server processes of this stack (found by their data directory)."""
    found: dict[str, list[psutil.Process]] = {"postgres": [], "nats": []}
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if str(stack.base) not in cmd:
            continue
        name = p.info["name"] or ""
        if "postgres" in name:
            found["postgres"].append(p)
        elif "nats" in name:
            found["nats"].append(p)
    return found


def snapshot(stack: Stack) -> dict[str, float]:
    out = {n: _cpu(psutil.Process(p.pid)) for n, p in stack.procs.items()}
    for kind, procs in _infra(stack).items():
        # backends come and go: the postmaster's children now, plus its own time
        seen = {p.pid for p in procs}
        kids = [c for p in procs for c in p.children(recursive=True) if c.pid not in seen]
        out[kind] = sum(_cpu(p) for p in procs) + sum(_cpu(c) for c in kids)
    out["loadgen"] = _cpu(psutil.Process())
    return out


async def main() -> None:
    stack = Stack(Path(tempfile.mkdtemp(prefix="crm-cpu-")))
    await stack.start()
    try:
        headers = {**auth(stack), "Content-Type": "application/json"}
        run = uuid.uuid4().hex[:6]
        ways = (
            ("gateway", stack.ports["gateway"], "/v1/contacts", headers),
            ("contacts-direct", stack.ports["contacts"], "/v1/contacts", headers),
            (
                "baseline",
                stack.ports["baseline"],
                "/contacts",
                {"Content-Type": "application/json"},
            ),
        )
        cores = os.cpu_count() or 1
        for way, port, path, h in ways:

            def make(i: int, way: str = way, path: str = path, h: dict[str, str] = h) -> bytes:
                body = {"first_name": "Ada", "last_name": f"L{i}", "email": f"{way}{run}{i}@x.com"}
                return build_request("POST", path, h, json.dumps(body).encode())

            await run_closed_loop(port, make, concurrency=16, duration=3)  # warm up
            await asyncio.sleep(3)
            before = snapshot(stack)
            res = await run_closed_loop(port, make, concurrency=16, duration=15)
            await asyncio.sleep(8)  # the relay and the read-model consumers drain
            after = snapshot(stack)
            created = res.statuses.get(201, 0)
            print(f"{way}: {created} created, {res.rps:.0f}/s, statuses {res.statuses}")
            total = 0.0
            for name in after:
                ms = (after[name] - before.get(name, 0.0)) * 1000 / max(created, 1)
                total += ms
                if ms >= 0.005:
                    print(f"  {name:10s} {ms:5.2f} ms CPU per create")
            print(f"  {'total':10s} {total:5.2f} ms -> at most {cores * 1000 / total:.0f}/s here")
    finally:
        stack.stop()


if __name__ == "__main__":
    asyncio.run(main())
