"""Business calendars: Chinese public holidays and make-up workdays, business-time arithmetic,
years the official package does not know yet, and the blueprint's overrides."""

from __future__ import annotations

import datetime as dt
import random
import time
from zoneinfo import ZoneInfo

import chinese_calendar
import pytest

from engine.rules.calendars import (BusinessCalendar, CalendarError, CalendarSpec, DayKind, DayOverride, FallbackRule,
                                    HolidaySource, WorkPeriod, weekly_hours)

SHANGHAI = ZoneInfo("Asia/Shanghai")
OFFICE_HOURS = weekly_hours({"mon-fri": ["09:00-12:00", "13:30-18:00"]})


def shanghai(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=SHANGHAI)


def china_office(**options: object) -> BusinessCalendar:
    return BusinessCalendar(CalendarSpec(name="china_office", week=OFFICE_HOURS, **options))  # type: ignore[arg-type]


def chinese_calendar_covers(year: int) -> bool:
    try:
        chinese_calendar.is_workday(dt.date(year, 6, 1))
    except NotImplementedError:
        return False
    return True


# --- the official 2026 schedule -------------------------------------------------------------------


def test_2026_national_day_and_mid_autumn_are_days_off():
    calendar = china_office()
    days_off = [dt.date(2026, 9, 25)] + [dt.date(2026, 10, day) for day in range(1, 8)]
    for day in days_off:
        info = calendar.describe_day(day)
        assert info.kind is DayKind.HOLIDAY, day
        assert calendar.working_periods(day) == ()
        assert info.source.startswith("chinese-calendar")
    assert calendar.describe_day(dt.date(2026, 9, 25)).name == "Mid-autumn Festival"
    assert calendar.describe_day(dt.date(2026, 10, 1)).name == "National Day"
    assert calendar.describe_day(dt.date(2026, 10, 9)).kind is DayKind.WORKDAY  # Friday after the week off


def test_2026_make_up_saturday_and_sunday_are_worked_with_office_hours():
    calendar = china_office()
    for day in (dt.date(2026, 9, 20), dt.date(2026, 10, 10)):  # Sunday and Saturday 调休上班
        assert calendar.describe_day(day).kind is DayKind.MAKEUP_WORKDAY
        assert calendar.working_periods(day) == (
            (shanghai(day.year, day.month, day.day, 9), shanghai(day.year, day.month, day.day, 12)),
            (shanghai(day.year, day.month, day.day, 13, 30), shanghai(day.year, day.month, day.day, 18)),
        )
    assert calendar.is_working_time(shanghai(2026, 10, 10, 10))
    assert not calendar.is_working_time(shanghai(2026, 10, 11, 10))  # the Sunday after is an ordinary weekend


def test_working_time_excludes_lunch_and_evening():
    calendar = china_office()
    assert calendar.is_working_time(shanghai(2026, 10, 12, 9))  # a period's start counts
    assert not calendar.is_working_time(shanghai(2026, 10, 12, 12))  # its end does not
    assert not calendar.is_working_time(shanghai(2026, 10, 12, 13))
    assert calendar.is_working_time(shanghai(2026, 10, 12, 17, 59))
    assert not calendar.is_working_time(shanghai(2026, 10, 12, 18))


# --- business-time arithmetic ---------------------------------------------------------------------


def test_two_business_hours_from_friday_1730_before_qingming_land_on_tuesday_1030():
    # Qingming 2026 is Saturday 4 April to Monday 6 April: 30 minutes on Friday, 90 on Tuesday.
    calendar = china_office()
    due = calendar.add_business_time(shanghai(2026, 4, 3, 17, 30), dt.timedelta(hours=2))
    assert due == shanghai(2026, 4, 7, 10, 30)
    assert due.tzinfo == dt.timezone.utc and due.hour == 2


def test_two_business_hours_from_thursday_1730_before_mid_autumn_land_on_monday():
    calendar = china_office()
    assert calendar.add_business_time(shanghai(2026, 9, 24, 17, 30), dt.timedelta(hours=2)) == shanghai(2026, 9, 28, 10, 30)


def test_a_deadline_that_fills_the_morning_ends_at_noon_not_after_lunch():
    calendar = china_office()
    start = shanghai(2026, 4, 3, 17, 30)
    assert calendar.add_business_time(start, dt.timedelta(hours=3, minutes=30)) == shanghai(2026, 4, 7, 12)
    assert calendar.add_business_time(start, dt.timedelta(hours=3, minutes=31)) == shanghai(2026, 4, 7, 13, 31)


