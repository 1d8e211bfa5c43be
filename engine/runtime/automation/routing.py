"""Routing inside the write: who gets a record, decided by the rules and applied here.

The pure choice is engine/rules/routing.py. This module gives it what it needs from the
database — the reps' state and their open records (one prepared statement when the policy's
`open_when` translates to SQL), their assignments today and this week (one grouped count over
an index on (policy, user, at), for `cap_per_day` / `cap_per_week`), the readable key of a linked
territory, the pool's round-robin cursor, locked for the transaction — stores the moved cursor
and the assignment, and, for a record nobody could take, the loud alert (event and message).
Rules' `assign`, timers' `reassign` and intake all route through `Router.route`.
"""

from __future__ import annotations

import ast
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from engine.metamodel import Metamodel
from engine.metamodel.routing import RoutingPolicySpec, Strategy
from engine.rules.routing import (CursorState, PolicySelection, Rep, RepStatus, RoutingDecision, RoutingOutcome,
                                  choose_pool, route_record, select_policy)
from engine.rules.rules import evaluate_condition
from engine.rules.expressions import Evaluator
from engine.rules.trace import RoutingStep
from engine.runtime.background.outbox import enqueue
from engine.runtime.records.events import EventKind, append_event
from engine.runtime.records.service import RecordService
from engine.runtime.storage.prepared import Prepared
from engine.runtime.storage.tables import Schema
from engine.runtime.storage.times import naive_utc


