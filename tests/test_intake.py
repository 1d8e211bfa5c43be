"""Leads arriving by webhook and by API are graded, routed and explained — on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.engine import Engine, open_engine
from engine.runtime.background.outbox import list_messages
from engine.runtime.ops.users import NewUser
from engine.runtime.records.actors import SYSTEM
from engine.runtime.records.errors import ValidationFailed
from tests.support.blueprints import load, write_blueprint
from tests.support.intake_blueprint import ACTIVITY, LEAD as LEAD_TEXT, ROUTING, RULES, files
from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parent.parent
REPS = (NewUser("wang", "王", "sales_rep", "east"), NewUser("li", "李", "sales_rep", "east"),
        NewUser("zhou", "周", "sales_rep", "east"), NewUser("zhao", "赵", "sales_rep", "south"))


@pytest.fixture
def intake(make_engine: Any, monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.setenv("TEST_WEBSITE_TOKEN", "s3cret-token")
    monkeypatch.setenv("TEST_DOUYIN_SECRET", "douyin-key")
    runtime = make_engine(files())
    for rep in REPS:
        runtime.users.add(rep)
    return runtime


def _owners(runtime: Engine) -> Counter[str | None]:
    users, leads = runtime.schema.users, runtime.schema.table("lead")
    with runtime.db.read() as connection:
        rows = connection.execute(sa.select(users.c.username).select_from(
            leads.outerjoin(users, users.c.id == leads.c.owner))).all()
    return Counter(row.username for row in rows)


def _lead(runtime: Engine, index: int, region: str = "east", **extra: Any) -> dict[str, Any]:
    return runtime.records.create("lead", {"name": f"客户{index}", "phone": f"1390000{index:04d}",
                                           "region": region, "source": "website", **extra}, actor=SYSTEM).record


def test_round_robin_is_fair_across_a_restart_and_skips_reps_on_leave(intake: Engine, make_engine: Any) -> None:
    for index in range(6):
        _lead(intake, index)
    intake.close()
    restarted = make_engine(files(), folder="again")  # a new process would see only the database
    for index in range(6, 9):
        _lead(restarted, index)
    assert _owners(restarted) == Counter({"wang": 3, "li": 3, "zhou": 3})
    restarted.users.update("li", on_leave=True)
    for index in range(9, 13):
        _lead(restarted, index)
    assert _owners(restarted) == Counter({"wang": 5, "li": 3, "zhou": 5})
    _lead(restarted, 13, region="south")
    assert _owners(restarted)["zhao"] == 1


def _give_open_leads(runtime: Engine, counts: dict[str, tuple[int, int]]) -> None:
    """Leads already owned before routing starts (as an import would leave them): (open, closed) per rep."""
    users, leads = runtime.schema.users, runtime.schema.table("lead")
    now = dt.datetime(2026, 11, 1)
    with runtime.db.write() as connection:
        ids = dict(connection.execute(sa.select(users.c.username, users.c.id)).all())
        connection.execute(leads.insert(), [
            {"name": f"{username}的老客户{n}", "status": "new" if n < open_ else "closed", "owner": ids[username],
             "region": "east", "created_at": now, "updated_at": now, "version": 1}
            for username, (open_, closed) in counts.items() for n in range(open_ + closed)])


@pytest.mark.parametrize("cap", [3, None])
def test_caps_and_least_loaded_count_each_reps_open_leads_in_the_database(make_engine: Any, cap: int | None) -> None:
    routing = ROUTING.replace("within: round_robin", "within: least_loaded" + (f"\n    cap: {cap}" if cap else ""))
    runtime = make_engine(files(**{"routing.yaml": routing}))
    for rep in REPS:
        runtime.users.add(rep)
    _give_open_leads(runtime, {"wang": (5, 0), "li": (2, 6), "zhou": (0, 9)})
    users = runtime.schema.users
    with runtime.db.read() as connection:
        names = dict(connection.execute(sa.select(users.c.id, users.c.username)).all())
    new = [_lead(runtime, index) for index in range(5)]
    got = Counter(names.get(lead["owner"]) for lead in new)
    if cap is not None:  # zhou 0 → 3 and li 2 → 3 fill up to the cap; the fifth waits in the queue
        assert got == Counter({"zhou": 3, "li": 1, None: 1})
        assert "wang — at cap (" in runtime.doctor.explain("lead", new[-1]["id"])
    else:  # every open lead counts (closed ones do not): zhou first, then both until level
        assert got["wang"] == 0 and got["li"] + got["zhou"] == 5
        assert {2 + got["li"], got["zhou"]} == {3, 4}


def test_s_grade_rule_creates_the_call_task_and_queues_the_notification(intake: Engine) -> None:
    lead = _lead(intake, 1, company="华东机械", registered_capital=6_000_000, hiring_recently=True, has_tenders=True)
    assert lead["grade"] == "S" and lead["next_follow_up"] is not None and lead["owner"] is not None
    tasks = intake.records.list("activity", __import__("engine.runtime.records.queries", fromlist=["ListQuery"]).ListQuery(),
                                actor=SYSTEM).items
    assert [(task["subject"], task["lead"]) for task in tasks] == [("华东机械 首次电话", lead["id"])]
    messages = list_messages(intake.db, intake.schema)
    assert [(m["channel"], m["payload"]["text"]) for m in messages] == [("wecom_sales", "S级线索 华东机械")]
    ordinary = _lead(intake, 2, company="小作坊")
    assert ordinary["grade"] is None and len(list_messages(intake.db, intake.schema)) == 1


def test_a_write_that_fails_after_the_rules_leaves_no_task_and_no_notification(intake: Engine) -> None:
    intake.records.create("lead", {"name": "甲", "phone": "13900000001", "region": "east"}, actor=SYSTEM)
    with pytest.raises(Exception):
        intake.records.create("lead", {"name": "乙", "email": "not-an-email", "registered_capital": 6_000_000,
                                       "hiring_recently": True, "has_tenders": True}, actor=SYSTEM)
    assert list_messages(intake.db, intake.schema) == []


def _post(client: TestClient, source: str, payload: dict[str, Any], **headers: str) -> Any:
    return client.post(f"/hooks/{source}", content=json.dumps(payload, ensure_ascii=False).encode(), headers=headers)


def _deliveries(runtime: Engine) -> list[tuple[str, str]]:
    table = runtime.schema.deliveries
    with runtime.db.read() as connection:
        return [(row.status, row.error or "") for row in
                connection.execute(sa.select(table.c.status, table.c.error).order_by(table.c.id))]


def test_webhook_with_the_token_creates_once_per_event_and_maps_the_channel_values(intake: Engine) -> None:
    client = TestClient(intake.web_app())
    payload = {"submission_id": "f-1001", "submitted_at": "2026-11-19T10:00:00+08:00",
               "contact": {"name": "王芳", "company": "华东机械", "mobile": "+86 138-0013-8000"},
               "answers": {"region": "华东"}}
    first = _post(client, "website_form", payload, **{"X-Webhook-Token": "s3cret-token"})
    again = _post(client, "website_form", payload, **{"X-Webhook-Token": "s3cret-token"})
    assert first.status_code == 201 and again.status_code == 200 and again.json()["outcome"] == "duplicate"
    lead = intake.records.get("lead", first.json()["record_id"], actor=SYSTEM)
    assert (lead["name"], lead["region"], lead["source"], lead["phone"]) == ("王芳", "east", "website", "+8613800138000")
    assert lead["created_at"] == dt.datetime(2026, 11, 19, 2, 0, tzinfo=dt.timezone.utc)
    assert lead["owner"] is not None
    assert [status for status, _ in _deliveries(intake)] == ["processed", "duplicate"]
    wrong = _post(client, "website_form", {**payload, "submission_id": "f-2"}, **{"X-Webhook-Token": "guess"})
    assert wrong.status_code == 401 and _deliveries(intake)[-1] == ("rejected", "missing or wrong token")


def test_a_delivery_the_record_refuses_is_logged_failed_with_the_field_and_creates_nothing(intake: Engine) -> None:
    client = TestClient(intake.web_app())
    payload = {"submission_id": "f-9", "contact": {"name": "钱总", "mobile": "12345"}, "answers": {"region": "华东"}}
    response = _post(client, "website_form", payload, **{"X-Webhook-Token": "s3cret-token"})
    assert response.status_code == 422 and response.json()["outcome"] == "failed"
    assert response.json()["errors"][0]["field"] == "phone" and response.json()["code"] == "validation_failed"
    # the sender reads it in the blueprint's language (no Accept-Language), naming the field by its
    # label; the delivery log keeps the engine's English text, which the answer also carries
    label = intake.model.entity("lead").field("phone").label.text("zh")
    assert response.json()["message"].startswith(f"{label}：“12345”不是有效的电话号码")
    assert response.json()["errors"][0]["message"].startswith(f"{label}：")
    assert _deliveries(intake) == [("failed", response.json()["detail"])] and "phone" in response.json()["detail"]
    assert sum(_owners(intake).values()) == 0  # no lead
    fixed = _post(client, "website_form", {**payload, "contact": {"name": "钱总", "mobile": "13800138000"}},
                  **{"X-Webhook-Token": "s3cret-token"})
    assert fixed.status_code == 201  # the event id was not spent by the failed delivery


def _signed(body: bytes, secret: str, stamp: str) -> str:
    return hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def test_signed_webhook_refuses_a_wrong_signature_and_an_old_timestamp_and_logs_both(intake: Engine,
                                                                                     clock: Any) -> None:
    client = TestClient(intake.web_app())
    body = json.dumps({"lead_id": "dy-77", "nickname": "小李", "telephone": "13912345678"}).encode()
    now = str(int(clock.now().timestamp()))
    old = str(int(clock.now().timestamp()) - 3600)
    refused = client.post("/hooks/douyin", content=body,
                          headers={"X-Timestamp": now, "X-Signature": _signed(body, "wrong-key", now)})
    stale = client.post("/hooks/douyin", content=body,
                        headers={"X-Timestamp": old, "X-Signature": _signed(body, "douyin-key", old)})
    good = client.post("/hooks/douyin", content=body,
                       headers={"X-Timestamp": now, "X-Signature": _signed(body, "douyin-key", now)})
    assert (refused.status_code, stale.status_code, good.status_code) == (401, 401, 201)
    statuses = _deliveries(intake)
    assert statuses[0] == ("rejected", "signature does not match the body")
    assert statuses[1][0] == "rejected" and "timestamp" in statuses[1][1]
    assert statuses[2][0] == "processed"
    assert sum(_owners(intake).values()) == 1


def test_a_malformed_delivery_is_kept_and_can_be_replayed(intake: Engine) -> None:
    client = TestClient(intake.web_app())
    response = client.post("/hooks/website_form", content=b'{"contact": {"name": ',
                           headers={"X-Webhook-Token": "s3cret-token"})
    assert response.status_code == 400 and _deliveries(intake) == [("rejected", response.json()["detail"])]
    assert response.json()["code"] == "invalid_json" and response.json()["message"].startswith("请求体不是有效的 JSON：")
    table = intake.schema.deliveries
    with intake.db.read() as connection:
        assert connection.execute(sa.select(table.c.body)).scalar_one() == b'{"contact": {"name": '


def test_spam_filter_flags_the_lead_and_keeps_it_out_of_routing(intake: Engine) -> None:
    client = TestClient(intake.web_app())
    response = _post(client, "website_form", {"submission_id": "s-1", "contact": {"name": "test"}},
                     **{"X-Webhook-Token": "s3cret-token"})
    lead = intake.records.get("lead", response.json()["record_id"], actor=SYSTEM)
    assert lead["owner"] is None
    assert "caught by the spam filter of source website_form" in intake.doctor.explain("lead", lead["id"])


OUTAGE_ROUTING = ROUTING + """
  expo_vip:
    entity: lead
    strategy: round_robin
    priority: 5
    match: "matches(source, 'web|expo')"
    pool: {team: expo_team}
    open_when: "status in ['new', 'contacted']"
    fallback_queue: expo_queue
