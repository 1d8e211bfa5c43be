"""A Discord notification channel, registered through the blueprint_crm pluggy hook `crm_channels`.

Discord's "Execute Webhook" (https://discord.com/developers/docs/resources/webhook#execute-webhook):
POST JSON to https://discord.com/api/webhooks/<id>/<token>; `content` holds at most 2,000
characters, an embed's `title` 256 and its `description` 4,096; `allowed_mentions` says whom
the message may ping; the answer is 204 No Content, and 429 with Retry-After when rate limited.
That answer convention is the generic webhook's (any 2xx delivered; 408, 425, 429 and 5xx
retried), so requests carry ChannelKind.WEBHOOK and the engine judges them as such.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from engine.channels import ChannelKind, Message, MessageFormat, PreparedRequest, WebhookRobot
from engine.plugins import hookimpl

CONTENT_LIMIT, TITLE_LIMIT, DESCRIPTION_LIMIT = 2000, 256, 4096


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class DiscordWebhook(WebhookRobot):
    """A Discord channel's webhook; the URL (with its token) is the only credential."""

    name = "discord"
    kind = ChannelKind.WEBHOOK

    def build_request(self, message: Message, secret: str | None, now: dt.datetime) -> PreparedRequest:
        mentions = " ".join([*(f"<@{user}>" for user in message.mention_user_ids),
                             *(["@everyone"] if message.mention_all else [])])
        payload: dict[str, Any] = {"allowed_mentions": {
            "parse": ["everyone"] if message.mention_all else [], "users": list(message.mention_user_ids)[:100]}}
        if message.format is MessageFormat.MARKDOWN and message.title:
            payload["content"] = mentions
            payload["embeds"] = [{"title": _cut(message.title, TITLE_LIMIT),
                                  "description": _cut(message.text, DESCRIPTION_LIMIT)}]
        else:
            text = f"{message.title}\n{message.text}" if message.title else message.text
            payload["content"] = _cut(text + (f"\n{mentions}" if mentions else ""), CONTENT_LIMIT)
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return PreparedRequest(self.kind, self.webhook_url, (("Content-Type", "application/json"),), body)


@hookimpl
def crm_channels() -> Mapping[str, type[DiscordWebhook]]:
    """The discord channel type."""
    return {"discord": DiscordWebhook}


__all__ = ["DiscordWebhook", "crm_channels"]
