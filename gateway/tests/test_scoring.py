"""The pure analytics rules: RFM quintiles and segments, health weights, churn rules
(worked examples, and hypothesis for bounds and monotonicity)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from gateway.readmodel.analytics import scoring
from gateway.readmodel.analytics.scoring import Facts, Purchase

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def bought(days_ago: float, amount: str = "100.00", currency: str = "USD") -> Purchase:
    return Purchase(NOW - timedelta(days=days_ago), currency, Decimal(amount))


class TestQuintiles:
    def test_breakpoints_of_one_to_ten(self) -> None:
        assert scoring.breakpoints(list(range(1, 11))) == [2, 4, 6, 8]
        assert scoring.breakpoints([]) is None
        assert scoring.breakpoints([7]) == [7, 7, 7, 7]

    def test_scores_of_one_to_ten(self) -> None:
        cuts = [2.0, 4.0, 6.0, 8.0]
        assert [scoring.quintile(v, cuts) for v in range(1, 11)] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
        assert [scoring.quintile(v, cuts, lower_is_better=True) for v in range(1, 11)] == [
            5, 5, 4, 4, 3, 3, 2, 2, 1, 1,
        ]  # fmt: skip

    def test_skewed_population(self) -> None:
        # Most customers bought once: one purchase is the bottom quintile, two already top.
        cuts = scoring.breakpoints([1] * 8 + [2, 5])
        assert cuts == [1, 1, 1, 1]
        assert scoring.quintile(1, cuts) == 1
        assert scoring.quintile(2, cuts) == 5

    @given(
        st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=50),
        st.floats(0, 1e6, allow_nan=False),
        st.floats(0, 1e6, allow_nan=False),
    )
    def test_bounds_and_monotonicity(self, population: list[float], a: float, b: float) -> None:
        cuts = scoring.breakpoints(population)
        assert cuts is not None
        assert cuts == sorted(cuts)
        lo, hi = min(a, b), max(a, b)
        assert 1 <= scoring.quintile(lo, cuts) <= scoring.quintile(hi, cuts) <= 5
        assert (
            5
            >= scoring.quintile(lo, cuts, lower_is_better=True)
            >= scoring.quintile(hi, cuts, lower_is_better=True)
            >= 1
        )


class TestRfm:
    def test_worked_example(self) -> None:
        cuts = {
            "recency": [5.0, 20.0, 60.0, 120.0],
            "frequency": [1.0, 2.0, 3.0, 4.0],
            "monetary": [50.0, 100.0, 500.0, 1000.0],
        }
        purchases = [bought(10, "200.00"), bought(40, "200.00"), bought(90, "200.00"),
                     bought(400, "999.00"), bought(30, "50.00", "EUR")]  # fmt: skip
        out = scoring.rfm(purchases, NOW, cuts, currency="USD")
        assert out["recency_days"] == 10
        assert out["frequency"] == 4  # the purchase 400 days ago is out of the year
        assert out["monetary"] == [
            {"currency": "EUR", "amount": "50.00"},
            {"currency": "USD", "amount": "600.00"},
        ]
        assert (out["r"], out["f"], out["m"]) == (4, 4, 4)  # 600 USD: above 500
        assert out["segment"] == "loyal"

    def test_no_purchase_has_no_segment(self) -> None:
        out = scoring.rfm([], NOW)
        assert out["segment"] is None
        assert out["r"] is None
        assert out["frequency"] == 0

    def test_grid_corners(self) -> None:
        assert scoring.segment(5, 5, 5) == "champions"
        assert scoring.segment(5, 1, 1) == "new"
        assert scoring.segment(1, 1, 1) == "lost"
        assert scoring.segment(1, 5, 5) == "cannot_lose"
        assert scoring.segment(2, 2, 1) == "hibernating"
        assert {scoring.segment(r, f, f) for r in range(1, 6) for f in range(1, 6)} == (
            scoring.SEGMENTS
        )

    @given(st.integers(0, 2000), st.integers(0, 2000))
    def test_more_recent_purchase_never_lowers_r(self, a: int, b: int) -> None:
        recent, old = min(a, b), max(a, b)
        assert scoring.rfm([bought(recent)], NOW)["r"] >= scoring.rfm([bought(old)], NOW)["r"]


facts_strategy = st.builds(
    Facts,
    purchases=st.lists(st.builds(bought, st.floats(0, 1500, allow_nan=False)), max_size=6),
    last_activity_at=st.none() | st.builds(lambda d: NOW - timedelta(days=d), st.integers(0, 900)),
    open_urgent_tickets=st.integers(0, 6),
    open_breached_tickets=st.integers(0, 4),
    sla_breaches_90d=st.integers(0, 8),
    last_csat=st.none() | st.integers(1, 5),
    nps_category=st.sampled_from([None, "promoter", "passive", "detractor"]),
    emails=st.lists(st.tuples(st.booleans(), st.booleans()), max_size=8),
    unsubscribed=st.booleans(),
    loyalty_points_365d=st.none() | st.integers(0, 5000),
)
weights_strategy = st.dictionaries(
    st.sampled_from(scoring.HEALTH_SIGNALS), st.floats(0, 100, allow_nan=False)
)


class TestHealth:
    def test_worked_example(self) -> None:
        facts = Facts(
            purchases=[bought(73)],  # 1 - 73/365 = 0.8
            last_activity_at=NOW - timedelta(days=18),  # 1 - 18/180 = 0.9
            open_urgent_tickets=1,  # 1 - 1/3
            sla_breaches_90d=0,
            last_csat=5,
            nps_category="passive",
            emails=[(True, False), (False, False)],  # 0.6 * 0.5 = 0.3
            loyalty_points_365d=None,  # neutral
        )
        out = scoring.health(facts, NOW)
        # 20*.8 + 15*.9 + 15*(2/3) + 10*1 + 10*1 + 15*.5 + 10*.3 + 5*.5 = 72.5 -> 73
        assert out["score"] == 73
        assert out["band"] == "green"
        by_name = {s["name"]: s for s in out["signals"]}
        assert by_name["purchase_recency"] == {
            "name": "purchase_recency", "value": 73, "weight": 20.0, "contribution": 16.0,
        }  # fmt: skip
        assert by_name["loyalty_trend"]["value"] is None
        assert by_name["loyalty_trend"]["contribution"] == 2.5

    def test_bands(self) -> None:
        assert [scoring.band(s) for s in (100, 70, 69, 40, 39, 0)] == [
            "green", "green", "yellow", "yellow", "red", "red",
        ]  # fmt: skip

    def test_weights_pick_the_signals(self) -> None:
        weights = dict.fromkeys(scoring.HEALTH_SIGNALS, 0.0) | {"nps_category": 1.0}
        assert scoring.health(Facts(nps_category="detractor"), NOW, weights)["score"] == 0
        assert scoring.health(Facts(nps_category="promoter"), NOW, weights)["score"] == 100

    @given(facts_strategy, weights_strategy)
    def test_bounds(self, facts: Facts, weights: dict[str, float]) -> None:
        out = scoring.health(facts, NOW, weights)
        assert 0 <= out["score"] <= 100
        assert out["band"] == scoring.band(out["score"])
        assert [s["name"] for s in out["signals"]] == list(scoring.HEALTH_SIGNALS)

    @given(facts_strategy, weights_strategy, st.integers(0, 400))
    def test_more_recent_purchase_never_lowers_health(
        self, facts: Facts, weights: dict[str, float], days: int
    ) -> None:
        older = Facts(**{**facts.__dict__, "purchases": [bought(days + 30)]})
        newer = Facts(**{**facts.__dict__, "purchases": [bought(days)]})
        assert (
            scoring.health(newer, NOW, weights)["score"]
            >= scoring.health(older, NOW, weights)["score"]
        )

    @given(facts_strategy, weights_strategy)
    def test_a_breach_never_raises_health_nor_lowers_churn(
        self, facts: Facts, weights: dict[str, float]
    ) -> None:
        worse = Facts(
            **{
                **facts.__dict__,
                "sla_breaches_90d": facts.sla_breaches_90d + 1,
                "open_breached_tickets": facts.open_breached_tickets + 1,
            }
        )
        assert (
            scoring.health(worse, NOW, weights)["score"]
            <= scoring.health(facts, NOW, weights)["score"]
        )
        assert Decimal(scoring.churn_risk(worse, NOW)["score"]) >= Decimal(
            scoring.churn_risk(facts, NOW)["score"]
        )


class TestChurnRisk:
    def test_repeat_buyer_overdue(self) -> None:
        # Bought every 30 days, last one 70 days ago: more than twice the interval.
        facts = Facts(purchases=[bought(70), bought(100), bought(130)])
        out = scoring.churn_risk(facts, NOW)
        assert out["score"] == "0.35"
        assert out["reasons"][0]["code"] == "repeat_buyer_overdue"
        assert "median interval 30 days" in out["reasons"][0]["detail"]
        on_time = Facts(purchases=[bought(50), bought(80), bought(110)])
        assert scoring.churn_risk(on_time, NOW)["score"] == "0.00"

    def test_rules_add_up_and_cap(self) -> None:
        facts = Facts(
            purchases=[bought(500), bought(530)],
            nps_category="detractor",
            open_breached_tickets=1,
            sla_breaches_90d=3,
            last_csat=1,
            emails=[(False, False)] * 3 + [(True, True)],
            unsubscribed=True,
        )
        out = scoring.churn_risk(facts, NOW)
        assert out["score"] == "1.00"
        assert {r["code"] for r in out["reasons"]} == {
            "repeat_buyer_overdue", "no_purchase_365d", "detractor_nps", "open_breached_ticket",
            "repeated_sla_breaches", "low_csat", "falling_engagement", "unsubscribed",
        }  # fmt: skip
        assert scoring.churn_risk(Facts(nps_category="detractor"), NOW)["score"] == "0.25"

    @given(facts_strategy)
    def test_bounds(self, facts: Facts) -> None:
        score = Decimal(scoring.churn_risk(facts, NOW)["score"])
        assert Decimal(0) <= score <= Decimal(1)
        assert score == score.quantize(Decimal("0.01"))
