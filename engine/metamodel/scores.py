"""`scores:` documents: a number 0–100 computed from weighted components, with levels and reasons
("account health: order frequency 30, service 30, engagement 25, risk 15; green ≥ 70, yellow ≥ 40").

A score belongs to an entity. Its `counts` are named counts of related records (the same
`{entity, via, where}` shape as stage requirements and approval counts); each component's
`value` is an expression over the record's fields and those counts giving 0..1 (clamped), and
contributes `weight × value` points. The weights add up to 100, so the score is 0–100 and every
point is explained: the reasons list each component's points and the counts behind them.

The score is written to `field` (its level to `level_field`, its reasons to `reasons_field`)
whenever a record counted by it, or a field of the record a component reads, changes
(`recompute: on_change`), and — with `recompute: [on_change, nightly]` — once a night at
`nightly_at` (HH:MM in the app's time zone) for every record of the entity, so components that
read the clock ("orders within 180 days") move although nothing was written. A rule with
`trigger: {event: health_dropped}` runs when the level gets worse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from engine.metamodel.checks import Built, Checker, build_items, default_label
from engine.metamodel.crossrefs import EXPRESSION_CONSTANTS, SYSTEM_FIELDS
from engine.metamodel.entities import EntitySpec, FieldType
from engine.metamodel.errors import NOWHERE, Location, did_you_mean
from engine.metamodel.expressions import Expression, ExpressionSyntaxError, parse_expression
from engine.metamodel.labels import Label
from engine.metamodel.messages import Msg
from engine.metamodel.related import RELATED_SCHEMA, RelatedMode, RelatedSpec, build_related
from engine.metamodel.schema import LABEL, NAME
from engine.metamodel.source import PathKey, SourceDocument


if TYPE_CHECKING:  # the Metamodel holds these specs; builders only read it
    from engine.metamodel.model import Metamodel
    from engine.metamodel.vocabulary import Vocabulary


RECOMPUTE = ("on_change", "nightly")
DEFAULT_NIGHTLY_AT = "02:00"  # after midnight, before the working day: today() has moved on
_HH_MM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


@dataclass(frozen=True, slots=True)
class ScoreComponent:
    name: str
    label: Label
    weight: int
    value: Expression
    explain: Label = Label(())   # a text with {count} / {field} placeholders: the reason shown


@dataclass(frozen=True, slots=True)
class ScoreSpec:
    name: str
    label: Label
    entity: str
    field: str
    levels: tuple[tuple[str, int], ...]    # (level, minimum score), best first; the last minimum is 0
    components: tuple[ScoreComponent, ...]
    counts: tuple[tuple[str, RelatedSpec], ...] = ()
    level_field: str | None = None
    reasons_field: str | None = None
    recompute: tuple[str, ...] = ("on_change",)
    location: Location = NOWHERE
    nightly_at: str = DEFAULT_NIGHTLY_AT   # HH:MM, app time zone (only with recompute: nightly)
    nightly_batch: int = 500               # records rescored per transaction by the nightly pass

    @property
    def is_nightly(self) -> bool:
        return "nightly" in self.recompute

    @property
    def nightly_cron(self) -> str:
        """The crontab of the nightly pass ("30 2 * * *" for nightly_at 02:30)."""
        hour, minute = self.nightly_at.split(":")
        return f"{int(minute)} {int(hour)} * * *"

    def level_of(self, score: int | None) -> str | None:
        if score is None:
            return None
        for level, minimum in self.levels:
            if score >= minimum:
                return level
        return self.levels[-1][0]

    def rank_of(self, score: int | None) -> int | None:
        """0 for the best level, larger for worse ones; None for no score."""
        level = self.level_of(score)
        return None if level is None else [name for name, _ in self.levels].index(level)


_COMPONENT = {"type": "object", "required": ["name", "weight", "value"], "additionalProperties": False,
              "properties": {"name": NAME, "label": LABEL, "weight": {"type": "integer", "minimum": 1, "maximum": 100},
                             "value": {"type": "string", "minLength": 1}, "explain": LABEL}}

SCORES_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["scores"], "additionalProperties": False, "properties": {
        "scores": {"type": "object", "minProperties": 1, "propertyNames": NAME, "additionalProperties": {
            "type": "object", "required": ["entity", "field", "levels", "components"], "additionalProperties": False,
            "properties": {
                "label": LABEL, "description": {"type": "string"}, "entity": NAME, "field": NAME,
                "level_field": NAME, "reasons_field": NAME,
                "levels": {"type": "object", "minProperties": 2, "propertyNames": NAME,
                           "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 100}},
                "recompute": {"type": "array", "items": {"enum": list(RECOMPUTE)}, "minItems": 1, "uniqueItems": True},
                "nightly_at": {"type": "string"},
                "nightly_batch": {"type": "integer", "minimum": 1, "maximum": 10000},
                "counts": {"type": "object", "propertyNames": NAME, "additionalProperties": RELATED_SCHEMA},
                "components": {"type": "array", "items": _COMPONENT, "minItems": 1}}}}}}


def build_scores(documents: list[SourceDocument], model: Metamodel, vocabulary: Vocabulary) -> Built:
    scores, errors = build_items("scores", Msg("score"), documents, model, vocabulary, _build_score)
    return replace(model, scores=tuple(scores)), errors


def _build_score(checker: Checker, name: str, data: dict[str, Any], path: PathKey, _: int) -> ScoreSpec | None:
    entity = checker.entity(path + ("entity",), data["entity"], Msg("score '{name}'", name=name))
    if entity is None:
        return None
    checker.field(path + ("field",), entity, data["field"], Msg("score field"), types=(FieldType.INTEGER,))
    level_field = data.get("level_field")
    levels = tuple(sorted(((str(level), int(minimum)) for level, minimum in data["levels"].items()),
                          key=lambda item: -item[1]))
    if levels and levels[-1][1] != 0:
        checker.error(path + ("levels",), Msg("the lowest level '{level}' starts at {minimum}, so a lower score has "
                                              "no level", level=levels[-1][0], minimum=levels[-1][1]),
                      Msg("give it 0, e.g. {level}: 0", level=levels[-1][0]))
    if len({minimum for _, minimum in levels}) != len(levels):
        checker.error(path + ("levels",), Msg("two levels start at the same score"),
                      Msg("give each level its own minimum"))
    if level_field is not None:
        spec = checker.field(path + ("level_field",), entity, level_field, Msg("level field"), types=(FieldType.CHOICE,))
        for level, _minimum in levels:
            checker.option(path + ("levels", level), spec, level, Msg("level"))
    if data.get("reasons_field") is not None:
        checker.field(path + ("reasons_field",), entity, data["reasons_field"], Msg("reasons field"),
                      types=(FieldType.TEXT, FieldType.STRING))
    counts = []
    for count, raw in (data.get("counts") or {}).items():
        related = build_related(checker, path + ("counts", count), raw, entity)
        if related is None:
            continue
        if related.mode is not RelatedMode.CHILDREN:
            checker.error(path + ("counts", count, "via"), Msg("count '{name}' must count records linking to {entity}",
                                                               name=count, entity=entity.name),
                          Msg("name the link of {related} that points at {entity}", related=related.entity,
                              entity=entity.name))
            continue
        if entity.has_field(count) or count in SYSTEM_FIELDS:
            checker.error(path + ("counts", count), Msg("count '{name}' has the name of a field of {entity}",
                                                        name=count, entity=entity.name),
                          Msg("give the count a name of its own, e.g. open_complaints"), key=True)
        counts.append((count, related))
    known = set(entity.field_names()) | set(SYSTEM_FIELDS) | {count for count, _ in counts}
    components = []
    seen: set[str] = set()
    for index, raw in enumerate(data["components"]):
        where = path + ("components", index)
        if raw["name"] in seen:
            checker.error(where + ("name",), Msg("component '{name}' is declared twice", name=raw["name"]),
                          Msg("rename one"))
        seen.add(raw["name"])
        value = _expression(checker, where + ("value",), raw["value"], entity, known)
        if value is not None:
            components.append(ScoreComponent(raw["name"], default_label(raw, raw["name"]), int(raw["weight"]), value,
                                             Label.of(raw.get("explain"), "")))
    total = sum(int(raw["weight"]) for raw in data["components"])
    if total != 100:
        checker.error(path + ("components",), Msg("the component weights add up to {total}, not 100", total=total),
                      Msg("a score is 0–100: make the weights add up to 100 so every point is one component's"))
    recompute = tuple(data.get("recompute") or ("on_change",))
    nightly_at = str(data.get("nightly_at", DEFAULT_NIGHTLY_AT))
    for option in ("nightly_at", "nightly_batch"):
        if option in data and "nightly" not in recompute:
            checker.error(path + (option,), Msg("{option} applies to the nightly pass, but score '{name}' is not "
                                                "recomputed nightly", option=option, name=name),
                          Msg("add nightly to recompute: [on_change, nightly], or remove it"), key=True)
    if not _HH_MM.match(nightly_at):
        checker.error(path + ("nightly_at",), Msg("nightly_at '{value}' is not a time of day", value=nightly_at),
                      Msg("write it as HH:MM in the app's time zone, e.g. nightly_at: \"02:30\""))
        nightly_at = DEFAULT_NIGHTLY_AT
    return ScoreSpec(name, default_label(data, name), entity.name, data["field"], levels, tuple(components),
                     tuple(counts), level_field, data.get("reasons_field"), recompute, checker.doc.where_key(path),
                     nightly_at, int(data.get("nightly_batch", 500)))


def _expression(checker: Checker, path: PathKey, source: str, entity: EntitySpec, known: set[str]) -> Expression | None:
    try:
        expression = parse_expression(source, checker.doc.where(path))
    except ExpressionSyntaxError as exc:
        checker.error(path, Msg("bad expression '{source}': {problem}", source=source, problem=exc),
                      Msg("see docs/expressions.md"))
        return None
    for unknown in sorted(expression.names - known - EXPRESSION_CONSTANTS):
        checker.error(path, Msg("expression uses unknown name '{name}'", name=unknown),
                      Msg("{suggestion} A component reads the fields of {entity} and the score's counts.",
                          suggestion=did_you_mean(unknown, known), entity=entity.name))
    for function in sorted(expression.functions - set(checker.functions)):
        checker.error(path, Msg("expression calls unknown function '{name}'", name=function),
                      did_you_mean(function, checker.functions))
    return expression
