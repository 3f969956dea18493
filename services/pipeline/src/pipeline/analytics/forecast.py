"""The forecast: one set-based aggregation per request (per owner and currency, with the
historical stage win rates computed in the same statement), rolled up the team tree in
memory over a handful of per-owner rows.

Definitions (README-analytics.md has the long form):
- a deal is in the period when it is open with `expected_close_date` in the period, or won
  with `closed_at` in the period (lost deals are never in a forecast);
- the effective category of an open deal is `COALESCE(deal.forecast_category,
  stage.forecast_category)`; only `commit`, `best_case` and `pipeline` are forecast, any
  other (`omitted`) leaves the deal out of every open figure and of `deal_count`;
- `weighted` = sum(amount x stage probability / 100) over forecast open deals;
- `historical` = sum(amount x observed win rate of the deal's current stage), where the rate
  is won / (won + lost) over the distinct deals that had a stay in that stage and closed
  (won or lost) in the 12 months before now; fewer than 20 such deals -> probability / 100.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.problems import NotFound
from pipeline.access import Scope, members_of, team_subtree
from pipeline.analytics.figures import analytical, money, rounded
from pipeline.analytics.periods import Period
from pipeline.analytics.schemas import (
    Adjusted,
    AdjustmentNote,
    ForecastGroup,
    ForecastOut,
    ForecastRow,
    GroupBy,
)

# Fewer closed deals than this from a stage: the stage probability stands in for its rate.
MIN_CLOSED_FOR_RATE = 20
RATE_LOOKBACK = timedelta(days=365)

# Observed win rate per stage: of the distinct deals that had a stay in the stage and closed
# (won or lost) in the lookback window, the won ones; only stages with enough of them.
RATES = text("""
WITH closed AS (
    SELECT id, status = 'won' AS won FROM deals
    WHERE tenant_id = :tenant AND status IN ('won', 'lost') AND deleted_at IS NULL
      AND closed_at > :rates_since AND closed_at <= :now
), passed AS (
    SELECT DISTINCT h.stage_id, h.deal_id, c.won
    FROM deal_stage_history h JOIN closed c ON c.id = h.deal_id
    WHERE h.tenant_id = :tenant
)
SELECT CAST(stage_id AS text) AS stage_id, count(*) FILTER (WHERE won) AS won, count(*) AS closed
FROM passed GROUP BY stage_id HAVING count(*) >= :min_closed
""")

PER_OWNER = text("""
WITH rates AS (
    SELECT * FROM unnest(CAST(:rate_stages AS uuid[]), CAST(:rate_won AS bigint[]),
                         CAST(:rate_closed AS bigint[])) AS r(stage_id, won, closed)
), base AS (
    SELECT d.owner_id, d.currency, d.status = 'won' AS won, d.status = 'open' AS forecast,
           d.amount, s.probability, COALESCE(d.forecast_category, s.forecast_category) AS category,
           r.won AS rate_won, r.closed AS rate_closed
    FROM deals d
    JOIN stages s ON s.tenant_id = d.tenant_id AND s.id = d.stage_id
    LEFT JOIN rates r ON r.stage_id = d.stage_id
    WHERE d.tenant_id = :tenant AND d.deleted_at IS NULL
      AND (CAST(:owners AS text[]) IS NULL OR d.owner_id = ANY(CAST(:owners AS text[])))
      AND ((d.status = 'open' AND d.expected_close_date >= :start
            AND d.expected_close_date < :end
            AND COALESCE(d.forecast_category, s.forecast_category)
                IN ('commit', 'best_case', 'pipeline'))
        OR (d.status = 'won' AND d.closed_at >= :start_at AND d.closed_at < :end_at))
)
SELECT owner_id, currency,
       COALESCE(sum(amount) FILTER (WHERE won), 0) AS closed_won,
       COALESCE(sum(amount) FILTER (WHERE forecast AND category = 'commit'), 0) AS commit,
       COALESCE(sum(amount) FILTER (WHERE forecast AND category = 'best_case'), 0) AS best_case,
       COALESCE(sum(amount) FILTER (WHERE forecast AND category = 'pipeline'), 0) AS pipeline,
       COALESCE(sum(amount * probability) FILTER (WHERE forecast), 0) / 100 AS weighted,
       COALESCE(sum(CASE WHEN rate_closed IS NULL THEN amount * probability / 100
                         ELSE amount * rate_won / rate_closed END) FILTER (WHERE forecast), 0)
           AS historical,
       count(*) AS deal_count
