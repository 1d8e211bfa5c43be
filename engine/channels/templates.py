"""Message templates: Jinja2 in an immutable sandbox, with size limits."""

from __future__ import annotations

import datetime as dt
import functools
import re
import traceback
from collections.abc import Mapping
from typing import Any

import jinja2
import jinja2.nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.rules.rules import show_text


MAX_TEMPLATE_CHARS = 8_000
MAX_OUTPUT_CHARS = 20_000
_FILTERS = ("abs", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "filesizeformat", "first",
            "float", "forceescape", "groupby", "int", "items", "join", "last", "length", "list", "lower", "map",
            "max", "min", "reject", "rejectattr", "reverse", "round", "safe", "select", "selectattr", "sort",
            "string", "striptags", "sum", "title", "tojson", "trim", "truncate", "unique", "upper", "urlencode",
            "wordcount")
# Statements that bind or call names are how a template grows a value without bound.
_FORBIDDEN_NODES = (jinja2.nodes.Macro, jinja2.nodes.CallBlock, jinja2.nodes.Assign, jinja2.nodes.AssignBlock,
                    jinja2.nodes.With, jinja2.nodes.Import, jinja2.nodes.FromImport, jinja2.nodes.Include,
                    jinja2.nodes.Extends, jinja2.nodes.Block)
# Loops over values built in place (`for b in [a ~ a]`) would let nested loops double a string.
_BUILDING_NODES = (jinja2.nodes.Concat, jinja2.nodes.BinExpr, jinja2.nodes.List, jinja2.nodes.Tuple, jinja2.nodes.Dict)
_PADDING_METHODS = frozenset({"ljust", "rjust", "center", "zfill", "expandtabs", "format", "format_map", "replace"})
_WIDE_PERCENT = re.compile(r"%[-#0 +]*(\*|\d{4,})|%[-#0 +]*\d*\.(\*|\d{4,})")


class TemplateRenderError(ValueError):
    """A message template failed to compile or render; the message names the template and line."""


class _MessageEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox plus size checks on operators and methods that could allocate without bound."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        sequence, count = (left, right) if isinstance(left, (str, list, tuple)) else (right, left)
        if operator == "*" and isinstance(sequence, (str, list, tuple)) and isinstance(count, int):
            if len(sequence) * count > MAX_OUTPUT_CHARS:
                raise SecurityError(f"repeating a value {count} times exceeds {MAX_OUTPUT_CHARS} characters")
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and max(abs(left).bit_length(), 1) * right > 10_000:
                raise SecurityError("the power is too large")
        if operator == "%" and isinstance(left, str) and _WIDE_PERCENT.search(left):
            raise SecurityError("a %-format with a width or precision over 999 is not allowed")
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> None:
        return None  # str.format is refused outright (below), so there is nothing to wrap

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and attr in _PADDING_METHODS:
            return False
        return bool(super().is_safe_attribute(obj, attr, value))


def _bounded_replace(value: Any, old: str, new: str, count: int | None = None) -> str:
    text = str(value)
    if len(text) + text.count(old) * max(len(new) - len(old), 0) > MAX_OUTPUT_CHARS:
        raise SecurityError(f"replace would produce more than {MAX_OUTPUT_CHARS} characters")
    return text.replace(old, new, -1 if count is None else count)


def _format_datetime(value: Any, fmt: str = "%Y-%m-%d %H:%M", zone: str | None = None) -> str:
    if not isinstance(value, dt.datetime):
        return str(value)
    moment = value
    if zone is not None and moment.tzinfo is not None:
        from zoneinfo import ZoneInfo

        moment = moment.astimezone(ZoneInfo(zone))
    return moment.strftime(fmt)


_UNITS = {"zh": (("天", "小时", "分钟"), ""), "en": ((" d", " h", " min"), " ")}


