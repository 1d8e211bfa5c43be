"""What a stage gate costs: a gated transition vs an ungated update of the same record (issue 17).

    .venv/bin/python bench/bench_funnels.py [--db sqlite|postgresql://…] [--records 200] [--rounds 5]

On the SHIPPED blueprint (blueprints/crm), in-process through RecordService (no HTTP: the gate's
cost is in-process work, and leaving out the HTTP stack makes the ratio stricter, not kinder).
Each record is an opportunity in 方案报价 (quote) holding everything 合同签署 (contract) demands:
the signed contract (a PDF, whose content type is read: the attachment), the contract checklist,
a decision-maker contact on its account (a related list: contacts via account) and a granted
contract review (a related list: the record's approval requests). For every record, in turn:

  update   — an ungated update of the same record (its notes change; the stage does not)
  gated    — transition quote → contract, every requirement checked, stage_changed written
  ungated  — the same transition with the funnel's gate switched off (its observer still runs)

then the record goes back to quote (a return, not timed). The three are alternated in rotating
order within each record, so a slow stretch of this shared machine hits all three alike; each
round reports medians of this thread's CPU time (the steadier cost on a shared machine; the
work is single-threaded, SQLite in-process) and of wall time, and the verdict is the median
over rounds of gated / update CPU time (target ≤ 1.5). The machine's load (/proc/loadavg) is
printed with each round.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from engine.engine import Engine, open_engine  # noqa: E402
from engine.metamodel import load_blueprint  # noqa: E402
from engine.rules import FUNCTION_NAMES  # noqa: E402
from engine.runtime.ops.users import NewUser  # noqa: E402
from engine.runtime.records.actors import SYSTEM, Actor  # noqa: E402

TARGET = 1.5


def load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ")[0]
    except OSError:
        return "?"


def prepare(engine: Engine, count: int) -> tuple[Actor, list[int]]:
    """`count` opportunities in quote with everything the contract stage demands."""
    users = {user.username: engine.users.add(user) for user in (
        NewUser("manager", "Manager", "sales_manager", "east"), NewUser("wang", "Wang", "sales_rep", "east", "manager"),
        NewUser("sun", "Sun", "legal", "legal"), NewUser("qian", "Qian", "finance", "finance"))}
    rep = users["wang"]
    ids = []
    for index in range(count):
        account = engine.records.create("account", {"name": f"基准客户{index}", "owner": rep.id}, actor=SYSTEM).record
        engine.records.create("contact", {"name": f"刘总{index}", "account": account["id"], "role": "decision_maker",
                                          "owner": rep.id}, actor=SYSTEM)
        files = [engine.records.store_file(name, kind, b"%PDF-1.4 bench", actor=rep)["id"]
                 for name, kind in (("deck.pdf", "application/pdf"), ("quote.pdf", "application/pdf"),
                                    ("contract.pdf", "application/pdf"))]
        deal = engine.records.create("opportunity", {
            "name": f"基准商机{index}", "account": account["id"], "owner": rep.id, "amount": 150000,
            "demo_deck": files[0], "customer_questions": "交期？", "decision_influencer": None,
            "signed_quote": files[1]}, actor=SYSTEM, history=True).record
        contact_id = engine.records.list("contact", _query("account", account["id"]), actor=SYSTEM).items[0]["id"]
        engine.records.update("opportunity", deal["id"], {"decision_influencer": contact_id, "stage": "quote"},
                              actor=SYSTEM, history=True)
        engine.records.update("opportunity", deal["id"], {
            "contract_file": files[2], "contract_checklist": ["payment_terms", "delivery_date", "acceptance"]},
            actor=rep)
        assert engine.approvals is not None  # the shipped rule asked for the contract review on the upload
        for task_id, owner in _pending(engine, deal["id"]):
            engine.approvals.decide(task_id, "approve", "ok", actor=dataclasses.replace(
                Actor(owner, "approver"), is_system=True))
        ids.append(deal["id"])
    return rep, ids


def _query(field: str, value: Any) -> Any:
    from engine.runtime.records.queries import Filter, ListQuery
    return ListQuery(filters=(Filter(field, "eq", str(value)),), per_page=1)


def _pending(engine: Engine, record_id: int) -> list[tuple[int, int]]:
    import sqlalchemy as sa
    tasks = engine.schema.table("approval_task")
    with engine.db.read() as connection:
        return [(row.id, row.owner) for row in connection.execute(sa.select(tasks.c.id, tasks.c.owner).where(
            tasks.c.subject_id == record_id, tasks.c.status == "pending"))]


def timed(function: Callable[[], Any]) -> tuple[float, float]:
    """(wall ms, this thread's CPU ms): on a shared machine the CPU time is the steadier cost."""
    start, cpu = time.perf_counter(), time.thread_time()
    function()
    return (time.perf_counter() - start) * 1000, (time.thread_time() - cpu) * 1000


def one_round(engine: Engine, rep: Actor, ids: list[int], turn: int) -> dict[str, list[tuple[float, float]]]:
    records = engine.records
    gates = list(records.gates)
    others = [gate for gate in gates if gate is not engine.funnels]
    times: dict[str, list[tuple[float, float]]] = {"update": [], "gated": [], "ungated": []}

    def update(record_id: int) -> tuple[float, float]:
        return timed(lambda: records.update("opportunity", record_id, {"notes": f"跟进 {time.perf_counter_ns()}"},
                                            actor=rep))

    def move(record_id: int, *, gated: bool) -> tuple[float, float]:
        records.gates[:] = gates if gated else others
        try:
            elapsed = timed(lambda: records.transition("opportunity", record_id, "contract", actor=rep))
        finally:
            records.gates[:] = gates
        records.transition("opportunity", record_id, "quote", actor=rep)  # the return, untimed
        return elapsed

    steps: list[tuple[str, Callable[[int], tuple[float, float]]]] = [
        ("update", update), ("gated", lambda record_id: move(record_id, gated=True)),
        ("ungated", lambda record_id: move(record_id, gated=False))]
    for position, record_id in enumerate(ids):
        shift = (position + turn) % 3
        for name, step in steps[shift:] + steps[:shift]:
            times[name].append(step(record_id))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="sqlite", help="sqlite (a temporary file) or a PostgreSQL URL")
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-funnels-"))
    url = f"sqlite:///{folder / 'crm.sqlite'}" if args.db == "sqlite" else args.db
    engine = open_engine(load_blueprint(ROOT / "blueprints" / "crm", functions=FUNCTION_NAMES), url)
    print(f"bench_funnels: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, db {engine.db.engine.dialect.name}, "
          f"{args.records} records × {args.rounds} rounds, load {load()}")
    started = time.perf_counter()
    rep, ids = prepare(engine, args.records)
    print(f"prepared in {time.perf_counter() - started:.1f} s (load {load()})")
    one_round(engine, rep, ids[: min(20, len(ids))], 0)  # warm up: statements prepared, caches filled
    rows = []
    print(f"{'round':>5} {'update':>16} {'gated':>16} {'ungated':>16}   {'gated/update':>13} {'gated/ungated':>14}"
          f" {'load':>5}")
    print(f"{'':>5} {'cpu ms (wall)':>16} {'cpu ms (wall)':>16} {'cpu ms (wall)':>16}   {'cpu (wall)':>13}"
          f" {'cpu (wall)':>14}")
    for turn in range(args.rounds):
        times = one_round(engine, rep, ids, turn)
        cpu = {name: statistics.median(value[1] for value in values) for name, values in times.items()}
        wall = {name: statistics.median(value[0] for value in values) for name, values in times.items()}
        row = (cpu["gated"] / cpu["update"], wall["gated"] / wall["update"], cpu["gated"] / cpu["ungated"],
               wall["gated"] / wall["ungated"])
        rows.append(row)
        cells = " ".join(f"{cpu[name]:>7.3f} ({wall[name]:>6.3f})" for name in ("update", "gated", "ungated"))
        print(f"{turn + 1:>5} {cells}   {row[0]:>5.2f} ({row[1]:>5.2f}) {row[2]:>6.2f} ({row[3]:>5.2f}) {load():>5}")
    verdict = statistics.median(row[0] for row in rows)
    print(f"median gated/update: CPU {verdict:.2f}, wall {statistics.median(row[1] for row in rows):.2f} "
          f"(target ≤ {TARGET}, on CPU time): {'PASS' if verdict <= TARGET else 'FAIL'}; the gate's own share "
          f"(gated/ungated transition): CPU {statistics.median(row[2] for row in rows):.2f}, "
          f"wall {statistics.median(row[3] for row in rows):.2f}")
    engine.close()


if __name__ == "__main__":
    main()
