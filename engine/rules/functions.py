"""The expression function library: every function a blueprint expression may call.

Each function is an `ExpressionFunction` — its name, its callable and its `FunctionDoc` (the
signature and summary docs/expressions.md and `crm validate` show). The engine's own register
through the same pluggy hook as a plugin's (`crm_functions`, engine/plugins/hookspecs.py), and
a `FunctionLibrary` collects them: its names are what the blueprint loader accepts, its
`bind` gives one engine's table. A few functions read the engine's clock, time zone or
territories; those are factories given a `FunctionContext` when the table is bound, so the
library itself holds no engine.

Every function here is pure: it reads its arguments (and, bound, the clock) only — never the
database, the network or the file system. A plugin's functions are trusted Python, but they
must keep that promise too: expressions run inside every write.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import decimal
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from engine.metamodel.patterns import PatternError, compile_pattern
from engine.plugins import PluginError, claim, hookimpl
from engine.rules.time import Clock

MAX_REGEX_LENGTH = 200
MAX_REGEX_INPUT = 10_000


class ExpressionError(ValueError):
    """An expression could not be evaluated; the message says why in plain words."""


@dataclass(frozen=True, slots=True)
class FunctionDoc:
    signature: str
    summary: str


@dataclass(frozen=True, slots=True)
class FunctionContext:
    """What a clock-bound function reads: the engine's clock, the app's time zone, its territories."""

    clock: Clock
    zone: ZoneInfo
    territories: Mapping[str, frozenset[str]]


@dataclass(frozen=True, slots=True)
class ExpressionFunction:
    """One function expressions may call: `function` itself, or — with `binds` — a factory
    that, given the engine's FunctionContext, returns it (now(), today(), in_territory())."""

    name: str
    function: Callable[..., Any]
    doc: FunctionDoc
    binds: bool = False

    def bound(self, context: FunctionContext) -> Callable[..., Any]:
        return self.function(context) if self.binds else self.function


def _regex_matches(text: Any, pattern: Any) -> bool:
    if not isinstance(pattern, str) or len(pattern) > MAX_REGEX_LENGTH:
        raise ExpressionError(f"matches(): the pattern must be text of at most {MAX_REGEX_LENGTH} characters")
    try:
        compiled = compile_pattern(pattern)
    except PatternError as exc:
        raise ExpressionError(f"matches(): {exc}") from None
    if text is None:
        return False
    value = str(text)
    if len(value) > MAX_REGEX_INPUT:
        raise ExpressionError(f"matches(): the text is longer than {MAX_REGEX_INPUT} characters")
    return compiled.search(value) is not None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _contains(haystack: Any, needle: Any) -> bool:
    if haystack is None:
        return False
    if isinstance(haystack, (list, tuple, set, frozenset)):
        return needle in haystack
    return _text(needle) in _text(haystack)


def _any_of(value: Any, *options: Any) -> bool:
    choices = options[0] if len(options) == 1 and isinstance(options[0], (list, tuple)) else options
    if isinstance(value, (list, tuple)):
        return any(item in choices for item in value)
    return value in choices


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _coalesce(*values: Any) -> Any:
    return next((value for value in values if not _is_empty(value)), None)


def _number(value: Any) -> decimal.Decimal:
    if value is None or value == "":
        return decimal.Decimal(0)
    if isinstance(value, bool):
        raise ExpressionError(f"number(): {value} is true/false, not a number")
    try:
        return decimal.Decimal(str(value).replace(",", ""))
    except decimal.InvalidOperation:
        raise ExpressionError(f"number(): '{value}' is not a number") from None


def _round(value: Any, digits: Any = 0) -> decimal.Decimal:
    """Rounds half away from zero, as people (and invoices) expect: round(2.5) is 3."""
    return _number(value).quantize(decimal.Decimal(1).scaleb(-int(digits)), rounding=decimal.ROUND_HALF_UP)


def _date(value: Any) -> dt.date | None:
    if value is None or isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.datetime):
        return value.date()
    return dt.date.fromisoformat(str(value))


def _safe_len(value: Any) -> int:
    return 0 if value is None else len(value)


# Counts of related records for the evaluation under way: the runtime computes them before it
# evaluates (expressions never reach the database) and hands them in with the values.
RELATED_COUNTS = "__related__"
related_counts: contextvars.ContextVar[Mapping[tuple[str, str], int]] = contextvars.ContextVar("crm_related",
                                                                                              default={})


def _count_related(entity: Any, link_field: Any) -> int:
    return int(related_counts.get().get((str(entity), str(link_field)), 0))


def _now(context: FunctionContext) -> Callable[[], dt.datetime]:
    def now() -> dt.datetime:
        return context.clock.now().astimezone(context.zone)
    return now


def _today(context: FunctionContext) -> Callable[[], dt.date]:
    now = _now(context)
    return lambda: now().date()


def _local_date(context: FunctionContext) -> Callable[[Any], dt.date | None]:
    def local_date(value: Any) -> dt.date | None:
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            return value.astimezone(context.zone).date()
        return _date(value)
    return local_date


def _days_between(context: FunctionContext) -> Callable[[Any, Any], int]:
    local_date = _local_date(context)

    def days_between(first: Any, second: Any) -> int:
        a, b = local_date(first), local_date(second)
        return 0 if a is None or b is None else (b - a).days
    return days_between


def _in_territory(context: FunctionContext) -> Callable[[Any, Any], bool]:
    def in_territory(region: Any, name: Any) -> bool:
        if str(name) not in context.territories:
            declared = ", ".join(context.territories) or "none"
            raise ExpressionError(f"in_territory(): no territory '{name}' (declared: {declared})")
        return region in context.territories[str(name)]
    return in_territory


