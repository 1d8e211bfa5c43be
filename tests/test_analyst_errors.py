"""Mistakes analysts make, caught at load with the line and how to fix it: a choice option that
does not exist, `=` for `==`, a rule-only function in a validation, one YAML syntax error
(reported alone, not with a cascade of unknown names), a field no form shows, and cron
weekdays counted as in crontab (1 is Monday)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from engine.metamodel import BlueprintInvalid
from engine.metamodel.crontab import crontab_trigger
from tests.support.blueprints import load, write_blueprint

APP = """
    app: shop
    include: ["*.yaml"]
"""
LEAD = """
    entity: lead
    fields:
      name: {type: string, required: true}
      industry: {type: choice, options: {manufacturing: 制造业, retail: 零售}}
      grade: {type: choice, options: {A: A, B: B}}
      pause_reason: {type: string}
    validations:
      - check: "{check}"
        field: name
        message: {zh: 不行, en: "not allowed"}
"""
RULE = """
    rules:
      - name: grade_manufacturers
        entity: lead
        trigger: {event: created}
        when: "{when}"
        actions:
          - set: {grade: A}
"""


def errors_of(tmp_path: Path, files: dict[str, str]) -> list[str]:
    with pytest.raises(BlueprintInvalid) as caught:
        load(write_blueprint(tmp_path / "bp", files))
    return [str(error) for error in caught.value.errors if error.severity == "error"]


def test_an_option_that_does_not_exist_is_caught_with_the_nearest_one(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, {"app.yaml": APP, "lead.yaml": LEAD.replace("{check}", "not is_empty(name)"),
                                  "rules.yaml": RULE.replace("{when}", "industry == 'manufactoring'")})
    assert len(errors) == 1, errors
    assert "rules.yaml:5:" in errors[0]
    assert "'manufactoring' is not an option of industry" in errors[0]
    assert "did you mean 'manufacturing'?" in errors[0] and "manufacturing, retail" in errors[0]
    errors = errors_of(tmp_path, {"app.yaml": APP, "lead.yaml": LEAD.replace("{check}", "grade in ['A', 'C']"),
                                  "rules.yaml": RULE.replace("{when}", "industry != 'retail'")})
    assert len(errors) == 1 and "'C' is not an option of grade" in errors[0], errors


def test_a_single_equals_sign_gets_the_hint_to_write_two(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, {"app.yaml": APP, "lead.yaml": LEAD.replace("{check}", "not is_empty(name)"),
                                  "rules.yaml": RULE.replace("{when}", "industry = 'retail'")})
    assert len(errors) == 1 and "to compare, write ==" in errors[0], errors
    # '=' inside a text, or in <=, is not the mistake
    errors = errors_of(tmp_path, {"app.yaml": APP, "lead.yaml": LEAD.replace("{check}", "not is_empty(name)"),
                                  "rules.yaml": RULE.replace("{when}", "name == 'a=b' and (")})
    assert len(errors) == 1 and "write ==" not in errors[0], errors


def test_count_related_in_a_validation_is_refused_where_it_would_always_be_zero(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, {"app.yaml": APP, "lead.yaml": LEAD.replace(
        "{check}", "count_related('lead', 'name') < 3")})
    assert len(errors) == 1 and "count_related() cannot work here" in errors[0] and "rules.yaml" in errors[0], errors


def test_one_yaml_syntax_error_is_reported_alone(tmp_path: Path) -> None:
    broken = LEAD.replace("{check}", "not is_empty(name)").replace(
        "      industry: {type: choice", "       industry:\n      {type: choice")
    errors = errors_of(tmp_path, {"app.yaml": APP, "lead.yaml": broken,
                                  "rules.yaml": RULE.replace("{when}", "industry == 'retail'")})
    assert len(errors) == 1, errors
    assert "YAML syntax error" in errors[0] and "lead.yaml" in errors[0]


def test_a_field_no_form_section_shows_is_a_warning(tmp_path: Path) -> None:
    lead = LEAD.replace("{check}", "not is_empty(name)") + """
    views:
      form:
        sections:
          - label: {zh: 基本, en: Basics}
            fields: [name, industry, grade]
"""
    model = load(write_blueprint(tmp_path / "bp", {"app.yaml": APP, "lead.yaml": lead}))
    (warning,) = [str(item) for item in model.warnings]
    assert "field 'pause_reason' is in no form section" in warning and "lead.yaml:6:" in warning


def test_cron_weekdays_count_as_in_crontab() -> None:
    thursday = dt.datetime(2026, 12, 3, 12, 0, tzinfo=ZoneInfo("Asia/Shanghai"))

    def next_day(cron: str) -> str:
        moment = crontab_trigger(cron, "Asia/Shanghai").get_next_fire_time(None, thursday)
        assert moment is not None
        return f"{moment:%a %H:%M}"
    assert next_day("0 9 * * 1") == "Mon 09:00"
    assert next_day("0 9 * * 0") == next_day("0 9 * * 7") == "Sun 09:00"
    assert next_day("30 8 * * 1-5") == "Fri 08:30"
    assert next_day("0 9 * * 0-1") == "Sun 09:00"
    with pytest.raises(ValueError, match="0–7"):
        crontab_trigger("0 9 * * 8", "Asia/Shanghai")


def test_a_misspelt_field_option_or_type_is_one_error_not_a_cascade_through_its_uses(tmp_path: Path) -> None:
    """`requierd: true` on the name and `type: choise` on the source of the shipped lead: two
    errors. The name is still searched and the source still filtered, grouped on dashboards and
    mapped by imports — none of those uses is reported as well (they were six more errors)."""
    import shutil

    from tests.support.blueprints import SHIPPED_CRM, SHIPPED_SERVICE
    shutil.copytree(SHIPPED_CRM, tmp_path / "crm")
    shutil.copytree(SHIPPED_SERVICE, tmp_path / "service")
    lead = tmp_path / "crm" / "entities" / "lead.yaml"
    text = lead.read_text(encoding="utf-8")
    name_field = "    label: {zh: 客户姓名, en: Name}\n    required: true\n"
    source_field = "  source:\n    type: choice\n"
    assert text.count(name_field) == 1 and text.count(source_field) == 1
    lead.write_text(text.replace(name_field, name_field.replace("required", "requierd"))
                    .replace(source_field, source_field.replace("choice", "choise")), encoding="utf-8")
    with pytest.raises(BlueprintInvalid) as caught:
        load(tmp_path / "crm")
    errors = [str(error) for error in caught.value.errors]
    assert len(errors) == 2, "\n".join(errors)
    assert "unknown option 'requierd'" in errors[0] and "did you mean 'required'?" in errors[0]
    assert "'choise' is not one of the allowed values" in errors[1] and "did you mean 'choice'?" in errors[1]
