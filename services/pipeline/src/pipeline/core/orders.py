"""Orders synced from an ERP: upsert by external id, batch, reads.

Writes: admin, erp_sync and service tokens (orders come from the ERP). Reads: tenant-wide
roles see every order; anyone else sees the orders linked to a deal they see (a sales rep:
orders of their own deals; a manager: of their teams' deals). Orders without a deal are
visible to tenant-wide roles only.

Status and dates: `paid_at` defaults to the time of the write when an order becomes `paid`
without one (ERPs often flip the status only); `refunded_at` likewise for `refunded`. A
`paid_at` is kept only on paid or refunded orders, a `refunded_at` only on refunded ones,
and neither may lie in the future."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError

from chassis.http import check_if_match
from chassis.problems import NotFound, PreconditionFailed
from pipeline import money
from pipeline.access import Scope
from pipeline.core.common import (
    ORDER_WRITERS,
    Caller,
    FieldError,
    ItemRejected,
    Kind,
    Row,
    Sort,
    ValidationFailed,
    executemany,
    fetch,
    now,
    pydantic_errors,
    raise_for,
)
from pipeline.core.events import EventSink
from pipeline.core.schemas import OrderBatchItem, OrderIn, OrderPublic

ORDER_COLUMNS = (
    "tenant_id",
    "id",
    "contact_id",
    "company_id",
    "deal_id",
    "number",
    "ordered_at",
    "amount",
    "currency",
    "status",
    "paid_at",
    "refunded_at",
    "lines",
    "external_ids",
    "created_at",
    "updated_at",
    "version",
)
WRITABLE = ORDER_COLUMNS[2:]
TRACKED = WRITABLE[:-3]
NOT_NULL = ("ordered_at", "amount", "currency", "status")

SELECT = (
    "SELECT "
    + ", ".join(f"o.{c}" for c in ORDER_COLUMNS)
    + ", d.owner_id FROM orders o LEFT JOIN deals d ON d.tenant_id = o.tenant_id "
    "AND d.id = o.deal_id WHERE o.tenant_id = $1"
)


class OrderNotFound(NotFound):
    def __init__(self, order_id: uuid.UUID) -> None:
        super().__init__(f"order {order_id} not found")


def order_public(row: Row) -> OrderPublic:
    data = {k: row.get(k) for k in OrderPublic.model_fields if k in row}
    data["amount"] = money.format_amount(row["amount"], row["currency"])
    return OrderPublic.model_validate(data)


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _params(row: Row, names: Sequence[str]) -> list[Any]:
    out: list[Any] = []
    for n in names:
        value = row.get(n)
        if n in ("lines", "external_ids"):
            value = json.dumps(value if value is not None else ([] if n == "lines" else {}))
        out.append(value)
    return out


@dataclass
class OrderWrite:
    index: int
    data: OrderIn | None
    fields: set[str]
    target_id: uuid.UUID | None = None
    key: tuple[str, str] | None = None
    if_match: str | None = None
    errors: list[FieldError] = field(default_factory=list)

    @classmethod
    def parse(cls, index: int, raw: Any) -> OrderWrite:
        try:
            data = OrderBatchItem.model_validate(raw)
        except ValidationError as e:
            return cls(index, None, set(), errors=pydantic_errors(e))
        return cls(index, data, set(data.model_fields_set) - {"id"}, target_id=data.id)


@dataclass
class OrderOutcome:
    index: int
    status: Literal["created", "updated", "error"]
    row: Row | None = None
    errors: list[FieldError] = field(default_factory=list)
    kind: Kind = "invalid"


@dataclass
class _Ctx:
    ext_owner: dict[tuple[str, str], uuid.UUID]
    state: dict[uuid.UUID, Row]
    deal_owners: dict[uuid.UUID, str]


def parse_lines(lines: Sequence[Any]) -> tuple[list[Row], list[FieldError]]:
    out: list[Row] = []
    errors: list[FieldError] = []
    for i, li in enumerate(lines):
        parsed: Row = {"product": li.product, "amount": None}
        for name in ("quantity", "unit_price", "amount"):
            raw = getattr(li, name)
            if raw is None:
                continue
            try:
                parsed[name] = money.parse_decimal(raw)
            except money.MoneyError as e:
                errors.append(FieldError(("lines", i, name), str(e)))
        if parsed.get("quantity") is not None and parsed["quantity"] <= 0:
            errors.append(FieldError(("lines", i, "quantity"), "must be greater than 0"))
        if parsed.get("unit_price") is not None and parsed["unit_price"] < 0:
            errors.append(FieldError(("lines", i, "unit_price"), "must not be negative"))
        out.append(parsed)
    return out, errors


class OrderService:
    def __init__(self, caller: Caller, batch_max_items: int = 1000) -> None:
        self.caller = caller
        self.session = caller.session
        self.tenant = caller.tenant
        self.events = EventSink(self.session, caller.tenant, caller.sub, caller.origin)
        self.batch_max_items = batch_max_items

    # -- reads -------------------------------------------------------------------------------

    @staticmethod
    def _sees(scope: Scope, row: Row) -> bool:
        return scope.is_all or (row.get("owner_id") is not None and scope.sees(row["owner_id"]))

    async def get(self, order_id: uuid.UUID) -> Row:
        rows = await fetch(self.session, SELECT + " AND o.id = $2", self.tenant, order_id)
        if not rows or not self._sees(await self.caller.scope(), rows[0]):
            raise OrderNotFound(order_id)
        return rows[0]

    async def search(
        self, filters: dict[str, Any], sort: Sort, cursor: str | None, limit: int
    ) -> tuple[list[Row], str | None]:
        after = sort.after(cursor)
        scope = await self.caller.scope()
        args: list[Any] = [self.tenant]
        where: list[str] = []
        if not scope.is_all:
            args.append(scope.owner_list())
            where.append(f"d.owner_id = ANY(${len(args)}::text[])")
        for name, value in filters.items():
            if value is not None:
                args.append(value)
                where.append(f"o.{name} = ${len(args)}")
        if after is not None:
            where.append(sort.clause("o", len(args) + 1))
            args += list(after)
        args.append(limit + 1)
        sql = SELECT + "".join(f" AND {w}" for w in where)
        sql += f" ORDER BY {sort.order_by('o')} LIMIT ${len(args)}"
        return sort.page(await fetch(self.session, sql, *args), limit)

    # -- writes ------------------------------------------------------------------------------

    async def upsert_by_external_id(
        self, system: str, external_id: str, body: OrderIn, if_match: str | None
    ) -> tuple[Row, bool]:
        self.caller.require(ORDER_WRITERS, "orders")
        write = OrderWrite(
            0, body, set(body.model_fields_set), key=(system, external_id), if_match=if_match
        )
        [outcome] = await self.apply([write])
        if outcome.status == "error":
            raise_for(outcome.kind, outcome.errors, "order")
        assert outcome.row is not None
        return outcome.row, outcome.status == "created"

    async def batch(self, items: Sequence[Any]) -> list[OrderOutcome]:
        self.caller.require(ORDER_WRITERS, "orders")
        if len(items) > self.batch_max_items:
            raise ValidationFailed(
                [FieldError(("items",), f"at most {self.batch_max_items} items per batch")]
            )
        return await self.apply([OrderWrite.parse(i, item) for i, item in enumerate(items)])

    def normalize(self, w: OrderWrite) -> Row:
        assert w.data is not None
        errors: list[FieldError] = []
        out: Row = {}
        for name in sorted(w.fields):
            value = getattr(w.data, name)
            if value is None and name in NOT_NULL:
                errors.append(FieldError((name,), "cannot be null"))
                continue
            if name == "amount":
                try:
                    value = money.parse_amount(value)
                except money.MoneyError as e:
                    errors.append(FieldError(("amount",), str(e)))
                    continue
            elif name == "currency":
                try:
                    value = money.check_currency(value)
                except money.MoneyError as e:
                    errors.append(FieldError(("currency",), str(e)))
                    continue
            elif name == "lines":
                value, errs = parse_lines(value or [])
                errors += errs
            elif name == "external_ids":
                value = dict(value or {})
            elif name in ("ordered_at", "paid_at", "refunded_at"):
                value = _utc(value)
            out[name] = value
        if w.key is not None:
            system, ext = w.key
            sent = (out.get("external_ids") or {}).get(system)
            if sent is not None and sent != ext:
                errors.append(
                    FieldError(("external_ids", system), "differs from the external id in the path")
                )
            out.setdefault("external_ids", {})
            out["external_ids"][system] = ext
        if errors:
            raise ItemRejected("invalid", errors)
        return out

    async def apply(self, writes: Sequence[OrderWrite]) -> list[OrderOutcome]:
        outcomes: dict[int, OrderOutcome] = {}
        valid: list[tuple[OrderWrite, Row]] = []
        for w in writes:
            if w.errors:
                outcomes[w.index] = OrderOutcome(w.index, "error", errors=w.errors)
                continue
            try:
                valid.append((w, self.normalize(w)))
            except ItemRejected as e:
                outcomes[w.index] = OrderOutcome(w.index, "error", errors=e.errors, kind=e.kind)
        keys = list(
            {(s, v) for _, ch in valid for s, v in (ch.get("external_ids") or {}).items() if v}
        )
        ext_owner: dict[tuple[str, str], uuid.UUID] = {}
        if keys:
            for r in await fetch(
                self.session,
                "SELECT k.system, k.external_id, x.order_id "
                "FROM unnest($2::text[], $3::text[]) AS k(system, external_id) "
                "CROSS JOIN LATERAL (SELECT order_id FROM order_external_ids WHERE tenant_id = $1 "
                "AND system = k.system AND external_id = k.external_id LIMIT 1) AS x",
                self.tenant,
                [k[0] for k in keys],
                [k[1] for k in keys],
            ):
                ext_owner[(r["system"], r["external_id"])] = r["order_id"]
        initial_ext = dict(ext_owner)
        wanted = sorted(set(ext_owner.values()) | {w.target_id for w, _ in valid if w.target_id})
        state: dict[uuid.UUID, Row] = {}
        if wanted:
            for r in await fetch(
                self.session,
                SELECT + " AND o.id = ANY($2::uuid[]) ORDER BY o.id FOR UPDATE OF o",
                self.tenant,
                wanted,
            ):
                state[r["id"]] = r
        for row in state.values():
            for key in (row.get("external_ids") or {}).items():
                ext_owner.setdefault(key, row["id"])
                initial_ext.setdefault(key, row["id"])
        deal_ids = {ch["deal_id"] for _, ch in valid if ch.get("deal_id")}
        deal_owners: dict[uuid.UUID, str] = {}
        if deal_ids:
            for r in await fetch(
                self.session,
                "SELECT id, owner_id FROM deals WHERE tenant_id = $1 AND id = ANY($2::uuid[]) "
                "AND deleted_at IS NULL",
                self.tenant,
                list(deal_ids),
            ):
                deal_owners[r["id"]] = r["owner_id"]
        ctx = _Ctx(ext_owner, state, deal_owners)
        new_ids: set[uuid.UUID] = set()
        dirty: set[uuid.UUID] = set()
        for w, changes in valid:
            try:
                outcome, previous, changed = self._apply_one(w, changes, ctx)
            except ItemRejected as e:
                outcomes[w.index] = OrderOutcome(w.index, "error", errors=e.errors, kind=e.kind)
                continue
            outcomes[w.index] = outcome
            snap = outcome.row
            assert snap is not None
            if outcome.status == "created":
                new_ids.add(snap["id"])
                self.events.order_changed(snap, None, [])
            elif changed:
                if snap["id"] not in new_ids:
                    dirty.add(snap["id"])
                self.events.order_changed(snap, previous, changed)
        cols = ", ".join(ORDER_COLUMNS)
        marks = ", ".join(f"${i + 1}" for i in range(len(ORDER_COLUMNS)))
        await executemany(
            self.session,
            f"INSERT INTO orders ({cols}) VALUES ({marks})",
            [_params(state[i], ORDER_COLUMNS) for i in sorted(new_ids)],
        )
        sets = ", ".join(f"{c} = ${i + 3}" for i, c in enumerate(WRITABLE))
        await executemany(
            self.session,
            f"UPDATE orders SET {sets} WHERE tenant_id = $1 AND id = $2",
            [[self.tenant, i, *_params(state[i], WRITABLE)] for i in sorted(dirty)],
        )
        removed = [k for k, v in initial_ext.items() if ext_owner.get(k) != v]
        added = [(k[0], k[1], v) for k, v in ext_owner.items() if initial_ext.get(k) != v]
        if removed:
            await fetch(
                self.session,
                "DELETE FROM order_external_ids x USING unnest($2::text[], $3::text[]) AS k(s, e) "
                "WHERE x.tenant_id = $1 AND x.system = k.s AND x.external_id = k.e",
                self.tenant,
                [k[0] for k in removed],
                [k[1] for k in removed],
            )
        await executemany(
            self.session,
            "INSERT INTO order_external_ids (tenant_id, system, external_id, order_id) "
            "VALUES ($1, $2, $3, $4)",
            [(self.tenant, s, e, o) for s, e, o in added],
        )
        return [outcomes[w.index] for w in writes]

    def _resolve(self, w: OrderWrite, changes: Row, ctx: _Ctx) -> uuid.UUID | None:
        if w.target_id is not None:
            if w.target_id not in ctx.state:
                raise ItemRejected("not_found", [FieldError(("id",), "order not found")])
            return w.target_id
        keys = [(s, v) for s, v in (changes.get("external_ids") or {}).items() if v]
        matches = {ctx.ext_owner[k] for k in keys if k in ctx.ext_owner}
        if len(matches) > 1:
            raise ItemRejected(
                "conflict",
                [FieldError(("external_ids",), "the external ids belong to different orders")],
            )
        return matches.pop() if matches else None

    def _apply_one(
        self, w: OrderWrite, changes: Row, ctx: _Ctx
    ) -> tuple[OrderOutcome, str | None, list[str]]:
        target = self._resolve(w, changes, ctx)
        ts = now()
        if target is None:
            missing = [
                FieldError((n,), "is required")
                for n in ("ordered_at", "amount", "currency")
                if changes.get(n) is None
            ]
            if missing:
                raise ItemRejected("invalid", missing)
            row: Row = {n: changes.get(n) for n in ORDER_COLUMNS}
            row.update(
                tenant_id=self.tenant,
                id=uuid.uuid4(),
                status=changes.get("status") or "open",
                external_ids={k: v for k, v in (changes.get("external_ids") or {}).items() if v},
                created_at=ts,
                updated_at=ts,
                version=1,
            )
            self._finish(row, None, changes, ctx, ts)
            self._claim(row["id"], {}, row["external_ids"], ctx)
            ctx.state[row["id"]] = row
            return OrderOutcome(w.index, "created", row=row), None, []
        old = ctx.state[target]
        if w.if_match is not None:
            try:
                check_if_match(w.if_match, old["version"])
            except PreconditionFailed as e:
                raise ItemRejected("precondition", [FieldError((), str(e.detail))]) from None
        new = copy.deepcopy(old)
        for name, value in changes.items():
            if name == "external_ids":
                merged = dict(old.get(name) or {})
                for k, v in value.items():
                    if v is None:
                        merged.pop(k, None)
                    else:
                        merged[k] = v
                new[name] = merged
            elif name != "lines":
                new[name] = value
        self._finish(new, old, changes, ctx, ts)
        changed = [f for f in TRACKED if old.get(f) != new.get(f)]
        if changed:
            self._claim(target, old["external_ids"], new["external_ids"], ctx)
            new.update(version=old["version"] + 1, updated_at=ts)
            ctx.state[target] = new
        return OrderOutcome(w.index, "updated", row=ctx.state[target]), old["status"], changed

    def _finish(self, new: Row, old: Row | None, changes: Row, ctx: _Ctx, ts: datetime) -> None:
        errors: list[FieldError] = []
        if new.get("contact_id") is None and new.get("company_id") is None:
            errors.append(
                FieldError(("contact_id",), "an order needs a contact_id or a company_id")
            )
        if "deal_id" in changes:
            deal_id = changes["deal_id"]
            if deal_id is not None and deal_id not in ctx.deal_owners:
                errors.append(FieldError(("deal_id",), "no such deal"))
            new["owner_id"] = ctx.deal_owners.get(deal_id) if deal_id is not None else None
        currency = new["currency"]
        try:
            new["amount"] = money.exact_amount(new["amount"], currency)
        except money.MoneyError as e:
            errors.append(FieldError(("amount",), str(e)))
        if "lines" in changes:
            new["lines"] = [
                {
                    "product": li["product"],
                    "quantity": money.plain(li["quantity"]),
                    "unit_price": money.format_price(li["unit_price"], currency),
                    "amount": money.format_amount(
                        li["amount"]
                        if li["amount"] is not None
                        else li["quantity"] * li["unit_price"],
                        currency,
                    ),
                }
                for li in changes["lines"]
            ]
        elif old is None:
            new["lines"] = []
        status = new["status"]
        becoming = old is None or old["status"] != status
        if status == "paid" and new.get("paid_at") is None:
            if "paid_at" in changes and not becoming:
                errors.append(FieldError(("paid_at",), "is required while the order is paid"))
            else:
                new["paid_at"] = ts
        if status == "refunded" and new.get("refunded_at") is None:
            new["refunded_at"] = ts
        if status not in ("paid", "refunded") and new.get("paid_at") is not None:
            if "paid_at" in changes:
                errors.append(FieldError(("paid_at",), f"a {status} order has no paid_at"))
            else:
                new["paid_at"] = None
        if status != "refunded" and new.get("refunded_at") is not None:
            if "refunded_at" in changes:
                errors.append(FieldError(("refunded_at",), f"a {status} order has no refunded_at"))
            else:
                new["refunded_at"] = None
        for name in ("paid_at", "refunded_at"):
            if name in changes and changes[name] is not None and changes[name] > ts:
                errors.append(FieldError((name,), "must not be in the future"))
        if errors:
            raise ItemRejected("invalid", errors)

    @staticmethod
    def _claim(order_id: uuid.UUID, old: dict[str, str], new: dict[str, str], ctx: _Ctx) -> None:
        for system, value in new.items():
            holder = ctx.ext_owner.get((system, value))
            if holder is not None and holder != order_id:
                raise ItemRejected(
                    "conflict",
                    [FieldError(("external_ids", system), "already identifies another order")],
                )
        for system, value in old.items():
            if new.get(system) != value:
                ctx.ext_owner.pop((system, value), None)
        for system, value in new.items():
            ctx.ext_owner[(system, value)] = order_id
