"""Eight readers of a million leads on the SHIPPED blueprint: `crm serve`'s memory and list speed.

    .venv/bin/python bench/bench_readers.py [--rows 1000000] [--seconds 40] [--rounds 2]
                                            [--tree /path/to/other/checkout]

The engine creates a SQLite file with blueprints/crm (every table, index and search trigger),
`--rows` leads are inserted straight into the lead table (through every index, not the rules),
then the planner statistics are taken as the engine does after bulk work (Database.analyze).
For each round and checkout, `crm serve` (as a user starts it, worker off so nothing else runs)
serves the file and wrk sends 8 keep-alive readers a mix of list requests for `--seconds`:
region + source newest first, a status sorted four ways, region + status + grade, deep pages of
100. Printed per run: req/s, p50/p99 (wrk's timeout is 30 s, so slow answers count), non-2xx
answers and timeouts, the server's RSS at the end and its peak (VmHWM), and the
load average. With --tree, rounds alternate between this checkout and the other one (e.g. a git
worktree of an older commit) over the same file; `--no-statistics` leaves the file without them.
With --baseline, rounds alternate instead between the engine and the hand-written baseline
(bench/baseline_app.py over the shipped blueprint's own lead table, started as bench/compare.py
does) on the one list the baseline has: region + source, newest first, 50 rows with the total.
Needs `wrk` (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import sqlalchemy as sa  # noqa: E402

from engine.engine import open_engine  # noqa: E402
from engine.io.demo import USERS  # noqa: E402
from engine.metamodel import load_blueprint  # noqa: E402
from engine.rules import FUNCTION_NAMES  # noqa: E402

LUA = """
wrk.headers["Authorization"] = "Bearer " .. os.getenv("CRM_BENCH_TOKEN")
local regions, sources = {"east", "south", "north"}, {"website", "baidu", "expo", "referral"}
local statuses, sorts = {"new", "contacted", "qualified"}, {"-created_at", "created_at", "-updated_at", "-created_at"}
local n = 0
request = function()
  n = n + 1
  local r, s = regions[(n % 3) + 1], sources[(math.floor(n / 3) % 4) + 1]
  local st, so = statuses[(math.floor(n / 12) % 3) + 1], sorts[(math.floor(n / 36) % 4) + 1]
  local page, kind = (n % 40) + 1, n % 4
  local path
  if kind == 0 then path = "/api/lead?region=" .. r .. "&source=" .. s .. "&sort=-created_at&page=" .. page
  elseif kind == 1 then path = "/api/lead?status=" .. st .. "&sort=" .. so .. "&page=" .. page
  elseif kind == 2 then path = "/api/lead?region=" .. r .. "&status=" .. st .. "&grade=A&page=" .. page
  else path = "/api/lead?page=" .. page * 7 .. "&per_page=100" end
  return wrk.format("GET", path)
end
"""
# What the hand-written baseline (bench/baseline_app.py) can answer: region + source, newest
# first, 50 rows with the total; the engine is asked the same (`--baseline` alternates the two).
PAIR_LUA = """
wrk.headers["Authorization"] = "Bearer " .. os.getenv("CRM_BENCH_TOKEN")
local regions, sources = {"east", "south", "north"}, {"website", "baidu", "expo", "referral"}
local n = 0
request = function()
  n = n + 1
  local query = "region=" .. regions[(n % 3) + 1] .. "&source=" .. sources[(math.floor(n / 3) % 4) + 1]
  return wrk.format("GET", os.getenv("CRM_BENCH_PATH") .. "?" .. query)
