"""`calendars:` documents: working hours, time zone, Chinese public holidays and make-up workdays.
The rules turn a `CalendarDecl` into a `BusinessCalendar` (engine/rules/calendars.py).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.metamodel.checks import Built, Checker, build_items, default_label
from engine.metamodel.errors import NOWHERE, Location, did_you_mean
from engine.metamodel.labels import Label
from engine.metamodel.messages import Msg
from engine.metamodel.schema import LABEL, NAME
from engine.metamodel.source import PathKey, SourceDocument


if TYPE_CHECKING:  # the Metamodel holds these specs; builders only read it
    from engine.metamodel.model import Metamodel
    from engine.metamodel.vocabulary import Vocabulary


_PERIOD = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


_DAY = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:\.\.(\d{4}-\d{2}-\d{2}))?$")


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class CalendarDecl:
    name: str
    label: Label
    timezone: str
    hours: tuple[tuple[str, tuple[str, ...]], ...]  # weekday key ("mon-fri") → periods ("09:00-12:00")
    makeup_day_hours: tuple[str, ...] | None
    public_holidays: str  # china | none
    uncovered_years: str  # holidays | weekends
    holidays: tuple[tuple[dt.date, str], ...]
    workdays: tuple[tuple[dt.date, str], ...]
    official_years: tuple[int, ...]
    location: Location = NOWHERE


CALENDARS_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["calendars"], "additionalProperties": False,
    "properties": {"calendars": {"type": "object", "minProperties": 1, "propertyNames": NAME,
                                 "additionalProperties": {
        "type": "object", "required": ["hours"], "additionalProperties": False, "properties": {
            "label": LABEL, "description": {"type": "string"}, "timezone": {"type": "string"},
            "hours": {"type": "object", "minProperties": 1,
                      "additionalProperties": {"type": "array", "items": {"type": "string"}}},
            "makeup_day_hours": {"type": "array", "items": {"type": "string"}},
            "public_holidays": {"enum": ["china", "none"]}, "uncovered_years": {"enum": ["holidays", "weekends"]},
            "holidays": {"type": "object", "additionalProperties": {"type": "string"}},
            "workdays": {"type": "object", "additionalProperties": {"type": "string"}},
            "official_years": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}}}}}}


def check_period(text: str) -> Msg | None:
    match = _PERIOD.match(text.strip())
    if not match:
        return Msg('working hours "{text}" must look like "09:00-12:00"', text=text)
    start = int(match[1]) * 60 + int(match[2])
    end = int(match[3]) * 60 + int(match[4])
    if int(match[2]) > 59 or int(match[4]) > 59 or not 0 <= start < end <= 1440:
        return Msg('working hours "{text}" must start before they end, within 00:00-24:00', text=text)
    return None


def check_weekday_key(key: str) -> Msg | None:
    first, _, last = key.lower().partition("-")
    if first not in WEEKDAYS or (last and last not in WEEKDAYS):
        return Msg('weekday "{key}" must be one of {days} or a range like "mon-fri"', key=key, days=", ".join(WEEKDAYS))
    if last and WEEKDAYS.index(last) < WEEKDAYS.index(first):
        return Msg('weekday range "{key}" runs backwards; write it Monday first', key=key)
    return None


def day_list(raw: dict[str, str], checker: Checker, path: PathKey) -> list[tuple[dt.date, str]]:
    days: list[tuple[dt.date, str]] = []
    for key, name in raw.items():
        match = _DAY.match(str(key).strip())
        try:
            if not match:
                raise ValueError
            first = dt.date.fromisoformat(match[1])
            last = dt.date.fromisoformat(match[2]) if match[2] else first
        except ValueError:
            checker.error(path + (key,), Msg("'{key}' is not a date or a date range", key=key),
                          Msg('write "2027-02-13" or "2027-02-06..2027-02-12" (quoted)'), key=True)
            continue
        if last < first or (last - first).days > 366:
            checker.error(path + (key,), Msg("date range '{key}' runs backwards or spans more than a year", key=key),
                          key=True)
            continue
        days.extend((first + dt.timedelta(days=offset), str(name)) for offset in range((last - first).days + 1))
    return days


def check_zone(checker: Checker, path: PathKey, name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        checker.error(path, Msg("unknown time zone '{name}'", name=name), Msg("use an IANA name such as Asia/Shanghai"))


def build_calendars(documents: list[SourceDocument], model: Metamodel, vocabulary: Vocabulary) -> Built:
    """CalendarDecls from every `calendars:` document: weekdays, periods, dates and zones checked."""
    calendars, errors = build_items("calendars", Msg("calendar"), documents, model, vocabulary, _build_calendar)
    return replace(model, calendars=tuple(calendars)), errors


def _build_calendar(checker: Checker, name: str, data: dict[str, Any], path: PathKey, _: int) -> CalendarDecl:
    timezone = data.get("timezone", checker.model.settings.timezone)
    check_zone(checker, path + ("timezone",), timezone)
    for key, periods in data["hours"].items():
        if (problem := check_weekday_key(key)) is not None:
            checker.error(path + ("hours", key), problem, key=True)
        for index, text in enumerate(periods):
            if (problem := check_period(text)) is not None:
                checker.error(path + ("hours", key, index), problem, Msg("overnight shifts are two periods"))
    for index, text in enumerate(data.get("makeup_day_hours") or ()):
        if (problem := check_period(text)) is not None:
            checker.error(path + ("makeup_day_hours", index), problem)
    holidays = day_list(data.get("holidays") or {}, checker, path + ("holidays",))
    workdays = day_list(data.get("workdays") or {}, checker, path + ("workdays",))
    clash = sorted({day for day, _ in holidays} & {day for day, _ in workdays})
    if clash:
        checker.error(path, Msg("calendar '{name}' lists {day} as both a holiday and a workday", name=name,
                                day=str(clash[0])),
                      Msg("keep it under one of holidays/workdays"))
    makeup = data.get("makeup_day_hours")
    return CalendarDecl(
        name, default_label(data, name), timezone, tuple((key, tuple(periods)) for key, periods in data["hours"].items()),
        tuple(makeup) if makeup is not None else None, data.get("public_holidays", "china"),
        data.get("uncovered_years", "holidays"), tuple(holidays), tuple(workdays),
        tuple(data.get("official_years") or ()), checker.doc.where_key(path))


def calendar_ref(checker: Checker, path: PathKey, name: str | None, business_time: bool) -> str | None:
    known = [spec.name for spec in checker.model.calendars]
    if name is None:
        if business_time and len(known) != 1:
            checker.error(path, Msg("business time needs a calendar: name one with calendar:"),
                          Msg("declared calendars: {names}", names=", ".join(known)) if known else
                          Msg("declared calendars: none"))
        return known[0] if business_time and len(known) == 1 else None
    if name not in known:
        checker.error(path + ("calendar",), Msg("unknown calendar '{name}'", name=name), did_you_mean(name, known))
    return name
