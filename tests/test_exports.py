"""Exports: a list's filters to CSV (UTF-8 with BOM) and XLSX, within the actor's scope, without
the fields hidden from their role, refused without the export permission."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.engine import Engine
from engine.io.exports import Exporter
from engine.io.readers import read_bytes, read_table
from engine.runtime.ops.users import NewUser
from engine.runtime.records.actors import SYSTEM
from engine.runtime.records.permissions import Forbidden
from engine.runtime.records.queries import parse_list_query

ROOT = Path(__file__).resolve().parent.parent

BLUEPRINT = {
    "app.yaml": """
        app: shop
        settings: {timezone: Asia/Shanghai}
        include: ["customer.yaml", "roles.yaml"]
    """,
    "customer.yaml": """
        entity: customer
        label: {zh: 客户, en: Customer}
        fields:
          name: {type: string, label: {zh: 名称, en: Name}, required: true}
          region:
            type: choice
            label: {zh: 大区, en: Region}
            options: {east: {zh: 华东, en: East}, south: {zh: 华南, en: South}}
          margin: {type: decimal, label: {zh: 毛利率, en: Margin}}
          since: {type: date, label: {zh: 合作日期, en: Since}}
          note: {type: string, label: {zh: 备注, en: Note}}
    """,
    "roles.yaml": """
        roles:
          boss:
            entities:
              customer: {read: all, create: all, update: all, export: all}
          clerk:
            entities:
              customer: {read: own, create: all, update: own, export: own, hidden: [margin]}
          intern:
            entities:
              customer: {read: all, create: none, export: none}
    """,
}


def shop(make_engine: Callable[..., Engine]) -> Engine:
    engine = make_engine(BLUEPRINT)
    boss = engine.users.add(NewUser("boss", "老板", "boss"))
    clerk = engine.users.add(NewUser("clerk", "小王", "clerk"))
    engine.users.add(NewUser("intern", "实习生", "intern"))
    for index in range(30):
        engine.records.create("customer", {
            "name": f"客户{index}", "region": "east" if index % 3 else "south", "margin": f"{index}.5",
            "since": "2026-01-05", "note": "=HYPERLINK(\"http://x\")" if index == 1 else "",
            "owner": clerk.id if index % 2 else boss.id}, actor=SYSTEM)
    return engine


def test_csv_and_xlsx_exports_follow_the_filters_the_scope_and_hidden_fields(make_engine: Callable[..., Engine],
                                                                          tmp_path: Path) -> None:
    engine = shop(make_engine)
    exporter = Exporter(engine.records)
    entity = engine.model.entity("customer")
    boss, clerk = engine.users.find("boss"), engine.users.find("clerk")
    assert boss is not None and clerk is not None
    query = parse_list_query(entity, {"region": "east", "sort": "name"})

    out = io.BytesIO()
    count = exporter.write_csv(exporter.export("customer", query, actor=boss), out)
    content = out.getvalue()
    assert content.startswith(b"\xef\xbb\xbf")  # Excel reads UTF-8 only with its BOM
    table = read_bytes(content, "customers.csv")
    east = sorted(f"客户{i}" for i in range(30) if i % 3)
    assert count == len(east) == 20
    assert table.headers == ("编号", "名称", "大区", "毛利率", "合作日期", "备注", "负责人", "创建时间", "更新时间")
    assert sorted(row[1] for row in table.rows) == east
    assert {row[2] for row in table.rows} == {"华东"}  # option labels, as on the screens
    assert next(row for row in table.rows if row[1] == "客户1")[5].startswith("'=")  # no formula runs in Excel

    path = tmp_path / "clerk.xlsx"
    count = exporter.write_xlsx(exporter.export("customer", query, actor=clerk, lang="en"), path)
    sheet = read_table(path)
    mine = sorted(f"客户{i}" for i in range(30) if i % 3 and i % 2)
    assert count == len(mine)
    assert "Margin" not in sheet.headers and "Name" in sheet.headers  # hidden from the clerk: left out
    assert sorted(row[sheet.headers.index("Name")] for row in sheet.rows) == mine
    assert {row[sheet.headers.index("Owner")] for row in sheet.rows} == {"小王"}
    assert str(sheet.rows[0][sheet.headers.index("Since")])[:10] == "2026-01-05"  # an Excel date


def test_without_the_export_permission_nothing_is_written(make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    engine = shop(make_engine)
    intern = engine.users.find("intern")
    assert intern is not None
    with pytest.raises(Forbidden, match="export"):
        Exporter(engine.records).export("customer", parse_list_query(engine.model.entity("customer"), {}),
                                        actor=intern)
    target = tmp_path / "out.xlsx"
    url = engine.db.engine.url.render_as_string(hide_password=False)
    blueprint = str(tmp_path / "bp")
    refused = subprocess.run([sys.executable, str(ROOT / "cli.py"), "export", "customer", "--as", "intern",
                              "-o", str(target), "--db", url, "--blueprint", blueprint],
                             capture_output=True, text=True)
    assert refused.returncode == 1 and "export" in refused.stderr and not target.exists()
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "export", "customer", "--filter", "region=south",
                           "--format", "csv", "-o", str(tmp_path / "south.csv"), "--db", url, "--blueprint", blueprint],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "10 customer record(s)" in done.stdout
    assert len(read_table(tmp_path / "south.csv").rows) == 10
    bad = subprocess.run([sys.executable, str(ROOT / "cli.py"), "export", "customer", "--filter", "colour=red",
                          "-o", str(tmp_path / "bad.xlsx"), "--db", url, "--blueprint", blueprint],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "colour" in bad.stderr and not (tmp_path / "bad.xlsx").exists()
