"""Notification channels: build each vendor's request, deliver it, and decide about retries.

A channel turns a rendered `Message` into the exact HTTP request its vendor documents
(`build_request`, pure: the same message, secret and time give the same bytes), and the
shared `deliver_all` sends a batch with aiohttp, a few at a time, and reads the vendor's answer — an HTTP 200
whose body says ``errcode: 130101`` is a failed delivery, not a success. Mail goes through
`MailChannel` and smtplib. The worker keeps the outbox row; this module only decides:
`plan_after_attempt` says delivered, retry at a time (exponential backoff with jitter), or
dead. Also here: `resolve_secret` (environment or secrets file, never the blueprint) and
`render_message` (Jinja2 in an immutable sandbox with size limits).

Vendor documentation relied on (wording checked through mirrors of the official pages):
- DingTalk custom robot, https://open.dingtalk.com/document/robots/custom-robot-access and
  .../customize-robot-security-settings: sign = urlEncode(base64(HmacSHA256(key=secret,
  msg=timestamp_ms + "\\n" + secret))), appended as &timestamp=…&sign=…; bodies
  {"msgtype": "text", "text": {"content"}, "at": {"atMobiles", "atUserIds", "isAtAll"}} and
  {"msgtype": "markdown", "markdown": {"title", "text"}}; reply {"errcode": 0, "errmsg": "ok"};
  130101 "send too fast, exceed 20 times per minute".
- WeCom group robot, https://developer.work.weixin.qq.com/document/path/91770: POST to
  .../cgi-bin/webhook/send?key=…, {"msgtype": "text", "text": {"content",
  "mentioned_mobile_list"}} (content ≤ 2048 bytes) or {"msgtype": "markdown", "markdown":
  {"content"}} (≤ 4096 bytes, mentions only as <@userid>); reply errcode 0; 45009 "api freq
  out of limit".
- Feishu/Lark custom bot, https://open.feishu.cn/document/client-docs/bot-v3/add-custom-bot:
  sign = base64(HmacSHA256(key=timestamp_s + "\\n" + secret, msg="")) sent as "timestamp" and
  "sign" in the JSON body; msg_type text / post / interactive; reply {"code": 0} (older
  deployments {"StatusCode": 0}); 19021 = bad signature or timestamp older than an hour.
- Slack incoming webhooks, https://api.slack.com/messaging/webhooks: {"text", "blocks"};
  success is HTTP 200 with the body "ok"; errors are 4xx with a short code (invalid_payload,
  channel_not_found, …), 429 with Retry-After when rate limited.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email.utils
import enum
import functools
import hashlib
import hmac
import json
import random
import re
import smtplib
import traceback
import types
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import jinja2
import jinja2.nodes
import yaml
import yarl
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

# --- messages and requests -----------------------------------------------------------------


class MessageFormat(enum.Enum):
    TEXT = "text"
    MARKDOWN = "markdown"


class ChannelKind(enum.Enum):
    DINGTALK = "dingtalk"
    WECOM = "wecom"
    FEISHU = "feishu"
    SLACK = "slack"
    WEBHOOK = "webhook"
    MAIL = "mail"


@dataclass(frozen=True, slots=True)
class Message:
    """A rendered notification, independent of the channel that carries it."""

    text: str
    title: str = ""
    format: MessageFormat = MessageFormat.TEXT
    mention_mobiles: tuple[str, ...] = ()  # DingTalk, WeCom (text only)
    mention_user_ids: tuple[str, ...] = ()  # DingTalk userIds, WeCom userids, Feishu open_ids, Slack member ids
    mention_all: bool = False
    idempotency_key: str = ""  # the outbox row's key; sent where the channel can carry it
    data: Mapping[str, Any] = field(default_factory=dict)  # structured payload for the generic webhook
    recipients: tuple[str, ...] = ()  # mail only
    html: str | None = None  # mail only: an HTML alternative to `text`


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """Everything needed to POST one notification; `url` may hold credentials, so never log it."""

    kind: ChannelKind
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What one attempt achieved; `retryable` says whether trying again can help."""

    ok: bool
    status: int | None
    retryable: bool
    error: str = ""
    retry_after: dt.timedelta | None = None


class ChannelError(ValueError):
    """A message cannot be built for a channel (a configuration problem, never worth a retry)."""


