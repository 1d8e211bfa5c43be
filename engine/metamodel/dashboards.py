"""`dashboards:` documents: pages of figures over the records and the funnels' stage events.

```yaml
dashboards:
  manager_home:
    label: {zh: 经理首页, en: Manager home}
    home: [sales_manager]          # the first page after sign-in for these roles
    period: month                  # the default period: day, week, month, quarter, year or all
    filters: [region, industry]    # filter boxes; a widget whose entity lacks one ignores it
    widgets:
      - name: pipeline
        kind: funnel               # card, bar, funnel, heatmap, stages or table
        label: {zh: 销售漏斗, en: Pipeline}
        entity: opportunity
        measure: sum:amount        # count, or sum|avg|median|p90 of a number/money field
        by: stage                  # a choice, user or link field, or owner
        where: {stage__ne: lost}   # list filters, the same words as the list's URL
        period: none               # created_at (default) | any date/datetime field | none
        target: {value: 0, better: lower, warn: 5}   # cards: green / yellow / red
      - {name: dwell, kind: heatmap, funnel: opportunity_sales, rows: owner, value: dwell_mean}
      - name: sla_attainment       # a rate: of the records counted, the share also matching `of`
        kind: line                 # one point per `every` (day, week, month) of the period, and the previous period
        entity: lead
        measure: rate
        where: {sla: settled}
        of: {sla: met}
        every: day
        span: month                # the widget's own period, whatever period the page shows
```

Every figure is computed by the same list filters the figure's link opens, so the list
behind a number holds exactly the records it counts. Each name is checked at load, each
problem reported at its file:line with a fix.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from engine.metamodel.checks import Built, Checker, build_items, default_label
from engine.metamodel.entities import EntitySpec, FieldType
from engine.metamodel.errors import NOWHERE, BlueprintError, Location, did_you_mean
from engine.metamodel.labels import Label
from engine.metamodel.messages import Msg
from engine.metamodel.schema import LABEL, NAME, NAME_LIST
from engine.metamodel.source import PathKey
from engine.metamodel.vocabulary import Vocabulary

if TYPE_CHECKING:
    from engine.metamodel.model import Metamodel
    from engine.metamodel.source import SourceDocument


class WidgetKind(enum.Enum):
    CARD = "card"        # one number, its change against the previous period, a target's colour
    BAR = "bar"          # one measure per value of `by`
    FUNNEL = "funnel"    # count and measure per stage of a funnel, in the funnel's order
    HEATMAP = "heatmap"  # a stage metric for each `rows` value × stage
    STAGES = "stages"    # per stage: entered, dwell mean/median, conversion, skip and return rates
    TABLE = "table"      # one row per value of `by`, one column per measure
    LINE = "line"        # one point per `every` of the period, beside the previous period's points
    STUCK = "stuck"      # records whose time in their current stage is above the stage's norm, longest first


class Aggregate(enum.Enum):
    COUNT = "count"
    SUM = "sum"
    AVG = "avg"
    MEDIAN = "median"
    P90 = "p90"
    RATE = "rate"        # of the records counted, the share that also match the widget's `of` filters


class StageValue(enum.Enum):
    ENTERED = "entered"            # records that entered the stage in the period
    LEFT = "left"                  # records that left it in the period
    DWELL_MEAN = "dwell_mean"      # mean days spent in the stage, over those who left it
    DWELL_MEDIAN = "dwell_median"  # median days
    CONVERSION = "conversion"      # of those who left it, the share that went on to the next stage
    SKIP_RATE = "skip_rate"        # of those who left it, the share that skipped over a stage
    RETURN_RATE = "return_rate"    # of those who left it, the share that went back to an earlier stage


PERIODS = ("day", "week", "month", "quarter", "year", "all")
EVERY = ("day", "week", "month")
NO_PERIOD = "none"


@dataclass(frozen=True, slots=True)
class Measure:
    aggregate: Aggregate
    field: str | None = None       # None for count
    since: str | None = None       # a duration in hours: from `since` to `field` (two date/datetime fields)

    @property
    def text(self) -> str:
        if self.field is None:
            return self.aggregate.value
        return f"{self.aggregate.value}:{self.field}" + (f"-{self.since}" if self.since else "")

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(name for name in (self.field, self.since) if name)


@dataclass(frozen=True, slots=True)
class Target:
    value: float
    better: str = "higher"   # higher or lower
    warn: float | None = None  # between value and warn: yellow; beyond warn: red

    def colour(self, actual: float | None) -> str:
        if actual is None:
            return "none"
        good = actual >= self.value if self.better == "higher" else actual <= self.value
        if good:
            return "green"
        if self.warn is None:
            return "red"
        fair = actual >= self.warn if self.better == "higher" else actual <= self.warn
        return "yellow" if fair else "red"


@dataclass(frozen=True, slots=True)
class WidgetSpec:
    name: str
    kind: WidgetKind
    label: Label
    entity: str
    measures: tuple[Measure, ...] = (Measure(Aggregate.COUNT),)
    by: str | None = None
    where: tuple[tuple[str, str], ...] = ()     # list filters (query-string words)
    period_field: str | None = "created_at"     # None: a snapshot of now, no period
    target: Target | None = None
    funnel: str | None = None
    rows: str | None = None                     # heat map rows: owner or a choice/link field
    value: StageValue = StageValue.DWELL_MEAN
    limit: int = 20
    location: Location = NOWHERE
    of: tuple[tuple[str, str], ...] = ()        # a rate's numerator: list filters added to (or replacing) where
    every: str = "day"                          # line charts: one point per day, week or month
    span: str | None = None                     # the widget's own period (this week), whatever the page shows
    norms: tuple[tuple[str, float], ...] = ()    # stuck: (stage, days) — above it a record is stuck

    @property
    def measure(self) -> Measure:
        return self.measures[0]

    @property
    def has_rate(self) -> bool:
        return any(measure.aggregate is Aggregate.RATE for measure in self.measures)


@dataclass(frozen=True, slots=True)
class DashboardSpec:
    name: str
    label: Label
    widgets: tuple[WidgetSpec, ...]
    home: tuple[str, ...] = ()
    period: str = "month"
    filters: tuple[str, ...] = ()
    location: Location = NOWHERE

    def widget(self, name: str) -> WidgetSpec:
        for widget in self.widgets:
            if widget.name == name:
                return widget
        raise KeyError(f"dashboard '{self.name}' has no widget '{name}' "
                       f"(known: {', '.join(w.name for w in self.widgets)})")


MEASURE = {"type": "string", "pattern": r"^(count|rate|(sum|avg|median|p90):[a-z][a-z0-9_]*(-[a-z][a-z0-9_]*)?)$"}
_WIDGET: dict[str, Any] = {
    "type": "object", "required": ["name", "kind"], "additionalProperties": False,
    "properties": {
        "name": NAME, "kind": {"enum": [kind.value for kind in WidgetKind]}, "label": LABEL, "entity": NAME,
        "measure": MEASURE, "measures": {"type": "array", "items": MEASURE, "minItems": 1},
        "by": NAME, "rows": NAME, "funnel": NAME,
        "where": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean", "null"]}},
        "of": {"type": "object", "minProperties": 1,
               "additionalProperties": {"type": ["string", "number", "boolean", "null"]}},
        "every": {"enum": list(EVERY)}, "span": {"enum": list(PERIODS)},
        "norms": {"type": "object", "minProperties": 1, "propertyNames": NAME,
                  "additionalProperties": {"type": "number", "exclusiveMinimum": 0}},
        "period": NAME,
        "value": {"enum": [value.value for value in StageValue]},
        "limit": {"type": "integer", "minimum": 1, "maximum": 200},
        "target": {"type": "object", "required": ["value"], "additionalProperties": False,
                   "properties": {"value": {"type": "number"}, "warn": {"type": "number"},
                                  "better": {"enum": ["higher", "lower"]}}},
    },
}
DASHBOARDS_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["dashboards"], "additionalProperties": False,
    "properties": {"dashboards": {"type": "object", "propertyNames": NAME, "additionalProperties": {
        "type": "object", "required": ["widgets"], "additionalProperties": False,
        "properties": {"label": LABEL, "home": NAME_LIST, "period": {"enum": list(PERIODS)},
                       "filters": NAME_LIST,
                       "widgets": {"type": "array", "items": _WIDGET, "minItems": 1}}}}},
}
_SLICE_TYPES = (FieldType.CHOICE, FieldType.USER, FieldType.LINK, FieldType.BOOLEAN)
_NUMBER_TYPES = (FieldType.INTEGER, FieldType.DECIMAL, FieldType.MONEY)
_TIME_TYPES = (FieldType.DATE, FieldType.DATETIME)


def build_dashboards(documents: list[SourceDocument], model: Metamodel, vocabulary: Vocabulary) -> Built:
    items, errors = build_items("dashboards", Msg("dashboard"), documents, model, vocabulary, _build_dashboard)
    homes: dict[str, str] = {}
    for item in items:
        for role in item.home:
            if role in homes:
                errors.append(BlueprintError(item.location, ("dashboards", item.name, "home"),
                                             Msg("role {role} already has home dashboard '{dashboard}'",
                                                 role=role, dashboard=homes[role]),
                                             Msg("a role has one home page: remove it from one of the two")))
            homes.setdefault(role, item.name)
    return replace(model, dashboards=tuple(items)), errors


def _build_dashboard(checker: Checker, name: str, data: dict[str, Any], path: PathKey,
                     position: int) -> DashboardSpec | None:
    for index, role in enumerate(data.get("home") or ()):
        if role != "admin" and not checker.model.has_role(role):
            checker.error((*path, "home", index), Msg("dashboard '{name}' is the home of unknown role '{role}'",
                                                      name=name, role=role),
                          did_you_mean(role, [spec.name for spec in checker.model.roles]))
    widgets: list[WidgetSpec] = []
    seen: set[str] = set()
    for index, raw in enumerate(data["widgets"]):
        where = (*path, "widgets", index)
        if raw["name"] in seen:
            checker.error((*where, "name"), Msg("widget '{widget}' is declared twice in dashboard '{name}'",
                                                widget=raw["name"], name=name),
                          Msg("give each widget its own name"))
            continue
        seen.add(raw["name"])
        widget = _build_widget(checker, raw, where)
        if widget is not None:
            widgets.append(widget)
    filters = tuple(data.get("filters") or ())
    for index, field in enumerate(filters):
        if field != "owner" and not any(checker.model.entity(w.entity).has_field(field) for w in widgets):
            checker.error((*path, "filters", index), Msg("filter '{field}' is a field of none of the dashboard's "
                                                         "entities", field=field),
                          Msg("name a choice, user or link field of a widget's entity, or owner"))
    return DashboardSpec(name, default_label(data, name), tuple(widgets), tuple(data.get("home") or ()),
                         data.get("period", "month"), filters, checker.doc.where_key(path))


def _build_widget(checker: Checker, raw: dict[str, Any], path: PathKey) -> WidgetSpec | None:
    kind = WidgetKind(raw["kind"])
    funnel_name = raw.get("funnel")
    funnel = None
    if funnel_name is not None:
        known = [spec.name for spec in checker.model.funnels]
        if funnel_name not in known:
            checker.error((*path, "funnel"), Msg("widget '{widget}' names unknown funnel '{funnel}'",
                                                 widget=raw["name"], funnel=funnel_name),
                          did_you_mean(funnel_name, known))
            return None
        funnel = checker.model.funnel(funnel_name)
    elif kind in (WidgetKind.FUNNEL, WidgetKind.HEATMAP, WidgetKind.STAGES, WidgetKind.STUCK):
        checker.error(path, Msg("a {kind} widget needs funnel: <name>", kind=kind.value),
                      Msg("name one of: {names}", names=", ".join(spec.name for spec in checker.model.funnels)))
        return None
    entity_name = raw.get("entity") or (funnel.entity if funnel else None)
    if entity_name is None:
        checker.error(path, Msg("widget '{widget}' needs entity: <name>", widget=raw["name"]),
                      Msg("name the entity whose records it counts"))
        return None
    entity = checker.entity((*path, "entity"), entity_name, Msg("widget '{widget}'", widget=raw["name"]))
    if entity is None:
        return None
    if funnel is not None and funnel.entity != entity.name:
        checker.error((*path, "entity"), Msg("funnel '{funnel}' is of {entity}, not {other}", funnel=funnel.name,
                                             entity=funnel.entity, other=entity.name),
                      Msg("leave entity out: the funnel's entity is used"))
        return None
    measures = tuple(_measure(checker, (*path, "measures" if "measures" in raw else "measure"), entity, text)
                     for text in (raw.get("measures") or [raw.get("measure", "count")]))
    if any(measure is None for measure in measures):
        return None
    by = raw.get("by")
    if kind is WidgetKind.FUNNEL:
        by = funnel.field if funnel else by
    if by is not None and not _slice(checker, (*path, "by"), entity, by):
        return None
    if kind is WidgetKind.LINE and by is not None:
        checker.error((*path, "by"), Msg("a line widget draws one line for the whole (and one for the previous "
                                         "period)"),
                      Msg("remove by:, or use a bar or table widget to slice"), key=True)
        return None
    if kind in (WidgetKind.BAR, WidgetKind.TABLE) and by is None:
        checker.error(path, Msg("a {kind} widget needs by: <field>", kind=kind.value),
                      Msg("name a choice, user or link field, or owner"))
        return None
    rows = raw.get("rows")
    if rows is not None and not _slice(checker, (*path, "rows"), entity, rows):
        return None
    period_field: str | None = raw.get("period", "created_at")
    if period_field == NO_PERIOD:
        period_field = None
    elif period_field not in ("created_at", "updated_at"):  # a field of the entity
        spec = checker.field((*path, "period"), entity, str(period_field), Msg("period"), types=_TIME_TYPES)
        if spec is None:
            return None
    where = _filters(checker, raw, "where", path, entity)
    of = _filters(checker, raw, "of", path, entity)
    if where is None or of is None:
        return None
    is_rate = any(measure is not None and measure.aggregate is Aggregate.RATE for measure in measures)
    if is_rate and not of:
        checker.error(path, Msg("widget '{widget}' measures a rate but has no of: {{…}}", widget=raw["name"]),
                      Msg("add of: with the list filters of the records counted above the line, e.g. of: {{sla: met}}"))
        return None
    if of and not is_rate:
        checker.error((*path, "of"), Msg("widget '{widget}' has of: but measures no rate", widget=raw["name"]),
                      Msg("add measure: rate, or remove of:"), key=True)
        return None
    if kind is WidgetKind.LINE and period_field is None:
        checker.error((*path, "period"), Msg("a line widget draws its measure per {every} of the period, so it "
                                             "needs a period field", every=raw.get("every", "day")),
                      Msg("remove period: none, or name a date/datetime field"), key=True)
        return None
    norms = tuple((str(stage), float(days)) for stage, days in (raw.get("norms") or {}).items())
    if kind is WidgetKind.STUCK and not norms:
        checker.error(path, Msg("a stuck widget needs norms: {{stage: days}} (widget '{widget}')", widget=raw["name"]),
                      Msg("declare the usual days in each stage, e.g. norms: {{quote: 6.8, contract: 10}}"))
        return None
    for stage, _ in norms:
        if funnel is None or not funnel.has_stage(stage):
            known = [spec.name for spec in funnel.stages] if funnel else []
            checker.error((*path, "norms", stage), Msg("norms: '{stage}' is not a stage of funnel '{funnel}'",
                                                       stage=stage, funnel=funnel.name if funnel else "?"),
                          did_you_mean(stage, known), key=True)
            return None
    target = raw.get("target")
    return WidgetSpec(
        raw["name"], kind, default_label(raw, raw["name"]), entity.name, tuple(m for m in measures if m), by, where,
        period_field, Target(float(target["value"]), target.get("better", "higher"),
                             float(target["warn"]) if "warn" in target else None) if target else None,
        funnel.name if funnel else None, rows, StageValue(raw.get("value", "dwell_mean")), int(raw.get("limit", 20)),
        checker.doc.where(path), of, raw.get("every", "day"), raw.get("span"), norms)


_NAMED_FILTERS = ("id", "owner", "created_at", "updated_at", "sla", "within", "funnel", "stuck")


def _filters(checker: Checker, raw: dict[str, Any], key: str, path: PathKey,
             entity: EntitySpec) -> tuple[tuple[str, str], ...] | None:
    """`where:` / `of:` list filters as (query word, value) pairs; None after an unknown field."""
    pairs = tuple((str(name), "" if value is None else str(value).lower() if isinstance(value, bool) else str(value))
                  for name, value in (raw.get(key) or {}).items())
    for name, _ in pairs:
        field = name.partition("__")[0]
        if field not in _NAMED_FILTERS and not entity.has_field(field):
            checker.error((*path, key, name), Msg("{key}: '{field}' is not a field of '{entity}'", key=key,
                                                  field=field, entity=entity.name),
                          did_you_mean(field, entity.field_names()), key=True)
            return None
    return pairs


def _measure(checker: Checker, path: PathKey, entity: EntitySpec, text: str) -> Measure | None:
    aggregate, _, field = text.partition(":")
    if not field:
        return Measure(Aggregate(aggregate))
    field, _, since = field.partition("-")
    if since:  # hours from one moment to another, e.g. median:first_touched_at-created_at
        for name in (field, since):
            if name not in ("created_at", "updated_at") and checker.field(
                    path, entity, name, Msg("duration measure"), types=_TIME_TYPES) is None:
                return None
        return Measure(Aggregate(aggregate), field, since)
    spec = checker.field(path, entity, field, Msg("measure"), types=_NUMBER_TYPES)
    return Measure(Aggregate(aggregate), spec.name) if spec is not None else None


def _slice(checker: Checker, path: PathKey, entity: EntitySpec, name: str) -> bool:
    if name == "owner":
        return True
    return checker.field(path, entity, name, Msg("slice"), types=_SLICE_TYPES) is not None
