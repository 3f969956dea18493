"""The one write path of deal fields: POST, PATCH, PUT by external id and batch all go
through `DealWriter.apply` (won/lost/reopen/delete are in `deals.py`).

A call validates every item first (pure), then loads what the items refer to with one query
per kind (external ids, deals, pipelines with their stages, custom field definitions),
applies the items in order in memory (a later item may update a deal an earlier item
created), and writes with a handful of executemany statements plus one outbox event per
version bump."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.http import check_if_match
from chassis.problems import PreconditionFailed
from pipeline import money
from pipeline.access import Scope
from pipeline.core import deal_repo as repo
from pipeline.core.common import (
    Caller,
    FieldError,
    ItemRejected,
    Kind,
    Row,
    now,
    pydantic_errors,
)
from pipeline.core.events import EventSink
from pipeline.core.fields import FieldSpec, field_specs, missing_required, validate_custom_fields
from pipeline.core.schemas import DealBatchItem, DealIn

TRACKED = (
    "name",
    "contact_id",
    "company_id",
    "owner_id",
    "pipeline_id",
    "stage_id",
    "amount",
    "currency",
    "expected_close_date",
    "forecast_category",
    "line_items",
    "splits",
    "external_ids",
)
NOT_NULL = ("name", "owner_id", "pipeline_id", "currency", "amount")


@dataclass
class DealWrite:
    """One requested write. `target_id` (PATCH, or a batch item's `id`) or `key` (PUT by
    external id) name the deal; otherwise external ids match one, unless `create_only`."""

    index: int
    data: DealIn | None
    fields: set[str]
    target_id: uuid.UUID | None = None
    key: tuple[str, str] | None = None
    create_only: bool = False
    if_match: str | None = None
    errors: list[FieldError] = field(default_factory=list)

    @classmethod
    def parse(cls, index: int, raw: Any) -> DealWrite:
        try:
            data = DealBatchItem.model_validate(raw)
        except ValidationError as e:
            return cls(index, None, set(), errors=pydantic_errors(e))
        return cls(index, data, set(data.model_fields_set) - {"id"}, target_id=data.id)


@dataclass
class Outcome:
    index: int
    status: Literal["created", "updated", "error"]
    row: Row | None = None
    errors: list[FieldError] = field(default_factory=list)
    kind: Kind = "invalid"
    changed: list[str] = field(default_factory=list)
    from_stage: uuid.UUID | None = None


def copy_row(row: Row) -> Row:
    out = dict(row)
    for name in repo.JSON_COLUMNS:
        if out.get(name) is not None:
            out[name] = copy.deepcopy(out[name])
    return out


def changed_fields(old: Row, new: Row) -> list[str]:
    changed = [f for f in TRACKED if old.get(f) != new.get(f)]
    old_cf, new_cf = old.get("custom_fields") or {}, new.get("custom_fields") or {}
    changed += [
        f"custom_fields.{k}"
        for k in sorted(set(old_cf) | set(new_cf))
        if old_cf.get(k) != new_cf.get(k)
    ]
    return changed


# --- pure parsing of amounts, line items and splits -------------------------------------------


def parse_line_items(items: Sequence[Any]) -> tuple[list[Row], list[FieldError]]:
    out: list[Row] = []
    errors: list[FieldError] = []
    for i, li in enumerate(items):
        parsed: Row = {"product": li.product}
        for name in ("quantity", "unit_price", "discount_percent"):
            try:
                parsed[name] = money.parse_decimal(getattr(li, name))
            except money.MoneyError as e:
                errors.append(FieldError(("line_items", i, name), str(e)))
        q, p, d = (parsed.get(n) for n in ("quantity", "unit_price", "discount_percent"))
        if q is not None and q <= 0:
            errors.append(FieldError(("line_items", i, "quantity"), "must be greater than 0"))
        if p is not None and p < 0:
            errors.append(FieldError(("line_items", i, "unit_price"), "must not be negative"))
        if d is not None and not 0 <= d <= 100:
            errors.append(
                FieldError(("line_items", i, "discount_percent"), "must be between 0 and 100")
            )
        out.append(parsed)
    return out, errors


def price_lines(lines: Sequence[Row], currency: str) -> tuple[list[Row], Decimal]:
    """The stored form of parsed lines (decimal strings, each with its amount) and their
    total, in `currency`."""
    stored: list[Row] = []
    amounts: list[Decimal] = []
    for li in lines:
        amount = money.line_amount(
            li["quantity"], li["unit_price"], li["discount_percent"], currency
        )
        amounts.append(amount)
        stored.append(
            {
                "product": li["product"],
                "quantity": money.plain(li["quantity"]),
                "unit_price": money.format_price(li["unit_price"], currency),
                "discount_percent": money.plain(li["discount_percent"]),
                "amount": money.format_amount(amount, currency),
            }
        )
    return stored, money.total(amounts)


def stored_lines(lines: Sequence[Row]) -> list[Row]:
    """Parsed form of stored lines (to re-price them in another currency)."""
    return [
        {
            "product": li["product"],
            "quantity": Decimal(li["quantity"]),
            "unit_price": Decimal(li["unit_price"]),
            "discount_percent": Decimal(li["discount_percent"]),
        }
        for li in lines
    ]


def parse_splits(splits: Sequence[Any]) -> tuple[list[Row], list[FieldError]]:
    errors: list[FieldError] = []
    out: list[Row] = []
    seen: set[str] = set()
    percents: list[Decimal] = []
    for i, s in enumerate(splits):
        if s.user_id in seen:
            errors.append(FieldError(("splits", i, "user_id"), "appears more than once"))
        seen.add(s.user_id)
        try:
            p = money.parse_decimal(s.percent)
        except money.MoneyError as e:
            errors.append(FieldError(("splits", i, "percent"), str(e)))
            continue
        if not 0 < p <= 100:
            errors.append(FieldError(("splits", i, "percent"), "must be above 0 and at most 100"))
        percents.append(p)
        out.append({"user_id": s.user_id, "percent": money.plain(p)})
    if splits and not errors and not money.splits_sum_to_100(percents):
        errors.append(
            FieldError(
                ("splits",), f"percents must sum to 100, got {money.plain(money.total(percents))}"
            )
        )
    return out, errors


# --- the writer -------------------------------------------------------------------------------


@dataclass
class _Ctx:
    ext_owner: dict[tuple[str, str], uuid.UUID]
    state: dict[uuid.UUID, Row]
    catalog: repo.Catalog
    specs: dict[str, FieldSpec]
    # stage history: stays opened in this write (to insert) and open stays in the database
    # to complete
    pending: dict[uuid.UUID, list[Row]] = field(default_factory=dict)
    closes: list[tuple[uuid.UUID, datetime, uuid.UUID]] = field(default_factory=list)


class DealWriter:
    def __init__(self, caller: Caller, scope: Scope, events: EventSink) -> None:
        self.caller = caller
        self.session: AsyncSession = caller.session
        self.scope = scope
        self.events = events

    def normalize(self, w: DealWrite, specs: dict[str, FieldSpec]) -> Row:
        """The validated changes of a write (ItemRejected with every field error)."""
        assert w.data is not None
        errors: list[FieldError] = []
        out: Row = {}
        for name in sorted(w.fields):
            value = getattr(w.data, name)
            if value is None and name in NOT_NULL:
                errors.append(FieldError((name,), "cannot be null"))
                continue
            if name == "stage_id" and value is None:
                continue  # null: the pipeline's first open stage
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
            elif name == "line_items":
                value, errs = parse_line_items(value or [])
                errors += errs
            elif name == "splits":
                value, errs = parse_splits(value or [])
                errors += errs
            elif name == "custom_fields":
                value, errs = validate_custom_fields(value or {}, specs)
                errors += errs
            elif name == "external_ids":
                value = dict(value or {})
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

    async def apply(
        self, writes: Sequence[DealWrite], locked: dict[uuid.UUID, Row] | None = None
    ) -> list[Outcome]:
        tenant = self.caller.tenant
        specs = await field_specs(self.session, tenant, "deal")
        outcomes: dict[int, Outcome] = {}
        valid: list[tuple[DealWrite, Row]] = []
        for w in writes:
            if w.errors:
                outcomes[w.index] = Outcome(w.index, "error", errors=w.errors)
                continue
            try:
                valid.append((w, self.normalize(w, specs)))
            except ItemRejected as e:
                outcomes[w.index] = Outcome(w.index, "error", errors=e.errors, kind=e.kind)

        ext_keys = [
            (s, v) for _, ch in valid for s, v in (ch.get("external_ids") or {}).items() if v
        ]
        ext_owner = await repo.ids_by_external(self.session, tenant, ext_keys)
        initial_ext = dict(ext_owner)
        state: dict[uuid.UUID, Row] = dict(locked or {})
        wanted = set(ext_owner.values()) | {w.target_id for w, _ in valid if w.target_id}
        wanted -= set(state)
        for row in await repo.get_deals(self.session, tenant, sorted(wanted), for_update=True):
            state[row["id"]] = row
        for row in state.values():
            if row["deleted_at"] is not None:
                continue  # a deleted deal released its external ids
            for key in (row.get("external_ids") or {}).items():
                ext_owner.setdefault(key, row["id"])
                initial_ext.setdefault(key, row["id"])
        pipeline_ids = {r["pipeline_id"] for r in state.values()}
        pipeline_ids |= {ch["pipeline_id"] for _, ch in valid if ch.get("pipeline_id")}
        catalog = await repo.load_catalog(self.session, tenant, pipeline_ids)
        ctx = _Ctx(ext_owner, state, catalog, specs)
        new_ids: set[uuid.UUID] = set()
        dirty: set[uuid.UUID] = set()

        for w, changes in valid:
            try:
                outcome = self._apply_one(w, changes, ctx)
            except ItemRejected as e:
                outcomes[w.index] = Outcome(w.index, "error", errors=e.errors, kind=e.kind)
                continue
            outcomes[w.index] = outcome
            snap = outcome.row
            assert snap is not None
            if outcome.status == "created":
                new_ids.add(snap["id"])
                self.events.deal_created(snap)
            elif outcome.changed:
                if snap["id"] not in new_ids:
                    dirty.add(snap["id"])
                if "stage_id" in outcome.changed:
                    self.events.deal_stage_changed(snap, outcome.from_stage, outcome.changed)
                else:
                    self.events.deal_updated(snap, outcome.changed)

        await repo.insert_deals(self.session, [state[i] for i in sorted(new_ids)])
        await repo.update_deals(self.session, [state[i] for i in sorted(dirty)])
        removed = [k for k, v in initial_ext.items() if ext_owner.get(k) != v]
        added = [(k[0], k[1], v) for k, v in ext_owner.items() if initial_ext.get(k) != v]
        await repo.remove_external_ids(self.session, tenant, removed)
        await repo.add_external_ids(self.session, tenant, added)
        # complete the open stays first: the stays inserted next are open too
        await repo.close_history(self.session, tenant, ctx.closes)
        await repo.insert_history(
            self.session, tenant_rows(tenant, [r for rows in ctx.pending.values() for r in rows])
        )
        return [outcomes[w.index] for w in writes]

    def _resolve(self, w: DealWrite, changes: Row, ctx: _Ctx) -> uuid.UUID | None:
        if w.target_id is not None:
            if w.target_id not in ctx.state:
                raise ItemRejected("not_found", [FieldError(("id",), "deal not found")])
            return w.target_id
        if w.create_only:
            return None
        keys = [(s, v) for s, v in (changes.get("external_ids") or {}).items() if v]
        matches = {ctx.ext_owner[k] for k in keys if k in ctx.ext_owner}
        if len(matches) > 1:
            raise ItemRejected(
                "conflict",
                [FieldError(("external_ids",), "the external ids belong to different deals")],
            )
        if matches:
            target = matches.pop()
            if target not in ctx.state:
                raise ItemRejected("not_found", [FieldError((), "deal not found")])
            return target
        return None

    def _apply_one(self, w: DealWrite, changes: Row, ctx: _Ctx) -> Outcome:
        target = self._resolve(w, changes, ctx)
        if target is None:
            return self._create(w, changes, ctx)
        old = ctx.state[target]
        if old["deleted_at"] is not None or not self.scope.sees(old["owner_id"]):
            raise ItemRejected("not_found", [FieldError((), "deal not found")])
        if w.if_match is not None:
            try:
                check_if_match(w.if_match, old["version"])
            except PreconditionFailed as e:
                raise ItemRejected("precondition", [FieldError((), str(e.detail))]) from None
        new = copy_row(old)
        for name, value in changes.items():
            if name in ("custom_fields", "external_ids"):
                merged = dict(old.get(name) or {})
                for k, v in value.items():
                    if v is None:
                        merged.pop(k, None)
                    else:
                        merged[k] = v
                new[name] = merged
            elif name not in ("line_items", "splits", "amount"):
                new[name] = value
        self._finish(new, old, changes, ctx)
        changed = changed_fields(old, new)
        if changed:
            at = now()
            new.update(version=old["version"] + 1, updated_at=at)
            self._claim_external_ids(target, old["external_ids"], new["external_ids"], ctx)
            if "stage_id" in changed:
                self._move(new, old["stage_id"], at, ctx)
            ctx.state[target] = new
        return Outcome(
            w.index, "updated", row=ctx.state[target], changed=changed, from_stage=old["stage_id"]
        )

    def _create(self, w: DealWrite, changes: Row, ctx: _Ctx) -> Outcome:
        missing = [
            FieldError((name,), "is required")
            for name in ("name", "pipeline_id", "currency")
            if changes.get(name) is None
        ]
        if missing:
            raise ItemRejected("invalid", missing)
        ts = now()
        row: Row = {name: changes.get(name) for name in repo.DEAL_COLUMNS}
        row.update(
            tenant_id=self.caller.tenant,
            id=uuid.uuid4(),
            owner_id=changes.get("owner_id") or self.caller.sub,
            custom_fields={
                k: v for k, v in (changes.get("custom_fields") or {}).items() if v is not None
            },
            external_ids={k: v for k, v in (changes.get("external_ids") or {}).items() if v},
            status="open",
            lost_reason=None,
            closed_at=None,
            created_by=self.caller.sub,
            created_at=ts,
            updated_at=ts,
            version=1,
            deleted_at=None,
        )
        self._finish(row, None, changes, ctx)
        self._claim_external_ids(row["id"], {}, row["external_ids"], ctx)
        ctx.state[row["id"]] = row
        ctx.pending[row["id"]] = [self._stay(row, None, ts)]
        return Outcome(w.index, "created", row=row)

    def _finish(self, new: Row, old: Row | None, changes: Row, ctx: _Ctx) -> None:
        """Derive and check what depends on several fields: stage within the pipeline,
        amount from line items in the currency, splits, required custom fields, owner."""
        errors: list[FieldError] = []
        pipeline = ctx.catalog.pipelines.get(new["pipeline_id"])
        moved_pipeline = old is not None and old["pipeline_id"] != new["pipeline_id"]
        if pipeline is None or pipeline.deleted:
            errors.append(FieldError(("pipeline_id",), "no such pipeline"))
        else:
            stage: Row | None = None
            if "stage_id" in changes:
                stage = ctx.catalog.stages.get(changes["stage_id"])
                if (
                    stage is None
                    or stage["pipeline_id"] != pipeline.id
                    or stage["deleted_at"] is not None
                ):
                    errors.append(
                        FieldError(("stage_id",), f"is not a stage of pipeline {pipeline.id}")
                    )
                    stage = None
            elif old is None or moved_pipeline:
                stage = pipeline.first_open()
                if stage is None:  # pragma: no cover - pipelines always have an open stage
                    errors.append(FieldError(("pipeline_id",), "has no open stage"))
            if stage is not None and (old is None or stage["id"] != old["stage_id"]):
                if old is not None and old["status"] != "open":
                    errors.append(
                        FieldError(("stage_id",), f"the deal is {old['status']}; reopen it first")
                    )
                elif stage["is_won"] or stage["is_lost"]:
                    which = "won" if stage["is_won"] else "lost"
                    errors.append(
                        FieldError(
                            ("stage_id",),
                            f"is the pipeline's {which} stage: use POST /v1/deals/{{id}}/{which}",
                        )
                    )
                else:
                    new["stage_id"] = stage["id"]
                    if "forecast_category" not in changes:
                        new["forecast_category"] = None  # the new stage's default applies
            current = ctx.catalog.stages.get(new["stage_id"])
            if current is not None:
                new["stage_name"] = current["name"]
                new["stage_forecast_category"] = current["forecast_category"]
        currency = new["currency"]
        if "line_items" in changes:
            lines = changes["line_items"]
        else:
            lines = stored_lines(old["line_items"]) if old is not None else []
        if lines:
            new["line_items"], derived = price_lines(lines, currency)
            if "amount" in changes and changes["amount"] != derived:
                errors.append(
                    FieldError(
                        ("amount",),
                        f"must equal the sum of the line items ({money.format_amount(derived)}) "
                        "or be left out: the amount derives from them",
                    )
                )
            new["amount"] = derived
        else:
            new["line_items"] = []
            amount: Decimal = (
                changes["amount"]
                if "amount" in changes
                else (old["amount"] if old is not None else money.ZERO)
            )
            try:
                new["amount"] = money.exact_amount(amount, currency)
            except money.MoneyError as e:
                errors.append(FieldError(("amount",), str(e)))
        if "splits" in changes:
            new["splits"] = changes["splits"]
        elif old is None:
            new["splits"] = []
        if old is None:
            errors += missing_required(new["custom_fields"], ctx.specs)
        if errors:
            raise ItemRejected("invalid", errors)
        if (old is None or old["owner_id"] != new["owner_id"]) and not self.scope.sees(
            new["owner_id"]
        ):
            raise ItemRejected(
                "forbidden",
                [FieldError(("owner_id",), "is outside the users whose deals you may manage")],
            )

    def _stay(self, row: Row, from_stage: uuid.UUID | None, at: datetime) -> Row:
        return {
            "deal_id": row["id"],
            "pipeline_id": row["pipeline_id"],
            "stage_id": row["stage_id"],
            "from_stage_id": from_stage,
            "entered_at": at,
            "entered_by": self.caller.sub,
            "amount": row["amount"],
            "currency": row["currency"],
            "left_at": None,
            "to_stage_id": None,
        }

    def _move(self, row: Row, from_stage: uuid.UUID, at: datetime, ctx: _Ctx) -> None:
        stays = ctx.pending.setdefault(row["id"], [])
        if stays:
            stays[-1].update(left_at=at, to_stage_id=row["stage_id"])
        else:  # the deal's open stay is in the database
            ctx.closes.append((row["id"], at, row["stage_id"]))
        stays.append(self._stay(row, from_stage, at))

    @staticmethod
    def _claim_external_ids(
        deal_id: uuid.UUID, old: dict[str, str], new: dict[str, str], ctx: _Ctx
    ) -> None:
        for system, value in new.items():
            holder = ctx.ext_owner.get((system, value))
            if holder is not None and holder != deal_id:
                raise ItemRejected(
                    "conflict",
                    [FieldError(("external_ids", system), "already identifies another deal")],
                )
        for system, value in old.items():
            if new.get(system) != value:
                ctx.ext_owner.pop((system, value), None)
        for system, value in new.items():
            ctx.ext_owner[(system, value)] = deal_id


def tenant_rows(tenant: str, rows: list[Row]) -> list[Row]:
    return [{**r, "tenant_id": tenant} for r in rows]
