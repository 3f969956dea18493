"""Reports: SLA attainment, CSAT and NPS. Percentages and averages are decimal strings
(ROUND_HALF_UP), never floats; medians are minutes as decimal strings with one decimal."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.problems import invalid

ONE = Decimal("0.1")
TWO = Decimal("0.01")


def pct(part: int, whole: int) -> str | None:
    if not whole:
        return None
    return str((Decimal(part) * 100 / Decimal(whole)).quantize(ONE, ROUND_HALF_UP))


def minutes(value: Any) -> str | None:
    return None if value is None else str(Decimal(str(value)).quantize(ONE, ROUND_HALF_UP))


def _range(start: datetime | None, end: datetime | None) -> dict[str, Any]:
    if start and end and end <= start:
        raise invalid("to", "must be after from")
    return {"from": start, "to": end}


_SLA_KEYS = {
    "agent": "t.assignee_id",
    "group": "CAST(t.group_id AS text)",
    "priority": "c.priority",
}

_SLA = """
SELECT {key} AS key,
  count(*) FILTER (WHERE c.fulfilled_at IS NOT NULL OR c.breached_at IS NOT NULL) AS measured,
  count(*) FILTER (WHERE c.fulfilled_at IS NOT NULL AND c.breached_at IS NULL
                   AND c.fulfilled_at <= c.due_at) AS met,
  count(*) FILTER (WHERE c.breached_at IS NOT NULL OR c.fulfilled_at > c.due_at) AS breaches,
  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM c.business_elapsed) / 60)
    FILTER (WHERE c.metric = 'first_response' AND c.fulfilled_at IS NOT NULL) AS fr_business,
  percentile_cont(0.5) WITHIN GROUP
    (ORDER BY extract(epoch FROM c.fulfilled_at - c.started_at) / 60)
    FILTER (WHERE c.metric = 'first_response' AND c.fulfilled_at IS NOT NULL) AS fr_calendar,
  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM c.business_elapsed) / 60)
    FILTER (WHERE c.metric = 'resolution' AND c.fulfilled_at IS NOT NULL) AS res_business,
  percentile_cont(0.5) WITHIN GROUP
    (ORDER BY extract(epoch FROM c.fulfilled_at - c.started_at) / 60)
    FILTER (WHERE c.metric = 'resolution' AND c.fulfilled_at IS NOT NULL) AS res_calendar
FROM sla_clocks c JOIN tickets t ON t.tenant_id = c.tenant_id AND t.id = c.ticket_id
WHERE c.tenant_id = :t
  AND (CAST(:from AS timestamptz) IS NULL OR c.started_at >= :from)
  AND (CAST(:to AS timestamptz) IS NULL OR c.started_at < :to)
GROUP BY 1 ORDER BY 1 NULLS LAST
"""


async def sla_report(
    session: AsyncSession,
    tenant: str,
    start: datetime | None,
    end: datetime | None,
    group_by: Literal["agent", "group", "priority"],
) -> dict[str, Any]:
    rows = await session.execute(
        text(_SLA.format(key=_SLA_KEYS[group_by])), {"t": tenant, **_range(start, end)}
    )
    items = [
        {
            "key": r.key,
            "targets": r.measured,
            "met": r.met,
            "breaches": r.breaches,
            "met_pct": pct(r.met, r.measured),
            "median_first_response_minutes": {
                "business": minutes(r.fr_business),
                "calendar": minutes(r.fr_calendar),
            },
            "median_resolution_minutes": {
                "business": minutes(r.res_business),
                "calendar": minutes(r.res_calendar),
            },
        }
        for r in rows
    ]
    return {"group_by": group_by, "from": start, "to": end, "items": items}


_CSAT_KEYS = {"agent": "assignee_id", "group": "CAST(group_id AS text)", "none": "NULL"}


async def csat_report(
    session: AsyncSession,
    tenant: str,
    start: datetime | None,
    end: datetime | None,
    group_by: Literal["agent", "group", "none"],
) -> dict[str, Any]:
    rows = await session.execute(
        text(
            f"SELECT {_CSAT_KEYS[group_by]} AS key, count(*) AS n, sum(score) AS total, "
            "count(*) FILTER (WHERE score >= 4) AS satisfied FROM csat_surveys "
            "WHERE tenant_id = :t AND answered_at IS NOT NULL "
            "AND (CAST(:from AS timestamptz) IS NULL OR answered_at >= :from) "
            "AND (CAST(:to AS timestamptz) IS NULL OR answered_at < :to) "
            "GROUP BY 1 ORDER BY 1 NULLS LAST"
        ),
        {"t": tenant, **_range(start, end)},
    )
    items = [
        {
            "key": r.key,
            "responses": r.n,
            "average": str((Decimal(r.total) / Decimal(r.n)).quantize(TWO, ROUND_HALF_UP)),
            "satisfied": r.satisfied,
            "satisfied_pct": pct(r.satisfied, r.n),
        }
        for r in rows
    ]
    out: dict[str, Any] = {"group_by": group_by, "from": start, "to": end, "items": items}
    if group_by == "none":
        first = items[0] if items else None
        out.update(
            responses=first["responses"] if first else 0,
            average=first["average"] if first else None,
            satisfied_pct=first["satisfied_pct"] if first else None,
        )
    return out


async def nps_report(
    session: AsyncSession, tenant: str, survey_id: uuid.UUID | None
) -> dict[str, Any]:
    r = (
        await session.execute(
            text(
                "SELECT count(*) AS n, count(*) FILTER (WHERE score >= 9) AS promoters, "
                "count(*) FILTER (WHERE score BETWEEN 7 AND 8) AS passives, "
                "count(*) FILTER (WHERE score <= 6) AS detractors FROM nps_invitations "
                "WHERE tenant_id = :t AND answered_at IS NOT NULL "
                "AND (CAST(:survey AS uuid) IS NULL OR survey_id = :survey)"
            ),
            {"t": tenant, "survey": survey_id},
        )
    ).one()
    nps = None
    if r.n:
        nps = str(
            (Decimal(r.promoters - r.detractors) * 100 / Decimal(r.n)).quantize(ONE, ROUND_HALF_UP)
        )
    return {
        "survey_id": survey_id,
        "responses": r.n,
        "promoters": r.promoters,
        "passives": r.passives,
        "detractors": r.detractors,
        "nps": nps,
    }
