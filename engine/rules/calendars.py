"""Business calendars: when people are at work, and how much working time lies between moments.

An SLA "2 business hours" counts only the minutes a team is at its desk: the working
periods of each weekday (several a day, e.g. 09:00-12:00 and 13:30-18:00), in the team's
time zone, minus public holidays, plus the make-up workdays (调休上班) on which China works
on a Saturday or Sunday. The official Chinese schedule comes from maintained packages,
never from a hand-typed list:

- ``chinese-calendar`` holds the State Council schedule for 2004 up to the last year its
  release knows (1.11: 2026) and raises for later years;
- for a year it does not cover, the calendar applies a declared fallback rule — the
  statutory holidays estimated by the ``holidays`` package (which has no make-up workdays
  for such years) or weekends only — and says so loudly through `coverage_warnings`;
- the blueprint adds or overrides single days, or declares a whole year itself
  (``official_years``) the day the State Council publishes it.

Everything here is pure: aware datetimes in, aware UTC datetimes out, no clock, no I/O.
Per-day working periods are computed once per calendar and kept in the instance, which
makes 100,000 `add_business_time` calls take well under a second.
"""

from __future__ import annotations

import datetime as dt
import enum
import importlib.metadata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import chinese_calendar  # ships no type hints: pyproject's [tool.mypy] overrides say so




from engine.metamodel.calendars import CalendarDecl
from engine.metamodel.messages import Msg

_UTC = dt.timezone.utc
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=_UTC)
_ONE_US = dt.timedelta(microseconds=1)
_ONE_DAY = dt.timedelta(days=1)
MAX_SEARCH_DAYS = 3 * 366  # a calendar with no working time in three years is a configuration error


class CalendarError(ValueError):
    """A calendar is misconfigured or was asked something it cannot answer; the message says which."""


class DayKind(enum.Enum):
    """What a date is in a calendar, before working hours are looked at."""

    WORKDAY = "workday"  # an ordinary weekday with working hours
    REST_DAY = "rest_day"  # an ordinary weekend (or a weekday without hours)
    HOLIDAY = "holiday"  # a public or company holiday: no work even on a weekday
    MAKEUP_WORKDAY = "makeup_workday"  # 调休: a weekend day worked instead of a holiday


class HolidaySource(enum.Enum):
    """Where a calendar's public holidays come from."""

    NONE = "none"  # weekly hours and blueprint overrides only
    CHINA = "china"  # chinese-calendar; years it lacks use the calendar's fallback rule


class FallbackRule(enum.Enum):
    """What to assume for a year the official package does not cover (always with a warning)."""

    HOLIDAYS_PACKAGE = "holidays"  # statutory CN holidays as estimated by `holidays`, no make-up workdays
    WEEKENDS_ONLY = "weekends"  # no public holidays at all, only weekends off


@dataclass(frozen=True, slots=True)
class WorkPeriod:
    """One stretch of working time within a day, in minutes after local midnight (end may be 1440)."""

    start_minute: int
    end_minute: int

    def __post_init__(self) -> None:
        if not 0 <= self.start_minute < self.end_minute <= 24 * 60:
            raise CalendarError(f"working period {self} must start before it ends, within 00:00-24:00")

    @classmethod
    def parse(cls, text: str) -> WorkPeriod:
        """Read "09:00-12:00" (24:00 allowed as an end); overnight shifts are two periods."""
        try:
            start_text, end_text = (part.strip() for part in text.split("-"))
            return cls(_parse_minute(start_text), _parse_minute(end_text))
        except (ValueError, CalendarError):
            raise CalendarError(f'working hours "{text}" must look like "09:00-12:00", start before end') from None

    def __str__(self) -> str:
        return f"{_format_minute(self.start_minute)}-{_format_minute(self.end_minute)}"


@dataclass(frozen=True, slots=True)
class DayOverride:
    """A blueprint's word on one date: a holiday (working=False) or a make-up workday (working=True)."""

    date: dt.date
    working: bool
    name: str = ""


