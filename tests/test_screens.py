"""Screens, server side, on SQLite and PostgreSQL: what a signed-in user sees in the HTML.

Each test signs in through the login form (so CSRF and sessions are exercised too) and
asserts on the rendered page, the redirect, or the stored record.
"""

from __future__ import annotations

import csv
import html
import io
import re
import time
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from starlette.testclient import TestClient

from engine.engine import Engine
from engine.runtime.ops.users import NewUser
from engine.runtime.records.actors import SYSTEM
from tests.support import web as support_web
from tests.support.blueprints import SHIPPED_CRM
from tests.support.web import csrf_of, visible_text

PEOPLE = (NewUser("admin", "管理员", "admin", password="admin-pass"),
          NewUser("manager", "周经理", "sales_manager", "east", password="manager-pass"),
          NewUser("wang", "王磊", "sales_rep", "east", "manager", password="wang-pass1"),
          NewUser("li", "李娜", "sales_rep", "east", "manager", password="li-pass-123"),
          NewUser("zhao", "赵敏", "sales_rep", "south", password="zhao-pass-1"),
          NewUser("chen", "陈静", "service_agent", "service", password="chen-pass-1"))
PASSWORDS = {person.username: person.password for person in PEOPLE}


@pytest.fixture
def crm(make_engine: Any) -> tuple[Engine, dict[str, Any]]:
    runtime = make_engine(SHIPPED_CRM)
    return runtime, {person.username: runtime.users.add(person) for person in PEOPLE}


def sign_in(runtime: Engine, username: str) -> TestClient:
    return support_web.sign_in(runtime, username, PASSWORDS[username])


def post_form(client: TestClient, page_url: str, action: str, data: dict[str, Any]) -> Any:
    """Submit a form as the browser would: the token comes from the page the form is on."""
    token = csrf_of(client.get(page_url).text)
    return client.post(action, data={**data, "csrf_token": token})


def lead(runtime: Engine, owner: Any, name: str, **values: Any) -> dict[str, Any]:
    return runtime.records.create("lead", {"name": name, "source": "website", "owner": owner.id,
                                           "raw_payload": {"ip": "10.9.8.7"}, **values}, actor=SYSTEM).record


# -- signing in ---------------------------------------------------------------------------

def test_anonymous_visitor_is_sent_to_login_and_back_after_signing_in(crm: tuple[Engine, Any]) -> None:
    runtime, _ = crm
    client = TestClient(runtime.web_app(), follow_redirects=False)
    response = client.get("/lead?status=new")
    assert response.status_code == 303 and response.headers["location"].startswith("/login?next=")
    login_page = client.get(response.headers["location"])
    token = csrf_of(login_page.text)
    signed_in = client.post("/login", data={"username": "wang", "password": "wang-pass1", "csrf_token": token,
                                            "next": "/lead?status=new"})
    assert signed_in.headers["location"] == "/lead?status=new"
    assert "王磊" in client.get("/lead?status=new").text


def test_wrong_password_is_refused_then_throttled(crm: tuple[Engine, Any]) -> None:
    runtime, _ = crm
    client = TestClient(runtime.web_app(), follow_redirects=False)
    token = csrf_of(client.get("/login").text)
    for _ in range(5):
        refused = client.post("/login", data={"username": "li", "password": "nope", "csrf_token": token})
        assert refused.status_code == 401 and "用户名或密码错误" in refused.text  # the Chinese UI, in Chinese
    throttled = client.post("/login", data={"username": "li", "password": "li-pass-123", "csrf_token": token})
    assert throttled.status_code == 429 and "登录失败次数过多" in throttled.text


def test_posts_without_the_csrf_token_are_refused(crm: tuple[Engine, Any]) -> None:
    runtime, people = crm
    anonymous = TestClient(runtime.web_app(), follow_redirects=False)
    anonymous.get("/login")
    assert anonymous.post("/login", data={"username": "wang", "password": "wang-pass1"}).status_code == 403

    client = sign_in(runtime, "wang")
    refused = client.post("/lead/new", data={"name": "无令牌", "source": "website"})
    assert refused.status_code == 403
    assert "无令牌" not in client.get("/lead").text
    forged = client.post("/lead/new", data={"name": "伪造", "source": "website", "csrf_token": "guess"})
    assert forged.status_code == 403
    mine = lead(runtime, people["wang"], "王的线索")
    move = client.post("/lead/move", json={"id": mine["id"], "field": "status", "to": "contacted"})
    assert move.status_code == 403
    assert runtime.records.get("lead", mine["id"], actor=SYSTEM)["status"] == "new"


