"""The customer 360° page in a real browser (Chromium via Playwright) on the shipped CRM: one
timeline merged from the account's contacts, deals, orders, tickets and the deals' activities;
the health score with its reasons; the relationship graph; and, on a deal, the delivery-risk
banner with the customer's open tickets."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.engine import Engine, open_engine
from engine.runtime.ops.users import NewUser
from engine.runtime.records.actors import SYSTEM
from tests.support.blueprints import SHIPPED_CRM, load
from tests.support.browser import chromium, require_browser, serve

PASSWORD = "panorama-Test-2026!"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Engine, dict[str, int]]]:
    require_browser()
    path = tmp_path_factory.mktemp("panorama") / "crm.sqlite"
    runtime = open_engine(load(SHIPPED_CRM), f"sqlite:///{path}")
    admin = runtime.users.add(NewUser("boss", "老板", "admin", password=PASSWORD))
    rep = runtime.users.add(NewUser("li", "李雷", "sales_rep", "east", password=PASSWORD))
    create = runtime.records.create
    group = create("account", {"name": "远航集团", "owner": admin.id}, actor=SYSTEM).record
    account = create("account", {"name": "宁波远航精密", "parent": group["id"], "owner": rep.id}, actor=SYSTEM).record
    create("account", {"name": "远航精密（苏州）", "parent": account["id"]}, actor=SYSTEM)
    boss = create("contact", {"name": "周总", "account": account["id"], "job_title": "总经理",
                              "role": "decision_maker"}, actor=SYSTEM).record
    create("contact", {"name": "吴工", "account": account["id"], "job_title": "设备部主管", "role": "technical",
                       "reports_to": boss["id"]}, actor=SYSTEM)
    deal = create("opportunity", {"name": "二期产线改造", "account": account["id"], "owner": rep.id}, actor=SYSTEM).record
    create("activity", {"subject": "现场勘查产线", "opportunity": deal["id"], "kind": "visit", "done": True,
                        "outcome": "interested"}, actor=SYSTEM)
    product = create("product", {"name": "激光切割机 LC-3015", "model_code": "LC-3015", "category": "equipment",
                                 "price": 415000}, actor=SYSTEM).record
    create("order", {"order_no": "SO-2026-0001", "account": account["id"], "product": product["id"],
                     "amount": 415000}, actor=SYSTEM)
    ticket = create("ticket", {"subject": "切割机到货延误", "customer": account["id"], "category": "delivery"},
                    actor=SYSTEM).record
    # the knowledge base: two fixes for LC-3015 / E-101; the second settled two closed tickets, the first one
    first = create("solution", {"title": "重置伺服参数", "product_model": "LC-3015", "fault_code": "E-101",
                                "steps": "断电后重置伺服参数"}, actor=SYSTEM).record
    second = create("solution", {"title": "更换伺服驱动板", "product_model": "LC-3015", "fault_code": "E-101",
                                 "steps": "更换驱动板并试运行"}, actor=SYSTEM).record
    create("solution", {"title": "别的型号的方案", "product_model": "US-60", "fault_code": "E-101",
                        "steps": "不相关"}, actor=SYSTEM)
    for used in (first, second, second):
        create("ticket", {"subject": "已解决的报警", "customer": account["id"], "product_model": "LC-3015",
                          "fault_code": "E-101", "status": "closed", "resolution": "已处理", "solution": used["id"]},
               actor=SYSTEM)
    create("ticket", {"subject": "未解决的不算", "customer": account["id"], "product_model": "LC-3015",
                      "fault_code": "E-101", "status": "open", "solution": first["id"]}, actor=SYSTEM)
    fault = create("ticket", {"subject": "切割头报警 E-101", "customer": account["id"], "product_model": "LC-3015",
                              "fault_code": "E-101"}, actor=SYSTEM).record
    with serve(runtime) as base:
        yield base, runtime, {"account": account["id"], "deal": deal["id"], "ticket": ticket["id"],
                              "fault": fault["id"]}
    runtime.close()


@pytest.fixture(scope="module")
def browser(world: Any) -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any, world: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    base = world[0]
    tab.goto(f"{base}/login")
    tab.get_by_label("用户名").fill("boss")
    tab.get_by_label("密码").fill(PASSWORD)
    tab.get_by_role("button", name="登录").click()
    tab.wait_for_url(re.compile(r"/$|/lead|/dashboards/"))  # an admin lands on their dashboard
    yield tab
    context.close()


def _shot(page: Any, name: str) -> None:
    folder = Path(__file__).resolve().parent.parent / "test-artifacts"
    folder.mkdir(exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def test_the_account_page_merges_the_timeline_of_everything_linked_to_it(world: Any, page: Any) -> None:
    from playwright.sync_api import expect
    base, _, ids = world
    page.goto(f"{base}/account/{ids['account']}")
    timeline = page.locator("section.merged-timeline")
    expect(timeline.get_by_role("heading", name="全景动态")).to_be_visible()
    for kind, title in (("contact", "周总"), ("contact", "吴工"), ("opportunity", "二期产线改造"),
                        ("order", "SO-2026-0001"), ("ticket", "切割机到货延误"), ("activity", "现场勘查产线")):
        expect(timeline.locator(f'li[data-kind="{kind}"]', has_text=title).first).to_be_visible()
    # the delivery ticket flagged the deal: its change is on the account's timeline too
    expect(timeline.locator('li[data-kind="opportunity"]', has_text="交付风险: 是").first).to_be_visible()
    _shot(page, "panorama-account")

    timeline.get_by_role("link", name="工单", exact=True).click()
    page.wait_for_url(re.compile(r"timeline=ticket"))
    entries = page.locator("section.merged-timeline li[data-kind]")
    expect(entries.first).to_be_visible()
    assert set(entries.evaluate_all("items => items.map(item => item.dataset.kind)")) == {"ticket"}


def test_the_account_page_shows_its_health_with_reasons_and_its_relationships(world: Any, page: Any) -> None:
    from playwright.sync_api import expect
    base, runtime, ids = world
    page.goto(f"{base}/account/{ids['account']}")
    account = runtime.records.get("account", ids["account"], actor=SYSTEM)
    health = page.locator("section.health-score")
    expect(health.locator(".score-value")).to_have_text(str(account["health_score"]))
    expect(health.locator(".reasons li", has_text="未解决的质量/交付投诉 1 张")).to_be_visible()
    expect(health.locator(".reasons li", has_text="有交付风险的在跟商机 1 个")).to_be_visible()
    graph = page.locator("svg.relations")
    for name in ("远航集团", "宁波远航精密", "远航精密（苏州）", "周总", "吴工"):
        expect(graph.locator("text", has_text=name)).to_have_count(1)
    expect(graph.locator("text", has_text="总经理 · 决策人")).to_have_count(1)
    expect(graph.locator("path.reports")).to_have_count(1)  # 吴工 reports to 周总


def test_a_deal_shows_the_delivery_risk_banner_and_the_customers_open_ticket(world: Any, page: Any) -> None:
    from playwright.sync_api import expect
    base, _, ids = world
    page.goto(f"{base}/opportunity/{ids['deal']}")
    expect(page.get_by_role("alert")).to_contain_text("交付风险")
    context = page.locator("section.customer-context")
    expect(context.get_by_role("link", name="宁波远航精密")).to_be_visible()
    expect(context.locator("li.open", has_text="切割机到货延误")).to_be_visible()
    _shot(page, "panorama-deal")

    page.goto(f"{base}/ticket/{ids['ticket']}")  # the service side sees the orders, deals and owner
    context = page.locator("section.customer-context")
    expect(context).to_contain_text("李雷")
    expect(context.locator("li", has_text="SO-2026-0001")).to_be_visible()
    expect(context.locator("li.open", has_text="二期产线改造")).to_be_visible()


def test_a_fault_ticket_suggests_solutions_ranked_by_the_tickets_they_settled(world: Any, page: Any) -> None:
    from playwright.sync_api import expect
    base, _, ids = world
    page.goto(f"{base}/ticket/{ids['fault']}")
    panel = page.locator("section.suggestions")
    expect(panel.get_by_role("heading", name="推荐方案（知识库）")).to_be_visible()
    rows = panel.locator("li")
    expect(rows).to_have_count(2)  # the other model's fix is not suggested
    expect(rows.nth(0)).to_contain_text("更换伺服驱动板")
    expect(rows.nth(0)).to_contain_text("已解决 2 张同类工单")
    expect(rows.nth(1)).to_contain_text("重置伺服参数")
    expect(rows.nth(1)).to_contain_text("已解决 1 张同类工单")  # the open ticket does not count
    _shot(page, "panorama-ticket-suggestions")
