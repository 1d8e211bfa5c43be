"""Routing strategies, decided without a database: counts per rep are what each strategy
promises, reps on leave, disabled or at their cap are skipped with the reason in the trail,
and the stored cursor keeps round robin and weights fair across a restart."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine.metamodel.routing import RoutingPolicySpec
from engine.rules import Evaluator, FakeClock
from engine.rules.routing import (CursorState, Rep, RepStatus, RoutingDecision, RoutingOutcome, choose_pool,
                                  route_record, select_policy)
from tests.support.automation_blueprint import load_automation


class CursorTable:
    """Stands in for the runtime's cursor rows: one JSON text per key, as a database stores it."""

    def __init__(self, rows: dict[str, str] | None = None) -> None:
        self.rows = dict(rows or {})

    def load(self, key: str) -> CursorState:
        return CursorState.from_json(json.loads(self.rows[key])) if key in self.rows else CursorState()

    def save(self, key: str, state: CursorState) -> None:
        self.rows[key] = json.dumps(state.as_json())


def route_all(policy: RoutingPolicySpec, leads: list[dict[str, Any]], reps: dict[str, Rep],
              table: CursorTable) -> list[RoutingDecision]:
    """What the runtime does per lead: load the pool's cursor, decide, store cursor and owner."""
    decisions = []
    for lead in leads:
        cursor = table.load(choose_pool(policy, lead).cursor_key)
        decision = route_record(policy, lead, list(reps.values()), cursor)
        table.save(decision.cursor_key, decision.cursor)
        if decision.username is not None:
            rep = reps[decision.username]
            reps[decision.username] = replace(rep, open_count=rep.open_count + 1)
        decisions.append(decision)
    return decisions


def owners(decisions: list[RoutingDecision]) -> Counter[str | None]:
    return Counter(decision.username for decision in decisions)


def team(*names: str, **states: RepStatus) -> dict[str, Rep]:
    return {name: Rep(name, states.get(name, RepStatus.ACTIVE), team="east", role="sales_rep") for name in names}


def policy(tmp_path: Path, yaml: str, name: str = "p") -> RoutingPolicySpec:
    return load_automation(tmp_path, yaml).policy(name)


LEADS = [{"name": f"lead {n}", "region": "east"} for n in range(12)]


def test_round_robin_gives_each_rep_the_same_number_in_turn(tmp_path: Path) -> None:
    rr = policy(tmp_path, """
        routing:
          p: {entity: lead, strategy: round_robin, pool: [wang, li, zhao], fallback_queue: unassigned}
    """)
    decisions = route_all(rr, LEADS[:9], team("wang", "li", "zhao"), CursorTable())
    assert owners(decisions) == {"wang": 3, "li": 3, "zhao": 3}
    assert [d.username for d in decisions[:4]] == ["wang", "li", "zhao", "wang"]


def test_reps_on_leave_or_disabled_are_skipped_and_the_trail_says_why(tmp_path: Path) -> None:
    rr = policy(tmp_path, """
        routing:
          p: {entity: lead, strategy: round_robin, pool: [wang, li, zhao, sun], fallback_queue: unassigned}
    """)
    reps = team("wang", "li", "zhao", "sun", li=RepStatus.ON_LEAVE, zhao=RepStatus.DISABLED)
    decisions = route_all(rr, LEADS[:6], reps, CursorTable())
    assert owners(decisions) == {"wang": 3, "sun": 3}
    trail = {(skip.username, skip.reason) for skip in decisions[0].skipped}
    assert trail == {("li", "on leave"), ("zhao", "disabled")}


def test_a_restart_in_the_middle_of_round_robin_continues_where_it_stopped(tmp_path: Path) -> None:
    yaml = """
        routing:
          p: {entity: lead, strategy: round_robin, pool: [wang, li, zhao], fallback_queue: unassigned}
    """
    reps = team("wang", "li", "zhao")
    before = CursorTable()
    first = route_all(policy(tmp_path, yaml), LEADS[:4], reps, before)
    stored = json.loads(json.dumps(before.rows))  # only what a database row keeps survives the restart
    after_restart = route_all(policy(tmp_path, yaml, "p"), LEADS[4:9], reps, CursorTable(stored))
    assert first[-1].username == "wang" and after_restart[0].username == "li"
    assert owners(first + after_restart) == {"wang": 3, "li": 3, "zhao": 3}


