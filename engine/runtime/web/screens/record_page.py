"""The record page: fields by form section, related lists from incoming links, the timeline."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from engine.channels.templates import duration_words
from engine.metamodel import EntitySpec, FieldType
from engine.runtime.records.actors import Actor
from engine.runtime.records.events import Event
from engine.runtime.records.permissions import Forbidden
from engine.runtime.records.queries import Filter, ListQuery
from engine.runtime.web.screens.contexts import (Change, DisplayItem, DisplaySection, RecordContext, RelatedList,
                                                 TimelineEntry)
from engine.runtime.web.screens.collab import comments_panel
from engine.runtime.web.screens.funnels import approvals_panel, decision_panel, funnel_panel
from engine.runtime.web.screens.event_values import event_value
from engine.runtime.web.screens.i18n import translate
from engine.runtime.web.screens.lists import cell_renderer, render_rows
from engine.runtime.web.screens.panorama import event_words, panorama_panel
from engine.runtime.web.screens.site import Site, system_label
from engine.runtime.web.screens.workday import LogPanel, log_panel, quick_actions, related_events
from engine.runtime.web.screens.workday import text as related_text
from engine.runtime.web.widgets import local_time

RELATED_ROWS = 10
RELATED_COLUMNS = 4


def sections_of(entity: EntitySpec, lang: str) -> list[tuple[str, tuple[str, ...]]]:
    """The blueprint's form sections, or one section of every field."""
    if entity.form is not None:
        return [(section.label.text(lang), section.fields) for section in entity.form.sections]
    return [("", entity.field_names())]


def record_screen(site: Site, request: Request, actor: Actor, entity_name: str, record_id: int, *,
                  comment_draft: str = "", comment_error: str = "", log: LogPanel | None = None,
                  status: int = 200) -> HTMLResponse:
    entity = site.records.entity(entity_name)
    lang = site.lang(request)
    record = site.records.get(entity.name, record_id, actor=actor)
    site.records.record_view(entity.name, record, actor=actor)  # may stop a `viewed_by` SLA clock
    title = str(record.get(entity.title_field) or f"{entity.label.text(lang)} #{record_id}")
    context = RecordContext(
        entity=entity.name, entity_label=entity.label.text(lang), record_id=record_id, title=title,
        version=record["version"], sections=tuple(_sections(site, actor, entity, record, lang)),
        related=tuple(_related(site, actor, entity, record_id, lang)),
        timeline=_merged_timeline(site, actor, entity, record_id, lang),
        actions=quick_actions(site, actor, entity, record, lang),
        list_url=f"/{entity.name}",
        edit_url=f"/{entity.name}/{record_id}/edit" if site.may(actor, entity.name, "update", record)
        and not entity.is_managed else None,
        delete_url=f"/{entity.name}/{record_id}/delete" if site.may(actor, entity.name, "delete", record) else None,
        explanation=site.services.doctor.explain(entity.name, record_id) if _is_admin(site, actor) else None,
        decisions=tuple(site.services.doctor.decision_lines(entity.name, record_id, lang)) if _is_admin(site, actor) else (),
        clocks=tuple(_clock_lines(site, entity.name, record_id, lang)),
        funnel=funnel_panel(site, actor, entity, record, lang),
        approvals=approvals_panel(site, actor, entity, record, lang),
        decision=decision_panel(site, actor, entity, record, lang),
        panorama=panorama_panel(site, actor, entity, record, lang, request.query_params.get("timeline")))
    comments = comments_panel(site, actor, entity.name, record_id, lang, draft=comment_draft, error=comment_error)
    logging = log if log is not None else log_panel(site, actor, entity, record, lang)
    return site.render(request, actor, "record.html", context, title, status=status,
                       panels={"comments": comments, "log": logging})


