"""Commission math, pure: a statement is a function of (plan versions, credits, quota,
adjustments) and nothing else, so recomputing it is idempotent and independent of the order
in which its inputs arrived.

Every amount is a `Decimal` computed at 60 significant digits (exact for any realistic
amount: sums and products of 2-decimal amounts and 4-decimal rates never round). Lines keep
that full precision; only the statement totals (credit, payout) are rounded, half-up, to the
currency's minor unit, and attainment to 4 places. See the service README for the semantics.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext
from functools import cached_property
from typing import Any

ZERO = Decimal(0)
HUNDRED = Decimal(100)
CONTEXT = Context(prec=60, rounding=ROUND_HALF_UP)
ATTAINMENT_PLACES = Decimal("0.0001")

# ISO 4217 currencies whose minor unit is not 2 digits (all others have 2).
_MINOR_UNITS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0,
    "XPF": 0, "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    "CLF": 4, "UYW": 4,
}  # fmt: skip

CREDIT_SOURCE = {"deal_won": "deal", "order_paid": "order"}


def minor_unit(currency: str) -> int:
    return _MINOR_UNITS.get(currency.upper(), 2)


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Half-up to the currency's minor unit (only statement totals are rounded)."""
    return amount.quantize(Decimal(1).scaleb(-minor_unit(currency)), rounding=ROUND_HALF_UP)


def dec(value: Decimal) -> str:
    """A Decimal as plain text (no exponent), trailing zeros as computed."""
    return format(value, "f")


@dataclass(frozen=True)
class Tier:
    lo: Decimal
    hi: Decimal | None
    rate: Decimal


@dataclass(frozen=True)
class Spiff:
    product: str
    amount_per_unit: Decimal


@dataclass(frozen=True)
class Terms:
    """One effective-dated version of a plan."""

    version: int
    effective_from: date
    period: str
    currency: str
    credit_on: str = "deal_won"
    tier_basis: str = "attainment"
    tier_mode: str = "graduated"
    tiers: tuple[Tier, ...] = (Tier(ZERO, None, ZERO),)
    cap: Decimal | None = None
    spiffs: tuple[Spiff, ...] = ()
    clawback_days: int = 0


@dataclass(frozen=True)
class Credit:
    """A user's share of one deal (or order): the full amount times their split percent."""

    source_kind: str  # "deal" or "order"
    source_id: str
    credit_date: date
    amount: Decimal
    currency: str
    percent: Decimal = HUNDRED
    # product -> quantity on the deal's line items (for spiffs)
    units: tuple[tuple[str, Decimal], ...] = ()
    clawed_back: bool = False

    @cached_property
    def credit(self) -> Decimal:
        if self.percent == HUNDRED:
            return self.amount
        with localcontext(CONTEXT):
            return self.amount * self.percent / HUNDRED


@dataclass(frozen=True)
class Adjustment:
    id: str
    kind: str  # manual | clawback | correction | dispute
    amount: Decimal
    reason: str = ""
    origin_period: str | None = None


@dataclass
class Result:
    plan_version: int
    currency: str
    credit: Decimal  # rounded
    quota: Decimal | None
    attainment: Decimal | None  # 4 places
    payout: Decimal  # rounded
    lines: list[dict[str, Any]] = field(default_factory=list)
    deals_won: int = 0
    exact_credit: Decimal = ZERO
    exact_payout: Decimal = ZERO
    commission: Decimal = ZERO  # tiers + spiffs after the cap, exact

    def content(self) -> dict[str, Any]:
        """What a stored statement compares to decide whether a recomputation changed it."""
        return {
            "plan_version": self.plan_version,
            "currency": self.currency,
            "credit": dec(self.credit),
            "quota": None if self.quota is None else dec(self.quota),
            "attainment": None if self.attainment is None else dec(self.attainment),
            "payout": dec(self.payout),
            "deals_won": self.deals_won,
            "lines": self.lines,
        }


# --- validation -----------------------------------------------------------------------------


