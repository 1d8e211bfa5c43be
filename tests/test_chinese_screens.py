"""The Chinese UI shows no English message: the demo's users walk the main screens in Chinese
(lead list, lead page, the new-lead form refused with errors, board, dashboard, inbox, the
administrators' screens, and the refusals: wrong password, 403, bad filter, edit conflict)
and every English word on them is a name (brand, format) or the data the page shows."""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from engine.engine import Engine
from engine.io.demo import USERS, demo_password, seed_demo
from tests.support.blueprints import SHIPPED_CRM
from tests.support.chinese_screens import english_words
from tests.support.web import csrf_of, sign_in


@pytest.fixture
def demo(make_engine: Any) -> tuple[Engine, list[str]]:
    """The shipped CRM with a small demo, and every text value it holds (shown as data, not as messages)."""
    runtime = make_engine(SHIPPED_CRM)
    seed_demo(runtime, leads=40)
    data: list[str] = [user.display_name for user in USERS] + [user.username for user in USERS] + ["not-an-email"]
    with runtime.db.read() as connection:
        for entity in runtime.model.entities:
            table = runtime.schema.table(entity.name)
            columns = [column for column in table.c if isinstance(column.type, (sa.String, sa.Text, sa.JSON))]
            for row in connection.execute(sa.select(*columns)):
                data.extend(str(value) for value in row if value is not None)
        for name in ("crm_api_tokens",):
            if runtime.db.engine.dialect.has_table(connection, name):
                data.extend(str(row[0]) for row in connection.execute(sa.text(f"select name from {name}")))
    return runtime, data


def walk(client: TestClient, urls: list[str], data: list[str]) -> dict[str, set[str]]:
    """Every page of `urls` whose English words are not names or data, with those words."""
    leaks: dict[str, set[str]] = {}
    for url in urls:
        response = client.get(url)
        assert response.status_code in (200, 403, 404), (url, response.status_code)
        if words := english_words(response.text, data):
            leaks[url] = words
    return leaks


def first_id(runtime: Engine, entity: str) -> int:
    with runtime.db.read() as connection:
        return int(connection.execute(sa.select(sa.func.min(runtime.schema.table(entity).c.id))).scalar_one())


def test_the_chinese_screens_show_no_english_message(demo: tuple[Engine, list[str]]) -> None:
    runtime, data = demo
    lead_id = first_id(runtime, "lead")
    leaks: dict[str, set[str]] = {}
    for user in ("wang", "manager", "admin"):
        client = sign_in(runtime, user, demo_password(user), next="/")
        assert client.get("/").status_code in (200, 303)
        dashboards = [f"/dashboards/{spec.name}" for spec in runtime.model.dashboards]
        urls = ["/lead", "/lead?owner=me", "/lead?owner=unassigned", f"/lead/{lead_id}", "/lead/new", "/lead/board",
                "/opportunity/board", "/inbox", "/search?q=华东", "/imports", *dashboards]
        if user == "admin":
            urls += ["/admin/users", "/admin/users/1", "/admin/users/new", "/admin/outbox", "/admin/audit",
                     "/admin/blueprint", f"/account/{first_id(runtime, 'account')}"]
        else:
            urls += ["/admin/users"]  # 403 for them, in Chinese
        leaks |= {f"{user} {url}": words for url, words in walk(client, urls, data).items()}
        # the new-lead form refused: errors under the fields, in Chinese
        refused = client.post("/lead/new", data={"csrf_token": csrf_of(client.get("/lead/new").text),
                                                 "name": "", "phone": "12", "email": "not-an-email"})
        assert refused.status_code in (200, 400, 422)
        if words := english_words(refused.text, data):
            leaks[f"{user} POST /lead/new"] = words
        # a filter the list cannot apply
        for bad in ("budget__gt=abc&nonsense=1", "created_at__gte=yesterday", "per_page=100000", "owner=xyz"):
            if words := english_words(client.get(f"/lead?{bad}").text, data):
                leaks[f"{user} bad filter {bad}"] = words
    # an edit that lost the race: the record was changed meanwhile
    client = sign_in(runtime, "admin", demo_password("admin"))
    form = client.get(f"/lead/{lead_id}/edit").text
    version = re.search(r'name="version" value="(\d+)"', form)
    assert version is not None
    conflict = client.post(f"/lead/{lead_id}/edit", data={"csrf_token": csrf_of(form), "version": "0",
                                                          "name": "冲突测试"})
    if words := english_words(conflict.text, data):
        leaks["admin edit conflict"] = words
    # the sign-in refusals: wrong password, then the lockout
    anonymous = TestClient(runtime.web_app(), follow_redirects=False)
    token = csrf_of(anonymous.get("/login").text)
    for _ in range(6):
        refused = anonymous.post("/login", data={"username": "li", "password": "wrong", "csrf_token": token})
        if words := english_words(refused.text, data):
            leaks[f"login {refused.status_code}"] = words
    assert not leaks, "\n".join(f"{where}: {sorted(words)}" for where, words in sorted(leaks.items()))


