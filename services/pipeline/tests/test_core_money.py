"""Money parsing, currencies and the line/split arithmetic (pure, property-based)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import money
from pipeline.core.deal_writer import parse_splits, price_lines
from pipeline.core.schemas import SplitIn

amounts = st.decimals(min_value=0, max_value=Decimal("1e9"), places=2, allow_nan=False)
quantities = st.decimals(min_value=Decimal("0.001"), max_value=10_000, places=3)
discounts = st.decimals(min_value=0, max_value=100, places=2)


class TestCurrencies:
    @pytest.mark.parametrize("code", ["USD", "EUR", "JPY", "KWD", "CHF"])
    def test_active_codes(self, code: str) -> None:
        assert money.check_currency(code) == code

    @pytest.mark.parametrize("code", ["usd", "US", "USDX", "XXX", "XAU", "ABC", "", 840])
    def test_unknown_or_lowercase_rejected(self, code: object) -> None:
        with pytest.raises(money.MoneyError):
            money.check_currency(code)

    def test_minor_units(self) -> None:
        assert [money.minor_units(c) for c in ("USD", "JPY", "KWD", "CLF")] == [2, 0, 3, 4]


class TestParsing:
    @pytest.mark.parametrize(
        ("text", "expected"), [("10", "10"), ("10.50", "10.50"), ("0", "0"), (7, "7")]
    )
    def test_decimals(self, text: object, expected: str) -> None:
        assert money.parse_decimal(text) == Decimal(expected)

    @pytest.mark.parametrize("text", ["1e3", "NaN", "Infinity", "1,000.00", "", "abc", 1.5, True])
    def test_not_decimals(self, text: object) -> None:
        with pytest.raises(money.MoneyError):
            money.parse_decimal(text)

    def test_negative_amount_rejected(self) -> None:
        with pytest.raises(money.MoneyError, match="negative"):
            money.parse_amount("-0.01")

    def test_amount_scale_follows_currency(self) -> None:
        assert money.parse_amount("100.000", "USD") == Decimal("100.00")
        assert money.format_amount(money.parse_amount("5", "USD"), "USD") == "5.00"
        with pytest.raises(money.MoneyError, match="at most 0 decimal"):
            money.parse_amount("100.5", "JPY")
        with pytest.raises(money.MoneyError, match="at most 2 decimal"):
            money.parse_amount("1.005", "USD")

    def test_price_text(self) -> None:
        assert money.format_price(Decimal("600"), "USD") == "600.00"
        assert money.format_price(Decimal("0.125"), "USD") == "0.125"
        assert money.format_price(Decimal("5.0"), "JPY") == "5"

    def test_plain(self) -> None:
        assert [money.plain(Decimal(x)) for x in ("1.50", "2.0", "0.000", "10")] == [
            "1.5",
            "2",
            "0",
            "10",
        ]


class TestLineAmounts:
    def test_example(self) -> None:
        # 3 x 9000.00 with 10% off
        assert money.line_amount(Decimal(3), Decimal("9000.00"), Decimal(10), "USD") == Decimal(
            "24300.00"
        )
        # half up at the currency's minor unit
        assert money.line_amount(Decimal(1), Decimal("0.125"), Decimal(0), "USD") == Decimal("0.13")
        assert money.line_amount(Decimal(1), Decimal("99.5"), Decimal(0), "JPY") == Decimal("100")

    @given(quantities, amounts, discounts)
    def test_line_within_half_a_cent_of_exact(self, q: Decimal, p: Decimal, d: Decimal) -> None:
        amount = money.line_amount(q, p, d, "USD")
        exact = q * p * (100 - d) / 100
        assert abs(amount - exact) <= Decimal("0.005")
        assert amount >= 0
        assert amount.as_tuple().exponent == -2

    @given(st.lists(st.tuples(quantities, amounts, discounts), min_size=1, max_size=20))
    def test_deal_amount_is_sum_of_rounded_lines(
        self, lines: list[tuple[Decimal, Decimal, Decimal]]
    ) -> None:
        parsed = [
            {"product": f"p{i}", "quantity": q, "unit_price": p, "discount_percent": d}
            for i, (q, p, d) in enumerate(lines)
        ]
        stored, total = price_lines(parsed, "EUR")
        assert total == sum((Decimal(li["amount"]) for li in stored), Decimal(0))
        assert all(
            Decimal(li["amount"]) == money.line_amount(q, p, d, "EUR")
            for li, (q, p, d) in zip(stored, lines, strict=True)
        )

    @given(quantities, amounts)
    def test_full_discount_is_free(self, q: Decimal, p: Decimal) -> None:
        assert money.line_amount(q, p, Decimal(100), "USD") == 0


class TestSplits:
    @given(st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=10))
    def test_shares_rescaled_to_100_validate_iff_they_sum_to_100(self, weights: list[int]) -> None:
        total = sum(weights)
        percents = [Decimal(w * 100) / Decimal(total) for w in weights]
        percents = [p.quantize(Decimal("0.01")) for p in percents]
        splits = [SplitIn(user_id=f"u{i}", percent=str(p)) for i, p in enumerate(percents)]
        out, errors = parse_splits(splits)
        ok = sum(percents, Decimal(0)) == 100 and all(p > 0 for p in percents)
        assert (not errors) == ok
        if ok:
            assert [s["user_id"] for s in out] == [f"u{i}" for i in range(len(weights))]

    def test_thirds_do_not_sum_to_100(self) -> None:
        _, errors = parse_splits([SplitIn(user_id=f"u{i}", percent="33.33") for i in range(3)])
        assert errors[0].path == ("splits",)
        assert "99.99" in errors[0].message

    def test_duplicate_user(self) -> None:
        _, errors = parse_splits(
            [SplitIn(user_id="u1", percent="50"), SplitIn(user_id="u1", percent="50")]
        )
        assert errors[0].path == ("splits", 1, "user_id")
