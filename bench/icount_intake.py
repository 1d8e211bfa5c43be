"""Instructions per intake delivery, counted by valgrind: a figure that does not move with the machine.

    /work/main/.venv/bin/python bench/icount_intake.py [--deliveries 200] [--existing 20000] [--tree DIR]
        [--blueprint DIR]

This machine's speed swings by ±15 % within minutes (bench/RESULTS.md), too much to see a 3 %
change in leads/s. valgrind's callgrind counts the instructions a run executes instead: the
same code and inputs give the same count within ~1.5 %. The script runs the webhook path
in-process — log_delivery + process_delivery through Database.run(write=True), four
deliveries per group commit, as the web route does — once with no deliveries and once with
`--deliveries`, each under callgrind, and prints the difference per delivery. The clock is a
fake that ticks 2 ms per reading, so business-hours arithmetic takes the same paths each run.
`--tree DIR` measures another checkout (e.g. a git worktree of an older commit) with the same
database and inputs, with that checkout's shipped blueprint unless `--blueprint DIR` names one
(e.g. an older commit's blueprints/crm, to measure today's engine doing yesterday's work).
Needs valgrind (Debian's package).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def run_deliveries(tree: Path, template: Path, count: int, blueprint: Path | None = None, group: int = 4) -> None:
    """The measured program (run under valgrind): `count` deliveries after 40 unmeasured ones."""
    sys.path.insert(0, str(HERE))
    from bench_intake import TOKEN, form_payload  # (puts this checkout first on sys.path)
    sys.path[:] = [str(tree)] + [p for p in sys.path if p not in (str(HERE.parent), str(tree))]
    os.environ["CRM_WEBSITE_FORM_TOKEN"] = TOKEN
    import engine
    assert Path(engine.__file__).resolve().is_relative_to(tree.resolve()), engine.__file__
    from engine.metamodel import load_blueprint
    from engine.rules import FUNCTION_NAMES
    blueprint = blueprint or tree / "blueprints" / "crm"  # by default each checkout with its own shipped blueprint
    try:
        from engine.engine import open_engine
    except ImportError:  # a checkout from before the composition root (engine/engine.py)
        open_engine = None

    class TickingClock:
        def __init__(self) -> None:
            self.now_ = dt.datetime(2026, 11, 23, 1, 30, tzinfo=dt.timezone.utc)
            self.lock = threading.Lock()

        def now(self) -> dt.datetime:
            with self.lock:
                self.now_ += dt.timedelta(milliseconds=2)
                return self.now_

    work = Path(tempfile.mkdtemp())
    db = work / "intake.db"
    shutil.copy(template, db)
    phones = [row[0] for row in sqlite3.connect(template).execute("select phone from lead order by id limit 2000")]
    model = load_blueprint(blueprint, functions=FUNCTION_NAMES)
    if open_engine is not None:
        runtime: Any = open_engine(model, f"sqlite:///{db}", clock=TickingClock())
        log_delivery, process_delivery = runtime.intake.log_delivery, runtime.intake.process
    else:
        from engine.runtime.runtime import open_runtime  # type: ignore[import-not-found]
        from engine.runtime.webhooks import log_delivery as log_old, process_delivery as process_old  # type: ignore
        runtime = open_runtime(model, f"sqlite:///{db}", clock=TickingClock())
        def log_delivery(*args: Any) -> int:
            return int(log_old(runtime, *args))
        def process_delivery(*args: Any) -> Any:
            return process_old(runtime, *args)
    same_schema_as(db, template)
    rng = random.Random(5)
    headers = {"content-type": "application/json", "x-webhook-token": TOKEN}

    def body(index: int) -> bytes:  # one in ten is a person already in the database
        phone = phones[index % len(phones)][3:] if index % 10 == 0 else f"+86137{index:08d}"
        return json.dumps(form_payload(index, rng, phone), ensure_ascii=False).encode()

    def one(raw: bytes) -> None:
        delivery = log_delivery("website_form", headers, "", raw)
        result = process_delivery("website_form", delivery, headers, {}, raw)
        assert result.status in (200, 201), result.body()

    async def run(start: int, n: int) -> None:
        bodies = [body(index) for index in range(start, start + n)]
        for offset in range(0, n, group):
            await asyncio.gather(*(runtime.db.run(one, raw, write=True) for raw in bodies[offset:offset + group]))

    asyncio.run(run(0, 40))
    asyncio.run(run(1000, count))
    runtime.close()
    shutil.rmtree(work)


def same_schema_as(db: Path, template: Path) -> None:
    """Give `db` the template's indexes and triggers, so every engine does the same database work.

    An older engine's migration may rebuild the lead table from its own blueprint, dropping the
    indexes and the search-index triggers a newer one added: it would then skip maintaining them
    and look cheaper than it is. What the engine dropped is put back (and the search index
    rebuilt), what it added beyond the template is dropped; stderr says which."""
    def schema(connection: sqlite3.Connection) -> dict[str, tuple[str, str]]:
        return {name: (kind, sql) for kind, name, sql in connection.execute(
            "select type, name, sql from sqlite_master where type in ('index', 'trigger') and sql is not null")}
    with sqlite3.connect(template) as source:
        wanted = schema(source)
    connection = sqlite3.connect(db)
    have = schema(connection)
    restored = [name for name in wanted if name not in have]
    dropped = [name for name in have if name not in wanted]
    for name in dropped:
        connection.execute(f'drop {have[name][0]} "{name}"')
    for name in restored:
        connection.execute(wanted[name][1])
    if any(wanted[name][0] == "trigger" for name in restored):
        for (table,) in connection.execute("select name from sqlite_master where type = 'table' and sql like '%fts5%'"):
            connection.execute(f'insert into "{table}"("{table}") values (\'rebuild\')')
    connection.commit()
    connection.close()
    if restored or dropped:
        print(f"schema matched to the template: restored {restored}, dropped {dropped}", file=sys.stderr)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "run":
        run_deliveries(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]),
                       Path(sys.argv[5]) if len(sys.argv) > 5 else None)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=200)
    parser.add_argument("--existing", type=int, default=20_000)
    parser.add_argument("--tree", default=str(HERE.parent), help="the checkout whose engine is measured")
    parser.add_argument("--blueprint", help="the blueprint it runs (default: the checkout's blueprints/crm)")
    parser.add_argument("--template", help="keep the database of existing leads in this file (built if missing) "
                                           "and reuse it, so paired runs start from the same bytes")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent))
    from bench_intake import prepare
    workdir = Path(tempfile.mkdtemp(prefix="crm-icount-"))
    template = Path(args.template) if args.template else workdir / "template.db"
    if not template.exists():
        prepare(template, args.existing)
    env = {**os.environ, "PYTHONHASHSEED": "0"}

    def counted(count: int) -> subprocess.Popen[str]:
        return subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={workdir}/cg.{count}",
                                 sys.executable, __file__, "run", args.tree, str(template), str(count),
                                 *([args.blueprint] if args.blueprint else [])],
                                stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)

    runs = {count: counted(count) for count in (0, args.deliveries)}  # side by side: two cores
    totals = {}
    for count, process in runs.items():
        _, err = process.communicate()
        found = re.search(r"Collected : (\d+)", err)
        if process.returncode != 0 or found is None:
            raise SystemExit(err[-3000:])
        totals[count] = int(found.group(1))
        notes = set(re.findall(r"schema matched to the template.*", err))
    shutil.rmtree(workdir)
    per = (totals[args.deliveries] - totals[0]) / args.deliveries
    print(f"{per / 1e6:.3f} M instructions per delivery ({args.tree}, blueprint {args.blueprint or 'its own'}, "
          f"{args.deliveries} deliveries, "
          f"{args.existing:,} existing leads)")
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
