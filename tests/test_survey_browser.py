"""The satisfaction survey in a real browser on a phone-sized screen: Chromium opens the link a
closed ticket got, answers 1–5 with a comment, and the second visit says the link was used.
Without Chromium or Playwright the test skips with the reason — except in CI (CI=true)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from engine.engine import Engine, open_engine
from engine.rules import FakeClock
from engine.runtime.records.actors import SYSTEM
from tests.support.blueprints import SHIPPED_SERVICE, load
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, require_browser, serve
from tests.support.passwords import CHEAP_HASHER


@pytest.fixture
def desk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    require_browser()
    monkeypatch.setenv("CRM_SECRET_KEY", "survey-browser-secret-" + "s" * 40)
    runtime = open_engine(load(SHIPPED_SERVICE), f"sqlite:///{tmp_path / 'crm.sqlite'}", clock=FakeClock(),
                          password_hasher=CHEAP_HASHER)
    try:
        yield runtime
    finally:
        runtime.close()


def test_a_customer_answers_the_survey_on_a_phone_once(desk: Engine) -> None:
    from playwright.sync_api import sync_playwright

    customer = desk.records.create("account", {"name": "深圳精密"}, actor=SYSTEM).record["id"]
    ticket = desk.records.create("ticket", {"subject": "主轴异响", "customer": customer}, actor=SYSTEM).record
    desk.records.update("ticket", ticket["id"], {"status": "closed", "resolution": "补充润滑"}, actor=SYSTEM)
    link = urlsplit(desk.records.get("ticket", ticket["id"], actor=SYSTEM)["survey_link"]).path
    with serve(desk) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN", is_mobile=True,
                                      has_touch=True)
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.goto(base + link)
        assert page.get_by_text("您对本次服务满意吗？").is_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
        page.locator("label.survey-point", has_text="5").tap()
        page.fill("#comment", "响应很快")
        page.get_by_role("button", name="提交评价").tap()
        assert "感谢您的评价" in page.locator("[data-outcome=thanks]").inner_text()

        page.goto(base + link)  # the same link again
        assert "已使用过" in page.locator("[data-outcome=used]").inner_text()
        assert page.locator("input[name=score]").count() == 0
        context.close()
        browser.close()
    answered = desk.records.get("ticket", ticket["id"], actor=SYSTEM)
    assert (answered["satisfaction"], answered["satisfaction_comment"]) == (5, "响应很快")