def _json_request(kind: ChannelKind, url: str, payload: Mapping[str, Any]) -> PreparedRequest:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return PreparedRequest(kind, url, (("Content-Type", "application/json; charset=utf-8"),), body)


def _hmac_sha256(key: str | bytes, message: str | bytes) -> bytes:
    as_bytes = [part.encode("utf-8") if isinstance(part, str) else part for part in (key, message)]
    return hmac.new(as_bytes[0], as_bytes[1], hashlib.sha256).digest()


def _utf8_truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes (ending in "…" when cut), never mid-character."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", errors="ignore") + "…"


# --- the channels ------------------------------------------------------------------------------


class DingTalkRobot:
    """DingTalk group custom robot (自定义机器人), optionally with 加签 signing."""

    name = "dingtalk"
    kind = ChannelKind.DINGTALK

    def __init__(self, webhook_url: str) -> None:
        self.webhook_url = webhook_url

    def build_request(self, message: Message, secret: str | None, now: dt.datetime) -> PreparedRequest:
        text = message.text
        missing = [m for m in message.mention_mobiles if f"@{m}" not in text]
        if missing:  # DingTalk highlights a mention only where "@mobile" appears in the text
            text += "\n" + " ".join(f"@{m}" for m in missing)
        at = {"atMobiles": list(message.mention_mobiles), "atUserIds": list(message.mention_user_ids),
              "isAtAll": message.mention_all}
        if message.format is MessageFormat.MARKDOWN:
            payload: dict[str, Any] = {"msgtype": "markdown", "markdown": {"title": message.title or text[:20], "text": text}}
        else:
            payload = {"msgtype": "text", "text": {"content": text}}
        payload["at"] = at
        url = self.webhook_url
        if secret:
            timestamp = str(int(now.timestamp() * 1000))
            sign = base64.b64encode(_hmac_sha256(secret, f"{timestamp}\n{secret}")).decode("ascii")
            separator = "&" if "?" in url else "?"
            url = f"{url}{separator}timestamp={timestamp}&sign={urllib.parse.quote_plus(sign)}"
        return _json_request(self.kind, url, payload)


class WeComRobot:
    """WeCom (企业微信) group robot; the webhook URL's key is its only credential."""

    name = "wecom"
    kind = ChannelKind.WECOM
    TEXT_LIMIT, MARKDOWN_LIMIT = 2048, 4096  # bytes, per the WeCom robot documentation

    def __init__(self, webhook_url: str) -> None:
        self.webhook_url = webhook_url

    def build_request(self, message: Message, secret: str | None, now: dt.datetime) -> PreparedRequest:
        if message.format is MessageFormat.MARKDOWN:
            if message.mention_mobiles:
                raise ChannelError("WeCom markdown messages cannot @ by mobile; send text or mention by userid")
            mentions = "".join(f"<@{user}>" for user in message.mention_user_ids)
            content = _utf8_truncate(message.text + (f"\n{mentions}" if mentions else ""), self.MARKDOWN_LIMIT)
            return _json_request(self.kind, self.webhook_url, {"msgtype": "markdown", "markdown": {"content": content}})
        text: dict[str, Any] = {"content": _utf8_truncate(message.text, self.TEXT_LIMIT)}
        if message.mention_user_ids or message.mention_all:
            text["mentioned_list"] = [*message.mention_user_ids, *(["@all"] if message.mention_all else [])]
        if message.mention_mobiles:
            text["mentioned_mobile_list"] = list(message.mention_mobiles)
        return _json_request(self.kind, self.webhook_url, {"msgtype": "text", "text": text})


