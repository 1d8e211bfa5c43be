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
from engine.metamodel.messages import Msg, MsgError


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

_WHY_NOT: dict[type[ast.AST], Msg] = {
    ast.Attribute: Msg("attribute access (a.b) is not allowed"),
    ast.Subscript: Msg("indexing (a[b]) is not allowed"),
    ast.Lambda: Msg("lambda is not allowed"),
    ast.ListComp: Msg("comprehensions are not allowed"),
    ast.GeneratorExp: Msg("comprehensions are not allowed"),
    ast.DictComp: Msg("comprehensions are not allowed"),
    ast.SetComp: Msg("comprehensions are not allowed"),
    ast.JoinedStr: Msg("f-strings are not allowed"),
    ast.NamedExpr: Msg("assignment (:=) is not allowed"),
    ast.Starred: Msg("star arguments are not allowed"),
}


_SINGLE_EQUALS = re.compile(r"(?<![=!<>])=(?!=)")
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def _without_strings(source: str) -> str:
    return _STRING.sub("''", source)


class ExpressionSyntaxError(MsgError):
    """The text is not an allowed expression; the message (a `Msg`) says what to change."""


def parse_expression(source: str, location: Location) -> Expression:
    """Check `source` and return it with the names and functions it uses."""
    if not isinstance(source, str) or not source.strip():
        raise ExpressionSyntaxError(Msg("the expression is empty"))
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise ExpressionSyntaxError(Msg("the expression is {length} characters long; the limit is {limit}",
                                        length=len(source), limit=MAX_EXPRESSION_LENGTH))
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:  # Python's own words for the syntax error stay English
        if _SINGLE_EQUALS.search(_without_strings(source)):
            raise ExpressionSyntaxError(Msg(
                "not a valid expression: {problem} (column {column}) — to compare, write == (a single = is not "
                "a comparison), e.g. status == 'new'", problem=exc.msg, column=exc.offset)) from None
        raise ExpressionSyntaxError(Msg("not a valid expression: {problem} (column {column})",
                                        problem=exc.msg, column=exc.offset)) from None
    names: set[str] = set()
    functions: set[str] = set()
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_EXPRESSION_NODES:
        raise ExpressionSyntaxError(Msg("the expression is too complex ({count} parts; the limit is {limit})",
                                        count=len(nodes), limit=MAX_EXPRESSION_NODES))
    for node in nodes:
        if not isinstance(node, _ALLOWED_NODES):
            reason = _WHY_NOT.get(type(node)) or Msg("'{syntax}' syntax is not allowed", syntax=type(node).__name__)
            raise ExpressionSyntaxError(reason)
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise ExpressionSyntaxError(Msg("only plain function names may be called, e.g. days(2)"))
            if node.keywords:
                raise ExpressionSyntaxError(Msg("keyword arguments are not allowed; pass values by position"))
            functions.add(node.func.id)
        elif isinstance(node, ast.Name) and node.id.startswith("_"):
            raise ExpressionSyntaxError(Msg("names starting with '_' are not allowed ('{name}')", name=node.id))
        elif isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            if isinstance(node.value, bytes):
                raise ExpressionSyntaxError(Msg("byte strings are not allowed"))
            if len(node.value) > MAX_LITERAL_LENGTH:
                raise ExpressionSyntaxError(Msg("a text literal is longer than {limit} characters",
                                                    limit=MAX_LITERAL_LENGTH))
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
