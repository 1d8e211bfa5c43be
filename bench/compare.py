"""The whole write-path comparison of issue 15 in one command, on the shipped blueprint.

    .venv/bin/python bench/compare.py [--rounds 3] [--creates 2000] [--existing 100000]
        [--deliveries 2000] [--pg postgresql://postgres@127.0.0.1:5432/test] [--only create,intake,pg,startup]
        [--out bench/results-compare.md]

Servers run with bytecode caching on (PYTHONDONTWRITEBYTECODE is removed from their
environment, as a user's shell does not set it) and the engine's cache folder in the work
directory. Every server is started the way a user starts it — `crm serve --db URL --port N` (the console
script next to this Python; on SQLite with its in-process worker, logging what it logs by
default) — and the hand-written baseline (bench/baseline_app.py: Starlette + SQLAlchemy Core,
inline mode, over the shipped blueprint's own `lead` table with its 21 indexes) under uvicorn
with the same loop and HTTP parser (auto: uvloop + httptools) and no access log. All servers
run side by side for the whole run; the measured rounds alternate between them (engine,
baseline, engine, …, the order flipped every round), so a slow minute of this shared machine
falls on both. Every figure is a median over the rounds, with the server's CPU time per request
read from /proc (steadier than req/s when other work runs on the machine).

Scenarios (goals of issue 15):
  create   POST /api/lead by a sales rep's bearer token (every rule, SLA clock, event, index and
           trace the shipped blueprint has) vs the baseline's POST /leads; goal 1: ≥ 0.5× its req/s.
  intake   POST /hooks/website_form (token, delivery log, mapping, dedup — 10 % are known people —,
           rules, routing, clocks, trace, outbox) on a database holding --existing leads;
           goal 2: ≥ 1,000 leads/s with p99 ≤ 50 ms.
  pg       the create scenario on PostgreSQL (`crm serve --db postgresql://…`, a fresh schema)
           alternating with the SQLite engine; goal 7: ≥ 0.6× the SQLite creates/s.
  startup  `crm serve` from exec to its first HTTP answer, on an existing database (a restart),
           alternating with the baseline's; goal 8: ≤ 0.5 s. Also the first start after the
           blueprint changed (no metamodel cache) and each process's CPU seconds at that moment.

Ends with one ratio table (printed, and written to --out with machine, date, git revision and
load averages).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from bench_api import LoadResult, _git_revision, _loadavg, cpu_seconds, machine_info, run_load  # noqa: E402

SHIPPED = ROOT / "blueprints" / "crm"
TOKEN = "bench-website-token"
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
CREATE_GOAL, INTAKE_RPS_GOAL, INTAKE_P99_GOAL, PG_GOAL, STARTUP_GOAL = 0.5, 1000.0, 50.0, 0.6, 0.5
REGIONS = ("east", "south", "north", "central", "southwest")
SOURCES = ("website", "wecom", "douyin", "baidu", "expo", "referral")
INDUSTRIES = ("manufacturing", "medical_devices", "saas", "logistics", "retail")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def crm_command() -> list[str]:
    """`crm` as installed next to this interpreter (what `pip install` gives a user)."""
    script = Path(sys.executable).parent / "crm"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli"]


# ----------------------------------------------------------------------------- servers

@dataclass
class Server:
    label: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    token: str = ""
    path: str = "/api/lead"
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    started_in: float = 0.0    # seconds from exec to the first HTTP answer
    start_cpu: float = 0.0     # the process's CPU seconds at that moment

    def start(self, workdir: Path) -> None:
        self.port = _free_port()
        self.log = workdir / f"{self.label.replace(' ', '_')}.log"
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        with open(self.log, "ab") as log:
            began = time.perf_counter()
            env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
            env.setdefault("CRM_CACHE_DIR", str(workdir / "cache"))  # (a user's ~/.cache/blueprint-crm)
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
                                            env={**env, **self.env})
        probe = f"GET {self.path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.label} exited: {self.log.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(probe)
                    if sock.recv(16).startswith(b"HTTP/1.1"):
                        self.started_in = time.perf_counter() - began
                        self.start_cpu = cpu_seconds(self.process.pid)
                        return
            except OSError:
                time.sleep(0.005)
        raise RuntimeError(f"{self.label} did not start; see {self.log}")

    def post(self, path: str, payload: dict[str, Any], headers: str = "") -> bytes:
        body = json.dumps(payload, ensure_ascii=False).encode()
        auth = f"Authorization: Bearer {self.token}\r\n" if self.token else ""
        return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Type: application/json\r\n"
                f"{auth}{headers}Content-Length: {len(body)}\r\n\r\n").encode() + body

    def load(self, requests: list[bytes], concurrency: int) -> LoadResult:
        assert self.process is not None
        before = cpu_seconds(self.process.pid)
        result = run_load(self.port, requests, concurrency)
        result.server_cpu = cpu_seconds(self.process.pid) - before
        bad = {status: count for status, count in result.statuses.items() if status not in (200, 201)}
        if bad:
            raise RuntimeError(f"{self.label}: unexpected HTTP statuses {bad}; see {self.log}")
        return result

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def serve_baseline(argv: list[str]) -> None:
    """Internal: `compare.py baseline DB_URL PORT` — the baseline on the shipped blueprint's lead table."""
    import uvicorn

    from baseline_app import create_baseline_app
    app = create_baseline_app(argv[0], mode="inline", blueprint=SHIPPED)
    uvicorn.run(app, host="127.0.0.1", port=int(argv[1]), log_level="warning", access_log=False)


