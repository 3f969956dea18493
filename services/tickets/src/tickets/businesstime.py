"""Business-time arithmetic: pure functions, no I/O.

A `Calendar` is weekly intervals of local wall time in an IANA zone plus closed dates
(holidays). Each interval of a given date becomes a real span of instants by converting its
start and end wall times to UTC on that date, so a day shortened or lengthened by a DST
change simply has a shorter or longer span; a wall time that does not exist (inside a
spring-forward gap) maps to the instant of the transition, an ambiguous one (fall-back) to its
first occurrence.

- `add_business(cal, start, minutes)`: the instant at which `minutes` of business time have
  passed since `start`. For minutes > 0 the result always lies inside a business interval or
  exactly at its end (never at the start of the next interval).
- `business_elapsed(cal, a, b)`: the business time between two instants (0 when b <= a).
- `elapsed == add` inverse: `business_elapsed(cal, s, add_business(cal, s, m)) == m`.

`cal=None` means 24x7: plain calendar time.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# How far ahead add_business searches for business time before giving up (a calendar
# whose every day is a holiday would otherwise loop forever).
MAX_DAYS = 3660


class CalendarError(ValueError):
    """A calendar definition that cannot be used; `path` names the failing field."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def parse_hhmm(value: str, path: str) -> int:
    """ "09:30" -> 570 minutes after midnight; "24:00" is allowed (the end of the day)."""
    parts = value.split(":") if isinstance(value, str) else []
    if len(parts) != 2 or not all(p.isdigit() and len(p) == 2 for p in parts):
        raise CalendarError(path, "must be a time HH:MM")
    h, m = int(parts[0]), int(parts[1])
    if m > 59 or h > 24 or (h == 24 and m != 0):
        raise CalendarError(path, "must be a time between 00:00 and 24:00")
    return h * 60 + m


def format_hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def load_zone(name: str, path: str = "timezone") -> ZoneInfo:
    if not isinstance(name, str) or not name or name.startswith("/") or ".." in name:
        raise CalendarError(path, "must be an IANA time zone, e.g. America/New_York")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise CalendarError(path, f"unknown IANA time zone {name!r}") from e


@dataclass(frozen=True)
class Calendar:
    """Weekly business intervals (minutes after local midnight, per weekday 0=Monday) in
    `zone`, minus `holidays`. Hashable, so per-date spans can be cached."""

    zone: ZoneInfo
    weekly: tuple[tuple[tuple[int, int], ...], ...]  # 7 days, each sorted (start, end)
    holidays: frozenset[date] = frozenset()

    @classmethod
    def build(
        cls,
        timezone: str,
        weekly: Mapping[str, Sequence[Sequence[str]]],
        holidays: Iterable[date] = (),
    ) -> Calendar:
        """Validate and build; raises CalendarError naming the failing field path."""
        zone = load_zone(timezone)
        days: list[tuple[tuple[int, int], ...]] = []
        for key in weekly:
            if key not in DAYS:
                raise CalendarError(f"weekly.{key}", "must be one of " + ", ".join(DAYS))
        for day in DAYS:
            spans: list[tuple[int, int, int]] = []
            for i, interval in enumerate(weekly.get(day, ())):
                path = f"weekly.{day}.{i}"
                if len(interval) != 2:
                    raise CalendarError(path, "must be a pair [start, end]")
                start = parse_hhmm(interval[0], f"{path}.0")
                end = parse_hhmm(interval[1], f"{path}.1")
                if end <= start:
                    raise CalendarError(path, "end must be after start")
                spans.append((start, end, i))
            spans.sort()
            for (_, prev_end, _), (start, _, i) in itertools.pairwise(spans):
                if start < prev_end:
                    raise CalendarError(f"weekly.{day}.{i}", "overlaps another interval")
            days.append(tuple((s, e) for s, e, _ in spans))
        if not any(days):
            raise CalendarError("weekly", "needs at least one business interval")
        return cls(zone, tuple(days), frozenset(holidays))


