"""The list screen: a blueprint list view with filters, search, sort, pages, bulk assign and CSV export.

The query string is the saved filter: it is the same language as the JSON API
(`status=new&region__in=east,south&q=…&sort=-created_at&page=2`), every link on the page
keeps it, and bookmarking the URL saves the filter.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from markupsafe import escape
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.background import BackgroundTask
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response, StreamingResponse

from engine.io.exports import Exporter
from engine.metamodel import SYSTEM_FIELDS, EntitySpec, FieldType, ListViewSpec
from engine.metamodel.roles import Scope
from engine.runtime.records.actors import Actor
from engine.runtime.records.errors import QueryInvalid, RecordError
from engine.runtime.records.queries import ListQuery, parse_list_query
from engine.runtime.web.screens.catalogue import catalogue
from engine.runtime.web.screens.contexts import Choice, Column, FilterControl, ListContext, MenuLink, Row
from engine.runtime.web.screens.error_texts import error_text
from engine.runtime.web.screens.i18n import translate
from engine.runtime.web.screens.site import Site, system_label
from engine.runtime.web.screens.workday import format_amount, has_sla, sla_cells
from engine.runtime.web.screens.workday import text as workday_text
from engine.runtime.web.widgets import local_time

Params = list[tuple[str, str]]
_DATE_TYPES = (FieldType.DATE, FieldType.DATETIME)


def clean_params(request: Request) -> Params:
    """The query string without empty values (an untouched filter select sends `field=`)."""
    return [(key, value) for key, value in request.query_params.multi_items() if value.strip() != ""]


def url_with(path: str, params: Params, **changes: str | None) -> str:
    kept = [(key, value) for key, value in params if key not in changes]
    kept += [(key, value) for key, value in changes.items() if value is not None]
    return path + ("?" + urlencode(kept) if kept else "")


def _query_params(entity: EntitySpec, params: Params) -> QueryParams:
    """Date-range ends written as days include the whole day for datetime fields."""
    adjusted = []
    for key, value in params:
        name, _, op = key.partition("__")
        is_datetime = name in ("created_at", "updated_at") or (entity.has_field(name) and
                                                               entity.field(name).type is FieldType.DATETIME)
        if op == "lte" and is_datetime and len(value) == 10:
            try:
                value = (dt.date.fromisoformat(value) + dt.timedelta(days=1)).isoformat()
                key = f"{name}__lt"
            except ValueError:
                pass
        adjusted.append((key, value))
    return QueryParams(adjusted)


def query_param_label(entity: EntitySpec, name: str, lang: str) -> str:
    """A list URL's parameter as the screen names it: a field's label, a system column's
    (负责人, 创建时间), or the catalogue's word for sort, page, per_page, q, view, sla."""
    if entity.has_field(name):
        return entity.field(name).label.text(lang)
    if name in SYSTEM_FIELDS:
        return system_label(name, lang)
    key = f"query_param_{name}"
    return translate(lang, key) if key in catalogue("en") else name


def list_screen(site: Site, request: Request, actor: Actor, entity_name: str) -> HTMLResponse:
    entity = site.records.entity(entity_name)
    lang = site.lang(request)
    params = clean_params(request)
    view = entity.list_view(dict(params).get("view") or "default")
    error = None
    money = [name for name in view.columns if name in entity.money_fields]  # totalled under the table
    try:
        # only the view's columns are read out of each row (a `fields=` in the URL changes nothing here)
        query = dataclasses.replace(parse_list_query(entity, _query_params(entity, params)), fields=view.columns)
        page = site.records.list(entity.name, query, actor=actor, sums=money)
    except QueryInvalid as invalid:
        label = query_param_label(entity, invalid.field or "", lang)
        error = translate(lang, "bad_query", reason=invalid.message) if lang == "en" else translate(
            lang, "bad_query_field", field=f"（{label}）" if label else "")
        query = parse_list_query(entity, QueryParams({"view": view.name}))
        page = site.records.list(entity.name, query, actor=actor)
    hidden = site.records.access.permissions(actor, entity.name).hidden
    columns = [name for name in view.columns if name not in hidden]
    rows = tuple(render_rows(site, actor, entity, columns, page.items, lang))
    headers = tuple(_column(site, entity, name, lang, query, request.url.path, params) for name in columns)
    if has_sla(site, entity.name):  # the SLA state of each row, sortable overdue-first
        cells = sla_cells(site, entity.name, [row.id for row in rows], lang)
        rows = tuple(dataclasses.replace(row, cells=(*row.cells, cells[row.id])) for row in rows)
        current = query.sort[0] if query.sort else None
        state = "" if current is None or current.field != "sla_due" else ("desc" if current.descending else "asc")
        headers += (Column("sla_due", workday_text(lang, "sla_column"),
                           url_with(request.url.path, params, sort="-sla_due" if state == "asc" else "sla_due",
                                    page=None), state),)
    sums = page.extra.get("sums", {})
    totals = tuple(format_amount(sums.get(name), entity.field(name).currency) if name in sums else ""
                   for name in [column.name for column in headers]) if money else ()
    context = ListContext(
        entity=entity.name, title=view.label.text(lang) if len(entity.list_views) > 1 else entity.plural.text(lang),
        views=tuple(MenuLink(v.label.text(lang), f"/{entity.name}?view={v.name}", v.name == view.name)
                    for v in entity.list_views),
        view=view.name,
        columns=headers,
        rows=rows,
        filters=tuple(_filters(site, actor, entity, view, params, lang, hidden)),
        search=dict(params).get("q", ""), total=page.total_text, page=page.page, pages=page.pages_text,
        query=urlencode([(k, v) for k, v in params if k != "page"]),
        prev_url=url_with(request.url.path, params, page=str(page.page - 1)) if page.page > 1 else None,
        next_url=url_with(request.url.path, params, page=str(page.page + 1)) if page.more else None,
        can_create=site.scope(actor, entity.name, "create") is not Scope.NONE and not entity.is_managed,
        can_export=site.scope(actor, entity.name, "export") is not Scope.NONE,
        can_assign=site.scope(actor, entity.name, "assign") is not Scope.NONE,
        can_reroute=bool(site.model.policies_for(entity.name)) and site.services.rerouter is not None,
        has_board=entity.board is not None,
        assignees=_assignees(site, actor, entity.name), error=error, totals=totals)
    return site.render(request, actor, "list.html", context, context.title)


