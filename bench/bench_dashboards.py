"""What the dashboards cost on a million leads (issue 18).

    .venv/bin/python bench/bench_dashboards.py [--db sqlite|sqlite:///FILE|postgresql://…] [--leads 1000000] [--rounds 5]

On the SHIPPED blueprint (blueprints/crm) and its dashboards (blueprints/crm/dashboards.yaml).
The fill is done by SQL inside the database (a recursive CTE on SQLite, generate_series on
PostgreSQL), not through RecordService — it is the reads being measured: `--leads` leads owned
by 50 reps in 5 teams (1 in 20 unassigned), created over the two years before now, and five
events per lead (created, updated, and the lead follow-up funnel's stage_changed moves: new →
contacted → qualified, 1 in 10 skipping contacted, 1 in 8 going back), their typed copies in
crm_stage_moves (backfill_stage_moves, as an upgrade copies them), then ANALYZE (PostgreSQL:
VACUUM ANALYZE) (autovacuum
is off on the bench server). Then, each `--rounds` times, timed with wall time:

  scan          the group-by-status count + average budget with indexes switched off (SQLite:
                NOT INDEXED; PostgreSQL: enable_indexscan/bitmapscan/indexonlyscan off)
  group_by      the same figure through Analytics.figures: funnel_health's leads_by_status widget
                (the covering index the dashboards derive from it: status, budget)
  manager_home  every widget of manager_home for a sales manager (his team: 10 reps)
  heatmap       funnel_health's lead return rate × rep for the quarter (50 reps × 6 stages), as admin: the
                figures its cells show, as the page asks for them
  funnel_health every widget of funnel_health for the quarter, as admin
  home_page     GET /dashboards/manager_home as the manager (his home after sign-in), the whole HTML page with its SVG
                charts, through the web app in-process (Starlette's TestClient, signed in)
  health_page   GET /dashboards/funnel_health as admin, the same way

and prints the medians; the results go to bench/RESULTS.md by hand. A database this bench
filled before (`--db` naming it again) is measured as it is, without filling it twice (the
engine still applies its schema changes at open, as `crm serve` would).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from engine.analytics import period_at  # noqa: E402
from engine.analytics.metrics import backfill_stage_moves  # noqa: E402
from engine.engine import open_engine  # noqa: E402
from engine.metamodel import load_blueprint  # noqa: E402
from engine.metamodel.dashboards import WidgetKind  # noqa: E402
from engine.runtime.ops.users import NewUser  # noqa: E402
from engine.runtime.records.actors import SYSTEM, Actor  # noqa: E402
from engine.rules import FUNCTION_NAMES, FakeClock  # noqa: E402

NOW = dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.timezone.utc)
TWO_YEARS = 730 * 86400
STATUSES = ("new", "contacted", "qualified", "disqualified")

SQLITE_LEADS = """
INSERT INTO lead (id, name, source, region, industry, status, owner, budget, budget_currency, score, version,
                  created_at, updated_at)
WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < :leads)
SELECT n, 'lead ' || n,
       CASE n % 5 WHEN 0 THEN 'website' WHEN 1 THEN 'wecom' WHEN 2 THEN 'douyin' WHEN 3 THEN 'baidu' ELSE 'expo' END,
       CASE n % 7 WHEN 0 THEN 'east' WHEN 1 THEN 'south' WHEN 2 THEN 'north' WHEN 3 THEN 'central'
                  WHEN 4 THEN 'southwest' WHEN 5 THEN 'northwest' ELSE 'northeast' END,
       CASE n % 8 WHEN 0 THEN 'manufacturing' WHEN 1 THEN 'medical_devices' WHEN 2 THEN 'saas'
                  WHEN 3 THEN 'education' WHEN 4 THEN 'logistics' WHEN 5 THEN 'retail' WHEN 6 THEN 'finance'
                  ELSE 'other' END,
       CASE WHEN n % 10 = 0 THEN 'qualified' WHEN n % 4 = 0 THEN 'new' WHEN n % 4 = 1 THEN 'contacted'
            WHEN n % 4 = 2 THEN 'qualified' ELSE 'disqualified' END,
       CASE WHEN n % 20 = 0 THEN NULL ELSE :first_rep + n % 50 END,
       (n * 7919) % 500000, 'CNY', 0, 1,
       datetime(:start, '+' || ((n * 104729) % :span) || ' seconds') || '.000000',
       datetime(:start, '+' || ((n * 104729) % :span) || ' seconds') || '.000000'
