"""The demo's spreadsheet import: a sales rep's ledger (销售台账) with the defects real ones have,
imported through the shipped `sales_ledger` mapping, so the import screens open on a finished
import with its data-health counts, merged duplicates, rejected rows and their error file.
The same rows are in examples/imports/销售台账-示例.csv (GBK, as Chinese Excel saves it) to
upload by hand."""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any

from engine.io.imports import ImportOutcome
from engine.io.readers import rows_table
from engine.runtime.records.actors import SYSTEM

if TYPE_CHECKING:
    from engine.engine import Engine

LEDGER_NAME = "销售台账-示例.xlsx"
HEADERS = ("联系人", "客户名称", "手机", "大区", "城市", "行业", "负责人", "状态", "录入日期", "首次联系", "下次跟进", "备注")


def ledger_rows() -> list[list[Any]]:
    """30 historical leads: dates in three spellings and an Excel serial, Chinese option labels,
    two rows repeating an earlier phone, a bad phone, an unknown region, a missing name. Each
    row says when it was entered (录入日期, the records' created_at) and the leads already
    contacted when (首次联系), as a ledger kept by a rep does: their first touch counts in the
    first-touch metrics like any other, measured from when the lead came in, not from the import."""
    cities = (("华东", "上海"), ("华南", "深圳"), ("华北", "北京"), ("华中", "武汉"), ("西南", "成都"))
    industries = ("制造业", "医疗器械", "物流", "零售/快消", "教育")
    owners = ("wang", "li", "zhao")
    statuses = ("新线索", "已联系", "已确认需求", "新线索")
    dates = ("2026/3/2", "2026-03-09", "2026年3月16日", "46105")
    rows: list[list[Any]] = []
    for i in range(30):
        region, city = cities[i % 5]
        status = statuses[i % 4]
        entered = f"2026-02-{9 + i % 15:02d} {9 + i % 8:02d}:{5 + i % 50:02d}"  # the day before its first touch
        touched = f"2026-02-{10 + i % 15:02d} {9 + i % 8:02d}:30" if status != "新线索" else ""
        rows.append([f"历史客户{i + 1:02d}", f"{city}{industries[i % 5][:2]}示范企业{i + 1}", f"1377700{i:04d}", region,
                     city, industries[i % 5], owners[i % 3], status, entered, touched, dates[i % 4],
                     "展会老客户" if i % 4 == 3 else ""])
    rows.append(["历史客户02-重复", "上海制造示范企业2", "13777000001", "华东", "上海", "制造业", "wang", "已联系",
                 "2026-02-10 10:06", "2026-02-11 10:30", "2026/3/2", "同一手机号：合并到第 3 行"])
    rows.append(["历史客户05-重复", "成都教育示范企业5", "13777000004", "西南", "成都", "教育", "li", "新线索",
                 "2026-02-13 12:09", "", "2026/3/2", "同一手机号：合并"])
    rows.append(["号码有误", "某公司", "12345", "华东", "上海", "制造业", "wang", "新线索", "2026-02-20 09:00", "",
                 "2026/3/2", ""])
    rows.append(["大区有误", "某公司二", "13777009998", "火星区", "上海", "制造业", "li", "新线索", "2026-02-20 09:10", "",
                 "2026/3/2", ""])
    rows.append(["", "没有联系人的公司", "13777009999", "华北", "北京", "物流", "zhao", "新线索", "2026-02-20 09:20", "",
                 "2026/3/2", ""])
    return rows


def ledger_csv(encoding: str = "gbk") -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(HEADERS)
    writer.writerows(ledger_rows())
    return out.getvalue().encode(encoding)


def import_demo_ledger(engine: Engine) -> ImportOutcome | None:
    """Import the ledger as the system (owners from its 负责人 column); None without the mapping."""
    if not any(spec.name == "sales_ledger" for spec in engine.model.imports):
        return None
    table = rows_table(LEDGER_NAME, "xlsx", HEADERS, ledger_rows())
    importer = engine.importer
    plan = importer.prepare(table, engine.model.import_mapping("sales_ledger"), ledger_csv("utf-8"))
    return importer.run(plan, actor=SYSTEM)
