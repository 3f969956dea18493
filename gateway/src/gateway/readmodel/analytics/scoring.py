"""Cross-domain customer analytics, pure (no I/O): RFM, health score and churn risk.

Everything here works on a `Facts` value (what the read model knows about one customer)
and returns plain JSON-ready dicts, so the rules are unit-tested without a database and the
document explains every number (see gateway/README.md, "Customer analytics").

- **RFM**: recency = days since the last purchase (a won deal or a paid order), frequency =
  purchases in the last 365 days, monetary = their sum per currency. Each is scored 1-5
  against the tenant's quintile breakpoints (`breakpoints`, `quintile`); lower recency is
  better. Monetary is scored in the tenant's primary currency (the one with the largest
  total over the tenant's customers); a customer with no purchase in it is scored on its
  largest single-currency amount (the platform has no FX rates). The segment comes from
  the R x FM grid `SEGMENT_GRID`, FM = round-half-up((f + m) / 2).
- **Health** 0-100: `round(100 * sum(w * s) / sum(w))` over the signals of `HEALTH_SIGNALS`,
  each normalised to s in 0..1 (1 = healthy); an unknown signal counts as neutral 0.5.
  Band: >= 70 green, >= 40 yellow, else red.
- **Churn risk** 0..1: the sum of the weights of the rules of `CHURN_RULES` that apply,
  capped at 1, as a decimal string with two decimals.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from statistics import median
from typing import Any

YEAR = timedelta(days=365)

# --- RFM -----------------------------------------------------------------------------------

# Row = R score (5 first), column = FM score 1..5.
SEGMENT_GRID: dict[int, tuple[str, str, str, str, str]] = {
    5: ("new", "potential_loyalist", "potential_loyalist", "champions", "champions"),
    4: ("promising", "potential_loyalist", "loyal", "loyal", "champions"),
    3: ("needs_attention", "needs_attention", "needs_attention", "loyal", "loyal"),
    2: ("hibernating", "hibernating", "at_risk", "at_risk", "cannot_lose"),
    1: ("lost", "lost", "at_risk", "cannot_lose", "cannot_lose"),
}
SEGMENTS = frozenset(s for row in SEGMENT_GRID.values() for s in row)

# Used until the tenant's first full pass has computed its own (a new tenant).
DEFAULT_BREAKPOINTS: dict[str, list[float]] = {
    "recency": [14.0, 30.0, 90.0, 180.0],
    "frequency": [1.0, 2.0, 3.0, 5.0],
    "monetary": [100.0, 500.0, 1000.0, 5000.0],
}


@dataclass(frozen=True)
class Purchase:
    at: datetime
    currency: str
    amount: Decimal


def breakpoints(population: Sequence[float]) -> list[float] | None:
    """The 20th, 40th, 60th and 80th percentiles (nearest rank) of `population`; None when
    it is empty. Values 1..10 give [2, 4, 6, 8]."""
    values = sorted(population)
    n = len(values)
    if n == 0:
        return None
    return [float(values[max(0, math.ceil(k * n / 5) - 1)]) for k in (1, 2, 3, 4)]


def quintile(value: float, cuts: Sequence[float], *, lower_is_better: bool = False) -> int:
    """1-5: how many breakpoints `value` is above, plus one (5 = best). With breakpoints
    [2, 4, 6, 8]: 1 and 2 score 1, 3 and 4 score 2, ..., 9 and more score 5; reversed when
    lower is better (recency)."""
    above = sum(1 for c in cuts if value > c)
    return 5 - above if lower_is_better else 1 + above


def segment(r: int, f: int, m: int) -> str:
    fm = (f + m + 1) // 2
    return SEGMENT_GRID[r][fm - 1]


def _days(now: datetime, then: datetime) -> int:
    return max(0, (now - then).days)


def monetary_value(monetary: list[dict[str, str]], currency: str | None) -> float:
    """The amount RFM scores: the primary currency's, else the largest amount."""
    amounts = {m["currency"]: Decimal(m["amount"]) for m in monetary}
    if currency is not None and currency in amounts:
        return float(amounts[currency])
    return float(max(amounts.values(), default=Decimal(0)))


