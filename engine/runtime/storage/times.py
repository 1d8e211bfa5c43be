"""Moments in the database: stored as naive UTC (both databases, one meaning), read back aware.

Every module that writes or compares a stored time goes through these two functions, so a
moment is converted in exactly one way.
"""

from __future__ import annotations

import datetime as dt
from typing import overload

UTC = dt.timezone.utc


def naive_utc(moment: dt.datetime) -> dt.datetime:
    """An aware moment as the naive UTC value a DateTime column holds."""
    return moment.astimezone(UTC).replace(tzinfo=None)


@overload
def as_utc(value: dt.datetime | str) -> dt.datetime: ...
@overload
def as_utc(value: dt.datetime | str | None) -> dt.datetime | None: ...


def as_utc(value: dt.datetime | str | None) -> dt.datetime | None:
    """A stored moment (naive UTC, or ISO text from a JSON column) as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
