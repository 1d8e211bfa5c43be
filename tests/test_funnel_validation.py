"""Funnel and approval documents are checked when the blueprint loads: every unknown name is
reported at its file:line with how to fix it, all in one run, and nothing is built from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.metamodel import BlueprintInvalid
from tests.support.blueprints import load, write_blueprint
from tests.support.funnel_blueprint import FILES

BROKEN_FUNNEL = """
funnel: sales
entity: opportunity
talk_track_field: concern
stages:
  - name: qualify
  - name: demo
    requires:
      - field: customer_question
      - attachment: demo_dek
      - related: {entity: activty, via: opportunity}
      - related: {entity: activity, via: opportunity, where: "kind == 'demo' and finished"}
      - approval: price_aproval
      - check: "discount > 5"
    talk_tracks: {price_sensitiv: 先讲回报}
  - name: quote
  - {name: won, kind: won}
  - {name: lost, kind: lost, reason: loss_reasons}
"""
BROKEN_APPROVALS = FILES["approvals.yaml"].replace("approvers: [role:finance]", "approvers: [role:finanse]").replace(
    "covers: [discount, amount]", "covers: [discount, amout]")


def _errors(tmp_path: Path, **files: str) -> list[str]:
    with pytest.raises(BlueprintInvalid) as invalid:
        load(write_blueprint(tmp_path / "bp", {**FILES, **files}))
    return [str(error) for error in invalid.value.errors]


def test_unknown_names_in_requirements_and_approvals_are_all_reported_at_their_line(tmp_path: Path) -> None:
    errors = _errors(tmp_path, **{"funnels.yaml": BROKEN_FUNNEL, "approvals.yaml": BROKEN_APPROVALS})
    text = "\n".join(errors)
    expected = [
        ("funnels.yaml:8:", "required field 'customer_question' is not a field of 'opportunity'",
         "did you mean 'customer_questions'?"),
        ("funnels.yaml:9:", "unknown attachment kind 'demo_dek'", "did you mean 'demo_deck'?"),
        ("funnels.yaml:10:", "related records names unknown entity 'activty'", "did you mean 'activity'?"),
        ("funnels.yaml:11:", "expression uses unknown field 'finished'", "Fields of activity can be used by name"),
        ("funnels.yaml:12:", "unknown approval 'price_aproval'", "did you mean 'price_approval'?"),
        ("funnels.yaml:13:", "a check requirement needs a label", "add label:"),
        ("funnels.yaml:14:", "'price_sensitiv' is not an option of concern", "did you mean 'price_sensitive'?"),
        ("funnels.yaml:16:", "stage 'won' is a won stage and must demand its reason", "add reason: <field>"),
        ("funnels.yaml:17:", "reason field 'loss_reasons' is not a field of 'opportunity'",
         "did you mean 'loss_reason'?"),
        ("approvals.yaml:", "unknown role 'finanse'", "did you mean 'finance'?"),
        ("approvals.yaml:5:", "covered field 'amout' is not a field of 'opportunity'", "did you mean 'amount'?"),
    ]
    for where, message, hint in expected:
        assert any(where in error and message in error and hint in error for error in errors), \
            f"expected {where} {message} / {hint} in:\n{text}"


def test_a_funnel_must_cover_every_option_of_its_stage_field(tmp_path: Path) -> None:
    funnel = FILES["funnels.yaml"].replace("  - {name: lost, kind: lost, probability: 0, reason: loss_reason}\n", "") \
        .replace("  - name: quote\n", "  - name: quotes\n")
    errors = "\n".join(_errors(tmp_path, **{"funnels.yaml": funnel}))
    assert "stage 'quotes' is not an option of opportunity.stage" in errors and "did you mean 'quote'?" in errors
    assert "option 'lost' of opportunity.stage is not a stage of the funnel" in errors


def test_an_attachment_kind_must_be_an_attachment_field(tmp_path: Path) -> None:
    funnel = FILES["funnels.yaml"].replace("- attachment: demo_deck", "- attachment: customer_questions")
    errors = "\n".join(_errors(tmp_path, **{"funnels.yaml": funnel}))
    assert "unknown attachment kind 'customer_questions'" in errors
    assert "known: demo_deck, signed_quote" in errors or "did you mean" in errors
