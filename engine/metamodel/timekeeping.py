"""Time in the blueprint: calendars, SLA policies, channels, cadences and scheduled jobs.

Five document kinds (see docs/notifications.md):

- `calendars:` working hours, time zone, holidays and make-up workdays;
- `channels:`  where notifications go (bots, mail, webhooks), retry policy, message templates;
- `sla:`       one SLA policy: which records, start/pause/stop, targets per tier, actions;
- `cadences:`  named step sequences with delays, a start trigger and stop conditions;
- `jobs:`      cron-scheduled reports: counts and lists rendered into a message.

The specs here are plain frozen data. The runtime turns them into the rules' objects
(`CalendarSpec`, `SlaPolicy`, channels) — the metamodel imports nothing of the engine.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.metamodel.checks import Checker
from engine.metamodel.errors import Location
from engine.metamodel.model import NOWHERE, Expression, Label, Metamodel
from engine.metamodel.schema import EXPRESSION, LABEL, NAME
from engine.metamodel.source import PathKey

_DURATION = re.compile(r"^\s*(?:\d+\s*(?:bd|d|h|min|s)\s*)+$")
_DURATION_PART = re.compile(r"(\d+)\s*(bd|d|h|min|s)")
_PERIOD = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
_DAY = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:\.\.(\d{4}-\d{2}-\d{2}))?$")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CHANNEL_TYPES = ("dingtalk", "wecom", "feishu", "slack", "webhook", "mail")
RECIPIENT = re.compile(r"^(owner|owner\.manager|manager|backup|all|(role|user|team):[A-Za-z0-9_.@-]+)$")


# --------------------------------------------------------------------------- specs

@dataclass(frozen=True, slots=True)
class DurationSpec:
    """A written duration: fixed time plus whole business days (converted with the policy's calendar)."""

    text: str
    fixed: dt.timedelta
    business_days: int = 0


@dataclass(frozen=True, slots=True)
class CalendarDecl:
    name: str
    label: Label
    timezone: str
    hours: tuple[tuple[str, tuple[str, ...]], ...]  # weekday key ("mon-fri") → periods ("09:00-12:00")
    makeup_day_hours: tuple[str, ...] | None
    public_holidays: str  # china | none
    uncovered_years: str  # holidays | weekends
    holidays: tuple[tuple[dt.date, str], ...]
    workdays: tuple[tuple[dt.date, str], ...]
    official_years: tuple[int, ...]
    location: Location = NOWHERE


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


@dataclass(frozen=True, slots=True)
class NotifyStep:
    channel: str
    to: tuple[str, ...]
    template: str


@dataclass(frozen=True, slots=True)
class ReassignStep:
    backup: str | None = None  # a username; None: the owner's manager


@dataclass(frozen=True, slots=True)
class SetStep:
    values: tuple[tuple[str, Any], ...]


@dataclass(frozen=True, slots=True)
class TagStep:
    field: str
    add: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CreateStep:
    """Create a related record (e.g. a to-do activity) linking back through `link`."""

    entity: str
    link: str
    values: tuple[tuple[str, Any], ...]


TimeAction = NotifyStep | ReassignStep | SetStep | TagStep | CreateStep


@dataclass(frozen=True, slots=True)
class ClockTrigger:
    """When a clock starts: created, assigned, updated, stage_entered (value), field_set (field)."""

    kind: str
    field: str | None = None
    value: str | None = None


@dataclass(frozen=True, slots=True)
class StopCondition:
    """field_set (field), status_in (field, values), when (expression), stage_changed (field),
    replied (entity, link, expression: a related record saying the customer answered),
    viewed_by (values: ("owner",) or ("anyone",): a person opened the record)."""

    kind: str
    field: str | None = None
    values: tuple[str, ...] = ()
    expression: Expression | None = None
    entity: str | None = None


@dataclass(frozen=True, slots=True)
class SlaSpec:
    name: str
    label: Label
    entity: str
    targets: tuple[tuple[str, DurationSpec], ...]
    default_target: DurationSpec | None
    starts: ClockTrigger
    applies_when: Expression | None = None
    tier: str | None = None
    business_time: bool = True
    calendar: str | None = None
    pauses_when: Expression | None = None
    stops: tuple[StopCondition, ...] = ()
    warn_at: tuple[int, ...] = (50, 80)
    escalate_at: tuple[int, ...] = ()
    on_warning: tuple[TimeAction, ...] = ()
    on_breach: tuple[TimeAction, ...] = ()
    on_escalation: tuple[TimeAction, ...] = ()
    location: Location = NOWHERE


@dataclass(frozen=True, slots=True)
class CadenceStepSpec:
    name: str
    after: DurationSpec
    actions: tuple[TimeAction, ...]


@dataclass(frozen=True, slots=True)
class CadenceSpec:
    name: str
    label: Label
    entity: str
    starts: ClockTrigger
    steps: tuple[CadenceStepSpec, ...]
    stops: tuple[StopCondition, ...] = ()
    restart_on_update: bool = False
    business_time: bool = False
    calendar: str | None = None
    location: Location = NOWHERE


@dataclass(frozen=True, slots=True)
class CountSpec:
    """A number for a report: records of `entity` matching `where` / created within / SLA state, or events."""

    name: str
    entity: str
    where: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # field → allowed values (None = empty)
    created_within: DurationSpec | None = None
    updated_within: DurationSpec | None = None
    sla: str | None = None  # overdue | due_within:<duration>
    policy: str | None = None
    event: str | None = None  # count event rows of this kind instead
    limit: int = 0  # > 0: a list of up to `limit` records instead of a count


@dataclass(frozen=True, slots=True)
class JobSpec:
    name: str
    label: Label
    cron: str
    timezone: str
    channel: str
    template: str
    counts: tuple[CountSpec, ...] = ()
    calendar: str | None = None  # run only on this calendar's working days
    location: Location = NOWHERE


# --------------------------------------------------------------------------- schemas

_DURATION_SCHEMA = {"type": "string", "pattern": _DURATION.pattern}
_TEXTS = {"oneOf": [{"type": "string"}, {"type": "object", "minProperties": 1,
                                         "additionalProperties": {"type": "string"}}]}
_SECRET = {"oneOf": [{"type": "string", "minLength": 1},
                     {"type": "object", "additionalProperties": False, "minProperties": 1, "maxProperties": 1,
                      "properties": {"env": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$"},
                                     "key": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"}}}]}
_LITERALS = {"type": "object", "minProperties": 1, "propertyNames": NAME}
_ACTION = {"type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": False, "properties": {
    "notify": {"type": "object", "required": ["channel", "template"], "additionalProperties": False,
               "properties": {"channel": NAME, "template": NAME,
                              "to": {"type": "array", "items": {"type": "string"}, "minItems": 1}}},
    "reassign": {"type": "object", "additionalProperties": False,
                 "properties": {"backup": {"type": "string", "pattern": "^[A-Za-z0-9_.@-]+$"}}},
    "set": _LITERALS,
    "tag": {"type": "object", "required": ["add"], "additionalProperties": False,
            "properties": {"field": NAME, "add": {"type": "array", "items": {"type": "string"}, "minItems": 1}}},
    "create": {"type": "object", "required": ["entity", "link"], "additionalProperties": False,
               "properties": {"entity": NAME, "link": NAME, "values": _LITERALS}},
}}
_ACTIONS = {"type": "array", "items": _ACTION}
_TRIGGER = {"oneOf": [{"enum": ["created", "assigned", "updated"]},
                      {"type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
                       "properties": {"stage_entered": {"type": "string"}, "field_set": NAME}}]}
_STOP = {"type": "object", "minProperties": 1, "additionalProperties": False, "properties": {
    "field_set": NAME, "status_in": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    "field": NAME, "when": EXPRESSION, "stage_changed": {"type": "boolean"},
    "viewed_by": {"enum": ["owner", "anyone"]},
    "replied": {"type": "object", "required": ["entity", "link"], "additionalProperties": False,
                "properties": {"entity": NAME, "link": NAME, "when": EXPRESSION}}}}
_PERCENTS = {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}

CALENDARS_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["calendars"], "additionalProperties": False,
    "properties": {"calendars": {"type": "object", "minProperties": 1, "propertyNames": NAME,
                                 "additionalProperties": {
        "type": "object", "required": ["hours"], "additionalProperties": False, "properties": {
            "label": LABEL, "description": {"type": "string"}, "timezone": {"type": "string"},
            "hours": {"type": "object", "minProperties": 1,
                      "additionalProperties": {"type": "array", "items": {"type": "string"}}},
            "makeup_day_hours": {"type": "array", "items": {"type": "string"}},
            "public_holidays": {"enum": ["china", "none"]}, "uncovered_years": {"enum": ["holidays", "weekends"]},
            "holidays": {"type": "object", "additionalProperties": {"type": "string"}},
            "workdays": {"type": "object", "additionalProperties": {"type": "string"}},
            "official_years": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}}}}}}
CHANNELS_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["channels"], "additionalProperties": False, "properties": {
        "channels": {"type": "object", "propertyNames": NAME, "additionalProperties": {
            "type": "object", "required": ["type"], "additionalProperties": False, "properties": {
                "type": {"enum": list(CHANNEL_TYPES)}, "label": LABEL, "description": {"type": "string"},
                "url": _SECRET, "secret": _SECRET, "format": {"enum": ["text", "markdown"]},
                "language": {"type": "string"}, "rich": {"enum": ["interactive", "post"]},
                "host": {"type": "string"}, "port": {"type": "integer"},
                "tls": {"enum": ["implicit", "starttls", "none"]}, "sender": {"type": "string"},
                "username": {"type": "string"}, "password": _SECRET}}},
        "retry": {"type": "object", "additionalProperties": False, "properties": {
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": 50},
            "first_delay": _DURATION_SCHEMA, "max_delay": _DURATION_SCHEMA}},
        "templates": {"type": "object", "propertyNames": NAME, "additionalProperties": {
            "type": "object", "required": ["text"], "additionalProperties": False,
            "properties": {"title": _TEXTS, "text": _TEXTS, "html": _TEXTS}}}}}
SLA_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["sla", "entity"], "additionalProperties": False, "properties": {
        "sla": NAME, "label": LABEL, "description": {"type": "string"}, "entity": NAME,
        "applies_when": EXPRESSION, "tier": NAME,
        "targets": {"type": "object", "minProperties": 1, "additionalProperties": _DURATION_SCHEMA},
        "default_target": _DURATION_SCHEMA, "business_time": {"type": "boolean"}, "calendar": NAME,
        "starts": _TRIGGER, "pauses_when": EXPRESSION, "stops": {"type": "array", "items": _STOP},
        "warn_at": _PERCENTS, "escalate_at": _PERCENTS,
        "on_warning": _ACTIONS, "on_breach": _ACTIONS, "on_escalation": _ACTIONS}}
CADENCES_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["cadences"], "additionalProperties": False, "properties": {
        "cadences": {"type": "object", "minProperties": 1, "propertyNames": NAME, "additionalProperties": {
            "type": "object", "required": ["entity", "starts", "steps"], "additionalProperties": False,
            "properties": {
                "label": LABEL, "description": {"type": "string"}, "entity": NAME, "starts": _TRIGGER,
                "restart_on_update": {"type": "boolean"}, "business_time": {"type": "boolean"},
                "calendar": NAME, "stops": {"type": "array", "items": _STOP},
                "steps": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["name", "after", "actions"], "additionalProperties": False,
                    "properties": {"name": NAME, "label": LABEL, "after": _DURATION_SCHEMA,
                                   "actions": {**_ACTIONS, "minItems": 1}}}}}}}}}
