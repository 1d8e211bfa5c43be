"""Evaluate blueprint expressions with a curated, side-effect-free function library.

Expressions were already parsed and name-checked by the metamodel (engine/metamodel/
expressions.py admits only literals, names, arithmetic, comparisons, and/or/not, x if c else y,
lists and calls of plain function names). Here each one is compiled once into a tree of small
Python closures and evaluated against a read-only mapping of field values. The operators are
simpleeval's table with our bounded power, multiplication and addition; the node semantics
(short-circuit and/or returning the deciding value, chained comparisons, lists) are
simpleeval's too, and tests/test_expressions.py checks every shipped expression against
simpleeval's own evaluator. A closure tree evaluates ~4× faster than simpleeval's per-node
dispatch (bench/RESULTS.md). Nothing passed in can reach the database, the file system or
Python internals: there is no attribute access, names only read the values mapping, and only
the functions of the library (engine/rules/functions.py: the engine's own and the plugins')
can be called.
"""

from __future__ import annotations

import ast
import decimal
import gc
import operator
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import simpleeval

from engine.metamodel.expressions import Expression
from engine.rules.functions import (BUILTIN_LIBRARY, FUNCTION_DOCS, FUNCTION_NAMES, MAX_REGEX_INPUT, MAX_REGEX_LENGTH,
                                    RELATED_COUNTS, ExpressionError, FunctionDoc, FunctionLibrary, related_counts)
from engine.rules.time import Clock

MAX_POWER = 1000
MAX_STRING_LENGTH = 100_000
MAX_INT_BITS = 4096          # ~1,233 decimal digits: far beyond money, far below a CPU or memory problem
MAX_WEIGHT = 1_000_000       # characters (or items) any intermediate value may hold, lists included
CALL_BUDGET_SECONDS = 0.010  # CPU time of one evaluation, checked at each function call and bounded operator
__all__ = ["FUNCTION_DOCS", "FUNCTION_NAMES", "MAX_REGEX_INPUT", "MAX_REGEX_LENGTH", "RELATED_COUNTS", "Evaluator",
           "ExpressionError", "FunctionDoc", "build_functions", "compile_expression"]

CLOCK_READ_EVERY = 8         # budget checks between readings of the thread's CPU clock (a system call)
# The budget of the evaluation under way on this thread: `deadline` is the thread CPU time when it
# must end (0.0 until the clock starts; None when nothing is evaluated), `checks` counts its
# bounded steps (function calls, powers, products…). Reading the CPU clock is a system call (no
# vDSO) and a point where a busy machine switches threads: read at every evaluation and step it
# cost ~30 calls per intake delivery. So the clock is read at every CLOCK_READ_EVERY-th step only
# (the first reading starts it): the short expressions blueprints are made of never read it, and
# as each step is bounded (MAX_WEIGHT, MAX_INT_BITS, MAX_REGEX_INPUT), a runaway one is stopped a
# few bounded steps past its budget at most.
_budget = threading.local()


def _check_budget() -> None:
    budget = _budget
    deadline = getattr(budget, "deadline", None)
    if deadline is None:
        return
    budget.checks += 1
    if budget.checks % CLOCK_READ_EVERY:
        return
    now = time.thread_time()
    if deadline == 0.0:
        budget.deadline = now + CALL_BUDGET_SECONDS
    elif now > deadline:
        raise ExpressionError(f"the expression took longer than its budget of {CALL_BUDGET_SECONDS * 1000:.0f} ms")


def _exclude_collection_from_budget(phase: str, info: dict[str, int]) -> None:
    """A garbage collection that starts during an evaluation is the process's work, not the
    expression's: a full collection over a large heap (an import holding its batch, SQLAlchemy's
    caches) takes 100 ms of this thread's CPU and would otherwise exhaust a 10 ms budget, rejecting
    a valid record at random (issue 19: one row in 3,000, on PostgreSQL more often). The deadline
    moves on by the collection's CPU time; collections run on the thread that triggered them.
    (No deadline, or 0.0 — a clock not started yet, should the clock be read lazily — means nothing to move.)"""
    if not getattr(_budget, "deadline", None):
        return
    if phase == "start":
        _budget.collecting_since = time.thread_time()
        return
    since = getattr(_budget, "collecting_since", None)
    if since is not None:
        _budget.deadline += time.thread_time() - since
        _budget.collecting_since = None


gc.callbacks.append(_exclude_collection_from_budget)


def build_functions(clock: Clock, timezone: str,
                    territories: Mapping[str, Sequence[str]] | None = None) -> dict[str, Callable[..., Any]]:
    """The engine's own function table bound to `clock` (a library with plugins: FunctionLibrary.bind)."""
    return BUILTIN_LIBRARY.bind(clock, timezone, territories)


