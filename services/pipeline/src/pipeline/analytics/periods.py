"""Forecast periods (`2026`, `2026-Q4`, `2026-11`) and report windows (`from`/`to` dates).

Everything is in UTC: a period covers the expected close dates from its first day to its
last day inclusive, and the close timestamps from its first day 00:00 UTC up to (excluding)
the day after its last day 00:00 UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from chassis.problems import invalid

_PERIOD = re.compile(r"^(\d{4})(?:-(0[1-9]|1[0-2])|-Q([1-4]))?$")

# When a report is asked for without `from`, it covers this many days up to `to`.
DEFAULT_WINDOW_DAYS = 90


def _midnight(d: date) -> datetime:
    return datetime.combine(d, time.min, tzinfo=UTC)


@dataclass(frozen=True)
class Period:
    label: str
    start: date
    # First day after the period.
    end: date

    @property
    def start_at(self) -> datetime:
        return _midnight(self.start)

    @property
    def end_at(self) -> datetime:
        return _midnight(self.end)


def _add_months(year: int, month: int, n: int) -> date:
    index = year * 12 + (month - 1) + n
    return date(index // 12, index % 12 + 1, 1)


def parse_period(value: str, field: str = "period") -> Period:
    m = _PERIOD.match(value or "")
    # Up to 9998: the first day after the period must still be a date.
    if not m or not 1900 <= int(m.group(1)) <= 9998:
        raise invalid(field, "must be a year (2026), a quarter (2026-Q4) or a month (2026-11)")
    year = int(m.group(1))
    if m.group(2):
        month = int(m.group(2))
        return Period(value, date(year, month, 1), _add_months(year, month, 1))
    if m.group(3):
        first = (int(m.group(3)) - 1) * 3 + 1
        return Period(value, date(year, first, 1), _add_months(year, first, 3))
    return Period(value, date(year, 1, 1), date(year + 1, 1, 1))


@dataclass(frozen=True)
class Window:
    """A report window of whole UTC days, `start` and `last` inclusive."""

    start: date
    last: date

    @property
    def start_at(self) -> datetime:
        return _midnight(self.start)

    @property
    def end_at(self) -> datetime:
        return _midnight(self.last + timedelta(days=1))


def window(start: date | None, last: date | None, today: date | None = None) -> Window:
    last = last or (today or datetime.now(UTC).date())
    if last >= date.max:
        raise invalid("to", "must be before 9999-12-31")  # its end_at would overflow
    if start is None:
        days_before = min(DEFAULT_WINDOW_DAYS, last.toordinal()) - 1  # not before 0001-01-01
        start = last - timedelta(days=days_before)
    if start > last:
        raise invalid("from", "must not be after `to`")
    return Window(start, last)
