"""Reporting periods in the business time zone: this day/week/month/quarter/year, and the one before."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from engine.runtime.storage.times import naive_utc


@dataclass(frozen=True, slots=True)
class Period:
    """[start, end) as aware local datetimes; `name` is day … year, or all (no bounds)."""

    name: str
    start: dt.datetime | None
    end: dt.datetime | None

    @property
    def is_bounded(self) -> bool:
        return self.start is not None and self.end is not None

    def utc(self) -> tuple[dt.datetime, dt.datetime] | None:
        """The bounds as the naive UTC values DateTime columns hold."""
        if self.start is None or self.end is None:
            return None
        return naive_utc(self.start), naive_utc(self.end)

    def previous(self) -> Period:
        if self.start is None or self.end is None:
            return self
        start = _step(self.name, self.start, -1)
        return Period(self.name, start, self.start)

    def text(self) -> str:
        if self.start is None or self.end is None:
            return "all"
        last = self.end - dt.timedelta(days=1)
        if self.name == "day":
            return self.start.date().isoformat()
        return f"{self.start.date().isoformat()} – {last.date().isoformat()}"


def _step(name: str, start: dt.datetime, count: int) -> dt.datetime:
    zone = start.tzinfo
    day = start.date()
    if name == "day":
        day = day + dt.timedelta(days=count)
    elif name == "week":
        day = day + dt.timedelta(weeks=count)
    else:
        months = {"month": 1, "quarter": 3, "year": 12}[name] * count
        index = day.year * 12 + day.month - 1 + months
        day = dt.date(index // 12, index % 12 + 1, 1)
    return dt.datetime.combine(day, dt.time(), zone)


def period_at(name: str, now: dt.datetime, timezone: str, offset: int = 0) -> Period:
    """The period `name` holding `now` (local), moved back `offset` periods (1: the previous one)."""
    if name == "all":
        return Period("all", None, None)
    local = now.astimezone(ZoneInfo(timezone))
    day = local.date()
    if name == "week":
        day = day - dt.timedelta(days=day.weekday())
    elif name == "month":
        day = day.replace(day=1)
    elif name == "quarter":
        day = dt.date(day.year, (day.month - 1) // 3 * 3 + 1, 1)
    elif name == "year":
        day = dt.date(day.year, 1, 1)
    elif name != "day":
        raise ValueError(f"unknown period '{name}': use day, week, month, quarter, year or all")
    start = _step(name, dt.datetime.combine(day, dt.time(), ZoneInfo(timezone)), -offset)
    return Period(name, start, _step(name, start, 1))


def split_period(period: Period, every: str, now: dt.datetime, timezone: str,
                 count: int = 12) -> tuple[tuple[Period, ...], tuple[Period, ...]]:
    """A line chart's points: the period cut into days, weeks or months (the last clipped at its
    end), and the previous period cut the same way; for all time, the last `count` of `every`
    up to now and the `count` before them."""
    if period.start is None or period.end is None:
        current = tuple(period_at(every, now, timezone, offset) for offset in range(count - 1, -1, -1))
        before = tuple(period_at(every, now, timezone, offset) for offset in range(2 * count - 1, count - 1, -1))
        return current, before
    return _cut(period, every), _cut(period.previous(), every)


def point_name(piece: Period, every: str) -> str:
    """A line chart's point as people read it: 2026-11 for a month, 11-02 for a day or a week's Monday."""
    assert piece.start is not None
    return piece.start.strftime("%Y-%m" if every == "month" else "%m-%d")


def _cut(period: Period, every: str) -> tuple[Period, ...]:
    assert period.start is not None and period.end is not None
    pieces = []
    start = period.start
    while start < period.end:
        end = min(_step(every, start, 1), period.end)
        pieces.append(Period(every, start, end))
        start = end
    return tuple(pieces)
