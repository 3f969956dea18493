"""Commission periods: month "2026-11", quarter "2026-Q4", year "2026"."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Literal

PeriodKind = Literal["month", "quarter", "year"]

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_QUARTER = re.compile(r"^(\d{4})-Q([1-4])$")
_YEAR = re.compile(r"^(\d{4})$")


class BadPeriod(ValueError):
    pass


# Year 0 is no date, and the period after any period must be one too (next_period).
_YEARS = range(1, 9999)


def _year(text: str, period: str) -> int:
    year = int(text)
    if year not in _YEARS:
        raise BadPeriod(f"{period!r} is out of range: years 0001 to 9998")
    return year


def kind_of(period: str) -> PeriodKind:
    kind: PeriodKind
    if m := _MONTH.match(period):
        kind = "month"
    elif m := _QUARTER.match(period):
        kind = "quarter"
    elif m := _YEAR.match(period):
        kind = "year"
    else:
        raise BadPeriod(f"{period!r} is not a period: use 2026-11, 2026-Q4 or 2026")
    _year(m[1], period)
    return kind


def bounds(period: str) -> tuple[date, date]:
    """First and last day (inclusive) of a period."""
    if m := _MONTH.match(period):
        y, mo = _year(m[1], period), int(m[2])
        start = date(y, mo, 1)
        nxt = date(y + 1, 1, 1) if mo == 12 else date(y, mo + 1, 1)
        return start, nxt - timedelta(days=1)
    if m := _QUARTER.match(period):
        y, q = _year(m[1], period), int(m[2])
        start = date(y, 3 * (q - 1) + 1, 1)
        nxt = date(y + 1, 1, 1) if q == 4 else date(y, 3 * q + 1, 1)
        return start, nxt - timedelta(days=1)
    if m := _YEAR.match(period):
        y = _year(m[1], period)
        return date(y, 1, 1), date(y, 12, 31)
    raise BadPeriod(f"{period!r} is not a period: use 2026-11, 2026-Q4 or 2026")


def period_of(day: date, kind: str) -> str:
    """The period of `kind` that contains `day`."""
    if kind == "month":
        return f"{day.year:04d}-{day.month:02d}"
    if kind == "quarter":
        return f"{day.year:04d}-Q{(day.month - 1) // 3 + 1}"
    if kind == "year":
        return f"{day.year:04d}"
    raise BadPeriod(f"unknown period kind {kind!r}")


def next_period(period: str) -> str:
    _, end = bounds(period)
    return period_of(end + timedelta(days=1), kind_of(period))
