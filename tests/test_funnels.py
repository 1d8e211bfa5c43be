"""Stage gates on every write path, on SQLite and PostgreSQL: the API (PATCH and …/transition), the
screen form, the board, rule and timer actions and imports all get the same refusal, listing every
missing item; a move that meets everything records a stage_changed event with its evidence.

The blueprint is tests/support/funnel_blueprint.py: qualify → demo (deck, questions, a done demo
activity) → quote (a signed quote that is a PDF or an image; above 15 % discount, the price
approval) → won, with lost beside.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import pytest
import sqlalchemy as sa

from engine.engine import Engine
from engine.metamodel.actions import TransitionAction
from engine.runtime.ops.users import NewUser
from engine.runtime.records.actors import SYSTEM, Actor
from engine.runtime.records.errors import StageRefused
from tests.support.funnel_blueprint import FILES, PASSWORD, signed_in
from tests.support.web import api_client, csrf_of, visible_text

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

PDF = ("签字报价单.pdf", b"%PDF-1.4 signed quote", "application/pdf")


@pytest.fixture
def sales(make_engine: Any) -> tuple[Engine, dict[str, Actor]]:
    runtime = make_engine(FILES)
    people = {}
    for user in (NewUser("zhou", "周经理", "sales_manager", "east", password=PASSWORD),
                 NewUser("wang", "王磊", "sales_rep", "east", "zhou", password=PASSWORD),
                 NewUser("qian", "钱会计", "finance", "finance", password=PASSWORD),
                 NewUser("admin", "管理员", "admin", password=PASSWORD)):
        people[user.username] = runtime.users.add(user)
    return runtime, people


def opportunity(runtime: Engine, owner: Actor, **values: Any) -> dict[str, Any]:
    account = runtime.records.create("account", {"name": "宁波精工"}, actor=SYSTEM).record
    return runtime.records.create("opportunity", {"name": "宁波精工产线改造", "account": account["id"],
                                                  "owner": owner.id, **values}, actor=SYSTEM).record


def in_demo(runtime: Engine, rep: Actor, **values: Any) -> dict[str, Any]:
    """An opportunity that earned the demo stage: deck, questions and a done demo logged."""
    deal = opportunity(runtime, rep, **values)
    deck = runtime.records.store_file("演示方案.pptx", "application/vnd.ms-powerpoint", b"deck", actor=rep)
    runtime.records.update("opportunity", deal["id"], {"demo_deck": deck["id"], "customer_questions": "交期多久？"},
                           actor=rep)
    runtime.records.create("activity", {"subject": "产品演示", "kind": "demo", "done": True,
                                        "opportunity": deal["id"]}, actor=rep)
    return runtime.records.transition("opportunity", deal["id"], "demo", actor=rep)


def events(runtime: Engine, record_id: int, kind: str) -> list[dict[str, Any]]:
    table = runtime.schema.events
    with runtime.db.read() as connection:
        rows = connection.execute(sa.select(table.c.data).where(table.c.entity == "opportunity",
                                                                table.c.record_id == record_id,
                                                                table.c.kind == kind).order_by(table.c.id)).all()
    return [row.data for row in rows]


def _counts(runtime: Engine) -> tuple[int, int]:
    with runtime.db.read() as connection:
        return (connection.execute(sa.select(sa.func.count()).select_from(runtime.schema.events)).scalar_one(),
                connection.execute(sa.select(sa.func.max(runtime.schema.table("opportunity").c.version))).scalar_one())


QUOTE_ITEMS = {"attachment:signed_quote", "approval:price_approval"}


# -- the same refusal on every path -------------------------------------------------------------------

def test_quote_without_the_signed_quote_is_refused_alike_by_api_form_and_board(sales: Any) -> None:
    runtime, people = sales
    deal = in_demo(runtime, people["wang"], discount=20)
    before = _counts(runtime)

    patch = api_client(runtime, "wang").patch(f"/api/opportunity/{deal['id']}", json={"stage": "quote"})
    moved = api_client(runtime, "wang", "en").post(f"/api/opportunity/{deal['id']}/transition", json={"to": "quote"})
    assert patch.status_code == moved.status_code == 422
    assert patch.json()["code"] == moved.json()["code"] == "stage_requirements"
    assert {item["key"] for item in patch.json()["missing"]} == QUOTE_ITEMS
    assert [item["key"] for item in patch.json()["missing"]] == [item["key"] for item in moved.json()["missing"]]
    zh = {item["key"]: item for item in patch.json()["missing"]}
    assert zh["attachment:signed_quote"]["what"] == "上传客户签字报价单"
    assert "PDF、图片" in zh["attachment:signed_quote"]["how"]
    assert zh["approval:price_approval"]["how"] == "申请价格审批"
    assert patch.json()["message"].startswith("不能进入“方案报价”")
    assert moved.json()["message"].startswith("cannot enter “方案报价”")  # English texts, the analyst's labels
    assert {item["what"] for item in moved.json()["missing"]} == {"Upload the signed quote", "Price approval granted"}

    browser = signed_in(runtime, "wang")
    page = browser.get(f"/opportunity/{deal['id']}/edit").text
    form = browser.post(f"/opportunity/{deal['id']}/edit", data={
        "csrf_token": csrf_of(page), "version": str(deal["version"]), "name": deal["name"],
        "account": str(deal["account"]), "stage": "quote", "probability": "30", "discount": "20",
        "customer_questions": "交期多久？", "concern": ""})
    assert form.status_code == 422
    shown = visible_text(form.text)
    for item in patch.json()["missing"]:
        assert item["what"] in shown and item["how"] in shown

    board = browser.post("/opportunity/move", json={"id": deal["id"], "field": "stage", "to": "quote",
                                                    "version": deal["version"]},
                         headers={"X-CSRF-Token": csrf_of(browser.get("/opportunity/board").text)})
    assert board.status_code == 422 and board.json()["ok"] is False
    assert board.json()["missing"] == patch.json()["missing"]
    assert "无法移动：不能进入“方案报价”" in board.json()["message"]

    assert _counts(runtime) == before  # nothing written by any of them
    assert runtime.records.get("opportunity", deal["id"], actor=SYSTEM)["stage"] == "demo"


def test_with_the_signed_quote_and_the_price_approval_it_moves_and_the_event_keeps_the_evidence(sales: Any) -> None:
    runtime, people = sales
    deal = in_demo(runtime, people["wang"], discount=20)
    rep, manager = api_client(runtime, "wang"), api_client(runtime, "zhou")
    upload = rep.post("/api/files", files={"file": PDF})
    assert upload.status_code == 201
    rep.patch(f"/api/opportunity/{deal['id']}", json={"signed_quote": upload.json()["id"]})
    still = rep.post(f"/api/opportunity/{deal['id']}/transition", json={"to": "quote"})
    assert [item["key"] for item in still.json()["missing"]] == ["approval:price_approval"]

    request = rep.post(f"/api/opportunity/{deal['id']}/approvals/price_approval", json={"reason": "战略客户"})
    assert request.status_code == 201 and request.json()["status"] == "pending"
    assert rep.post(f"/api/opportunity/{deal['id']}/approvals/price_approval").status_code == 409  # one at a time
    waiting = rep.post(f"/api/opportunity/{deal['id']}/transition", json={"to": "quote"}).json()["missing"]
    assert waiting[0]["state"] == "pending" and "周经理" in waiting[0]["how"]
    task = manager.get("/api/approval_task", params={"owner": people["zhou"].id, "status": "pending"}).json()
    assert task["total"] == 1
    decided = manager.post(f"/api/approval_task/{task['items'][0]['id']}/decide",
                           json={"decision": "approve", "comment": "同意 20% 折扣"})
    assert decided.status_code == 200 and decided.json()["status"] == "approved"
    assert rep.get(f"/api/opportunity/{deal['id']}").json()["approval_status"] == "approved"  # on_approved ran

    moved = rep.post(f"/api/opportunity/{deal['id']}/transition", json={"to": "quote"})
    assert moved.status_code == 200 and moved.json()["stage"] == "quote"
    assert moved.json()["probability"] == 60  # the stage's probability
    (change,) = [data for data in events(runtime, deal["id"], "stage_changed") if data["to"] == "quote"]
    assert change["from"] == "demo" and change["move"] == "forward" and change["return"] is False
    evidence = {item["key"]: item["evidence"] for item in change["evidence"]}
    assert evidence["attachment:signed_quote"]["name"] == "签字报价单.pdf"
    assert evidence["approval:price_approval"]["approval"] == request.json()["id"]
    assert isinstance(change["dwell_seconds"], int)


def test_an_approval_no_longer_counts_once_the_values_it_covered_change(sales: Any) -> None:
    runtime, people = sales
    deal = in_demo(runtime, people["wang"], discount=20)
    quote = runtime.records.store_file("quote.png", "image/png", b"png", actor=people["wang"])
    runtime.records.update("opportunity", deal["id"], {"signed_quote": quote["id"]}, actor=people["wang"])
    runtime.approvals.request("opportunity", deal["id"], "price_approval", actor=people["wang"])
    task = _pending_tasks(runtime, people["zhou"])[0]
    runtime.approvals.decide(task, "approve", "ok", actor=people["zhou"])
    runtime.records.update("opportunity", deal["id"], {"discount": 35}, actor=people["wang"])
    with pytest.raises(StageRefused) as refused:
        runtime.records.transition("opportunity", deal["id"], "quote", actor=people["wang"])
    (item,) = refused.value.items("zh")
    assert item["state"] == "stale" and "请重新申请价格审批" in item["how"]


def _pending_tasks(runtime: Engine, person: Actor) -> list[int]:
    table = runtime.schema.table("approval_task")
    with runtime.db.read() as connection:
        return [row.id for row in connection.execute(sa.select(table.c.id).where(
            table.c.owner == person.id, table.c.status == "pending").order_by(table.c.id))]


# -- allowed moves ---------------------------------------------------------------------------------------

def test_a_skip_the_funnel_forbids_is_refused_and_a_move_back_is_recorded_as_a_return(sales: Any) -> None:
    runtime, people = sales
    deal = opportunity(runtime, people["wang"])
    skip = api_client(runtime, "wang").post(f"/api/opportunity/{deal['id']}/transition", json={"to": "quote"})
    assert skip.status_code == 422 and skip.json()["move"] == "skip"
    assert "不能跳过阶段" in skip.json()["message"] and "“方案演示”" in skip.json()["message"]

    demo = in_demo(runtime, people["wang"])
    back = runtime.records.transition("opportunity", demo["id"], "qualify", actor=people["wang"])
    assert back["stage"] == "qualify" and back["probability"] == 10
    returned = events(runtime, demo["id"], "stage_changed")[-1]
    assert returned["move"] == "back" and returned["return"] is True and returned["evidence"] == []


def test_lost_needs_its_reason_from_any_open_stage(sales: Any) -> None:
    runtime, people = sales
    deal = opportunity(runtime, people["wang"])
    with pytest.raises(StageRefused) as refused:
        runtime.records.update("opportunity", deal["id"], {"stage": "lost"}, actor=people["wang"])
    assert [item["field"] for item in refused.value.items("en")] == ["loss_reason"]
    lost = runtime.records.update("opportunity", deal["id"], {"stage": "lost", "loss_reason": "competitor"},
                                  actor=people["wang"])
    assert lost["stage"] == "lost" and events(runtime, deal["id"], "stage_changed")[-1]["move"] == "lose"
    reopen = api_client(runtime, "wang").post(f"/api/opportunity/{deal['id']}/transition", json={"to": "qualify"})
    assert reopen.status_code == 422 and reopen.json()["move"] == "reopen"


# -- rules, timers, imports ----------------------------------------------------------------------------------

def test_a_timer_action_meets_the_same_refusal_and_records_it(sales: Any) -> None:
    runtime, people = sales
    deal = opportunity(runtime, people["wang"])
    with runtime.db.write() as connection:
        record = runtime.records.find(connection, "opportunity", deal["id"])
        assert record is not None
        runtime.actions.run(connection, "opportunity", record, (TransitionAction("stage", "demo"),),
                            runtime.clock.now(), key="test-timer", context={})
    table = runtime.schema.events
    with runtime.db.read() as connection:
        failed = connection.execute(sa.select(table.c.data).where(table.c.kind == "action_failed")).scalar_one()
    assert "StageRefused" in failed["error"] and "demo deck" in failed["error"]
    assert runtime.records.get("opportunity", deal["id"], actor=SYSTEM)["stage"] == "qualify"


def test_a_webhook_asking_for_a_gated_stage_is_refused_and_logged(sales: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, _ = sales
    monkeypatch.setenv("TEST_PARTNER_TOKEN", "s3cret")
    account = runtime.records.create("account", {"name": "渠道客户"}, actor=SYSTEM).record
    client = TestClient(runtime.web_app())
    refused = client.post("/hooks/partner_portal", json={"deal_id": "P-1", "title": "渠道商机", "stage": "quote",
                                                         "account_id": account["id"]},
                          headers={"X-Webhook-Token": "s3cret"})
    assert refused.status_code == 422 and refused.json()["outcome"] == "failed"
    assert {item["key"] for item in refused.json()["errors"]} >= {"attachment:demo_deck", "attachment:signed_quote"}
    table = runtime.schema.deliveries
    with runtime.db.read() as connection:
        logged = connection.execute(sa.select(table.c.status, table.c.error)).one()
    assert logged.status == "failed" and "cannot enter “方案报价”: 4 requirements missing" in logged.error
    created = client.post("/hooks/partner_portal", json={"deal_id": "P-2", "title": "渠道商机", "stage": "qualify",
                                                         "account_id": account["id"]},
                          headers={"X-Webhook-Token": "s3cret"})
    assert created.status_code == 201


def test_imported_history_bypasses_the_gate_and_says_so(sales: Any) -> None:
    runtime, people = sales
    account = runtime.records.create("account", {"name": "老客户"}, actor=SYSTEM).record
    with pytest.raises(StageRefused):
        runtime.records.create("opportunity", {"name": "2024 旧单", "account": account["id"], "stage": "won"},
                               actor=SYSTEM)
    old = runtime.records.create("opportunity", {"name": "2024 旧单", "account": account["id"], "stage": "quote"},
                                 actor=SYSTEM, history=True).record
    assert old["stage"] == "quote"
    won = runtime.records.update("opportunity", old["id"], {"stage": "won"}, actor=SYSTEM, history=True)
    assert won["stage"] == "won"
    table = runtime.schema.events
    with runtime.db.read() as connection:
        rows = connection.execute(sa.select(table.c.kind, table.c.data).where(
            table.c.entity == "opportunity", table.c.record_id == old["id"]).order_by(table.c.id)).all()
    kinds = {row.kind: row.data for row in rows}
    assert kinds["created"]["history"] is True and kinds["updated"]["history"] is True
    assert kinds["stage_changed"]["history"] is True and kinds["stage_changed"]["move"] == "forward"


def test_crm_explain_says_why_a_move_was_refused(sales: Any) -> None:
    runtime, people = sales
    deal = opportunity(runtime, people["wang"])
    api_client(runtime, "wang").post(f"/api/opportunity/{deal['id']}/transition", json={"to": "demo"})
    text = runtime.doctor.explain("opportunity", deal["id"])
    assert "REFUSED opportunity.stage qualify → demo (forward) by wang" in text
    assert "missing [demo] Upload the demo deck" in text and "funnels.yaml:" in text
    assert "→ quote (skip): not allowed" in text  # and what each move would lack now


# -- the record page ----------------------------------------------------------------------------------------

def test_record_page_shows_the_stage_bar_the_next_stage_checklist_and_the_talk_track(sales: Any) -> None:
    runtime, people = sales
    deal = opportunity(runtime, people["wang"], concern="price_sensitive")
    browser = signed_in(runtime, "wang")
    page = browser.get(f"/opportunity/{deal['id']}").text
    assert 'class="stage current" data-stage="qualify"' in page and 'class="stage next" data-stage="demo"' in page
    shown = visible_text(page)
    assert "进入“方案演示”需要：" in shown and "上传演示方案" in shown and "记录一次已完成的演示" in shown
    assert "确认预算与决策人" in shown  # the stage's guidance
    assert f'action="/opportunity/{deal["id"]}/attach"' in page  # one-click upload
    assert f"/activity/new?opportunity={deal['id']}&amp;kind=demo&amp;done=true" in page  # one-click log

    token = csrf_of(page)
    uploaded = browser.post(f"/opportunity/{deal['id']}/attach", data={"field": "demo_deck", "csrf_token": token},
                            files={"demo_deck": ("deck.pdf", b"%PDF deck", "application/pdf")})
    assert uploaded.status_code == 303
    assert runtime.records.get("opportunity", deal["id"], actor=SYSTEM)["demo_deck"] is not None
    page = browser.get(f"/opportunity/{deal['id']}").text
    assert re.search(r'class="requirement met"[^>]*>\s*<span class="tick"[^>]*>✔</span>\s*<span class="what">上传演示方案',
                     page)
    refused = browser.post(f"/opportunity/{deal['id']}/transition", data={"to": "demo", "csrf_token": token})
    assert refused.status_code == 303
    assert "不能进入“方案演示”：填写Customer questions" in visible_text(browser.get(f"/opportunity/{deal['id']}").text)


AUTO_ADVANCE = """
rules:
  - name: signed_quote_moves_to_quote
    entity: opportunity
    trigger: {event: field_changed, fields: [signed_quote]}
    when: "stage == 'demo' and not is_empty(signed_quote)"
    actions:
      - transition: quote