def _column(site: Site, entity: EntitySpec, name: str, lang: str, query: ListQuery, path: str,
            params: Params) -> Column:
    label = entity.field(name).label.text(lang) if entity.has_field(name) else system_label(name, lang)
    sortable = name in SYSTEM_FIELDS or (entity.has_field(name)
                                             and site.records.schema.kinds.of_field(entity.field(name)).is_orderable)
    current = query.sort[0] if query.sort else None
    state = "" if current is None or current.field != name else ("desc" if current.descending else "asc")
    target = f"-{name}" if state == "asc" else name
    return Column(name, label, url_with(path, params, sort=target, page=None) if sortable else None, state)


def render_rows(site: Site, actor: Actor, entity: EntitySpec, columns: Sequence[str],
                items: Sequence[dict[str, Any]], lang: str) -> Iterator[Row]:
    """Table rows of widget-rendered cells; linked titles and user names are fetched once per column."""
    renderers = [cell_renderer(site, actor, entity, name, [item.get(name) for item in items], lang)
                 for name in columns]
    for item in items:
        yield Row(item["id"], f"/{entity.name}/{item['id']}",
                  tuple(render(item.get(name)) for render, name in zip(renderers, columns)))


def cell_renderer(site: Site, actor: Actor, entity: EntitySpec, name: str, values: Sequence[Any], lang: str) -> Any:
    if entity.has_field(name):
        spec = entity.field(name)
        widget = site.widgets.for_field(spec)
        field = site.field_context(actor, entity, spec, lang, values)
        return lambda value: widget.render_display(field, value, lang)
    if name in ("owner", "created_by"):
        names = site.user_names()
        return lambda value: escape(names.get(value, "") if value is not None else "")
    if name in ("created_at", "updated_at"):
        zone = site.model.settings.timezone
        return lambda value: escape(local_time(value, zone).strftime("%Y-%m-%d %H:%M") if value else "")
    return lambda value: escape("" if value is None else str(value))


def _filters(site: Site, actor: Actor, entity: EntitySpec, view: ListViewSpec, params: Params, lang: str,
             hidden: frozenset[str]) -> Iterator[FilterControl]:
    given = dict(params)
    for name in view.filters:
        if name in hidden:
            continue
        if name == "owner" or (entity.has_field(name) and entity.field(name).type is FieldType.USER):
            label = system_label(name, lang) if name == "owner" else entity.field(name).label.text(lang)
            options = [("me", translate(lang, "owner_me")), ("unassigned", translate(lang, "owner_unassigned")),
                       *((str(key), text) for key, text in site.user_names().items())]
            yield _select(name, label, options, given.get(name, ""))
        elif entity.has_field(name) and entity.field(name).type in (FieldType.CHOICE, FieldType.MULTICHOICE,
                                                                    FieldType.TAGS):
            spec = entity.field(name)
            yield _select(name, spec.label.text(lang), [(c.value, c.label.text(lang)) for c in spec.choices],
                          given.get(name, ""))
        elif entity.has_field(name) and entity.field(name).type is FieldType.BOOLEAN:
            spec = entity.field(name)
            yes_no = [("true", translate(lang, "yes")), ("false", translate(lang, "no"))]
            yield _select(name, spec.label.text(lang), yes_no, given.get(name, ""))
        elif (entity.has_field(name) and entity.field(name).type in _DATE_TYPES) or name in ("created_at",
                                                                                             "updated_at"):
            label = entity.field(name).label.text(lang) if entity.has_field(name) else system_label(name, lang)
            yield FilterControl(name, label, "date_range", value_from=given.get(f"{name}__gte", "")[:10],
                                value_to=given.get(f"{name}__lte", "")[:10])
    if any(policy.entity == entity.name for policy in site.model.slas):  # records by the state of their clocks
        states = [("overdue", "overdue"), ("due_within:1h", "due_1h"), ("due_within:24h", "due_1d"),
                  ("running", "running"), ("paused", "paused")]
        yield _select("sla", translate(lang, "sla_filter"),
                      [(value, translate(lang, f"sla_filter_{key}")) for value, key in states], given.get("sla", ""))


