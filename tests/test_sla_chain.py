"""An SLA clock keeps one pending timer, its next checkpoint; firing one schedules the next.

What a user notices is unchanged: every warning, the breach and each escalation fire once, in
order, even when they all came due while the worker was down; a pause and resume neither
repeats a warning that was sent nor loses one that was not. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from engine.engine import Engine
from engine.runtime.ops.users import NewUser
from engine.runtime.records.actors import SYSTEM

CST = ZoneInfo("Asia/Shanghai")

BLUEPRINT = {
    "app.yaml": "app: t\ninclude: ['*.yaml', 'entities/*.yaml']\n",
    "entities/lead.yaml": """
        entity: lead
        fields:
          name: {type: string}
          grade: {type: choice, options: {S: S, A: A}}
          status: {type: choice, options: {new: New, contacted: Contacted, paused: Paused}, default: new}
          tags: {type: tags, options: {sla_breached: SLA breached}}
    """,
    "channels.yaml": """
        channels:
          dingtalk_sales: {type: dingtalk, url: {env: DT_URL}, format: markdown}
        templates:
          warn: {text: "{{ record.name }} {{ sla.percent }}%"}
          breach: {text: "{{ record.name }} 超时"}
          late: {text: "{{ record.name }} 严重超时"}
    """,
    "sla.yaml": """
        sla: first_call
        entity: lead
        applies_when: "status in ['new', 'paused']"
        tier: grade
        targets: {A: 100min}
        business_time: false
        starts: assigned
        pauses_when: "status == 'paused'"
        stops: [{status_in: [contacted]}]
        warn_at: [50, 80]
        escalate_at: [200]
        on_warning:
          - notify: {channel: dingtalk_sales, to: [owner], template: warn}
        on_breach:
          - notify: {channel: dingtalk_sales, to: [owner], template: breach}
          - add_tags: [sla_breached]
        on_escalation:
          - notify: {channel: dingtalk_sales, to: [owner], template: late}
    """,
}


@pytest.fixture
def crm(make_engine: Any) -> Engine:
    runtime = make_engine(BLUEPRINT)
    runtime.users.add(NewUser("wang", "Wang Wei", "admin", phone="13900000001"))
    return runtime


def _owner(runtime: Engine) -> int:
    users = runtime.schema.users
    with runtime.db.read() as connection:
        return int(connection.execute(sa.select(users.c.id).where(users.c.username == "wang")).scalar_one())


def _pending(runtime: Engine) -> list[str]:
    timers = runtime.schema.timers
    with runtime.db.read() as connection:
        keys = connection.execute(sa.select(timers.c.key).where(timers.c.status == "pending")).scalars()
        return sorted(key.rsplit(":", 1)[1] for key in keys)


def _sla_events(runtime: Engine, lead_id: int) -> list[str]:
    events = runtime.schema.events
    with runtime.db.read() as connection:
        rows = connection.execute(sa.select(events.c.kind, events.c.data).where(
            events.c.record_id == lead_id, events.c.kind.in_(["sla_warning", "sla_breached", "sla_escalated"]))
            .order_by(events.c.id)).all()
    return [f"{row.kind}:{row.data['checkpoint']}" for row in rows]


def _lead(runtime: Engine, clock: Any) -> dict[str, Any]:
    clock.set(dt.datetime(2026, 11, 23, 10, 0, tzinfo=CST))
    return runtime.records.create("lead", {"name": "Alpha", "grade": "A", "owner": _owner(runtime)},
                                  actor=SYSTEM).record


def test_a_new_clock_stores_only_its_first_checkpoint(crm: Engine, clock: Any) -> None:
    _lead(crm, clock)
    assert _pending(crm) == ["warning-50"]


def test_checkpoints_that_came_due_while_the_worker_was_down_all_fire_in_order_in_one_tick(
        crm: Engine, clock: Any) -> None:
    lead = _lead(crm, clock)
    clock.advance(minutes=150)  # past 50 %, 80 % and the breach, before the 200 % escalation
    crm.worker(environ={}).tick()
    assert _sla_events(crm, lead["id"]) == ["sla_warning:warning-50", "sla_warning:warning-80",
                                            "sla_breached:breach-100"]
    assert crm.records.get("lead", lead["id"], actor=SYSTEM)["tags"] == ["sla_breached"]
    assert _pending(crm) == ["escalation-200"]
    clock.advance(minutes=60)
    crm.worker(environ={}).tick()
    assert _sla_events(crm, lead["id"])[-1] == "sla_escalated:escalation-200"
    assert _pending(crm) == []
    clock.advance(days=2)
    assert crm.worker(environ={}).tick().fired == 0  # nothing fires twice


def test_each_checkpoint_fires_at_its_own_time_with_the_worker_running(crm: Engine, clock: Any) -> None:
    lead = _lead(crm, clock)
    seen = []
    for minutes in (49, 2, 30, 20, 100):  # 49 → 51 (50 %) → 81 (80 %) → 101 (breach) → 201 (escalation)
        clock.advance(minutes=minutes)
        crm.worker(environ={}).tick()
        seen.append(len(_sla_events(crm, lead["id"])))
    assert seen == [0, 1, 2, 3, 4]


def test_pause_and_resume_neither_repeats_a_sent_warning_nor_loses_the_next(crm: Engine, clock: Any) -> None:
    lead = _lead(crm, clock)
    clock.advance(minutes=55)
    crm.worker(environ={}).tick()
    assert _sla_events(crm, lead["id"]) == ["sla_warning:warning-50"]
    crm.records.update("lead", lead["id"], {"status": "paused"}, actor=SYSTEM)
    assert _pending(crm) == []
    clock.advance(hours=5)  # paused time does not count
    crm.worker(environ={}).tick()
    crm.records.update("lead", lead["id"], {"status": "new"}, actor=SYSTEM)
    assert _pending(crm) == ["warning-80"]
    clock.advance(minutes=30)  # 55 + 30 = 85 % counted
    crm.worker(environ={}).tick()
    assert _sla_events(crm, lead["id"]) == ["sla_warning:warning-50", "sla_warning:warning-80"]
    assert _pending(crm) == ["breach-100"]


def test_stopping_the_clock_cancels_its_pending_checkpoint(crm: Engine, clock: Any) -> None:
    lead = _lead(crm, clock)
    clock.advance(minutes=55)
    crm.worker(environ={}).tick()
    crm.records.update("lead", lead["id"], {"status": "contacted"}, actor=SYSTEM)
    assert _pending(crm) == []
    clock.advance(days=1)
    assert crm.worker(environ={}).tick().fired == 0
    assert _sla_events(crm, lead["id"]) == ["sla_warning:warning-50"]
