"""The app served on loopback for browser tests: uvicorn in a thread over a SQLite file with the
shipped blueprint and the demo data, and Debian's Chromium through Playwright."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.engine import Engine, open_engine
from engine.rules.time import FakeClock
from engine.io.demo import seed_demo
from tests.support.blueprints import load
from tests.support.live_server import serving
from tests.support.passwords import CHEAP_HASHER
from tests.support.services import missing

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parent.parent.parent / "test-artifacts"


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


def require_browser() -> None:
    """Skip (on a user's machine) or fail (in CI) without Playwright and Debian's Chromium."""
    missing(browser_missing(), "browser tests")


@contextmanager
def serve_demo(path: Path, blueprint: Path, *, leads: int = 40, clock: FakeClock | None = None
               ) -> Iterator[tuple[str, Engine]]:
    """The demo data on a SQLite file at `path`, served; yields the base URL and the engine.
    With `clock`, the engine (screens, SLA clocks, worker) runs on that fake clock."""
    runtime = open_engine(load(blueprint), f"sqlite:///{path}", password_hasher=CHEAP_HASHER, clock=clock)
    try:
        seed_demo(runtime, leads=leads)
        with serving(runtime.web_app()) as base:
            yield base, runtime
    finally:
        runtime.close()
