"""The one action executor: applies the blueprint's actions through RecordService, whoever asked.

A rule's actions, an SLA checkpoint's and a cadence step's are the same vocabulary
(engine/metamodel/actions.py), resolved the same way (engine/rules/actions.py) and applied
here the same way. Only the moment differs:

- a rule runs inside the write that triggered it: its field changes, transitions and owner
  join that write before the row is stored (`owner_for`), and its effects — related records
  created or updated, messages, webhooks — follow in the same transaction (`apply_effects`);
- a timer (SLA checkpoint, cadence step) runs its actions on the stored record (`run`), each
  in a savepoint: a refused one is recorded as an `action_failed` event and the rest still run.
  An approval's `on_requested` / `on_approved` / `on_rejected` actions run the same way.

Messages go through `enqueue_notification` for every source, so `notify.to` is resolved to
the recipients' mentions alike for a rule and a timer. A plugin's verb (`verbs`) reaches the
executor already expanded into the built-in actions it answered (engine/rules/actions.py).
"""

from __future__ import annotations

import contextvars
import datetime as dt
import decimal
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import sqlalchemy as sa

from engine.metamodel import EntitySpec, Metamodel
from engine.metamodel.actions import MAX_RELATED_UPDATES, ActionSpec
from engine.rules.actions import (FIELD_ACTIONS, NO_PLUGIN_ACTIONS, Action, ActionTypes, AddTags, Assign,
                                  CallWebhook, CreateRelated, Notify, RemoveTags, RequestApproval, SetField, Transition, UpdateRelated,
                                  apply_field_actions, resolve_action)
from engine.rules.expressions import Evaluator
from engine.rules.rules import Origin, RuleApplication, evaluate_condition, find_rule_loop
from engine.rules.trace import RoutingStep, render_routing_step
from engine.runtime.automation.related import RelatedReader
from engine.runtime.automation.notify import enqueue_notification, load_user, people_context
from engine.runtime.automation.routing import Router
from engine.runtime.background.outbox import enqueue
from engine.runtime.records.actors import SYSTEM, Actor
from engine.runtime.records.errors import RecordError
from engine.runtime.records.events import EventKind, append_event, value_json
from engine.runtime.records.service import RecordService
from engine.runtime.records.values import expression_values, is_empty
from engine.runtime.storage.database import savepoint
from engine.runtime.storage.tables import Schema
from engine.runtime.storage.times import naive_utc

# the rule applications that led to the write in progress: a rule that re-triggers itself is refused
_chain: contextvars.ContextVar[tuple[RuleApplication, ...]] = contextvars.ContextVar("crm_rules_chain", default=())


class RuleFailed(RecordError):
    """A rule could not be applied (e.g. it re-triggers itself); the write is refused whole."""

    status = 422
    code = "rule_failed"


class ApprovalRequests(Protocol):
    """What `request_approval` needs: the approvals component (engine/runtime/automation/approvals.py),
    handed to the executor by the composition root once both exist (each needs the other)."""

    def request_within(self, connection: sa.Connection, entity: str, record: Mapping[str, Any], name: str,
                       now: dt.datetime, *, actor: Actor, reason: str | None = None) -> None:
        ...


def rule_actor(rule: str) -> Actor:
    return Actor(None, f"rule:{rule}", role="system", is_system=True)


