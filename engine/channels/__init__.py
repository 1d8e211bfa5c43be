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

The package: `messages` (Message, PreparedRequest, DeliveryResult), `vendors` (one class per
channel, and mail), `catalogue` (the channel types by name: the vendors and the plugins'), `delivery` (deliver_all, judge_response), `secrets`, `templates`; the
retry decision is the rules' (engine/rules/retry.py). This is the only package that talks to
the network; everything is importable from `engine.channels`.
"""

from __future__ import annotations

from engine.channels.catalogue import SHIPPED_CHANNELS, Channel, ChannelClass, ChannelTypes
from engine.channels.delivery import RETRYABLE_CODES, DeliveryJob, deliver, deliver_all, judge_response
from engine.channels.messages import ChannelError, ChannelKind, DeliveryResult, Message, MessageFormat, PreparedRequest
from engine.channels.secrets import SecretError, SecretRef, resolve_secret
from engine.channels.templates import MAX_OUTPUT_CHARS, MAX_TEMPLATE_CHARS, TemplateRenderError, render_message
from engine.channels.vendors import (DingTalkRobot, FeishuBot, MailChannel, SignedWebhook, SlackWebhook, WebhookRobot,
                                    WeComRobot)
from engine.rules.retry import (DeliveryPlan, DeliveryState, RetryPolicy, backoff_bounds, next_attempt_at,
                                plan_after_attempt)

__all__ = [
    "Channel", "ChannelClass", "ChannelTypes", "SHIPPED_CHANNELS", "WebhookRobot",
    "ChannelError", "ChannelKind", "DeliveryJob", "DeliveryPlan", "DeliveryResult", "DeliveryState",
    "DingTalkRobot", "FeishuBot", "MAX_OUTPUT_CHARS", "MAX_TEMPLATE_CHARS", "MailChannel", "Message",
    "MessageFormat", "PreparedRequest", "RETRYABLE_CODES", "RetryPolicy", "SecretError", "SecretRef",
    "SignedWebhook", "SlackWebhook", "TemplateRenderError", "WeComRobot", "backoff_bounds", "deliver",
    "deliver_all", "judge_response", "next_attempt_at", "plan_after_attempt", "render_message", "resolve_secret",
]
