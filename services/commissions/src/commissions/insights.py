"""Leaderboards (ranked, ties shared, visible to the team) and the earnings estimator."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.driver import raw_connection
from chassis.http import decode_cursor, encode_cursor
from chassis.problems import NotFound, invalid
from commissions import periods
from commissions.access import Caller
from commissions.calc import Credit, split_percents
from commissions.engine import Engine
from commissions.errors import TeamNotFound
from commissions.events import Emitter
from commissions.quotas import check_period

Row = dict[str, Any]
METRICS = {"attainment": "attainment", "credit": "credit", "deals_won": "deals_won"}


class InsightService:
    def __init__(self, session: AsyncSession, caller: Caller) -> None:
        self.session = session
        self.caller = caller
        self.engine = Engine(session, Emitter(session, caller.tenant, caller.sub, caller.origin))

    async def leaderboard(
        self, period: str, metric: str, team_id: uuid.UUID | None, limit: int, cursor: str | None
    ) -> tuple[list[Row], str | None]:
        check_period(period)
        book = await self.engine.book()
        org = book.org
        if team_id is not None:
            tid = str(team_id)
            own = org.with_descendants(org.teams_of(self.caller.sub))
            allowed = self.caller.sees_tenant or tid in self.caller.managed_teams(org) or tid in own
            if tid not in org.parent or not allowed:
                raise TeamNotFound(team_id)
            users: set[str] | None = org.users_of(org.with_descendants({tid}))
        elif self.caller.sees_tenant:
            users = None
        elif self.caller.is_manager:
            users = self.caller.managed_users(org) | {self.caller.sub}
        else:
            # a rep sees the board of the teams they belong to
            users = org.users_of(org.teams_of(self.caller.sub)) | {self.caller.sub}
            if not self.caller.principal.has("sales_rep"):
                users = set()
        column = METRICS[metric]
        conn = await raw_connection(self.session)
        rows = await conn.fetch(
            f"SELECT user_id, {column} AS value, rank() OVER (ORDER BY {column} DESC) AS rank "
            "FROM statements WHERE tenant_id = $1 AND period = $2 AND "
            f"{column} IS NOT NULL AND ($3::text[] IS NULL OR user_id = ANY($3)) "
            "ORDER BY rank, user_id",
            self.caller.tenant,
            period,
            None if users is None else sorted(users),
        )
        offset = int(decode_cursor(cursor)["o"]) if cursor else 0  # type: ignore[index]
        page = [
            {"rank": r["rank"], "user_id": r["user_id"], "value": r["value"]}
            for r in rows[offset : offset + limit]
        ]
        nxt = encode_cursor({"o": offset + limit}) if len(rows) > offset + limit else None
        return page, nxt

    async def estimate(
        self,
        user_id: str | None,
        amount: Decimal,
        currency: str,
        close_date: date,
        split: Decimal,
        items: list[str],
    ) -> Row:
        """What `user_id` (default: the caller) would earn if a deal of `amount` closed on
        `close_date`: the statement recomputed with and without it."""
        user = user_id or self.caller.sub
        book = await self.engine.book()
        if user != self.caller.sub and not self.caller.may_manage(book.org, user):
            raise NotFound(f"no estimate for user {user}")
        if not self.caller.principal.has("admin", "sales_manager", "sales_rep", "service"):
            raise NotFound(f"no estimate for user {user}")
        units: dict[str, Decimal] = {}
        for i, item in enumerate(items):
            product, sep, qty = item.rpartition(":")
            try:
                q = Decimal(qty)
            except ArithmeticError:
                q = Decimal("NaN")
            if not sep or not product or not q.is_finite() or q < 0:
                raise invalid(["query", "item", i], "use product:quantity, e.g. Onboarding:3")
            units[product] = units.get(product, Decimal(0)) + q
        plan = book.plan_for(user, close_date, close_date)
        if plan is None:
            raise invalid(["query", "close_date"], f"user {user} has no plan on this date")
        period = periods.period_of(close_date, plan.period)
        inputs = await self.engine.load(period, [user])
        if user not in inputs.plans:
            raise invalid(["query", "close_date"], f"user {user} has no plan for {period}")
        percent = split_percents(user, [(user, split)])[user]
        source = "deal" if plan.versions[-1].credit_on == "deal_won" else "order"
        extra = Credit(source, "estimate", close_date, amount, currency, percent,
                       tuple(sorted(units.items())))  # fmt: skip
        before = inputs.compute(user)
        after = inputs.compute(user, [extra])
        lines = [
            line
            for line in after.lines
            if line not in before.lines or line.get("id", "").endswith(":estimate")
        ]
        return {
            "user_id": user,
            "period": period,
            "plan_id": inputs.plans[user].id,
            "plan_version": after.plan_version,
            "currency": after.currency,
            "credit": after.credit,
            "payout_before": before.payout,
            "payout_after": after.payout,
            "earned": after.payout - before.payout,
            "lines": lines,
        }