def _clock_lines(site: Site, entity: str, record_id: int, lang: str) -> Iterator[str]:
    """The record's SLA clocks (state, due time, how late) and cadences (next step), as lines."""
    now = site.services.clock.now()
    for sla in site.services.slas.summary(entity, record_id, now):
        label = sla["label"].text(lang) if hasattr(sla["label"], "text") else str(sla["label"] or sla["policy"])
        parts = [f"SLA {label}: {translate(lang, 'sla_' + sla['state'])}"]
        if sla["due_at"]:  # a paused clock has none: "截止 — · 0%" said nothing
            parts.append(f"{translate(lang, 'due')} "
                         f"{local_time(sla['due_at'], site.model.settings.timezone):%Y-%m-%d %H:%M}")
            if sla["state"] == "breached":  # how late, not "2859%" of a target long past
                late = now - sla["due_at"]
                if late >= dt.timedelta(days=1):  # days and hours; the minutes of a day-old breach are noise
                    late -= dt.timedelta(seconds=late.total_seconds() % 3600)
                parts.append(translate(lang, "sla_late_by", duration=duration_words(late, lang)))
            elif sla["state"] != "stopped":
                parts.append(f"{sla['percent']}%")
        yield " · ".join(parts)
    for cadence in site.services.cadences.summary(entity, record_id):
        pending = [step for step in cadence["steps"] if step["status"] == "pending"]
        nxt = f"{local_time(pending[0]['due_at'], site.model.settings.timezone):%Y-%m-%d %H:%M}" if pending else "—"
        name = cadence["cadence"]
        spec = next((spec for spec in site.model.cadences if spec.name == name), None)
        label = spec.label.text(lang) if spec is not None else name
        state = translate(lang, f"cadence_state_{cadence['state']}")
        yield f"{translate(lang, 'cadence')} {label}: {state} · {translate(lang, 'next_step')} {nxt}"


def _is_admin(site: Site, actor: Actor) -> bool:
    return actor.role == "admin" or (actor.role is not None and site.model.has_role(actor.role)
                                      and site.model.role(actor.role).is_admin)


def _sections(site: Site, actor: Actor, entity: EntitySpec, record: dict[str, Any], lang: str
              ) -> Iterator[DisplaySection]:
    for label, names in sections_of(entity, lang):
        items = []
        for name in names:
            if name not in record:  # hidden from this user
                continue
            spec = entity.field(name)
            field = site.field_context(actor, entity, spec, lang, [record[name]])
            items.append(DisplayItem(field.label, site.widgets.for_field(spec).render_display(field, record[name],
                                                                                              lang)))
        if items:
            yield DisplaySection(label, tuple(items))
    system = [(name, cell_renderer(site, actor, entity, name, [record[name]], lang)(record[name]))
              for name in ("owner", "created_by", "created_at", "updated_at")]
    yield DisplaySection(translate(lang, "system_fields"),
                         tuple(DisplayItem(system_label(name, lang), value) for name, value in system))


def _related(site: Site, actor: Actor, entity: EntitySpec, record_id: int, lang: str) -> Iterator[RelatedList]:
    for source in site.model.entities:
        links = [spec for spec in source.fields if spec.type is FieldType.LINK and spec.link_entity == entity.name]
        for spec in links:
            label = source.plural.text(lang) + (f" · {spec.label.text(lang)}" if len(links) > 1 else "")
            more_url = f"/{source.name}?{spec.name}={record_id}"
            new_url = f"/{source.name}/new?{spec.name}={record_id}" if site.may(actor, source.name, "create") \
                and not source.is_managed else None
            query = ListQuery(filters=(Filter(spec.name, "eq", str(record_id)),), per_page=RELATED_ROWS,
                              sort=source.list_view().sort)
            try:
                page = site.records.list(source.name, query, actor=actor)
            except Forbidden:
                yield RelatedList(label, "0", (), (), more_url, None,
                                  translate(lang, "forbidden_related", entity=source.plural.text(lang)))
                continue
            hidden = site.records.access.permissions(actor, source.name).hidden
            columns = [name for name in source.list_view().columns if name != spec.name and name not in hidden]
            columns = columns[:RELATED_COLUMNS]
            headers = tuple(source.field(n).label.text(lang) if source.has_field(n) else system_label(n, lang)
                            for n in columns)
            yield RelatedList(label, page.total_text, headers, tuple(render_rows(site, actor, source, columns,
                                                                                 page.items, lang)), more_url, new_url,
                              more=page.more)


