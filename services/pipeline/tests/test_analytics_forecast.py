"""Forecast: the math against a plain-Python oracle (hypothesis), the team roll-up and
visibility, quotas from commissions' events, manager adjustments, snapshots and accuracy.

Data is seeded with SQL (the deals API belongs to another part of the service)."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import asyncpg
import nats
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chassis.db import asyncpg_dsn
from chassis.events import OutgoingEvent
from chassis.testing import Infra, wait_for
from crm.commissions.v1.commissions_pb2 import Quota, QuotaSet
from crm.common.v1.common_pb2 import EventMeta, Money
from crm.registry import ce_type_for

NOW = datetime.now(UTC)
OPEN_STAGES = [  # name, probability, default category
    ("Qualify", 10, "pipeline"),
    ("Propose", 40, "best_case"),
    ("Negotiate", 70, "commit"),
    ("Parked", 50, "omitted"),
]


@dataclass
class Seeder:
    conn: asyncpg.Connection

    async def team(
        self,
        tenant: str,
        name: str,
        parent: str | None = None,
        members: dict[str, str] | None = None,
    ) -> str:
        tid = str(uuid.uuid4())
        await self.conn.execute(
            "INSERT INTO teams (tenant_id, id, name, parent_id, created_at, updated_at, version) "
            "VALUES ($1, $2, $3, $4, now(), now(), 1)",
            tenant,
            uuid.UUID(tid),
            name,
            uuid.UUID(parent) if parent else None,
        )
        for user, role in (members or {}).items():
            await self.conn.execute(
                "INSERT INTO team_members (tenant_id, team_id, user_id, role) VALUES ($1,$2,$3,$4)",
                tenant,
                uuid.UUID(tid),
                user,
                role,
            )
        return tid

    async def pipeline(self, tenant: str) -> tuple[str, dict[str, str]]:
        """A pipeline with OPEN_STAGES then Won and Lost; returns its id and stage ids by name."""
        pid = uuid.uuid4()
        await self.conn.execute(
            "INSERT INTO pipelines (tenant_id, id, name, created_at, updated_at, version) "
            "VALUES ($1, $2, 'New business', now(), now(), 1)",
            tenant,
            pid,
        )
        stages = [*OPEN_STAGES, ("Won", 100, "closed"), ("Lost", 0, "omitted")]
        ids = {}
        for position, (name, probability, category) in enumerate(stages):
            sid = uuid.uuid4()
            await self.conn.execute(
                "INSERT INTO stages (tenant_id, id, pipeline_id, name, position, probability, "
                "forecast_category, is_won, is_lost) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
                tenant,
                sid,
                pid,
                name,
                position,
                probability,
                category,
                name == "Won",
                name == "Lost",
            )
            ids[name] = str(sid)
        return str(pid), ids

    async def deal(
        self,
        tenant: str,
        pipeline: str,
        stage: str,
        *,
        owner: str,
        amount: str,
        currency: str = "USD",
        close: date | None = None,
        category: str | None = None,
        status: str = "open",
        closed_at: datetime | None = None,
        created_at: datetime | None = None,
        deleted: bool = False,
    ) -> str:
        did = uuid.uuid4()
        await self.conn.execute(
            "INSERT INTO deals (tenant_id, id, name, owner_id, pipeline_id, stage_id, amount, "
            "currency, expected_close_date, forecast_category, status, closed_at, created_at, "
            "updated_at, version, deleted_at) VALUES ($1,$2,'Deal',$3,$4,$5,$6,$7,$8,$9,$10,$11,"
            "$12,$12,1,$13)",
            tenant,
            did,
            owner,
            uuid.UUID(pipeline),
            uuid.UUID(stage),
            Decimal(amount),
            currency,
            close,
            category,
            status,
            closed_at,
            created_at or NOW - timedelta(days=30),
            NOW if deleted else None,
        )
        return str(did)

    async def stay(
        self,
        tenant: str,
        deal: str,
        pipeline: str,
        stage: str,
        entered_at: datetime,
        left_at: datetime | None = None,
        to_stage: str | None = None,
    ) -> None:
        await self.conn.execute(
            "INSERT INTO deal_stage_history (tenant_id, deal_id, pipeline_id, stage_id, "
            "entered_at, amount, currency, left_at, to_stage_id) "
            "VALUES ($1,$2,$3,$4,$5,0,'USD',$6,$7)",
            tenant,
            uuid.UUID(deal),
            uuid.UUID(pipeline),
            uuid.UUID(stage),
            entered_at,
            left_at,
            uuid.UUID(to_stage) if to_stage else None,
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


def cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


# --- the math, against an oracle ------------------------------------------------------------

Q4_START, Q4_END = datetime(2026, 10, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
CLOSE_DATES = [date(2026, 10, 1), date(2026, 12, 31), date(2027, 1, 1), date(2026, 9, 30), None]
CLOSED_ATS = [Q4_START, Q4_END - timedelta(seconds=1), Q4_END, Q4_START - timedelta(seconds=1)]

deal_strategy = st.fixed_dictionaries(
    {
        "owner": st.sampled_from(["a", "b", "c"]),
        "stage": st.sampled_from([s[0] for s in OPEN_STAGES]),
        "category": st.sampled_from([None, None, "commit", "best_case", "pipeline", "omitted"]),
        "amount": st.decimals(min_value=0, max_value=10**6, places=2),
        "currency": st.sampled_from(["USD", "EUR"]),
        "status": st.sampled_from(["open", "open", "won", "lost"]),
        "close": st.sampled_from(CLOSE_DATES),
        "closed_at": st.sampled_from(CLOSED_ATS),
        "deleted": st.sampled_from([False, False, False, True]),
    }
)


def oracle(deals: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Decimal]]:
    """The forecast of 2026-Q4 per (owner, currency), computed the obvious way."""
    probability = {name: Decimal(p) for name, p, _ in OPEN_STAGES}
    default = {name: c for name, _, c in OPEN_STAGES}
    out: dict[tuple[str, str], dict[str, Decimal]] = defaultdict(
        lambda: defaultdict(lambda: Decimal(0))
    )
    for d in deals:
        if d["deleted"]:
            continue
        fig = out[(d["owner"], d["currency"])]
        if d["status"] == "won" and Q4_START <= d["closed_at"] < Q4_END:
            fig["closed_won"] += d["amount"]
            fig["deal_count"] += 1
        elif (
            d["status"] == "open"
            and d["close"]
            and date(2026, 10, 1) <= d["close"] < date(2027, 1, 1)
        ):
            category = d["category"] or default[d["stage"]]
            if category == "omitted":
                continue
            fig[category] += d["amount"]
            fig["weighted"] += d["amount"] * probability[d["stage"]] / 100
            fig["deal_count"] += 1
    return out


class TestForecastMath:
    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(deals=st.lists(deal_strategy, max_size=12))
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
            stage = {"won": "Won", "lost": "Lost"}.get(d["status"], d["stage"])
            await seed.deal(
                tenant,
                pid,
                stages[stage],
                owner=d["owner"],
                amount=str(d["amount"]),
                currency=d["currency"],
                close=d["close"],
                category=d["category"],
                status=d["status"],
                closed_at=d["closed_at"] if d["status"] != "open" else None,
                deleted=d["deleted"],
            )
        r = await client.get("/v1/forecast?period=2026-Q4", headers=auth(tenant=tenant))
        assert r.status_code == 200, r.text
        body = r.json()
        expected = {k: v for k, v in oracle(deals).items() if v}
        got = {(g["key"], g["currency"]): g for g in body["groups"]}
        assert set(got) == set(expected)
        for key, fig in expected.items():
            g = got[key]
            for name in ("closed_won", "commit", "best_case", "pipeline"):
                assert Decimal(g[name]) == fig[name], (key, name)
            assert Decimal(g["weighted"]) == cents(fig["weighted"])
            # no stage has 20 closed deals: historical falls back to the probabilities
            assert g["historical"] == g["weighted"]
            assert g["deal_count"] == fig["deal_count"]
            assert Decimal(g["commit_forecast"]) == fig["closed_won"] + fig["commit"]
            assert Decimal(g["best_case_forecast"]) == (
                fig["closed_won"] + fig["commit"] + fig["best_case"]
            )
            assert Decimal(g["commit_forecast"]) >= Decimal(g["closed_won"])
            assert Decimal(g["best_case_forecast"]) >= Decimal(g["commit_forecast"])
            assert g["quota"] is None
            assert g["gap"] is None
        # the categories partition the open, non-omitted amount of the period
        for currency in ("USD", "EUR"):
            total = next((t for t in body["total"] if t["currency"] == currency), None)
            open_amount = sum(
                (
                    d["amount"]
                    for d in deals
                    if d["currency"] == currency
                    and not d["deleted"]
                    and d["status"] == "open"
                    and d["close"]
                    and date(2026, 10, 1) <= d["close"] < date(2027, 1, 1)
                    and (d["category"] or dict((s[0], s[2]) for s in OPEN_STAGES)[d["stage"]])
                    != "omitted"
                ),
                Decimal(0),
            )
            if total is None:
                assert open_amount == 0
                assert not any(k[1] == currency for k in expected)
                continue
            parts = sum(Decimal(total[c]) for c in ("commit", "best_case", "pipeline"))
            assert parts == open_amount
            assert total["deal_count"] == sum(
                g["deal_count"] for g in body["groups"] if g["currency"] == currency
            )

    async def test_historical_uses_observed_win_rate(
        self,
        app: FastAPI,
        client: AsyncClient,
        seed: Seeder,
        auth: Callable[..., dict[str, str]],
    ) -> None:
        pid, s = await seed.pipeline("acme")
        # 25 deals that passed Propose and closed in the last 12 months: 15 won, 10 lost
        for i in range(25):
            won = i < 15
            deal = await seed.deal(
                "acme",
                pid,
                s["Won" if won else "Lost"],
                owner="x",
                amount="1.00",
                status="won" if won else "lost",
                closed_at=NOW - timedelta(days=30 + i),
            )
            await seed.stay("acme", deal, pid, s["Propose"], NOW - timedelta(days=60))
            # a deal counts once per stage however often it stayed there
            await seed.stay("acme", deal, pid, s["Propose"], NOW - timedelta(days=50))
        # closed more than 12 months ago: ignored (they would drag the rate to 15/35)
        for _ in range(10):
            deal = await seed.deal(
                "acme",
                pid,
                s["Lost"],
                owner="x",
                amount="1.00",
                status="lost",
                closed_at=NOW - timedelta(days=400),
            )
            await seed.stay("acme", deal, pid, s["Propose"], NOW - timedelta(days=420))
        # Negotiate: 19 closed deals only -> the stage probability (70) applies
        for _ in range(19):
            deal = await seed.deal(
                "acme",
                pid,
                s["Lost"],
                owner="x",
                amount="1.00",
                status="lost",
                closed_at=NOW - timedelta(days=10),
            )
            await seed.stay("acme", deal, pid, s["Negotiate"], NOW - timedelta(days=20))
        period = f"{NOW.year}"
        close = date(NOW.year, 12, 31)
        await seed.deal("acme", pid, s["Propose"], owner="rep", amount="1000.00", close=close)
        await seed.deal("acme", pid, s["Negotiate"], owner="rep", amount="100.00", close=close)
        r = await client.get(f"/v1/forecast?period={period}", headers=auth())
        assert r.status_code == 200, r.text
        rep = next(g for g in r.json()["groups"] if g["key"] == "rep")
        assert rep["historical"] == "670.00"  # 1000 x 15/25 + 100 x 0.70
        assert rep["weighted"] == "470.00"  # 1000 x 0.40 + 100 x 0.70

        # 10 more lost deals from Propose: the cached rates stand until they expire
        for _ in range(10):
            deal = await seed.deal(
                "acme",
                pid,
                s["Lost"],
                owner="x",
                amount="1.00",
                status="lost",
                closed_at=NOW - timedelta(days=5),
            )
            await seed.stay("acme", deal, pid, s["Propose"], NOW - timedelta(days=6))
        r = await client.get(f"/v1/forecast?period={period}", headers=auth())
        assert by_key(r.json())["rep"]["historical"] == "670.00"
        app.state.forecast_rates.ttl = 0
        r = await client.get(f"/v1/forecast?period={period}", headers=auth())
        assert by_key(r.json())["rep"]["historical"] == "498.57"  # 1000 x 15/35 + 70


# --- roll-up and visibility ------------------------------------------------------------------


@dataclass
class Org:
    pid: str
    stages: dict[str, str]
    root: str
    east: str
    east1: str
    west: str


@pytest.fixture
async def org(seed: Seeder) -> Org:
    """Sales > East > East-1, Sales > West. u-r1 is in East and East-1 (counted once above)."""
    root = await seed.team("acme", "Sales", members={"u-vp": "manager"})
    east = await seed.team("acme", "East", root, {"u-mgr": "manager", "u-r1": "rep"})
    east1 = await seed.team("acme", "East-1", east, {"u-r1": "rep", "u-r2": "rep"})
    west = await seed.team("acme", "West", root, {"u-r3": "rep"})
    pid, s = await seed.pipeline("acme")
    close = date(2026, 11, 15)
    await seed.deal("acme", pid, s["Negotiate"], owner="u-r1", amount="100.00", close=close)
    await seed.deal("acme", pid, s["Qualify"], owner="u-r2", amount="200.00", close=close)
    await seed.deal("acme", pid, s["Propose"], owner="u-r3", amount="400.00", close=close)
    await seed.deal("acme", pid, s["Propose"], owner="u-mgr", amount="800.00", close=close)
    await seed.deal(
        "acme",
        pid,
        s["Won"],
        owner="u-r1",
        amount="50.00",
        status="won",
        closed_at=datetime(2026, 11, 2, tzinfo=UTC),
    )
    await seed.deal(
        "acme", pid, s["Negotiate"], owner="u-r1", amount="7.00", currency="EUR", close=close
    )
    return Org(pid, s, root, east, east1, west)


def by_key(body: dict[str, Any], currency: str = "USD") -> dict[str, dict[str, Any]]:
    return {g["key"]: g for g in body["groups"] if g["currency"] == currency}


class TestForecastApi:
    async def test_contract_shape(
        self, client: AsyncClient, org: Org, auth: Callable[..., dict[str, str]]
    ) -> None:
        r = await client.get("/v1/forecast?period=2026-Q4&group_by=owner", headers=auth())
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["period"] == "2026-Q4"
        r1 = by_key(body)["u-r1"]
        assert r1 == {
            "key": "u-r1",
            "name": None,
            "currency": "USD",
            "closed_won": "50.00",
            "commit": "100.00",
            "best_case": "0.00",
            "pipeline": "0.00",
            "commit_forecast": "150.00",
            "best_case_forecast": "150.00",
            "weighted": "70.00",
            "historical": "70.00",
            "quota": None,
            "gap": None,
            "deal_count": 2,
            "adjusted": None,
        }
        assert by_key(body, "EUR")["u-r1"]["commit"] == "7.00"
        usd = next(t for t in body["total"] if t["currency"] == "USD")
        assert usd["closed_won"] == "50.00"
        assert usd["deal_count"] == 5
        assert usd["best_case"] == "1200.00"
        assert usd["pipeline"] == "200.00"

    async def test_month_and_year_periods(
        self, client: AsyncClient, org: Org, auth: Callable[..., dict[str, str]]
    ) -> None:
        for period, count in (("2026-11", 6), ("2026", 6), ("2026-10", 0), ("2027-Q1", 0)):
            r = await client.get(f"/v1/forecast?period={period}", headers=auth())
            assert r.status_code == 200, r.text
            assert sum(t["deal_count"] for t in r.json()["total"]) == count, period

    async def test_team_rollup(
        self, client: AsyncClient, org: Org, auth: Callable[..., dict[str, str]]
    ) -> None:
        r = await client.get("/v1/forecast?period=2026-Q4&group_by=team", headers=auth())
        assert r.status_code == 200, r.text
        teams = by_key(r.json())
        # East-1: u-r1 + u-r2; East: + u-mgr (u-r1 once); Sales: everything
        assert teams[org.east1]["name"] == "East-1"
        assert teams[org.east1]["commit_forecast"] == "150.00"
        assert teams[org.east1]["pipeline"] == "200.00"
        assert teams[org.east]["best_case"] == "800.00"
        assert teams[org.east]["deal_count"] == 4
        assert teams[org.west]["best_case"] == "400.00"
        assert teams[org.root]["deal_count"] == 5
        assert teams[org.root]["best_case_forecast"] == "1350.00"

    async def test_manager_sees_managed_teams_only(
        self, client: AsyncClient, org: Org, auth: Callable[..., dict[str, str]]
    ) -> None:
        h = auth("u-mgr", "sales_manager")
        r = await client.get("/v1/forecast?period=2026-Q4&group_by=team", headers=h)
        assert r.status_code == 200, r.text
        assert set(by_key(r.json())) == {org.east, org.east1}
        r = await client.get("/v1/forecast?period=2026-Q4&group_by=owner", headers=h)
        assert set(by_key(r.json())) == {"u-mgr", "u-r1", "u-r2"}
        usd = next(t for t in r.json()["total"] if t["currency"] == "USD")
        assert usd["deal_count"] == 4
        r = await client.get(
            f"/v1/forecast?period=2026-Q4&group_by=owner&team_id={org.east1}", headers=h
        )
        assert r.status_code == 200, r.text
        assert set(by_key(r.json())) == {"u-r1", "u-r2"}
        for team in (org.west, org.root, uuid.uuid4()):
            r = await client.get(f"/v1/forecast?period=2026-Q4&team_id={team}", headers=h)
            assert r.status_code == 404, r.text

    async def test_rep_sees_own_group(
        self, client: AsyncClient, org: Org, auth: Callable[..., dict[str, str]]
    ) -> None:
        h = auth("u-r3", "sales_rep")
        r = await client.get("/v1/forecast?period=2026-Q4", headers=h)
        assert [g["key"] for g in r.json()["groups"]] == ["u-r3"]
        assert [t["best_case"] for t in r.json()["total"]] == ["400.00"]
        r = await client.get("/v1/forecast?period=2026-Q4&group_by=team", headers=h)
        assert r.json()["groups"] == []
        r = await client.get(f"/v1/forecast?period=2026-Q4&team_id={org.west}", headers=h)
        assert r.status_code == 404
        r = await client.get("/v1/forecast?period=2026-Q4", headers=auth(tenant="other"))
        assert r.json()["groups"] == []
        assert r.json()["total"] == []

    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ("period=2026-Q5", "period"),
            ("period=2026-13", "period"),
            ("period=26", "period"),
            ("period=2026-Q4&group_by=region", "group_by"),
            ("period=2026-Q4&team_id=nope", "team_id"),
            ("", "period"),
        ],
    )
    async def test_bad_input(
        self,
        client: AsyncClient,
        auth: Callable[..., dict[str, str]],
        query: str,
        field: str,
    ) -> None:
        r = await client.get(f"/v1/forecast?{query}", headers=auth())
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert field in [p for e in r.json()["errors"] for p in e["path"]]

    async def test_requires_auth(self, client: AsyncClient) -> None:
        assert (await client.get("/v1/forecast?period=2026")).status_code == 401


# --- quotas ----------------------------------------------------------------------------------


@pytest.fixture
async def publish(crm_infra: Infra) -> AsyncIterator[Callable[..., Any]]:
    nc = await nats.connect(crm_infra.nats_url)

    async def send(
        version: int, amount: str, *, user: str = "", team: str = "", period: str = "2026-Q4"
    ) -> None:
        qid = f"{'user' if user else 'team'}:{user or team}:{period}"
        msg = QuotaSet(
            meta=EventMeta(tenant_id="acme", aggregate_id=qid, version=version),
            quota=Quota(
                id=qid,
                user_id=user,
                team_id=team,
                period=period,
                amount=Money(amount=amount, currency="USD"),
                version=version,
            ),
        )
        event = OutgoingEvent(
            message=msg,
            ce_type=ce_type_for(msg),
            tenant="acme",
            aggregate_id=qid,
            version=version,
            source="crm/commissions",
        )
        await nc.jetstream().publish(
            event.subject, msg.SerializeToString(), headers=event.headers()
        )

    try:
        yield send
    finally:
        await nc.close()


class TestQuotas:
    async def test_quota_set_shows_in_forecast(
        self,
        client: AsyncClient,
        org: Org,
        auth: Callable[..., dict[str, str]],
        publish: Callable[..., Any],
    ) -> None:
        await publish(1, "1000.00", user="u-r1")
        await publish(1, "5000", team=org.east)

        async def quota_of(key: str, group_by: str, expected: str) -> dict[str, Any]:
            """The group once its quota is `expected`, else {} (falsy: keep waiting)."""
            r = await client.get(f"/v1/forecast?period=2026-Q4&group_by={group_by}", headers=auth())
            g = by_key(r.json()).get(key)
            return g if g and g["quota"] == expected else {}

        r1 = await wait_for(lambda: quota_of("u-r1", "owner", "1000.00"), message="user quota")
        assert r1["gap"] == "850.00"  # 1000 - (50 won + 100 commit)
        east = await wait_for(lambda: quota_of(org.east, "team", "5000.00"), message="team quota")
        assert east["gap"] == "4850.00"
        # a newer version replaces it
        await publish(2, "1200.00", user="u-r1")
        r1 = await wait_for(lambda: quota_of("u-r1", "owner", "1200.00"), message="quota v2")
        assert r1["gap"] == "1050.00"
        # the rep's own total carries the quota; the team's with team_id
        r = await client.get("/v1/forecast?period=2026-Q4", headers=auth("u-r1", "sales_rep"))
        assert [t["quota"] for t in r.json()["total"] if t["currency"] == "USD"] == ["1200.00"]
        r = await client.get(f"/v1/forecast?period=2026-Q4&team_id={org.east}", headers=auth())
        assert [t["quota"] for t in r.json()["total"] if t["currency"] == "USD"] == ["5000.00"]
        # another period's forecast has no quota
        r = await client.get("/v1/forecast?period=2026-Q3", headers=auth())
        assert all(g["quota"] is None for g in r.json()["groups"])

    async def test_malformed_quota_is_dead_lettered(
        self,
        client: AsyncClient,
        org: Org,
        seed: Seeder,
        auth: Callable[..., dict[str, str]],
        publish: Callable[..., Any],
    ) -> None:
        await publish(1, "1000.00", user="u-r1", team=org.east)  # both owners: malformed
        await publish(1, "300.00", user="u-r2")

        async def good_applied() -> bool:
            r = await client.get("/v1/forecast?period=2026-Q4", headers=auth())
            return bool(by_key(r.json())["u-r2"]["quota"] == "300.00")

        await wait_for(good_applied, message="the good quota")

        async def dead() -> int:
            n: int = await seed.conn.fetchval(
                "SELECT count(*) FROM dead_letters WHERE consumer LIKE '%pipeline-quotas%'"
            )
            return n

        assert await wait_for(dead, timeout=20, message="the bad quota dead-lettered") == 1
        assert await seed.conn.fetchval("SELECT count(*) FROM forecast_quotas") == 1


# --- adjustments -----------------------------------------------------------------------------


def adjustment(**kw: Any) -> dict[str, Any]:
    return {
        "period": "2026-Q4",
        "user_id": "u-r1",
        "category": "commit",
        "currency": "USD",
        "amount": "60.00",
        "note": "Acme slips",
        **kw,
    }


class TestAdjustments:
    async def test_manager_adjusts_subordinate(
        self, client: AsyncClient, org: Org, auth: Callable[..., dict[str, str]]
    ) -> None:
        mgr = auth("u-mgr", "sales_manager")
        r = await client.put("/v1/forecast/adjustments", json=adjustment(), headers=mgr)
        assert r.status_code == 201, r.text
        assert r.headers["etag"] == '"1"'
        adj = r.json()
        assert adj["user_id"] == "u-r1"
        assert adj["adjusted_by"] == "u-mgr"
        assert adj["version"] == 1

        r = await client.get("/v1/forecast?period=2026-Q4", headers=mgr)
        g = by_key(r.json())["u-r1"]
        assert g["commit"] == "100.00"
        assert g["commit_forecast"] == "150.00"
        assert g["adjusted"]["commit"] == "60.00"
        assert g["adjusted"]["commit_forecast"] == "110.00"
        assert g["adjusted"]["best_case_forecast"] == "110.00"
        assert g["adjusted"]["adjustments"][0]["note"] == "Acme slips"
        assert g["adjusted"]["adjustments"][0]["by"] == "u-mgr"
        assert by_key(r.json())["u-r2"]["adjusted"] is None

        # changing it needs the ETag
        again = adjustment(amount="70.00")
        r = await client.put("/v1/forecast/adjustments", json=again, headers=mgr)
        assert r.status_code == 428, r.text
        r = await client.put(
            "/v1/forecast/adjustments", json=again, headers={**mgr, "If-Match": '"7"'}
        )
        assert r.status_code == 412, r.text
        r = await client.put(
            "/v1/forecast/adjustments", json=again, headers={**mgr, "If-Match": '"1"'}
        )
        assert r.status_code == 200, r.text
        assert r.json()["version"] == 2
        assert r.json()["amount"] == "70.00"

        # the rep sees the adjustment of their own figures; another rep does not
        r = await client.get("/v1/forecast/adjustments", headers=auth("u-r1", "sales_rep"))
        assert [a["amount"] for a in r.json()["items"]] == ["70.00"]
        r = await client.get("/v1/forecast/adjustments", headers=auth("u-r3", "sales_rep"))
        assert r.json()["items"] == []
        r = await client.get(
            f"/v1/forecast/adjustments/{adj['id']}", headers=auth("u-r3", "sales_rep")
        )
        assert r.status_code == 404

        # removing it brings the raw figure back
        r = await client.delete(
            f"/v1/forecast/adjustments/{adj['id']}", headers={**mgr, "If-Match": '"2"'}
        )
        assert r.status_code == 204, r.text
        r = await client.get("/v1/forecast?period=2026-Q4", headers=mgr)
        assert by_key(r.json())["u-r1"]["adjusted"] is None

    async def test_team_adjustment(
        self, client: AsyncClient, org: Org, auth: Callable[..., dict[str, str]]
    ) -> None:
        body = adjustment(user_id=None, team_id=org.east1, category="best_case", amount="30")
        r = await client.put(
            "/v1/forecast/adjustments", json=body, headers=auth("u-mgr", "sales_manager")
        )
        assert r.status_code == 201, r.text
        r = await client.get("/v1/forecast?period=2026-Q4&group_by=team", headers=auth())
        east1 = by_key(r.json())[org.east1]
        assert east1["best_case"] == "0.00"
        assert east1["adjusted"]["best_case"] == "30.00"
        assert east1["adjusted"]["best_case_forecast"] == "180.00"
        assert by_key(r.json())[org.east]["adjusted"] is None

    async def test_who_may_adjust(
        self, client: AsyncClient, org: Org, auth: Callable[..., dict[str, str]]
    ) -> None:
        rep = auth("u-r1", "sales_rep")
        mgr = auth("u-mgr", "sales_manager")
        cases = [
            (rep, adjustment(user_id="u-r2"), 403),
            (rep, adjustment(), 403),
            (mgr, adjustment(user_id="u-r3"), 403),  # not a subordinate
            (mgr, adjustment(user_id="u-mgr"), 403),  # not one's own figures
            (mgr, adjustment(user_id=None, team_id=org.west), 404),
            (auth(), adjustment(user_id=None, team_id=str(uuid.uuid4())), 404),
        ]
        for headers, body, status in cases:
            r = await client.put("/v1/forecast/adjustments", json=body, headers=headers)
            assert r.status_code == status, (body, r.text)
        r = await client.get("/v1/forecast/adjustments", headers=auth())
        assert r.json()["items"] == []

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            (adjustment(amount="-5"), "amount"),
            (adjustment(amount="abc"), "amount"),
            (adjustment(currency="usd"), "currency"),
            (adjustment(category="closed_won"), "category"),
            (adjustment(period="2026-Q9"), "period"),
            (adjustment(team_id=str(uuid.uuid4())), None),
            (adjustment(user_id=None), None),
        ],
    )
    async def test_bad_input(
        self,
        client: AsyncClient,
        auth: Callable[..., dict[str, str]],
        body: dict[str, Any],
        field: str | None,
    ) -> None:
        r = await client.put("/v1/forecast/adjustments", json=body, headers=auth())
        assert r.status_code == 422, r.text
        if field:
            assert field in [p for e in r.json()["errors"] for p in e["path"]]
        r = await client.get("/v1/forecast/adjustments", headers=auth())
        assert r.json()["items"] == []

    async def test_pagination(
        self, client: AsyncClient, org: Org, auth: Callable[..., dict[str, str]]
    ) -> None:
        for category in ("commit", "best_case", "pipeline"):
            r = await client.put(
                "/v1/forecast/adjustments", json=adjustment(category=category), headers=auth()
            )
            assert r.status_code == 201
        seen: list[str] = []
        cursor = None
        while True:
            q = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
            page = (await client.get(f"/v1/forecast/adjustments{q}", headers=auth())).json()
            seen += [a["category"] for a in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert sorted(seen) == ["best_case", "commit", "pipeline"]
        r = await client.get("/v1/forecast/adjustments?cursor=garbage", headers=auth())
        assert r.status_code == 422


# --- snapshots and accuracy ------------------------------------------------------------------


class TestSnapshots:
    async def test_snapshot_is_immutable(
        self,
        client: AsyncClient,
        org: Org,
        seed: Seeder,
        auth: Callable[..., dict[str, str]],
    ) -> None:
        r = await client.post("/v1/forecast/snapshots", json={"period": "2026-Q4"}, headers=auth())
        assert r.status_code == 201, r.text
        snap = r.json()
        assert snap["taken_by"] == "u-admin"
        assert r.headers["location"] == f"/v1/forecast/snapshots/{snap['id']}"
        assert by_key(snap["forecast"])["u-r1"]["commit"] == "100.00"

        await seed.conn.execute("UPDATE deals SET amount = 999 WHERE owner_id = 'u-r1'")
        r = await client.get(f"/v1/forecast/snapshots/{snap['id']}", headers=auth())
        assert r.status_code == 200
        assert r.json() == snap
        live = await client.get("/v1/forecast?period=2026-Q4", headers=auth())
        assert by_key(live.json())["u-r1"]["commit"] == "999.00"

        for method in ("put", "patch", "delete"):
            r = await client.request(method, f"/v1/forecast/snapshots/{snap['id']}", headers=auth())
            assert r.status_code == 405
        with pytest.raises(asyncpg.RaiseError, match="immutable"):
            await seed.conn.execute("UPDATE forecast_snapshots SET period = '2027'")

        # listing: by period; a rep sees only their own snapshots
        r = await client.get("/v1/forecast/snapshots?period=2026-Q4", headers=auth())
        assert [s["id"] for s in r.json()["items"]] == [snap["id"]]
        r = await client.get("/v1/forecast/snapshots?period=2027-Q1", headers=auth())
        assert r.json()["items"] == []
        rep = auth("u-r1", "sales_rep")
        r = await client.get(f"/v1/forecast/snapshots/{snap['id']}", headers=rep)
        assert r.status_code == 404
        r = await client.post(
            "/v1/forecast/snapshots", json={"period": "2026-Q4", "group_by": "owner"}, headers=rep
        )
        assert {g["key"] for g in r.json()["forecast"]["groups"]} == {"u-r1"}
        r = await client.get("/v1/forecast/snapshots", headers=rep)
        assert len(r.json()["items"]) == 1

    @pytest.mark.parametrize(
        "body",
        [
            {"period": "Q4"},
            {"period": "2026-Q4", "group_by": "x"},
            {"period": "2026", "team_id": "1"},
        ],
    )
    async def test_bad_snapshot(
        self, client: AsyncClient, auth: Callable[..., dict[str, str]], body: dict[str, Any]
    ) -> None:
        r = await client.post("/v1/forecast/snapshots", json=body, headers=auth())
        assert r.status_code == 422, r.text
        r = await client.get("/v1/forecast/snapshots", headers=auth())
        assert r.json()["items"] == []

    async def test_accuracy(
        self,
        client: AsyncClient,
        org: Org,
        seed: Seeder,
        auth: Callable[..., dict[str, str]],
    ) -> None:
        r = await client.post("/v1/forecast/snapshots", json={"period": "2026-Q4"}, headers=auth())
        assert r.status_code == 201
        # since then u-r1's commit deal (100) was won, u-r3's best case deal (400) lost
        await seed.conn.execute(
            "UPDATE deals SET status = 'won', stage_id = $1, closed_at = '2026-11-20T00:00Z' "
            "WHERE owner_id = 'u-r1' AND currency = 'USD' AND status = 'open'",
            uuid.UUID(org.stages["Won"]),
        )
        await seed.conn.execute(
            "UPDATE deals SET status = 'lost', closed_at = '2026-11-20T00:00Z' "
            "WHERE owner_id = 'u-r3'"
        )
        await asyncio.sleep(0)
        r = await client.get("/v1/forecast/accuracy?period=2026-Q4", headers=auth())
        assert r.status_code == 200, r.text
        [snap] = r.json()["snapshots"]
        rows = {(g["key"], g["currency"]): g for g in snap["groups"]}
        r1 = rows[("u-r1", "USD")]
        assert r1["actual"] == "150.00"
        assert r1["commit_forecast"] == {
            "forecast": "150.00",
            "error": "0.00",
            "error_percent": "0.00",
        }
        assert r1["weighted"] == {"forecast": "70.00", "error": "-80.00", "error_percent": "-53.33"}
        r3 = rows[("u-r3", "USD")]
        assert r3["actual"] == "0.00"
        assert r3["best_case_forecast"] == {
            "forecast": "400.00",
            "error": "400.00",
            "error_percent": None,
        }
        usd = next(t for t in snap["total"] if t["currency"] == "USD")
        assert usd["actual"] == "150.00"
        assert usd["commit_forecast"]["forecast"] == "150.00"
        assert usd["best_case_forecast"]["error"] == "1200.00"  # 1350 forecast - 150 won
        r = await client.get("/v1/forecast/accuracy?period=2026-Q3", headers=auth())
        assert r.json()["snapshots"] == []
        r = await client.get("/v1/forecast/accuracy?period=soon", headers=auth())
        assert r.status_code == 422
