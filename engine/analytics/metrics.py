"""Figures for dashboards and `crm metrics`, computed in SQL over the records and the event log.

Two sources:

* **record figures** — count, sum, average, median and p90 of a number field over the records
  matching a widget's list filters, the dashboard's filters, the period and the actor's read
  scope, grouped by a choice/user/link field. The conditions are the list's own
  (`list_conditions`), so the link under a figure opens exactly the records it counts.
* **stage figures** — from the funnels' stage moves in the period (`crm_stage_moves`: a typed row written with each
  `stage_changed` event, in its transaction): per stage, the
  records that entered it, that left it, the mean and median dwell (days) of the stays that
  ended, and the shares of the records leaving it that moved on (conversion), skipped a stage
  or went back (return). The list behind each figure is the named list filter
  `funnel=<what>:<funnel>:<stage>:<from>/<to>` (see `stage_filter`), built from the same
  conditions.

Medians and p90 are nearest-rank: the ⌈q·n⌉-th smallest value (the median of 4 values is the
2nd), so they are values that occur, computed with window functions on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from starlette.datastructures import QueryParams

from engine.analytics.periods import Period
from engine.analytics.stuck import StuckRecord, entered_at, stuck_filter_value
from engine.metamodel import EntitySpec, FieldType, Metamodel
from engine.metamodel.dashboards import Aggregate, Measure, StageValue, WidgetSpec
from engine.metamodel.funnels import FunnelSpec
from engine.runtime.records.actors import Actor
from engine.runtime.records.errors import QueryInvalid
from engine.runtime.records.events import EventKind
from engine.runtime.records.queries import list_conditions, parse_list_query
from engine.runtime.records.service import RecordService
from engine.runtime.storage.database import Database
from engine.runtime.storage.tables import Schema
from engine.runtime.storage.times import naive_utc

STAGE_WHATS = ("entered", "left", "onward", "skip", "return")
ONWARD_MOVES = ("forward", "skip")
_QUANTILES = {Aggregate.MEDIAN: (1, 2), Aggregate.P90: (9, 10)}  # nearest rank: ceil(n·a/b)


@dataclass(frozen=True, slots=True)
class Figure:
    """One number: its group (None: the whole), the group's label, its value and the list behind it."""

    key: Any
    label: str
    values: tuple[float | None, ...]
    count: int
    url: str
    numerator: int = 0          # a rate's widget: the records counted that also match `of`
    numerator_url: str = ""     # … and the list of exactly those

    @property
    def value(self) -> float | None:
        return self.values[0]


@dataclass(frozen=True, slots=True)
class StageCell:
    stage: str
    label: str
    entered: int = 0
    left: int = 0
    onward: int = 0
    skipped: int = 0
    returned: int = 0
    dwell_mean: float | None = None     # days
    dwell_median: float | None = None   # days
    urls: dict[str, str] = field(default_factory=dict)  # entered, left, onward, skip, return → list URL

    @property
    def conversion(self) -> float | None:
        return self.onward / self.left if self.left else None

    @property
    def skip_rate(self) -> float | None:
        return self.skipped / self.left if self.left else None

    @property
    def return_rate(self) -> float | None:
        return self.returned / self.left if self.left else None

    def value(self, which: StageValue) -> float | None:
        return {StageValue.ENTERED: float(self.entered), StageValue.LEFT: float(self.left),
                StageValue.DWELL_MEAN: self.dwell_mean, StageValue.DWELL_MEDIAN: self.dwell_median,
                StageValue.CONVERSION: self.conversion, StageValue.SKIP_RATE: self.skip_rate,
                StageValue.RETURN_RATE: self.return_rate}[which]

    def url(self, which: StageValue) -> str:
        return self.urls[{StageValue.ENTERED: "entered", StageValue.CONVERSION: "onward",
                          StageValue.SKIP_RATE: "skip", StageValue.RETURN_RATE: "return"}.get(which, "left")]


def _iso(moment: dt.datetime | None) -> str:
    return "" if moment is None else moment.isoformat()


