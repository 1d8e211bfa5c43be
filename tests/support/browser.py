"""Playwright with Debian's Chromium: serving an engine's web app on 127.0.0.1, launching the
browser, opening a Chinese tab of a given size, screenshots kept in test-artifacts/, signing in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from engine.engine import Engine
from engine.io.demo import demo_password
from tests.support.live_server import serving
from tests.support.served import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, require_browser

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "chromium", "fill_sign_in", "new_tab", "require_browser", "screenshot",
           "serve"]


@contextmanager
def serve(runtime: Engine) -> Iterator[str]:
    """The engine's app at a free port in a background uvicorn thread; yields its base URL."""
    with serving(runtime.web_app()) as base:
        yield base


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium (never a downloaded one), closed on the way out; call require_browser() first."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_tab(browser: Any, width: int = 1440, height: int = 900, *, timeout_ms: int = 15_000,
            **options: Any) -> Any:
    """A tab in a fresh context (its own cookies) with a Chinese locale and a viewport of that size."""
    context = browser.new_context(viewport={"width": width, "height": height}, locale="zh-CN", **options)
    tab = context.new_page()
    tab.set_default_timeout(timeout_ms)
    return tab


def screenshot(page: Any, name: str) -> bytes:
    """The whole page as test-artifacts/NAME.png (kept by CI); returns the PNG."""
    ARTIFACTS.mkdir(exist_ok=True)
    return bytes(page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True))


def fill_sign_in(page: Any, base: str, username: str, password: str | None = None) -> None:
    """Send the sign-in form as a person would (the demo's password unless given); the caller
    waits for the page the user should land on."""
    page.goto(f"{base}/login")
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(password or demo_password(username))
    page.get_by_role("button", name="登录").click()


def sign_in(page: Any, base: str, username: str) -> None:
    """Sign in as `username` with the demo's password and wait for the page the user lands on."""
    fill_sign_in(page, base, username)
    page.wait_for_load_state()