_COUNT = {"type": "object", "additionalProperties": False, "properties": {
    "entity": NAME, "where": {"type": "object", "propertyNames": NAME}, "created_within": _DURATION_SCHEMA,
    "sla": {"type": "string", "pattern": "^(overdue|due_within:.+)$"}, "policy": NAME,
    "event": NAME, "within": _DURATION_SCHEMA, "updated_within": _DURATION_SCHEMA, "list": {"type": "integer", "minimum": 1, "maximum": 100}}}
JOBS_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["jobs"], "additionalProperties": False, "properties": {
        "jobs": {"type": "object", "minProperties": 1, "propertyNames": NAME, "additionalProperties": {
            "type": "object", "required": ["cron", "channel", "template"], "additionalProperties": False,
            "properties": {"label": LABEL, "description": {"type": "string"}, "cron": {"type": "string"},
                           "timezone": {"type": "string"}, "calendar": NAME, "channel": NAME, "template": NAME,
                           "counts": {"type": "object", "propertyNames": NAME, "additionalProperties": _COUNT}}}}}}


# --------------------------------------------------------------------------- small parsers

def parse_duration(text: str) -> DurationSpec:
    """"1h30min" → DurationSpec; raises ValueError for text that is not a duration."""
    if not _DURATION.match(str(text)):
        raise ValueError(f"'{text}' is not a duration; write e.g. 15min, 2h, 1h30min, 3d or 1bd")
    fixed, business_days = dt.timedelta(0), 0
    for amount, unit in _DURATION_PART.findall(str(text)):
        if unit == "bd":
            business_days += int(amount)
        else:
            fixed += dt.timedelta(**{{"d": "days", "h": "hours", "min": "minutes", "s": "seconds"}[unit]: int(amount)})
    return DurationSpec(str(text), fixed, business_days)


