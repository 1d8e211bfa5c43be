"""Dashboards (blueprint `dashboards:`): number cards, bar and funnel charts (pygal SVG, drawn on
the server, no JavaScript), tables, stage tables and heat maps; every figure is a link to the
list of exactly the records it counts, within what the viewer may read. Each widget exports as
CSV and XLSX."""

from __future__ import annotations

import csv
import functools
import html
import io
import re
from dataclasses import dataclass, field
from typing import Any

import pygal
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from engine.analytics import Analytics, Figure, Period, StageCell, period_at, point_name, split_period
from engine.io.exports import csv_cell
from engine.metamodel.dashboards import PERIODS, Aggregate, DashboardSpec, StageValue, WidgetKind, WidgetSpec
from engine.metamodel.entities import EntitySpec, FieldType
from engine.metamodel.roles import Scope
from engine.runtime.records.actors import Actor
from engine.runtime.records.errors import NotFound, QueryInvalid
from engine.runtime.web.screens.catalogue import catalogue
from engine.runtime.web.screens.i18n import translate
from engine.runtime.web.screens.site import Site

class _Words:
    """The dashboards' own words in one language (catalogue ids `dash_<key>`)."""

    def __init__(self, lang: str) -> None:
        self.lang = lang

    def __getitem__(self, key: str) -> str:
        return translate(self.lang, f"dash_{key}")

    def as_dict(self) -> dict[str, str]:
        """Every dashboard word, for the template (`page.words.apply`)."""
        return {key[5:]: text for key, text in catalogue(self.lang).items() if key.startswith("dash_")}


def _row_label(entity: EntitySpec | None, name: str, lang: str) -> str:
    """A heat map's row header: the field's label where the entity has it."""
    return entity.field(name).label.text(lang) if entity is not None and entity.has_field(name) else name


def _period_label(lang: str, period: str) -> str:
    return translate(lang, f"period_{period}")


STAGE_COLUMNS = ("entered", "left", "dwell_mean", "dwell_median", "conversion", "skip_rate", "return_rate")
_SCOPE_ORDER = [Scope.NONE, Scope.OWN, Scope.TEAM, Scope.ALL]
ANOMALY = 1.5  # a heat-map cell this many times its stage's overall value is marked red
StageCache = dict[tuple[str, str | None, StageValue | None], Any]  # a page's stage figures: (funnel, rows, value)


@dataclass(frozen=True, slots=True)
class Link:
    text: str
    url: str
    css: str = ""
    title: str = ""


@dataclass(frozen=True, slots=True)
class WidgetView:
    name: str
    kind: str
    title: str
    svg: str = ""
    header: tuple[str, ...] = ()
    rows: tuple[tuple[Any, ...], ...] = ()   # first item a str (row label), then Links
    card: Link | None = None
    detail: Link | None = None               # a rate card: "hits / records", linking to the records it is over
    previous: str = ""
    colour: str = ""
    target: str = ""
    empty: bool = False
    exports: tuple[Link, ...] = ()


@dataclass(frozen=True, slots=True)
class DashboardContext:
    name: str
    title: str
    period: str
    period_text: str
    periods: tuple[Link, ...]
    filters: tuple[tuple[str, str, tuple[tuple[str, str], ...], str], ...]  # name, label, options, chosen
    widgets: tuple[WidgetView, ...]
    words: dict[str, str] = field(default_factory=dict)
    others: tuple[Link, ...] = ()


def fmt(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "–"
    if percent:
        return f"{value * 100:.1f}%"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.2f}"


def _analytics(site: Site) -> Analytics:
    analytics = site.services.analytics
    if analytics is None:
        raise NotFound("this installation has no dashboards")
    return analytics


def dashboard_spec(site: Site, name: str) -> DashboardSpec:
    if not any(spec.name == name for spec in site.model.dashboards):
        raise NotFound(f"no dashboard '{name}'")
    return site.model.dashboard(name)


def _choices(site: Site, spec: DashboardSpec, request: Request, lang: str) -> tuple[Period, dict[str, str]]:
    wanted = request.query_params.get("period") or spec.period
    if wanted not in PERIODS:
        raise QueryInvalid(f"period '{wanted}' is not one of {', '.join(PERIODS)}", field="period")
    period = period_at(wanted, site.services.clock.now(), site.model.settings.timezone)
    filters = {name: request.query_params.get(name, "").strip() for name in spec.filters}
    return period, {name: value for name, value in filters.items() if value}


