"""Quotas of users and teams per period. Only an admin or a manager of the user (of the team)
sets them; a rep setting any quota gets 403 (users cannot edit their own quota)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.driver import raw_connection
from chassis.http import check_if_match, decode_cursor, encode_cursor
from chassis.problems import Forbidden, invalid
from commissions import periods
from commissions.access import Caller
from commissions.calc import dec
from commissions.engine import Engine, audit
from commissions.errors import NotYourManager, QuotaNotFound
from commissions.events import Emitter
from commissions.schemas import QuotaIn

Row = dict[str, Any]


def check_period(period: str, path: str = "period") -> str:
    try:
        periods.kind_of(period)
    except periods.BadPeriod as e:
        raise invalid(path, str(e)) from e
    return period


def quota_out(row: Row) -> Row:
    kind, owner = row["owner_kind"], row["owner_id"]
    return {
        **row,
        "id": f"{kind}:{owner}:{row['period']}",
        "user_id": owner if kind == "user" else None,
        "team_id": owner if kind == "team" else None,
        "currency": row["currency"].strip(),
    }


class QuotaService:
    def __init__(self, session: AsyncSession, caller: Caller) -> None:
        self.session = session
        self.caller = caller
        self.emit = Emitter(session, caller.tenant, caller.sub, caller.origin)
        self.engine = Engine(session, self.emit)

    async def _conn(self) -> Any:
        return await raw_connection(self.session)

    async def put(
        self, kind: str, owner: str, period: str, body: QuotaIn, if_match: str | None
    ) -> tuple[Row, bool]:
        check_period(period)
        self.caller.require_manager_role("set quotas")
        book = await self.engine.book()
        if kind == "user":
            if not self.caller.may_manage(book.org, owner):
                raise NotYourManager("set this user's quota")
        elif not self.caller.principal.is_admin and owner not in self.caller.managed_teams(
            book.org
        ):
            raise Forbidden("only a manager of the team (or an admin) may set its quota")
        conn = await self._conn()
        old = await conn.fetchrow(
            "SELECT * FROM quotas WHERE tenant_id = $1 AND owner_kind = $2 AND owner_id = $3 "
            "AND period = $4 FOR UPDATE",
            self.caller.tenant,
            kind,
            owner,
            period,
        )
        if old is not None:
            check_if_match(if_match, old["version"])
            if old["amount"] == body.amount and old["currency"].strip() == body.currency:
                return quota_out(dict(old)), False
        changed = [] if old is None else [
            f for f, new in (("amount", body.amount), ("currency", body.currency))
            if (old[f].strip() if f == "currency" else old[f]) != new
        ]  # fmt: skip
        row = await conn.fetchrow(
            "INSERT INTO quotas (tenant_id, owner_kind, owner_id, period, amount, currency, "
            "version, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8) "
            "ON CONFLICT (tenant_id, owner_kind, owner_id, period) DO UPDATE SET "
            "amount = EXCLUDED.amount, currency = EXCLUDED.currency, "
            "version = quotas.version + 1, updated_at = EXCLUDED.updated_at, "
            "updated_by = EXCLUDED.updated_by RETURNING *",
            self.caller.tenant,
            kind,
            owner,
            period,
            body.amount,
            body.currency,
            datetime.now(UTC),
            self.caller.sub,
        )
        data = dict(row)
        self.emit.quota_set(data, changed)
        await audit(
            conn,
            self.caller.tenant,
            self.caller.sub,
            "quota.set",
            f"{kind}_quota",
            f"{owner}:{period}",
            {"amount": dec(body.amount), "currency": body.currency},
        )
        if kind == "user":
            await self.engine.recompute({(owner, period)})
        return quota_out(data), old is None

    async def get(self, kind: str, owner: str, period: str) -> Row:
        check_period(period)
        book = await self.engine.book()
        visible = (
            self.caller.can_see_user(book.org, owner)
            if kind == "user"
            else self.caller.sees_tenant
            or owner in self.caller.managed_teams(book.org)
            or owner in book.org.teams_of(self.caller.sub)
        )
        conn = await self._conn()
        row = await conn.fetchrow(
            "SELECT * FROM quotas WHERE tenant_id = $1 AND owner_kind = $2 AND owner_id = $3 "
            "AND period = $4",
            self.caller.tenant,
            kind,
            owner,
            period,
        )
        if row is None or not visible:
            raise QuotaNotFound(owner, period)
        return quota_out(dict(row))

    async def list_all(
        self, period: str | None, user_id: str | None, limit: int, cursor: str | None
    ) -> tuple[list[Row], str | None]:
        if period is not None:
            check_period(period)
        book = await self.engine.book()
        visible = self.caller.visible_users(book.org)
        after = decode_cursor(cursor)
        conn = await self._conn()
        rows = await conn.fetch(
            "SELECT * FROM quotas WHERE tenant_id = $1 AND owner_kind = 'user' "
            "AND ($2::text IS NULL OR period = $2) AND ($3::text IS NULL OR owner_id = $3) "
            "AND ($4::text[] IS NULL OR owner_id = ANY($4)) "
            "AND ($5::text IS NULL OR (period, owner_id) > ($5, $6::text)) "
            "ORDER BY period, owner_id LIMIT $7",
            self.caller.tenant,
            period,
            user_id,
            None if visible is None else sorted(visible),
            after["p"] if after else None,
            after["o"] if after else None,
            limit + 1,
        )
        page = [quota_out(dict(r)) for r in rows[:limit]]
        nxt = None
        if len(rows) > limit:
            nxt = encode_cursor({"p": page[-1]["period"], "o": page[-1]["owner_id"]})
        return page, nxt


def team_uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError as e:
        raise invalid("team_id", "must be a UUID") from e