def _check_period(text: str) -> str | None:
    match = _PERIOD.match(text.strip())
    if not match:
        return f'working hours "{text}" must look like "09:00-12:00"'
    start = int(match[1]) * 60 + int(match[2])
    end = int(match[3]) * 60 + int(match[4])
    if int(match[2]) > 59 or int(match[4]) > 59 or not 0 <= start < end <= 1440:
        return f'working hours "{text}" must start before they end, within 00:00-24:00'
    return None


def _check_weekday_key(key: str) -> str | None:
    first, _, last = key.lower().partition("-")
    if first not in WEEKDAYS or (last and last not in WEEKDAYS):
        return f'weekday "{key}" must be one of {", ".join(WEEKDAYS)} or a range like "mon-fri"'
    if last and WEEKDAYS.index(last) < WEEKDAYS.index(first):
        return f'weekday range "{key}" runs backwards; write it Monday first'
    return None


def _days(raw: dict[str, str], checker: Checker, path: PathKey) -> list[tuple[dt.date, str]]:
    days: list[tuple[dt.date, str]] = []
    for key, name in raw.items():
        match = _DAY.match(str(key).strip())
        try:
            if not match:
                raise ValueError
            first = dt.date.fromisoformat(match[1])
            last = dt.date.fromisoformat(match[2]) if match[2] else first
        except ValueError:
            checker.error(path + (key,), f"'{key}' is not a date or a date range",
                          'write "2027-02-13" or "2027-02-06..2027-02-12" (quoted)', key=True)
            continue
        if last < first or (last - first).days > 366:
            checker.error(path + (key,), f"date range '{key}' runs backwards or spans more than a year", key=True)
            continue
        days.extend((first + dt.timedelta(days=offset), str(name)) for offset in range((last - first).days + 1))
    return days


def _zone(checker: Checker, path: PathKey, name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        checker.error(path, f"unknown time zone '{name}'", "use an IANA name such as Asia/Shanghai")


def _secret(raw: Any) -> SecretValue | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return SecretValue(literal=raw)
    return SecretValue(env=raw.get("env"), key=raw.get("key"))


def _label(data: dict[str, Any], name: str) -> Label:
    return Label.of(data.get("label"), name.replace("_", " ").capitalize())


def _texts(raw: Any) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (("*", raw),)
    return tuple((str(lang), str(text)) for lang, text in raw.items())


def sla_named(model: Metamodel, name: str) -> SlaSpec:
    for spec in model.slas:  # type: ignore[attr-defined]
        if spec.name == name:
            return spec  # type: ignore[no-any-return]
    raise KeyError(f"no SLA '{name}'")


def cadence_named(model: Metamodel, name: str) -> CadenceSpec:
    for spec in model.cadences:  # type: ignore[attr-defined]
        if spec.name == name:
            return spec  # type: ignore[no-any-return]
    raise KeyError(f"no cadence '{name}'")
