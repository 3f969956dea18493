"""The commission math: hypothesis properties and worked examples."""

from __future__ import annotations

import random
from datetime import date
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commissions.calc import (
    Adjustment,
    Credit,
    Spiff,
    Terms,
    Tier,
    compute,
    round_money,
    split_credit,
    split_percents,
    tier_errors,
)
from commissions.periods import bounds, next_period, period_of

Q4_END = date(2026, 12, 31)
ISSUE_TIERS = (Tier(D(0), D("0.5"), D("0.05")), Tier(D("0.5"), D("1.0"), D("0.10")),
               Tier(D("1.0"), None, D("0.15")))  # fmt: skip


def terms(**kw: object) -> Terms:
    values: dict[str, object] = {
        "version": 1,
        "effective_from": date(2026, 1, 1),
        "period": "quarter",
        "currency": "USD",
        "tiers": ISSUE_TIERS,
    }
    values.update(kw)
    return Terms(**values)  # type: ignore[arg-type]


def deal(i: int, amount: str, *, day: date = date(2026, 11, 2), **kw: object) -> Credit:
    return Credit("deal", f"d{i:04d}", day, D(amount), str(kw.pop("currency", "USD")), **kw)  # type: ignore[arg-type]


# --- properties -----------------------------------------------------------------------------

money = st.decimals(min_value=D(0), max_value=D("10000000"), places=2)
rates = st.decimals(min_value=D(0), max_value=D("0.5"), places=4)


@st.composite
def tier_tables(draw: st.DrawFn, increasing: bool = False) -> tuple[Tier, ...]:
    n = draw(st.integers(1, 5))
    cuts = sorted(set(draw(st.lists(st.decimals(D("0.01"), D("3"), places=2), min_size=n - 1,
                                    max_size=n - 1))))  # fmt: skip
    rs = draw(st.lists(rates, min_size=len(cuts) + 1, max_size=len(cuts) + 1))
    if increasing:
        rs = sorted(rs)
    edges = [D(0), *cuts, None]
    return tuple(Tier(edges[i], edges[i + 1], rs[i]) for i in range(len(rs)))  # type: ignore[arg-type]


def payout_of(t: Terms, amounts: list[D], quota: D | None = D("100000")) -> D:
    credits = [deal(i, str(a)) for i, a in enumerate(amounts)]
    return compute([t], credits, quota, as_of=Q4_END).exact_payout


@settings(max_examples=200, deadline=None)
@given(tiers=tier_tables(), basis=st.sampled_from(["attainment", "amount"]),
       a=money, extra=money, quota=st.decimals(D("1"), D("1000000"), places=2))  # fmt: skip
def test_graduated_payout_is_monotonic_in_credit(
    tiers: tuple[Tier, ...], basis: str, a: D, extra: D, quota: D
) -> None:
    t = terms(tiers=tiers, tier_basis=basis, tier_mode="graduated")
    assert payout_of(t, [a], quota) <= payout_of(t, [a, extra], quota)


@settings(max_examples=200, deadline=None)
@given(tiers=tier_tables(), mode=st.sampled_from(["graduated", "retroactive"]),
       amounts=st.lists(money, max_size=6), cap=money,
       units=st.decimals(D(0), D(50), places=0))  # fmt: skip
def test_payout_never_exceeds_the_cap(
    tiers: tuple[Tier, ...], mode: str, amounts: list[D], cap: D, units: D
) -> None:
    t = terms(tiers=tiers, tier_mode=mode, cap=cap, spiffs=(Spiff("Onboarding", D("100")),))
    credits = [deal(i, str(a), units=(("Onboarding", units),)) for i, a in enumerate(amounts)]
    r = compute([t], credits, D("50000"), as_of=Q4_END)
    assert r.exact_payout <= cap
    assert r.payout <= cap


@settings(max_examples=200, deadline=None)
@given(tiers=tier_tables(increasing=True), basis=st.sampled_from(["attainment", "amount"]),
       amounts=st.lists(money, max_size=6))  # fmt: skip
