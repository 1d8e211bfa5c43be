"""An analyst's mistakes come back all at once, each at its file:line with a hint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.metamodel import BlueprintInvalid, FieldType
from tests.support.blueprints import SHIPPED_CRM, SHIPPED_SERVICE, load, write_blueprint

APP = """
    app: shop
    label: {zh: 商店, en: Shop}
    include: [entities/*.yaml]
"""

ACCOUNT = """
    entity: account
    label: {zh: 客户, en: Account}
    fields:
      name: {type: string, required: true}
"""

# Five different mistakes, one per line marked with its number.
LEAD_WITH_FIVE_MISTAKES = """
    entity: lead
    label: {zh: 线索, en: Lead}
    fields:
      name: {type: string, required: true}
      source: {type: choice, options: {web: 官网, expo: 展会}}
      owner_name: {type: strng}
      account: {type: link, entity: acount}
      budget: {type: money, lenght: 10}
      follow_up: {type: date, default: "=today() + dayz(2)"}
    views:
      list:
        default: {columns: [name, source], filters: [sorce], sort: -created_at}
"""


def _errors(tmp_path: Path, files: dict[str, str]) -> list[str]:
    folder = write_blueprint(tmp_path / "bp", files)
    with pytest.raises(BlueprintInvalid) as caught:
        load(folder)
    return [str(error) for error in caught.value.errors]


def test_five_mistakes_give_five_errors_each_at_its_line(tmp_path: Path) -> None:
    errors = _errors(tmp_path, {"app.yaml": APP, "entities/account.yaml": ACCOUNT,
                                "entities/lead.yaml": LEAD_WITH_FIVE_MISTAKES})
    lead = str(Path("bp/entities/lead.yaml"))
    assert len(errors) == 5, "\n".join(errors)
    expected = [
        (6, "'strng' is not one of the allowed values", "did you mean 'string'?"),
        (7, "link to unknown entity 'acount'", "did you mean 'account'?"),
        (8, "unknown option 'lenght'", "known: currency, default"),
        (9, "unknown function 'dayz'", "did you mean 'days'?"),
        (12, "unknown filter 'sorce'", "did you mean 'source'?"),
    ]
    for text, (line, message, hint) in zip(errors, expected):
        assert f"{lead}:{line}:" in text, text
        assert message in text, text
        if hint:
            assert hint in text, text


def test_unknown_option_points_at_the_key_and_suggests_the_spelling(tmp_path: Path) -> None:
    errors = _errors(tmp_path, {"app.yaml": APP, "entities/account.yaml": """
        entity: account
        fields:
          name: {type: string, requird: true}
    """})
    assert len(errors) == 1
    assert ":3:" in errors[0] and "unknown option 'requird'" in errors[0] and "did you mean 'required'?" in errors[0]


def test_yaml_syntax_error_and_duplicate_keys_are_located(tmp_path: Path) -> None:
    errors = _errors(tmp_path, {"app.yaml": APP, "entities/account.yaml": """
        entity: account
        fields:
          name: {type: string}
          name: {type: text}
    """, "entities/broken.yaml": "entity: x\nfields:\n  a: {type: string\n"})
    joined = "\n".join(errors)
    assert "account.yaml:4:" in joined and "key 'name' appears twice" in joined
    assert "broken.yaml:" in joined and "YAML syntax error" in joined


def test_expression_with_attribute_access_is_refused_at_load(tmp_path: Path) -> None:
    errors = _errors(tmp_path, {"app.yaml": APP, "entities/account.yaml": """
        entity: account
        fields:
          name: {type: string}
          size: {type: computed, expression: "name.__class__", result: string}
    """})
    assert len(errors) == 1 and "account.yaml:4:" in errors[0] and "attribute access" in errors[0]


def test_include_that_matches_nothing_is_reported(tmp_path: Path) -> None:
    errors = _errors(tmp_path, {"app.yaml": "app: shop\ninclude: [entitys/*.yaml]\n"})
    assert len(errors) == 1 and "app.yaml:2:" in errors[0] and "matches no file" in errors[0]


def test_labels_may_be_plain_or_bilingual(tmp_path: Path) -> None:
    model = load(write_blueprint(tmp_path / "bp", {"app.yaml": APP, "entities/account.yaml": """
        entity: account
        label: {zh: 客户, en: Account}
        fields:
          name: {type: string, label: 名称}
          grade: {type: choice, options: {s: {zh: S级, en: Grade S}, a: A}}
    """}))
    account = model.entity("account")
    assert account.label.text("zh") == "客户" and account.label.text("en") == "Account"
    assert account.field("name").label.text("en") == "名称"
    assert account.field("grade").choice_label("s", "zh") == "S级"
    assert account.field("grade").type is FieldType.CHOICE


@pytest.mark.parametrize("blueprint", [SHIPPED_CRM, SHIPPED_SERVICE], ids=["crm", "service"])
def test_shipped_blueprints_are_valid(blueprint: Path) -> None:
    model = load(blueprint)
    assert model.entities


def test_crm_validate_exits_nonzero_with_errors_and_prints_a_summary_when_valid(tmp_path: Path) -> None:
    bad = write_blueprint(tmp_path / "bad", {"app.yaml": APP, "entities/account.yaml": ACCOUNT,
                                             "entities/lead.yaml": LEAD_WITH_FIVE_MISTAKES})
    result = subprocess.run([sys.executable, "-m", "cli", "validate", str(bad)], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 1
    assert "5 errors in the blueprint" in result.stderr and "lead.yaml:6:" in result.stderr

    good = write_blueprint(tmp_path / "good", {"app.yaml": APP, "entities/account.yaml": ACCOUNT})
    result = subprocess.run([sys.executable, "-m", "cli", "validate", str(good)], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr
    assert "shop" in result.stdout and "1 entities — valid" in result.stdout and "account" in result.stdout


def test_meaning_errors_are_caught_at_load(tmp_path: Path) -> None:
    errors = _errors(tmp_path, {"app.yaml": APP, "entities/account.yaml": ACCOUNT, "entities/deal.yaml": """
        entity: deal
        search: [amount]
        fields:
          amount: {type: money, min: "zero"}
          size: {type: integer, default: "abc"}
          account: {type: link, entity: account, required: true, on_delete: set_null}
          total: {type: computed, expression: "amount * 2", result: decimal, required: true}
          notes: {type: text}
          code: {type: string, pattern: "(a)\\\\1"}
        views:
          list:
            default: {columns: [amount], sort: notes}
    """})
    joined = "\n".join(errors)
    deal = str(Path("bp/entities/deal.yaml"))
    for line, text in ((2, "search field 'amount' is not text"), (4, "min 'zero' does not fit a money field"),
                       (5, "default 'abc' does not fit a integer field"),
                       (6, "a required link cannot be emptied"), (7, "a computed field cannot have 'required'"),
                       (9, "bad pattern"), (12, "cannot sort by 'notes'")):
        assert any(f"{deal}:{line}:" in error and text in error for error in errors), (line, text, joined)


def test_yes_and_no_option_keys_stay_words(tmp_path: Path) -> None:
    model = load(write_blueprint(tmp_path / "bp", {"app.yaml": APP, "entities/account.yaml": """
        entity: account
        fields:
          agreed: {type: choice, options: {yes: 是, no: 否}}
    """}))
    assert model.entity("account").field("agreed").choice_values() == ("yes", "no")


def test_app_settings_give_fields_their_currency_and_phone_region(tmp_path: Path) -> None:
    model = load(write_blueprint(tmp_path / "bp", {
        "app.yaml": "app: shop\ninclude: [entities/*.yaml]\n"
                    "settings: {currency: USD, phone_region: US, timezone: America/New_York}\n",
        "entities/account.yaml": "entity: account\nfields:\n  revenue: {type: money}\n  phone: {type: phone}\n"}))
    account = model.entity("account")
    assert account.field("revenue").currency == "USD" and account.field("phone").phone_region == "US"
    assert account.field("revenue").timezone == "America/New_York"


def test_the_summary_counts_errors_and_warnings_apart() -> None:
    from engine.metamodel.errors import BlueprintError, BlueprintInvalid, Location

    where = Location("entities/activity.yaml", 13, 3)
    raised = BlueprintInvalid([BlueprintError(where, ("views",), "unknown form field 'subjct'"),
                               BlueprintError(where, ("fields", "subject"), "in no form section", severity="warning")])
    assert str(raised).startswith("1 error and 1 warning in the blueprint:")  # it said "2 errors"
    assert str(BlueprintInvalid([BlueprintError(where, (), "x")])).startswith("1 error in the blueprint:")
