"""Working together, server side, on SQLite and PostgreSQL: the inbox, comments with @mentions
(in-app and through a loopback chat bot), the global search, and the administrators' people
screens with their audit log. Every step goes through the screens as a signed-in user would."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from engine.engine import Engine
from engine.runtime.automation.inbox import Inbox
from engine.runtime.ops.users import NewUser
from engine.runtime.records.actors import SYSTEM
from engine.runtime.storage.collab import COMMENTS
from tests.support.blueprints import SHIPPED_CRM
from tests.support.chat_receiver import chat_receiver

PEOPLE = (NewUser("admin", "管理员", "admin", password="admin-pass"),
          NewUser("manager", "周经理", "sales_manager", "east", password="manager-pass",
                  im_ids={"dingtalk": "zhou-ding"}, phone="13900000001"),
          NewUser("wang", "王磊", "sales_rep", "east", "manager", password="wang-pass1"),
          NewUser("li", "李娜", "sales_rep", "east", "manager", password="li-pass12-x2"),
          NewUser("zhao", "赵敏", "sales_rep", "south", password="zhao-pass-x2"))
PASSWORDS = {person.username: person.password or "" for person in PEOPLE}


@pytest.fixture
def crm(make_engine: Any) -> tuple[Engine, dict[str, Any]]:
    runtime = make_engine(SHIPPED_CRM)
    return runtime, {person.username: runtime.users.add(person) for person in PEOPLE}


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the page carries no CSRF token"
    return match.group(1)


def sign_in(runtime: Engine, username: str, password: str | None = None) -> TestClient:
    client = TestClient(runtime.web_app(), follow_redirects=False)
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"username": username, "password": password or PASSWORDS[username],
                                           "csrf_token": token, "next": "/lead"})
    assert response.status_code == 303, response.text
    return client


def text_of(page: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def post_form(client: TestClient, page_url: str, action: str, data: dict[str, Any]) -> Any:
    token = csrf_of(client.get(page_url).text)
    return client.post(action, data={**data, "csrf_token": token})


def lead(runtime: Engine, owner: Any, name: str, company: str, phone: str) -> int:
    return int(runtime.records.create("lead", {"name": name, "company": company, "phone": phone, "source": "website",
                                               "owner": owner.id}, actor=SYSTEM).record["id"])


def unread_badge(page: str) -> int:
    match = re.search(r'class="badge"[^>]*>(\d+)<', page)
    return int(match.group(1)) if match else 0


# -- the inbox ---------------------------------------------------------------------------------------------

def test_a_record_given_to_someone_lands_in_their_inbox_with_the_count_in_the_header(crm: Any) -> None:
    runtime, people = crm
    lead_id = lead(runtime, people["wang"], "张三", "苏州精工", "13812345678")
    wang = sign_in(runtime, "wang")
    page = wang.get("/lead").text
    assert unread_badge(page) >= 1 and 'aria-label="通知：' in page
    inbox = wang.get("/inbox").text
    assert "分配给你：" in text_of(inbox) and f"线索 #{lead_id} · 张三" in text_of(inbox)
    before = unread_badge(page)
    notice_id = re.search(rf'data-notice="(\d+)"[^>]*>[\s\S]*?线索 #{lead_id}', inbox)
    assert notice_id
    opened = wang.get(f"/inbox/{notice_id.group(1)}/open")
    assert opened.status_code == 303 and opened.headers["location"] == f"/lead/{lead_id}"
    assert unread_badge(wang.get("/lead").text) == before - 1

    # someone who takes a record themselves is not told about it
    mine = runtime.records.create("lead", {"name": "自建", "source": "website", "phone": "13812340000",
                                           "owner": people["li"].id}, actor=people["li"]).record
    assert not any(notice.record_id == mine["id"]
                   for notice in Inbox(runtime.schema, runtime.db).notices(people["li"].id)[0])


def test_mark_one_and_mark_all_read(crm: Any) -> None:
    runtime, people = crm
    for index in range(3):
        lead(runtime, people["li"], f"客户{index}", f"公司{index}", f"1381234560{index}")
    li = sign_in(runtime, "li")
    inbox = li.get("/inbox").text
    assert unread_badge(inbox) == 3
    first = re.findall(r'name="notice_id" value="(\d+)"', inbox)[0]
    assert post_form(li, "/inbox", "/inbox/read", {"notice_id": first}).status_code == 303
    assert unread_badge(li.get("/inbox").text) == 2
    post_form(li, "/inbox", "/inbox/read", {})
    page = li.get("/inbox?unread=1").text
    assert unread_badge(page) == 0 and 'class="notice' not in page
    assert li.get("/inbox/999999/open").status_code == 404  # another user's or no notice


def test_the_inbox_lists_notices_by_when_they_happened(crm: Any) -> None:
    """A worker catching up after a pause (or the demo's history) writes a notice about an earlier
    moment after a later one: the inbox still reads newest first by date, not by arrival."""
    import datetime as dt

    from engine.runtime.automation.inbox import post
    runtime, people = crm
    monday = dt.datetime(2026, 11, 23, 2, tzinfo=dt.timezone.utc)
    with runtime.db.write() as connection:
        for key, days in (("late", 2), ("early", 0), ("middle", 1)):
            post(connection, runtime.schema, user_ids=[people["li"].id], kind="notify", key=key,
                 title=f"通知 {key}", text="", now=monday + dt.timedelta(days=days))
    titles = [notice.title for notice in Inbox(runtime.schema, runtime.db).notices(people["li"].id)[0]]
    assert titles == ["通知 late", "通知 middle", "通知 early"]


def test_a_rule_notify_reaches_each_recipients_inbox_once_like_the_chat_bot(crm: Any) -> None:
    """The shipped S-grade rule tells the owner and their manager (WeCom); the inbox gets it too."""
    runtime, people = crm
    lead_id = lead(runtime, people["wang"], "王五", "大连重工(集团)", "13812349999")
    runtime.records.update("lead", lead_id, {"registered_capital": 9000000, "hiring_recently": True,
                                             "has_tenders": True}, actor=SYSTEM)
    for username in ("wang", "manager"):
        notices = [notice for notice in Inbox(runtime.schema, runtime.db).notices(people[username].id)[0]
                   if notice.kind == "notify" and notice.record_id == lead_id]
        assert len(notices) == 1, username
        assert "S级线索：大连重工(集团)" in notices[0].title
        # plain text in the inbox: no chat-markdown escapes, no bare "打开线索" left of a link
        assert "\\" not in notices[0].text and "打开线索" not in notices[0].text
    with runtime.db.read() as connection:
        outbox = connection.execute(sa.select(runtime.schema.outbox.c.payload).where(
            runtime.schema.outbox.c.record_id == lead_id, runtime.schema.outbox.c.channel == "wecom_sales")).all()
    assert len(outbox) == 1 and "S级线索：大连重工(集团)" in outbox[0].payload["text"]


def test_a_markdown_chat_message_reaches_the_inbox_as_plain_text(crm: Any) -> None:
    """DingTalk gets the SLA warning with values escaped for its markdown; the owner's inbox gets the
    same words without backslashes, and without the bare "打开线索" of the chat's link line."""
    import datetime as dt

    from engine.runtime.automation.notify import enqueue_notification
    runtime, people = crm
    lead_id = lead(runtime, people["wang"], "王五", "大连重工(集团)", "13812349998")
    record = runtime.records.get("lead", lead_id, actor=SYSTEM)
    now = runtime.clock.now()
    context = {"record": record, "owner": {"display_name": "王磊 (Sales rep)"}, "url": f"http://crm/lead/{lead_id}",
               "sla": {"percent": 80, "remaining": dt.timedelta(hours=7, minutes=30), "due_at": now}}
    with runtime.db.write() as connection:
        enqueue_notification(connection, runtime.schema, runtime.model, channel="dingtalk_sales", to=["owner"],
                             owner_id=people["wang"].id, context=context, key="warn-1", now=now,
                             template="lead_sla_warning", entity="lead", record_id=lead_id)
        chat = connection.execute(sa.select(runtime.schema.outbox.c.payload).where(
            runtime.schema.outbox.c.idempotency_key == "warn-1")).scalar_one()
    assert "大连重工\\(集团\\)" in chat["text"] and "[打开线索](" in chat["text"]
    (notice,) = [notice for notice in Inbox(runtime.schema, runtime.db).notices(people["wang"].id)[0]
                 if notice.kind == "notify" and notice.record_id == lead_id]
    assert "大连重工(集团)" in notice.text and "王磊 (Sales rep)" in notice.text and "剩余：7小时30分钟" in notice.text
    assert "\\" not in notice.text and "打开线索" not in notice.text


# -- comments and mentions ---------------------------------------------------------------------------------

def test_a_mention_reaches_the_inbox_and_a_loopback_chat_bot_once(crm: Any) -> None:
    runtime, people = crm
    lead_id = lead(runtime, people["wang"], "赵六", "杭州精密", "13812341111")
    wang = sign_in(runtime, "wang")
    posted = post_form(wang, f"/lead/{lead_id}", f"/lead/{lead_id}/comments",
                       {"body": "客户要报价单，@manager 请帮忙审核 <b>加急</b>"})
    assert posted.status_code == 303 and posted.headers["location"].startswith(f"/lead/{lead_id}#comment-")
    page = wang.get(f"/lead/{lead_id}").text
    assert "已通知 @manager" in text_of(page)
    assert "客户要报价单，@manager 请帮忙审核 &lt;b&gt;加急&lt;/b&gt;" in page  # kept as text, never as markup

    manager = sign_in(runtime, "manager")
    inbox = text_of(manager.get("/inbox").text)
    assert "王磊 在评论中@了你：" in inbox and f"线索 #{lead_id} · 赵六" in inbox
    with chat_receiver() as receiver:
        environ = {"DINGTALK_SALES_WEBHOOK": f"{receiver.url}/dingtalk?access_token=t",
                   "DINGTALK_SALES_SECRET": "SECxyz"}
        runtime.worker(environ=environ).tick()
        runtime.worker(environ=environ).tick()
        mentions = [request.json() for request in receiver.on("dingtalk")
                    if "提到了你" in request.json()["markdown"]["text"]]
    assert len(mentions) == 1
    assert "王磊 在线索“赵六”中提到了你：客户要报价单" in mentions[0]["markdown"]["text"]
    assert mentions[0]["at"]["atMobiles"] == ["13900000001"] or mentions[0]["at"].get("atUserIds") == ["zhou-ding"]
    assert sum(1 for notice in Inbox(runtime.schema, runtime.db).notices(people["manager"].id)[0]
               if notice.kind == "mention") == 1


def test_a_mistyped_or_unauthorised_mention_is_refused_with_the_draft_kept(crm: Any) -> None:
    runtime, people = crm
    lead_id = lead(runtime, people["wang"], "钱七", "宁波机械", "13812342222")
    wang = sign_in(runtime, "wang")
    refused = post_form(wang, f"/lead/{lead_id}", f"/lead/{lead_id}/comments", {"body": "@manger 看看"})
    assert refused.status_code == 422
    assert "@manger：没有这个启用中的用户。你是不是要找 @manager？" in text_of(refused.text)
    assert ">@manger 看看</textarea>" in refused.text and 'aria-invalid="true"' in refused.text
    # zhao (another team's rep) may not read wang's lead: mentioning him would leak it
    refused = post_form(wang, f"/lead/{lead_id}", f"/lead/{lead_id}/comments", {"body": "@zhao 帮忙"})
    assert refused.status_code == 422 and "@zhao 无权查看这条记录" in text_of(refused.text)
    empty = post_form(wang, f"/lead/{lead_id}", f"/lead/{lead_id}/comments", {"body": "   "})
    assert empty.status_code == 422 and "评论不能为空" in text_of(empty.text)
    with runtime.db.read() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(
            runtime.schema.metadata.tables[COMMENTS])).scalar_one() == 0
    # someone who may not read the record cannot comment on it either
    zhao = sign_in(runtime, "zhao")
    assert post_form(zhao, "/lead", f"/lead/{lead_id}/comments", {"body": "hi"}).status_code == 403


