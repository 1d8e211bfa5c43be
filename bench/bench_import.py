"""What an import of a big spreadsheet costs (issue 19), on the SHIPPED blueprint (blueprints/crm).

    .venv/bin/python bench/bench_import.py [--db sqlite|postgresql://…] [--rows 127000] [--existing 100000]
                                           [--batch 2000]

1. `--existing` leads are stored first (a plain executemany; not timed), with the owners wang and li.
2. A sales ledger of `--rows` rows is written as XLSX (the shipped `sales_ledger` mapping's columns,
   tests/support/import_files.py: 1 % duplicates inside the file, 1 % of stored leads, 4 % defects,
   Excel date serials and Chinese option labels).
3. Timed, each step alone, in wall time and this process's CPU time (the machine is shared; CPU
   time is the steadier figure; PostgreSQL's own work is in wall time only):
   read     — the XLSX through python-calamine
   health   — the data-health report (every row validated, dedup against the stored leads)
   import   — `Importer.run`: batches through RecordService.create_batch with rules, events,
              dedup/merge and the checkpoint, as `crm import` runs it
   plain    — a plain executemany of the same rows' values into a copy of the lead table
              (no validation, no rules, no events): the floor to compare with
4. The ratio import / plain and the peak RSS (ru_maxrss) are printed — after the setup, after the
   import (the figure that matters: the file is streamed), and at the end (the plain step holds
   its rows); bench/RESULTS.md keeps them.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from engine.engine import open_engine  # noqa: E402
from engine.io.readers import read_table  # noqa: E402
from engine.metamodel import load_blueprint  # noqa: E402
from engine.extensions import load_extensions  # noqa: E402
from engine.runtime.ops.users import NewUser  # noqa: E402
from engine.runtime.records.actors import SYSTEM  # noqa: E402
from tests.support.import_files import planted_ledger, write_xlsx  # noqa: E402


class Timer:
    def __enter__(self) -> "Timer":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ")[0]
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default="sqlite")
    parser.add_argument("--rows", type=int, default=127_000)
    parser.add_argument("--existing", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-import-"))
    url = f"sqlite:///{folder / 'crm.sqlite'}" if args.db == "sqlite" else args.db
    extensions = load_extensions()
    model = load_blueprint(ROOT / "blueprints" / "crm", vocabulary=extensions.vocabulary)
    engine = open_engine(model, url, extensions=extensions)
    wang = engine.users.add(NewUser("wang", "王伟", "sales_rep", "east"))
    engine.users.add(NewUser("li", "李娜", "sales_rep", "east"))
    planted = planted_ledger(args.rows, serial_as_text=False)
    phones = planted.stored_phones + [f"136{i:08d}" for i in range(args.existing - len(planted.stored_phones))]
    table = engine.schema.table("lead")
    now = engine.clock.now().replace(tzinfo=None)
    with engine.db.write() as connection:
        for start in range(0, len(phones), 5000):  # in chunks: the bench's own lists must not set the peak RSS
            connection.execute(table.insert(), [
                {"name": f"老客户{i}", "phone": f"+86{number}", "source": "expo", "status": "new", "owner": wang.id,
                 "created_at": now, "updated_at": now, "version": 1, "score": 0, "hiring_recently": False,
                 "has_tenders": False} for i, number in enumerate(phones[start:start + 5000], start)])
    path = write_xlsx(folder / "ledger.xlsx", planted.rows)
    del planted, phones
    gc.collect()
    setup_rss = rss_mb()
    print(f"{args.rows} rows ({path.stat().st_size / 1e6:.1f} MB XLSX), {args.existing} stored leads, "
          f"{engine.db.engine.dialect.name}, batch {args.batch}, load {load()}; peak RSS after setup {setup_rss:.0f} MB",
          flush=True)

    with Timer() as read:
        sheet = read_table(path)
        counted = sum(1 for _ in sheet.iter_rows())  # a full pass: what each of health and import reads
    assert counted == args.rows
    print(f"read    {read.wall:7.2f} s wall {read.cpu:7.2f} s cpu  {args.rows / read.wall:9,.0f} rows/s  "
          f"(peak RSS so far {rss_mb():.0f} MB)", flush=True)
    importer = engine.importer
    plan = importer.prepare(sheet, model.import_mapping("sales_ledger"), path)
    with Timer() as health:
        report = importer.health(plan)
    print(f"health  {health.wall:7.2f} s wall {health.cpu:7.2f} s cpu  {args.rows / health.wall:9,.0f} rows/s  "
          f"(would create {report.created}, merge {report.merged}, reject {report.rejected}; "
          f"peak RSS so far {rss_mb():.0f} MB)", flush=True)
    with Timer() as run:
        outcome = importer.run(plan, actor=SYSTEM, batch=args.batch)
    record = outcome.record
    print(f"import  {run.wall:7.2f} s wall {run.cpu:7.2f} s cpu  {args.rows / run.wall:9,.0f} rows/s  "
          f"(created {record.created}, merged {record.merged}, rejected {record.rejected}; load {load()})")
    import_rss = rss_mb()
    print(f"peak RSS: {setup_rss:.0f} MB after the setup (stored leads, the XLSX written), "
          f"{import_rss:.0f} MB after read + health + import")

    values = []
    for cells in sheet.iter_rows():
        mapped, errors = plan.mapper.values(cells)
        if not errors:
            values.append(mapped)
    copy = sa.Table("bench_plain_lead", sa.MetaData(), *(sa.Column(c.name, c.type, primary_key=c.primary_key)
                                                           for c in table.columns))
    copy.create(engine.db.engine)
    kinds = engine.schema.kinds
    entity = model.entity("lead")
    rows: list[dict[str, Any]] = []
    for mapped in values:
        row: dict[str, Any] = {"created_at": now, "updated_at": now, "version": 1, "owner": mapped.get("owner")}
        for spec in entity.fields:
            value = mapped.get(spec.name)
            row[spec.name] = value if not isinstance(value, (list, dict)) else None
        row["source"] = "csv_import"
        row["status"] = "new"
        rows.append(row)
    with Timer() as plain:
        with engine.db.write() as connection:
            for start in range(0, len(rows), args.batch):
                connection.execute(copy.insert(), rows[start:start + args.batch])
    print(f"plain   {plain.wall:7.2f} s wall {plain.cpu:7.2f} s cpu  {len(rows) / plain.wall:9,.0f} rows/s  "
          f"(executemany of the {len(rows)} valid rows, no checks)")
    print(f"ratio import/plain: {run.wall / plain.wall:.1f}× wall, {run.cpu / max(plain.cpu, 1e-9):.1f}× cpu; "
          f"peak RSS {rss_mb():.0f} MB; load {load()}")
    del kinds
    engine.close()
    if os.environ.get("KEEP") is None and args.db == "sqlite":
        for item in folder.iterdir():
            item.unlink()
        folder.rmdir()


if __name__ == "__main__":
    main()
