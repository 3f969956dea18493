"""Pipeline analytics bench: the forecast over 200k deals and the funnel over 1M stage-history
rows, p50/p99 through the app (ASGI, real JWT, real PostgreSQL), each beside the same SQL run
directly on asyncpg (the ratio is the service's overhead over its own query).

Standalone: `.venv/bin/python bench/pipeline_bench.py [--deals N] [--runs N]`; from bench/run.py:
`results["pipeline"] = await pipeline_bench.run()`. Starts its own embedded PostgreSQL and
nats-server (temporary data) the way bench/run.py does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from httpx import ASGITransport, AsyncClient

from chassis import devkeys
from chassis.infra import NatsProcess, Postgres, ensure_database
from chassis.migrations import upgrade
from chassis.settings import with_database
from pipeline.analytics.api import rates_of
from pipeline.analytics.forecast import MIN_CLOSED_FOR_RATE, PER_OWNER, RATE_LOOKBACK, RATES
from pipeline.analytics.periods import parse_period
from pipeline.analytics.reports import FUNNEL, FUNNEL_WORK_MEM
from pipeline.app import MIGRATIONS, PipelineSettings, build

TENANT = "acme"
TEAMS = 5  # a root team and four sub-teams
OWNERS = 50
STAYS_PER_DEAL = 5  # 200k deals -> 1M stage-history rows
OPEN_STAGES = [  # name, probability, default forecast category
    ("Lead", 10, "pipeline"),
    ("Qualify", 25, "pipeline"),
    ("Propose", 50, "best_case"),
    ("Negotiate", 75, "commit"),
]


def _asyncpg_sql(statement: Any) -> tuple[str, list[str]]:
    """SQLAlchemy `:name` parameters -> asyncpg `$n`, with the order of the names."""
    names: list[str] = []

    def repl(m: re.Match[str]) -> str:
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    return re.sub(r"(?<![:\w]):([a-z_]+)", repl, str(statement)), names


def _quarter(d: date) -> str:
    return f"{d.year}-Q{(d.month - 1) // 3 + 1}"


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
        "p50_ms": round(statistics.median(samples) * 1e3, 2),
        "p99_ms": round(_pct(samples, 0.99) * 1e3, 2),
    }


async def load(url: str, deals: int, now: datetime, seed: int = 42) -> dict[str, Any]:
    """Teams, one pipeline, `deals` deals (about half open) and 5 stays per deal, by COPY."""
    rnd = random.Random(seed)
    conn = await asyncpg.connect(url)
    started = time.perf_counter()
    try:
        teams = [uuid.uuid4() for _ in range(TEAMS)]
        await conn.copy_records_to_table(
            "teams",
            records=[
                (TENANT, t, f"Team {i}", None if i == 0 else teams[0], now, now, 1)
                for i, t in enumerate(teams)
            ],
            columns=["tenant_id", "id", "name", "parent_id", "created_at", "updated_at", "version"],
        )
        owners = [f"rep-{i:02d}" for i in range(OWNERS)]
        members = [(TENANT, teams[0], "vp", "manager")]
        for i, owner in enumerate(owners):
            members.append((TENANT, teams[1 + i % (TEAMS - 1)], owner, "rep"))
        for t in teams[1:]:
            members.append((TENANT, t, f"mgr-{t.hex[:6]}", "manager"))
        await conn.copy_records_to_table(
            "team_members", records=members, columns=["tenant_id", "team_id", "user_id", "role"]
        )
        pipeline = uuid.uuid4()
        await conn.execute(
            "INSERT INTO pipelines (tenant_id, id, name, created_at, updated_at, version) "
            "VALUES ($1, $2, 'New business', $3, $3, 1)",
            TENANT,
            pipeline,
            now,
        )
        stages = [uuid.uuid4() for _ in range(len(OPEN_STAGES) + 2)]
        won_stage, lost_stage = stages[-2], stages[-1]
        stage_rows = [
            (TENANT, stages[i], pipeline, name, i, p, c, False, False)
            for i, (name, p, c) in enumerate(OPEN_STAGES)
        ]
        stage_rows.append((TENANT, won_stage, pipeline, "Won", 4, 100, "closed", True, False))
        stage_rows.append((TENANT, lost_stage, pipeline, "Lost", 5, 0, "omitted", False, True))
        await conn.copy_records_to_table(
            "stages",
            records=stage_rows,
            columns=[
                "tenant_id",
                "id",
                "pipeline_id",
                "name",
                "position",
                "probability",
                "forecast_category",
                "is_won",
                "is_lost",
            ],
        )
        deal_rows = []
        history = []
        today = now.date()
        for _ in range(deals):
            did = uuid.uuid4()
            created = now - timedelta(days=rnd.uniform(90, 720))
            roll = rnd.random()
            status = "open" if roll < 0.5 else "won" if roll < 0.8 else "lost"
            # a walk over the open stages, mostly forward, sometimes back
            walk = [0]
            steps = STAYS_PER_DEAL - (0 if status == "open" else 1)
            while len(walk) < steps:
                nxt = walk[-1] + (1 if rnd.random() < 0.7 else -1)
                walk.append(min(max(nxt, 0), len(OPEN_STAGES) - 1))
            path = [stages[i] for i in walk]
            if status != "open":
                path.append(won_stage if status == "won" else lost_stage)
            at = created
            entered = []
            for _ in path:
                entered.append(at)
                at += timedelta(days=rnd.uniform(0.5, 15))
            for i, stage in enumerate(path):
                last = i == len(path) - 1
                history.append(
                    (
                        TENANT,
                        did,
                        pipeline,
                        stage,
                        path[i - 1] if i else None,
                        entered[i],
                        None if last else entered[i + 1],
                        None if last else path[i + 1],
                        Decimal(0),
                        "USD",
                    )
                )
            amount = Decimal(rnd.randrange(100_00, 200_000_00)) / 100
            currency = "EUR" if rnd.random() < 0.1 else "USD"
            category = None
            if status == "open" and rnd.random() < 0.1:
                category = rnd.choice(["commit", "best_case", "pipeline", "omitted"])
            deal_rows.append(
                (
                    TENANT,
                    did,
                    "Deal",
                    rnd.choice(owners),
                    pipeline,
                    path[-1],
                    amount,
                    currency,
                    today + timedelta(days=rnd.randint(-30, 300)),
                    category,
                    status,
                    None if status == "open" else entered[-1],
                    created,
                    created,
                    1,
                )
            )
        for row_id, row in enumerate(history):  # the amount at the time of the stay
            history[row_id] = (*row[:8], deal_rows[row_id // STAYS_PER_DEAL][6], row[9])
        await conn.copy_records_to_table(
            "deals",
            records=deal_rows,
            columns=[
                "tenant_id",
                "id",
                "name",
                "owner_id",
                "pipeline_id",
                "stage_id",
                "amount",
                "currency",
                "expected_close_date",
                "forecast_category",
                "status",
                "closed_at",
                "created_at",
                "updated_at",
                "version",
            ],
        )
        await conn.copy_records_to_table(
            "deal_stage_history",
            records=history,
            columns=[
                "tenant_id",
                "deal_id",
                "pipeline_id",
                "stage_id",
                "from_stage_id",
                "entered_at",
                "left_at",
                "to_stage_id",
                "amount",
                "currency",
            ],
        )
        await conn.execute("VACUUM ANALYZE")
        return {
            "deals": len(deal_rows),
            "stage_history_rows": len(history),
            "pipeline_id": str(pipeline),
            "load_seconds": round(time.perf_counter() - started, 1),
        }
    finally:
        await conn.close()


async def run(deals: int = 200_000, runs: int = 30) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    pg = Postgres(base / "pg")
    pg.server.psql(
        "ALTER SYSTEM SET fsync = off; ALTER SYSTEM SET synchronous_commit = off; "
        "ALTER SYSTEM SET full_page_writes = off; SELECT pg_reload_conf();"
    )
    broker = NatsProcess(base / "nats")
    broker.start()
    try:
        server = pg.url()
        await ensure_database(server, "crm_pipeline")
        url = with_database(server, "crm_pipeline")
        await upgrade(MIGRATIONS, url, "alembic_version_pipeline")
        now = datetime.now(UTC)
        loaded = await load(url, deals, now)
        period = _quarter(now.date())
        jwt = base / "jwt"
        devkeys.ensure_dev_keys(jwt)
        settings = PipelineSettings(
            service_name="pipeline",
            env="dev",
            database_url=url,
            nats_url=broker.url,
            jwks_file=jwt / "jwks.json",
            log_json=False,
            log_level="WARNING",
        )
        app = build(settings)
        token = devkeys.mint_token(jwt, tenant=TENANT, roles=["admin"], sub="bench")
        headers = {"Authorization": f"Bearer {token}"}
        funnel_from, funnel_to = (now - timedelta(days=800)).date(), now.date()
        results: dict[str, Any] = {"data": {**loaded, "period": period}}
        async with app.router.lifespan_context(app):
            transport = ASGITransport(app)
            async with AsyncClient(transport=transport, base_url="http://bench") as client:

                def get(path: str) -> Callable[[], Awaitable[None]]:
                    async def call() -> None:
                        r = await client.get(path, headers=headers)
                        if r.status_code != 200:
                            raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")

                    return call

                forecast_path = f"/v1/forecast?period={period}&group_by=owner"
                funnel_path = (
                    f"/v1/reports/funnel?pipeline_id={loaded['pipeline_id']}"
                    f"&from={funnel_from}&to={funnel_to}"
                )
                sample = (await client.get(forecast_path, headers=headers)).json()
                results["data"]["forecast_deals_in_period"] = sum(
                    t["deal_count"] for t in sample["total"]
                )
                funnel = (await client.get(funnel_path, headers=headers)).json()
                results["data"]["funnel_stays_in_window"] = sum(
                    s["entered"] for s in funnel["stages"]
                )
                results["forecast_owner_api"] = await _measure(get(forecast_path), runs)
                cached = get(forecast_path)

                async def cold() -> None:  # the stage win rates recomputed on every call
                    rates_of(app).entries.clear()
                    await cached()

                results["forecast_owner_api_cold_rates"] = await _measure(
                    cold, max(runs // 3, 5), warmup=2
                )
                results["forecast_team_api"] = await _measure(
                    get(f"/v1/forecast?period={period}&group_by=team"), runs
                )
                results["funnel_api"] = await _measure(
                    get(funnel_path), max(runs // 3, 5), warmup=2
                )

        conn = await asyncpg.connect(url)
        # the same planner settings as the service's analytical transactions
        await conn.execute("SET plan_cache_mode = force_custom_plan")
        try:
            quarter = parse_period(period)
            rates_sql, rnames = _asyncpg_sql(RATES)
            rvalues = {
                "tenant": TENANT,
                "now": now,
                "rates_since": now - RATE_LOOKBACK,
                "min_closed": MIN_CLOSED_FOR_RATE,
            }
            rates_args = [rvalues[n] for n in rnames]
            rates = {r[0]: (r[1], r[2]) for r in await conn.fetch(rates_sql, *rates_args)}
            forecast_sql, names = _asyncpg_sql(PER_OWNER)
            values = {
                "tenant": TENANT,
                "owners": None,
                "start": quarter.start,
                "end": quarter.end,
                "start_at": quarter.start_at,
                "end_at": quarter.end_at,
                "rate_stages": sorted(rates),
                "rate_won": [rates[k][0] for k in sorted(rates)],
                "rate_closed": [rates[k][1] for k in sorted(rates)],
            }
            forecast_args = [values[n] for n in names]

            async def forecast_direct() -> None:
                await conn.fetch(forecast_sql, *forecast_args)

            async def forecast_direct_cold() -> None:
                await conn.fetch(rates_sql, *rates_args)
                await conn.fetch(forecast_sql, *forecast_args)

            funnel_sql, fnames = _asyncpg_sql(FUNNEL)
            fvalues = {
                "tenant": TENANT,
                "owners": None,
                "pipeline": uuid.UUID(loaded["pipeline_id"]),
                "start_at": datetime.combine(funnel_from, datetime.min.time(), UTC),
                "end_at": datetime.combine(funnel_to + timedelta(days=1), datetime.min.time(), UTC),
            }
            funnel_args = [fvalues[n] for n in fnames]

            async def funnel_direct() -> None:
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL work_mem = '{FUNNEL_WORK_MEM}'")
                    await conn.fetch(funnel_sql, *funnel_args)

            results["forecast_sql_baseline"] = await _measure(forecast_direct, runs)
            results["forecast_sql_baseline_cold_rates"] = await _measure(
                forecast_direct_cold, max(runs // 3, 5), warmup=2
            )
            results["funnel_sql_baseline"] = await _measure(
                funnel_direct, max(runs // 3, 5), warmup=2
            )
        finally:
            await conn.close()
        for name, api, sql in (
            ("forecast", "forecast_owner_api", "forecast_sql_baseline"),
            (
                "forecast_cold_rates",
                "forecast_owner_api_cold_rates",
                "forecast_sql_baseline_cold_rates",
            ),
            ("funnel", "funnel_api", "funnel_sql_baseline"),
        ):
            ratio = results[api]["p50_ms"] / results[sql]["p50_ms"]
            results[f"{name}_p50_ratio_to_sql"] = round(ratio, 3)
        return results
    finally:
        broker.stop()
        pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deals", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    started = time.perf_counter()
    results = asyncio.run(run(args.deals, args.runs))
    results["bench_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
