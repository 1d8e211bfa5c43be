"""Cadences: step sequences that run by themselves and stop when the customer replies or the deal moves.

Pure decisions are checked without a database; the engine tests run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.engine import Engine
from engine.rules import FakeClock
from engine.rules.cadences import ClockSnapshot, Move, decide_cadence
from engine.runtime.background.outbox import list_messages
from engine.runtime.ops.users import NewUser
from engine.runtime.records.actors import SYSTEM
from tests.support.blueprints import load, write_blueprint

BLUEPRINT = {
    "app.yaml": "app: t\ninclude: ['*.yaml']\n",
    "opportunity.yaml": """
        entity: opportunity
        fields:
          name: {type: string}
          stage: {type: choice, options: {proposal: Proposal, quote: Quote, negotiation: Negotiation}, default: proposal}
    """,
    "activity.yaml": """
        entity: activity
        fields:
          subject: {type: string}
          done: {type: boolean, default: false}
          outcome: {type: choice, options: {reached: Reached, no_answer: No answer}}
          opportunity: {type: link, entity: opportunity, on_delete: cascade}
    """,
    "channels.yaml": """
        channels:
          dingtalk_sales: {type: dingtalk, url: {env: DT_URL}}
        templates:
          day1: {text: "Day 1: send {{ record.name }} the comparison sheet"}
          day3: {text: "Day 3: send {{ record.name }} the case video"}
          idle: {text: "{{ record.name }} idle in quote"}
    """,
    "cadences.yaml": """
        cadences:
          after_quote:
            entity: opportunity
            starts: {stage_entered: quote}
            stops:
              - {stage_changed: true}
              - replied: {entity: activity, link: opportunity, when: "done and outcome == 'reached'"}
            steps:
              - name: comparison_sheet
                after: 1d
                actions:
                  - create_related: {entity: activity, link: opportunity, values: {subject: Send the comparison sheet}}
                  - notify: {channel: dingtalk_sales, template: day1}
              - name: case_video
                after: 3d
                actions:
                  - notify: {channel: dingtalk_sales, template: day3}
          quote_idle:
            entity: opportunity
            starts: {stage_entered: quote}
            restart_on_update: true
            stops: [{stage_changed: true}]
            steps:
              - {name: remind, after: 48h, actions: [{notify: {channel: dingtalk_sales, template: idle}}]}
    """,
}


@pytest.fixture
def crm(make_engine: Any) -> Engine:
    runtime = make_engine(BLUEPRINT)
    runtime.users.add(NewUser("wang", "Wang Wei", "admin"))
    return runtime


def _texts(runtime: Engine) -> list[str]:
    return [m["payload"]["text"] for m in reversed(list_messages(runtime.db, runtime.schema))]


def _quote(runtime: Engine) -> int:
    opportunity = runtime.records.create("opportunity", {"name": "ACME", "owner": 1}, actor=SYSTEM).record
    runtime.records.update("opportunity", opportunity["id"], {"stage": "quote"}, actor=SYSTEM)
    return int(opportunity["id"])


def test_steps_fire_on_day_one_and_day_three(crm: Engine, clock: FakeClock) -> None:
    opportunity = _quote(crm)
    worker = crm.worker(environ={})
    clock.advance(hours=23, minutes=59)
    worker.tick()
    assert _texts(crm) == []
    clock.advance(minutes=1)
    worker.tick()
    assert _texts(crm) == ["Day 1: send ACME the comparison sheet"]
    activities = crm.schema.table("activity")
    with crm.db.read() as connection:
        todo = connection.execute(sa.select(activities)).one()
    assert (todo.subject, todo.opportunity, todo.owner) == ("Send the comparison sheet", opportunity, 1)
    clock.advance(days=2)
    worker.tick()
    assert _texts(crm)[-1] == "Day 3: send ACME the case video"
    (run,) = [c for c in crm.cadences.summary("opportunity", opportunity) if c["cadence"] == "after_quote"]
    assert run["state"] == "done" and [s["status"] for s in run["steps"]] == ["fired", "fired"]


def test_a_customer_reply_stops_the_remaining_steps(crm: Engine, clock: FakeClock) -> None:
    opportunity = _quote(crm)
    worker = crm.worker(environ={})
    clock.advance(days=1, minutes=1)
    worker.tick()
    crm.records.create("activity", {"subject": "Call", "done": True, "outcome": "no_answer",
                                    "opportunity": opportunity}, actor=SYSTEM)
    assert crm.cadences.summary("opportunity", opportunity)[0]["state"] == "running"  # no answer is no reply
    crm.records.create("activity", {"subject": "Call back", "done": True, "outcome": "reached",
                                    "opportunity": opportunity}, actor=SYSTEM)
    clock.advance(days=5)
    worker.tick()
    assert "Day 3: send ACME the case video" not in _texts(crm)
    (run,) = [c for c in crm.cadences.summary("opportunity", opportunity) if c["cadence"] == "after_quote"]
    assert run["state"] == "stopped" and run["reason"] == "customer replied (activity)"
    assert [s["status"] for s in run["steps"]] == ["fired", "cancelled"]


def test_leaving_the_quote_stage_stops_every_cadence(crm: Engine, clock: FakeClock) -> None:
    opportunity = _quote(crm)
    clock.advance(hours=5)
    crm.records.update("opportunity", opportunity, {"stage": "negotiation"}, actor=SYSTEM)
    clock.advance(days=5)
    assert crm.worker(environ={}).tick().fired == 0
    assert {c["state"] for c in crm.cadences.summary("opportunity", opportunity)} == {"stopped"}


def test_quote_idle_reminder_restarts_on_every_update(crm: Engine, clock: FakeClock) -> None:
    opportunity = _quote(crm)
    worker = crm.worker(environ={})
    clock.advance(hours=40)
    crm.records.update("opportunity", opportunity, {"name": "ACME Ltd"}, actor=SYSTEM)
    clock.advance(hours=47)
    worker.tick()
    assert "ACME Ltd idle in quote" not in _texts(crm)
    clock.advance(hours=1)
    worker.tick()
    assert _texts(crm).count("ACME Ltd idle in quote") == 1


def test_decisions_are_pure(tmp_path: Path) -> None:
    model = load(write_blueprint(tmp_path / "bp", BLUEPRINT))
    spec = model.cadence("after_quote")
    now = dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc)
    never = lambda *_: False  # noqa: E731
    started = decide_cadence(spec, None, "updated", {"stage": "proposal"}, {"stage": "quote"}, now, never)
    assert started.move is Move.START
    running = ClockSnapshot(now, "running")
    assert decide_cadence(spec, running, "updated", {"stage": "quote"}, {"stage": "quote", "name": "x"}, now,
                          never).move is Move.NONE
    assert decide_cadence(spec, running, "updated", {"stage": "quote"}, {"stage": "negotiation"}, now,
                          never).move is Move.STOP
    assert decide_cadence(spec, None, "updated", {"stage": "quote"}, {"stage": "quote"}, now, never).move is Move.NONE