def dashboard_screen(site: Site, request: Request, actor: Actor, name: str) -> HTMLResponse:
    spec = dashboard_spec(site, name)
    lang = site.lang(request)
    words = _Words(lang)
    period, filters = _choices(site, spec, request, lang)
    analytics = _analytics(site)
    readable = [widget for widget in spec.widgets if site.may(actor, widget.entity, "read")]  # others left out
    cache: StageCache = {}
    views = tuple(_widget(site, analytics, spec, widget, actor, period, filters, lang, request, cache)
                  for widget in readable)
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "period"]
    periods = tuple(Link(_period_label(lang, p), _url(f"/dashboards/{name}",
                                                                                 [*query, ("period", p)]),
                         "current" if p == period.name else "") for p in PERIODS)
    context = DashboardContext(name, spec.label.text(lang), period.name, period.text(), periods,
                               tuple(_filter_control(site, spec, f, filters.get(f, ""), lang, actor)
                                     for f in spec.filters),
                               views, words.as_dict(),
                               tuple(Link(other.label.text(lang), f"/dashboards/{other.name}",
                                          "current" if other.name == name else "") for other in site.model.dashboards))
    return site.render(request, actor, "dashboard.html", context, context.title)


def widget_period(site: Site, widget: WidgetSpec, period: Period) -> Period:
    """The page's period, or the widget's own (`span: week`: this week, whatever the page shows)."""
    if widget.span is None:
        return period
    return period_at(widget.span, site.services.clock.now(), site.model.settings.timezone)


def _url(path: str, params: list[tuple[str, str]]) -> str:
    from urllib.parse import urlencode
    return path + (f"?{urlencode(params)}" if params else "")


def _filter_control(site: Site, spec: DashboardSpec, name: str, chosen: str, lang: str,
                    actor: Actor) -> tuple[str, str, tuple[tuple[str, str], ...], str]:
    if name == "owner":  # only the people whose records the viewer may read
        scope = max((site.scope(actor, w.entity, "read") for w in spec.widgets), key=_SCOPE_ORDER.index)
        teams = site.user_teams()
        names = {k: v for k, v in site.user_names().items() if scope is Scope.ALL or k == actor.id or
                 (scope is Scope.TEAM and actor.team is not None and teams.get(k) == actor.team)}
        return name, _Words(lang)["owner"], tuple((str(k), v) for k, v in names.items()), chosen
    for widget in spec.widgets:
        entity = site.model.entity(widget.entity)
        if entity.has_field(name):
            field_spec = entity.field(name)
            options = tuple((c.value, c.label.text(lang)) for c in field_spec.choices) \
                if field_spec.type is FieldType.CHOICE else ()
            return name, field_spec.label.text(lang), options, chosen
    return name, name, (), chosen


