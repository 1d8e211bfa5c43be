"""Scores recomputed inside the write that changes their inputs (engine/metamodel/scores.py).

`ScoreKeeper.after_write` runs for every write. A write of a record a score counts (an order,
a ticket, an activity, an opportunity of the account) recomputes the score of the record it
links to — and of the one it linked to before, when the link moved; a write of the scored
record itself recomputes it when a field a component reads changed. The counts are read with
the RelatedReader (the same reading as stage requirements), the points computed by
engine/rules/scores.py, and the score, level and reasons written through RecordService, so the
change is in the timeline and rules see it (`health_dropped`).

A score declared `recompute: [on_change, nightly]` is also recomputed for every record of its
entity by `rescore_batch`, which the nightly job (engine/runtime/background/jobs.py) calls one
batch per transaction: time-based counts move although nothing was written. Only records whose
numbers changed are written, so a quiet night adds no events, and a level that got worse fires
`health_dropped` once — the next night the level is the same, so it does not fire again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from engine.metamodel import Metamodel
from engine.metamodel.scores import ScoreSpec
from engine.rules.expressions import Evaluator
from engine.rules.rules import Change, Origin
from engine.rules.scores import ScoreResult, compute_score
from engine.runtime.automation.related import RelatedReader
from engine.runtime.records.actors import Actor
from engine.runtime.records.lifecycle import WriteContext
from engine.runtime.records.service import RecordService
from engine.runtime.records.values import expression_values


def score_actor(name: str) -> Actor:
    return Actor(None, f"score:{name}", role="system", is_system=True)


class ScoreKeeper:
    def __init__(self, model: Metamodel, records: RecordService, evaluator: Evaluator, related: RelatedReader) -> None:
        self.model = model
        self.records = records
        self.evaluator = evaluator
        self.related = related
        self.lang = model.settings.default_language or "zh"
        # entity → (score, link of that entity to the scored one)
        self._inputs: dict[str, list[tuple[ScoreSpec, str]]] = {}
        self._reads: dict[str, set[str]] = {}
        for spec in model.scores:
            for _, count in spec.counts:
                pair = (spec, count.via)
                if pair not in self._inputs.setdefault(count.entity, []):
                    self._inputs[count.entity].append(pair)
            reads: set[str] = set()
            for component in spec.components:
                reads |= component.value.names
            self._reads[spec.name] = reads - {spec.field, spec.level_field or "", spec.reasons_field or ""}

    def before_write(self, context: WriteContext) -> Mapping[str, Any]:
        """The scored record itself: scored when created (its counts are 0), and again when a
        field a component reads changes — in the same write, so it is never stale."""
        changes: dict[str, Any] = {}
        for spec in self.model.scores:
            if spec.entity != context.entity.name or context.change not in (Change.CREATED, Change.UPDATED):
                continue
            if context.change is Change.UPDATED and not any(
                    (context.before or {}).get(field) != context.after.get(field) for field in self._reads[spec.name]):
                continue
            result = self.compute(context.connection, spec, context.after)
            changes.update({name: value for name, value in self._values(spec, result).items()
                            if context.after.get(name) != value})
        return changes

    def _values(self, spec: ScoreSpec, result: ScoreResult) -> dict[str, Any]:
        values: dict[str, Any] = {spec.field: result.score}
        if spec.level_field is not None:
            values[spec.level_field] = result.level
        if spec.reasons_field is not None:
            values[spec.reasons_field] = result.reasons(self.lang)
        return values

    def after_write(self, context: WriteContext) -> None:
        if context.change is Change.VIEWED:
            return
        name = context.entity.name
        for spec, via in self._inputs.get(name, ()):
            targets = {context.after.get(via), (context.before or {}).get(via)}
            for target in sorted(value for value in targets if value is not None):
                self.recompute(context.connection, spec, int(target))

    def rescore_batch(self, connection: sa.Connection, spec: ScoreSpec, after_id: int,
                      limit: int) -> tuple[int, int, int | None]:
        """Recompute the scores of up to `limit` records with ids above `after_id`, in id order:
        (records read, records whose score changed, the last id read — None when none were left)."""
        table = self.records.schema.table(spec.entity)
        ids = [int(row.id) for row in connection.execute(
            sa.select(table.c.id).where(table.c.id > after_id).order_by(table.c.id).limit(limit))]
        changed = 0
        for record_id in ids:
            before = self.records.find(connection, spec.entity, record_id)
            result = self.recompute(connection, spec, record_id)
            if before is not None and result is not None and before.get(spec.field) != result.score:
                changed += 1
        return len(ids), changed, (ids[-1] if ids else None)

    def compute(self, connection: sa.Connection, spec: ScoreSpec, record: Mapping[str, Any]) -> ScoreResult:
        values = expression_values(self.model.entity(spec.entity), record)
        for count, related in spec.counts:
            values[count] = self.related.count(connection, related, spec.entity, record) if record.get("id") else 0
        return compute_score(spec, values, self.evaluator, self.lang)

    def recompute(self, connection: sa.Connection, spec: ScoreSpec, record_id: int) -> ScoreResult | None:
        record = self.records.find(connection, spec.entity, record_id)
        if record is None:
            return None
        result = self.compute(connection, spec, record)
        changes = {field: value for field, value in self._values(spec, result).items() if record.get(field) != value}
        if changes:
            self.records.update(spec.entity, record_id, changes, actor=score_actor(spec.name), within=connection,
                                origin=Origin.RULE.value)
        return result
