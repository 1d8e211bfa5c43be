"""The handover board in a real browser (Debian's chromium via Playwright), served by uvicorn over a
SQLite file: a column per node with its owner role and SLA, each card with its SLA state (an item
left past its node's SLA shows overdue), and the month's timeliness table per node and role."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from engine.engine import Engine
from engine.runtime.ops.users import NewUser
from engine.runtime.records.actors import SYSTEM
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, require_browser, serve
from tests.support.handover_blueprint import handover_blueprint

CST = ZoneInfo("Asia/Shanghai")
PASSWORD = "handover-pass-2026"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_board_shows_each_node_with_its_owner_and_each_item_with_its_sla_state(make_engine: Any,
                                                                                   clock: Any) -> None:
    require_browser()
    runtime: Engine = make_engine(handover_blueprint())
    runtime.users.add(NewUser("boss", "Boss Liu", "admin", password=PASSWORD))
    clock.set(dt.datetime(2026, 4, 8, 9, 0, tzinfo=CST))  # Wednesday
    late = runtime.records.create("delivery_handover", {"name": "华东机床 交付", "contract_no": "HT-1"}, actor=SYSTEM).record
    runtime.records.transition("delivery_handover", late["id"], "signing", field="node", actor=SYSTEM)
    clock.set(dt.datetime(2026, 4, 8, 16, 0, tzinfo=CST))
    fresh = runtime.records.create("delivery_handover", {"name": "华南注塑 交付"}, actor=SYSTEM).record
    clock.set(dt.datetime(2026, 4, 8, 16, 30, tzinfo=CST))  # signing (4 h) overdue since 14:30; solution (2 h) on track
    runtime.worker(environ={}).tick()

    from playwright.sync_api import expect, sync_playwright
    with serve(runtime) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(locale="zh-CN").new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{base}/login?next=/delivery_handover/board")
        page.get_by_label("用户名").fill("boss")
        page.get_by_label("密码").fill(PASSWORD)
        page.get_by_role("button", name="登录").click()
        page.wait_for_url(re.compile(r"/delivery_handover/board"))
        signing = page.locator('section.column[data-value="signing"]')
        expect(signing.locator(".node-owner")).to_have_text(re.compile(r"负责：Legal · 时限 4h"))
        expect(page.locator(f"#card-{late['id']} .sla")).to_have_text("已超时 · 截止 04-08 14:30")
        expect(page.locator(f"#card-{late['id']} .sla")).to_have_attribute("data-sla", "breached")
        expect(page.locator(f"#card-{fresh['id']} .sla")).to_have_text("时效内 · 截止 04-08 18:00")
        table = page.locator("table.timeliness-table")
        expect(table).to_be_visible()
        expect(table.locator("tbody tr").nth(0)).to_have_text(re.compile(r"方案确认\s*Sales rep\s*2h\s*1\s*1\s*0\s*0\s*100%"))
        expect(table.locator("tbody tr").nth(1)).to_have_text(re.compile(r"合同签署\s*Legal\s*4h\s*0\s*0\s*0\s*1\s*—"))
        browser.close()
