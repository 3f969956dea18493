"""Immutable forecast snapshots and forecast accuracy.

A snapshot stores the whole forecast response as its taker saw it (their scope, the time),
and is never changed afterwards (no update endpoint, and a trigger rejects UPDATE).
Accuracy compares every snapshot of a period with what has actually closed won since, per
group and currency: `actual` is today's `closed_won` of the same group (same group_by and
team_id, computed in the reader's scope), `error` = forecast - actual, `error_percent` =
error / actual x 100 (two decimals, null when actual is 0).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.http import Page, encode_cursor
from chassis.problems import NotFound
from pipeline.access import Scope
from pipeline.analytics.adjustments import _keyset
from pipeline.analytics.figures import money, rounded
from pipeline.analytics.forecast import ForecastQuery, ForecastService, RateCache
from pipeline.analytics.periods import parse_period
from pipeline.analytics.schemas import (
    AccuracyFigure,
    AccuracyOut,
    AccuracyRow,
    ForecastOut,
    GroupBy,
    SnapshotAccuracy,
    SnapshotIn,
    SnapshotOut,
)

INSERT = text("""
INSERT INTO forecast_snapshots (tenant_id, id, period, group_by, team_id, taken_by, taken_at, data)
VALUES (:tenant, :id, :period, :group_by, :team_id, :by, :now, CAST(:data AS jsonb))
RETURNING *
""")

GET = text("""
SELECT * FROM forecast_snapshots
WHERE tenant_id = :tenant AND id = :id AND (CAST(:by AS text) IS NULL OR taken_by = :by)
""")

LIST = text("""
SELECT * FROM forecast_snapshots
WHERE tenant_id = :tenant
  AND (CAST(:period AS text) IS NULL OR period = :period)
  AND (CAST(:by AS text) IS NULL OR taken_by = :by)
  AND (CAST(:after_at AS timestamptz) IS NULL
       OR (taken_at, id) > (CAST(:after_at AS timestamptz), CAST(:after_id AS uuid)))
