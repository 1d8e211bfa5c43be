"""Routing caps that count assignments per day and per week, backups that follow a relation or a
role of a team, and territories keyed by a linked record's name — on SQLite and PostgreSQL, with
the fake clock: what a manager would notice is who owns each lead."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from engine.engine import Engine
from engine.metamodel import BlueprintInvalid
from engine.rules import FakeClock
from engine.rules.routing import CursorState, Rep, RoutingOutcome, route_record
from engine.runtime.ops.users import NewUser
from engine.runtime.records.actors import SYSTEM
from tests.support.blueprints import load, write_blueprint

CST = ZoneInfo("Asia/Shanghai")

FILES = {
    "app.yaml": "app: caps\ninclude: [entities/*.yaml, roles.yaml, routing.yaml, rules.yaml, sla.yaml]\n",
    "entities/region.yaml": """
        entity: region
        fields:
          name: {type: string, required: true}
    """,
    "entities/lead.yaml": """
        entity: lead
        fields:
          name: {type: string, required: true}
          source: {type: choice, options: {website: 官网, expo: 展会}}
          area: {type: link, entity: region}
          status: {type: choice, default: new, options: {new: 新, contacted: 已联系, closed: 关闭}}
    """,
    "roles.yaml": """
        roles:
          sales_rep:
            entities:
              "*": {read: own, create: all, update: own}
          sales_manager:
            entities:
              "*": {read: all, create: all, update: all}
    """,
    "rules.yaml": """
        rules:
          - name: route_new
            entity: lead
            trigger: created
            when: "is_empty(owner)"
            actions:
              - assign: auto
    """,
    "sla.yaml": """
        sla: first_call
        entity: lead
        applies_when: "status == 'new'"
        default_target: 1h
        business_time: false
        starts: assigned
        warn_at: []
        stops:
          - {status_in: [contacted, closed]}
        on_breach:
          - reassign: {policy: expo_desk}
    """,
}

ROUTING = """
    routing:
      web:
        entity: lead
        strategy: round_robin
        match: "source == 'website'"
        priority: 10
        pool: [wang, li]
        cap_per_day: 2
        cap_per_week: 3
        fallback_queue: unassigned_leads
      expo_desk:
        entity: lead
        strategy: territory
        match: "source == 'expo'"
        priority: 20
        field: area
        pools:
          华东: {members: [zhou], backup: {team: east, role: sales_manager}}
          "*": [zhou]
        cap_per_day: 1
        backup: owner.manager
        fallback_queue: unassigned_leads