@dataclass(frozen=True, slots=True)
class CalendarSpec:
    """A business calendar as declared in the blueprint (see docs/notifications.md)."""

    name: str
    week: tuple[tuple[WorkPeriod, ...], ...]  # seven entries, Monday first
    timezone: str = "Asia/Shanghai"
    source: HolidaySource = HolidaySource.CHINA
    fallback: FallbackRule = FallbackRule.HOLIDAYS_PACKAGE
    overrides: tuple[DayOverride, ...] = ()
    official_years: frozenset[int] = frozenset()  # years whose complete schedule is in `overrides`
    makeup_hours: tuple[WorkPeriod, ...] | None = None  # hours on a make-up workday; None: Monday's

    def __post_init__(self) -> None:
        if len(self.week) != 7:
            raise CalendarError(f"calendar {self.name!r}: working hours need seven weekdays, got {len(self.week)}")
        for periods in (*self.week, self.makeup_hours or ()):
            ordered = sorted(periods, key=lambda period: period.start_minute)
            for earlier, later in zip(ordered, ordered[1:]):
                if later.start_minute < earlier.end_minute:
                    raise CalendarError(f"calendar {self.name!r}: working periods {earlier} and {later} overlap")
        seen: dict[dt.date, DayOverride] = {}
        for override in self.overrides:
            if override.date in seen and seen[override.date].working != override.working:
                raise CalendarError(f"calendar {self.name!r}: {override.date} is listed as both holiday and workday")
            seen[override.date] = override


@dataclass(frozen=True, slots=True)
class DayInfo:
    """What a calendar says about one date, with the source of that answer (for screens and doctor)."""

    date: dt.date
    kind: DayKind
    name: str
    source: str  # "weekly hours", "chinese-calendar 1.11.0", "holidays 0.109 (estimated)", "blueprint"

    @property
    def is_working_day(self) -> bool:
        return self.kind in (DayKind.WORKDAY, DayKind.MAKEUP_WORKDAY)


@dataclass(frozen=True, slots=True)
class YearCoverage:
    """Who decided the holidays of one year, and the warning to show when it was only assumed."""

    year: int
    source: str
    warning: Msg | None


class HolidayProvider(Protocol):
    """Official days off and make-up workdays of a year, or None when the provider lacks the year."""

    label: str

    def year_days(self, year: int) -> Mapping[dt.date, tuple[bool, str]] | None:
        """Date -> (is a working day, name) for every date that differs from Mon-Fri work, Sat-Sun rest."""
        ...


class ChineseCalendarProvider:
    """The State Council schedule as published in the `chinese-calendar` package."""

    def __init__(self) -> None:
        self.label = f"chinese-calendar {_package_version('chinese-calendar')}"

    def year_days(self, year: int) -> Mapping[dt.date, tuple[bool, str]] | None:
        try:
            chinese_calendar.is_workday(dt.date(year, 1, 1))
        except NotImplementedError:  # the package's own "no data for year" signal
            return None
        days: dict[dt.date, tuple[bool, str]] = {}
        day = dt.date(year, 1, 1)
        while day.year == year:
            working = chinese_calendar.is_workday(day)
            _, name = chinese_calendar.get_holiday_detail(day)
            if working != (day.weekday() < 5) or (name and not working):
                label = name or ""
                days[day] = (working, f"{label} (make-up workday)" if working and label else label)
            day += _ONE_DAY
        return days


class HolidaysPackageProvider:
    """Statutory CN holidays from `holidays`: computed by rule, so an estimate, and never make-up workdays."""

    def __init__(self) -> None:
        self.label = f"holidays {_package_version('holidays')} (statutory estimate)"

    def year_days(self, year: int) -> Mapping[dt.date, tuple[bool, str]] | None:
        import holidays  # imported only when a year needs the fallback: the package is large

        found = holidays.country_holidays("CN", years=year, language="en_US")
        return {day: (False, str(name)) for day, name in sorted(found.items()) if day.year == year}


