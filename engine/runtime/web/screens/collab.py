"""The screens people work together on: the inbox (notices with the unread count in the page
header, mark read, open the record), comments with @mentions on every record page, and the
global search box (every entity the user may read, by what its `search:` names)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from engine.runtime.automation.comments import CommentRefused, Comments
from engine.runtime.automation.inbox import Inbox
from engine.runtime.records.actors import Actor
from engine.runtime.records.errors import NotFound, RecordError
from engine.runtime.records.permissions import Forbidden
from engine.runtime.records.queries import ListQuery
from engine.metamodel.roles import Scope
from engine.runtime.web.screens.collab_views import (CommentsPanel, CommentView, InboxContext, NoticeView,
                                                     SearchContext, SearchGroup, SearchHit)
from engine.runtime.web.screens.contexts import Choice
from engine.runtime.web.screens.i18n import translate
from engine.runtime.web.screens.site import Site
from engine.runtime.web.widgets import local_time

SEARCH_HITS = 5
MIN_SEARCH = 2


def inbox_of(site: Site) -> Inbox:
    return Inbox(site.services.schema, site.services.db)


def comments_of(site: Site) -> Comments:
    return Comments(site.model, site.services.schema, site.services.db, site.services.clock, site.records)


# -- the inbox --------------------------------------------------------------------------------


def inbox_screen(site: Site, request: Request, actor: Actor) -> HTMLResponse:
    lang = site.lang(request)
    inbox = inbox_of(site)
    unread_only = request.query_params.get("unread") == "1"
    raw = request.query_params.get("page", "1")
    page = int(raw) if raw.isdigit() and int(raw) > 0 else 1
    notices, total = inbox.notices(actor.id or 0, unread_only=unread_only, page=page)
    names = site.user_names()
    zone = site.model.settings.timezone
    views = []
    for notice in notices:
        if notice.kind == "assigned":
            what = translate(lang, "notice_assigned")
        elif notice.kind == "approval":
            what = translate(lang, "notice_approval")
        elif notice.kind == "mention":
            what = translate(lang, "notice_mention", who=names.get(notice.actor_id or 0, ""))
        else:
            what = translate(lang, "notice_message")
        title = notice.title
        if notice.kind in ("assigned", "approval", "mention") and notice.entity and site.model.has_entity(notice.entity):
            label = site.model.entity(notice.entity).label.text(lang)
            title = f"{label} #{notice.record_id}" + (f" · {notice.title}" if notice.title else "")
        views.append(NoticeView(notice.id, what, title, notice.text,
                                f"{local_time(notice.created_at, zone):%Y-%m-%d %H:%M}", notice.read_at is None,
                                f"/inbox/{notice.id}/open", names.get(notice.actor_id or 0, "")))
    pages = max(1, -(-total // 50))
    context = InboxContext(tuple(views), inbox.unread_count(actor.id or 0), total, page, pages, unread_only)
    return site.render(request, actor, "inbox.html", context, translate(lang, "inbox"))


def open_notice(site: Site, request: Request, actor: Actor, notice_id: int) -> Response:
    """Mark the notice read and go to its record (the inbox when it has none)."""
    inbox = inbox_of(site)
    notice = inbox.notice(actor.id or 0, notice_id)
    if notice is None:
        raise NotFound(f"notice {notice_id} does not exist", field="id")
    inbox.mark_read(actor.id or 0, site.services.clock.now(), [notice_id])
    target = f"/{notice.entity}/{notice.record_id}" if notice.entity and notice.record_id else "/inbox"
    return RedirectResponse(target, status_code=303)


def mark_read(site: Site, request: Request, actor: Actor, form: Any) -> Response:
    """Mark one notice (`notice_id`) or every unread one read."""
    raw = str(form.get("notice_id", "")).strip()
    count = inbox_of(site).mark_read(actor.id or 0, site.services.clock.now(),
                                     [int(raw)] if raw.isdigit() else None)
    site.flash(request, translate(site.lang(request), "marked_read", count=count))
    return RedirectResponse("/inbox", status_code=303)


def unread_count(site: Site, actor: Actor) -> int:
    return inbox_of(site).unread_count(actor.id or 0) if actor.id is not None else 0


# -- comments ---------------------------------------------------------------------------------


def comments_panel(site: Site, actor: Actor, entity: str, record_id: int, lang: str, *, draft: str = "",
                   error: str = "") -> CommentsPanel:
    names = site.user_names()
    zone = site.model.settings.timezone
    usernames = {row.id: row.username for row in site.users()}
    comments = comments_of(site).of_record(entity, record_id, actor=actor)
    people = tuple(Choice(row.username, row.display_name or row.username) for row in site.users() if row.is_active)
    return CommentsPanel(f"/{entity}/{record_id}/comments", tuple(
        CommentView(comment.id, names.get(comment.author_id or 0, translate(lang, "system")),
                    f"{local_time(comment.created_at, zone):%Y-%m-%d %H:%M}", comment.body,
                    tuple(usernames.get(user_id, "") for user_id in comment.mentions)) for comment in comments),
        people, draft, error)


def comment_error(lang: str, refused: CommentRefused) -> str:
    values = dict(refused.values)
    if refused.key == "mention_unknown":
        key = "mention_unknown_hint" if values.get("suggestion") else "mention_unknown"
        return translate(lang, key, **values)
    return translate(lang, refused.key, **values)


def post_comment(site: Site, request: Request, actor: Actor, entity: str, record_id: int, form: Any
                 ) -> Response | str:
    """Save the comment and go back to it; a refusal comes back as the text to show under the
    box (the caller draws the record page again with the draft kept)."""
    lang = site.lang(request)
    body = str(form.get("body", ""))
    try:
        posted = comments_of(site).add(entity, record_id, body, actor=actor)
    except CommentRefused as refused:
        return comment_error(lang, refused)
    names = ", ".join(f"@{name}" for name in posted.mentioned)
    site.flash(request, translate(lang, "comment_posted") + (translate(lang, "comment_notified", names=names)
                                                            if names else ""))
    return RedirectResponse(f"/{entity}/{record_id}#comment-{posted.comment.id}", status_code=303)


# -- global search ----------------------------------------------------------------------------


def search_screen(site: Site, request: Request, actor: Actor) -> HTMLResponse:
    lang = site.lang(request)
    text = request.query_params.get("q", "").strip()[:100]
    groups: list[SearchGroup] = []
    message = ""
    if len(text) < MIN_SEARCH:
        message = translate(lang, "search_too_short", count=MIN_SEARCH) if text else ""
    else:
        for name in searchable_entities(site, actor):
            entity = site.model.entity(name)
            try:
                page = site.records.list(name, ListQuery(search=text, per_page=SEARCH_HITS,
                                                         sort=entity.list_view().sort), actor=actor)
            except (Forbidden, RecordError):
                continue
            if not page.total:
                continue
            hidden = site.records.access.permissions(actor, name).hidden
            detail_fields = [field for field in (entity.search or ()) if field != entity.title_field
                             and field not in hidden][:3]
            hits = tuple(SearchHit(f"/{name}/{item['id']}",
                                   str(item.get(entity.title_field) or f"#{item['id']}"),
                                   " · ".join(_shown(entity, field, item.get(field), lang) for field in detail_fields
                                              if item.get(field) not in (None, "", [])))
                         for item in page.items)
            groups.append(SearchGroup(name, entity.plural.text(lang), page.total_text, hits,
                                      f"/{name}?q={_quote(text)}", page.more))
        if not groups:
            message = translate(lang, "search_nothing", text=text)
    return site.render(request, actor, "search.html", SearchContext(text, tuple(groups), message),
                       translate(lang, "search_title"))


def searchable_entities(site: Site, actor: Actor) -> list[str]:
    """The menu's entities first, then the rest, each when the actor may read it."""
    ordered = [name for group in site.model.menu for name in group.items if site.model.has_entity(name)]
    ordered += [entity.name for entity in site.model.entities if entity.name not in ordered]
    return [name for name in dict.fromkeys(ordered)
            if site.scope(actor, name, "read") is not Scope.NONE
            and (site.model.entity(name).search or site.model.entity(name).title_field)]


def _shown(entity: Any, field: str, value: Any, lang: str) -> str:
    if entity.has_field(field):
        spec = entity.field(field)
        if spec.choices:
            return str(spec.choice_label(str(value), lang))
    return str(value)


def _quote(text: str) -> str:
    from urllib.parse import quote
    return quote(text, safe="")


