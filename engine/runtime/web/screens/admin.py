"""The administrator's screens: users (role, team and state of everyone; change role, chat ids
for @mentions, disable, enable) and the notification outbox (what went out, what waits, what
was dead-lettered and why; retry)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from engine.runtime.background.outbox import count_messages, list_messages, retry_dead
from engine.runtime.ops.users import parse_im_ids
from engine.runtime.records.actors import Actor
from engine.runtime.records.errors import NotFound
from engine.runtime.records.permissions import Forbidden
from engine.runtime.web.screens.contexts import (Choice, MessageView, OutboxContext, TokenView, UserView,
                                                UsersContext)
from engine.runtime.web.screens.i18n import translate
from engine.runtime.web.screens.site import Site, is_admin
from engine.runtime.web.widgets import local_time


def require_admin(site: Site, actor: Actor) -> None:
    if not is_admin(site.services, actor):
        raise Forbidden(f"you lack permission 'admin' on users (role {actor.role}); only administrators manage "
                        "users", field=None, permission="admin", entity="users")


def users_screen(site: Site, request: Request, actor: Actor) -> HTMLResponse:
    require_admin(site, actor)
    lang = site.lang(request)
    zone = site.model.settings.timezone
    rows = site.services.users.all()
    names = {row.id: row.display_name or row.username for row in rows}
    context = UsersContext(
        users=tuple(UserView(row.id, row.username, row.display_name or "", row.role or "", row.team or "",
                             names.get(row.manager_id, "") if row.manager_id else "", bool(row.is_active),
                             bool(row.on_leave), row.id == actor.id,
                             " ".join(f"{kind}={value}" for kind, value in sorted((row.im_ids or {}).items())))
                      for row in rows),
        roles=tuple(Choice(role.name, role.label.text(lang)) for role in site.model.roles),
        tokens=tuple(TokenView(info.id, info.username, info.name, info.scope,
                               info.expires_at.strftime("%Y-%m-%d") if info.expires_at else "—",
                               local_time(info.last_used_at, zone).strftime("%Y-%m-%d %H:%M")
                               if info.last_used_at else "—", info.revoked_at is not None)
                     for info in site.services.users.sessions.list_tokens()))
    return site.render(request, actor, "users.html", context, translate(lang, "users"))


def revoke_token(site: Site, request: Request, actor: Actor, form: Any) -> Response:
    """The administrator revokes one API token (it is refused from the next request on)."""
    require_admin(site, actor)
    raw = str(form.get("token_id", ""))
    try:
        site.services.users.sessions.revoke_token(int(raw) if raw.isdigit() and len(raw) < 10 else 0)
        site.flash(request, translate(site.lang(request), "token_revoked", id=raw))
    except ValueError as error:
        site.flash(request, str(error))
    return RedirectResponse("/admin/users", status_code=303)


def change_user(site: Site, request: Request, actor: Actor, user_id: int, form: Any) -> Response:
    require_admin(site, actor)
    lang = site.lang(request)
    row = next((row for row in site.services.users.all() if row.id == user_id), None)
    if row is None:
        raise NotFound(f"user {user_id} does not exist", field="id")
    action = str(form.get("action", ""))
    try:
        if action == "role":
            site.services.users.update(row.username, role=str(form.get("role", "")))
        elif action in ("disable", "enable"):
            if action == "disable" and row.id == actor.id:
                site.flash(request, translate(lang, "cannot_disable_self"))
                return RedirectResponse("/admin/users", status_code=303)
            site.services.users.update(row.username, is_active=action == "enable")
        elif action == "im":
            ids = parse_im_ids(str(form.get("im_ids", "")).replace(",", " ").replace("，", " ").split())
            site.services.users.update(row.username, im_ids={k: v for k, v in ids.items() if v} or None)
        site.flash(request, translate(lang, "user_updated", username=row.username))
    except ValueError as error:
        site.flash(request, str(error))
    return RedirectResponse("/admin/users", status_code=303)


OUTBOX_STATUSES = ("pending", "sending", "dead", "delivered")


def outbox_screen(site: Site, request: Request, actor: Actor) -> HTMLResponse:
    require_admin(site, actor)
    lang = site.lang(request)
    status = request.query_params.get("status") or None
    if status not in (None, *OUTBOX_STATUSES):
        status = None
    zone = site.model.settings.timezone
    rows = list_messages(site.services.db, site.services.schema, status, limit=200)
    dead = count_messages(site.services.db, site.services.schema, "dead")
    context = OutboxContext(
        messages=tuple(_message_view(row, zone) for row in rows),
        statuses=tuple(Choice(value, translate(lang, f"outbox_{value}"), value == status)
                       for value in OUTBOX_STATUSES),
        dead=dead)
    return site.render(request, actor, "outbox.html", context, translate(lang, "outbox"))


def _message_view(row: Any, zone: str) -> MessageView:
    payload = row["payload"] or {}
    return MessageView(row["id"], row["channel"], row["status"], row["attempts"],
                       str(payload.get("title") or payload.get("text") or "")[:200], row["last_error"] or "",
                       f"{local_time(row['created_at'], zone):%Y-%m-%d %H:%M}",
                       f"/{row['entity']}/{row['record_id']}" if row["entity"] and row["record_id"] else None)


def retry_messages(site: Site, request: Request, actor: Actor, form: Any) -> Response:
    """Put one dead message (`message_id`) or all of them back in the queue."""
    require_admin(site, actor)
    raw = str(form.get("message_id", "")).strip()
    count = retry_dead(site.services.db, site.services.schema, site.services.clock.now(),
                       int(raw) if raw.isdigit() else None)
    site.flash(request, translate(site.lang(request), "outbox_retried", count=count))
    return RedirectResponse("/admin/outbox?status=pending", status_code=303)