# -- global search -----------------------------------------------------------------------------------------

def test_search_finds_across_entities_only_what_the_user_may_read(crm: Any) -> None:
    runtime, people = crm
    mine = lead(runtime, people["wang"], "孙八", "常州搜索精工", "13812343333")
    theirs = lead(runtime, people["zhao"], "周九", "常州搜索模具", "13812344444")
    runtime.records.create("account", {"name": "常州搜索集团", "owner": people["wang"].id}, actor=SYSTEM)
    wang = sign_in(runtime, "wang")
    page = wang.get("/search", params={"q": "常州搜索"}).text
    assert f'href="/lead/{mine}"' in page and f'href="/lead/{theirs}"' not in page
    assert 'data-entity="account"' in page and "常州搜索集团" in text_of(page)
    # a phone number in any spelling finds the person
    for spelling in ("138 1234 3333", "+86 138-1234-3333", "13812343333"):
        assert f'href="/lead/{mine}"' in wang.get("/search", params={"q": spelling}).text, spelling
    admin = sign_in(runtime, "admin")
    assert f'href="/lead/{theirs}"' in admin.get("/search", params={"q": "常州搜索"}).text
    nothing = text_of(wang.get("/search", params={"q": "不存在的公司名"}).text)
    assert "没有找到与“不存在的公司名”相符、且你有权查看的记录。" in nothing
    assert "请至少输入 2 个字符" in text_of(wang.get("/search", params={"q": "x"}).text)


