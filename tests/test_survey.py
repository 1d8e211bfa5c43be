"""The satisfaction survey on the shipped service blueprint: closing a ticket mails the caller a
signed link (and shows it on the ticket); the customer answers it once, without signing in, over
real HTTP; a second use, a changed signature and an expired link (fake clock) get a page saying
so and write nothing. Real databases (SQLite file and PostgreSQL).
"""

from __future__ import annotations

import json
import threading
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa

from engine.engine import Engine, open_engine
from engine.metamodel.errors import BlueprintInvalid
from engine.rules import FakeClock
from engine.runtime.records.actors import SYSTEM
from engine.analytics import period_at
from engine.runtime.automation.surveys import SurveyRefused
from engine.runtime.ops.users import NewUser
from engine.runtime.records.events import read_events
from tests.support.blueprints import SHIPPED_SERVICE, load, write_blueprint
from tests.support.live_server import serving
from tests.support.passwords import CHEAP_HASHER

BASE = "https://service.example.com"


@pytest.fixture
def desk(db_url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setenv("CRM_SECRET_KEY", "survey-test-secret-" + "k" * 40)
    runtime = open_engine(load(SHIPPED_SERVICE), db_url, clock=clock, base_url=BASE, password_hasher=CHEAP_HASHER)
    try:
        yield runtime
    finally:
        runtime.close()


@pytest.fixture
def site(desk: Engine) -> Iterator[str]:
    with serving(desk.web_app()) as base:
        yield base


def _closed_ticket(desk: Engine, subject: str = "切割头报警 E-101", **values: Any) -> dict[str, Any]:
    customer = desk.records.create("account", {"name": "苏州精工"}, actor=SYSTEM).record["id"]
    ticket = desk.records.create("ticket", {"subject": subject, "customer": customer, "fault_code": "E-101",
                                            "reporter_email": "wang@customer.example.cn", **values},
                                 actor=SYSTEM).record
    desk.records.update("ticket", ticket["id"], {"status": "closed", "resolution": "更换切割头保护镜"}, actor=SYSTEM)
    return desk.records.get("ticket", ticket["id"], actor=SYSTEM)


def _path(link: str) -> str:
    assert link.startswith(f"{BASE}/survey/ticket_satisfaction/")
    return urlsplit(link).path


def _mails(desk: Engine) -> list[dict[str, Any]]:
    with desk.db.read() as connection:
        rows = connection.execute(sa.text("SELECT payload FROM crm_outbox WHERE channel = 'service_mail' "
                                          "ORDER BY id")).all()
    return [row.payload if isinstance(row.payload, dict) else json.loads(row.payload) for row in rows]


def _answer(client: httpx.Client, path: str, **form: str) -> httpx.Response:
    page = client.get(path)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None, page.text
    return client.post(path, data={"csrf_token": token.group(1), **form})


def test_closing_sends_a_link_the_customer_answers_once_without_signing_in(desk: Engine, site: str) -> None:
    ticket = _closed_ticket(desk)
    link = ticket["survey_link"]
    assert ticket["survey_sent_at"] is not None and ticket["satisfaction"] is None  # shown on the ticket
    [mail] = _mails(desk)  # and mailed to the caller, through the outbox
    assert mail["recipients"] == ["wang@customer.example.cn"]
    assert link in mail["text"] and "切割头报警 E-101" in mail["text"] and "7d" in mail["text"]

    with httpx.Client(base_url=site, timeout=30) as customer:  # no session, no account
        page = customer.get(_path(link))
        assert page.status_code == 200
        assert "您对本次服务满意吗？" in page.text and 'name="score"' in page.text
        assert 'name="viewport"' in page.text  # a phone shows it at its width
        thanks = _answer(customer, _path(link), score="4", comment="工程师很专业，响应略慢")
        assert thanks.status_code == 200 and "感谢您的评价" in thanks.text

        answered = desk.records.get("ticket", ticket["id"], actor=SYSTEM)
        assert (answered["satisfaction"], answered["satisfaction_comment"]) == (4, "工程师很专业，响应略慢")
        assert answered["satisfaction_at"] is not None
        with desk.db.read() as connection:
            latest = read_events(connection, desk.schema, "ticket", ticket["id"])[-1]
        assert latest.kind == "updated" and "satisfaction" in latest.changes  # in the ticket's timeline

        again = customer.get(_path(link))  # a second use: a clear page, nothing written
        assert again.status_code == 409 and "已使用过" in again.text and 'name="score"' not in again.text
        second = customer.post(_path(link), data={"csrf_token": re.findall(
            r'name="csrf_token" value="([^"]+)"', page.text)[0], "score": "1", "comment": "改成差评"})
        assert second.status_code == 409 and "已使用过" in second.text
    after = desk.records.get("ticket", ticket["id"], actor=SYSTEM)
    assert (after["satisfaction"], after["version"]) == (4, answered["version"])


def test_a_tampered_or_expired_link_gets_a_page_and_writes_nothing(desk: Engine, site: str, clock: FakeClock) -> None:
    ticket = _closed_ticket(desk)
    path = _path(ticket["survey_link"])
    record_id, stamp, mac = path.rsplit("/", 1)[1].split(".")
    forged_mac = path.rsplit(".", 1)[0] + "." + ("A" if mac[0] != "A" else "B") + mac[1:]
    other_record = path.replace(f"/{record_id}.", f"/{int(record_id) + 1}.")
    later_stamp = path.replace(f".{stamp}.", f".{int(stamp) + 3600}.")
    with httpx.Client(base_url=site, timeout=30) as customer:
        for tampered in (forged_mac, other_record, later_stamp, path + "x", "/survey/no_such_survey/1.2.3"):
            refused = customer.get(tampered)
            assert refused.status_code == 404 and "无效的评价链接" in refused.text, tampered
        assert _answer(customer, path.replace("/survey/ticket_satisfaction/", "/survey/ticket_satisfaction/"),
                       score="", comment="").status_code == 400  # no score: the form again, the field named

        clock.advance(days=7, seconds=1)  # the link works for 7 days
        expired = customer.get(path + "?lang=en")
        assert expired.status_code == 410 and "has expired" in expired.text
        token = re.search(r'name="csrf_token" value="([^"]+)"', expired.text)
        assert token is not None
        late = customer.post(path, data={"csrf_token": token.group(1), "score": "5"})
        assert late.status_code == 410 and "has expired" in late.text
    unchanged = desk.records.get("ticket", ticket["id"], actor=SYSTEM)
    assert unchanged["satisfaction"] is None and unchanged["satisfaction_at"] is None
    assert unchanged["version"] == ticket["version"]


def test_a_missing_score_is_named_and_writes_nothing(desk: Engine, site: str) -> None:
    ticket = _closed_ticket(desk)
    path = _path(ticket["survey_link"])
    with httpx.Client(base_url=site, timeout=30) as customer:
        customer.get(path + "?lang=en")
        wrong = _answer(customer, path, score="9", comment="great")
        assert wrong.status_code == 400 and "Please choose a score from 1 to 5 (score)" in wrong.text
        assert 'data-field="score"' in wrong.text and "great" in wrong.text  # the comment is kept
        assert desk.records.get("ticket", ticket["id"], actor=SYSTEM)["version"] == ticket["version"]
        assert _answer(customer, path, score="5").status_code == 200  # the link still works


def test_closing_again_sends_a_new_link_and_voids_the_old_one(desk: Engine, site: str, clock: FakeClock) -> None:
    ticket = _closed_ticket(desk)
    old = _path(ticket["survey_link"])
    desk.records.update("ticket", ticket["id"], {"status": "open"}, actor=SYSTEM)
    clock.advance(hours=2)
    desk.records.update("ticket", ticket["id"], {"status": "closed"}, actor=SYSTEM)
    new = _path(desk.records.get("ticket", ticket["id"], actor=SYSTEM)["survey_link"])
    assert new != old and len(_mails(desk)) == 2
    with httpx.Client(base_url=site, timeout=30) as customer:
        replaced = customer.get(old)
        assert replaced.status_code == 410 and "已发送新的链接" in replaced.text
        assert _answer(customer, new, score="3").status_code == 200
    assert desk.records.get("ticket", ticket["id"], actor=SYSTEM)["satisfaction"] == 3


def test_survey_mistakes_are_reported_at_their_line(tmp_path: Path) -> None:
    folder = write_blueprint(tmp_path / "bp", {
        "app.yaml": "app: t\ninclude: ['*.yaml']\n",
        "ticket.yaml": """
            entity: ticket
            fields:
              subject: {type: string}
              status: {type: choice, options: {open: Open, closed: Closed}}
              score: {type: integer, min: 0, max: 10}
              sent_at: {type: datetime}
              link: {type: url}
        """,
        "survey.yaml": """
            surveys:
              csat:
                entity: ticket
                send_when: "status == 'done'"
                expires: 2bd
                question: {zh: 满意吗, en: "Happy?"}
                score_field: score
                answered_at_field: answerd_at
                sent_at_field: sent_at
                link_field: link
                send: {channel: nowhere, template: csat}
        """,
    })
    with pytest.raises(BlueprintInvalid) as raised:
        load(folder)
    text = str(raised.value)
    assert "survey.yaml:4" in text and "'done' is not an option of status" in text
    assert "survey.yaml:5" in text and "business time" in text
    assert "survey.yaml:7" in text and "must hold 1 to 5" in text
    assert "survey.yaml:8" in text and "'answerd_at' is not a field of 'ticket'" in text
    assert "survey.yaml:11" in text and "unknown channel 'nowhere'" in text


def test_two_answers_at_once_store_one(desk: Engine, clock: FakeClock) -> None:
    """Two submissions of one link racing (a double tap, two devices): one is stored, the other refused."""
    ticket = _closed_ticket(desk)
    token = _path(ticket["survey_link"]).rsplit("/", 1)[1]
    surveys = desk.surveys
    assert surveys is not None
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def answer(score: str) -> None:
        barrier.wait(timeout=10)
        try:
            surveys.answer("ticket_satisfaction", token, score, "", clock.now())
            outcomes.append(f"stored {score}")
        except SurveyRefused as refused:
            outcomes.append(refused.refusal.value)

    threads = [threading.Thread(target=answer, args=(score,)) for score in ("5", "1")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcome.split()[0] for outcome in outcomes) == ["stored", "used"]
    stored = int(next(outcome for outcome in outcomes if outcome.startswith("stored")).split()[1])
    after = desk.records.get("ticket", ticket["id"], actor=SYSTEM)
    assert after["satisfaction"] == stored and after["version"] == ticket["version"] + 1


def test_the_service_dashboard_averages_the_answers_per_agent_and_per_product(desk: Engine) -> None:
    chen = desk.users.add(NewUser("chen", "陈静", "service_agent", "service"))
    zhao = desk.users.add(NewUser("zhao", "赵强", "service_agent", "service"))
    laser = desk.records.create("product", {"name": "激光切割机", "model_code": "LC-3015", "category": "equipment"},
                                actor=SYSTEM).record["id"]
    pump = desk.records.create("product", {"name": "冷却泵", "model_code": "CP-2", "category": "spare_part"},
                               actor=SYSTEM).record["id"]
    for agent, product, score in ((chen, laser, "5"), (chen, pump, "4"), (zhao, laser, "2"), (zhao, laser, None)):
        ticket = _closed_ticket(desk, owner=agent.id, product=product)
        if score is not None and desk.surveys is not None:
            desk.surveys.answer("ticket_satisfaction", _path(ticket["survey_link"]).rsplit("/", 1)[1], score, "",
                                desk.clock.now())
    dashboard = desk.model.dashboard("service_desk")
    period = period_at("month", desk.clock.now(), "Asia/Shanghai")
    per_agent = {figure.key: figure for figure in desk.analytics.figures(
        dashboard.widget("satisfaction_per_agent"), actor=SYSTEM, period=period, filters={})}
    assert (per_agent[chen.id].value, per_agent[chen.id].count) == (4.5, 2)
    assert (per_agent[zhao.id].value, per_agent[zhao.id].count) == (2, 1)  # the unanswered one does not count
    per_product = {figure.key: figure.value for figure in desk.analytics.figures(
        dashboard.widget("satisfaction_per_product"), actor=SYSTEM, period=period, filters={})}
    assert per_product == {laser: 3.5, pump: 4}
