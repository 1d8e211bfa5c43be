"""Document kinds beyond `app` and `entity`.

Each kind names the key a document starts with, its JSON Schema, and a builder that runs
after all entities are known and returns the Metamodel with the specs it builds filled in
(plus located errors). A new kind of blueprint document is one more entry in `SECONDARY_KINDS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.metamodel.alerts import ALERTS_SCHEMA, build_alerts
from engine.metamodel.approvals import APPROVAL_SCHEMA, build_approvals
from engine.metamodel.cadences import CADENCES_SCHEMA, build_cadences
from engine.metamodel.calendars import CALENDARS_SCHEMA, build_calendars
from engine.metamodel.channels import CHANNELS_SCHEMA, build_channels
from engine.metamodel.checks import Built
from engine.metamodel.dashboards import DASHBOARDS_SCHEMA, build_dashboards
from engine.metamodel.funnels import FUNNEL_SCHEMA, build_funnels
from engine.metamodel.handovers import HANDOVER_SCHEMA, build_handovers
from engine.metamodel.imports import IMPORTS_SCHEMA, build_imports
from engine.metamodel.jobs import JOBS_SCHEMA, build_jobs
from engine.metamodel.model import Metamodel
from engine.metamodel.conversions import CONVERSIONS_SCHEMA, build_conversions
from engine.metamodel.roles import ROLES_SCHEMA, build_roles
from engine.metamodel.routing import ROUTING_SCHEMA, build_routing
from engine.metamodel.scores import SCORES_SCHEMA, build_scores
from engine.metamodel.rules import RULES_SCHEMA, build_rules
from engine.metamodel.sla import SLA_SCHEMA, build_slas
from engine.metamodel.source import SourceDocument
from engine.metamodel.suggestions import SUGGESTIONS_SCHEMA, build_suggestions
from engine.metamodel.surveys import SURVEYS_SCHEMA, build_surveys
from engine.metamodel.sources import SOURCES_SCHEMA, build_sources
from engine.metamodel.vocabulary import Vocabulary

Builder = Callable[[list[SourceDocument], Metamodel, Vocabulary], Built]


@dataclass(frozen=True, slots=True)
class DocumentKind:
    key: str
    schema: dict[str, Any]
    build: Builder


SECONDARY_KINDS: tuple[DocumentKind, ...] = (  # in build order: a kind may refer to the kinds before it
    DocumentKind("roles", ROLES_SCHEMA, build_roles),
    DocumentKind("calendars", CALENDARS_SCHEMA, build_calendars),
    DocumentKind("channels", CHANNELS_SCHEMA, build_channels),   # actions' notify names channels and templates
    DocumentKind("routing", ROUTING_SCHEMA, build_routing),
    DocumentKind("sources", SOURCES_SCHEMA, build_sources),
    DocumentKind("approval", APPROVAL_SCHEMA, build_approvals),  # roles, channels, calendars; rules request them
    DocumentKind("scores", SCORES_SCHEMA, build_scores),        # rules react to health_dropped
    DocumentKind("rules", RULES_SCHEMA, build_rules),
    DocumentKind("sla", SLA_SCHEMA, build_slas),
    DocumentKind("cadences", CADENCES_SCHEMA, build_cadences),
    DocumentKind("funnel", FUNNEL_SCHEMA, build_funnels),       # stage requirements name approvals
    DocumentKind("handover", HANDOVER_SCHEMA, build_handovers),  # a flow is a funnel and SLAs; names sources
    DocumentKind("conversions", CONVERSIONS_SCHEMA, build_conversions),
    DocumentKind("dashboards", DASHBOARDS_SCHEMA, build_dashboards),  # widgets name funnels and roles
    DocumentKind("alerts", ALERTS_SCHEMA, build_alerts),        # on_raised notifies channels
    DocumentKind("suggestions", SUGGESTIONS_SCHEMA, build_suggestions),
    DocumentKind("surveys", SURVEYS_SCHEMA, build_surveys),      # the link's message names a channel and template
    DocumentKind("jobs", JOBS_SCHEMA, build_jobs),              # a job's message links to a dashboard
    DocumentKind("imports", IMPORTS_SCHEMA, build_imports),     # spreadsheet mappings; notify names channels
)
