"""Checks on an expression that need the entity it reads: comparisons with a choice field's
options (`industry == 'manufactoring'` names no option, so it would simply never be true), and
functions that work only where the rule engine prepares their data (`count_related`)."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from engine.metamodel.entities import EntitySpec, FieldType
from engine.metamodel.expressions import Expression
from engine.metamodel.messages import Msg

# Functions whose data only the rule engine computes before it evaluates a condition; in a
# validation or computed field they would silently see nothing.
RULE_ONLY_FUNCTIONS = {"count_related": Msg("the number of related records")}
_OPTION_TYPES = (FieldType.CHOICE, FieldType.MULTICHOICE, FieldType.TAGS)


def unknown_options(expression: Expression, entity: EntitySpec) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """(field, value, the field's options) for every text compared with a choice field
    (==, !=, in, not in) that is not one of its options."""
    try:
        tree = ast.parse(expression.source, mode="eval")
    except SyntaxError:
        return
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for index, op in enumerate(node.ops):
            left, right = operands[index], operands[index + 1]
            if isinstance(op, (ast.Eq, ast.NotEq)):
                pairs = [(left, right), (right, left)]
            elif isinstance(op, (ast.In, ast.NotIn)):
                pairs = [(right, left)] if isinstance(right, ast.Name) else [(left, right)]
            else:
                continue
            for name_node, value_node in pairs:
                if not isinstance(name_node, ast.Name) or not entity.has_field(name_node.id):
                    continue
                spec = entity.field(name_node.id)
                if spec.value_type not in _OPTION_TYPES or not spec.choices:
                    continue
                for value in _texts(value_node):
                    if value not in spec.choice_values():
                        yield spec.name, value, spec.choice_values()


def _texts(node: ast.expr) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [item.value for item in node.elts if isinstance(item, ast.Constant) and isinstance(item.value, str)]
    return []


def rule_only_calls(expression: Expression) -> list[str]:
    return sorted(name for name in expression.functions if name in RULE_ONLY_FUNCTIONS)
