"""`funnel:` documents: the ordered stages of an entity's stage field, which moves between them
are allowed, and what each stage demands before a record may enter it.

```yaml
funnel: opportunity_sales
entity: opportunity            # its stage field: `field:`, else stage, else status
probability_field: probability # set to the stage's probability when a stage is entered
talk_track_field: customer_concern
moves: {forward: true, skip: false, back: true, reopen: false, lose: true, hold: true}
stages:
  - name: demo
    probability: 30
    guidance: {zh: …, en: …}
    talk_tracks: {price_sensitive: …, feature_led: …}
    requires:
      - attachment: demo_deck
      - field: customer_questions
      - related: {entity: activity, via: opportunity, where: "kind == 'demo' and done"}
        label: {zh: 记录一次已完成的产品演示, en: Log a done product demo}
      - approval: price_approval
        when: "discount > 15"
  - {name: won, kind: won, reason: win_reason}
  - {name: lost, kind: lost, reason: loss_reason}
```

A requirement is one of: `field` (filled), `check` (an expression that must be true, with a
`label` saying what it asks), `attachment` (an attachment field holding a file, optionally of
given content `types`), `related` (at least `min` related records meeting `where`),
`checklist` (every item of a multichoice field ticked) or `approval` (a declared approval
granted for the record's current values). `when` makes it conditional. Every name is
checked at load, each problem reported at its file:line with a fix.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from engine.metamodel.checks import Built, Checker, default_label
from engine.metamodel.entities import EntitySpec, FieldSpec, FieldType
from engine.metamodel.errors import NOWHERE, Location, did_you_mean
from engine.metamodel.expressions import Expression
from engine.metamodel.labels import Label
from engine.metamodel.messages import Msg
from engine.metamodel.related import RELATED_SCHEMA, RelatedSpec, build_related
from engine.metamodel.schema import EXPRESSION, LABEL, NAME, either
from engine.metamodel.source import PathKey, SourceDocument
from engine.metamodel.vocabulary import Vocabulary

if TYPE_CHECKING:  # the Metamodel holds these specs; builders only read it
    from engine.metamodel.model import Metamodel


class StageKind(enum.Enum):
    OPEN = "open"   # work in progress, in the funnel's order
    WON = "won"     # closed, won: demands its reason
    LOST = "lost"   # closed, lost: demands its reason; reachable from every open stage (`lose`)
    HOLD = "hold"   # parked (paused): demands its reason; left again to any open stage

    @property
    def is_closed(self) -> bool:
        return self in (StageKind.WON, StageKind.LOST)


class RequirementKind(enum.Enum):
    FIELD = "field"
    CHECK = "check"
    ATTACHMENT = "attachment"
    RELATED = "related"
    CHECKLIST = "checklist"
    APPROVAL = "approval"


MOVE_KINDS = ("forward", "skip", "back", "reopen", "lose", "hold")


@dataclass(frozen=True, slots=True)
class MoveRules:
    """Which kinds of move out of a stage are allowed: one stage forward, a skip over stages,
    a move back (a return), out of a won/lost stage (reopen), into a lost stage (lose), into a
    hold stage (hold)."""

    forward: bool = True
    skip: bool = False
    back: bool = True
    reopen: bool = False
    lose: bool = True
    hold: bool = True

    def allows(self, kind: str) -> bool:
        return bool(getattr(self, kind))

    def merged(self, overrides: dict[str, bool]) -> MoveRules:
        return replace(self, **{key: bool(value) for key, value in overrides.items()})


@dataclass(frozen=True, slots=True)
class RequirementSpec:
    """One thing a stage demands. `label` says what (shown in every refusal and checklist);
    the way to satisfy it is worked out from the kind and the record's state."""

    kind: RequirementKind
    key: str
    label: Label
    field: str | None = None                  # field, attachment, checklist (and a won/lost reason)
    items: tuple[str, ...] = ()               # checklist: the options that must be ticked
    types: tuple[str, ...] = ()               # attachment: allowed content types (image/*, application/pdf)
    related: RelatedSpec | None = None
    minimum: int = 1                          # related: how many matching records
    prefill: tuple[tuple[str, Any], ...] = ()  # related: values of the "log it" link's new-record form
    approval: str | None = None
    check: Expression | None = None
    when: Expression | None = None
    how: Label = Label(())                    # the analyst's own hint, shown instead of the generated one
    is_reason: bool = False
    location: Location = NOWHERE


