"""`approval:` documents: what needs approval, who approves it in which steps, and how long each
step may take.

```yaml
approval: sample_approval
label: {zh: 样品申请审批, en: Sample request approval}
entity: sample_request
channel: wecom_sales               # approvers get a message with a link to their task here
covers: [quantity, product]        # a change to these after approval needs a new approval
counts:                            # named counts of related records, read by the steps' `when`
  overdue_payments: {entity: order, via: account, where: "payment_overdue and payment_due >= today() - days(90)"}
steps:
  - name: manager
    approvers: [owner.manager]
    sla: {target: 4h, warn_at: [50]}          # reminder at 2 h; escalated to their manager at 4 h
  - name: finance                             # an extra step, only for customers who pay late
    approvers: [role:finance]
    when: "overdue_payments > 2"
  - parallel:                                 # steps that run side by side
      - {name: legal, approvers: [role:legal]}
      - {name: director, approvers: [user:zhou], mode: all}
on_requested: [{set: {approval_status: pending}}]
on_approved:  [{set: {approval_status: approved}}]
on_rejected:  [{set: {approval_status: rejected}}]
```

Approvals are records: declaring any approval adds two engine-managed entities, `approval`
(one request, its plan and outcome, owned by the requester) and `approval_task` (one per
approver and step, owned by the approver — "my pending approvals" is the list of one's own
pending tasks). Each step's `sla` becomes an SLA policy on `approval_task`, so reminders,
breaches and escalations run on the same SLA clocks and business calendars as every other SLA.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.metamodel.actions import ACTIONS, ActionSpec, AssignAction, NotifyAction, build_actions
from engine.metamodel.app import Settings
from engine.metamodel.calendars import calendar_ref
from engine.metamodel.channels import MessageTemplateSpec
from engine.metamodel.checks import Built, Checker, default_label
from engine.metamodel.clocks import ClockTrigger, StopCondition
from engine.metamodel.crossrefs import EXPRESSION_CONSTANTS, SYSTEM_FIELDS
from engine.metamodel.durations import DURATION_SCHEMA, checked_duration
from engine.metamodel.entities import (Choice, EntitySpec, FieldSpec, FieldType, FormSection, FormViewSpec, IndexSpec,
                                       ListViewSpec, OnDelete, SortKey)
from engine.metamodel.errors import NOWHERE, BlueprintError, Location, did_you_mean
from engine.metamodel.expressions import Expression, ExpressionSyntaxError, parse_expression
from engine.metamodel.labels import Label
from engine.metamodel.messages import Msg
from engine.metamodel.related import RELATED_SCHEMA, RelatedSpec, build_related
from engine.metamodel.schema import EXPRESSION, LABEL, NAME, either
from engine.metamodel.sla import PERCENTS, SlaSpec
from engine.metamodel.source import PathKey, SourceDocument
from engine.metamodel.vocabulary import Vocabulary

if TYPE_CHECKING:  # the Metamodel holds these specs; builders only read it
    from engine.metamodel.model import Metamodel

APPROVAL_ENTITY = "approval"
TASK_ENTITY = "approval_task"
MANAGED_ENTITIES = (APPROVAL_ENTITY, TASK_ENTITY)
APPROVER = re.compile(r"^(owner|owner\.manager|requester|requester\.manager|(role|user):[A-Za-z0-9_.@-]+)$")
DONE = ("approved", "rejected", "cancelled")   # a task or request in one of these is finished
MAX_SLA_NAME = 64


@dataclass(frozen=True, slots=True)
class ApprovalStepSpec:
    """One step: who approves (`any` one of them, or `all`), when it applies, how long it may take.
    Steps of the same `group` run side by side; groups run one after the other."""

    name: str
    label: Label
    approvers: tuple[str, ...]
    group: int
    mode: str = "any"
    when: Expression | None = None
    sla: str | None = None            # the generated SLA policy on approval_task, when the step has one
    location: Location = NOWHERE


@dataclass(frozen=True, slots=True)
class ApprovalSpec:
    name: str
    label: Label
    entity: str
    steps: tuple[ApprovalStepSpec, ...]
    covers: tuple[str, ...] = ()
    counts: tuple[tuple[str, RelatedSpec], ...] = ()
    channel: str | None = None
    on_requested: tuple[ActionSpec, ...] = ()
    on_approved: tuple[ActionSpec, ...] = ()
    on_rejected: tuple[ActionSpec, ...] = ()
    location: Location = NOWHERE

    def groups(self) -> tuple[tuple[ApprovalStepSpec, ...], ...]:
        """The steps, group by group, in order."""
        order = sorted({step.group for step in self.steps})
        return tuple(tuple(step for step in self.steps if step.group == group) for group in order)

    def step(self, name: str) -> ApprovalStepSpec:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"approval '{self.name}' has no step '{name}'")


_STEP: dict[str, Any] = {
    "type": "object", "required": ["name", "approvers"], "additionalProperties": False, "properties": {
        "name": NAME, "label": LABEL, "when": EXPRESSION, "mode": {"enum": ["any", "all"]},
        "approvers": either("array", {"type": "array", "items": {"type": "string"}, "minItems": 1},
                            {"type": "string"}),
        "sla": {"type": "object", "required": ["target"], "additionalProperties": False, "properties": {
            "target": DURATION_SCHEMA, "business_time": {"type": "boolean"}, "calendar": NAME,
            "warn_at": PERCENTS, "escalate_at": PERCENTS,
            "escalate_to": either("array", {"type": "array", "items": {"type": "string"}, "minItems": 1},
                                  {"type": "string"}),
            "on_warning": ACTIONS, "on_breach": ACTIONS, "on_escalation": ACTIONS}}}}
APPROVAL_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["approval", "entity", "steps"], "additionalProperties": False, "properties": {
        "approval": NAME, "label": LABEL, "description": LABEL, "entity": NAME, "channel": NAME,
        "covers": {"type": "array", "items": NAME, "uniqueItems": True},
        "counts": {"type": "object", "propertyNames": NAME, "additionalProperties": RELATED_SCHEMA},
        "steps": {"type": "array", "minItems": 1, "items": either(
            "object", {"if": {"required": ["parallel"]},
                       "then": {"type": "object", "required": ["parallel"], "additionalProperties": False,
                                "properties": {"parallel": {"type": "array", "minItems": 2, "items": _STEP}}},
                       "else": _STEP}, _STEP)},
        "on_requested": ACTIONS, "on_approved": ACTIONS, "on_rejected": ACTIONS}}


# --------------------------------------------------------------------------- the engine's entities

def _field(name: str, kind: FieldType, zh: str, en: str, **options: Any) -> FieldSpec:
    return FieldSpec(name, kind, Label.of({"zh": zh, "en": en}), **options)


def _status(options: tuple[tuple[str, str, str], ...]) -> FieldSpec:
    return _field("status", FieldType.CHOICE, "状态", "Status", is_required=True, default="pending",
                  choices=tuple(Choice(value, Label.of({"zh": zh, "en": en})) for value, zh, en in options))


def _approval_names(approvals: list[tuple[str, Label]]) -> FieldSpec:
    return _field("approval_name", FieldType.CHOICE, "审批类型", "Approval", is_required=True,
                  choices=tuple(Choice(name, label) for name, label in approvals))


_SUBJECT = (
    _field("subject_entity", FieldType.STRING, "审批对象类型", "Subject type", is_required=True, length=48),
    _field("subject_id", FieldType.INTEGER, "审批对象编号", "Subject id", is_required=True),
    _field("subject_title", FieldType.STRING, "审批对象", "Subject", length=200),
)


def approval_entities(approvals: list[tuple[str, Label]], settings: Settings) -> tuple[EntitySpec, EntitySpec]:
    """The two engine-managed entities every blueprint with approvals gets (see the module's
    docstring): their records are created and advanced by the engine, decided by approvers."""
    timezone = {"timezone": settings.timezone}
    request = EntitySpec(
        APPROVAL_ENTITY, Label.of({"zh": "审批单", "en": "Approval request"}),
        Label.of({"zh": "审批单", "en": "Approval requests"}), "name", (
            _field("name", FieldType.STRING, "审批事项", "Request", is_required=True, length=300),
            _approval_names(approvals), *_SUBJECT,
            _status((("pending", "审批中", "Pending"), ("approved", "已批准", "Approved"),
                     ("rejected", "已驳回", "Rejected"), ("cancelled", "已撤销", "Cancelled"))),
            _field("current_step", FieldType.STRING, "当前环节", "Current step", length=200),
            _field("requested_by", FieldType.USER, "申请人", "Requested by", on_delete=OnDelete.SET_NULL),
            _field("reason", FieldType.TEXT, "申请说明", "Why", length=2000),
            _field("covered", FieldType.JSON, "审批时的取值", "Values approved", is_readonly=True),
            _field("plan", FieldType.JSON, "审批流程", "Steps", is_readonly=True),
            _field("decided_at", FieldType.DATETIME, "审批完成时间", "Decided at", **timezone),
            _field("decision_comment", FieldType.TEXT, "审批意见", "Decision comment", length=2000),
        ),
        indexes=(IndexSpec(("subject_entity", "subject_id"), reason="approvals of a record"),),
        list_views=(
            ListViewSpec("default", Label.of({"zh": "全部审批单", "en": "All approval requests"}),
                         ("name", "approval_name", "status", "current_step", "requested_by", "created_at"),
                         ("approval_name", "status", "owner"), (SortKey("created_at", True),)),
            ListViewSpec("pending", Label.of({"zh": "审批中", "en": "Pending"}),
                         ("name", "approval_name", "current_step", "requested_by", "created_at"),
                         ("status", "approval_name", "owner"), (SortKey("created_at", True),)),
        ),
        form=FormViewSpec((FormSection(Label.of({"zh": "审批单", "en": "Request"}), (
            "name", "approval_name", "subject_title", "status", "current_step", "requested_by", "reason",
            "decided_at", "decision_comment")),)),  # `covered`: on the decision panel, by the subject's labels
        is_managed=True)
    task = EntitySpec(
        TASK_ENTITY, Label.of({"zh": "审批任务", "en": "Approval task"}),
        Label.of({"zh": "审批任务", "en": "Approval tasks"}), "name", (
            _field("name", FieldType.STRING, "审批事项", "Task", is_required=True, length=300),
            _field("approval", FieldType.LINK, "审批单", "Request", is_required=True, link_entity=APPROVAL_ENTITY,
                   on_delete=OnDelete.CASCADE),
            _approval_names(approvals),
            _field("step", FieldType.STRING, "环节", "Step", is_required=True, length=48),
            _field("step_label", FieldType.STRING, "审批环节", "Step", length=200), *_SUBJECT,
            _status((("pending", "待审批", "Pending"), ("approved", "已同意", "Approved"),
                     ("rejected", "已驳回", "Rejected"), ("cancelled", "无需处理", "No longer needed"))),
            _field("comment", FieldType.TEXT, "审批意见", "Comment", length=2000),
            _field("decided_at", FieldType.DATETIME, "处理时间", "Decided at", **timezone),
        ),
        list_views=(
            ListViewSpec("pending", Label.of({"zh": "我的待审批", "en": "My pending approvals"}),
                         ("name", "subject_title", "step_label", "created_at", "owner"),
                         ("owner", "status"), (SortKey("created_at"),)),
            ListViewSpec("default", Label.of({"zh": "全部审批任务", "en": "All approval tasks"}),
                         ("name", "step_label", "status", "owner", "decided_at", "created_at"),
                         ("approval_name", "status", "owner"), (SortKey("created_at", True),)),
        ),
        form=FormViewSpec((FormSection(Label.of({"zh": "审批", "en": "Decision"}), (
            "name", "subject_title", "step_label", "status", "comment", "decided_at")),)),
        is_managed=True)
    return request, task


def declared_approvals(documents: list[SourceDocument]) -> list[tuple[str, Label]]:
    """(name, label) of every approval document, for the engine's entities' choice of approvals."""
    found: dict[str, Label] = {}
    for doc in documents:
        name = doc.data.get("approval") if isinstance(doc.data, dict) else None
        if isinstance(name, str) and name not in found:
            found[name] = default_label(doc.data, name) if _is_label(doc.data.get("label")) else Label.of(name)
    return list(found.items())


def _is_label(value: Any) -> bool:
    return value is None or isinstance(value, str) or isinstance(value, dict) and all(
        isinstance(text, str) for text in value.values())


# --------------------------------------------------------------------------- messages

def _template(name: str, zh_title: str, en_title: str, zh: str, en: str) -> MessageTemplateSpec:
    return MessageTemplateSpec(name, (("zh", zh_title), ("en", en_title)), (("zh", zh), ("en", en)))


DEFAULT_TEMPLATES = (  # used unless a channels document declares a template of the same name
    _template("approval_requested", "待审批：{{ record.name }}", "Approval needed: {{ record.name }}",
              "📝 {{ record.subject_title }} 需要你审批（{{ record.step_label }}）。请打开处理：{{ url }}",
              "📝 {{ record.subject_title }} needs your approval ({{ record.step_label }}). Open it: {{ url }}"),
    _template("approval_reminder", "审批提醒：{{ record.name }}", "Approval reminder: {{ record.name }}",
              "⏰ {{ record.subject_title }} 仍在等你审批（{{ record.step_label }}，已用时 {{ sla.percent }}%，"
              "截止 {{ sla.due_at|datetime('%m-%d %H:%M', 'Asia/Shanghai') }}）。{{ url }}",
              "⏰ {{ record.subject_title }} still waits for your approval ({{ record.step_label }}, "
              "{{ sla.percent }}% of the time used, due {{ sla.due_at|datetime('%m-%d %H:%M', 'Asia/Shanghai') }}). "
              "{{ url }}"),
    _template("approval_escalated", "审批超时升级：{{ record.name }}", "Approval escalated: {{ record.name }}",
              "🚨 {{ record.subject_title }} 的审批（{{ record.step_label }}）已超时，审批人 {{ owner.display_name }}"
              " 未处理，已转交 {{ manager.display_name }}。{{ url }}",
              "🚨 The approval of {{ record.subject_title }} ({{ record.step_label }}) is overdue: "
              "{{ owner.display_name }} did not decide; it goes to {{ manager.display_name }}. {{ url }}"),
    _template("approval_decided", "审批结果：{{ record.name }}", "Approval decided: {{ record.name }}",
              "{{ '✅ 已批准' if record.status == 'approved' else '❌ 已驳回' }}：{{ record.name }}"
              "{% if record.decision_comment %}（{{ record.decision_comment }}）{% endif %}。{{ url }}",
              "{{ '✅ Approved' if record.status == 'approved' else '❌ Rejected' }}: {{ record.name }}"
              "{% if record.decision_comment %} ({{ record.decision_comment }}){% endif %}. {{ url }}"),
)


# --------------------------------------------------------------------------- the builder

def build_approvals(documents: list[SourceDocument], model: Metamodel, vocabulary: Vocabulary) -> Built:
    """ApprovalSpecs, each step's SLA as a policy on approval_task, and the default message
    templates the approvals send (unless the blueprint declares its own of the same name)."""
    errors: list[BlueprintError] = []
    templates = model.templates + tuple(template for template in DEFAULT_TEMPLATES
                                        if not model.has_template(template.name))
    model = dataclasses.replace(model, templates=templates)
    drafts: dict[str, tuple[Checker, ApprovalSpec, dict[str, Any]]] = {}
    for doc in documents:
        checker = Checker(doc, model, vocabulary, errors)
        name = doc.data["approval"]
        if name in drafts:
            checker.error(("approval",), Msg("approval '{name}' is declared twice", name=name),
                          Msg("the first is at {place}", place=drafts[name][1].location))
            continue
        draft = _build_approval(checker, doc.data)
        if draft is not None:
            drafts[name] = (checker, draft, doc.data)
    # actions may request another approval: built once every approval's name is known
    known = dataclasses.replace(model, approvals=tuple(draft for _, draft, _ in drafts.values()))
    approvals, slas = [], []
    for checker, draft, data in drafts.values():
        checker.model = known
        entity = known.entity(draft.entity)
        approvals.append(dataclasses.replace(
            draft, on_requested=build_actions(checker, ("on_requested",), data.get("on_requested") or [], entity),
            on_approved=build_actions(checker, ("on_approved",), data.get("on_approved") or [], entity),
            on_rejected=build_actions(checker, ("on_rejected",), data.get("on_rejected") or [], entity)))
        slas.extend(_step_slas(checker, draft, data, known))
    return dataclasses.replace(model, approvals=tuple(approvals), slas=model.slas + tuple(slas), templates=templates), errors


def _build_approval(checker: Checker, data: dict[str, Any]) -> ApprovalSpec | None:
    name = data["approval"]
    entity = checker.entity(("entity",), data["entity"], Msg("approval '{name}'", name=name))
    if entity is None:
        return None
    if entity.is_managed:
        checker.error(("entity",), Msg("approval '{name}' cannot approve {entity} records", name=name, entity=entity.name),
                      Msg("approval requests and tasks are the engine's own; name the record that needs approval"))
        return None
    channel = data.get("channel")
    if channel is not None and not checker.model.has_channel(channel):
        checker.error(("channel",), Msg("unknown channel '{name}'", name=channel),
                      Msg("{suggestion} Channels are declared in a channels: document.",
                          suggestion=did_you_mean(channel, [spec.name for spec in checker.model.channels])))
    covers = tuple(name for index, name in enumerate(data.get("covers") or [])
                   if checker.field(("covers", index), entity, name, Msg("covered field")) is not None)
    counts = tuple((count, related) for count, raw in (data.get("counts") or {}).items()
                   if (related := build_related(checker, ("counts", count), raw, entity)) is not None)
    for count, _ in counts:
        if entity.has_field(count) or count in SYSTEM_FIELDS:
            checker.error(("counts", count), Msg("count '{name}' has the name of a field of {entity}",
                                                 name=count, entity=entity.name),
                          Msg("give the count a name of its own, e.g. overdue_payments"), key=True)
    steps = _build_steps(checker, name, data["steps"], entity, {count for count, _ in counts})
    return ApprovalSpec(name, default_label(data, name), entity.name, steps, covers, counts, channel,
                        location=checker.doc.where_key(("approval",)))


def _build_steps(checker: Checker, approval: str, raw: list[dict[str, Any]], entity: EntitySpec,
                 counts: set[str]) -> tuple[ApprovalStepSpec, ...]:
    steps: list[ApprovalStepSpec] = []
    for group, item in enumerate(raw):
        members = [(item_path, member) for position, member in enumerate(item["parallel"])
                   for item_path in [("steps", group, "parallel", position)]] if "parallel" in item \
            else [(("steps", group), item)]
        for path, member in members:
            if any(step.name == member["name"] for step in steps):
                checker.error(path + ("name",), Msg("step '{name}' appears twice", name=member["name"]),
                              Msg("give each step its own name"))
                continue
            steps.append(_build_step(checker, approval, path, member, group, entity, counts))
    return tuple(steps)


def _build_step(checker: Checker, approval: str, path: PathKey, raw: dict[str, Any], group: int,
                entity: EntitySpec, counts: set[str]) -> ApprovalStepSpec:
    approvers = tuple(raw["approvers"]) if isinstance(raw["approvers"], list) else (raw["approvers"],)
    roles = [spec.name for spec in checker.model.roles]
    for index, person in enumerate(approvers):
        where = path + ("approvers", index) if isinstance(raw["approvers"], list) else path + ("approvers",)
        if not APPROVER.match(person):
            checker.error(where, Msg("unknown approver '{name}'", name=person),
                          Msg("write owner.manager, owner, requester.manager, requester, role:NAME or user:NAME"))
        elif person.startswith("role:") and person[5:] not in roles:
            checker.error(where, Msg("unknown role '{name}'", name=person[5:]),
                          Msg("{suggestion} Roles are declared in a roles: document.",
                              suggestion=did_you_mean(person[5:], roles)))
    when = _step_condition(checker, path + ("when",), raw["when"], entity, counts) if raw.get("when") else None
    return ApprovalStepSpec(raw["name"], default_label(raw, raw["name"]), approvers, group, raw.get("mode", "any"),
                            when, sla_name(approval, raw["name"]) if raw.get("sla") else None, checker.doc.where(path))


def _step_condition(checker: Checker, path: PathKey, source: str, entity: EntitySpec,
                    counts: set[str]) -> Expression | None:
    """A step's `when`: an expression over the record's fields and the approval's counts."""
    try:
        expression = parse_expression(source, checker.doc.where(path))
    except ExpressionSyntaxError as exc:
        checker.error(path, Msg("bad expression '{source}': {problem}", source=source, problem=exc),
                      Msg("see docs/expressions.md"))
        return None
    known = set(entity.field_names()) | set(SYSTEM_FIELDS) | counts
    for name in sorted(expression.names - known - EXPRESSION_CONSTANTS):
        checker.error(path, Msg("expression uses unknown name '{name}'", name=name),
                      Msg("{suggestion} A step's condition reads the fields of {entity} and the approval's counts.",
                          suggestion=did_you_mean(name, known), entity=entity.name))
    for function in sorted(expression.functions - set(checker.functions)):
        checker.error(path, Msg("expression calls unknown function '{name}'", name=function),
                      did_you_mean(function, checker.functions))
    return expression


