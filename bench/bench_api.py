"""Engine vs hand-written baseline on SQLite: create throughput and 1M-row list latency.

    /work/main/.venv/bin/python bench/bench_api.py [--rows 1000000] [--creates 4000] [--out bench/RESULTS.md]

Scenarios (the issue's targets):
  (a) create: one lead per POST, 8 concurrent keep-alive clients, unique phone + email each;
      engine must keep >= 70 % of the baseline's req/s.
  (b) list: 50 rows filtered by region + source, newest first, with total, over --rows rows
      (bulk-loaded straight into SQLite, not through HTTP); engine p99 <= 50 ms (1 client).

Every server (the engine's create_app, and the baseline in bench/baseline_app.py in each
--baseline-modes mode) runs in its own process under uvicorn (1 worker, h11, log level warning,
no access log) on a free 127.0.0.1 port, over its own SQLite file in a temporary directory.
The load generator is a small raw-asyncio HTTP/1.1 client (so the client is never the
bottleneck), identical for every server. Create rounds are interleaved across servers and
repeated (--repeats); the median round by req/s is reported. List requests are sent in chunks
that rotate across servers. Besides client-side req/s and latency, the server process's CPU time
per request is read from /proc: on a shared machine it is the steadier cost comparison.

The engine is called as a real API client would: a user with role `api_client` (bench/blueprint/
roles.yaml) and a bearer token, created in each engine database before its server starts.

`serve` is the internal entry point of the server processes:
    bench_api.py serve {engine|baseline} --db FILE --port N [--mode threadpool|inline]
                 [--profile OUT] [--diag inline,switch=SECONDS]
--profile writes merged cProfile stats of every thread on exit; --diag runs diagnostic engine
variants without touching engine code (see --engine-diag).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

BLUEPRINT = HERE / "blueprint"
REGIONS = ("east", "south", "north", "central", "southwest", "northwest", "northeast", "overseas")
REGION_WEIGHTS = (28, 22, 16, 12, 9, 5, 5, 3)
SOURCES = ("website", "wecom", "douyin", "baidu", "expo", "referral", "cold_call", "csv_import")
SOURCE_WEIGHTS = (25, 20, 18, 14, 8, 7, 5, 3)
STATUSES = ("new", "contacted", "qualified", "converted", "disqualified")
STATUS_WEIGHTS = (35, 25, 15, 10, 15)
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华建国文"
CITIES = ("上海", "北京", "深圳", "广州", "杭州", "苏州", "成都", "武汉", "南京", "西安", "重庆", "天津")
TRADES = ("精密机械", "医疗器械", "智能科技", "新材料", "物流", "食品", "电子", "汽车零部件", "软件", "光伏")
SUFFIXES = ("有限公司", "股份有限公司", "集团有限公司")
DOMAINS = ("qq.com", "163.com", "126.com", "gmail.com", "outlook.com", "example.cn")
COLUMNS = ("created_at", "updated_at", "created_by", "owner", "version", "name", "phone", "email", "company",
           "region", "source", "status", "next_follow_up", "amount", "amount_currency", "duplicate_of")
PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=30000",
           "cache_size=-65536", "temp_store=MEMORY")
BENCH_USER = "bench"
CREATE_TARGET = 0.70
LIST_P99_TARGET_MS = 50.0


# ----------------------------------------------------------------------------- servers

def serve(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench_api.py serve")
    parser.add_argument("kind", choices=("engine", "baseline"))
    parser.add_argument("--db", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", default="threadpool")
    parser.add_argument("--profile", help="write merged cProfile stats (all threads) here on exit")
    parser.add_argument("--diag", default="", help="engine diagnostics (not engine changes): comma-separated "
                        "'inline' (the JSON API and AuthMiddleware call the engine on the event loop instead of "
                        "Database.run / run_in_threadpool), "
                        "'switch=SECONDS' (sys.setswitchinterval)")
    args = parser.parse_args(argv)
    import uvicorn

    for item in filter(None, args.diag.split(",")):
        if item == "inline":
            import starlette.concurrency

            from engine.runtime.storage.database import Database

            async def run_inline(func: Any, *args_: Any, **kwargs: Any) -> Any:
                return func(*args_, **kwargs)

            async def db_run_inline(self: Any, func: Any, *args_: Any, write: bool = False, **kwargs: Any) -> Any:
                return func(*args_, **kwargs)
            Database.run = db_run_inline  # type: ignore[method-assign]
            starlette.concurrency.run_in_threadpool = run_inline  # AuthMiddleware imports it per call
        elif item.startswith("switch="):
            sys.setswitchinterval(float(item.partition("=")[2]))
        else:
            raise SystemExit(f"unknown --diag item {item!r}")

    url = f"sqlite:///{args.db}"
    if args.kind == "engine":
        from engine.metamodel import load_blueprint
        from engine.rules import FUNCTION_NAMES
        from engine.engine import open_engine
        if args.profile:
            _install_thread_profiler(args.profile, wrap_threads="inline" not in args.diag.split(","))
        runtime = open_engine(load_blueprint(BLUEPRINT, functions=FUNCTION_NAMES), url)
        app = runtime.web_app()
    else:
        from baseline_app import create_baseline_app
        app = create_baseline_app(url, mode=args.mode)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
                loop="asyncio", http="h11", lifespan="off")


def _install_thread_profiler(out: str, wrap_threads: bool = True) -> None:
    """Profile the event-loop thread and every run_in_threadpool call of the JSON API (cProfile is
    per thread), and dump the merged stats when the server exits."""
    import atexit
    import cProfile
    import pstats
    import threading

    import starlette.concurrency

    import engine.runtime.web.api as api_module
    original = starlette.concurrency.run_in_threadpool

    profiles: list[cProfile.Profile] = []
    local = threading.local()
    lock = threading.Lock()

    def profiled(func: Any, *args: Any, **kwargs: Any) -> Any:
        prof = getattr(local, "prof", None)
        if prof is None:
            prof = local.prof = cProfile.Profile()
            with lock:
                profiles.append(prof)
        prof.enable()
        try:
            return func(*args, **kwargs)
        finally:
            prof.disable()

    async def patched(func: Any, *args: Any, **kwargs: Any) -> Any:
        return await original(profiled, func, *args, **kwargs)

    if wrap_threads:
        api_module.run_in_threadpool = patched
        starlette.concurrency.run_in_threadpool = patched  # AuthMiddleware imports it per call
    main = cProfile.Profile()
    profiles.append(main)
    main.enable()

    def dump() -> None:
        main.disable()
        stats = pstats.Stats(profiles[0])
        for prof in profiles[1:]:
            stats.add(prof)
        stats.dump_stats(out)

    atexit.register(dump)


@dataclass
class Server:
    label: str
    kind: str
    db: Path
    mode: str = "threadpool"
    profile: str | None = None
    diag: str = ""
    token: str = ""
    port: int = 0
    process: subprocess.Popen | None = None
    log: Path | None = None

    @property
    def headers(self) -> str:
        """Extra request headers: the engine's API needs a bearer token (the baseline has no auth)."""
        return f"Authorization: Bearer {self.token}\r\n" if self.token else ""

    def post(self, path: str, payload: dict[str, Any]) -> bytes:
        body = json.dumps(payload, ensure_ascii=False).encode()
        return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Type: application/json\r\n"
                f"{self.headers}Content-Length: {len(body)}\r\n\r\n").encode() + body

    def get(self, path: str) -> bytes:
        return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nAccept: application/json\r\n"
                f"{self.headers}\r\n").encode()

    @property
    def create_path(self) -> str:
        return "/api/lead" if self.kind == "engine" else "/leads"

    def list_path(self, region: str, source: str) -> str:
        if self.kind == "engine":
            return f"/api/lead?region={region}&source={source}&sort=-created_at&per_page=50"
        return f"/leads?region={region}&source={source}"

    def start(self, workdir: Path) -> None:
        self.port = _free_port()
        self.log = workdir / f"{self.label}.log"
        command = [sys.executable, str(Path(__file__).resolve()), "serve", self.kind, "--db", str(self.db),
                   "--port", str(self.port), "--mode", self.mode]
        if self.profile:
            command += ["--profile", self.profile]
        if self.diag:
            command += ["--diag", self.diag]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.label} server exited: {self.log.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.label} server did not start; see {self.log}")

    def cpu_seconds(self) -> float:
        assert self.process is not None
        return cpu_seconds(self.process.pid)

    def load(self, requests: list[bytes], concurrency: int, keep_bodies: bool = False) -> LoadResult:
        before = self.cpu_seconds()
        result = run_load(self.port, requests, concurrency, keep_bodies)
        result.server_cpu = self.cpu_seconds() - before
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------- load generator

