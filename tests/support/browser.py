"""Serving an engine's web app on 127.0.0.1 for Playwright with Debian's Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from engine.engine import Engine
from tests.support.live_server import serving
from tests.support.served import CHROMIUM, CHROMIUM_ARGS, require_browser

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "require_browser", "serve"]


@contextmanager
def serve(runtime: Engine) -> Iterator[str]:
    """The engine's app at a free port in a background uvicorn thread; yields its base URL."""
    with serving(runtime.web_app()) as base:
        yield base