"""


def test_product_point_13_outage_is_named_by_doctor_and_explain(make_engine: Any) -> None:
    """A new rule's pattern meant for expo leads also matches 'website' and routes them to an
    empty pool; an intern in the pool's team cannot read leads."""
    runtime = make_engine(files(**{"routing.yaml": OUTAGE_ROUTING}))
    for rep in REPS:
        runtime.users.add(rep)
    lead = _lead(runtime, 1)
    assert lead["owner"] is None
    trace = runtime.doctor.explain("lead", lead["id"])
    assert "assign_new_lead" in trace and "expo_vip" in trace and "expo_queue" in trace
    findings = "\n".join(str(finding) for finding in runtime.doctor.diagnose())
    assert "routing policy 'expo_vip', pool" in findings and "has no active member" in findings
    assert "1 records parked by routing policy 'expo_vip'" in findings
    runtime.users.add(NewUser("xiao", "实习生", "intern", "expo_team"))
    findings = "\n".join(str(finding) for finding in runtime.doctor.diagnose())
    assert "xiao receives lead records but cannot see them" in findings


def test_two_processes_routing_at_once_on_postgresql_share_fairly(pg_url: str, clock: Any, tmp_path: Path) -> None:
    blueprint = write_blueprint(tmp_path / "bp", files())
    runtime = open_engine(load(blueprint), pg_url, clock=clock)
    try:
        for rep in REPS:
            runtime.users.add(rep)
        script = ("import sys\nfrom engine.metamodel import load_blueprint\nfrom engine.rules import FUNCTION_NAMES\n"
                  "from engine.engine import open_engine\nfrom engine.runtime.records.actors import SYSTEM\n"
                  "rt = open_engine(load_blueprint(sys.argv[1], functions=FUNCTION_NAMES), sys.argv[2], migrate=False)\n"
                  "for i in range(int(sys.argv[3]), int(sys.argv[3]) + 30):\n"
                  "    rt.records.create('lead', {'name': f'客户{i}', 'phone': f'1391000{i:04d}', 'region': 'east'},"
                  " actor=SYSTEM)\n")
        processes = [subprocess.Popen([sys.executable, "-c", script, str(blueprint), pg_url, str(start)], cwd=ROOT,
                                      env={**os.environ, "PYTHONPATH": str(ROOT)}) for start in (0, 1000)]
        assert [process.wait(timeout=180) for process in processes] == [0, 0]
        assert _owners(runtime) == Counter({"wang": 20, "li": 20, "zhou": 20})
    finally:
        runtime.close()