def test_retroactive_pays_at_least_graduated_for_increasing_rates(
    tiers: tuple[Tier, ...], basis: str, amounts: list[D]
) -> None:
    grad = payout_of(terms(tiers=tiers, tier_basis=basis, tier_mode="graduated"), amounts)
    retro = payout_of(terms(tiers=tiers, tier_basis=basis, tier_mode="retroactive"), amounts)
    assert retro >= grad


@settings(max_examples=300, deadline=None)
@given(amount=st.decimals(D("-1000000"), D("10000000"), places=2),
       cuts=st.lists(st.decimals(D("0.01"), D("99.99"), places=2), max_size=5, unique=True),
       users=st.lists(st.sampled_from(["u1", "u2", "u3"]), min_size=6, max_size=6))  # fmt: skip
def test_splits_conserve_credit(amount: D, cuts: list[D], users: list[str]) -> None:
    edges = [D(0), *sorted(cuts), D(100)]
    splits = [(users[i], edges[i + 1] - edges[i]) for i in range(len(edges) - 1)]
    percents = split_percents("owner", splits)
    assert sum(percents.values()) == 100
    assert sum(split_credit(amount, percents).values()) == amount


def test_no_splits_credits_the_owner_in_full() -> None:
    assert split_percents("owner", []) == {"owner": 100}
    assert split_credit(D("1234.56"), split_percents("owner", [])) == {"owner": D("1234.56")}


@settings(max_examples=150, deadline=None)
@given(tiers=tier_tables(), mode=st.sampled_from(["graduated", "retroactive"]),
       amounts=st.lists(st.tuples(money, st.integers(1, 90), st.decimals(D(1), D(100), places=2),
                                  st.booleans()), max_size=8),
       adjustments=st.lists(st.decimals(D(-1000), D(1000), places=2), max_size=3),
       seed=st.integers())  # fmt: skip
def test_recomputation_is_idempotent_and_order_independent(
    tiers: tuple[Tier, ...],
    mode: str,
    amounts: list[tuple[D, int, D, bool]],
    adjustments: list[D],
    seed: int,
) -> None:
    v1 = terms(tiers=tiers, tier_mode=mode)
    v2 = terms(version=2, effective_from=date(2026, 11, 15), tiers=tiers, tier_basis="amount",
               cap=D("20000"), spiffs=(Spiff("X", D("10")),))  # fmt: skip
    credits = [
        deal(i, str(a), day=date.fromordinal(date(2026, 10, 1).toordinal() + d - 1),
             percent=p, clawed_back=claw, units=(("X", D(2)),))
        for i, (a, d, p, claw) in enumerate(amounts)
    ]  # fmt: skip
    adjs = [Adjustment(f"a{i}", "manual", x) for i, x in enumerate(adjustments)]
    first = compute([v1, v2], credits, D("80000"), adjs, as_of=Q4_END)
    again = compute([v1, v2], credits, D("80000"), adjs, as_of=Q4_END)
    shuffled = list(credits)
    random.Random(seed).shuffle(shuffled)
    other = compute([v2, v1], shuffled, D("80000"), adjs[::-1], as_of=Q4_END)
    assert first.content() == again.content() == other.content()


