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


def kind_of(period: str) -> PeriodKind:
    if _MONTH.match(period):
        return "month"
    if _QUARTER.match(period):
        return "quarter"
    if _YEAR.match(period):
        return "year"
    raise BadPeriod(f"{period!r} is not a period: use 2026-11, 2026-Q4 or 2026")


def bounds(period: str) -> tuple[date, date]:
    """First and last day (inclusive) of a period."""
    if m := _MONTH.match(period):
        y, mo = int(m[1]), int(m[2])
        start = date(y, mo, 1)
        nxt = date(y + 1, 1, 1) if mo == 12 else date(y, mo + 1, 1)
        return start, nxt - timedelta(days=1)
    if m := _QUARTER.match(period):
        y, q = int(m[1]), int(m[2])
        start = date(y, 3 * (q - 1) + 1, 1)
        nxt = date(y + 1, 1, 1) if q == 4 else date(y, 3 * q + 1, 1)
        return start, nxt - timedelta(days=1)
    if m := _YEAR.match(period):
        y = int(m[1])
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
