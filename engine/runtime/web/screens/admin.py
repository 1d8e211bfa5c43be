"""The administrator's screens: users (create; role, team, manager, chat ids for @mentions,
leave, disable, enable, reset the password, issue and revoke API tokens — each recorded in the
audit log), the audit log, the blueprint at a glance with each channel's health, and the
notification outbox (what went out, what waits, what was dead-lettered and why; retry), a page
at a time."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from engine.metamodel import Metamodel
from engine.runtime.background.outbox import OutboxStatus, count_messages, retry_dead
from engine.runtime.ops.audit import AuditEntry, AuditLog
from engine.runtime.ops.users import CHAT_TYPES, MIN_PASSWORD_LENGTH, NewUser, chat_types, parse_im_ids
from engine.runtime.storage.times import as_utc
from engine.runtime.web.screens.collab_views import (AuditContext, AuditLine, BlueprintContext, BlueprintEntityLine,
                                                     UserDetailContext, UserTokenView)
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
        users=tuple(UserView(row.id, row.username, row.display_name or "", row.role or "",
                             team_label(site.model, row.team, lang),
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
    token_id = int(raw) if raw.isdigit() and len(raw) < 10 else 0
    sessions = site.services.users.sessions
    info = next((info for info in sessions.list_tokens() if info.id == token_id), None)
    try:
        sessions.revoke_token(token_id)
        if info is not None:
            audit_of(site).record(actor, "user_revoke", info.username, {"name": info.name})
        site.flash(request, translate(site.lang(request), "token_revoked", id=raw))
    except ValueError as error:
        site.flash(request, admin_error_text(site.lang(request), str(error)))
    return RedirectResponse("/admin/users", status_code=303)


def change_user(site: Site, request: Request, actor: Actor, user_id: int, form: Any) -> Response:
    """One admin action on one user (`action`: role, disable, enable, im, profile, leave, back,
    password, token, revoke), recorded in the audit log; back to where the form was."""
    require_admin(site, actor)
    lang = site.lang(request)
    row = next((row for row in site.services.users.all() if row.id == user_id), None)
    if row is None:
        raise NotFound(f"user {user_id} does not exist", field="id")
    action = str(form.get("action", ""))
    back = "/admin/users" if str(form.get("back", "")) == "list" else f"/admin/users/{user_id}"
    users = site.services.users
    detail: dict[str, Any] = {}
    try:
        if action == "role":
            role = str(form.get("role", ""))
            users.update(row.username, role=role)
            detail = {"from": row.role, "to": role}
        elif action in ("disable", "enable"):
            if action == "disable" and row.id == actor.id:
                site.flash(request, translate(lang, "cannot_disable_self"))
                return RedirectResponse(back, status_code=303)
            users.update(row.username, is_active=action == "enable")
        elif action == "im":
            ids = parse_im_ids(str(form.get("im_ids", "")).replace(",", " ").replace("，", " ").split(),
                               chat_types({channel.type for channel in site.model.channels}))
            users.update(row.username, im_ids={k: v for k, v in ids.items() if v} or None)
            detail = {"im_ids": sorted(ids)}
        elif action == "profile":
            detail = _profile(site, row, form, lang)
        elif action in ("leave", "back_from_leave"):
            users.update(row.username, on_leave=action == "leave")
        elif action == "password":
            users.set_password(row.username, str(form.get("password", "")))
        elif action == "token":
            name = str(form.get("token_name", "")).strip() or "api"
            token = users.create_token(row.username, name)
            request.session["new_token"] = token  # shown once, on the next page
            detail = {"name": name}
        elif action == "revoke":
            raw = str(form.get("token_id", ""))
            detail = {"name": users.revoke_token(row.username, int(raw) if raw.isdigit() else -1)}
        else:
            raise ValueError(action)
        audit_of(site).record(actor, f"user_{action}", row.username, detail)
        site.flash(request, translate(lang, "user_updated", username=row.username))
    except AdminRefused as refused:
        site.flash(request, refused.text)
    except ValueError as error:
        site.flash(request, admin_error_text(lang, str(error)))
    return RedirectResponse(back, status_code=303)


class AdminRefused(ValueError):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def admin_error_text(lang: str, message: str) -> str:
    """A Users refusal (English, from ops/users.py) in the user's language."""
    patterns: tuple[tuple[str, str, dict[str, Any]], ...] = (("a password needs at least", "password_too_short", {"count": MIN_PASSWORD_LENGTH}),
                ("already exists", "username_taken", {}),
                ("is not declared in the blueprint", "unknown_role", {}),
                ("write TYPE=ID", "bad_chat_ids", {"types": ", ".join(CHAT_TYPES)}),
                ("has no token", "unknown_token", {}))
    quoted = re.match(r"'([^']*)':", message)
    for needle, key, values in patterns:
        if needle in message:
            return translate(lang, key, **values, pair=quoted.group(1) if quoted else "")
    return translate(lang, "admin_failed", reason=message)


