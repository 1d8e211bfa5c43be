"""Reading a spreadsheet: XLSX through python-calamine, CSV in whatever encoding Excel wrote.

A CSV's encoding is detected, not guessed: a UTF-8 byte-order mark says UTF-8; bytes that are
valid UTF-8 are UTF-8; otherwise charset-normalizer judges the bytes, and a Chinese code page
(GB2312, GBK) is read as GB18030, the superset Chinese Excel actually writes. XLSX is read by
python-calamine (Rust), far faster than openpyxl on large files (bench/RESULTS.md). A file is
never held as Python rows: a `Table` is a header plus a way to pass over the rows again, so the
health report and the import each stream the file and memory stays flat with its size. Every
problem is a `FileUnreadable` naming the file and how to fix it.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import charset_normalizer

SAMPLE = 1 << 20  # the bytes the encoding is judged on
_CHINESE = {"gb2312", "gbk", "gb18030", "hz", "cp936"}


class FileUnreadable(Exception):
    """The file cannot be read as a table; the message says why and what to do (zh and en)."""

    def __init__(self, message: str, message_zh: str) -> None:
        super().__init__(message)
        self.message = message
        self.message_zh = message_zh


RowSource = Callable[[], Generator[list[Any], None, None]]  # a fresh pass over the file's rows, the header row first


class Table:
    """The header and the data rows of a file's first sheet, read as a stream: each pass
    (`iter_rows`) reads the file again, so memory stays flat whatever its size — the health
    report and the import each make one pass rather than the whole sheet being held. Cells are
    str (CSV) or what the sheet holds (XLSX: str, int, float, bool, date, datetime); empty cells
    are None or "". Empty rows are skipped; rows are cut or padded to the header's width."""

    __slots__ = ("name", "kind", "encoding", "headers", "_source", "_count")

    def __init__(self, name: str, kind: str, encoding: str | None, headers: tuple[str, ...], source: RowSource,
                 count: int | None = None) -> None:
        self.name, self.kind, self.encoding, self.headers = name, kind, encoding, headers
        self._source = source
        self._count = count

    def iter_rows(self, start: int = 0, stop: int | None = None) -> Iterator[list[Any]]:
        """The data rows from index `start` (0 = the row under the header) up to `stop`."""
        width = len(self.headers)
        with contextlib.closing(self._source()) as source:
            index = -1  # the header row
            for row in source:
                if not any(cell not in (None, "") for cell in row):
                    continue
                if stop is not None and index >= stop:
                    return
                if index >= start:
                    yield list(row[:width]) + [None] * (width - len(row))
                index += 1
        self._count = max(index, 0)  # a pass to the end counted the rows: row_count needs no pass of its own

    @property
    def rows(self) -> list[list[Any]]:
        """Every data row in a list: for a small file (an error file, an export read back in a
        test); the import and the health report stream with `iter_rows` instead."""
        return list(self.iter_rows())

    @property
    def row_count(self) -> int:
        """How many data rows the file holds (one pass over the file, unless a pass already counted them)."""
        if self._count is None:
            for _ in self.iter_rows():
                pass
        assert self._count is not None
        return self._count


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
        return _read_sheet(lambda: _open_workbook(lambda p: p.from_path(str(path)), display), display)
    return _read_csv(lambda: path.open("rb"), display)


def read_bytes(content: bytes, name: str) -> Table:
    """An uploaded file's content as a Table (the suffix of `name` says which reader)."""
    if not content:
        raise FileUnreadable(f"{name}: the file is empty; export the sheet again with its header row",
                             f"{name}：文件是空的，请重新导出（包含表头行）")
    if Path(name).suffix.lower() in (".xlsx", ".xlsm", ".xls", ".xlsb", ".ods"):
        return _read_sheet(lambda: _open_workbook(lambda p: p.from_filelike(io.BytesIO(content)), name), name)
    return _read_csv(lambda: io.BytesIO(content), name)


