"""Syntactic checking of blueprint expressions, done once when the blueprint loads.

Only a small, side-effect-free subset of Python expression syntax is accepted: literals,
names, arithmetic, comparisons, `and`/`or`/`not`, `x if c else y`, lists, and calls of
plain function names. No attribute access, subscripts, lambdas, comprehensions or
f-strings, so an expression can never walk to Python internals. The names it reads and
the functions it calls are returned for the cross-reference checks.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any

from engine.metamodel.errors import Location


EXPRESSION_PREFIX = "="  # a blueprint value written "=…" is an expression
MAX_EXPRESSION_LENGTH = 1000
MAX_EXPRESSION_NODES = 300
MAX_LITERAL_LENGTH = 500

_ALLOWED_NODES: tuple[type[ast.AST], ...] = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.BinOp, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Mod, ast.FloorDiv, ast.Pow,
    ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is, ast.IsNot,
    ast.IfExp, ast.Call, ast.Name, ast.Load, ast.Constant, ast.List, ast.Tuple,
)

_WHY_NOT: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access (a.b) is not allowed",
    ast.Subscript: "indexing (a[b]) is not allowed",
    ast.Lambda: "lambda is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.NamedExpr: "assignment (:=) is not allowed",
    ast.Starred: "star arguments are not allowed",
}


_SINGLE_EQUALS = re.compile(r"(?<![=!<>])=(?!=)")
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def _without_strings(source: str) -> str:
    return _STRING.sub("''", source)


class ExpressionSyntaxError(ValueError):
    """The text is not an allowed expression; the message says what to change."""


def parse_expression(source: str, location: Location) -> Expression:
    """Check `source` and return it with the names and functions it uses."""
    if not isinstance(source, str) or not source.strip():
        raise ExpressionSyntaxError("the expression is empty")
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise ExpressionSyntaxError(f"the expression is {len(source)} characters long; "
                                    f"the limit is {MAX_EXPRESSION_LENGTH}")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        hint = ""
        if _SINGLE_EQUALS.search(_without_strings(source)):
            hint = " — to compare, write == (a single = is not a comparison), e.g. status == 'new'"
        raise ExpressionSyntaxError(f"not a valid expression: {exc.msg} (column {exc.offset}){hint}") from None
    names: set[str] = set()
    functions: set[str] = set()
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_EXPRESSION_NODES:
        raise ExpressionSyntaxError(f"the expression is too complex ({len(nodes)} parts; "
                                    f"the limit is {MAX_EXPRESSION_NODES})")
    for node in nodes:
        if not isinstance(node, _ALLOWED_NODES):
            reason = _WHY_NOT.get(type(node), f"'{type(node).__name__}' syntax is not allowed")
            raise ExpressionSyntaxError(reason)
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise ExpressionSyntaxError("only plain function names may be called, e.g. days(2)")
            if node.keywords:
                raise ExpressionSyntaxError("keyword arguments are not allowed; pass values by position")
            functions.add(node.func.id)
        elif isinstance(node, ast.Name) and node.id.startswith("_"):
            raise ExpressionSyntaxError(f"names starting with '_' are not allowed ('{node.id}')")
        elif isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            if isinstance(node.value, bytes):
                raise ExpressionSyntaxError("byte strings are not allowed")
            if len(node.value) > MAX_LITERAL_LENGTH:
                raise ExpressionSyntaxError(f"a text literal is longer than {MAX_LITERAL_LENGTH} characters")
    called = {id(node.func) for node in nodes if isinstance(node, ast.Call)}
    for node in nodes:
        if isinstance(node, ast.Name) and id(node) not in called:
            names.add(node.id)
    return Expression(source.strip(), location, frozenset(names), frozenset(functions))


@dataclass(frozen=True, slots=True)
class Expression:
    """A checked blueprint expression: its source, where it was written and the names it uses."""

    source: str
    location: Location
    names: frozenset[str]
    functions: frozenset[str]




@dataclass(frozen=True, slots=True)
class ValueSpec:
    """A value an action writes: a literal, or an expression (written with a leading '=')."""

    literal: Any = None
    expression: Expression | None = None

    @property
    def is_expression(self) -> bool:
        return self.expression is not None