"""


def test_a_rule_transition_meets_the_gate_inside_the_write_that_triggered_it(make_engine: Any) -> None:
    files = {**FILES, "rules.yaml": AUTO_ADVANCE,
             "app.yaml": FILES["app.yaml"].replace("sources.yaml]", "sources.yaml, rules.yaml]")}
    runtime = make_engine(files, folder="with-rules")
    runtime.users.add(NewUser("zhou", "周经理", "sales_manager", "east", password=PASSWORD))
    wang = runtime.users.add(NewUser("wang", "王磊", "sales_rep", "east", "zhou", password=PASSWORD))
    cheap, dear = in_demo(runtime, wang), in_demo(runtime, wang, discount=20)
    quote = runtime.records.store_file("quote.pdf", "application/pdf", b"%PDF", actor=wang)
    moved = runtime.records.update("opportunity", cheap["id"], {"signed_quote": quote["id"]}, actor=wang)
    assert moved["stage"] == "quote"  # the rule's transition met everything
    with pytest.raises(StageRefused) as refused:  # above 15 % the price approval is missing: the whole write is refused
        runtime.records.update("opportunity", dear["id"], {"signed_quote": quote["id"]}, actor=wang)
    assert [item["key"] for item in refused.value.items("en")] == ["approval:price_approval"]
    assert refused.value.origin == "user"
    kept = runtime.records.get("opportunity", dear["id"], actor=SYSTEM)
    assert kept["stage"] == "demo" and kept["signed_quote"] is None


@pytest.mark.parametrize("pattern, content_type, matches", [
    ("application/pdf", "application/pdf", True), ("application/pdf", "application/pdf; charset=binary", True),
    ("application/pdf", "application/pdfx", False), ("image/*", "image/png", True), ("image/*", "IMAGE/JPEG", True),
    ("image/*", "application/pdf", False), ("image/*", "image/", False), ("*/pdf", "application/pdf", True)])
def test_attachment_types_match_content_types(pattern: str, content_type: str, matches: bool) -> None:
    from engine.rules.funnels import content_type_matches
    assert content_type_matches(pattern, content_type) is matches
