"""`crm doctor` and `crm explain`: the usual causes of "leads stuck unassigned", found in one run.

The doctor reads the blueprint (warnings, disabled rules, rules overwriting each other) and
the database (pools whose members are all away, roles that cannot see what they are given,
sources whose deliveries fail, records caught by intake filters or parked in queues) and
says, for each finding, what it is and what to do about it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from engine.metamodel.actions import SetAction
from engine.metamodel.roles import Scope
from engine.rules.routing import Rep, RepStatus, pool_members
from engine.runtime.records.actors import Actor
from engine.runtime.storage.times import naive_utc
from engine.metamodel.model import Metamodel
from engine.rules.time import Clock
from engine.runtime.automation.funnels import Funnels
from engine.runtime.automation.sla import SlaClocks
from engine.runtime.records.service import RecordService
from engine.runtime.storage.database import Database
from engine.runtime.storage.tables import Schema

RECENT = dt.timedelta(days=7)
STUCK = dt.timedelta(minutes=5)  # a delivery still 'received' this long after arrival was never processed


@dataclass(frozen=True, slots=True)
class Finding:
    severity: str  # error, warning, info
    title: str
    detail: str
    hint: str = ""
    badge: str = ""  # the severity as the reader says it ("ERROR", "错误")

    def __str__(self) -> str:
        text = f"[{self.badge or self.severity.upper()}] {self.title}\n    {self.detail}"
        return text + (f"\n    → {self.hint}" if self.hint else "")


# (language, catalogue key, **values) → the text: the screens' catalogue, passed in by the
# composition root (it sits above this package)
Translate = Callable[..., str]


class Doctor:
    """Finds the usual causes of records stuck unassigned, and explains what rules decided about a record."""

    def __init__(self, model: Metamodel, schema: Schema, db: Database, clock: Clock, records: RecordService,
                 translate: Translate, funnels: Funnels | None = None, slas: SlaClocks | None = None) -> None:
        self.translate = translate
        self.model = model
        self.schema = schema
        self.db = db
        self.clock = clock
        self.records = records
        self.funnels = funnels
        self.slas = slas

    def diagnose(self, lang: str = "en") -> list[Finding]:
        """Every finding, most serious first, in `lang` (what the engine adds from elsewhere — a
        blueprint warning, a delivery's error, a calendar's gap — is quoted as it was written)."""
        say = functools.partial(self.translate, lang)
        findings = [*self._blueprint_findings(say, lang), *self._pool_findings(say), *self._delivery_findings(say),
                    *self._record_findings(say), *self._time_findings(say, lang)]
        order = {"error": 0, "warning": 1, "info": 2}
        return sorted((dataclasses.replace(finding, badge=say(f"doctor_severity_{finding.severity}"))
                       for finding in findings), key=lambda finding: order[finding.severity])

    @staticmethod
    def _finding(say: Translate, severity: str, key: str, **values: Any) -> Finding:
        """The finding `key`: its title, detail and hint are the catalogue's doctor_<key>_title, …"""
        return Finding(severity, say(f"doctor_{key}_title", **values), say(f"doctor_{key}_detail", **values),
                       say(f"doctor_{key}_hint", **values))

    def _blueprint_findings(self, say: Translate, lang: str) -> list[Finding]:
        model = self.model
        findings = [Finding("warning", say("doctor_blueprint_warning"), warning.text(lang).splitlines()[0],
                            " ".join(line.strip() for line in warning.text(lang).splitlines()[1:]))
                    for warning in model.warnings]
        for rule in model.rules:
            if not rule.is_enabled:
                findings.append(self._finding(say, "warning", "rule_disabled", rule=rule.name, location=rule.location))
        setters: dict[tuple[str, str, str], list[str]] = {}
        for rule in model.rules:
            if not rule.is_enabled:
                continue
            triggers = {trigger.kind.value for trigger in rule.triggers}
            for action in rule.actions:
                if isinstance(action, SetAction):
                    for field, _ in action.values:
                        for trigger in triggers:
                            setters.setdefault((rule.entity, field, trigger), []).append(rule.name)
        for (entity, field, trigger), names in setters.items():
            if len(set(names)) > 1 and field != "score":
                findings.append(self._finding(say, "info", "rules_overwrite", rules=", ".join(sorted(set(names))),
                                              entity=entity, field=field, trigger=trigger))
        return findings

    def _reps(self) -> list[Rep]:
        users = self.schema.users
        with self.db.read() as connection:
            rows = connection.execute(sa.select(users)).all()
        return [Rep(row.username, RepStatus.DISABLED if not row.is_active else
                    RepStatus.ON_LEAVE if row.on_leave else RepStatus.ACTIVE, row.team, row.role) for row in rows]

    def _pool_findings(self, say: Translate) -> list[Finding]:
        findings = []
        reps = self._reps()
        parked = self.parked_now()
        for policy in self.model.routing:
            for pool in policy.pools:
                members, skipped = pool_members(pool, reps)
                active = [rep for rep in members if rep.status is RepStatus.ACTIVE]
                where = say("doctor_pool_where", policy=policy.name, pool=pool.key, location=policy.location)
                if not active:
                    away = "; ".join([say(f"doctor_rep_{rep.status.value}", user=rep.username) for rep in members] +
                                     [f"{skip.username}: {skip.reason}" for skip in skipped]) or say("doctor_pool_empty")
                    target = say("doctor_to_queue", queue=policy.fallback_queue) if policy.fallback_queue else \
                        say("doctor_to_nobody")
                    findings.append(self._finding(  # an error while records wait for it; else a warning
                        say, "error" if parked.get(policy.name) else "warning", "pool_inactive", where=where,
                        pool=pool.describe(), away=away, target=target))
                for rep in active:
                    role = rep.role
                    scope = self.records.access.scope(Actor(0, rep.username, role, rep.team), policy.entity, "read")
                    if scope is Scope.NONE:
                        findings.append(self._finding(say, "error", "rep_blind", user=rep.username,
                                                      entity=policy.entity, role=role, where=where))
        return findings

    def _delivery_findings(self, say: Translate) -> list[Finding]:
        table = self.schema.deliveries
        since = naive_utc(self.clock.now() - RECENT)
        stuck_since = naive_utc(self.clock.now() - STUCK)
        with self.db.read() as connection:
            rows = connection.execute(sa.select(table.c.source, table.c.status, sa.func.count(),
                                                sa.func.max(table.c.error))
                                      .where(table.c.received_at >= since, table.c.status.in_(["rejected", "failed"]))
                                      .group_by(table.c.source, table.c.status)).all()
            stuck = connection.execute(sa.select(table.c.source, sa.func.count(), sa.func.min(table.c.id))
                                       .where(table.c.status == "received", table.c.received_at <= stuck_since)
                                       .group_by(table.c.source)).all()
        findings = [self._finding(say, "error" if status == "failed" else "warning", "source_failing", source=source,
                                  count=count, status=status, error=error) for source, status, count, error in rows]
        findings += [self._finding(say, "error", "source_stuck", source=source, count=count, first=first)
                     for source, count, first in stuck]
        return findings

    def parked_now(self) -> dict[str, list[tuple[str, int]]]:
        """Records a routing policy parked (queued or left unassigned) in the last 7 days that
        still have no owner now, by policy: (entity, record id) pairs."""
        events = self.schema.events
        since = naive_utc(self.clock.now() - RECENT)
        parked: dict[str, list[tuple[str, int]]] = {}
        with self.db.read() as connection:
            for entity in sorted({policy.entity for policy in self.model.routing}):
                table = self.schema.table(entity)
                if "owner" not in table.c:
                    continue
                rows = connection.execute(
                    sa.select(events.c.record_id, events.c.data)
                    .join(table, table.c.id == events.c.record_id)
                    .where(events.c.entity == entity, events.c.at >= since, table.c.owner.is_(None),
                           events.c.kind.in_(["routing_queued", "routing_unassigned"]))
                    .order_by(events.c.id.desc())).all()  # the latest parking of each record names the policy
                seen: set[int] = set()
                for record_id, data in rows:
                    if record_id not in seen:
                        seen.add(record_id)
                        parked.setdefault(str((data or {}).get("policy")), []).append((entity, int(record_id)))
        return parked

    def _record_findings(self, say: Translate) -> list[Finding]:
        events = self.schema.events
        since = naive_utc(self.clock.now() - RECENT)
        flagged: Counter[str] = Counter()
        with self.db.read() as connection:
            for entity in sorted({source.entity for source in self.model.sources}):
                table = self.schema.table(entity)
                owner = table.c.owner.is_(None) if "owner" in table.c else sa.true()
                for (data,) in connection.execute(sa.select(events.c.data).join(table, table.c.id == events.c.record_id)
                                                  .where(events.c.entity == entity, events.c.at >= since, owner,
                                                         events.c.kind == "intake_flagged")):
                    for flag in (data or {}).get("flags") or []:
                        flagged[str(flag).removesuffix(": not routed")] += 1
        findings = [self._finding(say, "warning", "flagged", count=count, flag=flag)
                    for flag, count in flagged.most_common()]
        for policy, records in sorted(self.parked_now().items(), key=lambda item: -len(item[1])):
            entity = records[0][0]
            findings.append(self._finding(say, "error", "parked", count=len(records), policy=policy, entity=entity,
                                          example=records[0][1]))
        return findings

    def _time_findings(self, say: Translate, lang: str) -> list[Finding]:
        """Holiday calendars the packages do not cover yet, and channels without their secrets."""
        from engine.runtime.automation.clocks import calendar_warnings
        from engine.runtime.background.delivery import channel_warnings
        today = self.clock.now().date()
        return ([self._finding(say, "warning", "calendar_gap", text=text.text(lang))
                 for text in calendar_warnings(self.model, today)]
                + [self._finding(say, "warning", "channel_not_ready", text=text.text(lang))
                   for text in channel_warnings(self.model)]
                + self._mention_findings(say))

    def _mention_findings(self, say: Translate) -> list[Finding]:
        """Feishu and Slack bots can only @mention people by their chat id: name who has none."""
        kinds = sorted({spec.type for spec in self.model.channels if spec.type in ("feishu", "slack")})
        if not kinds:
            return []
        users = self.schema.users
        with self.db.read() as connection:
            rows = connection.execute(sa.select(users.c.username, users.c.im_ids).where(users.c.is_active.is_(True))
                                      .order_by(users.c.username)).all()
        findings = []
        for kind in kinds:
            missing = [row.username for row in rows if not (row.im_ids or {}).get(kind)]
            if missing:
                findings.append(self._finding(say, "info", "no_chat_id", count=len(missing), kind=kind,
                                              users=", ".join(missing[:10]) + (" …" if len(missing) > 10 else "")))
        return findings

    def explain(self, entity: str, record_id: int) -> str:
        """Every stored decision about one record, oldest first — rules, routing, refused stage
        moves — and, for a record in a funnel, where it stands and what each move would lack."""
        table = self.schema.traces
        with self.db.read() as connection:
            rows = connection.execute(sa.select(table.c.text).where(table.c.entity == entity,
                                                                    table.c.record_id == record_id)
                                      .order_by(table.c.id)).all()
        parts = [row.text for row in rows] or [f"No rule has evaluated {entity} {record_id} (no trace stored)."]
        funnel = self._funnel_now(entity, record_id)
        slas = self._slas_now(entity, record_id)
        return "\n\n".join(parts + [text for text in (funnel, slas) if text])

    def _slas_now(self, entity: str, record_id: int) -> str:
        """The record's SLA clocks now, each saying where its figures count from (the start or the
        record's creation), so a breach that came soon after a late assignment explains itself."""
        if self.slas is None:
            return ""
        zone = ZoneInfo(self.model.settings.timezone)

        def local(moment: dt.datetime | None) -> str:  # as the screens and the traces show it
            return moment.astimezone(zone).isoformat(sep=" ", timespec="seconds") if moment else "—"

        lines = []
        for clock in self.slas.summary(entity, record_id, self.clock.now()):
            spec = self.model.sla(clock["policy"])
            lines.append(f"  - {spec.name}: {clock['state']}, {spec.describe_start()}; counting since "
                         f"{local(clock['started_at'])}, due {local(clock['due_at'])} ({clock['percent']}% used)")
        return "SLA clocks:\n" + "\n".join(lines) if lines else ""

    def _funnel_now(self, entity: str, record_id: int) -> str:
        if self.funnels is None or not self.model.has_entity(entity) or not self.funnels.funnels_of(entity):
            return ""
        spec = self.model.entity(entity)
        with self.db.read() as connection:
            record = self.records.find(connection, entity, record_id)
        return self.funnels.explain(spec, record, self.clock.now()) if record is not None else ""

    def decision_lines(self, entity: str, record_id: int, lang: str) -> list[str]:
        """The stored decisions about the record in the reader's words, one line per change, newest
        first: when, what changed it, which rules acted (by their labels) and whom routing chose —
        the record page's 规则与分配说明 and the head of `crm explain` for a Chinese reader."""
        say = functools.partial(self.translate, lang)

        def said(key: str, fallback: str) -> str:  # a change or origin the catalogue has no word for
            try:
                return say(key)
            except KeyError:
                return fallback

        model, zone = self.model, ZoneInfo(self.model.settings.timezone)
        users = self.schema.users
        with self.db.read() as connection:
            people = {row.username: row.display_name or row.username
                      for row in connection.execute(sa.select(users.c.username, users.c.display_name))}
        rules = {rule.name: rule.label.text(lang) for rule in model.rules}
        policies = {policy.name: policy.label.text(lang) for policy in model.routing}
        names = "、" if lang == "zh" else ", "
        lines = []
        for row in reversed(self.explain_rows(entity, record_id)):
            digest = row.decisions or {}
            matched = [rules.get(item["rule"], item["rule"]) for item in digest.get("rules", []) if item.get("matched")]
            failed = [rules.get(item["rule"], item["rule"]) for item in digest.get("rules", []) if item.get("error")]
            parts = [say("decision_rules", rules=names.join(matched)) if matched else say("decision_no_rule")]
            if failed:
                parts.append(say("decision_failed", rules=names.join(failed)))
            for step in digest.get("routing", []):
                policy = policies.get(step.get("policy") or "", step.get("policy") or "")
                person = people.get(step.get("username") or "", step.get("username") or "")
                parts.append(say(f"decision_routing_{step.get('outcome') or 'unassigned'}", policy=policy,
                                 person=person))
            at = row.at.replace(tzinfo=dt.timezone.utc) if row.at.tzinfo is None else row.at
            when = f"{at.astimezone(zone):%Y-%m-%d %H:%M}"
            change = said(f"decision_change_{row.change}", row.change)
            origin = said(f"decision_origin_{row.origin}", row.origin)
            lines.append(f"{when} {change}（{origin}）：" + say("list_separator").join(parts) if lang == "zh" else
                         f"{when} {change} ({origin}): " + "; ".join(parts))
        return lines

    def explain_rows(self, entity: str, record_id: int) -> list[Any]:
        table = self.schema.traces
        with self.db.read() as connection:
            return list(connection.execute(sa.select(table).where(table.c.entity == entity,
                                                                  table.c.record_id == record_id).order_by(table.c.id)))