class ActionExecutor:
    """Applies resolved actions; receives the records it writes through, the router it assigns
    with and the plugins' action verbs it resolves a timer's actions with."""

    def __init__(self, model: Metamodel, schema: Schema, records: RecordService, router: Router,
                 evaluator: Evaluator, *, base_url: str = "", verbs: ActionTypes = NO_PLUGIN_ACTIONS) -> None:
        self.model = model
        self.verbs = verbs
        self.schema = schema
        self.records = records
        self.router = router
        self.evaluator = evaluator
        self.base_url = base_url.rstrip("/")
        self.related = RelatedReader(model, schema, evaluator)
        self.approvals: ApprovalRequests | None = None  # set by the composition root when approvals are declared

    # -- owners ---------------------------------------------------------------------------------
    def owner_for(self, connection: sa.Connection, entity: str, action: Assign, values: Mapping[str, Any],
                  now: dt.datetime, *, rule: str = "") -> tuple[int | None, RoutingStep]:
        """Who an assign/reassign gives the record to (None: nobody), and the step explaining it."""
        if not action.to:
            return self.router.route(connection, entity, action.policy, values, now, rule=rule)
        current = values.get("owner")
        users = self.schema.users
        tried = []
        for person in action.to:
            if person in ("owner.manager", "manager"):
                owner = load_user(connection, self.schema, current)
                row = load_user(connection, self.schema, owner.manager_id) if owner is not None else None
            else:
                row = connection.execute(sa.select(users).where(
                    users.c.username == person.removeprefix("user:"))).first()
            if row is None:
                tried.append(f"{person}: nobody")
            elif not row.is_active or row.on_leave:
                tried.append(f"{person} ({row.username}): {'disabled' if not row.is_active else 'on leave'}")
            elif action.reassign and row.id == current:
                tried.append(f"{person} ({row.username}): already the owner")
            else:
                return int(row.id), RoutingStep(rule, None, note=f"to {row.username} ({person})")
        return None, RoutingStep(rule, None, note="nobody to take it: " + "; ".join(tried))

    # -- effects beyond the record, after it is written ------------------------------------------
    def apply_effects(self, connection: sa.Connection, entity: EntitySpec, record: Mapping[str, Any],
                      actions: Sequence[Action], now: dt.datetime, *, key: str, actor: Actor, origin: Origin,
                      context: Mapping[str, Any], chain: RuleApplication | None = None,
                      seen: dict[int, Any] | None = None) -> None:
        """Related records created or updated, messages and webhooks queued, in the caller's transaction."""
        for index, action in enumerate(actions):
            if isinstance(action, CreateRelated):
                with _ChainScope(chain):
                    values = {**dict(action.values), action.link_field: record["id"]}
                    if record.get("owner") is not None and "owner" not in values:
                        values["owner"] = record["owner"]  # a task belongs to whoever owns its record now
                    self.records.create(action.entity, values, actor=actor, within=connection, origin=origin.value)
            elif isinstance(action, UpdateRelated):
                with _ChainScope(chain):
                    self._update_related(connection, entity, record, action, actor, origin)
            elif isinstance(action, Notify):
                self._notify(connection, entity, record, action, now, f"{key}:{action.channel}"
                             if chain is not None else f"{key}:{index}", context, seen)
            elif isinstance(action, RequestApproval):
                if self.approvals is not None:
                    with _ChainScope(chain):
                        self.approvals.request_within(connection, entity.name, record, action.approval, now,
                                                      actor=actor, reason=action.reason)
            elif isinstance(action, CallWebhook):
                payload = {name: value_json(entity, name, value, self.schema.kinds) if entity.has_field(name) else _plain(value)
                           for name, value in action.payload}
                enqueue(connection, self.schema, channel="webhook",
                        key=f"{key}:webhook" if chain is not None else f"{key}:{index}",
                        payload={"url": action.url, "url_env": action.url_env, "secret_env": action.secret_env,
                                 "data": payload, "entity": entity.name, "record_id": record["id"],
                                 **({"rule": chain.rule} if chain is not None else {})},
                        now=now, entity=entity.name, record_id=record["id"])

    def _notify(self, connection: sa.Connection, entity: EntitySpec, record: Mapping[str, Any], action: Notify,
                now: dt.datetime, key: str, context: Mapping[str, Any], seen: dict[int, Any] | None) -> None:
        owner_id = record.get("owner")
        full = {"record": dict(record), "now": now, "url": f"{self.base_url}/{entity.name}/{record['id']}",
                **people_context(connection, self.schema, owner_id, seen), **context}
        enqueue_notification(connection, self.schema, self.model, channel=action.channel, to=action.to,
                             owner_id=owner_id, context=full, key=key, now=now, text=action.text,
                             template=action.template, entity=entity.name, record_id=record["id"], seen=seen)

    def _update_related(self, connection: sa.Connection, entity: EntitySpec, record: Mapping[str, Any],
                        action: UpdateRelated, actor: Actor, origin: Origin) -> None:
        target = self.model.entity(action.entity)
        if action.unless is not None and self.related.matching(connection, action.unless, entity.name, record, enough=1):
            return  # e.g. another open delivery ticket of the customer keeps the flag
        for related in self._related(connection, entity, record, action):
            if action.where is not None and not evaluate_condition(
                    action.where, expression_values(target, related), self.evaluator).is_true:
                continue
            changes = dict(action.values)
            changes.update({name: value for name, value in action.values_if_empty if is_empty(related.get(name))})
            changes = {name: value for name, value in changes.items() if related.get(name) != value}
            if changes:
                self.records.update(target.name, related["id"], changes, actor=actor, within=connection,
                                    origin=origin.value)

    def _related(self, connection: sa.Connection, entity: EntitySpec, record: Mapping[str, Any],
                 action: UpdateRelated) -> list[dict[str, Any]]:
        table = self.schema.table(action.entity)
        if action.mode == "parent":
            found = self.records.find(connection, action.entity, record[action.via]) \
                if record.get(action.via) is not None else None
            return [found] if found is not None else []
        value = record["id"] if action.mode == "children" else record.get(action.own or action.via)
        if value is None:
            return []
        query = sa.select(table.c.id).where(table.c[action.via] == value)
        if action.entity == entity.name:
            query = query.where(table.c.id != record["id"])
        ids = [row.id for row in connection.execute(query.order_by(table.c.id).limit(MAX_RELATED_UPDATES))]
        by_id = self.records.find_many(connection, action.entity, ids)
        return [by_id[record_id] for record_id in ids if record_id in by_id]

    # -- a timer's actions on the stored record ---------------------------------------------------
    def run(self, connection: sa.Connection, entity_name: str, record: dict[str, Any], specs: Sequence[ActionSpec],
            now: dt.datetime, *, key: str, context: Mapping[str, Any], seen: dict[int, Any] | None = None) -> None:
        """Run an SLA checkpoint's or a cadence step's actions; one that fails is logged as an
        event, the rest still run. Messages name the owner the record had when the timer fired."""
        entity = self.model.entity(entity_name)
        for index, spec in enumerate(specs):
            resolved: tuple[Action, ...] = ()
            try:
                with savepoint(connection):
                    resolved = resolve_action(spec, expression_values(entity, record), self.evaluator, self.verbs)
                    record = self._run_one(connection, entity, record, resolved, now, f"{key}:{index}", context, seen)
            except Exception as exc:  # e.g. a validation rule refusing the change: visible in the timeline
                append_event(connection, self.schema, entity=entity.name, record_id=record["id"],
                             kind=EventKind.ACTION_FAILED, actor_id=None, at=now,
                             data={"action": getattr(spec, "verb", type(spec).__name__), "timer": key,
                                   "error": f"{type(exc).__name__}: {exc}"[:1000]})

    def _run_one(self, connection: sa.Connection, entity: EntitySpec, record: dict[str, Any],
                 actions: tuple[Action, ...], now: dt.datetime, key: str, context: Mapping[str, Any],
                 seen: dict[int, Any] | None) -> dict[str, Any]:
        changes = _changes(record, actions)
        for action in actions:
            if isinstance(action, Assign):
                owner, step = self.owner_for(connection, entity.name, action, record, now)
                if step.decision is not None:  # routed by a policy: keep why, for `crm explain`
                    self._trace_routing(connection, entity.name, int(record["id"]), step, now, key)
                if owner is None or owner == record.get("owner"):
                    append_event(connection, self.schema, entity=entity.name, record_id=record["id"],
                                 kind=EventKind.REASSIGN_SKIPPED, actor_id=None, at=now,
                                 data={"reason": step.note or "no active backup or manager to take it"})
                else:
                    changes["owner"] = owner
        if changes:
            record = self.records.update(entity.name, record["id"], changes, actor=SYSTEM, within=connection,
                                         origin=Origin.TIMER.value)
        effects = list(effects_of(actions))
        if effects:
            self.apply_effects(connection, entity, record, effects, now, key=key, actor=SYSTEM, origin=Origin.TIMER,
                               context=context, seen=seen)
        return record


    def _trace_routing(self, connection: sa.Connection, entity: str, record_id: int, step: RoutingStep,
                       now: dt.datetime, key: str) -> None:
        """A timer's reassign through a routing policy (an SLA breach handing the record on) is
        explained like a rule's: who was skipped and why, and who took it (a backup owner.manager)."""
        decision = step.decision
        assert decision is not None
        text = render_routing_step(step, f"{entity} {record_id} — reassigned by timer {key} at {now.isoformat()}")
        connection.execute(self.schema.traces.insert().values(
            entity=entity, record_id=record_id, at=naive_utc(now), change="reassigned", origin="timer", text=text,
            decisions={"routing": {"policy": decision.policy, "outcome": decision.outcome.value,
                                   "username": decision.username, "reason": decision.reason}}))


