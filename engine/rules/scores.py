"""Scores (engine/metamodel/scores.py) computed from values, pure: each component's points and
the reason behind them. The runtime (engine/runtime/automation/scores.py) reads the counts.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.metamodel.scores import ScoreSpec
from engine.rules.expressions import Evaluator, ExpressionError

_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class ComponentResult:
    name: str
    label: str
    weight: int
    fraction: float     # 0..1 after clamping
    points: float
    reason: str


@dataclass(frozen=True, slots=True)
class ScoreResult:
    score: int
    level: str | None
    components: tuple[ComponentResult, ...]

    def reasons(self, lang: str = "zh") -> str:
        """One line per component, weakest first: what cost points is read first."""
        ordered = sorted(self.components, key=lambda c: (c.fraction, c.name))
        return "\n".join(f"{c.label} {c.points:g}/{c.weight}" + (f" — {c.reason}" if c.reason else "")
                         for c in ordered)


def compute_score(spec: ScoreSpec, values: Mapping[str, Any], evaluator: Evaluator, lang: str = "zh") -> ScoreResult:
    """The score of a record whose values (fields and the score's counts) are `values`. A
    component whose expression cannot be evaluated (an empty field) scores 0 and says why."""
    results = []
    for component in spec.components:
        try:
            raw = evaluator.evaluate(component.value, values)
            fraction = float(raw if isinstance(raw, (int, float, decimal.Decimal)) and not isinstance(raw, bool)
                             else (1 if raw is True else 0))
            note = ""
        except (ExpressionError, ArithmeticError, TypeError, ValueError) as exc:
            fraction, note = 0.0, f"({exc})"
        fraction = min(1.0, max(0.0, fraction))
        points = round(component.weight * fraction, 1)
        template = component.explain.text(lang)
        reason = _PLACEHOLDER.sub(lambda match: _show(values.get(match.group(1))), template) if template else ""
        results.append(ComponentResult(component.name, component.label.text(lang), component.weight, fraction, points,
                                       " ".join(part for part in (reason, note) if part)))
    score = int(round(sum(result.points for result in results)))
    return ScoreResult(score, spec.level_of(score), tuple(results))


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
