"""Converting a record into others in one write (a qualified lead → account + contact + opportunity).

The blueprint declares what is created from what (engine/metamodel/conversions.py). Everything
goes through RecordService inside one transaction, so rules, clocks, funnels and permissions
apply as for any write, and a refusal anywhere leaves nothing behind. The converted record keeps
links to what it became; each created record gets a `converted` event naming where it came from,
and the converted record one naming what it became. A record that was converted already is
refused with the records it became (409), so a double click or a retried request creates nothing twice.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.metamodel import EntitySpec, Metamodel
from engine.metamodel.conversions import ConversionSpec, ConversionStep, ConversionValue
from engine.rules import Clock
from engine.rules.expressions import Evaluator
from engine.rules.rules import evaluate_condition
from engine.runtime.records.actors import Actor
from engine.runtime.records.errors import RecordError
from engine.runtime.records.events import EventKind, append_event
from engine.runtime.records.service import RecordService
from engine.runtime.records.values import expression_values, is_empty


class AlreadyConverted(RecordError):
    status = 409
    code = "already_converted"


class NotConvertible(RecordError):
    status = 422
    code = "not_convertible"


@dataclass(frozen=True, slots=True)
class Converted:
    record: dict[str, Any]                      # the converted record, as it is now
    created: dict[str, tuple[str, int, bool]]   # step → (entity, id, matched an existing record)


class Conversions:
    def __init__(self, model: Metamodel, records: RecordService, evaluator: Evaluator, clock: Clock) -> None:
        self.model = model
        self.records = records
        self.evaluator = evaluator
        self.clock = clock

    def spec(self, entity: str) -> ConversionSpec | None:
        return self.model.conversion_for(entity)

    def refusal(self, entity: str, record: Mapping[str, Any], lang: str = "en") -> str | None:
        """Why `record` cannot be converted now (None: it can), in the user's language."""
        spec = self.spec(entity)
        if spec is None:
            return "没有为此类记录声明转化" if lang == "zh" else f"{entity} records have no conversion declared"
        done = [step for step in spec.steps if record.get(step.link) is not None]
        if done:
            what = "、".join(f"{self.model.entity(step.entity).label.text('zh')} #{record[step.link]}" for step in done) \
                if lang == "zh" else ", ".join(f"{step.entity} {record[step.link]}" for step in done)
            return f"这条记录已经转化过（{what}），不能再次转化" if lang == "zh" else \
                f"this {entity} was converted already (into {what}); it cannot be converted twice"
        if spec.when is not None and not evaluate_condition(
                spec.when, expression_values(self.model.entity(entity), record), self.evaluator).is_true:
            if spec.message is not None:
                return spec.message.text(lang)
            needs = _in_words(self.model.entity(entity), spec.when.source, lang)
            return f"现在还不能转化：需要{needs}" if lang == "zh" else f"it cannot be converted yet: it needs {needs}"
        return None

    def plan(self, entity: str, record: Mapping[str, Any]) -> dict[str, tuple[dict[str, Any], int | None]]:
        """What each step would create (its values) and the existing record it would reuse, if any."""
        spec = self._spec(entity)
        with self.records.db.read() as connection:
            return {step.name: (values, self._match(connection, step, values))
                    for step in spec.steps for values in [self._values(entity, step.values, record, {})]}

    def convert(self, entity: str, record_id: int, *, actor: Actor) -> Converted:
        spec = self._spec(entity)
        self.records.get(entity, record_id, actor=actor)  # readable by the actor, or 403/404 now
        now = self.clock.now()
        with self.records.db.write() as connection:
            record = self.records.find(connection, entity, record_id)
            assert record is not None  # read above, in scope; a delete in between fails the update below
            self.records.access.check_record(connection, actor, entity, "update", record)
            reason = self.refusal(entity, record)
            if reason is not None:
                error = AlreadyConverted if any(record.get(link) is not None for link in spec.links) else NotConvertible
                raise error(reason, field=spec.links[0] if error is AlreadyConverted else None,
                            zh=self.refusal(entity, record, "zh"),
                            **{link: record.get(link) for link in spec.links})
            made: dict[str, int] = {}
            created: dict[str, tuple[str, int, bool]] = {}
            for step in spec.steps:
                values = self._values(entity, step.values, record, made)
                existing = self._match(connection, step, values)
                matched = existing is not None
                if existing is None:
                    existing = int(self.records.create(step.entity, {k: v for k, v in values.items() if not is_empty(v)},
                                                       actor=actor, within=connection).record["id"])
                made[step.name] = existing
                created[step.name] = (step.entity, existing, matched)
                append_event(connection, self.records.schema, entity=step.entity, record_id=existing,
                             kind=EventKind.CONVERTED, actor_id=actor.id, at=now,
                             data={"from": {"entity": entity, "id": record_id}, "conversion": spec.name})
            changes = {step.link: made[step.name] for step in spec.steps}
            changes.update(self._values(entity, spec.sets, record, made))
            updated = self.records.update(entity, record_id, changes, actor=actor, within=connection,
                                          expected_version=record["version"])
            append_event(connection, self.records.schema, entity=entity, record_id=record_id,
                         kind=EventKind.CONVERTED, actor_id=actor.id, at=now,
                         data={"into": {name: {"entity": item[0], "id": item[1], "matched": item[2]}
                                        for name, item in created.items()}, "conversion": spec.name})
        return Converted(updated, created)

    # -- helpers ------------------------------------------------------------------------------------
    def _spec(self, entity: str) -> ConversionSpec:
        spec = self.spec(entity)
        if spec is None:
            raise NotConvertible(f"{entity} records have no conversion declared", field=None,
                                 zh="没有为此类记录声明转化")
        return spec

    def _values(self, entity: str, values: tuple[ConversionValue, ...], record: Mapping[str, Any],
                made: Mapping[str, int]) -> dict[str, Any]:
        seen = expression_values(self.model.entity(entity), record)
        out: dict[str, Any] = {}
        for value in values:
            if value.expression is not None:
                out[value.field] = self.evaluator.evaluate(value.expression, seen)
            elif value.step is not None:
                out[value.field] = made.get(value.step)
            elif value.source is not None:
                raw = record.get(value.source)
                if isinstance(raw, tuple) and len(raw) == 2:  # money, in its input form
                    raw = {"amount": str(raw[0]), "currency": raw[1]}
                out[value.field] = raw
            else:
                out[value.field] = value.literal
        return out

    def _match(self, connection: sa.Connection, step: ConversionStep, values: Mapping[str, Any]) -> int | None:
        """The oldest existing record with the same values on the step's `match_on` fields."""
        if not step.match_on or any(is_empty(values.get(key)) for key in step.match_on):
            return None
        table = self.records.schema.table(step.entity)
        found = connection.execute(sa.select(table.c.id).where(*(table.c[key] == values[key] for key in step.match_on))
                                   .order_by(table.c.id).limit(1)).scalar()
        return int(found) if found is not None else None


_EQUALS = re.compile(r"\s*([a-z][a-z0-9_]*)\s*==\s*'([^']*)'\s*")


def _in_words(entity: EntitySpec, source: str, lang: str) -> str:
    """A conversion's `when` for people: `status == 'qualified'` as “状态为“已确认””; any other
    condition as it is written."""
    match = _EQUALS.fullmatch(source)
    if match is None or not entity.has_field(match.group(1)):
        return source
    field = entity.field(match.group(1))
    value = field.choice_label(match.group(2), lang)
    return f"{field.label.text(lang)}为“{value}”" if lang == "zh" else f"{field.label.text(lang)} to be “{value}”"
