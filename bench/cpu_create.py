"""CPU time and SQL statements per create, in-process, on the shipped blueprint: this checkout vs another.

    .venv/bin/python bench/cpu_create.py [--tree /path/to/other/checkout] [--rounds 3] [--creates 1000]
        [--instructions]

A sales rep creates leads through RecordService.create (what POST /api/lead runs, without
HTTP) on a fresh SQLite file: every rule, SLA clock, event, index and trace of the shipped
blueprint. Each measurement runs in its own process; with --tree, rounds alternate between
the two checkouts (this one first), so a busy minute of the machine falls on both. Reported per
create: CPU µs (time.process_time), statements sent to SQLite (its trace callback, a second
pass), and rows written per table. `--instructions` counts instructions per create under valgrind's
callgrind instead of CPU time (a run with no measured creates subtracted): the same code and
inputs give the same count within ~1 %, whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure(tree: Path, creates: int, traced: int = 200, blueprint: Path | None = None) -> dict[str, object]:
    """The measured program, run in a subprocess with `tree` first on sys.path."""
    sys.path[:] = [str(tree)] + [p for p in sys.path if p not in (str(HERE.parent), str(tree))]
    import collections
    import random
    from typing import Any

    from sqlalchemy import event

    from engine.io.demo import USERS
    from engine.metamodel import load_blueprint
    from engine.rules import FUNCTION_NAMES
    assert Path(sys.modules["engine"].__file__ or "").resolve().is_relative_to(tree.resolve())
    folder = tempfile.mkdtemp(prefix="crm-cpu-create-")
    model = load_blueprint(blueprint or tree / "blueprints" / "crm", functions=FUNCTION_NAMES)
    runtime: Any
    try:
        from engine.engine import open_engine
        runtime = open_engine(model, f"sqlite:///{folder}/crm.sqlite")
        add_user = runtime.users.add
    except ImportError:  # a checkout from before the composition root (engine/engine.py)
        from engine.runtime.runtime import open_runtime  # type: ignore[import-not-found]
        from engine.runtime.users import add_user as add_old  # type: ignore[import-not-found]
        runtime = open_runtime(model, f"sqlite:///{folder}/crm.sqlite")
        def add_user(user: Any) -> Any:
            return add_old(runtime, user)
    rep = next(actor for actor in (add_user(user) for user in USERS) if actor.role == "sales_rep")
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
    cpu = (time.process_time() - started) / max(creates, 1)
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

    if not traced:
        runtime.close()
        return {"cpu_us": cpu * 1e6}
    runtime.db.engine.dispose()
    runtime.db._write_connection = None  # (the kept write connection reconnects, traced)
    for index in range(10_000_000, 10_000_000 + traced):
        runtime.records.create("lead", payload(index), actor=rep)
    runtime.close()
    return {"cpu_us": cpu * 1e6, "statements": sum(statements.values()) / traced,
            "inserts": {table: count / traced for table, count in sorted(inserts.items())}}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "measure":
        print(json.dumps(measure(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                                 Path(sys.argv[5]) if len(sys.argv) > 5 else None)))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", help="another checkout to compare with (e.g. a git worktree of main)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--creates", type=int, default=1000)
    parser.add_argument("--instructions", action="store_true", help="count instructions (valgrind) instead of CPU time")
    parser.add_argument("--blueprint", help="the blueprint this checkout runs (default: its blueprints/crm; e.g. an "
                                            "older commit's, to measure today's engine doing yesterday's work)")
    args = parser.parse_args()
    trees = {"this": HERE.parent} | ({"other": Path(args.tree)} if args.tree else {})
    blueprints = {"this": args.blueprint} if args.blueprint else {}
    if args.instructions:
        count_instructions(trees, args.rounds, args.creates, blueprints)
        return
    results: dict[str, list[dict[str, object]]] = {name: [] for name in trees}
    for index in range(args.rounds):
        for name, tree in (trees.items() if index % 2 == 0 else reversed(trees.items())):
            out = subprocess.run([sys.executable, __file__, "measure", str(tree), str(args.creates), "200",
                                  *([blueprints[name]] if name in blueprints else [])],
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


def count_instructions(trees: dict[str, Path], rounds: int, creates: int, blueprints: dict[str, str]) -> None:
    """Instructions per create: each tree's run with `creates` creates minus its run with none
    (both side by side under callgrind), rounds alternating between the trees."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    counts: dict[str, list[float]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory(prefix="crm-icount-create-") as folder:
        for index in range(rounds):
            for name, tree in (trees.items() if index % 2 == 0 else reversed(trees.items())):
                runs = [subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/cg.{n}",
                                          sys.executable, __file__, "measure", str(tree), str(n), "0",
                                          *([blueprints[name]] if name in blueprints else [])],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                                         cwd=tree) for n in (0, creates)]
                totals = []
                for run in runs:
                    _, err = run.communicate()
                    found = re.search(r"Collected : (\d+)", err)
                    if run.returncode != 0 or found is None:
                        raise SystemExit(err[-3000:])
                    totals.append(int(found.group(1)))
                counts[name].append((totals[1] - totals[0]) / creates)
                print(f"round {index + 1} {name:<5} {counts[name][-1] / 1e6:.3f} M instructions per create", flush=True)
    for name, runs in counts.items():
        print(f"{name} ({trees[name]}): median {statistics.median(runs) / 1e6:.3f} M instructions per create")
    if len(trees) > 1:
        print("this/other per round: " + ", ".join(f"{new / old:.3f}" for new, old in zip(counts["this"], counts["other"])))


if __name__ == "__main__":
    main()