def engine_server(label: str, db_url: str, token: str, *extra: str, env: dict[str, str] | None = None) -> Server:
    return Server(label, [*crm_command(), "serve", "--db", db_url, "--blueprint", str(SHIPPED), "--port", "{port}",
                          *extra], env={"CRM_SECRET_KEY": "bench-compare-" + "k" * 40, **(env or {})},
                  token=token)  # crm serve refuses to start without a secret key (docs/security.md)


def baseline_server(db: Path) -> Server:
    return Server("baseline", [sys.executable, str(Path(__file__).resolve()), "baseline", f"sqlite:///{db}",
                               "{port}"], path="/leads")


# ----------------------------------------------------------------------------- data

def prepare_engine(db_url: str) -> str:
    """The shipped blueprint's tables, the demo users, and a sales rep's API token."""
    from engine.engine import open_engine
    from engine.io.demo import USERS
    from engine.metamodel import load_blueprint
    from engine.rules import FUNCTION_NAMES
    runtime = open_engine(load_blueprint(SHIPPED, functions=FUNCTION_NAMES), db_url)
    for user in USERS:
        runtime.users.add(user)
    token = runtime.users.create_token("wang", "bench")
    runtime.close()
    return token


class Leads:
    """Unique, valid leads a sales rep would type in (mobile 137…, a unique e-mail)."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.numbers = iter(self.random.sample(range(10 ** 8), 3_000_000))

    def payload(self) -> dict[str, Any]:
        r, number = self.random, next(self.numbers)
        return {"name": f"客户{number}", "phone": f"137{number:08d}", "email": f"c{number}@example.cn",
                "company": f"苏州恒锐{number % 9973}精密机械有限公司", "region": r.choice(REGIONS),
                "source": r.choice(SOURCES), "industry": r.choice(INDUSTRIES), "city": "苏州"}


def pg_schema(admin_url: str) -> tuple[str, str]:
    import sqlalchemy as sa
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(admin_url)
    with engine.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    return schema, f"{admin_url}?options=-csearch_path%3D{schema}"


def drop_pg_schema(admin_url: str, schema: str) -> None:
    import sqlalchemy as sa
    engine = sa.create_engine(admin_url)
    with engine.begin() as connection:
        connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


# ----------------------------------------------------------------------------- scenarios

@dataclass
class Row:
    scenario: str
    engine: str
    reference: str
    ratio: str
    goal: str
    verdict: str
    detail: str = ""


def alternate(servers: list[Server], make: dict[str, Any], count: int, rounds: int,
              concurrency: int) -> dict[str, list[LoadResult]]:
    """`rounds` measured rounds per server, alternating (the order flipped each round), after a warm-up."""
    results: dict[str, list[LoadResult]] = {server.label: [] for server in servers}
    for server in servers:
        server.load(make[server.label](server, 200), concurrency)
    for index in range(rounds):
        for server in (servers if index % 2 == 0 else servers[::-1]):
            result = server.load(make[server.label](server, count), concurrency)
            results[server.label].append(result)
            print(f"  round {index + 1} {server.label:<16} {result.rps:8,.0f} req/s  p99 {result.pct(99):7.1f} ms  "
                  f"CPU {result.cpu_ms:5.2f} ms/req  load {_loadavg()}", flush=True)
    return results


def med(results: list[LoadResult], what: str) -> float:
    return statistics.median(getattr(result, what) if what != "p99" else result.pct(99) for result in results)


def pair_ratios(engine: list[LoadResult], reference: list[LoadResult]) -> tuple[list[float], list[float]]:
    """Per round: engine/reference req/s, and reference/engine CPU per request (both higher = better)."""
    return ([e.rps / r.rps for e, r in zip(engine, reference)],
            [r.cpu_ms / e.cpu_ms for e, r in zip(engine, reference)])


def create_rows(results: dict[str, list[LoadResult]], rounds: int) -> list[Row]:
    engine, base = results["crm serve"], results["baseline"]
    rps, cpu = pair_ratios(engine, base)
    ratio = statistics.median(rps)
    return [Row("create, shipped blueprint, 8 clients", f"{med(engine, 'rps'):,.0f}/s, {med(engine, 'cpu_ms'):.2f} ms CPU",
                f"baseline {med(base, 'rps'):,.0f}/s, {med(base, 'cpu_ms'):.2f} ms CPU",
                f"{ratio:.2f}× (CPU {statistics.median(cpu):.2f}×)", f"≥ {CREATE_GOAL}×",
                "PASS" if ratio >= CREATE_GOAL else "FAIL",
                "per round req/s ratios " + ", ".join(f"{value:.2f}" for value in rps)
                + "; CPU ratios " + ", ".join(f"{value:.2f}" for value in cpu))]


def run(args: argparse.Namespace) -> list[Row]:
    only = set(args.only.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="crm-compare-"))
    rows: list[Row] = []
    servers: list[Server] = []
    schema = None
    try:
        sqlite_url = f"sqlite:///{workdir / 'engine.sqlite'}"
        token = prepare_engine(sqlite_url)
        leads = Leads(args.seed)

        def creates(server: Server, count: int) -> list[bytes]:
            path = "/api/lead" if server.token else "/leads"
            return [server.post(path, leads.payload()) for _ in range(count)]

        engine = engine_server("crm serve", sqlite_url, token)
        baseline = baseline_server(workdir / "baseline.sqlite")
        if only & {"create", "pg", "startup"}:
            for server in (engine, baseline):
                server.start(workdir)
                servers.append(server)
        if "startup" in only:
            rows += startup_rows(engine, baseline, workdir, args.rounds)
        if "create" in only:
            print("create: crm serve vs baseline", flush=True)
            results = alternate([engine, baseline], {"crm serve": creates, "baseline": creates}, args.creates,
                                args.rounds, args.concurrency)
            rows += create_rows(results, args.rounds)
        if "pg" in only:
            schema, pg_url = pg_schema(args.pg)
            pg = engine_server("crm serve (PG)", pg_url, prepare_engine(pg_url))
            pg.start(workdir)
            servers.append(pg)
            print("pg: crm serve on PostgreSQL vs on SQLite", flush=True)
            results = alternate([pg, engine], {"crm serve (PG)": creates, "crm serve": creates}, args.creates,
                                args.rounds, args.concurrency)
            rps, cpu = pair_ratios(results["crm serve (PG)"], results["crm serve"])
            ratio = statistics.median(rps)
            rows.append(Row("create on PostgreSQL", f"{med(results['crm serve (PG)'], 'rps'):,.0f}/s",
                            f"SQLite {med(results['crm serve'], 'rps'):,.0f}/s", f"{ratio:.2f}×",
                            f"≥ {PG_GOAL}× SQLite", "PASS" if ratio >= PG_GOAL else "FAIL",
                            "per round " + ", ".join(f"{value:.2f}" for value in rps)
                            + f"; server CPU ms/req PG {med(results['crm serve (PG)'], 'cpu_ms'):.2f} (the "
                            "database server's own CPU not counted)"))
        if "intake" in only:
            rows += intake_rows(args, workdir, baseline if baseline.process else None, creates)
    finally:
        for server in servers:
            server.stop()
        if schema is not None:
            drop_pg_schema(args.pg, schema)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return rows


def startup_rows(engine: Server, baseline: Server, workdir: Path, rounds: int) -> list[Row]:
    """Restart each server `rounds` times, alternating; then one start with the metamodel cache gone."""
    print("startup: crm serve vs baseline (restarts on their existing databases)", flush=True)
    times: dict[str, list[tuple[float, float]]] = {engine.label: [], baseline.label: []}
    for index in range(rounds + 2):
        for server in (engine, baseline) if index % 2 == 0 else (baseline, engine):
            server.stop()
            server.start(workdir)
            times[server.label].append((server.started_in, server.start_cpu))
            print(f"  {server.label:<10} {server.started_in:.3f} s to the first answer, {server.start_cpu:.2f} s CPU",
                  flush=True)
    cold = ""
    cache = Path(os.environ.get("CRM_CACHE_DIR", workdir / "cache"))
    if cache.is_dir():
        engine.stop()
        shutil.rmtree(cache, ignore_errors=True)
        engine.start(workdir)
        cold = f"; first start with no metamodel cache {engine.started_in:.3f} s ({engine.start_cpu:.2f} s CPU)"
    wall = statistics.median(value for value, _ in times[engine.label])
    cpu = statistics.median(value for _, value in times[engine.label])
    base_wall = statistics.median(value for value, _ in times[baseline.label])
    base_cpu = statistics.median(value for _, value in times[baseline.label])
    return [Row("startup of `crm serve` (restart)", f"{wall:.3f} s ({cpu:.2f} s CPU)",
                f"baseline {base_wall:.3f} s ({base_cpu:.2f} s CPU)", f"{wall / base_wall:.2f}× the baseline's time",
                f"≤ {STARTUP_GOAL} s", "PASS" if wall <= STARTUP_GOAL else "FAIL",
                "all restarts: " + ", ".join(f"{value:.3f}" for value, _ in times[engine.label]) + cold)]


def intake_rows(args: argparse.Namespace, workdir: Path, baseline: Server | None, creates: Any) -> list[Row]:
    from bench_intake import form_payload, prepare
    db = workdir / "intake.sqlite"
    print(f"intake: preparing {args.existing:,} existing leads", flush=True)
    _, phones = prepare(db, args.existing)
    server = engine_server("crm serve (intake)", f"sqlite:///{db}", "", env={"CRM_WEBSITE_FORM_TOKEN": TOKEN})
    server.path = "/hooks/website_form"
    server.start(workdir)
    rng = random.Random(args.seed + 1)
    counter = iter(range(10 ** 9))
    hook = f"X-Webhook-Token: {TOKEN}\r\n"

    def deliveries(target: Server, count: int) -> list[bytes]:
        out = []
        for _ in range(count):
            index = next(counter)
            phone = rng.choice(phones)[3:] if index % 10 == 0 else f"138{rng.randrange(10 ** 8):08d}"
            out.append(target.post("/hooks/website_form", form_payload(index, rng, phone), hook))
        return out

    try:
        print("intake: /hooks/website_form" + (" alternating with baseline creates" if baseline else ""), flush=True)
        servers = [server] + ([baseline] if baseline else [])
        results = alternate(servers, {server.label: deliveries, "baseline": creates}, args.deliveries, args.rounds,
                            args.concurrency)
    finally:
        server.stop()
    intake = results[server.label]
    rps, p99 = med(intake, "rps"), med(intake, "p99")
    context = (f"; baseline creates in the same rounds {med(results['baseline'], 'rps'):,.0f}/s"
               if baseline else "")
    return [Row(f"intake, {args.existing:,} existing leads, 8 clients", f"{rps:,.0f} leads/s, p99 {p99:.1f} ms",
                f"{med(intake, 'cpu_ms'):.2f} ms CPU per delivery", "—",
                f"≥ {INTAKE_RPS_GOAL:,.0f}/s, p99 ≤ {INTAKE_P99_GOAL:.0f} ms",
                "PASS" if rps >= INTAKE_RPS_GOAL and p99 <= INTAKE_P99_GOAL else "FAIL",
                "per round " + ", ".join(f"{r.rps:,.0f}/s p99 {r.pct(99):.1f}" for r in intake) + context)]


def report(args: argparse.Namespace, rows: list[Row], began: str, loads: tuple[str, str]) -> str:
    lines = [f"## Issue 15, write path: `bench/compare.py {' '.join(sys.argv[1:])}`", "",
             f"{began} – {time.strftime('%H:%M UTC', time.gmtime())}, {_git_revision()}; load average "
             f"{loads[0]} at the start, {loads[1]} at the end", "",
             *machine_info("crm serve as shipped: uvicorn auto (uvloop + httptools); the baseline the same"), "",
             "| scenario | engine | reference | ratio | goal | result |", "|---|---|---|---|---|---|",
             *(f"| {row.scenario} | {row.engine} | {row.reference} | {row.ratio} | {row.goal} | {row.verdict} |"
               for row in rows), "",
             *(f"- {row.scenario}: {row.detail}" for row in rows if row.detail), ""]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "baseline":
        serve_baseline(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per server (medians reported)")
    parser.add_argument("--creates", type=int, default=2000, help="creates per round per server")
    parser.add_argument("--deliveries", type=int, default=2000, help="intake deliveries per round")
    parser.add_argument("--existing", type=int, default=100_000, help="leads already in the intake database")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--pg", default=os.environ.get("CRM_BENCH_PG", PG_DEFAULT), help="PostgreSQL admin URL")
    parser.add_argument("--only", default="startup,create,pg,intake")
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (databases, server logs)")
    parser.add_argument("--out", default=str(HERE / "results-compare.md"), help="markdown report ('' = none)")
    args = parser.parse_args()
    began, load_before = time.strftime("%Y-%m-%d %H:%M", time.gmtime()), _loadavg()
    rows = run(args)
    text = report(args, rows, began, (load_before, _loadavg()))
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