def test_two_processes_sharing_the_cursor_rows_stay_fair(tmp_path: Path) -> None:
    yaml = """
        routing:
          p: {entity: lead, strategy: round_robin, pool: [wang, li, zhao], fallback_queue: unassigned}
    """
    one, two = policy(tmp_path, yaml), policy(tmp_path / "other", yaml)
    shared, reps = CursorTable(), team("wang", "li", "zhao")
    decisions = []
    for index, lead in enumerate(LEADS):  # the two processes take turns, each with its own loaded blueprint
        decisions += route_all(one if index % 2 else two, [lead], reps, shared)
    assert owners(decisions) == {"wang": 4, "li": 4, "zhao": 4}


def test_caps_skip_full_reps_and_the_overflow_waits_in_the_fallback_queue_with_an_alert(tmp_path: Path) -> None:
    capped = policy(tmp_path, """
        routing:
          p:
            entity: lead
            strategy: round_robin
            pool: [wang, li, zhao]
            cap: 2
            fallback_queue: unassigned
            alert: sales_managers
    """)
    reps = team("wang", "li", "zhao")
    reps["wang"] = replace(reps["wang"], open_count=2)
    reps["zhao"] = replace(reps["zhao"], open_count=1)
    decisions = route_all(capped, LEADS[:4], reps, CursorTable())
    assert owners(decisions) == {"li": 2, "zhao": 1, None: 1}
    overflow = decisions[-1]
    assert overflow.outcome is RoutingOutcome.QUEUED and overflow.queue == "unassigned"
    assert overflow.alert == "sales_managers"
    assert "policy 'p'" in overflow.alert_text and "wang at cap (2/2 open)" in overflow.alert_text


def test_a_personal_cap_overrides_the_policy_cap(tmp_path: Path) -> None:
    capped = policy(tmp_path, """
        routing:
          p: {entity: lead, strategy: round_robin, pool: [wang, li], cap: 10, caps: {wang: 1},
              fallback_queue: unassigned}
    """)
    decisions = route_all(capped, LEADS[:5], team("wang", "li"), CursorTable())
    assert owners(decisions) == {"wang": 1, "li": 4}


def test_least_loaded_fills_the_emptiest_rep_first(tmp_path: Path) -> None:
    least = policy(tmp_path, """
        routing:
          p: {entity: lead, strategy: least_loaded, pool: [wang, li, zhao], fallback_queue: unassigned,
              open_when: "status in ['new', 'contacted']"}
    """)
    reps = team("wang", "li", "zhao")
    reps = {name: replace(rep, open_count={"wang": 5, "li": 2, "zhao": 0}[name]) for name, rep in reps.items()}
    decisions = route_all(least, LEADS[:9], reps, CursorTable())
    assert "wang" not in [d.username for d in decisions[:8]], "wang is the busiest until the others catch up"
    loads = [rep.open_count for rep in reps.values()]
    assert max(loads) - min(loads) <= 1 and sum(loads) == 7 + 9


def test_weighted_gives_shares_in_proportion_even_across_a_restart(tmp_path: Path) -> None:
    yaml = """
        routing:
          p: {entity: lead, strategy: weighted, pool: {members: {wang: 3, li: 1}}, fallback_queue: unassigned}
    """
    reps = team("wang", "li")
    table = CursorTable()
    first = route_all(policy(tmp_path, yaml), LEADS[:3], reps, table)
    rest = route_all(policy(tmp_path, yaml), LEADS[3:8], reps, CursorTable(json.loads(json.dumps(table.rows))))
    assert owners(first + rest) == {"wang": 6, "li": 2}
    sequence = [d.username for d in first + rest]
    assert "li" in sequence[:4] and "li" in sequence[4:], "smooth: li's turns are spread out, not bunched"


