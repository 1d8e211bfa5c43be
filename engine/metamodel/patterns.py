"""Regular expressions from blueprints and expressions, compiled with RE2.

RE2 matches in time linear in the input, so no pattern an analyst writes and no value a
user types can make a match run for minutes (catastrophic backtracking). The price is no
backreferences or look-arounds; such patterns are refused with a clear message.
"""

from __future__ import annotations

import functools
from typing import Protocol

import re2

from engine.metamodel.messages import Msg, MsgError

MAX_PATTERN_LENGTH = 500
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False


class Pattern(Protocol):
    """What we use of a compiled RE2 pattern (re2 ships no type hints); a match or None."""

    def search(self, text: str) -> object | None: ...

    def fullmatch(self, text: str) -> object | None: ...


class PatternError(MsgError):
    """The pattern is not a regular expression we can run safely; the message (a `Msg`) says why."""


@functools.lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> Pattern:
    """The compiled pattern, or PatternError naming what to change."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PatternError(Msg("the pattern is longer than {limit} characters", limit=MAX_PATTERN_LENGTH))
    try:
        compiled: Pattern = re2.compile(pattern, _OPTIONS)
        return compiled
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise PatternError(Msg("not a supported regular expression ({detail}); backreferences and "
                               "look-arounds are not available", detail=detail)) from None
