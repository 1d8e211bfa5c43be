"""The nightly score pass: a health score whose components read the clock ("orders in 180 days")
moves although nothing is written, once a night across all workers (recompute: nightly).

Shipped CRM blueprint, real databases (SQLite file and PostgreSQL), two workers ticking at once.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.engine import Engine, open_engine
from engine.metamodel.errors import BlueprintInvalid
from engine.rules import FakeClock
from engine.runtime.ops.users import NewUser
from engine.runtime.records.actors import SYSTEM
from tests.support.blueprints import SHIPPED_CRM, load, write_blueprint
from tests.support.passwords import CHEAP_HASHER

SHANGHAI = dt.timezone(dt.timedelta(hours=8))


@pytest.fixture
def two_engines(db_url: str, clock: FakeClock) -> Iterator[tuple[Engine, Engine]]:
    """Two engines on one database, as a web process and a second worker process would have."""
    model = load(SHIPPED_CRM)
    first = open_engine(model, db_url, clock=clock, password_hasher=CHEAP_HASHER)
    second = open_engine(model, db_url, clock=clock, password_hasher=CHEAP_HASHER, migrate=False)
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def _tick_together(engines: tuple[Engine, Engine]) -> list[list[str]]:
    """Both workers tick at the same moment (timers and jobs only, no delivery); the jobs each ran."""
    workers = [engine.worker(role="timers", name=f"worker-{index}") for index, engine in enumerate(engines)]
    barrier = threading.Barrier(len(workers))
    ran: list[list[str]] = [[] for _ in workers]
    failures: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            ran[index] = workers[index].tick().jobs
        except BaseException as exc:  # noqa: BLE001 — re-raised in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    return ran


def _renewal_warnings(engine: Engine) -> list[str]:
    with engine.db.read() as connection:
        rows = connection.execute(sa.text("SELECT payload FROM crm_outbox WHERE channel = 'wecom_sales_managers' "
                                          "ORDER BY id")).all()
    return [(row.payload if isinstance(row.payload, dict) else json.loads(row.payload))["text"] for row in rows]


def _score_runs(engine: Engine) -> list[Any]:
    runs = engine.schema.job_runs
    with engine.db.read() as connection:
        return list(connection.execute(sa.select(runs.c.scheduled_for, runs.c.status, runs.c.output)
                                  .where(runs.c.job == "score:account_health").order_by(runs.c.scheduled_for)).all())


def _advance_to(clock: FakeClock, local: dt.datetime) -> None:
    clock.advance(seconds=(local - clock.now()).total_seconds())


def test_a_customer_who_stops_ordering_turns_red_at_night_and_is_warned_once(
        two_engines: tuple[Engine, Engine], clock: FakeClock) -> None:
    web, _ = two_engines
    web.users.add(NewUser("li", "李雷", "sales_rep", "east", phone="13900000001"))
    owner = web.users.find("li")
    assert owner is not None
    account = web.records.create("account", {"name": "宁波精密", "owner": owner.id}, actor=SYSTEM).record["id"]
    product = web.records.create("product", {"name": "激光切割机", "model_code": "LC-3015", "category": "equipment"},
                                 actor=SYSTEM).record["id"]
    for number in (1, 2):  # two orders today (20 of 30), two open quality complaints (0 of 20)
        web.records.create("order", {"order_no": f"SO-{number}", "account": account, "product": product,
                                     "quantity": 1, "amount": 100000}, actor=SYSTEM)
        web.records.create("ticket", {"subject": f"切割精度不达标 {number}", "customer": account,
                                      "category": "quality"}, actor=SYSTEM)
    start = web.records.get("account", account, actor=SYSTEM)
    assert (start["health_score"], start["health_level"]) == (50, "yellow")

    # the night the orders are 180 days old (still in the window): the pass runs (once for both workers), nothing moves
    ordered = clock.now().astimezone(SHANGHAI).date()
    night = dt.datetime.combine(ordered + dt.timedelta(days=181), dt.time(2, 30), SHANGHAI)
    _advance_to(clock, night - dt.timedelta(days=1))
    ran = _tick_together(two_engines)
    assert sorted(job for jobs in ran for job in jobs).count("score:account_health") == 1
    still = web.records.get("account", account, actor=SYSTEM)
    assert (still["health_score"], still["health_level"]) == (50, "yellow")
    assert _renewal_warnings(web) == []

    # 181 days after the orders, with nothing written since, yet the 02:00 pass finds no order in the window
    _advance_to(clock, night)
    ran = _tick_together(two_engines)
    assert sorted(job for jobs in ran for job in jobs).count("score:account_health") == 1
    red = web.records.get("account", account, actor=SYSTEM)
    assert (red["health_score"], red["health_level"]) == (30, "red")
    assert "订单频次 0/30 — 近 180 天订单 0 笔" in red["health_reasons"]
    assert "renewal_risk" in red["tags"]
    [warning] = _renewal_warnings(web)
    assert "宁波精密" in warning and "续约风险" in warning

    # the next night: still red, no second warning; each night's pass ran once and says what it did
    _advance_to(clock, night + dt.timedelta(days=1))
    _tick_together(two_engines)
    assert web.records.get("account", account, actor=SYSTEM)["health_level"] == "red"
    assert len(_renewal_warnings(web)) == 1
    runs = _score_runs(web)
    nights = [run.scheduled_for.replace(tzinfo=dt.timezone.utc).astimezone(SHANGHAI).date() for run in runs]
    assert nights[-3:] == [night.date() - dt.timedelta(days=1), night.date(), night.date() + dt.timedelta(days=1)]
    assert len(set(nights)) == len(nights)  # never two runs of one night
    assert all(run.status == "succeeded" for run in runs), runs
    assert "1 account records rescored, 1 changed" in runs[-2].output


def test_nightly_options_are_checked_at_their_line(tmp_path: Path) -> None:
    folder = write_blueprint(tmp_path / "bp", {
        "app.yaml": "app: t\ninclude: ['*.yaml']\n",
        "entities.yaml": """
            entity: account
            fields:
              name: {type: string}
              health_score: {type: integer}
        """,
        "scores.yaml": """
            scores:
              health:
                entity: account
                field: health_score
                levels: {good: 50, bad: 0}
                nightly_at: "2:30"
                components:
                  - {name: named, weight: 100, value: "1"}
              other:
                entity: account
                field: health_score
                levels: {good: 50, bad: 0}
                recompute: [on_change, nightly]
                nightly_at: "25:00"
                components:
                  - {name: named, weight: 100, value: "1"}
        """,
    })
    with pytest.raises(BlueprintInvalid) as raised:
        load(folder)
    text = str(raised.value)
    assert "scores.yaml:6" in text and "nightly_at applies to the nightly pass" in text
    assert "scores.yaml:14" in text and "nightly_at '25:00' is not a time of day" in text