def test_time_started_outside_working_hours_counts_from_the_next_period():
    calendar = china_office()
    assert calendar.add_business_time(shanghai(2026, 10, 12, 12, 15), dt.timedelta(minutes=15)) == shanghai(2026, 10, 12, 13, 45)
    assert calendar.add_business_time(shanghai(2026, 9, 30, 20), dt.timedelta(minutes=15)) == shanghai(2026, 10, 8, 9, 15)


def test_business_time_between_skips_holidays_nights_and_lunch():
    calendar = china_office()
    assert calendar.business_time_between(shanghai(2026, 4, 3, 17, 30), shanghai(2026, 4, 7, 10, 30)) == dt.timedelta(hours=2)
    assert calendar.business_time_between(shanghai(2026, 4, 7, 11), shanghai(2026, 4, 7, 14)) == dt.timedelta(hours=1, minutes=30)
    assert calendar.business_time_between(shanghai(2026, 4, 7, 14), shanghai(2026, 4, 7, 11)) == -dt.timedelta(hours=1, minutes=30)


def test_adding_then_measuring_gives_back_the_same_duration():
    calendar = china_office()
    rng = random.Random(20260403)
    for _ in range(500):
        start = shanghai(2026, 1, 1) + dt.timedelta(minutes=rng.randrange(365 * 24 * 60))
        duration = dt.timedelta(minutes=rng.randrange(1, 3000))
        due = calendar.add_business_time(start, duration)
        assert calendar.business_time_between(start, due) == duration, (start, duration)
        assert calendar.is_working_time(due - dt.timedelta(microseconds=1))


def test_next_working_moment_after_the_national_day_week():
    calendar = china_office()
    assert calendar.next_working_moment(shanghai(2026, 10, 3, 15)) == shanghai(2026, 10, 8, 9)
    assert calendar.next_working_moment(shanghai(2026, 10, 8, 10)) == shanghai(2026, 10, 8, 10)


def test_naive_datetimes_are_refused():
    calendar = china_office()
    with pytest.raises(CalendarError, match="no time zone"):
        calendar.add_business_time(dt.datetime(2026, 4, 3, 17, 30), dt.timedelta(hours=2))


def test_time_zone_and_daylight_saving_are_respected():
    berlin = BusinessCalendar(CalendarSpec(name="berlin", week=weekly_hours({"mon-fri": ["09:00-17:00"]}),
                                           timezone="Europe/Berlin", source=HolidaySource.NONE))
    zone = ZoneInfo("Europe/Berlin")
    friday, monday = dt.datetime(2026, 3, 27, 16, tzinfo=zone), dt.datetime(2026, 3, 30, 10, tzinfo=zone)
    assert berlin.business_time_between(friday, monday) == dt.timedelta(hours=2)  # clocks moved on Sunday
    assert berlin.add_business_time(friday, dt.timedelta(hours=2)) == monday
    assert monday.astimezone(dt.timezone.utc).hour == 8  # CEST, not CET


def test_one_hundred_thousand_deadlines_take_well_under_two_seconds():
    calendar = china_office()
    rng = random.Random(7)
    starts = [shanghai(2026, 1, 1) + dt.timedelta(minutes=rng.randrange(365 * 24 * 60)) for _ in range(100_000)]
    began = time.process_time()  # CPU time: other processes on a busy machine do not count
    for start in starts:
        calendar.add_business_time(start, dt.timedelta(hours=2))
    assert time.process_time() - began < 2.0


# --- years the package does not cover, and the blueprint's word ------------------------------------


def test_a_covered_year_has_no_warning():
    assert china_office().coverage_warnings([2025, 2026]) == []


def first_uncovered_year() -> int:
    """The first year the installed chinese-calendar has no official schedule for (2027 with
    1.11); the fallback tests follow it, so a newer release moves them on instead of skipping."""
    year = dt.date.today().year
    while chinese_calendar_covers(year):
        year += 1
    return year


def test_an_uncovered_year_falls_back_to_the_statutory_estimate_with_a_loud_warning():
    calendar, year = china_office(), first_uncovered_year()
    warnings = calendar.coverage_warnings([year - 1, year])
    assert len(warnings) == 1
    assert str(year) in warnings[0] and "not covered by chinese-calendar" in warnings[0]
    assert "holidays" in warnings[0] and "NO make-up workdays" in warnings[0]
    national_day = calendar.describe_day(dt.date(year, 10, 1))
    assert national_day.kind is DayKind.HOLIDAY and "statutory estimate" in national_day.source
    assert not calendar.is_working_time(shanghai(year, 10, 1, 10))
    saturdays = [dt.date(year, 2, day) for day in range(1, 29) if dt.date(year, 2, day).weekday() == 5]
    assert all(calendar.describe_day(day).kind is not DayKind.MAKEUP_WORKDAY for day in saturdays)  # none assumed


