"""Notifications end to end: an SLA breach → outbox → worker → a real HTTP receiver on 127.0.0.1.

The receiver plays DingTalk, WeCom, Feishu and Slack; each test checks the body and the
signature the way the vendor documents them, computed here independently.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa

from engine.engine import Engine
from engine.runtime.background.outbox import list_messages, retry_dead
from engine.runtime.ops.users import NewUser
from engine.runtime.records.actors import SYSTEM

DINGTALK_SECRET = "SEC0123456789abcdef"
FEISHU_SECRET = "feishu-secret-xyz"

BLUEPRINT = {
    "app.yaml": "app: t\ninclude: ['*.yaml']\n",
    "lead.yaml": """
        entity: lead
        fields:
          name: {type: string}
          status: {type: choice, options: {new: New, done: Done}, default: new}
    """,
    "channels.yaml": """
        channels:
          dingtalk: {type: dingtalk, url: {env: DT_URL}, secret: {env: DT_SECRET}, format: markdown}
          wecom: {type: wecom, url: {env: WECOM_URL}, format: text}
          feishu: {type: feishu, url: {env: FEISHU_URL}, secret: {env: FEISHU_SECRET}, format: text}
          slack: {type: slack, url: {key: slack.webhook}, format: text, language: en}
        retry: {max_attempts: 4, first_delay: 10s, max_delay: 1min}
        templates:
          breach:
            title: {zh: "线索超时", en: "Lead overdue"}
            text:
              zh: "线索 {{ record.name }} 已超时，负责人 {{ owner.display_name }}"
              en: "Lead {{ record.name }} is overdue, owner {{ owner.display_name }}"
    """,
    "sla.yaml": """
        sla: first_call
        entity: lead
        default_target: 30min
        business_time: false
        starts: assigned
        warn_at: []
        stops: [{status_in: [done]}]
        on_breach:
          - notify: {channel: dingtalk, to: [owner], template: breach}
          - notify: {channel: wecom, to: [owner], template: breach}
          - notify: {channel: feishu, to: [owner], template: breach}
          - notify: {channel: slack, to: [owner], template: breach}
    """,
}


@dataclass
class Received:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    failures_left: dict[str, int] = field(default_factory=dict)

    def on(self, vendor: str) -> list[Received]:
        return [request for request in self.requests if request.path == f"/{vendor}"]


_REPLIES = {"/dingtalk": b'{"errcode":0,"errmsg":"ok"}', "/wecom": b'{"errcode":0,"errmsg":"ok"}',
            "/feishu": b'{"code":0,"msg":"success","data":{}}', "/slack": b"ok"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
            parsed = urllib.parse.urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if state.failures_left.get(parsed.path, 0) > 0:
                state.failures_left[parsed.path] -= 1
                self.send_response(503)
                self.end_headers()
                return
            state.requests.append(Received(parsed.path, dict(urllib.parse.parse_qsl(parsed.query)),
                                           dict(self.headers.items()), body))
            reply = _REPLIES.get(parsed.path, b"{}")
            self.send_response(200)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def environ(receiver: Receiver, tmp_path: Any) -> dict[str, str]:
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(f"slack:\n  webhook: {receiver.url}/slack\n", encoding="utf-8")
    return {"DT_URL": f"{receiver.url}/dingtalk?access_token=tok", "DT_SECRET": DINGTALK_SECRET,
            "WECOM_URL": f"{receiver.url}/wecom?key=wk", "FEISHU_URL": f"{receiver.url}/feishu",
            "FEISHU_SECRET": FEISHU_SECRET, "CRM_SECRETS_FILE": str(secrets)}


def _breached_lead(make_engine: Any, clock: Any, **im_ids: str) -> Engine:
    runtime = make_engine(BLUEPRINT)
    owner = runtime.users.add(NewUser("wang", "Wang Wei", "admin", phone="13900000001", im_ids=im_ids or None))
    runtime.records.create("lead", {"name": "ACME", "owner": owner.id}, actor=SYSTEM)
    clock.advance(minutes=31)
    return runtime


def test_an_sla_breach_reaches_dingtalk_wecom_feishu_and_slack_signed(make_engine: Any, clock: Any,
                                                                       receiver: Receiver,
                                                                       environ: dict[str, str]) -> None:
    runtime = _breached_lead(make_engine, clock)
    report = runtime.worker(environ=environ).tick()
    assert (report.fired, report.delivered, report.dead) == (1, 4, 0)

    (ding,) = receiver.on("dingtalk")
    timestamp = ding.query["timestamp"]
    assert abs(int(timestamp) - int(clock.now().timestamp() * 1000)) < 1000
    expected = base64.b64encode(hmac.new(DINGTALK_SECRET.encode(), f"{timestamp}\n{DINGTALK_SECRET}".encode(),
                                         hashlib.sha256).digest()).decode()
    assert ding.query["sign"] == expected and ding.query["access_token"] == "tok"
    body = ding.json()
    assert body["msgtype"] == "markdown" and body["markdown"]["title"] == "线索超时"
    assert body["markdown"]["text"].startswith("线索 ACME 已超时，负责人 Wang Wei")
    assert body["at"]["atMobiles"] == ["13900000001"] and "@13900000001" in body["markdown"]["text"]

    (wecom,) = receiver.on("wecom")
    assert wecom.query == {"key": "wk"}
    assert wecom.json() == {"msgtype": "text", "text": {"content": "线索 ACME 已超时，负责人 Wang Wei",
                                                        "mentioned_mobile_list": ["13900000001"]}}

    (feishu,) = receiver.on("feishu")
    message = feishu.json()
    string_to_sign = f"{message['timestamp']}\n{FEISHU_SECRET}"
    assert message["sign"] == base64.b64encode(hmac.new(string_to_sign.encode(), b"", hashlib.sha256).digest()).decode()
    assert message["msg_type"] == "text" and message["content"]["text"] == "线索 ACME 已超时，负责人 Wang Wei"

    (slack,) = receiver.on("slack")
    assert slack.json() == {"text": "Lead overdue\nLead ACME is overdue, owner Wang Wei"}
    assert all(r.headers["Content-Type"].startswith("application/json") for r in receiver.requests)

    assert runtime.worker(environ=environ).tick().delivered == 0  # each message went out once
    assert len(receiver.requests) == 4


def test_a_timers_worker_and_an_outbox_worker_split_the_work(make_engine: Any, clock: Any, receiver: Receiver,
                                                             environ: dict[str, str]) -> None:
    runtime = _breached_lead(make_engine, clock)
    outbox_only = runtime.worker(environ=environ, name="outbox", role="outbox")
    assert (outbox_only.tick().fired, len(receiver.requests)) == (0, 0)  # the breach timer is not its job
    timers_only = runtime.worker(environ=environ, name="timers", role="timers")
    assert (timers_only.tick().fired, len(receiver.requests)) == (1, 0)  # fired; the messages wait in the outbox
    assert outbox_only.tick().delivered == 4 and len(receiver.requests) == 4
    with pytest.raises(ValueError, match="unknown worker role 'mail'"):
        runtime.worker(environ=environ, role="mail")


def test_people_with_chat_ids_are_mentioned_by_id_where_a_bot_needs_one(make_engine: Any, clock: Any,
                                                                         receiver: Receiver,
                                                                         environ: dict[str, str]) -> None:
    runtime = _breached_lead(make_engine, clock, feishu="ou_7d8a6e6df7621556ce0d21922b676706",
                             slack="U024BE7LH", wecom="WangWei", dingtalk="manager4585")
    assert runtime.worker(environ=environ).tick().delivered == 4
    (feishu,) = receiver.on("feishu")
    assert feishu.json()["content"]["text"] == \
        '线索 ACME 已超时，负责人 Wang Wei <at user_id="ou_7d8a6e6df7621556ce0d21922b676706"></at>'
    (slack,) = receiver.on("slack")
    assert slack.json()["text"].endswith("<@U024BE7LH>")
    (wecom,) = receiver.on("wecom")
    assert wecom.json()["text"]["mentioned_list"] == ["WangWei"]
    assert wecom.json()["text"]["mentioned_mobile_list"] == ["13900000001"]
    (ding,) = receiver.on("dingtalk")
    assert ding.json()["at"]["atUserIds"] == ["manager4585"] and ding.json()["at"]["atMobiles"] == ["13900000001"]


def test_a_receiver_failing_three_times_gets_the_message_once(make_engine: Any, clock: Any, receiver: Receiver,
                                                              environ: dict[str, str]) -> None:
    runtime = _breached_lead(make_engine, clock)
    receiver.failures_left["/wecom"] = 3
    worker = runtime.worker(environ=environ)
    worker.tick()
    for _ in range(3):
        clock.advance(minutes=2)  # past the backoff (10 s, 20 s, 40 s, ±20 %)
        worker.tick()
    assert len(receiver.on("wecom")) == 1
    assert {m["status"] for m in list_messages(runtime.db, runtime.schema)} == {"delivered"}


def _feishu_dead_lettered(make_engine: Any, clock: Any, environ: dict[str, str]) -> Engine:
    """A breached lead whose Feishu message ran out of attempts: FEISHU_SECRET was never set."""
    runtime = _breached_lead(make_engine, clock)
    broken = {key: value for key, value in environ.items() if key != "FEISHU_SECRET"}
    worker = runtime.worker(environ=broken)
    for _ in range(6):
        worker.tick()
        clock.advance(minutes=2)
    return runtime


def test_a_missing_variable_dead_letters_with_its_name_and_retry_delivers(make_engine: Any, clock: Any,
                                                                          receiver: Receiver,
                                                                          environ: dict[str, str]) -> None:
    runtime = _feishu_dead_lettered(make_engine, clock, environ)
    (dead,) = list_messages(runtime.db, runtime.schema, status="dead")
    assert dead["channel"] == "feishu" and "FEISHU_SECRET" in dead["last_error"]
    assert FEISHU_SECRET not in dead["last_error"]
    assert receiver.on("feishu") == []
    assert retry_dead(runtime.db, runtime.schema, clock.now(), dead["id"]) == 1
    assert runtime.worker(environ=environ).tick().delivered == 1
    assert len(receiver.on("feishu")) == 1


def test_an_admin_sees_a_dead_letter_with_its_reason_on_the_outbox_screen_and_retries_it(
        make_engine: Any, clock: Any, receiver: Receiver, environ: dict[str, str]) -> None:
    import html
    import re
    from starlette.testclient import TestClient
    runtime = _feishu_dead_lettered(make_engine, clock, environ)
    runtime.users.add(NewUser("chief", "管理员", "admin", password="chief-pass1"))
    browser = TestClient(runtime.web_app())

    def csrf(page: str) -> str:
        return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    browser.post("/login", data={"username": "chief", "password": "chief-pass1",
                                 "csrf_token": csrf(browser.get("/login").text)})
    page = html.unescape(browser.get("/admin/outbox", params={"status": "dead"}).text)
    assert "发送失败" in page and "FEISHU_SECRET" in page and "feishu" in page
    assert "全部失败消息重新发送（1）" in page
    (dead,) = list_messages(runtime.db, runtime.schema, status="dead")
    retried = browser.post("/admin/outbox/retry", data={"message_id": str(dead["id"]), "csrf_token": csrf(page)})
    assert "已重新排队 1 条消息" in retried.text  # the redirect lands on the waiting messages, with the flash
    assert [m["status"] for m in list_messages(runtime.db, runtime.schema) if m["id"] == dead["id"]] == ["pending"]
    assert runtime.worker(environ=environ).tick().delivered == 1


def test_the_outbox_screen_is_for_administrators_only(make_engine: Any) -> None:
    import re
    from starlette.testclient import TestClient
    roles = """
        roles:
          admin: {label: Administrator, admin: true}
          rep: {label: Sales rep, entities: {lead: {read: own, create: all, update: own}}}
    """
    runtime = make_engine({**BLUEPRINT, "roles.yaml": roles})  # app.yaml includes every *.yaml
    runtime.users.add(NewUser("rep", "销售", "rep", password="rep-pass-12"))
    browser = TestClient(runtime.web_app())
    token = re.search(r'name="csrf_token" value="([^"]+)"', browser.get("/login").text).group(1)  # type: ignore
    browser.post("/login", data={"username": "rep", "password": "rep-pass-12", "csrf_token": token})
    assert browser.get("/admin/outbox").status_code == 403
    assert browser.post("/admin/outbox/retry", data={"csrf_token": token}).status_code == 403


def test_a_rolled_back_breach_sends_nothing(make_engine: Any, clock: Any, receiver: Receiver,
                                            environ: dict[str, str]) -> None:
    runtime = _breached_lead(make_engine, clock)
    worker = runtime.worker(environ=environ)
    sla_handler = worker.handlers["sla"]

    def failing(connection: sa.Connection, timer: Any, now: dt.datetime) -> None:
        sla_handler(connection, timer, now)  # enqueues four messages …
        raise RuntimeError("… then the timer's transaction fails")

    worker.handlers["sla"] = failing
    assert worker.tick().failed == 1
    assert list_messages(runtime.db, runtime.schema) == [] and receiver.requests == []
    worker.handlers["sla"] = sla_handler
    clock.advance(minutes=3)  # the timer is retried after its backoff and then sends once
    assert worker.tick().delivered == 4


JOBS = {
    "calendars.yaml": """
        calendars:
          office: {hours: {mon-fri: ["09:00-18:00"]}}
    """,
    "jobs.yaml": """
        jobs:
          board:
            cron: "0 8 * * *"
            timezone: Asia/Shanghai
            calendar: office
            channel: wecom
            template: board
          weekly:
            cron: "0 9 * * mon"
            channel: slack
            template: board
    """,
    "templates.yaml": """
        channels: {}
        templates:
          board:
            text: "新线索 {{ counts.new_24h }}，未分配 {{ counts.unassigned }}，超时 {{ counts.overdue }}：{% for l in lists.late %}{{ l.name }} {% endfor %}"
    """,
}


def test_the_morning_board_runs_once_on_workdays_with_real_numbers(make_engine: Any, clock: Any,
                                                                     receiver: Receiver,
                                                                     environ: dict[str, str]) -> None:
    files = {**BLUEPRINT, **JOBS}
    files["jobs.yaml"] = files["jobs.yaml"].replace("template: board\n          weekly", "template: board\n"
                                                    "            counts:\n"
                                                    "              new_24h: {entity: lead, created_within: 24h}\n"
                                                    "              unassigned: {entity: lead, where: {owner: null}}\n"
                                                    "              overdue: {entity: lead, sla: overdue}\n"
                                                    "              late: {entity: lead, sla: overdue, list: 5}\n"
                                                    "          weekly")
    runtime = make_engine(files)
    owner = runtime.users.add(NewUser("wang", "Wang Wei", "admin"))
    clock.set(dt.datetime(2026, 11, 22, 23, 0, tzinfo=dt.timezone.utc))  # Monday 07:00 in Shanghai
    runtime.records.create("lead", {"name": "Late Co"}, actor=SYSTEM)
    runtime.records.create("lead", {"name": "Overdue Co", "owner": owner.id}, actor=SYSTEM)
    first, second = runtime.worker(environ=environ, name="w1"), runtime.worker(environ=environ, name="w2")
    first.tick(), second.tick()  # catches up Sunday's 08:00 (skipped: rest day)
    clock.set(dt.datetime(2026, 11, 23, 0, 0, 5, tzinfo=dt.timezone.utc))  # Monday 08:00:05
    reports = [first.tick(), second.tick()]
    assert sorted(sum((r.jobs for r in reports), [])) == ["board"]  # once across the two workers
    second.tick()
    board_rows = [m for m in list_messages(runtime.db, runtime.schema) if m["idempotency_key"].startswith("job:board:")]
    assert [(m["status"], m["last_error"]) for m in board_rows] == [("delivered", None)]
    boards = [r.json()["text"]["content"] for r in receiver.on("wecom")]
    assert [text for text in boards if text.startswith("新线索")] == ["新线索 2，未分配 1，超时 1：Overdue Co "]
    runs = runtime.schema.job_runs
    with runtime.db.read() as connection:
        log = [(row.job, row.status, row.output) for row in connection.execute(sa.select(runs).order_by(runs.c.id))]
    assert log[0][:2] == ("board", "succeeded") and "not a working day" in str(log[0][2])
    assert log[-1][:2] == ("board", "succeeded") and "超时 1" in str(log[-1][2])


def test_chat_ids_are_set_with_the_cli_and_a_wrong_type_is_named(tmp_path: Any) -> None:
    from click.testing import CliRunner

    import cli
    from tests.support.blueprints import SHIPPED_CRM
    db = ["--db", f"sqlite:///{tmp_path / 'crm.sqlite'}", "--blueprint", str(SHIPPED_CRM)]
    runner = CliRunner()
    added = runner.invoke(cli.main, ["user", "add", "wang", "--role", "sales_rep", "--phone", "13900000001",
                                     "--im", "feishu=ou_1", *db], env={"CRM_NEW_PASSWORD": "wang-pass-1"})
    assert added.exit_code == 0, added.output
    changed = runner.invoke(cli.main, ["user", "im", "wang", "slack=U024BE7LH", "feishu=", *db])
    assert changed.exit_code == 0 and changed.output.strip() == "wang: slack=U024BE7LH"  # feishu= cleared it
    wrong = runner.invoke(cli.main, ["user", "im", "wang", "teams=42", *db])
    assert wrong.exit_code == 1 and "'teams=42'" in wrong.output and "feishu" in wrong.output


def test_a_wecom_markdown_group_gets_the_message_though_its_recipient_has_a_phone(make_engine: Any, clock: Any,
                                                                                  receiver: Receiver,
                                                                                  environ: dict[str, str]) -> None:
    """WeCom markdown cannot @ a mobile; the message goes out mentioning by userid only
    (it used to be refused and dead-lettered)."""
    files = {**BLUEPRINT, "channels.yaml": BLUEPRINT["channels.yaml"].replace(
        "wecom: {type: wecom, url: {env: WECOM_URL}, format: text}",
        "wecom: {type: wecom, url: {env: WECOM_URL}, format: markdown}")}
    runtime = make_engine(files)
    owner = runtime.users.add(NewUser("wang", "Wang Wei", "admin", phone="13900000001", im_ids={"wecom": "WangWei"}))
    runtime.records.create("lead", {"name": "ACME", "owner": owner.id}, actor=SYSTEM)
    clock.advance(minutes=31)
    report = runtime.worker(environ=environ).tick()
    assert report.dead == 0 and report.delivered == 4
    (wecom,) = receiver.on("wecom")
    assert wecom.json() == {"msgtype": "markdown",
                            "markdown": {"content": "线索 ACME 已超时，负责人 Wang Wei\n<@WangWei>"}}


def test_doctor_names_people_a_feishu_or_slack_bot_cannot_mention(make_engine: Any) -> None:
    runtime = make_engine(BLUEPRINT)
    runtime.users.add(NewUser("wang", "Wang Wei", "admin", im_ids={"feishu": "ou_1", "slack": "U1"}))
    runtime.users.add(NewUser("li", "Li Na", "admin", im_ids={"slack": "U2"}))
    findings = {finding.title: finding for finding in runtime.doctor.diagnose()}
    feishu = findings["1 active user(s) have no feishu id"]
    assert "li" in feishu.detail and "wang" not in feishu.detail and "crm user im" in feishu.hint
    assert not any("no slack id" in title for title in findings)
