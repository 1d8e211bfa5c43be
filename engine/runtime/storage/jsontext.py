"""JSON text for the database's JSON columns and the API's answers, written by orjson.

Every audit event, trace, timer payload and API answer is JSON; the standard library's encoder
took ~5 % of an intake delivery (bench/RESULTS.md). orjson writes the same compact text
(UTF-8, no spaces, keys in insertion order) ~10× faster. What it refuses (integers beyond 64
bits) goes to the standard library, which decides as before.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.responses import JSONResponse as _StarletteJSONResponse

_OPTIONS = orjson.OPT_NON_STR_KEYS  # {1: …} becomes {"1": …}, as json.dumps does


def dumps(value: Any) -> str:
    """Compact JSON text of `value` (what json.dumps(…, ensure_ascii=False, separators=(",", ":")) gives)."""
    return _encoded(value).decode()


def loads(text: str | bytes | int | float) -> Any:
    """The value of JSON text. On SQLite a JSON column has numeric affinity, so a bare number
    written into one (before json fields refused scalars, or by hand) reads back as a number,
    not text: it is returned as it is, so such a row still reads instead of failing the page."""
    if isinstance(text, (int, float)):
        return text
    return orjson.loads(text)


def _encoded(value: Any) -> bytes:
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


class JSONResponse(_StarletteJSONResponse):
    """Starlette's JSONResponse with the body written by orjson."""

    def render(self, content: Any) -> bytes:
        return _encoded(content)
