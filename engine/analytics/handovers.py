"""The monthly timeliness table of a handover flow: per node (and the role that owns it), how many
items left the node that month, how many within its SLA, how many late, and how many sit there
overdue now. Read from the SLA clocks the nodes' policies keep (crm_clocks): a clock stops, with
`met` saying whether it beat its due time, the moment the item leaves the node — so the table is
what the clocks saw, not a recomputation.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from engine.metamodel.handovers import HandoverSpec
from engine.rules.clocks import ACTIVE, ClockState
from engine.runtime.storage.tables import Schema
from engine.runtime.storage.times import naive_utc


@dataclass(frozen=True, slots=True)
class NodeTimeliness:
    node: str
    role: str
    target: str
    completed: int
    on_time: int
    late: int
    overdue_now: int

    @property
    def on_time_rate(self) -> int | None:
        """Whole percent of the completed items that left in time; None when none left."""
        return round(100 * self.on_time / self.completed) if self.completed else None


def month_bounds(month: str) -> tuple[dt.date, dt.date]:
    """'2026-12' → (2026-12-01, 2027-01-01); ValueError naming the expected form otherwise."""
    try:
        first = dt.datetime.strptime(month, "%Y-%m").date()
    except ValueError:
        raise ValueError(f"month '{month[:20]}' is not a month: write it as YYYY-MM (e.g. 2026-12)") from None
    following = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return first, following


def timeliness(connection: sa.Connection, schema: Schema, handover: HandoverSpec, start: dt.datetime,
               end: dt.datetime) -> tuple[NodeTimeliness, ...]:
    """One row per timed node of `handover`, counting clocks stopped in [start, end)."""
    clocks = schema.clocks
    names = [node.sla for node in handover.nodes if node.sla]
    base = (clocks.c.kind == "sla", clocks.c.entity == handover.entity, clocks.c.name.in_(names))
    stopped = connection.execute(
        sa.select(clocks.c.name, sa.func.count().label("completed"),
                  sa.func.sum(sa.case((clocks.c.met.is_(True), 1), else_=0)).label("on_time"))
        .where(*base, clocks.c.state == ClockState.STOPPED, clocks.c.stopped_at >= naive_utc(start),
               clocks.c.stopped_at < naive_utc(end))
        .group_by(clocks.c.name)).all()
    overdue = {str(row[0]): int(row[1]) for row in connection.execute(
        sa.select(clocks.c.name, sa.func.count())
        .where(*base, clocks.c.state.in_(ACTIVE), clocks.c.breached_at.is_not(None))
        .group_by(clocks.c.name))}
    done = {row.name: (int(row.completed), int(row.on_time or 0)) for row in stopped}
    rows = []
    for node in handover.nodes:
        if node.sla is None:
            continue
        completed, on_time = done.get(node.sla, (0, 0))
        rows.append(NodeTimeliness(node.name, node.role or "", node.target or "", completed, on_time,
                                   completed - on_time, int(overdue.get(node.sla, 0))))
    return tuple(rows)
