"""A real worker process for the crash and concurrency tests.

usage: python -m tests.support.timer_worker DB_URL BLUEPRINT NAME SLEEP_MS BATCH [--wait]
Fires every due `mark` timer by appending an event (in the timer's own transaction), sleeping
SLEEP_MS per timer so a test can kill it mid-batch, and exits when nothing is due. With
--wait it prints "ready" and starts only when it reads a line on stdin, so several workers
can be let go at once.
"""

from __future__ import annotations

import sys
import time

from engine.engine import open_engine
from engine.metamodel import load_blueprint
from engine.rules import FUNCTION_NAMES
from engine.runtime.background.worker import Worker
from engine.runtime.records.events import append_event


def main() -> None:
    db_url, blueprint, name, sleep_ms, batch = sys.argv[1:6]
    runtime = open_engine(load_blueprint(blueprint, functions=FUNCTION_NAMES), db_url, migrate=False)

    def mark(connection, timer, now):  # type: ignore[no-untyped-def]
        time.sleep(int(sleep_ms) / 1000)
        append_event(connection, runtime.schema, entity=timer.entity or "lead", record_id=timer.record_id or 0,
                     kind="timer_fired", actor_id=None, at=now, data={"key": timer.key, "worker": name})

    worker = Worker(runtime.db, runtime.schema, runtime.clock, handlers={"mark": mark}, name=name, batch=int(batch))
    print("ready", flush=True)
    if "--wait" in sys.argv[6:]:
        sys.stdin.readline()
    while worker.tick().fired:
        pass
    print("done", flush=True)


if __name__ == "__main__":
    main()
