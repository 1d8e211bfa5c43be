"""Notifications from the blueprint: render into the outbox, deliver from it.

`enqueue_notification` runs inside the transaction that caused the message (a timer
firing, a scheduled job): it resolves the recipients, renders the blueprint's Jinja2
template in the sandbox and writes one outbox row. A template that fails to render does
not fail the write: the row carries the error and dies at its first delivery attempt,
visible in `crm outbox list --status dead`.

`OutboxDeliverer` is the worker's `deliver`: channel config → the vendor's request (built
at every attempt, so signatures are fresh) → aiohttp, a batch at a time → outbox `Outcome`s. A missing
secret is a retryable failure naming the variable, so it ends dead-lettered — never a crash.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from engine.channels import (DeliveryJob, DeliveryResult, DingTalkRobot, FeishuBot, MailChannel, Message, MessageFormat,
                             RetryPolicy, SecretError, SecretRef, SignedWebhook, SlackWebhook, TemplateRenderError,
                             WeComRobot, deliver_all, next_attempt_at, render_message, resolve_secret)
from engine.metamodel import Metamodel
from engine.metamodel.channels import ChannelSpec, MessageTemplateSpec, SecretValue
from engine.runtime.background.outbox import OutboxMessage, Outcome, enqueue
from engine.runtime.storage.prepared import Prepared
from engine.runtime.storage.tables import Schema

NOBODY = {"id": None, "username": "", "display_name": "(unassigned)", "phone": "", "email": "", "role": "",
          "team": ""}


def channel_named(model: Metamodel, name: str) -> ChannelSpec | None:
    return next((spec for spec in model.channels if spec.name == name), None)


def template_named(model: Metamodel, name: str) -> MessageTemplateSpec | None:
    return next((spec for spec in model.templates if spec.name == name), None)


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
                         template: str, to: Sequence[str], owner_id: int | None, context: Mapping[str, Any],
                         key: str, now: dt.datetime, entity: str | None = None, record_id: int | None = None,
                         backup: str | None = None, seen: dict[int, Any] | None = None) -> None:
    """Render `template` for `channel` and add the message to the outbox in the caller's transaction."""
    spec = channel_named(model, channel)
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
        "recipients": sorted({row.email for row in recipients if row.email}),
        "to": [row.username for row in recipients]}
    found = template_named(model, template)
    try:
        if found is None:
            raise TemplateRenderError(f"there is no message template '{template}'")
        title = found.pick("title", language)
        payload["title"] = render_message(title, context, name=f"{template}.title") if title else ""
        payload["text"] = render_message(found.pick("text", language), context, name=template)
        if found.html and (spec is None or spec.type == "mail"):  # values are escaped in the HTML body
            payload["html"] = render_message(found.pick("html", language), context, name=f"{template}.html",
                                             autoescape=True)
    except TemplateRenderError as exc:
        payload["error"] = str(exc)
    enqueue(connection, schema, channel=channel, key=key, payload=payload, now=now, entity=entity, record_id=record_id)


# --------------------------------------------------------------------------- delivery

def retry_policy(model: Metamodel) -> RetryPolicy:
    """The blueprint's retry settings (the first channels document's `retry:`), else the defaults."""
    spec = model.channels[0].retry if model.channels else None
    if spec is None:
        return RetryPolicy()
    return RetryPolicy(max_attempts=spec.max_attempts, base_delay=spec.first_delay, max_delay=spec.max_delay)


def next_attempt_for(model: Metamodel) -> Callable[[int, dt.datetime], dt.datetime | None]:
    """The worker's backoff: exponential with jitter, dead after max_attempts."""
    policy = retry_policy(model)
    return lambda attempts, now: next_attempt_at(attempts, now, policy)


def _secret(value: SecretValue | None, environ: Mapping[str, str], secrets_file: str | None) -> str | None:
    if value is None:
        return None
    if value.literal is not None:
        return value.literal
    return resolve_secret(SecretRef(env=value.env, key=value.key), environ, secrets_file)


def message_from_payload(payload: Mapping[str, Any], key: str) -> Message:
    """The outbox payload as a channel `Message` (rules' notifications may carry only text and title)."""
    fmt = MessageFormat.MARKDOWN if payload.get("format") == "markdown" else MessageFormat.TEXT
    return Message(text=str(payload.get("text", "")), title=str(payload.get("title", "")), format=fmt,
                   mention_mobiles=tuple(payload.get("mention_mobiles") or ()),
                   mention_user_ids=tuple(payload.get("mention_user_ids") or ()),
                   mention_all=bool(payload.get("mention_all", False)), idempotency_key=key,
                   data=dict(payload.get("data") or {}), recipients=tuple(payload.get("recipients") or ()),
                   html=str(payload["html"]) if payload.get("html") is not None else None)