def _profile(site: Site, row: Any, form: Any, lang: str) -> dict[str, Any]:
    """Display name, e-mail, phone, team and manager of one user; the changed ones."""
    users = site.services.users
    manager_raw = str(form.get("manager_id", "")).strip()
    manager_id = int(manager_raw) if manager_raw.isdigit() else None
    if manager_id == row.id:
        raise AdminRefused(translate(lang, "manager_self"))
    if manager_id is not None and manager_id not in {user.id for user in users.all()}:
        raise AdminRefused(translate(lang, "manager_unknown"))
    display_name = str(form.get("display_name", "")).strip()
    if not display_name:
        raise AdminRefused(translate(lang, "display_name_required"))
    values = {"display_name": display_name[:128], "email": str(form.get("email", "")).strip()[:254] or None,
              "phone": str(form.get("phone", "")).strip()[:32] or None,
              "team": str(form.get("team", "")).strip()[:64] or None, "manager_id": manager_id}
    changed = {name: value for name, value in values.items() if getattr(row, name) != value}
    if changed:
        users.update(row.username, **changed)
    return {"changed": sorted(changed)}


def user_screen(site: Site, request: Request, actor: Actor, user_id: int) -> HTMLResponse:
    require_admin(site, actor)
    lang = site.lang(request)
    rows = site.services.users.all()
    row = next((row for row in rows if row.id == user_id), None)
    if row is None:
        raise NotFound(f"user {user_id} does not exist", field="id")
    zone = site.model.settings.timezone

    def when(moment: Any) -> str:
        return f"{local_time(moment, zone):%Y-%m-%d %H:%M}" if moment is not None else "—"
    tokens = tuple(UserTokenView(token.id, token.name, when(token.created_at), when(token.last_used_at),
                             token.revoked_at is not None) for token in site.services.users.tokens(row.username))
    context = UserDetailContext(
        row.id, row.username, row.display_name or "", row.email or "", row.phone or "", row.role or "",
        row.team or "", row.manager_id,
        " ".join(f"{kind}={value}" for kind, value in sorted((row.im_ids or {}).items())), bool(row.is_active),
        bool(row.on_leave), row.id == actor.id,
        tuple(Choice(role.name, role.label.text(lang), role.name == row.role) for role in site.model.roles),
        tuple(Choice(str(other.id), other.display_name or other.username, other.id == row.manager_id)
              for other in rows if other.id != row.id and other.is_active),
        tokens, str(request.session.pop("new_token", "")), teams=team_choices(site, lang))
    lines, _total = audit_of(site).entries(target=row.username)
    return site.render(request, actor, "admin_user.html", context, f"{translate(lang, 'users')} · {row.username}",
                       panels={"audit": tuple(_audit_line(line, site.model, zone, lang) for line in lines[:20])})


def new_user_screen(site: Site, request: Request, actor: Actor, *, error: str = "",
                    values: dict[str, str] | None = None, status: int = 200) -> HTMLResponse:
    require_admin(site, actor)
    lang = site.lang(request)
    rows = site.services.users.all()
    context = {"error": error, "values": values or {},
               "roles": tuple(Choice(role.name, role.label.text(lang)) for role in site.model.roles),
               "managers": tuple(Choice(str(row.id), row.display_name or row.username) for row in rows if row.is_active),
               "min_password": MIN_PASSWORD_LENGTH, "teams": team_choices(site, lang)}
    return site.render(request, actor, "admin_new_user.html", context, translate(lang, "new_user"), status=status)


