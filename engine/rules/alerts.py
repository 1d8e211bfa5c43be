"""Windowed alert decisions (engine/metamodel/alerts.py), pure: which group a record belongs to,
whether it counts, and what a count means. The runtime (engine/runtime/automation/alerts.py)
does the indexed count and the writes.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from engine.metamodel.alerts import AlertSpec


class AlertStep(enum.Enum):
    NOTHING = "nothing"   # below the threshold: the record only counts
    JOIN = "join"         # an alert of its group is open: the record joins it
    RAISE = "raise"       # the record tips the count: one alert is raised for the group


def group_values(spec: AlertSpec, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """The record's values of the group fields; None when one is empty (such a record never counts)."""
    group = tuple(values.get(name) for name in spec.group_by)
    return None if any(value is None or value == "" for value in group) else group


def meets_where(spec: AlertSpec, values: Mapping[str, Any]) -> bool:
    return all(values.get(name) in allowed or (values.get(name) == "" and None in allowed)
               for name, allowed in spec.where)


def group_key(group: tuple[Any, ...]) -> str:
    return json.dumps([value if isinstance(value, (int, str, bool)) else str(value) for value in group],
                      ensure_ascii=False, separators=(",", ":"))


def lock_key(spec: AlertSpec, key: str) -> int:
    """A signed 64-bit number for the group (PostgreSQL's advisory locks take one)."""
    digest = hashlib.blake2b(f"{spec.name}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def decide(spec: AlertSpec, *, open_alert: bool, counted: int) -> AlertStep:
    """`counted`: the group's records in the window not yet in an alert, this one included."""
    if open_alert:
        return AlertStep.JOIN
    return AlertStep.RAISE if counted >= spec.threshold else AlertStep.NOTHING


def affects(spec: AlertSpec, before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> bool:
    """Whether a write may change the record's membership: created, or a group/where field changed."""
    if before is None:
        return True
    names = (*spec.group_by, *(name for name, _ in spec.where))
    return any(before.get(name) != after.get(name) for name in names)
