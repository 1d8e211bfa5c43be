"""Where the engine's time goes, without HTTP: cProfile of RecordService.create / .list in-process,
plus micro-benchmarks of the SQLAlchemy statement patterns the create path uses.

    /work/main/.venv/bin/python bench/profile_engine.py [--creates 3000] [--list-rows 1000000] [--top 25]

For the server side (HTTP + thread pool included) use
    bench/bench_api.py --skip-list --profile-engine /tmp/engine.prof   (cProfile on every thread)
    bench/bench_api.py serve engine --db X --port N --diag inline --profile /tmp/inline.prof
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import pstats
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import sqlalchemy as sa  # noqa: E402

from bench_api import (BENCH_USER, BLUEPRINT, REGIONS, SOURCES, LeadFactory, bulk_load,  # noqa: E402
                       generate_rows, prepare_engine_db)
from engine.metamodel import load_blueprint  # noqa: E402
from engine.rules import FUNCTION_NAMES  # noqa: E402
from engine.runtime.records.actors import Actor
from engine.runtime.records.fieldkinds import normalize_phone
from engine.runtime.records.queries import parse_list_query
from engine.engine import Engine, open_engine


def top(profile: cProfile.Profile, sort: str, count: int, pattern: str = "") -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats(sort).print_stats(pattern, count) if pattern else stats.sort_stats(sort).print_stats(count)
    text = out.getvalue()
    return text[text.find("   ncalls"):]


def profile_create(runtime: Engine, actor: Actor, creates: int, count: int) -> None:
    factory = LeadFactory(11)
    for _ in range(200):
        runtime.records.create("lead", factory.payload(), actor=actor)
    payloads = [factory.payload() for _ in range(2 * creates)]
    started = time.perf_counter()
    for payload in payloads[:creates]:
        result = runtime.records.create("lead", payload, actor=actor)
        runtime.records.to_json("lead", result.record)
    plain = (time.perf_counter() - started) / creates
    print(f"RecordService.create + to_json, sequential, no profiler: {plain * 1e6:,.0f} µs per lead "
          f"(≈ {1 / plain:,.0f} creates/s on one core, before HTTP)\n")
    profile = cProfile.Profile()
    profile.enable()
    for payload in payloads[creates:]:
        result = runtime.records.create("lead", payload, actor=actor)
        runtime.records.to_json("lead", result.record)
    profile.disable()
    print("== create: engine functions by cumulative time ==")
    print(top(profile, "cumulative", count, "engine/"))
    print("== create: everything by own time ==")
    print(top(profile, "tottime", count))


def micro(runtime: Engine, n: int = 3000) -> None:
    table, events = runtime.schema.table("lead"), runtime.schema.events
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    row = dict(created_at=now, updated_at=now, created_by=None, owner=None, version=1, name="王伟",
               phone="+8613800138000", email="a@b.cn", company="上海精密机械有限公司", region="east", source="website",
               status="new", next_follow_up=dt.date.today(), amount=1000.0, amount_currency="CNY", duplicate_of=None)
    event_row = dict(entity="lead", record_id=1, kind="created", actor_id=None, at=now,
                     changes={"name": [None, "王伟"], "phone": [None, "+8613800138000"]}, data={})
    prebuilt = {name: sa.select(table).where(table.c[name] == sa.bindparam("v")).order_by(table.c.id).limit(1)
                for name in ("phone", "email")}
    insert, insert_event = table.insert(), events.insert()

    def dedup_per_call(connection: sa.Connection) -> None:
        for name, value in (("phone", "+8613900000000"), ("email", "zz@b.cn")):
            connection.execute(sa.select(table).where(table.c[name] == value).order_by(table.c.id).limit(1)) \
                .mappings().first()

    def dedup_prebuilt(connection: sa.Connection) -> None:
        for name, value in (("phone", "+8613900000000"), ("email", "zz@b.cn")):
            connection.execute(prebuilt[name], {"v": value}).mappings().first()

    cases = [
        ("lead insert: connection.execute(table.insert().values(row))  [per-call .values()]",
         lambda c: c.execute(table.insert().values(row))),
        ("lead insert: connection.execute(prebuilt insert, row)",
         lambda c: c.execute(insert, row)),
        ("2 dedup selects built per call", dedup_per_call),
        ("2 dedup selects prebuilt with bindparam", dedup_prebuilt),
        ("event insert: events.insert().values(...) per call",
         lambda c: c.execute(events.insert().values(**event_row))),
        ("event insert: connection.execute(prebuilt insert, params)",
         lambda c: c.execute(insert_event, event_row)),
    ]
    print("== micro-benchmarks (one open transaction, rolled back) ==")
    for label, case in cases:
        with runtime.db.engine.connect() as connection:
            transaction = connection.begin()
            for _ in range(200):
                case(connection)
            started = time.perf_counter()
            for _ in range(n):
                case(connection)
            elapsed = time.perf_counter() - started
            transaction.rollback()
        print(f"  {label:<78} {elapsed / n * 1e6:7.1f} µs")
    started = time.perf_counter()
    for _ in range(n):
        normalize_phone("13912345678", "CN")
    print(f"  {'fieldkinds.normalize_phone (phonenumbers parse + validate + format)':<78} "
          f"{(time.perf_counter() - started) / n * 1e6:7.1f} µs\n")


def profile_list(runtime: Engine, actor: Actor, requests: int, count: int) -> None:
    entity = runtime.records.entity("lead")
    r = random.Random(3)
    pairs = [(r.choice(REGIONS), r.choice(SOURCES)) for _ in range(requests)]

    def one(region: str, source: str) -> None:
        query = parse_list_query(entity, {"region": region, "source": source, "sort": "-created_at",
                                          "per_page": "50"})
        page = runtime.records.list("lead", query, actor=actor)
        [runtime.records.to_json("lead", item) for item in page.items]

    for pair in pairs[:64]:
        one(*pair)
    started = time.perf_counter()
    for pair in pairs:
        one(*pair)
    plain = (time.perf_counter() - started) / requests
    print(f"list (parse_list_query + RecordService.list + to_json), no profiler: {plain * 1e3:.2f} ms per page")
    profile = cProfile.Profile()
    profile.enable()
    for pair in pairs:
        one(*pair)
    profile.disable()
    print("== list: engine functions by cumulative time ==")
    print(top(profile, "cumulative", count, "engine/"))
    print("== list: everything by own time ==")
    print(top(profile, "tottime", count))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--creates", type=int, default=3000)
    parser.add_argument("--list-rows", type=int, default=0, help="also profile lists over this many rows")
    parser.add_argument("--list-requests", type=int, default=500)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    model = load_blueprint(BLUEPRINT, functions=FUNCTION_NAMES)
    with tempfile.TemporaryDirectory(prefix="crm-profile-") as folder:
        prepare_engine_db(Path(folder) / "create.sqlite")  # tables + the api_client user
        runtime = open_engine(model, f"sqlite:///{folder}/create.sqlite")
        actor = runtime.users.find(BENCH_USER)
        micro(runtime)
        profile_create(runtime, actor, args.creates, args.top)
        runtime.close()
        if args.list_rows:
            db = Path(folder) / "list.sqlite"
            prepare_engine_db(db)
            bulk_load(db, generate_rows(args.list_rows))
            runtime = open_engine(model, f"sqlite:///{db}")
            profile_list(runtime, runtime.users.find(BENCH_USER), args.list_requests, args.top)
            runtime.close()


if __name__ == "__main__":
    main()