def test_session_expires_after_eight_hours(crm: tuple[Engine, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, _ = crm
    client = sign_in(runtime, "wang")
    assert client.get("/lead").status_code == 200
    later = int(time.time()) + 8 * 3600 + 60
    monkeypatch.setattr("itsdangerous.timed.TimestampSigner.get_timestamp", lambda self: later)
    response = client.get("/lead")
    assert response.status_code == 303 and "/login" in response.headers["location"]
    assert "expired=1" in response.headers["location"]
    page = client.get(response.headers["location"]).text
    assert "登录已过期" in page or "session has expired" in page


def test_security_headers_forbid_inline_scripts_and_framing(crm: tuple[Engine, Any]) -> None:
    runtime, _ = crm
    response = sign_in(runtime, "wang").get("/lead")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"]
    assert "<script>" not in response.text and 'src="/static/app.js"' in response.text


# -- who sees what ------------------------------------------------------------------------

def test_rep_cannot_open_another_teams_lead_and_never_sees_it_listed(crm: tuple[Engine, Any]) -> None:
    runtime, people = crm
    lead(runtime, people["wang"], "王的线索")
    lead(runtime, people["li"], "李的线索")
    south = lead(runtime, people["zhao"], "赵的线索")

    wang = sign_in(runtime, "wang")
    refused = wang.get(f"/lead/{south['id']}")
    assert refused.status_code == 403
    assert "没有权限" in refused.text and "查看" in refused.text and "赵的线索" not in refused.text
    listing = wang.get("/lead").text
    assert "王的线索" in listing and "李的线索" not in listing and "赵的线索" not in listing
    assert wang.get("/lead?q=赵").text.count("赵的线索") == 0

    manager = sign_in(runtime, "manager").get("/lead").text
    assert "王的线索" in manager and "李的线索" in manager and "赵的线索" not in manager


def test_a_role_without_read_gets_a_permission_page_not_an_empty_list(crm: tuple[Engine, Any]) -> None:
    runtime, people = crm
    lead(runtime, people["wang"], "王的线索")
    response = sign_in(runtime, "chen").get("/lead")
    assert response.status_code == 403
    assert "你缺少对“线索”的“查看”权限" in response.text
    assert "共 0 条" not in response.text


def test_hidden_field_never_appears_in_any_screen(crm: tuple[Engine, Any]) -> None:
    runtime, people = crm
    mine = lead(runtime, people["wang"], "王的线索")
    wang = sign_in(runtime, "wang")
    for url in (f"/lead/{mine['id']}", "/lead", f"/lead/{mine['id']}/edit", "/lead/new", "/lead/board"):
        page = wang.get(url).text
        assert "10.9.8.7" not in page and "原始留资数据" not in page and "raw_payload" not in page, url
    admin_page = sign_in(runtime, "admin").get(f"/lead/{mine['id']}").text
    assert "10.9.8.7" in admin_page


def test_buttons_follow_permissions(crm: tuple[Engine, Any]) -> None:
    runtime, people = crm
    mine = lead(runtime, people["wang"], "王的线索")
    wang = sign_in(runtime, "wang")
    page = wang.get(f"/lead/{mine['id']}").text
    assert f"/lead/{mine['id']}/edit" in page and f"/lead/{mine['id']}/delete" not in page
    listing = wang.get("/lead").text
    assert "/lead/export" not in listing and 'action="/lead/assign"' in listing  # the form exists, but no picker
    assert 'name="ids"' not in listing
    manager = sign_in(runtime, "manager").get("/lead").text
    assert "/lead/export" in manager and 'name="ids"' in manager


# -- list ---------------------------------------------------------------------------------

def test_list_searches_filters_sorts_and_pages_keeping_the_filter_in_links(crm: tuple[Engine, Any]) -> None:
    runtime, people = crm
    for number in range(60):
        lead(runtime, people["wang"], f"客户{number:02d}", region="east" if number % 2 else "south",
             company="华东精工" if number < 3 else "其他公司")
    client = sign_in(runtime, "wang")
    found = client.get("/lead", params={"q": "华东精工"}).text
    assert found.count('href="/lead/') >= 3 and "共 3 条" in found

    first = client.get("/lead", params={"region": "east", "sort": "name"}).text
    assert "共 30 条，第 1/1 页" in first
    names = re.findall(r"客户\d\d", first)
    assert names == sorted(names) and names[0] == "客户01"
    assert 'href="/lead?region=east&amp;sort=-name"' in first  # clicking the header again reverses

    paged = client.get("/lead", params={"status": "new", "view": "default"}).text
    assert "共 60 条，第 1/2 页" in paged
    assert 'href="/lead?status=new&amp;view=default&amp;page=2"' in paged
    second = client.get("/lead?status=new&view=default&page=2").text
    assert "第 2/2 页" in second and 'rel="prev"' in second

    bad = client.get("/lead", params={"nosuchfield": "x"})
    assert bad.status_code == 200 and "筛选条件无效" in bad.text


def test_date_range_filter_includes_the_last_day(crm: tuple[Engine, Any], clock: Any) -> None:
    runtime, people = crm
    lead(runtime, people["wang"], "今天的线索")
    today = clock.now().astimezone(ZoneInfo(runtime.model.settings.timezone)).date().isoformat()
    page = sign_in(runtime, "admin").get("/lead", params={"created_at__gte": today, "created_at__lte": today,
                                                          "view": "default"}).text
    assert "今天的线索" in page


def test_bulk_assign_moves_records_and_reports_refusals(crm: tuple[Engine, Any]) -> None:
    runtime, people = crm
    a = lead(runtime, people["wang"], "甲")
    b = lead(runtime, people["wang"], "乙")
    manager = sign_in(runtime, "manager")
    done = post_form(manager, "/lead", "/lead/assign", {"ids": [a["id"], b["id"]], "owner": people["li"].id,
                                                        "back": "status=new"})
    assert done.status_code == 303 and done.headers["location"] == "/lead?status=new"
    assert "已分配 2 条记录" in manager.get(done.headers["location"]).text
    assert runtime.records.get("lead", a["id"], actor=SYSTEM)["owner"] == people["li"].id

    outside = post_form(manager, "/lead", "/lead/assign", {"ids": [a["id"]], "owner": people["zhao"].id})
    assert "未能分配" in manager.get(outside.headers["location"]).text
    assert runtime.records.get("lead", a["id"], actor=SYSTEM)["owner"] == people["li"].id


def test_csv_export_for_roles_allowed_to_export(crm: tuple[Engine, Any]) -> None:
    runtime, people = crm
    for number in range(3):
        lead(runtime, people["wang"], f"导出{number}", region="east")
    lead(runtime, people["zhao"], "别的团队")
    response = sign_in(runtime, "manager").get("/lead/export", params={"region": "east"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert response.content.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert "客户姓名" in rows[0] and len(rows) == 4
    assert {row[rows[0].index("客户姓名")] for row in rows[1:]} == {"导出0", "导出1", "导出2"}
    assert "华东" in rows[1]

    refused = sign_in(runtime, "wang").get("/lead/export")
    assert refused.status_code == 403 and "导出" in refused.text


def test_both_exports_hold_exactly_the_records_the_view_shows(crm: tuple[Engine, Any]) -> None:
    """`view=my_follow_ups` (where: owner == me and an open status): the manager's own two leads,
    not the team's — in the list, the CSV and the XLSX alike."""
    from python_calamine import CalamineWorkbook
    runtime, people = crm
    for name in ("经理自己的一", "经理自己的二"):
        lead(runtime, people["manager"], name)
    for name in ("王磊的一", "王磊的二"):
        lead(runtime, people["wang"], name)
    manager = sign_in(runtime, "manager")
    listing = visible_text(manager.get("/lead", params={"view": "my_follow_ups"}).text)
    assert "经理自己的一" in listing and "经理自己的二" in listing and "王磊的一" not in listing
    rows = list(csv.reader(io.StringIO(manager.get("/lead/export", params={"view": "my_follow_ups"})
                                       .content.decode("utf-8-sig"))))
    sheet = manager.get("/lead/export.xlsx", params={"view": "my_follow_ups"})
    assert sheet.status_code == 200
    book = CalamineWorkbook.from_filelike(io.BytesIO(sheet.content))
    cells = book.get_sheet_by_index(0).to_python()
    for table in (rows, cells):
        names = {row[table[0].index("客户姓名")] for row in table[1:]}
        assert names == {"经理自己的一", "经理自己的二"}


# -- record page ----------------------------------------------------------------------------

def test_account_page_lists_related_records_and_the_timeline_names_people(crm: tuple[Engine, Any]) -> None:
    runtime, people = crm
    account = runtime.records.create("account", {"name": "恒通机械", "owner": people["wang"].id},
                                     actor=SYSTEM).record
    runtime.records.create("contact", {"name": "张工", "account": account["id"], "owner": people["wang"].id},
                           actor=SYSTEM)
    runtime.records.update("account", account["id"], {"name": "恒通机械集团"}, actor=people["wang"])
    page = sign_in(runtime, "wang").get(f"/account/{account['id']}").text
    assert "张工" in page and f"/contact/new?account={account['id']}" in page
    text = visible_text(page)
    assert "王磊" in text and "恒通机械 → 恒通机械集团" in re.sub(r"\s+", " ", text)


def test_related_list_the_user_may_not_read_says_so(crm: tuple[Engine, Any]) -> None:
    runtime, people = crm
    account = runtime.records.create("account", {"name": "瑞康医疗", "owner": people["chen"].id},
                                     actor=SYSTEM).record
    page = sign_in(runtime, "chen").get(f"/account/{account['id']}").text
    assert "你没有查看商机的权限" in page


def test_stored_script_renders_as_text(crm: tuple[Engine, Any]) -> None:
    runtime, people = crm
    account = runtime.records.create("account", {"name": "<script>alert('x')</script>精工",
                                                 "owner": people["wang"].id}, actor=SYSTEM).record
    client = sign_in(runtime, "admin")
    for url in ("/account", f"/account/{account['id']}", f"/account/{account['id']}/edit"):
        page = client.get(url).text
        assert "<script>alert" not in page, url
        assert "&lt;script&gt;alert(" in page, url


# -- forms ----------------------------------------------------------------------------------

def test_new_form_fills_defaults_and_marks_required_fields(crm: tuple[Engine, Any], clock: Any) -> None:
    runtime, _ = crm
    page = sign_in(runtime, "wang").get("/lead/new").text
    assert re.search(r'<option value="new" selected>', page)  # status defaults to "new"
    assert 'name="next_follow_up"' in page and 'type="date"' in page
    name_block = page[page.index('data-field="name"'):page.index('data-field="company"')]
    assert 'class="required"' in name_block and " required" in name_block
    assert 'name="csrf_token"' in page


def test_invalid_input_is_shown_next_to_its_field_and_kept(crm: tuple[Engine, Any]) -> None:
    runtime, _ = crm
    client = sign_in(runtime, "wang")
    response = post_form(client, "/lead/new", "/lead/new", {"name": "钱总", "phone": "12345", "source": "website",
                                                            "status": "new", "company": "新锐科技"})
    assert response.status_code == 422
    block = response.text[response.text.index('data-field="phone"'):]
    block = block[:block.index("</div>")]
    assert "field-error" in block and "“12345”不是有效的电话号码" in block and 'value="12345"' in block
    assert 'value="钱总"' in response.text and 'value="新锐科技"' in response.text
    fixed = post_form(client, "/lead/new", "/lead/new", {"name": "钱总", "phone": "13800138000",
                                                         "source": "website", "status": "new"})
    assert fixed.status_code == 303
    created = client.get(fixed.headers["location"]).text
    assert "钱总" in created and "+8613800138000" in created


def test_field_errors_speak_the_screen_language(crm: tuple[Engine, Any]) -> None:
    runtime, _ = crm
    client = sign_in(runtime, "wang")
    bad = {"name": "", "phone": "12345", "email": "qian@", "source": "website", "status": "new"}

    def error_of(page: str, field: str) -> str:
        block = page[page.index(f'data-field="{field}"'):]
        return html.unescape(block[:block.index("</div>")])
    chinese = post_form(client, "/lead/new", "/lead/new", bad).text
    assert "必填" in error_of(chinese, "name")
    assert "“qian@”不是有效的邮箱地址" in error_of(chinese, "email")
    post_form(client, "/lead", "/language", {"lang": "en", "next": "/lead"})
    english = post_form(client, "/lead/new", "/lead/new", bad).text
    assert "is required" in error_of(english, "name") and "必填" not in english
    assert "'12345' is not a valid phone number" in error_of(english, "phone")


def test_a_link_to_one_of_many_records_is_searched_not_picked_from_a_short_select(
        crm: tuple[Engine, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.runtime.web.screens.site as site_module
    monkeypatch.setattr(site_module, "LINK_OPTIONS_LIMIT", 3)  # stands for the 200 newest of a big CRM
    runtime, people = crm
    accounts = {name: runtime.records.create("account", {"name": name, "owner": people["admin"].id},
                                             actor=SYSTEM).record["id"] for name in ("远航", "鼎盛", "华东", "恒通", "瑞康")}
    client = sign_in(runtime, "admin")
    form = client.get("/contact/new").text
    box = form[form.index('id="f-account"') - 20:]
    box = html.unescape(box[:box.index("</datalist>")])
    assert 'data-link-search="/api/account"' in box and "<select" not in box
    assert f"瑞康 (#{accounts['瑞康']})" in box and "远航" not in box  # the newest are suggested, the oldest found

    def save(account: str) -> Any:
        return post_form(client, "/contact/new", "/contact/new", {"name": f"联系人{account}", "account": account})
    typed = save("远航")  # the oldest account, its name typed in full
    assert typed.status_code == 303
    contact = client.get(typed.headers["location"]).text
    assert f'href="/account/{accounts["远航"]}"' in contact
    picked = save(f"鼎盛 (#{accounts['鼎盛']})")  # a suggestion chosen
    assert f'href="/account/{accounts["鼎盛"]}"' in client.get(picked.headers["location"]).text

    runtime.records.create("account", {"name": "华东", "owner": people["admin"].id}, actor=SYSTEM)
    ambiguous = save("华东")
    assert ambiguous.status_code == 422
    assert "有 2 条客户名为“华东”" in html.unescape(ambiguous.text)
    assert 'value="华东"' in ambiguous.text  # the input is kept
    unknown = save("没有这家")
    assert unknown.status_code == 422 and "没有名为“没有这家”的客户" in html.unescape(unknown.text)


def test_readonly_field_posted_anyway_gets_a_field_level_refusal(crm: tuple[Engine, Any]) -> None:
    runtime, people = crm
    mine = lead(runtime, people["wang"], "王的线索", score=40)
    score = runtime.records.get("lead", mine["id"], actor=SYSTEM)["score"]
    client = sign_in(runtime, "wang")
    form = client.get(f"/lead/{mine['id']}/edit").text
    assert 'name="score"' not in form  # shown, not editable
    response = post_form(client, f"/lead/{mine['id']}/edit", f"/lead/{mine['id']}/edit",
                         {"name": "王的线索", "source": "website", "status": "new", "score": "99",
                          "version": str(mine["version"])})
    assert response.status_code == 422
    block = response.text[response.text.index('data-field="score"'):]
    assert "你不能修改“线索评分”" in html.unescape(block[:block.index("</div>")])  # the Chinese UI, in Chinese
    assert runtime.records.get("lead", mine["id"], actor=SYSTEM)["score"] == score != 99


def test_edit_with_a_stale_version_reports_the_conflict(crm: tuple[Engine, Any]) -> None:
    runtime, people = crm
    mine = lead(runtime, people["wang"], "王的线索")
    client = sign_in(runtime, "wang")
    form = client.get(f"/lead/{mine['id']}/edit").text
    assert f'name="version" value="{mine["version"]}"' in form
    runtime.records.update("lead", mine["id"], {"company": "别人改的"}, actor=people["wang"])
    response = client.post(f"/lead/{mine['id']}/edit", data={
        "csrf_token": csrf_of(form), "version": str(mine["version"]), "name": "王的线索", "source": "website",
        "status": "new", "company": "我改的"})
    assert response.status_code == 422 and "已被他人修改" in response.text
    assert 'value="我改的"' in response.text
    assert runtime.records.get("lead", mine["id"], actor=SYSTEM)["company"] == "别人改的"


def test_delete_button_removes_the_record(crm: tuple[Engine, Any]) -> None:
    runtime, people = crm
    mine = lead(runtime, people["wang"], "待删除")
    manager = sign_in(runtime, "manager")
    response = post_form(manager, f"/lead/{mine['id']}", f"/lead/{mine['id']}/delete",
                         {"version": str(mine["version"])})
    assert response.status_code == 303
    assert manager.get(f"/lead/{mine['id']}").status_code == 404


# -- board ----------------------------------------------------------------------------------

def test_board_moves_a_card_and_explains_a_refused_move(crm: tuple[Engine, Any]) -> None:
    runtime, people = crm
    mine = lead(runtime, people["wang"], "看板线索")
    client = sign_in(runtime, "wang")
    board = client.get("/lead/board").text
    token = csrf_of(board)
    assert f'data-id="{mine["id"]}"' in board and 'data-value="contacted"' in board
    gated = client.post("/lead/move", json={"id": mine["id"], "field": "status", "to": "contacted",
                                            "version": mine["version"]}, headers={"X-CSRF-Token": token})
    assert gated.status_code == 422 and gated.json()["ok"] is False  # the funnel wants the first touch first
    assert [item["what"] for item in gated.json()["missing"]] == ["记录首次触达"]
    assert "记录一次已完成的电话" in gated.json()["missing"][0]["how"]

    runtime.records.create("activity", {"subject": "首次电话", "kind": "call", "done": True, "outcome": "reached",
                                        "lead": mine["id"]}, actor=people["wang"])
    touched = runtime.records.get("lead", mine["id"], actor=SYSTEM)
    assert touched["status"] == "contacted" and touched["first_touched_at"] is not None  # the rules moved it
    moved = client.post("/lead/move", json={"id": mine["id"], "field": "status", "to": "new",
                                            "version": touched["version"]}, headers={"X-CSRF-Token": token})
    assert moved.status_code == 200 and moved.json()["ok"] is True  # a move back is allowed
    assert runtime.records.get("lead", mine["id"], actor=SYSTEM)["status"] == "new"

    refused = client.post("/lead/move", json={"id": mine["id"], "field": "status", "to": "paused",
                                              "version": moved.json()["version"]}, headers={"X-CSRF-Token": token})
    assert refused.status_code == 422 and refused.json()["ok"] is False
    assert "暂缓的线索必须填写暂缓原因" in refused.json()["message"]
    assert runtime.records.get("lead", mine["id"], actor=SYSTEM)["status"] == "new"


def test_board_card_select_moves_without_javascript(crm: tuple[Engine, Any]) -> None:
    runtime, people = crm
    mine = lead(runtime, people["wang"], "手机上移动", demand_level="A")
    client = sign_in(runtime, "wang")
    refused = post_form(client, "/lead/board", "/lead/move", {"id": mine["id"], "field": "status", "to": "qualified",
                                                               "version": mine["version"]})
    assert refused.status_code == 303
    shown = visible_text(client.get(refused.headers["location"]).text)
    assert "无法移动：不能进入“已确认需求”" in shown and "记录首次触达" in shown and "填写对接角色" in shown

    runtime.records.update("lead", mine["id"], {"contact_role": "decision_maker"}, actor=people["wang"])
    runtime.records.create("activity", {"subject": "电话沟通", "kind": "call", "done": True, "outcome": "interested",
                                        "lead": mine["id"]}, actor=people["wang"])
    current = runtime.records.get("lead", mine["id"], actor=SYSTEM)
    moved = post_form(client, "/lead/board", "/lead/move", {"id": mine["id"], "field": "status", "to": "qualified",
                                                             "version": current["version"]})
    assert moved.status_code == 303 and moved.headers["location"] == "/lead/board?field=status"
    assert "已移动到“已确认需求”" in client.get(moved.headers["location"]).text
    assert runtime.records.get("lead", mine["id"], actor=SYSTEM)["status"] == "qualified"


def test_board_can_show_any_choice_field(crm: tuple[Engine, Any]) -> None:
    runtime, people = crm
    lead(runtime, people["wang"], "华南线索", region="south")
    page = sign_in(runtime, "wang").get("/lead/board?field=region").text
    assert 'data-field="region"' in page and 'data-value="south"' in page and "华南线索" in page


# -- navigation, language, admin ---------------------------------------------------------------

def test_menu_follows_the_blueprint_and_language_switch_changes_labels(crm: tuple[Engine, Any]) -> None:
    runtime, _ = crm
    client = sign_in(runtime, "wang")
    page = client.get("/lead").text
    assert "销售" in page and 'href="/opportunity"' in page and "全部线索" in page
    switched = post_form(client, "/lead", "/language", {"lang": "en", "next": "/lead"})
    assert switched.headers["location"] == "/lead"
    english = client.get("/lead").text
    assert "All leads" in english and "Sales" in english and '<html lang="en">' in english


def test_unknown_pages_and_records_get_a_404_page(crm: tuple[Engine, Any]) -> None:
    runtime, _ = crm
    client = sign_in(runtime, "wang")
    for url in ("/nosuchentity", "/lead/999999", "/lead/999999/edit"):
        response = client.get(url)
        assert response.status_code == 404 and "找不到页面" in response.text, url
    assert client.get("/api/nosuch/1/2/3").headers["content-type"].startswith("application/json")


def test_admin_changes_roles_and_disables_users_others_may_not(crm: tuple[Engine, Any]) -> None:
    runtime, people = crm
    admin = sign_in(runtime, "admin")
    page = admin.get("/admin/users").text
    assert "王磊" in page and "华东销售团队" in page and "sales_rep" in page
    post_form(admin, "/admin/users", f"/admin/users/{people['li'].id}", {"action": "role", "role": "sales_manager"})
    post_form(admin, "/admin/users", f"/admin/users/{people['zhao'].id}", {"action": "disable"})
    page = admin.get("/admin/users").text
    zhao_row = page[page.index('data-username="zhao"'):]
    assert "已停用" in zhao_row[:zhao_row.index("</tr>")]
    li_row = page[page.index('data-username="li"'):]
    assert 'value="sales_manager" selected' in li_row[:li_row.index("</tr>")]
    zhao = TestClient(runtime.web_app(), follow_redirects=False)
    token = csrf_of(zhao.get("/login").text)
    assert zhao.post("/login", data={"username": "zhao", "password": "zhao-pass-1",
                                     "csrf_token": token}).status_code == 401

    wang = sign_in(runtime, "wang")
    refused = wang.get("/admin/users")
    assert refused.status_code == 403 and "你缺少对“用户”的“管理”权限" in refused.text  # not the key "admin"
    assert wang.get("/admin").headers["location"] == "/admin/users"  # /admin is where people type
    assert admin.get("/admin", follow_redirects=True).url.path == "/admin/users"


def test_admin_gives_a_user_chat_ids_and_a_wrong_one_is_refused(crm: tuple[Engine, Any]) -> None:
    runtime, people = crm
    admin = sign_in(runtime, "admin")

    def ids_of(username: str) -> Any:
        return next(row.im_ids for row in runtime.users.all() if row.username == username)
    post_form(admin, "/admin/users", f"/admin/users/{people['wang'].id}",
              {"action": "im", "im_ids": "feishu=ou_7d8a6e6d, slack=U024BE7LH"})
    assert ids_of("wang") == {"feishu": "ou_7d8a6e6d", "slack": "U024BE7LH"}
    row = admin.get("/admin/users").text
    row = row[row.index('data-username="wang"'):]
    assert 'value="feishu=ou_7d8a6e6d slack=U024BE7LH"' in row[:row.index("</tr>")]
    post_form(admin, "/admin/users", f"/admin/users/{people['wang'].id}", {"action": "im", "im_ids": "teams=42"})
    assert "“teams=42”：聊天账号请写成 类型=账号" in html.unescape(admin.get("/admin/users").text)  # the flash says what is wrong
    assert ids_of("wang") == {"feishu": "ou_7d8a6e6d", "slack": "U024BE7LH"}  # and nothing changed
