"""The working day in a real browser: Playwright driving Debian's Chromium against the shipped
blueprint with the demo data, served by uvicorn over a SQLite file.

A manager ticks the team's unassigned queue and assigns it, which the rep then owns and no other
rep sees; the money widget shows its amount at 390×844 and 1440×900. Screenshots go to
test-artifacts/workday-*.png. (Logging a call and lead conversion in the browser, on a fake clock:
tests/test_browser_log_call.py.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from engine.engine import Engine
from engine.runtime.records.actors import SYSTEM
from tests.support.blueprints import SHIPPED_CRM
from tests.support.browser import chromium, new_tab, screenshot, sign_in
from tests.support.chinese_screens import assert_no_english_message as no_english
from tests.support.served import require_browser, serve_demo



@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Engine]]:
    require_browser()
    with serve_demo(tmp_path_factory.mktemp("workday") / "crm.sqlite", SHIPPED_CRM, leads=40) as served:
        yield served


@pytest.fixture(scope="module")
def browser(served: Any) -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def shot(page: Any, name: str) -> None:
    screenshot(page, f"workday-{name}")


def test_a_manager_assigns_the_unassigned_queue_and_other_reps_never_see_it(served: Any, browser: Any) -> None:
    from playwright.sync_api import expect
    base, runtime = served
    queue = []
    for region in ("east", "north"):
        record = runtime.records.create("lead", {"name": f"待分配{region}", "source": "website", "region": region},
                                        actor=SYSTEM).record
        queue.append(runtime.records.update("lead", record["id"], {"owner": None}, actor=SYSTEM)["id"])
    page = new_tab(browser)
    sign_in(page, base, "manager")
    page.goto(f"{base}/lead?view=unassigned")
    expect(page.get_by_role("heading", name="待分配线索")).to_be_visible()
    for record_id in queue:
        page.get_by_label(f"#{record_id}", exact=True).check()
    page.locator('select[name="owner"]').last.select_option(str(runtime.users.user_id("li")))
    shot(page, "03-unassigned-queue")
    page.get_by_role("button", name="分配").click()
    expect(page.locator(".flash").first).to_contain_text("2")
    shot(page, "04-queue-assigned")
    no_english(page, "the manager's unassigned queue")
    assert all(runtime.records.get("lead", i, actor=SYSTEM)["owner"] == runtime.users.user_id("li") for i in queue)
    page.context.close()
    rep = new_tab(browser)
    sign_in(rep, base, "wang")
    rep.goto(f"{base}/lead?view=unassigned")
    for record_id in queue:
        expect(rep.locator(f'a[href="/lead/{record_id}"]')).to_have_count(0)
    rep.context.close()


@pytest.mark.parametrize(("width", "height"), [(390, 844), (1440, 900)])
def test_the_money_widget_shows_its_amount(served: Any, browser: Any, width: int, height: int) -> None:
    base, _ = served
    page = new_tab(browser, width, height)
    sign_in(page, base, "wang")
    page.goto(f"{base}/opportunity/new")
    amount = page.locator('[data-field="amount"] .money input').first
    currency = page.locator('[data-field="amount"] .money input.currency')
    amount.fill("1280000")
    box, other = amount.bounding_box(), currency.bounding_box()
    assert box is not None and other is not None
    assert box["width"] >= 100  # room for the amount
    assert box["x"] + box["width"] <= other["x"] + 1  # side by side, not overlapping
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot(page, f"06-money-{width}")
    page.context.close()