def test_a_rule_that_keeps_creating_itself_is_stopped(make_engine: Any) -> None:
    looping = RULES + """
  - name: echo
    entity: activity
    trigger: created
    actions:
      - create_related: {entity: activity, link: follows, values: {subject: again}}
"""
    activity = ACTIVITY + "  follows: {type: link, entity: activity, on_delete: set_null}\n"
    runtime = make_engine(files(**{"rules.yaml": looping, "entities/activity.yaml": activity}))
    lead = _lead(runtime, 1)
    with pytest.raises(Exception, match="echo"):
        runtime.records.create("activity", {"subject": "first", "lead": lead["id"]}, actor=SYSTEM)
    with runtime.db.read() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(runtime.schema.table("activity"))).scalar() == 0


def test_a_value_a_rule_sets_must_pass_the_validation_rules_and_a_refused_lead_writes_nothing(
        make_engine: Any) -> None:
    """Rules run after the input was validated; what they set is validated again (here: a rule
    closes expo leads, and a closed lead needs a follow-up date)."""
    lead = LEAD_TEXT + """validations:
  - check: "status != 'closed' or not is_empty(next_follow_up)"
    field: next_follow_up
    message: a closed lead needs a follow-up date
  - check: "is_empty(registered_capital) or registered_capital >= 0"
    field: registered_capital
    message: capital cannot be negative
"""
    rules = RULES + """
  - name: close_expo_leads
    entity: lead
    trigger: created
    when: "source == 'expo'"
    actions:
      - set: {status: closed}
"""
    runtime = make_engine(files(**{"entities/lead.yaml": lead, "rules.yaml": rules}))
    before = _counts(runtime)
    with pytest.raises(ValidationFailed) as refused:
        _lead(runtime, 1, source="expo")
    assert [(error.field, error.code) for error in refused.value.errors] == [("next_follow_up", "rule")]
    assert "set by a rule" not in str(refused.value) and _counts(runtime) == before
    kept = _lead(runtime, 2, source="expo", next_follow_up="2026-12-01")
    assert kept["status"] == "closed" and _counts(runtime)["lead"] == before["lead"] + 1


