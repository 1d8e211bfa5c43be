"""SLA clocks in the engine: timers in the write's transaction, firing once, breach actions, pauses.

Every test runs on SQLite and on PostgreSQL with a fake clock.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from engine.engine import Engine
from engine.runtime.automation.clocks import sla_condition
from engine.runtime.automation.notify import enqueue_notification
from engine.runtime.background.outbox import list_messages
from engine.runtime.ops.users import NewUser
from engine.runtime.records.actors import SYSTEM
from engine.runtime.records.errors import QueryInvalid
from engine.runtime.records.queries import parse_list_query

CST = ZoneInfo("Asia/Shanghai")

LEAD_BLUEPRINT = {
    "app.yaml": "app: t\ninclude: ['*.yaml', 'entities/*.yaml']\n",
    "entities/lead.yaml": """
        entity: lead
        fields:
          name: {type: string}
          grade: {type: choice, options: {S: S, A: A, B: B, C: C}}
          status: {type: choice, options: {new: New, contacted: Contacted, paused: Paused}, default: new}
          first_touched_at: {type: datetime}
          tags: {type: tags, options: {sla_breached: SLA breached, vip: VIP}}
    """,
    "calendars.yaml": """
        calendars:
          china_office:
            hours: {mon-fri: ["09:00-12:00", "13:30-18:00"]}
    """,
    "channels.yaml": """
        channels:
          dingtalk_sales: {type: dingtalk, url: {env: DT_URL}, format: markdown}
        templates:
          warn: {text: "{{ record.name }} 还剩 {{ sla.remaining|duration }}（{{ sla.percent }}%）"}
          breach: {title: "超时", text: "{{ record.name }} 超时，负责人 {{ owner.display_name }}，经理 {{ manager.display_name }}"}
    """,
    "sla.yaml": """
        sla: lead_first_call
        entity: lead
        applies_when: "status in ['new', 'paused']"
        tier: grade
        targets: {S: 2h, A: 30min}
        calendar: china_office
        starts: assigned
        pauses_when: "status == 'paused'"
        stops: [{field_set: first_touched_at}, {status_in: [contacted]}]
        warn_at: [50, 80]
        on_warning:
          - notify: {channel: dingtalk_sales, to: [owner], template: warn}
        on_breach:
          - notify: {channel: dingtalk_sales, to: [owner, owner.manager], template: breach}
          - add_tags: [sla_breached]
          - reassign: {backup: zhao}
    """,
}


@pytest.fixture
def crm(make_engine: Any) -> Engine:
    runtime = make_engine(LEAD_BLUEPRINT)
    runtime.users.add(NewUser("boss", "Boss Liu", "admin", phone="13800000000"))
    runtime.users.add(NewUser("wang", "Wang Wei", "admin", manager="boss", phone="13900000001"))
    runtime.users.add(NewUser("zhao", "Zhao Min", "admin", manager="boss", phone="13900000002"))
    return runtime


def _user_id(runtime: Engine, username: str) -> int:
    users = runtime.schema.users
    with runtime.db.read() as connection:
        return int(connection.execute(sa.select(users.c.id).where(users.c.username == username)).scalar_one())


def _events(runtime: Engine, kind: str) -> list[dict[str, Any]]:
    events = runtime.schema.events
    with runtime.db.read() as connection:
        return [dict(row.data or {}) for row in connection.execute(
            sa.select(events.c.data).where(events.c.kind == kind).order_by(events.c.id))]


def _local(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=CST).astimezone(dt.timezone.utc)


def _clock_row(runtime: Engine, record_id: int) -> Any:
    clocks = runtime.schema.clocks
    with runtime.db.read() as connection:
        return connection.execute(sa.select(clocks).where(clocks.c.record_id == record_id)).first()


def test_s_lead_assigned_before_qingming_breaches_at_the_right_business_minute(crm: Engine, clock: Any) -> None:
    clock.set(_local(2026, 4, 3, 17, 30))  # Friday 17:30; Qingming holiday Sat 4 – Mon 6 April
    wang = _user_id(crm, "wang")
    lead = crm.records.create("lead", {"name": "ACME", "grade": "S", "owner": wang}, actor=SYSTEM).record
    worker = crm.worker(environ={})
    summary = crm.slas.summary("lead", lead["id"], clock.now())
    assert summary[0]["due_at"] == _local(2026, 4, 7, 10, 30)  # 30 min Friday + 90 min Tuesday
    assert summary[0]["state"] == "on_track"

    clock.set(_local(2026, 4, 7, 9, 29))
    assert worker.tick().fired == 0  # the whole holiday passed: nothing due yet
    clock.set(_local(2026, 4, 7, 9, 30))
    assert worker.tick().fired == 1  # 50 % warning
    clock.set(_local(2026, 4, 7, 10, 29))
    assert worker.tick().fired == 1  # 80 % warning (10:06)
    assert [e["checkpoint"] for e in _events(crm, "sla_warning")] == ["warning-50", "warning-80"]
    assert _events(crm, "sla_breached") == []

    clock.set(_local(2026, 4, 7, 10, 30))
    assert worker.tick().fired == 1
    breached = crm.records.get("lead", lead["id"], actor=SYSTEM)
    assert breached["owner"] == _user_id(crm, "zhao")  # the circuit breaker moved it to the backup
    assert breached["tags"] == ["sla_breached"]
    assert len(_events(crm, "sla_breached")) == 1

    for _ in range(3):  # later ticks: the old cycle's checkpoints never fire again
        clock.advance(minutes=1)
        worker.tick()
    assert len(_events(crm, "sla_breached")) == 1
    assert len(_events(crm, "sla_warning")) == 2
    texts = [m["payload"]["text"] for m in reversed(list_messages(crm.db, crm.schema))]
    assert texts[0].startswith("ACME 还剩 1小时") and "(50%)" not in texts[0] and "50%" in texts[0]
    assert texts[2] == "ACME 超时，负责人 Wang Wei，经理 Boss Liu"
    breach_message = list_messages(crm.db, crm.schema)[0]["payload"]
    assert sorted(breach_message["mention_mobiles"]) == ["13800000000", "13900000001"]
    # the backup got a fresh clock of their own
    assert _events(crm, "sla_restart")[-1]["policy"] == "lead_first_call"


def test_breaches_fired_in_one_batch_each_act_once_in_timeline_order(crm: Engine, clock: Any) -> None:
    """The worker fires a due batch together (read ahead, events and messages sent together):
    every lead must still get its own checkpoints once, its owner and manager in the message,
    and a timeline in the order things happened."""
    clock.set(_local(2026, 11, 23, 9, 0))  # Monday
    wang = _user_id(crm, "wang")
    leads = [crm.records.create("lead", {"name": f"客户{n:02d}", "grade": "S", "owner": wang}, actor=SYSTEM).record
             for n in range(25)]
    worker = crm.worker(environ={})
    clock.set(_local(2026, 11, 23, 11, 0))  # both warnings and the breach of every lead are due at once
    assert worker.tick().fired == 75

    zhao = _user_id(crm, "zhao")
    texts = sorted(m["payload"]["text"] for m in list_messages(crm.db, crm.schema))
    assert texts == sorted(f"客户{n:02d} 超时，负责人 Wang Wei，经理 Boss Liu" for n in range(25))  # late warnings: not sent
    events = crm.schema.events
    with crm.db.read() as connection:
        rows = connection.execute(sa.select(events.c.record_id, events.c.kind, events.c.changes, events.c.data)
                                  .where(events.c.kind != "created").order_by(events.c.id)).all()
    for lead in leads:
        assert crm.records.get("lead", lead["id"], actor=SYSTEM)["owner"] == zhao
        timeline = [(row.kind, sorted(row.changes or {}), (row.data or {}).get("checkpoint"))
                    for row in rows if row.record_id == lead["id"]]
        assert timeline[timeline.index(("sla_warning", [], "warning-50")):] == [
            ("sla_warning", [], "warning-50"), ("sla_warning", [], "warning-80"), ("sla_breached", [], "breach-100"),
            ("updated", ["tags"], None), ("updated", ["owner"], None), ("assigned", ["owner"], None),
            ("sla_restart", [], None)]  # the same as when each was fired on its own (checked against e3ee2c2)

    clock.set(_local(2026, 11, 23, 14, 10))  # the backup's fresh 2 h clock started at 11:00: due 14:30
    assert worker.tick().fired == 50  # its two warnings each; the breach is not due yet
    assert len(_events(crm, "sla_breached")) == 25


def test_pausing_and_resuming_shifts_the_due_time(crm: Engine, clock: Any) -> None:
    clock.set(_local(2026, 11, 23, 10, 0))  # a Monday
    lead = crm.records.create("lead", {"name": "Beta", "grade": "A", "owner": _user_id(crm, "wang")},
                              actor=SYSTEM).record
    assert crm.slas.summary("lead", lead["id"], clock.now())[0]["due_at"] == _local(2026, 11, 23, 10, 30)
    clock.set(_local(2026, 11, 23, 10, 5))
    crm.records.update("lead", lead["id"], {"status": "paused"}, actor=SYSTEM)
    paused = crm.slas.summary("lead", lead["id"], clock.now())[0]
    assert paused["state"] == "paused" and paused["due_at"] is None
    assert paused["remaining"] == dt.timedelta(minutes=25)
    clock.set(_local(2026, 11, 23, 11, 50))  # 25 min left: 10 before lunch, 15 after it
    worker = crm.worker(environ={})
    assert worker.tick().fired == 0  # nothing fires while paused
    crm.records.update("lead", lead["id"], {"status": "new"}, actor=SYSTEM)
    assert crm.slas.summary("lead", lead["id"], clock.now())[0]["due_at"] == _local(2026, 11, 23, 13, 45)
    assert _clock_row(crm, lead["id"]).due_at == _local(2026, 11, 23, 13, 45).replace(tzinfo=None)
    clock.set(_local(2026, 11, 23, 13, 44))
    worker.tick()
    assert _events(crm, "sla_breached") == []
    clock.set(_local(2026, 11, 23, 13, 45))
    worker.tick()
    assert len(_events(crm, "sla_breached")) == 1


def test_first_touch_stops_the_clock_and_cancels_its_timers(crm: Engine, clock: Any) -> None:
    clock.set(_local(2026, 11, 23, 10, 0))
    lead = crm.records.create("lead", {"name": "Gamma", "grade": "A", "owner": _user_id(crm, "wang")},
                              actor=SYSTEM).record
    clock.advance(minutes=10)
    crm.records.update("lead", lead["id"], {"first_touched_at": clock.now()}, actor=SYSTEM)
    summary = crm.slas.summary("lead", lead["id"], clock.now())[0]
    assert summary["state"] == "stopped" and summary["met"] is True
    timers = crm.schema.timers
    with crm.db.read() as connection:
        statuses = {row.status for row in connection.execute(sa.select(timers.c.status))}
    assert statuses == {"cancelled"}
    clock.advance(hours=5)
    assert crm.worker(environ={}).tick().fired == 0


def test_lists_filter_by_sla_state(crm: Engine, clock: Any) -> None:
    clock.set(_local(2026, 11, 23, 10, 0))
    wang = _user_id(crm, "wang")
    early = crm.records.create("lead", {"name": "early", "grade": "A", "owner": wang}, actor=SYSTEM).record
    clock.set(_local(2026, 11, 23, 10, 20))
    late = crm.records.create("lead", {"name": "late", "grade": "S", "owner": wang}, actor=SYSTEM).record
    table = crm.schema.table("lead")

    def ids(which: str) -> list[int]:
        condition = sla_condition(crm.schema, "lead", table, which, clock.now())
        with crm.db.read() as connection:
            return [row.id for row in connection.execute(sa.select(table.c.id).where(condition).order_by(table.c.id))]

    clock.set(_local(2026, 11, 23, 10, 40))
    assert ids("overdue") == [early["id"]]  # due 10:30, not yet fired by any worker: still overdue
    assert ids("due_within:1h") == []
    clock.set(_local(2026, 11, 23, 12, 0))  # "late" is due 13:50 (40 min before lunch, 80 after)
    assert ids("due_within:2h") == [late["id"]]
    assert ids("overdue") == [early["id"]]
    # the same filter as users reach it: RecordService.list with ?sla=… (API and list screens)
    entity = crm.model.entity("lead")
    listed = crm.records.list("lead", parse_list_query(entity, {"sla": "overdue"}), actor=SYSTEM)
    assert [item["name"] for item in listed.items] == ["early"] and listed.total == 1
    with pytest.raises(QueryInvalid, match="unknown SLA filter"):
        crm.records.list("lead", parse_list_query(entity, {"sla": "late-ish"}), actor=SYSTEM)
    # … and on the list screen, where the filter bar offers it
    crm.users.add(NewUser("chief", "管理员", "admin", password="chief-pass1"))
    page = _sign_in(crm, "chief", "chief-pass1").get("/lead", params={"sla": "overdue"}).text
    assert '<option value="overdue" selected>已超时</option>' in page
    assert ">early<" in page and ">late<" not in page


def test_a_rolled_back_write_leaves_no_timer_and_no_notification(crm: Engine, clock: Any) -> None:
    wang = _user_id(crm, "wang")
    with pytest.raises(RuntimeError):
        with crm.db.write() as connection:
            lead = crm.records.create("lead", {"name": "Ghost", "grade": "S", "owner": wang}, actor=SYSTEM,
                                      within=connection).record
            enqueue_notification(connection, crm.schema, crm.model, channel="dingtalk_sales", template="breach",
                                 to=["owner"], owner_id=wang, key="ghost", now=clock.now(), context={
                                     "record": lead, "owner": {"display_name": "x"},
                                     "manager": {"display_name": "y"}})
            raise RuntimeError("the user's write failed after the SLA observer ran")
    with crm.db.read() as connection:
        for table in (crm.schema.timers, crm.schema.outbox, crm.schema.clocks):
            assert connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == 0


def test_a_missing_channel_secret_ends_dead_with_the_variable_named(crm: Engine, clock: Any) -> None:
    clock.set(_local(2026, 11, 23, 10, 0))
    crm.records.create("lead", {"name": "Delta", "grade": "A", "owner": _user_id(crm, "wang")}, actor=SYSTEM)
    worker = crm.worker(environ={})
    clock.set(_local(2026, 11, 23, 10, 16))
    report = worker.tick()
    assert report.fired == 1 and report.retried == 1  # the warning fired; its delivery waits for DT_URL
    for _ in range(10):
        clock.advance(hours=2)
        worker.tick()
    dead = list_messages(crm.db, crm.schema, status="dead")
    assert dead and all("DT_URL" in message["last_error"] for message in dead)


def test_blueprint_mistakes_are_reported_at_their_line(tmp_path: Any) -> None:
    from engine.metamodel import BlueprintInvalid
    from tests.support.blueprints import load, write_blueprint

    files = dict(LEAD_BLUEPRINT)
    files["sla.yaml"] = files["sla.yaml"].replace("channel: dingtalk_sales, to: [owner], template: warn",
                                                  "channel: dingtalk_sale, to: [owner], template: warn") \
        .replace("targets: {S: 2h, A: 30min}", "targets: {S: 2h, X: 30min}").replace("calendar: china_office",
                                                                                      "calendar: china")
    files["calendars.yaml"] = files["calendars.yaml"].replace('"13:30-18:00"', '"13:30-12:00"')
    with pytest.raises(BlueprintInvalid) as caught:
        load(write_blueprint(tmp_path / "bp", files))
    text = str(caught.value)
    assert "sla.yaml:12:" in text and "unknown channel 'dingtalk_sale'" in text and "did you mean 'dingtalk_sales'" in text
    assert "tier 'X' is not an option of grade" in text
    assert "unknown calendar 'china'" in text and "known: china_office" in text
    assert 'calendars.yaml:3:' in text and '"13:30-12:00" must start before they end' in text


def test_a_calendar_or_template_declared_in_two_files_is_reported_at_the_second_name(tmp_path: Any) -> None:
    from engine.metamodel import BlueprintInvalid
    from tests.support.blueprints import load, write_blueprint

    files = {**LEAD_BLUEPRINT, "more.yaml": """
        calendars:
          china_office:
            hours: {mon-fri: ["09:00-18:00"]}
        ---
        channels:
          slack_ops: {type: slack, url: {env: OPS_SLACK}}
        templates:
          warn: {text: "again"}
    """}
    with pytest.raises(BlueprintInvalid) as caught:
        load(write_blueprint(tmp_path / "bp", files))
    text = str(caught.value)
    assert "more.yaml:2:3: error: calendar 'china_office' is declared twice" in text
    assert "calendars.yaml:2:3; rename one" in text  # where the first one stands
    assert "more.yaml:8:3: error: template 'warn' is declared twice" in text


def test_shipped_blueprints_declare_the_circuit_breaker_and_the_ticket_sla() -> None:
    from tests.support.blueprints import SHIPPED_CRM, SHIPPED_SERVICE, load

    crm_model, service = load(SHIPPED_CRM), load(SHIPPED_SERVICE)
    breaker = crm_model.sla("lead_first_call")
    assert dict((t, d.text) for t, d in breaker.targets) == {"S": "2h", "A": "30min", "B": "2h", "C": "1bd"}
    assert breaker.warn_at == (50, 80) and breaker.calendar == "china_office"
    assert crm_model.sla("lead_silent_overdue").starts.kind == "updated"
    ticket = service.sla("ticket_first_response")
    assert {d.text for _, d in ticket.targets} == {"15min"} and ticket.calendar == "service_desk"
    assert {job.name for job in crm_model.jobs} == {"lead_timeliness_board", "weekly_process_health",
                                                    "rep_weekly_brief"}
    assert {cadence.name for cadence in crm_model.cadences} == {"after_quote", "quote_idle"}


def test_silent_overdue_restarts_on_every_update_and_breaches_after_three_quiet_days(make_engine: Any,
                                                                                      clock: Any) -> None:
    files = dict(LEAD_BLUEPRINT)
    files["silent.yaml"] = """
        sla: lead_silent
        entity: lead
        applies_when: "status == 'contacted'"
        default_target: 3d
        business_time: false
        starts: updated
        warn_at: []
        on_breach:
          - notify: {channel: dingtalk_sales, to: [owner], template: breach}
    """
    runtime = make_engine(files)
    runtime.users.add(NewUser("wang", "Wang Wei", "admin"))
    lead = runtime.records.create("lead", {"name": "Quiet", "status": "contacted", "owner": 1}, actor=SYSTEM).record
    worker = runtime.worker(environ={})
    clock.advance(days=2)
    runtime.records.update("lead", lead["id"], {"name": "Quiet Ltd"}, actor=SYSTEM)  # a touch restarts the clock
    clock.advance(days=2)
    worker.tick()
    assert [e for e in _events(runtime, "sla_breached") if e["policy"] == "lead_silent"] == []
    clock.advance(days=1, minutes=1)
    worker.tick()
    assert [e["policy"] for e in _events(runtime, "sla_breached")] == ["lead_silent"]
    assert _events(runtime, "sla_restart") == []  # restarts on updates do not clutter the timeline


def test_record_page_shows_the_sla_due_time(crm: Engine, clock: Any) -> None:
    from starlette.testclient import TestClient
    clock.set(_local(2026, 11, 23, 10, 0))
    lead = crm.records.create("lead", {"name": "甲", "grade": "A", "owner": _user_id(crm, "wang")},
                              actor=SYSTEM).record
    crm.users.add(NewUser("chief", "管理员", "admin", password="chief-pass1"))
    browser = TestClient(crm.web_app())
    token = browser.get("/login").text.split('name="csrf_token" value="')[1].split('"')[0]
    browser.post("/login", data={"username": "chief", "password": "chief-pass1", "csrf_token": token})
    page = browser.get(f"/lead/{lead['id']}").text
    assert "SLA" in page and "2026-11-23 10:30" in page  # grade A: 30 business minutes
    assert "开始计时（SLA）" in page and "sla_start" not in page  # the timeline speaks the user's language


FIRST_LOOK = {**LEAD_BLUEPRINT, "sla.yaml": """
        sla: lead_first_look
        entity: lead
        applies_when: "status == 'new'"
        default_target: 15min
        business_time: false
        starts: assigned
        stops: [{viewed_by: owner}]
        warn_at: []
        on_breach:
          - notify: {channel: dingtalk_sales, to: [owner.manager], template: breach}
    """}


def _sign_in(runtime: Engine, username: str, password: str) -> Any:
    from starlette.testclient import TestClient
    browser = TestClient(runtime.web_app())
    token = browser.get("/login").text.split('name="csrf_token" value="')[1].split('"')[0]
    browser.post("/login", data={"username": username, "password": password, "csrf_token": token})
    return browser


def test_a_viewed_by_owner_stop_ends_the_clock_when_the_owner_opens_the_lead(make_engine: Any, clock: Any) -> None:
    runtime = make_engine(FIRST_LOOK)
    runtime.users.add(NewUser("boss", "Boss Liu", "admin", phone="13800000000"))
    runtime.users.add(NewUser("wang", "Wang Wei", "sales_rep" if runtime.model.has_role("sales_rep") else "admin",
                              manager="boss", password="wang-pass-1"))
    runtime.users.add(NewUser("zhao", "Zhao Min", "admin", password="zhao-pass-1"))
    clock.set(_local(2026, 11, 23, 10, 0))
    lead = runtime.records.create("lead", {"name": "甲", "owner": _user_id(runtime, "wang")}, actor=SYSTEM).record
    events = runtime.schema.events

    def event_count() -> int:
        with runtime.db.read() as connection:
            return int(connection.execute(sa.select(sa.func.count()).select_from(events)).scalar_one())

    # someone else opening the lead (page and API) neither stops the clock nor writes anything
    zhao = _sign_in(runtime, "zhao", "zhao-pass-1")
    before = event_count()
    assert zhao.get(f"/lead/{lead['id']}").status_code == 200
    assert zhao.get(f"/api/lead/{lead['id']}").status_code == 200
    assert event_count() == before
    assert runtime.slas.summary("lead", lead["id"], clock.now())[0]["state"] == "on_track"

    # the owner opening it five minutes later stops the clock: met, timer cancelled, on the timeline
    clock.advance(minutes=5)
    wang = _sign_in(runtime, "wang", "wang-pass-1")
    page = wang.get(f"/lead/{lead['id']}").text
    summary = runtime.slas.summary("lead", lead["id"], clock.now())[0]
    assert summary["state"] == "stopped" and summary["met"] is True
    assert _events(runtime, "sla_stop") == [{"policy": "lead_first_look", "reason": "viewed by the owner",
                                             "due_at": None, "met": True}]
    assert "查看了记录" in page
    viewed_before = len(_events(runtime, "viewed"))
    assert wang.get(f"/api/lead/{lead['id']}").status_code == 200  # once stopped, views are not written again
    assert len(_events(runtime, "viewed")) == viewed_before == 1

    # the breach moment passes: nothing fires, nobody is told
    clock.advance(minutes=30)
    assert runtime.worker(environ={}).tick().fired == 0
    assert list_messages(runtime.db, runtime.schema) == []


def test_an_unopened_lead_breaches_and_tells_the_manager(make_engine: Any, clock: Any) -> None:
    runtime = make_engine(FIRST_LOOK)
    runtime.users.add(NewUser("boss", "Boss Liu", "admin", phone="13800000000"))
    runtime.users.add(NewUser("wang", "Wang Wei", "admin", manager="boss"))
    clock.set(_local(2026, 11, 23, 10, 0))
    runtime.records.create("lead", {"name": "乙", "owner": _user_id(runtime, "wang")}, actor=SYSTEM)
    clock.advance(minutes=15)
    assert runtime.worker(environ={}).tick().fired == 1
    [message] = list_messages(runtime.db, runtime.schema)
    assert message["payload"]["mention_mobiles"] == ["13800000000"]  # the manager, not the owner


def test_shipped_circuit_breaker_flags_the_lead_and_hands_it_to_the_manager(make_engine: Any, clock: Any) -> None:
    from tests.support.blueprints import SHIPPED_CRM
    runtime = make_engine(SHIPPED_CRM)
    runtime.users.add(NewUser("manager", "周经理", "sales_manager", "east"))
    runtime.users.add(NewUser("wang", "王磊", "sales_rep", "east", "manager"))
    clock.set(_local(2026, 11, 23, 10, 0))  # Monday, office hours
    lead = runtime.records.create("lead", {"name": "钱总", "company": "新锐科技", "source": "expo", "grade": "A",
                                           "owner": _user_id(runtime, "wang")}, actor=SYSTEM).record
    [first_call] = [s for s in runtime.slas.summary("lead", lead["id"], clock.now()) if s["policy"] == "lead_first_call"]
    clock.set(first_call["due_at"] + dt.timedelta(minutes=1))  # the grade the rules gave it decides the target
    runtime.worker(environ={}).tick()
    breached = runtime.records.get("lead", lead["id"], actor=SYSTEM)
    assert "sla_breached" in (breached["tags"] or [])
    assert breached["owner"] == _user_id(runtime, "manager")


def test_shipped_ticket_resolution_sla_counts_hotline_hours_and_pauses_for_the_customer(make_engine: Any,
                                                                                      clock: Any) -> None:
    from tests.support.blueprints import SHIPPED_SERVICE
    runtime = make_engine(SHIPPED_SERVICE)
    runtime.users.add(NewUser("chen", "陈静", "service_agent", "service"))
    clock.set(_local(2026, 11, 23, 18, 0))  # Monday 18:00; the hotline's hours are 08:00–20:00
    customer = runtime.records.create("account", {"name": "华东精工"}, actor=SYSTEM).record
    ticket = runtime.records.create("ticket", {"subject": "主轴异响", "customer": customer["id"], "priority": "P1",
                                               "owner": _user_id(runtime, "chen")}, actor=SYSTEM).record

    def resolution() -> dict[str, Any]:
        return next(s for s in runtime.slas.summary("ticket", ticket["id"], clock.now())
                    if s["policy"] == "ticket_resolution")
    assert resolution()["due_at"] == _local(2026, 11, 24, 10, 0)  # 2 h tonight + 2 h from 08:00
    clock.set(_local(2026, 11, 24, 8, 30))
    current = runtime.records.get("ticket", ticket["id"], actor=SYSTEM)
    current = runtime.records.update("ticket", ticket["id"], {"status": "waiting_customer"}, actor=SYSTEM,
                                     expected_version=current["version"])
    clock.set(_local(2026, 11, 24, 9, 30))  # the customer answers an hour later
    current = runtime.records.update("ticket", ticket["id"], {"status": "open"}, actor=SYSTEM,
                                     expected_version=current["version"])
    assert resolution()["due_at"] == _local(2026, 11, 24, 11, 0)  # the hour of waiting does not count
    clock.set(_local(2026, 11, 24, 10, 45))
    runtime.records.update("ticket", ticket["id"], {"status": "resolved", "resolution": "更换主轴轴承"},
                           actor=SYSTEM, expected_version=current["version"])
    done = resolution()
    assert done["state"] == "stopped" and done["met"] is True