async def _roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     request: bytes) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
            break
    if length is None:
        raise RuntimeError(f"response without Content-Length: {head!r}")
    return status, await reader.readexactly(length)


@dataclass
class LoadResult:
    latencies: list[float]
    wall: float
    statuses: dict[int, int]
    bodies: list[bytes] = field(default_factory=list)
    server_cpu: float = 0.0  # CPU seconds (user + system, all threads) the server process used meanwhile

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall

    @property
    def cpu_ms(self) -> float:
        """Server CPU per request in ms: the cost of one request, largely independent of other load."""
        return self.server_cpu / len(self.latencies) * 1000

    @staticmethod
    def merge(parts: list[LoadResult]) -> LoadResult:
        return LoadResult([x for part in parts for x in part.latencies], sum(part.wall for part in parts),
                          {status: sum(part.statuses.get(status, 0) for part in parts)
                           for part in parts for status in part.statuses},
                          server_cpu=sum(part.server_cpu for part in parts))

    def pct(self, q: float) -> float:
        """Latency percentile in ms (nearest rank)."""
        values = sorted(self.latencies)
        index = max(0, min(len(values) - 1, int(round(q / 100 * len(values) + 0.5)) - 1))
        return values[index] * 1000


async def _load(port: int, requests: list[bytes], concurrency: int, keep_bodies: bool = False) -> LoadResult:
    connections = [await asyncio.open_connection("127.0.0.1", port, limit=1 << 22) for _ in range(concurrency)]
    latencies = [0.0] * len(requests)
    statuses: dict[int, int] = {}
    bodies: list[bytes] = [b""] * len(requests) if keep_bodies else []
    cursor = iter(range(len(requests)))
    clock = time.perf_counter

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for index in cursor:
            started = clock()
            status, body = await _roundtrip(reader, writer, requests[index])
            latencies[index] = clock() - started
            statuses[status] = statuses.get(status, 0) + 1
            if keep_bodies:
                bodies[index] = body

    started = clock()
    await asyncio.gather(*(worker(reader, writer) for reader, writer in connections))
    wall = clock() - started
    for _, writer in connections:
        writer.close()
    return LoadResult(latencies, wall, statuses, bodies)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (every thread), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(port: int, requests: list[bytes], concurrency: int, keep_bodies: bool = False) -> LoadResult:
    return asyncio.run(_load(port, requests, concurrency, keep_bodies))