def detect_encoding(content: bytes) -> str:
    """The encoding of CSV bytes (the file's first megabyte): BOM, else strict UTF-8, else charset-normalizer's verdict."""
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


def _read_csv(open_bytes: Callable[[], BinaryIO], display: str) -> Table:
    """A CSV as a Table. The encoding and the dialect are judged on the first megabyte; one pass
    here reads the whole file as a stream to refuse an undecodable or malformed file before anything
    is written, and counts its rows."""
    with open_bytes() as stream:
        sample = stream.read(SAMPLE)
    try:
        encoding = detect_encoding(sample)
    except FileUnreadable as error:
        raise FileUnreadable(f"{display}: {error.message}", f"{display}：{error.message_zh}") from None
    text = sample.decode(encoding, errors="ignore")
    try:
        dialect: Any = csv.Sniffer().sniff(text[:65536], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel

    def rows() -> Generator[list[Any], None, None]:
        with open_bytes() as stream, io.TextIOWrapper(stream, encoding=encoding, newline="") as decoded:
            reader = csv.reader(decoded, dialect)
            try:
                yield from reader
            except UnicodeDecodeError as error:
                raise FileUnreadable(
                    f"{display}: line {reader.line_num + 1} is not {encoding} ({error.reason}); save the file as CSV UTF-8",
                    f"{display}：第 {reader.line_num + 1} 行不是 {encoding} 编码；请另存为“CSV UTF-8”") from None
            except csv.Error as error:
                raise FileUnreadable(f"{display}: not a valid CSV file (line {reader.line_num}: {error})",
                                     f"{display}：CSV 格式有误（第 {reader.line_num} 行：{error}）") from None

    table = _table(display, "csv", encoding, rows)
    table.row_count  # noqa: B018 — the checking pass (see the docstring)
    return table


def _open_workbook(opener: Callable[[Any], Any], display: str) -> Any:
    import python_calamine
    try:
        return opener(python_calamine.CalamineWorkbook)
    except Exception as error:  # calamine raises its own error types for every malformed file
        raise _not_a_sheet(display, error) from None


def _read_sheet(open_workbook: Callable[[], Any], display: str) -> Table:
    """An XLSX (first sheet) as a Table: each pass opens the workbook and iterates its rows
    (calamine keeps the sheet's cells in compact native memory during the pass; Python row
    lists exist one at a time)."""
    workbook = open_workbook()
    if not workbook.sheet_names:
        raise FileUnreadable(f"{display}: the workbook has no sheet", f"{display}：工作簿中没有工作表")
    del workbook

    def rows() -> Generator[list[Any], None, None]:
        try:
            sheet = open_workbook().get_sheet_by_index(0)
        except FileUnreadable:
            raise
        except Exception as error:  # a malformed sheet inside a readable workbook
            raise _not_a_sheet(display, error) from None
        yield from sheet.iter_rows()

    return _table(display, "xlsx", None, rows)


def _not_a_sheet(display: str, error: Exception) -> FileUnreadable:
    return FileUnreadable(f"{display}: not a readable spreadsheet ({error}); open it in Excel and save it as .xlsx",
                          f"{display}：无法读取该表格（{error}）；请用 Excel 打开后另存为 .xlsx")


def rows_table(name: str, kind: str, headers: tuple[str, ...], rows: list[list[Any]]) -> Table:
    """A Table over rows already in memory (the demo's small ledger)."""
    def source() -> Generator[list[Any], None, None]:
        yield list(headers)
        yield from rows
    return Table(name, kind, None, headers, source)


def _table(display: str, kind: str, encoding: str | None, rows: RowSource) -> Table:
    with contextlib.closing(rows()) as source:
        header = next((row for row in source if any(cell not in (None, "") for cell in row)), None)
    if header is None:
        raise FileUnreadable(f"{display}: the file holds no rows; the first row must be the column headers",
                             f"{display}：文件中没有数据；第一行应为表头")
    headers = tuple(_header(cell, index) for index, cell in enumerate(header))
    return Table(display, kind, encoding, headers, rows)


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
