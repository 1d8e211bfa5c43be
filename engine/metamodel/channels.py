"""`channels:` documents: where notifications go (DingTalk, WeCom, Feishu, Slack, mail, webhook),
their retry policy, and the named message templates (Jinja2, checked at load).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any


from engine.metamodel.checks import Built, Checker, build_items, default_label, language_texts
from engine.metamodel.durations import DURATION_SCHEMA, parse_duration
from engine.metamodel.errors import NOWHERE, Location, unknown_name_hint
from engine.metamodel.labels import Label
from engine.metamodel.messages import Msg
from engine.metamodel.schema import LABEL, NAME
from engine.metamodel.source import PathKey, SourceDocument


if TYPE_CHECKING:  # the Metamodel holds these specs; builders only read it
    from engine.metamodel.model import Metamodel
    from engine.metamodel.vocabulary import Vocabulary


# The channel types the engine ships: engine/channels registers their classes through the same
# hook as plugins (crm_channels); the options checked below (mail's host and sender, a literal
# url only for a signed webhook) are theirs. A plugin's type is checked like a vendor robot's.
CHANNEL_TYPES = ("dingtalk", "wecom", "feishu", "slack", "webhook", "mail")




@dataclass(frozen=True, slots=True)
class SecretValue:
    """A channel option: a literal (not secret), or where to read it: env var or secrets-file key."""

    literal: str | None = None
    env: str | None = None
    key: str | None = None

    def describe(self) -> str:
        return f"environment variable {self.env}" if self.env else f"secrets-file key {self.key}" if self.key else "literal"


@dataclass(frozen=True, slots=True)
class RetryDecl:
    max_attempts: int = 8
    first_delay: dt.timedelta = dt.timedelta(seconds=30)
    max_delay: dt.timedelta = dt.timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `count` requests to the channel in any `per` (a sliding window), across all workers."""

    count: int
    per: dt.timedelta

    def describe(self) -> str:
        return f"{self.count} per {int(self.per.total_seconds())} s"


# What the vendors document for one group robot (an unknown or plugin type has none unless declared):
# DingTalk 20 messages a minute (over it: error 130101 and 10 minutes of silence), WeCom 20 a
# minute (45009), Feishu 100 a minute and 5 a second (11232), Slack about one a second (429).
VENDOR_RATE_LIMITS: dict[str, tuple[RateLimit, ...]] = {
    "dingtalk": (RateLimit(20, dt.timedelta(minutes=1)),),
    "wecom": (RateLimit(20, dt.timedelta(minutes=1)),),
    "feishu": (RateLimit(5, dt.timedelta(seconds=1)), RateLimit(100, dt.timedelta(minutes=1))),
    "slack": (RateLimit(1, dt.timedelta(seconds=1)),),
}


@dataclass(frozen=True, slots=True)
class DigestSpec:
    """`digest: {after: N}`: when more than `after` messages wait for the channel, the next send
    merges them, in order, into one message of at most `max_bytes` (UTF-8) of text."""

    after: int
    max_bytes: int


# The text one robot message may carry, per the vendors' documentation (bytes of UTF-8, with room
# left for the digest's header and the request's JSON): DingTalk 20,000, WeCom 2,048 (text),
# Feishu 20 KB per request body, Slack 40,000 characters.
VENDOR_TEXT_LIMITS: dict[str, int] = {"dingtalk": 18000, "wecom": 2000, "feishu": 18000, "slack": 38000}


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    name: str
    type: str
    label: Label
    url: SecretValue | None = None
    secret: SecretValue | None = None
    format: str = "text"
    language: str = "zh"
    rich: str = "interactive"
    host: str = ""
    port: int = 25
    tls: str = "none"
    sender: str = ""
    username: str | None = None
    password: SecretValue | None = None
    retry: RetryDecl = RetryDecl()
    location: Location = NOWHERE
    rate_limits: tuple[RateLimit, ...] = ()  # the vendor's defaults unless `rate_limit:` says otherwise
    digest: DigestSpec | None = None  # merge a backlog into one message (chat robots only)