class FeishuBot:
    """Feishu/Lark custom bot (自定义机器人) with optional signature; markdown goes as a card or a post."""

    name = "feishu"
    kind = ChannelKind.FEISHU

    def __init__(self, webhook_url: str, *, rich: str = "interactive") -> None:
        if rich not in ("interactive", "post"):
            raise ChannelError(f'Feishu rich messages are "interactive" (a card) or "post", not {rich!r}')
        self.webhook_url = webhook_url
        self.rich = rich

    def build_request(self, message: Message, secret: str | None, now: dt.datetime) -> PreparedRequest:
        payload: dict[str, Any] = {}
        if secret:
            timestamp = str(int(now.timestamp()))
            payload["timestamp"] = timestamp
            payload["sign"] = base64.b64encode(_hmac_sha256(f"{timestamp}\n{secret}", b"")).decode("ascii")
        ids = [*message.mention_user_ids, *(["all"] if message.mention_all else [])]
        if message.format is MessageFormat.TEXT:
            tags = "".join(f'<at user_id="{i}">{"所有人" if i == "all" else ""}</at>' for i in ids)
            payload.update(msg_type="text", content={"text": message.text + (f" {tags}" if tags else "")})
        elif self.rich == "post":
            lines: list[list[dict[str, str]]] = [[{"tag": "text", "text": line}] for line in message.text.splitlines()]
            if ids:
                lines.append([{"tag": "at", "user_id": i} for i in ids])
            payload.update(msg_type="post", content={"post": {"zh_cn": {"title": message.title, "content": lines}}})
        else:
            tags = "".join(f"<at id={i}></at>" for i in ids)
            card: dict[str, Any] = {"elements": [{"tag": "div", "text": {
                "tag": "lark_md", "content": message.text + (f"\n{tags}" if tags else "")}}]}
            if message.title:
                card["header"] = {"title": {"tag": "plain_text", "content": message.title}}
            payload.update(msg_type="interactive", card=card)
        return _json_request(self.kind, self.webhook_url, payload)


class SlackWebhook:
    """Slack incoming webhook; the URL is the credential."""

    name = "slack"
    kind = ChannelKind.SLACK

    def __init__(self, webhook_url: str) -> None:
        self.webhook_url = webhook_url

    def build_request(self, message: Message, secret: str | None, now: dt.datetime) -> PreparedRequest:
        mentions = " ".join([*(f"<@{u}>" for u in message.mention_user_ids), *(["<!channel>"] if message.mention_all else [])])
        text = message.text + (f"\n{mentions}" if mentions else "")
        payload: dict[str, Any] = {"text": f"{message.title}\n{text}" if message.title else text}
        if message.format is MessageFormat.MARKDOWN:
            blocks: list[dict[str, Any]] = []
            if message.title:
                blocks.append({"type": "header", "text": {"type": "plain_text", "text": message.title[:150]}})
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}})
            payload["blocks"] = blocks
        return _json_request(self.kind, self.webhook_url, payload)


class SignedWebhook:
    """Any HTTPS endpoint: JSON body, HMAC-SHA256 over "{timestamp}.{body}" in X-CRM-Signature (hex)."""

    name = "webhook"
    kind = ChannelKind.WEBHOOK

    def __init__(self, url: str) -> None:
        self.url = url

    def build_request(self, message: Message, secret: str | None, now: dt.datetime) -> PreparedRequest:
        payload = {"id": message.idempotency_key, "title": message.title, "text": message.text,
                   "format": message.format.value, "data": dict(message.data)}
        prepared = _json_request(self.kind, self.url, payload)
        timestamp = str(int(now.timestamp()))
        headers = [*prepared.headers, ("X-CRM-Timestamp", timestamp), ("X-CRM-Idempotency-Key", message.idempotency_key)]
        if secret:
            signature = _hmac_sha256(secret, timestamp.encode("ascii") + b"." + prepared.body).hex()
            headers.append(("X-CRM-Signature", signature))
        return PreparedRequest(self.kind, self.url, tuple(headers), prepared.body)


# --- delivery ----------------------------------------------------------------------------------

# Vendor error codes that mean "later, not never".
# DingTalk 130101 and WeCom 45009 are documented rate limits; -1 is both vendors' "system busy";
# DingTalk 410100, WeCom 45033 and Feishu 11232/11233 are rate limits as reported by users, unconfirmed.
RETRYABLE_CODES: Mapping[ChannelKind, frozenset[int]] = types.MappingProxyType({
    ChannelKind.DINGTALK: frozenset({-1, 130101, 410100}),
    ChannelKind.WECOM: frozenset({-1, 45009, 45033}),
    ChannelKind.FEISHU: frozenset({11232, 11233}),
})


# A job is a prepared HTTP request, or a blocking call that delivers by other means (SMTP).
DeliveryJob = PreparedRequest | Callable[[], DeliveryResult]


def deliver(prepared: PreparedRequest, *, timeout: float = 10.0) -> DeliveryResult:
    """POST one prepared request and judge the reply the way its vendor documents success."""
    return deliver_all([prepared], timeout=timeout)[0]


