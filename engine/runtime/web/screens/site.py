"""What every screen shares: the runtime, the widgets, the templates, the page chrome, and
small lookups (user names, titles of linked records, may-I checks for buttons)."""

from __future__ import annotations

import collections

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jinja2
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import HTMLResponse

from engine.runtime.web.services import WebServices
from engine.runtime.automation.inbox import Inbox
from engine.metamodel import EntitySpec, FieldSpec, FieldType, Label
from engine.metamodel.roles import Scope
from engine.runtime.records.actors import Actor
from engine.runtime.records.permissions import Forbidden
from engine.runtime.records.queries import Filter, ListQuery
from engine.runtime.web.screens.contexts import Chrome, MenuLink, MenuSection
from engine.runtime.web.screens.i18n import LANGUAGES, translate
from engine.runtime.web.screens.security import csrf_token
from engine.runtime.web.widgets import FieldContext, InputError, WidgetRegistry

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
LINK_OPTIONS_LIMIT = 200


def is_admin(services: WebServices, actor: Actor) -> bool:
    if actor.is_system or actor.role == "admin":
        return True
    return bool(actor.role and services.model.has_role(actor.role) and services.model.role(actor.role).is_admin)


class Site:
    """Shared by the screen modules; holds no per-request state."""

    def __init__(self, services: WebServices, widgets: WidgetRegistry) -> None:
        self.services = services
        self.records = services.records
        self.model = services.model
        self.widgets = widgets
        self.templates = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                            undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)

    # -- language, flashes and the frame around pages ------------------------------------

    def lang(self, request: Request) -> str:
        chosen = request.session.get("lang")
        languages = self.model.settings.languages or LANGUAGES
        return chosen if chosen in languages else self.model.settings.default_language

    @staticmethod
    def flash(request: Request, message: str) -> None:
        request.session["flash"] = [*request.session.get("flash", []), message][-5:]

    def chrome(self, request: Request, actor: Actor | None, title: str) -> Chrome:
        lang = self.lang(request)
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        flashes = tuple(request.session.pop("flash", []))
        base = Chrome(self.model.label.text(lang) or self.model.name, title, lang,
                      tuple(self.model.settings.languages), csrf_token(request), here, flashes=flashes)
        if actor is None:
            return base
        return Chrome(base.app_label, title, lang, base.languages, base.csrf, here,
                      user_name=self.user_names().get(actor.id or 0, actor.username),
                      is_admin=is_admin(self.services, actor), menu=self.menu(actor, lang, request.url.path),
                      flashes=flashes, pending_approvals=self._pending_link(actor, lang, request.url.path),
                      **self._inbox_link(actor, lang, request))

    def _inbox_link(self, actor: Actor, lang: str, request: Request) -> dict[str, Any]:
        """The header's inbox link and unread count, and the search box's text (collab.py)."""
        if actor.id is None:
            return {}
        unread = Inbox(self.services.schema, self.services.db).unread_count(actor.id)
        return {"inbox": MenuLink(translate(lang, "inbox_unread", count=unread), "/inbox",
                                  request.url.path == "/inbox"),
                "unread": unread,
                "search_text": request.query_params.get("q", "") if request.url.path == "/search" else ""}

    def _pending_link(self, actor: Actor, lang: str, path: str) -> MenuLink | None:
        """"My pending approvals (N)" in the page's header, when the blueprint has approvals."""
        desk = self.services.approvals
        if desk is None or actor.id is None:
            return None
        url = f"/approval_task?view=pending&owner={actor.id}&status=pending"
        return MenuLink(translate(lang, "my_pending", count=desk.pending_count(actor.id)), url,
                        path == "/approval_task")

    def menu(self, actor: Actor, lang: str, path: str) -> tuple[MenuSection, ...]:
        sections = []
        for group in self.model.menu:
            links = tuple(MenuLink(self.model.entity(name).plural.text(lang), f"/{name}",
                                   path == f"/{name}" or path.startswith(f"/{name}/"))
                          for name in group.items
                          if self.model.has_entity(name) and self.scope(actor, name, "read") is not Scope.NONE)
            if links:
                sections.append(MenuSection(group.label.text(lang), links))
        if self.model.dashboards:  # figures are scoped to what the viewer reads: everyone sees the list
            boards = tuple(MenuLink(spec.label.text(lang), f"/dashboards/{spec.name}", path == f"/dashboards/{spec.name}")
                           for spec in self.model.dashboards)
            sections.insert(0, MenuSection(translate(lang, "dashboards"), boards))
        return tuple(sections)

    def render(self, request: Request, actor: Actor | None, template: str, page: Any, title: str,
               status: int = 200, panels: Mapping[str, Any] | None = None) -> HTMLResponse:
        """`panels`: extra contexts a page includes (e.g. `comments` on the record page)."""
        chrome = self.chrome(request, actor, title)
        lang = chrome.lang

        def t(key: str, **values: object) -> str:
            return translate(lang, key, **values)
        html = self.templates.get_template(template).render(chrome=chrome, page=page, t=t, panels=panels or {})
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    # -- permissions for buttons (RecordService still decides every write) ----------------

    def scope(self, actor: Actor, entity: str, action: str) -> Scope:
        return self.records.access.scope(actor, entity, action)

    def may(self, actor: Actor, entity: str, action: str, record: Mapping[str, Any] | None = None) -> bool:
        """Whether the actor's scope for `action` covers `record` (or any record when None)."""
        scope = self.scope(actor, entity, action)
        if scope is Scope.NONE:
            return False
        if record is None or scope is Scope.ALL or record.get("owner") == actor.id:
            return True
        if scope is Scope.TEAM and actor.team and record.get("owner") is not None \
                and self.user_teams().get(record["owner"]) == actor.team:
            return True
        access = self.records.access
        if record.get("owner") is None or access.permissions(actor, entity).via:
            with self.records.db.read() as connection:  # an unowned record the team covers, or a `via` field
                return access.covers(connection, actor, entity, record) if scope is Scope.TEAM else \
                    any(record.get(name) == actor.id for name in access.permissions(actor, entity).via)
        return False

    # -- lookups --------------------------------------------------------------------------

    def users(self) -> list[Any]:
        users = self.services.schema.users
        with self.services.db.read() as connection:
            return list(connection.execute(sa.select(users.c.id, users.c.username, users.c.display_name,
                                                     users.c.team, users.c.is_active).order_by(users.c.id)))

    def user_names(self) -> dict[int, str]:
        return {row.id: row.display_name or row.username for row in self.users()}

    def user_teams(self) -> dict[int, str | None]:
        return {row.id: row.team for row in self.users()}

    def active_users(self) -> dict[int, str]:
        return {row.id: row.display_name or row.username for row in self.users() if row.is_active}

    def link_titles(self, actor: Actor, target: str, ids: Iterable[Any]) -> dict[int, str]:
        """Titles of the given records of `target` (for link cells); '#id' when the title is hidden."""
        wanted = sorted({int(value) for value in ids if isinstance(value, int)})
        entity = self.model.entity(target)
        access = self.records.access
        if not wanted or entity.title_field in access.permissions(actor, target).hidden or \
                access.scope(actor, target, "read") is Scope.NONE:
            return {}
        table = self.services.schema.table(target)
        column = table.c[entity.title_field] if entity.title_field in table.c else table.c.id
        condition: Any = table.c.id.in_(wanted)
        scope = access.row_condition(actor, target, "read", table)  # a title is a read: the list's scope
        if scope is not None:
            condition = sa.and_(condition, scope)
        with self.services.db.read() as connection:
            rows = connection.execute(sa.select(table.c.id, column).where(condition))
            return {row[0]: str(row[1]) if row[1] is not None else f"#{row[0]}" for row in rows}

    def readable(self, actor: Actor, target: str, record_id: int) -> bool:
        """Whether the record exists and lies within the actor's read scope."""
        access = self.records.access
        if access.scope(actor, target, "read") is Scope.NONE:
            return False
        table = self.services.schema.table(target)
        condition: Any = table.c.id == record_id
        scope = access.row_condition(actor, target, "read", table)
        if scope is not None:
            condition = sa.and_(condition, scope)
        with self.services.db.read() as connection:
            return connection.execute(sa.select(table.c.id).where(condition)).first() is not None

    def file_names(self, ids: Iterable[Any]) -> dict[int, str]:
        files = self.services.schema.files
        wanted = sorted({int(value) for value in ids if isinstance(value, int)})
        if not wanted:
            return {}
        with self.services.db.read() as connection:
            return {row.id: row.name for row in connection.execute(
                sa.select(files.c.id, files.c.name).where(files.c.id.in_(wanted)))}

    def link_options(self, actor: Actor, target: str, filters: tuple[Filter, ...] = ()
                     ) -> tuple[dict[int, str], bool]:
        """Up to LINK_OPTIONS_LIMIT records of `target` the actor may read (and `filters` keep,
        e.g. the chosen account's contacts), newest first, and whether there are more (then a
        form offers a search box instead of a select)."""
        entity = self.model.entity(target)
        try:
            page = self.records.list(target, ListQuery(filters=filters, per_page=LINK_OPTIONS_LIMIT), actor=actor)
        except Forbidden:
            return {}, False
        titles = {item["id"]: str(item.get(entity.title_field) or f"#{item['id']}") for item in page.items}
        counts = collections.Counter(titles.values())
        if any(count > 1 for count in counts.values()):  # two 张伟: tell them apart by company (or what
            second = next((name for name in entity.list_view().columns  # the list shows next) and number
                           if name != entity.title_field and entity.has_field(name)
                           and entity.field(name).type in (FieldType.STRING, FieldType.PHONE, FieldType.EMAIL)), None)
            for item in page.items:
                if counts[titles[item["id"]]] > 1:
                    extra = str(item.get(second) or "") if second else ""
                    titles[item["id"]] += f" · {extra} #{item['id']}" if extra else f" · #{item['id']}"
        return titles, page.more

    def link_by_title(self, actor: Actor, target: str, text: str, lang: str) -> int:
        """The one record of `target` the actor may read whose title is exactly `text`;
        InputError saying what to do when none or several are."""
        entity = self.model.entity(target)
        what = entity.label.text(lang)
        if not entity.title_field or entity.title_field in self.records.access.permissions(actor, target).hidden:
            raise InputError(translate(lang, "link_pick", text=text, entity=what))
        try:
            page = self.records.list(target, ListQuery(filters=(Filter(entity.title_field, "eq", text),),
                                                       per_page=2), actor=actor)
        except Forbidden:
            raise InputError(translate(lang, "link_forbidden", entity=what)) from None
        if page.total == 1:
            return int(page.items[0]["id"])
        key = "link_none" if page.total == 0 else "link_several"
        raise InputError(translate(lang, key, text=text, entity=what, count=page.total))

    def field_context(self, actor: Actor, entity: EntitySpec, spec: FieldSpec, lang: str,
                      values: Iterable[Any] = (), *, for_form: bool = False,
                      record: Mapping[str, Any] | None = None) -> FieldContext:
        """The widget's view of one field; `values` are those about to be shown (for titles).
        On a form, a link declared `filter_by: G` offers only the targets of the `record`'s G."""
        titles: Mapping[Any, str] = {}
        link_base = search_url = title_field = filter_by = options_url = ""
        if spec.type is FieldType.USER:
            titles = self.active_users() if for_form else self.user_names()
        elif spec.type is FieldType.LINK and spec.link_entity:
            link_base = f"/{spec.link_entity}/"
            titles = self.link_titles(actor, spec.link_entity, values)
            if for_form:
                parent = (record or {}).get(spec.filter_by) if spec.filter_by else None
                filters = (Filter(spec.filter_by, "eq", str(parent)),) if spec.filter_by and \
                    str(parent or "").isdigit() else ()
                options, more = self.link_options(actor, spec.link_entity, filters)
                titles = {**options, **titles}
                if more:
                    search_url = f"/api/{spec.link_entity}"
                if more or spec.filter_by:
                    title_field = self.model.entity(spec.link_entity).title_field or ""
                if spec.filter_by:  # the page's script narrows the choices again when G changes
                    filter_by, options_url = spec.filter_by, f"/api/{spec.link_entity}"
        elif spec.type is FieldType.ATTACHMENT:
            titles = self.file_names(values)
        return FieldContext(spec, spec.label.text(lang), spec.help.text(lang), spec.is_required,
                            spec.is_readonly or spec.type is FieldType.COMPUTED, titles, link_base, search_url,
                            title_field, filter_by, options_url)


def owner_spec(lang: str) -> FieldSpec:
    """The system `owner` column seen as a user field, so widgets can draw it."""
    return FieldSpec("owner", FieldType.USER, Label.of({"zh": "负责人", "en": "Owner"}))


def system_label(name: str, lang: str) -> str:
    return translate(lang, name) if name in ("owner", "created_at", "updated_at", "created_by", "id", "version") \
        else name
