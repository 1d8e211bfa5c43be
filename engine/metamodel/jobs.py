"""`jobs:` documents: cron-scheduled reports — counts and lists rendered into a message.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfoNotFoundError

from engine.metamodel.crontab import crontab_trigger

from engine.metamodel.calendars import calendar_ref, check_zone
from engine.metamodel.checks import Built, Checker, build_items, default_label
from engine.metamodel.durations import DURATION_SCHEMA, DurationSpec, checked_duration
from engine.metamodel.errors import NOWHERE, Location, did_you_mean
from engine.metamodel.labels import Label
from engine.metamodel.messages import Msg
from engine.metamodel.schema import LABEL, NAME
from engine.metamodel.source import PathKey, SourceDocument


if TYPE_CHECKING:  # the Metamodel holds these specs; builders only read it
    from engine.metamodel.model import Metamodel
    from engine.metamodel.vocabulary import Vocabulary


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
    per: tuple[str, ...] = ()    # roles: one message per active user of these roles, with their own figures
    dashboard: str | None = None  # the dashboard the message links to


_COUNT = {"type": "object", "additionalProperties": False, "properties": {
    "entity": NAME, "where": {"type": "object", "propertyNames": NAME}, "created_within": DURATION_SCHEMA,
    "sla": {"type": "string", "pattern": "^(overdue|due_within:.+)$"}, "policy": NAME,
    "event": NAME, "within": DURATION_SCHEMA, "updated_within": DURATION_SCHEMA, "list": {"type": "integer", "minimum": 1, "maximum": 100}}}


JOBS_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["jobs"], "additionalProperties": False, "properties": {
        "jobs": {"type": "object", "minProperties": 1, "propertyNames": NAME, "additionalProperties": {
            "type": "object", "required": ["cron", "channel", "template"], "additionalProperties": False,
            "properties": {"label": LABEL, "description": {"type": "string"}, "cron": {"type": "string"},
                           "timezone": {"type": "string"}, "calendar": NAME, "channel": NAME, "template": NAME,
                           "per": {"type": "array", "items": NAME, "uniqueItems": True, "minItems": 1},
                           "dashboard": NAME,
                           "counts": {"type": "object", "propertyNames": NAME, "additionalProperties": _COUNT}}}}}}


def build_jobs(documents: list[SourceDocument], model: Metamodel, vocabulary: Vocabulary) -> Built:
    """JobSpecs: a valid crontab and zone, a known channel and template, counts over known fields."""
    jobs, errors = build_items("jobs", Msg("job"), documents, model, vocabulary, _build_job)
    return replace(model, jobs=tuple(jobs)), errors


def _build_job(checker: Checker, name: str, data: dict[str, Any], path: PathKey, _: int) -> JobSpec:
    channels = {spec.name for spec in checker.model.channels}
    templates = {spec.name for spec in checker.model.templates}
    timezone = data.get("timezone", checker.model.settings.timezone)
    check_zone(checker, path + ("timezone",), timezone)
    try:
        crontab_trigger(data["cron"], timezone)
    except (ValueError, ZoneInfoNotFoundError) as exc:
        checker.error(path + ("cron",), Msg("bad cron expression '{cron}': {problem}", cron=data["cron"], problem=exc),
                      Msg('five fields: minute hour day month weekday, e.g. "0 8 * * mon-fri"'))
    if data["channel"] not in channels:
        checker.error(path + ("channel",), Msg("unknown channel '{name}'", name=data["channel"]),
                      did_you_mean(data["channel"], channels))
    if data["template"] not in templates:
        checker.error(path + ("template",), Msg("unknown message template '{name}'", name=data["template"]),
                      did_you_mean(data["template"], templates))
    if data.get("calendar"):
        calendar_ref(checker, path, data["calendar"], True)
    counts = tuple(c for key, raw in (data.get("counts") or {}).items()
                   if (c := _count(checker, path + ("counts", key), key, raw)) is not None)
    for index, role in enumerate(data.get("per") or ()):
        if not checker.model.has_role(role):
            checker.error(path + ("per", index), Msg("per: unknown role '{name}'", name=role),
                          did_you_mean(role, [spec.name for spec in checker.model.roles]))
    dashboard = data.get("dashboard")
    if dashboard is not None and dashboard not in {spec.name for spec in checker.model.dashboards}:
        checker.error(path + ("dashboard",), Msg("unknown dashboard '{name}'", name=dashboard),
                      Msg("{suggestion} Name one declared under dashboards:, or remove the line.",
                          suggestion=did_you_mean(dashboard, [spec.name for spec in checker.model.dashboards])))
    return JobSpec(name, default_label(data, name), data["cron"], timezone, data["channel"], data["template"], counts,
                   data.get("calendar"), checker.doc.where_key(path), tuple(data.get("per") or ()),
                   dashboard)


def _count(checker: Checker, path: PathKey, name: str, raw: dict[str, Any]) -> CountSpec | None:
    if "entity" not in raw:
        checker.error(path, Msg("count '{name}' needs an entity", name=name))
        return None
    entity = checker.entity(path + ("entity",), raw["entity"], Msg("count '{name}'", name=name))
    if entity is None:
        return None
    where = []
    for field_name, value in (raw.get("where") or {}).items():
        spec = checker.field(path + ("where", field_name), entity, field_name, Msg("where field"),
                             system_ok=True)
        values = tuple(value) if isinstance(value, list) else (value,)
        for item in values:
            if item is not None:
                checker.option(path + ("where", field_name), spec, item, Msg("value"))
        where.append((field_name, values))
    if raw.get("policy") and raw["policy"] not in {s.name for s in checker.model.slas}:
        checker.error(path + ("policy",), Msg("unknown SLA '{name}'", name=raw["policy"]))
    within = raw.get("created_within") or raw.get("within")
    if raw.get("sla", "").startswith("due_within:"):
        checked_duration(checker, path + ("sla",), raw["sla"].split(":", 1)[1])
    updated = raw.get("updated_within")
    return CountSpec(name, entity.name, tuple(where), checked_duration(checker, path, within) if within else None,
                     checked_duration(checker, path, updated) if updated else None, raw.get("sla"), raw.get("policy"), raw.get("event"), int(raw.get("list", 0)))