def _changes(record: Mapping[str, Any], actions: Sequence[Action]) -> dict[str, Any]:
    """The field values set, tag and transition actions give the stored record."""
    after = apply_field_actions(record, [action for action in actions if isinstance(action, (SetField, AddTags,
                                                                                            RemoveTags))])
    for action in actions:
        if isinstance(action, Transition):
            after[action.field] = action.to
    return {name: value for name, value in after.items() if record.get(name) != value}


class _ChainScope:
    """A nested write runs with the rule applications that led to it; a loop is refused."""

    def __init__(self, application: RuleApplication | None) -> None:
        self.application = application
        self.token: contextvars.Token[tuple[RuleApplication, ...]] | None = None

    def __enter__(self) -> None:
        if self.application is None:
            return
        chain = (*_chain.get(), self.application)
        loop = find_rule_loop(chain)
        if loop is not None:
            raise RuleFailed(f"{loop.message}; nothing was saved — change the rule so it stops re-triggering itself",
                             field=None)
        self.token = _chain.set(chain)

    def __exit__(self, *exc: object) -> None:
        if self.token is not None:
            _chain.reset(self.token)


def _plain(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    return value


def effects_of(actions: Sequence[Action]) -> Iterator[Action]:
    """The actions that act beyond the record itself (after it is written)."""
    return (action for action in actions if not isinstance(action, (*FIELD_ACTIONS, Transition, Assign)))