@dataclass(frozen=True, slots=True)
class StageSpec:
    name: str
    label: Label
    kind: StageKind
    position: int
    requirements: tuple[RequirementSpec, ...] = ()
    probability: int | None = None
    guidance: Label = Label(())
    talk_tracks: tuple[tuple[str, Label], ...] = ()   # value of the talk-track field ("*": any) → text
    moves: MoveRules = MoveRules()
    reason: str | None = None
    location: Location = NOWHERE


@dataclass(frozen=True, slots=True)
class FunnelSpec:
    name: str
    label: Label
    entity: str
    field: str
    stages: tuple[StageSpec, ...]
    probability_field: str | None = None
    talk_track_field: str | None = None
    location: Location = NOWHERE

    def stage(self, name: str) -> StageSpec:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"funnel '{self.name}' has no stage '{name}' "
                       f"(known: {', '.join(stage.name for stage in self.stages)})")

    def has_stage(self, name: object) -> bool:
        return any(stage.name == name for stage in self.stages)

    @property
    def path(self) -> tuple[StageSpec, ...]:
        """The stages a record walks, in order: open ones and the won stage(s); lost and hold
        stages stand beside the path."""
        return tuple(stage for stage in self.stages if stage.kind in (StageKind.OPEN, StageKind.WON))

    def approvals(self) -> frozenset[str]:
        return frozenset(req.approval for stage in self.stages for req in stage.requirements if req.approval)


_MIME = {"type": "string", "pattern": r"^[a-z*]+/[A-Za-z0-9.+*-]+$"}
MOVES_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": False,
                                "properties": {kind: {"type": "boolean"} for kind in MOVE_KINDS}}
_REQUIREMENT: dict[str, Any] = {
    "type": "object", "minProperties": 1, "additionalProperties": False, "properties": {
        "field": NAME, "check": EXPRESSION, "attachment": NAME,
        "types": {"type": "array", "items": _MIME, "minItems": 1},
        "related": {**RELATED_SCHEMA, "properties": {
            **RELATED_SCHEMA["properties"], "min": {"type": "integer", "minimum": 1, "maximum": 1000},
            "prefill": {"type": "object", "propertyNames": NAME}}},
        "checklist": either("string", NAME, {"type": "object", "required": ["field"], "additionalProperties": False,
                                             "properties": {"field": NAME, "items": {
                                                 "type": "array", "items": {"type": "string"}, "minItems": 1}}}),
        "approval": NAME, "label": LABEL, "how": LABEL, "when": EXPRESSION}}
_STAGE: dict[str, Any] = {
    "type": "object", "required": ["name"], "additionalProperties": False, "properties": {
        "name": {"type": "string", "minLength": 1}, "label": LABEL,
        "kind": {"enum": [kind.value for kind in StageKind]},
        "probability": {"type": "integer", "minimum": 0, "maximum": 100},
        "requires": {"type": "array", "items": _REQUIREMENT}, "reason": NAME, "guidance": LABEL,
        "talk_tracks": {"type": "object", "minProperties": 1, "additionalProperties": LABEL},
        "moves": MOVES_SCHEMA}}
FUNNEL_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["funnel", "entity", "stages"], "additionalProperties": False, "properties": {
        "funnel": NAME, "label": LABEL, "description": LABEL, "entity": NAME, "field": NAME,
        "probability_field": NAME, "talk_track_field": NAME, "moves": MOVES_SCHEMA,
        "stages": {"type": "array", "minItems": 2, "items": _STAGE}}}
_REQUIREMENT_KINDS = [kind.value for kind in RequirementKind]


def build_funnels(documents: list[SourceDocument], model: Metamodel, vocabulary: Vocabulary) -> Built:
    """FunnelSpecs from every `funnel:` document, each name checked against its entity, the
    approvals and the roles; one funnel per stage field."""
    errors: list[Any] = []
    funnels: dict[str, FunnelSpec] = {}
    fields: dict[tuple[str, str], str] = {}
    for doc in documents:
        checker = Checker(doc, model, vocabulary, errors)
        name = doc.data["funnel"]
        if name in funnels:
            checker.error(("funnel",), Msg("funnel '{name}' is declared twice", name=name),
                          Msg("the first is at {place}", place=funnels[name].location))
            continue
        funnel = _build_funnel(checker, doc.data)
        if funnel is None:
            continue
        if (funnel.entity, funnel.field) in fields:
            checker.error(("entity",), Msg("{entity}.{field} already has funnel '{funnel}'", entity=funnel.entity,
                                           field=funnel.field, funnel=fields[(funnel.entity, funnel.field)]),
                          Msg("one funnel per stage field: merge them"))
            continue
        fields[(funnel.entity, funnel.field)] = name
        funnels[name] = funnel
    return replace(model, funnels=tuple(funnels.values())), errors


