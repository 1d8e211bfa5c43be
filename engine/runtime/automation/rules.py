"""Rules inside the write transaction, with a stored trace of every decision.

The pure part decides (engine/rules/rules.py: which rules a change triggers, what each
condition saw, the actions with their values). This observer hands it the record as
expressions see it — with the `count_related()` counts it asked for, read here so
expressions stay pure — and applies the decisions through the one action executor
(engine/runtime/automation/actions.py): field changes, transitions and the owner join the
write before the row is stored; related records, messages and webhooks follow, and the
trace is stored with the change, all in the same transaction.
"""

from __future__ import annotations

import ast
import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from engine.metamodel import Metamodel
from engine.metamodel.actions import CreateRelatedAction, PluginAction, SetAction, UpdateRelatedAction
from engine.rules.actions import Assign, Transition
from engine.rules.expressions import RELATED_COUNTS, Evaluator
from engine.rules.routing import RoutingDecision, select_policy
from engine.rules.rules import (Change, Decision, Origin, RuleApplication, TriggerEvent, evaluate_condition,
                                evaluate_rules, planned_changes)
from engine.rules.trace import RoutingStep, Trace, render_trace
from engine.runtime.automation.actions import ActionExecutor, rule_actor
from engine.runtime.records.events import EventKind, append_event
from engine.runtime.records.lifecycle import WriteContext
from engine.runtime.records.values import expression_values
from engine.runtime.storage.prepared import Prepared
from engine.runtime.storage.tables import Schema
from engine.runtime.storage.times import naive_utc


_SUSPENDED: contextvars.ContextVar[bool] = contextvars.ContextVar("rules_suspended", default=False)


@contextlib.contextmanager
def rules_suspended() -> Iterator[None]:
    """Writes inside the block run no rules: an import run with --no-rules (its report says so)."""
    token = _SUSPENDED.set(True)
    try:
        yield
    finally:
        _SUSPENDED.reset(token)


@dataclass
class _Pending:
    """What before_write decided, kept for after_write of the same write."""

    event: TriggerEvent
    decisions: tuple[Decision, ...]
    routing: list[RoutingStep] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    alerts: list[RoutingDecision] = field(default_factory=list)