def tier_errors(tiers: Sequence[Mapping[str, Any]]) -> list[tuple[list[str | int], str]]:
    """Tiers must be contiguous from 0, non-overlapping, increasing, the last open-ended."""
    errors: list[tuple[list[str | int], str]] = []
    if not tiers:
        return [(["tiers"], "at least one tier is required")]
    for i, t in enumerate(tiers):
        lo, hi, rate = t.get("from"), t.get("to"), t.get("rate")
        if i == 0 and lo != ZERO:
            errors.append((["tiers", 0, "from"], "the first tier must start at 0"))
        if i > 0:
            prev_hi = tiers[i - 1].get("to")
            if prev_hi is not None and lo != prev_hi:
                msg = "must equal the previous tier's 'to' (tiers are contiguous)"
                errors.append((["tiers", i, "from"], msg))
        last = i == len(tiers) - 1
        if last and hi is not None:
            errors.append((["tiers", i, "to"], "the last tier must be open-ended (null)"))
        if not last and hi is None:
            errors.append((["tiers", i, "to"], "only the last tier may be open-ended"))
        if hi is not None and lo is not None and hi <= lo:
            errors.append((["tiers", i, "to"], "must be greater than 'from'"))
        if rate is not None and rate < ZERO:
            errors.append((["tiers", i, "rate"], "must not be negative"))
    return errors


# --- splits ---------------------------------------------------------------------------------


def split_percents(owner_id: str, splits: Iterable[tuple[str, Decimal]]) -> dict[str, Decimal]:
    """user -> percent of a deal's credit; the owner gets 100% when the deal has no splits."""
    out: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for user, percent in splits:
        if user:
            out[user] += percent
    if not out:
        return {owner_id: HUNDRED} if owner_id else {}
    return dict(out)


def split_credit(amount: Decimal, percents: Mapping[str, Decimal]) -> dict[str, Decimal]:
    with localcontext(CONTEXT):
        return {u: amount * p / HUNDRED for u, p in percents.items()}


# --- the statement --------------------------------------------------------------------------


def version_at(versions: Sequence[Terms], day: date) -> Terms | None:
    """The version in force on `day`: latest effective_from <= day (ties: highest number)."""
    best: Terms | None = None
    for v in versions:
        if v.effective_from <= day and (
            best is None or (v.effective_from, v.version) > (best.effective_from, best.version)
        ):
            best = v
    return best


def _money_bounds(v: Terms, quota: Decimal | None) -> list[tuple[Decimal, Decimal | None]]:
    if v.tier_basis == "attainment":
        assert quota is not None
        assert quota > ZERO
        return [(t.lo * quota, None if t.hi is None else t.hi * quota) for t in v.tiers]
    return [(t.lo, t.hi) for t in v.tiers]


def compute(
    versions: Sequence[Terms],
    credits: Iterable[Credit],
    quota: Decimal | None,
    adjustments: Iterable[Adjustment] = (),
    *,
    as_of: date,
) -> Result:
    """The statement of one user for one period.

    `versions` are the plan's versions, `credits` the user's credits dated in the period,
    `quota` the user's quota for it, `adjustments` those booked into it and `as_of` the
    period's last day (the version in force then gives the currency, cap and basis)."""
    if not versions:
        raise ValueError("a plan has at least one version")
    with localcontext(CONTEXT):
        return _compute(versions, credits, quota, adjustments, as_of)


