"""The manager's home dashboard in a real browser (Debian's chromium via Playwright), served by
uvicorn over a SQLite file with the shipped blueprint and the demo data: the charts are SVG
with accessible titles, and a figure's link opens its records."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.engine import open_engine
from engine.io.demo import demo_password, seed_demo
from engine.metamodel import load_blueprint
from engine.rules import FUNCTION_NAMES
from tests.support.blueprints import SHIPPED_CRM
from tests.support.services import IN_CI

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not os.access(CHROMIUM, os.X_OK):
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is missing — CI=true, so browser tests must run")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    import uvicorn
    path = tmp_path_factory.mktemp("dashboards") / "crm.sqlite"
    runtime = open_engine(load_blueprint(SHIPPED_CRM, functions=FUNCTION_NAMES), f"sqlite:///{path}")
    seed_demo(runtime, leads=40)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(runtime.web_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    runtime.close()


def test_the_managers_home_draws_svg_charts_with_titles_and_links_to_records(base: str) -> None:
    from playwright.sync_api import expect, sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                                             "--disable-dev-shm-usage"])
        page = browser.new_context(viewport={"width": 1280, "height": 1400}, locale="zh-CN").new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{base}/")
        page.get_by_label("用户名").fill("manager")
        page.get_by_label("密码").fill(demo_password("manager"))
        page.get_by_role("button", name="登录").click()
        page.wait_for_url(re.compile(r"/dashboards/manager_home"))
        chart = page.locator('svg[role="img"][aria-label="各阶段商机金额"]')
        expect(chart).to_be_visible()
        assert chart.locator("title").first.text_content() == "各阶段商机金额"
        box = chart.bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 100
        ARTIFACTS.mkdir(exist_ok=True)
        shot = page.screenshot(path=str(ARTIFACTS / "dashboard-manager-home.png"), full_page=True)
        assert len(shot) > 10_000
        card = page.locator("#w-new_leads .card-value a")
        number = int(card.inner_text().replace(",", ""))
        card.click()
        page.wait_for_url(re.compile(r"/lead\?"))
        expect(page.locator(".totals")).to_contain_text(str(number))
        browser.close()
