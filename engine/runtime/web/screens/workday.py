"""The record page's working-day actions: log a call / visit / WeChat on the spot (returning to the
record), convert a lead as its blueprint declares, and the related records' history in the timeline."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from engine.metamodel import EntitySpec, FieldType
from engine.runtime.automation.clocks import sla_states
from engine.runtime.automation.conversions import Conversions
from engine.runtime.records.actors import Actor
from engine.runtime.records.errors import RecordError
from engine.runtime.records.events import Event
from engine.runtime.records.queries import Filter, ListQuery
from engine.runtime.web.screens.error_texts import error_text
from engine.runtime.web.screens.i18n import translate
from engine.runtime.web.screens.site import Site

LOGGED_KINDS = ("call", "visit", "wechat")  # the quick "log it" buttons, when the activity entity has them
RELATED_HISTORY = 20  # related records whose events join the timeline


@dataclass(frozen=True, slots=True)
class QuickAction:
    label: str
    url: str
    method: str = "get"  # "post": a one-click form


def text(lang: str, key: str, **values: object) -> str:
    """The record page's workday texts (catalogue ids `workday_<key>`)."""
    return translate(lang, f"workday_{key}", **values)


def quick_actions(site: Site, actor: Actor, entity: EntitySpec, record: dict[str, Any], lang: str) -> tuple[QuickAction, ...]:
    """Log an activity on this record (kind preset, done, returning here) and convert it when it may."""
    actions: list[QuickAction] = []
    link = _activity_link(site, entity)
    if link is not None and site.may(actor, "activity", "create") and site.model.entity("activity").has_field("kind"):
        kinds = site.model.entity("activity").field("kind")
        for kind in (kind for kind in LOGGED_KINDS if kind in [choice.value for choice in kinds.choices]):
            query = urlencode({link: record["id"], "kind": kind, "done": "true",
                               "subject": f"{kinds.choice_label(kind, lang)} · {record.get(entity.title_field) or ''}",
                               "next": f"/{entity.name}/{record['id']}"})
            actions.append(QuickAction(text(lang, "log_kind", kind=kinds.choice_label(kind, lang)),
                                       f"/activity/new?{query}"))
    spec = site.model.conversion_for(entity.name)
    if spec is not None and site.may(actor, entity.name, "update", record) and \
            _conversions(site).refusal(entity.name, record) is None:
        actions.append(QuickAction(spec.label.text(lang), f"/{entity.name}/{record['id']}/convert", "post"))
    return tuple(actions)


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
            late = _span(now - due) if due is not None and due <= now else ""
            css, words = "overdue", text(lang, "sla_overdue", late=late)
        elif due is not None:
            css, words = ("due-soon" if due - now <= dt.timedelta(hours=1) else "on-track",
                          text(lang, "sla_due_in", left=_span(due - now)))
        else:
            css, words = "on-track", text(lang, "sla_running")
        cells[record_id] = Markup('<span class="sla-chip {}" title="{}">{}</span>').format(css, label, words)
    return cells


def _span(delta: dt.timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes}m"
    if minutes < 48 * 60:
        return f"{minutes // 60}h{minutes % 60:02d}m"
    return f"{minutes // 1440}d"


def format_amount(value: Any, currency: str | None = None) -> str:
    """A money total as people read it: 1,280,000.00 CNY (empty when there is nothing to add up)."""
    if value is None:
        return ""
    number = f"{value:,.2f}"  # as the money cells show it
    return f"{number} {currency}" if currency else number
