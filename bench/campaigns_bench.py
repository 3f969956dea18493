"""Campaigns bench: segment count over 200k replica contacts (p50/p99 through the app, beside
the same SQL on raw asyncpg), and the campaign send rate to the local SMTP sink (msgs/s, from
schedule to the campaign's `sent` status, every .eml written).

Standalone: `.venv/bin/python bench/campaigns_bench.py [--contacts N] [--send N] [--runs N]`;
from bench/run.py: `results["campaigns"] = await campaigns_bench.run()`. Starts its own
embedded PostgreSQL and nats-server (temporary data) the way bench/run.py does, and the SMTP
sink of campaigns.smtp_sink on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from httpx import ASGITransport, AsyncClient

from campaigns.app import MIGRATIONS, CampaignsSettings, build
from campaigns.filters import ACTIVE, compile_filter
from chassis import devkeys
from chassis.infra import NatsProcess, Postgres, ensure_database, free_port
from chassis.migrations import upgrade
from chassis.settings import with_database

TENANT = "acme"
SEGMENT = {
    "all": [
        {"field": "tags", "op": "contains", "value": "vip"},
        {
            "any": [
                {"field": "lifecycle_stage", "op": "in", "value": ["lead", "mql"]},
                {"field": "cf.region", "op": "eq", "value": "EMEA"},
            ]
        },
        {"field": "consent.email_marketing", "op": "eq", "value": "granted"},
    ]
}
STAGES = ["subscriber", "lead", "mql", "sql", "customer"]
REGIONS = ["EMEA", "AMER", "APAC"]
TAGS = ["vip", "beta", "churned", "newsletter", "partner"]


def _wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _measure(fn: Callable[[], Awaitable[None]], runs: int, warmup: int = 3) -> dict[str, Any]:
    for _ in range(warmup):
        await fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - start)
    return {
        "runs": runs,
        "p50_ms": round(statistics.median(samples) * 1000, 2),
        "p99_ms": round(_pct(samples, 0.99) * 1000, 2),
    }


async def load(url: str, contacts: int, send: int) -> dict[str, Any]:
    """COPY `contacts` replica rows; the first `send` carry the tag "send" and consent."""
    rnd = random.Random(42)
    now = datetime.now(UTC)
    records = []
    for i in range(contacts):
        tags = rnd.sample(TAGS, rnd.randint(0, 2))
        if i < send:
            tags.append("send")
        records.append(
            (
                TENANT,
                uuid.uuid4(),
                1,
                f"First{i}",
                f"Last{i}",
                f"c{i}@bench.example",
                rnd.choice(STAGES),
                rnd.choice(["web_form", "import", "erp:sap"]),
                tags,
                json.dumps({"region": rnd.choice(REGIONS), "size": rnd.randint(1, 5000)}),
                "granted" if i < send or rnd.random() < 0.7 else rnd.choice(["denied", "unknown"]),
                now - timedelta(days=rnd.randint(0, 900)),
                now,
            )
        )
    conn = await asyncpg.connect(url)
    try:
        start = time.perf_counter()
        await conn.copy_records_to_table(
            "contacts",
            records=records,
            columns=[
                "tenant_id",
                "id",
                "version",
                "first_name",
                "last_name",
                "email",
                "lifecycle_stage",
                "lead_source",
                "tags",
                "custom_fields",
                "email_marketing",
                "created_at",
                "updated_at",
            ],
        )
        copy_s = time.perf_counter() - start
        await conn.execute("ANALYZE contacts")
    finally:
        await conn.close()
    return {
        "contacts": contacts,
        "copy_seconds": round(copy_s, 2),
        "copy_rows_per_s": round(contacts / copy_s),
    }


async def raw_count(url: str, runs: int) -> dict[str, Any]:
    compiled = compile_filter(SEGMENT, now=datetime.now(UTC))
    names = list(compiled.params)
    sql = (
        f"SELECT count(*) FROM contacts c WHERE c.tenant_id = $1 AND ({ACTIVE}) AND {compiled.sql}"
    )
    for n, name in sorted(enumerate(names), key=lambda x: -len(x[1])):
        sql = sql.replace(f":{name}", f"${n + 2}")
    args = [compiled.params[n] for n in names]
    conn = await asyncpg.connect(url)
    try:

        async def call() -> None:
            await conn.fetchval(sql, TENANT, *args)

        return await _measure(call, runs)
    finally:
        await conn.close()


async def run(contacts: int = 200_000, send: int = 5_000, runs: int = 30) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="campaigns-bench-"))
    pg = Postgres(base / "pg")
    pg.server.psql(
        "ALTER SYSTEM SET fsync = off; ALTER SYSTEM SET synchronous_commit = off; "
        "ALTER SYSTEM SET full_page_writes = off; SELECT pg_reload_conf();"
    )
    broker = NatsProcess(base / "nats")
    broker.start()
    # The sink runs as its own process, as under `make run` (in-process it would share
    # the GIL with the sender and halve the rate).
    sink_port = free_port()
    mail_dir = base / "mail"
    sink = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "campaigns.smtp_sink",
            "--dir",
            str(mail_dir),
            "--port",
            str(sink_port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_port(sink_port)
    try:
        server = pg.url()
        await ensure_database(server, "crm_campaigns")
        url = with_database(server, "crm_campaigns")
        await upgrade(MIGRATIONS, url, "alembic_version_campaigns")
        results: dict[str, Any] = {"data": await load(url, contacts, send)}
        jwt = base / "jwt"
        devkeys.ensure_dev_keys(jwt)
        settings = CampaignsSettings(
            service_name="campaigns",
            env="dev",
            database_url=url,
            nats_url=broker.url,
            jwks_file=jwt / "jwks.json",
            log_json=False,
            log_level="WARNING",
            smtp_port=sink_port,
            send_rate_per_second=0,
            scheduler_poll_seconds=0.5,
            send_batch_size=500,
        )
        app = build(settings)
        token = devkeys.mint_token(jwt, tenant=TENANT, roles=["marketer"], sub="bench")
        headers = {"Authorization": f"Bearer {token}"}
        transport = ASGITransport(app)
        async with (
            app.router.lifespan_context(app),
            AsyncClient(transport=transport, base_url="http://bench", headers=headers) as client,
        ):
            seg = (
                await client.post("/v1/segments", json={"name": "VIP", "filter": SEGMENT})
            ).json()
            path = f"/v1/segments/{seg['id']}/count"
            results["data"]["segment_members"] = (await client.get(path)).json()["count"]

            async def count() -> None:
                r = await client.get(path)
                if r.status_code != 200:
                    raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")

            results["segment_count_api"] = await _measure(count, runs)
            results["segment_count_raw_sql"] = await raw_count(url, runs)
            results["segment_count_api"]["overhead_ratio"] = round(
                results["segment_count_api"]["p50_ms"] / results["segment_count_raw_sql"]["p50_ms"],
                2,
            )

            target = (
                await client.post(
                    "/v1/segments",
                    json={
                        "name": "send",
                        "filter": {"all": [{"field": "tags", "op": "contains", "value": "send"}]},
                    },
                )
            ).json()
            tpl = (
                await client.post(
                    "/v1/email-templates",
                    json={
                        "name": "Bench",
                        "subject": "Hello {{ contact.first_name }}",
                        "html": '<p>Hi {{ contact.first_name }} ({{ contact.cf.region }})</p><a href="https://example.com/x">x</a>',
                        "text": "Hi {{ contact.first_name }}",
                    },
                )
            ).json()
            campaign = (
                await client.post(
                    "/v1/campaigns",
                    json={
                        "name": "bench",
                        "segment_id": target["id"],
                        "template_id": tpl["id"],
                    },
                )
            ).json()
            start = time.perf_counter()
            await client.post(f"/v1/campaigns/{campaign['id']}/schedule")
            while True:
                status = (await client.get(f"/v1/campaigns/{campaign['id']}")).json()
                if status["status"] == "sent":
                    break
                if time.perf_counter() - start > 120:
                    raise RuntimeError(f"campaign not sent after 120 s: {status}")
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - start
            report = (await client.get(f"/v1/campaigns/{campaign['id']}/report")).json()
        results["campaign_send"] = {
            "recipients": report["recipients"],
            "sent": report["sent"],
            "eml_files": len(list(mail_dir.glob("*.eml"))),
            "seconds": round(elapsed, 2),
            "msgs_per_s": round(report["sent"] / elapsed, 1),
            "smtp_connections": settings.smtp_connections,
        }
        return results
    finally:
        sink.terminate()
        sink.wait(10)
        broker.stop()
        pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--send", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.contacts, args.send, args.runs)), indent=2))


if __name__ == "__main__":
    main()
