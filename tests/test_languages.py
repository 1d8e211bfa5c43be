"""Every reader in their language: the JSON API's error messages follow Accept-Language (else
the blueprint's default language) with the same machine code and field, and the `crm`
command speaks CRM_LANG (else the locale) and prints times in the business time zone."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

import cli
from engine.engine import Engine
from engine.runtime.ops.users import NewUser
from tests.support.blueprints import SHIPPED_CRM
from tests.support.web import api_client

CHINESE = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture
def crm(make_engine: Any) -> Engine:
    runtime = make_engine(SHIPPED_CRM)
    runtime.users.add(NewUser("boss", "老板", "admin", password="boss-pass-1"))
    runtime.users.add(NewUser("zhao", "赵敏", "sales_rep", "south", password="zhao-pass-1"))
    return runtime


def test_a_refused_lead_is_explained_in_the_callers_language_with_the_same_code_and_field(crm: Engine) -> None:
    bad = {"name": "", "phone": "12", "source": "nowhere"}
    zh = api_client(crm, "boss", "zh-CN,zh;q=0.9").post("/api/lead", json=bad)
    en = api_client(crm, "boss", "en-US,en;q=0.8").post("/api/lead", json=bad)
    assert zh.status_code == en.status_code == 422
    zh_body, en_body = zh.json(), en.json()
    assert zh_body["code"] == en_body["code"] == "validation_failed"
    assert zh_body["field"] == en_body["field"]
    assert [e["field"] for e in zh_body["errors"]] == [e["field"] for e in en_body["errors"]]
    assert [e["code"] for e in zh_body["errors"]] == [e["code"] for e in en_body["errors"]]
    # Chinese names each field by its label and says what is wrong in Chinese; English as before
    assert CHINESE.search(zh_body["message"]) and not re.search(r"\b(is|required|expected)\b", zh_body["message"])
    assert all(CHINESE.search(error["message"]) for error in zh_body["errors"]), zh_body["errors"]
    assert "姓名" in zh_body["message"] or "线索" in zh_body["message"], zh_body["message"]
    assert not CHINESE.search(en_body["message"]) and en_body["message"]
    assert api_client(crm, "boss").get("/api/lead").json()["total"] == 0  # nothing was written


def test_a_field_the_lead_lacks_or_the_engine_keeps_is_named_in_the_chinese_message(crm: Engine) -> None:
    zh = api_client(crm, "boss", "zh")
    body = zh.post("/api/lead", json={"name": "王强", "phone": "13800138000", "source": "website",
                                      "regoin": "华东", "version": 3}).json()
    messages = {error["field"]: error["message"] for error in body["errors"]}
    assert messages["regoin"].startswith("regoin：") and "“region”" in messages["regoin"], messages  # did you mean
    assert messages["version"].startswith("version："), messages
    assert "regoin" in body["message"] and "version" in body["message"], body["message"]
    assert zh.get("/api/lead").json()["total"] == 0  # refused whole: nothing written


def test_other_refusals_follow_the_language_too(crm: Engine) -> None:
    zh, en = api_client(crm, "zhao", "zh"), api_client(crm, "zhao", "en")
    for path in ("/api/lead/999999", "/api/nosuchthing"):
        answers = zh.get(path).json(), en.get(path).json()
        assert answers[0]["code"] == answers[1]["code"], path
        assert CHINESE.search(answers[0]["message"]) and not CHINESE.search(answers[1]["message"]), answers
    refused = zh.get("/api/lead", params={"sort": "nonsense"})
    assert refused.status_code == 422 and CHINESE.search(refused.json()["message"]), refused.json()
    anonymous = TestClient(crm.web_app(), headers={"Accept-Language": "zh"}).get("/api/lead")
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "unauthenticated"
    assert CHINESE.search(anonymous.json()["message"]) and "Bearer" in anonymous.json()["message"]


def test_without_accept_language_the_blueprints_default_language_answers(crm: Engine) -> None:
    client = TestClient(crm.web_app(), headers={"Authorization": f"Bearer {crm.users.create_token('boss')}"})
    assert CHINESE.search(client.get("/api/lead/424242").json()["message"])  # the shipped CRM: zh


def test_a_blueprint_whose_default_language_is_english_answers_in_english(make_engine: Any) -> None:
    english = make_engine({"app.yaml": "app: shop\nsettings:\n  languages: [en, zh]\n  default_language: en\n"
                                       "include: [entities/*.yaml]\n",
                           "entities/item.yaml": "entity: item\nlabel: {en: Item, zh: 商品}\ntitle: name\n"
                                                 "fields:\n  name: {type: string, required: true, "
                                                 "label: {en: Name, zh: 名称}}\n"}, folder="shop")
    english.users.add(NewUser("boss", "Boss", "admin", password="boss-pass-1"))
    client = TestClient(english.web_app(), headers={"Authorization": f"Bearer {english.users.create_token('boss')}"})
    answer = client.post("/api/item", json={}).json()
    assert answer["field"] == "name" and not CHINESE.search(answer["message"]), answer
    chinese = client.post("/api/item", json={}, headers={"Accept-Language": "zh"}).json()
    assert chinese["field"] == "name" and CHINESE.search(chinese["message"]), chinese


def test_the_cli_speaks_crm_lang_and_prints_business_times(tmp_path: Path, monkeypatch: Any) -> None:
    from engine.engine import open_engine
    from engine.metamodel import load_blueprint
    from engine.rules import FUNCTION_NAMES, FakeClock

    url = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    moment = dt.datetime(2026, 3, 2, 17, 30, tzinfo=dt.timezone.utc)  # 01:30 on March 3rd in Shanghai
    runtime = open_engine(load_blueprint(SHIPPED_CRM, functions=FUNCTION_NAMES), url, clock=FakeClock(moment))
    runtime.users.add(NewUser("wang", "王磊", "sales_rep", "east", password="wang-pass-1"))
    runtime.users.create_token("wang", "报表", days=1)
    runtime.close()
    where = ["--db", url, "--blueprint", str(SHIPPED_CRM)]
    runner = CliRunner()
    monkeypatch.setenv("LANG", "en_US.UTF-8")
    monkeypatch.setenv("CRM_LANG", "zh")  # CRM_LANG wins over the locale
    listed = runner.invoke(cli.main, ["user", "list", *where])
    assert listed.exit_code == 0 and "启用" in listed.output and "active" not in listed.output, listed.output
    empty = runner.invoke(cli.main, ["outbox", "list", *where])
    assert empty.exit_code == 0 and "没有消息" in empty.output, empty.output
    tokens = runner.invoke(cli.main, ["token", "list", *where])
    assert "到期 2026-03-04" in tokens.output and "从未使用" in tokens.output, tokens.output  # Shanghai's date
    refused = runner.invoke(cli.main, ["outbox", "retry", *where])
    assert refused.exit_code == 1 and "错误：请给出消息编号或 --all" in refused.output
    replay = runner.invoke(cli.main, ["hooks", "replay", *where])
    assert replay.exit_code == 1 and "请给出投递编号" in replay.output, replay.output
    checked = runner.invoke(cli.main, ["doctor", *where])
    assert "个错误" in checked.output and "finding" not in checked.output, checked.output
    assert "[警告] 通知渠道未就绪" in checked.output and "[WARNING]" not in checked.output, checked.output
    mappings = runner.invoke(cli.main, ["imports", *where])
    assert "映射 sales_ledger" in mappings.output and "columns" not in mappings.output, mappings.output
    monkeypatch.delenv("CRM_LANG")  # then the locale decides
    assert "active" in runner.invoke(cli.main, ["user", "list", *where]).output
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    assert "启用" in runner.invoke(cli.main, ["user", "list", *where]).output
    monkeypatch.setenv("LANG", "C.UTF-8")  # neither: English, which scripts parse
    assert "no messages" in runner.invoke(cli.main, ["outbox", "list", *where]).output


def test_crm_validate_summarises_a_valid_blueprint_in_one_language(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    monkeypatch.setenv("CRM_LANG", "zh")
    chinese = runner.invoke(cli.main, ["validate", str(SHIPPED_CRM)])
    assert chinese.exit_code == 0, chinese.output
    assert "线索：38 个字段" in chinese.output and "漏斗 lead_follow_up：" in chinese.output
    assert "SLA lead_first_call（lead）：从 assigned 时开始计时" in chinese.output
    for english in ("fields", "list view", "funnel", "counted from", "roles", " / Lead"):
        assert english not in chinese.output, english
    monkeypatch.setenv("CRM_LANG", "en")
    english_output = runner.invoke(cli.main, ["validate", str(SHIPPED_CRM)]).output
    assert "Lead: 38 fields" in english_output and "sla lead_first_call on lead: counted from when assigned" \
        in english_output
    assert not re.search(r"[\u4e00-\u9fff]", english_output), english_output
