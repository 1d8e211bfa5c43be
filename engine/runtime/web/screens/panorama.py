"""The 360° part of a record page: one view of the customer.

Nothing here is declared per entity; it follows the blueprint's links:

- **flags**: a yes/no field users cannot edit (readonly) that is true is a flag the engine set
  (an opportunity's delivery risk): shown as a banner at the top;
- **score**: a declared score of the entity (scores:) with its level and the reasons behind it;
- **relationship graph** (SVG): the record's parent and subsidiaries through its self-link
  (account.parent), and the people linking to it with their roles and who they report to
  (contact.account, contact.reports_to);
- **customer context**: for a record that links to another one (an opportunity's or a
  ticket's account), that record's owner and its work records — tickets, orders, deals,
  everything with a status or stage — the open ones first and highlighted;
- **one merged timeline**: the events of the record, of every record linking to it, and of
  the records linking to those (an account's contacts, deals, orders, tickets, and the
  activities of its deals), newest first, filterable by kind; each entry names its record.

Every list is read through RecordService with the viewer's permissions.
"""

from __future__ import annotations

import html
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from markupsafe import Markup

from engine.metamodel import EntitySpec, FieldType, SortKey
from engine.runtime.records.actors import Actor
from engine.runtime.records.events import Event
from engine.metamodel.roles import Scope
from engine.runtime.records.permissions import Forbidden
from engine.runtime.records.queries import Filter, ListQuery
from engine.runtime.storage.times import as_utc
from engine.runtime.web.screens.event_values import event_value
from engine.runtime.web.screens.i18n import translate
from engine.runtime.web.screens.site import Site
from engine.runtime.web.screens.suggestions import rank, suggested
from engine.runtime.web.widgets import local_time

TIMELINE_ROWS = 100      # entries shown on the merged timeline
RELATED_IDS = 200        # most recently updated records per related entity whose events are merged
CONTEXT_ROWS = 5         # rows per list in the customer context
CLOSED_STATES = frozenset({"closed", "resolved", "won", "lost", "cancelled", "delivered", "done", "converted",
                           "rejected", "approved", "withdrawn"})

_EVENT_WORDS = frozenset({"created", "updated", "deleted"})  # the timeline's own verbs; others show the kind


def _t(lang: str, key: str, **values: object) -> str:
    """The panorama's texts (catalogue ids `panorama_<key>`)."""
    return translate(lang, key if key.startswith("panorama_") else f"panorama_{key}", **values)


@dataclass(frozen=True, slots=True)
class MergedEntry:
    at: str
    kind: str           # the entity of the record the event belongs to
    kind_label: str
    record_title: str
    record_url: str
    who: str
    action: str
    changes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ContextRow:
    title: str
    url: str
    status: str
    owner: str
    is_open: bool


@dataclass(frozen=True, slots=True)
class ContextList:
    label: str
    summary: str
    rows: tuple[ContextRow, ...]
    more_url: str


@dataclass(frozen=True, slots=True)
class CustomerContext:
    label: str
    title: str
    url: str
    owner: str
    score: str
    lists: tuple[ContextList, ...]


@dataclass(frozen=True, slots=True)
class ScorePanel:
    label: str
    score: int | None
    level: str
    level_label: str
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SuggestionRow:
    title: str
    url: str
    uses: str
    summary: str


@dataclass(frozen=True, slots=True)
class SuggestionPanel:
    label: str
    rows: tuple[SuggestionRow, ...]
    empty: str


@dataclass(frozen=True, slots=True)
class Panorama:
    flags: tuple[tuple[str, str], ...] = ()          # (label, help) of each raised flag
    score: ScorePanel | None = None
    graph: Markup | None = None
    contexts: tuple[CustomerContext, ...] = ()
    timeline: tuple[MergedEntry, ...] = ()
    kinds: tuple[tuple[str, str, bool], ...] = ()    # timeline filter: (entity, label, is current)
    timeline_title: str = ""
    filter_url: str = ""
    all_label: str = ""
    none_label: str = ""
    reasons_label: str = ""
    relations_label: str = ""
    suggestions: tuple[SuggestionPanel, ...] = ()