# -- the administrators' people screens ----------------------------------------------------------------------

def test_an_admin_creates_a_user_resets_the_password_and_revokes_a_token_all_audited(crm: Any) -> None:
    runtime, people = crm
    admin = sign_in(runtime, "admin")
    bad = post_form(admin, "/admin/users/new", "/admin/users/new",
                    {"username": "xu", "display_name": "徐", "role": "sales_rep", "password": "short"})
    assert bad.status_code == 422 and "密码至少需要 10 位" in text_of(bad.text)
    assert runtime.users.find("xu") is None
    created = post_form(admin, "/admin/users/new", "/admin/users/new",
                        {"username": "xu", "display_name": "徐新", "role": "sales_rep", "team": "east",
                         "manager_id": str(people["manager"].id), "password": "xu-password-1"})
    assert created.status_code == 303
    page_url = created.headers["location"]
    xu = runtime.users.find("xu")
    assert xu is not None and page_url == f"/admin/users/{xu.id}" and xu.team == "east"
    sign_in(runtime, "xu", "xu-password-1")
    # the browser asks for as long a password as the server does, on both forms
    assert 'name="password" type="password" autocomplete="new-password" minlength="10"' in admin.get(page_url).text
    assert 'minlength="10"' in admin.get("/admin/users/new").text

    assert post_form(admin, page_url, page_url, {"action": "password", "password": "xu-new-pass-2"}).status_code == 303
    sign_in(runtime, "xu", "xu-new-pass-2")
    issued = post_form(admin, page_url, page_url, {"action": "token", "token_name": "erp"})
    shown = admin.get(page_url).text
    token = re.search(r'id="new-token">(crm_[^<]+)<', shown)
    assert issued.status_code == 303 and token
    assert "crm_" not in admin.get(page_url).text  # shown once
    api = TestClient(runtime.web_app())
    assert api.get("/api/lead", headers={"Authorization": f"Bearer {token.group(1)}"}).status_code == 200
    token_id = re.search(r'name="token_id" value="(\d+)"', admin.get(page_url).text)
    assert token_id
    post_form(admin, page_url, page_url, {"action": "revoke", "token_id": token_id.group(1)})
    assert api.get("/api/lead", headers={"Authorization": f"Bearer {token.group(1)}"}).status_code == 401
    post_form(admin, page_url, page_url, {"action": "leave"})
    assert next(row for row in runtime.users.all() if row.username == "xu").on_leave
    post_form(admin, page_url, page_url, {"action": "im", "im_ids": "dingtalk=xu01 feishu=ou_x"})
    assert next(row for row in runtime.users.all() if row.username == "xu").im_ids == {"dingtalk": "xu01",
                                                                                          "feishu": "ou_x"}
    wrong = post_form(admin, page_url, page_url, {"action": "im", "im_ids": "qq=123"})
    assert wrong.status_code == 303 and "“qq=123”：聊天账号请写成 类型=账号" in text_of(admin.get(page_url).text)

    post_form(admin, page_url, page_url, {"action": "role", "role": "sales_manager"})
    post_form(admin, page_url, page_url, {"action": "profile", "display_name": "徐新", "team": "south",
                                          "phone": "13900000099", "manager_id": str(people["manager"].id)})

    audit = text_of(admin.get("/admin/audit").text)
    for line in ("创建用户", "重置密码", "生成 API 令牌", "吊销 API 令牌", "设为休假", "修改聊天账号"):
        assert line in audit, line
    assert "xu-new-pass-2" not in audit and token.group(1) not in audit
    # the details in the reader's words: roles and teams by their labels, changed fields by the form's
    assert "角色: 销售代表；团队: 华东销售团队" in audit and "销售代表 → 销售经理" in audit
    assert "改动: 手机、团队" in audit
    assert "sales_rep" not in audit and "from:" not in audit and "changed" not in audit
    # a token revoked from the users screen's token table is audited too, under its owner
    runtime.users.create_token("wang", "weekly-report")
    listed = admin.get("/admin/users").text
    wang_token = re.search(r'<tr data-token="(\d+)">\s*<td>\d+</td><td>wang</td><td>weekly-report</td>', listed)
    assert wang_token
    post_form(admin, "/admin/users", "/admin/tokens/revoke", {"token_id": wang_token.group(1)})
    assert "吊销 API 令牌 wang 名称: weekly-report" in text_of(admin.get("/admin/audit").text)
    users = text_of(admin.get("/admin/users").text)
    assert "华南销售团队" in users  # xu's team, by its label
    assert '<option value="south">华南销售团队</option>' in admin.get(page_url).text  # offered on the form


