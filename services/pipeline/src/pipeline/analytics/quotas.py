"""Quota replica: commissions' `crm.commissions.quota.set.v1` upserted into
`forecast_quotas`, shown beside the forecast (`quota`, `gap`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.consumer import Consumer
from chassis.events import IncomingEvent, MalformedEvent
from chassis.problems import ProblemError
from crm.commissions.v1.commissions_pb2 import QuotaSet
from pipeline.analytics.periods import parse_period

consumer = Consumer("pipeline-quotas", context="commissions", aggregates=["quota"])

_CURRENCY = re.compile(r"^[A-Z]{3}$")

UPSERT = text("""
INSERT INTO forecast_quotas
    (tenant_id, id, user_id, team_id, period, amount, currency, version, updated_at)
VALUES (:tenant, :id, :user_id, :team_id, :period, :amount, :currency, :version, :now)
ON CONFLICT (tenant_id, id) DO UPDATE SET
    user_id = EXCLUDED.user_id, team_id = EXCLUDED.team_id, period = EXCLUDED.period,
    amount = EXCLUDED.amount, currency = EXCLUDED.currency, version = EXCLUDED.version,
    updated_at = EXCLUDED.updated_at
WHERE forecast_quotas.version < EXCLUDED.version
""")


@consumer.on("crm.commissions.quota.set.v1")
async def quota_set(session: AsyncSession, event: IncomingEvent) -> None:
    quota = event.parse(QuotaSet).quota
    if bool(quota.user_id) == bool(quota.team_id):
        raise MalformedEvent(f"quota {quota.id}: exactly one of user_id and team_id expected")
    try:
        parse_period(quota.period)
        amount = Decimal(quota.amount.amount)
    except (ProblemError, InvalidOperation) as e:
        raise MalformedEvent(f"quota {quota.id}: bad period or amount") from e
    if not amount.is_finite() or not _CURRENCY.match(quota.amount.currency):
        raise MalformedEvent(f"quota {quota.id}: bad amount or currency")
    await session.execute(
        UPSERT,
        {
            "tenant": event.tenant,
            "id": quota.id or event.aggregate_id,
            "user_id": quota.user_id or None,
            "team_id": quota.team_id or None,
            "period": quota.period,
            "amount": amount,
            "currency": quota.amount.currency,
            "version": quota.version or event.version,
            "now": datetime.now(UTC),
        },
    )