def _build_funnel(checker: Checker, data: dict[str, Any]) -> FunnelSpec | None:
    name = data["funnel"]
    entity = checker.entity(("entity",), data["entity"], Msg("funnel '{name}'", name=name))
    if entity is None:
        return None
    field = _stage_field(checker, entity, data.get("field"))
    if field is None:
        return None
    probability = None
    if data.get("probability_field"):
        spec = checker.field(("probability_field",), entity, data["probability_field"], "probability_field",
                             types=(FieldType.INTEGER, FieldType.DECIMAL))
        probability = spec.name if spec else None
    tracks = None
    if data.get("talk_track_field"):
        spec = checker.field(("talk_track_field",), entity, data["talk_track_field"], "talk_track_field",
                             types=(FieldType.CHOICE,))
        tracks = spec
    defaults = MoveRules().merged(data.get("moves") or {})
    stages = _build_stages(checker, entity, field, data["stages"], defaults, tracks)
    return FunnelSpec(name, default_label(data, name), entity.name, field.name, stages, probability,
                      tracks.name if tracks else None, checker.doc.where_key(("funnel",)))


def _stage_field(checker: Checker, entity: EntitySpec, name: str | None) -> FieldSpec | None:
    chosen = name or entity.stage_field
    if chosen is None:
        checker.error(("entity",), Msg("entity '{name}' has no stage or status field for a funnel", name=entity.name),
                      Msg("name its choice field with field: <name>"))
        return None
    return checker.field(("field",) if name else ("entity",), entity, chosen, Msg("stage field"),
                         types=(FieldType.CHOICE,))


def _build_stages(checker: Checker, entity: EntitySpec, field: FieldSpec, raw: list[dict[str, Any]],
                  defaults: MoveRules, tracks: FieldSpec | None) -> tuple[StageSpec, ...]:
    stages: list[StageSpec] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        path: PathKey = ("stages", index)
        stage_name = str(item["name"])
        if stage_name in seen:
            checker.error(path + ("name",), Msg("stage '{name}' appears twice", name=stage_name),
                          Msg("list every stage once"))
            continue
        seen.add(stage_name)
        if stage_name not in field.choice_values():
            checker.error(path + ("name",), Msg("stage '{name}' is not an option of {entity}.{field}",
                                                name=stage_name, entity=entity.name, field=field.name),
                          Msg("{suggestion} Add it under {entity}.fields.{field}.options or correct the name.",
                              suggestion=did_you_mean(stage_name, field.choice_values()), entity=entity.name,
                              field=field.name))
        stages.append(_build_stage(checker, entity, field, item, path, index, defaults, tracks))
    for value in field.choice_values():
        if value not in seen:
            checker.error(("stages",), Msg("option '{value}' of {entity}.{field} is not a stage of the funnel",
                                           value=value, entity=entity.name, field=field.name),
                          Msg("add a stage '{value}' (in its place in the order) or remove the option", value=value))
    if stages and not any(stage.kind is StageKind.OPEN for stage in stages):
        checker.error(("stages",), Msg("a funnel needs at least one open stage"),
                      Msg("give the first stages kind: open"))
    return tuple(stages)


