"""Money: strict decimal parsing, ISO 4217 currency codes and their minor units, line and
split arithmetic. Shared by every part of the pipeline service; never a float.

Rounding: amounts are quantized to the currency's minor unit (2 for most, 0 for JPY, 3 for
KWD...) with ROUND_HALF_UP, the commercial rounding invoices use. A derived line amount is
rounded per line, and the deal amount is the sum of the rounded lines (what an invoice
shows)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Final

# Active ISO 4217 codes (list of 2026), plus ANG and BGN, withdrawn in 2025/2026, so that
# recent ERP history still loads. Fund and precious-metal codes (XAU, XDR...) are excluded.
CURRENCIES: Final[frozenset[str]] = frozenset(
    [
        "AED",
        "AFN",
        "ALL",
        "AMD",
        "ANG",
        "AOA",
        "ARS",
        "AUD",
        "AWG",
        "AZN",
        "BAM",
        "BBD",
        "BDT",
        "BGN",
        "BHD",
        "BIF",
        "BMD",
        "BND",
        "BOB",
        "BOV",
        "BRL",
        "BSD",
        "BTN",
        "BWP",
        "BYN",
        "BZD",
        "CAD",
        "CDF",
        "CHE",
        "CHF",
        "CHW",
        "CLF",
        "CLP",
        "CNY",
        "COP",
        "COU",
        "CRC",
        "CUP",
        "CVE",
        "CZK",
        "DJF",
        "DKK",
        "DOP",
        "DZD",
        "EGP",
        "ERN",
        "ETB",
        "EUR",
        "FJD",
        "FKP",
        "GBP",
        "GEL",
        "GHS",
        "GIP",
        "GMD",
        "GNF",
        "GTQ",
        "GYD",
        "HKD",
        "HNL",
        "HTG",
        "HUF",
        "IDR",
        "ILS",
        "INR",
        "IQD",
        "IRR",
        "ISK",
        "JMD",
        "JOD",
        "JPY",
        "KES",
        "KGS",
        "KHR",
        "KMF",
        "KPW",
        "KRW",
        "KWD",
        "KYD",
        "KZT",
        "LAK",
        "LBP",
        "LKR",
        "LRD",
        "LSL",
        "LYD",
        "MAD",
        "MDL",
        "MGA",
        "MKD",
        "MMK",
        "MNT",
        "MOP",
        "MRU",
        "MUR",
        "MVR",
        "MWK",
        "MXN",
        "MXV",
        "MYR",
        "MZN",
        "NAD",
        "NGN",
        "NIO",
        "NOK",
        "NPR",
        "NZD",
        "OMR",
        "PAB",
        "PEN",
        "PGK",
        "PHP",
        "PKR",
        "PLN",
        "PYG",
        "QAR",
        "RON",
        "RSD",
        "RUB",
        "RWF",
        "SAR",
        "SBD",
        "SCR",
        "SDG",
        "SEK",
        "SGD",
        "SHP",
        "SLE",
        "SOS",
        "SRD",
        "SSP",
        "STN",
        "SVC",
        "SYP",
        "SZL",
        "THB",
        "TJS",
        "TMT",
        "TND",
        "TOP",
        "TRY",
        "TTD",
        "TWD",
        "TZS",
        "UAH",
        "UGX",
        "USD",
        "USN",
        "UYI",
        "UYU",
        "UYW",
        "UZS",
        "VED",
        "VES",
        "VND",
        "VUV",
        "WST",
        "XAF",
        "XCD",
        "XCG",
        "XOF",
        "XPF",
        "YER",
        "ZAR",
        "ZMW",
        "ZWG",
    ]
)

_MINOR_UNITS: Final[dict[str, int]] = {
    **dict.fromkeys(
        [
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "UYI",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ],
        0,
    ),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    **dict.fromkeys(["CLF", "UYW"], 4),
}

# Plain decimal text: optional sign, digits, optional fraction. No exponent, no NaN/Infinity,
# no thousands separators (those are a locale's business, not an API's).
_DECIMAL = re.compile(r"^[+-]?(\d{1,20})(\.\d{1,10})?$")

HUNDRED: Final = Decimal(100)
ZERO: Final = Decimal(0)


class MoneyError(ValueError):
    """A value that is not acceptable money; the message says what is expected."""


def check_currency(code: object) -> str:
    """The code itself when it is an active ISO 4217 code in upper case."""
    if not isinstance(code, str) or code not in CURRENCIES:
        raise MoneyError("must be an ISO 4217 currency code in upper case, e.g. USD")
    return code


def minor_units(currency: str) -> int:
    return _MINOR_UNITS.get(currency, 2)


def parse_decimal(value: object) -> Decimal:
    """A decimal from text like "1250.50" (an int is accepted too; a float never is)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise MoneyError('must be a decimal string such as "12.50"')
    text = str(value).strip()
    if not _DECIMAL.match(text):
        raise MoneyError('must be a decimal string such as "12.50"')
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        raise MoneyError('must be a decimal string such as "12.50"') from None


def quantize(amount: Decimal, currency: str) -> Decimal:
    """`amount` rounded (half up) to the currency's minor unit."""
    return amount.quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=ROUND_HALF_UP)


def parse_amount(value: object, currency: str | None = None) -> Decimal:
    """A non-negative amount. With a currency, it may not have more decimals than the
    currency's minor unit (trailing zeros are fine) and is returned at that scale."""
    amount = parse_decimal(value)
    if amount < 0:
        raise MoneyError("must not be negative")
    if currency is not None:
        return exact_amount(amount, currency)
    return amount


def exact_amount(amount: Decimal, currency: str) -> Decimal:
    """`amount` at the currency's scale; MoneyError when that would round it."""
    q = quantize(amount, currency)
    if q != amount:
        places = minor_units(currency)
        raise MoneyError(f"{currency} amounts have at most {places} decimal places")
    return q


def format_amount(amount: Decimal, currency: str | None = None) -> str:
    """Text of an amount: at the currency's scale when given, else as stored."""
    if currency is not None:
        amount = quantize(amount, currency)
    return format(amount, "f")


def format_price(value: Decimal, currency: str) -> str:
    """Text of a unit price: at least the currency's minor unit ("600" -> "600.00"), more
    decimals kept when it has them ("0.125" stays)."""
    q = quantize(value, currency)
    return format(q, "f") if q == value else plain(value)


def plain(value: Decimal) -> str:
    """Canonical text of a non-money decimal (quantity, percent): no exponent, no
    trailing zeros after the point ("1.50" -> "1.5", "2.0" -> "2")."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def line_amount(
    quantity: Decimal, unit_price: Decimal, discount_percent: Decimal, currency: str
) -> Decimal:
    """quantity x unit_price x (1 - discount_percent / 100), rounded to the currency."""
    return quantize(quantity * unit_price * (HUNDRED - discount_percent) / HUNDRED, currency)


def total(amounts: Iterable[Decimal]) -> Decimal:
    return sum(amounts, ZERO)


def splits_sum_to_100(percents: Iterable[Decimal]) -> bool:
    """Credit splits must add up to exactly 100 (no rounding tolerance: 33.33 x 3 is 99.99)."""
    return total(percents) == HUNDRED
