"""Rule decisions in bulk, without a database: given a record before and after a change,
which rules fire, what their conditions saw, what they would do — and a trace that says so."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine.channels.templates import render_message
from engine.metamodel import Metamodel
from engine.rules import Evaluator, FakeClock
from engine.rules.actions import AddTags, Assign, CreateRelated, Notify, SetField, Transition
from engine.rules.routing import CursorState, Rep, RoutingOutcome, route_record, select_policy
from engine.rules.rules import (Change, Origin, Outcome, RuleApplication, TriggerEvent, evaluate_rules, find_rule_loop,
                                planned_changes)
from engine.rules.trace import RoutingStep, Trace, render_trace, trace_from_json, trace_to_json
from tests.support.automation_blueprint import load_automation

NOW = dt.datetime(2026, 11, 20, 1, 0, tzinfo=dt.timezone.utc)  # 09:00 in Shanghai
CREATED = TriggerEvent(Change.CREATED, "lead", 7)
UPDATED = TriggerEvent(Change.UPDATED, "lead", 7)

RULES = """
    rules:
      - name: score_lead
        entity: lead
        priority: 10
        trigger: {event: field_changed, fields: [registered_capital, hiring_recently, has_tenders]}
        actions:
          - set: {score: "=(40 if number(registered_capital) > 5000000 else 0) + (30 if hiring_recently else 0)
                          + (30 if has_tenders else 0)"}
      - name: grade_by_score
        entity: lead
        priority: 20
        trigger: {event: field_changed, fields: [score]}
        when: "grade != 'S'"
        actions:
          - set: {grade: "='A' if score >= 60 else ('B' if score >= 30 else 'C')"}
      - name: grade_s
        entity: lead
        priority: 30
        trigger: {event: field_changed, fields: [registered_capital, hiring_recently, has_tenders]}
        when: "number(registered_capital) > 5000000 and hiring_recently and has_tenders and grade != 'S'"
        actions:
          - set: {grade: S}
          - add_tags: [tender]
          - create_related: {entity: activity, link: lead,
                             values: {subject: "='First call: ' + company", due_at: "=now() + hours(2)"}}
          - notify: {channel: wecom_sales, to: [owner, manager],
                     text: "S lead {{ record.company }} ({{ record.name }}): call within 2 hours {{ '{today}' }}"}
      - name: qualified
        entity: lead
        trigger: {event: stage_changed, field: status, from: contacted, to: qualified}
        actions: [{add_tags: [vip]}]
      - name: old_rule
        entity: lead
        enabled: false
        trigger: created
        actions: [{set: {grade: C}}]
"""


@pytest.fixture
def model(tmp_path: Path) -> Metamodel:
    return load_automation(tmp_path, RULES)


@pytest.fixture
def evaluator() -> Evaluator:
    return Evaluator(FakeClock(NOW))


def lead(**values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": 7, "name": "周立新", "company": "恒锐精密", "source": "website", "region": "east",
                            "registered_capital": None, "hiring_recently": False, "has_tenders": False, "score": 0,
                            "grade": None, "tags": [], "status": "new", "owner": None}
    return {**base, **values}


def by_rule(decisions: tuple[Any, ...]) -> dict[str, Any]:
    return {decision.rule: decision for decision in decisions}


def test_the_s_grade_rule_grades_tags_schedules_the_first_call_and_notifies(model: Metamodel,
                                                                             evaluator: Evaluator) -> None:
    after = lead(registered_capital=Decimal("8000000"), hiring_recently=True, has_tenders=True)
    decisions = by_rule(evaluate_rules(model.rules, CREATED, None, after, evaluator, NOW))

    grade_s = decisions["grade_s"]
    assert grade_s.matched and grade_s.condition.outcome is Outcome.TRUE
    assert dict(grade_s.condition.values) == {"registered_capital": Decimal("8000000"), "hiring_recently": True,
                                              "has_tenders": True, "grade": "A"}, "it saw the grade set before it"
    assert grade_s.actions[:2] == (SetField("grade", "S"), AddTags("tags", ("tender",)))
    follow_up = grade_s.actions[2]
    assert isinstance(follow_up, CreateRelated) and follow_up.entity == "activity" and follow_up.link_field == "lead"
    assert dict(follow_up.values)["due_at"] == NOW + dt.timedelta(hours=2)
    message = grade_s.actions[3]
    assert isinstance(message, Notify) and message.to == ("owner", "manager")
    assert render_message(message.text or "", {"record": after}) == "S lead 恒锐精密 (周立新): call within 2 hours {today}"
    assert planned_changes(tuple(decisions.values()), after) == {"score": 100, "grade": "S", "tags": ["tender"]}


def test_a_lead_below_the_bar_gets_a_grade_by_score_and_the_s_rule_says_why_not(model: Metamodel,
                                                                               evaluator: Evaluator) -> None:
    after = lead(registered_capital=Decimal("3000000"), hiring_recently=True, has_tenders=True)
    decisions = by_rule(evaluate_rules(model.rules, CREATED, None, after, evaluator, NOW))

    assert decisions["score_lead"].actions == (SetField("score", 60),)
    assert decisions["grade_by_score"].actions == (SetField("grade", "A"),), "reads the score set by score_lead"
    grade_s = decisions["grade_s"]
    assert not grade_s.matched and grade_s.condition.outcome is Outcome.FALSE
    assert dict(grade_s.condition.values)["registered_capital"] == Decimal("3000000")
    assert grade_s.why_none == "its condition is false" and grade_s.actions == ()


def test_field_changed_fires_only_when_a_watched_field_changes(model: Metamodel, evaluator: Evaluator) -> None:
    before = lead(score=30, grade="B")
    after = lead(score=30, grade="B", name="周立新 (new phone)")
    decisions = by_rule(evaluate_rules(model.rules, UPDATED, before, after, evaluator, NOW))
    assert not any(decision.matched for decision in decisions.values())
    assert decisions["grade_s"].trigger.reason == "registered_capital, hiring_recently, has_tenders did not change"
    assert decisions["old_rule"].why_none == "the rule is disabled (enabled: false)"


def test_stage_changed_respects_from_and_to(model: Metamodel, evaluator: Evaluator) -> None:
    def fired(old: str, new: str) -> bool:
        decisions = by_rule(evaluate_rules(model.rules, UPDATED, lead(status=old), lead(status=new), evaluator, NOW))
        return bool(decisions["qualified"].matched)

    assert fired("contacted", "qualified")
    assert not fired("new", "qualified")
    assert not fired("contacted", "converted")


def test_triggers_by_origin_assignment_and_import(tmp_path: Path, evaluator: Evaluator) -> None:
    model = load_automation(tmp_path, """
        sources:
          wecom_contact: {entity: lead, auth: {type: token, header: X-Token, secret_env: T}, event_id: id,
                          mapping: {name: name}}
        ---
        rules:
          - {name: from_wecom, entity: lead, trigger: {event: webhook_received, source: wecom_contact},
             actions: [{add_tags: [vip]}]}
          - {name: on_assign, entity: lead, trigger: assigned, actions: [{transition: contacted}]}
          - {name: on_import, entity: lead, trigger: import_row, actions: [{set: {grade: C}}]}
    """)
    webhook = TriggerEvent(Change.CREATED, "lead", 1, Origin.WEBHOOK, "wecom_contact")
    imported = TriggerEvent(Change.CREATED, "lead", 2, Origin.IMPORT)

    def matched(event: TriggerEvent, before: dict[str, Any] | None, after: dict[str, Any]) -> set[str]:
        return {d.rule for d in evaluate_rules(model.rules, event, before, after, evaluator, NOW) if d.matched}

    assert matched(webhook, None, lead()) == {"from_wecom"}
    assert matched(imported, None, lead()) == {"on_import"}
    assert matched(UPDATED, lead(owner=None), lead(owner=3)) == {"on_assign"}
    on_assign = by_rule(evaluate_rules(model.rules, UPDATED, lead(owner=None), lead(owner=3), evaluator, NOW))
    assert on_assign["on_assign"].actions == (Transition("status", "contacted"),)


def test_a_condition_that_cannot_be_evaluated_is_an_error_with_a_message_not_a_silent_false(
        tmp_path: Path, evaluator: Evaluator) -> None:
    model = load_automation(tmp_path, """
        rules:
          - {name: big_company, entity: lead, trigger: created, when: "registered_capital > 5000000",
             actions: [{set: {grade: A}}]}
    """)
    decision, = evaluate_rules(model.rules, CREATED, None, lead(registered_capital=None), evaluator, NOW)
    assert not decision.matched and decision.condition.outcome is Outcome.ERROR
    assert "registered_capital > 5000000" in decision.error
    assert "ERROR" in render_trace(Trace("lead", 7, CREATED, NOW, (decision,)))


def test_a_rule_re_triggering_itself_is_stopped_with_a_message_naming_rule_and_record() -> None:
    chain = [RuleApplication("bump_score", "lead", 7), RuleApplication("regrade", "lead", 7)] * 3
    loop = find_rule_loop(chain, max_repeats=2)
    assert loop is not None and loop.rule == "bump_score" and loop.count == 3
    assert "rule 'bump_score' re-triggered itself on lead 7 3 times" in loop.message
    assert find_rule_loop(chain[:4], max_repeats=2) is None
    assert find_rule_loop([RuleApplication("r", "lead", n) for n in range(60)], max_length=50) is not None


def test_trace_explains_each_rule_and_survives_storage(model: Metamodel, evaluator: Evaluator) -> None:
    after = lead(registered_capital=Decimal("3000000"), hiring_recently=True, has_tenders=True)
    decisions = evaluate_rules(model.rules, CREATED, None, after, evaluator, NOW)
    trace = Trace("lead", 7, CREATED, NOW, decisions)
    text = render_trace(trace)

    assert "rule 'grade_s': not matched" in text
    assert "condition: number(registered_capital) > 5000000 and hiring_recently" in text
    assert "registered_capital = 3000000" in text and "result:    false" in text
    assert "no action: its condition is false" in text
    assert "rule 'grade_by_score': MATCHED" in text and "action:    set grade = 'A'" in text
    assert "rule 'old_rule': not matched" in text and "disabled" in text
    stored = json.loads(json.dumps(trace_to_json(trace)))
    assert render_trace(trace_from_json(stored)) == text


def test_the_outage_story_a_pattern_matching_the_website_routes_to_an_empty_pool_and_the_trace_names_both(
        tmp_path: Path, evaluator: Evaluator) -> None:
    """PRODUCT.md point 13: a new Douyin rule's pattern also matched the website source and sent
    every website lead to an empty pool. Here the blueprint warns, nobody is assigned silently,
    and the trace names the rule, its condition's value and the empty pool."""
    model = load_automation(tmp_path, """
        routing:
          douyin_special_pool:
            entity: lead
            strategy: round_robin
            pool: []
            fallback_queue: unassigned_leads
            alert: sales_managers
          by_region:
            entity: lead
            strategy: round_robin
            priority: 50
            pool: [wang, li]
            fallback_queue: unassigned_leads
        ---
        rules:
          - name: douyin_leads_to_special_pool
            entity: lead
            priority: 10
            trigger: created
            when: "matches(source, 'douyin|web')"
            actions: [{assign: douyin_special_pool}]
          - name: assign_everything_else
            entity: lead
            priority: 20
            trigger: created
            when: "not matches(source, 'douyin|web')"
            actions: [{assign: by_region}]
    """)
    assert any("douyin_special_pool" in str(w) and "no members" in str(w) for w in model.warnings)

    website_lead = lead(source="website")
    decisions = evaluate_rules(model.rules, CREATED, None, website_lead, evaluator, NOW)
    asked = [(d.rule, action) for d in decisions if d.matched for action in d.actions if isinstance(action, Assign)]
    assert asked == [("douyin_leads_to_special_pool", Assign("douyin_special_pool"))]
    rule, action = asked[0]
    policy = model.policy(action.policy or "")
    routed = route_record(policy, website_lead, [Rep("wang"), Rep("li")], CursorState())
    assert routed.outcome is RoutingOutcome.QUEUED and routed.queue == "unassigned_leads"
    assert routed.alert == "sales_managers" and "douyin_special_pool" in routed.alert_text

    text = render_trace(Trace("lead", 7, TriggerEvent(Change.CREATED, "lead", 7, Origin.WEBHOOK, "website_form"),
                              NOW, decisions, (RoutingStep(rule, action.policy, None, routed),)))
    assert "rule 'douyin_leads_to_special_pool': MATCHED" in text
    assert "matches(source, 'douyin|web')" in text and "source = 'website'" in text
    assert "the pool of policy 'douyin_special_pool' has no members" in text
    assert "queue 'unassigned_leads'" in text and "alert:     to 'sales_managers'" in text


def test_automatic_assign_trace_lists_every_policy_tried(tmp_path: Path, evaluator: Evaluator) -> None:
    model = load_automation(tmp_path, """
        routing:
          douyin: {entity: lead, strategy: round_robin, priority: 10, match: "source == 'douyin'", pool: [li],
                   fallback_queue: q}
          everyone: {entity: lead, strategy: round_robin, priority: 20, pool: [wang], fallback_queue: q}
        ---
        rules:
          - {name: assign_new, entity: lead, trigger: created, actions: [{assign: auto}]}
    """)
    decisions = evaluate_rules(model.rules, CREATED, None, lead(), evaluator, NOW)
    assert decisions[0].actions == (Assign(None),)
    selection = select_policy(model.routing, "lead", lead(), evaluator)
    routed = route_record(model.policy(selection.policy or ""), lead(), [Rep("wang")], CursorState())
    text = render_trace(Trace("lead", 7, CREATED, NOW, decisions,
                              (RoutingStep("assign_new", None, selection, routed),)))
    assert "tried 'douyin': match source == 'douyin' → false (source = 'website')" in text
    assert "policy 'everyone' applies" in text and "assigned to wang" in text
