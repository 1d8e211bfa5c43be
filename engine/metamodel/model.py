"""The immutable metamodel: what a loaded blueprint means, with no YAML or dicts left in it.

One `Metamodel` holds every kind of blueprint document as a tuple of its frozen specs, each
built by the module named for its YAML key (entities.py, roles.py, rules.py, routing.py,
sources.py, calendars.py, channels.py, sla.py, cadences.py, jobs.py, funnels.py, approvals.py). Look-ups are methods
that fail clearly: `model.entity("lead")`, `model.sla("first_call")` name what is known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from engine.metamodel.app import MenuGroup, Settings
from engine.metamodel.alerts import AlertSpec
from engine.metamodel.approvals import ApprovalSpec
from engine.metamodel.scores import ScoreSpec
from engine.metamodel.surveys import SurveySpec
from engine.metamodel.suggestions import SuggestionSpec
from engine.metamodel.cadences import CadenceSpec
from engine.metamodel.calendars import CalendarDecl
from engine.metamodel.channels import ChannelSpec, MessageTemplateSpec
from engine.metamodel.conversions import ConversionSpec
from engine.metamodel.entities import EntitySpec
from engine.metamodel.errors import BlueprintError
from engine.metamodel.dashboards import DashboardSpec
from engine.metamodel.funnels import FunnelSpec
from engine.metamodel.handovers import HandoverSpec
from engine.metamodel.imports import ImportSpec
from engine.metamodel.jobs import JobSpec
from engine.metamodel.labels import Label
from engine.metamodel.roles import RoleSpec, TeamSpec
from engine.metamodel.routing import RoutingPolicySpec
from engine.metamodel.rules import RuleSpec
from engine.metamodel.sla import SlaSpec
from engine.metamodel.sources import SourceSpec

_Named = TypeVar("_Named", EntitySpec, RoleSpec, RuleSpec, RoutingPolicySpec, SourceSpec, CalendarDecl, ChannelSpec,
                 MessageTemplateSpec, SlaSpec, CadenceSpec, JobSpec, FunnelSpec, ApprovalSpec, DashboardSpec, ScoreSpec,
                 ImportSpec, HandoverSpec, SurveySpec)


def _named(items: tuple[_Named, ...], name: str, what: str) -> _Named:
    for item in items:
        if item.name == name:
            return item
    raise KeyError(f"no {what} '{name}' (known: {', '.join(item.name for item in items) or 'none'})")


@dataclass(frozen=True, slots=True)
class Metamodel:
    """Everything a blueprint says, kind by kind."""

    name: str
    label: Label
    entities: tuple[EntitySpec, ...]
    settings: Settings = Settings()
    warnings: tuple[BlueprintError, ...] = field(default=(), compare=False)
    menu: tuple[MenuGroup, ...] = ()
    roles: tuple[RoleSpec, ...] = ()
    teams: tuple[TeamSpec, ...] = ()  # declared in roles documents: what a team's scope covers beyond its members
    rules: tuple[RuleSpec, ...] = ()
    routing: tuple[RoutingPolicySpec, ...] = ()
    sources: tuple[SourceSpec, ...] = ()          # inbound webhooks
    calendars: tuple[CalendarDecl, ...] = ()
    slas: tuple[SlaSpec, ...] = ()
    channels: tuple[ChannelSpec, ...] = ()
    templates: tuple[MessageTemplateSpec, ...] = ()  # message templates, declared in channels documents
    cadences: tuple[CadenceSpec, ...] = ()
    jobs: tuple[JobSpec, ...] = ()
    funnels: tuple[FunnelSpec, ...] = ()
    approvals: tuple[ApprovalSpec, ...] = ()
    handovers: tuple[HandoverSpec, ...] = ()      # flows between departments (handovers.py)
    conversions: tuple[ConversionSpec, ...] = ()  # a record becoming several (engine/metamodel/conversions.py)
    dashboards: tuple[DashboardSpec, ...] = ()
    alerts: tuple[AlertSpec, ...] = ()            # windowed aggregate conditions (alerts.py)
    scores: tuple[ScoreSpec, ...] = ()            # computed scores such as account health (scores.py)
    suggestions: tuple[SuggestionSpec, ...] = ()  # e.g. knowledge-base solutions on a ticket (suggestions.py)
    imports: tuple[ImportSpec, ...] = ()        # spreadsheet column mappings (imports.py)
    surveys: tuple[SurveySpec, ...] = ()        # satisfaction surveys answered through a signed link (surveys.py)

    # -- entities ----------------------------------------------------------------------------
    def entity(self, name: str) -> EntitySpec:
        return _named(self.entities, name, "entity")

    def has_entity(self, name: str) -> bool:
        return any(spec.name == name for spec in self.entities)

    def entity_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.entities)

    # -- roles ---------------------------------------------------------------------------------
    def role(self, name: str) -> RoleSpec:
        return _named(self.roles, name, "role")

    def has_role(self, name: str) -> bool:
        return any(spec.name == name for spec in self.roles)

    def team(self, name: str | None) -> TeamSpec | None:
        return next((spec for spec in self.teams if spec.name == name), None)

    # -- automation ------------------------------------------------------------------------------
    def rules_for(self, entity: str) -> tuple[RuleSpec, ...]:
        """The entity's rules in the order they run: priority (smaller first), then as written."""
        rules = [rule for rule in self.rules if rule.entity == entity]
        return tuple(sorted(rules, key=lambda rule: (rule.priority, rule.position)))

    def policy(self, name: str) -> RoutingPolicySpec:
        return _named(self.routing, name, "routing policy")

    def policies_for(self, entity: str) -> tuple[RoutingPolicySpec, ...]:
        """The entity's routing policies in the order they are tried: priority, then as written."""
        policies = [policy for policy in self.routing if policy.entity == entity]
        return tuple(sorted(policies, key=lambda policy: (policy.priority, policy.position)))

    def source(self, name: str) -> SourceSpec:
        return _named(self.sources, name, "source")

    def has_source(self, name: str) -> bool:
        return any(spec.name == name for spec in self.sources)

    # -- time and notifications -----------------------------------------------------------------------
    def calendar(self, name: str) -> CalendarDecl:
        return _named(self.calendars, name, "calendar")

    def sla(self, name: str) -> SlaSpec:
        return _named(self.slas, name, "SLA")

    def cadence(self, name: str) -> CadenceSpec:
        return _named(self.cadences, name, "cadence")

    def channel(self, name: str) -> ChannelSpec:
        return _named(self.channels, name, "channel")

    def has_channel(self, name: str) -> bool:
        return any(spec.name == name for spec in self.channels)

    def template(self, name: str) -> MessageTemplateSpec:
        return _named(self.templates, name, "message template")

    def has_template(self, name: str) -> bool:
        return any(spec.name == name for spec in self.templates)

    def alerts_for(self, entity: str) -> tuple[AlertSpec, ...]:
        return tuple(spec for spec in self.alerts if spec.entity == entity)

    def score(self, name: str) -> ScoreSpec:
        return _named(self.scores, name, "score")

    def survey(self, name: str) -> SurveySpec:
        return _named(self.surveys, name, "survey")

    def job(self, name: str) -> JobSpec:
        return _named(self.jobs, name, "job")

    # -- funnels and approvals --------------------------------------------------------------------
    def funnel(self, name: str) -> FunnelSpec:
        return _named(self.funnels, name, "funnel")

    def funnel_for(self, entity: str, field: str | None = None) -> FunnelSpec | None:
        """The funnel of the entity's stage field (or of `field`), if it has one."""
        return next((spec for spec in self.funnels if spec.entity == entity and (field is None or spec.field == field)),
                    None)

    def handover(self, name: str) -> HandoverSpec:
        return _named(self.handovers, name, "handover")

    def handover_for(self, entity: str, field: str | None = None) -> HandoverSpec | None:
        """The handover flow held in the entity's node field (or in `field`), if it has one."""
        return next((spec for spec in self.handovers if spec.entity == entity and (field is None or spec.field == field)),
                    None)

    def dashboard(self, name: str) -> DashboardSpec:
        return _named(self.dashboards, name, "dashboard")

    def home_dashboard(self, role: str | None) -> DashboardSpec | None:
        """The dashboard that is the role's first page after sign-in, if the blueprint names one."""
        return next((spec for spec in self.dashboards if role is not None and role in spec.home), None)

    def approval(self, name: str) -> ApprovalSpec:
        return _named(self.approvals, name, "approval")

    def has_approval(self, name: str) -> bool:
        return any(spec.name == name for spec in self.approvals)

    def conversion_for(self, entity: str) -> ConversionSpec | None:
        return next((spec for spec in self.conversions if spec.entity == entity), None)

    def approvals_for(self, entity: str) -> tuple[ApprovalSpec, ...]:
        return tuple(spec for spec in self.approvals if spec.entity == entity)

    # -- import mappings -----------------------------------------------------------------------
    def import_mapping(self, name: str) -> ImportSpec:
        return _named(self.imports, name, "import mapping")

    def imports_for(self, entity: str) -> tuple[ImportSpec, ...]:
        return tuple(spec for spec in self.imports if spec.entity == entity)
