"""Reading a spreadsheet: XLSX through python-calamine, CSV in whatever encoding Excel wrote.

A CSV's encoding is detected, not guessed: a UTF-8 byte-order mark says UTF-8; bytes that are
valid UTF-8 are UTF-8; otherwise charset-normalizer judges the bytes, and a Chinese code page
(GB2312, GBK) is read as GB18030, the superset Chinese Excel actually writes. XLSX is read by
python-calamine (Rust), far faster than openpyxl on large files (bench/RESULTS.md). Every
problem is a `FileUnreadable` naming the file and how to fix it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import charset_normalizer

SAMPLE = 1 << 20  # the bytes the encoding is judged on
_CHINESE = {"gb2312", "gbk", "gb18030", "hz", "cp936"}


class FileUnreadable(Exception):
    """The file cannot be read as a table; the message says why and what to do (zh and en)."""

    def __init__(self, message: str, message_zh: str) -> None:
        super().__init__(message)
        self.message = message
        self.message_zh = message_zh


@dataclass(frozen=True, slots=True)
class Table:
    """The header and the data rows of a file's first sheet. Cells are str (CSV) or what the
    sheet holds (XLSX: str, int, float, bool, date, datetime); empty cells are None or ""."""

    name: str
    kind: str                     # csv | xlsx
    encoding: str | None          # CSV only
    headers: tuple[str, ...]
    rows: list[list[Any]]


def read_table(path: Path, *, name: str | None = None) -> Table:
    """The file at `path` as a Table (by its suffix: .xlsx/.xlsm/.xls/.ods, else CSV)."""
    display = name or path.name
    try:
        size = path.stat().st_size
    except OSError as error:
        raise FileUnreadable(f"{display}: cannot open the file ({error.strerror})",
                             f"{display}：无法打开文件（{error.strerror}）") from None
    if size == 0:
        raise FileUnreadable(f"{display}: the file is empty; export the sheet again with its header row",
                             f"{display}：文件是空的，请重新导出（包含表头行）")
    suffix = Path(display).suffix.lower()
    if suffix in (".xlsx", ".xlsm", ".xls", ".xlsb", ".ods"):
        return _read_sheet(path, display)
    return _read_csv(path.read_bytes(), display)


def read_bytes(content: bytes, name: str) -> Table:
    """An uploaded file's content as a Table (the suffix of `name` says which reader)."""
    if not content:
        raise FileUnreadable(f"{name}: the file is empty; export the sheet again with its header row",
                             f"{name}：文件是空的，请重新导出（包含表头行）")
    if Path(name).suffix.lower() in (".xlsx", ".xlsm", ".xls", ".xlsb", ".ods"):
        import python_calamine
        try:
            workbook = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(content))
        except Exception as error:  # calamine raises its own error types for every malformed file
            raise _not_a_sheet(name, error) from None
        return _sheet_table(workbook, name)
    return _read_csv(content, name)


def detect_encoding(content: bytes) -> str:
    """The encoding of CSV bytes: BOM, else strict UTF-8, else charset-normalizer's verdict."""
    if content.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    if content.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    sample = content[:SAMPLE]
    try:
        sample.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as error:
        if len(sample) == SAMPLE and error.start >= SAMPLE - 4:  # a character cut by the sample's end
            return "utf-8"
    best = charset_normalizer.from_bytes(sample).best()
    if best is None:
        raise FileUnreadable("the file is not text in any known encoding (is it a spreadsheet saved as .csv?); "
                             "save it from Excel as CSV UTF-8 or as .xlsx",
                             "文件不是可识别编码的文本；请在 Excel 中另存为“CSV UTF-8”或 .xlsx")
    encoding = best.encoding.lower().replace("_", "")
    return "gb18030" if encoding in _CHINESE else best.encoding


def _read_csv(content: bytes, display: str) -> Table:
    try:
        encoding = detect_encoding(content)
    except FileUnreadable as error:
        raise FileUnreadable(f"{display}: {error.message}", f"{display}：{error.message_zh}") from None
    try:
        text = content.decode(encoding)
    except UnicodeDecodeError as error:
        raise FileUnreadable(f"{display}: byte {error.start} is not {encoding}; save the file as CSV UTF-8",
                             f"{display}：第 {error.start} 字节不是 {encoding} 编码；请另存为“CSV UTF-8”") from None
    try:
        dialect: Any = csv.Sniffer().sniff(text[:65536], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    try:
        rows = [row for row in reader]
    except csv.Error as error:
        raise FileUnreadable(f"{display}: not a valid CSV file (line {reader.line_num}: {error})",
                             f"{display}：CSV 格式有误（第 {reader.line_num} 行：{error}）") from None
    return _table(display, "csv", encoding, rows)


def _read_sheet(path: Path, display: str) -> Table:
    import python_calamine
    try:
        workbook = python_calamine.CalamineWorkbook.from_path(str(path))
    except Exception as error:  # calamine raises its own error types for every malformed file
        raise _not_a_sheet(display, error) from None
    return _sheet_table(workbook, display)


def _not_a_sheet(display: str, error: Exception) -> FileUnreadable:
    return FileUnreadable(f"{display}: not a readable spreadsheet ({error}); open it in Excel and save it as .xlsx",
                          f"{display}：无法读取该表格（{error}）；请用 Excel 打开后另存为 .xlsx")


def _sheet_table(workbook: Any, display: str) -> Table:
    if not workbook.sheet_names:
        raise FileUnreadable(f"{display}: the workbook has no sheet", f"{display}：工作簿中没有工作表")
    sheet = workbook.get_sheet_by_index(0)
    rows = sheet.to_python(skip_empty_area=True)
    return _table(display, "xlsx", None, rows)


def _table(display: str, kind: str, encoding: str | None, rows: list[list[Any]]) -> Table:
    rows = [row for row in rows if any(cell not in (None, "") for cell in row)]
    if not rows:
        raise FileUnreadable(f"{display}: the file holds no rows; the first row must be the column headers",
                             f"{display}：文件中没有数据；第一行应为表头")
    headers = tuple(_header(cell, index) for index, cell in enumerate(rows[0]))
    width = len(headers)
    body = [list(row[:width]) + [None] * (width - len(row)) for row in rows[1:]]
    return Table(display, kind, encoding, headers, body)


def _header(cell: Any, index: int) -> str:
    text = "" if cell is None else str(cell).strip().lstrip("\ufeff")
    return text or f"column {index + 1}"


def cell_text(value: Any) -> str:
    """A cell as text for reports and error files (dates in ISO form, 3.0 as 3)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)


def iter_batches(rows: list[list[Any]], size: int, start: int = 0) -> Iterator[tuple[int, list[list[Any]]]]:
    """(index of the batch's first row, its rows) from row `start` on."""
    for first in range(start, len(rows), size):
        yield first, rows[first:first + size]
