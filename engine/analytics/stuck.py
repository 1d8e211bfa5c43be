"""Stuck records: those whose time in their current stage is above the stage's norm (the days
declared per stage in a `stuck` widget's `norms:`). The time in the stage runs from the record's
last move into it (`crm_stage_moves`, written with each `stage_changed` event) or, for a record
that never moved, from its creation. The list filter `stuck=<funnel>:<stage>=<days>,…` holds
exactly the records a stuck widget counts, in lists, the JSON API and exports."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.metamodel import Metamodel
from engine.runtime.records.errors import QueryInvalid
from engine.runtime.storage.tables import Schema
from engine.runtime.storage.times import naive_utc


@dataclass(frozen=True, slots=True)
class StuckRecord:
    """One stuck record: its id, title, stage, days in the stage and the stage's norm."""

    id: int
    title: str
    stage: str
    days: float
    norm: float


def stuck_filter_value(funnel: str, norms: tuple[tuple[str, float], ...]) -> str:
    return f"{funnel}:" + ",".join(f"{stage}={days:g}" for stage, days in norms)


def parse_stuck(model: Metamodel, entity: str, value: str) -> tuple[str, tuple[tuple[str, float], ...]]:
    """`<funnel>:<stage>=<days>,…` → (funnel, norms); a clear QueryInvalid naming `stuck` otherwise."""
    funnel_name, sep, text = value.partition(":")
    known = [spec.name for spec in model.funnels if spec.entity == entity]
    if not sep or not text:
        raise QueryInvalid("stuck= takes <funnel>:<stage>=<days>,…, e.g. opportunity_sales:quote=6.8,contract=10",
                           field="stuck")
    if funnel_name not in known:
        raise QueryInvalid(f"stuck=: {entity} has no funnel '{funnel_name}' (known: {', '.join(known) or 'none'})",
                           field="stuck")
    funnel = model.funnel(funnel_name)
    norms = []
    for part in text.split(","):
        stage, _, days_text = part.partition("=")
        if not funnel.has_stage(stage):
            raise QueryInvalid(f"stuck=: funnel '{funnel_name}' has no stage '{stage}' "
                               f"(known: {', '.join(s.name for s in funnel.stages)})", field="stuck")
        try:
            days = float(days_text)
        except ValueError:
            days = -1.0
        if not days > 0:
            raise QueryInvalid(f"stuck=: '{part}' needs a number of days above 0, e.g. {stage}=7", field="stuck")
        norms.append((stage, days))
    return funnel_name, tuple(norms)


def entered_at(model: Metamodel, schema: Schema, funnel_name: str, table: sa.Table) -> Any:
    """When the record entered its current stage: its last move into it, else its creation."""
    funnel = model.funnel(funnel_name)
    moves = schema.stage_moves
    last = sa.select(sa.func.max(moves.c.at)).where(
        moves.c.record_id == table.c.id, moves.c.funnel == funnel.name,
        moves.c.to_stage == table.c[funnel.field]).scalar_subquery()
    return sa.func.coalesce(last, table.c.created_at)


def stuck_condition(model: Metamodel, schema: Schema, entity: str, table: sa.Table, value: str,
                    now: dt.datetime) -> Any:
    """Records in one of the stages longer than that stage's days."""
    funnel_name, norms = parse_stuck(model, entity, value)
    field = table.c[model.funnel(funnel_name).field]
    since = entered_at(model, schema, funnel_name, table)
    moment = naive_utc(now)
    return sa.or_(*(sa.and_(field == stage, since < moment - dt.timedelta(days=days)) for stage, days in norms))
