"""The record page's working-day actions: log a call / visit / WeChat / note right on the page (a plain
form that posts and comes back to the record, written through RecordService so the activity rules
stamp first touch, last activity and next follow-up and stop the first-call SLA), convert a lead as
its blueprint declares, and the related records' history in the timeline."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from engine.channels.templates import duration_words
from engine.metamodel import EntitySpec, FieldSpec, FieldType
from engine.runtime.automation.clocks import sla_states
from engine.runtime.automation.conversions import Conversions
from engine.runtime.records.actors import Actor
from engine.runtime.records.errors import NotFound, RecordError, ValidationFailed
from engine.runtime.records.events import Event
from engine.runtime.records.queries import Filter, ListQuery
from engine.runtime.records.values import apply_defaults
from engine.runtime.web.screens.contexts import FormField
from engine.runtime.web.screens.error_texts import error_text
from engine.runtime.web.screens.i18n import field_error_text, translate
from engine.runtime.web.screens.site import Site
from engine.runtime.web.widgets import NOT_SUBMITTED, FieldContext, InputError

LOGGED_KINDS = ("call", "visit", "wechat")  # the quick "log it" buttons, when the activity entity has them
RELATED_HISTORY = 20  # related records whose events join the timeline
LOG_FIELDS = ("kind", "outcome", "notes", "next_follow_up")  # the record page's "log it" form, when present


@dataclass(frozen=True, slots=True)
class QuickAction:
    label: str
    url: str
    method: str = "get"  # "post": a one-click form


@dataclass(frozen=True, slots=True)
class LogPanel:
    """The record page's "log a call / visit / note" form: activity fields with their blueprint
    defaults (the next follow-up date among them), or the user's input and its errors after a refusal."""

    post_url: str
    fields: tuple[FormField, ...]
    more_url: str  # the full activity form, prefilled the same way
    message: str = ""


Errors = dict[str, list[str]]


def text(lang: str, key: str, **values: object) -> str:
    """The record page's workday texts (catalogue ids `workday_<key>`)."""
    return translate(lang, f"workday_{key}", **values)


def quick_actions(site: Site, actor: Actor, entity: EntitySpec, record: dict[str, Any], lang: str) -> tuple[QuickAction, ...]:
    """Convert the record when it may (logging an activity is the page's own form, `log_panel`)."""
    actions: list[QuickAction] = []
    spec = site.model.conversion_for(entity.name)
    if spec is not None and site.may(actor, entity.name, "update", record) and \
            _conversions(site).refusal(entity.name, record) is None:
        actions.append(QuickAction(spec.label.text(lang), f"/{entity.name}/{record['id']}/convert", "post"))
    return tuple(actions)


# -- log a call / visit / note on the record page -------------------------------------------------------

def _log_fields(site: Site) -> tuple[FieldSpec, ...]:
    activity = site.model.entity("activity")
    return tuple(activity.field(name) for name in LOG_FIELDS if activity.has_field(name))


def log_panel(site: Site, actor: Actor, entity: EntitySpec, record: dict[str, Any], lang: str, *,
              shown: dict[str, Any] | None = None, errors: Errors | None = None, message: str = ""
              ) -> LogPanel | None:
    """The "log it" form when activities link to this entity and the user may create them; its
    values are the blueprint's defaults (e.g. the next follow-up two days ahead) unless a refused
    post is shown again."""
    link = _activity_link(site, entity)
    if link is None or not site.may(actor, "activity", "create"):
        return None
    activity = site.model.entity("activity")
    hidden = site.records.access.permissions(actor, "activity").hidden
    if shown is None:
        shown = {link: record["id"]}
        apply_defaults(activity, shown, site.records.evaluator, kinds=site.records.schema.kinds)
    fields = []
    for spec in _log_fields(site):
        if spec.name in hidden:
            continue
        field = FieldContext(spec, spec.label.text(lang), spec.help.text(lang), False)
        failures = (errors or {}).get(spec.name, [])
        control = site.widgets.for_field(spec).render_form(field, shown.get(spec.name), failures, lang)
        fields.append(FormField(spec.name, field.label, "", False, control, tuple(failures)))
    here = f"/{entity.name}/{record['id']}"
    more = urlencode({link: record["id"], "done": "true", "next": here})
    return LogPanel(f"{here}/log", tuple(fields), f"/activity/new?{more}", message)


