"""How long the 360° page of a big customer takes to render (issue 20): an account with 5,000
related records — contacts, opportunities, orders, tickets and activities, each with its
`created` event — served by the real app (Starlette TestClient, signed in through the form).

    .venv/bin/python bench/bench_panorama.py [--related 5000] [--pages 30]

On the SHIPPED CRM blueprint, SQLite file. The related rows are written by executemany (the
page reads them, it does not care how they came), then ANALYZE. Reports the median and p90 of
wall and process CPU time per GET /account/<id> (target: ≤ 300 ms; on this shared machine the
CPU time is the figure to judge), and the same for the filtered timeline.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
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
from starlette.testclient import TestClient  # noqa: E402

from engine.engine import Engine, open_engine  # noqa: E402
from engine.metamodel import load_blueprint  # noqa: E402
from engine.rules import FUNCTION_NAMES  # noqa: E402
from engine.runtime.ops.users import NewUser  # noqa: E402
from engine.runtime.records.actors import SYSTEM  # noqa: E402

TARGET_MS = 300
PASSWORD = "bench-Panorama-2026!"


def load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ")[0]
    except OSError:
        return "?"


def fill(engine: Engine, account: int, related: int, owner: int) -> None:
    now = engine.clock.now().replace(tzinfo=None)
    product = engine.records.create("product", {"name": "基准产品", "model_code": "B-1", "category": "equipment",
                                                "price": 1000}, actor=SYSTEM).record["id"]
    each = related // 5
    rows: dict[str, list[dict[str, Any]]] = {
        "contact": [{"name": f"联系人{i}", "account": account, "role": "user"} for i in range(each)],
        "opportunity": [{"name": f"商机{i}", "account": account, "stage": "qualify", "probability": 10,
                         "discount": 0, "approval_status": "not_required", "delivery_risk": False,
                         "comparison_sheet_sent": False, "next_follow_up": now.date()} for i in range(each)],
        "order": [{"order_no": f"SO-B-{i}", "account": account, "product": product, "quantity": 1,
                   "amount": 1000, "amount_currency": "CNY", "order_date": now.date(), "status": "confirmed"}
                  for i in range(each)],
        "ticket": [{"subject": f"工单{i}", "customer": account, "category": "usage", "priority": "P3",
                    "status": "closed", "channel": "hotline", "resolution": "已处理"} for i in range(each)],
        "activity": [{"subject": f"跟进{i}", "account": account, "kind": "call", "done": True, "outcome": "reached"}
                     for i in range(each)],
    }
    with engine.db.write() as connection:
        for entity, items in rows.items():
            table = engine.schema.table(entity)
            columns = set(table.c.keys())
            stamped = [{**{k: v for k, v in item.items() if k in columns}, "created_at": now - dt.timedelta(minutes=i),
                        "updated_at": now - dt.timedelta(minutes=i), "version": 1, "owner": owner}
                       for i, item in enumerate(items)]
            connection.execute(sa.insert(table), stamped)
            ids = [row.id for row in connection.execute(sa.select(table.c.id).order_by(table.c.id.desc())
                                                        .limit(len(items)))]
            connection.execute(sa.insert(engine.schema.events), [
                {"entity": entity, "record_id": record_id, "kind": "created", "actor_id": owner,
                 "at": now - dt.timedelta(minutes=index), "changes": {}, "data": {}}
                for index, record_id in enumerate(ids)])
        connection.execute(sa.text("ANALYZE"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--related", type=int, default=5000)
    parser.add_argument("--pages", type=int, default=30)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-panorama-"))
    engine = open_engine(load_blueprint(ROOT / "blueprints" / "crm", functions=FUNCTION_NAMES),
                         f"sqlite:///{folder / 'crm.sqlite'}")
    print(f"bench_panorama: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {args.related:,} related records, "
          f"{args.pages} pages, load {load()}")
    admin = engine.users.add(NewUser("boss", "老板", "admin", password=PASSWORD))
    account = engine.records.create("account", {"name": "基准大客户", "owner": admin.id}, actor=SYSTEM).record["id"]
    fill(engine, account, args.related, admin.id)
    client = TestClient(engine.web_app())
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert token is not None
    client.post("/login", data={"username": "boss", "password": PASSWORD, "csrf_token": token.group(1), "next": "/"})
    for url in (f"/account/{account}", f"/account/{account}?timeline=ticket"):
        first = client.get(url)
        assert first.status_code == 200 and "全景动态" in first.text, first.status_code
        times, cpus = [], []
        for _ in range(args.pages):
            start, cpu = time.perf_counter(), time.process_time()
            response = client.get(url)
            times.append((time.perf_counter() - start) * 1000)
            cpus.append((time.process_time() - cpu) * 1000)  # the process's CPU: the app's threads included
            assert response.status_code == 200
        times.sort()
        median, p90 = statistics.median(times), times[int(len(times) * 0.9) - 1]
        print(f"GET {url}: wall median {median:.0f} ms, p90 {p90:.0f} ms; CPU median {statistics.median(cpus):.0f} ms "
              f"(target ≤ {TARGET_MS} ms): {'PASS' if statistics.median(cpus) <= TARGET_MS else 'FAIL'} on CPU; "
              f"load {load()}")
    engine.close()


if __name__ == "__main__":
    main()