# --- worked examples ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "t", "credits", "quota", "credit", "attainment", "payout"),
    [
        ("issue plan, graduated: 2500 + 5000 + 3000",
         terms(), [deal(1, "70000"), deal(2, "50000")], "100000", "120000.00", "1.2000",
         "10500.00"),
        ("issue plan, retroactive: all at 15%",
         terms(tier_mode="retroactive"), [deal(1, "120000")], "100000", "120000.00", "1.2000",
         "18000.00"),
        ("retroactive below the second tier: all at 5%",
         terms(tier_mode="retroactive"), [deal(1, "40000")], "100000", "40000.00", "0.4000",
         "2000.00"),
        ("retroactive exactly at a bound reaches that tier",
         terms(tier_mode="retroactive"), [deal(1, "50000")], "100000", "50000.00", "0.5000",
         "5000.00"),
        ("amount basis, graduated",
         terms(tier_basis="amount", tiers=(Tier(D(0), D(10000), D("0.1")),
                                           Tier(D(10000), None, D("0.2")))),
         [deal(1, "25000")], None, "25000.00", None, "4000.00"),
        ("cap applies to tiers + spiffs",
         terms(cap=D("50000.00")), [deal(1, "1000000")], "100000", "1000000.00", "10.0000",
         "50000.00"),
        ("split 60% of 10000 with 3 Onboarding units: 6000 credit, 300 tiers, 180 spiff",
         terms(spiffs=(Spiff("Onboarding", D("100.00")),)),
         [deal(1, "10000", percent=D(60), units=(("Onboarding", D(3)),))], "100000",
         "6000.00", "0.0600", "480.00"),
        ("half-up on the total only: 234.50 x 1% = 2.345 -> 2.35",
         terms(tier_basis="amount", tiers=(Tier(D(0), None, D("0.01")),)),
         [deal(1, "234.50")], None, "234.50", None, "2.35"),
        ("line precision kept: 3 x 33.335 x 10% = 10.0005 -> 10.00",
         terms(tier_basis="amount", tiers=(Tier(D(0), None, D("0.1")),)),
         [deal(1, "33.335"), deal(2, "33.335"), deal(3, "33.335")], None, "100.01", None,
         "10.00"),
        ("JPY has no minor unit: 12345 x 10% = 1234.5 -> 1235",
         terms(currency="JPY", tier_basis="amount", tiers=(Tier(D(0), None, D("0.1")),)),
         [deal(1, "12345", currency="JPY")], None, "12345", None, "1235"),
        ("other currencies are reported, not converted",
         terms(), [deal(1, "10000"), deal(2, "99999", currency="EUR")], "100000", "10000.00",
         "0.1000", "500.00"),
        ("no quota on an attainment plan: first tier rate",
         terms(), [deal(1, "80000")], None, "80000.00", None, "4000.00"),
        ("a clawed-back credit counts for nothing",
         terms(), [deal(1, "10000"), deal(2, "90000", clawed_back=True)], "100000",
         "10000.00", "0.1000", "500.00"),
    ],
)  # fmt: skip
def test_worked_examples(
    case: str,
    t: Terms,
    credits: list[Credit],
    quota: str | None,
    credit: str,
    attainment: str | None,
    payout: str,
) -> None:
    r = compute([t], credits, None if quota is None else D(quota), as_of=Q4_END)
    assert str(r.credit) == credit, case
    assert (None if r.attainment is None else str(r.attainment)) == attainment, case
    assert str(r.payout) == payout, case


def test_lines_explain_the_payout() -> None:
    t = terms(spiffs=(Spiff("Onboarding", D("100.00")),), cap=D("9000"))
    credits = [deal(1, "70000", units=(("Onboarding", D(2)),)), deal(2, "50000")]
    adj = Adjustment("a1", "manual", D("-250.00"), "draw recovery")
    r = compute([t], credits, D("100000"), [adj], as_of=Q4_END)
    kinds = [line["kind"] for line in r.lines]
    assert kinds == ["deal", "deal", "tier", "tier", "tier", "spiff", "cap", "adjustment"]
    tiers = [line for line in r.lines if line["kind"] == "tier"]

    def num(x: str | None) -> D | None:
        return None if x is None else D(x)

    assert [tuple(num(x[k]) for k in ("from", "to", "base", "rate")) for x in tiers] == [
        (0, 50000, 50000, D("0.05")),
        (50000, 100000, 50000, D("0.10")),
        (100000, None, 20000, D("0.15")),
    ]
    cap = next(line for line in r.lines if line["kind"] == "cap")
    assert D(cap["before_cap"]) == D("10700")
    assert D(cap["payout"]) == D("-1700")
    # the adjustment is outside the cap
    assert r.payout == D("8750.00")
    total = sum(D(x["payout"]) for x in r.lines if "payout" in x and x["kind"] != "deal")
    assert total == r.exact_payout