def panorama_panel(site: Site, actor: Actor, entity: EntitySpec, record: Mapping[str, Any], lang: str,
                   only: str | None = None) -> Panorama | None:
    children = list(_children(site, entity))
    contexts = tuple(_contexts(site, actor, entity, record, lang))
    flags = tuple(_flags(entity, record, lang))
    score = _score(site, entity, record, lang)
    suggestions = tuple(_suggestions(site, actor, entity, record, lang))
    if not children and not contexts and not flags and score is None and not suggestions:
        return None
    timeline: tuple[MergedEntry, ...] = ()
    kinds: tuple[tuple[str, str, bool], ...] = ()
    if children:
        sources = _sources(site, actor, entity, int(record["id"]), _title(entity, record))
        present = [name for name in dict.fromkeys(name for name, _ in sources)]
        kinds = tuple((name, site.model.entity(name).plural.text(lang), name == only) for name in present)
        timeline = tuple(_merged(site, actor, sources, lang, only if only in present else None))
    return Panorama(flags, score, _graph(site, actor, entity, record, lang), contexts, timeline, kinds,
                    _t(lang, "panorama_timeline"), f"/{entity.name}/{record['id']}", _t(lang, "all_kinds"),
                    _t(lang, "none"), _t(lang, "score_reasons"), _t(lang, "relations"), suggestions)


def _suggestions(site: Site, actor: Actor, entity: EntitySpec, record: Mapping[str, Any],
                 lang: str) -> Iterator[SuggestionPanel]:
    for spec in site.model.suggestions:
        if spec.on != entity.name:
            continue
        with site.services.db.read() as connection:
            ranked = rank(connection, site.services.schema, spec, record)
        target = site.model.entity(spec.suggest)
        text = next((field.name for field in target.fields if field.type is FieldType.TEXT), None)
        rows = tuple(SuggestionRow(_title(target, item.record), f"/{target.name}/{item.record['id']}",
                                   _t(lang, "uses", uses=item.uses),
                                   _show(target, text, item.record.get(text), lang, {}) if text else "")
                     for item in suggested(site.records, ranked, spec, actor))
        yield SuggestionPanel(spec.label.text(lang), rows, _t(lang, "no_suggestions"))


# -- flags and score ---------------------------------------------------------------------------

def _flags(entity: EntitySpec, record: Mapping[str, Any], lang: str) -> Iterator[tuple[str, str]]:
    for spec in entity.fields:
        if spec.type is FieldType.BOOLEAN and spec.is_readonly and record.get(spec.name) is True:
            yield spec.label.text(lang), spec.help.text(lang)


def _score(site: Site, entity: EntitySpec, record: Mapping[str, Any], lang: str) -> ScorePanel | None:
    spec = next((score for score in site.model.scores if score.entity == entity.name), None)
    if spec is None or spec.field not in record:
        return None
    value = record.get(spec.field)
    level = spec.level_of(value) or ""
    label = level
    if spec.level_field and entity.has_field(spec.level_field) and level:
        label = entity.field(spec.level_field).choice_label(level, lang)
    reasons = str(record.get(spec.reasons_field) or "") if spec.reasons_field else ""
    return ScorePanel(spec.label.text(lang), value, level, label, tuple(line for line in reasons.splitlines() if line))


# -- who links here --------------------------------------------------------------------------------

def _children(site: Site, entity: EntitySpec) -> Iterator[tuple[EntitySpec, str]]:
    """(entity, link) for every link of another entity pointing at `entity`."""
    for source in site.model.entities:
        if source.name == entity.name or source.is_managed:
            continue
        for spec in source.fields:
            if spec.type is FieldType.LINK and spec.link_entity == entity.name:
                yield source, spec.name


def _readable_ids(site: Site, actor: Actor, source: EntitySpec, link: str, value: int | list[int]) -> list[dict[str, Any]]:
    """The most recently updated records of `source` whose `link` is `value` (or one of them)."""
    condition = Filter(link, "in", [str(item) for item in value]) if isinstance(value, list) \
        else Filter(link, "eq", str(value))
    try:
        page = site.records.list(source.name, ListQuery(filters=(condition,), per_page=RELATED_IDS,
                                                        sort=(SortKey("updated_at", True),)), actor=actor)
    except (Forbidden, ValueError):
        return []
    return list(page.items)