def _widget(site: Site, analytics: Analytics, spec: DashboardSpec, widget: WidgetSpec, actor: Actor, period: Period,
            filters: dict[str, str], lang: str, request: Request,
            cache: StageCache) -> WidgetView:
    title = widget.label.text(lang)
    words = _Words(lang)
    period = widget_period(site, widget, period)
    query = request.url.query
    exports = tuple(Link(kind.upper(), f"/dashboards/{spec.name}/{widget.name}.{kind}" + (f"?{query}" if query else ""))
                    for kind in ("csv", "xlsx"))
    if widget.kind in (WidgetKind.STAGES, WidgetKind.HEATMAP):
        header, rows = stage_rows(site, analytics, widget, actor, period, filters, lang, cache)
        return WidgetView(widget.name, widget.kind.value, title, header=header, rows=rows, exports=exports,
                          empty=not rows)
    figures = analytics.figures(widget, actor=actor, period=period, filters=filters, lang=lang)
    if widget.kind is WidgetKind.CARD:
        figure = figures[0]
        rate = widget.measure.aggregate is Aggregate.RATE
        previous = None
        if widget.period_field is not None and period.is_bounded:
            previous = analytics.figures(widget, actor=actor, period=period.previous(), filters=filters,
                                         lang=lang)[0].value
        change = ""
        if previous is not None and figure.value is not None:
            delta = figure.value - previous
            change = f"{words['previous']} {fmt(previous, rate)} ({'+' if delta >= 0 else ''}{fmt(delta, rate)})"
        colour = widget.target.colour(figure.value) if widget.target else ""
        target = f"{words['target']} {'≤' if widget.target.better == 'lower' else '≥'} " \
                 f"{fmt(widget.target.value, rate)}" if widget.target else ""
        detail = Link(f"{figure.numerator} / {figure.count}", figure.url,
                      title=f"{title}: {figure.numerator} {words['counted']} / {figure.count} {words['records']}") \
            if rate else None
        return WidgetView(widget.name, "card", title,
                          card=Link(fmt(figure.value, rate), figure.numerator_url if rate else figure.url, colour,
                                    f"{title}: {fmt(figure.value, rate)}"),
                          detail=detail, previous=change, colour=colour, target=target, exports=exports)
    if widget.kind is WidgetKind.STUCK:
        total, url, header, rows = stuck_rows(site, analytics, widget, actor, filters, lang)
        return WidgetView(widget.name, "stuck", title, card=Link(fmt(total), url, "red" if total else "green",
                                                                 f"{title}: {fmt(total)}"),
                          detail=Link(words["all_stuck"].format(n=total), url) if total else None,
                          header=header, rows=rows, exports=exports, empty=not rows)
    if widget.kind is WidgetKind.LINE:
        svg, header, rows = line_chart(site, analytics, widget, actor, period, filters, lang, title)
        return WidgetView(widget.name, "line", title, svg=svg, header=header, rows=rows, exports=exports)
    entity = site.model.entity(widget.entity)
    header, rows = figure_rows(widget, figures, lang, entity)
    before: list[Figure] | None = None
    if widget.kind is WidgetKind.BAR and widget.period_field is not None and period.is_bounded:
        before = _previous_figures(analytics, widget, figures, actor, period, filters, lang)
        header = (*header, f"{words['previous']} {measure_label(widget, 0, lang, entity)}")
        rows = tuple((*row, Link(fmt(old.value), old.url, title=f"{old.label} {words['previous']}: {fmt(old.value)}"))
                     for row, old in zip(rows, before, strict=True))
    svg = chart_svg(widget, figures, title, lang, entity, before, words["previous"]) \
        if widget.kind in (WidgetKind.BAR, WidgetKind.FUNNEL) and figures else ""  # none: the table says 暂无数据
    return WidgetView(widget.name, widget.kind.value, title, svg=svg, header=header, rows=rows, exports=exports,
                      empty=not any(f.count for f in figures))


def measure_label(widget: WidgetSpec, index: int, lang: str, entity: EntitySpec | None = None) -> str:
    words = _Words(lang)
    measure = widget.measures[index]
    if measure.field is None:
        return words["rate"] if measure.aggregate is Aggregate.RATE else words["count"]

    def label(field: str) -> str:
        if entity is not None and entity.has_field(field):
            return entity.field(field).label.text(lang)
        return translate(lang, field) if field in ("created_at", "updated_at") else field
    name = label(measure.field)
    if measure.since is not None:  # a duration in hours
        name = translate(lang, "dash_duration_hours", since=label(measure.since), field=name)
    return translate(lang, "dash_measure", aggregate=words[measure.aggregate.value], field=name)


def figure_rows(widget: WidgetSpec, figures: list[Figure], lang: str,
                entity: EntitySpec | None = None) -> tuple[tuple[str, ...], tuple[tuple[Any, ...], ...]]:
    header = ("", *(measure_label(widget, index, lang, entity) for index in range(len(widget.measures))))
    rows = tuple((figure.label, *(_figure_link(widget, figure, index, value) for index, value in
                                  enumerate(figure.values))) for figure in figures)
    return header, rows


def _figure_link(widget: WidgetSpec, figure: Figure, index: int, value: float | None) -> Link:
    """A figure's cell: a rate links to the records it counts (its numerator), anything else to all of them."""
    if widget.measures[index].aggregate is Aggregate.RATE:
        return Link(fmt(value, True), figure.numerator_url,
                    title=f"{figure.label}: {fmt(value, True)} ({figure.numerator}/{figure.count})")
    return Link(fmt(value), figure.url, title=f"{figure.label}: {fmt(value)}")


