"""Messages and prepared requests: what a channel sends, and what an attempt achieved."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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