FROM base
GROUP BY owner_id, currency
""")

# Every (team, member) pair where the member belongs to the team or any of its sub-teams.
TEAM_MEMBERS_ROLLED_UP = text("""
WITH RECURSIVE anc(team_id, ancestor_id) AS (
    SELECT id, id FROM teams WHERE tenant_id = :tenant
    UNION
    SELECT a.team_id, t.parent_id FROM anc a
    JOIN teams t ON t.tenant_id = :tenant AND t.id = a.ancestor_id
    WHERE t.parent_id IS NOT NULL
)
SELECT DISTINCT CAST(a.ancestor_id AS text) AS team_id, m.user_id
FROM anc a JOIN team_members m ON m.tenant_id = :tenant AND m.team_id = a.team_id
WHERE a.ancestor_id = ANY(CAST(:teams AS uuid[]))
""")

TEAM_NAMES = text("""
SELECT CAST(id AS text) AS id, name FROM teams
WHERE tenant_id = :tenant AND (CAST(:teams AS uuid[]) IS NULL OR id = ANY(CAST(:teams AS uuid[])))
""")

QUOTAS = text("""
SELECT COALESCE(NULLIF(user_id, ''), NULLIF(team_id, '')) AS key, amount, currency
FROM forecast_quotas
WHERE tenant_id = :tenant AND period = :period
  AND ((:kind = 'user' AND NULLIF(user_id, '') IS NOT NULL)
    OR (:kind = 'team' AND NULLIF(team_id, '') IS NOT NULL))
  AND (CAST(:keys AS text[]) IS NULL
       OR COALESCE(NULLIF(user_id, ''), NULLIF(team_id, '')) = ANY(CAST(:keys AS text[])))
""")

ADJUSTMENTS = text("""
SELECT subject_id, category, currency, amount, note, adjusted_by, updated_at
FROM forecast_adjustments
WHERE tenant_id = :tenant AND period = :period AND subject_type = :kind
  AND (CAST(:keys AS text[]) IS NULL OR subject_id = ANY(CAST(:keys AS text[])))
