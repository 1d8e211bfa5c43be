"""Durations as analysts write them: 15min, 2h, 1h30min, 3d, 1bd (business days).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from engine.metamodel.checks import Checker
from engine.metamodel.messages import Msg, MsgError
from engine.metamodel.source import PathKey


_DURATION = re.compile(r"^\s*(?:\d+\s*(?:bd|d|h|min|s)\s*)+$")


_DURATION_PART = re.compile(r"(\d+)\s*(bd|d|h|min|s)")


@dataclass(frozen=True, slots=True)
class DurationSpec:
    """A written duration: fixed time plus whole business days (converted with the policy's calendar)."""

    text: str
    fixed: dt.timedelta
    business_days: int = 0


DURATION_SCHEMA = {"type": "string", "pattern": _DURATION.pattern}


class DurationError(MsgError):
    """The text is not a duration; the message (a `Msg`) says how to write one."""


def parse_duration(text: str) -> DurationSpec:
    """"1h30min" → DurationSpec; raises ValueError for text that is not a duration."""
    if not _DURATION.match(str(text)):
        raise DurationError(Msg("'{text}' is not a duration; write e.g. 15min, 2h, 1h30min, 3d or 1bd", text=text))
    fixed, business_days = dt.timedelta(0), 0
    for amount, unit in _DURATION_PART.findall(str(text)):
        if unit == "bd":
            business_days += int(amount)
        else:
            fixed += dt.timedelta(**{{"d": "days", "h": "hours", "min": "minutes", "s": "seconds"}[unit]: int(amount)})
    return DurationSpec(str(text), fixed, business_days)


def checked_duration(checker: Checker, path: PathKey, text: str) -> DurationSpec:
    try:
        return parse_duration(text)
    except ValueError as exc:
        checker.error(path, str(exc))  # a DurationError's str is its Msg
        return DurationSpec(text, dt.timedelta(minutes=1))