def _counts(runtime: Engine) -> dict[str, int]:
    schema = runtime.schema
    tables = {"lead": schema.table("lead"), "events": schema.events, "timers": schema.timers, "traces": schema.traces}
    with runtime.db.read() as connection:
        return {name: connection.execute(sa.select(sa.func.count()).select_from(table)).scalar()
                for name, table in tables.items()}


def test_count_related_and_in_territory_are_available_to_rules(make_engine: Any) -> None:
    rules = RULES + """
  - name: busy_lead
    entity: lead
    trigger: updated
    when: "count_related('activity', 'lead') >= 2 and in_territory(region, 'east_china')"
    actions:
      - set: {grade: A}
"""
    app = ("app: intake\nsettings: {territories: {east_china: [east]}}\n"
           "include: [entities/*.yaml, roles.yaml, channels.yaml, routing.yaml, sources.yaml, rules.yaml]\n")
    runtime = make_engine(files(**{"rules.yaml": rules, "app.yaml": app}))
    lead = _lead(runtime, 1)
    for subject in ("电话", "拜访"):
        runtime.records.update("lead", lead["id"], {"company": subject}, actor=SYSTEM)
        assert runtime.records.get("lead", lead["id"], actor=SYSTEM)["grade"] is None
        runtime.records.create("activity", {"subject": subject, "lead": lead["id"]}, actor=SYSTEM)
    assert runtime.records.update("lead", lead["id"], {"company": "华东机械"}, actor=SYSTEM)["grade"] == "A"