def test_an_approval_shows_what_is_approved_in_the_subjects_words(demo: tuple[Engine, list[str]]) -> None:
    """The approver reads the values under approval by the deal's own labels (折扣(%), 预计金额 with
    its currency) and each step by its label — not the JSON snapshot or the step's expression."""
    runtime, _ = demo
    table = runtime.schema.table("approval")
    with runtime.db.read() as connection:
        request_id = connection.execute(sa.select(sa.func.min(table.c.id)).where(
            table.c.approval_name == "price_approval")).scalar_one()
    assert request_id is not None, "the demo requests price approvals"
    page = re.sub(r"<[^>]+>", " ", sign_in(runtime, "admin", demo_password("admin")).get(f"/approval/{request_id}").text)
    assert "折扣(%)" in page and "预计金额" in page and " CNY" in page
    assert "财务复核（折扣超过 25%）：" in page
    assert "number(discount)" not in page and "'amount'" not in page and "&#34;amount&#34;" not in page


def test_the_import_screens_name_entities_by_label_and_an_empty_mapping_is_suggested(
        demo: tuple[Engine, list[str]]) -> None:
    runtime, _ = demo
    manager = sign_in(runtime, "manager", demo_password("manager"))
    listing = manager.get("/imports").text
    assert re.search(r"<td>销售台账-示例\.xlsx</td><td>线索</td>", listing)  # the demo's import, by the entity's label
    assert "(lead)" not in listing and "<td>lead</td>" not in listing
    csv = "姓名,公司,手机\n张伟,杭州云启科技,13800138011\n".encode()
    reviewed = manager.post("/imports", data={"csrf_token": csrf_of(listing), "entity": "lead", "mapping": ""},
                            files={"file": ("名单.csv", csv, "text/csv")})
    assert reviewed.status_code == 200, reviewed.text[:400]
    text = re.sub(r"<[^>]+>", " ", reviewed.text)
    assert "名单.csv" in text and "→ 线索" in text and "查询参数无效" not in text


def test_the_admin_reads_a_leads_rule_decisions_in_chinese(demo: tuple[Engine, list[str]]) -> None:
    """The record page's 规则与分配说明 starts with one Chinese line per change — which rules acted,
    by their labels, and whom routing chose — before crm explain's technical text."""
    runtime, _ = demo
    traces = runtime.schema.traces
    with runtime.db.read() as connection:
        lead_id = connection.execute(sa.select(sa.func.min(traces.c.record_id)).where(
            traces.c.entity == "lead", traces.c.change == "created")).scalar_one()
    page = sign_in(runtime, "admin", demo_password("admin")).get(f"/lead/{lead_id}").text
    digest = page.split('<ol class="decisions">', 1)[1].split("</ol>", 1)[0]
    lines = re.findall(r"<li>(.*?)</li>", digest)
    created = next(line for line in lines if "创建（" in line)
    assert "触发规则：" in created and "线索评分" in created and "score_lead" not in created
    assert not english_words(digest, [user.display_name for user in USERS])