def log_activity(site: Site, request: Request, actor: Actor, entity_name: str, record_id: int, form: Any
                 ) -> Response | LogPanel:
    """Create a done activity linked to this record from the page's form and come back to the page;
    a refusal returns the form with the input kept and each error under its field."""
    entity = site.records.entity(entity_name)
    lang = site.lang(request)
    record = site.records.get(entity.name, record_id, actor=actor)
    link = _activity_link(site, entity)
    if link is None:  # no form is offered here: as for any page that does not exist
        raise NotFound(f"activities do not link to {entity.name}", field=None)
    activity = site.model.entity("activity")
    posted: dict[str, list[Any]] = {}
    for key, value in form.multi_items():
        posted.setdefault(key, []).append(value)
    values: dict[str, Any] = {link: record_id, **({"done": True} if activity.has_field("done") else {})}
    errors: Errors = {}
    for spec in _log_fields(site):
        try:
            value = site.widgets.for_field(spec).parse(FieldContext(spec, spec.label.text(lang)), posted)
        except InputError as error:
            errors.setdefault(spec.name, []).append(str(error))
            continue
        if value is not NOT_SUBMITTED:  # a box the rep emptied stays empty (not the field's default)
            values[spec.name] = None if value == "" else value
    kind = str(values.get("kind") or "")
    kind_label = activity.field("kind").choice_label(kind, lang) if kind and activity.has_field("kind") else \
        activity.label.text(lang)
    if activity.title_field and activity.title_field not in values:  # "电话 · 张伟", within the field's length
        subject = f"{kind_label} · {record.get(entity.title_field) or f'#{record_id}'}"
        values[activity.title_field] = subject[:activity.field(activity.title_field).length or len(subject)]
    if not errors:
        try:
            site.records.create("activity", values, actor=actor)
        except ValidationFailed as failed:
            offered = {spec.name for spec in _log_fields(site)}
            for failure in failed.errors:
                errors.setdefault(failure.field if failure.field in offered else "", []).append(
                    field_error_text(activity, failure, lang))
        else:
            site.flash(request, translate(lang, "log_done", kind=kind_label))
            return RedirectResponse(f"/{entity.name}/{record_id}#log", status_code=303)
    stray = errors.pop("", [])
    message = " ".join([translate(lang, "fix_errors"), *stray])
    return log_panel(site, actor, entity, record, lang, shown=values, errors=errors, message=message) or \
        LogPanel("", (), "", message)


def _activity_link(site: Site, entity: EntitySpec) -> str | None:
    if not site.model.has_entity("activity"):
        return None
    activity = site.model.entity("activity")
    return next((spec.name for spec in activity.fields
                 if spec.type is FieldType.LINK and spec.link_entity == entity.name), None)


def _conversions(site: Site) -> Conversions:
    return Conversions(site.model, site.records, site.records.evaluator, site.services.clock)


def convert(site: Site, request: Request, actor: Actor, entity_name: str, record_id: int) -> Response:
    """Convert from the record page; the page shows what it became (or why it could not)."""
    lang = site.lang(request)
    entity = site.records.entity(entity_name)
    try:
        done = _conversions(site).convert(entity.name, record_id, actor=actor)
    except RecordError as refused:
        site.flash(request, error_text(refused, lang, site.model, entity.name))
        return RedirectResponse(f"/{entity.name}/{record_id}", status_code=303)
    what = "、".join(f"{site.model.entity(item[0]).label.text(lang)} #{item[1]}" for item in done.created.values())
    site.flash(request, text(lang, "converted_done", what=what))
    return RedirectResponse(f"/{entity.name}/{record_id}", status_code=303)


def related_events(site: Site, actor: Actor, entity: EntitySpec, record_id: int
                   ) -> Iterator[tuple[EntitySpec, dict[str, Any], Event]]:
    """Events of the activities linked to this record that the actor may read, newest records first."""
    link = _activity_link(site, entity)
    if link is None or not site.may(actor, "activity", "read"):
        return
    activity = site.model.entity("activity")
    query = ListQuery(filters=(Filter(link, "eq", str(record_id)),), per_page=RELATED_HISTORY)
    try:
        page = site.records.list("activity", query, actor=actor)
    except RecordError:
        return
    for item in page.items:
        for event in site.records.events("activity", item["id"], actor=actor):
            yield activity, item, event


def has_sla(site: Site, entity: str) -> bool:
    return any(policy.entity == entity for policy in site.model.slas)


def sla_cells(site: Site, entity: str, record_ids: list[int], lang: str) -> dict[int, Markup]:
    """Per row: the record's most urgent SLA — overdue by how long, due in how long, or paused."""
    now = site.services.clock.now()
    with site.records.db.read() as connection:
        states = sla_states(connection, site.records.schema, entity, record_ids)
    cells: dict[int, Markup] = {}
    for record_id in record_ids:
        if record_id not in states:
            cells[record_id] = Markup("")
            continue
        state, due, policy = states[record_id]
        label = site.model.sla(policy).label.text(lang) if any(p.name == policy for p in site.model.slas) else policy
        if state == "paused":
            css, words = "paused", text(lang, "sla_paused")
        elif state == "breached" or (due is not None and due <= now):
            late = _span(now - due, lang) if due is not None and due <= now else ""
            css, words = "overdue", text(lang, "sla_overdue", late=late)
        elif due is not None:
            css, words = ("due-soon" if due - now <= dt.timedelta(hours=1) else "on-track",
                          text(lang, "sla_due_in", left=_span(due - now, lang)))
        else:
            css, words = "on-track", text(lang, "sla_running")
        cells[record_id] = Markup('<span class="sla-chip {}" title="{}">{}</span>').format(css, label, words)
    return cells


def _span(delta: dt.timedelta, lang: str) -> str:
    """How late or how long left, as short as a list cell needs: minutes, hours and minutes up to two
    days, then whole days — in the reader's words ("19小时18分钟", "19 h 18 min")."""
    minutes = int(delta.total_seconds() // 60)
    shown = dt.timedelta(days=minutes // 1440) if minutes >= 48 * 60 else dt.timedelta(minutes=minutes)
    return duration_words(shown, lang)


def format_amount(value: Any, currency: str | None = None) -> str:
    """A money total as people read it: 1,280,000.00 CNY (empty when there is nothing to add up)."""
    if value is None:
        return ""
    number = f"{value:,.2f}"  # as the money cells show it
    return f"{number} {currency}" if currency else number
