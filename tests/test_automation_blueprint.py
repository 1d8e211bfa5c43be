"""Rules, routing policies and sources in the blueprint: an analyst's mistakes come back at
their file:line with a hint, and a correct blueprint loads into frozen specs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.metamodel import BlueprintInvalid
from engine.metamodel.actions import AddTagsAction, AssignAction, CreateRelatedAction, SetAction
from engine.metamodel.routing import Strategy
from engine.metamodel.rules import TriggerKind
from engine.metamodel.sources import AuthKind
from tests.support.automation_blueprint import load_automation
from tests.support.blueprints import SHIPPED_CRM, load

GOOD = """
    routing:
      east_team:
        entity: lead
        strategy: territory
        field: region
        pools: {east: {team: east}, "*": [wang, li]}
        backup: manager
        fallback_queue: unassigned
        alert: sales_managers
    ---
    sources:
      website_form:
        entity: lead
        auth: {type: token, header: X-Token, secret_env: WEBSITE_TOKEN}
        event_id: $.submission.id
        mapping:
          name: contact.name
          region: {path: answers.region, map: {华东: east, 华南: south}}
        defaults: {source: website}
        spam_filter: "is_empty(phone)"
    ---
    rules:
      - name: assign_new
        entity: lead
        priority: 90
        trigger: created
        actions: [{assign: east_team}]
      - name: grade_s
        entity: lead
        priority: 10
        trigger: {event: field_changed, fields: [registered_capital, hiring_recently, has_tenders]}
        when: "number(registered_capital) > 5000000 and hiring_recently and has_tenders"
        actions:
          - set: {grade: S, score: "=score + 30"}
          - add_tags: [tender]
          - create_related: {entity: activity, link: lead,
                             values: {subject: "='First call: ' + name", due_at: "=now() + hours(2)"}}
