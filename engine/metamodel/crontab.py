"""Cron as analysts know it: five fields, minute hour day month weekday, with weekday 0 or 7
for Sunday and 1 for Monday, as crontab(5) says. APScheduler numbers weekdays from Monday = 0,
so its `from_crontab` would run "0 9 * * 1" on Tuesdays: the weekday field is translated to
day names (mon…sun) before APScheduler sees it."""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from engine.metamodel.messages import Msg, MsgError

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
_PART = re.compile(r"^(\d)(?:-(\d))?(/\d+)?$")


class CrontabError(MsgError):
    """The cron line is not five crontab(5) fields; the message (a `Msg`) says what is wrong."""


def _weekday(field: str) -> str:
    """The crontab weekday field with numbers as day names ('1-5' → 'mon-fri', '0,6' → 'sun,sat')."""
    parts = []
    for part in field.split(","):
        match = _PART.match(part.strip())
        if match is None:
            parts.append(part)  # '*', '*/2', names: the same in both
            continue
        first, last, step = int(match.group(1)), match.group(2), match.group(3) or ""
        if first > 7 or (last is not None and int(last) > 7):
            raise CrontabError(Msg("weekday '{part}' is out of range: use 0–7 (0 and 7 are Sunday, 1 is Monday) "
                                   "or mon…sun", part=part))
        if last is None:
            parts.append(_DAYS[first] + step)
        elif first == 0 and int(last) > 0:  # Sunday first: APScheduler's week starts on Monday
            parts.append("sun")
            parts.append(("mon" if int(last) == 1 else f"mon-{_DAYS[int(last)]}") + step)
        else:
            parts.append(f"{_DAYS[first]}-{_DAYS[int(last)]}{step}")
    return ",".join(parts)


def crontab_trigger(cron: str, timezone: str) -> CronTrigger:
    """The APScheduler trigger for a crontab(5) line in `timezone`; ValueError saying what is wrong."""
    fields = cron.split()
    if len(fields) != 5:
        raise CrontabError(Msg("a cron line has five fields (minute hour day month weekday), this one has {count}",
                               count=len(fields)))
    minute, hour, day, month, weekday = fields
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=_weekday(weekday),
                       timezone=ZoneInfo(timezone))
