"""Document kinds beyond `app` and `entity`.

Each kind names the key a document starts with, its JSON Schema, and a builder that runs
after all entities are known and returns the Metamodel fields it fills (plus located
errors). A new kind of blueprint document is one more entry in `SECONDARY_KINDS`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from engine.metamodel.automation import ROUTING_SCHEMA, RULES_SCHEMA, SOURCES_SCHEMA
from engine.metamodel.automation_builders import build_routing, build_rules, build_sources
from engine.metamodel.errors import BlueprintError
from engine.metamodel.model import Metamodel
from engine.metamodel.roles import ROLES_SCHEMA, build_roles
from engine.metamodel.source import SourceDocument
from engine.metamodel.timekeeping import CADENCES_SCHEMA, CALENDARS_SCHEMA, CHANNELS_SCHEMA, JOBS_SCHEMA, SLA_SCHEMA
from engine.metamodel.timekeeping_builders import (build_cadences, build_calendars, build_channels, build_jobs,
                                                   build_slas)

Builder = Callable[[list[SourceDocument], Metamodel, Collection[str]], tuple[dict[str, Any], list[BlueprintError]]]


@dataclass(frozen=True, slots=True)
class DocumentKind:
    key: str
    schema: dict[str, Any]
    build: Builder


SECONDARY_KINDS: tuple[DocumentKind, ...] = (
    DocumentKind("roles", ROLES_SCHEMA, build_roles),
    DocumentKind("routing", ROUTING_SCHEMA, build_routing),
    DocumentKind("sources", SOURCES_SCHEMA, build_sources),
    DocumentKind("rules", RULES_SCHEMA, build_rules),
    DocumentKind("calendars", CALENDARS_SCHEMA, build_calendars),
    DocumentKind("channels", CHANNELS_SCHEMA, build_channels),
    DocumentKind("sla", SLA_SCHEMA, build_slas),
    DocumentKind("cadences", CADENCES_SCHEMA, build_cadences),
    DocumentKind("jobs", JOBS_SCHEMA, build_jobs),
)