def deliver_all(jobs: Sequence[DeliveryJob], *, concurrency: int = 8, timeout: float = 10.0) -> list[DeliveryResult]:
    """Run every job, `concurrency` at once, and return their results in order; never raises.

    HTTP goes through one aiohttp session (keep-alive, C parser), not httpx: on the 2-core
    benchmark machine, 8 in flight against a local receiver, it sends ~5,600 requests/s at
    0.17 ms of CPU each, where httpx managed ~970/s sequentially (0.8 ms each), ~760/s with 8
    threads and ~410/s async (bench/bench_http_clients.py) — too slow for a worker that must
    fire and deliver 1,000 notifications/s. Blocking jobs run in threads under the same limit."""
    if not jobs:
        return []
    return asyncio.run(_deliver_all(jobs, concurrency, timeout))


async def _deliver_all(jobs: Sequence[DeliveryJob], concurrency: int, timeout: float) -> list[DeliveryResult]:
    slots = asyncio.Semaphore(max(1, concurrency))  # taken before the request, so waiting never eats the timeout
    connector = aiohttp.TCPConnector(limit=max(1, concurrency))
    proxies = _proxies_for(job.url for job in jobs if isinstance(job, PreparedRequest))
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        async def run(job: DeliveryJob) -> DeliveryResult:
            async with slots:
                if isinstance(job, PreparedRequest):
                    return await _post(session, job, proxies.get(_origin(job.url)))
                try:
                    return await asyncio.to_thread(job)
                except Exception as exc:  # a channel bug must not lose the message: retried, then dead-lettered
                    return DeliveryResult(False, None, True, f"{type(exc).__name__}: {exc}")

        return list(await asyncio.gather(*(run(job) for job in jobs)))


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.netloc


def _proxies_for(urls: Iterable[str]) -> dict[tuple[str, str], str]:
    """The proxy per origin from HTTPS_PROXY/HTTP_PROXY/ALL_PROXY/NO_PROXY, looked up once per batch
    (aiohttp's own trust_env looks them up, and .netrc, at every request: half the CPU of a send)."""
    configured = urllib.request.getproxies()
    found = {}
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        proxy = configured.get(parts.scheme) or configured.get("all")
        if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
            found[parts.scheme, parts.netloc] = proxy
    return found


async def _post(session: aiohttp.ClientSession, prepared: PreparedRequest, proxy: str | None) -> DeliveryResult:
    try:
        # encoded=True: the URL goes out byte for byte (DingTalk's sign is already percent-encoded);
        # redirects are not followed — a vendor webhook that redirects is misconfigured.
        async with session.post(yarl.URL(prepared.url, encoded=True), data=prepared.body, proxy=proxy,
                                headers=dict(prepared.headers), allow_redirects=False) as response:
            body = await response.read()
            status, retry_after = response.status, response.headers.get("Retry-After")
    except TimeoutError as exc:  # the vendor may have received it: a retry can duplicate
        return DeliveryResult(False, None, True, f"timed out ({type(exc).__name__})")
    except Exception as exc:  # connection refused, reset, bad URL …: worth another try later
        return DeliveryResult(False, None, True, f"{type(exc).__name__}: {_without(str(exc), prepared.url)}")
    return judge_response(prepared.kind, status, body, retry_after)


def judge_response(kind: ChannelKind, status: int, body: bytes, retry_after: str | None = None) -> DeliveryResult:
    """Success or failure of one reply, per vendor (pure; `deliver` uses it, tests may too)."""
    wait = dt.timedelta(seconds=int(retry_after)) if retry_after and retry_after.strip().isdigit() else None
    snippet = body[:200].decode("utf-8", errors="replace").strip()
    if not 200 <= status < 300:
        retryable = status in (408, 425, 429) or status >= 500
        return DeliveryResult(False, status, retryable, f"HTTP {status}: {snippet}", wait)
    if kind is ChannelKind.SLACK:
        return DeliveryResult(True, status, False) if body.strip() == b"ok" else DeliveryResult(
            False, status, False, f"Slack answered {snippet!r} instead of 'ok'")
    if kind is ChannelKind.WEBHOOK:
        return DeliveryResult(True, status, False)
    try:
        reply = json.loads(body)
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        return DeliveryResult(False, status, True, f"{kind.value} answered something that is not JSON: {snippet!r}")
    code = reply.get("errcode") if kind is not ChannelKind.FEISHU else reply.get("code", reply.get("StatusCode"))
    if code == 0:
        return DeliveryResult(True, status, False)
    text = reply.get("errmsg") or reply.get("msg") or reply.get("StatusMessage") or ""
    retryable = isinstance(code, int) and code in RETRYABLE_CODES.get(kind, frozenset())
    return DeliveryResult(False, status, retryable, f"{kind.value} error {code}: {text}", wait)


