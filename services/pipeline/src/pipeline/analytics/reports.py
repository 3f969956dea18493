"""Sales reports, each one set-based SQL statement over the caller's scope (deals whose
current owner the caller sees). Windows are whole UTC days, `from` and `to` inclusive.

- funnel: per stage of a pipeline, the stays that began in the window (README-analytics.md);
- sales cycle: won deals closed in the window, days from creation to close, by owner;
- win rate: deals closed (won or lost) in the window, won / (won + lost);
- average deal size: won deals closed in the window, per owner and currency.

Medians of days use percentile_cont over intervals (exact, unlike float days); the median of
money uses the two middle values (percentile_disc both ways) so it stays an exact decimal.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.problems import NotFound
from pipeline.access import Scope
from pipeline.analytics.figures import analytical, money, ratio, rounded
from pipeline.analytics.forecast import TEAM_MEMBERS_ROLLED_UP, TEAM_NAMES
from pipeline.analytics.periods import Window
from pipeline.analytics.schemas import (
    DealSizeOut,
    DealSizeRow,
    FunnelOut,
    FunnelStage,
    SalesCycleOut,
    SalesCycleRow,
    WinRateGroupBy,
    WinRateOut,
    WinRateRow,
)

FUNNEL_WORK_MEM = "64MB"

_OWNERS = "(CAST(:owners AS text[]) IS NULL OR d.owner_id = ANY(CAST(:owners AS text[])))"
_PIPELINE = "(CAST(:pipeline AS uuid) IS NULL OR d.pipeline_id = CAST(:pipeline AS uuid))"

PIPELINE_EXISTS = text("""
SELECT 1 FROM pipelines WHERE tenant_id = :tenant AND id = :pipeline AND deleted_at IS NULL
""")

# Narrow rows (stage, advanced, status, days) before the per-stage aggregation: the sort the
# median needs then moves little data.
FUNNEL = text(f"""
WITH st AS (
    SELECT id, name, position, is_won, is_lost FROM stages
    WHERE tenant_id = :tenant AND pipeline_id = :pipeline AND deleted_at IS NULL
), x AS (
    SELECT h.stage_id,
           COALESCE(nx.pipeline_id = :pipeline
                    AND (nx.is_won OR (nx.position > cur.position AND NOT nx.is_lost)), false)
               AS advanced,
           d.status,
           h.left_at - h.entered_at AS stay
    FROM deal_stage_history h
    JOIN st cur ON cur.id = h.stage_id
    JOIN deals d ON d.tenant_id = h.tenant_id AND d.id = h.deal_id
    LEFT JOIN stages nx ON nx.tenant_id = h.tenant_id AND nx.id = h.to_stage_id
    WHERE h.tenant_id = :tenant AND h.pipeline_id = :pipeline
      AND h.entered_at >= :start_at AND h.entered_at < :end_at
      AND d.deleted_at IS NULL AND {_OWNERS}
), agg AS (
    SELECT stage_id, count(*) AS entered,
           count(*) FILTER (WHERE advanced) AS advanced,
           count(*) FILTER (WHERE status = 'won') AS won,
           count(*) FILTER (WHERE status = 'lost') AS lost,
           -- on intervals, exact to the microsecond (float8 days turned 8.375 into 8.37)
           EXTRACT(EPOCH FROM percentile_cont(0.5) WITHIN GROUP (ORDER BY stay)) / 86400
               AS median_days
    FROM x GROUP BY stage_id
)
SELECT st.id, st.name, st.position, st.is_won, st.is_lost,
       COALESCE(agg.entered, 0) AS entered, COALESCE(agg.advanced, 0) AS advanced,
       COALESCE(agg.won, 0) AS won, COALESCE(agg.lost, 0) AS lost, agg.median_days
FROM st LEFT JOIN agg ON agg.stage_id = st.id
ORDER BY st.position, st.id
""")

SALES_CYCLE = text(f"""
SELECT GROUPING(owner_id) = 1 AS is_total, owner_id, count(*) AS n,
       EXTRACT(EPOCH FROM percentile_cont(0.5) WITHIN GROUP (ORDER BY cycle)) / 86400 AS median,
       avg(days) AS mean