# ----------------------------------------------------------------------------- data

class LeadFactory:
    """Unique, valid create payloads: mobile 138 + 8 digits (the bulk data uses 139), unique email."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.counter = 0
        self.phones = iter(self.random.sample(range(10 ** 8), 2_000_000))
        self.today = dt.date.today()

    def payload(self) -> dict[str, Any]:
        r = self.random
        self.counter += 1
        phone = f"138{next(self.phones):08d}"
        payload = {"name": r.choice(SURNAMES) + r.choice(GIVEN) + r.choice(GIVEN),
                   "phone": phone,
                   "email": f"c{self.counter}.{phone[-4:]}@{r.choice(DOMAINS)}",
                   "company": r.choice(CITIES) + r.choice(TRADES) + r.choice(SUFFIXES),
                   "region": r.choices(REGIONS, REGION_WEIGHTS)[0],
                   "source": r.choices(SOURCES, SOURCE_WEIGHTS)[0],
                   "status": "new",
                   "next_follow_up": (self.today + dt.timedelta(days=r.randint(1, 14))).isoformat()}
        if r.random() < 0.6:
            payload["amount"] = f"{r.randint(1, 2000) * 1000}.00"
        return payload


def generate_rows(n: int, seed: int = 7) -> list[tuple[Any, ...]]:
    """`n` lead rows as tuples in COLUMNS order, already in SQLite's stored form (what SQLAlchemy
    binds): created_at spread over the last two years (ids ascend with time), skewed region/source/
    status, unique +86139xxxxxxxx phones and unique emails."""
    r = random.Random(seed)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    span = 730 * 86400
    start = now - dt.timedelta(seconds=span)
    offsets = sorted(r.random() * span for _ in range(n))
    regions = r.choices(REGIONS, REGION_WEIGHTS, k=n)
    sources = r.choices(SOURCES, SOURCE_WEIGHTS, k=n)
    statuses = r.choices(STATUSES, STATUS_WEIGHTS, k=n)
    phones = r.sample(range(10 ** 8), n)
    names = [a + b + c for a, b, c in zip(r.choices(SURNAMES, k=n), r.choices(GIVEN, k=n), r.choices(GIVEN, k=n))]
    companies = [a + b + c for a, b, c in zip(r.choices(CITIES, k=n), r.choices(TRADES, k=n),
                                              r.choices(SUFFIXES, k=n))]
    domains = r.choices(DOMAINS, k=n)
    rows = []
    base = start.timestamp()
    for i in range(n):
        moment = dt.datetime.fromtimestamp(base + offsets[i], dt.timezone.utc).replace(tzinfo=None)
        created = f"{moment:%Y-%m-%d %H:%M:%S}.{moment.microsecond:06d}"
        status = statuses[i]
        follow_up = None if status in ("converted", "disqualified") else \
            (moment.date() + dt.timedelta(days=1 + i % 21)).isoformat()
        amount = float((i * 7919) % 2000 * 1000) if i % 5 < 3 else None
        rows.append((created, created, None, None, 1, names[i], f"+86139{phones[i]:08d}",
                     f"lead{i}@{domains[i]}", companies[i], regions[i], sources[i], status, follow_up,
                     amount, "CNY" if amount is not None else None, None))
    return rows


def bulk_load(db: Path, rows: list[tuple[Any, ...]], batch: int = 50_000) -> float:
    """Insert `rows` into db's `lead` table with SQLAlchemy Core executemany in one transaction."""
    import sqlalchemy as sa
    from sqlalchemy import event

    engine = sa.create_engine(f"sqlite:///{db}")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=OFF", "cache_size=-1048576", "temp_store=MEMORY"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    columns = ", ".join(COLUMNS)
    sql = f"INSERT INTO lead ({columns}) VALUES ({', '.join('?' * len(COLUMNS))})"
    started = time.perf_counter()
    with engine.begin() as connection:
        for offset in range(0, len(rows), batch):
            connection.exec_driver_sql(sql, rows[offset:offset + batch])
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return time.perf_counter() - started


