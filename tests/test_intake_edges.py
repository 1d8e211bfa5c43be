"""Intake at the edges: event ids from several paths, concurrent copies of one event on
PostgreSQL over real HTTP, no delivery left half-processed, replays that check the signature
again, oversized bodies logged — and the outage replay: `crm route` re-routes what a broken
policy stranded and `crm doctor` confirms the fix."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from cli import main as crm
from engine.engine import Engine, open_engine
from engine.metamodel.errors import BlueprintInvalid
from engine.rules import FakeClock
from engine.runtime.ops.users import NewUser
from engine.runtime.records.actors import SYSTEM
from tests.support.blueprints import SHIPPED_CRM, load, write_blueprint
from tests.support.intake_blueprint import ROUTING, files
from tests.support.live_server import serving
from starlette.testclient import TestClient

TOKEN = {"X-Webhook-Token": "s3cret-token"}


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_WEBSITE_TOKEN", "s3cret-token")
    monkeypatch.setenv("TEST_DOUYIN_SECRET", "douyin-key")
    monkeypatch.setenv("CRM_FORM_BUILDER_TOKEN", "form-token")


def _deliveries(runtime: Engine) -> list[tuple[str, str]]:
    table = runtime.schema.deliveries
    with runtime.db.read() as connection:
        return [(row.status, row.error or "") for row in
                connection.execute(sa.select(table.c.status, table.c.error).order_by(table.c.id))]


def _lead_count(runtime: Engine) -> int:
    with runtime.db.read() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(runtime.schema.table("lead"))).scalar_one())


def test_two_jinshuju_forms_with_the_same_serial_number_make_two_leads(make_engine: Any) -> None:
    runtime = make_engine(SHIPPED_CRM)
    client = TestClient(runtime.web_app())
    expo = json.loads((SHIPPED_CRM.parent.parent / "examples" / "webhooks" / "form_builder.json").read_text())
    trial = {**expo, "form": "试用申请表", "entry": {**expo["entry"], "field_1": "林经理", "field_2": "13700002222",
                                                   "field_4": "lin@example.cn"}}
    answers = [client.post("/hooks/form_builder?token=form-token", content=json.dumps(body).encode())
               for body in (expo, trial, expo)]
    assert [answer.status_code for answer in answers] == [201, 201, 200]
    assert answers[2].json()["outcome"] == "duplicate" and answers[2].json()["record_id"] == answers[0].json()["record_id"]
    first, second = (runtime.records.get("lead", answer.json()["record_id"], actor=SYSTEM) for answer in answers[:2])
    assert (first["name"], second["name"]) == ("陈工", "林经理")


def test_an_event_id_path_that_cannot_be_read_is_reported_at_its_line(tmp_path: Path) -> None:
    sources = """
        sources:
          forms:
            entity: lead
            auth: {type: token, query: token, secret_env: TEST_WEBSITE_TOKEN}
            event_id: [form, "entry..serial"]
            mapping: {name: entry.name}
    """
    folder = write_blueprint(tmp_path / "bp", files(**{"sources.yaml": sources}))
    with pytest.raises(BlueprintInvalid) as raised:
        load(folder)
    assert "sources.yaml:5" in str(raised.value) and "entry..serial" in str(raised.value)


@pytest.fixture
def live_server(pg_url: str, tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    """The CRM served by uvicorn on a loopback port over PostgreSQL."""
    runtime = open_engine(load(write_blueprint(tmp_path / "bp", files())), pg_url, clock=FakeClock())
    for name in ("wang", "li"):
        runtime.users.add(NewUser(name, name, "sales_rep", "east"))
    try:
        with serving(runtime.web_app()) as base:
            yield base, runtime
    finally:
        runtime.close()


def test_twenty_concurrent_copies_of_one_event_on_postgresql_make_one_lead_and_nineteen_duplicates(
        live_server: tuple[str, Engine]) -> None:
    url, runtime = live_server
    body = json.dumps({"submission_id": "f-777", "contact": {"name": "周总", "mobile": "13800007777"},
                       "answers": {"region": "华东"}}, ensure_ascii=False).encode()
    start = threading.Barrier(20)
    answers: list[tuple[int, dict[str, Any]]] = []

    def send() -> None:
        request = urllib.request.Request(f"{url}/hooks/website_form", data=body, method="POST",
                                         headers={**TOKEN, "Content-Type": "application/json"})
        start.wait()
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answers.append((response.status, json.loads(response.read())))
        except urllib.error.HTTPError as error:
            answers.append((error.code, json.loads(error.read() or b"{}")))

    threads = [threading.Thread(target=send) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert Counter(status for status, _ in answers) == Counter({201: 1, 200: 19})
    created = next(answer for status, answer in answers if status == 201)["record_id"]
    assert {(answer["outcome"], answer["record_id"]) for status, answer in answers if status == 200} == \
        {("duplicate", created)}
    assert Counter(status for status, _ in _deliveries(runtime)) == Counter({"processed": 1, "duplicate": 19})
    assert _lead_count(runtime) == 1


def test_a_delivery_whose_processing_breaks_is_marked_failed_and_doctor_names_stuck_ones(
        make_engine: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = make_engine(files())
    client = TestClient(runtime.web_app())

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the database went away")
    monkeypatch.setattr(runtime.intake, "_create", broken)
    answer = client.post("/hooks/website_form", content=json.dumps({"submission_id": "x-1"}).encode(), headers=TOKEN)
    assert answer.status_code == 503 and answer.json()["message"] == "推送已保存，但暂时无法处理；请稍后重新发送"
    assert "send it again later" in answer.json()["detail"]  # what the delivery log says
    assert _deliveries(runtime) == [("failed", "processing failed: RuntimeError: the database went away")]
    monkeypatch.undo()
    # a process that died between logging and processing leaves 'received': doctor names it, replay finishes it
    runtime.intake.log_delivery("website_form", TOKEN, "", json.dumps(
        {"submission_id": "x-2", "contact": {"name": "吴总", "mobile": "13800002222"}}).encode())
    clock.advance(minutes=6)
    findings = "\n".join(str(finding) for finding in runtime.doctor.diagnose())
    assert "source 'website_form': 1 deliveries stuck in 'received'" in findings
    stuck = runtime.intake.stuck()
    assert len(stuck) == 1
    result = runtime.intake.replay(stuck[0].id, check_auth=False)
    assert result.outcome == "processed" and runtime.intake.stuck() == []


def _signed(body: bytes, secret: str, stamp: str) -> str:
    return hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def test_replay_checks_the_signature_again_unless_told_to_skip_it(make_engine: Any, clock: FakeClock) -> None:
    runtime = make_engine(files())
    client = TestClient(runtime.web_app())
    body = json.dumps({"lead_id": "dy-9", "nickname": "小周", "telephone": "13912340000"}).encode()
    now = str(int(clock.now().timestamp()))
    forged = client.post("/hooks/douyin", content=body,
                         headers={"X-Timestamp": now, "X-Signature": _signed(body, "guessed-key", now)})
    assert forged.status_code == 401
    delivery = forged.json()["delivery_id"]
    again = runtime.intake.replay(delivery)
    assert (again.outcome, again.message) == ("rejected", "signature does not match the body")
    assert _lead_count(runtime) == 0
    trusted = runtime.intake.replay(delivery, check_auth=False)
    assert trusted.outcome == "processed" and _lead_count(runtime) == 1


def test_an_oversized_delivery_is_refused_and_logged_with_its_size_and_first_bytes(make_engine: Any) -> None:
    runtime = make_engine(files())
    client = TestClient(runtime.web_app())
    body = b'{"submission_id": "big", "padding": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    answer = client.post("/hooks/website_form", content=body, headers=TOKEN)
    assert answer.status_code == 413 and f"{len(body)} bytes" in answer.json()["detail"]
    assert f"已收到至少 {len(body)} 字节" in answer.json()["message"]  # the blueprint's language, no Accept-Language
    table = runtime.schema.deliveries
    with runtime.db.read() as connection:
        row = connection.execute(sa.select(table)).one()
    assert row.status == "rejected" and f"{len(body)} bytes" in row.error
    assert row.body == body[:2048]


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
FIXED_ROUTING = OUTAGE_ROUTING.replace("matches(source, 'web|expo')", "source == 'expo'")


def test_after_the_outage_crm_route_assigns_every_stranded_lead_and_doctor_confirms_it(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    broken = write_blueprint(tmp_path / "broken", files(**{"routing.yaml": OUTAGE_ROUTING}))
    fixed = write_blueprint(tmp_path / "fixed", files(**{"routing.yaml": FIXED_ROUTING}))
    runtime = open_engine(load(broken), database, clock=FakeClock(dt.datetime.now(dt.timezone.utc)))
    for name, region in (("wang", "east"), ("li", "east"), ("zhao", "south")):
        runtime.users.add(NewUser(name, name, "sales_rep", region))
    runtime.users.add(NewUser("expo_rep", "展会专员", "sales_rep", "expo_team"))
    runtime.users.update("expo_rep", on_leave=True)  # the expo pool is empty: website leads land nowhere
    client = TestClient(runtime.web_app())
    for index in range(213):
        if index and index % 100 == 0:  # the source admits 120 a minute from one address: a new app, a new count
            client = TestClient(runtime.web_app())
        answer = client.post("/hooks/website_form", headers=TOKEN, content=json.dumps(
            {"submission_id": f"w-{index}", "contact": {"name": f"客户{index}", "mobile": f"1380000{index:04d}"},
             "answers": {"region": "华东" if index % 3 else "华南"}}, ensure_ascii=False).encode())
        assert answer.status_code == 201
    runtime.close()
    cli = CliRunner()
    before = cli.invoke(crm, ["doctor", "--db", database, "--blueprint", str(broken)])
    assert before.exit_code == 1
    assert "213 records parked by routing policy 'expo_vip', still unassigned now" in before.output
    dry = cli.invoke(crm, ["route", "lead", "--where", "is_empty(owner)", "--dry-run", "--db", database,
                           "--blueprint", str(fixed)])
    assert dry.exit_code == 0 and "213 lead records match" in dry.output
    routed = cli.invoke(crm, ["route", "lead", "--where", "is_empty(owner)", "--db", database, "--blueprint", str(fixed)])
    assert routed.exit_code == 0, routed.output
    assert "213 matched, 213 assigned" in routed.output and "0 still unassigned" in routed.output
    after = cli.invoke(crm, ["doctor", "--db", database, "--blueprint", str(fixed)])
    assert after.exit_code == 0, after.output
    assert "parked" not in after.output
    reopened = open_engine(load(fixed), database)
    try:
        leads, events, users = reopened.schema.table("lead"), reopened.schema.events, reopened.schema.users
        with reopened.db.read() as connection:
            owners = Counter(dict(connection.execute(
                sa.select(users.c.username, sa.func.count()).join(leads, leads.c.owner == users.c.id)
                .group_by(users.c.username)).all()))
            reasons = {row.data["reason"] for row in connection.execute(
                sa.select(events.c.data).where(events.c.kind == "rerouted"))}
        assert owners == Counter({"wang": 71, "li": 71, "zhao": 71})  # east round-robin, south to zhao
        assert reasons == {"re-routed after a routing fix"}
    finally:
        reopened.close()


def test_crm_route_refuses_an_unknown_field_and_changes_nothing(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    blueprint = write_blueprint(tmp_path / "bp", files())
    open_engine(load(blueprint), database).close()
    answer = CliRunner().invoke(crm, ["route", "lead", "--where", "is_empty(ownr)", "--db", database,
                                      "--blueprint", str(blueprint)])
    assert answer.exit_code != 0 and "lead has no field ownr" in answer.output


def test_the_unassigned_list_routes_ticked_records_again_by_the_policies(make_engine: Any) -> None:
    runtime = make_engine(files(**{"routing.yaml": OUTAGE_ROUTING}))
    runtime.users.add(NewUser("admin", "管理员", "admin", password="admin-pass-1"))
    runtime.users.add(NewUser("expo_rep", "展会专员", "sales_rep", "expo_team"))
    runtime.users.update("expo_rep", on_leave=True)
    client = TestClient(runtime.web_app())
    ids = [client.post("/hooks/website_form", headers=TOKEN, content=json.dumps(
        {"submission_id": f"p-{index}", "contact": {"name": f"客户{index}", "mobile": f"1390000{index:04d}"},
         "answers": {"region": "华东"}}, ensure_ascii=False).encode()).json()["record_id"] for index in range(3)]
    runtime.users.update("expo_rep", on_leave=False)  # the fix: the expo pool has someone again
    browser = TestClient(runtime.web_app())
    token = browser.get("/login").text.split('name="csrf_token" value="')[1].split('"')[0]
    browser.post("/login", data={"username": "admin", "password": "admin-pass-1", "csrf_token": token})
    listing = browser.get("/lead").text
    assert '<option value="route">按分配策略重新分配</option>' in listing
    token = listing.split('name="csrf_token" value="')[1].split('"')[0]
    answer = browser.post("/lead/assign", data={"ids": [str(ids[0]), str(ids[1])], "owner": "route", "csrf_token": token})
    assert "已按分配策略重新分配 2 条；0 条仍无人可接。" in answer.text
    owners = [runtime.records.get("lead", record_id, actor=SYSTEM)["owner"] for record_id in ids]
    assert owners[0] == owners[1] is not None and owners[2] is None
    events = runtime.schema.events
    with runtime.db.read() as connection:
        rerouted = connection.execute(sa.select(events.c.record_id, events.c.data)
                                      .where(events.c.kind == "rerouted")).all()
    assert {row.record_id for row in rerouted} == set(ids[:2])
    assert {(row.data["policy"], row.data["username"], row.data["by"]) for row in rerouted} == {
        ("expo_vip", "expo_rep", "admin")}


def test_reroute_on_updated_routes_a_still_unassigned_record_when_it_changes(make_engine: Any) -> None:
    routing = ROUTING.replace("    fallback_queue: unassigned_leads", "    fallback_queue: unassigned_leads\n"
                                                                         "    reroute_on: [updated]")
    runtime = make_engine(files(**{"routing.yaml": routing}))
    for name in ("wang", "zhao"):
        runtime.users.add(NewUser(name, name, "sales_rep", "east"))
        runtime.users.update(name, on_leave=True)  # everybody away: the lead is parked
    lead = runtime.records.create("lead", {"name": "孙总", "phone": "13800001234", "region": "south",
                                           "source": "website"}, actor=SYSTEM).record
    assert lead["owner"] is None
    runtime.users.update("zhao", on_leave=False)
    edited = runtime.records.update("lead", lead["id"], {"company": "孙氏机械"}, actor=SYSTEM)
    zhao = runtime.users.find("zhao")
    assert zhao is not None and edited["owner"] == zhao.id
    cleared = runtime.records.update("lead", lead["id"], {"owner": None}, actor=SYSTEM)
    assert cleared["owner"] is None  # an owner someone cleared stays cleared by that write


def test_without_reroute_on_an_edit_leaves_a_parked_record_where_it_is(make_engine: Any) -> None:
    runtime = make_engine(files())
    runtime.users.add(NewUser("zhao", "zhao", "sales_rep", "east"))
    runtime.users.update("zhao", on_leave=True)
    lead = runtime.records.create("lead", {"name": "孙总", "phone": "13800001234", "region": "south",
                                           "source": "website"}, actor=SYSTEM).record
    runtime.users.update("zhao", on_leave=False)
    assert runtime.records.update("lead", lead["id"], {"company": "孙氏机械"}, actor=SYSTEM)["owner"] is None


def test_a_refused_delivery_is_explained_in_the_senders_language_and_logged_in_english(
        make_engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Webhook refusals speak as the JSON API does: Accept-Language, else the blueprint's default
    (Chinese for the shipped CRM), with a stable `code`; the delivery log keeps English."""
    monkeypatch.delenv("CRM_WEBSITE_FORM_TOKEN", raising=False)
    runtime = make_engine(SHIPPED_CRM)
    client = TestClient(runtime.web_app())
    body = json.dumps({"submission_id": "w-1", "contact": {"name": "钱总", "mobile": "13800138000"}}).encode()
    chinese = client.post("/hooks/website_form", content=body, headers={"X-Webhook-Token": "anything"})
    assert chinese.status_code == 503 and chinese.json()["code"] == "no_secret"
    assert chinese.json()["message"] == ("Webhook 来源“website_form”尚未配置密钥："
                                         "请在服务器上设置环境变量 CRM_WEBSITE_FORM_TOKEN")
    english = client.post("/hooks/website_form", content=body,
                          headers={"X-Webhook-Token": "anything", "Accept-Language": "en-US,en;q=0.8"})
    assert english.json()["message"] == ("source 'website_form' has no secret configured: set the environment "
                                         "variable CRM_WEBSITE_FORM_TOKEN") and "detail" not in english.json()
    assert [error for _, error in _deliveries(runtime)] == [english.json()["message"]] * 2
    unknown = client.post("/hooks/website_from", content=body)
    assert unknown.status_code == 404 and "没有名为“website_from”的 Webhook 来源" in unknown.json()["message"]
    assert _lead_count(runtime) == 0