def _select(name: str, label: str, options: list[tuple[str, str]], current: str) -> FilterControl:
    return FilterControl(name, label, "select", tuple(Choice(value, text, value == current)
                                                      for value, text in options))


def _assignees(site: Site, actor: Actor, entity: str) -> tuple[Choice, ...]:
    scope = site.scope(actor, entity, "assign")
    if scope is Scope.NONE:
        return ()
    teams = site.user_teams()
    return tuple(Choice(str(user_id), name) for user_id, name in site.active_users().items()
                 if scope is Scope.ALL or user_id == actor.id or (scope is Scope.TEAM and actor.team
                                                                    and teams.get(user_id) == actor.team))


ROUTE_AGAIN = "route"  # the bulk action's owner choice that routes the ticked records again by the policies


def bulk_assign(site: Site, request: Request, actor: Actor, entity_name: str, form: Any) -> Response:
    """Give the ticked records to one user; each change goes through RecordService (and its checks)."""
    entity = site.records.entity(entity_name)
    lang = site.lang(request)
    back = f"/{entity.name}?{form.get('back', '')}".rstrip("?")
    ids = [int(value) for value in form.getlist("ids") if str(value).isdigit()]
    owner = str(form.get("owner", ""))
    if not ids or not (owner.isdigit() or owner == ROUTE_AGAIN):
        site.flash(request, translate(lang, "nothing_selected"))
        return RedirectResponse(back, status_code=303)
    site.records.access.require(actor, entity.name, "assign")
    if owner == ROUTE_AGAIN and site.services.rerouter is not None and site.model.policies_for(entity.name):
        report = site.services.rerouter.reroute(entity.name, ids, actor=actor,
                                                reason=translate(lang, "rerouted_reason"))
        site.flash(request, translate(lang, "rerouted", count=report.assigned_count, parked=len(report.parked)))
        if report.skipped:
            site.flash(request, translate(lang, "assign_failed", count=len(report.skipped), reason=report.skipped[0][1]))
        return RedirectResponse(back, status_code=303)
    done, refusals = 0, []
    for record_id in ids:
        try:
            site.records.update(entity.name, record_id, {"owner": int(owner)}, actor=actor)
            done += 1
        except RecordError as error:
            refusals.append(error_text(error, lang, site.model, entity.name))
    site.flash(request, translate(lang, "assigned", count=done))
    if refusals:
        site.flash(request, translate(lang, "assign_failed", count=len(refusals), reason=refusals[0]))
    return RedirectResponse(back, status_code=303)


def export_list(site: Site, request: Request, actor: Actor, entity_name: str, kind: str) -> Response:
    """The list with its filters — exactly the records the list shows the actor, every page —
    as CSV (UTF-8 with a BOM, so Excel reads Chinese; streamed) or XLSX (written in constant
    memory to a temporary file). Forbidden (403) before anything is written."""
    entity = site.records.entity(entity_name)
    params = [(key, value) for key, value in clean_params(request) if key not in ("page", "per_page")]
    exporter = Exporter(site.records)
    export = exporter.export(entity.name, parse_list_query(entity, _query_params(entity, params)), actor=actor,
                             lang=site.lang(request))
    name = f"{entity.name}-{site.services.clock.now().strftime('%Y%m%d-%H%M')}"
    if kind == "csv":
        return StreamingResponse(exporter.csv_chunks(export), media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
    handle = tempfile.NamedTemporaryFile(suffix=".xlsx", delete=False)
    handle.close()
    path = Path(handle.name)
    try:
        exporter.write_xlsx(export, path)
    except BaseException:
        path.unlink()
        raise
    return FileResponse(path, filename=f"{name}.xlsx", background=BackgroundTask(path.unlink),
                        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