def weight(value: Any, limit: int = MAX_WEIGHT) -> int:
    """How big `value` is (characters of text, items of lists, each counted in full), stopping
    as soon as it passes `limit`: a list of 100,000 references to one long text weighs what its
    `str()` would, without building it."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        total = len(value)
        for item in (value.items() if isinstance(value, dict) else value):
            total += weight(item, limit - total)
            if total > limit:
                return total
        return total
    if isinstance(value, int) and not isinstance(value, bool):
        return value.bit_length() // 3 + 1
    return 8


def _check_int(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise ExpressionError(f"a number in this expression would have more than {MAX_INT_BITS} bits")
    return value


def _safe_power(base: Any, exponent: Any) -> Any:
    _check_budget()
    if isinstance(exponent, (int, float, decimal.Decimal)) and not isinstance(exponent, bool):
        if abs(float(exponent)) > MAX_POWER:
            raise ExpressionError(f"power too large (exponent limit {MAX_POWER})")
        if isinstance(base, int) and not isinstance(base, bool) and isinstance(exponent, int) and exponent > 0 \
                and base.bit_length() * exponent > MAX_INT_BITS:
            raise ExpressionError(f"power too large: the result would have more than {MAX_INT_BITS} bits")
    return _check_int(operator.pow(base, exponent))


def _safe_mult(left: Any, right: Any) -> Any:
    _check_budget()
    if isinstance(left, (str, list, tuple)) or isinstance(right, (str, list, tuple)):
        sequence, count = (left, right) if isinstance(left, (str, list, tuple)) else (right, left)
        if isinstance(count, int) and count > 0:
            if count > MAX_STRING_LENGTH or len(sequence) * count > MAX_STRING_LENGTH or \
                    weight(sequence, MAX_WEIGHT) * count > MAX_WEIGHT:
                raise ExpressionError(f"result would be longer than {MAX_STRING_LENGTH} characters")
    elif isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
        raise ExpressionError(f"a number in this expression would have more than {MAX_INT_BITS} bits")
    return operator.mul(left, right)


def _safe_add(left: Any, right: Any) -> Any:
    if isinstance(left, (str, list, tuple)) and isinstance(right, type(left)):
        if len(left) + len(right) > MAX_STRING_LENGTH or weight(left) + weight(right) > MAX_WEIGHT:
            raise ExpressionError(f"result would be longer than {MAX_STRING_LENGTH} characters")
    return operator.add(left, right)


def _safe_mod(left: Any, right: Any) -> Any:
    """Remainder of numbers only: `text % values` (printf formatting, which can pad to any width) is not offered."""
    if isinstance(left, (str, bytes)):
        raise ExpressionError("'%' formats text in Python; expressions do not offer it (join text with +)")
    return operator.mod(left, right)


def _exact(function: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Let exact decimals (money, decimal fields) and written numbers like 0.3 mix: the float
    becomes the decimal it was written as, so amount * 0.3 is exact."""
    def apply(left: Any, right: Any) -> Any:
        if isinstance(left, decimal.Decimal) and isinstance(right, float):
            right = decimal.Decimal(repr(right))
        elif isinstance(right, decimal.Decimal) and isinstance(left, float):
            left = decimal.Decimal(repr(left))
        return function(left, right)
    return apply


_OPERATORS: dict[type[ast.AST], Callable[..., Any]] = dict(simpleeval.DEFAULT_OPERATORS)
_OPERATORS.update({simpleeval.ast.Pow: _safe_power, simpleeval.ast.Mult: _safe_mult, simpleeval.ast.Add: _safe_add,
                   simpleeval.ast.Mod: _safe_mod})
for _node in (simpleeval.ast.Add, simpleeval.ast.Sub, simpleeval.ast.Mult, simpleeval.ast.Div, simpleeval.ast.FloorDiv,
              simpleeval.ast.Mod, simpleeval.ast.Pow, simpleeval.ast.Gt, simpleeval.ast.GtE, simpleeval.ast.Lt,
              simpleeval.ast.LtE, simpleeval.ast.Eq, simpleeval.ast.NotEq):
    _OPERATORS[_node] = _exact(_OPERATORS[_node])
for _unsafe in (simpleeval.ast.BitOr, simpleeval.ast.BitAnd, simpleeval.ast.BitXor,
                simpleeval.ast.LShift, simpleeval.ast.RShift, simpleeval.ast.Invert):
    _OPERATORS.pop(_unsafe, None)

_CONSTANTS = {"True": True, "False": False, "None": None, "true": True, "false": False, "null": None}