def create_user(site: Site, request: Request, actor: Actor, form: Any) -> Response:
    require_admin(site, actor)
    lang = site.lang(request)
    values = {name: str(form.get(name, "")).strip() for name in
              ("username", "display_name", "role", "team", "manager_id", "email", "phone")}
    password = str(form.get("password", ""))
    rows = site.services.users.all()
    manager = next((row.username for row in rows if str(row.id) == values["manager_id"]), None)
    error = ""
    if not USERNAME.fullmatch(values["username"]):
        error = translate(lang, "username_invalid")
    elif not values["display_name"]:
        error = translate(lang, "display_name_required")
    if not error:
        try:
            site.services.users.add(NewUser(values["username"], values["display_name"], values["role"],
                                            values["team"] or None, manager, values["email"] or None,
                                            values["phone"] or None, lang, password))
        except ValueError as refused:
            error = admin_error_text(lang, str(refused))
    if error:
        return new_user_screen(site, request, actor, error=error, values=values, status=422)
    audit_of(site).record(actor, "user_created", values["username"], {"role": values["role"],
                                                                       "team": values["team"]})
    created = site.services.users.find(values["username"])
    site.flash(request, translate(lang, "user_created", username=values["username"]))
    return RedirectResponse(f"/admin/users/{created.id if created else ''}", status_code=303)


USERNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{1,63}")


def audit_of(site: Site) -> AuditLog:
    return AuditLog(site.services.schema, site.services.db, site.services.clock)


def team_choices(site: Site, lang: str) -> tuple[Choice, ...]:
    """The teams to offer on the user forms: those declared in roles.yaml, then those in use."""
    declared = [team.name for team in site.model.teams]
    used = sorted({row.team for row in site.services.users.all() if row.team} - set(declared))
    return tuple(Choice(name, team_label(site.model, name, lang)) for name in [*declared, *used])


def role_label(model: Metamodel, name: str | None, lang: str) -> str:
    return model.role(name).label.text(lang) if name and model.has_role(name) else (name or "")


def team_label(model: Metamodel, name: str | None, lang: str) -> str:
    """A team as people call it: its label in roles.yaml (`teams:`), else its name."""
    spec = model.team(name)
    return spec.label.text(lang) if spec is not None else (name or "")


_PROFILE_WORDS = {"display_name": "display_name", "email": "email", "phone": "phone", "team": "team",
                  "manager_id": "manager"}


def _audit_detail(model: Metamodel, detail: dict[str, Any], lang: str) -> str:
    """What an admin action changed, in the reader's words: roles and teams by their labels, a
    role change as "销售代表 → 销售经理", profile fields by the form's labels."""
    parts = []
    if detail.get("from") or detail.get("to"):
        parts.append(f"{role_label(model, detail.get('from'), lang)} → {role_label(model, detail.get('to'), lang)}")
    for key, value in detail.items():
        if key in ("from", "to") or value in (None, "", []):
            continue
        if key == "role":
            shown = role_label(model, str(value), lang)
        elif key == "team":
            shown = team_label(model, str(value), lang)
        elif key == "changed":
            shown = ("、" if lang == "zh" else ", ").join(
                translate(lang, _PROFILE_WORDS[name]) if name in _PROFILE_WORDS else str(name) for name in value)
        else:
            shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        word = {"role": "role", "team": "team", "changed": "audit_changed", "im_ids": "chat_ids",
                "name": "token_name"}.get(key)
        parts.append(f"{translate(lang, word)}: {shown}" if word else f"{key}: {shown}")
    return "；".join(parts) if lang == "zh" else "; ".join(parts)


def _audit_line(entry: AuditEntry, model: Metamodel, zone: str, lang: str) -> AuditLine:
    key = f"audit_{entry.action}"
    try:
        action = translate(lang, key)
    except KeyError:
        action = entry.action
    return AuditLine(f"{local_time(entry.at, zone):%Y-%m-%d %H:%M}", entry.actor, action, entry.target,
                     _audit_detail(model, entry.detail, lang))


