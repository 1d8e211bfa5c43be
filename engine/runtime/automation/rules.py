"""Rules and routing inside the write transaction, with a stored trace of every decision.

The pure parts decide (engine.rules.decisions, engine.rules.routing); this module gives them
what they need from the database — the reps' state, their open records, the routing cursor,
locked — and applies their decisions: field changes and the owner before the row is
written; related records, outbox messages and the trace after, all in the same transaction.
"""

from __future__ import annotations

import ast
import contextvars
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from engine.engine import Runtime
from engine.metamodel.actions import CreateRelatedAction, SetAction
from engine.metamodel.routing import RoutingPolicySpec
from engine.rules.expressions import RELATED_COUNTS
from engine.rules.routing import (CursorState, Rep, RepStatus, RoutingDecision, RoutingOutcome, choose_pool,
                                  route_record, select_policy)
from engine.rules.rules import (Assign, CallWebhook, Change, CreateRelated, Decision, Notify, Origin, RuleApplication,
                                Transition, TriggerEvent, evaluate_condition, evaluate_rules, find_rule_loop,
                                planned_changes)
from engine.rules.trace import RoutingStep, Trace, render_trace
from engine.runtime.background.outbox import enqueue
from engine.runtime.records.actors import Actor
from engine.runtime.records.errors import RecordError
from engine.runtime.records.events import append_event, value_json
from engine.runtime.records.service import WriteContext
from engine.runtime.records.values import expression_values
from engine.runtime.storage.prepared import Prepared


@dataclass
class _Pending:
    """What before_write decided, kept for after_write of the same write."""

    event: TriggerEvent
    decisions: tuple[Decision, ...]
    routing: list[RoutingStep] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    alerts: list[RoutingDecision] = field(default_factory=list)


_chain: contextvars.ContextVar[tuple[RuleApplication, ...]] = contextvars.ContextVar("crm_rules_chain", default=())


class RuleFailed(RecordError):
    """A rule could not be applied (e.g. it re-triggers itself); the write is refused whole."""

    status = 422
    code = "rule_failed"


def rule_actor(rule: str) -> Actor:
    return Actor(None, f"rule:{rule}", role="system", is_system=True)


def _naive(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None)