def test_admin_screens_are_for_administrators_only(crm: Any) -> None:
    runtime, _ = crm
    wang = sign_in(runtime, "wang")
    for url in ("/admin/users", "/admin/users/new", "/admin/audit", "/admin/blueprint", "/admin/outbox"):
        refused = wang.get(url)
        assert refused.status_code == 403 and "没有权限" in text_of(refused.text), url
        assert "you lack" not in refused.text  # no English detail on the Chinese screen
    assert wang.post("/admin/users/1", data={"action": "disable"}).status_code == 403


def test_the_outbox_screen_pages_through_every_message(crm: Any) -> None:
    runtime, people = crm
    for index in range(4):  # each S-grade lead sends one WeCom message
        lead_id = lead(runtime, people["wang"], f"大客户{index}", f"重工{index}", f"1381235000{index}")
        runtime.records.update("lead", lead_id, {"registered_capital": 9000000, "hiring_recently": True,
                                                 "has_tenders": True}, actor=SYSTEM)
    admin = sign_in(runtime, "admin")
    with runtime.db.read() as connection:
        total = connection.execute(sa.select(sa.func.count()).select_from(runtime.schema.outbox)).scalar_one()
    page = text_of(admin.get("/admin/outbox").text)
    assert f"共 {total} 条，第 1/1 页" in page
    overview = admin.get("/admin/blueprint").text
    assert 'data-channel="wecom_sales"' in overview and "通知渠道状态" in text_of(overview)