def sla_name(approval: str, step: str) -> str:
    return f"approval:{approval}:{step}"


def _step_slas(checker: Checker, approval: ApprovalSpec, data: dict[str, Any], model: Metamodel) -> list[SlaSpec]:
    """Each step's `sla:` as an SLA policy on approval_task: started when the step's task is
    created, stopped when it is decided; by default a reminder at each warning and, at the
    breach, a message to the approver and their manager and the task reassigned upwards."""
    task = model.entity(TASK_ENTITY)
    slas = []
    steps = [(path, member) for group, item in enumerate(data["steps"])
             for path, member in ([(("steps", group, "parallel", position), member)
                                   for position, member in enumerate(item["parallel"])]
                                  if "parallel" in item else [(("steps", group), item)])]
    for path, raw in steps:
        body = raw.get("sla")
        if body is None:
            continue
        where = path + ("sla",)
        name = sla_name(approval.name, raw["name"])
        if len(name) > MAX_SLA_NAME:
            checker.error(where, Msg("approval and step names are too long together ({count} characters)",
                                     count=len(name)),
                          Msg("keep '{name}' within {limit} characters", name=name, limit=MAX_SLA_NAME))
            continue
        business_time = bool(body.get("business_time", True))
        warn_at, escalate_at = tuple(body.get("warn_at", (50,))), tuple(body.get("escalate_at", ()))
        if any(not 0 < p < 100 for p in warn_at):
            checker.error(where + ("warn_at",), Msg("warnings are percentages between 1 and 99"))
        if any(p <= 100 for p in escalate_at):
            checker.error(where + ("escalate_at",), Msg("escalations come after the breach: percentages above 100"))
        actions = {key: build_actions(checker, where + (key,), body[key], task)
                   for key in ("on_warning", "on_breach", "on_escalation") if key in body}
        defaults = _default_step_actions(checker, where, approval, body)
        applies = parse_expression(f"approval_name == '{approval.name}' and step == '{raw['name']}'",
                                   checker.doc.where(where))
        slas.append(SlaSpec(
            name, Label.of({"zh": f"审批时效 · {raw['name']}", "en": f"Approval step {raw['name']}"})
            if "label" not in raw else Label.of(raw["label"]), TASK_ENTITY, (),
            checked_duration(checker, where + ("target",), body["target"]), ClockTrigger("created"), applies,
            business_time=business_time, calendar=calendar_ref(checker, where, body.get("calendar"), business_time),
            stops=(StopCondition("status_in", field="status", values=DONE),), warn_at=warn_at, escalate_at=escalate_at,
            on_warning=actions.get("on_warning", defaults[0]), on_breach=actions.get("on_breach", defaults[1]),
            on_escalation=actions.get("on_escalation", ()), location=checker.doc.where(where)))
    return slas


