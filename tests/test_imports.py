"""Spreadsheet imports on the shipped CRM: the health report counts exactly the planted defects,
the import accounts for every row, an interrupted import resumes without duplicating, another
CRM's export imports with a saved mapping, and bad mappings or files are refused clearly."""

from __future__ import annotations

import datetime as dt
import functools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.engine import Engine
from engine.io.imports import ImportRefused
from engine.io.readers import FileUnreadable, read_table
from engine.metamodel import BlueprintInvalid
from engine.metamodel.imports import load_import_file
from engine.runtime.ops.users import NewUser
from engine.runtime.records.actors import SYSTEM
from engine.runtime.storage.times import as_utc
from engine.runtime.web.screens.i18n import translate
from tests.support.blueprints import SHIPPED_CRM, write_blueprint
from tests.support.services import PG_ADMIN_URL
from tests.support.import_files import planted_ledger, write_csv, write_xlsx

ROOT = Path(__file__).resolve().parent.parent
ROWS = int(os.environ.get("CRM_TEST_IMPORT_ROWS", "10000"))


def crm_engine(make_engine: Callable[..., Engine]) -> Engine:
    engine = make_engine(SHIPPED_CRM)
    engine.users.add(NewUser("manager", "赵经理", "sales_manager", "east"))
    engine.users.add(NewUser("wang", "王伟", "sales_rep", "east", "manager"))
    engine.users.add(NewUser("li", "李娜", "sales_rep", "east", "manager"))
    return engine


def store_leads(engine: Engine, phones: list[str]) -> None:
    wang = engine.users.find("wang")
    assert wang is not None
    for index, number in enumerate(phones):
        engine.records.create("lead", {"name": f"老客户{index}", "phone": number, "source": "expo",
                                       "owner": wang.id}, actor=SYSTEM)


def leads(engine: Engine) -> list[dict[str, Any]]:
    table = engine.schema.table("lead")
    with engine.db.read() as connection:
        rows = connection.execute(sa.select(table).order_by(table.c.phone, table.c.name)).mappings().all()
    return [dict(row) for row in rows]


