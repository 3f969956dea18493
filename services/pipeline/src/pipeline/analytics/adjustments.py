"""Manager adjustments: a manager (or an admin) overrides one category total (commit,
best_case, pipeline) of a subordinate or of a team they manage, for a period and currency,
with a note. The forecast keeps the raw figure and shows the adjusted one beside it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.auth import Principal
from chassis.http import Page, check_if_match, decode_cursor, encode_cursor
from chassis.problems import Forbidden, NotFound, PreconditionFailed, invalid
from pipeline.access import Scope, team_subtree
from pipeline.analytics.figures import money
from pipeline.analytics.periods import parse_period
from pipeline.analytics.schemas import AdjustmentIn, AdjustmentOut

FIND = text("""
SELECT * FROM forecast_adjustments
WHERE tenant_id = :tenant AND period = :period AND subject_type = :kind AND subject_id = :subject
  AND category = :category AND currency = :currency
FOR UPDATE
""")

INSERT = text("""
INSERT INTO forecast_adjustments (tenant_id, id, period, subject_type, subject_id, category,
    currency, amount, note, adjusted_by, created_at, updated_at, version)
VALUES (:tenant, :id, :period, :kind, :subject, :category, :currency, :amount, :note, :by,
    :now, :now, 1)
RETURNING *
""")

UPDATE = text("""
UPDATE forecast_adjustments
SET amount = :amount, note = :note, adjusted_by = :by, updated_at = :now, version = version + 1
WHERE tenant_id = :tenant AND id = :id
RETURNING *
""")

GET = text("SELECT * FROM forecast_adjustments WHERE tenant_id = :tenant AND id = :id")
DELETE = text("DELETE FROM forecast_adjustments WHERE tenant_id = :tenant AND id = :id")

LIST = text("""
SELECT * FROM forecast_adjustments
WHERE tenant_id = :tenant
  AND (CAST(:period AS text) IS NULL OR period = :period)
  AND (CAST(:users AS text[]) IS NULL
       OR (subject_type = 'user' AND subject_id = ANY(CAST(:users AS text[])))
       OR (subject_type = 'team' AND subject_id = ANY(CAST(:teams AS text[]))))
  AND (CAST(:after_at AS timestamptz) IS NULL
       OR (created_at, id) > (CAST(:after_at AS timestamptz), CAST(:after_id AS uuid)))
ORDER BY created_at, id
LIMIT :limit
""")


def adjustment_out(row: Any) -> AdjustmentOut:
    is_user = row["subject_type"] == "user"
    return AdjustmentOut(
        id=row["id"],
        period=row["period"],
        user_id=row["subject_id"] if is_user else None,
        team_id=None if is_user else row["subject_id"],
        category=row["category"],
        currency=row["currency"].strip(),
        amount=money(row["amount"]),
        note=row["note"],
        adjusted_by=row["adjusted_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
    )


class AdjustmentService:
    def __init__(self, session: AsyncSession, principal: Principal, scope: Scope) -> None:
        self.session = session
        self.principal = principal
        self.scope = scope

    async def _authorize(self, body: AdjustmentIn) -> tuple[str, str]:
        if not self.principal.has("admin", "sales_manager"):
            raise Forbidden("only a manager of the user or team, or an admin, adjusts a forecast")
        if body.user_id is not None:
            if not self.scope.is_all and (
                body.user_id == self.scope.user or not self.scope.sees(body.user_id)
            ):
                raise Forbidden(f"{body.user_id} is not one of your subordinates")
            return "user", body.user_id
        team = str(body.team_id)
        if not self.scope.is_all and team not in self.scope.managed_teams:
            raise NotFound(f"team {team} not found")
        if not await team_subtree(self.session, self.scope.tenant, team):
            raise NotFound(f"team {team} not found")
        return "team", team

    async def put(self, body: AdjustmentIn, if_match: str | None) -> tuple[AdjustmentOut, bool]:
        parse_period(body.period)
        kind, subject = await self._authorize(body)
        now = datetime.now(UTC)
        params: dict[str, Any] = {
            "tenant": self.scope.tenant,
            "period": body.period,
            "kind": kind,
            "subject": subject,
            "category": body.category.value,
            "currency": body.currency,
            "amount": Decimal(body.amount),
            "note": body.note,
            "by": self.principal.sub,
            "now": now,
        }
        existing = (await self.session.execute(FIND, params)).mappings().first()
        if existing is None:
            if if_match is not None and if_match.strip():
                raise PreconditionFailed("no such adjustment to match")
            row = (
                (await self.session.execute(INSERT, {**params, "id": uuid.uuid4()}))
                .mappings()
                .one()
            )
            return adjustment_out(row), True
        check_if_match(if_match, existing["version"])
        row = (
            (await self.session.execute(UPDATE, {**params, "id": existing["id"]})).mappings().one()
        )
        return adjustment_out(row), False

    def _visible(self, row: Any) -> bool:
        if self.scope.is_all:
            return True
        if row["subject_type"] == "user":
            return self.scope.sees(row["subject_id"])
        return row["subject_id"] in self.scope.managed_teams

    async def get(self, adjustment_id: uuid.UUID) -> AdjustmentOut:
        params = {"tenant": self.scope.tenant, "id": adjustment_id}
        row = (await self.session.execute(GET, params)).mappings().first()
        if row is None or not self._visible(row):
            raise NotFound(f"adjustment {adjustment_id} not found")
        return adjustment_out(row)

    async def delete(self, adjustment_id: uuid.UUID, if_match: str | None) -> None:
        current = await self.get(adjustment_id)
        if not self.principal.has("admin", "sales_manager") or (
            not self.scope.is_all and current.user_id == self.scope.user
        ):
            raise Forbidden("only a manager of the user or team, or an admin, adjusts a forecast")
        check_if_match(if_match, current.version)
        await self.session.execute(DELETE, {"tenant": self.scope.tenant, "id": adjustment_id})

    async def list(self, period: str | None, cursor: str | None, limit: int) -> Page[AdjustmentOut]:
        if period is not None:
            parse_period(period)
        after_at, after_id = _keyset(cursor)
        params = {
            "tenant": self.scope.tenant,
            "period": period,
            "users": self.scope.owner_list(),
            "teams": sorted(self.scope.managed_teams),
            "after_at": after_at,
            "after_id": after_id,
            "limit": limit + 1,
        }
        rows = list((await self.session.execute(LIST, params)).mappings())
        items = [adjustment_out(r) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor(
                {"at": last["created_at"].isoformat(), "id": str(last["id"])}
            )
        return Page[AdjustmentOut](items=items, next_cursor=next_cursor)


def _keyset(cursor: str | None) -> tuple[datetime | None, uuid.UUID | None]:
    """The (timestamp, id) position a list cursor carries."""
    after = decode_cursor(cursor)
    if after is None:
        return None, None
    try:
        return datetime.fromisoformat(str(after["at"])), uuid.UUID(str(after["id"]))
    except (KeyError, ValueError) as e:
        raise invalid("cursor", "not a cursor returned by this API") from e
