"""Several workers give the same outcome as one: 5,000 SLA timers (a breach that hands the lead
to the manager and restarts its clock, and the escalation of the old cycle) fired by one and
by three real worker processes on PostgreSQL leave identical events and outbox rows."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.engine import Engine, open_engine
from engine.rules import FakeClock
from engine.runtime.ops.users import NewUser
from engine.runtime.records.actors import SYSTEM
from tests.support.blueprints import load, write_blueprint
from tests.support.services import PG_ADMIN_URL, require_postgres

ROOT = Path(__file__).resolve().parent.parent
START = dt.datetime(2026, 11, 20, 1, 0, tzinfo=dt.timezone.utc)
LEADS = 2500  # a breach and an escalation each: 5,000 timers
REPS = 10

RACE_BLUEPRINT = {
    "app.yaml": "app: race\ninclude: ['*.yaml', 'entities/*.yaml']\n",
    "entities/lead.yaml": """
        entity: lead
        fields:
          name: {type: string}
          status: {type: choice, options: {new: New, contacted: Contacted}, default: new}
          tags: {type: tags, options: {sla_breached: SLA breached}}
    """,
    "channels.yaml": """
        channels:
          chat: {type: dingtalk, url: {env: RACE_CHAT_URL}}
        templates:
          breach: {text: "{{ record.name }} 超时，转给经理"}
          escalated: {text: "{{ record.name }} 超时未处理，升级"}
    """,
    "sla.yaml": """
        sla: first_call
        entity: lead
        applies_when: "status == 'new'"
        default_target: 1h
        business_time: false
        starts: assigned
        stops: [{status_in: [contacted]}]
        warn_at: []
        escalate_at: [150]
        on_breach:
          - notify: {channel: chat, to: [owner, owner.manager], template: breach}
          - add_tags: [sla_breached]
          - reassign: {to: [owner.manager]}
        on_escalation:
          - notify: {channel: chat, to: [owner.manager], template: escalated}
    """,
}


@pytest.fixture
def two_pg_urls() -> Iterator[tuple[str, str]]:
    """Two fresh PostgreSQL schemas: the same scenario runs once in each."""
    require_postgres()
    names = [f"t_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    admin = sa.create_engine(PG_ADMIN_URL)
    with admin.begin() as connection:
        for name in names:
            connection.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    try:
        first, second = (f"{PG_ADMIN_URL}?options=-csearch_path%3D{name}" for name in names)
        yield first, second
    finally:
        with admin.begin() as connection:
            for name in names:
                connection.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


def _prepare(url: str, blueprint: Path) -> Engine:
    runtime = open_engine(load(blueprint), url, clock=FakeClock(START))
    runtime.users.add(NewUser("boss", "Boss", "admin"))
    for index in range(REPS):
        runtime.users.add(NewUser(f"rep{index}", f"Rep {index}", "admin", manager="boss"))
    users = runtime.schema.users
    with runtime.db.read() as connection:
        ids = dict(connection.execute(sa.select(users.c.username, users.c.id)).all())
    for index in range(LEADS):
        runtime.records.create("lead", {"name": f"客户{index:04d}", "owner": ids[f"rep{index % REPS}"]}, actor=SYSTEM)
    return runtime


def _run_workers(url: str, blueprint: Path, count: int, now: dt.datetime) -> None:
    processes = [subprocess.Popen([sys.executable, "-m", "tests.support.sla_worker", url, str(blueprint), f"w{index}",
                                   "100", now.isoformat()], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}) for index in range(count)]
    for process in processes:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    for process in processes:  # all loaded: let them go together
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.close()
    assert [process.wait(timeout=600) for process in processes] == [0] * count


def _outcome(runtime: Engine) -> tuple[list[str], list[str], Counter[str]]:
    """Every event and every outbox row, without ids and worker names, in a stable order."""
    events, outbox = runtime.schema.events, runtime.schema.outbox
    with runtime.db.read() as connection:
        rows = [json.dumps([row.entity, row.record_id, row.kind, row.actor_id, row.at.isoformat(), row.changes,
                            row.data], sort_keys=True, ensure_ascii=False, default=str)
                for row in connection.execute(sa.select(events))]
        messages = [json.dumps([row.channel, row.idempotency_key, row.payload, row.entity, row.record_id],
                               sort_keys=True, ensure_ascii=False, default=str)
                    for row in connection.execute(sa.select(outbox))]
        kinds = Counter(dict(connection.execute(sa.select(events.c.kind, sa.func.count())
                                                .group_by(events.c.kind)).all()))
    return sorted(rows), sorted(messages), kinds


def test_one_worker_and_three_workers_leave_identical_events_and_messages(two_pg_urls: tuple[str, str],
                                                                          tmp_path: Path) -> None:
    blueprint = write_blueprint(tmp_path / "race-bp", RACE_BLUEPRINT)
    due = START + dt.timedelta(hours=2)  # breach (1 h) and escalation (1.5 h) of every lead are due
    outcomes = []
    for url, workers in zip(two_pg_urls, (1, 3)):
        runtime = _prepare(url, blueprint)
        try:
            _run_workers(url, blueprint, workers, due)
            outcomes.append(_outcome(runtime))
            timers = runtime.schema.timers
            with runtime.db.read() as connection:
                assert connection.execute(sa.select(sa.func.count()).select_from(timers).where(
                    timers.c.status == "pending", timers.c.due_at <= due.replace(tzinfo=None))).scalar_one() == 0
        finally:
            runtime.close()
    (events_one, outbox_one, kinds_one), (events_three, outbox_three, kinds_three) = outcomes
    # the breach hands every lead to the manager and restarts its clock: the old cycle's escalation never fires
    assert kinds_one["sla_breached"] == LEADS and kinds_one["sla_escalated"] == 0
    assert kinds_one["sla_restart"] == LEADS and len(outbox_one) == LEADS
    assert kinds_three == kinds_one
    assert events_three == events_one
    assert outbox_three == outbox_one
