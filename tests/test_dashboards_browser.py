"""The manager's home dashboard in a real browser (Debian's chromium via Playwright), served by
uvicorn over a SQLite file with the shipped blueprint and the demo data: the charts are SVG
with accessible titles, and a figure's link opens its records."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.support.blueprints import SHIPPED_CRM
from tests.support.browser import chromium, fill_sign_in, new_tab, screenshot
from tests.support.served import require_browser, serve_demo


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_browser()
    with serve_demo(tmp_path_factory.mktemp("dashboards") / "crm.sqlite", SHIPPED_CRM) as (url, _):
        yield url


def test_the_managers_home_draws_svg_charts_with_titles_and_links_to_records(base: str) -> None:
    from playwright.sync_api import expect
    with chromium() as browser:
        page = new_tab(browser, 1280, 1400)
        fill_sign_in(page, base, "manager")
        page.wait_for_url(re.compile(r"/dashboards/manager_home"))
        chart = page.locator('svg[role="img"][aria-label="各阶段商机金额"]')
        expect(chart).to_be_visible()
        assert chart.locator("title").first.text_content() == "各阶段商机金额"
        box = chart.bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 100
        # this period's bars and the previous period's are told apart by colour (both were drawn grey)
        compared = page.locator('svg[aria-label="本期各来源新线索（对比上期）"]')
        fills = [compared.locator(f".series.serie-{index} rect").first.evaluate("bar => getComputedStyle(bar).fill")
                 for index in (0, 1)]
        assert fills == ["rgb(47, 111, 223)", "rgb(122, 167, 239)"], fills
        shot = screenshot(page, "dashboard-manager-home")
        assert len(shot) > 10_000
        card = page.locator("#w-new_leads .card-value a")
        number = int(card.inner_text().replace(",", ""))
        card.click()
        page.wait_for_url(re.compile(r"/lead\?"))
        expect(page.locator(".totals")).to_contain_text(str(number))


def test_the_process_rates_line_chart_draws_with_its_title_and_each_point_opens_its_records(base: str) -> None:
    from playwright.sync_api import expect
    with chromium() as browser:
        page = new_tab(browser, 1280, 1400)
        fill_sign_in(page, base, "manager")
        page.wait_for_url(re.compile(r"/dashboards/manager_home"))
        expect(page.locator("#w-sla_attainment_week .card-value a")).to_contain_text("%")
        page.goto(f"{base}/dashboards/process_rates")
        chart = page.locator('svg[role="img"][aria-label="SLA 达成率（每周）"]')
        expect(chart).to_be_visible()
        assert chart.locator("title").first.text_content() == "SLA 达成率（每周）"
        box = chart.bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 100
        assert chart.locator("path.line").count() >= 1  # this quarter's line (and last quarter's)
        shot = screenshot(page, "dashboard-process-rates")
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