def _to_utc(zone: ZoneInfo, day: date, minutes: int) -> datetime:
    """The instant of local wall time `minutes` after midnight of `day` (1440 = next day)."""
    if minutes >= 1440:
        day, minutes = day + timedelta(days=1), minutes - 1440
    wall = datetime.combine(day, time(minutes // 60, minutes % 60), tzinfo=zone)
    first = wall.astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall.replace(tzinfo=None):
        return first  # exists (ambiguous: fold=0, the first occurrence)
    # In a spring-forward gap: fold=0 maps past the gap, fold=1 before it; the transition
    # instant lies between. Find the first instant whose wall time is past `wall`.
    lo = wall.replace(fold=1).astimezone(UTC)
    hi = first
    if lo > hi:
        lo, hi = hi, lo
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(zone).replace(tzinfo=None) >= wall.replace(tzinfo=None):
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0) if hi.microsecond else hi


@functools.lru_cache(maxsize=65536)
def day_spans(cal: Calendar, day: date) -> tuple[tuple[datetime, datetime], ...]:
    """Business spans (UTC start, UTC end) of one local date, in order."""
    if day in cal.holidays:
        return ()
    out: list[tuple[datetime, datetime]] = []
    for start, end in cal.weekly[day.weekday()]:
        s, e = _to_utc(cal.zone, day, start), _to_utc(cal.zone, day, end)
        if e > s:
            out.append((s, e))
    return tuple(out)


def _spans_from(cal: Calendar, instant: datetime) -> Iterator[tuple[datetime, datetime]]:
    """Business spans that end after `instant`, in time order (no upper bound)."""
    # Start a day early: a span of the previous local date cannot end after midnight, but
    # the local date of `instant` depends on the offset, so be generous.
    day = instant.astimezone(cal.zone).date() - timedelta(days=1)
    for _ in range(MAX_DAYS):
        for s, e in day_spans(cal, day):
            if e > instant:
                yield s, e
        day += timedelta(days=1)
    raise CalendarError("weekly", f"no business time within {MAX_DAYS} days")


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetime: pass an aware instant")
    return value.astimezone(UTC)


def add_business(cal: Calendar | None, start: datetime, minutes: float) -> datetime:
    """The instant at which `minutes` business minutes have passed since `start`."""
    start = _utc(start)
    remaining = timedelta(minutes=minutes)
    if cal is None or remaining <= timedelta(0):
        return start + remaining if cal is None else start
    for s, e in _spans_from(cal, start):
        begin = max(s, start)
        available = e - begin
        if remaining <= available:
            return begin + remaining
        remaining -= available
    raise AssertionError("unreachable")  # _spans_from raises when exhausted


def business_elapsed(cal: Calendar | None, a: datetime, b: datetime) -> timedelta:
    """Business time between `a` and `b` (zero when b <= a)."""
    a, b = _utc(a), _utc(b)
    if b <= a:
        return timedelta(0)
    if cal is None:
        return b - a
    total = timedelta(0)
    day = a.astimezone(cal.zone).date() - timedelta(days=1)
    last = b.astimezone(cal.zone).date() + timedelta(days=1)
    while day <= last:
        for s, e in day_spans(cal, day):
            lo, hi = max(s, a), min(e, b)
            if hi > lo:
                total += hi - lo
        day += timedelta(days=1)
    return total


def is_business_time(cal: Calendar | None, instant: datetime) -> bool:
    """Whether `instant` lies in a business span (start inclusive, end exclusive)."""
    if cal is None:
        return True
    instant = _utc(instant)
    day = instant.astimezone(cal.zone).date()
    for d in (day - timedelta(days=1), day, day + timedelta(days=1)):
        for s, e in day_spans(cal, d):
            if s <= instant < e:
                return True
    return False


def is_span_end(cal: Calendar, instant: datetime) -> bool:
    instant = _utc(instant)
    day = instant.astimezone(cal.zone).date()
    return any(
        e == instant
        for d in (day - timedelta(days=1), day, day + timedelta(days=1))
        for _, e in day_spans(cal, d)
    )
