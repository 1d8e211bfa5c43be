"""Export of a list — its filters, search and sort — to CSV or XLSX, streaming.

Rows come from one query read in chunks (`yield_per`: a server-side cursor on PostgreSQL), so a
million records never sit in memory; XLSX is written by xlsxwriter in `constant_memory` mode
(each row flushed as it is written). The actor needs the `export` permission, only the records
in their scope are exported, and fields hidden from their role are left out (not blanked).
CSV is UTF-8 with a byte-order mark, which Excel needs to read Chinese; values are what people
read on the screens: option labels, user names, local times.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import decimal
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from engine.metamodel import EntitySpec, FieldType
from engine.runtime.records.actors import Actor
from engine.runtime.records.queries import ListQuery
from engine.runtime.records.service import RecordService

CHUNK = 2000
SYSTEM_LABELS = {"id": ("编号", "ID"), "owner": ("负责人", "Owner"), "created_at": ("创建时间", "Created"),
                 "updated_at": ("更新时间", "Updated")}


@dataclass(frozen=True, slots=True)
class Export:
    """The columns (field names and their headers) and a stream of rows of plain values."""

    names: list[str]
    headers: list[str]
    rows: Iterator[list[Any]]


class Exporter:
    def __init__(self, records: RecordService) -> None:
        self.records = records
        self.zone = ZoneInfo(records.model.settings.timezone)

    def export(self, entity_name: str, query: ListQuery, *, actor: Actor, lang: str = "zh") -> Export:
        """Check the permission now (Forbidden before anything streams), then stream the rows —
        the records the same list shows the actor (RecordService.list_statements), all pages."""
        entity = self.records.entity(entity_name)
        page, _, hidden = self.records.list_statements(entity.name, query, actor=actor, action="export")
        statement = page.limit(None).offset(None)
        names = ["id", *(spec.name for spec in entity.fields if spec.name not in hidden and
                         spec.type is not FieldType.JSON), "owner", "created_at", "updated_at"]
        headers = [_header(entity, name, lang) for name in names]
        return Export(names, headers, self._rows(entity, statement, names, lang))

    def _rows(self, entity: EntitySpec, statement: sa.Select[Any], names: list[str], lang: str) -> Iterator[list[Any]]:
        users = self._user_names()
        records = self.records
        with records.db.read() as connection:
            result = connection.execution_options(stream_results=True, yield_per=CHUNK).execute(statement).mappings()
            for row in result:
                record = records.record_from_row(entity, row)
                yield [self._plain(entity, name, record.get(name), lang, users) for name in names]

    def _user_names(self) -> dict[int, str]:
        users = self.records.schema.users
        with self.records.db.read() as connection:
            return {row.id: row.display_name or row.username
                    for row in connection.execute(sa.select(users.c.id, users.c.username, users.c.display_name))}

    def _plain(self, entity: EntitySpec, name: str, value: Any, lang: str, users: dict[int, str]) -> Any:
        if value is None:
            return ""
        if isinstance(value, dt.datetime):
            return value.astimezone(self.zone).replace(tzinfo=None)
        if name == "owner":
            return users.get(value, str(value))
        if not entity.has_field(name):
            return value
        spec = entity.field(name)
        if spec.type is FieldType.CHOICE:
            return spec.choice_label(value, lang)
        if spec.type in (FieldType.MULTICHOICE, FieldType.TAGS):
            return ", ".join(spec.choice_label(item, lang) for item in value)
        if spec.type is FieldType.USER:
            return users.get(value, str(value))
        if spec.type is FieldType.MONEY and isinstance(value, tuple):
            return value[0]
        if spec.type is FieldType.BOOLEAN:
            return ("是" if value else "否") if lang == "zh" else ("yes" if value else "no")
        if isinstance(value, (list, dict)):
            return str(value)
        return value

    # -- files ---------------------------------------------------------------------------------

    def write_csv(self, export: Export, out: IO[bytes]) -> int:
        """The CSV (see `csv_chunks`) written to a file as it streams; returns the rows written."""
        written = 0

        def counted() -> Iterator[list[Any]]:
            nonlocal written
            for written, row in enumerate(export.rows, start=1):
                yield row

        for chunk in self.csv_chunks(dataclasses.replace(export, rows=counted())):
            out.write(chunk)
        return written

    @staticmethod
    def csv_chunks(export: Export, rows_per_chunk: int = 1000) -> Iterator[bytes]:
        """UTF-8 with a BOM (Excel's cue for UTF-8), a chunk of encoded rows at a time."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        buffer.write("\ufeff")
        writer.writerow(export.headers)
        for count, row in enumerate(export.rows, start=1):
            writer.writerow([_csv_text(value) for value in row])
            if count % rows_per_chunk == 0:
                yield buffer.getvalue().encode()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue().encode()

    def write_xlsx(self, export: Export, path: Path) -> int:
        """One sheet, rows flushed as written (constant memory); dates as Excel dates."""
        import xlsxwriter
        workbook = xlsxwriter.Workbook(str(path), {"constant_memory": True, "strings_to_numbers": False,
                                                   "strings_to_formulas": False, "strings_to_urls": False})
        sheet = workbook.add_worksheet()
        bold = workbook.add_format({"bold": True})
        when = workbook.add_format({"num_format": "yyyy-mm-dd hh:mm"})
        day = workbook.add_format({"num_format": "yyyy-mm-dd"})
        sheet.write_row(0, 0, export.headers, bold)
        count = 0
        for count, row in enumerate(export.rows, start=1):
            for column, value in enumerate(row):
                if isinstance(value, dt.datetime):
                    sheet.write_datetime(count, column, value, when)
                elif isinstance(value, dt.date):
                    sheet.write_datetime(count, column, dt.datetime.combine(value, dt.time()), day)
                elif isinstance(value, decimal.Decimal):
                    sheet.write_number(count, column, float(value))
                elif isinstance(value, bool):
                    sheet.write_string(count, column, str(value))
                elif isinstance(value, (int, float)):
                    sheet.write_number(count, column, value)
                elif value != "":
                    sheet.write_string(count, column, str(value))
        workbook.close()
        return count


def _header(entity: EntitySpec, name: str, lang: str) -> str:
    if name in SYSTEM_LABELS:
        zh, en = SYSTEM_LABELS[name]
        return zh if lang == "zh" else en
    return entity.field(name).label.text(lang)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def csv_cell(value: Any) -> Any:
    """A cell a spreadsheet will show, never run: text starting like a formula (=, +, -, @, tab,
    carriage return) gets a leading apostrophe (OWASP's advice); plain numbers stay numbers.
    Every CSV the engine writes (crm export, the list screens' export) goes through it."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def _csv_text(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return csv_cell(value)
