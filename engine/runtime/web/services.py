"""What the web layer works with, handed over by the composition root (engine/engine.py).

The screens and the JSON API read and write through these and nothing else; the root
builds one `WebServices` and `create_app` receives it, so no web module reaches for a
global or for the engine that made it.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.analytics import Analytics
from engine.metamodel import Metamodel
from engine.rules import Clock
from engine.runtime.automation.approvals import ApprovalDesk
from engine.runtime.automation.cadences import CadenceClocks
from engine.runtime.automation.funnels import Funnels
from engine.runtime.automation.reroute import Rerouter
from engine.runtime.automation.sla import SlaClocks
from engine.runtime.automation.sources import Intake
from engine.runtime.automation.surveys import SurveyDesk
from engine.runtime.ops.doctor import Doctor
from engine.runtime.ops.users import Users
from engine.runtime.records.service import RecordService
from engine.runtime.storage.database import Database
from engine.runtime.storage.tables import Schema


@dataclass(frozen=True, slots=True)
class WebServices:
    model: Metamodel
    schema: Schema
    db: Database
    clock: Clock
    records: RecordService
    users: Users
    intake: Intake
    doctor: Doctor
    slas: SlaClocks
    cadences: CadenceClocks
    funnels: Funnels
    approvals: ApprovalDesk | None = None
    rerouter: Rerouter | None = None  # the list's bulk action "route again by the policies"
    analytics: Analytics | None = None
    base_url: str = ""
    surveys: SurveyDesk | None = None  # the public survey page answers through it
