"""What the windowed quality alert costs: a ticket create with the `regional_fault` alert vs the
same create without it, over a table already holding many tickets (issue 20).

    .venv/bin/python bench/bench_alerts.py [--db sqlite|postgresql://…] [--tickets 1000000] [--creates 300] [--rounds 5]

On the SHIPPED service blueprint (blueprints/service: tickets with their two SLA clocks), in
process through RecordService. The table is filled with `--tickets` rows by executemany
(created over the past year, 2,000 fault codes × 9 regions, so a group has ~0.8 tickets in any
3 days: the alert's count runs on every create and rarely raises), then ANALYZE. Each round
creates `--creates` tickets with the alert observer in the write and as many without it,
alternating one by one, and reports the medians of this thread's CPU time and of wall time;
the verdict is the median over rounds of with / without CPU time (target ≤ 1.3).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from engine.engine import Engine, open_engine  # noqa: E402
from engine.metamodel import load_blueprint  # noqa: E402
from engine.rules import FUNCTION_NAMES  # noqa: E402
from engine.runtime.automation.alerts import AlertWindows  # noqa: E402
from engine.runtime.records.actors import SYSTEM  # noqa: E402

TARGET = 1.3
REGIONS = ["east", "south", "north", "central", "southwest", "northwest", "northeast", "hk_macao_taiwan", "overseas"]
CODES = [f"E-{number}" for number in range(1000, 3000)]


def load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ")[0]
    except OSError:
        return "?"


def fill(engine: Engine, count: int, customer: int) -> None:
    table = engine.schema.table("ticket")
    now = engine.clock.now().replace(tzinfo=None)
    rng = random.Random(20)
    batch: list[dict[str, Any]] = []
    with engine.db.write() as connection:
        for index in range(count):
            at = now - dt.timedelta(seconds=rng.uniform(0, 365 * 86400))
            batch.append({"created_at": at, "updated_at": at, "version": 1, "subject": f"历史工单 {index}",
                          "customer": customer, "category": "fault", "priority": "P3", "status": "closed",
                          "channel": "hotline", "fault_code": rng.choice(CODES), "region": rng.choice(REGIONS),
                          "resolution": "已处理"})
            if len(batch) == 10_000:
                connection.execute(sa.insert(table), batch)
                batch.clear()
        if batch:
            connection.execute(sa.insert(table), batch)
    with engine.db.write() as connection:
        connection.execute(sa.text("ANALYZE"))


def timed(engine: Engine, values: dict[str, Any]) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.thread_time()
    engine.records.create("ticket", values, actor=SYSTEM)
    return (time.perf_counter() - start) * 1000, (time.thread_time() - cpu) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="sqlite", help="sqlite (a temporary file) or a PostgreSQL URL")
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--creates", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-alerts-"))
    url = f"sqlite:///{folder / 'crm.sqlite'}" if args.db == "sqlite" else args.db
    engine = open_engine(load_blueprint(ROOT / "blueprints" / "service", functions=FUNCTION_NAMES), url)
    print(f"bench_alerts: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, db {engine.db.engine.dialect.name}, "
          f"{args.tickets:,} tickets, {args.creates} creates × {args.rounds} rounds, load {load()}")
    customer = engine.records.create("account", {"name": "基准客户"}, actor=SYSTEM).record["id"]
    started = time.perf_counter()
    fill(engine, args.tickets, customer)
    print(f"filled in {time.perf_counter() - started:.1f} s (load {load()})")
    observers = list(engine.records.observers)
    without = [observer for observer in observers if not isinstance(observer, AlertWindows)]
    assert len(without) == len(observers) - 1, "the blueprint's alert observer is not in the write"
    rng = random.Random(7)

    def values() -> dict[str, Any]:
        return {"subject": "基准工单", "customer": customer, "fault_code": rng.choice(CODES),
                "region": rng.choice(REGIONS)}

    for _ in range(20):  # warm up: statements prepared
        timed(engine, values())
    ratios = []
    for turn in range(args.rounds):
        times: dict[str, list[tuple[float, float]]] = {"with": [], "without": []}
        for index in range(args.creates * 2):
            kind = "with" if (index + turn) % 2 == 0 else "without"
            engine.records.observers[:] = observers if kind == "with" else without
            times[kind].append(timed(engine, values()))
        engine.records.observers[:] = observers
        cpu = {name: statistics.median(item[1] for item in items) for name, items in times.items()}
        wall = {name: statistics.median(item[0] for item in items) for name, items in times.items()}
        ratios.append((cpu["with"] / cpu["without"], wall["with"] / wall["without"]))
        print(f"round {turn + 1}: with alert {cpu['with']:.3f} ms CPU ({wall['with']:.3f} wall), without "
              f"{cpu['without']:.3f} ms CPU ({wall['without']:.3f} wall), ratio {ratios[-1][0]:.2f} "
              f"({ratios[-1][1]:.2f} wall), load {load()}")
    with engine.db.read() as connection:
        alerts = connection.execute(sa.text("SELECT count(*) FROM quality_alert")).scalar_one()
    verdict = statistics.median(ratio[0] for ratio in ratios)
    print(f"median with/without: CPU {verdict:.2f}, wall {statistics.median(r[1] for r in ratios):.2f} "
          f"(target ≤ {TARGET}, on CPU time): {'PASS' if verdict <= TARGET else 'FAIL'}; alerts raised: {alerts}")
    engine.close()


if __name__ == "__main__":
    main()