def test_health_report_counts_the_planted_defects_and_the_import_accounts_for_every_row(
        make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    engine = crm_engine(make_engine)
    planted = planted_ledger(ROWS)
    store_leads(engine, planted.stored_phones)
    path = write_csv(tmp_path / "销售台账.csv", planted.rows, encoding="gbk")
    table = read_table(path)
    assert table.encoding == "gb18030"  # detected: Chinese Excel's code page, read as its superset
    importer = engine.importer
    plan = importer.prepare(table, engine.model.import_mapping("sales_ledger"), path.read_bytes())
    before = len(leads(engine))

    report = importer.health(plan)

    assert len(leads(engine)) == before  # the report wrote nothing
    invalid = {item.field: item.invalid for item in report.fields if item.invalid}
    assert invalid == {"phone": planted.bad_phone, "region": planted.bad_region, "name": planted.no_name,
                       "next_follow_up": planted.bad_date}
    assert len(report.duplicates_in_file) == planted.dup_in_file
    assert len(report.duplicates_in_db) == planted.dup_in_db
    assert (report.created, report.merged, report.rejected) == (planted.created, planted.merged, planted.rejected)
    by_field = {item.field: item for item in report.fields}
    assert by_field["phone"].problems[0].row == 30 + 2  # row numbers as Excel shows them (header = row 1)
    assert by_field["phone"].problems[0].value == "12345"
    assert by_field["region"].problems[0].value == "火星区"
    assert by_field["notes"].filled == 0 and by_field["phone"].filled == ROWS
    text = report.text(functools.partial(translate, "zh"), "zh")  # in the reader's language, one at a time
    assert "第 32 行" in text and "火星区" in text and "数据体检" in text and "Data health" not in text
    english = report.text(functools.partial(translate, "en"), "en")
    assert "row 32" in english and "Data health" in english and "数据体检" not in english and "第 32 行" not in english
    report.write_xlsx(tmp_path / "health.xlsx")
    assert read_table(tmp_path / "health.xlsx").headers[0] == "文件 File"

    outcome = importer.run(plan, actor=SYSTEM)

    record = outcome.record
    assert (record.created, record.merged, record.rejected) == (planted.created, planted.merged, planted.rejected)
    assert record.next_row == ROWS == record.created + record.merged + record.rejected
    assert len(leads(engine)) == before + planted.created
    errors = list(importer.error_rows(record.id))
    assert len(errors) == planted.rejected
    rejected_rows = {number for number, _, _ in errors}
    assert rejected_rows == {i + 2 for i in range(ROWS) if i % 100 in (30, 40, 50, 60)}
    reasons = {number: reason for number, reason, _ in errors}
    assert "phone" in reasons[32] and "region" in reasons[42] and "name" in reasons[52]
    assert "next_follow_up" in reasons[62]
    error_file = read_table_bytes(importer.error_file(record.id), "errors.csv")
    assert error_file.headers[-2:] == ("行号 Row", "原因 Reason")
    assert [row[2] for row in error_file.rows[:1]] == ["12345"]  # the original cells, as typed
    merged = {row["phone"]: row for row in leads(engine)}
    assert merged["+8613700000000"]["name"] == "联系人20"  # the stored lead took the file's values
    serial = next(row for row in leads(engine) if row["name"] == "联系人7")
    assert str(serial["next_follow_up"]) == "2026-01-08"  # 46030, an Excel serial
    history = engine.records.events("lead", serial["id"], actor=SYSTEM)
    assert history[0].kind == "created" and history[0].data.get("history") is True

    again = importer.run(importer.prepare(table, engine.model.import_mapping("sales_ledger"), path.read_bytes()),
                         actor=SYSTEM)
    assert again.already_done and len(leads(engine)) == before + planted.created


def read_table_bytes(content: bytes, name: str) -> Any:
    from engine.io.readers import read_bytes
    return read_bytes(content, name)


def test_import_rules_run_with_origin_import_and_no_rules_says_so(make_engine: Callable[..., Engine],
                                                                   tmp_path: Path) -> None:
    engine = crm_engine(make_engine)
    rows = [["张三", "甲公司", "13900000001", "华东", "上海", "wang", "新线索", "2026/1/5", ""],
            ["李四", "乙公司", "13900000002", "华南", "广州", "", "新线索", "2026/1/5", ""]]
    path = write_xlsx(tmp_path / "ledger.xlsx", rows)
    table = read_table(path)
    plan = engine.importer.prepare(table, engine.model.import_mapping("sales_ledger"), path.read_bytes())
    outcome = engine.importer.run(plan, actor=SYSTEM)
    assert outcome.record.rules and outcome.record.created == 2
    stored = {row["name"]: row for row in leads(engine)}
    assert stored["张三"]["source_detail"] == "历史数据导入"  # the shipped import_row rule fired
    assert stored["李四"]["owner"] is not None  # no owner in the file: routing assigned one
    # each owner is told once how many leads they received
    outbox = engine.schema.outbox
    with engine.db.read() as connection:
        messages = {row.idempotency_key: row.payload for row in
                    connection.execute(sa.select(outbox.c.idempotency_key, outbox.c.payload))
                    if row.idempotency_key.startswith("import:")}
    owners = [row["owner"] for row in leads(engine)]
    assert sorted(messages) == sorted(f"import:{outcome.record.id}:owner:{owner}" for owner in set(owners))
    for owner in set(owners):
        text = str(messages[f"import:{outcome.record.id}:owner:{owner}"])
        assert f"有 {owners.count(owner)} 条线索已分配给你" in text

    quiet = [["王五", "丙公司", "13900000003", "华东", "上海", "wang", "新线索", "2026/1/5", ""]]
    path2 = write_xlsx(tmp_path / "ledger2.xlsx", quiet)
    plan2 = engine.importer.prepare(read_table(path2), engine.model.import_mapping("sales_ledger"),
                                    path2.read_bytes())
    outcome2 = engine.importer.run(plan2, actor=SYSTEM, rules=False)
    assert not outcome2.record.rules and "Rules off (--no-rules)" in outcome2.record.summary(
        functools.partial(translate, "en"))
    assert {row["name"]: row for row in leads(engine)}["王五"]["source_detail"] is None


def test_a_managers_import_routes_rows_without_an_owner_and_stamps_every_assignment(
        make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    """The import screen runs as the signed-in user: a row with no owner goes through routing (lead.yaml
    says owner_on_create: routing), not to the importer; every imported lead with an owner has its
    assignment time, as the 24-hour assignment rate on the dashboards needs."""
    engine = crm_engine(make_engine)
    manager = engine.users.find("manager")
    assert manager is not None
    rows = [["张三", "甲公司", "13900000011", "华东", "上海", "wang", "新线索", "2026/1/5", ""],
            ["李四", "乙公司", "13900000012", "华东", "上海", "", "新线索", "2026/1/5", ""]]
    path = write_xlsx(tmp_path / "ledger.xlsx", rows)
    plan = engine.importer.prepare(read_table(path), engine.model.import_mapping("sales_ledger"), path.read_bytes())
    assert engine.importer.run(plan, actor=manager).record.created == 2
    stored = {row["name"]: row for row in leads(engine)}
    reps = {engine.users.find(name).id for name in ("wang", "li")}  # type: ignore[union-attr]
    assert stored["李四"]["owner"] in reps  # routed to a rep of the region, not kept by the manager who imported
    assert all(row["assigned_at"] is not None for row in stored.values())


def test_a_history_import_keeps_when_each_lead_came_in(make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    """The ledger's 录入日期 becomes the lead's created_at (a wall time in Asia/Shanghai), so its
    first touch measures from then: the demo's imported leads counted −7,000 hours to first touch,
    created by the import in December and first touched in February. A date later than now is
    refused with the row, in the health report and the import alike."""
    engine = crm_engine(make_engine)
    headers = ("联系人", "客户名称", "手机", "负责人", "状态", "录入日期", "首次联系")
    rows = [["张三", "甲公司", "13900000021", "wang", "已联系", "2026-02-09 09:05", "2026-02-10 09:30"],
            ["李四", "乙公司", "13900000022", "li", "新线索", "2026/2/20", ""],
            ["王五", "丙公司", "13900000023", "wang", "新线索", "2099-01-01 08:00", ""]]
    path = write_xlsx(tmp_path / "ledger.xlsx", rows, headers)
    plan = engine.importer.prepare(read_table(path), engine.model.import_mapping("sales_ledger"), path.read_bytes())
    report = engine.importer.health(plan)
    assert (report.created, report.rejected) == (2, 1)
    outcome = engine.importer.run(plan, actor=SYSTEM)
    assert (outcome.record.created, outcome.record.rejected) == (2, 1)
    stored = {row["name"]: row for row in leads(engine)}
    assert as_utc(stored["张三"]["created_at"]) == dt.datetime(2026, 2, 9, 1, 5, tzinfo=dt.timezone.utc)
    assert as_utc(stored["李四"]["created_at"]) == dt.datetime(2026, 2, 19, 16, 0, tzinfo=dt.timezone.utc)
    assert as_utc(stored["张三"]["assigned_at"]) == as_utc(stored["张三"]["created_at"])  # assigned when it came in
    touched = as_utc(stored["张三"]["first_touched_at"]) - as_utc(stored["张三"]["created_at"])
    assert touched == dt.timedelta(hours=24, minutes=25)
    assert "王五" not in stored
    (number, reason, _), = engine.importer.error_rows(outcome.record.id)
    assert number == 4 and "创建时间晚于现在" in reason


def test_only_a_history_mapping_may_set_created_at(make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    engine = crm_engine(make_engine)
    mapping = write_blueprint(tmp_path / "maps", {"new.yaml": """
        imports:
          fair_leads:
            entity: lead
            columns:
              Name: name
              Mobile: phone
              Entered: created_at
            defaults: {source: expo}
    """}) / "new.yaml"
    with pytest.raises(BlueprintInvalid) as caught:
        load_import_file(mapping, engine.model, engine.extensions.vocabulary)
    assert f"{mapping}:7:" in str(caught.value)
    assert "column 'Entered' fills created_at, which only an import of past records may set" in str(caught.value)
    assert "history: true" in caught.value.text("zh") and "只有导入历史记录时才能设置" in caught.value.text("zh")


def test_salesforce_style_export_imports_with_a_saved_mapping(make_engine: Callable[..., Engine],
                                                              tmp_path: Path) -> None:
    engine = crm_engine(make_engine)
    path = tmp_path / "salesforce-leads.csv"
    path.write_text(
        "First Name,Last Name,Company,Mobile,Lead Source,Lead Status,Lead Owner\n"
        "Lei,Zhang,Acme Medical,138 0013 8001,Trade Show,Open - Not Contacted,wang\n"
        "Mei,Chen,Beta Robotics,+86 13800138002,Web,Working - Contacted,李娜\n"
        "Tao,Wu,Gamma Foods,13800138003,Partner Referral,Qualified,wang\n", encoding="utf-8-sig")
    table = read_table(path)
    plan = engine.importer.prepare(table, engine.model.import_mapping("salesforce_leads"), path.read_bytes())
    assert plan.mapper.missing == ["Title", "Email", "City", "Description"]
    outcome = engine.importer.run(plan, actor=SYSTEM)
    assert (outcome.record.created, outcome.record.rejected) == (3, 0)
    stored = {row["phone"]: row for row in leads(engine)}
    assert stored["+8613800138001"]["name"] == "Lei Zhang"
    assert stored["+8613800138001"]["source"] == "expo"
    assert stored["+8613800138002"]["status"] == "contacted"
    assert stored["+8613800138003"]["status"] == "qualified"  # history: the stage's requirements are not asked
    li = engine.users.find("li")
    assert li is not None and stored["+8613800138002"]["owner"] == li.id


def test_a_bad_mapping_file_is_reported_at_file_and_line(make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    engine = crm_engine(make_engine)
    mapping = write_blueprint(tmp_path / "maps", {"bad.yaml": """
        imports:
          old_crm:
            entity: lead
            columns:
              Name: name
              Mobile: phon
              Region:
                field: region
                values: {East: eest}
    """}) / "bad.yaml"
    with pytest.raises(BlueprintInvalid) as caught:
        load_import_file(mapping, engine.model, engine.extensions.vocabulary)
    text = str(caught.value)
    assert f"{mapping}:6:15:" in text and "'phon' is not a field of 'lead'" in text
    assert f"{mapping}:9:" in text and "'eest' is not an option of region" in text
    assert "required field 'source'" in text


def test_an_empty_or_unreadable_file_gets_a_clear_error_and_changes_nothing(
        make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    engine = crm_engine(make_engine)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(FileUnreadable, match="empty"):
        read_table(empty)
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"PK\x03\x04 this is not a workbook")
    with pytest.raises(FileUnreadable, match="not a readable spreadsheet") as caught:
        read_table(broken)
    assert "另存为 .xlsx" in caught.value.message_zh
    for lang, said, unsaid in (("zh", "文件是空的", "the file is empty"), ("en", "the file is empty", "文件是空的")):
        result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "import", str(empty), "--entity", "lead",
                                 "--db", engine.db.engine.url.render_as_string(hide_password=False)],
                                capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "CRM_LANG": lang})
        assert result.returncode == 1 and said in result.stderr and unsaid not in result.stderr
    assert leads(engine) == []
    with engine.db.read() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(engine.importer.imports)).scalar() == 0


# -- interrupted imports ---------------------------------------------------------------------------------------

def _second_database(db_url: str, tmp_path: Path) -> tuple[str, Callable[[], None]]:
    """Another empty database of the same kind, for the uninterrupted run."""
    if db_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'reference.sqlite'}", lambda: None
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    return f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}", drop


