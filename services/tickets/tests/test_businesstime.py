"""Business-time arithmetic: examples across nights, weekends, holidays and DST changes, and
properties (hypothesis) that must hold for any start and target."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tickets.businesstime import (
    Calendar,
    CalendarError,
    add_business,
    business_elapsed,
    is_business_time,
    is_span_end,
)

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")

WEEKDAYS = {d: [["09:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}
NY_OFFICE = Calendar.build(
    "America/New_York",
    {**WEEKDAYS, "mon": [["09:00", "12:00"], ["13:00", "17:00"]]},
    [date(2026, 12, 25)],
)
BERLIN_OFFICE = Calendar.build("Europe/Berlin", WEEKDAYS, [date(2026, 10, 26)])
# Round the clock every day: makes DST days 23 or 25 hours long.
NY_ALWAYS = Calendar.build(
    "America/New_York",
    {d: [["00:00", "24:00"]] for d in WEEKDAYS}
    | {
        "sat": [["00:00", "24:00"]],
        "sun": [["00:00", "24:00"]],
    },
)
# Hours that straddle the 02:00 transitions.
NY_NIGHT = Calendar.build(
    "America/New_York", {d: [["01:00", "04:00"]] for d in ("sat", "sun", "mon")}
)
BERLIN_NIGHT = Calendar.build(
    "Europe/Berlin", {d: [["01:30", "03:30"], ["22:00", "24:00"]] for d in ("sat", "sun")}
)
CALENDARS = [NY_OFFICE, BERLIN_OFFICE, NY_ALWAYS, NY_NIGHT, BERLIN_NIGHT]


def ny(*args: int) -> datetime:
    return datetime(*args, tzinfo=NY)  # type: ignore[misc]


class TestAddBusiness:
    def test_within_the_same_interval(self) -> None:
        assert add_business(NY_OFFICE, ny(2026, 11, 24, 10, 0), 60) == ny(2026, 11, 24, 11, 0)

    def test_skips_lunch_break(self) -> None:
        # Monday 11:30 + 60 min: 30 before lunch, 30 after.
        assert add_business(NY_OFFICE, ny(2026, 11, 23, 11, 30), 60) == ny(2026, 11, 23, 13, 30)

    def test_across_night_and_weekend(self) -> None:
        # Friday 16:00 + 120 min -> Monday 10:00.
        assert add_business(NY_OFFICE, ny(2026, 11, 27, 16, 0), 120) == ny(2026, 11, 30, 10, 0)

    def test_start_outside_hours_begins_at_next_opening(self) -> None:
        assert add_business(NY_OFFICE, ny(2026, 11, 24, 20, 0), 30) == ny(2026, 11, 25, 9, 30)

    def test_skips_holiday(self) -> None:
        # Thursday Dec 24 16:30 + 60 -> Dec 25 is a holiday -> Friday... Dec 25 is Friday:
        # so Monday Dec 28 09:30.
        assert add_business(NY_OFFICE, ny(2026, 12, 24, 16, 30), 60) == ny(2026, 12, 28, 9, 30)

    def test_exact_interval_end_stays_at_the_end(self) -> None:
        assert add_business(NY_OFFICE, ny(2026, 11, 24, 16, 0), 60) == ny(2026, 11, 24, 17, 0)

    def test_24x7_is_calendar_time(self) -> None:
        start = datetime(2026, 3, 7, 23, 0, tzinfo=UTC)
        assert add_business(None, start, 90) == start + timedelta(minutes=90)

    def test_spring_forward_day_is_23_hours(self) -> None:
        # 2026-03-08: New York springs forward at 02:00.
        start = ny(2026, 3, 8, 0, 0)
        end = ny(2026, 3, 9, 0, 0)
        assert business_elapsed(NY_ALWAYS, start, end) == timedelta(hours=23)
        assert add_business(NY_ALWAYS, start, 23 * 60) == end

    def test_fall_back_day_is_25_hours(self) -> None:
        start = ny(2026, 11, 1, 0, 0)
        end = ny(2026, 11, 2, 0, 0)
        assert business_elapsed(NY_ALWAYS, start, end) == timedelta(hours=25)

    def test_interval_straddling_spring_gap(self) -> None:
        # Sunday 01:00-04:00 local on 2026-03-08 lasts 2 hours of real time.
        day_start = ny(2026, 3, 8, 0, 0)
        assert business_elapsed(NY_NIGHT, day_start, ny(2026, 3, 8, 12, 0)) == timedelta(hours=2)
        # 90 minutes after 01:00 EST is 03:30 EDT.
        assert add_business(NY_NIGHT, ny(2026, 3, 8, 1, 0), 90) == ny(2026, 3, 8, 3, 30)

    def test_berlin_office_after_dst_end(self) -> None:
        # Berlin falls back on Sunday 2026-10-25; Monday 26th is a holiday here.
        start = datetime(2026, 10, 23, 16, 0, tzinfo=BERLIN)  # Friday
        due = add_business(BERLIN_OFFICE, start, 120)
        assert due == datetime(2026, 10, 27, 10, 0, tzinfo=BERLIN)
        assert due.astimezone(UTC) == datetime(2026, 10, 27, 9, 0, tzinfo=UTC)


class TestCalendarValidation:
    def test_unknown_zone(self) -> None:
        with pytest.raises(CalendarError) as e:
            Calendar.build("Mars/Olympus", WEEKDAYS)
        assert e.value.path == "timezone"

    def test_overlapping_intervals(self) -> None:
        with pytest.raises(CalendarError) as e:
            Calendar.build("UTC", {"mon": [["09:00", "12:00"], ["11:00", "14:00"]]})
        assert e.value.path == "weekly.mon.1"

    def test_end_before_start_and_bad_time(self) -> None:
        with pytest.raises(CalendarError):
            Calendar.build("UTC", {"mon": [["12:00", "09:00"]]})
        with pytest.raises(CalendarError) as e:
            Calendar.build("UTC", {"mon": [["9am", "12:00"]]})
        assert e.value.path == "weekly.mon.0.0"

    def test_no_business_time(self) -> None:
        with pytest.raises(CalendarError):
            Calendar.build("UTC", {})


# Instants over two years, so both DST changes of both zones are crossed often.
instants = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)
calendars = st.sampled_from(CALENDARS)
minutes = st.integers(min_value=1, max_value=5000)
# Days on which the zones change offset.
dst_days = st.sampled_from(
    [
        datetime(2026, 3, 8, tzinfo=NY),
        datetime(2026, 11, 1, tzinfo=NY),
        datetime(2026, 3, 29, tzinfo=BERLIN),
        datetime(2026, 10, 25, tzinfo=BERLIN),
    ]
)


class TestProperties:
    @settings(max_examples=300, deadline=None)
    @given(calendars, instants, minutes, minutes)
    def test_due_time_is_monotonic_in_the_target(
        self, cal: Calendar, start: datetime, m1: int, m2: int
    ) -> None:
        lo, hi = sorted((m1, m2))
        assert add_business(cal, start, lo) <= add_business(cal, start, hi)
        if lo < hi:
            assert add_business(cal, start, lo) < add_business(cal, start, hi)

    @settings(max_examples=300, deadline=None)
    @given(calendars, instants, minutes)
    def test_never_lands_outside_business_hours(
        self, cal: Calendar, start: datetime, m: int
    ) -> None:
        due = add_business(cal, start, m)
        assert due > start
        assert is_business_time(cal, due) or is_span_end(cal, due)

    @settings(max_examples=300, deadline=None)
    @given(calendars, instants, st.integers(min_value=0, max_value=5000))
    def test_elapsed_inverts_add(self, cal: Calendar, start: datetime, m: int) -> None:
        assert business_elapsed(cal, start, add_business(cal, start, m)) == timedelta(minutes=m)

    @settings(max_examples=200, deadline=None)
    @given(calendars, dst_days, st.integers(min_value=0, max_value=36 * 60), minutes)
    def test_dst_days(self, cal: Calendar, day: datetime, offset: int, m: int) -> None:
        start = (day + timedelta(minutes=offset)).astimezone(UTC)
        due = add_business(cal, start, m)
        assert business_elapsed(cal, start, due) == timedelta(minutes=m)
        assert is_business_time(cal, due) or is_span_end(cal, due)

    @settings(max_examples=200, deadline=None)
    @given(calendars, instants, instants, instants)
    def test_elapsed_is_additive(
        self, cal: Calendar, a: datetime, b: datetime, c: datetime
    ) -> None:
        a, b, c = sorted((a, b, c))
        total = business_elapsed(cal, a, c)
        assert total == business_elapsed(cal, a, b) + business_elapsed(cal, b, c)
        assert total <= c - a