def _default_step_actions(checker: Checker, path: PathKey, approval: ApprovalSpec,
                          body: dict[str, Any]) -> tuple[tuple[ActionSpec, ...], tuple[ActionSpec, ...]]:
    """The reminder (at each warning) and the escalation (at the breach) a step's SLA gets unless
    it declares on_warning / on_breach itself."""
    escalate_to = body.get("escalate_to", ["owner.manager"])
    escalate_to = tuple(escalate_to) if isinstance(escalate_to, list) else (escalate_to,)
    for index, person in enumerate(escalate_to):
        if not re.match(r"^(owner\.manager|(user:)?[A-Za-z0-9_.@-]+)$", person):
            checker.error(path + ("escalate_to", index), Msg("cannot escalate to '{name}'", name=person),
                          Msg("name a user (user:zhou) or owner.manager (the approver's manager)"))
    location = checker.doc.where(path)
    reassign: ActionSpec = AssignAction(to=escalate_to, reassign=True, location=location)
    if approval.channel is None:
        if "on_warning" not in body and "on_breach" not in body:
            checker.error(path, Msg("a step's SLA reminds and escalates through the approval's channel, "
                                    "and this approval has none"),
                          Msg("add channel: <name> to the approval, or give the sla its own on_warning / on_breach"),
                          severity="warning")
        return (), (reassign,)
    remind: ActionSpec = NotifyAction(approval.channel, ("owner",), template="approval_reminder", location=location)
    escalate: ActionSpec = NotifyAction(approval.channel, ("owner", "owner.manager"), template="approval_escalated",
                                        location=location)
    return (remind,), (escalate, reassign)


def step_sla(model_slas: tuple[SlaSpec, ...], approval: str, step: str) -> SlaSpec | None:
    """The SLA policy of one approval step, if it has one."""
    name = sla_name(approval, step)
    return next((spec for spec in model_slas if spec.name == name), None)