def test_weekends_only_fallback_says_it_assumed_no_holidays():
    calendar, year = china_office(fallback=FallbackRule.WEEKENDS_ONLY), first_uncovered_year()
    (warning,) = calendar.coverage_warnings([year])
    assert "NO public holidays" in warning
    first_weekday = next(day for day in range(1, 8) if dt.date(year, 10, day).weekday() < 5)
    assert calendar.is_working_time(shanghai(year, 10, first_weekday, 10))  # National Day week, worked


def test_blueprint_overrides_of_2027_take_effect():
    calendar = china_office(overrides=(
        DayOverride(dt.date(2027, 10, 8), working=False, name="国庆节"),  # a Friday off
        DayOverride(dt.date(2027, 9, 26), working=True, name="国庆节调休"),  # a Sunday worked
    ))
    assert calendar.describe_day(dt.date(2027, 10, 8)).kind is DayKind.HOLIDAY
    assert calendar.describe_day(dt.date(2027, 10, 8)).source == "blueprint"
    assert calendar.describe_day(dt.date(2027, 9, 26)).kind is DayKind.MAKEUP_WORKDAY
    assert calendar.add_business_time(shanghai(2027, 9, 25, 12), dt.timedelta(hours=1)) == shanghai(2027, 9, 26, 10)


def test_declaring_2027_official_replaces_the_estimate_and_silences_the_warning():
    announced = tuple(DayOverride(dt.date(2027, 10, day), working=False, name="国庆节") for day in range(1, 8))
    calendar = china_office(overrides=(*announced, DayOverride(dt.date(2027, 10, 9), True, "调休上班")),
                            official_years=frozenset({2027}))
    assert calendar.coverage_warnings([2027]) == []
    assert calendar.coverage(2027).source == "blueprint"
    assert calendar.describe_day(dt.date(2027, 10, 7)).kind is DayKind.HOLIDAY
    assert calendar.describe_day(dt.date(2027, 10, 9)).kind is DayKind.MAKEUP_WORKDAY
    assert calendar.describe_day(dt.date(2027, 2, 9)).kind is DayKind.WORKDAY  # the package's estimate no longer applies


def test_an_override_beats_the_official_package():
    calendar = china_office(overrides=(DayOverride(dt.date(2026, 12, 31), False, "company day"),
                                       DayOverride(dt.date(2026, 10, 7), True, "on call")))
    assert calendar.describe_day(dt.date(2026, 12, 31)).kind is DayKind.HOLIDAY
    assert calendar.describe_day(dt.date(2026, 10, 7)).kind is DayKind.WORKDAY


# --- declaring a calendar ---------------------------------------------------------------------------


def test_weekly_hours_accept_ranges_and_several_periods():
    week = weekly_hours({"mon-fri": ["09:00-12:00", "13:30-18:00"], "sat": ["10:00-14:00"]})
    assert [str(period) for period in week[0]] == ["09:00-12:00", "13:30-18:00"]
    assert [str(period) for period in week[5]] == ["10:00-14:00"]
    assert week[6] == ()


@pytest.mark.parametrize("text", ["9-12", "12:00-09:00", "09:00-25:00", "09:60-10:00"])
def test_malformed_working_hours_are_refused_with_the_expected_shape(text):
    with pytest.raises(CalendarError, match="09:00-12:00"):
        WorkPeriod.parse(text)


def test_overlapping_periods_and_contradicting_overrides_are_refused():
    with pytest.raises(CalendarError, match="overlap"):
        CalendarSpec(name="x", week=weekly_hours({"mon": ["09:00-12:00", "11:00-13:00"]}))
    with pytest.raises(CalendarError, match="both holiday and workday"):
        CalendarSpec(name="x", week=OFFICE_HOURS, overrides=(DayOverride(dt.date(2027, 1, 4), True),
                                                              DayOverride(dt.date(2027, 1, 4), False)))


def test_a_business_day_is_the_length_of_an_ordinary_working_day():
    assert china_office().working_day_length == dt.timedelta(hours=7, minutes=30)


def test_unknown_time_zone_is_named():
    with pytest.raises(CalendarError, match="Asia/Beijing"):
        BusinessCalendar(CalendarSpec(name="x", week=OFFICE_HOURS, timezone="Asia/Beijing"))


def test_a_calendar_without_working_hours_says_so_instead_of_looping():
    calendar = BusinessCalendar(CalendarSpec(name="never", week=((),) * 7, source=HolidaySource.NONE))
    with pytest.raises(CalendarError, match="no working time"):
        calendar.add_business_time(shanghai(2026, 1, 5, 9), dt.timedelta(minutes=1))