class RulesObserver:
    """The blueprint's rules, as a RecordService write observer."""

    def __init__(self, model: Metamodel, schema: Schema, evaluator: Evaluator, executor: ActionExecutor) -> None:
        self.model = model
        self.schema = schema
        self.evaluator = evaluator
        self.executor = executor
        self._trace = Prepared(schema.traces.insert(),
                               columns=("entity", "record_id", "at", "change", "origin", "text", "decisions"))
        self._related_counts: dict[tuple[str, str], Prepared] = {}  # count_related statements, built once
        self._related = {entity.name: related_pairs(model, entity.name) for entity in model.entities}

    # -- before the row is written ---------------------------------------------------------
    def before_write(self, context: WriteContext) -> Mapping[str, Any]:
        if context.change is Change.DELETED or _SUSPENDED.get():
            return {}
        changes = dict(self._rule_changes(context))
        return {**changes, **self._reroute_on_update(context, changes)}

    def _reroute_on_update(self, context: WriteContext, changes: Mapping[str, Any]) -> dict[str, Any]:
        """A record still unassigned is routed again when it changes, if the policy that now
        matches it declares `reroute_on: [updated]` (an owner someone just cleared stays cleared)."""
        entity = context.entity
        if context.change is not Change.UPDATED or context.before is None or "owner" in changes \
                or context.before.get("owner") is not None or context.after.get("owner") is not None:
            return {}
        policies = self.model.policies_for(entity.name)
        if not any("updated" in policy.reroute_on for policy in policies):
            return {}
        values = {**expression_values(entity, context.after), **changes}
        selection = select_policy(policies, entity.name, values, self.evaluator)
        if selection.policy is None or "updated" not in self.model.policy(selection.policy).reroute_on:
            return {}
        owner, step = self.executor.router.route(context.connection, entity.name, selection.policy, values,
                                                 context.now, rule="reroute_on: updated")
        pending = context.notes.get("rules")
        if isinstance(pending, _Pending):
            pending.routing.append(step)
        return {"owner": owner} if owner is not None else {}

    def _rule_changes(self, context: WriteContext) -> Mapping[str, Any]:
        rules = self.model.rules_for(context.entity.name)
        flags = self._intake_flags(context)
        if not rules and not flags:
            return {}
        record_id = context.before.get("id") if context.before else None
        event = TriggerEvent(context.change, context.entity.name, record_id, context.origin, context.source)
        entity = context.entity
        before = expression_values(entity, context.before) if context.before is not None else None
        after = expression_values(entity, context.after)  # as expressions see them: money is its amount
        if self._related[entity.name]:
            after[RELATED_COUNTS] = self._count_related(context.connection, self._related[entity.name], record_id)
        decisions = evaluate_rules(rules, event, before, after, self.evaluator, context.now, self.executor.verbs)
        pending = _Pending(event, decisions, flags=flags)
        context.notes["rules"] = pending
        changes = {name: value for name, value in planned_changes(decisions, after).items() if name != RELATED_COUNTS}
        values = {**after, **changes}
        for decision in decisions:
            for action in decision.actions if decision.matched else ():
                if isinstance(action, Transition):
                    changes[action.field] = values[action.field] = action.to
                elif isinstance(action, Assign):
                    owner = self._assign(context, decision.rule, action, values, pending)
                    if owner is not None:
                        changes["owner"] = values["owner"] = owner
        return changes

    def _intake_flags(self, context: WriteContext) -> list[str]:
        """Test and spam filters of the webhook source the record arrived through."""
        if context.origin is not Origin.WEBHOOK or context.source is None or not self.model.has_source(context.source):
            return []
        source = self.model.source(context.source)
        if context.entity.name != source.entity:  # a further record of the delivery (records:): the filters read the source's entity
            return []
        flags = []
        for label, expression in (("test", source.test_filter), ("spam", source.spam_filter)):
            if expression is None:
                continue
            if evaluate_condition(expression, expression_values(context.entity, context.after), self.evaluator).is_true:
                flags.append(f"caught by the {label} filter of source {context.source} ({expression.source}): "
                             "not routed")
        return flags

    def _assign(self, context: WriteContext, rule: str, action: Assign, values: Mapping[str, Any],
                pending: _Pending) -> int | None:
        if pending.flags:
            pending.routing.append(RoutingStep(rule, action.policy, note="skipped: " + "; ".join(pending.flags)))
            return None
        owner, step = self.executor.owner_for(context.connection, context.entity.name, action, values, context.now,
                                              rule=rule)
        pending.routing.append(step)
        if step.decision is not None and step.decision.outcome.value in ("queued", "unassigned"):
            pending.alerts.append(step.decision)
        return owner

    def _count_related(self, connection: sa.Connection, pairs: frozenset[tuple[str, str]],
                       record_id: int | None) -> dict[tuple[str, str], int]:
        """What count_related() answers for this record: computed here, so expressions stay pure."""
        if record_id is None:
            return {}
        counts = {}
        for entity, link in pairs:
            statement = self._related_counts.get((entity, link))
            if statement is None:
                table = self.schema.table(entity)
                statement = self._related_counts[(entity, link)] = Prepared(
                    sa.select(sa.func.count()).select_from(table).where(table.c[link] == sa.bindparam("record_id")))
            counts[(entity, link)] = int(statement.scalar(connection, {"record_id": record_id}))
        return counts

    # -- after the row is written ----------------------------------------------------------
    def after_write(self, context: WriteContext) -> None:
        pending = context.notes.pop("rules", None)
        if context.change is Change.DELETED or pending is None:
            return
        record = context.after
        record_id = int(record["id"])
        for decision in pending.decisions:
            if decision.matched:
                self.executor.apply_effects(
                    context.connection, context.entity, record, decision.actions, context.now,
                    key=f"rule:{decision.rule}:{context.entity.name}:{record_id}:{record.get('version')}",
                    actor=rule_actor(decision.rule), origin=Origin.RULE, context={"rule": {"name": decision.rule}},
                    chain=RuleApplication(decision.rule, context.entity.name, record_id))
        for decision in pending.alerts:
            self.executor.router.alert(context.connection, context.entity.name, record_id, decision, context.now)
        self._store_trace(context, record_id, pending)

    def _store_trace(self, context: WriteContext, record_id: int, pending: _Pending) -> None:
        event = TriggerEvent(pending.event.change, pending.event.entity, record_id, pending.event.origin,
                             pending.event.source)
        trace = Trace(context.entity.name, record_id, event, context.now, pending.decisions,
                      tuple(pending.routing), tuple(pending.flags))
        if pending.flags:
            append_event(context.connection, self.schema, entity=context.entity.name, record_id=record_id,
                         kind=EventKind.INTAKE_FLAGGED, actor_id=None, at=context.now, data={"flags": pending.flags})
        self._trace.run(context.connection, {
            "entity": context.entity.name, "record_id": record_id, "at": naive_utc(context.now),
            "change": event.change.value, "origin": event.origin.value, "text": render_trace(trace, self.model.settings.timezone),
            "decisions": _summary(trace)})


def _summary(trace: Trace) -> dict[str, Any]:
    """A compact, queryable digest of the trace (the full explanation is its text)."""
    return {"rules": [{"rule": d.rule, "matched": d.matched, "why_none": d.why_none, "error": d.error}
                      for d in trace.decisions],
            "routing": [{"rule": step.rule, "policy": step.policy, "note": step.note,
                         "outcome": step.decision.outcome.value if step.decision else None,
                         "username": step.decision.username if step.decision else None} for step in trace.routing],
            "flags": list(trace.flags)}


def related_pairs(model: Any, entity: str) -> frozenset[tuple[str, str]]:
    """The (entity, link field) pairs the entity's rules ask count_related() about; each must be a
    link from that entity to this one (checked when the CRM starts)."""
    pairs: set[tuple[str, str]] = set()
    for rule in model.rules_for(entity):
        expressions = [rule.when] + [value.expression for action in rule.actions
                                     if isinstance(action, (SetAction, CreateRelatedAction, UpdateRelatedAction, PluginAction))
                                     for _, value in action.values]
        for expression in filter(None, expressions):
            if "count_related" not in expression.functions:
                continue
            for node in ast.walk(ast.parse(expression.source, mode="eval")):
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "count_related":
                    args = [arg.value for arg in node.args if isinstance(arg, ast.Constant)]
                    if len(args) != 2 or not model.has_entity(args[0]) or \
                            not model.entity(args[0]).has_field(args[1]) or \
                            model.entity(args[0]).field(args[1]).link_entity != entity:
                        raise ValueError(f"{expression.location}: count_related() needs two quoted names: an entity "
                                         f"and its link field pointing at {entity}, e.g. count_related('activity', "
                                         f"'lead') — got {expression.source}")
                    pairs.add((str(args[0]), str(args[1])))  # names, as the checks above found them
    return frozenset(pairs)
