"""Notifications inside the write: who a message is for, and its text rendered into the outbox.

Every `notify` — a rule's, an SLA checkpoint's, a cadence step's, a scheduled job's — comes
here in the transaction that caused it: the recipients (`owner`, `owner.manager`,
`role:X`, `team:X`, `user:X`, `all`) are resolved to users and then to each channel's
mentions (mobile numbers, chat ids, e-mail addresses), and the inline text or named
template is rendered in the Jinja2 sandbox with one context — `record`, `owner`, `manager`,
`url`, `now` and whatever ran it (`rule`, `sla`, `cadence`, `job`). A text that fails to
render does not fail the write: the row carries the error and dies at its first delivery
attempt, visible in `crm outbox list --status dead`.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from engine.channels import (TemplateRenderError,
                             render_message)
from engine.metamodel import Metamodel
from engine.runtime.automation.inbox import notify_key, plain_text, post
from engine.runtime.background.outbox import enqueue
from engine.runtime.storage.prepared import Prepared
from engine.runtime.storage.tables import Schema





def _person(row: Any) -> dict[str, Any]:
    if row is None:
        return dict(NOBODY)
    return {"id": row.id, "username": row.username, "display_name": row.display_name or row.username,
            "phone": row.phone or "", "email": row.email or "", "role": row.role or "", "team": row.team or ""}


@functools.lru_cache(maxsize=16)
def _user_by_id(users: sa.Table) -> Prepared:
    return Prepared(sa.select(users).where(users.c.id == sa.bindparam("id")))


def load_user(connection: sa.Connection, schema: Schema, user_id: int | None,
              seen: dict[int, Any] | None = None) -> Any:
    """One user row (None for no id); `seen` memoises look-ups within one timer's work."""
    if user_id is None:
        return None
    if seen is not None and user_id in seen:
        return seen[user_id]
    row = _user_by_id(schema.users).first(connection, {"id": user_id})
    if seen is not None:
        seen[user_id] = row
    return row


def people_context(connection: sa.Connection, schema: Schema, owner_id: int | None,
                   seen: dict[int, Any] | None = None) -> dict[str, dict[str, Any]]:
    """`owner` and `manager` for templates (empty placeholders when missing, so templates never fail on them)."""
    owner = load_user(connection, schema, owner_id, seen)
    manager = load_user(connection, schema, owner.manager_id, seen) if owner is not None else None
    return {"owner": _person(owner), "manager": _person(manager)}


def resolve_recipients(connection: sa.Connection, schema: Schema, to: Sequence[str],
                       owner_id: int | None, backup: str | None = None,
                       seen: dict[int, Any] | None = None) -> tuple[list[Any], bool]:
    """The user rows named by `to` (owner, owner.manager, manager, backup, role:X, team:X, user:X) and 'all'."""
    users = schema.users
    found: dict[int, Any] = {}
    mention_all = False
    owner = load_user(connection, schema, owner_id, seen)
    for person in to:
        rows: list[Any] = []
        if person == "all":
            mention_all = True
        elif person == "owner" and owner is not None:
            rows = [owner]
        elif person in ("owner.manager", "manager") and owner is not None and owner.manager_id is not None:
            rows = [load_user(connection, schema, owner.manager_id, seen)]
        elif person == "backup" and backup:
            rows = list(connection.execute(sa.select(users).where(users.c.username == backup)))
        elif ":" in person:
            what, name = person.split(":", 1)
            column = {"role": users.c.role, "team": users.c.team, "user": users.c.username}[what]
            rows = list(connection.execute(sa.select(users).where(column == name, users.c.is_active.is_(True))))
        for row in rows:
            if row is not None:
                found.setdefault(row.id, row)
    return list(found.values()), mention_all