FROM seq
"""
POSTGRES_LEADS = """
INSERT INTO lead (id, name, source, region, industry, status, owner, budget, budget_currency, score, version,
                  created_at, updated_at)
SELECT n, 'lead ' || n,
       (ARRAY['website','wecom','douyin','baidu','expo'])[n % 5 + 1],
       (ARRAY['east','south','north','central','southwest','northwest','northeast'])[n % 7 + 1],
       (ARRAY['manufacturing','medical_devices','saas','education','logistics','retail','finance','other'])[n % 8 + 1],
       CASE WHEN n % 10 = 0 THEN 'qualified' WHEN n % 4 = 0 THEN 'new' WHEN n % 4 = 1 THEN 'contacted'
            WHEN n % 4 = 2 THEN 'qualified' ELSE 'disqualified' END,
       CASE WHEN n % 20 = 0 THEN NULL ELSE :first_rep + n % 50 END,
       (n::bigint * 7919) % 500000, 'CNY', 0, 1,
       CAST(:start AS timestamp) + ((n::bigint * 104729) % :span) * interval '1 second',
       CAST(:start AS timestamp) + ((n::bigint * 104729) % :span) * interval '1 second'
FROM generate_series(1, :leads) AS n
"""
# Five events per lead, k = 0…4: created; then the follow-up moves its status says it made
# (contacted: new → contacted; qualified: → contacted → qualified, 1 in 10 skipping contacted;
# disqualified: → contacted, back to new 1 in 8, → disqualified), padded with `updated` events.
_MOVES = """
  CASE
    WHEN k = 0 THEN 'created'
    WHEN k = 1 AND status <> 'new' AND NOT skipping THEN 'stage_changed'
    WHEN k = 2 AND status IN ('qualified', 'disqualified') THEN 'stage_changed'
    WHEN k = 3 AND status = 'disqualified' AND back THEN 'stage_changed'
    ELSE 'updated' END"""


def _events_sql(dialect: str) -> str:
    if dialect == "sqlite":
        gen = ("WITH RECURSIVE ks(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM ks WHERE k < 4), "
               "base AS (SELECT id, status, created_at, id % 10 = 0 AS skipping, id % 8 = 3 AS back FROM lead)")
        json = "json_object('funnel', 'lead_follow_up', 'field', 'status', 'from', f, 'to', t, 'move', m, " \
               "'return', json(CASE WHEN m = 'back' THEN 'true' ELSE 'false' END), 'dwell_seconds', d)"
        at = "datetime(created_at, '+' || (k * 86400 + id % 7200) || ' seconds') || '.000000'"
        head = "INSERT INTO crm_events (entity, record_id, kind, actor_id, at, changes, data) " + gen
    else:
        gen = ("WITH ks AS (SELECT generate_series(0, 4) AS k), "
               "base AS (SELECT id, status, created_at, id % 10 = 0 AS skipping, id % 8 = 3 AS back FROM lead)")
        json = "json_build_object('funnel', 'lead_follow_up', 'field', 'status', 'from', f, 'to', t, 'move', m, " \
               "'return', m = 'back', 'dwell_seconds', d)"
        at = "created_at + (k * 86400 + id % 7200) * interval '1 second'"
        head = "INSERT INTO crm_events (entity, record_id, kind, actor_id, at, changes, data) " + gen
    return f"""{head}