class RulesObserver:
    """The blueprint's rules and routing, as a RecordService write observer."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.model = runtime.model
        self.evaluator = runtime.records.evaluator
        schema = runtime.schema
        users, state = schema.users, schema.routing_state
        # statements every routed write runs, prepared once (engine/runtime/prepared.py)
        self._users = Prepared(sa.select(users.c.id, users.c.username, users.c.team, users.c.role,
                                         users.c.is_active, users.c.on_leave))
        read_cursor = sa.select(state.c.state).where(state.c.cursor_key == sa.bindparam("key"))
        self._read_cursor = {"sqlite": Prepared(read_cursor),  # SQLite: the write lock already serialises
                             "postgresql": Prepared(read_cursor.with_for_update())}
        self._write_cursor = Prepared(state.update().where(state.c.cursor_key == sa.bindparam("key")).values(
            state=sa.bindparam("state"), updated_at=sa.bindparam("at")))
        self._new_cursor = {dialect: Prepared((postgresql.insert if dialect == "postgresql" else sqlite.insert)(state)
                                              .on_conflict_do_nothing(index_elements=[state.c.cursor_key]),
                                              columns=("cursor_key", "state", "updated_at"))
                            for dialect in ("postgresql", "sqlite")}
        self._trace = Prepared(schema.traces.insert(),
                               columns=("entity", "record_id", "at", "change", "origin", "text", "decisions"))
        self._counts: dict[str, Any] = {}
        self._related_counts: dict[tuple[str, str], Prepared] = {}  # count_related statements, built once
        self._related = {entity.name: related_pairs(self.model, entity.name) for entity in self.model.entities}

    # -- before the row is written ---------------------------------------------------------

    def before_write(self, context: WriteContext) -> Mapping[str, Any]:
        if context.change == "deleted":
            return {}
        rules = self.model.rules_for(context.entity.name)
        flags = self._intake_flags(context)
        if not rules and not flags:
            return {}
        record_id = context.before.get("id") if context.before else None
        event = TriggerEvent(Change.CREATED if context.change == "created" else Change.UPDATED, context.entity.name,
                             record_id, Origin(context.origin), context.source)
        entity = context.entity
        before = expression_values(entity, context.before) if context.before is not None else None
        after = expression_values(entity, context.after)  # as expressions see them: money is its amount
        if self._related[entity.name]:
            after[RELATED_COUNTS] = self._count_related(context.connection, self._related[entity.name], record_id)
        decisions = evaluate_rules(rules, event, before, after, self.evaluator, context.now)
        pending = _Pending(event, decisions, flags=flags)
        context.notes["rules"] = pending
        changes = {name: value for name, value in planned_changes(decisions, after).items() if name != RELATED_COUNTS}
        values = {**after, **changes}
        for decision in decisions:
            for action in decision.actions if decision.matched else ():
                if isinstance(action, Transition):
                    changes[action.field] = values[action.field] = action.to
                elif isinstance(action, Assign):
                    owner = self._route(context, decision.rule, action, values, pending)
                    if owner is not None:
                        changes["owner"] = values["owner"] = owner
        return changes

    def _intake_flags(self, context: WriteContext) -> list[str]:
        """Test and spam filters of the webhook source the record arrived through."""
        if context.origin != "webhook" or context.source is None:
            return []
        source = next((s for s in self.model.sources if s.name == context.source), None)
        flags = []
        for label, expression in (("test", source.test_filter if source else None),
                                  ("spam", source.spam_filter if source else None)):
            result = (evaluate_condition(expression, expression_values(context.entity, context.after), self.evaluator)
                      if expression else None)
            if result is not None and result.is_true:
                flags.append(f"caught by the {label} filter of source {context.source} ({expression.source}): "
                             "not routed")
        return flags

    def _route(self, context: WriteContext, rule: str, action: Assign, values: Mapping[str, Any],
               pending: _Pending) -> int | None:
        if pending.flags:
            pending.routing.append(RoutingStep(rule, action.policy, note="skipped: " + "; ".join(pending.flags)))
            return None
        selection = None
        if action.policy is None:
            selection = select_policy(self.model.policies_for(context.entity.name), context.entity.name, values,
                                      self.evaluator)
            if selection.policy is None:
                pending.routing.append(RoutingStep(rule, None, selection, note=selection.reason))
                return None
        policy = self.model.policy(action.policy or selection.policy)  # type: ignore[arg-type]
        choice = choose_pool(policy, values)
        cursor = self._lock_cursor(context.connection, choice.cursor_key)
        reps, user_ids = self._reps(context.connection, policy)
        decision = route_record(policy, values, reps, cursor)
        self._store_cursor(context.connection, decision.cursor_key, decision.cursor, context.now)
        pending.routing.append(RoutingStep(rule, policy.name, selection, decision))
        if decision.outcome in (RoutingOutcome.QUEUED, RoutingOutcome.UNASSIGNED):
            pending.alerts.append(decision)
        if decision.username is None:
            return None
        return user_ids[decision.username]

    def _count_related(self, connection: sa.Connection, pairs: frozenset[tuple[str, str]],
                       record_id: int | None) -> dict[tuple[str, str], int]:
        """What count_related() answers for this record: computed here, so expressions stay pure."""
        if record_id is None:
            return {}
        counts = {}
        for entity, link in pairs:
            statement = self._related_counts.get((entity, link))
            if statement is None:
                table = self.runtime.schema.table(entity)
                statement = self._related_counts[(entity, link)] = Prepared(
                    sa.select(sa.func.count()).select_from(table).where(table.c[link] == sa.bindparam("record_id")))
            counts[(entity, link)] = int(statement.scalar(connection, {"record_id": record_id}))
        return counts

    def _reps(self, connection: sa.Connection, policy: RoutingPolicySpec) -> tuple[list[Rep], dict[str, int]]:
        """Every user as a routing candidate, with open-record counts when the policy needs them
        (one statement when open_when translates to SQL), and the user ids by username."""
        table = self.runtime.schema.table(policy.entity)
        if policy.name not in self._counts:
            self._counts[policy.name] = self._count_statement(policy, table) if _needs_counts(policy) else None
        statement = self._counts[policy.name]
        if statement is not None:
            rows = statement.rows(connection, {"limit": _count_limit(policy)})
            counts = {row.id: row.open for row in rows}
        else:
            rows = self._users.rows(connection)
            counts = (self._count_in_python(connection, policy, [row.id for row in rows if row.is_active])
                      if _needs_counts(policy) else {})
        reps = [Rep(row.username,
                    RepStatus.DISABLED if not row.is_active else RepStatus.ON_LEAVE if row.on_leave else RepStatus.ACTIVE,
                    row.team, row.role, counts.get(row.id) or 0) for row in rows]
        return reps, {row.username: row.id for row in rows}

    def _count_in_python(self, connection: sa.Connection, policy: RoutingPolicySpec,
                         owners: list[int]) -> dict[int, int]:
        """Open records per active user (`owners`) for an open_when too rich for SQL: the
        condition is evaluated on every record they own."""
        table = self.runtime.schema.table(policy.entity)
        entity = self.model.entity(policy.entity)
        counts: dict[int, int] = {}
        for row in connection.execute(sa.select(table).where(table.c.owner.in_(owners))).mappings():
            record = self.runtime.records.record_from_row(entity, row)
            if evaluate_condition(policy.open_when, record, self.evaluator).is_true:
                counts[row["owner"]] = counts.get(row["owner"], 0) + 1
        return counts

    def _count_statement(self, policy: RoutingPolicySpec, table: sa.Table) -> Prepared | None:
        """Every user, as `_users` reads them, with `open`: the open records of each active user
        counted with index seeks (and only up to the highest cap when every rep has one: a rep
        at cap is at cap, however far over; counting all of a busy team's open leads cost ~1 ms
        per routed lead at 2,000). None when open_when is too rich for SQL."""
        condition = expression_to_sql(policy.open_when.source, table)
        if condition is None:
            return None
        users = self.runtime.schema.users
        open_ = sa.select(table.c.owner).where(table.c.owner == users.c.id, condition).correlate(users)
        if _count_limit(policy) is not None:
            open_ = open_.limit(sa.bindparam("limit"))
        count = sa.select(sa.func.count()).select_from(open_.subquery()).scalar_subquery()
        return Prepared(self._users.statement.add_columns(
            sa.case((users.c.is_active.is_(True), count), else_=0).label("open")))

    def _lock_cursor(self, connection: sa.Connection, key: str) -> CursorState:
        """The pool's cursor, locked for this transaction (SQLite: the write lock already is).
        Its row is made the first time (rows are never deleted), then read again to lock it."""
        read = self._read_cursor[connection.dialect.name]
        row = read.first(connection, {"key": key})
        if row is None:
            self._new_cursor[connection.dialect.name].run(
                connection, {"cursor_key": key, "state": {}, "updated_at": dt.datetime(2000, 1, 1)})
            row = read.first(connection, {"key": key})
        return CursorState.from_json(row[0])

    def _store_cursor(self, connection: sa.Connection, key: str, cursor: CursorState, now: dt.datetime) -> None:
        self._write_cursor.run(connection, {"key": key, "state": cursor.as_json(), "at": _naive(now)})

    # -- after the row is written ----------------------------------------------------------

    def after_write(self, context: WriteContext) -> None:
        pending = context.notes.pop("rules", None)
        if context.change == "deleted" or pending is None:
            return
        record = context.after
        record_id = int(record["id"])
        for decision in pending.decisions:
            for action in decision.actions if decision.matched else ():
                self._apply(context, decision.rule, action, record)
        for decision in pending.alerts:
            self._alert(context, record_id, decision)
        self._store_trace(context, record_id, pending)

    def _apply(self, context: WriteContext, rule: str, action: Any, record: Mapping[str, Any]) -> None:
        entity, record_id, connection = context.entity, int(record["id"]), context.connection
        if isinstance(action, CreateRelated):
            chain = (*_chain.get(), RuleApplication(rule, entity.name, record_id))
            loop = find_rule_loop(chain)
            if loop is not None:
                raise RuleFailed(f"{loop.message}; nothing was saved — change the rule so it stops re-triggering "
                                 "itself", field=None)
            token = _chain.set(chain)
            try:
                self.runtime.records.create(action.entity, {**dict(action.values), action.link_field: record_id},
                                            actor=rule_actor(rule), within=connection, origin="rule")
            finally:
                _chain.reset(token)
        elif isinstance(action, Notify):
            enqueue(connection, self.runtime.schema, channel=action.channel,
                    key=f"rule:{rule}:{entity.name}:{record_id}:{record.get('version')}:{action.channel}",
                    payload={"text": action.text, "to": list(action.to), "entity": entity.name,
                             "record_id": record_id, "rule": rule}, now=context.now, entity=entity.name,
                    record_id=record_id)
        elif isinstance(action, CallWebhook):
            payload = {key: value_json(entity, key, value) if entity.has_field(key) else _plain(value)
                       for key, value in action.payload}
            enqueue(connection, self.runtime.schema, channel="webhook",
                    key=f"rule:{rule}:{entity.name}:{record_id}:{record.get('version')}:webhook",
                    payload={"url": action.url, "url_env": action.url_env, "secret_env": action.secret_env,
                             "data": payload, "entity": entity.name, "record_id": record_id, "rule": rule},
                    now=context.now, entity=entity.name, record_id=record_id)

    def _alert(self, context: WriteContext, record_id: int, decision: RoutingDecision) -> None:
        """A record no rep could take is queued or left unassigned — loudly, never silently."""
        entity = context.entity.name
        append_event(context.connection, self.runtime.schema, entity=entity, record_id=record_id,
                     kind="routing_" + decision.outcome.value, actor_id=None, at=context.now,
                     data={"policy": decision.policy, "pool": decision.pool, "queue": decision.queue,
                           "reason": decision.reason})
        if decision.alert:
            enqueue(context.connection, self.runtime.schema, channel=decision.alert,
                    key=f"routing:{entity}:{record_id}:{_naive(context.now).isoformat()}",
                    payload={"text": decision.alert_text or decision.reason, "to": [], "entity": entity,
                             "record_id": record_id, "policy": decision.policy},
                    now=context.now, entity=entity, record_id=record_id)

    def _store_trace(self, context: WriteContext, record_id: int, pending: _Pending) -> None:
        event = TriggerEvent(pending.event.change, pending.event.entity, record_id, pending.event.origin,
                             pending.event.source)
        trace = Trace(context.entity.name, record_id, event, context.now, pending.decisions,
                      tuple(pending.routing), tuple(pending.flags))
        if pending.flags:
            append_event(context.connection, self.runtime.schema, entity=context.entity.name, record_id=record_id,
                         kind="intake_flagged", actor_id=None, at=context.now, data={"flags": pending.flags})
        self._trace.run(context.connection, {
            "entity": context.entity.name, "record_id": record_id, "at": _naive(context.now),
            "change": event.change.value, "origin": event.origin.value, "text": render_trace(trace),
            "decisions": _summary(trace)})


def _summary(trace: Trace) -> dict[str, Any]:
    """A compact, queryable digest of the trace (the full explanation is its text)."""
    return {"rules": [{"rule": d.rule, "matched": d.matched, "why_none": d.why_none, "error": d.error}
                      for d in trace.decisions],
            "routing": [{"rule": step.rule, "policy": step.policy, "note": step.note,
                         "outcome": step.decision.outcome.value if step.decision else None,
                         "username": step.decision.username if step.decision else None} for step in trace.routing],
            "flags": list(trace.flags)}


def _plain(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if hasattr(value, "is_finite"):  # Decimal
        return str(value)
    return value


def _count_limit(policy: RoutingPolicySpec) -> int | None:
    """How far open records need counting: the highest cap, unless least-loaded routing must
    compare reps who have no cap (then every open record counts)."""
    from engine.metamodel.routing import Strategy
    caps = [cap for cap in (policy.cap, *dict(policy.caps).values()) if cap is not None]
    if not caps or (policy.cap is None and Strategy.LEAST_LOADED in (policy.strategy, policy.within)):
        return None
    return max(caps)


def _needs_counts(policy: RoutingPolicySpec) -> bool:
    from engine.metamodel.routing import Strategy
    return policy.cap is not None or bool(policy.caps) or Strategy.LEAST_LOADED in (policy.strategy, policy.within)


def expression_to_sql(source: str, table: sa.Table) -> Any:
    """A SQL condition equal to a simple expression (comparisons of fields with literals joined
    by and/or/not), or None when the expression is richer than that."""
    try:
        return _to_sql(ast.parse(source, mode="eval").body, table)
    except (ValueError, KeyError, SyntaxError):
        return None


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(item) for item in node.elts]
    raise ValueError("not a literal")


def _to_sql(node: ast.AST, table: sa.Table) -> Any:
    if isinstance(node, ast.BoolOp):
        parts = [_to_sql(value, table) for value in node.values]
        return sa.and_(*parts) if isinstance(node.op, ast.And) else sa.or_(*parts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return sa.not_(_to_sql(node.operand, table))
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.left, ast.Name):
        column, value, op = table.c[node.left.id], _literal(node.comparators[0]), node.ops[0]
        operations = {ast.Eq: lambda: column == value, ast.NotEq: lambda: column != value,
                      # one bound value each, not an IN list: statements stay Prepared-able (both
                      # databases use the index for a list of equalities on one column)
                      ast.In: lambda: sa.or_(sa.false(), *(column == item for item in value)),
                      ast.NotIn: lambda: sa.and_(sa.true(), *(column != item for item in value)),
                      ast.Gt: lambda: column > value, ast.GtE: lambda: column >= value,
                      ast.Lt: lambda: column < value, ast.LtE: lambda: column <= value}
        if type(op) in operations:
            return operations[type(op)]()
    if isinstance(node, ast.Name):
        return table.c[node.id].is_(True)
    raise ValueError("unsupported")


def related_pairs(model: Any, entity: str) -> frozenset[tuple[str, str]]:
    """The (entity, link field) pairs the entity's rules ask count_related() about; each must be a
    link from that entity to this one (checked when the CRM starts)."""
    pairs: set[tuple[str, str]] = set()
    for rule in model.rules_for(entity):
        expressions = [rule.when] + [value.expression for action in rule.actions
                                     if isinstance(action, (SetAction, CreateRelatedAction))
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
                    pairs.add((args[0], args[1]))
    return frozenset(pairs)


def install_rules(runtime: Runtime) -> None:
    """Make every write of this runtime run the blueprint's rules and routing."""
    if runtime.model.rules or runtime.model.sources:
        runtime.records.observers.append(RulesObserver(runtime))
