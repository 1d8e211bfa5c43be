"""The screens in a real browser: Playwright driving Debian's Chromium against the app served
by uvicorn over a SQLite file with the shipped blueprint and the demo data.

Each step asserts what the user sees. Screenshots of the main screens go to test-artifacts/.
Without Chromium or Playwright the tests skip with the reason — except in CI (CI=true),
where they fail: `./run.sh test` installs both.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.engine import Engine
from engine.io.demo import demo_password
from engine.runtime.records.actors import SYSTEM
from tests.support.blueprints import SHIPPED_CRM
from tests.support.browser import chromium, new_tab
from tests.support.browser import screenshot as shot
from tests.support.served import require_browser, serve_demo

@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Engine]]:
    require_browser()
    with serve_demo(tmp_path_factory.mktemp("browser") / "crm.sqlite", SHIPPED_CRM, leads=40) as served:
        yield served


@pytest.fixture(scope="module")
def browser(served: Any) -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    tab = new_tab(browser, 1280, 900, timeout_ms=10_000)
    yield tab
    tab.context.close()


def sign_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/lead")
    assert "/login" in page.url
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(demo_password(username))
    shot(page, "01-login")
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(re.compile(r"/lead$"))


def test_rep_creates_a_lead_fixing_an_invalid_field_then_finds_and_opens_it(served: Any, page: Any) -> None:
    from playwright.sync_api import expect
    base, runtime = served
    sign_in(page, base, "wang")
    expect(page.get_by_role("heading", name="全部线索")).to_be_visible()
    expect(page.locator(".who")).to_contain_text("王磊")
    shot(page, "02-lead-list")

    page.get_by_role("link", name="新建").click()
    expect(page.get_by_role("heading", name="新建 线索")).to_be_visible()
    page.get_by_label("客户姓名").fill("浏览器测试客户")
    page.get_by_label("公司名称").fill("浏览器精工有限公司")
    page.get_by_label("手机").fill("12345")
    page.get_by_label("来源渠道").select_option("expo")
    page.get_by_role("button", name="保存").click()

    phone = page.locator('[data-field="phone"]')
    expect(phone.locator(".field-error")).to_contain_text("“12345”不是有效的电话号码")
    expect(page.get_by_label("手机")).to_have_value("12345")
    expect(page.get_by_label("客户姓名")).to_have_value("浏览器测试客户")
    shot(page, "03-form-with-error")

    page.get_by_label("手机").fill("13912345678")
    page.get_by_role("button", name="保存").click()
    expect(page.get_by_role("heading", name="浏览器测试客户")).to_be_visible()
    expect(page.locator(".flash")).to_contain_text("已创建")

    page.get_by_role("link", name="线索", exact=True).first.click()
    page.get_by_role("searchbox", name="搜索", exact=True).fill("浏览器精工")
    page.get_by_role("button", name="筛选").click()
    expect(page.locator(".totals")).to_contain_text("共 1 条")
    row = page.locator("table.records tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("+8613912345678")
    assert "q=" in page.url  # the search is in the URL: bookmarking it saves the filter
    row.get_by_role("link", name="浏览器测试客户").click()
    expect(page.get_by_role("heading", name="浏览器测试客户")).to_be_visible()
    expect(page.locator(".timeline")).to_contain_text("王磊")
    expect(page.locator(".timeline")).to_contain_text("创建了记录")
    shot(page, "04-record-page")


def test_linking_a_contact_to_an_old_account_by_typing_its_name(served: Any, page: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from playwright.sync_api import expect
    import sqlalchemy as sa
    import engine.runtime.web.screens.site as site_module
    monkeypatch.setattr(site_module, "LINK_OPTIONS_LIMIT", 5)  # the select's newest-N no longer holds them all
    base, runtime = served
    accounts = runtime.schema.table("account")
    with runtime.db.read() as connection:
        oldest = connection.execute(sa.select(accounts.c.id, accounts.c.name).order_by(accounts.c.id).limit(1)).one()
    sign_in(page, base, "admin")
    page.goto(f"{base}/contact/new")
    account = page.get_by_label("所属客户")
    expect(account).to_have_attribute("data-link-search", "/api/account")
    account.press_sequentially(oldest.name[:6], delay=30)
    suggestion = page.locator(f'#l-account option[value="{oldest.name} (#{oldest.id})"]')
    expect(suggestion).to_have_count(1)  # asked the API as the user typed
    account.fill(f"{oldest.name} (#{oldest.id})")  # what choosing the suggestion puts in the box
    page.get_by_label("姓名").fill("浏览器联系人")
    page.get_by_role("button", name="保存").click()
    expect(page.get_by_role("heading", name="浏览器联系人")).to_be_visible()
    expect(page.locator(f'a[href="/account/{oldest.id}"]').first).to_be_visible()
    shot(page, "05-contact-linked-by-search")


def _deal_in_demo(runtime: Engine, owner: int, name: str) -> dict[str, Any]:
    """An opportunity that earned the demo stage (deck, questions, influencer, a done demo)."""
    account = runtime.records.create("account", {"name": f"{name}客户", "owner": owner}, actor=SYSTEM).record
    contact = runtime.records.create("contact", {"name": "刘总", "account": account["id"], "role": "decision_maker",
                                                 "owner": owner}, actor=SYSTEM).record
    deck = runtime.records.store_file("演示方案.pdf", "application/pdf", b"%PDF deck", actor=SYSTEM)
    deal = runtime.records.create("opportunity", {
        "name": name, "account": account["id"], "owner": owner, "amount": {"amount": "88000"},
        "demo_deck": deck["id"], "customer_questions": "交期？", "decision_influencer": contact["id"],
        "next_follow_up": (dt.date.today() + dt.timedelta(days=3)).isoformat()}, actor=SYSTEM,
        created_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=200)).record  # the column's last card
    runtime.records.create("activity", {"subject": "演示", "kind": "demo", "done": True, "outcome": "interested",
                                        "opportunity": deal["id"]},
                           actor=SYSTEM)
    return runtime.records.transition("opportunity", deal["id"], "demo", actor=SYSTEM)


def _drop(page: Any, card: Any, column: str) -> None:
    """Drag `card` onto `column` level with it, so that nothing scrolls between press and release."""
    source = card.bounding_box()
    target = page.locator(f'.column[data-value="{column}"]')
    box = target.bounding_box()
    card.drag_to(target, source_position={"x": 3, "y": 3},
                 target_position={"x": box["width"] / 2, "y": source["y"] - box["y"] + 10})


def _stage(runtime: Engine, deal: dict[str, Any], wanted: str) -> None:
    deadline = time.monotonic() + 5
    while runtime.records.get("opportunity", deal["id"], actor=SYSTEM)["stage"] != wanted:
        assert time.monotonic() < deadline, f"the move to {wanted} did not reach the database"
        time.sleep(0.1)


def test_a_refused_drop_lists_what_the_quote_stage_needs_on_the_card_then_the_rep_satisfies_it(
        served: Any, page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect
    from engine.runtime.records.errors import StageRefused
    base, runtime = served
    wang = runtime.users.find("wang")
    assert wang is not None
    deal = _deal_in_demo(runtime, wang.id, "看板拖拽测试商机")
    with pytest.raises(StageRefused) as api_refusal:
        runtime.records.transition("opportunity", deal["id"], "quote", actor=SYSTEM)
    expected = [item["what"] for item in api_refusal.value.items("zh")]
    assert expected == ["上传客户签字报价单"]  # (amount is set; no discount, so no price approval)

    sign_in(page, base, "wang")
    page.goto(f"{base}/opportunity/board")
    card = page.locator(f'.kanban-card[data-id="{deal["id"]}"]')
    expect(page.locator('.column[data-value="demo"]').locator(card)).to_have_count(1)
    # scrolled down, as a rep working through a long column is: the old message sat at the top, unseen
    card.evaluate("(element) => element.scrollIntoView({block: 'center'})")
    assert page.evaluate("window.scrollY") > 0
    _drop(page, card, "quote")
    refusal = card.locator(".card-refusal")
    expect(refusal).to_be_visible()
    expect(refusal).to_be_in_viewport()
    expect(refusal).to_contain_text("无法移动：不能进入“方案报价”")
    for what in expected:
        expect(refusal).to_contain_text(what)
    expect(refusal).to_contain_text("上传文件到“客户签字报价单”（PDF、图片）")
    expect(page.locator('.column[data-value="demo"]').locator(card)).to_have_count(1)
    assert runtime.records.get("opportunity", deal["id"], actor=SYSTEM)["stage"] == "demo"
    shot(page, "06-board-refused-move")

    card.locator("select").select_option("lost")  # the per-card select (phones) is answered the same way
    expect(card.locator(".card-refusal")).to_contain_text("无法移动：不能进入“输单”")
    expect(card.locator(".card-refusal")).to_contain_text("填写输单原因")
    card.get_by_role("button", name="关闭说明").click()  # dismissed by a button named in the reader's language
    expect(card.locator(".card-refusal")).to_have_count(0)

    # the record page: the next stage's checklist, with a one-click upload
    page.goto(f"{base}/opportunity/{deal['id']}")
    expect(page.locator(".stage-bar .stage.current")).to_have_text(re.compile("方案演示"))
    item = page.locator(".requirement.missing", has_text="上传客户签字报价单")
    expect(item).to_be_visible()
    expect(page.locator(".guidance")).to_contain_text("演示后 24 小时内发出方案")
    quote = tmp_path / "签字报价单.pdf"
    quote.write_bytes(b"%PDF-1.4 signed")
    item.locator('input[type="file"]').set_input_files(str(quote))
    item.get_by_role("button", name="上传", exact=True).click()
    expect(page.locator(".flash")).to_contain_text("已上传到“客户签字报价单”")
    expect(page.locator(".requirement.met", has_text="上传客户签字报价单")).to_be_visible()
    shot(page, "06b-record-page-funnel")
    page.get_by_role("button", name="推进到“方案报价”").click()
    expect(page.locator(".flash")).to_contain_text("已移动到“方案报价”")
    expect(page.locator(".stage-bar .stage.current")).to_have_text(re.compile("方案报价"))
    _stage(runtime, deal, "quote")

    # On a phone (no drag and drop) the card's "move to" select does the same: back to demo is a return.
    page.goto(f"{base}/opportunity/board")
    card.locator("select").select_option("demo")
    expect(page.locator('.column[data-value="demo"]').locator(f'[data-id="{deal["id"]}"]')).to_have_count(1)
    _stage(runtime, deal, "demo")


def test_language_switch_and_phone_width(served: Any, page: Any, browser: Any) -> None:
    from playwright.sync_api import expect
    base, _ = served
    sign_in(page, base, "manager")
    page.get_by_role("button", name="English").click()
    expect(page.get_by_role("heading", name="All leads")).to_be_visible()
    expect(page.get_by_role("link", name="Opportunities")).to_be_visible()
    expect(page.get_by_role("link", name="Export CSV")).to_be_visible()
    page.goto(f"{base}/opportunity")
    expect(page.get_by_role("heading", name="All opportunities")).to_be_visible()
    shot(page, "07-english-list")
    page.get_by_role("button", name="中文").click()
    expect(page.get_by_role("heading", name="全部商机")).to_be_visible()

    phone = browser.new_context(viewport={"width": 375, "height": 800}, locale="zh-CN", is_mobile=True,
                                has_touch=True)
    small = phone.new_page()
    try:
        sign_in(small, base, "li")
        expect(small.get_by_role("heading", name="全部线索")).to_be_visible()
        width = small.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"the list page is {width}px wide on a 375px phone"
        shot(small, "08-phone-list")
        small.locator("table.records tbody tr a").first.click()
        assert small.evaluate("document.documentElement.scrollWidth") <= 375
        shot(small, "09-phone-record")
    finally:
        phone.close()


def test_dashboards_and_admin_screens_fit_a_phone_and_the_desktop_menu_shows_every_section(
        served: Any, browser: Any) -> None:
    """Number cards sat in a 320px-minimum grid with charts spanning two columns: the home
    dashboards were 469–504px wide on a 390px phone; the admin's blueprint overview widened
    by its tables. On a desktop, the one-row menu hid its last sections off to the right."""
    base, _ = served
    for username, urls in (("wang", ["/dashboards/rep_home"]),
                           ("manager", ["/dashboards/manager_home", "/dashboards/lead_timeliness"]),
                           ("admin", ["/admin/blueprint", "/admin/users"])):
        phone = browser.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN", is_mobile=True,
                                    has_touch=True)
        small = phone.new_page()
        try:
            sign_in(small, base, username)
            for url in urls:
                small.goto(f"{base}{url}")
                width = small.evaluate("document.documentElement.scrollWidth")
                assert width <= 390, f"{url} is {width}px wide on a 390px phone"
            shot(small, f"10-phone-{username}")
        finally:
            phone.close()
    desktop = new_tab(browser, 1440, 900, timeout_ms=10_000)
    try:
        sign_in(desktop, base, "admin")
        menu = desktop.locator("nav.menu")
        assert menu.evaluate("(nav) => nav.scrollWidth <= nav.clientWidth"), "the menu is cut off at 1440px"
        last = menu.locator("a").last
        box = last.bounding_box()
        assert box is not None and box["x"] + box["width"] <= 1440  # the admin's last entry is on screen
        shot(desktop, "11-desktop-menu")
    finally:
        desktop.context.close()
