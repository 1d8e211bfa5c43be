"""Builders of the time documents (calendars, channels, sla, cadences, jobs): checks with file:line.

Each builder takes the documents of its kind, the metamodel built so far (entities, and the
kinds registered before it in kinds.py: calendars and channels come before sla, cadences
and jobs) and returns its Metamodel fields plus located errors with did-you-mean hints.
The specs and schemas live in timekeeping.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from apscheduler.triggers.cron import CronTrigger

from engine.metamodel.checks import Checker, build_items
from engine.metamodel.errors import BlueprintError, did_you_mean
from engine.metamodel.model import EntitySpec, Expression, FieldType, Metamodel
from engine.metamodel.source import PathKey, SourceDocument
from engine.metamodel.timekeeping import (RECIPIENT, CadenceSpec, CadenceStepSpec, CalendarDecl, ChannelSpec,
                                          ClockTrigger, CountSpec, CreateStep, DurationSpec, JobSpec,
                                          MessageTemplateSpec, NotifyStep, ReassignStep, RetryDecl, SetStep, SlaSpec,
                                          StopCondition, TagStep, TimeAction, _check_period, _check_weekday_key, _days,
                                          _label, _secret, _texts, _zone, parse_duration)


Built = tuple[dict[str, Any], list[BlueprintError]]


def build_calendars(documents: list[SourceDocument], model: Metamodel, functions: Collection[str]) -> Built:
    """CalendarDecls from every `calendars:` document: weekdays, periods, dates and zones checked."""
    calendars, errors = build_items("calendars", "calendar", documents, model, functions, _build_calendar)
    return {"calendars": tuple(calendars)}, errors


def _build_calendar(checker: Checker, name: str, data: dict[str, Any], path: PathKey, _: int) -> CalendarDecl:
    timezone = data.get("timezone", checker.model.settings.timezone)
    _zone(checker, path + ("timezone",), timezone)
    for key, periods in data["hours"].items():
        if (problem := _check_weekday_key(key)) is not None:
            checker.error(path + ("hours", key), problem, key=True)
        for index, text in enumerate(periods):
            if (problem := _check_period(text)) is not None:
                checker.error(path + ("hours", key, index), problem, "overnight shifts are two periods")
    for index, text in enumerate(data.get("makeup_day_hours") or ()):
        if (problem := _check_period(text)) is not None:
            checker.error(path + ("makeup_day_hours", index), problem)
    holidays = _days(data.get("holidays") or {}, checker, path + ("holidays",))
    workdays = _days(data.get("workdays") or {}, checker, path + ("workdays",))
    clash = sorted({day for day, _ in holidays} & {day for day, _ in workdays})
    if clash:
        checker.error(path, f"calendar '{name}' lists {clash[0]} as both a holiday and a workday",
                      "keep it under one of holidays/workdays")
    makeup = data.get("makeup_day_hours")
    return CalendarDecl(
        name, _label(data, name), timezone, tuple((key, tuple(periods)) for key, periods in data["hours"].items()),
        tuple(makeup) if makeup is not None else None, data.get("public_holidays", "china"),
        data.get("uncovered_years", "holidays"), tuple(holidays), tuple(workdays),
        tuple(data.get("official_years") or ()), checker.doc.where_key(path))


def build_channels(documents: list[SourceDocument], model: Metamodel, functions: Collection[str]) -> Built:
    """ChannelSpecs and message templates; a secret written inline where one is needed is an error."""
    channels, errors = build_items("channels", "channel", documents, model, functions, _build_channel)
    templates, template_errors = build_items("templates", "template", documents, model, functions, _build_template)
    return {"channels": tuple(channels), "templates": tuple(templates)}, errors + template_errors


def _build_channel(checker: Checker, name: str, data: dict[str, Any], path: PathKey, _: int) -> ChannelSpec:
    _check_channel(checker, path, data)
    retry = checker.doc.data.get("retry") or {}  # one retry policy per channels document
    return ChannelSpec(
        name, data["type"], _label(data, name), _secret(data.get("url")), _secret(data.get("secret")),
        data.get("format", "text"), data.get("language", checker.model.settings.default_language),
        data.get("rich", "interactive"), data.get("host", ""),
        int(data.get("port", 465 if data.get("tls") == "implicit" else 25)), data.get("tls", "none"),
        data.get("sender", ""), data.get("username"), _secret(data.get("password")),
        RetryDecl(retry.get("max_attempts", 8), parse_duration(retry.get("first_delay", "30s")).fixed,
                  parse_duration(retry.get("max_delay", "1h")).fixed),
        checker.doc.where_key(path))


def _build_template(checker: Checker, name: str, data: dict[str, Any], path: PathKey, _: int) -> MessageTemplateSpec:
    for part in ("title", "text", "html"):
        for lang, text in _texts(data.get(part)):
            _check_jinja(checker, path + ((part, lang) if lang != "*" else (part,)), text, name)
    return MessageTemplateSpec(name, _texts(data.get("title")), _texts(data["text"]), checker.doc.where_key(path),
                               _texts(data.get("html")))


def _check_channel(checker: Checker, path: PathKey, data: dict[str, Any]) -> None:
    kind = data["type"]
    if kind == "mail":
        for option in ("host", "sender"):
            if not data.get(option):
                checker.error(path, f"mail channel needs '{option}'", "e.g. host: smtp.exmail.qq.com, sender: crm@…")
        return
    if "url" not in data:
        checker.error(path, f"{kind} channel needs 'url'", "write url: {env: VARIABLE} holding the webhook address")
    elif isinstance(data["url"], str) and kind != "webhook":
        checker.error(path + ("url",), f"the {kind} webhook address carries its token, so it must not stand in the "
                      "blueprint", "write url: {env: VARIABLE} or url: {key: secrets.file.key}")
    if isinstance(data.get("secret"), str) or isinstance(data.get("password"), str):
        checker.error(path, "secrets never stand in the blueprint", "write {env: VARIABLE} or {key: a.b}")


def _check_jinja(checker: Checker, path: PathKey, text: str, name: str) -> None:
    try:
        jinja2.Environment().parse(text)
    except jinja2.TemplateSyntaxError as exc:
        checker.error(path, f"template '{name}' line {exc.lineno}: {exc.message}",
                      "templates are Jinja2: {{ record.name }}, {% if … %}…{% endif %}")


def _duration(checker: Checker, path: PathKey, text: str) -> DurationSpec:
    try:
        return parse_duration(text)
    except ValueError as exc:
        checker.error(path, str(exc))
        return DurationSpec(text, dt.timedelta(minutes=1))


def _trigger(checker: Checker, path: PathKey, raw: Any, entity: EntitySpec) -> ClockTrigger:
    if raw is None:
        return ClockTrigger("created")
    if isinstance(raw, str):
        return ClockTrigger(raw)
    if "field_set" in raw:
        checker.field(path + ("field_set",), entity, raw["field_set"], "field_set", system_ok=True)
        return ClockTrigger("field_set", field=raw["field_set"])
    stage = _stage_field(checker, path, entity)
    if stage is not None:
        checker.option(path + ("stage_entered",), entity.field(stage), raw["stage_entered"], "stage")
    return ClockTrigger("stage_entered", field=stage, value=str(raw["stage_entered"]))


def _stage_field(checker: Checker, path: PathKey, entity: EntitySpec) -> str | None:
    name = next((n for n in ("stage", "status") if entity.has_field(n)), None)
    if name is None:
        checker.error(path, f"entity '{entity.name}' has no stage or status field to watch")
    return name


def _stops(checker: Checker, path: PathKey, raw: list[dict[str, Any]], entity: EntitySpec) -> tuple[StopCondition, ...]:
    stops: list[StopCondition] = []
    for index, item in enumerate(raw):
        where = path + (index,)
        if "field_set" in item:
            checker.field(where + ("field_set",), entity, item["field_set"], "field_set", system_ok=True)
            stops.append(StopCondition("field_set", field=item["field_set"]))
        elif "status_in" in item:
            name = item.get("field") or _stage_field(checker, where, entity)
            spec = checker.field(where, entity, name, "status field") if name else None
            for value in item["status_in"]:
                checker.option(where + ("status_in",), spec, value, "status")
            stops.append(StopCondition("status_in", field=name, values=tuple(map(str, item["status_in"]))))
        elif "when" in item:
            stops.append(StopCondition("when", expression=checker.expression(where + ("when",), item["when"], entity)))
        elif item.get("stage_changed"):
            stops.append(StopCondition("stage_changed", field=item.get("field") or _stage_field(checker, where, entity)))
        elif "replied" in item:
            stops.append(_replied(checker, where + ("replied",), item["replied"], entity))
        elif "viewed_by" in item:
            stops.append(StopCondition("viewed_by", values=(item["viewed_by"],)))
        else:
            checker.error(where, "a stop condition needs field_set, status_in, when, stage_changed, replied "
                                 "or viewed_by")
    return tuple(stops)


def _replied(checker: Checker, path: PathKey, raw: dict[str, Any], entity: EntitySpec) -> StopCondition:
    related = checker.entity(path + ("entity",), raw["entity"], "replied")
    expression = None
    if related is not None:
        link = checker.field(path + ("link",), related, raw["link"], "link", (FieldType.LINK,))
        if link is not None and link.link_entity != entity.name:
            checker.error(path + ("link",), f"'{raw['link']}' links {related.name} to {link.link_entity}, "
                          f"not to {entity.name}", "name the link field that points at this record")
        if "when" in raw:
            expression = checker.expression(path + ("when",), raw["when"], related)
    return StopCondition("replied", field=raw["link"], expression=expression, entity=raw["entity"])


def _actions(checker: Checker, path: PathKey, raw: list[dict[str, Any]], entity: EntitySpec) -> tuple[TimeAction, ...]:
    model = checker.model
    actions: list[TimeAction] = []
    for index, item in enumerate(raw):
        (verb, body), = item.items()
        where = path + (index, verb)
        if verb == "notify":
            channels = {spec.name for spec in model.channels}  # type: ignore[attr-defined]
            if body["channel"] not in channels:
                checker.error(where + ("channel",), f"unknown channel '{body['channel']}'",
                              did_you_mean(body["channel"], channels))
            templates = {spec.name for spec in model.templates}  # type: ignore[attr-defined]
            if body["template"] not in templates:
                checker.error(where + ("template",), f"unknown message template '{body['template']}'",
                              f"{did_you_mean(body['template'], templates)} Declare it under templates: in a "
                              "channels document.")
            for position, person in enumerate(body.get("to") or ["owner"]):
                if not RECIPIENT.match(person):
                    checker.error(where + ("to", position), f"unknown recipient '{person}'",
                                  "write owner, owner.manager, backup, all, role:NAME, team:NAME or user:NAME")
            actions.append(NotifyStep(body["channel"], tuple(body.get("to") or ["owner"]), body["template"]))
        elif verb == "reassign":
            actions.append(ReassignStep(body.get("backup")))
        elif verb == "set":
            for name, value in body.items():
                spec = checker.field(where + (name,), entity, name, "set field")
                if spec is not None:
                    checker.check_literal(where + (name,), spec, value)
            actions.append(SetStep(tuple(body.items())))
        elif verb == "tag":
            name = body.get("field", "tags")
            spec = checker.field(where, entity, name, "tag field", (FieldType.TAGS, FieldType.MULTICHOICE))
            for tag in body["add"]:
                checker.option(where + ("add",), spec, tag, "tag")
            actions.append(TagStep(name, tuple(body["add"])))
        else:
            related = checker.entity(where + ("entity",), body["entity"], "create")
            if related is not None:
                link = checker.field(where + ("link",), related, body["link"], "link", (FieldType.LINK,))
                if link is not None and link.link_entity != entity.name:
                    checker.error(where + ("link",), f"'{body['link']}' does not link {related.name} to {entity.name}")
                for name, value in (body.get("values") or {}).items():
                    spec = checker.field(where + ("values", name), related, name, "field")
                    if spec is not None:
                        checker.check_literal(where + ("values", name), spec, value)
            actions.append(CreateStep(body["entity"], body["link"], tuple((body.get("values") or {}).items())))
    return tuple(actions)


def _calendar_ref(checker: Checker, path: PathKey, name: str | None, business_time: bool) -> str | None:
    known = [spec.name for spec in checker.model.calendars]  # type: ignore[attr-defined]
    if name is None:
        if business_time and len(known) != 1:
            checker.error(path, "business time needs a calendar: name one with calendar:",
                          f"declared calendars: {', '.join(known) or 'none'}")
        return known[0] if business_time and len(known) == 1 else None
    if name not in known:
        checker.error(path + ("calendar",), f"unknown calendar '{name}'", did_you_mean(name, known))
    return name


def build_slas(documents: list[SourceDocument], model: Metamodel, functions: Collection[str]) -> Built:
    """SlaSpecs from every `sla:` document, checked against entities, calendars, channels and templates."""
    errors: list[BlueprintError] = []
    slas: dict[str, SlaSpec] = {}
    for doc in documents:
        checker = Checker(doc, model, functions, errors)
        data, name = doc.data, doc.data["sla"]
        if name in slas:
            checker.error(("sla",), f"SLA '{name}' is declared twice", f"the first is at {slas[name].location}")
            continue
        entity = checker.entity(("entity",), data["entity"], f"SLA '{name}'")
        if entity is None:
            continue
        tier = data.get("tier")
        tier_spec = checker.field(("tier",), entity, tier, "tier") if tier else None
        targets = []
        for value, text in (data.get("targets") or {}).items():
            checker.option(("targets", value), tier_spec, value, "tier")
            targets.append((str(value), _duration(checker, ("targets", value), text)))
        default = _duration(checker, ("default_target",), data["default_target"]) if "default_target" in data else None
        if not targets and default is None:
            checker.error(("sla",), f"SLA '{name}' has no target", "give targets per tier or a default_target")
        business_time = bool(data.get("business_time", True))
        warn_at, escalate_at = tuple(data.get("warn_at", (50, 80))), tuple(data.get("escalate_at", ()))
        if any(not 0 < p < 100 for p in warn_at):
            checker.error(("warn_at",), "warnings are percentages between 1 and 99")
        if any(p <= 100 for p in escalate_at):
            checker.error(("escalate_at",), "escalations come after the breach: percentages above 100")
        for value, duration in targets + ([("default", default)] if default else []):
            if business_time and duration.fixed >= dt.timedelta(days=1):
                checker.error(("targets", value) if value != "default" else ("default_target",),
                              f"'{duration.text}' in a business-time SLA means 24 working hours each day",
                              "write 1bd for one business day", severity="warning")
        slas[name] = SlaSpec(
            name, _label(data, name), entity.name, tuple(targets), default,
            _trigger(checker, ("starts",), data.get("starts"), entity),
            _expression(checker, ("applies_when",), data.get("applies_when"), entity), tier, business_time,
            _calendar_ref(checker, (), data.get("calendar"), business_time),
            _expression(checker, ("pauses_when",), data.get("pauses_when"), entity),
            _stops(checker, ("stops",), data.get("stops") or [], entity), warn_at, escalate_at,
            *(_actions(checker, (key,), data.get(key) or [], entity)
              for key in ("on_warning", "on_breach", "on_escalation")),
            location=doc.where_key(("sla",)))
    return {"slas": tuple(slas.values())}, errors


def _expression(checker: Checker, path: PathKey, source: str | None, entity: EntitySpec) -> Expression | None:
    return checker.expression(path, source, entity) if source else None


def build_cadences(documents: list[SourceDocument], model: Metamodel, functions: Collection[str]) -> Built:
    """CadenceSpecs: a start trigger, ordered steps with delays and actions, stop conditions."""
    cadences, errors = build_items("cadences", "cadence", documents, model, functions, _build_cadence)
    return {"cadences": tuple(cadences)}, errors


def _build_cadence(checker: Checker, name: str, data: dict[str, Any], path: PathKey, _: int) -> CadenceSpec | None:
    entity = checker.entity(path + ("entity",), data["entity"], f"cadence '{name}'")
    if entity is None:
        return None
    business_time = bool(data.get("business_time", False))
    steps, seen = [], set()
    for index, step in enumerate(data["steps"]):
        where = path + ("steps", index)
        if step["name"] in seen:
            checker.error(where + ("name",), f"step '{step['name']}' appears twice in cadence '{name}'")
        seen.add(step["name"])
        steps.append(CadenceStepSpec(step["name"], _duration(checker, where + ("after",), step["after"]),
                                     _actions(checker, where + ("actions",), step["actions"], entity)))
    return CadenceSpec(
        name, _label(data, name), entity.name, _trigger(checker, path + ("starts",), data["starts"], entity),
        tuple(steps), _stops(checker, path + ("stops",), data.get("stops") or [], entity),
        bool(data.get("restart_on_update", False)), business_time,
        _calendar_ref(checker, path, data.get("calendar"), business_time), checker.doc.where_key(path))


def build_jobs(documents: list[SourceDocument], model: Metamodel, functions: Collection[str]) -> Built:
    """JobSpecs: a valid crontab and zone, a known channel and template, counts over known fields."""
    jobs, errors = build_items("jobs", "job", documents, model, functions, _build_job)
    return {"jobs": tuple(jobs)}, errors


def _build_job(checker: Checker, name: str, data: dict[str, Any], path: PathKey, _: int) -> JobSpec:
    channels = {spec.name for spec in checker.model.channels}  # type: ignore[attr-defined]
    templates = {spec.name for spec in checker.model.templates}  # type: ignore[attr-defined]
    timezone = data.get("timezone", checker.model.settings.timezone)
    _zone(checker, path + ("timezone",), timezone)
    try:
        CronTrigger.from_crontab(data["cron"], timezone=ZoneInfo(timezone))
    except (ValueError, ZoneInfoNotFoundError) as exc:
        checker.error(path + ("cron",), f"bad cron expression '{data['cron']}': {exc}",
                      'five fields: minute hour day month weekday, e.g. "0 8 * * mon-fri"')
    if data["channel"] not in channels:
        checker.error(path + ("channel",), f"unknown channel '{data['channel']}'",
                      did_you_mean(data["channel"], channels))
    if data["template"] not in templates:
        checker.error(path + ("template",), f"unknown message template '{data['template']}'",
                      did_you_mean(data["template"], templates))
    if data.get("calendar"):
        _calendar_ref(checker, path, data["calendar"], True)
    counts = tuple(c for key, raw in (data.get("counts") or {}).items()
                   if (c := _count(checker, path + ("counts", key), key, raw)) is not None)
    return JobSpec(name, _label(data, name), data["cron"], timezone, data["channel"], data["template"], counts,
                   data.get("calendar"), checker.doc.where_key(path))


def _count(checker: Checker, path: PathKey, name: str, raw: dict[str, Any]) -> CountSpec | None:
    if "entity" not in raw:
        checker.error(path, f"count '{name}' needs an entity")
        return None
    entity = checker.entity(path + ("entity",), raw["entity"], f"count '{name}'")
    if entity is None:
        return None
    where = []
    for field_name, value in (raw.get("where") or {}).items():
        spec = checker.field(path + ("where", field_name), entity, field_name, "where field", system_ok=True)
        values = tuple(value) if isinstance(value, list) else (value,)
        for item in values:
            if item is not None:
                checker.option(path + ("where", field_name), spec, item, "value")
        where.append((field_name, values))
    if raw.get("policy") and raw["policy"] not in {s.name for s in checker.model.slas}:  # type: ignore[attr-defined]
        checker.error(path + ("policy",), f"unknown SLA '{raw['policy']}'")
    within = raw.get("created_within") or raw.get("within")
    if raw.get("sla", "").startswith("due_within:"):
        _duration(checker, path + ("sla",), raw["sla"].split(":", 1)[1])
    updated = raw.get("updated_within")
    return CountSpec(name, entity.name, tuple(where), _duration(checker, path, within) if within else None,
                     _duration(checker, path, updated) if updated else None, raw.get("sla"), raw.get("policy"), raw.get("event"), int(raw.get("list", 0)))