def _build_stage(checker: Checker, entity: EntitySpec, field: FieldSpec, item: dict[str, Any], path: PathKey,
                 position: int, defaults: MoveRules, tracks: FieldSpec | None) -> StageSpec:
    name = str(item["name"])
    kind = StageKind(item.get("kind", "open"))
    requirements = [requirement for index, raw in enumerate(item.get("requires") or [])
                    if (requirement := build_requirement(checker, entity, raw, path + ("requires", index), index))]
    reason = item.get("reason")
    if reason is not None:
        spec = checker.field(path + ("reason",), entity, reason, Msg("reason field"))
        if spec is not None:
            requirements.insert(0, RequirementSpec(
                RequirementKind.FIELD, f"reason:{reason}", _verb_label(spec, "reason"), field=reason, is_reason=True,
                location=checker.doc.where(path + ("reason",))))
    elif kind is not StageKind.OPEN:
        example = {StageKind.WON: "win_reason", StageKind.LOST: "loss_reason", StageKind.HOLD: "pause_reason"}[kind]
        checker.error(path, Msg("stage '{name}' is a {kind} stage and must demand its reason", name=name, kind=kind.value),
                      Msg("add reason: <field> (e.g. reason: {example}, a choice or text field of the reasons)",
                          example=example))
    talk_tracks = []
    for value, text in (item.get("talk_tracks") or {}).items():
        if tracks is None:
            checker.error(path + ("talk_tracks",), Msg("talk tracks need the funnel's talk_track_field"),
                          Msg("add talk_track_field: <choice field> (e.g. customer_concern) to the funnel"), key=True)
            break
        if value != "*" and value not in tracks.choice_values():
            checker.error(path + ("talk_tracks", value), Msg("'{value}' is not an option of {field}",
                                                             value=value, field=tracks.name),
                          Msg("{suggestion} ('*' is the track for any value)",
                              suggestion=did_you_mean(value, [*tracks.choice_values(), "*"])),
                          key=True)
        talk_tracks.append((str(value), Label.of(text)))
    label = Label.of(item["label"]) if item.get("label") else next(
        (choice.label for choice in field.choices if choice.value == name), Label.of(name))
    return StageSpec(name, label, kind, position, tuple(requirements), item.get("probability"),
                     Label.of(item.get("guidance")), tuple(talk_tracks), defaults.merged(item.get("moves") or {}),
                     reason, checker.doc.where(path))


def build_requirement(checker: Checker, entity: EntitySpec, raw: dict[str, Any], path: PathKey,
                       index: int) -> RequirementSpec | None:
    kinds = [key for key in _REQUIREMENT_KINDS if key in raw]
    if len(kinds) != 1:
        every = ", ".join(_REQUIREMENT_KINDS)
        checker.error(path, Msg("a requirement is exactly one of: {kinds} (this one has {given})",
                                kinds=every, given=", ".join(kinds)) if kinds else
                      Msg("a requirement is exactly one of: {kinds}", kinds=every),
                      Msg("write one item per requirement, e.g. - attachment: signed_quote"))
        return None
    kind = RequirementKind(kinds[0])
    when = checker.expression(path + ("when",), raw["when"], entity) if raw.get("when") else None
    common: dict[str, Any] = {"when": when, "how": Label.of(raw.get("how")), "location": checker.doc.where(path)}
    given = Label.of(raw["label"]) if raw.get("label") else None
    builder = _REQUIREMENT_BUILDERS[kind]
    built: RequirementSpec | None = builder(checker, entity, raw, path, index, common)
    if built is not None and given is not None:
        built = replace(built, label=given)
    return built


def _field_requirement(checker: Checker, entity: EntitySpec, raw: dict[str, Any], path: PathKey, index: int,
                       common: dict[str, Any]) -> RequirementSpec | None:
    spec = checker.field(path + ("field",), entity, raw["field"], Msg("required field"))
    if spec is None:
        return None
    if spec.type is FieldType.COMPUTED:
        checker.error(path + ("field",), Msg("'{field}' is computed: nobody can fill it in", field=spec.name),
                      Msg("require the fields it is computed from, or write a check: expression"))
    return RequirementSpec(RequirementKind.FIELD, f"field:{spec.name}", _verb_label(spec, "fill"), field=spec.name,
                           **common)


def _check_requirement(checker: Checker, entity: EntitySpec, raw: dict[str, Any], path: PathKey, index: int,
                       common: dict[str, Any]) -> RequirementSpec | None:
    expression = checker.expression(path + ("check",), raw["check"], entity)
    if not raw.get("label"):
        checker.error(path, Msg("a check requirement needs a label saying what it asks for"),
                      Msg("add label: {{zh: 预计金额大于 0, en: Amount above zero}} — reps read it, not the expression"))
    if expression is None:
        return None
    return RequirementSpec(RequirementKind.CHECK, f"check:{index}", Label.of(raw.get("label"), expression.source),
                           check=expression, **common)


def _attachment_requirement(checker: Checker, entity: EntitySpec, raw: dict[str, Any], path: PathKey, index: int,
                            common: dict[str, Any]) -> RequirementSpec | None:
    name = raw["attachment"]
    kinds = [spec.name for spec in entity.fields if spec.type is FieldType.ATTACHMENT]
    if not entity.has_field(name) or entity.field(name).type is not FieldType.ATTACHMENT:
        checker.error(path + ("attachment",), Msg("unknown attachment kind '{name}': {entity} has no attachment "
                                                  "field of that name", name=name, entity=entity.name),
                      Msg("{suggestion} An attachment kind is an attachment field: declare {name}: {{type: attachment}} "
                          "under {entity}.fields or correct the name.",
                          suggestion=did_you_mean(name, kinds), name=name, entity=entity.name))
        return None
    types = tuple(str(item) for item in raw.get("types") or ())
    return RequirementSpec(RequirementKind.ATTACHMENT, f"attachment:{name}", _verb_label(entity.field(name), "upload"),
                           field=name, types=types, **common)


