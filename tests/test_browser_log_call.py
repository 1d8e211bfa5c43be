"""Logging a call on the record page, in a real browser: Playwright driving Debian's Chromium
against the shipped blueprint with the demo data, served by uvicorn over a SQLite file, on a fake
clock the test moves.

A rep logs a done call in the lead page's own form (at 1440×900 and at 390×844) and lands back on
the same page: the call is in the timeline, the first touch is set and the first-call SLA reads
stopped; days later, past the clock's due time, the worker breaches a lead nobody called and
leaves the called one alone. On the activity form, picking an account narrows the contacts to
that account's (`filter_by`). The Chinese screens show no English message on the way.
A mention in a comment reaches the manager's inbox and a loopback chat bot once. A qualified
lead converts in one click into the account of the same company, a new contact and
opportunity, all linked; a refused board move is explained on its card at both sizes.
Screenshots go to test-artifacts/log-call-*.png.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from engine.engine import Engine
from engine.rules.time import FakeClock
from engine.runtime.records.actors import SYSTEM
from engine.runtime.records.queries import Filter, ListQuery
from tests.support.blueprints import SHIPPED_CRM
from tests.support.chat_receiver import chat_receiver
from tests.support.chinese_screens import assert_no_english_message as no_english
from tests.support.browser import chromium, new_tab, screenshot, sign_in
from tests.support.served import require_browser, serve_demo

CST = ZoneInfo("Asia/Shanghai")
MONDAY_MORNING = dt.datetime(2026, 11, 23, 9, 0, tzinfo=CST).astimezone(dt.timezone.utc)


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock(MONDAY_MORNING)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, clock: FakeClock) -> Iterator[tuple[str, Engine]]:
    require_browser()
    with serve_demo(tmp_path_factory.mktemp("log-call") / "crm.sqlite", SHIPPED_CRM, leads=30,
                    clock=clock) as served:
        yield served


@pytest.fixture(scope="module")
def browser(served: Any) -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def shot(page: Any, name: str) -> None:
    screenshot(page, f"log-call-{name}")


def _new_lead(runtime: Engine, owner: int, name: str) -> dict[str, Any]:
    return runtime.records.create("lead", {"name": name, "source": "expo", "region": "east", "owner": owner,
                                           "phone": f"139{abs(hash(name)) % 10**8:08d}"}, actor=SYSTEM).record


def _first_call_events(runtime: Engine, record_id: int) -> list[str]:
    return [event.kind for event in runtime.records.events("lead", record_id, actor=SYSTEM)
            if event.data.get("policy") == "lead_first_call"]


@pytest.mark.parametrize(("width", "height"), [(1440, 900), (390, 844)])
def test_a_rep_logs_a_done_call_on_the_lead_page_and_its_first_call_sla_never_breaches(
        served: Any, browser: Any, clock: FakeClock, width: int, height: int) -> None:
    from playwright.sync_api import expect
    base, runtime = served
    wang = runtime.users.user_id("wang")
    called = _new_lead(runtime, wang, f"来电客户{width}")
    ignored = _new_lead(runtime, wang, f"无人联系{width}")
    page = new_tab(browser, width, height)
    sign_in(page, base, "wang")
    page.goto(f"{base}/lead/{called['id']}")
    expect(page.locator(".clocks")).to_contain_text("线索首次触达: 正常")
    form = page.locator("#log")
    expect(form.get_by_role("heading", name="记录跟进")).to_be_visible()
    today = clock.now().astimezone(CST).date()
    expect(form.get_by_label("下次跟进日期")).to_have_value(str(today + dt.timedelta(days=2)))  # activity.yaml
    form.get_by_label("跟进方式").select_option("call")
    form.get_by_label("跟进结果").select_option("reached")
    form.get_by_label("沟通要点").fill("客户确认需求，约周四上门")
    shot(page, f"01-form-{width}")
    form.get_by_role("button", name="记录").click()
    page.wait_for_url(re.compile(rf"/lead/{called['id']}#log$"))
    expect(page.locator(".flash")).to_contain_text("已记录电话")
    expect(page.locator(".timeline")).to_contain_text("跟进记录「电话 · 来电客户")
    expect(page.locator(".clocks")).to_contain_text("线索首次触达: 已完成")
    touched = runtime.records.get("lead", called["id"], actor=SYSTEM)
    assert touched["first_touched_at"] == clock.now() and touched["status"] == "contacted"
    shot(page, f"02-logged-{width}")
    no_english(page, "the lead page after logging a call")

    clock.advance(days=2)  # past every grade's first-call target (at most one business day)
    runtime.worker(role="timers", environ={}).tick(budget_seconds=120)
    assert "sla_breached" in _first_call_events(runtime, ignored["id"])  # the clock ran out for the other one
    assert _first_call_events(runtime, called["id"])[-1] == "sla_stop"  # stopped by the call, nothing after
    after = runtime.records.get("lead", called["id"], actor=SYSTEM)
    assert after["owner"] == wang and "sla_breached" not in (after["tags"] or [])
    sign_in(page, base, "wang")
    page.goto(f"{base}/lead/{called['id']}")
    expect(page.locator(".clocks")).to_contain_text("线索首次触达: 已完成")
    expect(page.locator(".timeline")).not_to_contain_text("超时")
    shot(page, f"03-days-later-{width}")
    no_english(page, "the lead page days later")
    page.context.close()


def test_a_refused_log_stays_on_the_page_with_the_reason_under_the_field(served: Any, browser: Any) -> None:
    from playwright.sync_api import expect
    base, runtime = served
    wang = runtime.users.user_id("wang")
    record = _new_lead(runtime, wang, "只点了记录")
    page = new_tab(browser, 390, 844)
    sign_in(page, base, "wang")
    page.goto(f"{base}/lead/{record['id']}")
    form = page.locator("#log")
    form.get_by_label("跟进方式").select_option("visit")
    form.get_by_role("button", name="记录").click()
    expect(form.locator(".error")).to_contain_text("请修正标出的字段")
    expect(form.locator('[data-field="notes"] .field-error')).to_contain_text("完成的跟进必须填写沟通要点或跟进结果")
    assert page.url.endswith(f"/lead/{record['id']}/log")
    expect(form.get_by_label("跟进方式")).to_have_value("visit")  # the input is kept
    expect(form.get_by_label("沟通要点")).to_be_focused()  # the focus is where the fix goes
    assert runtime.records.get("lead", record["id"], actor=SYSTEM)["first_touched_at"] is None
    shot(page, "04-refused-390")
    no_english(page, "a refused log")
    page.context.close()


def test_picking_an_account_narrows_the_contacts_to_that_accounts(served: Any, browser: Any) -> None:
    from playwright.sync_api import expect
    base, runtime = served
    wang = runtime.users.find("wang")
    assert wang is not None
    contacts = runtime.records.list("contact", ListQuery(per_page=500), actor=wang).items
    by_account: dict[int, list[str]] = {}
    for contact in contacts:
        by_account.setdefault(contact["account"], []).append(contact["name"])
    account = next(key for key, names in by_account.items() if len(set(names)) == len(names) and len(names) >= 2)
    wanted = sorted(item["name"] for item in runtime.records.list(
        "contact", ListQuery(filters=(Filter("account", "eq", str(account)),), per_page=500), actor=wang).items)
    assert len(wanted) < len(contacts)
    page = new_tab(browser, 1440, 900)
    sign_in(page, base, "wang")
    page.goto(f"{base}/activity/new")
    contact = page.locator("#f-contact")
    assert contact.evaluate("element => element.tagName") == "SELECT"
    assert contact.locator("option").count() - 1 == len(contacts)  # no account yet: every readable contact
    chooser = page.locator("#f-account")
    if chooser.evaluate("element => element.tagName") == "SELECT":
        chooser.select_option(str(account))
    else:
        title = runtime.records.get("account", account, actor=wang)["name"]
        chooser.fill(f"{title} (#{account})")
        chooser.press("Tab")
    expect(contact.locator("option")).to_have_count(len(wanted) + 1)
    shown = sorted(text.strip() for text in contact.locator("option").all_inner_texts() if text.strip() != "—")
    assert shown == wanted
    shot(page, "05-contacts-follow-account")
    page.context.close()


def _qualified_lead(runtime: Engine, owner: int, company: str) -> dict[str, Any]:
    record = runtime.records.create("lead", {
        "name": "顾总", "company": company, "source": "expo", "region": "east", "owner": owner,
        "phone": "13912340077", "budget": "300000", "demand_level": "A", "contact_role": "decision_maker",
        "job_title": "总经理"}, actor=SYSTEM).record
    runtime.records.create("activity", {"subject": "电话沟通需求", "kind": "call", "done": True,
                                        "outcome": "interested", "lead": record["id"]}, actor=SYSTEM)
    return runtime.records.transition("lead", record["id"], "qualified", actor=SYSTEM)


def test_a_qualified_lead_converts_into_the_existing_account_and_new_contact_and_deal(
        served: Any, browser: Any) -> None:
    from playwright.sync_api import expect
    base, runtime = served
    wang = runtime.users.user_id("wang")
    existing = runtime.records.create("account", {"name": "宁波远景机械有限公司", "owner": wang}, actor=SYSTEM).record
    record = _qualified_lead(runtime, wang, existing["name"])
    page = new_tab(browser, 1440, 900)
    sign_in(page, base, "wang")
    page.goto(f"{base}/lead/{record['id']}")
    page.get_by_role("button", name="转化为客户").click()
    expect(page.locator(".flash")).to_contain_text("已转化")
    converted = runtime.records.get("lead", record["id"], actor=SYSTEM)
    assert converted["status"] == "converted" and converted["converted_account"] == existing["id"]  # matched
    contact = runtime.records.get("contact", converted["converted_contact"], actor=SYSTEM)
    deal = runtime.records.get("opportunity", converted["converted_opportunity"], actor=SYSTEM)
    assert contact["account"] == existing["id"] and contact["name"] == "顾总"
    assert deal["account"] == existing["id"] and deal["contact"] == contact["id"] and deal["lead"] == record["id"]
    for entity, target in (("account", existing["id"]), ("contact", contact["id"]), ("opportunity", deal["id"])):
        expect(page.locator(f'.record-main a[href="/{entity}/{target}"]').first).to_be_visible()
    expect(page.get_by_role("button", name="转化为客户")).to_have_count(0)
    shot(page, "06-converted-into-existing-account")
    no_english(page, "a converted lead")
    page.context.close()


@pytest.mark.parametrize(("width", "height"), [(1440, 900), (390, 844)])
def test_a_refused_board_move_shows_its_reason_on_the_card(served: Any, browser: Any, width: int,
                                                           height: int) -> None:
    from playwright.sync_api import expect
    base, runtime = served
    wang = runtime.users.user_id("wang")
    account = runtime.records.create("account", {"name": f"看板客户{width}", "owner": wang}, actor=SYSTEM).record
    deal = runtime.records.create("opportunity", {"name": f"看板商机{width}", "account": account["id"], "owner": wang,
                                                  "amount": {"amount": "66000"}}, actor=SYSTEM).record
    page = new_tab(browser, width, height)
    sign_in(page, base, "wang")
    page.goto(f"{base}/opportunity/board")
    card = page.locator(f'.kanban-card[data-id="{deal["id"]}"]')
    card.scroll_into_view_if_needed()
    card.locator("select").select_option("lost")  # lost needs its reason: refused
    refusal = card.locator(".card-refusal")
    expect(refusal).to_be_visible()
    expect(refusal).to_be_in_viewport()
    expect(refusal).to_contain_text("无法移动：不能进入“输单”")
    expect(refusal).to_contain_text("填写输单原因")
    assert runtime.records.get("opportunity", deal["id"], actor=SYSTEM)["stage"] == "qualify"
    shot(page, f"07-board-refused-{width}")
    no_english(page, "a refused board move")
    page.context.close()


def test_a_mention_reaches_the_managers_inbox_and_a_loopback_chat_bot_once(served: Any, browser: Any,
                                                                           clock: FakeClock) -> None:
    from playwright.sync_api import expect
    base, runtime = served
    record = _new_lead(runtime, runtime.users.user_id("wang"), "提及客户")
    runtime.users.update("manager", im_ids={"dingtalk": "zhou-ding"})  # the manager's DingTalk id (admin screen)
    rep = new_tab(browser, 390, 844)
    sign_in(rep, base, "wang")
    rep.goto(f"{base}/lead/{record['id']}")
    rep.get_by_label("写评论").fill("@manager 请看报价（浏览器提及）")
    rep.get_by_role("button", name="发表评论").click()
    expect(rep.locator(".flash")).to_contain_text("已通知 @manager")
    no_english(rep, "a posted comment")
    rep.context.close()

    with chat_receiver() as receiver:
        environ = {"DINGTALK_SALES_WEBHOOK": f"{receiver.url}/dingtalk?access_token=t",
                   "DINGTALK_SALES_SECRET": "SECxyz"}

        def mentions() -> list[Any]:
            return [request for request in receiver.on("dingtalk")
                    if "请看报价（浏览器提及）" in request.json()["markdown"]["text"]]

        def deliver() -> None:  # in a thread of its own: Playwright's event loop runs in this one
            with ThreadPoolExecutor(1) as pool:
                pool.submit(runtime.worker(role="outbox", environ=environ).tick, budget_seconds=30).result()
        for _ in range(60):  # the demo's own backlog goes out first, at the channel's pace
            deliver()
            if mentions():
                break
            clock.advance(minutes=1)
        for _ in range(2):  # later rounds send nothing twice
            clock.advance(minutes=1)
            deliver()
        assert len(mentions()) == 1
        message = mentions()[0].json()
        assert "在线索“提及客户”中提到了你：@manager 请看报价" in message["markdown"]["text"]
        assert message["at"].get("atUserIds") == ["zhou-ding"] or message["at"].get("atMobiles")

    manager = new_tab(browser, 1440, 900)
    sign_in(manager, base, "manager")
    manager.goto(f"{base}/inbox")
    notice = manager.locator(".notice.unread", has_text="请看报价（浏览器提及）")
    expect(notice).to_have_count(1)
    expect(notice).to_contain_text("在评论中@了你")
    shot(manager, "08-mention-in-inbox")
    no_english(manager, "the manager's inbox")
    notice.get_by_role("link").first.click()
    manager.wait_for_url(re.compile(rf"/lead/{record['id']}$"))
    manager.context.close()
