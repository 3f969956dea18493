"""Commissions benchmark: full recomputation of a quarter for 1,000 reps and 200k credited
deals, against a plain SQL aggregation of the same credits as the baseline.

Standalone: starts its own embedded PostgreSQL (temporary data, like bench/run.py), migrates
the commissions database, loads one plan assigned to every rep, a quota per rep and 200,000
credits dated in 2026-Q4 (COPY), then times

- `recompute`: the service's own recomputation (commissions.engine.Engine) of every
  statement of the quarter: the set-based loads, the exact Decimal calculation with one
  line per credited deal, and the write of 1,000 statements plus their outbox events, in one
  committed transaction;
- `recompute_unchanged`: the same recomputation when nothing changed (the idempotent path:
  every content hash matches, nothing is written);
- `recompute_after_plan_change`: after a retroactive plan version (every statement changes
  and is rewritten with a new version and event);
- `baseline`: `SELECT user_id, sum(amount * percent / 100), count(*) ... GROUP BY user_id`
  over the same credits.

`python bench/commissions_bench.py` prints a JSON dict; `await run()` returns it.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from chassis.db import Database, asyncpg_dsn, commit
from chassis.infra import Postgres, ensure_database
from chassis.migrations import upgrade
from chassis.settings import with_database
from commissions.engine import Engine
from commissions.events import Emitter

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = ROOT / "services" / "commissions" / "migrations"
TENANT = "bench"
PERIOD = "2026-Q4"
REPS = 1_000
DEALS = 200_000

TERMS = {
    "name": "Account Executive 2026",
    "period": "quarter",
    "currency": "USD",
    "credit_on": "deal_won",
    "tier_basis": "attainment",
    "tier_mode": "graduated",
    "tiers": [
        {"from": "0", "to": "0.5", "rate": "0.05"},
        {"from": "0.5", "to": "1.0", "rate": "0.10"},
        {"from": "1.0", "to": None, "rate": "0.15"},
    ],
    "cap": "50000.00",
    "spiffs": [{"product": "Onboarding", "amount_per_unit": "100.00"}],
    "clawback_days": 90,
}


async def load(dsn: str, reps: int, deals: int) -> None:
    rnd = random.Random(42)
    now = datetime.now(UTC)
    conn = await asyncpg.connect(dsn)
    try:
        plan_id = uuid.uuid4()
        await conn.execute(
            "INSERT INTO plans (tenant_id, id, name, period, currency, latest_version, version, "
            "created_at, updated_at, created_by) VALUES ($1, $2, 'AE', 'quarter', 'USD', 1, 1, "
            "$3, $3, 'bench')",
            TENANT,
            plan_id,
            now,
        )
        await conn.execute(
            "INSERT INTO plan_versions (tenant_id, plan_id, number, effective_from, terms, "
            "created_at, created_by) VALUES ($1, $2, 1, '2026-01-01', $3::jsonb, $4, 'bench')",
            TENANT,
            plan_id,
            json.dumps(TERMS),
            now,
        )
        users = [f"rep-{i:04d}" for i in range(reps)]
        await conn.copy_records_to_table(
            "plan_assignments",
            columns=["tenant_id", "id", "plan_id", "user_id", "effective_from", "created_at",
                     "created_by"],
            records=[(TENANT, uuid.uuid4(), plan_id, u, date(2026, 1, 1), now, "bench")
                     for u in users],
        )  # fmt: skip
        await conn.copy_records_to_table(
            "quotas",
            columns=["tenant_id", "owner_kind", "owner_id", "period", "amount", "currency",
                     "version", "updated_at", "updated_by"],
            records=[(TENANT, "user", u, PERIOD, Decimal(rnd.randrange(200, 2000) * 1000), "USD",
                      1, now, "bench") for u in users],
        )  # fmt: skip
        start = date(2026, 10, 1)
        records = []
        for i in range(deals):
            units = json.dumps({"Onboarding": str(rnd.randrange(1, 4))}) if i % 10 == 0 else "{}"
            records.append((
                TENANT, "deal", str(uuid.UUID(int=i + 1)), users[i % reps],
                start + timedelta(days=rnd.randrange(92)),
                Decimal(rnd.randrange(100_000, 10_000_000)) / 100, "USD", Decimal(100), units,
                now,
            ))  # fmt: skip
        await conn.copy_records_to_table(
            "credits",
            columns=["tenant_id", "source_kind", "source_id", "user_id", "credit_date", "amount",
                     "currency", "percent", "units", "updated_at"],
            records=records,
        )  # fmt: skip
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def recompute(url: str, users: list[str]) -> tuple[float, dict[str, int]]:
    db = Database(url, pool_size=2)
    try:
        t0 = time.perf_counter()
        async with db.sessionmaker() as session:
            engine = Engine(session, Emitter(session, TENANT, "bench", "bench"))
            out = await engine.recompute({(u, PERIOD) for u in users})
            await commit(session)
        elapsed = time.perf_counter() - t0
        return elapsed, {"created": out.created, "updated": out.updated,
                         "unchanged": out.unchanged}  # fmt: skip
    finally:
        await db.dispose()


async def new_version(dsn: str) -> None:
    """A retroactive plan version from the quarter's start: every statement changes."""
    tiers: list[dict[str, Any]] = TERMS["tiers"]  # type: ignore[assignment]
    raised = [{**t, "rate": str(Decimal(t["rate"]) + Decimal("0.01"))} for t in tiers]
    terms = {**TERMS, "tiers": raised}
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO plan_versions (tenant_id, plan_id, number, effective_from, terms, "
            "created_at, created_by) SELECT tenant_id, id, 2, '2026-10-01', $1::jsonb, now(), "
            "'bench' FROM plans WHERE tenant_id = $2",
            json.dumps(terms),
            TENANT,
        )
    finally:
        await conn.close()