"""


def load_errors(tmp_path: Path, automation: str) -> list[str]:
    with pytest.raises(BlueprintInvalid) as caught:
        load_automation(tmp_path, automation)
    return [str(error) for error in caught.value.errors]


def test_a_correct_blueprint_loads_rules_policies_and_sources(tmp_path: Path) -> None:
    model = load_automation(tmp_path, GOOD)

    assert [rule.name for rule in model.rules_for("lead")] == ["grade_s", "assign_new"], "smaller priority first"
    grade_s = model.rules_for("lead")[0]
    assert grade_s.triggers[0].kind is TriggerKind.FIELD_CHANGED
    assert [type(action) for action in grade_s.actions] == [SetAction, AddTagsAction, CreateRelatedAction]
    assert grade_s.when is not None and grade_s.when.names == {"registered_capital", "hiring_recently",
                                                                "has_tenders"}
    assign = model.rules_for("lead")[1].actions[0]
    assert isinstance(assign, AssignAction) and assign.policy == "east_team"
    policy = model.policy("east_team")
    assert policy.strategy is Strategy.TERRITORY and policy.within is Strategy.ROUND_ROBIN
    assert [pool.key for pool in policy.pools] == ["east", "*"]
    assert "converted" in policy.open_when.source and "disqualified" in policy.open_when.source
    source = model.source("website_form")
    assert source.auth.kind is AuthKind.TOKEN
    payload = {"submission": {"id": "s-1"}, "contact": {"name": "王芳"}, "answers": {"region": "华南"}}
    assert source.event_key(payload) == "s-1"
    assert source.map_payload(payload) == {"source": "website", "name": "王芳", "region": "south"}


def test_unknown_field_in_a_rule_is_reported_at_its_line_with_a_suggestion(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, """
        rules:
          - name: grade_s
            entity: lead
            trigger: created
            when: "number(registerd_capital) > 5000000"
            actions:
              - set: {grde: S}
    """)
    assert len(errors) == 2, "\n".join(errors)
    assert ":5:" in errors[0] and "unknown field 'registerd_capital'" in errors[0] \
        and "did you mean 'registered_capital'?" in errors[0]
    assert ":7:" in errors[1] and "'grde' is not a field of 'lead'" in errors[1] and "did you mean 'grade'?" in errors[1]


def test_assign_with_an_unknown_policy_names_it_and_the_known_ones(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, """
        routing:
          east_team: {entity: lead, strategy: round_robin, pool: [wang], fallback_queue: unassigned}
        ---
        rules:
          - name: assign_new
            entity: lead
            trigger: created
            actions: [{assign: east_teem}]
    """)
    assert len(errors) == 1
    assert "automation.yaml:8:" in errors[0]
    assert "unknown routing policy 'east_teem'" in errors[0] and "did you mean 'east_team'?" in errors[0]


def test_an_empty_pool_without_fallback_stops_loading(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, """
        routing:
          douyin_pool:
            entity: lead
            strategy: round_robin
            pool: []
    """)
    empty = [error for error in errors if "has no members" in error]
    assert len(empty) == 1 and "douyin_pool" in empty[0] and "automation.yaml:5:" in empty[0]
    assert "stay unassigned" in empty[0]


def test_an_empty_pool_with_a_fallback_queue_loads_with_a_warning_naming_the_pool(tmp_path: Path) -> None:
    model = load_automation(tmp_path, """
        routing:
          douyin_pool:
            entity: lead
            strategy: round_robin
            pool: {members: []}
            fallback_queue: unassigned
            alert: ops
    """)
    warnings = [str(warning) for warning in model.warnings]
    assert len(warnings) == 1
    assert "warning" in warnings[0] and "policy 'douyin_pool' has no members" in warnings[0]


def test_two_policies_with_the_same_priority_that_can_match_one_record_are_ambiguous(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, """
        routing:
          douyin_special:
            entity: lead
            strategy: round_robin
            match: "matches(source, 'douyin|web')"
            pool: [wang]
            fallback_queue: unassigned
          website:
            entity: lead
            strategy: round_robin
            match: "source == 'website'"
            pool: [li]
            fallback_queue: unassigned
    """)
    assert len(errors) == 1
    assert "automation.yaml:8:" in errors[0]
    assert "'douyin_special' and 'website'" in errors[0] and "same priority 100" in errors[0]


def test_policies_with_exclusive_matches_or_different_priorities_are_not_ambiguous(tmp_path: Path) -> None:
    model = load_automation(tmp_path, """
        routing:
          douyin:
            entity: lead
            strategy: round_robin
            match: "source == 'douyin' and region == 'east'"
            pool: [wang]
            fallback_queue: unassigned
          not_douyin:
            entity: lead
            strategy: round_robin
            match: "source in ['website', 'wecom']"
            pool: [li]
            fallback_queue: unassigned
          everything_else:
            entity: lead
            strategy: least_loaded
            priority: 200
            pool: [wang, li]
            fallback_queue: unassigned
    """)
    assert [policy.name for policy in model.routing] == ["douyin", "not_douyin", "everything_else"]
    assert model.warnings == ()


def test_a_policy_behind_a_catch_all_of_smaller_priority_is_reported_as_never_used(tmp_path: Path) -> None:
    model = load_automation(tmp_path, """
        routing:
          everyone:
            entity: lead
            strategy: round_robin
            priority: 10
            pool: [wang, li]
            fallback_queue: unassigned
          vip:
            entity: lead
            strategy: round_robin
            priority: 20
            match: "contains(tags, 'vip')"
            pool: [manager]
            fallback_queue: unassigned
    """)
    assert len(model.warnings) == 1
    assert "'vip' is never used" in str(model.warnings[0]) and "'everyone'" in str(model.warnings[0])


def test_actions_must_fit_the_fields_they_change(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, """
        rules:
          - name: bad_actions
            entity: lead
            trigger: created
            actions:
              - add_tags: {field: grade, values: [tender]}
              - transition: {field: status, to: won}
              - set: {grade: X, hiring_recently: "yes"}
              - notify: {channel: wecom, text: "New lead {{ record.name }} from {{ record.compnay }} {{ record.name.__class__ }}"}
              - create_related: {entity: activity, link: lead}
    """)
    text = "\n".join(errors)
    assert "tags field 'grade' is a choice field" in text
    assert "target stage 'won' is not an option of status" in text
    assert "value 'X' is not an option of grade" in text
    assert "'yes' is not true or false" in text
    assert "placeholder '{{ record.compnay }}' is not a field of 'lead'" in text and "did you mean 'company'?" in text
    assert "placeholder reads '__class__', which a message may not" in text
    assert "activity requires 'subject'" in text


def test_a_misspelt_trigger_suggests_the_right_one(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, """
        rules:
          - name: on_create
            entity: lead
            trigger: creatd
            actions: [{set: {grade: C}}]
    """)
    assert len(errors) == 1 and ":4:" in errors[0] and "did you mean 'created'?" in errors[0]


def test_source_mistakes_are_located(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, """
        sources:
          douyin_leads:
            entity: lead
            auth: {type: hmac, secret_env: DOUYIN_SECRET}
            event_id: clue_id
            mapping:
              nmae: name
              source: {path: channel, map: {dy: douyn}}
            test_filter: "contains(compny, '测试')"
    """)
    text = "\n".join(errors)
    assert len(errors) == 4, text
    assert "hmac authentication needs 'header'" in text
    assert "mapped field 'nmae' is not a field of 'lead'" in text and "did you mean 'name'?" in text
    assert "value 'douyn' is not an option of source" in text and "did you mean 'douyin'?" in text
    assert "unknown field 'compny'" in text


def test_a_webhook_trigger_must_name_a_declared_source(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, GOOD + """
    ---
    rules:
      - name: from_wecom
        entity: lead
        trigger: {event: webhook_received, source: wecom_contacts}
        actions: [{set: {grade: B}}]
    """)
    assert len(errors) == 1 and "unknown source 'wecom_contacts'" in errors[0]


def _shipped_copy(tmp_path: Path) -> Path:
    """The shipped blueprints with the automation files included (app.yaml may not list them yet)."""
    root = tmp_path / "blueprints"
    shutil.copytree(SHIPPED_CRM.parent, root)
    app = root / "crm" / "app.yaml"
    text = app.read_text(encoding="utf-8")
    for name in ("rules.yaml", "routing.yaml", "sources.yaml"):
        if name not in text:
            text = text.replace("include:\n", f"include:\n  - \"{name}\"\n", 1)
    app.write_text(text, encoding="utf-8")
    return root / "crm"


def test_shipped_automation_validates_and_every_sample_payload_maps_to_valid_values(tmp_path: Path) -> None:
    model = load(_shipped_copy(tmp_path))
    assert {source.name for source in model.sources} == {"website_form", "wecom_contact", "douyin_leads",
                                                         "form_builder", "econtract_signed", "payment_received"}
    samples = SHIPPED_CRM.parent.parent / "examples" / "webhooks"
    for source in model.sources:
        payload = json.loads((samples / f"{source.name}.json").read_text(encoding="utf-8"))
        assert source.event_key(payload), source.name
        values = source.map_payload(payload)
        if source.match is not None:  # a handover event names the handover it completes
            assert source.entity == "delivery_handover" and values[source.match], source.name
        else:
            assert source.entity == "lead" and values["name"] and values["phone"], source.name
        entity = model.entity(source.entity)
        for name, value in values.items():
            spec = entity.field(name)
            if spec.choices:
                for item in value if isinstance(value, list) else [value]:
                    assert item in spec.choice_values(), (source.name, name, item)
    result = subprocess.run([sys.executable, "-m", "cli", "validate", str(_shipped_copy(tmp_path / "again"))],
                            capture_output=True, text=True, cwd=SHIPPED_CRM.parent.parent)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