end
"""


def fill(path: Path, rows: int, statistics: bool) -> str:
    """The file with `rows` leads; returns an API token of the demo's admin."""
    engine = open_engine(load_blueprint(HERE.parent / "blueprints" / "crm", functions=FUNCTION_NAMES),
                         f"sqlite:///{path}")
    owners = [engine.users.add(user).id for user in USERS]
    table = engine.schema.table("lead")
    rng = random.Random(1)
    start = dt.datetime(2025, 1, 1)
    with engine.db.write() as connection:
        for first in range(0, rows, 50_000):
            connection.execute(table.insert(), [{
                "name": f"客户{n}", "company": f"苏州恒锐{n}精密机械有限公司", "phone": f"+86139{n:08d}",
                "source": rng.choice(["website", "baidu", "expo", "referral"]),
                "region": rng.choice(["east", "south", "north"]), "status": rng.choice(["new", "contacted", "qualified"]),
                "grade": rng.choice(["S", "A", "B", "C"]), "owner": rng.choice(owners),
                "created_at": start + dt.timedelta(seconds=n * 30), "updated_at": start + dt.timedelta(seconds=n * 31),
                "version": 1} for n in range(first, min(first + 50_000, rows))])
    if statistics:
        print("statistics:", engine.db.analyze(engine.schema.tables.values()), flush=True)
    token = engine.users.create_token("admin")
    engine.close()
    return token


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def status_kib(pid: int, key: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else 0


def engine_command(db: Path, port: int) -> list[str]:
    """`crm serve` as a user starts it (worker off, so nothing else runs), from the cwd's checkout."""
    return [sys.executable, "-m", "cli", "serve", "--db", f"sqlite:///{db}", "--port", str(port), "--no-worker"]


def baseline_command(db: Path, port: int) -> list[str]:
    """The hand-written baseline over the shipped blueprint's lead table (bench/compare.py starts it)."""
    return [sys.executable, str(HERE / "compare.py"), "baseline", f"sqlite:///{db}", str(port)]


def run(tree: Path, db: Path, token: str, seconds: int, lua: Path, *,
        command: Callable[[Path, int], list[str]] = engine_command,
        path: str = "/api/lead") -> dict[str, Any]:
    port = free_port()
    env = {**os.environ, "CRM_SECRET_KEY": "bench-readers-" + "k" * 40, "CRM_BENCH_TOKEN": token,
           "CRM_BENCH_PATH": path}
    server = subprocess.Popen(command(db, port), cwd=tree, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"{command(db, port)} in {tree} did not start")
                time.sleep(0.2)
        started_kib = status_kib(server.pid, "VmRSS")
        out = subprocess.run(["wrk", "-t2", "-c8", f"-d{seconds}s", "--timeout", "30s", "--latency", "-s", str(lua),
                              f"http://127.0.0.1:{port}"], env=env, capture_output=True, text=True, check=True).stdout
        rss, peak = status_kib(server.pid, "VmRSS"), status_kib(server.pid, "VmHWM")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    def latency(label: str) -> str:
        found = re.search(rf"^\s+{label}%\s+(\S+)", out, re.M)
        return found.group(1) if found else "?"
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    timeouts = re.search(r"timeout (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
            "p50": latency("50"), "p99": latency("99"), "non2xx": int(errors.group(1)) if errors else 0,
            "timeouts": int(timeouts.group(1)) if timeouts else 0,
            "start_mb": started_kib / 1024, "rss_mb": rss / 1024, "peak_mb": peak / 1024,
            "load": " ".join(Path("/proc/loadavg").read_text().split()[:3])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tree", help="another checkout to alternate with (e.g. a git worktree of main)")
    parser.add_argument("--no-statistics", action="store_true", help="leave the file without planner statistics")
    parser.add_argument("--baseline", action="store_true",
                        help="instead: alternate the engine with the hand-written baseline on region + source lists")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="crm-bench-readers-"))
    db = folder / "crm.sqlite"
    began = time.monotonic()
    token = fill(db, args.rows, not args.no_statistics)
    print(f"filled {args.rows:,} leads in {time.monotonic() - began:.0f} s ({db})", flush=True)
    lua = folder / "lists.lua"
    lua.write_text(PAIR_LUA if args.baseline else LUA)
    here = HERE.parent
    servers: dict[str, tuple[Path, dict[str, Any]]] = {"this": (here, {})}
    if args.baseline:
        servers = {"engine": (here, {}), "baseline": (here, {"path": "/leads", "command": baseline_command})}
    elif args.tree:
        servers["other"] = (Path(args.tree), {})
    for index in range(args.rounds):
        for name, (tree, how) in (servers.items() if index % 2 == 0 else reversed(servers.items())):
            result = run(tree, db, token, args.seconds, lua, **how)
            print(f"round {index + 1} {name:<8} {result['rps']:7.1f} req/s  p50 {result['p50']:>8}  "
                  f"p99 {result['p99']:>8}  non-2xx {result['non2xx']}  timeouts {result['timeouts']}  "
                  f"RSS {result['start_mb']:.0f} → {result['rss_mb']:.0f} MB (peak {result['peak_mb']:.0f})  "
                  f"load {result['load']}", flush=True)


if __name__ == "__main__":
    main()
