"""ce-type patterns (`crm.pipeline.deal.*`, `*.created.v1`): validation, matching, and the
SQL LIKE form the fan-out and the feed filter with."""

from __future__ import annotations

import re

from chassis.problems import Unprocessable, invalid

_PATTERN = re.compile(r"^[a-z0-9_*]+(\.[a-z0-9_*]+)*$")
MAX_PATTERNS = 50


def check(patterns: list[str], field: str) -> list[str]:
    """The patterns, stripped and deduplicated in order; 422 naming `field.<i>` otherwise."""
    if not patterns:
        raise invalid(field, "give at least one ce-type pattern, e.g. crm.pipeline.deal.*")
    if len(patterns) > MAX_PATTERNS:
        raise invalid(field, f"at most {MAX_PATTERNS} patterns")
    out: list[str] = []
    for i, raw in enumerate(patterns):
        p = raw.strip()
        if len(p) > 200 or not _PATTERN.match(p):
            raise invalid(
                [field, i],
                "not a ce-type pattern: dot-separated [a-z0-9_] words, * matches anything",
            )
        if p not in out:
            out.append(p)
    return out


def parse_query(types: str | None, field: str = "types") -> list[str] | None:
    """`types=crm.pipeline.deal.*,crm.contacts.contact.created.v1` -> patterns (None: all)."""
    if types is None or not types.strip():
        return None
    try:
        return check([t for t in types.split(",") if t.strip()], field)
    except Unprocessable:
        raise invalid(field, "comma-separated ce-type patterns, e.g. crm.pipeline.deal.*") from None


def like(pattern: str) -> str:
    """The SQL LIKE form of a pattern (`_` and `%` are literal, `*` matches anything)."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def matches(pattern: str, ce_type: str) -> bool:
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, ce_type) is not None
