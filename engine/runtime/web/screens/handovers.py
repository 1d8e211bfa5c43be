"""What a handover flow adds to the board of its node field: each column's owner role and SLA,
each card's SLA state (on track, overdue, paused, with its due time), and the month's timeliness
table per node and role (?month=YYYY-MM, default this month in the app's time zone).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from starlette.requests import Request

from engine.analytics.handovers import NodeTimeliness, month_bounds, timeliness
from engine.metamodel.handovers import HandoverSpec
from engine.runtime.automation.clocks import sla_states
from engine.runtime.records.errors import ValidationFailed
from engine.runtime.records.fieldkinds import FieldError
from engine.runtime.web.screens.i18n import translate
from engine.runtime.web.screens.site import Site
from engine.runtime.web.widgets import local_time


@dataclass(frozen=True, slots=True)
class CardClock:
    state: str      # running | breached | paused
    text: str       # "due 12-05 10:00" / "overdue since 12-05 10:00", in the reader's language


@dataclass(frozen=True, slots=True)
class NodeOwner:
    role: str
    target: str     # the node's SLA as written (2bd); "" on the final node


@dataclass(frozen=True, slots=True)
class HandoverPanel:
    """The handover's part of a BoardContext."""

    name: str
    label: str
    owners: dict[str, NodeOwner]
    clocks: dict[int, CardClock]
    month: str
    previous_month: str
    next_month: str
    rows: tuple[NodeTimeliness, ...]
    node_labels: dict[str, str]
    role_labels: dict[str, str]


def handover_panel(site: Site, request: Request, handover: HandoverSpec, card_ids: list[int],
                   lang: str) -> HandoverPanel:
    """Owners per column, SLA states per card and the month's timeliness table of one flow."""
    zone = ZoneInfo(site.model.settings.timezone)
    now = site.services.clock.now()
    month = request.query_params.get("month") or local_time(now, site.model.settings.timezone).strftime("%Y-%m")
    try:
        first, following = month_bounds(month)
    except ValueError:
        raise ValidationFailed([FieldError("month", "invalid",
                                           translate(lang, "handover_bad_month", month=month[:20]))]) from None
    start = dt.datetime.combine(first, dt.time(), zone)
    end = dt.datetime.combine(following, dt.time(), zone)
    with site.services.db.read() as connection:
        states = sla_states(connection, site.services.schema, handover.entity, card_ids) if card_ids else {}
        table = timeliness(connection, site.services.schema, handover, start, end)
    roles = {role.name: role.label.text(lang) for role in site.model.roles}
    labels = {node.name: node.label.text(lang) for node in handover.nodes}
    clocks = {}
    for record_id, (state, due, _) in states.items():
        when = local_time(due, site.model.settings.timezone).strftime("%m-%d %H:%M") if due else ""
        key = "handover_overdue" if state == "breached" or (due is not None and due <= now) else (
            "handover_paused" if state == "paused" else "handover_due")
        clocks[record_id] = CardClock("breached" if key == "handover_overdue" else state, translate(lang, key, due=when))
    previous = (first - dt.timedelta(days=1)).strftime("%Y-%m")
    return HandoverPanel(
        handover.name, handover.label.text(lang),
        {node.name: NodeOwner(roles.get(node.role or "", node.role or ""), node.target or "") for node in handover.nodes},
        clocks, first.strftime("%Y-%m"), previous, following.strftime("%Y-%m"),
        tuple(table), labels, roles)