def test_each_credit_is_paid_under_the_version_in_force_at_its_date() -> None:
    flat = (Tier(D(0), None, D("0.05")),)
    v1 = terms(tier_basis="amount", tiers=flat)
    v2 = terms(version=2, effective_from=date(2026, 11, 1), tier_basis="amount",
               tiers=(Tier(D(0), None, D("0.10")),))  # fmt: skip
    credits = [deal(1, "1000", day=date(2026, 10, 15)), deal(2, "1000", day=date(2026, 11, 15))]
    r = compute([v1, v2], credits, None, as_of=Q4_END)
    assert r.payout == D("150.00")
    assert r.plan_version == 2
    assert [line["plan_version"] for line in r.lines if line["kind"] == "deal"] == [1, 2]


def test_credit_before_any_version_is_not_counted() -> None:
    t = terms(effective_from=date(2026, 11, 1))
    r = compute([t], [deal(1, "1000", day=date(2026, 10, 1))], D("1000"), as_of=Q4_END)
    assert r.credit == 0
    assert r.deals_won == 0


@pytest.mark.parametrize(
    ("tiers", "path"),
    [
        ([], ["tiers"]),
        ([{"from": D("0.1"), "to": None, "rate": D("0.1")}], ["tiers", 0, "from"]),
        ([{"from": D(0), "to": D("0.5"), "rate": D("0.1")},
          {"from": D("0.6"), "to": None, "rate": D("0.1")}], ["tiers", 1, "from"]),
        ([{"from": D(0), "to": D("0.5"), "rate": D("0.1")},
          {"from": D("0.4"), "to": None, "rate": D("0.1")}], ["tiers", 1, "from"]),
        ([{"from": D(0), "to": D("0.5"), "rate": D("0.1")}], ["tiers", 0, "to"]),
        ([{"from": D(0), "to": None, "rate": D("0.1")},
          {"from": D(1), "to": None, "rate": D("0.1")}], ["tiers", 0, "to"]),
        ([{"from": D(0), "to": D(0), "rate": D("0.1")},
          {"from": D(0), "to": None, "rate": D("0.1")}], ["tiers", 0, "to"]),
        ([{"from": D(0), "to": None, "rate": D("-0.1")}], ["tiers", 0, "rate"]),
    ],
)  # fmt: skip
def test_bad_tiers_are_named(tiers: list[dict[str, D | None]], path: list[str | int]) -> None:
    assert path in [p for p, _ in tier_errors(tiers)]


def test_good_tiers_pass() -> None:
    good = [{"from": D(0), "to": D("0.5"), "rate": D("0.05")},
            {"from": D("0.5"), "to": None, "rate": D("0.1")}]  # fmt: skip
    assert tier_errors(good) == []


def test_round_money_is_half_up() -> None:
    assert round_money(D("2.345"), "USD") == D("2.35")
    assert round_money(D("2.3449"), "USD") == D("2.34")
    assert round_money(D("-2.345"), "USD") == D("-2.35")
    assert round_money(D("1.0005"), "KWD") == D("1.001")


def test_periods() -> None:
    assert period_of(date(2026, 11, 30), "quarter") == "2026-Q4"
    assert period_of(date(2026, 11, 30), "month") == "2026-11"
    assert period_of(date(2026, 11, 30), "year") == "2026"
    assert bounds("2026-Q4") == (date(2026, 10, 1), date(2026, 12, 31))
    assert bounds("2026-02") == (date(2026, 2, 1), date(2026, 2, 28))
    assert next_period("2026-Q4") == "2027-Q1"
    assert next_period("2026-12") == "2027-01"
    assert next_period("2026") == "2027"
