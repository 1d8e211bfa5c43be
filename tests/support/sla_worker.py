"""A real worker process firing the blueprint's own timers (SLA, cadences) at a fixed moment.

usage: python -m tests.support.sla_worker DB_URL BLUEPRINT NAME BATCH NOW_ISO
Prints "ready", waits for a line on stdin (so several workers start together), then ticks
until no timer is due any more (a tick that fires nothing while timers are still due — held
or deferred by another worker — waits a moment and looks again), prints "done" and exits.
"""

from __future__ import annotations

import datetime as dt
import sys
import time

import sqlalchemy as sa

from engine.engine import open_engine
from engine.metamodel import load_blueprint
from engine.rules import FUNCTION_NAMES, FakeClock
from engine.runtime.storage.times import naive_utc


def main() -> None:
    db_url, blueprint, name, batch, now = sys.argv[1:6]
    clock = FakeClock(dt.datetime.fromisoformat(now))
    runtime = open_engine(load_blueprint(blueprint, functions=FUNCTION_NAMES), db_url, clock=clock, migrate=False)
    worker = runtime.worker(role="timers", name=name, batch=int(batch))
    timers = runtime.schema.timers
    print("ready", flush=True)
    sys.stdin.readline()
    while True:
        if worker.tick().fired:
            continue
        with runtime.db.read() as connection:
            due = connection.execute(sa.select(sa.func.count()).select_from(timers).where(
                timers.c.status == "pending", timers.c.due_at <= naive_utc(clock.now()))).scalar_one()
        if not due:
            break
        time.sleep(0.05)
    runtime.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
