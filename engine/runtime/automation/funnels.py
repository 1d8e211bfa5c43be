"""Funnels in the write path: a stage is entered only when its move is allowed and what it demands is done.

`Funnels` is a RecordService write gate: every write whose stage field changes — a form, a
board drop, PATCH or POST …/transition, a webhook, a rule's or a timer's transition, an import
— is checked here on its final values (engine/rules/funnels.py decides; this module reads the
facts the decision needs: related records, the attached file's type, the latest approval). A
refused move raises `StageRefused` listing every missing item in Chinese and English, and
nothing is written. History (`history=True`, imports of past records) is not held to the
requirements; its events say so.

As a write observer it sets the stage's probability when a stage is entered and appends the
`stage_changed` event: from, to, the kind of move (a back move is a return), the evidence each
requirement rested on, and how long the record dwelt in the stage it left.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.metamodel import EntitySpec, Metamodel
from engine.metamodel.funnels import FunnelSpec, RequirementKind, RequirementSpec, StageKind, StageSpec
from engine.rules.expressions import Evaluator
from engine.rules.funnels import (ApprovalFact, FileFact, GateDecision, Move, RequirementCheck, applies,
                                  classify_move, fact_key, how_to, item_json, judge_move, needs_fact, refusal_headline,
                                  refusal_message)
from engine.rules.rules import Change
from engine.runtime.automation.approvals import ApprovalDesk
from engine.runtime.automation.related import RelatedReader
from engine.runtime.records.errors import StageRefused
from engine.runtime.records.events import EventKind, append_event
from engine.runtime.records.lifecycle import WriteContext
from engine.runtime.records.values import expression_values
from engine.runtime.storage.database import Database
from engine.runtime.storage.prepared import Prepared
from engine.runtime.storage.times import naive_utc
from engine.runtime.storage.tables import Schema
from engine.runtime.storage.times import as_utc

LANGUAGES = ("zh", "en")
_RECENT_ENTRIES = 20  # stage_changed events read back to find when the current stage was entered


@dataclass(frozen=True, slots=True)
class StageState:
    stage: StageSpec
    state: str   # done | current | next | ahead | aside (lost and hold stages)


@dataclass(frozen=True, slots=True)
class FunnelOutlook:
    """Where a record stands in its funnel, for its record page and the API."""

    funnel: FunnelSpec
    current: StageSpec | None
    stages: tuple[StageState, ...]
    next: StageSpec | None
    next_move: Move | None
    checks: tuple[RequirementCheck, ...]     # the next stage's requirements, met or not
    entered_at: dt.datetime | None
    track: str | None                        # the talk-track field's value

    def talk_tracks(self) -> tuple[tuple[str, Any], ...]:
        """The current stage's talk tracks, the record's own first."""
        if self.current is None:
            return ()
        tracks = list(self.current.talk_tracks)
        tracks.sort(key=lambda item: (item[0] != self.track, item[0] == "*"))
        return tuple(tracks)


class Funnels:
    """Stage gates (write gate), the stage_changed event and stage probability (write observer),
    and the funnel outlook of one record (pages, API, crm explain)."""

    def __init__(self, model: Metamodel, schema: Schema, db: Database, evaluator: Evaluator, related: RelatedReader,
                 approvals: ApprovalDesk | None) -> None:
        self.model = model
        self.schema = schema
        self.db = db
        self.evaluator = evaluator
        self.related = related
        self.approvals = approvals
        self._by_entity: dict[str, tuple[FunnelSpec, ...]] = {}
        for funnel in model.funnels:
            self._by_entity[funnel.entity] = (*self._by_entity.get(funnel.entity, ()), funnel)
        # worked out once: the moves (pure, few) and, per stage, the requirements that need a fact read
        self._moves: dict[tuple[str, str | None, str], Move] = {}
        self._needing: dict[int, tuple[tuple[str, RequirementSpec], ...]] = {
            id(stage): tuple((fact_key(stage, requirement), requirement) for requirement in stage.requirements
                             if needs_fact(requirement)) for funnel in model.funnels for stage in funnel.stages}
        files, events = schema.files, schema.events
        self._file = Prepared(sa.select(files.c.id, files.c.name, files.c.content_type)
                              .where(files.c.id == sa.bindparam("id")))
        entries = sa.select(events.c.at, events.c.data).where(
            events.c.entity == sa.bindparam("entity"), events.c.record_id == sa.bindparam("record_id"),
            events.c.kind == EventKind.STAGE_CHANGED.value).order_by(events.c.id.desc())
        self._last_entry = Prepared(entries.limit(1))
        self._move_row = Prepared(schema.stage_moves.insert(), columns=(
            "funnel", "entity", "record_id", "at", "from_stage", "to_stage", "move", "is_return", "dwell_seconds"))
        self._entries = Prepared(entries.limit(_RECENT_ENTRIES))

    def funnels_of(self, entity: str) -> tuple[FunnelSpec, ...]:
        return self._by_entity.get(entity, ())

    # -- the gate ---------------------------------------------------------------------------------
    def check(self, context: WriteContext) -> None:
        for funnel in self._by_entity.get(context.entity.name, ()):
            move = self._move(funnel, context)
            if move is None:
                continue
            if context.is_history:  # imported history: recorded as it was, requirements not enforced
                context.notes[_note(funnel)] = GateDecision(move, ())
                continue
            decision = self.decide(context.connection, funnel, move, context.entity, context.after)
            if not decision.is_allowed:
                raise self._refusal(funnel, decision, context)
            context.notes[_note(funnel)] = decision

    def _move(self, funnel: FunnelSpec, context: WriteContext) -> Move | None:
        target = context.after.get(funnel.field)
        source = context.before.get(funnel.field) if context.before is not None else None
        if target is None or (context.before is not None and source == target):
            return None
        return self.move(funnel, source, str(target))

    def move(self, funnel: FunnelSpec, source: Any, target: str) -> Move | None:
        """The move from `source` to `target` (None when `target` is not a stage of the funnel)."""
        key = (funnel.name, source, target)
        found = self._moves.get(key)
        if found is None:
            if not funnel.has_stage(target):
                return None
            found = self._moves[key] = classify_move(funnel, source, target)
        return found

    def decide(self, connection: sa.Connection, funnel: FunnelSpec, move: Move, entity: EntitySpec,
               record: Mapping[str, Any]) -> GateDecision:
        """The move judged against the record's values and the facts read for its requirements."""
        values = expression_values(entity, record)
        return judge_move(move, values, self._facts(connection, move.stages, entity, record, values),
                          self.evaluator.evaluate)

    def _facts(self, connection: sa.Connection, stages: Sequence[StageSpec], entity: EntitySpec,
               record: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
        facts: dict[str, Any] = {}
        for stage in stages:
            for key, requirement in self._needing.get(id(stage), ()):
                if requirement.when is not None and not applies(requirement, values, self.evaluator.evaluate):
                    continue
                if requirement.kind is RequirementKind.RELATED:
                    assert requirement.related is not None
                    facts[key] = self.related.matching(connection, requirement.related, entity.name, record,
                                                       enough=requirement.minimum)
                elif requirement.kind is RequirementKind.ATTACHMENT:
                    row = self._file.first(connection, {"id": record.get(requirement.field or "")}) \
                        if record.get(requirement.field or "") is not None else None
                    facts[key] = FileFact(row.id, row.name, row.content_type) if row is not None else None
                elif requirement.kind is RequirementKind.APPROVAL:
                    facts[key] = self.approvals.fact(connection, requirement.approval or "", entity.name, record) \
                        if self.approvals is not None else ApprovalFact()
        return facts

    def _refusal(self, funnel: FunnelSpec, decision: GateDecision, context: WriteContext) -> StageRefused:
        entity = context.entity
        record_id = context.before.get("id") if context.before is not None else None
        messages = {lang: refusal_message(decision, entity, funnel, lang) for lang in LANGUAGES}
        missing = {lang: [item_json(check, self.model, entity, lang) for check in decision.missing]
                   for lang in LANGUAGES}
        return StageRefused(entity=entity.name, record_id=record_id, field=funnel.field, source=decision.move.source,
                            target=decision.move.target, move=decision.move.kind.value, messages=messages,
                            missing=missing, origin=context.origin.value,
                            headlines={lang: refusal_headline(decision, funnel, lang) for lang in LANGUAGES},
                            trace=self._refusal_trace(funnel, decision, entity, context))

    def _refusal_trace(self, funnel: FunnelSpec, decision: GateDecision, entity: EntitySpec,
                       context: WriteContext) -> str:
        move = decision.move
        head = (f"{context.now:%Y-%m-%d %H:%M} UTC: REFUSED {entity.name}.{funnel.field} {move.source} → {move.target} "
                f"({move.kind.value}) by {context.actor.username} through {context.origin.value}")
        lines = [head]
        if not move.is_allowed:
            lines.append(f"  not an allowed move: {move.refusal.text('en')}")
        for check in decision.missing:
            lines.append(f"  missing [{check.stage.name}] {check.requirement.label.text('en')} — "
                         f"{how_to(check, self.model, entity, 'en')} ({check.requirement.location})")
        return "\n".join(lines)

    # -- the observer --------------------------------------------------------------------------------
    def before_write(self, context: WriteContext) -> Mapping[str, Any]:
        """Entering a stage sets the funnel's probability field, unless this write sets it itself."""
        if context.change is Change.DELETED or context.is_history:
            return {}
        changes: dict[str, Any] = {}
        for funnel in self._by_entity.get(context.entity.name, ()):
            if funnel.probability_field is None:
                continue
            target = context.after.get(funnel.field)
            before = context.before or {}
            if target is None or not funnel.has_stage(target) or (context.before is not None
                                                                 and before.get(funnel.field) == target):
                continue
            probability = funnel.stage(str(target)).probability
            own = context.after.get(funnel.probability_field)
            chosen = context.before is not None and before.get(funnel.probability_field) != own
            default = context.entity.field(funnel.probability_field).default
            if probability is not None and not chosen and (context.before is not None or own in (None, default)):
                changes[funnel.probability_field] = probability
        return changes

    def after_write(self, context: WriteContext) -> None:
        if context.change is not Change.UPDATED:
            return
        for funnel in self._by_entity.get(context.entity.name, ()):
            decision = context.notes.pop(_note(funnel), None)
            if decision is None:
                continue
            record_id = int(context.after["id"])
            since = self.entered_at(context.connection, funnel, context.entity.name, record_id,
                                    context.before.get("created_at") if context.before else None)
            data: dict[str, Any] = {
                "funnel": funnel.name, "field": funnel.field, "from": decision.move.source, "to": decision.move.target,
                "move": decision.move.kind.value, "return": decision.move.is_return,
                "evidence": decision.evidence(),
                "dwell_seconds": int((context.now - since).total_seconds()) if since is not None else None}
            if context.is_history:
                data["history"] = True
            append_event(context.connection, self.schema, entity=context.entity.name, record_id=record_id,
                         kind=EventKind.STAGE_CHANGED, actor_id=context.actor.id, at=context.now, data=data)
            self._move_row.run_later(context.connection, {  # the typed copy the dashboards read (engine/analytics)
                "funnel": funnel.name, "entity": context.entity.name, "record_id": record_id,
                "at": naive_utc(context.now), "from_stage": decision.move.source, "to_stage": decision.move.target,
                "move": decision.move.kind.value, "is_return": bool(decision.move.is_return),
                "dwell_seconds": data["dwell_seconds"]})

    def entered_at(self, connection: sa.Connection, funnel: FunnelSpec, entity: str, record_id: int,
                   created_at: Any) -> dt.datetime | None:
        """When the record entered its current stage: its last stage_changed event, else its creation.
        (The latest one is this funnel's unless the entity has several funnels: then a few are read.)"""
        params = {"entity": entity, "record_id": record_id}
        rows = self._last_entry.rows(connection, params)
        if rows and len(self._by_entity.get(entity, ())) > 1 and (rows[0].data or {}).get("field") != funnel.field:
            rows = self._entries.rows(connection, params)
        for row in rows:
            if (row.data or {}).get("field") == funnel.field:
                at: dt.datetime | None = as_utc(row.at)
                return at
        return as_utc(created_at) if isinstance(created_at, dt.datetime) else None

    # -- the outlook: where a record stands ------------------------------------------------------------
    def outlook(self, entity: EntitySpec, record: Mapping[str, Any]) -> FunnelOutlook | None:
        funnels = self._by_entity.get(entity.name, ())
        if not funnels:
            return None
        funnel = funnels[0]
        with self.db.read() as connection:
            return self._outlook(connection, funnel, entity, record)

    def _outlook(self, connection: sa.Connection, funnel: FunnelSpec, entity: EntitySpec,
                 record: Mapping[str, Any]) -> FunnelOutlook:
        value = record.get(funnel.field)
        current = funnel.stage(str(value)) if funnel.has_stage(value) else None
        path = funnel.path
        position = path.index(current) if current in path else None
        following = path[position + 1] if position is not None and position + 1 < len(path) and current is not None \
            and not current.kind.is_closed else None
        stages = tuple(StageState(stage, _state(stage, current, position, path)) for stage in funnel.stages)
        move: Move | None = None
        checks: tuple[RequirementCheck, ...] = ()
        if following is not None:
            move = self.move(funnel, current.name if current else None, following.name)
            assert move is not None
            checks = self.decide(connection, funnel, move, entity, record).checks
        entered = self.entered_at(connection, funnel, entity.name, int(record["id"]), record.get("created_at"))
        track = record.get(funnel.talk_track_field) if funnel.talk_track_field else None
        return FunnelOutlook(funnel, current, stages, following, move, checks, entered, track)

    def check_move(self, entity: EntitySpec, record: Mapping[str, Any], target: str) -> GateDecision | None:
        """What a move of `record` to `target` would meet, without making it (pages, crm explain)."""
        funnels = self._by_entity.get(entity.name, ())
        if not funnels or not funnels[0].has_stage(target):
            return None
        funnel = funnels[0]
        with self.db.read() as connection:
            return self.decide(connection, funnel, classify_move(funnel, record.get(funnel.field), target), entity,
                               record)

    def explain(self, entity: EntitySpec, record: Mapping[str, Any], now: dt.datetime) -> str:
        """`crm explain`'s funnel part: the stage, since when, and every move with what it lacks."""
        funnels = self._by_entity.get(entity.name, ())
        if not funnels:
            return ""
        funnel = funnels[0]
        lines = []
        with self.db.read() as connection:
            since = self.entered_at(connection, funnel, entity.name, int(record["id"]), record.get("created_at"))
            stage = record.get(funnel.field)
            dwell = f", for {_duration(now - since)}" if since is not None else ""
            lines.append(f"Funnel {funnel.name} ({funnel.location}): {entity.name}.{funnel.field} is {stage}{dwell}")
            for target in funnel.stages:
                if target.name == stage:
                    continue
                decision = self.decide(connection, funnel, classify_move(funnel, stage, target.name), entity, record)
                lines.extend(_explain_move(self.model, entity, decision))
        return "\n".join(lines)


def _note(funnel: FunnelSpec) -> str:
    return f"funnel:{funnel.name}"


def _state(stage: StageSpec, current: StageSpec | None, position: int | None, path: tuple[StageSpec, ...]) -> str:
    if stage.kind in (StageKind.LOST, StageKind.HOLD) or stage not in path:
        return "current" if stage is current else "aside"
    index = path.index(stage)
    if current is None or position is None:
        return "ahead"
    if index < position:
        return "done"
    if index == position:
        return "current"
    return "next" if index == position + 1 and not current.kind.is_closed else "ahead"


def _explain_move(model: Metamodel, entity: EntitySpec, decision: GateDecision) -> list[str]:
    move = decision.move
    if not move.is_allowed:
        return [f"  → {move.target} ({move.kind.value}): not allowed — {move.refusal.text('en')}"]
    if not decision.missing:
        return [f"  → {move.target} ({move.kind.value}): allowed, every requirement met"]
    lines = [f"  → {move.target} ({move.kind.value}): refused, {len(decision.missing)} missing"]
    lines.extend(f"      [{check.stage.name}] {check.requirement.label.text('en')} — "
                 f"{how_to(check, model, entity, 'en')}" for check in decision.missing)
    return lines


def _duration(delta: dt.timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{hours}h {minutes}min"