def test_territory_routes_by_region_with_round_robin_inside_the_team(tmp_path: Path) -> None:
    territory = policy(tmp_path, """
        routing:
          p:
            entity: lead
            strategy: territory
            field: region
            pools: {east: {team: east, role: sales_rep}, "*": [chen]}
            fallback_queue: unassigned
    """)
    reps = {**team("wang", "li"), "manager": Rep("manager", team="east", role="sales_manager"),
            "chen": Rep("chen", team="service")}
    leads = [{"region": "east"}] * 4 + [{"region": "south"}] * 2
    decisions = route_all(territory, leads, reps, CursorTable())
    assert owners(decisions) == {"wang": 2, "li": 2, "chen": 2}, "the manager is in team east but not a sales rep"
    assert "region = 'east'" in decisions[0].pool_reason and "region = 'south'" in decisions[-1].pool_reason


def test_industry_pool_without_a_pool_for_the_value_goes_to_the_backup(tmp_path: Path) -> None:
    industry = policy(tmp_path, """
        routing:
          p:
            entity: lead
            strategy: industry_pool
            field: industry
            pools: {medical_devices: [li], manufacturing: [wang, li]}
            within: least_loaded
            backup: manager
    """)
    reps = {**team("wang", "li"), "manager": Rep("manager")}
    medical, other = route_all(industry, [{"industry": "medical_devices"}, {"industry": "other"}], reps,
                               CursorTable())
    assert medical.username == "li" and medical.outcome is RoutingOutcome.ASSIGNED
    assert other.outcome is RoutingOutcome.BACKUP and other.username == "manager"
    assert "no pool serves this record" in other.reason and "industry = 'other'" in other.reason


def test_when_the_pool_and_the_backup_are_away_the_record_is_queued_and_the_alert_names_policy_and_pool(
        tmp_path: Path) -> None:
    away = policy(tmp_path, """
        routing:
          p:
            entity: lead
            strategy: territory
            field: region
            pools: {east: [wang, li, ghost]}
            backup: manager
            fallback_queue: unassigned
            alert: sales_managers
    """)
    reps = {**team("wang", "li", wang=RepStatus.ON_LEAVE, li=RepStatus.ON_LEAVE),
            "manager": Rep("manager", RepStatus.ON_LEAVE)}
    decision, = route_all(away, [{"region": "east"}], reps, CursorTable())
    assert decision.outcome is RoutingOutcome.QUEUED and decision.username is None
    assert {skip.username: skip.reason for skip in decision.skipped} == {
        "ghost": "no such active user", "wang": "on leave", "li": "on leave", "manager": "backup rep, on leave"}
    assert "pool 'east' of policy 'p'" in decision.alert_text and "queue 'unassigned'" in decision.alert_text


def test_automatic_assign_uses_the_first_policy_whose_match_holds(tmp_path: Path) -> None:
    model = load_automation(tmp_path, """
        routing:
          douyin:
            entity: lead
            strategy: round_robin
            priority: 10
            match: "source == 'douyin'"
            pool: [li]
            fallback_queue: unassigned
          everyone:
            entity: lead
            strategy: round_robin
            priority: 20
            pool: [wang]
            fallback_queue: unassigned
    """)
    evaluator = Evaluator(FakeClock(dt.datetime(2026, 11, 20, 9, tzinfo=dt.timezone.utc)))
    douyin = select_policy(model.routing, "lead", {"source": "douyin"}, evaluator)
    website = select_policy(model.routing, "lead", {"source": "website"}, evaluator)
    assert douyin.policy == "douyin" and website.policy == "everyone"
    assert [(name, result.outcome.value) for name, result in website.checked] == [("douyin", "false"),
                                                                                   ("everyone", "true")]
    assert select_policy(model.routing, "activity", {}, evaluator).policy is None
