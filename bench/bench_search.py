"""Search (`q=`) on the SHIPPED blueprint at a million leads: the search index vs a LIKE scan.

    .venv/bin/python bench/bench_search.py [--rows 1000000] [--db sqlite|postgresql://…] [--repeats 7]

The engine opens a fresh database with blueprints/crm (every table, index, search index and
trigger it creates), then `--rows` leads are inserted with executemany straight into the lead
table — so each row passes the same indexes and search triggers a create does, but not the
rules — and the database is ANALYZEd (PostgreSQL here runs without autovacuum). Then, for each
query a user types (a company fragment, a person's name, a phone fragment, an e-mail fragment,
a 2-character name, text nobody has), RecordService.list answers the default page (20 rows,
newest first, with the total) in two ways, alternating: through the search index, and as the
engine did before it (a LIKE '%…%' over every search field). Printed: median milliseconds per
page over `--repeats` and the ratio; load average with each query.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import sqlalchemy as sa  # noqa: E402

from engine.engine import open_engine  # noqa: E402
from engine.metamodel import load_blueprint  # noqa: E402
from engine.rules import FUNCTION_NAMES  # noqa: E402
from engine.runtime.records.actors import SYSTEM  # noqa: E402
from engine.runtime.records.queries import parse_list_query  # noqa: E402

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂"
CITIES = ["宁波", "杭州", "苏州", "无锡", "温州", "佛山", "东莞", "青岛", "成都", "武汉"]
TRADES = ["精工机械", "智能装备", "电子科技", "精密仪器", "新材料", "医疗器械", "环保科技", "自动化"]
QUERIES = [("company fragment", "海鸥精密"), ("person's name", "欧阳明远"), ("phone fragment", "755501"),
           ("e-mail fragment", "ouyang.mingyuan"), ("2-character name", "欧阳"), ("nobody", "不存在的公司名称"),
           # many hits: a common name (~1 in 500 leads), a city in one company in ten, a trade word in
           # one in eight, and a text in every company name
           ("common 2-char name", "王磊"), ("city, 1 in 10", "宁波"), ("2-char, 1 in 8", "精工"),
           ("4-char, 1 in 8", "精工机械"), ("in every record", "有限公司")]


def fill(url: str, rows: int) -> None:
    rng = random.Random(11)
    now = dt.datetime(2026, 11, 1)
    engine = sa.create_engine(url)
    columns = ["created_at", "updated_at", "version", "name", "company", "phone", "email", "source", "status",
               "region"]
    placeholders = ", ".join(f":{name}" for name in columns)
    insert = sa.text(f"INSERT INTO lead ({', '.join(columns)}) VALUES ({placeholders})")
    batch: list[dict[str, Any]] = []
    with engine.begin() as connection:
        for number in range(rows):
            at = now - dt.timedelta(seconds=number * 7)
            batch.append({"created_at": at, "updated_at": at, "version": 1,
                          "name": rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN),
                          "company": f"{rng.choice(CITIES)}{rng.choice(TRADES)}{number}有限公司",
                          "phone": f"+861{rng.randrange(30, 99)}{number:08d}", "email": f"user{number}@example.cn",
                          "source": rng.choice(["website", "douyin", "baidu", "expo"]), "status": "new",
                          "region": rng.choice(["east", "south", "north"])})
            if len(batch) == 10_000:
                connection.execute(insert, batch)
                batch.clear()
        # the needles: one lead each query above should find (the 2-character one finds it too)
        batch.append({"created_at": now - dt.timedelta(days=400), "updated_at": now, "version": 1,
                      "name": "欧阳明远", "company": "温州海鸥精密电器有限公司", "phone": "+8613755501234",
                      "email": "ouyang.mingyuan@haiou.cn", "source": "expo", "status": "new", "region": "east"})
        connection.execute(insert, batch)
    with engine.connect() as connection:
        connection.exec_driver_sql("ANALYZE")
        connection.commit()
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", default="sqlite")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    model = load_blueprint(HERE.parent / "blueprints" / "crm", functions=FUNCTION_NAMES)
    folder = tempfile.mkdtemp(prefix="bench-search-")
    if args.db == "sqlite":
        url = f"sqlite:///{folder}/crm.sqlite"
    else:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(args.db)
        with admin.begin() as connection:
            connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = f"{args.db}?options=-csearch_path%3D{schema}"
    runtime = open_engine(model, url)
    started = time.perf_counter()
    fill(url, args.rows)
    print(f"filled {args.rows:,} leads in {time.perf_counter() - started:.0f} s ({args.db}); load {os.getloadavg()[0]:.1f}")
    entity = model.entity("lead")
    indexed = runtime.records.search_indexes
    print(f"{'query':<18} {'text':<18} {'index ms':>9} {'LIKE ms':>9} {'ratio':>6}  found  load")
    for label, text in QUERIES:
        query = parse_list_query(entity, {"q": text})
        timings: dict[str, list[float]] = {"index": [], "like": []}
        totals = set()
        for repeat in range(args.repeats):
            for way in (("index", "like") if repeat % 2 == 0 else ("like", "index")):
                runtime.records.search_indexes = indexed if way == "index" else {}
                started = time.perf_counter()
                page = runtime.records.list("lead", query, actor=SYSTEM)
                timings[way].append((time.perf_counter() - started) * 1000)
                totals.add(page.total)
        runtime.records.search_indexes = indexed
        index_ms, like_ms = statistics.median(timings["index"]), statistics.median(timings["like"])
        print(f"{label:<18} {text:<18} {index_ms:9.1f} {like_ms:9.1f} {like_ms / index_ms:6.1f}  {sorted(totals)}"
              f"  {os.getloadavg()[0]:.1f}", flush=True)
    runtime.close()
    if args.db != "sqlite":
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


if __name__ == "__main__":
    main()
