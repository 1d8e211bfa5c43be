"""The write lifecycle, declared in one place: what an observer of RecordService sees and may do.

Every write runs: coerce and validate → permissions → dedup → observers' `before_write`
(rules set fields, route) → computed fields and validations → gates (`WriteGate.check`: stage
requirements) → the row → event rows → observers' `after_write` (timers, outbox rows, related
records, the stage_changed event) — all in one transaction. `Change` says what the
write did, `Origin` through which door it came; the events it appends are catalogued in
events.py (`EventKind`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import sqlalchemy as sa

from engine.metamodel import EntitySpec
from engine.rules.rules import Change, Origin
from engine.runtime.records.actors import Actor


@dataclass(frozen=True, slots=True)
class WriteContext:
    """One write as observers see it, inside its transaction. `after` holds the candidate
    values in `before_write` and the stored record in `after_write`."""

    connection: sa.Connection
    entity: EntitySpec
    change: Change
    before: Mapping[str, Any] | None
    after: Mapping[str, Any]
    actor: Actor
    now: dt.datetime
    origin: Origin = Origin.USER
    source: str | None = None        # the webhook source, for origin webhook
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)  # shared by before and after of one write
    is_history: bool = False         # imported history: stage requirements are not enforced (the events say so)


class WriteObserver(Protocol):
    """Something that takes part in every write: rules, SLA clocks, cadences. An observer
    that also acts on views (an SLA that stops once the owner has looked) is a `ViewObserver`."""

    def before_write(self, context: WriteContext) -> Mapping[str, Any]:
        """Field changes to make before the row is written (e.g. a rule setting the grade)."""
        ...

    def after_write(self, context: WriteContext) -> None:
        """Effects in the same transaction once the row is written: timers, outbox rows, related records."""
        ...


@runtime_checkable
class ViewObserver(WriteObserver, Protocol):
    """An observer that also acts on views; when `wants_view` says so for a record an actor
    opened, the view is written and the observer gets `after_write` with change "viewed"."""

    def wants_view(self, entity: EntitySpec, record: Mapping[str, Any], actor: Actor) -> bool:
        """Whether `actor` opening `record` matters to this observer (e.g. an SLA's `viewed_by` stop)."""


class WriteGate(Protocol):
    """A check every write passes after its values are final (rules applied, computed fields and
    validations done) and before its row is stored: the funnels' stage gates, the approvals'
    guard on who decides a task. It raises a RecordError (e.g. StageRefused) to refuse the
    write, and may leave notes for its own `after_write`."""

    def check(self, context: WriteContext) -> None:
        ...


@dataclass(frozen=True, slots=True)
class WriteResult:
    """A written record and what happened: created, merged (into an existing duplicate) or flagged."""

    record: dict[str, Any]
    outcome: str = "created"
