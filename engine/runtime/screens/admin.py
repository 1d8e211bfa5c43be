"""The administrator's users screen: role, team and state of everyone; change role, chat ids
for @mentions, disable, enable."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..actors import Actor
from ..errors import NotFound
from ..permissions import Forbidden
from ..users import list_users, parse_im_ids, update_user
from .contexts import Choice, UsersContext, UserView
from .i18n import translate
from .site import Site, is_admin


def require_admin(site: Site, actor: Actor) -> None:
    if not is_admin(site.runtime, actor):
        raise Forbidden(f"you lack permission 'admin' on users (role {actor.role}); only administrators manage "
                        "users", field=None, permission="admin", entity="users")


def users_screen(site: Site, request: Request, actor: Actor) -> HTMLResponse:
    require_admin(site, actor)
    lang = site.lang(request)
    rows = list_users(site.runtime)
    names = {row.id: row.display_name or row.username for row in rows}
    context = UsersContext(
        users=tuple(UserView(row.id, row.username, row.display_name or "", row.role or "", row.team or "",
                             names.get(row.manager_id, "") if row.manager_id else "", bool(row.is_active),
                             bool(row.on_leave), row.id == actor.id,
                             " ".join(f"{kind}={value}" for kind, value in sorted((row.im_ids or {}).items())))
                      for row in rows),
        roles=tuple(Choice(role.name, role.label.text(lang)) for role in site.model.roles))
    return site.render(request, actor, "users.html", context, translate(lang, "users"))


def change_user(site: Site, request: Request, actor: Actor, user_id: int, form: Any) -> Response:
    require_admin(site, actor)
    lang = site.lang(request)
    row = next((row for row in list_users(site.runtime) if row.id == user_id), None)
    if row is None:
        raise NotFound(f"user {user_id} does not exist", field="id")
    action = str(form.get("action", ""))
    try:
        if action == "role":
            update_user(site.runtime, row.username, role=str(form.get("role", "")))
        elif action in ("disable", "enable"):
            if action == "disable" and row.id == actor.id:
                site.flash(request, translate(lang, "cannot_disable_self"))
                return RedirectResponse("/admin/users", status_code=303)
            update_user(site.runtime, row.username, is_active=action == "enable")
        elif action == "im":
            ids = parse_im_ids(str(form.get("im_ids", "")).replace(",", " ").replace("，", " ").split())
            update_user(site.runtime, row.username, im_ids={k: v for k, v in ids.items() if v} or None)
        site.flash(request, translate(lang, "user_updated", username=row.username))
    except ValueError as error:
        site.flash(request, str(error))
    return RedirectResponse("/admin/users", status_code=303)
