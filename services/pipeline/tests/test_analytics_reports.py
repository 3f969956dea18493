"""Reports: the funnel against a plain-Python oracle (hypothesis), sales cycle, win rate
and average deal size, their scoping and bad input. Data is seeded with SQL."""

from __future__ import annotations

import statistics
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any

import asyncpg
import pytest
from httpx import AsyncClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chassis.db import asyncpg_dsn
from chassis.testing import Infra

STAGES = ["Qualify", "Propose", "Negotiate", "Won", "Lost"]
T0 = datetime(2026, 6, 1, tzinfo=UTC)


@dataclass
class Seeder:
    conn: asyncpg.Connection

    async def team(
        self, tenant: str, name: str, parent: str | None, members: dict[str, str]
    ) -> str:
        tid = uuid.uuid4()
        await self.conn.execute(
            "INSERT INTO teams (tenant_id, id, name, parent_id, created_at, updated_at, version) "
            "VALUES ($1, $2, $3, $4, now(), now(), 1)",
            tenant,
            tid,
            name,
            uuid.UUID(parent) if parent else None,
        )
        await self.conn.executemany(
            "INSERT INTO team_members (tenant_id, team_id, user_id, role) VALUES ($1,$2,$3,$4)",
            [(tenant, tid, user, role) for user, role in members.items()],
        )
        return str(tid)

    async def pipeline(self, tenant: str, name: str = "New business") -> tuple[str, list[str]]:
        pid = uuid.uuid4()
        await self.conn.execute(
            "INSERT INTO pipelines (tenant_id, id, name, created_at, updated_at, version) "
            "VALUES ($1, $2, $3, now(), now(), 1)",
            tenant,
            pid,
            name,
        )
        ids = []
        for position, stage in enumerate(STAGES):
            sid = uuid.uuid4()
            await self.conn.execute(
                "INSERT INTO stages (tenant_id, id, pipeline_id, name, position, probability, "
                "forecast_category, is_won, is_lost) VALUES ($1,$2,$3,$4,$5,50,'pipeline',$6,$7)",
                tenant,
                sid,
                pid,
                stage,
                position,
                stage == "Won",
                stage == "Lost",
            )
            ids.append(str(sid))
        return str(pid), ids

    async def deal(
        self,
        tenant: str,
        pipeline: str,
        stage: str,
        *,
        owner: str = "u1",
        amount: str = "100.00",
        currency: str = "USD",
        status: str = "open",
        created_at: datetime = T0,
        closed_at: datetime | None = None,
        deleted: bool = False,
    ) -> str:
        did = uuid.uuid4()
        await self.conn.execute(
            "INSERT INTO deals (tenant_id, id, name, owner_id, pipeline_id, stage_id, amount, "
            "currency, status, closed_at, created_at, updated_at, version, deleted_at) "
            "VALUES ($1,$2,'Deal',$3,$4,$5,$6,$7,$8,$9,$10,$10,1,$11)",
            tenant,
            did,
            owner,
            uuid.UUID(pipeline),
            uuid.UUID(stage),
            Decimal(amount),
            currency,
            status,
            closed_at,
            created_at,
            closed_at if deleted else None,
        )
        return str(did)

    async def stays(
        self,
        tenant: str,
        deal: str,
        pipeline: str,
        path: list[tuple[str, datetime]],
        end: datetime | None,
    ) -> None:
        """One stay per (stage, entered_at); each ends when the next begins, the last at `end`."""
        rows = []
        for i, (stage, entered) in enumerate(path):
            nxt = path[i + 1] if i + 1 < len(path) else None
            rows.append(
                (
                    tenant,
                    uuid.UUID(deal),
                    uuid.UUID(pipeline),
                    uuid.UUID(stage),
                    entered,
                    nxt[1] if nxt else end,
                    uuid.UUID(nxt[0]) if nxt else None,
                )
            )
        await self.conn.executemany(
            "INSERT INTO deal_stage_history (tenant_id, deal_id, pipeline_id, stage_id, entered_at,"
            " amount, currency, left_at, to_stage_id) VALUES ($1,$2,$3,$4,$5,0,'USD',$6,$7)",
            rows,
        )


