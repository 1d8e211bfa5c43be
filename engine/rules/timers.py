"""Durable timers as data: what the rules ask to happen later, and the port that stores it.

Rules and SLA policies decide *that* something is due at a moment; they hand a
`TimerRequest` to a `TimerStore` inside the transaction of the change that caused it. The
runtime implements the store on the database, and the worker fires each timer exactly once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class TimerRequest:
    """Fire `kind` at `due_at`. `key` is unique per intent (e.g. "sla:lead:7:first_call:breach"):
    scheduling the same key again moves the timer instead of adding a second one."""

    kind: str
    key: str
    due_at: dt.datetime
    entity: str | None = None
    record_id: int | None = None
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DueTimer:
    id: int
    kind: str
    key: str
    due_at: dt.datetime
    entity: str | None
    record_id: int | None
    payload: dict[str, Any]
    attempts: int


class TimerStore(Protocol):
    def schedule(self, connection: Any, *requests: TimerRequest) -> None:
        """Create or move the timer with each request's key (a fired timer is never re-armed)."""
        ...

    def cancel(self, connection: Any, key_prefix: str, entity: str | None = None, record_id: int | None = None) -> int:
        """Cancel pending timers whose key starts with `key_prefix` (of the record `entity`
        `record_id`, when given: a store can then find them by record); returns how many."""
        ...
