"""`handover:` documents: a flow between departments — its nodes in order, the role that owns each
node, what a node must hand over before the item moves on, how long a node may take in business
hours, and the inbound webhooks that complete a node.

```yaml
handover: sales_to_delivery
label: {zh: 销售→交付交接, en: Sales → delivery handover}
entity: delivery_handover          # the items; `field` (default: its stage field) holds the node
channel: dingtalk_sales            # warnings and escalations go here
calendar: china_office             # SLAs count this calendar's business hours
escalate_to: [role:sales_manager]  # at 100 % (default: owner.manager)
nodes:
  - name: contract_signing
    role: legal                    # who owns the item while it sits here
    sla: 3bd                       # warning at 50 % to this node's role and the previous node's
    requires:                      # the funnel requirement kinds: what this node hands over
      - attachment: contract_file
    completed_by: econtract_signed # a delivery of this source (`match:`) moves the item on
  - name: done
    kind: done                     # the last node: no owner, no clock
```

A flow is not a second engine: it becomes a funnel on the entity's node field (so a move is
refused, on every write path, until the node's `requires` are met — they are the next node's
entry requirements) and one SLA policy per node (started when the item enters the node, stopped
when it leaves; the warning and the escalation are ordinary notify actions through the outbox).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.metamodel.actions import ActionSpec, AddTagsAction, NotifyAction
from engine.metamodel.calendars import calendar_ref
from engine.metamodel.channels import MessageTemplateSpec
from engine.metamodel.checks import Built, Checker, default_label
from engine.metamodel.clocks import ClockTrigger, StopCondition
from engine.metamodel.durations import DURATION_SCHEMA, checked_duration
from engine.metamodel.entities import EntitySpec, FieldSpec, FieldType
from engine.metamodel.errors import NOWHERE, BlueprintError, Location, did_you_mean
from engine.metamodel.expressions import parse_expression
from engine.metamodel.funnels import (FunnelSpec, MoveRules, RequirementSpec, StageKind, StageSpec, _REQUIREMENT,
                                      build_requirement)
from engine.metamodel.labels import Label
from engine.metamodel.messages import Msg
from engine.metamodel.schema import LABEL, NAME
from engine.metamodel.sla import PERCENTS, SlaSpec
from engine.metamodel.source import PathKey, SourceDocument

if TYPE_CHECKING:  # the Metamodel holds these specs; builders only read it
    from engine.metamodel.model import Metamodel
    from engine.metamodel.vocabulary import Vocabulary

MAX_SLA_NAME = 64
OVERDUE_TAG = "handover_overdue"
_PERSON = re.compile(r"^(owner|owner\.manager|(role|user|team):[A-Za-z0-9_.@-]+)$")


@dataclass(frozen=True, slots=True)
class HandoverNodeSpec:
    """One node: the role that owns an item while it sits here, its SLA policy (None on the last
    node), and the inbound source whose delivery completes it."""

    name: str
    label: Label
    role: str | None
    sla: str | None = None
    target: str | None = None           # the SLA as written (2bd), for the board and the docs
    completed_by: str | None = None
    is_final: bool = False
    location: Location = NOWHERE


@dataclass(frozen=True, slots=True)
class HandoverSpec:
    name: str
    label: Label
    entity: str
    field: str
    nodes: tuple[HandoverNodeSpec, ...]
    channel: str | None = None
    location: Location = NOWHERE

    def node(self, name: str) -> HandoverNodeSpec:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"handover '{self.name}' has no node '{name}' "
                       f"(known: {', '.join(node.name for node in self.nodes)})")

    def next_node(self, name: str) -> HandoverNodeSpec | None:
        names = [node.name for node in self.nodes]
        position = names.index(name) if name in names else len(names)
        return self.nodes[position + 1] if position + 1 < len(names) else None

    def move_by(self, source: str, current: object) -> str | None:
        """The node an item at `current` moves to when `source` delivers for it: the next node,
        when `source` completes the current one; else None (the delivery only updates fields)."""
        for node in self.nodes:
            if node.name == current and node.completed_by == source:
                following = self.next_node(node.name)
                return following.name if following else None
        return None


_NODE: dict[str, Any] = {
    "type": "object", "required": ["name"], "additionalProperties": False, "properties": {
        "name": {"type": "string", "minLength": 1}, "label": LABEL, "role": NAME, "sla": DURATION_SCHEMA,
        "kind": {"enum": ["done"]}, "requires": {"type": "array", "items": _REQUIREMENT},
        "completed_by": NAME}}
HANDOVER_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["handover", "entity", "nodes"], "additionalProperties": False, "properties": {
        "handover": NAME, "label": LABEL, "description": LABEL, "entity": NAME, "field": NAME, "channel": NAME,
        "calendar": NAME, "warn_at": PERCENTS,
        "escalate_to": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "nodes": {"type": "array", "minItems": 2, "items": _NODE}}}


def sla_name(handover: str, node: str) -> str:
    return f"handover:{handover}:{node}"


def build_handovers(documents: list[SourceDocument], model: Metamodel, vocabulary: Vocabulary) -> Built:
    """HandoverSpecs, each flow's funnel on its node field, one SLA policy per timed node and the
    message templates of its warnings and escalations."""
    errors: list[BlueprintError] = []
    handovers: dict[str, HandoverSpec] = {}
    funnels, slas, templates = list(model.funnels), list(model.slas), list(model.templates)
    for doc in documents:
        checker = Checker(doc, model, vocabulary, errors)
        name = doc.data["handover"]
        if name in handovers:
            checker.error(("handover",), Msg("handover '{name}' is declared twice", name=name),
                          Msg("the first is at {place}", place=handovers[name].location))
            continue
        built = _build_handover(checker, doc.data, funnels)
        if built is None:
            continue
        handover, funnel, policies, messages = built
        handovers[name] = handover
        funnels.append(funnel)
        slas.extend(policies)
        templates.extend(messages)
    return dataclasses.replace(model, handovers=tuple(handovers.values()), funnels=tuple(funnels), slas=tuple(slas),
                               templates=tuple(templates)), errors


def _build_handover(checker: Checker, data: dict[str, Any], funnels: list[FunnelSpec]
                    ) -> tuple[HandoverSpec, FunnelSpec, list[SlaSpec], list[MessageTemplateSpec]] | None:
    name = data["handover"]
    entity = checker.entity(("entity",), data["entity"], Msg("handover '{name}'", name=name))
    if entity is None:
        return None
    field = _node_field(checker, entity, data.get("field"))
    if field is None:
        return None
    taken = next((funnel.name for funnel in funnels if funnel.entity == entity.name and funnel.field == field.name), None)
    if taken is not None:
        checker.error(("entity",), Msg("{entity}.{field} already has funnel '{funnel}'", entity=entity.name,
                                       field=field.name, funnel=taken),
                      Msg("a handover is the funnel of its node field: give the flow its own field or entity"))
        return None
    channel = data.get("channel")
    if channel is not None and not checker.model.has_channel(channel):
        checker.error(("channel",), Msg("unknown channel '{name}'", name=channel),
                      did_you_mean(channel, [spec.name for spec in checker.model.channels]))
    escalate_to = tuple(data.get("escalate_to") or ("owner.manager",))
    for index, person in enumerate(escalate_to):
        _check_person(checker, ("escalate_to", index), person)
    nodes, stages = _build_nodes(checker, name, entity, field, data["nodes"])
    label = default_label(data, name)
    handover = HandoverSpec(name, label, entity.name, field.name, tuple(nodes), channel,
                            checker.doc.where_key(("handover",)))
    funnel = FunnelSpec(f"handover:{name}", label, entity.name, field.name, tuple(stages),
                        location=handover.location)
    business = calendar_ref(checker, (), data.get("calendar"), True)
    warn_at = tuple(data.get("warn_at", (50,)))
    if any(not 0 < p < 100 for p in warn_at):
        checker.error(("warn_at",), Msg("warnings are percentages between 1 and 99"))
    policies, messages = [], []
    for index, (node, raw) in enumerate(zip(nodes, data["nodes"])):
        if node.sla is None:
            continue
        previous = nodes[index - 1] if index else None
        notify = _node_actions(checker, ("nodes", index), handover, node, previous, escalate_to)
        where = checker.doc.where(("nodes", index, "sla"))
        policies.append(SlaSpec(
            node.sla, Label.of({"zh": f"交接时效 · {node.label.text('zh')}", "en": f"Handover: {node.label.text('en')}"}),
            entity.name, (), checked_duration(checker, ("nodes", index, "sla"), raw["sla"]),
            ClockTrigger("stage_entered", field=field.name, value=node.name),
            parse_expression(f"{field.name} == '{node.name}'", where), business_time=True, calendar=business,
            # stopped by leaving the node (not by `stage_changed`, which also holds on the write that enters it)
            stops=(StopCondition("when", expression=parse_expression(f"{field.name} != '{node.name}'", where)),),
            warn_at=warn_at, escalate_at=(),
            on_warning=notify[0], on_breach=notify[1], location=where))
        messages.extend(_templates(handover, node, entity))
    return handover, funnel, policies, messages


def _node_field(checker: Checker, entity: EntitySpec, name: str | None) -> FieldSpec | None:
    chosen = name or entity.stage_field
    if chosen is None:
        checker.error(("entity",), Msg("entity '{entity}' has no stage or status field to hold the node",
                                       entity=entity.name),
                      Msg("name its choice field with field: <name>"))
        return None
    return checker.field(("field",) if name else ("entity",), entity, chosen, Msg("node field"),
                         types=(FieldType.CHOICE,))


def _build_nodes(checker: Checker, handover: str, entity: EntitySpec, field: FieldSpec, raw: list[dict[str, Any]]
                 ) -> tuple[list[HandoverNodeSpec], list[StageSpec]]:
    """The nodes, and the funnel stages they become: a node's `requires` are what it hands over,
    so they are demanded on entering the node after it."""
    nodes: list[HandoverNodeSpec] = []
    stages: list[StageSpec] = []
    handed_over: tuple[RequirementSpec, ...] = ()
    seen: set[str] = set()
    moves = MoveRules(forward=True, skip=False, back=True, reopen=False, lose=False, hold=False)
    for index, item in enumerate(raw):
        path: PathKey = ("nodes", index)
        name = str(item["name"])
        is_final = item.get("kind") == "done"
        if name in seen:
            checker.error(path + ("name",), Msg("node '{name}' appears twice", name=name),
                          Msg("list every node once"))
            continue
        seen.add(name)
        if name not in field.choice_values():
            checker.error(path + ("name",), Msg("node '{name}' is not an option of {entity}.{field}", name=name,
                                                entity=entity.name, field=field.name),
                          Msg("{suggestion} Add it under {entity}.fields.{field}.options or correct the name.",
                              suggestion=did_you_mean(name, field.choice_values()), entity=entity.name,
                              field=field.name))
        if is_final != (index == len(raw) - 1):
            checker.error(path, Msg("the last node, and only the last, is the flow's end"),
                          Msg("give the last node kind: done (it has no role, sla or requires)"))
        role = item.get("role")
        if is_final:
            for key in ("role", "sla", "requires", "completed_by"):
                if key in item:
                    checker.error(path + (key,), Msg("the final node '{name}' takes no {key}", name=name, key=key),
                                  Msg("remove it"), key=True)
        elif role is None:
            checker.error(path, Msg("node '{name}' has no owner", name=name),
                          Msg("add role: <role> (the department that owns it)"))
        elif not checker.model.has_role(role):
            checker.error(path + ("role",), Msg("unknown role '{role}'", role=role),
                          did_you_mean(role, [spec.name for spec in checker.model.roles]))
        source = item.get("completed_by")
        if source is not None and not is_final:
            _check_source(checker, path + ("completed_by",), source, entity)
        sla = sla_name(handover, name) if "sla" in item and not is_final else None
        if sla is not None and len(sla) > MAX_SLA_NAME:
            checker.error(path + ("name",), Msg("flow and node names are too long together ({count} characters)",
                                                count=len(sla)),
                          Msg("keep '{name}' within {limit} characters", name=sla, limit=MAX_SLA_NAME))
        label = Label.of(item["label"]) if item.get("label") else next(
            (choice.label for choice in field.choices if choice.value == name), Label.of(name))
        nodes.append(HandoverNodeSpec(name, label, None if is_final else role, sla,
                                      str(item["sla"]) if sla else None, source if not is_final else None,
                                      is_final, checker.doc.where(path)))
        stages.append(StageSpec(name, label, StageKind.WON if is_final else StageKind.OPEN, index, handed_over,
                                moves=moves, location=checker.doc.where(path)))
        handed_over = tuple(built for position, wanted in enumerate(item.get("requires") or [])
                            if (built := build_requirement(checker, entity, wanted,
                                                           path + ("requires", position), position)))
    for value in field.choice_values():
        if value not in seen:
            checker.error(("nodes",), Msg("option '{value}' of {entity}.{field} is not a node of the flow",
                                          value=value, entity=entity.name, field=field.name),
                          Msg("add a node '{value}' (in its place in the order) or remove the option", value=value))
    return nodes, stages


def _check_source(checker: Checker, path: PathKey, source: str, entity: EntitySpec) -> None:
    if not checker.model.has_source(source):
        checker.error(path, Msg("unknown source '{source}'", source=source),
                      did_you_mean(source, [s.name for s in checker.model.sources]))
        return
    spec = checker.model.source(source)
    if spec.entity != entity.name:
        checker.error(path, Msg("source '{source}' delivers {delivered} records, not {entity}", source=source,
                                delivered=spec.entity, entity=entity.name),
                      Msg("point the source at entity: {entity}", entity=entity.name))
    elif spec.match is None:
        checker.error(path, Msg("source '{source}' creates records; completing a node needs one that finds the item",
                                source=source),
                      Msg("add match: <field> to the source (e.g. match: contract_no)"))


def _check_person(checker: Checker, path: PathKey, person: str) -> None:
    if not _PERSON.match(person):
        checker.error(path, Msg("cannot escalate to '{person}'", person=person),
                      Msg("name owner.manager, role:<role>, team:<team> or user:<name>"))
    elif person.startswith("role:") and not checker.model.has_role(person[5:]):
        checker.error(path, Msg("unknown role '{role}'", role=person[5:]),
                      did_you_mean(person[5:], [spec.name for spec in checker.model.roles]))


def _node_actions(checker: Checker, path: PathKey, handover: HandoverSpec, node: HandoverNodeSpec,
                  previous: HandoverNodeSpec | None, escalate_to: tuple[str, ...]
                  ) -> tuple[tuple[ActionSpec, ...], tuple[ActionSpec, ...]]:
    """At the warning both sides hear it (this node's role and the node that handed over); at
    100 % this node's role and `escalate_to`, and the item is tagged overdue for the lists."""
    location = checker.doc.where(path)
    tags = checker.model.entity(handover.entity).has_field("tags")
    tag: tuple[ActionSpec, ...] = (AddTagsAction("tags", (OVERDUE_TAG,), location),) if tags else ()
    if handover.channel is None:
        checker.error(path + ("sla",), Msg("a node's SLA warns and escalates through the flow's channel, and this "
                                           "flow has none"), Msg("add channel: <name> to the handover"))
        return (), tag
    sides = tuple(dict.fromkeys(f"role:{n.role}" for n in (node, previous) if n is not None and n.role))
    warn: ActionSpec = NotifyAction(handover.channel, sides, template=f"{node.sla}:warning", location=location)
    escalate: ActionSpec = NotifyAction(handover.channel, tuple(dict.fromkeys((f"role:{node.role}", *escalate_to))),
                                        template=f"{node.sla}:escalated", location=location)
    return (warn,), (escalate, *tag)


def _templates(handover: HandoverSpec, node: HandoverNodeSpec, entity: EntitySpec) -> list[MessageTemplateSpec]:
    title = f"{{{{ record.{entity.title_field} }}}}" if entity.title_field else "#{{ record.id }}"
    zh, en = node.label.text("zh"), node.label.text("en")
    flow_zh, flow_en = handover.label.text("zh"), handover.label.text("en")
    due = "{{ sla.due_at|datetime('%m-%d %H:%M', 'Asia/Shanghai') }}"
    return [
        MessageTemplateSpec(f"{node.sla}:warning", (("zh", f"交接提醒：{title}"), ("en", f"Handover reminder: {title}")), (
            ("zh", f"⏰ {flow_zh}：{title} 在“{zh}”已用时 {{{{ sla.percent }}}}%，截止 {due}。{{{{ url }}}}"),
            ("en", f"⏰ {flow_en}: {title} has used {{{{ sla.percent }}}}% of its time at {en}, due {due}. "
                   "{{ url }}"))),
        MessageTemplateSpec(f"{node.sla}:escalated", (("zh", f"交接超时：{title}"), ("en", f"Handover overdue: {title}")), (
            ("zh", f"🚨 {flow_zh}：{title} 在“{zh}”已超时（截止 {due}），已升级。{{{{ url }}}}"),
            ("en", f"🚨 {flow_en}: {title} is overdue at {en} (due {due}) and is escalated. {{{{ url }}}}"))),
    ]