def rfm(
    purchases: Sequence[Purchase],
    now: datetime,
    cuts: dict[str, list[float]] | None = None,
    currency: str | None = None,
) -> dict[str, Any]:
    """RFM values, scores and segment; all null (segment too) without any purchase."""
    if not purchases:
        return {
            "recency_days": None,
            "frequency": 0,
            "monetary": [],
            "r": None,
            "f": None,
            "m": None,
            "segment": None,
        }
    cuts = cuts or DEFAULT_BREAKPOINTS
    recency = _days(now, max(p.at for p in purchases))
    recent = [p for p in purchases if now - p.at <= YEAR]
    totals: dict[str, Decimal] = {}
    for p in recent:
        totals[p.currency] = totals.get(p.currency, Decimal(0)) + p.amount
    monetary = [{"currency": c, "amount": str(totals[c])} for c in sorted(totals)]
    r = quintile(recency, cuts["recency"], lower_is_better=True)
    f = quintile(len(recent), cuts["frequency"])
    m = quintile(monetary_value(monetary, currency), cuts["monetary"])
    return {
        "recency_days": recency,
        "frequency": len(recent),
        "monetary": monetary,
        "r": r,
        "f": f,
        "m": m,
        "segment": segment(r, f, m),
    }


# --- facts ---------------------------------------------------------------------------------


@dataclass
class Facts:
    """What the read model knows about one customer, as the scores need it."""

    purchases: list[Purchase] = field(default_factory=list)
    last_activity_at: datetime | None = None
    open_urgent_tickets: int = 0
    open_breached_tickets: int = 0
    sla_breaches_90d: int = 0
    last_csat: int | None = None  # 1-5
    nps_category: str | None = None  # promoter, passive, detractor
    # Emails newest first: (opened, clicked).
    emails: list[tuple[bool, bool]] = field(default_factory=list)
    unsubscribed: bool = False
    # Loyalty points earned in the last 365 days; None without a membership.
    loyalty_points_365d: int | None = None


# --- health --------------------------------------------------------------------------------

DEFAULT_WEIGHTS: dict[str, float] = {
    "purchase_recency": 20.0,
    "activity_recency": 15.0,
    "open_urgent_tickets": 15.0,
    "sla_breaches_90d": 10.0,
    "last_csat": 10.0,
    "nps_category": 15.0,
    "email_engagement": 10.0,
    "loyalty_trend": 5.0,
}
HEALTH_SIGNALS = tuple(DEFAULT_WEIGHTS)
NEUTRAL = 0.5
GREEN_AT, YELLOW_AT = 70, 40
_NPS = {"promoter": 1.0, "passive": 0.5, "detractor": 0.0}


def _clamp(x: float) -> float:
    return min(1.0, max(0.0, x))


def signals(facts: Facts, now: datetime) -> list[tuple[str, Any, float | None]]:
    """(name, raw value, normalised 0..1 or None when unknown) of every health signal."""
    last_purchase = max((p.at for p in facts.purchases), default=None)
    purchase_days = _days(now, last_purchase) if last_purchase else None
    activity_days = _days(now, facts.last_activity_at) if facts.last_activity_at else None
    sent = len(facts.emails)
    engagement = None
    if sent:
        opened = sum(1 for o, _ in facts.emails if o) / sent
        clicked = sum(1 for _, c in facts.emails if c) / sent
        engagement = round(0.6 * opened + 0.4 * clicked, 2)
    points = facts.loyalty_points_365d
    csat = facts.last_csat
    return [
        ("purchase_recency", purchase_days,
         None if purchase_days is None else _clamp(1 - purchase_days / 365)),
        ("activity_recency", activity_days,
         None if activity_days is None else _clamp(1 - activity_days / 180)),
        ("open_urgent_tickets", facts.open_urgent_tickets,
         1 - min(facts.open_urgent_tickets, 3) / 3),
        ("sla_breaches_90d", facts.sla_breaches_90d, 1 - min(facts.sla_breaches_90d, 5) / 5),
        ("last_csat", csat, None if csat is None else _clamp((csat - 1) / 4)),
        ("nps_category", facts.nps_category, _NPS.get(facts.nps_category or "")),
        ("email_engagement", engagement, engagement),
        ("loyalty_trend", points, None if points is None else (1.0 if points > 0 else 0.0)),
    ]  # fmt: skip