def prepare_engine_db(db: Path) -> str:
    """The engine's own start-up (blueprint load + migration) creates its tables and indexes; then the
    API client's user (role api_client: read/create/update every lead) and its bearer token."""
    from engine.metamodel import load_blueprint
    from engine.rules import FUNCTION_NAMES
    from engine.engine import open_engine
    from engine.runtime.ops.users import NewUser
    runtime = open_engine(load_blueprint(BLUEPRINT, functions=FUNCTION_NAMES), f"sqlite:///{db}")
    try:
        runtime.users.add(NewUser(BENCH_USER, "Benchmark API client", "api_client"))
        return runtime.users.create_token(BENCH_USER, "bench")
    finally:
        runtime.close()


def prepare_baseline_db(db: Path) -> None:
    from baseline_app import lead_table, make_engine
    metadata, leads, users = lead_table()
    engine = make_engine(f"sqlite:///{db}")
    metadata.create_all(engine, tables=[users, leads], checkfirst=True)
    engine.dispose()


def query_plan(db: Path) -> str:
    connection = sqlite3.connect(db)
    sql = ("SELECT * FROM lead WHERE region = 'east' AND source = 'website' "
           "ORDER BY created_at DESC, id DESC LIMIT 50")
    plan = "; ".join(row[3] for row in connection.execute("EXPLAIN QUERY PLAN " + sql))
    count = "; ".join(row[3] for row in connection.execute(
        "EXPLAIN QUERY PLAN SELECT count(*) FROM lead WHERE region = 'east' AND source = 'website'"))
    connection.close()
    return f"page: {plan} | count: {count}"


# ----------------------------------------------------------------------------- scenarios

