"""The activities report: per rep and type, count and total / average recorded duration, over
the whole range and per UTC day or ISO week. Scoped by the sales org like every read."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.problems import NotFound, invalid
from pipeline import access
from pipeline.engagement import repository as repo
from pipeline.engagement.caller import Caller
from pipeline.engagement.schemas import (
    ActivityBucket,
    ActivityReport,
    ActivityReportRow,
    GroupBy,
)

MAX_DAYS = 732


class TeamNotFound(NotFound):
    def __init__(self, team_id: str) -> None:
        super().__init__(f"team {team_id} not found")


def _average(value: Decimal | None) -> float | None:
    if value is None:
        return None
    return float(Decimal(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN))


def _figures(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "count": int(row["count"]),
        "total_duration_seconds": int(row["total"]),
        "average_duration_seconds": _average(row["average"]),
    }


def build_report(
    start: date, end: date, group_by: GroupBy, rows: Iterable[dict[str, Any]]
) -> ActivityReport:
    """Nest the flat aggregation (a total row per owner and type, `bucket` NULL, first) into
    report rows with their buckets."""
    items: list[ActivityReportRow] = []
    for row in rows:
        if row["bucket"] is None:
            items.append(
                ActivityReportRow(
                    owner_id=row["owner_id"], type=row["type"], buckets=[], **_figures(row)
                )
            )
        else:
            items[-1].buckets.append(ActivityBucket(start=row["bucket"], **_figures(row)))
    return ActivityReport(from_=start, to=end, group_by=group_by, items=items)


async def activities_report(
    session: AsyncSession,
    caller: Caller,
    start: date,
    end: date,
    group_by: GroupBy,
    owner_id: str | None,
    team_id: str | None,
) -> ActivityReport:
    if end < start:
        raise invalid("to", "must not be before from")
    if (end - start).days >= MAX_DAYS:
        raise invalid("to", f"the range may span at most {MAX_DAYS} days")
    owners: set[str] | None = None if caller.scope.owners is None else set(caller.scope.owners)
    if team_id is not None:
        subtree = await access.team_subtree(session, caller.tenant, team_id)
        if not subtree:
            raise TeamNotFound(team_id)
        members = await access.members_of(session, caller.tenant, subtree)
        owners = members if owners is None else owners & members
    if owner_id is not None:
        owners = {owner_id} if owners is None else owners & {owner_id}
    rows = await repo.activity_figures(
        session,
        caller.tenant,
        datetime.combine(start, time.min, UTC),
        datetime.combine(end + timedelta(days=1), time.min, UTC),
        group_by,
        owners,
    )
    return build_report(start, end, group_by, rows)