def _without(text: str, url: str) -> str:
    """An error text with the credential-bearing URL cut out."""
    return text.replace(url, "<webhook url>")


class MailChannel:
    """SMTP mail: an EmailMessage built purely, sent with smtplib to the configured server."""

    name = "mail"
    kind = ChannelKind.MAIL

    def __init__(self, host: str, port: int, sender: str, *, username: str | None = None,
                 starttls: bool = False, implicit_tls: bool = False, timeout: float = 10.0) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.username, self.starttls, self.implicit_tls, self.timeout = username, starttls, implicit_tls, timeout

    def build_email(self, message: Message, now: dt.datetime) -> EmailMessage:
        if not message.recipients:
            raise ChannelError("a mail needs at least one recipient")
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = ", ".join(message.recipients)
        mail["Subject"] = message.title or (message.text.splitlines() or [""])[0][:78]
        mail["Date"] = email.utils.format_datetime(now.astimezone(dt.timezone.utc))
        if message.idempotency_key:
            mail["X-CRM-Idempotency-Key"] = message.idempotency_key
        mail.set_content(message.text)
        if message.html is not None:
            mail.add_alternative(message.html, subtype="html")
        return mail

    def send(self, mail: EmailMessage, password: str | None = None) -> DeliveryResult:
        """Hand the mail to the SMTP server; 4xx answers and lost connections are worth a retry."""
        try:
            connect = smtplib.SMTP_SSL if self.implicit_tls else smtplib.SMTP  # port 465 vs 25/587
            with connect(self.host, self.port, timeout=self.timeout) as server:
                if self.starttls:
                    server.starttls()
                if self.username:
                    server.login(self.username, password or "")
                refused = server.send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            return DeliveryResult(False, min(codes), all(400 <= c < 500 for c in codes), f"recipients refused: {exc.recipients}")
        except smtplib.SMTPResponseException as exc:
            return DeliveryResult(False, exc.smtp_code, 400 <= exc.smtp_code < 500, f"SMTP {exc.smtp_code}: {exc.smtp_error!r}")
        except (smtplib.SMTPException, OSError) as exc:
            return DeliveryResult(False, None, True, f"{type(exc).__name__}: {exc}")
        if refused:  # some recipients got it; retrying would send it to them again
            return DeliveryResult(True, 250, False, f"some recipients refused: {refused}")
        return DeliveryResult(True, 250, False)


# --- retries -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: base * 2**(attempt-1), capped, spread by ±jitter; dead after max_attempts."""

    max_attempts: int = 8
    base_delay: dt.timedelta = dt.timedelta(seconds=30)
    max_delay: dt.timedelta = dt.timedelta(hours=1)
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or not 0 <= self.jitter < 1 or self.base_delay <= dt.timedelta(0):
            raise ValueError("a retry policy needs max_attempts >= 1, a positive base delay and 0 <= jitter < 1")