def test_sign_in_refusals_are_in_the_users_language(crm: Any) -> None:
    runtime, _ = crm
    client = TestClient(runtime.web_app(), follow_redirects=False)
    token = csrf_of(client.get("/login").text)
    refused = client.post("/login", data={"username": "li", "password": "nope", "csrf_token": token})
    assert refused.status_code == 401 and "用户名或密码错误。" in text_of(refused.text)
    assert "wrong username" not in refused.text
    client.post("/language", data={"lang": "en", "csrf_token": token, "next": "/login"})
    refused = client.post("/login", data={"username": "li", "password": "nope", "csrf_token": token})
    assert "Wrong username or password." in text_of(refused.text)
    assert client.get("/favicon.ico").status_code == 200


SLA_BLUEPRINT = {
    "app.yaml": "app: t\ninclude: ['*.yaml']\n",
    "lead.yaml": """
        entity: lead
        fields:
          name: {type: string}
          status: {type: choice, options: {new: New, done: Done}, default: new}
    """,
    "roles.yaml": """
        roles:
          admin: {label: Admin, admin: true}
          rep:
            label: Rep
            entities:
              lead: {read: own, create: all, update: own}
    """,
    "channels.yaml": """
        channels:
          dingtalk: {type: dingtalk, url: {env: DT_URL}, format: markdown}
          feishu: {type: feishu, url: {env: FEISHU_URL}, format: text}
        templates:
          warning:
            title: {zh: "线索即将超时", en: "Lead due soon"}
            text: {zh: "### 线索 {{ record.name }} 即将超时", en: "### Lead {{ record.name }} is due soon"}
          breach:
            title: {zh: "线索已超时", en: "Lead overdue"}
            text: {zh: "线索 {{ record.name }} 已超时", en: "Lead {{ record.name }} is overdue"}
    """,
    "sla.yaml": """
        sla: first_call
        entity: lead
        default_target: 60min
        business_time: false
        starts: assigned
        warn_at: [50]
        stops: [{status_in: [done]}]
        on_warning:
          - notify: {channel: dingtalk, to: [owner], template: warning}
        on_breach:
          - notify: {channel: dingtalk, to: [owner, owner.manager], template: breach}
          - notify: {channel: feishu, to: [owner.manager], template: breach}
    """,
}