def _related_requirement(checker: Checker, entity: EntitySpec, raw: dict[str, Any], path: PathKey, index: int,
                         common: dict[str, Any]) -> RequirementSpec | None:
    body = raw["related"]
    related = build_related(checker, path + ("related",), body, entity)
    if related is None:
        return None
    target = checker.model.entity(related.entity)
    prefill = []
    for name, value in (body.get("prefill") or {}).items():
        spec = checker.field(path + ("related", "prefill", name), target, name, Msg("prefill field"))
        if spec is not None:
            checker.check_literal(path + ("related", "prefill", name), spec, value)
            prefill.append((name, value))
    minimum = int(body.get("min", 1))
    where = f"：{related.where.source}" if related.where else ""
    label = Label.of({"zh": f"至少 {minimum} 条{target.label.text('zh')}{where}",
                      "en": f"At least {minimum} {target.plural.text('en')}"
                            + (f" where {related.where.source}" if related.where else "")})
    return RequirementSpec(RequirementKind.RELATED, f"related:{index}", label, related=related, minimum=minimum,
                           prefill=tuple(prefill), **common)


def _checklist_requirement(checker: Checker, entity: EntitySpec, raw: dict[str, Any], path: PathKey, index: int,
                           common: dict[str, Any]) -> RequirementSpec | None:
    body = raw["checklist"] if isinstance(raw["checklist"], dict) else {"field": raw["checklist"]}
    where = path + ("checklist",) + (("field",) if isinstance(raw["checklist"], dict) else ())
    spec = checker.field(where, entity, body["field"], Msg("checklist field"), types=(FieldType.MULTICHOICE,))
    if spec is None:
        return None
    items = tuple(str(item) for item in body.get("items") or spec.choice_values())
    for position, item in enumerate(body.get("items") or ()):
        checker.option(path + ("checklist", "items", position), spec, item, Msg("checklist item"))
    return RequirementSpec(RequirementKind.CHECKLIST, f"checklist:{spec.name}", _verb_label(spec, "tick"),
                           field=spec.name, items=items, **common)


def _approval_requirement(checker: Checker, entity: EntitySpec, raw: dict[str, Any], path: PathKey, index: int,
                          common: dict[str, Any]) -> RequirementSpec | None:
    name = raw["approval"]
    known = [spec.name for spec in checker.model.approvals if spec.entity == entity.name]
    if name not in known:
        others = [spec.entity for spec in checker.model.approvals if spec.name == name]
        checker.error(path + ("approval",), Msg("unknown approval '{name}'", name=name) if not others else
                      Msg("approval '{name}' approves {other} records, not {entity}", name=name, other=others[0],
                          entity=entity.name),
                      Msg("{suggestion} Approvals are declared in approval: documents.",
                          suggestion=did_you_mean(name, known)))
        return None
    approval = checker.model.approval(name)
    label = Label.of({"zh": f"{approval.label.text('zh')}已批准", "en": f"{approval.label.text('en')} granted"})
    return RequirementSpec(RequirementKind.APPROVAL, f"approval:{name}", label, approval=name, **common)


_VERBS = {"fill": ("填写{label}", "Fill in {label}"), "reason": ("填写{label}", "Give the {label}"),
          "upload": ("上传{label}", "Upload the {label}"), "tick": ("勾选{label}", "Tick the {label}")}


def _verb_label(spec: FieldSpec, verb: str) -> Label:
    zh, en = _VERBS[verb]
    return Label.of({"zh": zh.format(label=spec.label.text("zh")),
                     "en": en.format(label=_lower_first(spec.label.text("en")))})


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


_REQUIREMENT_BUILDERS: dict[RequirementKind, Any] = {
    RequirementKind.FIELD: _field_requirement, RequirementKind.CHECK: _check_requirement,
    RequirementKind.ATTACHMENT: _attachment_requirement, RequirementKind.RELATED: _related_requirement,
    RequirementKind.CHECKLIST: _checklist_requirement, RequirementKind.APPROVAL: _approval_requirement,
}