class Evaluator:
    """Compiles expressions once and evaluates them against record values; `library` is every
    function they may call (the engine's own unless the composition root passes the plugins')."""

    def __init__(self, clock: Clock, timezone: str = "Asia/Shanghai",
                 territories: Mapping[str, Sequence[str]] | None = None,
                 library: FunctionLibrary = BUILTIN_LIBRARY) -> None:
        self.functions = library.bind(clock, timezone, territories)
        self._compiled: dict[str, _Node] = {}

    def evaluate(self, expression: Expression, values: Mapping[str, Any]) -> Any:
        """The value of `expression` with `values` as the names it may read."""
        compiled = self._compiled.get(expression.source)
        if compiled is None:
            compiled = self._compiled[expression.source] = compile_expression(expression.source, self.functions)
        token = related_counts.set(values.get(RELATED_COUNTS) or {}) if "count_related" in expression.functions else None
        outer = getattr(_budget, "deadline", None)
        if outer is None:
            _budget.deadline, _budget.checks = 0.0, 0
        try:
            return compiled(values)
        except ExpressionError:
            raise
        except (ArithmeticError, TypeError, ValueError, OverflowError, MemoryError, RecursionError) as exc:
            raise ExpressionError(f"{expression.source}: {str(exc)[:200]}") from None
        finally:
            if outer is None:
                _budget.deadline = None
            if token is not None:
                related_counts.reset(token)


_Node = Callable[[Mapping[str, Any]], Any]


def compile_expression(source: str, functions: Mapping[str, Callable[..., Any]]) -> _Node:
    """`source` as a closure over the values mapping. Only the node kinds the metamodel admits
    compile; anything else (which the metamodel never lets through) is refused here as well."""
    return _compile(ast.parse(source.strip(), mode="eval").body, functions)


def _compile(node: ast.AST, functions: Mapping[str, Callable[..., Any]]) -> _Node:  # noqa: C901 — one case per node kind
    if isinstance(node, ast.Constant):
        constant = node.value
        return lambda values: constant
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:  # true/false/null are the documented constants, never field values
            constant = _CONSTANTS[node.id]
            return lambda values: constant
        name = node.id
        return lambda values: values.get(name)
    if isinstance(node, ast.BinOp):
        binary, left, right = _operator(node.op), _compile(node.left, functions), _compile(node.right, functions)
        return lambda values: binary(left(values), right(values))
    if isinstance(node, ast.UnaryOp):
        unary, operand = _operator(node.op), _compile(node.operand, functions)
        return lambda values: unary(operand(values))
    if isinstance(node, ast.BoolOp):
        parts = [_compile(value, functions) for value in node.values]
        if isinstance(node.op, ast.And):
            def all_of(values: Mapping[str, Any]) -> Any:
                for part in parts:
                    result = part(values)
                    if not result:
                        return result
                return result
            return all_of

        def any_of(values: Mapping[str, Any]) -> Any:
            for part in parts:
                result = part(values)
                if result:
                    return result
            return result
        return any_of
    if isinstance(node, ast.Compare):
        first = _compile(node.left, functions)
        steps = [(_operator(op), _compile(comparator, functions)) for op, comparator in zip(node.ops, node.comparators)]
        if len(steps) == 1:
            (compare, second), = steps
            return lambda values: compare(first(values), second(values))

        def chain(values: Mapping[str, Any]) -> Any:  # a < b < c: each pair in turn, stopping at a false one
            right, result = first(values), True
            for compare, following in steps:
                left, right = right, following(values)
                result = compare(left, right)
                if not result:
                    break
            return result
        return chain
    if isinstance(node, ast.IfExp):
        test, body, orelse = (_compile(part, functions) for part in (node.test, node.body, node.orelse))
        return lambda values: body(values) if test(values) else orelse(values)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        if node.func.id not in functions:
            raise ExpressionError(f"unknown function '{node.func.id}'")
        function, arguments = functions[node.func.id], [_compile(argument, functions) for argument in node.args]
        called = node.func.id

        def call(values: Mapping[str, Any]) -> Any:
            given = [argument(values) for argument in arguments]
            _check_budget()
            for value in given:  # what a function receives is bounded like any intermediate value
                if isinstance(value, (list, tuple, dict, set)) and weight(value) > MAX_WEIGHT:
                    raise ExpressionError(f"{called}(): a value larger than {MAX_WEIGHT} characters")
            return _check_int(function(*given))
        return call
    if isinstance(node, (ast.List, ast.Tuple)):
        items, kind = [_compile(item, functions) for item in node.elts], list if isinstance(node, ast.List) else tuple
        return lambda values: kind([item(values) for item in items])
    raise ExpressionError(f"'{type(node).__name__}' is not allowed in an expression")


def _operator(op: ast.AST) -> Callable[..., Any]:
    try:
        return _OPERATORS[type(op)]
    except KeyError:
        raise ExpressionError(f"the operator '{type(op).__name__}' is not allowed") from None
