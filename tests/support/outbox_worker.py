"""A real worker process that only delivers the outbox, on the real clock shifted by OFFSET seconds.

usage: python -m tests.support.outbox_worker DB_URL BLUEPRINT NAME OFFSET_SECONDS
Prints "ready", then ticks until no message is pending or being sent, prints "done" and exits.
(A test kills it mid-batch; a second one, shifted past the lease, finishes the work.)
"""

from __future__ import annotations

import datetime as dt
import sys
import time

import sqlalchemy as sa

from engine.engine import open_engine
from engine.metamodel import load_blueprint
from engine.rules import FUNCTION_NAMES


class ShiftedClock:
    def __init__(self, offset: float) -> None:
        self.offset = dt.timedelta(seconds=offset)

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc) + self.offset


def main() -> None:
    db_url, blueprint, name, offset = sys.argv[1:5]
    runtime = open_engine(load_blueprint(blueprint, functions=FUNCTION_NAMES), db_url, clock=ShiftedClock(float(offset)),
                          migrate=False)
    worker = runtime.worker(role="outbox", name=name)
    outbox = runtime.schema.outbox
    print("ready", flush=True)
    while True:
        worker.tick()
        with runtime.db.read() as connection:
            left = connection.execute(sa.select(sa.func.count()).select_from(outbox).where(
                outbox.c.status.in_(["pending", "sending"]))).scalar_one()
        if not left:
            break
        time.sleep(0.05)
    runtime.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