class BusinessCalendar:
    """Answers working-time questions for one `CalendarSpec`; caches per-day periods in the instance."""

    def __init__(
        self,
        spec: CalendarSpec,
        *,
        official: HolidayProvider | None = None,
        fallback: HolidayProvider | None = None,
    ) -> None:
        try:
            self._zone = ZoneInfo(spec.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise CalendarError(f"calendar {spec.name!r}: unknown time zone {spec.timezone!r}") from None
        self.spec = spec
        self._official = official or ChineseCalendarProvider()
        self._fallback = fallback or HolidaysPackageProvider()
        self._overrides = {override.date: override for override in spec.overrides}
        self._makeup_hours = spec.makeup_hours if spec.makeup_hours is not None else next(
            (periods for periods in spec.week if periods), ()
        )
        self._years: dict[int, tuple[YearCoverage, Mapping[dt.date, tuple[bool, str]]]] = {}
        self._periods: dict[dt.date, tuple[tuple[int, int], ...]] = {}

    # --- what a day is -------------------------------------------------------------------
    def coverage(self, year: int) -> YearCoverage:
        """Which source decides `year`'s holidays, and a warning if it was only assumed."""
        return self._year(year)[0]

    def coverage_warnings(self, years: Iterable[int]) -> list[Msg]:
        """Warnings for the given years whose holidays are assumed, not official (for doctor and admin)."""
        return [w for year in sorted(set(years)) if (w := self.coverage(year).warning) is not None]

    def describe_day(self, day: dt.date) -> DayInfo:
        """The kind of `day`, its holiday name and who said so."""
        weekday_hours = bool(self.spec.week[day.weekday()])
        override = self._overrides.get(day)
        if override is not None:
            return DayInfo(day, _kind(override.working, weekday_hours), override.name, "blueprint")
        coverage, days = self._year(day.year)
        if day in days:
            working, name = days[day]
            return DayInfo(day, _kind(working, weekday_hours), name, coverage.source)
        return DayInfo(day, DayKind.WORKDAY if weekday_hours else DayKind.REST_DAY, "", "weekly hours")

    @property
    def working_day_length(self) -> dt.timedelta:
        """The working time of an ordinary full day (the first weekday with hours): a "business day" target."""
        periods = next((periods for periods in self.spec.week if periods), ())
        return dt.timedelta(minutes=sum(period.end_minute - period.start_minute for period in periods))

    def working_periods(self, day: dt.date) -> tuple[tuple[dt.datetime, dt.datetime], ...]:
        """The working periods of a local date, as UTC datetimes."""
        return tuple((_from_us(start), _from_us(end)) for start, end in self._day_periods(day))

    # --- working-time arithmetic -----------------------------------------------------------
    def is_working_time(self, moment: dt.datetime) -> bool:
        """Whether someone is at work at `moment` (period starts count, ends do not)."""
        day = self._local_date(moment)
        point = _to_us(moment)
        return any(start <= point < end for start, end in self._day_periods(day))

    def add_business_time(self, start: dt.datetime, duration: dt.timedelta) -> dt.datetime:
        """The moment `duration` of working time after `start` (UTC); ends exactly at a period end if due there."""
        if duration < dt.timedelta(0):
            raise CalendarError("add_business_time needs a duration of zero or more")
        day = self._local_date(start)
        point, remaining = _to_us(start), duration // _ONE_US
        if remaining == 0:
            return start.astimezone(_UTC)
        for _ in range(MAX_SEARCH_DAYS):
            for period_start, period_end in self._day_periods(day):
                if period_end <= point:
                    continue
                begin = max(period_start, point)
                if remaining <= period_end - begin:
                    return _from_us(begin + remaining)
                remaining -= period_end - begin
            day += _ONE_DAY
        raise CalendarError(f"calendar {self.spec.name!r} has no working time within {MAX_SEARCH_DAYS} days")

    def business_time_between(self, first: dt.datetime, second: dt.datetime) -> dt.timedelta:
        """Working time from `first` to `second`; negative when `second` is earlier."""
        day, last = self._local_date(first), self._local_date(second)
        if second < first:
            return -self.business_time_between(second, first)
        low, high, total = _to_us(first), _to_us(second), 0
        while day <= last:
            for period_start, period_end in self._day_periods(day):
                overlap = min(period_end, high) - max(period_start, low)
                if overlap > 0:
                    total += overlap
            day += _ONE_DAY
        return dt.timedelta(microseconds=total)

    def next_working_moment(self, moment: dt.datetime) -> dt.datetime:
        """`moment` itself if it is working time, else the start of the next working period (UTC)."""
        day = self._local_date(moment)
        point = _to_us(moment)
        for _ in range(MAX_SEARCH_DAYS):
            for period_start, period_end in self._day_periods(day):
                if period_end > point:
                    return _from_us(max(period_start, point))
            day += _ONE_DAY
        raise CalendarError(f"calendar {self.spec.name!r} has no working time within {MAX_SEARCH_DAYS} days")

    # --- internals ---------------------------------------------------------------------------
    def _local_date(self, moment: dt.datetime) -> dt.date:
        if moment.tzinfo is None:
            raise CalendarError(f"{moment!r} has no time zone; calendars only accept aware datetimes")
        return moment.astimezone(self._zone).date()

    def _day_periods(self, day: dt.date) -> tuple[tuple[int, int], ...]:
        periods = self._periods.get(day)
        if periods is None:
            periods = self._periods[day] = self._compute_periods(day)
        return periods

    def _compute_periods(self, day: dt.date) -> tuple[tuple[int, int], ...]:
        kind = self.describe_day(day).kind
        if kind is DayKind.WORKDAY:
            declared = self.spec.week[day.weekday()]
        elif kind is DayKind.MAKEUP_WORKDAY:
            declared = self.spec.week[day.weekday()] or self._makeup_hours
        else:
            return ()
        result = []
        for period in sorted(declared, key=lambda period: period.start_minute):
            start, end = self._local_minute_us(day, period.start_minute), self._local_minute_us(day, period.end_minute)
            if start < end:  # a period swallowed by a DST gap has no length
                result.append((start, end))
        return tuple(result)

    def _local_minute_us(self, day: dt.date, minute: int) -> int:
        # aware + timedelta is wall-clock arithmetic; the zone then gives that wall time's real offset
        return _to_us(dt.datetime.combine(day, dt.time(), tzinfo=self._zone) + dt.timedelta(minutes=minute))

    def _year(self, year: int) -> tuple[YearCoverage, Mapping[dt.date, tuple[bool, str]]]:
        cached = self._years.get(year)
        if cached is None:
            cached = self._years[year] = self._load_year(year)
        return cached

    def _load_year(self, year: int) -> tuple[YearCoverage, Mapping[dt.date, tuple[bool, str]]]:
        spec = self.spec
        if year in spec.official_years:
            return YearCoverage(year, "blueprint", None), {}
        if spec.source is HolidaySource.NONE:
            return YearCoverage(year, "weekly hours", None), {}
        official = self._official.year_days(year)
        if official is not None:
            return YearCoverage(year, self._official.label, None), official
        if spec.fallback is FallbackRule.HOLIDAYS_PACKAGE:
            days = self._fallback.year_days(year) or {}
            assumed = Msg("assumed {count} days off from {source} and NO make-up workdays", count=len(days),
                          source=self._fallback.label)
            source = self._fallback.label
        else:
            days, source = {}, "weekends"
            assumed = Msg("assumed NO public holidays and NO make-up workdays (weekends only)")
        warning = Msg("calendar '{name}': {year} is not covered by {package}; {assumed} — enter the State Council "
                      "schedule for {year} under calendars.{name}.holidays/workdays and add {year} to official_years "
                      "as soon as it is published", name=spec.name, year=year, package=self._official.label,
                      assumed=assumed)
        return YearCoverage(year, source, warning), days


def weekly_hours(hours: Mapping[str, Iterable[str]]) -> tuple[tuple[WorkPeriod, ...], ...]:
    """Seven tuples of periods from {"mon-fri": ["09:00-12:00", ...], "sat": [...]} (days not named rest)."""
    names = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    week: list[tuple[WorkPeriod, ...]] = [()] * 7
    for key, periods in hours.items():
        first, _, last = key.lower().partition("-")
        if first not in names or (last and last not in names):
            raise CalendarError(f'weekday "{key}" must be one of {", ".join(names)} or a range like "mon-fri"')
        begin, end = names.index(first), names.index(last or first)
        if end < begin:
            raise CalendarError(f'weekday range "{key}" runs backwards; write it Monday first, e.g. "mon-fri"')
        for index in range(begin, end + 1):
            week[index] = tuple(WorkPeriod.parse(text) for text in periods)
    return tuple(week)


def _kind(working: bool, weekday_hours: bool) -> DayKind:
    if working:
        return DayKind.WORKDAY if weekday_hours else DayKind.MAKEUP_WORKDAY
    return DayKind.HOLIDAY


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _parse_minute(text: str) -> int:
    hours, minutes = text.split(":")
    if len(minutes) != 2 or not 0 <= int(minutes) < 60 or not 0 <= int(hours) <= 24:
        raise ValueError(text)
    value = int(hours) * 60 + int(minutes)
    if value > 24 * 60:
        raise ValueError(text)
    return value


def _format_minute(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _to_us(moment: dt.datetime) -> int:
    """Microseconds since the epoch of an aware datetime (callers checked awareness via _local_date)."""
    return (moment - _EPOCH) // _ONE_US


def _from_us(value: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=value)


def build_calendar(decl: CalendarDecl) -> BusinessCalendar:
    """The rules' BusinessCalendar for a blueprint calendar."""
    overrides = tuple(DayOverride(day, False, name) for day, name in decl.holidays)
    overrides += tuple(DayOverride(day, True, name) for day, name in decl.workdays)
    makeup = tuple(WorkPeriod.parse(text) for text in decl.makeup_day_hours) if decl.makeup_day_hours else None
    spec = CalendarSpec(decl.name, weekly_hours(dict(decl.hours)), decl.timezone, HolidaySource(decl.public_holidays),
                        FallbackRule(decl.uncovered_years), overrides, frozenset(decl.official_years), makeup)
    return BusinessCalendar(spec)