def _pure(name: str, function: Callable[..., Any], signature: str, summary: str) -> ExpressionFunction:
    return ExpressionFunction(name, function, FunctionDoc(signature, summary))


def _bound(name: str, factory: Callable[[FunctionContext], Callable[..., Any]], signature: str,
           summary: str) -> ExpressionFunction:
    return ExpressionFunction(name, factory, FunctionDoc(signature, summary), binds=True)


# The engine's library, in the order docs/expressions.md lists it.
BUILTIN_FUNCTIONS: tuple[ExpressionFunction, ...] = (
    _bound("now", _now, "now()", "the current date and time (in the app's time zone)"),
    _bound("today", _today, "today()", "today's date (in the app's time zone)"),
    _pure("days", lambda n: dt.timedelta(days=float(n)), "days(n)",
          "a duration of n days, to add to a date: today() + days(2)"),
    _pure("hours", lambda n: dt.timedelta(hours=float(n)), "hours(n)", "a duration of n hours: now() + hours(2)"),
    _pure("minutes", lambda n: dt.timedelta(minutes=float(n)), "minutes(n)", "a duration of n minutes"),
    _bound("date", _local_date, "date(text)", "a date from 'YYYY-MM-DD' text"),
    _bound("days_between", _days_between, "days_between(a, b)", "whole days from date a to date b"),
    _pure("len", _safe_len, "len(x)", "length of a text or list; 0 for empty"),
    _pure("lower", lambda s: _text(s).lower(), "lower(text)", "text in lower case"),
    _pure("upper", lambda s: _text(s).upper(), "upper(text)", "text in upper case"),
    _pure("trim", lambda s: _text(s).strip(), "trim(text)", "text without surrounding spaces"),
    _pure("contains", _contains, "contains(x, part)", "text contains part, or list contains item"),
    _pure("startswith", lambda s, p: _text(s).startswith(_text(p)), "startswith(text, prefix)",
          "text starts with prefix"),
    _pure("endswith", lambda s, p: _text(s).endswith(_text(p)), "endswith(text, suffix)", "text ends with suffix"),
    _pure("matches", _regex_matches, "matches(text, pattern)",
          "regular-expression search (RE2 syntax, pattern ≤ 200 chars, text ≤ 10,000 chars; runs in linear time)"),
    _pure("any_of", _any_of, "any_of(x, a, b, …)", "x (or any item of list x) is one of the values"),
    _pure("is_empty", _is_empty, "is_empty(x)", "x is missing, empty text or an empty list"),
    _pure("coalesce", _coalesce, "coalesce(a, b, …)", "the first value that is not empty"),
    _pure("number", _number, "number(x)", "x as an exact decimal number (empty ⇒ 0)"),
    _pure("round", _round, "round(x, digits)", "x rounded to digits decimals, halves away from zero"),
    _pure("abs", abs, "abs(x)", "absolute value"),
    _pure("min", min, "min(a, b, …)", "the smallest value"),
    _pure("max", max, "max(a, b, …)", "the largest value"),
    _bound("in_territory", _in_territory, "in_territory(region, 'name')",
           "region is one of the territory's regions (app settings: territories)"),
    _pure("count_related", _count_related, "count_related('entity', 'link_field')",
          "how many `entity` records link to this record through `link_field` "
          "(counted by the engine before the rule runs; 0 for a new record)"),
)


@hookimpl
def crm_functions() -> Sequence[ExpressionFunction]:
    """The engine's own expression functions."""
    return BUILTIN_FUNCTIONS


@dataclass(frozen=True, slots=True)
class FunctionLibrary:
    """Every function expressions may call, by name, and which plugin provides each."""

    functions: Mapping[str, ExpressionFunction] = field(default_factory=lambda: types.MappingProxyType({}))
    providers: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}))

    @classmethod
    def of(cls, answers: Iterable[tuple[str, Iterable[ExpressionFunction]]]) -> FunctionLibrary:
        """From each plugin's answer to crm_functions; PluginError on a name taken twice or one
        an expression cannot call."""
        functions: dict[str, ExpressionFunction] = {}
        providers: dict[str, str] = {}
        for plugin, answered in answers:
            for function in answered:
                if not isinstance(function, ExpressionFunction):
                    raise PluginError(f"plugin {plugin} answered crm_functions with {function!r}; "
                                      "return engine.rules.functions.ExpressionFunction objects")
                if not function.name.isidentifier() or function.name in _RESERVED:
                    raise PluginError(f"plugin {plugin} provides the expression function '{function.name}', "
                                      "which an expression cannot call; name it like lower_case_words")
                claim(functions, providers, function.name, function, plugin, "expression function")
        return cls(types.MappingProxyType(functions), types.MappingProxyType(providers))

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.functions)

    def docs(self) -> dict[str, FunctionDoc]:
        return {name: function.doc for name, function in self.functions.items()}

    def bind(self, clock: Clock, timezone: str,
             territories: Mapping[str, Sequence[str]] | None = None) -> dict[str, Callable[..., Any]]:
        """The function table for one engine: clock-bound functions bound, the pure ones as they are."""
        context = FunctionContext(clock, ZoneInfo(timezone),
                                  {name: frozenset(regions) for name, regions in (territories or {}).items()})
        return {name: function.bound(context) for name, function in self.functions.items()}


_RESERVED = frozenset({"True", "False", "None", "true", "false", "null"})
BUILTIN_LIBRARY = FunctionLibrary.of([(__name__, BUILTIN_FUNCTIONS)])
FUNCTION_DOCS = BUILTIN_LIBRARY.docs()
FUNCTION_NAMES = BUILTIN_LIBRARY.names