def _titles(site: Site, connection: sa.Connection, actor: Actor, source: EntitySpec, link: str,
            values: list[int]) -> list[dict[str, Any]]:
    """id and title of the most recently updated records of `source` whose `link` is one of
    `values`, within the actor's read scope (the same row condition lists use)."""
    access = site.records.access
    if access.scope(actor, source.name, "read") is Scope.NONE or link in access.permissions(actor, source.name).hidden:
        return []
    table = site.services.schema.table(source.name)
    title = source.title_field if source.title_field and source.title_field in table.c \
        and source.title_field not in access.permissions(actor, source.name).hidden else None
    scope = access.row_condition(actor, source.name, "read", table)
    query = sa.select(table.c.id, *( [table.c[title].label("title")] if title else [])).where(
        table.c[link].in_(values), *([scope] if scope is not None else []))
    rows = connection.execute(query.order_by(table.c.updated_at.desc(), table.c.id.desc()).limit(RELATED_IDS))
    return [{"id": int(row.id), source.title_field or "title": getattr(row, "title", None)} for row in rows]


def _sources(site: Site, actor: Actor, entity: EntitySpec, record_id: int,
             title: str) -> list[tuple[str, dict[int, str]]]:
    """(entity, {id: title}) of the record, its children and their children, as the actor may read them."""
    with site.services.db.read() as connection:
        return _sources_within(site, connection, actor, entity, record_id, title)


def _sources_within(site: Site, connection: sa.Connection, actor: Actor, entity: EntitySpec, record_id: int,
                    title: str) -> list[tuple[str, dict[int, str]]]:
    found: list[tuple[str, dict[int, str]]] = [(entity.name, {record_id: title})]
    seen = {(entity.name, record_id)}
    for child, link in _children(site, entity):
        rows = _titles(site, connection, actor, child, link, [record_id])
        titles = {int(row["id"]): _title(child, row) for row in rows if (child.name, row["id"]) not in seen}
        seen |= {(child.name, key) for key in titles}
        if titles:
            found.append((child.name, titles))
        for grandchild, sublink in _children(site, child):
            if grandchild.name == entity.name:
                continue
            # one read per link, over the 50 most recently updated children: a deal's activities
            rows = _titles(site, connection, actor, grandchild, sublink, list(titles)[:50])
            more = {int(row["id"]): _title(grandchild, row) for row in rows if (grandchild.name, row["id"]) not in seen}
            seen |= {(grandchild.name, key) for key in more}
            if more:
                found.append((grandchild.name, more))
    return found


def _title(entity: EntitySpec, row: Mapping[str, Any]) -> str:
    return str(row.get(entity.title_field) or f"#{row['id']}") if entity.title_field else f"#{row['id']}"


def _merged(site: Site, actor: Actor, sources: list[tuple[str, dict[int, str]]], lang: str,
            only: str | None) -> Iterator[MergedEntry]:
    events = site.services.schema.events
    titles: dict[tuple[str, int], str] = {}
    clauses = []
    for name, ids in sources:
        if only is not None and name != only:
            continue
        titles.update({(name, key): value for key, value in ids.items()})
        clauses.append(sa.and_(events.c.entity == name, events.c.record_id.in_(list(ids))))
    if not clauses:
        return
    with site.services.db.read() as connection:
        rows = connection.execute(sa.select(events).where(sa.or_(*clauses))
                                  .order_by(events.c.at.desc(), events.c.id.desc()).limit(TIMELINE_ROWS)).all()
    names = site.user_names()
    zone = site.model.settings.timezone
    for row in rows:
        entity = site.model.entity(row.entity)
        hidden = site.records.access.permissions(actor, entity.name).hidden
        event = Event(row.id, row.entity, row.record_id, row.kind, row.actor_id, as_utc(row.at) or row.at,
                      row.changes or {}, row.data or {})
        who = names.get(event.actor_id, f"#{event.actor_id}") if event.actor_id else translate(lang, "system")
        action = event.kind if event.kind in _EVENT_WORDS else None
        changes = () if event.kind == "created" else tuple(
            f"{_label(entity, name, lang)}: {_show(entity, name, after, lang, names)}"
            for name, (_before, after) in list(event.changes.items())[:4] if name not in hidden)
        title = titles.get((row.entity, row.record_id)) or f"#{row.record_id}"
        yield MergedEntry(local_time(event.at, zone).strftime("%Y-%m-%d %H:%M"), entity.name,
                          entity.label.text(lang), title, f"/{entity.name}/{row.record_id}", who,
                          _t(lang, action) if action else event_words(site, event, lang),
                          changes)


def event_words(site: Site, event: Event, lang: str) -> str:
    """What a timeline calls an event (its kind where a plugin's kind has no words)."""
    if event.kind == "converted":
        return _conversion_note(site, event, lang)
    try:
        return translate(lang, f"event_{event.kind}")
    except KeyError:
        return translate(lang, "event_other", kind=event.kind)


