"""Commission plans: effective-dated versions (history kept) and assignments."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.driver import raw_connection
from chassis.http import check_if_match, decode_cursor, encode_cursor
from chassis.problems import Unprocessable
from commissions.access import Caller
from commissions.calc import tier_errors
from commissions.engine import Engine, audit
from commissions.errors import PlanNotFound
from commissions.events import Emitter
from commissions.schemas import AssignmentIn, PlanIn

Row = dict[str, Any]
# Plans and their assignments are compensation data: the sales org reads them; other roles
# see nothing (a 404, an empty list), as for statements.
PLAN_READERS = ("admin", "service", "sales_manager", "sales_rep")


def validate_plan(body: PlanIn) -> None:
    tiers = [{"from": t.from_, "to": t.to, "rate": t.rate} for t in body.tiers]
    errors = tier_errors(tiers)
    products = [s.product for s in body.spiffs]
    for i, p in enumerate(products):
        if p in products[:i]:
            errors.append((["spiffs", i, "product"], "each product may have one spiff"))
    if errors:
        raise Unprocessable(
            "; ".join(f"{'.'.join(str(p) for p in path)}: {msg}" for path, msg in errors),
            errors=[{"path": path, "message": msg} for path, msg in errors],
        )


class PlanService:
    def __init__(self, session: AsyncSession, caller: Caller) -> None:
        self.session = session
        self.caller = caller
        self.emit = Emitter(session, caller.tenant, caller.sub, caller.origin)
        self.engine = Engine(session, self.emit)

    async def _conn(self) -> Any:
        return await raw_connection(self.session)

    async def _plan_row(self, plan_id: uuid.UUID, *, lock: bool = False) -> Row:
        conn = await self._conn()
        row = await conn.fetchrow(
            "SELECT * FROM plans WHERE tenant_id = $1 AND id = $2"
            + (" FOR UPDATE" if lock else ""),
            self.caller.tenant,
            plan_id,
        )
        if row is None or not self.caller.principal.has(*PLAN_READERS):
            raise PlanNotFound(plan_id)
        return dict(row)

    async def get(self, plan_id: uuid.UUID) -> Row:
        row = await self._plan_row(plan_id)
        return await self._with_versions(row)

    async def _with_versions(self, row: Row) -> Row:
        conn = await self._conn()
        versions = []
        for v in await conn.fetch(
            "SELECT number, effective_from, terms::text AS terms, created_at, created_by "
            "FROM plan_versions WHERE tenant_id = $1 AND plan_id = $2 ORDER BY number",
            self.caller.tenant,
            row["id"],
        ):
            terms = json.loads(v["terms"])
            versions.append(
                {
                    "number": v["number"],
                    "effective_from": v["effective_from"],
                    "name": terms.get("name", row["name"]),
                    "credit_on": terms["credit_on"],
                    "tier_basis": terms["tier_basis"],
                    "tier_mode": terms["tier_mode"],
                    "tiers": terms["tiers"],
                    "cap": terms["cap"],
                    "spiffs": terms["spiffs"],
                    "clawback_days": terms["clawback_days"],
                    "created_at": v["created_at"],
                    "created_by": v["created_by"],
                }
            )
        return {**row, "versions": versions}

    async def list_all(self, limit: int, cursor: str | None) -> tuple[list[Row], str | None]:
        if not self.caller.principal.has(*PLAN_READERS):
            return [], None
        after = decode_cursor(cursor)
        conn = await self._conn()
        rows = await conn.fetch(
            "SELECT * FROM plans WHERE tenant_id = $1 AND ($2::timestamptz IS NULL OR "
            "(created_at, id) > ($2, $3::uuid)) ORDER BY created_at, id LIMIT $4",
            self.caller.tenant,
            datetime.fromisoformat(after["t"]) if after else None,
            uuid.UUID(after["i"]) if after else None,
            limit + 1,
        )
        page = [await self._with_versions(dict(r)) for r in rows[:limit]]
        nxt = None
        if len(rows) > limit:
            last = page[-1]
            nxt = encode_cursor({"t": last["created_at"].isoformat(), "i": str(last["id"])})
        return page, nxt

    async def create(self, body: PlanIn) -> Row:
        self.caller.require_admin("create commission plans")
        validate_plan(body)
        conn = await self._conn()
        now = datetime.now(UTC)
        pid = uuid.uuid4()
        await conn.execute(
            "INSERT INTO plans (tenant_id, id, name, period, currency, latest_version, version, "
            "created_at, updated_at, created_by) VALUES ($1, $2, $3, $4, $5, 1, 1, $6, $6, $7)",
            self.caller.tenant,
            pid,
            body.name,
            body.period,
            body.currency,
            now,
            self.caller.sub,
        )
        await self._insert_version(pid, 1, body, now)
        row = await self._plan_row(pid)
        self.emit.plan_changed(row, "created")
        await audit(conn, self.caller.tenant, self.caller.sub, "plan.created", "plan", str(pid),
                    {"name": body.name})  # fmt: skip
        return await self._with_versions(row)

    async def _insert_version(
        self, pid: uuid.UUID, number: int, body: PlanIn, now: datetime
    ) -> None:
        conn = await self._conn()
        await conn.execute(
            "INSERT INTO plan_versions (tenant_id, plan_id, number, effective_from, terms, "
            "created_at, created_by) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)",
            self.caller.tenant,
            pid,
            number,
            body.effective_from,
            json.dumps({**body.terms_json(), "name": body.name}),
            now,
            self.caller.sub,
        )

    async def add_version(self, plan_id: uuid.UUID, body: PlanIn, if_match: str | None) -> Row:
        """A new effective-dated version; credits from its effective_from on are recomputed
        under it (retroactive recalculation when the date is in the past)."""
        self.caller.require_admin("change commission plans")
        row = await self._plan_row(plan_id, lock=True)
        check_if_match(if_match, row["version"])
        validate_plan(body)
        errors = [
            {"path": [f], "message": f"a plan's {f} cannot change between versions "
             f"(it is {row[f].strip()}); create another plan"}
            for f in ("period", "currency")
            if getattr(body, f) != row[f].strip()
        ]  # fmt: skip
        if errors:
            raise Unprocessable("; ".join(f"{e['path'][0]}: {e['message']}" for e in errors),
                                errors=errors)  # fmt: skip
        conn = await self._conn()
        now = datetime.now(UTC)
        number = row["latest_version"] + 1
        await self._insert_version(plan_id, number, body, now)
        await conn.execute(
            "UPDATE plans SET name = $3, latest_version = $4, version = version + 1, "
            "updated_at = $5 WHERE tenant_id = $1 AND id = $2",
            self.caller.tenant,
            plan_id,
            body.name,
            number,
            now,
        )
        row = await self._plan_row(plan_id)
        self.emit.plan_changed(row, "version_added")
        await audit(
            conn,
            self.caller.tenant,
            self.caller.sub,
            "plan.version_added",
            "plan",
            str(plan_id),
            {"number": number, "effective_from": body.effective_from},
        )
        self.engine.forget()
        book = await self.engine.book()
        await self.engine.recompute(
            await self.engine.pairs_for_users(book.users_assigned(str(plan_id)))
        )
        return await self._with_versions(row)

    async def add_assignment(self, plan_id: uuid.UUID, body: AssignmentIn) -> Row:
        self.caller.require_admin("assign commission plans")
        await self._plan_row(plan_id, lock=True)
        conn = await self._conn()
        now = datetime.now(UTC)
        aid = uuid.uuid4()
        await conn.execute(
            "INSERT INTO plan_assignments (tenant_id, id, plan_id, user_id, team_id, "
            "effective_from, effective_to, created_at, created_by) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            self.caller.tenant,
            aid,
            plan_id,
            body.user_id,
            body.team_id,
            body.effective_from,
            body.effective_to,
            now,
            self.caller.sub,
        )
        await conn.execute(
            "UPDATE plans SET version = version + 1, updated_at = $3 "
            "WHERE tenant_id = $1 AND id = $2",
            self.caller.tenant,
            plan_id,
            now,
        )
        row = await self._plan_row(plan_id)
        self.emit.plan_changed(row, "assignment_added")
        await audit(conn, self.caller.tenant, self.caller.sub, "plan.assigned", "plan",
                    str(plan_id), body.model_dump(mode="json"))  # fmt: skip
        book = await self._reload()
        if body.user_id is not None:
            users = {body.user_id}
        else:
            users = book.org.users_of(book.org.with_descendants({str(body.team_id)}))
        await self.engine.recompute(await self.engine.pairs_for_users(users))
        return await self._assignment(aid)

    async def _reload(self) -> Any:
        self.engine.forget()
        return await self.engine.book()

    async def _assignment(self, aid: uuid.UUID) -> Row:
        conn = await self._conn()
        r = await conn.fetchrow(
            "SELECT * FROM plan_assignments WHERE tenant_id = $1 AND id = $2",
            self.caller.tenant,
            aid,
        )
        return dict(r)

    async def assignments(self, plan_id: uuid.UUID) -> list[Row]:
        await self._plan_row(plan_id)
        conn = await self._conn()
        rows = await conn.fetch(
            "SELECT * FROM plan_assignments WHERE tenant_id = $1 AND plan_id = $2 "
            "ORDER BY created_at, id",
            self.caller.tenant,
            plan_id,
        )
        return [dict(r) for r in rows]