def _crm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "CRM_NEW_PASSWORD": "import-test-pass-1", "CRM_LANG": "en"}, timeout=900)


def _prepare_db(url: str, cwd: Path) -> None:
    for username, name in (("wang", "王伟"), ("li", "李娜")):
        assert _crm("user", "add", username, "--role", "sales_rep", "--name", name, "--db", url, cwd=cwd).returncode == 0


def _snapshot(url: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text(
                "SELECT name, company, phone, region, city, owner, status, next_follow_up, source, source_detail, "
                "version FROM lead ORDER BY phone")).all()
            events = connection.execute(sa.text("SELECT kind, count(*) FROM crm_events GROUP BY kind ORDER BY kind")).all()
            imports = connection.execute(sa.text(
                "SELECT status, next_row, created, merged, rejected FROM crm_imports")).all()
            errors = connection.execute(sa.text("SELECT row_number, reason FROM crm_import_errors ORDER BY row_number")).all()
    finally:
        engine.dispose()
    return [tuple(row) for row in rows] + [tuple(row) for row in events] + [tuple(row) for row in imports] + \
        [tuple(row) for row in errors]


def test_an_import_killed_halfway_resumes_to_the_same_table_as_an_uninterrupted_run(
        db_url: str, tmp_path: Path) -> None:
    planted = planted_ledger(3000)
    path = write_csv(tmp_path / "ledger.csv", planted.rows, encoding="gbk")
    reference_url, drop = _second_database(db_url, tmp_path)
    try:
        for url in (db_url, reference_url):
            _prepare_db(url, tmp_path)
        args = ["import", str(path), "--entity", "lead", "--mapping", "sales_ledger", "--batch", "100"]
        done = _crm(*args, "--db", reference_url, cwd=tmp_path)
        assert done.returncode == 0, done.stderr

        process = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *args, "--db", db_url], cwd=tmp_path,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        watcher = sa.create_engine(db_url)
        try:
            written = 0
            deadline = time.monotonic() + 600
            while written < 600 and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
                with watcher.connect() as connection:
                    try:
                        written = connection.execute(sa.text("SELECT max(next_row) FROM crm_imports")).scalar() or 0
                    except sa.exc.DBAPIError:
                        written = 0
            process.send_signal(signal.SIGKILL)
            process.wait()
            with watcher.connect() as connection:
                stopped = connection.execute(sa.text("SELECT next_row, status FROM crm_imports")).one()
        finally:
            watcher.dispose()
        assert 0 < stopped[0] < 3000 and stopped[1] == "running"  # killed halfway

        refused = _crm(*args, "--db", db_url, cwd=tmp_path)
        assert refused.returncode == 1 and "--resume" in refused.stderr
        resumed = _crm(*args, "--resume", "--db", db_url, cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        assert f"resumed at row {stopped[0] + 2}" in resumed.stdout

        assert _snapshot(db_url) == _snapshot(reference_url)
        again = _crm(*args, "--db", db_url, cwd=tmp_path)
        assert again.returncode == 0 and "Already imported" in again.stdout
        assert _snapshot(db_url) == _snapshot(reference_url)
    finally:
        drop()


def test_a_sample_first_then_the_rest_with_resume(make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    engine = crm_engine(make_engine)
    planted = planted_ledger(300)
    path = write_xlsx(tmp_path / "ledger.xlsx", planted.rows)
    table = read_table(path)
    importer = engine.importer
    plan = importer.prepare(table, engine.model.import_mapping("sales_ledger"), path.read_bytes())
    sample = importer.run(plan, actor=SYSTEM, sample=100, batch=40)
    assert sample.record.status == "paused" and sample.record.next_row == 100
    assert len(leads(engine)) == sample.record.created
    with pytest.raises(ImportRefused, match="--resume"):
        importer.run(plan, actor=SYSTEM)
    rest = importer.run(plan, actor=SYSTEM, resume=True, batch=40)
    assert rest.resumed_from == 100 and rest.record.status == "done"
    record = rest.record
    # no leads were stored first, so the rows meant as database duplicates are new here
    assert (record.created, record.merged, record.rejected) == (
        planted.created + planted.dup_in_db, planted.dup_in_file, planted.rejected)
    assert record.next_row == 300 == record.created + record.merged + record.rejected


def test_after_an_import_and_as_the_table_grows_the_database_plans_with_its_row_count(
        make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    """An import refreshes the planner's statistics of what it filled, and the worker refreshes
    them once the row count has doubled (without them PostgreSQL plans a filled table as empty
    and SQLite sorts a third of a million leads to show 50; stale ones mislead as much)."""
    engine = crm_engine(make_engine)
    rows = [[f"客户{n}", f"公司{n}", f"139{n:08d}", "华东", "上海", "wang", "新线索", "2026/1/5", ""] for n in range(300)]
    path = write_csv(tmp_path / "ledger.csv", rows)
    plan = engine.importer.prepare(read_table(path), engine.model.import_mapping("sales_ledger"), path.read_bytes())
    assert engine.importer.run(plan, actor=SYSTEM).record.created == 300

    def planned_rows() -> int:
        with engine.db.read() as connection:
            if engine.db.is_sqlite:
                return int(connection.exec_driver_sql(
                    "SELECT max(CAST(stat AS INTEGER)) FROM sqlite_stat1 WHERE tbl = 'lead'").scalar_one())
            return int(connection.exec_driver_sql("SELECT reltuples FROM pg_class WHERE oid = to_regclass('lead')"
                                                  ).scalar_one())

    def add_leads(count: int, first: int) -> None:
        for n in range(first, first + count):
            engine.records.create("lead", {"name": f"新客户{n}", "phone": f"137{n:08d}", "source": "expo"}, actor=SYSTEM)

    assert planned_rows() == 300
    worker = engine.worker()
    add_leads(250, 0)  # 550: not yet twice what the statistics say
    assert worker.refresh_statistics() == [] and planned_rows() == 300
    add_leads(100, 250)  # 650 > 2 × 300
    refreshed = worker.refresh_statistics()
    assert len(refreshed) == 1 and refreshed[0].endswith("lead: 300 → 650 rows") and planned_rows() == 650