async def baseline(dsn: str) -> tuple[float, int]:
    conn = await asyncpg.connect(dsn)
    try:
        t0 = time.perf_counter()
        rows = await conn.fetch(
            "SELECT user_id, sum(amount * percent / 100) AS credit, count(*) AS deals "
            "FROM credits WHERE tenant_id = $1 AND credit_date BETWEEN $2 AND $3 "
            "GROUP BY user_id",
            TENANT,
            date(2026, 10, 1),
            date(2026, 12, 31),
        )
        return time.perf_counter() - t0, len(rows)
    finally:
        await conn.close()


async def run(reps: int = REPS, deals: int = DEALS) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="crm-commissions-bench-") as tmp:
        pg = Postgres(Path(tmp) / "pg")
        try:
            server = pg.url()
            await ensure_database(server, "crm_commissions")
            url = with_database(server, "crm_commissions")
            await upgrade(MIGRATIONS, url, "alembic_version_commissions")
            dsn = asyncpg_dsn(url)
            t0 = time.perf_counter()
            await load(dsn, reps, deals)
            load_s = time.perf_counter() - t0
            users = [f"rep-{i:04d}" for i in range(reps)]
            base_s, base_users = await baseline(dsn)
            first_s, first = await recompute(url, users)
            again_s, again = await recompute(url, users)
            await new_version(dsn)
            changed_s, changed = await recompute(url, users)
            base_s2, _ = await baseline(dsn)
            base_s = min(base_s, base_s2)
            conn = await asyncpg.connect(dsn)
            try:
                check = await conn.fetchval(
                    "SELECT count(*) FROM statements s JOIN (SELECT user_id, "
                    "round(sum(amount * percent / 100), 2) AS credit FROM credits "
                    "GROUP BY user_id) c USING (user_id) WHERE s.credit = c.credit"
                )
                events = await conn.fetchval("SELECT count(*) FROM outbox")
            finally:
                await conn.close()
        finally:
            pg.stop()
    return {
        "reps": reps,
        "credited_deals": deals,
        "load_seconds": round(load_s, 2),
        "recompute_seconds": round(first_s, 3),
        "recompute_rows_per_s": round(deals / first_s),
        "recompute": first,
        "recompute_unchanged_seconds": round(again_s, 3),
        "recompute_unchanged_rows_per_s": round(deals / again_s),
        "recompute_unchanged": again,
        "recompute_after_plan_change_seconds": round(changed_s, 3),
        "recompute_after_plan_change_rows_per_s": round(deals / changed_s),
        "recompute_after_plan_change": changed,
        "baseline_sql_aggregation_seconds": round(base_s, 3),
        "baseline_rows_per_s": round(deals / base_s),
        "baseline_users": base_users,
        "recompute_vs_baseline_ratio": round((deals / first_s) / (deals / base_s), 4),
        "statements_matching_sql_credit": check,
        "outbox_events": events,
    }


if __name__ == "__main__":
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else REPS
    deals = int(sys.argv[2]) if len(sys.argv) > 2 else DEALS
    print(json.dumps(asyncio.run(run(reps, deals)), indent=2))