def _conversion_note(site: Site, event: Event, lang: str) -> str:
    """What a conversion made of this record, or what it was made from (`converted` event data)."""
    def named(entity: str, record_id: Any) -> tuple[str, str]:
        label = site.model.entity(entity).label.text(lang) if site.model.has_entity(entity) else entity
        return label, str(record_id)
    origin = event.data.get("from")
    if isinstance(origin, dict):
        label, record_id = named(str(origin.get("entity")), origin.get("id"))
        return translate(lang, "event_converted_from", entity=label, id=record_id)
    made = event.data.get("into") or {}
    targets = [" #".join(named(str(item.get("entity")), item.get("id"))) for item in made.values()
               if isinstance(item, dict)]
    return translate(lang, "event_converted", targets=translate(lang, "list_separator").join(targets))


def _label(entity: EntitySpec, name: str, lang: str) -> str:
    return entity.field(name).label.text(lang) if entity.has_field(name) else name


def _show(entity: EntitySpec, name: str, value: Any, lang: str, users: dict[int, str]) -> str:
    text = event_value(entity, name, value, lang, users)
    return text if len(text) <= 60 else text[:59] + "…"


# -- the customer this record belongs to ----------------------------------------------------------

def _contexts(site: Site, actor: Actor, entity: EntitySpec, record: Mapping[str, Any],
              lang: str) -> Iterator[CustomerContext]:
    """For each required link to a record other entities' work hangs off (an account): its owner,
    score and work records."""
    for spec in entity.fields:
        if spec.type is not FieldType.LINK or not spec.is_required or record.get(spec.name) is None \
                or spec.link_entity is None:
            continue
        parent = site.model.entity(spec.link_entity)
        work = [(child, link) for child, link in _children(site, parent) if child.stage_field is not None]
        if len(work) < 2:
            continue
        try:
            hub = site.records.get(parent.name, int(record[spec.name]), actor=actor)
        except Forbidden:
            continue
        names = site.user_names()
        lists = []
        for child, link in work:
            try:
                page = site.records.list(child.name, ListQuery(filters=(Filter(link, "eq", str(hub["id"])),),
                                                               per_page=RELATED_IDS, sort=(SortKey("updated_at", True),)),
                                         actor=actor)
            except (Forbidden, ValueError):
                continue
            stage = child.stage_field or ""
            rows = [row for row in page.items if not (child.name == entity.name and row["id"] == record["id"])]
            rows.sort(key=lambda row: str(row.get(stage)) in CLOSED_STATES)  # open first, newest first within
            open_count = sum(1 for row in rows if str(row.get(stage)) not in CLOSED_STATES)
            lists.append(ContextList(
                child.plural.text(lang), _t(lang, "open_count", open=open_count, total=len(rows)),
                tuple(ContextRow(_title(child, row), f"/{child.name}/{row['id']}",
                                 child.field(stage).choice_label(str(row.get(stage)), lang) if row.get(stage) else "—",
                                 names.get(row.get("owner") or 0, "—"), str(row.get(stage)) not in CLOSED_STATES)
                      for row in rows[:CONTEXT_ROWS]), f"/{child.name}?{link}={hub['id']}"))
        score = _score(site, parent, hub, lang)
        yield CustomerContext(f"{_t(lang, 'customer_context')} · {spec.label.text(lang)}", _title(parent, hub),
                              f"/{parent.name}/{hub['id']}", names.get(hub.get("owner") or 0, "—"),
                              f"{score.label} {score.score} · {score.level_label}" if score and score.score is not None
                              else "", tuple(lists))


# -- the relationship graph ------------------------------------------------------------------------