def test_record_page_shows_admins_why_a_lead_went_where_it_went(intake: Engine) -> None:
    lead = _lead(intake, 1)
    intake.users.add(NewUser("boss", "管理员", "admin", password="boss-pass1"))
    browser = TestClient(intake.web_app())
    login = browser.get("/login").text.split('name="csrf_token" value="')[1].split('"')[0]
    browser.post("/login", data={"username": "boss", "password": "boss-pass1", "csrf_token": login})
    page = browser.get(f"/lead/{lead['id']}")
    assert page.status_code == 200 and "assign_new_lead" in page.text and "by_region" in page.text


def test_a_returning_customer_merges_into_a_lead_that_predates_a_validation_rule(make_engine: Any,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A lead written before 'an open lead needs a follow-up date' existed breaks that rule; the
    customer's next form submission must still merge into it (the rules re-score it meanwhile),
    because the merge does not touch the rule's fields."""
    from tests.support.blueprints import SHIPPED_CRM
    monkeypatch.setenv("CRM_WEBSITE_FORM_TOKEN", "form-token")
    runtime = make_engine(SHIPPED_CRM)
    rep = runtime.users.add(NewUser("wang", "王", "sales_rep", "east"))
    now = dt.datetime(2026, 11, 20, 2, 0)
    with runtime.db.write() as connection:  # as an older version of the blueprint left it
        old_id = connection.execute(runtime.schema.table("lead").insert(), {
            "created_at": now, "updated_at": now, "version": 1, "name": "钱总", "phone": "+8613800138000",
            "source": "expo", "status": "new", "owner": rep.id, "score": 0, "hiring_recently": False,
            "has_tenders": False}).inserted_primary_key[0]
    response = _post(TestClient(runtime.web_app()), "website_form", {
        "submission_id": "f-77", "contact": {"name": "钱总", "company": "新锐科技", "mobile": "13800138000"},
        "answers": {"region": "华东", "budget": 2000000, "request": "报价"}}, **{"X-Webhook-Token": "form-token"})
    assert response.status_code == 200 and response.json()["record_id"] == old_id, response.json()
    merged = runtime.records.get("lead", old_id, actor=SYSTEM)
    assert merged["company"] == "新锐科技" and merged["status"] == "new" and merged["next_follow_up"] is None