"""


def _local(year: int, month: int, day: int, hour: int, minute: int) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=CST).astimezone(dt.timezone.utc)


@pytest.fixture
def crm(make_engine: Any, clock: FakeClock) -> Engine:
    clock.set(_local(2026, 11, 23, 9, 0))  # a Monday morning in Shanghai
    runtime: Engine = make_engine({**FILES, "routing.yaml": ROUTING})
    for user in (NewUser("boss", "周经理", "sales_manager", "east"),
                 NewUser("wang", "王磊", "sales_rep", "east", "boss"),
                 NewUser("li", "李娜", "sales_rep", "east", "boss"),
                 NewUser("zhou", "周洁", "sales_rep", "north")):
        runtime.users.add(user)
    return runtime


def owner_of(runtime: Engine, record: dict[str, Any]) -> str | None:
    with runtime.db.read() as connection:
        row = runtime.records.find(connection, "lead", int(record["id"]))
    assert row is not None
    if row["owner"] is None:
        return None
    return str(next(user.username for user in runtime.users.all() if user.id == row["owner"]))


def lead(runtime: Engine, **values: Any) -> dict[str, Any]:
    return runtime.records.create("lead", {"name": "张伟", "source": "website", **values}, actor=SYSTEM).record


def test_a_daily_cap_stops_assigning_to_a_rep_after_n_today_and_resumes_tomorrow(crm: Engine,
                                                                                  clock: FakeClock) -> None:
    monday = [owner_of(crm, lead(crm)) for _ in range(5)]
    assert monday == ["wang", "li", "wang", "li", None]  # two each today, the fifth waits in the queue
    clock.set(_local(2026, 11, 23, 23, 59))
    assert owner_of(crm, lead(crm)) is None  # still Monday in Shanghai
    clock.set(_local(2026, 11, 24, 0, 1))  # Tuesday: the daily count starts again, the weekly one does not
    tuesday = [owner_of(crm, lead(crm)) for _ in range(3)]
    assert tuesday == ["wang", "li", None]  # three this week each: at the weekly cap
    clock.set(_local(2026, 11, 30, 8, 0))  # next Monday: a new week
    assert [owner_of(crm, lead(crm)) for _ in range(2)] == ["wang", "li"]


def test_the_assignment_log_keeps_only_the_weeks_that_still_count(crm: Engine, clock: FakeClock) -> None:
    def logged() -> list[str]:
        log = crm.schema.routing_assignments
        with crm.db.read() as connection:
            return [f"{at:%m-%d}" for at in connection.execute(sa.select(log.c.at).order_by(log.c.at)).scalars()]

    lead(crm), lead(crm)
    clock.set(_local(2026, 11, 27, 10, 0))
    lead(crm)
    assert logged() == ["11-23", "11-23", "11-27"]  # (stored in UTC: 09:00 and 10:00 in Shanghai are the same day)
    clock.set(_local(2026, 11, 30, 8, 0))  # next Monday: last week's rows count for no cap any more
    lead(crm)
    assert logged() == ["11-30"]


def test_a_rep_at_the_daily_cap_is_named_in_the_alert_trail(crm: Engine) -> None:
    for _ in range(4):
        lead(crm)
    queued = lead(crm)
    text = crm.doctor.explain("lead", int(queued["id"]))
    assert "wang — at daily cap (2/2 today)" in text and "li — at daily cap (2/2 today)" in text


def test_a_breached_lead_whose_pool_is_full_goes_to_the_owners_manager(crm: Engine, clock: FakeClock) -> None:
    north = crm.records.create("region", {"name": "华北"}, actor=SYSTEM).record
    first = lead(crm, source="expo", area=north["id"])
    assert owner_of(crm, first) == "zhou"  # the '*' pool: 华北 has no pool of its own
    handed = lead(crm, source="expo", area=north["id"], owner=crm.users.user_id("wang"))
    assert owner_of(crm, handed) == "wang"
    clock.advance(minutes=61)
    crm.worker(role="timers").tick()
    assert owner_of(crm, handed) == "boss"  # zhou is at the daily cap: the backup owner.manager takes it
    assert owner_of(crm, first) == "zhou"
    explained = crm.doctor.explain("lead", int(handed["id"]))
    assert "zhou — at daily cap (1/1 today)" in explained
    assert "backup rep boss (owner.manager) takes it" in explained


def test_a_territory_keyed_by_a_linked_regions_name_uses_that_pools_own_backup(crm: Engine) -> None:
    east = crm.records.create("region", {"name": "华东"}, actor=SYSTEM).record
    assert owner_of(crm, lead(crm, source="expo", area=east["id"])) == "zhou"  # pool '华东' by the region's name
    second = lead(crm, source="expo", area=east["id"])
    assert owner_of(crm, second) == "boss"  # zhou at cap; the pool's backup: the east team's sales_manager
    assert "pool '华东'" in crm.doctor.explain("lead", int(second["id"]))


@pytest.mark.parametrize("before, after, message", [
    ("backup: owner.manager", "backup: ownr.manager", "routing.yaml:21:13"),
    ("backup: owner.manager", "backup: owner.manger", "did you mean 'manager'?"),
    ("role: sales_manager}", "role: sales_manger}", "routing.yaml:18:"),
])
def test_a_misspelt_backup_is_refused_at_its_line_with_a_suggestion(tmp_path: Path, before: str, after: str,
                                                                    message: str) -> None:
    folder = write_blueprint(tmp_path / "bp", {**FILES, "routing.yaml": ROUTING.replace(before, after)})
    with pytest.raises(BlueprintInvalid) as raised:
        load(folder)
    text = str(raised.value)
    assert message in text and "did you mean" in text


def test_a_misspelt_cap_option_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    routing = ROUTING.replace("cap_per_day: 2", "cap_per_dya: 2")
    folder = write_blueprint(tmp_path / "bp", {**FILES, "routing.yaml": routing})
    with pytest.raises(BlueprintInvalid) as raised:
        load(folder)
    assert "routing.yaml:8" in str(raised.value) and "cap_per_day" in str(raised.value)


def test_an_owner_without_a_manager_leaves_the_record_in_the_queue_naming_why(tmp_path: Path) -> None:
    model = load(write_blueprint(tmp_path / "bp", {**FILES, "routing.yaml": ROUTING}))
    policy = model.policy("expo_desk")
    reps = [Rep("zhou", assigned_today=1, id=4), Rep("wang", id=2, manager=None)]
    decision = route_record(policy, {"area": "华北", "owner": 2}, reps, CursorState())
    assert decision.outcome is RoutingOutcome.QUEUED and decision.queue == "unassigned_leads"
    assert "zhou at daily cap (1/1 today)" in decision.alert_text
    assert "owner.manager backup rep, the owner has no manager" in decision.alert_text