class Analytics:
    """Dashboard figures for one runtime; every method takes the actor whose scope applies."""

    def __init__(self, model: Metamodel, schema: Schema, db: Database, records: RecordService) -> None:
        self.model = model
        self.schema = schema
        self.db = db
        self.records = records

    # -- shared ------------------------------------------------------------------------------
    def _params(self, entity: EntitySpec, where: Iterable[tuple[str, str]], filters: Mapping[str, str],
                period_field: str | None, period: Period) -> list[tuple[str, str]]:
        params = [(key, value) for key, value in where]
        for name, value in filters.items():
            if value != "" and (name == "owner" or entity.has_field(name)):
                params.append((name, value))
        if period_field is not None and period.start is not None and period.end is not None:
            if entity.has_field(period_field) and entity.field(period_field).type is FieldType.DATE:
                params += [(f"{period_field}__gte", period.start.date().isoformat()),
                           (f"{period_field}__lt", period.end.date().isoformat())]
            else:
                params += [(f"{period_field}__gte", _iso(period.start)), (f"{period_field}__lt", _iso(period.end))]
        return params

    def _conditions(self, entity: EntitySpec, table: sa.Table, params: Sequence[tuple[str, str]], actor: Actor,
                    also_read: Iterable[str]) -> list[sa.ColumnElement[bool]]:
        """The list's conditions within the actor's read scope. A scope of several branches (a
        team's records or the unowned ones it covers) becomes one OR of the whole conditions per
        branch, so each branch reads its own index (SQLite cannot use one under an OR beside
        other conditions: a manager's open leads per rep took 1.7 s instead of 20 ms at 1M)."""
        query = parse_list_query(entity, QueryParams(list(params)))
        access = self.records.access
        dialect = self.db.engine.dialect.name
        branches = access.row_branches(actor, entity.name, "read", table, dialect=dialect)
        access.check_readable(actor, entity.name, [f.field for f in query.filters] + list(also_read))
        named = self.records.list_scope(entity, table, query, None)
        conditions = list_conditions(entity, table, query, dialect, kinds=self.schema.kinds, scope=named)
        if branches is None:
            return conditions
        if len(branches) == 1:
            return [*conditions, branches[0]]
        return [sa.or_(*(sa.and_(*conditions, branch) for branch in branches))]

    @staticmethod
    def list_url(entity: str, params: Sequence[tuple[str, str]]) -> str:
        return f"/{entity}" + (f"?{urlencode(list(params))}" if params else "")

    def labels(self, entity: EntitySpec, name: str, keys: Iterable[Any], lang: str) -> dict[Any, str]:
        """How each value of the slice field reads: choice labels, user names, linked titles."""
        keys = list(keys)
        none = "（空）" if lang == "zh" else "(none)"
        if name == "owner" or (entity.has_field(name) and entity.field(name).type is FieldType.USER):
            users = self.schema.users
            with self.db.read() as connection:
                names = {row.id: row.display_name or row.username for row in connection.execute(
                    sa.select(users.c.id, users.c.username, users.c.display_name))}
            return {key: names.get(key, f"#{key}") if key is not None else
                    ("未分配" if lang == "zh" else "unassigned") for key in keys}
        spec = entity.field(name)
        if spec.type is FieldType.CHOICE:
            return {key: spec.choice_label(key, lang) if key is not None else none for key in keys}
        if spec.type is FieldType.LINK and spec.link_entity:
            target = self.model.entity(spec.link_entity)
            table = self.schema.table(target.name)
            ids = [key for key in keys if isinstance(key, int)]
            column = table.c[target.title_field] if target.title_field in table.c else table.c.id
            with self.db.read() as connection:
                titles = {row[0]: str(row[1]) for row in connection.execute(
                    sa.select(table.c.id, column).where(table.c.id.in_(ids)))} if ids else {}
            return {key: titles.get(key, f"#{key}") if key is not None else none for key in keys}
        if spec.type is FieldType.BOOLEAN:
            return {key: ("是" if key else "否") if lang == "zh" else ("yes" if key else "no") for key in keys}
        return {key: str(key) if key is not None else none for key in keys}

    # -- record figures ------------------------------------------------------------------------
    def figures(self, widget: WidgetSpec, *, actor: Actor, period: Period, filters: Mapping[str, str],
                lang: str = "zh", by: str | None = None, measures: Sequence[Measure] | None = None,
                keys: Sequence[Any] | None = None) -> list[Figure]:
        """One figure per value of `by` (the widget's by unless given), or one for the whole;
        with `keys`, one per given value of `by`, in that order (to compare with another period)."""
        entity = self.model.entity(widget.entity)
        table = self.schema.table(entity.name)
        by = by if by is not None else widget.by
        measures = list(measures or widget.measures)
        params = self._params(entity, widget.where, filters, widget.period_field, period)
        if all(m.fields for m in measures):  # no count: the records behind it are those holding the values
            params += [(f"{name}__isnull", "false") for name in dict.fromkeys(n for m in measures for n in m.fields)]
        reads = [name for m in measures for name in m.fields] + ([by] if by else [])
        conditions = self._conditions(entity, table, params, actor, reads)
        group = [table.c[by]] if by else []
        columns: list[Any] = [sa.func.count().label("n")]
        numerator_params: list[tuple[str, str]] = []
        if widget.has_rate:  # the numerator: the same list with `of` added (its words replacing where's)
            replaced = {key for key, _ in widget.of}
            numerator_params = [(key, value) for key, value in params if key not in replaced] + list(widget.of)
            numerator = self._conditions(entity, table, numerator_params, actor, reads)
            columns.append(sa.func.count(sa.case((sa.and_(*numerator), 1))).label("hits"))
        for index, measure in enumerate(measures):
            if measure.aggregate is Aggregate.COUNT:
                columns.append(sa.func.count().label(f"m{index}"))
            elif measure.aggregate is Aggregate.SUM:  # a sum over nothing is 0, not unknown
                columns.append(sa.func.coalesce(sa.func.sum(self._value(table, measure)), 0).label(f"m{index}"))
            elif measure.aggregate is Aggregate.AVG:
                columns.append(sa.func.avg(self._value(table, measure)).label(f"m{index}"))
            elif measure.aggregate is Aggregate.RATE:
                columns.append(sa.func.count().label(f"m{index}"))  # the share is hits / n, below
            else:
                columns.append(sa.null().label(f"m{index}"))
        statement = sa.select(*group, *columns).where(*conditions)
        if group:
            statement = statement.group_by(*group)
        with self.db.read() as connection:
            rows = {(row[0] if by else None): row for row in connection.execute(statement)}
            quantiles = {index: self._quantiles(connection, table, conditions, by, self._value(table, measure),
                                                *_QUANTILES[measure.aggregate])
                         for index, measure in enumerate(measures) if measure.aggregate in _QUANTILES}
        keys = list(keys) if keys is not None and by else self._ordered(entity, by, rows, widget.limit) if by else [None]
        labels = self.labels(entity, by, keys, lang) if by else {None: widget.label.text(lang)}
        figures = []
        for key in keys:
            row = rows.get(key)
            values: list[float | None] = []
            for index, _ in enumerate(measures):
                if index in quantiles:
                    values.append(quantiles[index].get(key))
                elif measures[index].aggregate is Aggregate.RATE:
                    values.append(int(row.hits) / int(row.n) if row is not None and row.n else None)
                else:
                    raw = row._mapping[f"m{index}"] if row is not None else (0 if measures[index].aggregate in (
                        Aggregate.COUNT, Aggregate.SUM) else None)
                    values.append(float(raw) if raw is not None else None)
            extra = [] if not by else ([(by, _key_text(key))] if key is not None else [(f"{by}__isnull", "true")])
            figures.append(Figure(key, labels[key], tuple(values), int(row.n) if row is not None else 0,
                                  self.list_url(entity.name, params + extra),
                                  int(row.hits) if row is not None and widget.has_rate else 0,
                                  self.list_url(entity.name, numerator_params + extra) if widget.has_rate else ""))
        return figures

    def _ordered(self, entity: EntitySpec, by: str, rows: Mapping[Any, Any], limit: int) -> list[Any]:
        if by != "owner" and entity.has_field(by) and entity.field(by).type is FieldType.CHOICE:
            order = entity.field(by).choice_values()
            keys: list[Any] = [value for value in order]
            keys += [key for key in rows if key not in order]
            return keys[:max(limit, len(order))]
        return sorted(rows, key=lambda key: (-int(rows[key].n), str(key)))[:limit]

    def _value(self, table: sa.Table, measure: Measure) -> Any:
        """The measured column, or for a duration the hours from `since` to `field`."""
        end = table.c[str(measure.field)]
        if measure.since is None:
            return end
        start = table.c[measure.since]
        if self.db.engine.dialect.name == "postgresql":
            return sa.func.extract("epoch", end - start) / 3600.0
        return (sa.func.julianday(end) - sa.func.julianday(start)) * 24.0

    def _quantiles(self, connection: sa.Connection, table: sa.Table, conditions: Sequence[Any], by: str | None,
                   value: Any, numerator: int, denominator: int) -> dict[Any, float | None]:
        group = table.c[by] if by else sa.literal(0)
        ranked = (sa.select(group.label("g"), value.label("v"),
                            sa.func.row_number().over(partition_by=group, order_by=value).label("rn"),
                            sa.func.count().over(partition_by=group).label("n"))
                  .where(*conditions, value.is_not(None)).subquery())
        wanted = (ranked.c.n * numerator + denominator - 1) // denominator
        rows = connection.execute(sa.select(ranked.c.g, ranked.c.v).where(ranked.c.rn == wanted))
        return {(row.g if by else None): float(row.v) for row in rows}

    # -- stuck records -------------------------------------------------------------------------
    def stuck(self, widget: WidgetSpec, *, actor: Actor, filters: Mapping[str, str], now: dt.datetime
              ) -> tuple[int, str, list[StuckRecord]]:
        """(how many, the list of all of them, the `limit` longest in their stage): the records the
        actor may read, matching the filters, in a stage longer than its norm."""
        funnel = self.model.funnel(str(widget.funnel))
        entity = self.model.entity(funnel.entity)
        table = self.schema.table(entity.name)
        params = self._params(entity, widget.where, filters, None, Period("all", None, None))
        params.append(("stuck", stuck_filter_value(funnel.name, widget.norms)))
        conditions = self._conditions(entity, table, params, actor, [funnel.field])
        since = entered_at(self.model, self.schema, funnel.name, table).label("since")
        title = table.c[entity.title_field] if entity.title_field in table.c else table.c.id
        norms = dict(widget.norms)
        with self.db.read() as connection:
            total = int(connection.execute(sa.select(sa.func.count()).select_from(table).where(*conditions))
                        .scalar_one())
            rows = connection.execute(sa.select(table.c.id, title.label("title"), table.c[funnel.field].label("stage"),
                                                since).where(*conditions).order_by(since, table.c.id)
                                      .limit(widget.limit)).all()
        moment = naive_utc(now)
        found = []
        for row in rows:
            since_value = row.since if isinstance(row.since, dt.datetime) else dt.datetime.fromisoformat(str(row.since))
            days = (moment - since_value.replace(tzinfo=None)).total_seconds() / 86400
            found.append(StuckRecord(int(row.id), str(row.title), str(row.stage), days, norms[str(row.stage)]))
        return total, self.list_url(entity.name, params), found

    # -- stage figures -------------------------------------------------------------------------
    def stage_cells(self, funnel: FunnelSpec, *, actor: Actor, period: Period, filters: Mapping[str, str],
                    rows: str | None = None, lang: str = "zh", values: Collection[StageValue] | None = None
                    ) -> dict[Any, dict[str, StageCell]]:
        """{row value (None without rows): {stage: StageCell}} for the funnel's stages in order.
        With `values`, only the figures those need are computed (a heat map shows one); the others
        stay 0/None. The moves are joined to their records only when a condition or the rows need them."""
        entity = self.model.entity(funnel.entity)
        table = self.schema.table(entity.name)
        params = self._params(entity, (), filters, None, period)
        conditions = self._conditions(entity, table, params, actor, [rows] if rows else [])
        wanted = set(StageValue) if values is None else set(values)
        moves = self.schema.stage_moves
        group = [table.c[rows].label("g")] if rows else []
        source = moves.join(table, table.c.id == moves.c.record_id) if conditions or rows else moves
        left_stage, dwell, record = moves.c.from_stage, moves.c.dwell_seconds, moves.c.record_id

        def distinct_when(condition: Any) -> Any:
            return sa.func.count(sa.distinct(sa.case((condition, record))))

        def partition_of(stage: Any) -> list[Any]:
            return [table.c[rows], stage] if rows else [stage]

        base = [*conditions, *stage_move_conditions(self.schema, funnel, period.utc())]
        figures = {"left": sa.func.count(sa.distinct(record)), "onward": distinct_when(moves.c.move.in_(ONWARD_MOVES)),
                   "skipped": distinct_when(moves.c.move == "skip"), "returned": distinct_when(moves.c.is_return),
                   "dwell_mean": sa.func.avg(dwell)}
        needs = {StageValue.LEFT: ("left",), StageValue.CONVERSION: ("left", "onward"),
                 StageValue.SKIP_RATE: ("left", "skipped"), StageValue.RETURN_RATE: ("left", "returned"),
                 StageValue.DWELL_MEAN: ("dwell_mean",)}
        left_figures = [name for name in figures if any(name in needs.get(value, ()) for value in wanted)]
        statements: list[Any] = []
        if left_figures:
            statements.append(sa.select(*group, left_stage.label("stage"),
                                        *(figures[name].label(name) for name in left_figures))
                              .select_from(source).where(*base, left_stage.is_not(None))
                              .group_by(*partition_of(left_stage)))
        if StageValue.ENTERED in wanted:
            entered_stage = moves.c.to_stage
            statements.append(sa.select(*group, entered_stage.label("stage"),
                                        sa.func.count(sa.distinct(record)).label("entered"))
                              .select_from(source).where(*base).group_by(*partition_of(entered_stage)))
        if StageValue.DWELL_MEDIAN in wanted and rows:
            partition = partition_of(left_stage)
            ranked = (sa.select(*group, left_stage.label("stage"), dwell.label("dwell_median"),
                                sa.func.row_number().over(partition_by=partition, order_by=dwell).label("rn"),
                                sa.func.count().over(partition_by=partition).label("n"))
                      .select_from(source).where(*base, dwell.is_not(None)).subquery())
            statements.append(sa.select(ranked.c.g, ranked.c.stage, ranked.c.dwell_median)
                              .where(ranked.c.rn == (ranked.c.n + 1) // 2))
        found: dict[Any, dict[str, dict[str, Any]]] = {}
        days = {"dwell_mean", "dwell_median"}  # stored in seconds, shown in days
        with self.db.read() as connection:
            for statement in statements:
                for row in connection.execute(statement):
                    figures_of = row._asdict()
                    key, stage_name = figures_of.pop("g", None), figures_of.pop("stage")
                    cell = found.setdefault(key, {}).setdefault(stage_name, {})
                    for name, raw in figures_of.items():
                        cell[name] = (None if raw is None else float(raw) / 86400) if name in days else int(raw)
            if StageValue.DWELL_MEDIAN in wanted and not rows:
                for stage_name, value in self._medians(connection, source, base, left_stage, dwell).items():
                    found.setdefault(None, {}).setdefault(stage_name, {})["dwell_median"] = value / 86400
        keys = sorted(found, key=lambda k: (k is None, str(k))) if rows else [None]
        stage_field = entity.field(funnel.field)
        result: dict[Any, dict[str, StageCell]] = {}
        for key in keys:
            extra = [] if not rows else ([(rows, _key_text(key))] if key is not None else [(f"{rows}__isnull", "true")])
            cells = {}
            for stage in funnel.stages:
                figures_of = found.get(key, {}).get(stage.name, {})
                urls = {what: self.list_url(entity.name, params + extra + [
                    ("funnel", stage_filter_value(what, funnel.name, stage.name, period))]) for what in STAGE_WHATS}
                cells[stage.name] = StageCell(stage.name, stage_field.choice_label(stage.name, lang), urls=urls,
                                              **figures_of)
            result[key] = cells
        return result

    @staticmethod
    def _medians(connection: sa.Connection, source: Any, base: Sequence[Any], stage: Any, dwell: Any
                 ) -> dict[str, float]:
        """Each stage's median dwell (nearest rank) by reading its stays in dwell order up to the
        middle one: at a million leads 70 ms against 215 ms for the window functions, which sort
        with a row number and a count per row. (Per heat-map row that would be a statement per
        cell: rows use the window functions.)"""
        counts = connection.execute(sa.select(stage, sa.func.count(dwell)).select_from(source)
                                    .where(*base, stage.is_not(None)).group_by(stage)).all()
        medians = {}
        for name, count in counts:
            if count:
                medians[str(name)] = float(connection.execute(
                    sa.select(dwell).select_from(source).where(*base, stage == name, dwell.is_not(None))
                    .order_by(dwell).limit(1).offset((int(count) + 1) // 2 - 1)).scalar_one())
        return medians

    def row_labels(self, funnel: FunnelSpec, rows: str, keys: Iterable[Any], lang: str) -> dict[Any, str]:
        return self.labels(self.model.entity(funnel.entity), rows, keys, lang)


def _key_text(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


# -- the `funnel=` list filter: the records behind a stage figure ---------------------------------
def stage_filter_value(what: str, funnel: str, stage: str, period: Period) -> str:
    bounds = "all" if period.start is None or period.end is None else f"{_iso(period.start)}/{_iso(period.end)}"
    return f"{what}:{funnel}:{stage}:{bounds}"


def stage_move_conditions(schema: Schema, funnel: FunnelSpec, bounds: tuple[dt.datetime, dt.datetime] | None
                          ) -> list[Any]:
    """The funnel's stage moves (crm_stage_moves, one per stage_changed event) within `bounds`."""
    moves = schema.stage_moves
    conditions: list[Any] = [moves.c.funnel == funnel.name]
    if bounds is not None:
        conditions += [moves.c.at >= bounds[0], moves.c.at < bounds[1]]
    return conditions


def backfill_stage_moves(connection: sa.Connection, schema: Schema) -> int:
    """Fill crm_stage_moves from the stage_changed events when it is empty (a database from before
    it existed); returns the rows added. Run by the composition root at open."""
    moves, events = schema.stage_moves, schema.events
    if connection.execute(sa.select(moves.c.id).limit(1)).first() is not None:
        return 0
    data = events.c.data
    source = sa.select(data["funnel"].as_string(), events.c.entity, events.c.record_id, events.c.at,
                       data["from"].as_string(), data["to"].as_string(),
                       sa.func.coalesce(data["move"].as_string(), "forward"),
                       sa.func.coalesce(data["return"].as_boolean(), sa.false()),
                       data["dwell_seconds"].as_integer()).where(
        events.c.kind == EventKind.STAGE_CHANGED.value, data["funnel"].as_string().is_not(None),
        data["to"].as_string().is_not(None)).order_by(events.c.id)
    connection.execute(moves.insert().from_select(
        ["funnel", "entity", "record_id", "at", "from_stage", "to_stage", "move", "is_return", "dwell_seconds"],
        source))
    return int(connection.execute(sa.select(sa.func.count()).select_from(moves)).scalar_one())


def stage_condition(model: Metamodel, schema: Schema, entity: str, table: sa.Table, value: str) -> Any:
    """The list filter `funnel=<what>:<funnel>:<stage>:<from>/<to>|all`: records that entered
    the stage, left it, left it onward, skipping, or going back, within the period."""
    try:
        what, funnel_name, stage, bounds_text = value.split(":", 3)
    except ValueError:
        raise QueryInvalid("funnel= takes <what>:<funnel>:<stage>:<from>/<to> (or all), e.g. "
                           "left:opportunity_sales:demo:all", field="funnel") from None
    if what not in STAGE_WHATS:
        raise QueryInvalid(f"funnel=: '{what}' is not one of {', '.join(STAGE_WHATS)}", field="funnel")
    known = [spec.name for spec in model.funnels if spec.entity == entity]
    if funnel_name not in known:
        raise QueryInvalid(f"funnel=: {entity} has no funnel '{funnel_name}' (known: {', '.join(known) or 'none'})",
                           field="funnel")
    funnel = model.funnel(funnel_name)
    if not funnel.has_stage(stage):
        raise QueryInvalid(f"funnel=: funnel '{funnel_name}' has no stage '{stage}' "
                           f"(known: {', '.join(s.name for s in funnel.stages)})", field="funnel")
    bounds = None
    if bounds_text != "all":
        try:
            start_text, end_text = bounds_text.split("/")
            start, end = dt.datetime.fromisoformat(start_text), dt.datetime.fromisoformat(end_text)
            if start.tzinfo is None or end.tzinfo is None:
                raise ValueError
        except ValueError:
            raise QueryInvalid("funnel=: the period is <from>/<to> as ISO times with their offset, "
                               "e.g. 2026-12-01T00:00:00+08:00/2027-01-01T00:00:00+08:00, or all",
                               field="funnel") from None
        bounds = (Period("custom", start, end).utc() or (start, end))
    moves = schema.stage_moves
    conditions = stage_move_conditions(schema, funnel, bounds)
    if what == "entered":
        conditions.append(moves.c.to_stage == stage)
    else:
        conditions.append(moves.c.from_stage == stage)
        if what == "onward":
            conditions.append(moves.c.move.in_(ONWARD_MOVES))
        elif what == "skip":
            conditions.append(moves.c.move == "skip")
        elif what == "return":
            conditions.append(moves.c.is_return)
    return table.c.id.in_(sa.select(moves.c.record_id).where(*conditions))
