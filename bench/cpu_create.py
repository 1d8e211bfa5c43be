"""CPU time and SQL statements per create, in-process, on the shipped blueprint: this checkout vs another.

    .venv/bin/python bench/cpu_create.py [--tree /path/to/other/checkout] [--rounds 3] [--creates 1000]

A sales rep creates leads through RecordService.create (what POST /api/lead runs, without
HTTP) on a fresh SQLite file: every rule, SLA clock, event, index and trace of the shipped
blueprint. Each measurement runs in its own process; with --tree, rounds alternate between
the two checkouts (this one first), so a busy minute of the machine falls on both. Reported per
create: CPU µs (time.process_time), statements sent to SQLite (its trace callback, a second
pass), and rows written per table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure(tree: Path, creates: int) -> dict[str, object]:
    """The measured program, run in a subprocess with `tree` first on sys.path."""
    sys.path.insert(0, str(tree))
    import collections
    import random

    from sqlalchemy import event

    from engine.engine import open_engine
    from engine.io.demo import USERS
    from engine.metamodel import load_blueprint
    from engine.rules import FUNCTION_NAMES
    assert Path(sys.modules["engine"].__file__ or "").resolve().is_relative_to(tree.resolve())
    folder = tempfile.mkdtemp(prefix="crm-cpu-create-")
    runtime = open_engine(load_blueprint(tree / "blueprints" / "crm", functions=FUNCTION_NAMES),
                          f"sqlite:///{folder}/crm.sqlite")
    rep = next(actor for actor in (runtime.users.add(user) for user in USERS) if actor.role == "sales_rep")
    rng = random.Random(7)

    def payload(index: int) -> dict[str, object]:
        return {"name": f"客户{index}", "phone": f"+86137{index:08d}", "email": f"c{index}@example.cn",
                "company": f"苏州恒锐{index}精密机械有限公司", "city": "苏州",
                "source": rng.choice(["website", "baidu", "expo", "referral"]),
                "region": rng.choice(["east", "south", "north"]), "industry": "manufacturing"}

    for index in range(200):  # warm-up
        runtime.records.create("lead", payload(index), actor=rep)
    started = time.process_time()
    for index in range(200, 200 + creates):
        runtime.records.to_json("lead", runtime.records.create("lead", payload(index), actor=rep).record)
    cpu = (time.process_time() - started) / creates
    statements: collections.Counter[str] = collections.Counter()
    inserts: collections.Counter[str] = collections.Counter()

    def trace(sql: str) -> None:
        words = sql.split()
        statements[words[0].upper()] += 1
        if words[0].upper() == "INSERT":
            inserts[words[2]] += 1

    @event.listens_for(runtime.db.engine, "connect")
    def _trace(dbapi_connection: object, _record: object) -> None:
        dbapi_connection.set_trace_callback(trace)  # type: ignore[attr-defined]

    runtime.db.engine.dispose()
    runtime.db._write_connection = None  # (the kept write connection reconnects, traced)
    traced = 200
    for index in range(10_000_000, 10_000_000 + traced):
        runtime.records.create("lead", payload(index), actor=rep)
    runtime.close()
    return {"cpu_us": cpu * 1e6, "statements": sum(statements.values()) / traced,
            "inserts": {table: count / traced for table, count in sorted(inserts.items())}}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "measure":
        print(json.dumps(measure(Path(sys.argv[2]), int(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", help="another checkout to compare with (e.g. a git worktree of main)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--creates", type=int, default=1000)
    args = parser.parse_args()
    trees = {"this": HERE.parent} | ({"other": Path(args.tree)} if args.tree else {})
    results: dict[str, list[dict[str, object]]] = {name: [] for name in trees}
    for index in range(args.rounds):
        for name, tree in (trees.items() if index % 2 == 0 else reversed(trees.items())):
            out = subprocess.run([sys.executable, __file__, "measure", str(tree), str(args.creates)],
                                 capture_output=True, text=True, check=True, cwd=tree).stdout
            results[name].append(json.loads(out.strip().splitlines()[-1]))
            load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            print(f"round {index + 1} {name:<5} {results[name][-1]['cpu_us']:8,.0f} µs CPU per create  "
                  f"load {load}", flush=True)
    for name, runs in results.items():
        cpu = statistics.median(float(run["cpu_us"]) for run in runs)  # type: ignore[arg-type]
        print(f"{name} ({trees[name]}): median {cpu:,.0f} µs CPU per create; {runs[-1]['statements']} statements "
              f"per create; rows inserted per create {runs[-1]['inserts']}")
    if args.tree:
        ratios = [float(new["cpu_us"]) / float(old["cpu_us"])  # type: ignore[arg-type]
                  for new, old in zip(results["this"], results["other"])]
        print("this/other CPU per round: " + ", ".join(f"{ratio:.2f}" for ratio in ratios))


if __name__ == "__main__":
    main()
