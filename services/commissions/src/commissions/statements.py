"""Statements (draft -> approved by a manager -> paid by an admin), period close, manual
adjustments and disputes. Every state change bumps the aggregate's version, emits exactly
one event and leaves an audit entry."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.driver import raw_connection
from chassis.http import check_if_match, decode_cursor, encode_cursor
from chassis.problems import Forbidden, invalid
from commissions import periods
from commissions.access import Caller
from commissions.calc import dec
from commissions.engine import Engine, Outcome, audit
from commissions.errors import (
    AdjustmentNotFound,
    DisputeNotFound,
    InvalidTransition,
    NotYourManager,
    PeriodAlreadyClosed,
    PeriodClosed,
    StatementNotFound,
)
from commissions.events import Emitter
from commissions.quotas import check_period
from commissions.schemas import AdjustmentIn, DisputeIn, DisputePatch

Row = dict[str, Any]


def statement_out(row: Any) -> Row:
    data = dict(row)
    if isinstance(data.get("lines"), str):
        data["lines"] = json.loads(data["lines"])
    data["currency"] = data["currency"].strip()
    return data


def _strip(row: Any) -> Row:
    data = dict(row)
    if "currency" in data:
        data["currency"] = data["currency"].strip()
    return data


class StatementService:
    def __init__(self, session: AsyncSession, caller: Caller) -> None:
        self.session = session
        self.caller = caller
        self.emit = Emitter(session, caller.tenant, caller.sub, caller.origin)
        self.engine = Engine(session, self.emit)

    async def _conn(self) -> Any:
        return await raw_connection(self.session)

    async def _visible(self) -> list[str] | None:
        book = await self.engine.book()
        visible = self.caller.visible_users(book.org)
        return None if visible is None else sorted(visible)

    # --- statements -------------------------------------------------------------------------

    async def list_all(
        self,
        user_id: str | None,
        period: str | None,
        status: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[Row], str | None]:
        if period is not None:
            check_period(period)
        after = decode_cursor(cursor)
        conn = await self._conn()
        rows = await conn.fetch(
            "SELECT * FROM statements WHERE tenant_id = $1 "
            "AND ($2::text IS NULL OR user_id = $2) AND ($3::text IS NULL OR period = $3) "
            "AND ($4::text IS NULL OR status = $4) AND ($5::text[] IS NULL OR user_id = ANY($5)) "
            "AND ($6::text IS NULL OR (period, user_id) > ($6, $7::text)) "
            "ORDER BY period, user_id LIMIT $8",
            self.caller.tenant,
            user_id,
            period,
            status,
            await self._visible(),
            after["p"] if after else None,
            after["u"] if after else None,
            limit + 1,
        )
        page = [statement_out(r) for r in rows[:limit]]
        nxt = None
        if len(rows) > limit:
            nxt = encode_cursor({"p": page[-1]["period"], "u": page[-1]["user_id"]})
        return page, nxt

    async def _row(self, statement_id: uuid.UUID, *, lock: bool = False) -> Row:
        conn = await self._conn()
        row = await conn.fetchrow(
            "SELECT * FROM statements WHERE tenant_id = $1 AND id = $2"
            + (" FOR UPDATE" if lock else ""),
            self.caller.tenant,
            statement_id,
        )
        if row is None:
            raise StatementNotFound(statement_id)
        book = await self.engine.book()
        if not self.caller.can_see_user(book.org, row["user_id"]):
            raise StatementNotFound(statement_id)
        return statement_out(row)

    async def get(self, statement_id: uuid.UUID) -> Row:
        return await self._row(statement_id)

    async def _transition(
        self, statement_id: uuid.UUID, if_match: str | None, wanted: str, action: str
    ) -> Row:
        row = await self._row(statement_id, lock=True)
        book = await self.engine.book()
        if wanted == "approved":
            self.caller.require_manager_role("approve statements")
            if not self.caller.may_manage(book.org, row["user_id"]):
                raise NotYourManager("approve this statement")
            expected = "draft"
        else:
            self.caller.require_admin("mark statements paid")
            expected = "approved"
        check_if_match(if_match, row["version"])
        if row["status"] != expected:
            raise InvalidTransition("the statement", row["status"], wanted)
        conn = await self._conn()
        who, when = (
            ("approved_by", "approved_at") if wanted == "approved" else ("paid_by", "paid_at")
        )
        updated = await conn.fetchrow(
            f"UPDATE statements SET status = $3, {who} = $4, {when} = $5, "
            "version = version + 1, updated_at = $5 WHERE tenant_id = $1 AND id = $2 RETURNING *",
            self.caller.tenant,
            statement_id,
            wanted,
            self.caller.sub,
            datetime.now(UTC),
        )
        out = statement_out(updated)
        self.emit.statement_updated(out, ["status"], row["payout"])
        await audit(conn, self.caller.tenant, self.caller.sub, f"statement.{action}",
                    "statement", str(statement_id), {"payout": dec(row["payout"])})  # fmt: skip
        return out

    async def approve(self, statement_id: uuid.UUID, if_match: str | None) -> Row:
        return await self._transition(statement_id, if_match, "approved", "approved")

    async def pay(self, statement_id: uuid.UUID, if_match: str | None) -> Row:
        return await self._transition(statement_id, if_match, "paid", "paid")

    # --- periods ----------------------------------------------------------------------------

    async def period(self, period: str) -> Row:
        check_period(period)
        self.caller.require_manager_role("read periods")
        conn = await self._conn()
        closed = await conn.fetchrow(
            "SELECT * FROM closed_periods WHERE tenant_id = $1 AND period = $2",
            self.caller.tenant,
            period,
        )
        count = await conn.fetchval(
            "SELECT count(*) FROM statements WHERE tenant_id = $1 AND period = $2",
            self.caller.tenant,
            period,
        )
        return {
            "period": period,
            "closed": closed is not None,
            "statements": count,
            "closed_at": closed["closed_at"] if closed else None,
            "closed_by": closed["closed_by"] if closed else None,
        }

    async def close(self, period: str) -> Row:
        """Lock every statement of the period; later changes become adjustments of the next
        open period."""
        check_period(period)
        self.caller.require_admin("close periods")
        conn = await self._conn()
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))", f"{self.caller.tenant}:{period}"
        )
        exists = await conn.fetchval(
            "SELECT 1 FROM closed_periods WHERE tenant_id = $1 AND period = $2",
            self.caller.tenant,
            period,
        )
        if exists:
            raise PeriodAlreadyClosed(period)
        # make sure every statement is current before it is frozen
        await self.recompute(period, check=False)
        now = datetime.now(UTC)
        rows = await conn.fetch(
            "UPDATE statements SET locked = true, version = version + 1, updated_at = $3 "
            "WHERE tenant_id = $1 AND period = $2 AND NOT locked RETURNING *",
            self.caller.tenant,
            period,
            now,
        )
        for r in rows:
            out = statement_out(r)
            self.emit.statement_updated(out, ["locked"], r["payout"])
        total = await conn.fetchval(
            "SELECT count(*) FROM statements WHERE tenant_id = $1 AND period = $2",
            self.caller.tenant,
            period,
        )
        await conn.execute(
            "INSERT INTO closed_periods (tenant_id, period, statements, closed_at, closed_by) "
            "VALUES ($1, $2, $3, $4, $5)",
            self.caller.tenant,
            period,
            total,
            now,
            self.caller.sub,
        )
        self.emit.period_closed(period, total)
        await audit(conn, self.caller.tenant, self.caller.sub, "period.closed", "period", period,
                    {"statements": total})  # fmt: skip
        return {"period": period, "closed": True, "statements": total, "closed_at": now,
                "closed_by": self.caller.sub}  # fmt: skip

    async def recompute(self, period: str, *, check: bool = True) -> Outcome:
        """Recompute every statement of a period (users with credits dated in it or with a
        statement for it)."""
        if check:
            check_period(period)
            self.caller.require_admin("recompute periods")
        start, end = periods.bounds(period)
        conn = await self._conn()
        rows = await conn.fetch(
            "SELECT DISTINCT user_id FROM credits WHERE tenant_id = $1 "
            "AND credit_date BETWEEN $2 AND $3 UNION SELECT user_id FROM statements "
            "WHERE tenant_id = $1 AND period = $4 UNION SELECT user_id FROM adjustments "
            "WHERE tenant_id = $1 AND period = $4",
            self.caller.tenant,
            start,
            end,
            period,
        )
        return await self.engine.recompute({(r["user_id"], period) for r in rows})

    # --- adjustments ------------------------------------------------------------------------

    async def _is_closed(self, period: str) -> bool:
        conn = await self._conn()
        return bool(
            await conn.fetchval(
                "SELECT 1 FROM closed_periods WHERE tenant_id = $1 AND period = $2",
                self.caller.tenant,
                period,
            )
        )

    async def add_adjustment(self, body: AdjustmentIn) -> Row:
        check_period(body.period)
        self.caller.require_manager_role("book adjustments")
        book = await self.engine.book()
        if not self.caller.may_manage(book.org, body.user_id):
            raise NotYourManager("book adjustments for this user")
        if await self._is_closed(body.period):
            raise PeriodClosed(body.period)
        start, end = periods.bounds(body.period)
        plan = book.plan_for(body.user_id, start, end)
        if plan is None or plan.period != periods.kind_of(body.period):
            raise invalid("period", f"user {body.user_id} has no {periods.kind_of(body.period)} "
                          "commission plan for this period")  # fmt: skip
        conn = await self._conn()
        row = await self.engine.book_adjustment(
            conn, body.user_id, body.period, body.amount, plan.currency, "manual", body.reason,
            self.caller.sub,
        )  # fmt: skip
        await self.engine.recompute({(body.user_id, body.period)})
        return row

    async def adjustments(
        self, user_id: str | None, period: str | None, limit: int, cursor: str | None
    ) -> tuple[list[Row], str | None]:
        if period is not None:
            check_period(period)
        after = decode_cursor(cursor)
        conn = await self._conn()
        rows = await conn.fetch(
            "SELECT * FROM adjustments WHERE tenant_id = $1 "
            "AND ($2::text IS NULL OR user_id = $2) AND ($3::text IS NULL OR period = $3) "
            "AND ($4::text[] IS NULL OR user_id = ANY($4)) "
            "AND ($5::timestamptz IS NULL OR (created_at, id) > ($5, $6::uuid)) "
            "ORDER BY created_at, id LIMIT $7",
            self.caller.tenant,
            user_id,
            period,
            await self._visible(),
            datetime.fromisoformat(after["t"]) if after else None,
            uuid.UUID(after["i"]) if after else None,
            limit + 1,
        )
        page = [_strip(r) for r in rows[:limit]]
        nxt = None
        if len(rows) > limit:
            nxt = encode_cursor({"t": page[-1]["created_at"].isoformat(), "i": str(page[-1]["id"])})
        return page, nxt

    async def adjustment(self, adjustment_id: uuid.UUID) -> Row:
        conn = await self._conn()
        row = await conn.fetchrow(
            "SELECT * FROM adjustments WHERE tenant_id = $1 AND id = $2",
            self.caller.tenant,
            adjustment_id,
        )
        book = await self.engine.book()
        if row is None or not self.caller.can_see_user(book.org, row["user_id"]):
            raise AdjustmentNotFound(adjustment_id)
        return _strip(row)

    # --- disputes ---------------------------------------------------------------------------

    async def open_dispute(self, statement_id: uuid.UUID, body: DisputeIn) -> Row:
        st = await self._row(statement_id)
        if st["user_id"] != self.caller.sub:
            raise Forbidden("only the statement's own rep may dispute it")
        if not any(line.get("id") == body.line_id for line in st["lines"]):
            raise invalid("line_id", "no such line on this statement")
        conn = await self._conn()
        row = await conn.fetchrow(
            "INSERT INTO disputes (tenant_id, id, statement_id, line_id, user_id, period, "
            "reason, expected_amount, status, version, created_at, created_by) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'open', 1, $9, $10) RETURNING *",
            self.caller.tenant,
            uuid.uuid4(),
            statement_id,
            body.line_id,
            st["user_id"],
            st["period"],
            body.reason,
            body.expected_amount,
            datetime.now(UTC),
            self.caller.sub,
        )
        out = dict(row)
        self.emit.dispute_opened(out)
        await audit(
            conn,
            self.caller.tenant,
            self.caller.sub,
            "dispute.opened",
            "dispute",
            str(out["id"]),
            {"statement_id": str(statement_id), "line_id": body.line_id},
        )
        return out

    async def _dispute(self, dispute_id: uuid.UUID, *, lock: bool = False) -> Row:
        conn = await self._conn()
        row = await conn.fetchrow(
            "SELECT * FROM disputes WHERE tenant_id = $1 AND id = $2"
            + (" FOR UPDATE" if lock else ""),
            self.caller.tenant,
            dispute_id,
        )
        book = await self.engine.book()
        if row is None or not self.caller.can_see_user(book.org, row["user_id"]):
            raise DisputeNotFound(dispute_id)
        return dict(row)

    async def dispute(self, dispute_id: uuid.UUID) -> Row:
        return await self._dispute(dispute_id)

    async def disputes(
        self, status: str | None, user_id: str | None, limit: int, cursor: str | None
    ) -> tuple[list[Row], str | None]:
        after = decode_cursor(cursor)
        conn = await self._conn()
        rows = await conn.fetch(
            "SELECT * FROM disputes WHERE tenant_id = $1 "
            "AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR user_id = $3) "
            "AND ($4::text[] IS NULL OR user_id = ANY($4)) "
            "AND ($5::timestamptz IS NULL OR (created_at, id) > ($5, $6::uuid)) "
            "ORDER BY created_at, id LIMIT $7",
            self.caller.tenant,
            status,
            user_id,
            await self._visible(),
            datetime.fromisoformat(after["t"]) if after else None,
            uuid.UUID(after["i"]) if after else None,
            limit + 1,
        )
        page = [dict(r) for r in rows[:limit]]
        nxt = None
        if len(rows) > limit:
            nxt = encode_cursor({"t": page[-1]["created_at"].isoformat(), "i": str(page[-1]["id"])})
        return page, nxt

    async def resolve(
        self, dispute_id: uuid.UUID, patch: DisputePatch, if_match: str | None
    ) -> Row:
        d = await self._dispute(dispute_id, lock=True)
        self.caller.require_manager_role("resolve disputes")
        book = await self.engine.book()
        if not self.caller.may_manage(book.org, d["user_id"]):
            raise NotYourManager("resolve this dispute")
        check_if_match(if_match, d["version"])
        if d["status"] != "open":
            raise InvalidTransition("the dispute", d["status"], patch.status)
        conn = await self._conn()
        adjustment_id = None
        if patch.status == "accepted" and patch.adjustment_amount:
            st = await conn.fetchrow(
                "SELECT * FROM statements WHERE tenant_id = $1 AND id = $2",
                self.caller.tenant,
                d["statement_id"],
            )
            target = st["period"]
            locked = st["locked"] or st["status"] == "paid"
            while locked or await self._is_closed(target):
                target = periods.next_period(target)
                locked = False
            adj = await self.engine.book_adjustment(
                conn, d["user_id"], target, patch.adjustment_amount, st["currency"].strip(),
                "dispute", f"dispute {dispute_id}: {patch.resolution}", self.caller.sub,
                None if target == st["period"] else st["period"], dispute_id,
            )  # fmt: skip
            adjustment_id = adj["id"]
            await self.engine.recompute({(d["user_id"], target)})
        row = await conn.fetchrow(
            "UPDATE disputes SET status = $3, resolution = $4, adjustment_id = $5, "
            "resolved_at = $6, resolved_by = $7, version = version + 1 "
            "WHERE tenant_id = $1 AND id = $2 RETURNING *",
            self.caller.tenant,
            dispute_id,
            patch.status,
            patch.resolution,
            adjustment_id,
            datetime.now(UTC),
            self.caller.sub,
        )
        out = dict(row)
        self.emit.dispute_resolved(out)
        await audit(conn, self.caller.tenant, self.caller.sub, f"dispute.{patch.status}",
                    "dispute", str(dispute_id),
                    {"resolution": patch.resolution,
                     "adjustment_amount": None if patch.adjustment_amount is None
                     else dec(patch.adjustment_amount)})  # fmt: skip
        return out

    async def audit_log(
        self, object_type: str | None, object_id: str | None, limit: int, cursor: str | None
    ) -> tuple[list[Row], str | None]:
        self.caller.require_admin("read the audit trail")
        after = decode_cursor(cursor)
        conn = await self._conn()
        rows = await conn.fetch(
            "SELECT id, at, actor, action, object_type, object_id, details::text AS details "
            "FROM audit_log WHERE tenant_id = $1 AND ($2::text IS NULL OR object_type = $2) "
            "AND ($3::text IS NULL OR object_id = $3) AND id > $4 ORDER BY id LIMIT $5",
            self.caller.tenant,
            object_type,
            object_id,
            int(after["i"]) if after else 0,
            limit + 1,
        )
        page = [{**dict(r), "details": json.loads(r["details"])} for r in rows[:limit]]
        nxt = encode_cursor({"i": page[-1]["id"]}) if len(rows) > limit else None
        return page, nxt


ZERO = Decimal(0)
