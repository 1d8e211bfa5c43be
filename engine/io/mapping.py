"""From a file's columns to a record's input values.

`suggest_mapping` proposes a field for each header from the fields' names and labels in both
languages and common synonyms (客户名称/公司名称/Company → company; 手机/电话/Mobile → phone).
`RowMapper` turns one row of cells into the values RecordService takes: columns joined into
their field, value maps and option labels for choices, dates in the usual spreadsheet forms
(2026/1/5, 2026-01-05, 2026年1月5日, Excel serials such as 45297), yes/no words, owners by
username or name. What it cannot read is a FieldError naming the field, as the write path's.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from engine.metamodel import EntitySpec, FieldSpec, FieldType, Label
from engine.metamodel.imports import CREATED_AT, OWNER, ColumnSpec, ImportSpec, created_at_field
from engine.runtime.records.fieldkinds import FieldError
from engine.runtime.records.lookups import only_match

from engine.io.readers import cell_text

SYNONYMS: dict[str, tuple[str, ...]] = {
    "name": ("姓名", "联系人", "联系人姓名", "客户姓名", "名字", "full name", "contact name", "contact", "lead name"),
    "company": ("客户名称", "公司名称", "公司", "企业名称", "单位名称", "单位", "company name", "account name",
                "account", "organization", "organisation"),
    "phone": ("手机", "手机号", "手机号码", "电话", "联系电话", "联系方式", "mobile", "mobile phone", "cell", "phone",
              "phone number", "tel", "telephone"),
    "email": ("邮箱", "电子邮箱", "邮件", "e-mail", "email address", "mail"),
    "wechat": ("微信", "微信号", "wechat", "weixin"),
    "job_title": ("职位", "职务", "title", "position"),
    "region": ("大区", "区域", "地区", "territory"),
    "province": ("省", "省份", "state", "province"),
    "city": ("城市", "市", "city"),
    "industry": ("行业", "所属行业", "industry"),
    "source": ("来源", "渠道", "来源渠道", "线索来源", "lead source", "source"),
    "status": ("状态", "线索状态", "lead status", "status"),
    "notes": ("备注", "说明", "description", "notes", "comments", "remark"),
    "budget": ("预算", "budget"),
    OWNER: ("负责人", "销售", "归属销售", "跟进人", "所属销售", "owner", "lead owner", "account owner", "sales rep"),
}
_SPLIT = re.compile(r"[,，;；、|/]+")
_DATE = re.compile(r"^\s*(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?"
                   r"(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?\s*$")
_EXCEL_EPOCH = dt.date(1899, 12, 30)
EARLIEST, LATEST = dt.date(1900, 1, 1), dt.date(2100, 12, 31)
_TRUE = {"1", "true", "yes", "y", "是", "有", "√", "✓", "对", "x"}
_FALSE = {"0", "false", "no", "n", "否", "无", "没有", "×", "不"}


def _norm(text: str) -> str:
    return re.sub(r"[\s_\-:：()（）*]+", "", text).casefold()


@dataclass(frozen=True, slots=True)
class Suggestion:
    column: str
    field: str | None     # None: nothing fits (the column is left out)
    why: str              # "label", "synonym", "name", "similar" or ""


def suggest_mapping(entity: EntitySpec, headers: Sequence[str]) -> list[Suggestion]:
    """A field for each header, each field at most once (the first header that names it)."""
    names: dict[str, tuple[str, str]] = {}
    for spec in entity.fields:
        if spec.type is FieldType.COMPUTED:
            continue
        names.setdefault(_norm(spec.name), (spec.name, "name"))
        for _, text in spec.label.texts:
            names.setdefault(_norm(text), (spec.name, "label"))
    for field, words in SYNONYMS.items():
        if field == OWNER or entity.has_field(field):
            for word in words:
                names.setdefault(_norm(word), (field, "synonym"))
    names.setdefault("owner", (OWNER, "name"))
    taken: set[str] = set()
    suggestions = []
    for header in headers:
        key = _norm(header)
        found = names.get(key)
        if found is None:
            close = difflib.get_close_matches(key, list(names), n=1, cutoff=0.8)
            found = (names[close[0]][0], "similar") if close else None
        if found is None or found[0] in taken:
            suggestions.append(Suggestion(header, None, ""))
            continue
        taken.add(found[0])
        suggestions.append(Suggestion(header, found[0], found[1]))
    return suggestions


def mapping_from_suggestions(entity: EntitySpec, suggestions: Sequence[Suggestion], *, name: str = "suggested",
                             history: bool = False, batch: int = 1000) -> ImportSpec:
    columns = tuple(ColumnSpec(s.column, s.field) for s in suggestions if s.field is not None)
    return ImportSpec(name, Label.of(None, name), entity.name, columns, (), history, batch)


def mapping_yaml(spec: ImportSpec) -> str:
    """The mapping as a blueprint file (blueprints/<app>/imports/<name>.yaml), for people to edit."""
    columns: dict[str, Any] = {}
    for column in spec.columns:
        if column.values or column.date_format or column.lookup:
            item: dict[str, Any] = {"field": column.field}
            if column.lookup:
                item["lookup"] = column.lookup
            if column.values:
                item["values"] = dict(column.values)
            if column.date_format:
                item["date_format"] = column.date_format
            columns[column.column] = item
        else:
            columns[column.column] = column.field
    body: dict[str, Any] = {"entity": spec.entity, "history": spec.history, "batch": spec.batch, "columns": columns}
    if spec.defaults:
        body["defaults"] = dict(spec.defaults)
    if spec.notify:
        body["notify"] = spec.notify
    return yaml.safe_dump({"imports": {spec.name: body}}, allow_unicode=True, sort_keys=False)


class RowMapper:
    """One mapping applied to rows of one file (whose `headers` are known)."""

    def __init__(self, entity: EntitySpec, spec: ImportSpec, headers: Sequence[str],
                 users: Mapping[str, int],
                 links: Mapping[str, tuple[EntitySpec, Mapping[str, tuple[int, ...]]]] | None = None) -> None:
        """`links`: for each link field a column gives by a natural key (`lookup:`), the target entity
        and its records' ids by that key's text (engine/runtime/records/lookups.py, key_index)."""
        self.entity = entity
        self.spec = spec
        self.links = links or {}
        self.users = {key.casefold(): value for key, value in users.items()}  # username / display name → id
        index = {header: position for position, header in enumerate(headers)}
        by_norm = {_norm(header): position for position, header in enumerate(headers)}
        self.missing = [column.column for column in spec.columns
                        if column.column not in index and _norm(column.column) not in by_norm]
        self.columns: list[tuple[int, ColumnSpec, FieldSpec | None, dict[str, str]]] = []
        for column in spec.columns:
            position = index.get(column.column, by_norm.get(_norm(column.column)))
            if position is None:
                continue
            field = None if column.field == OWNER else created_at_field(entity) if column.field == CREATED_AT \
                else entity.field(column.field)
            values = {_norm(key): value for key, value in column.values}
            if field is not None:
                for choice in field.choices:
                    values.setdefault(_norm(choice.value), choice.value)
                    for _, text in choice.label.texts:
                        values.setdefault(_norm(text), choice.value)
            self.columns.append((position, column, field, values))
        self.defaults = dict(spec.defaults)

    def values(self, row: Sequence[Any]) -> tuple[dict[str, Any], list[FieldError]]:
        """The input values of one row and the problems met reading them."""
        values: dict[str, Any] = {}
        errors: list[FieldError] = []
        for position, column, field, choices in self.columns:
            cell = row[position]
            if cell is None or (isinstance(cell, str) and not cell.strip()):
                continue
            try:
                value = self._value(column, field, choices, cell)
            except FieldError as error:
                errors.append(error)
                continue
            name = column.field
            if name in values and isinstance(values[name], str) and isinstance(value, str):
                values[name] = f"{values[name]} {value}"     # First Name + Last Name → name
            elif name in values and isinstance(values[name], list) and isinstance(value, list):
                values[name] = [*values[name], *(v for v in value if v not in values[name])]
            else:
                values[name] = value
        for name, value in self.defaults.items():
            if name not in values and not any(error.field == name for error in errors):
                values[name] = self._owner(value) if name == OWNER and isinstance(value, str) else value
        return values, errors

    def _value(self, column: ColumnSpec, field: FieldSpec | None, choices: Mapping[str, str], cell: Any) -> Any:
        if field is None:
            return self._owner(cell)
        if column.lookup is not None:
            target, index = self.links[field.name]
            text = cell_text(cell).strip()
            return only_match(field.name, target, column.lookup, text, index.get(text, ()))
        kind = field.type
        if column.field == CREATED_AT:  # an instant: the business zone's wall time
            return _created_at(field, _date(field, column.date_format, cell))
        if kind in (FieldType.DATE, FieldType.DATETIME):
            return _date(field, column.date_format, cell)
        if kind is FieldType.CHOICE:
            text = cell_text(cell).strip()
            return choices.get(_norm(text), text)
        if kind in (FieldType.TAGS, FieldType.MULTICHOICE):
            if isinstance(cell, list):
                return cell
            return [choices.get(_norm(part), part.strip()) for part in _SPLIT.split(cell_text(cell)) if part.strip()]
        if kind is FieldType.BOOLEAN:
            text = _norm(cell_text(cell))
            if text in choices:
                return choices[text]
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise FieldError(field.name, "invalid", f"{field.name}: '{cell}' is not yes or no",
                             f"“{cell}”应为“是”或“否”")
        if kind in (FieldType.STRING, FieldType.TEXT, FieldType.PHONE, FieldType.EMAIL, FieldType.URL):
            return cell_text(cell).strip()
        return cell

    def _owner(self, cell: Any) -> int:
        text = cell_text(cell).strip()
        found = self.users.get(text.casefold())
        if found is None:
            raise FieldError(OWNER, "unknown_user", f"owner: there is no user '{text}' (give a username or a name)",
                             f"没有名为“{text}”的用户（请填写用户名或姓名）")
        return found


def _date(field: FieldSpec, date_format: str | None, cell: Any) -> Any:
    moment: dt.datetime | None = None
    if isinstance(cell, dt.datetime):
        moment = cell
    elif isinstance(cell, dt.date):
        moment = dt.datetime.combine(cell, dt.time())
    elif isinstance(cell, (int, float)) and not isinstance(cell, bool):
        moment = _serial(field, cell)
    else:
        text = str(cell).strip()
        if date_format:
            try:
                moment = dt.datetime.strptime(text, date_format)
            except ValueError:
                raise _bad_date(field, text, date_format) from None
        elif re.fullmatch(r"\d{4,5}(\.\d+)?", text):
            moment = _serial(field, float(text))
        else:
            match = _DATE.match(text)
            if match is None:
                raise _bad_date(field, text, None)
            year, month, day, hour, minute, second = (int(part) if part else 0 for part in match.groups())
            try:
                moment = dt.datetime(year, month, day, hour, minute, second)
            except ValueError:
                raise _bad_date(field, text, None) from None
    if not EARLIEST <= moment.date() <= LATEST:
        raise FieldError(field.name, "date_out_of_range",
                         f"{field.name}: {moment.date().isoformat()} is out of range ({EARLIEST.year}–{LATEST.year})",
                         f"日期 {moment.date().isoformat()} 超出范围（{EARLIEST.year}–{LATEST.year} 年）")
    if field.type is FieldType.DATE:
        return moment.date()
    return moment


def _created_at(field: FieldSpec, moment: dt.datetime) -> dt.datetime:
    """When a past record was first entered, as an instant (UTC): the sheet's wall time is the
    business time zone's (the write refuses one later than now: records/batch.py)."""
    return moment.replace(tzinfo=ZoneInfo(field.timezone)).astimezone(dt.timezone.utc)


def _serial(field: FieldSpec, number: float) -> dt.datetime:
    """An Excel date serial (days since 1899-12-30, the fraction the time of day)."""
    if not 1 <= number < 2958466:
        raise FieldError(field.name, "date_out_of_range", f"{field.name}: {number:g} is not an Excel date",
                         f"{number:g} 不是有效的 Excel 日期")
    return dt.datetime.combine(_EXCEL_EPOCH, dt.time()) + dt.timedelta(days=number)


def _bad_date(field: FieldSpec, text: str, date_format: str | None) -> FieldError:
    shape = f"the mapping's date_format {date_format}" if date_format else "2026-01-05, 2026/1/5 or 2026年1月5日"
    return FieldError(field.name, "invalid_date", f"{field.name}: '{text}' is not a date; write it as {shape}",
                      f"“{text}”不是日期，请写成 2026-01-05、2026/1/5 或 2026年1月5日")