@dataclass(frozen=True, slots=True)
class MessageTemplateSpec:
    """Jinja2 title and text per language ("*" = any), and optionally an HTML body for mail
    (rendered with autoescaping); rendered in the sandbox when the message is queued."""

    name: str
    title: tuple[tuple[str, str], ...]
    text: tuple[tuple[str, str], ...]
    location: Location = NOWHERE
    html: tuple[tuple[str, str], ...] = ()

    def pick(self, part: str, language: str) -> str:
        texts = dict({"title": self.title, "html": self.html}.get(part, self.text))
        for key in (language, "*", "zh", "en"):
            if key in texts:
                return texts[key]
        return next(iter(texts.values()), "")


_TEXTS = {"oneOf": [{"type": "string"}, {"type": "object", "minProperties": 1,
                                         "additionalProperties": {"type": "string"}}]}


_SECRET = {"oneOf": [{"type": "string", "minLength": 1},
                     {"type": "object", "additionalProperties": False, "minProperties": 1, "maxProperties": 1,
                      "properties": {"env": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$"},
                                     "key": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"}}}]}


_RATE = {"type": "object", "required": ["count", "per"], "additionalProperties": False,
         "properties": {"count": {"type": "integer", "minimum": 1}, "per": DURATION_SCHEMA}}


CHANNELS_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["channels"], "additionalProperties": False, "properties": {
        "channels": {"type": "object", "propertyNames": NAME, "additionalProperties": {
            "type": "object", "required": ["type"], "additionalProperties": False, "properties": {
                "type": NAME, "label": LABEL, "description": {"type": "string"},
                "url": _SECRET, "secret": _SECRET, "format": {"enum": ["text", "markdown"]},
                "language": {"type": "string"}, "rich": {"enum": ["interactive", "post"]},
                "host": {"type": "string"}, "port": {"type": "integer"},
                "tls": {"enum": ["implicit", "starttls", "none"]}, "sender": {"type": "string"},
                "username": {"type": "string"}, "password": _SECRET,
                "rate_limit": {"oneOf": [{"const": "none"}, _RATE, {"type": "array", "minItems": 1, "items": _RATE}]},
                "digest": {"type": "object", "required": ["after"], "additionalProperties": False,
                           "properties": {"after": {"type": "integer", "minimum": 1},
                                          "max_bytes": {"type": "integer", "minimum": 200}}}}}},
        "retry": {"type": "object", "additionalProperties": False, "properties": {
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": 50},
            "first_delay": DURATION_SCHEMA, "max_delay": DURATION_SCHEMA}},
        "templates": {"type": "object", "propertyNames": NAME, "additionalProperties": {
            "type": "object", "required": ["text"], "additionalProperties": False,
            "properties": {"title": _TEXTS, "text": _TEXTS, "html": _TEXTS}}}}}


def secret_value(raw: Any) -> SecretValue | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return SecretValue(literal=raw)
    return SecretValue(env=raw.get("env"), key=raw.get("key"))


def build_channels(documents: list[SourceDocument], model: Metamodel, vocabulary: Vocabulary) -> Built:
    """ChannelSpecs and message templates; a secret written inline where one is needed is an error."""
    channels, errors = build_items("channels", Msg("channel"), documents, model, vocabulary, _build_channel)
    templates, template_errors = build_items("templates", Msg("template"), documents, model, vocabulary,
                                             _build_template)
    return replace(model, channels=tuple(channels), templates=tuple(templates)), errors + template_errors


def _build_channel(checker: Checker, name: str, data: dict[str, Any], path: PathKey, _: int) -> ChannelSpec:
    _check_channel(checker, path, data)
    retry = checker.doc.data.get("retry") or {}  # one retry policy per channels document
    return ChannelSpec(
        name, data["type"], default_label(data, name), secret_value(data.get("url")), secret_value(data.get("secret")),
        data.get("format", "text"), data.get("language", checker.model.settings.default_language),
        data.get("rich", "interactive"), data.get("host", ""),
        int(data.get("port", 465 if data.get("tls") == "implicit" else 25)), data.get("tls", "none"),
        data.get("sender", ""), data.get("username"), secret_value(data.get("password")),
        RetryDecl(retry.get("max_attempts", 8), parse_duration(retry.get("first_delay", "30s")).fixed,
                  parse_duration(retry.get("max_delay", "1h")).fixed),
        checker.doc.where_key(path), _rate_limits(data), _digest(checker, path, data))


def _digest(checker: Checker, path: PathKey, data: dict[str, Any]) -> DigestSpec | None:
    """The declared `digest:`; only a chat robot (which has a text limit) can merge messages."""
    raw = data.get("digest")
    if raw is None:
        return None
    limit = VENDOR_TEXT_LIMITS.get(data["type"])
    if limit is None:
        checker.error(path + ("digest",), Msg("a {type} channel cannot merge messages into a digest", type=data["type"]),
                      Msg("digest applies to chat robots: {types}", types=", ".join(sorted(VENDOR_TEXT_LIMITS))),
                      key=True)
        return None
    max_bytes = int(raw.get("max_bytes", limit))
    if max_bytes > limit:
        checker.error(path + ("digest", "max_bytes"), Msg("max_bytes {value} is over what one {type} message may "
                                                          "carry ({limit})", value=max_bytes, type=data["type"],
                                                          limit=limit),
                      Msg("write at most max_bytes: {limit}", limit=limit))
    if not (data.get("rate_limit") != "none" and _rate_limits(data)):
        checker.error(path + ("digest",), Msg("a digest needs a paced channel: without a rate_limit no backlog builds"),
                      Msg("keep the vendor's default rate_limit or declare one"), key=True, severity="warning")
    return DigestSpec(int(raw["after"]), min(max_bytes, limit))


def _rate_limits(data: dict[str, Any]) -> tuple[RateLimit, ...]:
    """The declared `rate_limit:` (one, a list, or none), else the vendor's documented limit."""
    raw = data.get("rate_limit")
    if raw is None:
        return VENDOR_RATE_LIMITS.get(data["type"], ())
    if raw == "none":
        return ()
    return tuple(RateLimit(int(item["count"]), parse_duration(item["per"]).fixed)
                 for item in (raw if isinstance(raw, list) else [raw]))


def _build_template(checker: Checker, name: str, data: dict[str, Any], path: PathKey, _: int) -> MessageTemplateSpec:
    for part in ("title", "text", "html"):
        for lang, text in language_texts(data.get(part)):
            checker.jinja(path + ((part, lang) if lang != "*" else (part,)), text,
                          Msg("template '{name}'", name=name))
    return MessageTemplateSpec(name, language_texts(data.get("title")), language_texts(data["text"]), checker.doc.where_key(path),
                               language_texts(data.get("html")))


def _check_channel(checker: Checker, path: PathKey, data: dict[str, Any]) -> None:
    kind = data["type"]
    raw = data.get("rate_limit")
    for index, item in enumerate(raw if isinstance(raw, list) else [raw] if isinstance(raw, dict) else []):
        where = path + ("rate_limit",) + ((index,) if isinstance(raw, list) else ()) + ("per",)
        if parse_duration(item["per"]).fixed <= dt.timedelta(0):
            checker.error(where, Msg("rate_limit per '{per}' is not a fixed length of time", per=item["per"]),
                          Msg("vendors count in seconds and minutes: write e.g. per: 1min or per: 1s"))
    known = checker.vocabulary.channel_types
    if kind not in known:
        checker.error(path + ("type",), Msg("unknown channel type '{type}'", type=kind),
                      unknown_name_hint(kind, known, Msg("channel types")))
        return
    if kind == "mail":
        for option in ("host", "sender"):
            if not data.get(option):
                checker.error(path, Msg("mail channel needs '{option}'", option=option),
                              Msg("e.g. host: smtp.exmail.qq.com, sender: crm@…"))
        return
    if "url" not in data:
        checker.error(path, Msg("{type} channel needs 'url'", type=kind),
                      Msg("write url: {{env: VARIABLE}} holding the webhook address"))
    elif isinstance(data["url"], str) and kind != "webhook":
        checker.error(path + ("url",), Msg("the {type} webhook address carries its token, so it must not stand in the "
                                           "blueprint", type=kind),
                      Msg("write url: {{env: VARIABLE}} or url: {{key: secrets.file.key}}"))
    if isinstance(data.get("secret"), str) or isinstance(data.get("password"), str):
        checker.error(path, Msg("secrets never stand in the blueprint"), Msg("write {{env: VARIABLE}} or {{key: a.b}}"))

