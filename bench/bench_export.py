"""What exporting a big list costs (issue 19), on the SHIPPED blueprint (blueprints/crm).

    .venv/bin/python bench/bench_export.py [--db sqlite|postgresql://…] [--rows 1000000]

`--rows` leads are stored with a plain executemany (not timed); then the whole lead list is
exported as the system (every field a manager sees: 40 columns) to CSV and to XLSX through
engine/io/exports.py, each timed in wall and CPU time, with the peak RSS after each (ru_maxrss:
it only grows, so the CSV figure is the peak up to then and the XLSX one the peak overall).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from engine.engine import open_engine  # noqa: E402
from engine.extensions import load_extensions  # noqa: E402
from engine.io.exports import Exporter  # noqa: E402
from engine.metamodel import load_blueprint  # noqa: E402
from engine.runtime.ops.users import NewUser  # noqa: E402
from engine.runtime.records.actors import SYSTEM  # noqa: E402
from engine.runtime.records.queries import parse_list_query  # noqa: E402


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default="sqlite")
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-export-"))
    url = f"sqlite:///{folder / 'crm.sqlite'}" if args.db == "sqlite" else args.db
    extensions = load_extensions()
    model = load_blueprint(ROOT / "blueprints" / "crm", vocabulary=extensions.vocabulary)
    engine = open_engine(model, url, extensions=extensions)
    wang = engine.users.add(NewUser("wang", "王伟", "sales_rep", "east"))
    table = engine.schema.table("lead")
    now = engine.clock.now().replace(tzinfo=None)
    regions = ("east", "south", "north", "central")
    with engine.db.write() as connection:
        for start in range(0, args.rows, 20_000):
            connection.execute(table.insert(), [
                {"name": f"客户{i}", "company": f"某某制造有限公司{i}", "phone": f"+86136{i:08d}", "source": "expo",
                 "status": "new", "region": regions[i % 4], "owner": wang.id, "created_at": now, "updated_at": now,
                 "version": 1, "score": i % 100, "hiring_recently": False, "has_tenders": i % 2 == 0,
                 "next_follow_up": now.date(), "notes": "展会登记"} for i in range(start, min(start + 20_000, args.rows))])
    print(f"{args.rows} leads stored ({engine.db.engine.dialect.name}); RSS {rss_mb():.0f} MB")
    exporter = Exporter(engine.records)
    query = parse_list_query(model.entity("lead"), {"sort": "id"})
    for fmt in ("csv", "xlsx"):
        target = folder / f"leads.{fmt}"
        wall, cpu = time.perf_counter(), time.process_time()
        export = exporter.export("lead", query, actor=SYSTEM)
        if fmt == "csv":
            with target.open("wb") as out:
                count = exporter.write_csv(export, out)
        else:
            count = exporter.write_xlsx(export, target)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"{fmt:<5} {count} rows × {len(export.names)} columns  {wall:7.1f} s wall {cpu:7.1f} s cpu  "
              f"{count / wall:9,.0f} rows/s wall {count / cpu:9,.0f} rows/s cpu  {target.stat().st_size / 1e6:6.1f} MB  "
              f"peak RSS so far {rss_mb():.0f} MB")
        target.unlink()
    engine.close()


if __name__ == "__main__":
    main()