def _merged_timeline(site: Site, actor: Actor, entity: EntitySpec, record_id: int, lang: str
                     ) -> tuple[TimelineEntry, ...]:
    """The record's own events with those of its activities (each named), newest first."""
    own = site.records.events(entity.name, record_id, actor=actor)
    entries = list(zip([event.at for event in reversed(own)], _timeline(site, actor, entity, own, lang)))
    for source, item, event in related_events(site, actor, entity, record_id):
        for entry in _timeline(site, actor, source, [event], lang):
            title = str(item.get(source.title_field) or f"#{item['id']}")
            entries.append((event.at, dataclasses.replace(entry, action=related_text(
                lang, "related_event", entity=source.label.text(lang), title=title, action=entry.action))))
    entries.sort(key=lambda pair: pair[0], reverse=True)
    return tuple(entry for _, entry in entries)


def _timeline(site: Site, actor: Actor, entity: EntitySpec, events: list[Event], lang: str) -> Iterator[TimelineEntry]:
    names = site.user_names()
    zone = site.model.settings.timezone
    for event in reversed(events):
        who = names.get(event.actor_id, f"#{event.actor_id}") if event.actor_id else translate(lang, "system")
        action = event_words(site, event, lang)
        shown = {} if event.kind == "created" else event.changes  # the page shows what it was created with
        changes = tuple(Change(_label(entity, name, lang), event_value(entity, name, before, lang, names),
                               event_value(entity, name, after, lang, names))
                        for name, (before, after) in shown.items())
        if event.kind == "stage_changed":
            changes, action = _stage_change(site, entity, event, lang), _stage_action(event, lang)
        elif event.kind in ("approval_requested", "approval_decided"):
            action += " · " + _approval_note(site, event, lang)
        elif event.kind.startswith("sla_") and event.data.get("policy"):  # which clock: name the policy
            policy = str(event.data["policy"])
            named = next((spec.label.text(lang) for spec in site.model.slas if spec.name == policy), policy)
            action += f" · {named}"
        if event.data.get("history"):
            action += translate(lang, "as_history")
        yield TimelineEntry(local_time(event.at, zone).strftime("%Y-%m-%d %H:%M"), who, action, changes)


def _stage_change(site: Site, entity: EntitySpec, event: Event, lang: str) -> tuple[Change, ...]:
    name = str(event.data.get("field") or "")
    return (Change(_label(entity, name, lang), event_value(entity, name, event.data.get("from"), lang, {}),
                   event_value(entity, name, event.data.get("to"), lang, {})),)


def _stage_action(event: Event, lang: str) -> str:
    action = translate(lang, "event_stage_returned" if event.data.get("return") else "event_stage_changed")
    dwell = event.data.get("dwell_seconds")
    if isinstance(dwell, int):
        action += translate(lang, "dwelt", days=f"{dwell / 86400:.1f}")
    return action


def _approval_note(site: Site, event: Event, lang: str) -> str:
    name = str(event.data.get("approval") or "")
    label = site.model.approval(name).label.text(lang) if site.model.has_approval(name) else name
    status = event.data.get("status")
    if status and site.model.has_entity("approval"):
        label += "：" + site.model.entity("approval").field("status").choice_label(str(status), lang)
    return label


def _label(entity: EntitySpec, name: str, lang: str) -> str:
    return entity.field(name).label.text(lang) if entity.has_field(name) else system_label(name, lang)


def delete_record(site: Site, request: Request, actor: Actor, entity_name: str, record_id: int, form: Any
                  ) -> Response:
    entity = site.records.entity(entity_name)
    version = str(form.get("version", ""))
    site.records.delete(entity.name, record_id, actor=actor,
                        expected_version=int(version) if version.isdigit() else None)
    site.flash(request, translate(site.lang(request), "deleted"))
    return RedirectResponse(f"/{entity.name}", status_code=303)
