"""Property test: the SQL compiled from a filter tree selects exactly the contacts a plain
in-memory Python evaluation of the same tree selects, over a varied population (missing
values, JSON types, tags, consent, dates, erased/deleted/merged contacts)."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from campaigns.app import MIGRATIONS
from campaigns.filters import ACTIVE, compile_filter
from chassis.db import Database, asyncpg_dsn
from chassis.testing import Infra

NOW = datetime(2026, 6, 1, tzinfo=UTC)
STAGES = ["lead", "mql", "customer", None]
SOURCES = ["web_form", "import", "Web_Form", None]
NAMES = ["Ada", "ada", "Bob", "Bobby", "", None]
TAGS = ["vip", "beta", "churned"]
CF_VALUES: list[Any] = ["EMEA", "US", "emea", 3, 3.5, 10, -1, True, False, None, ["vip", "x"], "10"]


def population(n: int = 80) -> list[dict[str, Any]]:
    rnd = random.Random(7)
    people = []
    for i in range(n):
        cf: dict[str, Any] = {}
        for key in ("region", "size", "flag"):
            if rnd.random() < 0.75:
                cf[key] = rnd.choice(CF_VALUES)
        people.append(
            {
                "id": uuid.UUID(int=i + 1),
                "first_name": rnd.choice(NAMES) or None,
                "email": rnd.choice([f"p{i}@example.com", f"p{i}@corp.example", None]),
                "lifecycle_stage": rnd.choice(STAGES),
                "lead_source": rnd.choice(SOURCES),
                "tags": rnd.sample(TAGS, rnd.randint(0, 2)),
                "custom_fields": cf,
                "email_marketing": rnd.choice(["granted", "denied", "unknown"]),
                "created_at": NOW - timedelta(days=rnd.randint(0, 60), hours=rnd.randint(0, 23)),
                "gone": rnd.choice([None] * 8 + ["deleted", "erased", "merged"]),
            }
        )
    return people


TEXT_FIELDS = {
    "first_name": NAMES,
    "email": ["p1@example.com", "example", "corp", "P2"],
    "lifecycle_stage": STAGES,
    "lead_source": SOURCES,
}
SCALARS = st.sampled_from(["EMEA", "emea", "US", "10", "a", 3, 3.0, 10, 2.5, -1, True, False])
ORDERED = st.sampled_from(["EMEA", "emea", "US", "10", "a", 3, 3.0, 10, 2.5, -1])


def text_cond() -> st.SearchStrategy[dict[str, Any]]:
    def build(field: str) -> st.SearchStrategy[dict[str, Any]]:
        words = st.sampled_from([w for w in TEXT_FIELDS[field] if w] + ["b", "zzz"])
        return st.one_of(
            st.builds(
                lambda op, v: {"field": field, "op": op, "value": v},
                st.sampled_from(["eq", "neq", "contains", "gt", "gte", "lt", "lte"]),
                words,
            ),
            st.builds(
                lambda op, v: {"field": field, "op": op, "value": v},
                st.sampled_from(["in", "nin"]),
                st.lists(words, min_size=1, max_size=3),
            ),
            st.builds(
                lambda op: {"field": field, "op": op}, st.sampled_from(["exists", "not_exists"])
            ),
        )

    return st.sampled_from(sorted(TEXT_FIELDS)).flatmap(build)


def other_cond() -> st.SearchStrategy[dict[str, Any]]:
    tag = st.sampled_from([*TAGS, "none"])
    cf_key = st.sampled_from(["region", "size", "flag", "missing"])
    return st.one_of(
        st.builds(lambda v: {"field": "tags", "op": "contains", "value": v}, tag),
        st.builds(
            lambda op, v: {"field": "tags", "op": op, "value": v},
            st.sampled_from(["in", "nin"]),
            st.lists(tag, min_size=1, max_size=3),
        ),
        st.builds(
            lambda op: {"field": "tags", "op": op}, st.sampled_from(["exists", "not_exists"])
        ),
        st.builds(
            lambda op, v: {"field": "consent.email_marketing", "op": op, "value": v},
            st.sampled_from(["eq", "neq"]),
            st.sampled_from(["granted", "denied", "unknown"]),
        ),
        st.builds(
            lambda d: {"field": "created_at", "op": "within_last_days", "value": d},
            st.integers(0, 70),
        ),
        st.builds(
            lambda op, d: {
                "field": "created_at",
                "op": op,
                "value": (NOW - timedelta(days=d)).isoformat(),
            },
            st.sampled_from(["gt", "gte", "lt", "lte"]),
            st.integers(0, 70),
        ),
        st.builds(
            lambda k, op, v: {"field": f"cf.{k}", "op": op, "value": v},
            cf_key,
            st.sampled_from(["eq", "neq"]),
            SCALARS,
        ),
        st.builds(
            lambda k, op, v: {"field": f"cf.{k}", "op": op, "value": v},
            cf_key,
            st.sampled_from(["gt", "gte", "lt", "lte"]),
            ORDERED,
        ),
        st.builds(
            lambda k, op, v: {"field": f"cf.{k}", "op": op, "value": v},
            cf_key,
            st.sampled_from(["in", "nin"]),
            st.lists(SCALARS, min_size=1, max_size=3),
        ),
        st.builds(
            lambda k, v: {"field": f"cf.{k}", "op": "contains", "value": v},
            cf_key,
            st.sampled_from(["vip", "em", "US", "x"]),
        ),
        st.builds(
            lambda k, op: {"field": f"cf.{k}", "op": op},
            cf_key,
            st.sampled_from(["exists", "not_exists"]),
        ),
    )


def trees() -> st.SearchStrategy[dict[str, Any]]:
    cond = st.one_of(text_cond(), other_cond())
    node = st.recursive(
        cond,
        lambda children: st.one_of(
            st.builds(lambda xs: {"all": xs}, st.lists(children, max_size=3)),
            st.builds(lambda xs: {"any": xs}, st.lists(children, max_size=3)),
            st.builds(lambda x: {"not": x}, children),
        ),
        max_leaves=6,
    )
    return st.builds(lambda xs: {"all": xs}, st.lists(node, max_size=3))


# --- the oracle -------------------------------------------------------------------------------


def is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def json_eq(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if is_num(a) or is_num(b):
        return is_num(a) and is_num(b) and Decimal(str(a)) == Decimal(str(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_eq(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def order(op: str, a: Any, b: Any) -> bool:
    return {"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[op]


def evaluate(node: dict[str, Any], p: dict[str, Any]) -> bool:
    if "all" in node:
        return all(evaluate(x, p) for x in node["all"])
    if "any" in node:
        return any(evaluate(x, p) for x in node["any"])
    if "not" in node:
        return not evaluate(node["not"], p)
    field, op, value = node["field"], node["op"], node.get("value")
    if field == "tags":
        tags = p["tags"]
        return {
            "contains": lambda: value in tags,
            "in": lambda: bool(set(tags) & set(value)),
            "nin": lambda: not set(tags) & set(value),
            "exists": lambda: bool(tags),
            "not_exists": lambda: not tags,
        }[op]()
    if field == "created_at":
        v = p["created_at"]
        if op == "within_last_days":
            return bool(v >= NOW - timedelta(days=value))
        return order(op, v, datetime.fromisoformat(value))
    if field.startswith("cf."):
        v = p["custom_fields"].get(field[3:])
        if op == "exists":
            return v is not None
        if op == "not_exists":
            return v is None
        if op == "eq":
            return json_eq(v, value)
        if op == "neq":
            return not json_eq(v, value)
        if op == "in":
            return any(json_eq(v, x) for x in value)
        if op == "nin":
            return not any(json_eq(v, x) for x in value)
        if op == "contains":
            if isinstance(v, str):
                return value.lower() in v.lower()
            return isinstance(v, list) and value in [x for x in v if isinstance(x, str)]
        if isinstance(value, str):
            return isinstance(v, str) and order(op, v, value)
        return is_num(v) and order(op, Decimal(str(v)), Decimal(str(value)))
    column = "email_marketing" if field == "consent.email_marketing" else field
    v = p[column]
    if op == "exists":
        return v is not None
    if op == "not_exists":
        return v is None
    if op == "eq":
        return v == value
    if op == "neq":
        return v != value
    if op == "in":
        return v in value
    if op == "nin":
        return v not in value
    if op == "contains":
        return v is not None and value.lower() in v.lower()
    return v is not None and order(op, v, value)


# --- the test ---------------------------------------------------------------------------------


async def _load(url: str, people: list[dict[str, Any]]) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.executemany(
            "INSERT INTO contacts (tenant_id, id, version, first_name, email, lifecycle_stage, "
            "lead_source, tags, custom_fields, email_marketing, created_at, updated_at, "
            "deleted_at, "
            "erased_at, merged_into_id) VALUES ('acme', $1, 1, $2, $3, $4, $5, $6, $7::jsonb, $8, "
            "$9, "
            "$9, $10, $11, $12)",
            [
                (
                    p["id"],
                    p["first_name"],
                    p["email"],
                    p["lifecycle_stage"],
                    p["lead_source"],
                    p["tags"],
                    json.dumps(p["custom_fields"]),
                    p["email_marketing"],
                    p["created_at"],
                    NOW if p["gone"] == "deleted" else None,
                    NOW if p["gone"] == "erased" else None,
                    uuid.UUID(int=999) if p["gone"] == "merged" else None,
                )
                for p in people
            ],
        )
        # another tenant's identical rows must never leak in
        await conn.execute(
            "INSERT INTO contacts SELECT 'globex', gen_random_uuid(), version, first_name, "
            "last_name, "
            "email, phone, company_id, owner_id, lifecycle_stage, lead_source, tags, "
            "custom_fields, "
            "email_marketing, legal_basis, consent_updated_at, created_at, updated_at, "
            "merged_into_id, "
            "deleted_at, erased_at FROM contacts WHERE tenant_id = 'acme'"
        )
    finally:
        await conn.close()


def test_sql_evaluation_matches_python_oracle(crm_infra: Infra) -> None:
    loop = asyncio.new_event_loop()
    url = loop.run_until_complete(
        crm_infra.database("crm_campaigns_oracle", MIGRATIONS, "alembic_version_campaigns")
    )
    people = population()
    loop.run_until_complete(_load(url, people))
    live = [p for p in people if p["gone"] is None]
    db = Database(url, pool_size=1)

    async def select(tree: dict[str, Any]) -> set[uuid.UUID]:
        compiled = compile_filter(tree, now=NOW)
        async with db.sessionmaker() as session:
            result = await session.execute(
                text(
                    f"SELECT c.id FROM contacts c WHERE c.tenant_id = 'acme' AND {ACTIVE} AND "
                    f"{compiled.sql}"
                ),
                compiled.params,
            )
            return {r[0] for r in result}

    matched_some = []

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(trees())
    def check(tree: dict[str, Any]) -> None:
        expected = {p["id"] for p in live if evaluate(tree, p)}
        got = loop.run_until_complete(select(tree))
        assert got == expected, tree
        matched_some.append(0 < len(expected) < len(live))

    try:
        check()
    finally:
        loop.run_until_complete(db.dispose())
        loop.close()
    # the generated filters discriminate: many select a proper, non-empty subset
    assert sum(matched_some) > len(matched_some) // 4
