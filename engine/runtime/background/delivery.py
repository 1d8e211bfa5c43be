"""Notifications from the blueprint: render into the outbox, deliver from it.

`enqueue_notification` runs inside the transaction that caused the message (a timer
firing, a scheduled job): it resolves the recipients, renders the blueprint's Jinja2
template in the sandbox and writes one outbox row. A template that fails to render does
not fail the write: the row carries the error and dies at its first delivery attempt,
visible in `crm outbox list --status dead`.

`OutboxDeliverer` is the worker's `deliver`: channel config → the class its `type:` names in
the engine's channel catalogue (the shipped vendors and the plugins') → the vendor's request
(built at every attempt, so signatures are fresh) → aiohttp, a batch at a time → outbox
`Outcome`s. A missing secret is a retryable failure naming the variable, so it ends
dead-lettered — never a crash.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any


from engine.channels import (SHIPPED_CHANNELS, ChannelError, ChannelTypes, DeliveryJob, DeliveryResult, Message,
                             MessageFormat, RetryPolicy, SecretError, SecretRef, SignedWebhook, deliver_all,
                             next_attempt_at, resolve_secret)
from engine.metamodel import Metamodel
from engine.metamodel.channels import ChannelSpec, RateLimit, SecretValue
from engine.metamodel.messages import Msg
from engine.runtime.background.digests import Digest
from engine.runtime.background.outbox import OutboxMessage, Outcome


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
    jobs then run side by side, `concurrency` at once (`deliver_all`). `channels` is the
    engine's catalogue of channel types."""

    def __init__(self, model: Metamodel, now: Callable[[], dt.datetime], *, environ: Mapping[str, str] | None = None,
                 concurrency: int = 8, timeout: float = 10.0, channels: ChannelTypes = SHIPPED_CHANNELS) -> None:
        self.model = model
        self.now = now
        self.channels = channels
        self.environ = environ if environ is not None else os.environ
        self.concurrency = concurrency
        self.timeout = timeout

    def __call__(self, messages: Sequence[OutboxMessage]) -> list[Outcome]:
        return self.deliver_each(messages, None)

    def deliver_each(self, messages: Sequence[OutboxMessage],
                     record: Callable[[OutboxMessage, Outcome], None] | None) -> list[Outcome]:
        """Deliver the batch; `record(message, outcome)` runs right after each send (the worker
        marks it delivered there, so a crash later in the batch cannot send it again)."""
        planned = [self._job(message) for message in messages]
        jobs = [job for job in planned if not isinstance(job, DeliveryResult)]
        paced = {spec.name for spec in self.model.channels if spec.rate_limits}  # a robot's messages arrive in order
        sending = [message for message, job in zip(messages, planned) if not isinstance(job, DeliveryResult)]
        lanes = [message.channel if message.channel in paced else None for message in sending]
        on_result = None if record is None else (
            lambda index, result: record(sending[index], _outcome(result)))
        results = iter(deliver_all(jobs, concurrency=self.concurrency, timeout=self.timeout, lanes=lanes,
                                   on_result=on_result))
        return [_outcome(job if isinstance(job, DeliveryResult) else next(results)) for job in planned]

    def _job(self, message: OutboxMessage) -> DeliveryJob | DeliveryResult:
        try:
            spec = self.model.channel(message.channel) if self.model.has_channel(message.channel) else None
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
            except ChannelError as exc:  # a configuration problem: no attempt can help
                return _failed(f"channel {spec.name}: {exc}")
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
        url = _secret(spec.url, self.environ, secrets_file) or ""
        channel = self.channels.channel(spec, url)
        if channel is None:
            known = ", ".join(sorted(self.channels.names))
            return _failed(f"channel {spec.name}: no installed plugin provides the channel type '{spec.type}' "
                           f"(known: {known})")
        # the channel's secret: a robot's signing key (`secret:`), or a mail server's `password:`
        secret = _secret(spec.secret if spec.secret is not None else spec.password, self.environ, secrets_file)
        return channel.build_request(message, secret, self.now())


def _failed(error: str) -> DeliveryResult:
    """A message that no attempt can deliver (it goes dead at once)."""
    return DeliveryResult(False, None, False, error)


def _outcome(result: DeliveryResult) -> Outcome:
    return Outcome(result.ok, result.retryable, result.error, result.retry_after)


def digests_for(model: Metamodel, header: Callable[[str], str]) -> dict[str, Digest]:
    """Each digest channel's rule; `header(language)` is the digest's opening line with `{count}`."""
    return {spec.name: Digest(spec.digest.after, spec.digest.max_bytes, header(spec.language))
            for spec in model.channels if spec.digest is not None}


def pacing_for(model: Metamodel) -> dict[str, tuple[RateLimit, ...]]:
    """Each channel's rate limits (declared, or its vendor's), for the worker's claims."""
    return {spec.name: spec.rate_limits for spec in model.channels if spec.rate_limits}


def channel_warnings(model: Metamodel, environ: Mapping[str, str] | None = None) -> list[Msg]:
    """A line per channel whose webhook address or secret cannot be found (for `crm doctor`); never a value."""
    environ = environ if environ is not None else os.environ
    problems = []
    for spec in model.channels:
        for option in (spec.url, spec.secret, spec.password):
            try:
                _secret(option, environ, environ.get("CRM_SECRETS_FILE"))
            except SecretError as exc:
                problems.append(Msg("channel '{name}': {problem}", name=spec.name, problem=exc.args[0]))
    return problems