ORDER BY subject_id, currency, category
""")

ZERO = Decimal(0)


@dataclass
class Figures:
    """Unrounded sums of one group in one currency."""

    closed_won: Decimal = ZERO
    commit: Decimal = ZERO
    best_case: Decimal = ZERO
    pipeline: Decimal = ZERO
    weighted: Decimal = ZERO
    historical: Decimal = ZERO
    deal_count: int = 0

    def add(self, other: Figures) -> None:
        with localcontext() as ctx:
            ctx.prec = 60
            self.closed_won += other.closed_won
            self.commit += other.commit
            self.best_case += other.best_case
            self.pipeline += other.pipeline
            self.weighted += other.weighted
            self.historical += other.historical
        self.deal_count += other.deal_count

    def row(self, currency: str, quota: Decimal | None) -> dict[str, Any]:
        commit_forecast = self.closed_won + self.commit
        best_case_forecast = commit_forecast + self.best_case
        return {
            "currency": currency,
            "closed_won": money(self.closed_won),
            "commit": money(self.commit),
            "best_case": money(self.best_case),
            "pipeline": money(self.pipeline),
            "commit_forecast": money(commit_forecast),
            "best_case_forecast": money(best_case_forecast),
            "weighted": rounded(self.weighted),
            "historical": rounded(self.historical),
            "quota": None if quota is None else money(quota),
            "gap": None if quota is None else money(quota - commit_forecast),
            "deal_count": self.deal_count,
        }


Rates = dict[str, tuple[int, int]]  # stage id -> (won, closed)


@dataclass
class RateCache:
    """The stage win rates of each tenant, recomputed at most every `ttl` seconds per process:
    they move slowly (a 12-month window) and cost a scan of the stage history."""

    ttl: float = 300.0
    entries: dict[str, tuple[float, Rates]] = field(default_factory=dict)

    def get(self, tenant: str) -> Rates | None:
        entry = self.entries.get(tenant)
        if entry is None or time.monotonic() - entry[0] > self.ttl:
            return None
        return entry[1]

    def put(self, tenant: str, rates: Rates) -> None:
        self.entries[tenant] = (time.monotonic(), rates)


@dataclass
class ForecastQuery:
    period: Period
    group_by: GroupBy
    team_id: uuid.UUID | None = None


@dataclass
class _Plan:
    owners: list[str] | None  # the deal owners covered (None = whole tenant)
    teams: list[str] = field(default_factory=list)  # the team groups (group_by=team)


class ForecastService:
    def __init__(self, session: AsyncSession, scope: Scope, rates: RateCache | None = None) -> None:
        self.session = session
        self.scope = scope
        self.rates = rates

    async def stage_rates(self, now: datetime) -> Rates:
        tenant = self.scope.tenant
        cached = self.rates.get(tenant) if self.rates is not None else None
        if cached is not None:
            return cached
        params = {
            "tenant": tenant,
            "now": now,
            "rates_since": now - RATE_LOOKBACK,
            "min_closed": MIN_CLOSED_FOR_RATE,
        }
        rates = {r[0]: (r[1], r[2]) for r in await self.session.execute(RATES, params)}
        if self.rates is not None:
            self.rates.put(tenant, rates)
        return rates

    async def _plan(self, req: ForecastQuery) -> _Plan:
        tenant = self.scope.tenant
        if req.team_id is not None:
            team = str(req.team_id)
            visible = self.scope.is_all or team in self.scope.managed_teams
            subtree = await team_subtree(self.session, tenant, team) if visible else []
            if not subtree:
                raise NotFound(f"team {team} not found")
            members = await members_of(self.session, tenant, subtree)
            if not self.scope.is_all:
                members &= set(self.scope.owners or ())
            return _Plan(sorted(members), subtree)
        if self.scope.is_all:
            rows = await self.session.execute(TEAM_NAMES, {"tenant": tenant, "teams": None})
            return _Plan(None, sorted(str(r[0]) for r in rows))
        return _Plan(self.scope.owner_list(), sorted(self.scope.managed_teams))

    async def per_owner(
        self, period: Period, owners: list[str] | None, now: datetime
    ) -> dict[str, dict[str, Figures]]:
        params: dict[str, Any] = {
            "tenant": self.scope.tenant,
            "owners": owners,
            "start": period.start,
            "end": period.end,
            "start_at": period.start_at,
            "end_at": period.end_at,
        }
        rates = await self.stage_rates(now)
        stages = sorted(rates)
        params["rate_stages"] = stages
        params["rate_won"] = [rates[s][0] for s in stages]
        params["rate_closed"] = [rates[s][1] for s in stages]
        out: dict[str, dict[str, Figures]] = defaultdict(dict)
        for r in (await self.session.execute(PER_OWNER, params)).mappings():
            out[r["owner_id"]][r["currency"].strip()] = Figures(
                r["closed_won"],
                r["commit"],
                r["best_case"],
                r["pipeline"],
                r["weighted"],
                r["historical"],
                r["deal_count"],
            )
        return out

    async def compute(self, req: ForecastQuery, now: datetime | None = None) -> ForecastOut:
        now = now or datetime.now(UTC)
        tenant = self.scope.tenant
        await analytical(self.session)
        plan = await self._plan(req)
        if plan.owners is not None and not plan.owners:
            by_owner: dict[str, dict[str, Figures]] = {}
        else:
            by_owner = await self.per_owner(req.period, plan.owners, now)

        groups: dict[str, dict[str, Figures]] = {}
        keys: list[str] | None
        names: dict[str, str] = {}
        if req.group_by is GroupBy.owner:
            groups = dict(by_owner)
            kind = "user"
            keys = plan.owners
        else:
            kind = "team"
            keys = plan.teams
            if plan.teams:
                params = {"tenant": tenant, "teams": plan.teams}
                members: dict[str, set[str]] = defaultdict(set)
                for team, user in await self.session.execute(TEAM_MEMBERS_ROLLED_UP, params):
                    members[team].add(user)
                names = {str(r[0]): r[1] for r in await self.session.execute(TEAM_NAMES, params)}
                for team in plan.teams:
                    acc: dict[str, Figures] = {}
                    for user in members.get(team, ()):
                        for currency, figures in by_owner.get(user, {}).items():
                            acc.setdefault(currency, Figures()).add(figures)
                    groups[team] = acc

        quotas = await self._quotas(req.period.label, kind, keys)
        adjustments = await self._adjustments(req.period.label, kind, keys)
        for key, currency in list(quotas) + list(adjustments):
            groups.setdefault(key, {}).setdefault(currency, Figures())

        out_groups: list[ForecastGroup] = []
        for key in sorted(groups):
            for currency in sorted(groups[key]):
                figures = groups[key][currency]
                quota = quotas.get((key, currency))
                row = figures.row(currency, quota)
                adj = adjustments.get((key, currency))
                out_groups.append(
                    ForecastGroup(
                        key=key,
                        name=names.get(key),
                        adjusted=_adjusted(figures, quota, adj) if adj else None,
                        **row,
                    )
                )

        totals: dict[str, Figures] = {}
        for per_currency in by_owner.values():
            for currency, figures in per_currency.items():
                totals.setdefault(currency, Figures()).add(figures)
        # The total has a quota when it is one subject's: the team asked for, or a rep's own.
        subject: tuple[str, str] | None = None
        if req.team_id is not None:
            subject = ("team", str(req.team_id))
        elif self.scope.owners == frozenset({self.scope.user}) and not self.scope.managed_teams:
            subject = ("user", self.scope.user)
        total_quotas: dict[str, Decimal] = {}
        if subject is not None:
            found = await self._quotas(req.period.label, subject[0], [subject[1]])
            total_quotas = {currency: amount for (_, currency), amount in found.items()}
            for currency in total_quotas:
                totals.setdefault(currency, Figures())
        total = [
            ForecastRow(**figures.row(c, total_quotas.get(c)))
            for c, figures in sorted(totals.items())
        ]
        return ForecastOut(
            period=req.period.label,
            group_by=req.group_by,
            team_id=None if req.team_id is None else str(req.team_id),
            as_of=now,
            groups=out_groups,
            total=total,
        )

    async def _quotas(
        self, period: str, kind: str, keys: list[str] | None
    ) -> dict[tuple[str, str], Decimal]:
        if keys is not None and not keys:
            return {}
        params = {"tenant": self.scope.tenant, "period": period, "kind": kind, "keys": keys}
        rows = await self.session.execute(QUOTAS, params)
        return {(r[0], r[2].strip()): r[1] for r in rows}

    async def _adjustments(
        self, period: str, kind: str, keys: list[str] | None
    ) -> dict[tuple[str, str], list[dict[str, Any]]]:
        if keys is not None and not keys:
            return {}
        params = {"tenant": self.scope.tenant, "period": period, "kind": kind, "keys": keys}
        out: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for r in (await self.session.execute(ADJUSTMENTS, params)).mappings():
            out[(r["subject_id"], r["currency"].strip())].append(dict(r))
        return out


def _adjusted(
    figures: Figures, quota: Decimal | None, adjustments: list[dict[str, Any]]
) -> Adjusted:
    """The manager's override replaces the category total; cumulative figures follow it."""
    values = {
        "commit": figures.commit,
        "best_case": figures.best_case,
        "pipeline": figures.pipeline,
    }
    for a in adjustments:
        values[a["category"]] = a["amount"]
    commit_forecast = figures.closed_won + values["commit"]
    best_case_forecast = commit_forecast + values["best_case"]
    return Adjusted(
        commit=money(values["commit"]),
        best_case=money(values["best_case"]),
        pipeline=money(values["pipeline"]),
        commit_forecast=money(commit_forecast),
        best_case_forecast=money(best_case_forecast),
        gap=None if quota is None else money(quota - commit_forecast),
        adjustments=[
            AdjustmentNote(
                category=a["category"],
                amount=money(a["amount"]),
                note=a["note"],
                by=a["adjusted_by"],
                updated_at=a["updated_at"],
            )
            for a in adjustments
        ],
    )
