"""Handover flows: a node's owner hears at 50 % of its business-hours SLA (and so does the node that
handed over), the flow escalates at 100 %; the e-contract platform's signed webhook completes the
signing node; a node that has not handed over what it must is not left; the blueprint is checked
at load with file:line. Every storage test runs on SQLite and on PostgreSQL with a fake clock.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from engine.engine import Engine
from engine.metamodel import BlueprintInvalid
from engine.runtime.background.outbox import list_messages
from engine.runtime.automation.comments import Comments
from engine.runtime.ops.users import NewUser
from engine.runtime.records.actors import SYSTEM, Actor
from engine.runtime.records.errors import StageRefused
from tests.support.blueprints import SHIPPED_CRM, load, write_blueprint
from tests.support.browser import serve
from tests.support.handover_blueprint import ECONTRACT_SECRET, HANDOVER, econtract_headers, handover_blueprint
from tests.support.web import api_client, sign_in, visible_text

CST = ZoneInfo("Asia/Shanghai")
PASSWORD = "handover-pass-2026"


def _local(year: int, month: int, day: int, hour: int, minute: int) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=CST).astimezone(dt.timezone.utc)


@pytest.fixture
def flow(make_engine: Any, monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.setenv("TEST_ECONTRACT_SECRET", ECONTRACT_SECRET)
    runtime: Engine = make_engine(handover_blueprint())
    runtime.users.add(NewUser("boss", "Boss Liu", "admin", phone="13800000000", password=PASSWORD))
    runtime.users.add(NewUser("li", "Li Na", "sales_rep", manager="boss", phone="13900000001"))
    runtime.users.add(NewUser("zhang", "Zhang Wei", "legal", manager="boss", phone="13900000002"))
    runtime.users.add(NewUser("qian", "Qian Fang", "finance", manager="boss", phone="13900000003"))
    return runtime


def _user_id(runtime: Engine, username: str) -> int:
    users = runtime.schema.users
    with runtime.db.read() as connection:
        return int(connection.execute(sa.select(users.c.id).where(users.c.username == username)).scalar_one())


def _texts_and_mentions(runtime: Engine) -> list[tuple[str, list[str]]]:
    return [(m["payload"]["text"], sorted(m["payload"].get("mention_mobiles") or []))
            for m in reversed(list_messages(runtime.db, runtime.schema))]


def _at_signing(runtime: Engine, contract_no: str = "HT-2026-001") -> dict[str, Any]:
    item = runtime.records.create("delivery_handover", {"name": "华东机床 交付", "contract_no": contract_no,
                                                        "owner": _user_id(runtime, "zhang")}, actor=SYSTEM).record
    return runtime.records.transition("delivery_handover", item["id"], "signing", field="node", actor=SYSTEM)


def test_a_node_left_idle_over_qingming_warns_both_sides_at_half_and_escalates_at_its_sla(flow: Engine,
                                                                                         clock: Any) -> None:
    clock.set(_local(2026, 4, 3, 17, 0))  # Friday 17:00; Qingming: Saturday 4 – Monday 6 April off
    item = _at_signing(flow)
    worker = flow.worker(environ={})
    clock.set(_local(2026, 4, 7, 9, 59))  # 1 h on Friday, the holiday weekend stands still, 59 min Tuesday
    worker.tick()
    assert [text for text, _ in _texts_and_mentions(flow)] == []

    clock.set(_local(2026, 4, 7, 10, 0))  # 2 of the 4 business hours
    worker.tick()
    (warning, mentions), = _texts_and_mentions(flow)
    assert "华东机床 交付" in warning and "合同签署" in warning and "50%" in warning
    # both sides: legal, who owns the node, and sales, who handed over; not finance
    assert mentions == ["13900000001", "13900000002"]

    clock.set(_local(2026, 4, 7, 11, 59))
    worker.tick()
    assert len(_texts_and_mentions(flow)) == 1
    clock.set(_local(2026, 4, 7, 12, 0))  # 4 business hours: Friday 1 h + Tuesday 9:00–12:00
    worker.tick()
    messages = _texts_and_mentions(flow)
    assert len(messages) == 2
    escalation, mentions = messages[1]
    assert "已超时" in escalation and "升级" in escalation
    assert mentions == ["13800000000", "13900000002"]  # legal and the owner's manager
    overdue = flow.records.get("delivery_handover", item["id"], actor=SYSTEM)
    assert overdue["tags"] == ["handover_overdue"] and overdue["node"] == "signing"

    for _ in range(3):  # later ticks send nothing again
        clock.advance(minutes=30)
        worker.tick()
    assert len(_texts_and_mentions(flow)) == 2


def _post_signed(base: str, payload: dict[str, Any], stamp: str) -> tuple[int, dict[str, Any]]:
    body = json.dumps(payload).encode()
    request = urllib.request.Request(f"{base}/hooks/econtract_signed", data=body, method="POST",
                                     headers=econtract_headers(body, stamp))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_e_contract_signed_webhook_completes_the_signing_node(flow: Engine, clock: Any) -> None:
    clock.set(_local(2026, 4, 8, 9, 30))
    item = _at_signing(flow)
    stamp = str(int(clock.now().timestamp()))
    clock.set(_local(2026, 4, 8, 10, 30))
    signed = {"event": {"id": "ec-981"}, "contract": {"number": "HT-2026-001", "signed_at": "2026-04-08T10:28:00+08:00"}}
    with serve(flow) as base:
        status, answer = _post_signed(base, signed, str(int(clock.now().timestamp())))
        assert status == 200, answer
        assert answer["record_id"] == item["id"]
        moved = flow.records.get("delivery_handover", item["id"], actor=SYSTEM)
        assert moved["node"] == "payment" and moved["signed_at"] == _local(2026, 4, 8, 10, 28)
        # the same event again changes nothing; an unknown contract is a clear 404 naming the field
        assert _post_signed(base, signed, str(int(clock.now().timestamp())))[1]["outcome"] == "duplicate"
        status, answer = _post_signed(base, {"event": {"id": "ec-982"}, "contract": {"number": "HT-404"}},
                                      str(int(clock.now().timestamp())))
        assert status == 404 and "HT-404" in answer["detail"] and "contract_no" in answer["detail"]
        handover = flow.model.entity("delivery_handover")  # and says it in the blueprint's language, with the value
        assert answer["message"] == (f"没有{handover.field('contract_no').label.text('zh')}为“HT-404”的"
                                     f"{handover.label.text('zh')}")
        assert _post_signed(base, signed, stamp + "0")[0] == 401  # a forged timestamp: refused
    summary = {row["policy"]: row for row in flow.slas.summary("delivery_handover", item["id"], clock.now())}
    signing = summary["handover:sales_to_delivery:signing"]
    assert (signing["state"], signing["met"]) == ("stopped", True)
    assert summary["handover:sales_to_delivery:payment"]["state"] == "on_track"
    client = sign_in(flow, "boss", PASSWORD)
    refused = client.get("/delivery_handover/board?field=node&month=2026-13")
    assert refused.status_code == 422 and "月份“2026-13”无效" in refused.text
    page = visible_text(client.get("/delivery_handover/board?field=node&month=2026-04").text)
    assert "2026-04 交接时效" in page
    assert "合同签署 Legal 4h 1 1 0 0 100%" in " ".join(page.split())  # node, role, SLA, done, on time, late…


def test_a_missing_required_input_blocks_the_move_with_its_reason(flow: Engine) -> None:
    item = flow.records.create("delivery_handover", {"name": "华南注塑 交付"}, actor=SYSTEM).record
    with pytest.raises(StageRefused) as refused:
        flow.records.transition("delivery_handover", item["id"], "signing", field="node", actor=SYSTEM)
    assert "contract no" in refused.value.message.lower()
    assert flow.records.get("delivery_handover", item["id"], actor=SYSTEM)["node"] == "solution"
    response = api_client(flow, "boss").post(f"/api/delivery_handover/{item['id']}/transition",
                                             json={"to": "signing", "field": "node"})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "stage_requirements"
    assert "Contract no" in response.json()["message"]  # the reason names the missing input, in Chinese here
    # the e-contract webhook cannot skip it either: an item still at solution is updated, not moved
    flow.records.update("delivery_handover", item["id"], {"contract_no": "HT-7"}, actor=SYSTEM)
    assert flow.records.get("delivery_handover", item["id"], actor=SYSTEM)["node"] == "solution"


@pytest.mark.parametrize(("replace", "expected"), [
    (("role: legal", "role: lawyer"), "handover.yaml:15:11: error: unknown role 'lawyer'"),
    (("completed_by: econtract_signed", "completed_by: econtract"), "unknown source 'econtract'"),
    (("  - name: done\n    kind: done\n", "  - name: done\n    kind: done\n    sla: 2h\n"),
     "the final node 'done' takes no sla"),
    (("channel: dingtalk_delivery\n", ""), "warns and escalates through the flow's channel"),
])
def test_a_wrong_flow_is_refused_at_load_naming_file_and_line(tmp_path: Any, replace: tuple[str, str],
                                                              expected: str) -> None:
    assert replace[0] in HANDOVER
    files = handover_blueprint(**{"handover.yaml": HANDOVER.replace(*replace)})
    with pytest.raises(BlueprintInvalid) as invalid:
        load(write_blueprint(tmp_path / "bp", files))
    assert expected in str(invalid.value)


def test_a_source_that_completes_a_node_must_find_its_item(tmp_path: Any) -> None:
    files = handover_blueprint()
    files["sources.yaml"] = files["sources.yaml"].replace("    match: contract_no\n", "")
    with pytest.raises(BlueprintInvalid) as invalid:
        load(write_blueprint(tmp_path / "bp", files))
    assert "handover.yaml:" in str(invalid.value) and "add match: <field> to the source" in str(invalid.value)


def test_a_comment_on_a_handover_item_notifies_the_colleague_it_mentions(flow: Engine, clock: Any) -> None:
    flow.users.add(NewUser("wu", "Wu Lan", "legal", im_ids={"dingtalk": "dt-wu"}))  # her DingTalk id
    item = _at_signing(flow)
    sales = Actor(_user_id(flow, "li"), "li", role="sales_rep")
    posted = Comments(flow.model, flow.schema, flow.db, clock, flow.records).add(
        "delivery_handover", item["id"], "@wu 客户法务周五前回签，请留意条款 7.2", actor=sales)
    assert posted.mentioned == ("wu",)
    message, = list_messages(flow.db, flow.schema)
    assert message["channel"] == "dingtalk_delivery" and "条款 7.2" in message["payload"]["text"]
    assert "dt-wu" in json.dumps(message["payload"])


def test_the_shipped_clinical_trial_warns_logistics_and_medical_halfway_through_the_logistics_day(
        make_engine: Any, clock: Any) -> None:
    runtime: Engine = make_engine(SHIPPED_CRM)
    for user in (NewUser("he", "He", "medical", phone="13900000009"), NewUser("luo", "Luo", "logistics", phone="13900000010"),
                 NewUser("li", "Li", "sales_rep", phone="13900000003"), NewUser("sun", "Sun", "legal", phone="13900000007")):
        runtime.users.add(user)
    clock.set(_local(2026, 4, 8, 9, 0))  # Wednesday; the head-office day is 9:00–12:00, 13:30–18:00
    hospital = runtime.records.create("account", {"name": "瑞康医院"}, actor=SYSTEM).record
    request = runtime.records.create("trial_handover", {"name": "瑞康医院 超声刀试用", "account": hospital["id"]},
                                     actor=SYSTEM).record
    with pytest.raises(StageRefused):  # medical review hands over the checked qualification
        runtime.records.transition("trial_handover", request["id"], "logistics", field="node", actor=SYSTEM)
    runtime.records.update("trial_handover", request["id"], {"qualification_checked": True}, actor=SYSTEM)
    runtime.records.transition("trial_handover", request["id"], "logistics", field="node", actor=SYSTEM)
    worker = runtime.worker(environ={})
    def trial_messages() -> list[tuple[str, list[str]]]:  # the shipped jobs post their morning reports too
        return [(text, mentions) for text, mentions in _texts_and_mentions(runtime) if "临床试用申请" in text]

    clock.set(_local(2026, 4, 8, 14, 14))
    worker.tick()
    assert trial_messages() == []
    clock.set(_local(2026, 4, 8, 14, 15))  # 3 h 45 min of the 7 h 30 min business day
    worker.tick()
    (text, mentions), = trial_messages()
    assert "临床试用申请" in text and "物流备货" in text
    assert mentions == ["13900000009", "13900000010"]  # logistics, and medical who handed over