def enqueue_notification(connection: sa.Connection, schema: Schema, model: Metamodel, *, channel: str,
                         to: Sequence[str], owner_id: int | None, context: Mapping[str, Any], key: str,
                         now: dt.datetime, text: str | None = None, template: str | None = None,
                         entity: str | None = None, record_id: int | None = None, backup: str | None = None,
                         seen: dict[int, Any] | None = None, inbox: bool = True,
                         addresses: Sequence[str] = ()) -> None:
    """Render the inline `text` or the named `template` for `channel` and add the message, with
    its recipients' mentions, to the outbox in the caller's transaction — and, unless `inbox`
    is False (the caller posts its own notice), to each recipient's in-app inbox. `addresses`:
    mail addresses of people who are not users (a customer answering a survey)."""
    spec = model.channel(channel) if model.has_channel(channel) else None
    language = spec.language if spec is not None else model.settings.default_language
    recipients, mention_all = resolve_recipients(connection, schema, to, owner_id, backup, seen)
    payload: dict[str, Any] = {
        "format": spec.format if spec is not None else "text",
        # WeCom markdown cannot @ a mobile number (only text can); the others ignore what they cannot use
        "mention_mobiles": sorted({row.phone for row in recipients if row.phone})
        if spec is None or not (spec.type == "wecom" and spec.format == "markdown") else [],
        "mention_user_ids": sorted({(row.im_ids or {}).get(spec.type) for row in recipients
                                    if spec is not None and (row.im_ids or {}).get(spec.type)}),
        "mention_all": mention_all,
        "recipients": sorted({row.email for row in recipients if row.email} | set(addresses)),
        "to": [row.username for row in recipients]}
    payload.update(render_notification(model, language, context, text=text, template=template,
                                       html=spec is None or spec.type == "mail",
                                       markdown=spec is not None and spec.format == "markdown"))
    if inbox:
        _to_inboxes(connection, schema, model, recipients, payload, language, context, text=text, template=template,
                    now=now, entity=entity, record_id=record_id)
    enqueue(connection, schema, channel=channel, key=key, payload=payload, now=now, entity=entity, record_id=record_id)


def render_notification(model: Metamodel, language: str, context: Mapping[str, Any], *, text: str | None,
                        template: str | None, html: bool = False, markdown: bool = False) -> dict[str, str]:
    """`title`, `text` (and `html` for mail) of a message, or `error` saying why it could not be rendered.
    `markdown`: record values are escaped, so text from a web form cannot add links or formatting."""
    try:
        if text is not None:
            return {"title": "", "text": render_message(text, context, name="notify text", markdown=markdown,
                                                         language=language)}
        if template is None or not model.has_template(template):
            raise TemplateRenderError(f"there is no message template '{template}'")
        found = model.template(template)
        title = found.pick("title", language)
        rendered = {"title": render_message(title, context, name=f"{template}.title", language=language) if title else "",
                    "text": render_message(found.pick("text", language), context, name=template, markdown=markdown,
                                            language=language)}
        if found.html and html:  # values are escaped in the HTML body
            rendered["html"] = render_message(found.pick("html", language), context, name=f"{template}.html",
                                              autoescape=True, language=language)
        return rendered
    except TemplateRenderError as exc:
        return {"error": str(exc)}


def _to_inboxes(connection: sa.Connection, schema: Schema, model: Metamodel, recipients: Sequence[Any],
               payload: Mapping[str, Any], language: str, context: Mapping[str, Any], *, text: str | None,
               template: str | None, now: dt.datetime, entity: str | None, record_id: int | None) -> None:
    """The same message in each recipient's in-app inbox, in their language (inbox.py)."""
    if not recipients:
        return
    by_language: dict[str, list[int]] = {}
    for row in recipients:
        wanted = row.language if row.language in model.settings.languages else model.settings.default_language
        by_language.setdefault(wanted, []).append(row.id)
    key = notify_key(entity, record_id, template or text or "", now)
    for wanted, user_ids in by_language.items():
        # a markdown channel's text has its values escaped for the chat ("\(Sales rep\)"); the inbox
        # shows plain text, so it renders its own copy
        rendered = payload if wanted == language and payload.get("format") != "markdown" else \
            render_notification(model, wanted, context, text=text, template=template)
        if "error" in rendered:
            continue
        body = plain_text(str(rendered.get("text") or ""))
        title = plain_text(str(rendered.get("title") or "")) or (body.splitlines() or [""])[0]
        post(connection, schema, user_ids=user_ids, kind="notify", key=key, title=title, text=body, now=now,
             entity=entity, record_id=record_id)


# no owner: a dash reads in any language
NOBODY = {"id": None, "username": "", "display_name": "—", "phone": "", "email": "", "role": "", "team": ""}