SELECT 'lead', id, kind, NULL, {at}, NULL, CASE WHEN kind = 'stage_changed' THEN {json} ELSE NULL END
FROM (
  SELECT id, k, created_at, {_MOVES} AS kind,
    CASE WHEN k = 1 THEN 'new' WHEN k = 2 AND skipping THEN 'new' WHEN k = 2 THEN 'contacted'
         WHEN k = 3 THEN 'disqualified' END AS f,
    CASE WHEN k = 1 THEN 'contacted' WHEN k = 2 AND status = 'disqualified' AND NOT back THEN 'disqualified'
         WHEN k = 2 AND status = 'disqualified' THEN 'new' WHEN k = 2 THEN 'qualified'
         WHEN k = 3 THEN 'disqualified' END AS t,
    CASE WHEN k = 2 AND skipping THEN 'skip' WHEN k = 2 AND status = 'disqualified' AND back THEN 'back'
         WHEN k = 2 AND status = 'disqualified' THEN 'lose' WHEN k = 3 THEN 'lose' ELSE 'forward' END AS m,
    CASE WHEN k = 0 THEN NULL ELSE 86400 + (id * 37) % 172800 END AS d
  FROM base, ks
) AS moves
"""


def fill(runtime: Any, leads: int) -> tuple[dict[str, Actor], float]:
    started = time.perf_counter()
    people: dict[str, Actor] = {}
    for team in range(5):
        people[f"manager{team}"] = runtime.users.add(NewUser(f"manager{team}", f"经理{team}", "sales_manager",
                                                             f"team{team}"))
    first = None
    for rep in range(50):
        actor = runtime.users.add(NewUser(f"rep{rep:02d}", f"销售{rep:02d}", "sales_rep", f"team{rep % 5}",
                                          f"manager{rep % 5}"))
        people[actor.username] = actor
        first = actor.id if first is None else first
    people["admin"] = runtime.users.add(NewUser("admin", "管理员", "admin"))
    dialect = runtime.db.engine.dialect.name
    start = (NOW - dt.timedelta(seconds=TWO_YEARS)).replace(tzinfo=None).isoformat(sep=" ")
    with runtime.db.engine.begin() as connection:
        connection.execute(sa.text(SQLITE_LEADS if dialect == "sqlite" else POSTGRES_LEADS),
                           {"leads": leads, "first_rep": (first or 0) - 0, "start": start, "span": TWO_YEARS})
        connection.execute(sa.text(_events_sql(dialect)))
        if dialect == "postgresql":
            connection.execute(sa.text("SELECT setval(pg_get_serial_sequence('lead', 'id'), :n)"), {"n": leads})
        backfill_stage_moves(connection, runtime.schema)  # the typed stage moves, as an upgrade would copy them
    with runtime.db.engine.connect() as connection:
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        # PostgreSQL: VACUUM too, so the visibility map lets index-only scans skip the heap (what
        # autovacuum would do on a live server; it is off on the bench server)
        connection.execute(sa.text("VACUUM ANALYZE" if dialect == "postgresql" else "ANALYZE"))
    return people, time.perf_counter() - started


def scan(runtime: Any) -> Callable[[], Any]:
    dialect = runtime.db.engine.dialect.name

    def run() -> Any:
        with runtime.db.engine.connect() as connection:
            if dialect == "sqlite":
                return connection.execute(sa.text(
                    "SELECT status, count(*), avg(budget) FROM lead NOT INDEXED GROUP BY status")).all()
            for knob in ("enable_indexscan", "enable_bitmapscan", "enable_indexonlyscan"):
                connection.execute(sa.text(f"SET LOCAL {knob} = off"))
            rows = connection.execute(sa.text("SELECT status, count(*), avg(budget) FROM lead GROUP BY status")).all()
            connection.rollback()
            return rows
    return run


def dashboard(runtime: Any, name: str, actor: Actor) -> Callable[[], Any]:
    spec = runtime.model.dashboard(name)
    analytics = runtime.analytics

    def run() -> Any:
        period = period_at(spec.period, runtime.clock.now(), runtime.model.settings.timezone)
        out = []
        done: set[tuple[str, str | None, Any]] = set()  # as the page does: each funnel's overall once,
        for widget in spec.widgets:                      # then a heat map's rows for the value it shows
            if widget.kind in (WidgetKind.HEATMAP, WidgetKind.STAGES):
                asks = [(None, None)] + ([(widget.rows, widget.value)] if widget.rows else [])
                for rows, value in asks:
                    if (str(widget.funnel), rows, value) not in done:
                        done.add((str(widget.funnel), rows, value))
                        out.append(analytics.stage_cells(runtime.model.funnel(str(widget.funnel)), actor=actor,
                                                         period=period, filters={}, rows=rows,
                                                         values=None if value is None else (value,)))
            else:
                out.append(analytics.figures(widget, actor=actor, period=period, filters={}))
                if widget.kind is WidgetKind.CARD and widget.period_field is not None:
                    out.append(analytics.figures(widget, actor=actor, period=period.previous(), filters={}))
        return out
    return run


def page(runtime: Any, username: str, path: str) -> Callable[[], Any]:
    """GET `path` signed in as `username`: the page a user waits for, rendered in full."""
    from starlette.testclient import TestClient
    password = "bench-password-1"
    runtime.users.set_password(username, password)
    client = TestClient(runtime.web_app(key="k" * 32), follow_redirects=False)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert token is not None
    assert client.post("/login", data={"username": username, "password": password, "csrf_token": token.group(1),
                                       "next": "/"}).status_code == 303

    def run() -> Any:
        answer = client.get(path)
        assert answer.status_code == 200 and "<table" in answer.text, (path, answer.status_code)
        return answer
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", default="sqlite")
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-dashboards-"))
    url = f"sqlite:///{folder / 'crm.sqlite'}" if args.db == "sqlite" else args.db
    model = load_blueprint(ROOT / "blueprints" / "crm", functions=FUNCTION_NAMES)
    runtime = open_engine(model, url, clock=FakeClock(NOW))
    if runtime.users.find("admin") is not None:  # a database this bench filled before (--db URL): read it again
        people = {name: actor for name in ("manager0", "admin") if (actor := runtime.users.find(name)) is not None}
        took = 0.0
    else:
        people, took = fill(runtime, args.leads)
    with runtime.db.engine.connect() as connection:
        counts = {table: connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
                  for table in ("lead", "crm_events")}
    how = f"filled in {took:.0f} s" if took else "filled by an earlier run"
    print(f"{runtime.db.engine.dialect.name}: {counts['lead']:,} leads and {counts['crm_events']:,} events, {how} "
          f"(load {os.getloadavg()[0]:.1f})", flush=True)
    group_widget = model.dashboard("funnel_health").widget("leads_by_status")  # count + avg budget by status
    by_status = lambda: runtime.analytics.figures(  # noqa: E731
        group_widget, actor=SYSTEM, period=period_at("all", NOW, "Asia/Shanghai"), filters={})
    heat = model.dashboard("funnel_health").widget("lead_returns_by_rep")
    heatmap = lambda: runtime.analytics.stage_cells(  # noqa: E731
        model.funnel(str(heat.funnel)), actor=people["admin"], period=period_at("quarter", NOW, "Asia/Shanghai"),
        filters={}, rows="owner", values=(heat.value,))
    home, health = page(runtime, "manager0", "/dashboards/manager_home"), page(runtime, "admin", "/dashboards/funnel_health")
    cases = {"scan": scan(runtime), "group_by": by_status,
             "manager_home": dashboard(runtime, "manager_home", people["manager0"]),
             "heatmap": heatmap, "funnel_health": dashboard(runtime, "funnel_health", people["admin"]),
             "home_page": home, "health_page": health}
    times: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}  # this process's CPU: with SQLite, the database's too
    for round_ in range(args.rounds):
        for name, run in cases.items():
            began, began_cpu = time.perf_counter(), time.process_time()
            run()
            times[name].append(time.perf_counter() - began)
            cpu[name].append(time.process_time() - began_cpu)
        print(f"round {round_ + 1}: " + ", ".join(f"{name} {values[-1] * 1000:.0f} ms (cpu {cpu[name][-1] * 1000:.0f})"
                                                  for name, values in times.items())
              + f" (load {os.getloadavg()[0]:.1f})", flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    cpus = {name: statistics.median(values) for name, values in cpu.items()}
    print("medians: " + ", ".join(f"{name} {value * 1000:.0f} ms (cpu {cpus[name] * 1000:.0f})"
                                  for name, value in medians.items()))
    print(f"scan / group_by = {medians['scan'] / medians['group_by']:.1f}× wall, "
          f"{cpus['scan'] / max(cpus['group_by'], 1e-6):.1f}× cpu")
    runtime.close()


if __name__ == "__main__":
    main()
