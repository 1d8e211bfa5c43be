"""The import screens.

Import, for anyone who may create records of the entity: upload a file (XLSX or CSV, any
encoding) and pick a mapping — one of the blueprint's, or columns matched to fields by their
labels and synonyms, which the screen lets you correct — then the data-health report of the
whole file, before anything is written; "confirm" starts the import in the background and
its page follows the batches (rows written, rate) until the result: created + merged +
rejected, and the error file with the original rows and a reason column.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from engine.io.health import HealthReport
from engine.io.imports import ImportPlan, ImportRecord, Importer, ImportRefused
from engine.io.mapping import Suggestion, mapping_from_suggestions, suggest_mapping
from engine.io.readers import FileUnreadable, Table, read_bytes
from engine.metamodel import FieldType
from engine.metamodel.imports import CREATED_AT, OWNER, ImportSpec, created_at_field
from engine.metamodel.labels import Label
from engine.metamodel.roles import Scope
from engine.runtime.records.actors import Actor
from engine.runtime.records.errors import NotFound, QueryInvalid
from engine.runtime.records.permissions import Forbidden
from engine.runtime.web.screens.catalogue import catalogue
from engine.runtime.web.screens.i18n import translate
from engine.runtime.web.screens.site import Site
from engine.runtime.web.widgets import local_time

SUGGESTED = "_suggested"
MAX_UPLOAD = 200 * 1024 * 1024


@dataclass(frozen=True)
class Option:
    value: str
    label: str
    selected: bool = False


@dataclass(frozen=True)
class ColumnChoice:
    column: str
    options: tuple[Option, ...]
    why: str


@dataclass(frozen=True)
class ImportsContext:
    entities: tuple[Option, ...]
    mappings: tuple[tuple[str, str, str], ...]        # (name, the entity's label, label)
    imports: tuple[dict[str, Any], ...]
    error: str = ""
    file_id: int | None = None
    file_name: str = ""
    entity: str = ""
    mapping: str = ""
    columns: tuple[ColumnChoice, ...] = ()
    defaults: tuple[ColumnChoice, ...] = ()
    history: bool = False
    report_html: str = ""
    can_run: bool = False
    entity_label: str = ""


def _importer(site: Site) -> Importer:
    return Importer(site.records, site.services.clock)


def _entities(site: Site, actor: Actor, lang: str, chosen: str = "") -> tuple[Option, ...]:
    return tuple(Option(entity.name, entity.label.text(lang), entity.name == chosen) for entity in site.model.entities
                 if not entity.is_managed and site.scope(actor, entity.name, "create") is not Scope.NONE)


def _state(status: str, lang: str) -> str:
    key = f"import_status_{status}"
    return translate(lang, key) if key in catalogue(lang) else status


def _entity_label(site: Site, name: str, lang: str) -> str:
    return site.model.entity(name).label.text(lang) if site.model.has_entity(name) else name


def _view(site: Site, record: ImportRecord, users: dict[int, str], lang: str) -> dict[str, Any]:
    zone = site.model.settings.timezone
    return {"id": record.id, "file": record.file_name, "entity": record.entity,
            "entity_label": _entity_label(site, record.entity, lang), "mapping": record.mapping,
            "status": record.status, "state": _state(record.status, lang), "rows": record.rows_total, "done": record.next_row, "created": record.created,
            "merged": record.merged, "rejected": record.rejected, "rules": record.rules, "history": record.history,
            "by": users.get(record.actor_id or 0) or translate(lang, "system"), "sha": record.file_sha256[:12],
            "started": local_time(record.started_at, zone).strftime("%Y-%m-%d %H:%M"),
            "percent": int(100 * record.next_row / record.rows_total) if record.rows_total else 100}


def imports_screen(site: Site, request: Request, actor: Actor, error: str = "") -> HTMLResponse:
    lang = site.lang(request)
    entities = _entities(site, actor, lang, "lead")
    if not entities:
        raise Forbidden("you may create no records, so you may import none", field=None, permission="create",
                        entity="")
    context = ImportsContext(entities, _mappings(site, lang), _recent(site, actor, lang), error)
    return site.render(request, actor, "imports.html", context, translate(lang, "import_title"))


def _mappings(site: Site, lang: str) -> tuple[tuple[str, str, str], ...]:
    return tuple((spec.name, _entity_label(site, spec.entity, lang), spec.label.text(lang))
                 for spec in site.model.imports)


def _recent(site: Site, actor: Actor, lang: str) -> tuple[dict[str, Any], ...]:
    users = site.user_names()
    shown = [record for record in _importer(site).recent(30) if actor.role == "admin" or
             record.actor_id == actor.id or site.scope(actor, record.entity, "create") is Scope.ALL]
    return tuple(_view(site, record, users, lang) for record in shown)


async def upload(site: Site, request: Request, actor: Actor) -> Response:
    """Step 1 → 2: keep the uploaded file, then show the mapping and the health report."""
    form = await request.form(max_files=1, max_part_size=MAX_UPLOAD)
    upload = form.get("file")
    entity = str(form.get("entity", ""))
    mapping = str(form.get("mapping") or SUGGESTED)
    if upload is None or isinstance(upload, str) or not upload.filename:
        return imports_screen(site, request, actor, translate(site.lang(request), "import_choose_file"))
    content = await upload.read()
    try:
        read_bytes(content, upload.filename)
    except FileUnreadable as error:
        return imports_screen(site, request, actor, error.message_zh if site.lang(request) == "zh" else error.message)
    stored = site.records.store_file(upload.filename, upload.content_type or "application/octet-stream", content,
                                     actor=actor)
    return review(site, request, actor, {"file_id": str(stored["id"]), "entity": entity, "mapping": mapping})


def _file_id(form: Any) -> int:
    text = str(form.get("file_id", "")).strip()
    if not text.isdigit():
        raise NotFound("upload the file again: the form names no uploaded file", field="file_id")
    return int(text)


def _file(site: Site, actor: Actor, file_id: int) -> tuple[str, bytes]:
    files = site.services.schema.files
    with site.services.db.read() as connection:
        row = connection.execute(sa.select(files.c.name, files.c.content, files.c.created_by)
                                 .where(files.c.id == file_id)).first()
    if row is None or (row.created_by != actor.id and not actor.is_system):
        raise NotFound(f"uploaded file {file_id} does not exist", field="file_id")
    return row.name, bytes(row.content)


def _spec(site: Site, form: Any, table: Table, entity_name: str) -> tuple[ImportSpec, list[Suggestion]]:
    entity = site.model.entity(entity_name)
    mapping = str(form.get("mapping") or SUGGESTED)  # none chosen: suggested from the headers
    if mapping != SUGGESTED:
        if mapping not in {spec.name for spec in site.model.imports}:
            raise QueryInvalid(f"there is no import mapping '{mapping}'", field="mapping",
                               zh=f"没有名为“{mapping}”的字段映射，请在列表中选择一个映射或“按表头自动识别”")
        spec = site.model.import_mapping(mapping)
        if spec.entity != entity_name:
            raise QueryInvalid(f"mapping '{mapping}' is for {spec.entity}, not {entity_name}", field="mapping",
                               zh=f"字段映射“{spec.label.text('zh')}”用于{_entity_label(site, spec.entity, 'zh')}，"
                                  f"不能用来导入{_entity_label(site, entity_name, 'zh')}")
        return spec, [Suggestion(column.column, column.field, "mapping") for column in spec.columns]
    suggestions = suggest_mapping(entity, table.headers)
    if any(key.startswith("map:") for key in form.keys()):
        suggestions = [Suggestion(s.column, str(form.get(f"map:{s.column}", "")) or None, "chosen") for s in suggestions]
        valid = {*entity.field_names(), OWNER, *((CREATED_AT,) if form.get("history") else ())}
        suggestions = [s if s.field in valid else Suggestion(s.column, None, "") for s in suggestions]
    spec = mapping_from_suggestions(entity, suggestions, name="screen", history=bool(form.get("history")))
    defaults = tuple((name[len("default:"):], str(value)) for name, value in form.items()
                     if name.startswith("default:") and value and entity.has_field(name[len("default:"):]))
    return ImportSpec(spec.name, Label.of(None, "screen"), spec.entity, spec.columns, defaults, spec.history,
                      spec.batch), suggestions


def review(site: Site, request: Request, actor: Actor, form: Any) -> HTMLResponse:
    """Step 2: the mapping (correctable when suggested) and the health report of the whole file."""
    lang = site.lang(request)
    file_id = _file_id(form)
    entity_name = str(form.get("entity", ""))
    if not site.model.has_entity(entity_name) or site.scope(actor, entity_name, "create") is Scope.NONE:
        raise Forbidden(f"you may not create {entity_name} records", field=None, permission="create",
                        entity=entity_name)
    name, content = _file(site, actor, file_id)
    table = read_bytes(content, name)
    spec, suggestions = _spec(site, form, table, entity_name)
    entity = site.model.entity(entity_name)
    importer = _importer(site)
    error = ""
    report: HealthReport | None = None
    try:
        plan = importer.prepare(table, spec, content)
        report = importer.health(plan)
    except ImportRefused as refused:
        error = refused.zh if lang == "zh" else str(refused)
    fields = [Option("", translate(lang, "import_skip"))] + [Option(OWNER, translate(lang, "owner"))] + [
        Option(spec_.name, spec_.label.text(lang)) for spec_ in entity.fields
        if spec_.type is not FieldType.COMPUTED]
    if spec.history:  # past records may say when they came in (docs/import-export.md §7)
        fields.append(Option(CREATED_AT, created_at_field(entity).label.text(lang)))
    columns = tuple(ColumnChoice(s.column, tuple(Option(o.value, o.label, o.value == (s.field or "")) for o in fields),
                                 s.why) for s in suggestions)
    mapped = {column.field for column in spec.columns} | {name for name, _ in spec.defaults}
    defaults = tuple(ColumnChoice(f.name, tuple(Option(c.value, c.label.text(lang), c.value == dict(spec.defaults).get(
        f.name)) for c in f.choices), f.label.text(lang)) for f in entity.fields
        if f.is_required and f.choices and f.default is None and f.name not in {c.field for c in spec.columns})
    context = ImportsContext(_entities(site, actor, lang, entity_name), _mappings(site, lang), (), error, file_id,
                             name, entity_name, str(form.get("mapping") or SUGGESTED), columns, defaults, spec.history,
                             report.html(functools.partial(translate, lang), lang) if report is not None else "",
                             report is not None and bool(mapped), _entity_label(site, entity_name, lang))
    return site.render(request, actor, "imports.html", context, translate(lang, "import_health_title"))


def run(site: Site, request: Request, actor: Actor, form: Any) -> Response:
    """Step 3: start the import in the background and follow it on its own page."""
    file_id = _file_id(form)
    entity_name = str(form.get("entity", ""))
    if not site.model.has_entity(entity_name):
        raise NotFound(f"there is no entity '{entity_name}'", field="entity")
    site.records.access.require(actor, entity_name, "create")
    name, content = _file(site, actor, file_id)
    table = read_bytes(content, name)
    spec, _ = _spec(site, form, table, entity_name)
    importer = _importer(site)
    plan = importer.prepare(table, spec, content)
    rules = not form.get("no_rules")
    import_id = importer.begin(plan, actor=actor, rules=rules)
    threading.Thread(target=_run_quietly, args=(importer, plan, actor, rules), daemon=True,
                     name=f"import-{import_id}").start()
    return RedirectResponse(f"/imports/{import_id}", status_code=303)


def _run_quietly(importer: Importer, plan: ImportPlan, actor: Actor, rules: bool) -> None:
    with contextlib.suppress(ImportRefused):  # another run took it: its page shows that one's progress
        importer.run(plan, actor=actor, resume=True, rules=rules)


def import_screen(site: Site, request: Request, actor: Actor, import_id: int) -> HTMLResponse:
    record = _importer(site).get(import_id)
    if record is None:
        raise NotFound(f"import {import_id} does not exist", field="id")
    lang = site.lang(request)
    view = _view(site, record, site.user_names(), lang)
    elapsed = (record.finished_at or site.services.clock.now()) - record.started_at
    seconds = max(elapsed.total_seconds(), 0.001)
    view["rate"] = f"{record.next_row / seconds:,.0f}"
    view["seconds"] = f"{seconds:,.1f}"
    context = ImportsContext(_entities(site, actor, lang), (), (view,))
    return site.render(request, actor, "import.html", context, translate(lang, "import_number", id=import_id))


def error_file(site: Site, request: Request, actor: Actor, import_id: int) -> Response:
    importer = _importer(site)
    record = importer.get(import_id)
    if record is None:
        raise NotFound(f"import {import_id} does not exist", field="id")
    site.records.access.require(actor, record.entity, "create")
    xlsx = request.query_params.get("format") == "xlsx"
    content = importer.error_file(import_id, xlsx=xlsx)
    suffix = "xlsx" if xlsx else "csv"
    return Response(content, media_type="text/csv; charset=utf-8" if not xlsx else
                    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                    headers={"Content-Disposition": f'attachment; filename="import-{import_id}-errors.{suffix}"'})
