"""Statement recomputation: load the inputs of many (user, period) statements with a few
set-based queries, run the pure calculation, and write back only what changed.

Idempotent and order-independent by construction: a statement's content is a function of
its inputs (see `calc.compute`), its version bumps (and one event is emitted) only when the
content hash differs. A change that reaches a locked statement (closed period, or paid)
never edits it: the difference between its payout and the recomputed payout, minus the
corrections already booked for it, becomes an adjustment of the next open period."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.driver import raw_connection
from commissions import periods
from commissions.calc import Adjustment, Credit, Result, compute, dec
from commissions.events import Emitter
from commissions.org import Book, Plan

Pair = tuple[str, str]  # (user_id, period)
MAX_ROUNDS = 12


def content_hash(plan_id: str, result: Result, lines_json: str | None = None) -> str:
    """SHA-256 of everything a statement shows; `lines_json` is the lines' JSON when the
    caller already has it (lines are built in a deterministic order)."""
    doc = {"plan_id": plan_id, **result.content()}
    lines = doc.pop("lines")
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
    digest.update((lines_json or json.dumps(lines, separators=(",", ":"))).encode())
    return digest.hexdigest()


def credit_from_row(r: Any) -> Credit:
    raw = r["units"]
    units: tuple[tuple[str, Decimal], ...] = ()
    if raw and raw != "{}":
        units = tuple(sorted((k, Decimal(v)) for k, v in json.loads(raw).items()))
    return Credit(
        source_kind=r["source_kind"],
        source_id=r["source_id"],
        credit_date=r["credit_date"],
        amount=r["amount"],
        currency=r["currency"].strip(),
        percent=r["percent"],
        units=units,
        clawed_back=r["clawed_back"],
    )


@dataclass
class Inputs:
    """Everything the statements of some users for one period are a function of."""

    period: str
    start: date
    end: date
    plans: dict[str, Plan] = field(default_factory=dict)
    credits: dict[str, list[Credit]] = field(default_factory=lambda: defaultdict(list))
    quotas: dict[str, Decimal] = field(default_factory=dict)
    adjustments: dict[str, list[Adjustment]] = field(default_factory=lambda: defaultdict(list))

    def compute(self, user: str, extra: Iterable[Credit] = ()) -> Result:
        plan = self.plans[user]
        credits = [*self.credits.get(user, ()), *extra]
        return compute(plan.versions, credits, self.quotas.get(user),
                       self.adjustments.get(user, ()), as_of=self.end)  # fmt: skip


@dataclass
class Outcome:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    corrections: int = 0


class Engine:
    def __init__(self, session: AsyncSession, emitter: Emitter) -> None:
        self.session = session
        self.emit = emitter
        self.tenant = emitter.tenant
        self._book: Book | None = None

    async def conn(self) -> Any:
        return await raw_connection(self.session)

    async def book(self) -> Book:
        if self._book is None:
            self._book = await Book.load(await self.conn(), self.tenant)
        return self._book

    def forget(self) -> None:
        """Plans, assignments or the org changed: reload them on next use."""
        self._book = None

    # --- which statements does a change touch -----------------------------------------------

    async def pairs_for_dates(self, items: Iterable[tuple[str, date]]) -> set[Pair]:
        book = await self.book()
        out: set[Pair] = set()
        for user, day in items:
            plan = book.plan_for(user, day, day)
            if plan is not None:
                out.add((user, periods.period_of(day, plan.period)))
        return out

    async def pairs_for_users(self, users: Iterable[str]) -> set[Pair]:
        """Every statement of `users` that exists or that their credits imply."""
        wanted = sorted(set(users))
        if not wanted:
            return set()
        conn = await self.conn()
        rows = await conn.fetch(
            "SELECT DISTINCT user_id, credit_date FROM credits "
            "WHERE tenant_id = $1 AND user_id = ANY($2::text[])",
            self.tenant,
            wanted,
        )
        out = await self.pairs_for_dates((r["user_id"], r["credit_date"]) for r in rows)
        for r in await conn.fetch(
            "SELECT user_id, period FROM statements WHERE tenant_id = $1 "
            "AND user_id = ANY($2::text[])",
            self.tenant,
            wanted,
        ):
            out.add((r["user_id"], r["period"]))
        return out

    # --- recomputation ----------------------------------------------------------------------

    async def recompute(self, pairs: Iterable[Pair]) -> Outcome:
        outcome = Outcome()
        todo = set(pairs)
        for _ in range(MAX_ROUNDS):
            if not todo:
                break
            follow: set[Pair] = set()
            by_period: dict[str, list[str]] = defaultdict(list)
            for user, period in todo:
                by_period[period].append(user)
            for period, users in sorted(by_period.items()):
                follow |= await self._recompute_period(period, sorted(set(users)), outcome)
            todo = follow
        return outcome

    async def _closed(self, conn: Any) -> set[str]:
        rows = await conn.fetch(
            "SELECT period FROM closed_periods WHERE tenant_id = $1", self.tenant
        )
        return {r["period"] for r in rows}

    async def load(self, period: str, users: list[str]) -> Inputs:
        """Plans, credits, quotas and adjustments of `users` for `period`, set-based."""
        conn = await self.conn()
        book = await self.book()
        start, end = periods.bounds(period)
        kind = periods.kind_of(period)
        inputs = Inputs(period, start, end)
        for u in users:
            plan = book.plan_for(u, start, end)
            if plan is not None and plan.period == kind and plan.versions:
                inputs.plans[u] = plan
        wanted = sorted(inputs.plans)
        if not wanted:
            return inputs
        for r in await conn.fetch(
            "SELECT user_id, source_kind, source_id, credit_date, amount, currency, percent, "
            "units::text AS units, clawed_back_at IS NOT NULL AS clawed_back FROM credits "
            "WHERE tenant_id = $1 AND user_id = ANY($2::text[]) "
            "AND credit_date BETWEEN $3 AND $4",
            self.tenant,
            wanted,
            start,
            end,
        ):
            inputs.credits[r["user_id"]].append(credit_from_row(r))
        for r in await conn.fetch(
            "SELECT owner_id, amount, currency FROM quotas WHERE tenant_id = $1 "
            "AND owner_kind = 'user' AND period = $2 AND owner_id = ANY($3::text[])",
            self.tenant,
            period,
            wanted,
        ):
            if r["currency"].strip() == inputs.plans[r["owner_id"]].currency:
                inputs.quotas[r["owner_id"]] = r["amount"]
        for r in await conn.fetch(
            "SELECT id, user_id, kind, amount, reason, origin_period FROM adjustments "
            "WHERE tenant_id = $1 AND period = $2 AND user_id = ANY($3::text[])",
            self.tenant,
            period,
            wanted,
        ):
            inputs.adjustments[r["user_id"]].append(
                Adjustment(str(r["id"]), r["kind"], r["amount"], r["reason"], r["origin_period"])
            )
        return inputs

    async def _recompute_period(self, period: str, users: list[str], out: Outcome) -> set[Pair]:
        conn = await self.conn()
        # Serialize recomputations of the same users (a consumer batch and an API call, or
        # two replicas) before reading their inputs, so neither works from a stale view.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || u, 0)) "
            "FROM unnest($2::text[]) AS u ORDER BY u",
            self.tenant,
            users,
        )
        inputs = await self.load(period, users)
        plans = inputs.plans
        if not plans:
            return set()
        users = sorted(plans)
        existing = {
            r["user_id"]: r
            for r in await conn.fetch(
                "SELECT id, user_id, plan_id, plan_version, credit, quota, attainment, payout, "
                "content_hash, status, locked, version FROM statements "
                "WHERE tenant_id = $1 AND period = $2 "
                "AND user_id = ANY($3::text[])",
                self.tenant,
                period,
                users,
            )
        }
        closed = await self._closed(conn)
        now = datetime.now(UTC)
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        locked_results: dict[str, Result] = {}
        for u in users:
            plan = plans[u]
            result = inputs.compute(u)
            lines = json.dumps(result.lines, separators=(",", ":"))
            digest = content_hash(plan.id, result, lines)
            old = existing.get(u)
            if period in closed or (old is not None and (old["locked"] or old["status"] == "paid")):
                locked_results[u] = result
                continue
            if old is not None and old["content_hash"] == digest:
                out.unchanged += 1
                continue
            row: dict[str, Any] = {
                "user_id": u,
                "period": period,
                "plan_id": uuid.UUID(plan.id),
                "plan_version": result.plan_version,
                "currency": result.currency,
                "credit": result.credit,
                "quota": result.quota,
                "attainment": result.attainment,
                "payout": result.payout,
                "locked": False,
            }
            if old is None:
                row.update(id=uuid.uuid4(), status="draft", version=1)
                inserts.append(
                    (self.tenant, row["id"], u, period, row["plan_id"], row["plan_version"],
                     row["currency"], row["credit"], row["quota"], row["attainment"],
                     row["payout"], result.deals_won, lines, digest, now)
                )  # fmt: skip
                self.emit.statement_updated(row, ["created"], None)
                out.created += 1
            else:
                changed = [
                    k
                    for k in ("plan_version", "credit", "quota", "attainment", "payout")
                    if old[k] != row[k]
                ] or ["lines"]
                if str(old["plan_id"]) != plan.id:
                    changed.append("plan_id")
                status = "draft"
                if old["status"] != "draft":
                    changed.append("status")  # a changed approved statement needs approval again
                row.update(id=old["id"], status=status, version=old["version"] + 1)
                updates.append(
                    (self.tenant, old["id"], row["plan_id"], row["plan_version"],
                     row["currency"], row["credit"], row["quota"], row["attainment"],
                     row["payout"], result.deals_won, lines, digest, status, now, old["version"])
                )  # fmt: skip
                self.emit.statement_updated(row, changed, old["payout"])
                out.updated += 1
        if inserts:
            await conn.executemany(
                "INSERT INTO statements (tenant_id, id, user_id, period, plan_id, plan_version, "
                "currency, credit, quota, attainment, payout, deals_won, lines, content_hash, "
                "status, locked, version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, "
                "$6, $7, $8, $9, $10, $11, $12, $13::jsonb, $14, 'draft', false, 1, $15, $15)",
                inserts,
            )
        if updates:
            await conn.executemany(
                "UPDATE statements SET plan_id = $3, plan_version = $4, currency = $5, "
                "credit = $6, quota = $7, attainment = $8, payout = $9, deals_won = $10, "
                "lines = $11::jsonb, content_hash = $12, status = $13, updated_at = $14, "
                "version = version + 1, approved_by = CASE WHEN $13 = 'draft' THEN NULL "
                "ELSE approved_by END, approved_at = CASE WHEN $13 = 'draft' THEN NULL "
                "ELSE approved_at END WHERE tenant_id = $1 AND id = $2 AND version = $15",
                updates,
            )
        if not locked_results:
            return set()
        return await self._correct_locked(conn, period, locked_results, existing, closed, plans)

    async def _correct_locked(
        self,
        conn: Any,
        period: str,
        results: dict[str, Result],
        existing: dict[str, Any],
        closed: set[str],
        plans: dict[str, Any],
    ) -> set[Pair]:
        users = sorted(results)
        booked = {
            r["user_id"]: r["total"]
            for r in await conn.fetch(
                "SELECT user_id, sum(amount) AS total FROM adjustments WHERE tenant_id = $1 "
                "AND origin_period = $2 AND user_id = ANY($3::text[]) "
                "AND kind IN ('clawback', 'correction') GROUP BY user_id",
                self.tenant,
                period,
                users,
            )
        }
        target = periods.next_period(period)
        while target in closed:
            target = periods.next_period(target)
        follow: set[Pair] = set()
        for u in users:
            result = results[u]
            old = existing.get(u)
            baseline = old["payout"] if old is not None else Decimal(0)
            old_credit = old["credit"] if old is not None else Decimal(0)
            delta = result.payout - baseline - booked.get(u, Decimal(0))
            if delta == 0:
                continue
            kind = "clawback" if result.credit < old_credit else "correction"
            reason = (
                f"recomputation of locked period {period}: credit {dec(old_credit)} -> "
                f"{dec(result.credit)}, payout {dec(baseline)} -> {dec(result.payout)}"
            )
            await self.book_adjustment(
                conn, u, target, delta, plans[u].currency, kind, reason, "system", period
            )
            follow.add((u, target))
        return follow

    async def book_adjustment(
        self,
        conn: Any,
        user: str,
        period: str,
        amount: Decimal,
        currency: str,
        kind: str,
        reason: str,
        actor: str,
        origin_period: str | None = None,
        dispute_id: uuid.UUID | None = None,
    ) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": uuid.uuid4(),
            "user_id": user,
            "period": period,
            "amount": amount,
            "currency": currency,
            "kind": kind,
            "reason": reason,
            "origin_period": origin_period,
            "dispute_id": dispute_id,
            "created_at": datetime.now(UTC),
            "created_by": actor,
        }
        await conn.execute(
            "INSERT INTO adjustments (tenant_id, id, user_id, period, amount, currency, kind, "
            "reason, origin_period, dispute_id, created_at, created_by) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            self.tenant,
            *row.values(),
        )
        await audit(conn, self.tenant, actor, "adjustment.booked", "adjustment", str(row["id"]),
                    {"user_id": user, "period": period, "amount": dec(amount), "kind": kind,
                     "reason": reason, "origin_period": origin_period})  # fmt: skip
        self.emit.adjustment_booked(row)
        return row


async def audit(
    conn: Any,
    tenant: str,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    details: dict[str, Any],
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (tenant_id, at, actor, action, object_type, object_id, details) "
        "VALUES ($1, now(), $2, $3, $4, $5, $6::jsonb)",
        tenant,
        actor,
        action,
        object_type,
        object_id,
        json.dumps(details, default=str),
    )
