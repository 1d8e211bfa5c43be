"""The vendors' channels: each turns a `Message` into the exact request its vendor documents
(pure: the same message, secret and time give the same bytes); mail through smtplib.

Every channel class is made from the blueprint's channel with `for_channel(spec, url)` and
answers `build_request(message, secret, now)` with a delivery job: a `PreparedRequest` that
the worker POSTs and judges by its `kind`, or (mail) a call that delivers by other means.
They register by `type:` name through the same hook as a plugin's channels (`crm_channels`,
engine/plugins/hookspecs.py), at the end of this module.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import functools
import hashlib
import hmac
import json
import smtplib
import urllib.parse
from collections.abc import Callable, Mapping
from email.message import EmailMessage
from typing import Any, ClassVar, Self

from engine.channels.messages import ChannelError, ChannelKind, DeliveryResult, Message, MessageFormat, PreparedRequest
from engine.metamodel.channels import ChannelSpec
from engine.plugins import hookimpl


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


class WebhookRobot:
    """A channel that posts to one webhook address (its token is in the address). A plugin's
    channel may subclass it and write `build_request`."""

    name: ClassVar[str]
    kind: ClassVar[ChannelKind]  # whose documented answers tell success from failure (judge_response)

    def __init__(self, webhook_url: str) -> None:
        self.webhook_url = webhook_url

    @classmethod
    def for_channel(cls, spec: ChannelSpec, url: str) -> Self:
        """The channel for the blueprint's `spec`, posting to `url` (its secret resolved)."""
        return cls(url)


class DingTalkRobot(WebhookRobot):
    """DingTalk group custom robot (自定义机器人), optionally with 加签 signing."""

    name = "dingtalk"
    kind = ChannelKind.DINGTALK

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


class WeComRobot(WebhookRobot):
    """WeCom (企业微信) group robot; the webhook URL's key is its only credential."""

    name = "wecom"
    kind = ChannelKind.WECOM
    TEXT_LIMIT, MARKDOWN_LIMIT = 2048, 4096  # bytes, per the WeCom robot documentation

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


class FeishuBot(WebhookRobot):
    """Feishu/Lark custom bot (自定义机器人) with optional signature; markdown goes as a card or a post."""

    name = "feishu"
    kind = ChannelKind.FEISHU

    def __init__(self, webhook_url: str, *, rich: str = "interactive") -> None:
        if rich not in ("interactive", "post"):
            raise ChannelError(f'Feishu rich messages are "interactive" (a card) or "post", not {rich!r}')
        super().__init__(webhook_url)
        self.rich = rich

    @classmethod
    def for_channel(cls, spec: ChannelSpec, url: str) -> Self:
        return cls(url, rich=spec.rich)

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


class SlackWebhook(WebhookRobot):
    """Slack incoming webhook; the URL is the credential."""

    name = "slack"
    kind = ChannelKind.SLACK

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

    @classmethod
    def for_channel(cls, spec: ChannelSpec, url: str) -> Self:
        return cls(url)

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


class MailChannel:
    """SMTP mail: an EmailMessage built purely, sent with smtplib to the configured server."""

    name = "mail"
    kind = ChannelKind.MAIL

    def __init__(self, host: str, port: int, sender: str, *, username: str | None = None,
                 starttls: bool = False, implicit_tls: bool = False, timeout: float = 10.0) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.username, self.starttls, self.implicit_tls, self.timeout = username, starttls, implicit_tls, timeout

    @classmethod
    def for_channel(cls, spec: ChannelSpec, url: str) -> Self:
        """The mail channel of `spec` (host, port, sender, TLS); it has no webhook address."""
        return cls(spec.host, spec.port, spec.sender, username=spec.username, starttls=spec.tls == "starttls",
                   implicit_tls=spec.tls == "implicit")

    def build_request(self, message: Message, secret: str | None, now: dt.datetime) -> Callable[[], DeliveryResult]:
        """The delivery job: the mail built now (ChannelError without a recipient), sent with
        the password `secret` when the worker runs the job."""
        return functools.partial(self.send, self.build_email(message, now), secret)

    def build_email(self, message: Message, now: dt.datetime) -> EmailMessage:
        if not message.recipients:
            raise ChannelError("the mail has no recipient with an e-mail address")
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


BUILTIN_CHANNELS: Mapping[str, type[Any]] = {
    "dingtalk": DingTalkRobot, "wecom": WeComRobot, "feishu": FeishuBot, "slack": SlackWebhook,
    "webhook": SignedWebhook, "mail": MailChannel,
}


@hookimpl
def crm_channels() -> Mapping[str, type[Any]]:
    """The engine's own channel types."""
    return BUILTIN_CHANNELS