def audit_screen(site: Site, request: Request, actor: Actor) -> HTMLResponse:
    require_admin(site, actor)
    lang = site.lang(request)
    raw = request.query_params.get("page", "1")
    page = int(raw) if raw.isdigit() and int(raw) > 0 else 1
    entries, total = audit_of(site).entries(page)
    zone = site.model.settings.timezone
    context = AuditContext(tuple(_audit_line(entry, site.model, zone, lang) for entry in entries), total, page,
                           max(1, -(-total // AUDIT_PAGE)))
    return site.render(request, actor, "admin_audit.html", context, translate(lang, "audit_log"))


def blueprint_screen(site: Site, request: Request, actor: Actor) -> HTMLResponse:
    """Entities (fields, records), roles, and each channel's health: waiting and dead messages."""
    require_admin(site, actor)
    lang = site.lang(request)
    schema, db = site.services.schema, site.services.db
    outbox = schema.outbox
    with db.read() as connection:
        counts = {entity.name: int(connection.execute(sa.select(sa.func.count()).select_from(
            schema.table(entity.name))).scalar_one()) for entity in site.model.entities}
        health: dict[tuple[str, str], int] = {
            (row.channel, row.status): int(row.n) for row in connection.execute(
                sa.select(outbox.c.channel, outbox.c.status, sa.func.count().label("n"))
                .group_by(outbox.c.channel, outbox.c.status))}
    context = BlueprintContext(
        tuple(BlueprintEntityLine(entity.name, entity.label.text(lang), len(entity.fields), counts[entity.name],
                                  f"/{entity.name}") for entity in site.model.entities),
        tuple(Choice(role.name, role.label.text(lang)) for role in site.model.roles),
        tuple((channel.name, channel.label.text(lang) if channel.label else channel.name, channel.type,
               health.get((channel.name, "pending"), 0) + health.get((channel.name, "sending"), 0),
               health.get((channel.name, "dead"), 0)) for channel in site.model.channels))
    return site.render(request, actor, "admin_blueprint.html", context, translate(lang, "blueprint_overview"))


OUTBOX_STATUSES = tuple(OutboxStatus)


def outbox_screen(site: Site, request: Request, actor: Actor) -> HTMLResponse:
    require_admin(site, actor)
    lang = site.lang(request)
    status = request.query_params.get("status") or None
    if status not in (None, *OUTBOX_STATUSES):
        status = None
    zone = site.model.settings.timezone
    raw = request.query_params.get("page", "1")
    page = int(raw) if raw.isdigit() and int(raw) > 0 else 1
    rows, total = outbox_page(site, status, page)
    dead = count_messages(site.services.db, site.services.schema, "dead")
    context = OutboxContext(
        messages=tuple(_message_view(row, zone) for row in rows),
        statuses=tuple(Choice(value, translate(lang, f"outbox_{value}"), value == status)
                       for value in OUTBOX_STATUSES),
        dead=dead, channel_labels={channel.name: channel.label.text(lang) for channel in site.model.channels
                                   if channel.label})
    pages = max(1, -(-total // OUTBOX_PAGE))
    query = f"status={status}&" if status else ""
    pager = {"total": total, "page": page, "pages": pages,
             "previous": f"/admin/outbox?{query}page={page - 1}" if page > 1 else "",
             "next": f"/admin/outbox?{query}page={page + 1}" if page < pages else ""}
    return site.render(request, actor, "outbox.html", context, translate(lang, "outbox"), panels={"pager": pager})


OUTBOX_PAGE = 100
AUDIT_PAGE = 50


def outbox_page(site: Site, status: str | None, page: int) -> tuple[list[dict[str, Any]], int]:
    """One page of the outbox (newest first) and how many messages the filter matches."""
    table = site.services.schema.outbox
    where = [table.c.status == status] if status else []
    with site.services.db.read() as connection:
        total = int(connection.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one())
        rows = connection.execute(sa.select(table).where(*where).order_by(table.c.id.desc()).limit(OUTBOX_PAGE)
                                  .offset((page - 1) * OUTBOX_PAGE))
        return [{**row._mapping, "created_at": as_utc(row.created_at)} for row in rows], total


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