def create_scenario(servers: list[Server], factory: LeadFactory, creates: int, repeats: int, warmup: int,
                    concurrency: int) -> dict[str, list[LoadResult]]:
    runs: dict[str, list[LoadResult]] = {server.label: [] for server in servers}
    for server in servers:
        result = server.load([server.post(server.create_path, factory.payload()) for _ in range(warmup)],
                             concurrency)
        _check_statuses(server, "create warm-up", result, {201})
    for round_ in range(repeats):
        order = servers if round_ % 2 == 0 else list(reversed(servers))
        for server in order:
            requests = [server.post(server.create_path, factory.payload()) for _ in range(creates)]
            result = server.load(requests, concurrency)
            _check_statuses(server, "create", result, {201})
            runs[server.label].append(result)
            print(f"  create round {round_ + 1} {server.label:<22} {result.rps:8.0f} req/s  "
                  f"p50 {result.pct(50):6.2f} ms  p99 {result.pct(99):6.2f} ms  "
                  f"server CPU {result.cpu_ms:5.2f} ms/req  load {_loadavg()}", flush=True)
    return runs


def list_scenario(servers: list[Server], requests: int, concurrencies: list[int], seed: int, chunks: int = 5
                  ) -> tuple[dict[tuple[str, int], LoadResult], dict[str, dict[tuple[str, str], int]]]:
    r = random.Random(seed)
    pairs = [(r.choice(REGIONS), r.choice(SOURCES)) for _ in range(requests)]
    every_pair = [(region, source) for region in REGIONS for source in SOURCES]
    results: dict[tuple[str, int], LoadResult] = {}
    totals: dict[str, dict[tuple[str, str], int]] = {}
    for server in servers:
        warm = server.load([server.get(server.list_path(*pair)) for pair in every_pair], 1, keep_bodies=True)
        _check_statuses(server, "list warm-up", warm, {200})
        totals[server.label] = {}
        for pair, body in zip(every_pair, warm.bodies):
            page = json.loads(body)
            totals[server.label][pair] = page["total"]
            expected = min(50, page["total"])
            if len(page["items"]) != expected:
                raise RuntimeError(f"{server.label}: {pair} returned {len(page['items'])} items, expected {expected}")
            stamps = [item["created_at"] for item in page["items"]]
            if stamps != sorted(stamps, reverse=True):
                raise RuntimeError(f"{server.label}: {pair} is not sorted newest first")
            if any(item["region"] != pair[0] or item["source"] != pair[1] for item in page["items"]):
                raise RuntimeError(f"{server.label}: {pair} returned rows outside the filter")
    for concurrency in concurrencies:
        # Interleave: every server gets one chunk of the request sequence in turn (order alternating),
        # so background load on a shared machine hits all servers alike.
        size = -(-len(pairs) // chunks)
        parts: dict[str, list[LoadResult]] = {server.label: [] for server in servers}
        for number, start in enumerate(range(0, len(pairs), size)):
            for server in servers if number % 2 == 0 else list(reversed(servers)):
                part = server.load([server.get(server.list_path(*pair)) for pair in pairs[start:start + size]],
                                   concurrency)
                _check_statuses(server, "list", part, {200})
                parts[server.label].append(part)
        for server in servers:
            result = results[(server.label, concurrency)] = LoadResult.merge(parts[server.label])
            print(f"  list c={concurrency} {server.label:<22} {result.rps:8.0f} req/s  "
                  f"p50 {result.pct(50):6.2f} ms  p99 {result.pct(99):6.2f} ms  "
                  f"server CPU {result.cpu_ms:5.2f} ms/req  load {_loadavg()}", flush=True)
    return results, totals


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _check_statuses(server: Server, what: str, result: LoadResult, ok: set[int]) -> None:
    bad = {status: count for status, count in result.statuses.items() if status not in ok}
    if bad:
        raise RuntimeError(f"{server.label} {what}: unexpected HTTP statuses {bad}; see {server.log}")


# ----------------------------------------------------------------------------- report

def machine_info(server: str = "h11, asyncio loop") -> list[str]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    import sqlalchemy
    import starlette
    import uvicorn
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return [f"- CPU: {cpu}, nproc = {nproc}", f"- RAM: {mem}",
            f"- Python {platform.python_version()} ({platform.python_implementation()}), "
            f"SQLite {sqlite3.sqlite_version}, SQLAlchemy {sqlalchemy.__version__}, "
            f"Starlette {starlette.__version__}, uvicorn {uvicorn.__version__} ({server})",
            f"- OS: {platform.platform()}"]


def _git_revision() -> str:
    """HEAD and whether engine/ has uncommitted changes (read-only git commands)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "engine")
    return f"git {head}" + (f" + uncommitted changes in engine/ ({len(dirty.splitlines())} files, measured as "
                            f"they were on disk)" if dirty else " (engine/ clean)")


def _fmt(result: LoadResult) -> tuple[str, str, str, str]:
    return f"{result.rps:,.0f}", f"{result.pct(50):.2f}", f"{result.pct(99):.2f}", f"{result.cpu_ms:.2f}"


def _ratio(engine: LoadResult, base: LoadResult) -> str:
    """Throughput ratio, and in parentheses the same ratio from server CPU per request."""
    return f"{engine.rps / base.rps:.0%} (CPU {base.cpu_ms / engine.cpu_ms:.0%})"


def median_run(runs: list[LoadResult]) -> LoadResult:
    """The median round by req/s (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda run: run.rps)
    return ordered[(len(ordered) - 1) // 2]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows bulk-loaded for the list scenario")
    parser.add_argument("--creates", type=int, default=4000, help="measured creates per round per server")
    parser.add_argument("--repeats", type=int, default=3, help="create rounds per server (median reported)")
    parser.add_argument("--warmup", type=int, default=300, help="unmeasured creates per server first")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients for creates")
    parser.add_argument("--list-requests", type=int, default=500)
    parser.add_argument("--list-concurrency", default="1,8", help="comma-separated client counts for lists")
    parser.add_argument("--baseline-modes", default="threadpool,inline",
                        help="baseline variants to run; the engine ratio is against the fastest")
    parser.add_argument("--engine-diag", action="append", default=[], metavar="DIAG",
                        help="also run an informational engine variant in the create scenario, e.g. 'inline' or "
                             "'switch=0.0005' (see `serve --diag`); repeatable; not used for PASS/FAIL")
    parser.add_argument("--skip-create", action="store_true")
    parser.add_argument("--skip-list", action="store_true")
    parser.add_argument("--profile-engine", metavar="FILE",
                        help="run the create-scenario engine server under cProfile (all threads); stats to FILE")
    parser.add_argument("--workdir", help="where the SQLite files go (default: a temp dir, removed afterwards)")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"), help="markdown report to write ('' = none)")
    parser.add_argument("--seed", type=int, default=20260101)
    args = parser.parse_args()

    command = "/work/main/.venv/bin/python bench/bench_api.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    revision = _git_revision()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    began = time.perf_counter()
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="crm-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    modes = [mode.strip() for mode in args.baseline_modes.split(",") if mode.strip()]
    timings: dict[str, float] = {}
    report_rows: list[str] = []
    notes: list[str] = []
    summary: list[str] = []
    try:
        # ---------------------------------------------------------------- (a) create
        if not args.skip_create:
            phase = time.perf_counter()
            servers = [Server("engine", "engine", workdir / "engine_create.sqlite", profile=args.profile_engine)]
            servers += [Server(f"baseline-{mode}", "baseline", workdir / f"baseline_{mode}_create.sqlite", mode)
                        for mode in modes]
            diagnostics = [Server(f"engine[{diag}]", "engine", workdir / f"engine_diag{i}_create.sqlite", diag=diag)
                           for i, diag in enumerate(args.engine_diag)]
            for server in [servers[0], *diagnostics]:
                server.token = prepare_engine_db(server.db)
            for server in servers[1:]:
                prepare_baseline_db(server.db)
            servers += diagnostics
            print(f"(a) create: {args.repeats} rounds x {args.creates} creates, {args.concurrency} clients",
                  flush=True)
            try:
                for server in servers:
                    server.start(workdir)
                runs = create_scenario(servers, LeadFactory(args.seed), args.creates, args.repeats, args.warmup,
                                       args.concurrency)
            finally:
                for server in servers:
                    server.stop()
            medians = {label: median_run(results) for label, results in runs.items()}
            engine_run = medians["engine"]
            baselines = [server for server in servers if server.kind == "baseline"]
            best_label = max((s.label for s in baselines), key=lambda label: medians[label].rps)
            for server in baselines:
                base = medians[server.label]
                ratio = engine_run.rps / base.rps
                headline = server.label == best_label
                verdict = ("PASS" if ratio >= CREATE_TARGET else "FAIL") if headline else \
                    ("(pass)" if ratio >= CREATE_TARGET else "(fail)")
                report_rows.append(
                    f"| (a) create, {args.concurrency} clients, {args.creates} req x {args.repeats} rounds | "
                    f"{' | '.join(_fmt(engine_run))} | {server.label} | {' | '.join(_fmt(base))} | "
                    f"{_ratio(engine_run, base)} | ≥ 70 % of baseline req/s | {verdict} |")
                if headline:
                    summary.append(f"create: engine {engine_run.rps:,.0f} req/s vs {server.label} "
                                   f"{base.rps:,.0f} req/s = {ratio:.0%} (target ≥ 70 %) → {verdict}")
            for server in diagnostics:
                run, base = medians[server.label], medians[best_label]
                report_rows.append(
                    f"| (a) create — diagnostic variant **{server.label}** (not the shipped engine) | "
                    f"{' | '.join(_fmt(run))} | {best_label} | {' | '.join(_fmt(base))} | "
                    f"{_ratio(run, base)} | info only | — |")
            every = "; ".join(f"{label}: " + ", ".join(f"{run.rps:,.0f} ({run.cpu_ms:.2f} ms CPU/req)"
                                                       for run in results)
                              for label, results in runs.items())
            notes.append(f"Create rounds (req/s, in run order): {every}. Rounds alternate server order; "
                         f"{args.warmup} unmeasured creates per server first. Each server starts on an empty "
                         f"database. The engine runs its full path: bearer-token authentication (AuthMiddleware "
                         f"looks the token up in the database on every request), permission checks for role "
                         f"api_client, coercion incl. phone normalisation, defaults, validations, owner check, "
                         f"dedup look-ups on phone and email, insert, `created` event row. The baseline (as the "
                         f"issue defines it) has no authentication: it checks the input by hand and inserts one "
                         f"row; it receives the same Authorization header and ignores it.")
            timings["create scenario"] = time.perf_counter() - phase

        # ---------------------------------------------------------------- (b) list
        if not args.skip_list:
            phase = time.perf_counter()
            engine_db = workdir / "engine_list.sqlite"
            baseline_db = workdir / "baseline_list.sqlite"
            engine_token = prepare_engine_db(engine_db)
            prepare_baseline_db(baseline_db)
            print(f"(b) list: generating {args.rows:,} rows", flush=True)
            started = time.perf_counter()
            rows = generate_rows(args.rows, args.seed)
            timings["generate rows"] = time.perf_counter() - started
            timings["bulk load engine db"] = bulk_load(engine_db, rows)
            print(f"  loaded engine db in {timings['bulk load engine db']:.1f} s", flush=True)
            timings["bulk load baseline db"] = bulk_load(baseline_db, rows)
            print(f"  loaded baseline db in {timings['bulk load baseline db']:.1f} s", flush=True)
            del rows
            notes.append(f"List data: {args.rows:,} leads bulk-loaded into each database (same rows; created_at "
                         f"uniform over the last 730 days; region/source/status skewed, e.g. east 28 % … overseas "
                         f"3 %, website 25 % … csv_import 3 %, so a (region, source) pair holds 0.09 %–7 % of the "
                         f"rows). Requests pick (region, source) uniformly at random (same sequence for every "
                         f"server). Totals were cross-checked between servers for all 64 pairs. "
                         f"Query plan (engine db): {query_plan(engine_db)}.")
            servers = [Server("engine", "engine", engine_db, token=engine_token)]
            servers += [Server(f"baseline-{mode}", "baseline", baseline_db, mode) for mode in modes]
            concurrencies = [int(c) for c in args.list_concurrency.split(",") if c.strip()]
            try:
                for server in servers:
                    server.start(workdir)
                results, totals = list_scenario(servers, args.list_requests, concurrencies, args.seed + 1)
            finally:
                for server in servers:
                    server.stop()
            reference = totals["engine"]
            for label, counts in totals.items():
                if counts != reference:
                    raise RuntimeError(f"{label} totals differ from the engine's")
            for concurrency in concurrencies:
                engine_run = results[("engine", concurrency)]
                best_label = min((s.label for s in servers[1:]),
                                 key=lambda label: results[(label, concurrency)].pct(99))
                for server in servers[1:]:
                    base = results[(server.label, concurrency)]
                    ratio = engine_run.rps / base.rps
                    headline = server.label == best_label and concurrency == concurrencies[0]
                    judged = concurrency == concurrencies[0]
                    ok = engine_run.pct(99) <= LIST_P99_TARGET_MS
                    verdict = ("PASS" if ok else "FAIL") if headline else ("(pass)" if ok else "(fail)")
                    report_rows.append(
                        f"| (b) list 50 of {args.rows:,}, region+source, -created_at, total; {concurrency} "
                        f"client{'s' if concurrency > 1 else ''}, {args.list_requests} req | "
                        f"{' | '.join(_fmt(engine_run))} | {server.label} | {' | '.join(_fmt(base))} | "
                        f"{_ratio(engine_run, base)} | "
                        f"{'engine p99 ≤ 50 ms' if judged else 'info only (saturation)'} | "
                        f"{verdict if judged else '—'} |")
                    if headline:
                        summary.append(f"list ({concurrency} client{'s' if concurrency > 1 else ''}): engine p99 "
                                       f"{engine_run.pct(99):.2f} ms, p50 {engine_run.pct(50):.2f} ms "
                                       f"(target p99 ≤ 50 ms) → {verdict}")
            timings["list scenario (incl. load)"] = time.perf_counter() - phase
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    total = time.perf_counter() - began
    header = ("| scenario | engine req/s | engine p50 ms | engine p99 ms | engine CPU ms/req | baseline | "
              "baseline req/s | baseline p50 ms | baseline p99 ms | baseline CPU ms/req | engine/baseline req/s "
              "(CPU-cost ratio) | target | result |\n"
              "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---|")
    table = header + "\n" + "\n".join(report_rows)
    print()
    print(table)
    print()
    for line in summary:
        print(line)
    print(f"total run time {total:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())})")
    if args.out:
        text = [
            "# API benchmark: engine vs hand-written Starlette + SQLAlchemy Core (SQLite)", "",
            f"Generated by `bench/bench_api.py` on {date}.", "",
            "Command:", "", "```", command, "```", "",
            "## Machine", "", *machine_info(),
            f"- Load average (1/5/15 min) before the run: {' '.join(load_before)}, after: "
            f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])} (shared machine: other work may run "
            f"concurrently, hence the repeated, interleaved create rounds)",
            f"- Code: {revision}", "",
            "## Results", "",
            "PASS/FAIL is judged against the strongest baseline variant (the other variant's verdict is in "
            "parentheses). Create figures are the median of the rounds by req/s; latencies are per request, "
            "measured at the client (nearest-rank percentiles). *CPU ms/req* is the server process's user + "
            "system CPU time (all threads, from /proc) divided by the requests served: unlike req/s it hardly "
            "moves when other programs share the machine, so the CPU-cost ratio (baseline CPU ÷ engine CPU) "
            "is the steadier estimate of the throughput ratio on a dedicated core.", "",
            table, "",
            *[f"- {line}" for line in summary], "",
            "## Method", "",
            "- Each server is its own process: `uvicorn.run(app, host='127.0.0.1', port=<free>, "
            "log_level='warning', access_log=False, http='h11', loop='asyncio')`, 1 worker. Engine: "
            "`open_engine(load_blueprint('bench/blueprint'), 'sqlite:///…')` + `create_app`. Baseline: "
            "`bench/baseline_app.py` over the table `build_schema` generates for the same blueprint (identical "
            "columns and indexes), own SQLite file, same pragmas (WAL, synchronous=NORMAL, 64 MiB cache), "
            "writes behind a process lock with BEGIN IMMEDIATE. `baseline-threadpool` runs its DB calls via "
            "`run_in_threadpool` (as the engine does for reads), `baseline-inline` runs them on the event loop (as the engine does for a SQLite write when the database is free: `Database.run`).",
            "- Client: raw asyncio HTTP/1.1 over keep-alive connections (one per concurrent client), in the "
            "harness process; the same client for every server. Servers are measured one after another.",
            *[f"- {note}" for note in notes],
            f"- Phase times: {', '.join(f'{k} {v:.0f} s' for k, v in timings.items())}; total {total:.0f} s.",
            ""]
        Path(args.out).write_text("\n".join(text), encoding="utf-8")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
