"""The service desk on the shipped blueprints: windowed quality alerts, delivery-risk flags on the
customer's deals, and the account health score with its reasons and `health_dropped` rule.

Real databases (SQLite file and PostgreSQL), real HTTP deliveries to a loopback receiver.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.engine import Engine, open_engine
from engine.metamodel.errors import BlueprintInvalid
from engine.runtime.ops.users import NewUser
from engine.runtime.records.actors import SYSTEM
from tests.support.blueprints import SHIPPED_CRM, SHIPPED_SERVICE, load, write_blueprint
from tests.support.chat_receiver import chat_receiver


def _ticket(runtime: Engine, customer: int, region: str, fault: str = "E-101", **values: Any) -> dict[str, Any]:
    return runtime.records.create("ticket", {"subject": f"{fault} 报修", "customer": customer, "fault_code": fault,
                                             "region": region, **values}, actor=SYSTEM).record


def _alerts(runtime: Engine) -> list[Any]:
    with runtime.db.read() as connection:
        return connection.execute(sa.text("SELECT id, fault_code, region, ticket_count FROM quality_alert "
                                          "ORDER BY id")).all()


def _linked(runtime: Engine) -> dict[int, int | None]:
    with runtime.db.read() as connection:
        return {row.id: row.quality_alert for row in connection.execute(sa.text(
            "SELECT id, quality_alert FROM ticket ORDER BY id"))}


def _outbox(runtime: Engine, channel: str) -> list[str]:
    """The texts of the messages queued for `channel`."""
    with runtime.db.read() as connection:
        rows = connection.execute(sa.text("SELECT payload FROM crm_outbox WHERE channel = :c ORDER BY id"),
                                  {"c": channel}).all()
    return [(row.payload if isinstance(row.payload, dict) else json.loads(row.payload))["text"] for row in rows]


def test_the_fifth_ticket_of_a_fault_in_a_region_raises_one_alert_across_a_restart(
        db_url: str, clock: Any) -> None:
    model = load(SHIPPED_SERVICE)
    first = open_engine(model, db_url, clock=clock)
    customer = first.records.create("account", {"name": "华东精工"}, actor=SYSTEM).record["id"]
    for _ in range(4):
        _ticket(first, customer, "east")
        clock.advance(hours=12)
    assert _alerts(first) == [] and _outbox(first, "feishu_rnd") == []  # four in 3 days raise nothing
    first.close()

    runtime = open_engine(model, db_url, clock=clock)  # a restart: the window is in the database
    try:
        fifth = _ticket(runtime, customer, "east")
        [alert] = _alerts(runtime)
        assert (alert.fault_code, alert.region, alert.ticket_count) == ("E-101", "east", 5)
        assert fifth["quality_alert"] == alert.id
        assert set(_linked(runtime).values()) == {alert.id}  # the four before it are linked too
        [message] = _outbox(runtime, "feishu_rnd")  # R&D hears about it once
        assert "E-101" in message and "5 张同类工单" in message

        sixth = _ticket(runtime, customer, "east")
        assert sixth["quality_alert"] == alert.id and _alerts(runtime)[0].ticket_count == 6
        other = _ticket(runtime, customer, "south")  # another region starts nothing
        assert other["quality_alert"] is None and len(_alerts(runtime)) == 1
        assert len(_outbox(runtime, "feishu_rnd")) == 1  # joining does not notify again
    finally:
        runtime.close()


def test_tickets_older_than_the_window_do_not_count(make_engine: Any, clock: Any) -> None:
    runtime = make_engine(SHIPPED_SERVICE)
    customer = runtime.records.create("account", {"name": "华南电子"}, actor=SYSTEM).record["id"]
    for _ in range(4):
        _ticket(runtime, customer, "south", "PWR-03")
    clock.advance(days=3, minutes=1)
    assert _ticket(runtime, customer, "south", "PWR-03")["quality_alert"] is None
    assert _alerts(runtime) == []


def test_a_closed_alert_lets_the_next_cluster_raise_a_new_one(make_engine: Any, clock: Any) -> None:
    runtime = make_engine(SHIPPED_SERVICE)
    customer = runtime.records.create("account", {"name": "华北机械"}, actor=SYSTEM).record["id"]
    for _ in range(5):
        _ticket(runtime, customer, "north")
    [alert] = _alerts(runtime)
    runtime.records.update("quality_alert", alert.id, {"status": "closed", "root_cause": "批次电容虚焊"},
                           actor=SYSTEM)
    clock.advance(hours=1)
    assert _ticket(runtime, customer, "north")["quality_alert"] is None  # counts anew, 1 of 5
    for _ in range(4):
        _ticket(runtime, customer, "north")
    assert len(_alerts(runtime)) == 2


def test_two_concurrent_fifth_tickets_make_one_alert_on_postgresql(pg_url: str, clock: Any) -> None:
    model = load(SHIPPED_SERVICE)
    runtime = open_engine(model, pg_url, clock=clock)
    other = open_engine(model, pg_url, clock=clock, migrate=False)
    try:
        customer = runtime.records.create("account", {"name": "西南制造"}, actor=SYSTEM).record["id"]
        for _ in range(4):
            _ticket(runtime, customer, "southwest")
        outcome: dict[str, Any] = {}
        with runtime.db.write() as connection:  # the first fifth ticket, its transaction still open
            first = runtime.records.create("ticket", {"subject": "A", "customer": customer, "fault_code": "E-101",
                                                      "region": "southwest"}, actor=SYSTEM, within=connection).record
            thread = threading.Thread(target=lambda: outcome.update(second=_ticket(other, customer, "southwest")))
            thread.start()
            thread.join(timeout=1.5)
            assert thread.is_alive()  # the second one waits for the group's lock
        thread.join(timeout=30)
        [alert] = _alerts(runtime)
        assert first["quality_alert"] == alert.id and outcome["second"]["quality_alert"] == alert.id
        assert alert.ticket_count == 6 and len(_outbox(runtime, "feishu_rnd")) == 1
    finally:
        other.close()
        runtime.close()


def test_alert_mistakes_are_reported_at_their_line(tmp_path: Path) -> None:
    folder = write_blueprint(tmp_path / "bp", {
        "app.yaml": "app: t\ninclude: ['*.yaml']\n",
        "ticket.yaml": """
            entity: ticket
            fields:
              fault_code: {type: string}
              region: {type: choice, options: {east: East}}
              alert: {type: link, entity: quality_alert}
        """,
        "quality_alert.yaml": """
            entity: quality_alert
            fields:
              title: {type: string, required: true}
        """,
        "alerts.yaml": """
            alerts:
              cluster:
                entity: ticket
                group_by: [fault_code, regoin]
                window: 2bd
                threshold: 5
                record: {entity: quality_alert, link: alert}
        """,
    })
    with pytest.raises(BlueprintInvalid) as caught:
        load(folder)
    text = str(caught.value)
    assert "alerts.yaml:4" in text and "group_by field 'regoin' is not a field of 'ticket'" in text
    assert "did you mean 'region'" in text
    assert "alerts.yaml:5" in text and "calendar time" in text
    assert "alerts.yaml:7" in text and "requires 'title'" in text
    assert "no index" not in text  # not while a group field is misspelt


def test_an_alert_without_its_index_is_refused_with_the_line_to_add(tmp_path: Path) -> None:
    folder = write_blueprint(tmp_path / "bp", {
        "app.yaml": "app: t\ninclude: ['*.yaml']\n",
        "ticket.yaml": """
            entity: ticket
            fields:
              fault_code: {type: string}
              region: {type: choice, options: {east: East}}
              alert: {type: link, entity: quality_alert}
            indexes:
              - fields: [region, fault_code]
        """,
        "quality_alert.yaml": "entity: quality_alert\nfields: {title: {type: string}}\n",
        "alerts.yaml": """
            alerts:
              cluster: {entity: ticket, group_by: [fault_code, region], window: 3d, threshold: 5,
                        record: {entity: quality_alert, link: alert}}
        """,
    })
    with pytest.raises(BlueprintInvalid) as caught:
        load(folder)
    text = str(caught.value)
    assert "alerts.yaml:2" in text and "ticket has no index for that count" in text
    assert "indexes: [{fields: [fault_code, region, created_at]}]" in text


# -- sales and service on one customer -------------------------------------------------------------

@pytest.fixture
def crm(make_engine: Any) -> Engine:
    runtime: Engine = make_engine(SHIPPED_CRM)
    runtime.users.add(NewUser("li", "李雷", "sales_rep", "east", phone="13900000001"))
    runtime.users.add(NewUser("han", "韩梅", "sales_rep", "east", phone="13900000002"))
    runtime.users.add(NewUser("chen", "陈静", "service_agent", "service", phone="13900000009"))
    return runtime


def _user(runtime: Engine, username: str) -> int:
    with runtime.db.read() as connection:
        return int(connection.execute(sa.text("SELECT id FROM crm_users WHERE username = :u"),
                                      {"u": username}).scalar_one())


def _deal(runtime: Engine, account: int, name: str, owner: str, **values: Any) -> dict[str, Any]:
    return runtime.records.create("opportunity", {"name": name, "account": account, "owner": _user(runtime, owner),
                                                  **values}, actor=SYSTEM).record


def _risk(runtime: Engine, *deals: dict[str, Any]) -> list[bool]:
    return [runtime.records.get("opportunity", deal["id"], actor=SYSTEM)["delivery_risk"] for deal in deals]


def test_a_delivery_ticket_flags_the_open_deals_and_tells_both_owners(crm: Engine) -> None:
    account = crm.records.create("account", {"name": "宁波精密"}, actor=SYSTEM).record["id"]
    line = _deal(crm, account, "产线改造", "li")
    spares = _deal(crm, account, "备件年框", "han")
    elsewhere = _deal(crm, crm.records.create("account", {"name": "别家"}, actor=SYSTEM).record["id"], "别家商机", "li")
    ticket = crm.records.create("ticket", {"subject": "设备延期两周未到货", "customer": account, "category": "delivery",
                                           "owner": _user(crm, "chen")}, actor=SYSTEM).record
    assert _risk(crm, line, spares, elsewhere) == [True, True, False]

    with chat_receiver() as receiver:
        report = crm.worker(environ={"WECOM_SALES_WEBHOOK": f"{receiver.url}/wecom?key=k",
                                     "WECOM_MANAGERS_WEBHOOK": f"{receiver.url}/managers?key=k",
                                     "WECOM_SERVICE_WEBHOOK": f"{receiver.url}/service?key=k"}).tick()
        assert report is not None
        bodies = [request.json() for request in receiver.on("wecom")]
    assert len(bodies) == 2
    mentioned = sorted(mobile for body in bodies for mobile in body["text"]["mentioned_mobile_list"])
    assert mentioned == ["13900000001", "13900000002"]
    assert any("产线改造" in body["text"]["content"] for body in bodies)
    assert any("备件年框" in body["text"]["content"] for body in bodies)

    crm.records.update("ticket", ticket["id"], {"status": "resolved", "resolution": "已加急发货并签收"}, actor=SYSTEM)
    assert _risk(crm, line, spares) == [False, False]


def test_the_flag_stays_while_another_delivery_ticket_is_open(crm: Engine) -> None:
    account = crm.records.create("account", {"name": "苏州光电"}, actor=SYSTEM).record["id"]
    deal = _deal(crm, account, "二期扩产", "li")
    first = crm.records.create("ticket", {"subject": "到货短缺", "customer": account, "category": "delivery"},
                               actor=SYSTEM).record
    second = crm.records.create("ticket", {"subject": "包装破损", "customer": account, "category": "delivery"},
                                actor=SYSTEM).record
    crm.records.update("ticket", first["id"], {"status": "closed", "resolution": "补发"}, actor=SYSTEM)
    assert _risk(crm, deal) == [True]
    crm.records.update("ticket", second["id"], {"status": "resolved", "resolution": "换货"}, actor=SYSTEM)
    assert _risk(crm, deal) == [False]


def test_health_turns_red_as_a_complaint_opens_with_its_reasons_and_warns_once(crm: Engine) -> None:
    account = crm.records.create("account", {"name": "杭州智造", "owner": _user(crm, "li")}, actor=SYSTEM).record
    # nothing yet: no orders (0/30), no tickets (service 20/20, complaints 20/20), no activity
    # (0/20), no risk (10/10) — 50, yellow
    assert (account["health_score"], account["health_level"]) == (50, "yellow")
    deal = _deal(crm, account["id"], "智能仓储", "li")
    crm.records.create("activity", {"subject": "季度回访", "account": account["id"], "done": True,
                                    "outcome": "reached"}, actor=SYSTEM)
    after_visit = crm.records.get("account", account["id"], actor=SYSTEM)
    assert (after_visit["health_score"], after_visit["health_level"]) == (55, "yellow")  # + 1/4 of 20

    # a delivery complaint: complaints 1 of 2 (−10) and the deal now carries a delivery risk (−10)
    crm.records.create("ticket", {"subject": "交期一再延误", "customer": account["id"], "category": "delivery"},
                       actor=SYSTEM)
    red = crm.records.get("account", account["id"], actor=SYSTEM)
    assert (red["health_score"], red["health_level"]) == (35, "red")
    assert "未解决的质量/交付投诉 1 张" in red["health_reasons"]
    assert "有交付风险的在跟商机 1 个" in red["health_reasons"]
    assert red["health_reasons"].splitlines()[0].startswith("订单频次 0/30")  # the weakest first
    assert "renewal_risk" in red["tags"]
    assert _risk(crm, deal) == [True]

    crm.records.create("ticket", {"subject": "再次投诉", "customer": account["id"], "category": "quality"},
                       actor=SYSTEM)  # redder still: the level did not drop again, so no second warning
    assert crm.records.get("account", account["id"], actor=SYSTEM)["health_score"] == 25
    [warning] = _outbox(crm, "wecom_sales_managers")
    assert "杭州智造" in warning and "续约风险" in warning


def test_score_mistakes_are_reported_at_their_line(tmp_path: Path) -> None:
    folder = write_blueprint(tmp_path / "bp", {
        "app.yaml": "app: t\ninclude: ['*.yaml']\n",
        "account.yaml": """
            entity: account
            fields:
              name: {type: string}
              health: {type: integer}
        """,
        "order.yaml": """
            entity: order
            fields:
              account: {type: link, entity: account}
        """,
        "scores.yaml": """
            scores:
              health:
                entity: account
                field: health
                levels: {green: 70, red: 10}
                counts:
                  orders: {entity: order, via: account}
                components:
                  - {name: orders, weight: 60, value: "ordres / 3"}
                  - {name: rest, weight: 30, value: "1"}
        """,
        "rules.yaml": """
            rules:
              - name: warn
                entity: account
                trigger: {event: health_dropped, score: helth}
                actions: [{set: {name: x}}]
        """,
    })
    with pytest.raises(BlueprintInvalid) as caught:
        load(folder)
    text = str(caught.value)
    assert "scores.yaml:5" in text and "the lowest level 'red' starts at 10" in text
    assert "scores.yaml:9" in text and "unknown name 'ordres'" in text and "did you mean 'orders'" in text
    assert "weights add up to 90, not 100" in text
    assert "rules.yaml:4" in text and "'helth' is not one" in text


def test_suggestion_mistakes_are_reported_at_their_line(tmp_path: Path) -> None:
    folder = write_blueprint(tmp_path / "bp", {
        "app.yaml": "app: t\ninclude: ['*.yaml']\n",
        "ticket.yaml": """
            entity: ticket
            fields:
              fault_code: {type: string}
              status: {type: choice, options: {open: Open, closed: Closed}}
              solution: {type: link, entity: ticket}
        """,
        "solution.yaml": "entity: solution\nfields: {fault_code: {type: integer}}\n",
        "knowledge.yaml": """
            suggestions:
              fixes:
                on: ticket
                suggest: solution
                match: [fault_code]
                used_by: solution
                settled: {status: [done]}
        """,
    })
    with pytest.raises(BlueprintInvalid) as caught:
        load(folder)
    text = str(caught.value)
    assert "knowledge.yaml:5" in text and "ticket.fault_code is a string field but solution.fault_code is a integer" in text
    assert "knowledge.yaml:6" in text and "ticket.solution links to ticket, not solution" in text
    assert "knowledge.yaml:7" in text and "value 'done' is not an option of status" in text