@pytest.fixture
async def seed(db_url: str) -> AsyncIterator[Seeder]:
    conn = await asyncpg.connect(asyncpg_dsn(db_url))
    try:
        yield Seeder(conn)
    finally:
        await conn.close()


@pytest.fixture
def auth(crm_infra: Infra) -> Callable[..., dict[str, str]]:
    def make(sub: str = "u-admin", role: str = "admin", tenant: str = "acme") -> dict[str, str]:
        return crm_infra.auth(tenant=tenant, roles=[role], sub=sub)

    return make


def half_up(value: Fraction | Decimal, places: str = "0.01") -> str:
    d = (
        Decimal(value.numerator) / Decimal(value.denominator)
        if isinstance(value, Fraction)
        else value
    )
    return str(d.quantize(Decimal(places), rounding=ROUND_HALF_UP))


# --- funnel, against an oracle ---------------------------------------------------------------

# A journey: the stages a deal went through (indexes into STAGES), hours spent in each.
journey = st.lists(
    st.tuples(st.integers(0, 4), st.integers(1, 24 * 20)), min_size=1, max_size=6
).filter(lambda j: all(s not in (3, 4) for s, _ in j[:-1]))  # won/lost only at the end
deal_strategy = st.fixed_dictionaries(
    {
        "journey": journey,
        "start_hours": st.integers(-24 * 30, 24 * 40),
        "owner": st.sampled_from(["u1", "u2"]),
        "open_ended": st.booleans(),
    }
)
WINDOW_FROM, WINDOW_TO = datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 6, 30, tzinfo=UTC)


