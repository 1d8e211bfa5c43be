"""New and edit forms: one widget per field, defaults filled in, errors next to each field.

A post is read field by field by each field's widget, then handed to RecordService as it is;
RecordService coerces, checks permissions and validates, and its errors come back next to
the fields they name, with the user's input kept. Uploaded files are stored first and the
attachment field receives the file's id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from engine.metamodel import EntitySpec, FieldSpec, FieldType
from engine.metamodel.roles import Scope
from engine.runtime.records.actors import Actor
from engine.runtime.records.errors import DuplicateRecord, NotFound, StageRefused, ValidationFailed, VersionConflict
from engine.runtime.records.permissions import Forbidden
from engine.runtime.records.values import apply_defaults, coerce_input
from engine.runtime.web.screens.accounts import safe_next
from engine.runtime.web.screens.contexts import FormContext, FormField, FormSectionContext
from engine.runtime.web.screens.funnels import refusal_text
from engine.runtime.web.screens.error_texts import error_text
from engine.runtime.web.screens.i18n import field_error_text, translate
from engine.runtime.web.screens.record_page import sections_of
from engine.runtime.web.screens.site import Site, owner_spec
from engine.runtime.web.widgets import NOT_SUBMITTED, FieldContext, InputError

Errors = dict[str, list[str]]
UPLOAD_LIMIT = 20 * 1024 * 1024


async def read_form(request: Request, site: Site, actor: Actor) -> dict[str, list[Any]]:
    """The posted fields as lists of strings; each uploaded file is stored and replaced by its id."""
    form = await request.form(max_files=20, max_fields=1000)
    values: dict[str, list[Any]] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if not value.filename:
                continue
            content = await value.read(UPLOAD_LIMIT + 1)
            if len(content) > UPLOAD_LIMIT:
                values.setdefault(f"{key}__too_large", []).append("1")
                continue
            stored = await run_in_threadpool(site.records.store_file, value.filename[:255],
                                             (value.content_type or "application/octet-stream")[:128], content,
                                             actor=actor)
            value = str(stored["id"])
        values.setdefault(key, []).append(value)
    return values


def _editable(site: Site, actor: Actor, entity: EntitySpec, spec: FieldSpec) -> bool:
    permissions = site.records.access.permissions(actor, entity.name)
    return not (spec.is_readonly or spec.type is FieldType.COMPUTED or spec.name in permissions.readonly
                or spec.name in permissions.hidden)


def _visible_fields(site: Site, actor: Actor, entity: EntitySpec) -> list[tuple[int, FieldSpec]]:
    hidden = site.records.access.permissions(actor, entity.name).hidden
    return [(index, entity.field(name)) for index, (_, names) in enumerate(sections_of(entity, "en"))
            for name in names if name not in hidden]


def _with_owner(site: Site, actor: Actor, entity: EntitySpec) -> bool:
    return site.scope(actor, entity.name, "assign") is not Scope.NONE


def new_form(site: Site, request: Request, actor: Actor, entity_name: str) -> HTMLResponse:
    entity = site.records.entity(entity_name)
    site.records.access.require(actor, entity.name, "create")
    if entity.is_managed:
        raise Forbidden(f"{entity.name} records are created by the engine", field=None, permission="create",
                        entity=entity.name)
    prefill = {key: value for key, value in request.query_params.items()
               if entity.has_field(key) and entity.field(key).type is not FieldType.COMPUTED}
    values, _ = coerce_input(entity, prefill, kinds=site.records.schema.kinds)
    for name, value in values.items():  # a prefilled link must be a record the user may read
        spec = entity.find_field(name)
        if spec is not None and spec.type is FieldType.LINK and spec.link_entity and value is not None:
            if not site.readable(actor, spec.link_entity, int(value)):
                raise NotFound(f"{spec.link_entity} {value} does not exist or is outside what you may read",
                               field=name)
    apply_defaults(entity, values, site.records.evaluator, kinds=site.records.schema.kinds)
    return _render(site, request, actor, entity, values, {}, record=None)


def edit_form(site: Site, request: Request, actor: Actor, entity_name: str, record_id: int) -> HTMLResponse:
    entity = site.records.entity(entity_name)
    record = site.records.get(entity.name, record_id, actor=actor)
    if not site.may(actor, entity.name, "update", record):
        site.records.access.require(actor, entity.name, "update")
        raise Forbidden(f"you lack permission 'update' on {entity.name} {record_id}", field=None,
                        permission="update", entity=entity.name)
    return _render(site, request, actor, entity, record, {}, record=record)


def parse_post(site: Site, actor: Actor, entity: EntitySpec, form: Mapping[str, list[Any]], lang: str,
               ) -> tuple[dict[str, Any], Errors, dict[str, Any]]:
    """Field values read by each field's widget; input a widget cannot read goes to errors, and
    its raw text is returned too, to be shown again."""
    values: dict[str, Any] = {}
    errors: Errors = {}
    unread: dict[str, Any] = {}
    offered = {spec.name for _, spec in _visible_fields(site, actor, entity)}
    for _, spec in _visible_fields(site, actor, entity):
        if not _editable(site, actor, entity, spec) and spec.name not in form:
            continue
        field = FieldContext(spec, spec.label.text(lang))
        if f"{spec.name}__too_large" in form:
            errors.setdefault(spec.name, []).append(translate(lang, "file_too_large"))
            continue
        try:
            value = site.widgets.for_field(spec).parse(field, form)
            if spec.type is FieldType.LINK and spec.link_entity and isinstance(value, str) and \
                    not value.strip().isdigit():
                value = site.link_by_title(actor, spec.link_entity, value, lang)  # a title typed in full
        except InputError as error:
            errors.setdefault(spec.name, []).append(str(error))
            unread[spec.name] = form[spec.name][-1] if form.get(spec.name) else None
            continue
        if value is not NOT_SUBMITTED:
            values[spec.name] = value
    if _with_owner(site, actor, entity) and "owner" in form:
        owner = str(form["owner"][-1]).strip()
        values["owner"] = owner or None
    for name in form:  # a field the form did not offer (e.g. hidden from this role) is refused by RecordService
        if entity.has_field(name) and name not in values and name not in offered:
            values[name] = form[name][-1]
    return values, errors, unread


def save_form(site: Site, request: Request, actor: Actor, entity_name: str, record_id: int | None,
              form: Mapping[str, list[Any]]) -> Response:
    entity = site.records.entity(entity_name)
    lang = site.lang(request)
    values, errors, unread = parse_post(site, actor, entity, form, lang)
    current = site.records.get(entity.name, record_id, actor=actor) if record_id is not None else None
    version_text = str((form.get("version") or [""])[-1])
    message = None
    if not errors:
        try:
            return _write(site, request, actor, entity, record_id, values, version_text)
        except ValidationFailed as failed:
            for error in failed.errors:
                errors.setdefault(error.field or "", []).append(
                    field_error_text(entity, error, lang))
        except StageRefused as refused:
            message = refusal_text(refused, entity, lang)
            for item in refused.items(lang):
                if item.get("field") and entity.has_field(item["field"]):
                    errors.setdefault(item["field"], []).append(item["how"])
            errors.setdefault(refused.field or "", []).append(refused.headline(lang))
        except VersionConflict as conflict:
            message = translate(lang, "version_conflict") + (f" ({conflict.message})" if lang == "en" else "")
        except (Forbidden, DuplicateRecord) as refused:
            if refused.field is None:
                raise
            errors.setdefault(refused.field, []).append(error_text(refused, lang, site.model, entity.name))
    shown = {**(current or {}), **{name: value for name, value in values.items() if name == "owner" or not
                                     entity.has_field(name) or _editable(site, actor, entity, entity.field(name))}, **unread}
    return _render(site, request, actor, entity, shown, errors, record=current, message=message, status=422,
                   version=int(version_text) if version_text.isdigit() else None)


def _write(site: Site, request: Request, actor: Actor, entity: EntitySpec, record_id: int | None,
           values: dict[str, Any], version_text: str) -> Response:
    lang = site.lang(request)
    if record_id is None:
        result = site.records.create(entity.name, {k: v for k, v in values.items() if v not in (None, "", [])},
                                     actor=actor)
        site.flash(request, translate(lang, "merged" if result.outcome == "merged" else "created"))
        back = request.query_params.get("next")  # e.g. "log the demo" from a record page returns there
        return RedirectResponse(safe_next(back) if back else f"/{entity.name}/{result.record['id']}",
                                status_code=303)
    site.records.update(entity.name, record_id, values, actor=actor,
                        expected_version=int(version_text) if version_text.isdigit() else None)
    site.flash(request, translate(lang, "saved"))
    return RedirectResponse(f"/{entity.name}/{record_id}", status_code=303)


def _render(site: Site, request: Request, actor: Actor, entity: EntitySpec, values: Mapping[str, Any],
            errors: Errors, *, record: Mapping[str, Any] | None, message: str | None = None, status: int = 200,
            version: int | None = None) -> HTMLResponse:
    lang = site.lang(request)
    sections: list[FormSectionContext] = []
    shown: set[str] = set()
    visible = _visible_fields(site, actor, entity)
    for index, (label, _) in enumerate(sections_of(entity, lang)):
        fields = []
        for _, spec in (item for item in visible if item[0] == index):
            shown.add(spec.name)
            fields.append(_form_field(site, actor, entity, spec, values.get(spec.name), errors.get(spec.name, []),
                                      lang, values))
        if index == 0 and _with_owner(site, actor, entity):
            shown.add("owner")
            default_owner = None if record is None and entity.routes_new_records else actor.id  # None: routing
            fields.append(_form_field(site, actor, entity, owner_spec(lang), values.get("owner", default_owner),
                                      errors.get("owner", []), lang))
        if fields:
            sections.append(FormSectionContext(label, tuple(fields)))
    stray = [text for name, texts in errors.items() if name not in shown for text in texts]
    if errors and not message:
        message = translate(lang, "fix_errors")
    if stray:
        message = " ".join([message or "", *stray]).strip()
    if record is None:
        title = translate(lang, "new") + " " + entity.label.text(lang)
        action_url, cancel_url, loaded_version = f"/{entity.name}/new", f"/{entity.name}", None
        back = request.query_params.get("next")
        if back:
            action_url, cancel_url = f"{action_url}?{urlencode({'next': safe_next(back)})}", safe_next(back)
    else:
        title = f"{translate(lang, 'edit')} · {record.get(entity.title_field) or record['id']}"
        action_url, cancel_url = f"/{entity.name}/{record['id']}/edit", f"/{entity.name}/{record['id']}"
        loaded_version = record["version"]
    context = FormContext(
        entity=entity.name, title=title, action_url=action_url, cancel_url=cancel_url, sections=tuple(sections),
        version=version if version is not None else loaded_version, message=message,
        is_multipart=any(spec.type is FieldType.ATTACHMENT for _, spec in visible))
    return site.render(request, actor, "form.html", context, title, status=status)


def _form_field(site: Site, actor: Actor, entity: EntitySpec, spec: FieldSpec, value: Any, errors: list[str],
                lang: str, values: Mapping[str, Any] | None = None) -> FormField:
    editable = spec.name == "owner" or _editable(site, actor, entity, spec)
    field = site.field_context(actor, entity, spec, lang, [value], for_form=editable, record=values)
    widget = site.widgets.for_field(spec)
    if editable:
        control = widget.render_form(field, value, errors, lang)
    else:
        control = Markup('<output id="f-{}" class="readonly">{}</output>').format(
            spec.name, widget.render_display(field, value, lang))
    return FormField(spec.name, field.label, field.help, spec.is_required and editable, control, tuple(errors))