FROM (
    SELECT d.owner_id, d.closed_at - d.created_at AS cycle,
           EXTRACT(EPOCH FROM d.closed_at - d.created_at) / 86400 AS days
    FROM deals d
    WHERE d.tenant_id = :tenant AND d.status = 'won' AND d.deleted_at IS NULL
      AND d.closed_at >= :start_at AND d.closed_at < :end_at AND {_OWNERS} AND {_PIPELINE}
) x
GROUP BY GROUPING SETS ((owner_id), ())
""")


def _closed_by(column: str) -> Any:
    return text(f"""
SELECT CAST(d.{column} AS text) AS key,
       count(*) FILTER (WHERE d.status = 'won') AS won,
       count(*) FILTER (WHERE d.status = 'lost') AS lost
FROM deals d
WHERE d.tenant_id = :tenant AND d.status IN ('won', 'lost') AND d.deleted_at IS NULL
  AND d.closed_at >= :start_at AND d.closed_at < :end_at AND {_OWNERS} AND {_PIPELINE}
GROUP BY d.{column}
""")


CLOSED_BY_OWNER = _closed_by("owner_id")
CLOSED_BY_PIPELINE = _closed_by("pipeline_id")

PIPELINE_NAMES = text("""
SELECT CAST(id AS text), name FROM pipelines
WHERE tenant_id = :tenant AND id = ANY(CAST(:ids AS uuid[]))
""")

DEAL_SIZE = text(f"""
SELECT GROUPING(d.owner_id) = 1 AS is_total, d.owner_id, d.currency, count(*) AS n,
       sum(d.amount) AS total, avg(d.amount) AS mean,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY d.amount) AS lower_middle,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY d.amount DESC) AS upper_middle
FROM deals d
WHERE d.tenant_id = :tenant AND d.status = 'won' AND d.deleted_at IS NULL
  AND d.closed_at >= :start_at AND d.closed_at < :end_at AND {_OWNERS} AND {_PIPELINE}
