"""The segment filter language, validated and compiled to one SQL boolean expression over
the contacts replica (alias `c`).

    node = {"all": [node, ...]} | {"any": [node, ...]} | {"not": node} | cond
    cond = {"field": F, "op": OP, "value": V}

Every compiled condition is two-valued (never SQL NULL), so `not` is the plain complement
and a missing value never matches eq/in/contains/gt..., while it does match neq/nin.
Text comparisons (gt/lt...) use the "C" collation (code point order); `contains` is a
case-insensitive substring test for text, membership for tags and JSON arrays.

Input never reaches the SQL text: field names select from fixed fragments, values and
custom-field keys are bound parameters. Every problem is reported at once as a 422 whose
`errors` name the path, e.g. ["filter", "all", 0, "op"].
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from chassis.problems import Unprocessable

OPS = frozenset(
    {
        "eq",
        "neq",
        "in",
        "nin",
        "contains",
        "gt",
        "gte",
        "lt",
        "lte",
        "exists",
        "not_exists",
        "within_last_days",
    }
)
ORDER_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}

TEXT_COLUMNS = {
    "first_name": "first_name",
    "last_name": "last_name",
    "email": "email",
    "phone": "phone",
    "company_id": "company_id",
    "owner_id": "owner_id",
    "lifecycle_stage": "lifecycle_stage",
    "lead_source": "lead_source",
    "consent.email_marketing": "email_marketing",
    "consent.legal_basis": "legal_basis",
}
TIME_COLUMNS = {"created_at": "created_at", "updated_at": "updated_at"}
TEXT_OPS = frozenset(
    {"eq", "neq", "in", "nin", "contains", "gt", "gte", "lt", "lte", "exists", "not_exists"}
)
TIME_OPS = frozenset({"gt", "gte", "lt", "lte", "exists", "not_exists", "within_last_days"})
TAG_OPS = frozenset({"contains", "in", "nin", "exists", "not_exists"})
CF_OPS = TEXT_OPS
NUMBER_OPS = frozenset({"eq", "neq", "gt", "gte", "lt", "lte", "in", "nin"})
TIER_OPS = frozenset({"eq", "neq", "in", "nin", "exists", "not_exists"})
ENGAGEMENT_OPS = frozenset({"eq", "neq", "in", "nin", "exists", "not_exists", "within_last_days"})
CF_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
MAX_CONDITIONS = 200
MAX_DEPTH = 12
MAX_LIST = 1000

Path = list[str | int]

FIELD_HELP = (
    "known fields: " + ", ".join([*TEXT_COLUMNS, *TIME_COLUMNS]) + ", tags, cf.<key>, "
    "score.<model>, loyalty.tier, loyalty.points, engagement.opened, engagement.clicked"
)


@dataclass(frozen=True)
class ScoreModel:
    id: uuid.UUID
    half_life_days: float


@dataclass
class Compiled:
    sql: str
    params: dict[str, Any]


@dataclass
class _Compiler:
    models: dict[str, ScoreModel]
    now: datetime
    prefix: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    conditions: int = 0

    def bind(self, value: Any) -> str:
        name = f"{self.prefix}f{len(self.params)}"
        self.params[name] = value
        return f":{name}"

    def error(self, path: Path, message: str) -> str:
        self.errors.append({"path": list(path), "message": message})
        return "false"

    # -- tree ----------------------------------------------------------------------------------

    def node(self, value: Any, path: Path, depth: int) -> str:
        if depth > MAX_DEPTH:
            return self.error(path, f"nested deeper than {MAX_DEPTH} levels")
        if not isinstance(value, dict):
            return self.error(
                path, "must be an object: {all|any: [...]}, {not: ...} or a condition"
            )
        if "field" in value or "op" in value:
            return self.cond(value, path)
        keys = set(value)
        if len(keys) != 1 or not keys <= {"all", "any", "not"}:
            return self.error(path, "must have exactly one of all, any, not (or be a condition)")
        (key,) = keys
        if key == "not":
            return f"(NOT {self.node(value['not'], [*path, 'not'], depth + 1)})"
        items = value[key]
        if not isinstance(items, list):
            return self.error([*path, key], "must be a list")
        if not items:
            return "true" if key == "all" else "false"
        parts = [self.node(item, [*path, key, i], depth + 1) for i, item in enumerate(items)]
        joiner = " AND " if key == "all" else " OR "
        return "(" + joiner.join(parts) + ")"

    def cond(self, value: dict[str, Any], path: Path) -> str:
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            return self.error(path, f"more than {MAX_CONDITIONS} conditions")
        extra = set(value) - {"field", "op", "value"}
        if extra:
            return self.error([*path, sorted(extra)[0]], "unknown key; use field, op, value")
        name, op = value.get("field"), value.get("op")
        if not isinstance(name, str) or not name:
            return self.error([*path, "field"], "required: the field to test")
        if not isinstance(op, str) or op not in OPS:
            return self.error([*path, "op"], f"unknown op {op!r}; one of {', '.join(sorted(OPS))}")
        v = value.get("value")
        vpath = [*path, "value"]
        if name in TEXT_COLUMNS:
            return self.text(f"c.{TEXT_COLUMNS[name]}", name, op, v, path)
        if name in TIME_COLUMNS:
            return self.time(f"c.{TIME_COLUMNS[name]}", name, op, v, path)
        if name == "tags":
            return self.tags(op, v, path)
        if name.startswith("cf."):
            key = name[3:]
            if not CF_KEY.match(key):
                return self.error([*path, "field"], f"invalid custom field key {key!r}")
            return self.custom_field(key, op, v, path)
        if name.startswith("score."):
            model = self.models.get(name[6:])
            if model is None:
                return self.error([*path, "field"], f"unknown scoring model {name[6:]!r}")
            if op not in NUMBER_OPS:
                return self._bad_op(path, name, NUMBER_OPS)
            hl = self.bind(model.half_life_days)
            expr = (
                "COALESCE((SELECT s.score * CASE WHEN CAST(" + hl + " AS float8) > 0 THEN "
                "power(0.5, extract(epoch FROM (CAST(" + self.bind(self.now) + " AS timestamptz) "
                "- s.scored_at)) / 86400.0 / CAST(" + hl + " AS float8)) ELSE 1 END "
                "FROM lead_scores s WHERE s.tenant_id = c.tenant_id AND s.model_id = "
                + self.bind(model.id)
                + " AND s.contact_id = c.id), 0)"
            )
            return self.number(expr, op, v, vpath)
        if name == "loyalty.points":
            if op not in NUMBER_OPS:
                return self._bad_op(path, name, NUMBER_OPS)
            expr = (
                "COALESCE((SELECT sum(m.balance) FROM loyalty_members m WHERE m.tenant_id = "
                "c.tenant_id AND m.contact_id = c.id), 0)"
            )
            return self.number(expr, op, v, vpath)
        if name == "loyalty.tier":
            return self.tier(op, v, path)
        if name in ("engagement.opened", "engagement.clicked"):
            column = "first_opened_at" if name.endswith("opened") else "first_clicked_at"
            return self.engagement(column, name, op, v, path)
        return self.error([*path, "field"], f"unknown field {name!r}; {FIELD_HELP}")

    def _bad_op(self, path: Path, name: str, allowed: frozenset[str]) -> str:
        return self.error(
            [*path, "op"], f"op not allowed for {name}; one of {', '.join(sorted(allowed))}"
        )

    # -- values --------------------------------------------------------------------------------

    def _string(self, v: Any, path: Path) -> str | None:
        if not isinstance(v, str):
            self.error(path, "must be a string")
            return None
        return v

    def _list(self, v: Any, path: Path, kind: type | tuple[type, ...]) -> list[Any] | None:
        if not isinstance(v, list) or not v or len(v) > MAX_LIST:
            self.error(path, f"must be a non-empty list of at most {MAX_LIST} values")
            return None
        for i, item in enumerate(v):
            kinds = kind if isinstance(kind, tuple) else (kind,)
            if not isinstance(item, kinds) or (isinstance(item, bool) and bool not in kinds):
                self.error([*path, i], "wrong type of value")
                return None
        return v

    def _days(self, v: Any, path: Path) -> int | None:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 36500:
            self.error(path, "must be a whole number of days between 0 and 36500")
            return None
        return v

    def _number(self, v: Any, path: Path) -> Decimal | None:
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            self.error(path, "must be a number")
            return None
        try:
            d = Decimal(str(v))
        except InvalidOperation:
            self.error(path, "must be a number")
            return None
        if not d.is_finite():
            self.error(path, "must be a finite number")
            return None
        return d

    def _since(self, days: int) -> str:
        return (
            f"(CAST({self.bind(self.now)} AS timestamptz) - make_interval(days => "
            f"CAST({self.bind(days)} AS int)))"
        )

    # -- field kinds ---------------------------------------------------------------------------

    def text(self, col: str, name: str, op: str, v: Any, path: Path) -> str:
        vpath = [*path, "value"]
        if op not in TEXT_OPS:
            return self._bad_op(path, name, TEXT_OPS)
        if op == "exists":
            return f"({col} IS NOT NULL)"
        if op == "not_exists":
            return f"({col} IS NULL)"
        if op in ("in", "nin"):
            items = self._list(v, vpath, str)
            if items is None:
                return "false"
            test = f"COALESCE({col} = ANY(CAST({self.bind(items)} AS text[])), false)"
            return test if op == "in" else f"(NOT {test})"
        s = self._string(v, vpath)
        if s is None:
            return "false"
        p = self.bind(s)
        if op == "eq":
            return f"COALESCE({col} = {p}, false)"
        if op == "neq":
            return f"({col} IS DISTINCT FROM {p})"
        if op == "contains":
            return f"COALESCE(strpos(lower({col}), lower({p})) > 0, false)"
        return f'COALESCE({col} COLLATE "C" {ORDER_OPS[op]} {p}, false)'

    def time(self, col: str, name: str, op: str, v: Any, path: Path) -> str:
        vpath = [*path, "value"]
        if op not in TIME_OPS:
            return self._bad_op(path, name, TIME_OPS)
        if op == "exists":
            return f"({col} IS NOT NULL)"
        if op == "not_exists":
            return f"({col} IS NULL)"
        if op == "within_last_days":
            days = self._days(v, vpath)
            if days is None:
                return "false"
            return f"COALESCE({col} >= {self._since(days)}, false)"
        when = parse_time(v)
        if when is None:
            return self.error(vpath, "must be an RFC 3339 timestamp with a time zone")
        return f"COALESCE({col} {ORDER_OPS[op]} CAST({self.bind(when)} AS timestamptz), false)"

    def tags(self, op: str, v: Any, path: Path) -> str:
        vpath = [*path, "value"]
        if op not in TAG_OPS:
            return self._bad_op(path, "tags", TAG_OPS)
        if op == "exists":
            return "(cardinality(c.tags) > 0)"
        if op == "not_exists":
            return "(cardinality(c.tags) = 0)"
        if op == "contains":
            s = self._string(v, vpath)
            return "false" if s is None else f"({self.bind(s)} = ANY(c.tags))"
        items = self._list(v, vpath, str)
        if items is None:
            return "false"
        test = f"(c.tags && CAST({self.bind(items)} AS text[]))"
        return test if op == "in" else f"(NOT {test})"

    def custom_field(self, key: str, op: str, v: Any, path: Path) -> str:
        vpath = [*path, "value"]
        if op not in CF_OPS:
            return self._bad_op(path, f"cf.{key}", CF_OPS)
        k = self.bind(key)
        node = f"(c.custom_fields -> {k})"
        if op == "exists":
            return f"COALESCE(jsonb_typeof({node}) <> 'null', false)"
        if op == "not_exists":
            return f"(NOT COALESCE(jsonb_typeof({node}) <> 'null', false))"
        scalar = (str, int, float, bool)
        if op in ("in", "nin"):
            items = self._list(v, vpath, scalar)
            if items is None:
                return "false"
            p = self.bind(json.dumps(items))
            test = (
                f"EXISTS (SELECT 1 FROM jsonb_array_elements(CAST({p} AS jsonb)) AS e(v) "
                f"WHERE e.v = {node})"
            )
            return test if op == "in" else f"(NOT {test})"
        if op == "contains":
            s = self._string(v, vpath)
            if s is None:
                return "false"
            p = self.bind(s)
            return (
                f"COALESCE(CASE jsonb_typeof({node}) WHEN 'string' THEN "
                f"strpos(lower(c.custom_fields ->> {k}), lower({p})) > 0 WHEN 'array' THEN "
                f"{node} @> jsonb_build_array(CAST({p} AS text)) ELSE false END, false)"
            )
        if op in ("eq", "neq"):
            if not isinstance(v, scalar):
                return self.error(vpath, "must be a string, number or boolean")
            test = f"COALESCE({node} = CAST({self.bind(json.dumps(v))} AS jsonb), false)"
            return test if op == "eq" else f"(NOT {test})"
        if isinstance(v, str):
            return (
                f"COALESCE(CASE WHEN jsonb_typeof({node}) = 'string' THEN "
                f'(c.custom_fields ->> {k}) COLLATE "C" {ORDER_OPS[op]} {self.bind(v)} '
                "ELSE false END, false)"
            )
        d = self._number(v, vpath)
        if d is None:
            return "false"
        return (
            f"COALESCE(CASE WHEN jsonb_typeof({node}) = 'number' THEN "
            f"CAST(c.custom_fields ->> {k} AS numeric) {ORDER_OPS[op]} "
            f"CAST({self.bind(d)} AS numeric) ELSE false END, false)"
        )

    def number(self, expr: str, op: str, v: Any, vpath: Path) -> str:
        if op in ("in", "nin"):
            if not isinstance(v, list) or not v or len(v) > MAX_LIST:
                return self.error(vpath, f"must be a non-empty list of at most {MAX_LIST} numbers")
            nums = [self._number(x, [*vpath, i]) for i, x in enumerate(v)]
            if any(n is None for n in nums):
                return "false"
            test = f"(CAST({expr} AS numeric) = ANY(CAST({self.bind(nums)} AS numeric[])))"
            return test if op == "in" else f"(NOT {test})"
        d = self._number(v, vpath)
        if d is None:
            return "false"
        sql_op = {"eq": "=", "neq": "<>", **ORDER_OPS}[op]
        return f"(CAST({expr} AS numeric) {sql_op} CAST({self.bind(d)} AS numeric))"

    def tier(self, op: str, v: Any, path: Path) -> str:
        vpath = [*path, "value"]
        if op not in TIER_OPS:
            return self._bad_op(path, "loyalty.tier", TIER_OPS)
        base = (
            "SELECT 1 FROM loyalty_members m "
            "WHERE m.tenant_id = c.tenant_id AND m.contact_id = c.id"
        )
        if op in ("exists", "not_exists"):
            test = f"EXISTS ({base} AND m.tier IS NOT NULL)"
            return test if op == "exists" else f"(NOT {test})"
        if op in ("in", "nin"):
            items = self._list(v, vpath, str)
            if items is None:
                return "false"
            test = f"EXISTS ({base} AND m.tier = ANY(CAST({self.bind(items)} AS text[])))"
            return test if op == "in" else f"(NOT {test})"
        s = self._string(v, vpath)
        if s is None:
            return "false"
        test = f"EXISTS ({base} AND m.tier = {self.bind(s)})"
        return test if op == "eq" else f"(NOT {test})"

    def engagement(self, column: str, name: str, op: str, v: Any, path: Path) -> str:
        vpath = [*path, "value"]
        if op not in ENGAGEMENT_OPS:
            return self._bad_op(path, name, ENGAGEMENT_OPS)
        base = (
            "SELECT 1 FROM deliveries d WHERE d.tenant_id = c.tenant_id AND d.contact_id = c.id "
            f"AND d.{column} IS NOT NULL"
        )
        if op in ("exists", "not_exists"):
            test = f"EXISTS ({base})"
            return test if op == "exists" else f"(NOT {test})"
        if op == "within_last_days":
            days = self._days(v, vpath)
            return (
                "false"
                if days is None
                else f"EXISTS ({base} AND d.{column} >= {self._since(days)})"
            )
        if op in ("in", "nin"):
            items = self._list(v, vpath, str)
            ids = [_uuid(x) for x in items or []]
            if items is None or None in ids:
                return self.error(vpath, "must be a list of campaign ids")
            test = f"EXISTS ({base} AND d.campaign_id = ANY(CAST({self.bind(ids)} AS uuid[])))"
            return test if op == "in" else f"(NOT {test})"
        cid = _uuid(v)
        if cid is None:
            return self.error(vpath, "must be a campaign id")
        test = f"EXISTS ({base} AND d.campaign_id = {self.bind(cid)})"
        return test if op == "eq" else f"(NOT {test})"


def _uuid(v: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(v))
    except ValueError:
        return None


def parse_time(v: Any) -> datetime | None:
    if not isinstance(v, str):
        return None
    try:
        when = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def referenced_models(tree: Any) -> set[str]:
    """The model names/ids a filter mentions through score.<model> fields."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            f = node.get("field")
            if isinstance(f, str) and f.startswith("score."):
                found.add(f[6:])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(tree)
    return found


def compile_filter(
    tree: Any,
    *,
    now: datetime,
    models: dict[str, ScoreModel] | None = None,
    path: Path | None = None,
    prefix: str = "",
) -> Compiled:
    """Validate `tree` and compile it to a boolean SQL expression over `contacts c`; raises
    a 422 listing every problem. `prefix` keeps the bind names of several compiled trees in
    one statement apart."""
    compiler = _Compiler(models or {}, now, prefix)
    sql = compiler.node(tree, list(path or ["filter"]), 0)
    if compiler.errors:
        first = compiler.errors[0]
        where = ".".join(str(p) for p in first["path"])
        raise Unprocessable(f"{where}: {first['message']}", errors=compiler.errors)
    return Compiled(sql, compiler.params)


ACTIVE = "c.deleted_at IS NULL AND c.erased_at IS NULL AND c.merged_into_id IS NULL"