class DeliveryState(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class DeliveryPlan:
    """What the outbox row becomes after an attempt."""

    state: DeliveryState
    next_attempt_at: dt.datetime | None
    error: str = ""


def backoff_bounds(attempts: int, policy: RetryPolicy = RetryPolicy()) -> tuple[dt.timedelta, dt.timedelta]:
    """The earliest and latest wait after `attempts` failed attempts (for tests and the admin screen)."""
    middle = min(policy.max_delay, policy.base_delay * 2 ** min(max(attempts, 1) - 1, 40))
    return middle * (1 - policy.jitter), middle * (1 + policy.jitter)


def next_attempt_at(attempts: int, now: dt.datetime, policy: RetryPolicy = RetryPolicy(), *,
                    rand: Callable[[], float] = random.random, retry_after: dt.timedelta | None = None) -> dt.datetime | None:
    """When to try again after `attempts` failed attempts, or None: give up, the message is dead."""
    if attempts >= policy.max_attempts:
        return None
    low, high = backoff_bounds(attempts, policy)
    wait = low + (high - low) * rand()
    if retry_after is not None:  # the vendor said how long; never sooner
        wait = max(wait, min(retry_after, policy.max_delay))
    return now + wait


def plan_after_attempt(result: DeliveryResult, attempts: int, now: dt.datetime, policy: RetryPolicy = RetryPolicy(), *,
                       rand: Callable[[], float] = random.random) -> DeliveryPlan:
    """Delivered, retry at a time, or dead — `attempts` counts the attempt that produced `result`."""
    if result.ok:
        return DeliveryPlan(DeliveryState.DELIVERED, None, result.error)
    if not result.retryable:
        return DeliveryPlan(DeliveryState.DEAD, None, result.error)
    when = next_attempt_at(attempts, now, policy, rand=rand, retry_after=result.retry_after)
    if when is None:
        return DeliveryPlan(DeliveryState.DEAD, None, f"gave up after {attempts} attempts: {result.error}")
    return DeliveryPlan(DeliveryState.RETRY, when, result.error)


# --- secrets -----------------------------------------------------------------------------------


class SecretError(LookupError):
    """A secret could not be found; the message names where it was looked for, never a value."""


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where a channel's secret lives: an environment variable or a dotted key in CRM_SECRETS_FILE."""

    env: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        if (self.env is None) == (self.key is None):
            raise SecretError("a secret reference names exactly one of env (a variable) or key (in the secrets file)")


def resolve_secret(ref: SecretRef, environ: Mapping[str, str], secrets_file: str | Path | None = None) -> str:
    """The secret's value from the environment or the secrets file (default: $CRM_SECRETS_FILE)."""
    if ref.env is not None:
        value = environ.get(ref.env)
        if not value:
            raise SecretError(f"environment variable {ref.env} is not set; export it for the worker")
        return value
    path = secrets_file or environ.get("CRM_SECRETS_FILE")
    if not path:
        raise SecretError(f"secret {ref.key!r} lives in the secrets file, but CRM_SECRETS_FILE is not set")
    try:
        text = Path(path).read_text(encoding="utf-8")
        node: Any = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise SecretError(f"secrets file {path} cannot be read: {type(exc).__name__}") from None
    for part in str(ref.key).split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise SecretError(f"secrets file {path} has no key {ref.key!r} (missing at {part!r})")
        node = node[part]
    if not isinstance(node, (str, int)) or isinstance(node, bool) or node == "":
        raise SecretError(f"secrets file {path}: {ref.key!r} must be a non-empty string")
    return str(node)


# --- message templates -------------------------------------------------------------------------

MAX_TEMPLATE_CHARS = 8_000
MAX_OUTPUT_CHARS = 20_000
_FILTERS = ("abs", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "filesizeformat", "first",
            "float", "forceescape", "groupby", "int", "items", "join", "last", "length", "list", "lower", "map",
            "max", "min", "reject", "rejectattr", "reverse", "round", "safe", "select", "selectattr", "sort",
            "string", "striptags", "sum", "title", "tojson", "trim", "truncate", "unique", "upper", "urlencode",
            "wordcount")
# Statements that bind or call names are how a template grows a value without bound.
_FORBIDDEN_NODES = (jinja2.nodes.Macro, jinja2.nodes.CallBlock, jinja2.nodes.Assign, jinja2.nodes.AssignBlock,
                    jinja2.nodes.With, jinja2.nodes.Import, jinja2.nodes.FromImport, jinja2.nodes.Include,
                    jinja2.nodes.Extends, jinja2.nodes.Block)
# Loops over values built in place (`for b in [a ~ a]`) would let nested loops double a string.
_BUILDING_NODES = (jinja2.nodes.Concat, jinja2.nodes.BinExpr, jinja2.nodes.List, jinja2.nodes.Tuple, jinja2.nodes.Dict)
_PADDING_METHODS = frozenset({"ljust", "rjust", "center", "zfill", "expandtabs", "format", "format_map", "replace"})
_WIDE_PERCENT = re.compile(r"%[-#0 +]*(\*|\d{4,})|%[-#0 +]*\d*\.(\*|\d{4,})")


class TemplateRenderError(ValueError):
    """A message template failed to compile or render; the message names the template and line."""


class _MessageEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox plus size checks on operators and methods that could allocate without bound."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        sequence, count = (left, right) if isinstance(left, (str, list, tuple)) else (right, left)
        if operator == "*" and isinstance(sequence, (str, list, tuple)) and isinstance(count, int):
            if len(sequence) * count > MAX_OUTPUT_CHARS:
                raise SecurityError(f"repeating a value {count} times exceeds {MAX_OUTPUT_CHARS} characters")
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and max(abs(left).bit_length(), 1) * right > 10_000:
                raise SecurityError("the power is too large")
        if operator == "%" and isinstance(left, str) and _WIDE_PERCENT.search(left):
            raise SecurityError("a %-format with a width or precision over 999 is not allowed")
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> None:
        return None  # str.format is refused outright (below), so there is nothing to wrap

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and attr in _PADDING_METHODS:
            return False
        return bool(super().is_safe_attribute(obj, attr, value))


def _bounded_replace(value: Any, old: str, new: str, count: int | None = None) -> str:
    text = str(value)
    if len(text) + text.count(old) * max(len(new) - len(old), 0) > MAX_OUTPUT_CHARS:
        raise SecurityError(f"replace would produce more than {MAX_OUTPUT_CHARS} characters")
    return text.replace(old, new, -1 if count is None else count)


def _format_datetime(value: Any, fmt: str = "%Y-%m-%d %H:%M", zone: str | None = None) -> str:
    if not isinstance(value, dt.datetime):
        return str(value)
    if zone is not None and value.tzinfo is not None:
        from zoneinfo import ZoneInfo

        value = value.astimezone(ZoneInfo(zone))
    return value.strftime(fmt)


def _format_duration(value: Any) -> str:
    """A timedelta as "1 d 2 h 5 min" (negative: "-…"), for SLA remaining times."""
    if not isinstance(value, dt.timedelta):
        return str(value)
    sign, minutes = ("-" if value < dt.timedelta(0) else ""), int(abs(value).total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    parts = [f"{days} d"] * bool(days) + [f"{rest // 60} h"] * bool(rest // 60) + [f"{rest % 60} min"] * bool(rest % 60)
    return sign + (" ".join(parts) or "0 min")


def _environment(autoescape: bool) -> _MessageEnvironment:
    env = _MessageEnvironment(undefined=jinja2.StrictUndefined, autoescape=autoescape, keep_trailing_newline=False)
    env.globals.clear()  # no range, lipsum, cycler, joiner, namespace, dict
    env.filters = {name: env.filters[name] for name in _FILTERS}
    env.filters.update(replace=_bounded_replace, datetime=_format_datetime, duration=_format_duration)
    return env


@functools.lru_cache(maxsize=512)
def _compiled(template_text: str, name: str, autoescape: bool) -> jinja2.Template:
    """Check and compile a template once (the worker renders the same few templates thousands of times)."""
    env = _environment(autoescape)
    try:
        tree = env.parse(template_text)
        for node in tree.find_all(_FORBIDDEN_NODES):
            keyword = type(node).__name__.lower()
            raise TemplateRenderError(f"template {name!r} line {node.lineno}: {keyword} blocks are not allowed "
                                      "in messages; use {{ … }}, {% if %} and {% for %} only")
        for loop in tree.find_all(jinja2.nodes.For):
            if next(loop.iter.find_all(_BUILDING_NODES), None) is not None or isinstance(loop.iter, _BUILDING_NODES):
                raise TemplateRenderError(f"template {name!r} line {loop.lineno}: a for loop must go over data "
                                          "(e.g. record.tags), not over values built in the template")
        template = env.from_string(template_text)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateRenderError(f"template {name!r} line {exc.lineno}: {exc.message}") from None
    return template


def render_message(template_text: str, context: Mapping[str, Any], *, name: str = "message",
                   autoescape: bool = False) -> str:
    """Render a blueprint message template in the sandbox; any failure names the template and line."""
    if len(template_text) > MAX_TEMPLATE_CHARS:
        raise TemplateRenderError(f"template {name!r} is {len(template_text)} characters; the limit is {MAX_TEMPLATE_CHARS}")
    template = _compiled(template_text, name, autoescape)
    chunks: list[str] = []
    size = 0
    try:
        for chunk in template.generate(dict(context)):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateRenderError(f"template {name!r} renders more than {MAX_OUTPUT_CHARS} characters")
            chunks.append(chunk)
    except TemplateRenderError:
        raise
    except Exception as exc:  # undefined names, sandbox refusals, type errors: all the template's fault
        line = _template_line(exc)
        where = f" line {line}" if line else ""
        raise TemplateRenderError(f"template {name!r}{where}: {type(exc).__name__}: {exc}") from None
    return "".join(chunks)


def _template_line(exc: BaseException) -> int | None:
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == "<template>"]
    return frames[-1].lineno if frames else None

