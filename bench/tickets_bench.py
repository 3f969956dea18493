"""Tickets benchmarks: KB search latency over 100k articles, and the SLA due-time computation
rate of the pure business-time module.

Standalone: starts its own embedded PostgreSQL and nats-server (temporary data), migrates the
tickets database, loads the articles with COPY and drives the tickets app in-process (httpx
over ASGI, so the figure is the app + PostgreSQL, without a socket hop). Prints one JSON
dict; `run()` returns it.

    .venv/bin/python bench/tickets_bench.py [--articles 100000] [--searches 400]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from httpx import ASGITransport, AsyncClient

from chassis import devkeys
from chassis.db import asyncpg_dsn
from chassis.infra import NatsProcess, Postgres, ensure_database
from chassis.migrations import upgrade
from chassis.settings import with_database
from tickets.app import MIGRATIONS, TicketsSettings, build
from tickets.businesstime import Calendar, add_business

TENANT = "bench"
WORDS = [
    "account",
    "password",
    "reset",
    "login",
    "invoice",
    "billing",
    "export",
    "import",
    "report",
    "dashboard",
    "email",
    "notification",
    "integration",
    "webhook",
    "api",
    "token",
    "permission",
    "role",
    "user",
    "team",
    "contact",
    "company",
    "deal",
    "pipeline",
    "forecast",
    "quota",
    "commission",
    "campaign",
    "segment",
    "survey",
    "ticket",
    "sla",
    "calendar",
    "holiday",
    "timezone",
    "mobile",
    "browser",
    "cache",
    "cookie",
    "error",
    "timeout",
    "sync",
    "calendar",
    "attachment",
    "upload",
    "download",
    "storage",
    "limit",
    "plan",
    "upgrade",
    "downgrade",
    "refund",
    "payment",
    "card",
    "tax",
    "address",
    "language",
    "locale",
    "search",
    "filter",
    "sort",
    "column",
    "field",
    "custom",
    "workflow",
    "automation",
    "trigger",
    "rule",
]
QUERIES = [
    "reset password",
    "invoice export",
    "webhook timeout",
    '"billing address"',
    "mobile login error",
    "custom field workflow",
    "refund -card",
    "calendar holiday timezone",
    "api token permission",
    "upgrade plan or downgrade",
]


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


class Corpus:
    """Words with a Zipf-like frequency: 5000 made-up words plus the domain words at random
    ranks, so a query term matches a realistic share of the articles (not all of them)."""

    def __init__(self, rng: random.Random) -> None:
        syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "xe"]
        made_up = {"".join(rng.choices(syllables, k=rng.randint(2, 4))) for _ in range(8000)} - set(
            WORDS
        )
        vocab = sorted(made_up)[:5000]
        for w in WORDS:
            vocab.insert(rng.randint(10, 800), w)
        self.words = vocab
        self.cum = list(itertools.accumulate(1 / (r + 1) ** 1.05 for r in range(len(vocab))))

    def text(self, rng: random.Random, k: int) -> str:
        return " ".join(rng.choices(self.words, cum_weights=self.cum, k=k))


def _article(rng: random.Random, corpus: Corpus, now: datetime) -> tuple[Any, ...]:
    title = corpus.text(rng, rng.randint(3, 7)).capitalize()
    body = corpus.text(rng, rng.randint(60, 140)) + "."
    return (
        TENANT,
        uuid.uuid4(),
        title,
        body,
        [rng.choice(WORDS)],
        "en",
        "english",
        "published",
        "bench",
        now,
        now,
        1,
    )


COLUMNS = [
    "tenant_id",
    "id",
    "title",
    "body",
    "tags",
    "locale",
    "ts_config",
    "status",
    "created_by",
    "created_at",
    "updated_at",
    "version",
]


def _text(value: Any) -> str:
    """A value in COPY text format (the generated text has no tabs, newlines or backslashes)."""
    if isinstance(value, list):
        return "{" + ",".join(value) + "}"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


async def load_articles(url: str, n: int) -> float:
    rng = random.Random(7)
    corpus = Corpus(rng)
    now = datetime.now(UTC)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        start = time.perf_counter()
        batch = 20_000
        for offset in range(0, n, batch):
            # Text-format COPY: asyncpg has no binary encoder for regconfig.
            lines = [
                "\t".join(_text(v) for v in _article(rng, corpus, now))
                for _ in range(min(batch, n - offset))
            ]
            await conn.copy_to_table(
                "kb_articles",
                source=io.BytesIO(("\n".join(lines) + "\n").encode()),
                columns=COLUMNS,
                format="text",
            )
        await conn.execute("ANALYZE kb_articles")
        return time.perf_counter() - start
    finally:
        await conn.close()


async def bench_search(client: AsyncClient, headers: dict[str, str], n: int) -> dict[str, Any]:
    for q in QUERIES:  # warm-up: plans, caches
        r = await client.get("/v1/kb/search", params={"q": q, "locale": "en"}, headers=headers)
        r.raise_for_status()
    latencies: list[float] = []
    per_query: dict[str, list[float]] = {q: [] for q in QUERIES}
    hits = 0
    start = time.perf_counter()
    for i in range(n):
        q = QUERIES[i % len(QUERIES)]
        t0 = time.perf_counter()
        r = await client.get(
            "/v1/kb/search", params={"q": q, "locale": "en", "limit": 10}, headers=headers
        )
        latencies.append((time.perf_counter() - t0) * 1000)
        per_query[q].append(latencies[-1])
        r.raise_for_status()
        hits += len(r.json()["items"])
    elapsed = time.perf_counter() - start
    return {
        "kb_search_requests": n,
        "kb_search_p50_ms": round(statistics.median(latencies), 2),
        "kb_search_p99_ms": round(_percentile(latencies, 99), 2),
        "kb_search_per_s_sequential": round(n / elapsed, 1),
        "kb_search_avg_hits": round(hits / n, 1),
        # The tail comes from broad queries (a term in a third of the corpus must all be
        # ranked); the per-query medians show which.
        "kb_search_p50_ms_by_query": {
            q: round(statistics.median(v), 2) for q, v in per_query.items() if v
        },
    }


def bench_due_times(seconds: float = 3.0) -> dict[str, Any]:
    """Due-time computations per second: random starts over a year, targets of 30 min to
    3 business days, in a New York calendar with a lunch break and holidays."""
    cal = Calendar.build(
        "America/New_York",
        {
            "mon": [["09:00", "12:00"], ["13:00", "17:00"]],
            **{d: [["09:00", "17:00"]] for d in ("tue", "wed", "thu", "fri")},
        },
        [date(2026, 12, 25), date(2026, 11, 26), date(2027, 1, 1)],
    )
    rng = random.Random(3)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    starts = [base + timedelta(minutes=rng.randint(0, 525_600)) for _ in range(10_000)]
    targets = [rng.choice((30, 60, 240, 480, 1440)) for _ in range(10_000)]
    done = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for i in range(1000):
            add_business(cal, starts[(done + i) % 10_000], targets[(done + i) % 10_000])
        done += 1000
    elapsed = time.perf_counter() - t0
    return {"sla_due_times_per_s": round(done / elapsed)}


async def run(articles: int = 100_000, searches: int = 400) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tickets-bench-") as tmp:
        base = Path(tmp)
        pg = Postgres(base / "pg")
        nats = NatsProcess(base / "nats")
        nats.start()
        jwt = base / "jwt"
        devkeys.ensure_dev_keys(jwt)
        try:
            server = pg.url()
            await ensure_database(server, "crm_tickets")
            url = with_database(server, "crm_tickets")
            await upgrade(MIGRATIONS, url, "alembic_version_tickets")
            load_s = await load_articles(url, articles)
            settings = TicketsSettings(
                service_name="tickets",
                env="dev",
                database_url=url,
                nats_url=nats.url,
                jwks_file=jwt / "jwks.json",
                log_level="ERROR",
                log_json=False,
            )
            app = build(settings)
            token = devkeys.mint_token(jwt, tenant=TENANT, roles=["support_agent"], sub="bench")
            headers = {"Authorization": f"Bearer {token}"}
            result: dict[str, Any] = {
                "kb_articles": articles,
                "kb_load_seconds": round(load_s, 1),
                "kb_load_rows_per_s": round(articles / load_s),
            }
            async with app.router.lifespan_context(app):
                transport = ASGITransport(app)
                async with AsyncClient(transport=transport, base_url="http://bench") as client:
                    result.update(await bench_search(client, headers, searches))
            result.update(bench_due_times())
            return result
        finally:
            nats.stop()
            pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=100_000)
    parser.add_argument("--searches", type=int, default=400)
    args = parser.parse_args()
    result = asyncio.run(run(args.articles, args.searches))
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