class Router:
    """Routes records of every policy of the blueprint; statements prepared once."""

    def __init__(self, model: Metamodel, schema: Schema, records: RecordService, evaluator: Evaluator) -> None:
        self.model = model
        self.schema = schema
        self.records = records
        self.evaluator = evaluator
        users, state = schema.users, schema.routing_state
        self._users_select = sa.select(users.c.id, users.c.username, users.c.team, users.c.role,
                                       users.c.is_active, users.c.on_leave, users.c.manager_id)
        self._users = Prepared(self._users_select)
        read_cursor = sa.select(state.c.state).where(state.c.cursor_key == sa.bindparam("key"))
        self._read_cursor = {"sqlite": Prepared(read_cursor),  # SQLite: the write lock already serialises
                             "postgresql": Prepared(read_cursor.with_for_update())}
        self._write_cursor = Prepared(state.update().where(state.c.cursor_key == sa.bindparam("key")).values(
            state=sa.bindparam("state"), updated_at=sa.bindparam("at")))
        self._new_cursor = {dialect: Prepared((postgresql.insert if dialect == "postgresql" else sqlite.insert)(state)
                                              .on_conflict_do_nothing(index_elements=[state.c.cursor_key]),
                                              columns=("cursor_key", "state", "updated_at"))
                            for dialect in ("postgresql", "sqlite")}
        self._counts: dict[str, Prepared | None] = {}
        log = schema.routing_assignments
        self._log_assignment = Prepared(log.insert(), columns=("policy", "user_id", "entity", "record_id", "at"))
        today = sa.func.sum(sa.case((log.c.at >= sa.bindparam("since_day"), 1), else_=0))
        self._assigned = Prepared(sa.select(log.c.user_id, today.label("today"), sa.func.count().label("week"))
                                  .where(log.c.policy == sa.bindparam("policy"), log.c.at >= sa.bindparam("since"))
                                  .group_by(log.c.user_id))
        self._forget_assignments = Prepared(log.delete().where(log.c.policy == sa.bindparam("policy"),
                                                               log.c.at < sa.bindparam("before")))
        self._pruned: dict[str, dt.datetime] = {}  # policy → the week whose older rows this process dropped
        self._titles: dict[str, Prepared] = {}

    def route(self, connection: sa.Connection, entity: str, policy_name: str | None, values: Mapping[str, Any],
              now: dt.datetime, *, rule: str = "") -> tuple[int | None, RoutingStep]:
        """The owner for a record with `values` under `policy_name` (None: the entity's first policy
        whose match holds), and the step that explains it; None when nobody could take it."""
        selection: PolicySelection | None = None
        if policy_name is None:
            selection = select_policy(self.model.policies_for(entity), entity, values, self.evaluator)
            if selection.policy is None:
                return None, RoutingStep(rule, None, selection, note=selection.reason)
            policy_name = selection.policy
        policy = self.model.policy(policy_name)
        values = self._with_readable_key(connection, policy, values)
        choice = choose_pool(policy, values)
        cursor = self._lock_cursor(connection, choice.cursor_key)
        reps, user_ids = self._reps(connection, policy, now)
        decision = route_record(policy, values, reps, cursor)
        self._write_cursor.run(connection, {"key": decision.cursor_key, "state": decision.cursor.as_json(),
                                            "at": naive_utc(now)})
        if decision.username is not None and policy.counts_assignments:
            self._log_assignment.run(connection, {"policy": policy.name, "user_id": user_ids[decision.username],
                                                  "entity": entity, "record_id": values.get("id"),
                                                  "at": naive_utc(now)})
        step = RoutingStep(rule, policy.name, selection, decision)
        return (None if decision.username is None else user_ids[decision.username]), step

    def alert(self, connection: sa.Connection, entity: str, record_id: int, decision: RoutingDecision,
              now: dt.datetime) -> None:
        """A record no rep could take is queued or left unassigned — loudly, never silently."""
        if decision.outcome not in (RoutingOutcome.QUEUED, RoutingOutcome.UNASSIGNED):
            return
        append_event(connection, self.schema, entity=entity, record_id=record_id,
                     kind=EventKind("routing_" + decision.outcome.value), actor_id=None, at=now,
                     data={"policy": decision.policy, "pool": decision.pool, "queue": decision.queue,
                           "reason": decision.reason})
        if decision.alert:
            enqueue(connection, self.schema, channel=decision.alert,
                    key=f"routing:{entity}:{record_id}:{naive_utc(now).isoformat()}",
                    payload={"text": decision.alert_text or decision.reason, "to": [], "entity": entity,
                             "record_id": record_id, "policy": decision.policy},
                    now=now, entity=entity, record_id=record_id)

    # -- what the choice needs from the database ------------------------------------------------
    def _with_readable_key(self, connection: sa.Connection, policy: RoutingPolicySpec,
                           values: Mapping[str, Any]) -> Mapping[str, Any]:
        """For a territory keyed by a link, the values with the linked record's title in place
        of its id: pools are keyed by what people read (a region's name), not by ids."""
        if policy.link_entity is None or policy.field is None or values.get(policy.field) is None:
            return values
        statement = self._titles.get(policy.link_entity)
        if statement is None:
            linked = self.model.entity(policy.link_entity)
            table = self.schema.table(linked.name)
            statement = self._titles[policy.link_entity] = Prepared(
                sa.select(table.c[linked.title_field]).where(table.c.id == sa.bindparam("id")))
        return {**values, policy.field: statement.scalar(connection, {"id": values[policy.field]})}

    def _assignment_counts(self, connection: sa.Connection, policy: RoutingPolicySpec,
                           now: dt.datetime) -> dict[int, tuple[int, int]]:
        """user id → (assignments by this policy today, this week), days and weeks (from Monday)
        in the business timezone; one grouped count over the (policy, user_id, at) index."""
        local = now.astimezone(ZoneInfo(self.model.settings.timezone))
        day = local.replace(hour=0, minute=0, second=0, microsecond=0)
        week = day - dt.timedelta(days=day.weekday())
        since_day, since_week = naive_utc(day), naive_utc(week)
        since = since_day if policy.cap_per_week is None else min(since_day, since_week)
        # rows before this week count for nothing any more: dropped once a week per process (an index
        # range), so the log stays small without a DELETE on every routed record
        if self._pruned.get(policy.name) != since_week:
            self._forget_assignments.run(connection, {"policy": policy.name, "before": since_week})
            self._pruned[policy.name] = since_week
        rows = self._assigned.rows(connection, {"policy": policy.name, "since_day": since_day, "since": since})
        return {int(row.user_id): (int(row.today or 0), int(row.week)) for row in rows}

    def _reps(self, connection: sa.Connection, policy: RoutingPolicySpec,
              now: dt.datetime) -> tuple[list[Rep], dict[str, int]]:
        """Every user as a routing candidate, with open-record counts when the policy needs them
        (one statement when open_when translates to SQL), and the user ids by username."""
        if policy.name not in self._counts:
            table = self.schema.table(policy.entity)
            self._counts[policy.name] = self._count_statement(policy, table) if _needs_counts(policy) else None
        statement = self._counts[policy.name]
        if statement is not None:
            rows = statement.rows(connection, {"limit": _count_limit(policy)})
            counts = {row.id: row.open for row in rows}
        else:
            rows = self._users.rows(connection)
            counts = (self._count_in_python(connection, policy, [row.id for row in rows if row.is_active])
                      if _needs_counts(policy) else {})
        assigned = self._assignment_counts(connection, policy, now) if policy.counts_assignments else {}
        names = {row.id: row.username for row in rows}
        reps = [Rep(row.username,
                    RepStatus.DISABLED if not row.is_active else RepStatus.ON_LEAVE if row.on_leave else RepStatus.ACTIVE,
                    row.team, row.role, counts.get(row.id) or 0, id=row.id, manager=names.get(row.manager_id),
                    assigned_today=assigned.get(row.id, (0, 0))[0],
                    assigned_this_week=assigned.get(row.id, (0, 0))[1]) for row in rows]
        return reps, {row.username: row.id for row in rows}

    def _count_in_python(self, connection: sa.Connection, policy: RoutingPolicySpec,
                         owners: list[int]) -> dict[int, int]:
        """Open records per active user (`owners`) for an open_when too rich for SQL: the
        condition is evaluated on every record they own."""
        table = self.schema.table(policy.entity)
        entity = self.model.entity(policy.entity)
        counts: dict[int, int] = {}
        for row in connection.execute(sa.select(table).where(table.c.owner.in_(owners))).mappings():
            record = self.records.record_from_row(entity, row)
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
        users = self.schema.users
        open_ = sa.select(table.c.owner).where(table.c.owner == users.c.id, condition).correlate(users)
        if _count_limit(policy) is not None:
            open_ = open_.limit(sa.bindparam("limit"))
        count = sa.select(sa.func.count()).select_from(open_.subquery()).scalar_subquery()
        return Prepared(self._users_select.add_columns(
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


def _count_limit(policy: RoutingPolicySpec) -> int | None:
    """How far open records need counting: the highest cap, unless least-loaded routing must
    compare reps who have no cap (then every open record counts)."""
    caps = [cap for cap in (policy.cap, *dict(policy.caps).values()) if cap is not None]
    if not caps or (policy.cap is None and Strategy.LEAST_LOADED in (policy.strategy, policy.within)):
        return None
    return max(caps)


def _needs_counts(policy: RoutingPolicySpec) -> bool:
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
        operations: dict[type[ast.cmpop], Callable[[], Any]] = {ast.Eq: lambda: column == value, ast.NotEq: lambda: column != value,
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