def funnel_oracle(deals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    stays: list[dict[str, Any]] = []
    for d in deals:
        last_stage = d["journey"][-1][0]
        status = {3: "won", 4: "lost"}.get(last_stage, "open")
        t = T0 + timedelta(hours=d["start_hours"])
        for i, (stage, hours) in enumerate(d["journey"]):
            nxt = d["journey"][i + 1][0] if i + 1 < len(d["journey"]) else None
            ends = nxt is not None or not d["open_ended"]
            stays.append(
                {
                    "stage": stage,
                    "entered": t,
                    "hours": hours if ends else None,
                    "next": nxt,
                    "status": status,
                }
            )
            t += timedelta(hours=hours)
    out = []
    end = WINDOW_TO + timedelta(days=1)
    for position in range(len(STAGES)):
        mine = [s for s in stays if s["stage"] == position and WINDOW_FROM <= s["entered"] < end]
        advanced = [
            s
            for s in mine
            if s["next"] is not None
            and (s["next"] == 3 or (s["next"] > position and s["next"] != 4))
        ]
        won = sum(s["status"] == "won" for s in mine)
        durations = [Fraction(s["hours"], 24) for s in mine if s["hours"] is not None]
        out.append(
            {
                "entered": len(mine),
                "advanced": len(advanced),
                "won": won,
                "lost": sum(s["status"] == "lost" for s in mine),
                "conversion_to_next": half_up(Fraction(len(advanced), len(mine)), "0.0001")
                if mine
                else None,
                "conversion_to_won": half_up(Fraction(won, len(mine)), "0.0001") if mine else None,
                "median_days_in_stage": half_up(statistics.median(durations))
                if durations
                else None,
            }
        )
    return out


class TestFunnel:
    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(deals=st.lists(deal_strategy, max_size=10))
    async def test_matches_oracle(
        self,
        client: AsyncClient,
        seed: Seeder,
        auth: Callable[..., dict[str, str]],
        deals: list[dict[str, Any]],
    ) -> None:
        tenant = f"t{uuid.uuid4().hex[:12]}"
        pid, stages = await seed.pipeline(tenant)
        for d in deals:
            last = d["journey"][-1][0]
            t = T0 + timedelta(hours=d["start_hours"])
            path = []
            for stage, hours in d["journey"]:
                path.append((stages[stage], t))
                t += timedelta(hours=hours)
            deal = await seed.deal(
                tenant,
                pid,
                stages[last],
                owner=d["owner"],
                status={3: "won", 4: "lost"}.get(last, "open"),
                closed_at=t if last in (3, 4) else None,
            )
            await seed.stays(tenant, deal, pid, path, None if d["open_ended"] else t)
        r = await client.get(
            f"/v1/reports/funnel?pipeline_id={pid}&from=2026-06-01&to=2026-06-30",
            headers=auth(tenant=tenant),
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert [s["name"] for s in body["stages"]] == STAGES
        got = [
            {
                k: s[k]
                for k in (
                    "entered",
                    "advanced",
                    "won",
                    "lost",
                    "conversion_to_next",
                    "conversion_to_won",
                    "median_days_in_stage",
                )
            }
            for s in body["stages"]
        ]
        assert got == funnel_oracle(deals)
        for s in body["stages"]:
            assert s["advanced"] <= s["entered"]
            assert s["won"] + s["lost"] <= s["entered"]

    async def test_known_funnel(
        self, client: AsyncClient, seed: Seeder, auth: Callable[..., dict[str, str]]
    ) -> None:
        pid, (q, p, _n, won, lost) = await seed.pipeline("acme")
        day = timedelta(days=1)
        # d1: Q 2d -> P 4d -> Won; d2: Q 1d -> Lost; d3: Q 3d -> P 1d -> Q (back) open
        d1 = await seed.deal("acme", pid, won, status="won", closed_at=T0 + 6 * day)
        await seed.stays("acme", d1, pid, [(q, T0), (p, T0 + 2 * day), (won, T0 + 6 * day)], None)
        d2 = await seed.deal("acme", pid, lost, status="lost", closed_at=T0 + day, owner="u2")
        await seed.stays("acme", d2, pid, [(q, T0), (lost, T0 + day)], None)
        d3 = await seed.deal("acme", pid, q)
        await seed.stays("acme", d3, pid, [(q, T0), (p, T0 + 3 * day), (q, T0 + 4 * day)], None)
        # a deleted deal and a stay before the window count nothing
        d4 = await seed.deal("acme", pid, q, deleted=True, closed_at=T0)
        await seed.stays("acme", d4, pid, [(q, T0)], None)
        d5 = await seed.deal("acme", pid, q)
        await seed.stays("acme", d5, pid, [(q, T0 - 10 * day)], None)

        url = f"/v1/reports/funnel?pipeline_id={pid}&from=2026-06-01&to=2026-06-30"
        r = await client.get(url, headers=auth())
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["from"] == "2026-06-01"
        assert body["to"] == "2026-06-30"
        qualify, propose, _, won_stage, lost_stage = body["stages"]
        assert qualify["entered"] == 4  # d1, d2, d3 and d3 again
        assert qualify["advanced"] == 2  # d1 and d3 to Propose; d2 to Lost is no advance
        assert qualify["won"] == 1
        assert qualify["lost"] == 1
        assert qualify["conversion_to_next"] == "0.5000"
        assert qualify["conversion_to_won"] == "0.2500"
        assert qualify["median_days_in_stage"] == "2.00"  # 2, 1, 3 days completed
        assert propose["entered"] == 2
        assert propose["advanced"] == 1  # d1 to Won; d3 went back
        assert propose["median_days_in_stage"] == "2.50"  # 4 and 1
        assert won_stage["entered"] == 1
        assert won_stage["median_days_in_stage"] is None
        assert lost_stage["lost"] == 1

        # a rep sees the stays of their own deals only
        r = await client.get(url, headers=auth("u2", "sales_rep"))
        assert [s["entered"] for s in r.json()["stages"]] == [1, 0, 0, 0, 1]

    async def test_bad_input(
        self, client: AsyncClient, seed: Seeder, auth: Callable[..., dict[str, str]]
    ) -> None:
        pid, _ = await seed.pipeline("acme")
        for query, status, field in (
            ("", 422, "pipeline_id"),
            ("pipeline_id=nope", 422, "pipeline_id"),
            (f"pipeline_id={pid}&from=2026-06-30&to=2026-06-01", 422, "from"),
            (f"pipeline_id={pid}&from=June", 422, "from"),
            (f"pipeline_id={uuid.uuid4()}", 404, None),
        ):
            r = await client.get(f"/v1/reports/funnel?{query}", headers=auth())
            assert r.status_code == status, (query, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            if field:
                assert field in [p for e in r.json()["errors"] for p in e["path"]]
        # another tenant's pipeline is not found
        r = await client.get(f"/v1/reports/funnel?pipeline_id={pid}", headers=auth(tenant="other"))
        assert r.status_code == 404


# --- sales cycle, win rate, deal size --------------------------------------------------------


@dataclass
class Closed:
    pid: str
    other_pid: str
    east: str
    west: str


@pytest.fixture
async def closed(seed: Seeder) -> Closed:
    """u1 (East) won 10, 20, 30 and 45 USD after 2, 4, 6 and 10 days and lost one deal;
    u2 (East) won 100 EUR after 1 day and lost two; u3 (West) lost one; plus deals outside
    the window (closed 2026-05-31, still open, deleted) that count nothing."""
    east = await seed.team("acme", "East", None, {"mgr": "manager", "u1": "rep", "u2": "rep"})
    west = await seed.team("acme", "West", None, {"u3": "rep"})
    pid, s = await seed.pipeline("acme")
    other_pid, s2 = await seed.pipeline("acme", "Renewals")
    t = datetime(2026, 6, 10, tzinfo=UTC)
    for amount, days in (("10", 2), ("20", 4), ("30", 6), ("45", 10)):
        await seed.deal(
            "acme",
            pid,
            s[3],
            owner="u1",
            amount=amount,
            status="won",
            created_at=t - timedelta(days=days),
            closed_at=t,
        )
    await seed.deal("acme", pid, s[4], owner="u1", status="lost", closed_at=t)
    await seed.deal(
        "acme",
        other_pid,
        s2[3],
        owner="u2",
        amount="100",
        currency="EUR",
        status="won",
        created_at=t - timedelta(days=1),
        closed_at=t,
    )
    for _ in range(2):
        await seed.deal("acme", other_pid, s2[4], owner="u2", status="lost", closed_at=t)
    await seed.deal("acme", pid, s[4], owner="u3", status="lost", closed_at=t)
    await seed.deal(
        "acme",
        pid,
        s[3],
        owner="u1",
        status="won",
        amount="999",
        closed_at=datetime(2026, 5, 31, 23, 59, tzinfo=UTC),
    )
    await seed.deal("acme", pid, s[0], owner="u1")
    await seed.deal(
        "acme", pid, s[3], owner="u1", status="won", amount="999", closed_at=t, deleted=True
    )
    return Closed(pid, other_pid, east, west)


WINDOW = "from=2026-06-01&to=2026-06-30"


class TestSalesReports:
    async def test_sales_cycle(
        self, client: AsyncClient, closed: Closed, auth: Callable[..., dict[str, str]]
    ) -> None:
        r = await client.get(f"/v1/reports/sales-cycle?{WINDOW}", headers=auth())
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["groups"] == [
            {"owner_id": "u1", "won_count": 4, "median_days": "5.00", "mean_days": "5.50"},
            {"owner_id": "u2", "won_count": 1, "median_days": "1.00", "mean_days": "1.00"},
        ]
        assert body["total"] == {
            "owner_id": None,
            "won_count": 5,
            "median_days": "4.00",
            "mean_days": "4.60",
        }
        r = await client.get(
            f"/v1/reports/sales-cycle?{WINDOW}&pipeline_id={closed.other_pid}", headers=auth()
        )
        assert [g["owner_id"] for g in r.json()["groups"]] == ["u2"]
        r = await client.get(f"/v1/reports/sales-cycle?{WINDOW}", headers=auth("u2", "sales_rep"))
        assert r.json()["total"]["won_count"] == 1
        r = await client.get(
            "/v1/reports/sales-cycle?from=2026-07-01&to=2026-07-31", headers=auth()
        )
        assert r.json()["groups"] == []
        assert r.json()["total"]["median_days"] is None

    async def test_win_rate(
        self, client: AsyncClient, closed: Closed, auth: Callable[..., dict[str, str]]
    ) -> None:
        r = await client.get(f"/v1/reports/win-rate?{WINDOW}", headers=auth())
        assert r.status_code == 200, r.text
        rows = {g["key"]: g for g in r.json()["groups"]}
        assert rows["u1"]["win_rate"] == "0.8000"
        assert rows["u2"]["win_rate"] == "0.3333"
        assert rows["u3"]["win_rate"] == "0.0000"
        assert r.json()["total"] == {
            "key": None,
            "name": None,
            "won": 5,
            "lost": 4,
            "win_rate": "0.5556",
        }

        r = await client.get(f"/v1/reports/win-rate?{WINDOW}&group_by=team", headers=auth())
        teams = {g["key"]: g for g in r.json()["groups"]}
        assert teams[closed.east] == {
            "key": closed.east,
            "name": "East",
            "won": 5,
            "lost": 3,
            "win_rate": "0.6250",
        }
        assert teams[closed.west]["win_rate"] == "0.0000"

        r = await client.get(f"/v1/reports/win-rate?{WINDOW}&group_by=pipeline", headers=auth())
        pipelines = {g["name"]: g for g in r.json()["groups"]}
        assert pipelines["New business"]["won"] == 4
        assert pipelines["New business"]["lost"] == 2
        assert pipelines["Renewals"]["win_rate"] == "0.3333"

        mgr = auth("mgr", "sales_manager")
        r = await client.get(f"/v1/reports/win-rate?{WINDOW}&group_by=team", headers=mgr)
        assert [g["key"] for g in r.json()["groups"]] == [closed.east]
        assert r.json()["total"]["lost"] == 3
        r = await client.get(
            f"/v1/reports/win-rate?{WINDOW}&group_by=team", headers=auth("u3", "sales_rep")
        )
        assert r.json()["groups"] == []
        assert r.json()["total"]["lost"] == 1

    async def test_average_deal_size(
        self, client: AsyncClient, closed: Closed, auth: Callable[..., dict[str, str]]
    ) -> None:
        r = await client.get(f"/v1/reports/average-deal-size?{WINDOW}", headers=auth())
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["groups"] == [
            {
                "owner_id": "u1",
                "currency": "USD",
                "won_count": 4,
                "total": "105.00",
                "mean": "26.25",
                "median": "25.00",
            },
            {
                "owner_id": "u2",
                "currency": "EUR",
                "won_count": 1,
                "total": "100.00",
                "mean": "100.00",
                "median": "100.00",
            },
        ]
        assert [(t["currency"], t["total"]) for t in body["total"]] == [
            ("EUR", "100.00"),
            ("USD", "105.00"),
        ]
        r = await client.get(
            f"/v1/reports/average-deal-size?{WINDOW}", headers=auth("u1", "sales_rep")
        )
        assert [g["owner_id"] for g in r.json()["groups"]] == ["u1"]

    @pytest.mark.parametrize(
        "path",
        ["sales-cycle", "win-rate", "average-deal-size"],
    )
    async def test_bad_input(
        self, client: AsyncClient, auth: Callable[..., dict[str, str]], path: str
    ) -> None:
        for query, status in (
            ("from=2026-07-01&to=2026-06-01", 422),
            ("to=yesterday", 422),
            ("pipeline_id=1", 422),
            (f"pipeline_id={uuid.uuid4()}", 404),
        ):
            r = await client.get(f"/v1/reports/{path}?{query}", headers=auth())
            assert r.status_code == status, (path, query, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
        r = await client.get("/v1/reports/win-rate?group_by=region", headers=auth())
        assert r.status_code == 422
        assert (await client.get(f"/v1/reports/{path}")).status_code == 401

    async def test_default_window_is_recent(
        self, client: AsyncClient, closed: Closed, auth: Callable[..., dict[str, str]]
    ) -> None:
        r = await client.get("/v1/reports/win-rate", headers=auth())
        body = r.json()
        start = datetime.fromisoformat(body["from"]).date()
        end = datetime.fromisoformat(body["to"]).date()
        assert end == datetime.now(UTC).date()
        assert (end - start).days == 89