def test_sla_warnings_and_breaches_reach_the_people_they_are_aimed_at(make_engine: Any, clock: Any) -> None:
    runtime = make_engine(SLA_BLUEPRINT)
    boss = runtime.users.add(NewUser("boss", "老板", "rep", password="boss-pass-1"))
    rep = runtime.users.add(NewUser("rep", "小王", "rep", manager="boss", password="rep-pass-12",
                                    language="en"))
    runtime.records.create("lead", {"name": "ACME", "owner": rep.id}, actor=SYSTEM)
    inbox = Inbox(runtime.schema, runtime.db)
    clock.advance(minutes=31)
    runtime.worker(environ={}).tick()
    (warning,) = [notice for notice in inbox.notices(rep.id)[0] if notice.kind == "notify"]
    assert warning.title == "Lead due soon" and warning.text == "Lead ACME is due soon"  # in the rep's language
    assert not [notice for notice in inbox.notices(boss.id)[0] if notice.kind == "notify"]  # aimed at the owner
    clock.advance(minutes=30)
    runtime.worker(environ={}).tick()
    breaches = [notice for notice in inbox.notices(boss.id)[0] if notice.kind == "notify"]
    assert [notice.title for notice in breaches] == ["线索已超时"]  # two chat groups, one notice
    assert [notice.title for notice in inbox.notices(rep.id)[0] if notice.kind == "notify"] == [
        "Lead overdue", "Lead due soon"]
