"""Re-routing records after an outage: `crm route ENTITY --where EXPR` and the unassigned list's
bulk action.

A routing policy that sent records to an empty pool parks them (routing_queued/unassigned);
after the admin fixes the policy, the stranded records are routed again through the same
policies (`assign: auto`: the first policy whose match holds) in one transaction per record,
each with a `rerouted` event saying why and by whom. A record still nobody can take is parked
again, loudly, as at creation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from engine.metamodel import Metamodel
from engine.metamodel.errors import NOWHERE
from engine.metamodel.expressions import ExpressionSyntaxError, parse_expression
from engine.rules.expressions import Evaluator
from engine.rules.rules import evaluate_condition
from engine.rules.time import Clock
from engine.runtime.automation.routing import Router
from engine.runtime.records.actors import Actor
from engine.runtime.records.events import EventKind, append_event
from engine.runtime.records.service import RecordService
from engine.runtime.records.values import expression_values
from engine.runtime.storage.database import Database
from engine.runtime.storage.tables import Schema

_ALWAYS_THERE = frozenset({"id", "owner", "created_at", "updated_at", "version", "created_by"})
_CHUNK = 500


class RerouteRefused(ValueError):
    """The request cannot run (unknown entity, a bad --where); the message says how to fix it."""


@dataclass
class RerouteReport:
    matched: int = 0
    assigned: dict[str, int] = field(default_factory=dict)  # username → records given to them
    parked: list[int] = field(default_factory=list)         # ids nobody could take (parked again)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (id, why): refused by the record's own checks

    @property
    def assigned_count(self) -> int:
        return sum(self.assigned.values())

    def summary(self) -> str:
        people = ", ".join(f"{name} {count}" for name, count in sorted(self.assigned.items())) or "nobody"
        return (f"{self.matched} matched, {self.assigned_count} assigned ({people}), "
                f"{len(self.parked)} still unassigned, {len(self.skipped)} refused")


class Rerouter:
    """Routes existing records again through the blueprint's routing policies."""

    def __init__(self, model: Metamodel, schema: Schema, db: Database, clock: Clock, records: RecordService,
                 router: Router, evaluator: Evaluator) -> None:
        self.model = model
        self.schema = schema
        self.db = db
        self.clock = clock
        self.records = records
        self.router = router
        self.evaluator = evaluator

    def matching(self, entity: str, where: str) -> list[int]:
        """Ids of the entity's records for which `where` holds, oldest first."""
        spec = self._entity(entity)
        try:
            expression = parse_expression(where, NOWHERE)
        except ExpressionSyntaxError as exc:
            raise RerouteRefused(f"--where {where!r}: {exc}") from None
        unknown = sorted(expression.names - set(spec.field_names()) - _ALWAYS_THERE)
        if unknown:
            raise RerouteRefused(f"--where {where!r}: {entity} has no field {', '.join(unknown)} "
                                 f"(fields: {', '.join(spec.field_names())})")
        table = self.schema.table(entity)
        ids: list[int] = []
        last = 0
        while True:
            with self.db.read() as connection:
                rows = list(connection.execute(sa.select(table).where(table.c.id > last).order_by(table.c.id)
                                               .limit(_CHUNK)).mappings())
            if not rows:
                return ids
            for row in rows:
                values = expression_values(spec, self.records.record_from_row(spec, row))
                if evaluate_condition(expression, values, self.evaluator).is_true:
                    ids.append(int(row["id"]))
            last = int(rows[-1]["id"])

    def reroute(self, entity: str, ids: Sequence[int], *, actor: Actor, reason: str) -> RerouteReport:
        """Route each record again (one transaction each); the owner is set through RecordService,
        so rules, SLA clocks and the timeline see an ordinary assignment."""
        spec = self._entity(entity)
        if not self.model.policies_for(entity):
            raise RerouteRefused(f"{entity} has no routing policy: add one under routing: in the blueprint")
        report = RerouteReport(matched=len(ids))
        table = self.schema.table(entity)
        users = self.schema.users
        for record_id in ids:
            now = self.clock.now()
            with self.db.write() as connection:
                row = connection.execute(sa.select(table).where(table.c.id == record_id)).mappings().first()
                if row is None:
                    report.skipped.append((record_id, "deleted meanwhile"))
                    continue
                record = self.records.record_from_row(spec, row)
                owner, step = self.router.route(connection, entity, None, expression_values(spec, record), now,
                                                rule="reroute")
                decision = step.decision
                data: dict[str, Any] = {"reason": reason, "by": actor.username, "policy": step.policy,
                                        "from": record.get("owner"), "note": step.note,
                                        "outcome": decision.outcome.value if decision else None}
                if owner is None:
                    if decision is not None:
                        self.router.alert(connection, entity, record_id, decision, now)
                    append_event(connection, self.schema, entity=entity, record_id=record_id,
                                 kind=EventKind.REROUTED, actor_id=actor.id, at=now, data=data)
                    report.parked.append(record_id)
                    continue
                try:
                    self.records.update(entity, record_id, {"owner": owner}, actor=actor, within=connection,
                                        origin="rule")
                except Exception as exc:  # noqa: BLE001 — one refused record must not stop the rest
                    report.skipped.append((record_id, str(getattr(exc, "message", exc))))
                    continue
                username = connection.execute(sa.select(users.c.username).where(users.c.id == owner)).scalar_one()
                append_event(connection, self.schema, entity=entity, record_id=record_id, kind=EventKind.REROUTED,
                             actor_id=actor.id, at=now, data={**data, "to": owner, "username": username})
                report.assigned[username] = report.assigned.get(username, 0) + 1
        return report

    def _entity(self, entity: str) -> Any:
        if not self.model.has_entity(entity):
            known = ", ".join(spec.name for spec in self.model.entities)
            raise RerouteRefused(f"there is no entity '{entity}' (known: {known})")
        return self.model.entity(entity)
