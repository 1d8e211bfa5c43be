"""The manager's home dashboard in a real browser (Debian's chromium via Playwright), served by
uvicorn over a SQLite file with the shipped blueprint and the demo data: the charts are SVG
with accessible titles, and a figure's link opens its records."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.io.demo import demo_password
from tests.support.blueprints import SHIPPED_CRM
from tests.support.served import CHROMIUM, require_browser, serve_demo

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_browser()
    with serve_demo(tmp_path_factory.mktemp("dashboards") / "crm.sqlite", SHIPPED_CRM) as (url, _):
        yield url


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


def test_the_process_rates_line_chart_draws_with_its_title_and_each_point_opens_its_records(base: str) -> None:
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
        expect(page.locator("#w-sla_attainment_week .card-value a")).to_contain_text("%")
        page.goto(f"{base}/dashboards/process_rates")
        chart = page.locator('svg[role="img"][aria-label="SLA 达成率（每周）"]')
        expect(chart).to_be_visible()
        assert chart.locator("title").first.text_content() == "SLA 达成率（每周）"
        box = chart.bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 100
        assert chart.locator("path.line").count() >= 1  # this quarter's line (and last quarter's)
        ARTIFACTS.mkdir(exist_ok=True)
        shot = page.screenshot(path=str(ARTIFACTS / "dashboard-process-rates.png"), full_page=True)
        assert len(shot) > 10_000
        cell = page.locator("#w-sla_attainment_weekly table tbody tr td a").first
        href = cell.get_attribute("href")
        assert href is not None and "sla=met" in href
        assert chart.locator(f'a[*|href="{href}"]').count() == 1  # the point links where its cell does
        counted = page.locator("#w-sla_attainment .card-value a")
        detail = page.locator("#w-sla_attainment .card-detail a").inner_text()
        numerator = int(detail.split("/")[0])
        counted.click()
        page.wait_for_url(re.compile(r"/lead\?.*sla=met"))
        expect(page.locator(".totals")).to_contain_text(str(numerator))
        browser.close()
