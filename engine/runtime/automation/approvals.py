"""Approvals at work: requests opened, tasks given to approvers, decisions carried through.

`ApprovalDesk` opens a request (an `approval` record) for a record, works out its plan
(engine/rules/approvals.py: which steps apply, e.g. finance only for customers with more than
two overdue payments), and gives each step's approvers a task (an `approval_task` record each,
owned by the approver — "my pending approvals" is one's own pending tasks). Every record is
written through RecordService, so requests and tasks have their own timeline, permissions and
SLA clocks (a step's `sla` is an SLA policy on approval_task: reminders, breach, escalation).

As a write gate it guards the tasks: only the approver (or an administrator) decides, once, and
a rejection says why. As a write observer it carries a decision through in the same
transaction: the step done, the next group of steps started, or the request approved or
rejected — its `on_approved` / `on_rejected` actions run on the record through the one action
executor, and the requester hears about it on the approval's channel.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from engine.metamodel import Metamodel
from engine.metamodel.actions import NotifyAction
from engine.metamodel.approvals import APPROVAL_ENTITY, DONE, TASK_ENTITY, ApprovalSpec, ApprovalStepSpec
from engine.rules.approvals import (Person, StepOutcome, choose_approvers, next_group, plan_from_json, plan_steps,
                                    step_outcome, steps_of_group)
from engine.rules.expressions import Evaluator
from engine.rules.funnels import ApprovalFact
from engine.rules.rules import Change
from engine.runtime.automation.actions import ActionExecutor
from engine.runtime.automation.related import RelatedReader
from engine.runtime.records.actors import Actor
from engine.runtime.records.errors import RecordError, ValidationFailed
from engine.runtime.records.events import EventKind, append_event, value_json
from engine.runtime.records.fieldkinds import FieldError
from engine.runtime.records.lifecycle import WriteContext
from engine.runtime.records.permissions import Forbidden
from engine.runtime.records.service import RecordService
from engine.runtime.records.values import expression_values
from engine.runtime.storage.database import Database
from engine.runtime.storage.prepared import Prepared
from engine.runtime.storage.tables import Schema

APPROVALS = Actor(None, "approvals", role="system", is_system=True)
DECISIONS = {"approve": "approved", "reject": "rejected", "approved": "approved", "rejected": "rejected"}
_TASK_FIELDS_A_USER_CHANGES = frozenset({"status", "comment", "owner", "decided_at"})


class ApprovalRefused(RecordError):
    """A request that is not needed now (one is pending, or one granted still covers the record),
    or a decision that cannot be taken; in Chinese too."""

    status = 409
    code = "approval_refused"

    def __init__(self, message: str, zh: str, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message, field=field, **details)
        self.zh = zh

    def text(self, lang: str) -> str:
        return self.zh if lang == "zh" else self.message

    def as_dict(self, lang: str | None = None) -> dict[str, Any]:
        body = super().as_dict(lang)
        body["message"] = self.text(lang or "en")
        return body


class ApprovalDesk:
    """The blueprint's approvals: requests, tasks and decisions (a write gate and observer too)."""

    def __init__(self, model: Metamodel, schema: Schema, db: Database, records: RecordService, evaluator: Evaluator,
                 executor: ActionExecutor, related: RelatedReader) -> None:
        self.model = model
        self.schema = schema
        self.db = db
        self.records = records
        self.evaluator = evaluator
        self.executor = executor
        self.related = related
        self._specs = {spec.name: spec for spec in model.approvals}
        self._subjects = {spec.entity for spec in model.approvals}
        if model.has_entity(APPROVAL_ENTITY):
            requests, tasks = schema.table(APPROVAL_ENTITY), schema.table(TASK_ENTITY)
            self._latest = Prepared(sa.select(  # what a gate asks of the latest request: not its plan
                requests.c.id, requests.c.status, requests.c.covered, requests.c.current_step,
                requests.c.decision_comment, requests.c.decided_at).where(
                requests.c.approval_name == sa.bindparam("name"), requests.c.subject_entity == sa.bindparam("entity"),
                requests.c.subject_id == sa.bindparam("id")).order_by(requests.c.id.desc()).limit(1))
            self._tasks = Prepared(sa.select(tasks.c.id, tasks.c.step, tasks.c.status, tasks.c.owner)
                                   .where(tasks.c.approval == sa.bindparam("approval")).order_by(tasks.c.id))

    # -- what the gates and pages ask -------------------------------------------------------------
    def fact(self, connection: sa.Connection, name: str, entity: str, record: Mapping[str, Any]) -> ApprovalFact:
        """The latest request of approval `name` for `record`, and whether it still covers its values."""
        if record.get("id") is None:
            return ApprovalFact()
        row = self._latest.mapping(connection, {"name": name, "entity": entity, "id": record["id"]})
        if row is None:
            return ApprovalFact()
        spec = self._specs[name]
        changed = self._changed_since(spec, row.get("covered") or {}, record)
        waiting: tuple[str, ...] = ()
        if row["status"] == "pending":
            owners = [task.owner for task in self._tasks.rows(connection, {"approval": row["id"]})
                      if task.status == "pending"]
            waiting = tuple(self._names(connection, owners))
        decided = row.get("decided_at")
        return ApprovalFact(row["id"], row["status"], not changed, waiting, str(row.get("current_step") or ""),
                            str(row.get("decision_comment") or ""), changed,
                            decided.isoformat() if isinstance(decided, dt.datetime) else None)

    def requests_of(self, entity: str, record_id: int) -> list[dict[str, Any]]:
        """Every request for one record, newest first (for its record page)."""
        table = self.schema.table(APPROVAL_ENTITY)
        with self.db.read() as connection:
            rows = connection.execute(sa.select(table).where(table.c.subject_entity == entity,
                                                             table.c.subject_id == record_id)
                                      .order_by(table.c.id.desc())).mappings().all()
        return [dict(row) for row in rows]

    def pending_count(self, user_id: int) -> int:
        """How many tasks wait for this user ("my pending approvals")."""
        tasks = self.schema.table(TASK_ENTITY)
        with self.db.read() as connection:
            return int(connection.execute(sa.select(sa.func.count()).select_from(tasks).where(
                tasks.c.owner == user_id, tasks.c.status == "pending")).scalar_one())

    def snapshot(self, spec: ApprovalSpec, record: Mapping[str, Any]) -> dict[str, Any]:
        entity = self.model.entity(spec.entity)
        return {name: value_json(entity, name, record.get(name), self.schema.kinds) for name in spec.covers}

    def _changed_since(self, spec: ApprovalSpec, covered: Mapping[str, Any], record: Mapping[str, Any]) -> tuple[str, ...]:
        now = self.snapshot(spec, record)
        return tuple(name for name in spec.covers if covered.get(name) != now.get(name))

    # -- requesting --------------------------------------------------------------------------------
    def request(self, entity: str, record_id: int, name: str, *, actor: Actor, reason: str | None = None,
                now: dt.datetime | None = None) -> dict[str, Any]:
        """Open a request of approval `name` for one record, as `actor` (who needs update rights on
        it). Refused (409) while one is pending or one granted still covers the record."""
        spec = self._spec_for(entity, name)
        when = now or self.records.clock.now()
        with self.db.write() as connection:
            subject = self.records.find(connection, entity, record_id)
            if subject is None:
                raise RecordError(f"{entity} {record_id} does not exist", field="id")
            self.records.access.require(actor, entity, "update")
            self.records.access.check_record(connection, actor, entity, "update", subject)
            self._refuse_if_not_needed(connection, spec, subject)
            return self._open(connection, spec, subject, actor, reason, when)

    def request_within(self, connection: sa.Connection, entity: str, record: Mapping[str, Any], name: str,
                       now: dt.datetime, *, actor: Actor, reason: str | None = None) -> None:
        """The `request_approval` action: open a request unless it is not needed (then nothing happens)."""
        spec = self._spec_for(entity, name)
        try:
            self._refuse_if_not_needed(connection, spec, record)
        except ApprovalRefused:
            return
        self._open(connection, spec, record, actor, reason, now)

    def _spec_for(self, entity: str, name: str) -> ApprovalSpec:
        spec = self._specs.get(name)
        if spec is None or spec.entity != entity:
            mine = [spec.name for spec in self.model.approvals_for(entity)]
            raise RecordError(f"{entity} has no approval '{name}' (declared: {', '.join(mine) or 'none'})",
                              field="approval")
        return spec

    def _refuse_if_not_needed(self, connection: sa.Connection, spec: ApprovalSpec, record: Mapping[str, Any]) -> None:
        fact = self.fact(connection, spec.name, spec.entity, record)
        if fact.status == "pending" and fact.covers_current:
            raise ApprovalRefused(f"the {spec.label.text('en')} is already pending (request {fact.approval_id})",
                                  f"{spec.label.text('zh')}已在审批中（审批单 {fact.approval_id}）", field="approval",
                                  approval_id=fact.approval_id)
        if fact.status == "approved" and fact.covers_current:
            raise ApprovalRefused(f"the {spec.label.text('en')} was granted for these values already",
                                  f"{spec.label.text('zh')}已批准，无需重复申请", field="approval",
                                  approval_id=fact.approval_id)
        if fact.status == "pending":  # pending for values the record no longer has: superseded
            self._close(connection, fact.approval_id or 0, "cancelled", "superseded by a new request", record)

    def _open(self, connection: sa.Connection, spec: ApprovalSpec, subject: Mapping[str, Any], actor: Actor,
              reason: str | None, now: dt.datetime) -> dict[str, Any]:
        entity = self.model.entity(spec.entity)
        requester = actor.id if actor.id is not None else subject.get("owner")
        values = expression_values(entity, subject)
        values.update({name: self.related.count(connection, related, entity.name, subject)
                       for name, related in spec.counts})
        plan = plan_steps(spec, values, self.evaluator.evaluate)
        title = str(subject.get(entity.title_field) or f"{entity.label.text('zh')} #{subject['id']}")
        request = self.records.create(APPROVAL_ENTITY, {
            "name": f"{spec.label.text('zh')} · {title}", "approval_name": spec.name, "subject_entity": entity.name,
            "subject_id": subject["id"], "subject_title": title[:200], "status": "pending",
            "requested_by": requester, "owner": requester, "reason": reason,
            "covered": self.snapshot(spec, subject), "plan": [step.as_json() for step in plan]},
            actor=APPROVALS, within=connection).record
        append_event(connection, self.schema, entity=entity.name, record_id=subject["id"],
                     kind=EventKind.APPROVAL_REQUESTED, actor_id=actor.id, at=now,
                     data={"approval": spec.name, "request": request["id"],
                           "steps": [step.step for step in plan if step.applies]})
        self.executor.run(connection, entity.name, dict(subject), spec.on_requested, now,
                          key=f"approval:{request['id']}:requested", context=self._context(spec, request))
        group = next_group(plan, None)
        if group is None:
            return self._close(connection, request["id"], "approved", "no step applied", subject)
        self._start(connection, spec, request, plan, group, subject, now)
        return self.records.find(connection, APPROVAL_ENTITY, request["id"]) or request

    # -- steps and tasks ---------------------------------------------------------------------------------
    def _start(self, connection: sa.Connection, spec: ApprovalSpec, request: Mapping[str, Any], plan: Any,
               group: int, subject: Mapping[str, Any], now: dt.datetime) -> None:
        """Give every applying step of `group` to its approvers: one task each."""
        labels = []
        for name in steps_of_group(plan, group):
            step = spec.step(name)
            choice = choose_approvers(self._candidates(connection, step, subject, request.get("requested_by")),
                                      request.get("requested_by"), self._admins(connection))
            if not choice.people:
                raise ApprovalRefused(f"nobody can approve step '{step.label.text('en')}' of the "
                                      f"{spec.label.text('en')}: " + "; ".join(choice.notes),
                                      f"{spec.label.text('zh')}的“{step.label.text('zh')}”环节无人可以审批，请联系管理员",
                                      field="approval")
            for person in choice.people:
                self._give(connection, spec, step, request, person, now)
            labels.append(step.label.text("zh"))
            append_event(connection, self.schema, entity=APPROVAL_ENTITY, record_id=request["id"],
                         kind=EventKind.APPROVAL_STEP, actor_id=None, at=now,
                         data={"step": step.name, "to": [person.username for person in choice.people],
                               "notes": list(choice.notes)})
        self.records.update(APPROVAL_ENTITY, request["id"], {"current_step": "、".join(labels)}, actor=APPROVALS,
                            within=connection)

    def _give(self, connection: sa.Connection, spec: ApprovalSpec, step: ApprovalStepSpec,
              request: Mapping[str, Any], person: Person, now: dt.datetime) -> None:
        task = self.records.create(TASK_ENTITY, {
            "name": f"{request['name']} · {step.label.text('zh')}"[:300], "approval": request["id"],
            "approval_name": spec.name, "step": step.name, "step_label": step.label.text("zh"),
            "subject_entity": request["subject_entity"], "subject_id": request["subject_id"],
            "subject_title": request.get("subject_title"), "status": "pending", "owner": person.id},
            actor=APPROVALS, within=connection).record
        if spec.channel is not None:
            self.executor.run(connection, TASK_ENTITY, task, (NotifyAction(spec.channel, ("owner",),
                                                                           template="approval_requested"),),
                              now, key=f"approval_task:{task['id']}:given", context=self._context(spec, request))

    def _candidates(self, connection: sa.Connection, step: ApprovalStepSpec, subject: Mapping[str, Any],
                    requester: int | None) -> list[Person]:
        users = self.schema.users
        found: list[Any] = []
        for approver in step.approvers:
            who, _, rest = approver.partition(".")
            if approver.startswith(("role:", "user:")):
                kind, name = approver.split(":", 1)
                column = users.c.role if kind == "role" else users.c.username
                found.extend(connection.execute(sa.select(users).where(column == name).order_by(users.c.id)))
                continue
            person = subject.get("owner") if who == "owner" else requester
            if rest == "manager" and person is not None:
                person = connection.execute(sa.select(users.c.manager_id).where(users.c.id == person)).scalar()
            if person is not None:
                found.extend(connection.execute(sa.select(users).where(users.c.id == person)))
        return [_person(row) for row in found]

    def _admins(self, connection: sa.Connection) -> list[Person]:
        users = self.schema.users
        roles = [role.name for role in self.model.roles if role.is_admin] or ["admin"]
        return [_person(row) for row in connection.execute(sa.select(users).where(users.c.role.in_(roles))
                                                           .order_by(users.c.id))]

    def _names(self, connection: sa.Connection, ids: Sequence[int | None]) -> list[str]:
        users = self.schema.users
        wanted = [user for user in ids if user is not None]
        if not wanted:
            return []
        rows = {row.id: row.display_name or row.username for row in connection.execute(
            sa.select(users.c.id, users.c.username, users.c.display_name).where(users.c.id.in_(wanted)))}
        return [rows.get(user, f"#{user}") for user in wanted]

    # -- deciding ------------------------------------------------------------------------------------------
    def decide(self, task_id: int, decision: str, comment: str | None, *, actor: Actor,
               expected_version: int | None = None) -> dict[str, Any]:
        """Approve or reject one task as its approver; the rest follows in the same write."""
        status = DECISIONS.get(decision)
        if status is None:
            raise ValidationFailed([FieldError("decision", "invalid", "decision: write approve or reject",
                                               "请选择同意或驳回")])
        return self.records.update(TASK_ENTITY, task_id, {"status": status, "comment": comment or None}, actor=actor,
                                   expected_version=expected_version)

    # -- the write gate: who may change approval records, and how ------------------------------------------
    def check(self, context: WriteContext) -> None:
        name = context.entity.name
        if name not in (APPROVAL_ENTITY, TASK_ENTITY) or context.actor.is_system or context.change is not Change.UPDATED:
            return
        before, after = context.before or {}, context.after
        changed = {field for field in (*context.entity.field_names(), "owner") if before.get(field) != after.get(field)}
        if name == APPROVAL_ENTITY:
            self._check_withdrawal(context, changed)
            return
        if changed - _TASK_FIELDS_A_USER_CHANGES:
            field = sorted(changed - _TASK_FIELDS_A_USER_CHANGES)[0]
            raise ValidationFailed([FieldError(field, "read_only", f"{field}: a task keeps its request's data; "
                                               "only the decision and its comment change", "审批任务只能填写审批结果和意见")])
        if before.get("status") != "pending" and changed:
            raise ValidationFailed([FieldError("status", "decided", "status: this task is decided already",
                                               "该审批任务已处理，不能再修改")])
        if "status" in changed:
            self._check_decision(context)

    def _check_decision(self, context: WriteContext) -> None:
        before, after, actor = context.before or {}, context.after, context.actor
        if after.get("status") not in ("approved", "rejected"):
            raise ValidationFailed([FieldError("status", "invalid", "status: decide with approved or rejected",
                                               "请选择同意或驳回")])
        if before.get("owner") != actor.id and not self._is_admin(actor):
            raise Forbidden("only the approver this task is given to decides it (or an administrator)", field="status",
                            permission="update", entity=TASK_ENTITY)
        if after.get("status") == "rejected" and not str(after.get("comment") or "").strip():
            raise ValidationFailed([FieldError("comment", "required", "comment: say why it is rejected",
                                               "驳回时请填写驳回原因")])

    def _check_withdrawal(self, context: WriteContext, changed: set[str]) -> None:
        """The requester may withdraw a pending request (status → cancelled); nothing else changes by hand."""
        before, after = context.before or {}, context.after
        withdrawing = changed <= {"status", "decision_comment", "decided_at", "current_step"} and after.get("status") == "cancelled" \
            and before.get("status") == "pending"
        if not withdrawing:
            raise ValidationFailed([FieldError(sorted(changed)[0] if changed else None, "read_only",
                                               "an approval request changes through its tasks' decisions; its requester "
                                               "may withdraw it (status cancelled)", "审批单只能通过审批任务处理，申请人可撤销")])
        if before.get("owner") != context.actor.id and not self._is_admin(context.actor):
            raise Forbidden("only the requester withdraws a request", field="status", permission="update",
                            entity=APPROVAL_ENTITY)

    def _is_admin(self, actor: Actor) -> bool:
        return actor.role == "admin" or bool(actor.role and self.model.has_role(actor.role)
                                             and self.model.role(actor.role).is_admin)

    # -- the write observer: carry decisions through ---------------------------------------------------------
    def before_write(self, context: WriteContext) -> Mapping[str, Any]:
        """A decided task, or a withdrawn request, is stamped with when it was decided."""
        if context.entity.name not in (TASK_ENTITY, APPROVAL_ENTITY) or context.change is not Change.UPDATED \
                or context.before is None or context.before.get("status") != "pending":
            return {}
        if context.entity.name == TASK_ENTITY and context.after.get("status") in DONE:
            return {"decided_at": context.now}
        if context.after.get("status") == "cancelled" and not context.actor.is_system:
            return {"decided_at": context.now, "current_step": None}
        return {}

    def after_write(self, context: WriteContext) -> None:
        name = context.entity.name
        if context.change is not Change.UPDATED or context.before is None:
            if name in self._subjects and context.change is Change.DELETED:
                self._close_all(context)
            return
        was, now_status = context.before.get("status"), context.after.get("status")
        if name == TASK_ENTITY and was == "pending" and now_status in ("approved", "rejected"):
            self._advance(context.connection, context.after, context.now)
        elif name == APPROVAL_ENTITY and was == "pending" and now_status == "cancelled" and not context.actor.is_system:
            self._cancel_tasks(context.connection, int(context.after["id"]))
            self._after_close(context.connection, context.after, "cancelled", context.now)
        elif name in self._subjects:
            self._supersede_stale(context)

    def _advance(self, connection: sa.Connection, task: Mapping[str, Any], now: dt.datetime) -> None:
        request = self.records.find(connection, APPROVAL_ENTITY, int(task["approval"]))
        if request is None or request["status"] != "pending":
            return
        spec = self._specs.get(str(request["approval_name"]))
        if spec is None:
            return
        subject = self.records.find(connection, str(request["subject_entity"]), int(request["subject_id"])) or {}
        if task["status"] == "rejected":
            self._cancel_tasks(connection, request["id"])
            self._close(connection, request["id"], "rejected", str(task.get("comment") or ""), subject)
            return
        tasks = self._tasks.rows(connection, {"approval": request["id"]})
        step = spec.step(str(task["step"]))
        if step_outcome(step, [t.status for t in tasks if t.step == step.name]) is not StepOutcome.APPROVED:
            return
        self._cancel_tasks(connection, request["id"], step=step.name)  # mode any: the others need not act
        plan = plan_from_json(request.get("plan"))
        done = all(step_outcome(spec.step(name), [t.status for t in tasks if t.step == name]) is StepOutcome.APPROVED
                   for name in steps_of_group(plan, step.group))
        if not done:
            return
        group = next_group(plan, step.group)
        if group is None:
            self._close(connection, request["id"], "approved", str(task.get("comment") or ""), subject)
        else:
            self._start(connection, spec, request, plan, group, subject, now)

    def _cancel_tasks(self, connection: sa.Connection, request_id: int, *, step: str | None = None) -> None:
        for task in self._tasks.rows(connection, {"approval": request_id}):
            if task.status == "pending" and (step is None or task.step == step):
                self.records.update(TASK_ENTITY, task.id, {"status": "cancelled"}, actor=APPROVALS, within=connection)

    def _close(self, connection: sa.Connection, request_id: int, status: str, comment: str,
               subject: Mapping[str, Any]) -> dict[str, Any]:
        now = self.records.clock.now()
        request = self.records.update(APPROVAL_ENTITY, request_id, {
            "status": status, "decided_at": now, "decision_comment": comment or None, "current_step": None},
            actor=APPROVALS, within=connection)
        self._after_close(connection, request, status, now, subject)
        return request

    def _after_close(self, connection: sa.Connection, request: Mapping[str, Any], status: str, now: dt.datetime,
                     subject: Mapping[str, Any] | None = None) -> None:
        """The record hears the outcome: its event, the approval's actions, the requester's message."""
        spec = self._specs.get(str(request["approval_name"]))
        if spec is None:
            return
        if subject is None:
            subject = self.records.find(connection, str(request["subject_entity"]), int(request["subject_id"]))
        if subject:
            append_event(connection, self.schema, entity=spec.entity, record_id=int(subject["id"]),
                         kind=EventKind.APPROVAL_DECIDED, actor_id=None, at=now,
                         data={"approval": spec.name, "request": request["id"], "status": status})
            actions = {"approved": spec.on_approved, "rejected": spec.on_rejected}.get(status, ())
            if actions:
                self.executor.run(connection, spec.entity, dict(subject), actions, now,
                                  key=f"approval:{request['id']}:{status}", context=self._context(spec, request))
        if spec.channel is not None and status in ("approved", "rejected"):
            self.executor.run(connection, APPROVAL_ENTITY, dict(request), (NotifyAction(
                spec.channel, ("owner",), template="approval_decided"),), now,
                key=f"approval:{request['id']}:told", context=self._context(spec, request))

    def _supersede_stale(self, context: WriteContext) -> None:
        """A record whose covered values changed while a request was pending: that request no longer
        asks about what the record says, so it is withdrawn (a rule may request a new one)."""
        before, after = context.before or {}, context.after
        for spec in self.model.approvals_for(context.entity.name):
            if not any(before.get(name) != after.get(name) for name in spec.covers):
                continue
            fact = self.fact(context.connection, spec.name, spec.entity, after)
            if fact.status == "pending" and not fact.covers_current and fact.approval_id is not None:
                self._cancel_tasks(context.connection, fact.approval_id)
                self._close(context.connection, fact.approval_id, "cancelled", "the values it covers changed", after)

    def _close_all(self, context: WriteContext) -> None:
        """A deleted record's pending requests are withdrawn with it."""
        table = self.schema.table(APPROVAL_ENTITY)
        record_id = int(context.after["id"])
        rows = context.connection.execute(sa.select(table.c.id).where(
            table.c.subject_entity == context.entity.name, table.c.subject_id == record_id,
            table.c.status == "pending")).all()
        for row in rows:
            self._cancel_tasks(context.connection, row.id)
            self.records.update(APPROVAL_ENTITY, row.id, {"status": "cancelled", "decision_comment": "record deleted",
                                                          "current_step": None}, actor=APPROVALS,
                                within=context.connection)

    def _context(self, spec: ApprovalSpec, request: Mapping[str, Any]) -> dict[str, Any]:
        return {"approval": {"name": spec.name, "label": spec.label.text("zh"), "request": request.get("id"),
                             "status": request.get("status")}}


def _person(row: Any) -> Person:
    return Person(int(row.id), str(row.username), str(row.display_name or row.username), bool(row.is_active),
                  bool(row.on_leave))