def duration_words(value: Any, language: str = "en") -> str:
    """A timedelta as people read it: "1 d 2 h 5 min" in English, "1天2小时5分钟" in Chinese
    (negative: "-…"), for SLA remaining times and targets."""
    if not isinstance(value, dt.timedelta):
        return str(value)
    (day, hour, minute), gap = _UNITS["zh" if language.lower().startswith("zh") else "en"]
    sign, minutes = ("-" if value < dt.timedelta(0) else ""), int(abs(value).total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    parts = [f"{days}{day}"] * bool(days) + [f"{rest // 60}{hour}"] * bool(rest // 60) \
        + [f"{rest % 60}{minute}"] * bool(rest % 60)
    return sign + (gap.join(parts) or f"0{minute}")


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]()!<>|~{}])")
_LINE_START = re.compile(r"^(\s*)([#+\->])")


def escape_markdown(text: str) -> str:
    """User text made inert in a chat's markdown: every character that could start a link, an
    image, emphasis, a heading or a quote is backslash-escaped (a web form cannot inject
    `[点此领奖](https://evil)` into a DingTalk or Feishu card)."""
    inert = _MARKDOWN_SPECIAL.sub(r"\\\1", text).replace("\r", " ").replace("\n", " ")
    return _LINE_START.sub(r"\1\\\2", inert)  # a heading, list or quote marker only counts at a line's start


def _markdown_text(value: Any) -> str:
    return escape_markdown(show_text(value))


def _environment(autoescape: bool, markdown: bool = False, language: str = "en") -> _MessageEnvironment:
    # finalize: None as "", decimals without trailing zeros, lists joined; in markdown, escaped
    env = _MessageEnvironment(undefined=jinja2.StrictUndefined, autoescape=autoescape, keep_trailing_newline=False,
                              finalize=_markdown_text if markdown else show_text)
    env.globals.clear()  # no range, lipsum, cycler, joiner, namespace, dict
    env.filters = {name: env.filters[name] for name in _FILTERS}
    env.filters.update(replace=_bounded_replace, datetime=_format_datetime,
                       duration=functools.partial(duration_words, language=language))
    return env


@functools.lru_cache(maxsize=512)
def _compiled(template_text: str, name: str, autoescape: bool, markdown: bool = False, language: str = "en"
              ) -> jinja2.Template:
    """Check and compile a template once (the worker renders the same few templates thousands of times)."""
    env = _environment(autoescape, markdown, language)
    try:
        tree = env.parse(template_text)
        for node in tree.find_all(_FORBIDDEN_NODES):
            keyword = type(node).__name__.lower()
            raise TemplateRenderError(f"template {name!r} line {node.lineno}: {keyword} blocks are not allowed "
                                      "in messages; use {{ … }}, {% if %} and {% for %} only")
        for loop in tree.find_all(jinja2.nodes.For):
            if next(loop.iter.find_all(_BUILDING_NODES), None) is not None or isinstance(loop.iter, _BUILDING_NODES):
                raise TemplateRenderError(f"template {name!r} line {loop.lineno}: a for loop must go over data "
                                          "(e.g. record.tags), not over values built in the template")
        template = env.from_string(template_text)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateRenderError(f"template {name!r} line {exc.lineno}: {exc.message}") from None
    return template


def render_message(template_text: str, context: Mapping[str, Any], *, name: str = "message",
                   autoescape: bool = False, markdown: bool = False, language: str = "en") -> str:
    """Render a blueprint message template in the sandbox; any failure names the template and line.
    `markdown`: every value the template substitutes is escaped for chat markdown (the
    template's own markup stays)."""
    if len(template_text) > MAX_TEMPLATE_CHARS:
        raise TemplateRenderError(f"template {name!r} is {len(template_text)} characters; the limit is {MAX_TEMPLATE_CHARS}")
    template = _compiled(template_text, name, autoescape, markdown, language)
    chunks: list[str] = []
    size = 0
    try:
        for chunk in template.generate(dict(context)):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateRenderError(f"template {name!r} renders more than {MAX_OUTPUT_CHARS} characters")
            chunks.append(chunk)
    except TemplateRenderError:
        raise
    except Exception as exc:  # undefined names, sandbox refusals, type errors: all the template's fault
        line = _template_line(exc)
        where = f" line {line}" if line else ""
        raise TemplateRenderError(f"template {name!r}{where}: {type(exc).__name__}: {exc}") from None
    return "".join(chunks)


def _template_line(exc: BaseException) -> int | None:
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == "<template>"]
    return frames[-1].lineno if frames else None