GROUP BY GROUPING SETS ((d.owner_id, d.currency), (d.currency))
ORDER BY d.owner_id NULLS FIRST, d.currency
""")


def _days(value: Any) -> str | None:
    return None if value is None else rounded(Decimal(str(value)))


class ReportService:
    def __init__(self, session: AsyncSession, scope: Scope) -> None:
        self.session = session
        self.scope = scope

    def _params(self, window: Window, pipeline: uuid.UUID | None = None) -> dict[str, Any]:
        return {
            "tenant": self.scope.tenant,
            "owners": self.scope.owner_list(),
            "pipeline": pipeline,
            "start_at": window.start_at,
            "end_at": window.end_at,
        }

    async def _check_pipeline(
        self, pipeline: uuid.UUID | None, work_mem: str | None = None
    ) -> None:
        await analytical(self.session, work_mem)
        if pipeline is None:
            return
        found = await self.session.execute(
            PIPELINE_EXISTS, {"tenant": self.scope.tenant, "pipeline": pipeline}
        )
        if found.first() is None:
            raise NotFound(f"pipeline {pipeline} not found")

    async def funnel(self, pipeline: uuid.UUID, window: Window) -> FunnelOut:
        await self._check_pipeline(pipeline, FUNNEL_WORK_MEM)
        rows = (await self.session.execute(FUNNEL, self._params(window, pipeline))).mappings()
        stages = [
            FunnelStage(
                stage_id=r["id"],
                name=r["name"],
                position=r["position"],
                is_won=r["is_won"],
                is_lost=r["is_lost"],
                entered=r["entered"],
                advanced=r["advanced"],
                won=r["won"],
                lost=r["lost"],
                conversion_to_next=ratio(r["advanced"], r["entered"]),
                conversion_to_won=ratio(r["won"], r["entered"]),
                median_days_in_stage=_days(r["median_days"]),
            )
            for r in rows
        ]
        return FunnelOut(pipeline_id=pipeline, from_=window.start, to=window.last, stages=stages)

    async def sales_cycle(self, window: Window, pipeline: uuid.UUID | None) -> SalesCycleOut:
        await self._check_pipeline(pipeline)
        rows = (await self.session.execute(SALES_CYCLE, self._params(window, pipeline))).mappings()
        groups: list[SalesCycleRow] = []
        total = SalesCycleRow(won_count=0, median_days=None, mean_days=None)
        for r in rows:
            row = SalesCycleRow(
                owner_id=None if r["is_total"] else r["owner_id"],
                won_count=r["n"],
                median_days=_days(r["median"]),
                mean_days=_days(r["mean"]),
            )
            if r["is_total"]:
                total = row
            else:
                groups.append(row)
        groups.sort(key=lambda g: g.owner_id or "")
        return SalesCycleOut(from_=window.start, to=window.last, groups=groups, total=total)

    async def win_rate(
        self, group_by: WinRateGroupBy, window: Window, pipeline: uuid.UUID | None
    ) -> WinRateOut:
        await self._check_pipeline(pipeline)
        params = self._params(window, pipeline)
        statement = CLOSED_BY_PIPELINE if group_by is WinRateGroupBy.pipeline else CLOSED_BY_OWNER
        counts = {r[0]: (r[1], r[2]) for r in await self.session.execute(statement, params)}
        won_total = sum(w for w, _ in counts.values())
        lost_total = sum(lost for _, lost in counts.values())
        names: dict[str, str] = {}
        if group_by is WinRateGroupBy.team:
            counts, names = await self._by_team(counts)
        elif group_by is WinRateGroupBy.pipeline and counts:
            rows = await self.session.execute(
                PIPELINE_NAMES, {"tenant": self.scope.tenant, "ids": sorted(counts)}
            )
            names = {r[0]: r[1] for r in rows}
        groups = [
            WinRateRow(
                key=key, name=names.get(key), won=won, lost=lost, win_rate=ratio(won, won + lost)
            )
            for key, (won, lost) in sorted(counts.items())
        ]
        total = WinRateRow(
            won=won_total, lost=lost_total, win_rate=ratio(won_total, won_total + lost_total)
        )
        return WinRateOut(
            group_by=group_by, from_=window.start, to=window.last, groups=groups, total=total
        )

    async def _by_team(
        self, per_owner: dict[str, tuple[int, int]]
    ) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
        """Roll owner counts up the team tree (each team includes its sub-teams; a user in
        several teams counts in each, once per team)."""
        if self.scope.is_all:
            params: dict[str, Any] = {"tenant": self.scope.tenant, "teams": None}
            teams = sorted(str(r[0]) for r in await self.session.execute(TEAM_NAMES, params))
        else:
            teams = sorted(self.scope.managed_teams)
        if not teams:
            return {}, {}
        params = {"tenant": self.scope.tenant, "teams": teams}
        members: dict[str, set[str]] = defaultdict(set)
        for team, user in await self.session.execute(TEAM_MEMBERS_ROLLED_UP, params):
            members[team].add(user)
        names = {str(r[0]): r[1] for r in await self.session.execute(TEAM_NAMES, params)}
        out: dict[str, tuple[int, int]] = {}
        for team in teams:
            won = sum(per_owner.get(u, (0, 0))[0] for u in members.get(team, ()))
            lost = sum(per_owner.get(u, (0, 0))[1] for u in members.get(team, ()))
            out[team] = (won, lost)
        return out, names

    async def deal_size(self, window: Window, pipeline: uuid.UUID | None) -> DealSizeOut:
        await self._check_pipeline(pipeline)
        rows = (await self.session.execute(DEAL_SIZE, self._params(window, pipeline))).mappings()
        groups: list[DealSizeRow] = []
        total: list[DealSizeRow] = []
        for r in rows:
            median = (r["lower_middle"] + r["upper_middle"]) / 2
            row = DealSizeRow(
                owner_id=None if r["is_total"] else r["owner_id"],
                currency=r["currency"].strip(),
                won_count=r["n"],
                total=money(r["total"]),
                mean=rounded(r["mean"]),
                median=rounded(median),
            )
            (total if r["is_total"] else groups).append(row)
        return DealSizeOut(from_=window.start, to=window.last, groups=groups, total=total)
