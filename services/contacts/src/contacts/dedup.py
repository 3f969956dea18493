"""Duplicate scoring and merge field picking: pure functions over contact rows (dicts).

Score: each signal is a probability-like strength; they combine as 1 - prod(1 - s), so two
independent signals reinforce each other and the score stays within 0..1.
- same normalized email: 0.9
- same E.164 phone: 0.8
- fuzzy full name (rapidfuzz token_sort_ratio), counted from 0.8 similarity up, boosted by the
  same company (same id, or fuzzy company names): up to 0.7
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from rapidfuzz import fuzz

from contacts.models import CONTACT_SCALARS

EMAIL_WEIGHT = 0.9
PHONE_WEIGHT = 0.8
NAME_WEIGHT = 0.7
NAME_FLOOR = 0.8

Row = Mapping[str, Any]


def full_name(row: Row) -> str:
    return " ".join(p for p in (row.get("first_name"), row.get("last_name")) if p).lower()


def score(
    target: Row, other: Row, company_names: Mapping[Any, str] | None = None
) -> tuple[float, list[str]]:
    """How likely `other` is the same person as `target` (0..1), and why."""
    names = company_names or {}
    signals: list[float] = []
    reasons: list[str] = []
    if target.get("email") and target.get("email") == other.get("email"):
        signals.append(EMAIL_WEIGHT)
        reasons.append("email")
    if target.get("phone") and target.get("phone") == other.get("phone"):
        signals.append(PHONE_WEIGHT)
        reasons.append("phone")
    a, b = full_name(target), full_name(other)
    if a and b:
        name_sim = fuzz.token_sort_ratio(a, b) / 100.0
        if name_sim >= NAME_FLOOR:
            company_sim = _company_similarity(target, other, names)
            # name alone counts 0.6 of the weight, a matching company the rest
            strength = NAME_WEIGHT * (0.6 * _stretch(name_sim) + 0.4 * company_sim)
            signals.append(strength)
            reasons.append("name")
            if company_sim >= 0.8:
                reasons.append("company")
    combined = 1.0
    for s in signals:
        combined *= 1.0 - s
    return round(1.0 - combined, 4), reasons


def _stretch(name_sim: float) -> float:
    """Map similarity NAME_FLOOR..1 onto 0.5..1."""
    return 0.5 + 0.5 * (name_sim - NAME_FLOOR) / (1.0 - NAME_FLOOR)


def _company_similarity(a: Row, b: Row, names: Mapping[Any, str]) -> float:
    ca, cb = a.get("company_id"), b.get("company_id")
    if not ca or not cb:
        return 0.0
    if ca == cb:
        return 1.0
    na, nb = names.get(ca), names.get(cb)
    if not na or not nb:
        return 0.0
    return float(fuzz.token_sort_ratio(na.lower(), nb.lower())) / 100.0


MERGE_SCALARS = CONTACT_SCALARS


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _consent_time(row: Row) -> datetime | None:
    consent = row.get("consent")
    if not consent or not consent.get("updated_at"):
        return None
    t = consent["updated_at"]
    return datetime.fromisoformat(t) if isinstance(t, str) else t  # type: ignore[no-any-return]


def pick_merged(survivor: Row, losers: Sequence[Row]) -> dict[str, Any]:
    """The survivor's fields after absorbing `losers`.

    For each field the survivor keeps its value unless empty, then the most recently updated
    loser's non-empty value wins (custom fields key by key). Tags and external ids are
    unioned (the survivor wins per system). Consent: the most recently changed one wins, so a
    withdrawal recorded on a duplicate is never lost."""
    ordered = sorted(losers, key=lambda r: r["updated_at"], reverse=True)
    out: dict[str, Any] = {}
    for name in MERGE_SCALARS:
        value = survivor.get(name)
        if _empty(value):
            value = next((r.get(name) for r in ordered if not _empty(r.get(name))), value)
        out[name] = value
    custom: dict[str, Any] = {}
    for row in [*reversed(ordered), survivor]:  # later writes win: survivor last
        for key, value in (row.get("custom_fields") or {}).items():
            if not _empty(value):
                custom[key] = value
    out["custom_fields"] = custom
    tags: dict[str, str] = {}
    for row in [survivor, *ordered]:
        for t in row.get("tags") or []:
            tags.setdefault(t.lower(), t)
    out["tags"] = list(tags.values())
    ext: dict[str, str] = {}
    for row in [survivor, *ordered]:
        for system, value in (row.get("external_ids") or {}).items():
            ext.setdefault(system, value)
    out["external_ids"] = ext
    consents = [r for r in [survivor, *ordered] if r.get("consent")]
    if consents:
        timed = [r for r in consents if _consent_time(r) is not None]
        best = max(timed, key=lambda r: _consent_time(r)) if timed else consents[0]  # type: ignore[arg-type, return-value]
        out["consent"] = best["consent"]
    else:
        out["consent"] = survivor.get("consent")
    return out
