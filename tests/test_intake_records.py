"""One delivery, several linked records: a signed delivery files the account, its contact and the
lead in one transaction (an existing account is linked, not duplicated; a refused contact leaves
nothing behind), and a mapping looks a link up by a natural key — over real HTTP, on SQLite and
PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from cli import main as crm

from engine.engine import Engine
from engine.metamodel.errors import BlueprintInvalid
from engine.runtime.ops.users import NewUser
from engine.runtime.records.actors import SYSTEM
from tests.support.blueprints import SHIPPED_CRM, load, write_blueprint
from tests.support.intake_blueprint import LINKED_SOURCES, linked_files
from tests.support.live_server import serving

TOKEN = "s3cret-token"
EXPO_SECRET = "expo-key"


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_WEBSITE_TOKEN", TOKEN)
    monkeypatch.setenv("TEST_DOUYIN_SECRET", "douyin-key")
    monkeypatch.setenv("TEST_EXPO_SECRET", EXPO_SECRET)
    monkeypatch.setenv("CRM_FORM_BUILDER_TOKEN", "form-token")


@pytest.fixture
def served(make_engine: Any) -> Iterator[tuple[str, Engine]]:
    runtime = make_engine(linked_files())
    runtime.users.add(NewUser("wang", "王", "sales_rep", "east"))
    with serving(runtime.web_app()) as base:
        yield base, runtime


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json",
                                                                             **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _signed_post(base: str, runtime: Engine, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    body = json.dumps(payload, ensure_ascii=False).encode()
    stamp = str(int(runtime.clock.now().timestamp()))
    signature = hmac.new(EXPO_SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return _post(f"{base}/hooks/expo", body, {"X-Timestamp": stamp, "X-Signature": signature})


def _rows(runtime: Engine, entity: str) -> list[dict[str, Any]]:
    table = runtime.schema.table(entity)
    with runtime.db.read() as connection:
        return [dict(row) for row in connection.execute(sa.select(table).order_by(table.c.id)).mappings()]


def _deliveries(runtime: Engine) -> list[Any]:
    table = runtime.schema.deliveries
    with runtime.db.read() as connection:
        return list(connection.execute(sa.select(table).order_by(table.c.id)))


def test_a_signed_delivery_files_the_account_its_contact_and_the_lead_linked(served: tuple[str, Engine],
                                                                           db_url: str, tmp_path: Path) -> None:
    base, runtime = served
    status, answer = _signed_post(base, runtime, {"scan_id": "s-1", "person": "王芳", "company": "华东机械",
                                                  "mobile": "13800138000"})
    assert status == 201, answer
    [account], [contact], [lead] = _rows(runtime, "account"), _rows(runtime, "contact"), _rows(runtime, "lead")
    assert (account["name"], contact["name"], lead["name"]) == ("华东机械", "王芳", "王芳")
    assert contact["account"] == account["id"] and lead["account"] == account["id"]
    assert answer["record_id"] == lead["id"]
    made = [(item["record"], item["entity"], item["id"], item["outcome"]) for item in answer["records"]]
    assert made == [("account", "account", account["id"], "created"), ("contact", "contact", contact["id"], "created"),
                    ("lead", "lead", lead["id"], "created")]
    [delivery] = _deliveries(runtime)
    assert delivery.status == "processed" and delivery.records == answer["records"]
    # each record went through RecordService: its rules ran and its events were written
    assert account["code"] == "华东机械".upper() and lead["owner"] is not None
    for entity, record in (("account", account), ("contact", contact), ("lead", lead)):
        assert "created" in [event.kind for event in runtime.records.events(entity, record["id"], actor=SYSTEM)]
    listed = CliRunner().invoke(crm, ["hooks", "list", "--db", db_url, "--blueprint", str(tmp_path / "bp")])
    assert listed.exit_code == 0, listed.output
    assert f"lead {lead['id']}" in listed.output
    assert f"with account {account['id']} created, contact {contact['id']} created" in listed.output


def test_a_second_delivery_from_the_same_company_links_the_existing_account(served: tuple[str, Engine]) -> None:
    base, runtime = served
    first = _signed_post(base, runtime, {"scan_id": "s-1", "person": "王芳", "company": "华东机械",
                                         "mobile": "13800138000"})
    second = _signed_post(base, runtime, {"scan_id": "s-2", "person": "李强", "company": "华东机械",
                                          "mobile": "13900139000"})
    assert (first[0], second[0]) == (201, 201)
    [account] = _rows(runtime, "account")
    contacts, leads = _rows(runtime, "contact"), _rows(runtime, "lead")
    assert [contact["name"] for contact in contacts] == ["王芳", "李强"]
    assert {contact["account"] for contact in contacts} == {lead["account"] for lead in leads} == {account["id"]}
    assert second[1]["records"][0] == {"record": "account", "entity": "account", "id": account["id"],
                                       "outcome": "linked"}
    # the same person again at the same company: their contact is linked too, and the lead merges (phone dedup)
    again = _signed_post(base, runtime, {"scan_id": "s-3", "person": "王芳", "company": "华东机械",
                                         "mobile": "13800138000"})
    assert again[0] == 200 and [item["outcome"] for item in again[1]["records"]] == ["linked", "linked", "merged"]
    assert len(_rows(runtime, "contact")) == 2 and len(_rows(runtime, "lead")) == 2


def test_deliveries_from_one_company_arriving_at_once_file_one_account(served: tuple[str, Engine]) -> None:
    base, runtime = served
    payloads = [{"scan_id": f"s-{index}", "person": f"访客{index}", "company": "华北重工",
                 "mobile": f"1380000{index:04d}"} for index in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda payload: _signed_post(base, runtime, payload), payloads))
    assert [status for status, _ in answers] == [201] * 8, answers
    [account] = _rows(runtime, "account")
    assert len(_rows(runtime, "contact")) == len(_rows(runtime, "lead")) == 8
    assert sorted(answer["records"][0]["outcome"] for _, answer in answers) == ["created"] + ["linked"] * 7
    assert {lead["account"] for lead in _rows(runtime, "lead")} == {account["id"]}


def test_a_delivery_with_a_bad_contact_phone_writes_nothing_and_names_the_field(served: tuple[str, Engine]) -> None:
    base, runtime = served
    payload = {"scan_id": "s-9", "person": "钱总", "company": "华南电子", "mobile": "12345"}
    status, answer = _signed_post(base, runtime, payload)
    assert status == 422 and answer["outcome"] == "failed"
    # the contact is refused first: its phone is named, and neither the account before it nor the lead is kept
    assert answer["errors"][0]["field"] == "phone" and answer["errors"][0]["record"] == "contact"
    assert answer["detail"].startswith("contact: phone")  # the engine's English, as the delivery log keeps it
    assert answer["message"].startswith("contact: ") and "不是有效的电话号码" in answer["message"]  # zh: the default
    assert _rows(runtime, "account") == _rows(runtime, "contact") == _rows(runtime, "lead") == []
    [delivery] = _deliveries(runtime)
    assert (delivery.status, delivery.error, delivery.records) == ("failed", answer["detail"], None)
    fixed = _signed_post(base, runtime, {**payload, "mobile": "13700137000"})
    assert fixed[0] == 201  # the event id was not spent by the refused delivery
    assert len(_rows(runtime, "account")) == len(_rows(runtime, "contact")) == len(_rows(runtime, "lead")) == 1


def test_a_delivery_without_a_company_makes_only_the_lead(served: tuple[str, Engine]) -> None:
    base, runtime = served
    status, answer = _signed_post(base, runtime, {"scan_id": "s-5", "person": "赵六", "mobile": "13600136000"})
    assert status == 201 and [item["record"] for item in answer["records"]] == ["lead"]
    assert _rows(runtime, "account") == _rows(runtime, "contact") == [] and _rows(runtime, "lead")[0]["account"] is None


def test_a_delivery_caught_by_the_test_filter_keeps_its_lead_flagged_and_files_no_account(
        served: tuple[str, Engine]) -> None:
    base, runtime = served
    status, answer = _signed_post(base, runtime, {"scan_id": "s-6", "person": "测试员", "company": "测试公司",
                                                  "mobile": "13300133000"})
    assert status == 201 and [item["record"] for item in answer["records"]] == ["lead"]
    assert _rows(runtime, "account") == _rows(runtime, "contact") == []
    [lead] = _rows(runtime, "lead")
    assert lead["owner"] is None  # kept, flagged and not routed, as any lead the filter catches


def test_a_link_looked_up_by_name_hits_misses_and_refuses_an_ambiguous_name(served: tuple[str, Engine]) -> None:
    base, runtime = served
    known = runtime.records.create("account", {"name": "华东机械"}, actor=SYSTEM).record
    for _ in range(2):
        runtime.records.create("account", {"name": "同名公司"}, actor=SYSTEM)
    token = {"X-Webhook-Token": TOKEN}

    def enrol(event: str, company: str) -> tuple[int, dict[str, Any]]:
        body = json.dumps({"id": event, "person": "孙七", "mobile": "13500135000", "company": company},
                          ensure_ascii=False).encode()
        return _post(f"{base}/hooks/enrol", body, token)

    hit = enrol("e-1", "华东机械")
    assert hit[0] == 201 and runtime.records.get("lead", hit[1]["record_id"], actor=SYSTEM)["account"] == known["id"]
    missing = enrol("e-2", "不存在的公司")
    assert missing[0] == 422 and missing[1]["errors"][0]["field"] == "account"
    assert "不存在的公司" in missing[1]["message"] and "no account whose name" in missing[1]["detail"]
    ambiguous = enrol("e-3", "同名公司")
    assert ambiguous[0] == 422 and ambiguous[1]["errors"][0]["field"] == "account"
    assert "several account records have name '同名公司'" in ambiguous[1]["detail"]
    assert len(_rows(runtime, "lead")) == 1
    assert [(row.status, row.error) for row in _deliveries(runtime)][1:] == [
        ("failed", missing[1]["detail"]), ("failed", ambiguous[1]["detail"])]


def test_the_shipped_form_builder_files_the_company_as_an_account_with_its_contact(make_engine: Any) -> None:
    runtime = make_engine(SHIPPED_CRM)
    expo = json.loads((SHIPPED_CRM.parent.parent / "examples" / "webhooks" / "form_builder.json").read_text())
    trial = {**expo, "form": "试用申请表", "entry": {**expo["entry"], "field_1": "林经理", "field_2": "13700002222",
                                                   "field_4": "lin@example.cn"}}
    with serving(runtime.web_app()) as base:
        answers = [_post(f"{base}/hooks/form_builder?token=form-token", json.dumps(body).encode(), {})
                   for body in (expo, trial)]
    assert [status for status, _ in answers] == [201, 201]
    [account] = [row for row in _rows(runtime, "account") if row["name"] == "深圳科讯电子有限公司"]
    contacts = [row for row in _rows(runtime, "contact") if row["account"] == account["id"]]
    assert sorted(contact["name"] for contact in contacts) == ["林经理", "陈工"]
    for _, answer in answers:
        assert runtime.records.get("lead", answer["record_id"], actor=SYSTEM)["account"] == account["id"]
    assert account["industry"] == "manufacturing" and account["source"] == "form_builder"


@pytest.mark.parametrize(("line", "change", "expected"), [
    ("          account: {record: account}\n", "          account: {record: acount}\n", "there is no record 'acount'"),
    ("      name: person\n", "      name: {path: person, lookup: name}\n", "'lookup' applies to link fields"),
    ("          account: {record: account}\n", "          account: {path: company, lookup: title}\n",
     "lookup field 'title' is not a field of 'account'"),
])
def test_a_wrong_record_link_or_lookup_is_reported_at_its_line(tmp_path: Path, line: str, change: str,
                                                               expected: str) -> None:
    sources = LINKED_SOURCES.replace("\n" + line, "\n" + change, 1)
    assert sources != LINKED_SOURCES
    number = sources[:sources.index("\n" + change) + 1].count("\n")  # (the leading blank line is not written)
    folder = write_blueprint(tmp_path / "bp", linked_files(**{"sources.yaml": sources}))
    with pytest.raises(BlueprintInvalid) as raised:
        load(folder)
    assert expected in str(raised.value) and f"sources.yaml:{number}:" in str(raised.value)