class OutboxDeliverer:
    """The worker's `deliver`: a claimed batch of outbox messages to their channels, judged the vendor's way.

    Each message becomes a job (a prepared request, or a mail to send) or, when it cannot be
    sent at all (unknown channel, render error, missing secret), an immediate outcome; the
    jobs then run side by side, `concurrency` at once (`deliver_all`)."""

    def __init__(self, model: Metamodel, now: Callable[[], dt.datetime], *, environ: Mapping[str, str] | None = None,
                 concurrency: int = 8, timeout: float = 10.0) -> None:
        self.model = model
        self.now = now
        self.environ = environ if environ is not None else os.environ
        self.concurrency = concurrency
        self.timeout = timeout

    def __call__(self, messages: Sequence[OutboxMessage]) -> list[Outcome]:
        planned = [self._job(message) for message in messages]
        jobs = [job for job in planned if not isinstance(job, DeliveryResult)]
        results = iter(deliver_all(jobs, concurrency=self.concurrency, timeout=self.timeout))
        return [_outcome(job if isinstance(job, DeliveryResult) else next(results)) for job in planned]

    def _job(self, message: OutboxMessage) -> DeliveryJob | DeliveryResult:
        try:
            spec = channel_named(self.model, message.channel)
            if spec is None and message.channel == "webhook" and ({"url", "url_env"} & set(message.payload)):
                return self._rule_webhook(message)
            if spec is None:
                known = ", ".join(c.name for c in self.model.channels) or "none"
                return _failed(f"there is no channel '{message.channel}' in the blueprint (known: {known})")
            if "error" in message.payload:
                return _failed(str(message.payload["error"]))
            secrets_file = self.environ.get("CRM_SECRETS_FILE")
            try:
                return self._channel_job(spec, message_from_payload(message.payload, message.idempotency_key),
                                         secrets_file)
            except SecretError as exc:
                return DeliveryResult(False, None, True, f"channel {spec.name}: {exc}")
        except Exception as exc:  # a channel bug must not lose the message (nor the rest of the batch)
            return DeliveryResult(False, None, True, f"{type(exc).__name__}: {exc}")

    def _rule_webhook(self, message: OutboxMessage) -> DeliveryJob | DeliveryResult:
        """A rule's `webhook` action: a SignedWebhook to its url (or url_env), signed with secret_env."""
        payload = message.payload
        try:
            url = payload.get("url") or resolve_secret(SecretRef(env=str(payload["url_env"])), self.environ)
            secret = resolve_secret(SecretRef(env=str(payload["secret_env"])), self.environ) \
                if payload.get("secret_env") else None
        except SecretError as exc:
            return DeliveryResult(False, None, True, f"webhook: {exc}")
        body = Message(text="", title=str(payload.get("rule", "")), idempotency_key=message.idempotency_key,
                       data=dict(payload.get("data") or {}))
        return SignedWebhook(str(url)).build_request(body, secret, self.now())

    def _channel_job(self, spec: ChannelSpec, message: Message,
                     secrets_file: str | None) -> DeliveryJob | DeliveryResult:
        now = self.now()
        if spec.type == "mail":
            mail = MailChannel(spec.host, spec.port, spec.sender, username=spec.username,
                               starttls=spec.tls == "starttls", implicit_tls=spec.tls == "implicit")
            if not message.recipients:
                return _failed("the mail has no recipient with an e-mail address")
            email, password = mail.build_email(message, now), _secret(spec.password, self.environ, secrets_file)
            return functools.partial(mail.send, email, password)
        url = _secret(spec.url, self.environ, secrets_file) or ""
        secret = _secret(spec.secret, self.environ, secrets_file)
        channel: Any = {"dingtalk": DingTalkRobot, "wecom": WeComRobot, "slack": SlackWebhook,
                        "webhook": SignedWebhook}.get(spec.type)
        robot = FeishuBot(url, rich=spec.rich) if spec.type == "feishu" else channel(url)
        return robot.build_request(message, secret, now)


def _failed(error: str) -> DeliveryResult:
    """A message that no attempt can deliver (it goes dead at once)."""
    return DeliveryResult(False, None, False, error)


def _outcome(result: DeliveryResult) -> Outcome:
    return Outcome(result.ok, result.retryable, result.error)


def channel_warnings(model: Metamodel, environ: Mapping[str, str] | None = None) -> list[str]:
    """A line per channel whose webhook address or secret cannot be found (for `crm doctor`); never a value."""
    environ = environ if environ is not None else os.environ
    problems = []
    for spec in model.channels:
        for option in (spec.url, spec.secret, spec.password):
            try:
                _secret(option, environ, environ.get("CRM_SECRETS_FILE"))
            except SecretError as exc:
                problems.append(f"channel '{spec.name}': {exc}")
    return problems
