"""The import and export screens in Chromium over real HTTP: upload → mapping with suggestions →
data-health report → confirm → progress → result and error file; a list exported as Excel."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.engine import Engine
from engine.io.demo import demo_password
from engine.io.readers import read_table
from tests.support.blueprints import SHIPPED_CRM
from tests.support.served import CHROMIUM, CHROMIUM_ARGS, require_browser, serve_demo



@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Engine]]:
    require_browser()
    with serve_demo(tmp_path_factory.mktemp("imports") / "crm.sqlite", SHIPPED_CRM, leads=20) as served:
        yield served


@pytest.fixture
def page(served: Any) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN", accept_downloads=True)
        tab = context.new_page()
        tab.set_default_timeout(30_000)
        yield tab
        context.close()
        browser.close()


def sign_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/lead")
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(demo_password(username))
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(re.compile(r"/lead$"))


def test_a_manager_imports_a_gbk_ledger_through_the_screens(served: Any, page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect
    base, engine = served
    ledger = tmp_path / "展会登记表.csv"
    ledger.write_bytes(("姓名,公司名称,手机,大区,来源渠道\n"
                        "韩梅梅,屏幕测试一厂,13911110001,华东,展会扫码\n"
                        "李雷,屏幕测试二厂,13911110002,华南,展会扫码\n"
                        "王芳,屏幕测试三厂,12345,华北,展会扫码\n").encode("gbk"))
    sign_in(page, base, "manager")
    page.get_by_role("link", name="数据导入").click()
    page.wait_for_url(re.compile(r"/imports$"))
    page.locator("input[type=file]").set_input_files(str(ledger))
    page.get_by_role("button", name=re.compile("上传并体检")).click()

    # the columns were matched to fields by their labels and synonyms, shown for correction
    expect(page.locator("tr[data-column='手机'] select")).to_have_value("phone")
    expect(page.locator("tr[data-column='公司名称'] select")).to_have_value("company")
    expect(page.locator("tr[data-column='来源渠道'] select")).to_have_value("source")
    # the health report, before anything is written
    expect(page.locator("[data-rows]")).to_have_text("3")
    expect(page.locator("[data-created]")).to_have_text("2")
    expect(page.locator("[data-rejected]")).to_have_text("1")
    expect(page.locator("tr[data-field='phone']")).to_contain_text("第 4 行")
    expect(page.locator("section.health")).to_contain_text("预计新建")  # in the reader's language only
    for english in ("Would create", "Data health", "Filled", "Duplicates"):
        expect(page.locator("section.health")).not_to_contain_text(english)
    with engine.db.read() as connection:
        table = engine.schema.table("lead")
        assert connection.execute(sa.select(table.c.id).where(table.c.company.like("屏幕测试%"))).first() is None

    page.get_by_role("button", name=re.compile("确认导入")).click()
    page.wait_for_url(re.compile(r"/imports/\d+$"))
    expect(page.locator("[data-import-status]")).to_have_attribute("data-import-status", "done", timeout=60_000)
    expect(page.locator("[data-created]")).to_have_text("2")
    expect(page.locator("[data-rejected]")).to_have_text("1")
    with page.expect_download() as download:
        page.locator("[data-error-file]").click()
    errors = read_table(Path(download.value.path()).rename(tmp_path / "errors.csv"))
    assert [row[0] for row in errors.rows] == ["王芳"] and "phone" in errors.rows[0][-1]

    page.goto(f"{base}/lead?q=屏幕测试")
    expect(page.get_by_role("link", name="韩梅梅")).to_be_visible()
    with page.expect_download() as download:
        page.get_by_role("link", name="导出 Excel").click()
    exported = read_table(Path(download.value.path()).rename(tmp_path / "leads.xlsx"))
    names = {row[exported.headers.index("客户姓名")] for row in exported.rows}
    assert names == {"韩梅梅", "李雷"}