def band(score: int) -> str:
    return "green" if score >= GREEN_AT else "yellow" if score >= YELLOW_AT else "red"


def health(facts: Facts, now: datetime, weights: dict[str, float] | None = None) -> dict[str, Any]:
    """{score, band, signals: [{name, value, weight, contribution}]}; contributions are points
    of the score (they add up to it, give or take rounding)."""
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    total = sum(w[name] for name in HEALTH_SIGNALS)
    if total <= 0:  # refused by the settings API; stay defined anyway
        w, total = dict(DEFAULT_WEIGHTS), sum(DEFAULT_WEIGHTS.values())
    out, points = [], 0.0
    for name, value, s in signals(facts, now):
        part = 100 * w[name] * (NEUTRAL if s is None else s) / total
        points += part
        out.append(
            {"name": name, "value": value, "weight": w[name], "contribution": round(part, 1)}
        )
    score = min(100, max(0, math.floor(points + 0.5 + 1e-9)))
    return {"score": score, "band": band(score), "signals": out}


# --- churn risk ----------------------------------------------------------------------------

CHURN_RULES: dict[str, Decimal] = {
    "repeat_buyer_overdue": Decimal("0.35"),
    "no_purchase_365d": Decimal("0.15"),
    "detractor_nps": Decimal("0.25"),
    "open_breached_ticket": Decimal("0.20"),
    "repeated_sla_breaches": Decimal("0.10"),
    "low_csat": Decimal("0.15"),
    "falling_engagement": Decimal("0.15"),
    "unsubscribed": Decimal("0.10"),
    "no_recent_activity": Decimal("0.10"),
}
_CENT = Decimal("0.01")


def _overdue(purchases: Sequence[Purchase], now: datetime) -> str | None:
    """A repeat buyer with no purchase in twice their median inter-purchase interval."""
    days = sorted({p.at for p in purchases})
    if len(days) < 2:
        return None
    gaps = [(b - a).total_seconds() / 86400 for a, b in itertools.pairwise(days)]
    interval = max(1.0, median(gaps))
    since = (now - days[-1]).total_seconds() / 86400
    if since <= 2 * interval:
        return None
    return f"no purchase for {int(since)} days (median interval {round(interval)} days)"


def _falling_engagement(emails: Sequence[tuple[bool, bool]]) -> bool:
    """The 3 newest emails unopened while an older one was opened."""
    return len(emails) > 3 and not any(o for o, _ in emails[:3]) and any(o for o, _ in emails[3:])


def churn_risk(facts: Facts, now: datetime) -> dict[str, Any]:
    """{score: "0.35", reasons: [{code, weight, detail}]}."""
    found: list[tuple[str, str]] = []
    overdue = _overdue(facts.purchases, now)
    if overdue:
        found.append(("repeat_buyer_overdue", overdue))
    if facts.purchases and all(now - p.at > YEAR for p in facts.purchases):
        found.append(("no_purchase_365d", "bought before, nothing in the last 365 days"))
    if facts.nps_category == "detractor":
        found.append(("detractor_nps", "latest NPS answer is a detractor's"))
    if facts.open_breached_tickets:
        found.append(
            ("open_breached_ticket", f"{facts.open_breached_tickets} open ticket(s) past SLA")
        )
    if facts.sla_breaches_90d >= 2:
        found.append(("repeated_sla_breaches", f"{facts.sla_breaches_90d} SLA breaches in 90 days"))
    if facts.last_csat is not None and facts.last_csat <= 2:
        found.append(("low_csat", f"last CSAT {facts.last_csat}/5"))
    if _falling_engagement(facts.emails):
        found.append(("falling_engagement", "the 3 latest emails were not opened"))
    if facts.unsubscribed:
        found.append(("unsubscribed", "unsubscribed from marketing email"))
    if facts.last_activity_at is not None and now - facts.last_activity_at > timedelta(days=90):
        found.append(("no_recent_activity", "no sales activity in 90 days"))
    total = min(Decimal(1), sum((CHURN_RULES[c] for c, _ in found), Decimal(0)))
    return {
        "score": str(total.quantize(_CENT, rounding=ROUND_HALF_UP)),
        "reasons": [
            {"code": c, "weight": str(CHURN_RULES[c]), "detail": detail} for c, detail in found
        ],
    }