def _graph(site: Site, actor: Actor, entity: EntitySpec, record: Mapping[str, Any], lang: str) -> Markup | None:
    """Parent and subsidiaries (the entity's self-link) above and below the record; the people
    linking to it to the right, with their role and whom they report to."""
    self_link = next((spec.name for spec in entity.fields if spec.type is FieldType.LINK
                      and spec.link_entity == entity.name), None)
    people_entity, people_link, reports = None, None, None
    for child, link in _children(site, entity):
        own = next((spec.name for spec in child.fields if spec.type is FieldType.LINK
                    and spec.link_entity == child.name), None)
        if own is not None:
            people_entity, people_link, reports = child, link, own
            break
    if self_link is None and people_entity is None:
        return None
    parent = None
    subsidiaries: list[dict[str, Any]] = []
    if self_link is not None:
        if record.get(self_link) is not None:
            try:
                parent = site.records.get(entity.name, int(record[self_link]), actor=actor)
            except Forbidden:
                parent = None
        subsidiaries = _readable_ids(site, actor, entity, self_link, int(record["id"]))[:6]
    people: list[dict[str, Any]] = []
    if people_entity is not None and people_link is not None:
        people = _readable_ids(site, actor, people_entity, people_link, int(record["id"]))[:10]
    if parent is None and not subsidiaries and not people:
        return None
    return Markup(_svg(site, entity, record, parent, subsidiaries, people_entity, people, reports, lang))


def _svg(site: Site, entity: EntitySpec, record: Mapping[str, Any], parent: Mapping[str, Any] | None,
         subsidiaries: list[dict[str, Any]], people_entity: EntitySpec | None, people: list[dict[str, Any]],
         reports: str | None, lang: str) -> str:
    box_w, box_h = 150, 34
    parts: list[str] = []
    height = max(3 * 70, 50 + 44 * max(1, len(people)))
    width = 40 + 2 * (box_w + 30) + (box_w + 60 if people else 0) + max(0, len(subsidiaries) - 2) * (box_w + 10)

    def node(x: int, y: int, text: str, url: str, css: str, sub: str = "") -> None:
        label = html.escape(text if len(text) <= 12 else text[:11] + "…")
        parts.append(f'<a href="{html.escape(url)}"><g class="node {css}"><rect x="{x}" y="{y}" width="{box_w}" '
                     f'height="{box_h}" rx="6"/><text x="{x + 8}" y="{y + 15}">{label}</text>'
                     + (f'<text class="sub" x="{x + 8}" y="{y + 28}">{html.escape(sub)}</text>' if sub else "")
                     + "</g></a>")

    def edge(x1: int, y1: int, x2: int, y2: int) -> None:
        parts.append(f'<line class="edge" x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}"/>')

    cx, cy = 20, 80
    if parent is not None:
        node(cx, 10, _title(entity, parent), f"/{entity.name}/{parent['id']}", "parent", _t(lang, "parent"))
        edge(cx + box_w // 2, 10 + box_h, cx + box_w // 2, cy)
    node(cx, cy, _title(entity, record), f"/{entity.name}/{record['id']}", "self")
    for index, sub in enumerate(subsidiaries):
        x = cx + index * (box_w + 10)
        node(x, cy + 80, _title(entity, sub), f"/{entity.name}/{sub['id']}", "subsidiary", _t(lang, "subsidiary"))
        edge(cx + box_w // 2, cy + box_h, x + box_w // 2, cy + 80)
    if people_entity is not None and people:
        px = cx + box_w + 60 + max(0, len(subsidiaries) - 1) * (box_w + 10)
        role_field = next((spec for spec in people_entity.fields if spec.type is FieldType.CHOICE
                           and spec.name in ("role", "buying_role")), None)
        positions: dict[int, tuple[int, int]] = {}
        for index, person in enumerate(people):
            y = 10 + index * 44
            positions[int(person["id"])] = (px, y)
            role = role_field.choice_label(str(person.get(role_field.name)), lang) \
                if role_field is not None and person.get(role_field.name) else ""
            title = str(person.get("job_title") or "") if people_entity.has_field("job_title") else ""
            node(px, y, _title(people_entity, person), f"/{people_entity.name}/{person['id']}", "person",
                 " · ".join(part for part in (title, role) if part))
            edge(cx + box_w, cy + box_h // 2, px, y + box_h // 2)
        for person in people:
            boss = person.get(reports) if reports else None
            if boss is not None and int(boss) in positions:
                x1, y1 = positions[int(person["id"])]
                x2, y2 = positions[int(boss)]
                parts.append(f'<path class="reports" d="M{x1 + box_w} {y1 + box_h // 2} C{x1 + box_w + 40} '
                             f'{y1 + box_h // 2} {x2 + box_w + 40} {y2 + box_h // 2} {x2 + box_w} {y2 + box_h // 2}"/>')
        width = max(width, px + box_w + 60)
    return (f'<svg class="relations" role="img" aria-label="{html.escape(_t(lang, "relations"))}" '
            f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
            + "".join(parts) + "</svg>")