def line_chart(site: Site, analytics: Analytics, widget: WidgetSpec, actor: Actor, period: Period,
               filters: dict[str, str], lang: str, title: str
               ) -> tuple[str, tuple[str, ...], tuple[tuple[Any, ...], ...]]:
    """A line widget: its measure for each day/week/month of the period, and for each of the
    previous period's (the second, lighter line), as SVG whose every point links to its records,
    and as a table (one row per point). One query per point: a month by day is 62 small queries."""
    words = _Words(lang)
    entity = site.model.entity(widget.entity)
    rate = widget.measure.aggregate is Aggregate.RATE
    now, zone = site.services.clock.now(), site.model.settings.timezone
    current, before = split_period(period, widget.every, now, zone)

    def point(piece: Period) -> Figure:
        return analytics.figures(widget, actor=actor, period=piece, filters=filters, lang=lang)[0]

    points, old_points = [point(p) for p in current], [point(p) for p in before]
    names = [point_name(p, widget.every) for p in current]
    label = measure_label(widget, 0, lang, entity)
    chart = pygal.Line(**{**_chart_config(title), "show_legend": True, "show_minor_x_labels": False,
                          "x_labels_major_every": max(1, len(names) // 8)})
    chart.x_labels = names

    def series(figures: list[Figure], pieces: tuple[Period, ...], suffix: str) -> list[dict[str, Any] | None]:
        values: list[dict[str, Any] | None] = []
        for figure, piece in zip(figures, pieces, strict=True):
            text = fmt(figure.value, rate) + (f" ({figure.numerator}/{figure.count})" if rate else "")
            values.append(None if figure.value is None and rate else {
                "value": (figure.value or 0) * (100 if rate else 1),
                "label": f"{point_name(piece, widget.every)}{suffix}: {text}",
                "xlink": {"href": figure.numerator_url if rate else figure.url, "target": "_top"}})
        return values

    chart.add(label if not rate else f"{label} (%)", series(points, current, ""))
    chart.add(words["previous"], series(old_points, before, f" {words['previous']}")[:len(current)] +
              [None] * max(0, len(current) - len(before)))
    if rate:
        chart.range = (0, 100)
    svg = _STYLE.sub("", str(chart.render(is_unicode=True)))
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{_attr(title)}" ', 1)
    header = (words["point"], label, *((words["records"],) if rate else ()), f"{words['previous']} {label}")
    rows = []
    for index, (figure, piece) in enumerate(zip(points, current, strict=True)):
        old = old_points[index] if index < len(old_points) else None
        row: list[Any] = [point_name(piece, widget.every), _figure_link(widget, figure, 0, figure.value)]
        if rate:
            row.append(Link(str(figure.count), figure.url, title=f"{point_name(piece, widget.every)}: {figure.count}"))
        row.append(_figure_link(widget, old, 0, old.value) if old is not None else Link("–", "#"))
        rows.append(tuple(row))
    return svg, header, tuple(rows)


def stuck_rows(site: Site, analytics: Analytics, widget: WidgetSpec, actor: Actor, filters: dict[str, str],
               lang: str) -> tuple[int, str, tuple[str, ...], tuple[tuple[Any, ...], ...]]:
    """A stuck widget: how many, the list of them all, and the longest-stuck rows (each a link to the record)."""
    words = _Words(lang)
    funnel = site.model.funnel(str(widget.funnel))
    stage_field = site.model.entity(funnel.entity).field(funnel.field)
    total, url, found = analytics.stuck(widget, actor=actor, filters=filters, now=site.services.clock.now())
    header = ("", stage_field.label.text(lang), words["days_in_stage"], words["norm_days"])
    rows = []
    for item in found:
        page = f"/{funnel.entity}/{item.id}"
        label = stage_field.choice_label(item.stage, lang)
        rows.append((item.title, Link(label, page, title=f"{item.title}: {label}"),
                     Link(fmt(item.days), page, "anomaly", f"{item.title}: {fmt(item.days)} > {fmt(item.norm)}"),
                     Link(fmt(item.norm), page, title=f"{label}: {fmt(item.norm)}")))
    return total, url, header, tuple(rows)


def stage_rows(site: Site, analytics: Analytics, widget: WidgetSpec, actor: Actor, period: Period,
               filters: dict[str, str], lang: str, cache: StageCache | None = None
               ) -> tuple[tuple[str, ...], tuple[tuple[Any, ...], ...]]:
    words = _Words(lang)
    funnel = site.model.funnel(str(widget.funnel))
    cache = {} if cache is None else cache  # one page asks for a funnel's overall figures once

    def cells_by(rows: str | None, value: StageValue | None = None) -> dict[Any, dict[str, StageCell]]:
        if (funnel.name, rows, value) not in cache:  # a heat map's rows need only the value it shows
            cache[(funnel.name, rows, value)] = analytics.stage_cells(
                funnel, actor=actor, period=period, filters=filters, rows=rows, lang=lang,
                values=None if value is None else (value,))
        return dict(cache[(funnel.name, rows, value)])

    overall = cells_by(None)[None]
    if widget.kind is WidgetKind.STAGES:
        header = (words["stage"], *(words[column] for column in STAGE_COLUMNS))
        rows = []
        for cell in overall.values():
            if not cell.entered and not cell.left:
                continue
            rows.append((cell.label, *(_stage_link(cell, StageValue(column)) for column in STAGE_COLUMNS)))
        return header, tuple(rows)
    cells = cells_by(widget.rows, widget.value)
    labels = analytics.row_labels(funnel, str(widget.rows), cells.keys(), lang)
    stages = [stage.name for stage in funnel.stages if overall[stage.name].left or overall[stage.name].entered]
    header = (words["owner"] if widget.rows == "owner" else _row_label(site.model.entity(funnel.entity) if site.model.has_entity(funnel.entity) else None,
                                                                   str(widget.rows), lang),
              *(overall[stage].label for stage in stages))
    declared_norms = dict(widget.norms) if widget.value in (StageValue.DWELL_MEAN, StageValue.DWELL_MEDIAN) else {}
    rows = []
    for key, row in cells.items():
        links = []
        for stage in stages:
            cell, norm = row[stage], overall[stage].value(widget.value)
            value = cell.value(widget.value)
            red = value is not None and norm is not None and norm > 0 and value > ANOMALY * norm
            declared = declared_norms.get(stage)  # the stage's declared norm (days), for dwell cells
            note = f" — {words['above_norm']} ({fmt(norm, _is_rate(widget.value))})" if red else ""
            if declared is not None and value is not None and value > declared and not red:
                red, note = True, f" — {words['above_declared']} ({fmt(declared)})"
            links.append(_stage_link(cell, widget.value, "anomaly" if red else "", note))
        rows.append((labels.get(key, str(key)), *links))
    return header, tuple(rows)


def _is_rate(value: StageValue) -> bool:
    return value in (StageValue.CONVERSION, StageValue.SKIP_RATE, StageValue.RETURN_RATE)


def _stage_link(cell: StageCell, value: StageValue, css: str = "", note: str = "") -> Link:
    text = fmt(cell.value(value), _is_rate(value))
    return Link(text, cell.url(value), css, f"{cell.label}: {text}{note}")


# -- charts: pygal SVG, inline, styled by /dashboards/charts.css -------------------------------
_STYLE = re.compile(r"<style[^>]*>.*?</style>|<script[^>]*>.*?</script>", re.S)


def _chart_config(title: str) -> dict[str, Any]:
    return {"title": title, "disable_xml_declaration": True, "js": [], "no_prefix": True, "show_legend": False,
            "width": 640, "height": 320, "print_values": True, "truncate_label": 12,
            "no_data_text": "",  # (pygal's is English; an empty chart is not drawn, its table says so)
            "style": pygal.style.Style(font_family="sans-serif", background="transparent",
                                       plot_background="transparent", colors=("#2f6fdf", "#7aa7ef"))}


def _chart(kind: WidgetKind, title: str) -> Any:
    config = _chart_config(title)
    if kind is WidgetKind.FUNNEL:
        return pygal.HorizontalBar(**config)
    return pygal.Bar(**config)


def _previous_figures(analytics: Analytics, widget: WidgetSpec, figures: list[Figure], actor: Actor,
                      period: Period, filters: dict[str, str], lang: str) -> list[Figure]:
    """The previous period's figure for each group shown now, in the same order (0 where it had none)."""
    return analytics.figures(widget, actor=actor, period=period.previous(), filters=filters, lang=lang,
                             keys=[figure.key for figure in figures])


def chart_svg(widget: WidgetSpec, figures: list[Figure], title: str, lang: str, entity: EntitySpec,
              before: list[Figure] | None = None, previous_word: str = "") -> str:
    """The chart as inline SVG: its <title> names it, each bar is a link to its records and
    says its number; pygal's style sheet is served once from /dashboards/charts.css. With
    `before`, a second, lighter bar per group is the previous period's figure, linking to its records."""
    chart = _chart(widget.kind, title)
    shown = list(reversed(figures)) if widget.kind is WidgetKind.FUNNEL else figures
    chart.x_labels = [figure.label for figure in shown]
    if widget.kind is not WidgetKind.FUNNEL and len(shown) * (2 if before is not None else 1) > 8:
        chart.x_label_rotation = 30  # side by side, ten sources' names ran into each other
    chart.add(measure_label(widget, 0, lang, entity), [
        {"value": figure.value or 0, "label": f"{figure.label}: {fmt(figure.value)}",
         "xlink": {"href": figure.url, "target": "_top"}} for figure in shown])
    if before is not None:
        chart.show_legend = True
        chart.add(previous_word, [
            {"value": figure.value or 0, "label": f"{figure.label} {previous_word}: {fmt(figure.value)}",
             "xlink": {"href": figure.url, "target": "_top"}} for figure in before])
    svg = _STYLE.sub("", str(chart.render(is_unicode=True)))
    return svg.replace("<svg ", f'<svg role="img" aria-label="{_attr(title)}" ', 1)


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


@functools.lru_cache(maxsize=1)
def chart_css() -> str:
    """pygal's style sheet, every rule scoped to the charts (pygal writes it unprefixed here).
    pygal writes a series' colour rule only for series the chart has: the sample has as many as
    a chart can (this period and the previous one), or every bar was drawn grey."""
    sample = _chart(WidgetKind.BAR, "x")
    for series in range(len(_chart_config("x")["style"].colors)):
        sample.add(str(series), [1])
    rendered = str(sample.render(is_unicode=True))
    sheet = html.unescape("\n".join(re.findall(r"<style[^>]*>(.*?)</style>", rendered, re.S)))
    rules = []
    for selectors, body in re.findall(r"([^{}]*)\{([^{}]*)\}", sheet):
        scoped = ",".join(f".pygal-chart {part.strip()}".rstrip() for part in selectors.split(","))
        rules.append(f"{scoped}{{{body}}}")
    return "\n".join(rules)


def charts_css_response() -> Response:
    return Response(chart_css(), media_type="text/css", headers={"Cache-Control": "max-age=3600"})


# -- export -----------------------------------------------------------------------------------
def export_widget(site: Site, request: Request, actor: Actor, name: str, widget_name: str, kind: str) -> Response:
    spec = dashboard_spec(site, name)
    if not any(w.name == widget_name for w in spec.widgets) or kind not in ("csv", "xlsx"):
        raise NotFound(f"dashboard '{name}' has no widget '{widget_name}' to export as {kind}")
    widget = spec.widget(widget_name)
    lang = site.lang(request)
    period, filters = _choices(site, spec, request, lang)
    period = widget_period(site, widget, period)
    analytics = _analytics(site)
    site.records.access.require(actor, widget.entity, "export")
    if widget.kind in (WidgetKind.STAGES, WidgetKind.HEATMAP):
        header, rows = stage_rows(site, analytics, widget, actor, period, filters, lang)
    elif widget.kind is WidgetKind.STUCK:
        _, _, header, rows = stuck_rows(site, analytics, widget, actor, filters, lang)
    elif widget.kind is WidgetKind.LINE:
        _, header, rows = line_chart(site, analytics, widget, actor, period, filters, lang, widget.label.text(lang))
    else:
        header, rows = figure_rows(widget, analytics.figures(widget, actor=actor, period=period, filters=filters,
                                                             lang=lang), lang, site.model.entity(widget.entity))
    table = [list(header), *([cell.text if isinstance(cell, Link) else cell for cell in row] for row in rows)]
    filename = f"{name}-{widget_name}-{period.name}.{kind}"
    if kind == "csv":
        buffer = io.StringIO()
        csv.writer(buffer).writerows([csv_cell(cell) for cell in line] for line in table)
        return Response("\ufeff" + buffer.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})
    import xlsxwriter  # (the writer crm export uses too)
    out = io.BytesIO()
    book = xlsxwriter.Workbook(out, {"in_memory": True, "strings_to_formulas": False, "strings_to_urls": False})
    sheet = book.add_worksheet(widget_name[:31])
    for row, line in enumerate(table):
        sheet.write_row(row, 0, [_number(cell) for cell in line])
    book.close()
    return Response(out.getvalue(), media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _number(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    plain = text.replace(",", "")
    try:
        return float(plain[:-1]) / 100 if plain.endswith("%") else float(plain)
    except ValueError:
        return text