def _compute(
    versions: Sequence[Terms],
    credits: Iterable[Credit],
    quota: Decimal | None,
    adjustments: Iterable[Adjustment],
    as_of: date,
) -> Result:
    ordered_versions = sorted(versions, key=lambda v: (v.effective_from, v.version))
    head = version_at(ordered_versions, as_of) or ordered_versions[0]
    currency = head.currency
    if quota is not None and quota <= ZERO:
        quota = None
    lines: list[dict[str, Any]] = []
    included: list[tuple[Credit, Terms]] = []
    # Sorted on content, never on arrival: the order of events cannot change the result.
    for c in sorted(credits, key=lambda c: (c.credit_date, c.source_kind, c.source_id)):
        v = version_at(ordered_versions, c.credit_date)
        if v is None or CREDIT_SOURCE.get(v.credit_on) != c.source_kind:
            continue
        base = {
            f"{c.source_kind}_id": c.source_id,
            "credit_date": c.credit_date.isoformat(),
            "amount": dec(c.amount),
            "currency": c.currency,
            "split": dec(c.percent),
            "credit": dec(c.credit),
        }
        if c.clawed_back:
            lines.append(
                {"id": f"clawback:{c.source_kind}:{c.source_id}", "kind": "clawback", **base,
                 "payout": "0", "note": "credit removed: reopened or refunded within the "
                 "clawback window"}
            )  # fmt: skip
            continue
        if c.currency != v.currency:
            lines.append(
                {"id": f"excluded:{c.source_kind}:{c.source_id}", "kind": "excluded", **base,
                 "note": f"{c.currency} is not the plan currency {v.currency}; not converted"}
            )  # fmt: skip
            continue
        lines.append(
            {"id": f"{c.source_kind}:{c.source_id}", "kind": c.source_kind, **base,
             "plan_version": v.version}
        )  # fmt: skip
        included.append((c, v))

    total = sum((c.credit for c, _ in included), ZERO)
    attainment = None if quota is None else total / quota

    # Tier slices. Credits fill the period's cumulative credit in date order; each credit's
    # stretch [a, b) is paid under the tiers of the version in force at its credit date.
    bases: dict[tuple[int, int], Decimal] = defaultdict(lambda: ZERO)
    by_version = {v.version: v for v in ordered_versions}
    no_quota = False
    cursor = ZERO
    money_bounds: dict[int, list[tuple[Decimal, Decimal | None]]] = {}
    for c, v in included:
        amount = c.credit
        a, b = cursor, cursor + amount
        cursor = b
        if v.tier_basis == "attainment" and quota is None:
            no_quota = True
            bases[(v.version, 0)] += amount
            continue
        bounds = money_bounds.get(v.version)
        if bounds is None:
            bounds = money_bounds[v.version] = _money_bounds(v, quota)
        if v.tier_mode == "retroactive":
            reached = max(i for i, (lo, _) in enumerate(bounds) if lo <= total or i == 0)
            bases[(v.version, reached)] += amount
            continue
        for i, (lo, hi) in enumerate(bounds):
            top = b if hi is None else min(b, hi)
            overlap = top - max(a, lo)
            if overlap > ZERO:
                bases[(v.version, i)] += overlap
    tiers_total = ZERO
    for (vn, i), base_amount in sorted(bases.items()):
        v = by_version[vn]
        tier = v.tiers[i]
        if no_quota and v.tier_basis == "attainment":
            lo_m, hi_m = None, None
        else:
            lo_m, hi_m = _money_bounds(v, quota)[i]
        amount = base_amount * tier.rate
        tiers_total += amount
        lines.append(
            {
                "id": f"tier:{vn}:{i}",
                "kind": "tier",
                "plan_version": vn,
                "tier": i,
                "mode": v.tier_mode,
                "from": None if lo_m is None else dec(lo_m),
                "to": None if hi_m is None else dec(hi_m),
                "base": dec(base_amount),
                "rate": dec(tier.rate),
                "payout": dec(amount),
            }
        )
    if no_quota:
        lines.append(
            {
                "id": "note:no-quota",
                "kind": "note",
                "note": "no quota for the period: attainment tiers cannot be placed, all "
                "credit is paid at the first tier's rate",
            }
        )

    spiffs_total = ZERO
    for c, v in included:
        units = dict(c.units)
        for s in v.spiffs:
            qty = units.get(s.product)
            if not qty:
                continue
            amount = qty * s.amount_per_unit * c.percent / HUNDRED
            spiffs_total += amount
            lines.append(
                {
                    "id": f"spiff:{c.source_kind}:{c.source_id}:{s.product}",
                    "kind": "spiff",
                    f"{c.source_kind}_id": c.source_id,
                    "product": s.product,
                    "units": dec(qty),
                    "amount_per_unit": dec(s.amount_per_unit),
                    "split": dec(c.percent),
                    "payout": dec(amount),
                }
            )

    commission = tiers_total + spiffs_total
    if head.cap is not None and commission > head.cap:
        lines.append(
            {
                "id": "cap",
                "kind": "cap",
                "cap": dec(head.cap),
                "before_cap": dec(commission),
                "payout": dec(head.cap - commission),
            }
        )
        commission = head.cap

    adjusted = ZERO
    for adj in sorted(adjustments, key=lambda a: (a.kind, a.id)):
        adjusted += adj.amount
        lines.append(
            {
                "id": f"adjustment:{adj.id}",
                "kind": "adjustment",
                "adjustment_id": adj.id,
                "type": adj.kind,
                "reason": adj.reason,
                "origin_period": adj.origin_period,
                "payout": dec(adj.amount),
            }
        )

    exact_payout = commission + adjusted
    return Result(
        plan_version=head.version,
        currency=currency,
        credit=round_money(total, currency),
        quota=None if quota is None else round_money(quota, currency),
        attainment=None
        if attainment is None
        else attainment.quantize(ATTAINMENT_PLACES, rounding=ROUND_HALF_UP),
        payout=round_money(exact_payout, currency),
        lines=lines,
        deals_won=len(included),
        exact_credit=total,
        exact_payout=exact_payout,
        commission=commission,
    )
