"""The working day in a real browser: Playwright driving Debian's Chromium against the shipped
blueprint with the demo data, served by uvicorn over a SQLite file.

A rep logs a done call in a lead page's own form and lands back on it, touched, with the call in its
timeline; a manager ticks the team's unassigned queue and assigns it, which the rep then owns and
no other rep sees; the money widget shows its amount at 390×844 and 1440×900. Screenshots go to test-artifacts/workday-*.png. (Lead conversion in the browser, on a lead made
qualified by the test rather than found in the demo: tests/test_browser_log_call.py.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from engine.engine import Engine
from engine.runtime.records.actors import SYSTEM
from tests.support.blueprints import SHIPPED_CRM
from tests.support.browser import chromium, fill_sign_in, new_tab, screenshot
from tests.support.served import require_browser, serve_demo

ENGLISH_MESSAGE = re.compile(r"\b(you|your|please|cannot|must|is required|refused|permission|error)\b", re.I)


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


def sign_in(page: Any, base: str, username: str) -> None:
    fill_sign_in(page, base, username)
    page.wait_for_load_state()


def _user(runtime: Engine, username: str) -> int:
    users = runtime.schema.users
    with runtime.db.read() as connection:
        return int(connection.execute(sa.select(users.c.id).where(users.c.username == username)).scalar_one())


def _lead_of(runtime: Engine, owner: int, status: str) -> dict[str, Any]:
    table = runtime.schema.table("lead")
    with runtime.db.read() as connection:
        record_id = connection.execute(sa.select(table.c.id).where(table.c.owner == owner, table.c.status == status,
                                                                   table.c.first_touched_at.is_(None))
                                       .order_by(table.c.id).limit(1)).scalar() if status == "new" else \
            connection.execute(sa.select(table.c.id).where(table.c.owner == owner, table.c.status == status)
                               .order_by(table.c.id).limit(1)).scalar()
    if record_id is None:  # the demo gave this rep none: a fresh one of theirs
        record = runtime.records.create("lead", {"name": "浏览器新线索", "source": "expo", "owner": owner},
                                        actor=SYSTEM).record
        return record
    return runtime.records.get("lead", int(record_id), actor=SYSTEM)


def _no_english(page: Any) -> None:
    messages = " ".join(page.locator(".flash, .refusal, .field-error").all_inner_texts())
    assert not ENGLISH_MESSAGE.search(messages), messages


def test_a_rep_logs_a_done_call_from_the_lead_page_and_sees_it_count(served: Any, browser: Any) -> None:
    from playwright.sync_api import expect
    base, runtime = served
    wang = _user(runtime, "wang")
    record = _lead_of(runtime, wang, "new")
    page = new_tab(browser)
    sign_in(page, base, "wang")
    page.goto(f"{base}/lead/{record['id']}")
    form = page.locator("#log")  # the lead page's own "log it" form: no other page
    form.get_by_label("跟进方式").select_option("call")
    form.get_by_label("跟进结果").select_option("reached")
    form.get_by_label("沟通要点").fill("客户确认需求，约周四上门")
    shot(page, "01-log-call-form")
    form.get_by_role("button", name="记录").click()
    page.wait_for_url(re.compile(rf"/lead/{record['id']}#log$"))
    expect(page.locator(".flash")).to_contain_text("已记录电话")
    touched = runtime.records.get("lead", record["id"], actor=SYSTEM)
    assert touched["first_touched_at"] is not None and touched["status"] == "contacted"
    timeline = page.locator(".timeline")
    expect(timeline).to_contain_text("跟进记录「电话")
    expect(page.locator(".record-main")).to_contain_text("已联系")
    shot(page, "02-lead-touched")
    _no_english(page)
    page.context.close()


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
    page.locator('select[name="owner"]').last.select_option(str(_user(runtime, "li")))
    shot(page, "03-unassigned-queue")
    page.get_by_role("button", name="分配").click()
    expect(page.locator(".flash").first).to_contain_text("2")
    shot(page, "04-queue-assigned")
    _no_english(page)
    assert all(runtime.records.get("lead", i, actor=SYSTEM)["owner"] == _user(runtime, "li") for i in queue)
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
