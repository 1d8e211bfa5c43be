"""Spreadsheets with known defects for the import tests and bench/bench_import.py.

`planted_ledger(n)` builds the rows of a Chinese sales ledger (the shipped `sales_ledger`
mapping's columns) in which every hundredth-slot holds exactly one planted defect, each on a
row of its own with a phone no other row has, so every count is known in advance:

  slot 10, 11  the phone of the row 7 above (a duplicate inside the file → merged)
  slot 20      the phone of a stored lead (a duplicate of the database → merged)
  slot 30      a bad phone "12345"                  (rejected: phone)
  slot 40      an unknown region "火星区"             (rejected: region)
  slot 50      no contact name                       (rejected: name, required)
  slot 60      an impossible date "2026-13-45"       (rejected: next_follow_up)

The other rows vary the date forms (2026/1/5, 2026-01-05, 2026年1月5日, an Excel serial) and
the region forms (the option's Chinese label, the mapping's 华东区, the option's value).
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HEADERS = ("联系人", "客户名称", "手机", "大区", "城市", "负责人", "状态", "下次跟进", "备注")
REGIONS = ("华东", "华南区", "north", "华中", "西南")
OWNERS = ("wang", "li", "王伟")  # usernames and a display name
DATE_FORMS = ("2026/1/5", "2026-01-06", "2026年1月7日", 46030)  # 46030 = 2026-01-08 as an Excel serial


@dataclass(frozen=True)
class Planted:
    rows: list[list[Any]]
    stored_phones: list[str]      # create these leads first (the database duplicates)
    dup_in_file: int
    dup_in_db: int
    bad_phone: int
    bad_region: int
    no_name: int
    bad_date: int

    @property
    def rejected(self) -> int:
        return self.bad_phone + self.bad_region + self.no_name + self.bad_date

    @property
    def merged(self) -> int:
        return self.dup_in_file + self.dup_in_db

    @property
    def created(self) -> int:
        return len(self.rows) - self.rejected - self.merged


def phone(i: int) -> str:
    return f"139{i:08d}"


def planted_ledger(n: int, *, serial_as_text: bool = True) -> Planted:
    rows: list[list[Any]] = []
    stored: list[str] = []
    counts = dict.fromkeys(("dup_in_file", "dup_in_db", "bad_phone", "bad_region", "no_name", "bad_date"), 0)
    for i in range(n):
        slot = i % 100
        date: Any = DATE_FORMS[i % 4]
        if isinstance(date, int) and serial_as_text:
            date = str(date)
        row: list[Any] = [f"联系人{i}", f"测试公司{i}", phone(i), REGIONS[i % 5], "上海", OWNERS[i % 3], "新线索",
                          date, ""]
        if slot in (10, 11) and i >= 7:
            row[2] = phone(i - 7)
            counts["dup_in_file"] += 1
        elif slot == 20:
            row[2] = f"137{len(stored):08d}"
            stored.append(row[2])
            counts["dup_in_db"] += 1
        elif slot == 30:
            row[2] = "12345"
            counts["bad_phone"] += 1
        elif slot == 40:
            row[3] = "火星区"
            counts["bad_region"] += 1
        elif slot == 50:
            row[0] = ""
            counts["no_name"] += 1
        elif slot == 60:
            row[7] = "2026-13-45"
            counts["bad_date"] += 1
        rows.append(row)
    return Planted(rows, stored, **counts)


def write_csv(path: Path, rows: list[list[Any]], encoding: str = "gbk") -> Path:
    with path.open("w", encoding=encoding, newline="") as out:
        writer = csv.writer(out)
        writer.writerow(HEADERS)
        writer.writerows(rows)
    return path


def write_xlsx(path: Path, rows: list[list[Any]], headers: tuple[str, ...] = HEADERS) -> Path:
    import xlsxwriter

    workbook = xlsxwriter.Workbook(str(path), {"constant_memory": True})
    sheet = workbook.add_worksheet()
    sheet.write_row(0, 0, headers)
    for index, row in enumerate(rows, start=1):
        sheet.write_row(index, 0, row)
    workbook.close()
    return path


EXCEL_EPOCH = dt.date(1899, 12, 30)