ORDER BY taken_at, id
LIMIT :limit
""")

# Accuracy reads at most this many snapshots of a period (the newest).
ACCURACY_MAX_SNAPSHOTS = 100

LATEST = text("""
SELECT * FROM (
    SELECT * FROM forecast_snapshots
    WHERE tenant_id = :tenant AND period = :period AND (CAST(:by AS text) IS NULL OR taken_by = :by)
    ORDER BY taken_at DESC, id DESC LIMIT :limit
) s ORDER BY taken_at, id
""")

ACCURACY_FIGURES = ("commit_forecast", "best_case_forecast", "weighted")


def snapshot_out(row: Any) -> SnapshotOut:
    data = row["data"]
    return SnapshotOut(
        id=row["id"],
        period=row["period"],
        group_by=row["group_by"],
        team_id=row["team_id"],
        taken_by=row["taken_by"],
        taken_at=row["taken_at"],
        forecast=data if isinstance(data, dict) else json.loads(data),
    )


class SnapshotService:
    def __init__(self, session: AsyncSession, scope: Scope, rates: RateCache | None = None) -> None:
        self.session = session
        self.scope = scope
        self.rates = rates

    @property
    def _by(self) -> str | None:
        """Admins see every snapshot of the tenant, others the ones they took."""
        return None if self.scope.is_all else self.scope.user

    async def create(self, body: SnapshotIn) -> SnapshotOut:
        period = parse_period(body.period)
        now = datetime.now(UTC)
        forecast = await ForecastService(self.session, self.scope, self.rates).compute(
            ForecastQuery(period, body.group_by, body.team_id), now
        )
        params = {
            "tenant": self.scope.tenant,
            "id": uuid.uuid4(),
            "period": period.label,
            "group_by": body.group_by.value,
            "team_id": body.team_id,
            "by": self.scope.user,
            "now": now,
            "data": forecast.model_dump_json(),
        }
        row = (await self.session.execute(INSERT, params)).mappings().one()
        return snapshot_out(row)

    async def get(self, snapshot_id: uuid.UUID) -> SnapshotOut:
        params = {"tenant": self.scope.tenant, "id": snapshot_id, "by": self._by}
        row = (await self.session.execute(GET, params)).mappings().first()
        if row is None:
            raise NotFound(f"snapshot {snapshot_id} not found")
        return snapshot_out(row)

    async def list(self, period: str | None, cursor: str | None, limit: int) -> Page[SnapshotOut]:
        if period is not None:
            parse_period(period)
        after_at, after_id = _keyset(cursor)
        params = {
            "tenant": self.scope.tenant,
            "period": period,
            "by": self._by,
            "after_at": after_at,
            "after_id": after_id,
            "limit": limit + 1,
        }
        rows = list((await self.session.execute(LIST, params)).mappings())
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor({"at": last["taken_at"].isoformat(), "id": str(last["id"])})
        return Page[SnapshotOut](
            items=[snapshot_out(r) for r in rows[:limit]], next_cursor=next_cursor
        )

    async def accuracy(self, period_label: str) -> AccuracyOut:
        period = parse_period(period_label)
        now = datetime.now(UTC)
        params = {
            "tenant": self.scope.tenant,
            "period": period.label,
            "by": self._by,
            "limit": ACCURACY_MAX_SNAPSHOTS,
        }
        snapshots = [
            snapshot_out(r) for r in (await self.session.execute(LATEST, params)).mappings()
        ]
        actuals: dict[tuple[str, str | None], ForecastOut | None] = {}
        forecasts = ForecastService(self.session, self.scope, self.rates)
        out: list[SnapshotAccuracy] = []
        for snap in snapshots:
            team = None if snap.team_id is None else str(snap.team_id)
            key = (snap.group_by.value, team)
            if key not in actuals:
                try:
                    actuals[key] = await forecasts.compute(
                        ForecastQuery(period, GroupBy(snap.group_by), snap.team_id), now
                    )
                except NotFound:  # the team left the reader's scope since
                    actuals[key] = None
            current = actuals[key]
            actual_groups: dict[tuple[str | None, str], Decimal] = {
                (g.key, g.currency): Decimal(g.closed_won)
                for g in (current.groups if current else [])
            }
            actual_total = {
                t.currency: Decimal(t.closed_won) for t in (current.total if current else [])
            }
            forecast = snap.forecast
            out.append(
                SnapshotAccuracy(
                    snapshot_id=snap.id,
                    taken_at=snap.taken_at,
                    taken_by=snap.taken_by,
                    group_by=snap.group_by,
                    team_id=snap.team_id,
                    groups=_compare(
                        {(g["key"], g["currency"]): g for g in forecast.get("groups", [])},
                        actual_groups,
                    ),
                    total=_compare(
                        {(None, t["currency"]): t for t in forecast.get("total", [])},
                        {(None, c): v for c, v in actual_total.items()},
                    ),
                )
            )
        return AccuracyOut(period=period.label, as_of=now, snapshots=out)


def _compare(
    forecast: dict[tuple[str | None, str], dict[str, Any]],
    actual: dict[tuple[str | None, str], Decimal],
) -> list[AccuracyRow]:
    rows = []
    for key, currency in sorted(set(forecast) | set(actual), key=lambda k: (k[0] or "", k[1])):
        predicted = forecast.get((key, currency), {})
        real = actual.get((key, currency), Decimal(0))
        figures = {}
        for name in ACCURACY_FIGURES:
            value = Decimal(predicted.get(name, "0"))
            error = value - real
            figures[name] = AccuracyFigure(
                forecast=money(value),
                error=money(error),
                error_percent=rounded(error / real * 100) if real else None,
            )
        rows.append(AccuracyRow(key=key, currency=currency, actual=money(real), **figures))
    return rows
