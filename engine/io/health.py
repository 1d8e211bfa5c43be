"""The data-health report: what a file holds and what an import of it would do, before anything
is written.

For each row the mapping is applied and the values go through the write path's own checks
(coercion, defaults, computed fields, required fields, validations) without a transaction.
The report counts the rows; the empty rate of each mapped field; the invalid values per field
(bad phone, unknown choice, date out of range, required missing) with their row numbers, the
value and why; duplicates inside the file and against the stored records by the entity's
dedup keys (one indexed IN query per key and 900 values); and what the import would do with
each row — create, merge or reject. As text for the terminal, as HTML for the screen and as an
XLSX workbook (xlsxwriter) to pass around.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as _field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from engine.metamodel import DedupAction, EntitySpec
from engine.metamodel.imports import CREATED_AT, OWNER, ImportSpec, created_at_field
from engine.runtime.records.batch import past_creation
from engine.runtime.records.fieldkinds import FieldError
from engine.runtime.records.service import RecordService
from engine.runtime.records.values import (apply_defaults, check_required, check_validations, coerce_input,
                                           compute_fields, is_empty)

from engine.io.mapping import RowMapper
from engine.io.readers import Table, cell_text

EXAMPLES = 20  # invalid values listed per field (all are counted)

# the reader's words: (catalogue key, **values) → its text in their language; the CLI and the
# import screen pass theirs (the catalogue belongs to the screens, above this package)
Say = Callable[..., str]


@dataclass(slots=True)
class Problem:
    row: int          # as Excel numbers it: the header is row 1, the first data row 2
    value: str
    code: str
    message: str
    message_zh: str


@dataclass(slots=True)
class FieldHealth:
    field: str
    label: str
    label_zh: str
    filled: int = 0
    invalid: int = 0
    problems: list[Problem] = _field(default_factory=list)


@dataclass(slots=True)
class Duplicate:
    row: int
    key: str              # e.g. "phone=+8613800000001"
    first_row: int | None  # the earlier row of the file it repeats
    record_id: int | None  # the stored record it matches


@dataclass(slots=True)
class HealthReport:
    file: str
    entity: str
    mapping: str
    rows: int
    encoding: str | None
    unmapped: list[str]           # columns of the file no field takes
    missing: list[str]            # columns the mapping names that the file lacks
    fields: list[FieldHealth]
    duplicates_in_file: list[Duplicate]
    duplicates_in_db: list[Duplicate]
    created: int
    merged: int
    rejected: int
    rejected_rows: dict[int, str]  # row → reasons
    on_match: str

    @property
    def invalid_rows(self) -> int:
        return len(self.rejected_rows)

    def text(self, say: Say, lang: str) -> str:
        """The report for the terminal in the reader's language (`say`: the catalogue's text for
        a key in `lang`; problems keep the message of that language)."""
        lines = [say("health_title", file=self.file, entity=self.entity, mapping=self.mapping),
                 "  " + say("health_rows", rows=self.rows)
                 + ("   " + say("health_encoding", encoding=self.encoding) if self.encoding else "")]
        if self.missing:
            lines.append("  " + say("health_missing", columns=", ".join(self.missing)))
        if self.unmapped:
            lines.append("  " + say("health_unmapped", columns=", ".join(self.unmapped)))
        dup_file, dup_db = len(self.duplicates_in_file), len(self.duplicates_in_db)
        lines.append("  " + say("health_dup_file_count", count=dup_file, rate=_rate(dup_file, self.rows)))
        lines.append("  " + say("health_dup_db_count", count=dup_db, rate=_rate(dup_db, self.rows)))
        lines.append(f"  {say('health_field'):<32} {say('health_filled'):>8}   {say('health_invalid'):>6}")
        for item in self.fields:
            label = item.label_zh if lang == "zh" else item.label
            lines.append(f"  {label} {item.field:<24} {_rate(item.filled, self.rows):>8}   {item.invalid:>6}")
        for item in self.fields:
            for problem in item.problems[:5]:
                lines.append("    " + say("health_problem", row=problem.row, field=item.field, value=problem.value,
                                          message=_message(problem, lang)))
            if item.invalid > 5:
                lines.append("    " + say("health_more", field=item.field, count=item.invalid - 5))
        lines.append("  " + say("health_would", created=self.created, merged=self.merged, rejected=self.rejected))
        return "\n".join(lines)

    def html(self, say: Say, lang: str) -> str:
        """The report as an HTML fragment in the reader's language (the import screen shows it before the run)."""
        e = html.escape
        out = [f"<section class='health'><h2>{e(say('import_health_title'))}</h2>",
               f"<p>{e(self.file)} → {e(self.entity)} · {e(say('import_col_rows'))} <b data-rows>{self.rows}</b>"
               + (f" · {e(say('health_encoding', encoding=self.encoding))}" if self.encoding else "") + "</p>",
               "<ul class='health-summary'>",
               f"<li>{e(say('health_would_create'))}: <b data-created>{self.created}</b></li>",
               f"<li>{e(say('health_would_merge'))}: <b data-merged>{self.merged}</b></li>",
               f"<li>{e(say('health_would_reject'))}: <b data-rejected>{self.rejected}</b></li>",
               f"<li>{e(say('health_dup_file'))}: <b data-dup-file>{len(self.duplicates_in_file)}</b></li>",
               f"<li>{e(say('health_dup_db'))}: <b data-dup-db>{len(self.duplicates_in_db)}</b></li></ul>"]
        if self.missing:
            out.append(f"<p class='error'>{e(say('health_missing', columns=', '.join(self.missing)))}</p>")
        if self.unmapped:
            out.append(f"<p>{e(say('health_unmapped', columns=', '.join(self.unmapped)))}</p>")
        out.append(f"<table class='list'><thead><tr><th>{e(say('health_field'))}</th><th>{e(say('health_filled'))}</th>"
                   f"<th>{e(say('health_invalid'))}</th><th>{e(say('health_examples'))}</th></tr></thead><tbody>")
        for item in self.fields:
            examples = "<br>".join(e(say("health_example", row=p.row, value=p.value, message=_message(p, lang)))
                                   for p in item.problems[:5])
            label = item.label_zh if lang == "zh" else item.label
            out.append(f"<tr data-field='{e(item.field)}'><td>{e(label)} <small>{e(item.field)}</small></td>"
                       f"<td>{_rate(item.filled, self.rows)}</td><td>{item.invalid}</td><td>{examples}</td></tr>")
        out.append("</tbody></table></section>")
        return "".join(out)

    def write_xlsx(self, path: Path) -> None:
        """The report as a workbook: a summary sheet, one row per field, every problem, every duplicate."""
        import xlsxwriter
        workbook = xlsxwriter.Workbook(str(path), {"constant_memory": True})
        bold = workbook.add_format({"bold": True})
        summary = workbook.add_worksheet("概览 Summary")
        for row, (label, value) in enumerate((
                ("文件 File", self.file), ("实体 Entity", self.entity), ("映射 Mapping", self.mapping),
                ("行数 Rows", self.rows), ("编码 Encoding", self.encoding or ""),
                ("预计新建 Would create", self.created), ("预计合并 Would merge", self.merged),
                ("预计拒绝 Would reject", self.rejected),
                ("文件内重复 Duplicates in the file", len(self.duplicates_in_file)),
                ("与库中重复 Duplicates of stored records", len(self.duplicates_in_db)),
                ("缺少的列 Missing columns", ", ".join(self.missing)),
                ("未映射的列 Unmapped columns", ", ".join(self.unmapped)))):
            summary.write(row, 0, label, bold)
            summary.write(row, 1, value)
        fields = workbook.add_worksheet("字段 Fields")
        fields.write_row(0, 0, ["字段 Field", "名称 Label", "填充 Filled", "填充率 Fill rate", "无效 Invalid"], bold)
        for row, item in enumerate(self.fields, start=1):
            fields.write_row(row, 0, [item.field, item.label_zh, item.filled,
                                      item.filled / self.rows if self.rows else 0, item.invalid])
        problems = workbook.add_worksheet("问题 Problems")
        problems.write_row(0, 0, ["行 Row", "字段 Field", "值 Value", "代码 Code", "原因 Reason", "Reason"], bold)
        row = 1
        for item in self.fields:
            for problem in item.problems:
                problems.write_row(row, 0, [problem.row, item.field, problem.value, problem.code,
                                            problem.message_zh, problem.message])
                row += 1
        duplicates = workbook.add_worksheet("重复 Duplicates")
        duplicates.write_row(0, 0, ["行 Row", "键 Key", "重复文件第几行 First row", "库中记录 Stored record"], bold)
        for row, duplicate in enumerate(sorted(self.duplicates_in_file + self.duplicates_in_db,
                                               key=lambda d: d.row), start=1):
            duplicates.write_row(row, 0, [duplicate.row, duplicate.key, duplicate.first_row or "",
                                          duplicate.record_id or ""])
        workbook.close()


def _message(problem: Problem, lang: str) -> str:
    return problem.message_zh or problem.message if lang == "zh" else problem.message


def _rate(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "—"


def row_errors(records: RecordService, entity: EntitySpec, values: dict[str, Any]) -> list[FieldError]:
    """What the write path would say about these values before touching the database."""
    kinds = records.schema.kinds
    given, _, late = past_creation(values, records.clock.now())  # a history mapping's created_at column
    data, errors = coerce_input(entity, given, kinds=kinds)
    errors = late + errors
    errors += apply_defaults(entity, data, records.evaluator, kinds=kinds)
    errors += compute_fields(entity, data, records.evaluator, kinds=kinds)
    errors += check_required(entity, data, already_wrong=errors)
    if not errors:
        errors += check_validations(entity, data, records.evaluator)
    return errors


def key_values(records: RecordService, entity: EntitySpec, values: dict[str, Any]) -> list[tuple[tuple[str, ...], Any]]:
    """The dedup key values of a valid row, as stored (a phone in E.164), one per complete key."""
    if entity.dedup is None:
        return []
    kinds = records.schema.kinds
    data, _ = coerce_input(entity, {name: values[name] for name in {n for key in entity.dedup.keys for n in key}
                                    if name in values}, kinds=kinds)
    found = []
    for key in entity.dedup.keys:
        if all(data.get(name) is not None for name in key):
            found.append((key, tuple(kinds.of_field(entity.field(name)).to_row(entity.field(name), data[name])[name]
                                     for name in key)))
    return found


def analyse(records: RecordService, table: Table, spec: ImportSpec, mapper: RowMapper,
            limit: int | None = None) -> HealthReport:
    """The health report of `table` (or of its first `limit` rows) under `spec`; writes nothing.
    One pass over the file; what is kept per row is its number and dedup keys (and a rejected
    row's reason), never its cells."""
    entity = records.entity(spec.entity)
    body = table.iter_rows(stop=limit)
    position = -1
    fields = {name: FieldHealth(name, *_labels(entity, name)) for name in spec.fields()}
    rejected: dict[int, str] = {}
    valid: list[tuple[int, list[tuple[tuple[str, ...], Any]]]] = []
    for position, cells in enumerate(body):
        number = position + 2
        values, errors = mapper.values(cells)
        for name in fields:
            if not is_empty(values.get(name)):
                fields[name].filled += 1
        errors += row_errors(records, entity, values) if not errors else _rest(records, entity, values, errors)
        if errors:
            seen: set[str] = set()
            for error in errors:
                name = error.field or ""
                if name in seen:
                    continue
                seen.add(name)
                item = fields.get(name) or fields.setdefault(name, FieldHealth(name, *_labels(entity, name)))
                item.invalid += 1
                if len(item.problems) < EXAMPLES:
                    item.problems.append(Problem(number, _raw(mapper, cells, name), error.code, error.message,
                                                 error.zh or error.message))
            rejected[number] = "; ".join(f"{e.field}: {e.zh or e.message}" if e.field and e.zh else e.message
                                         for e in errors)
            continue
        valid.append((number, key_values(records, entity, values)))
    stored = _stored_matches(records, entity, valid)
    first: dict[tuple[tuple[str, ...], Any], int] = {}
    in_file, in_db = [], []
    created = merged = 0
    on_match = entity.dedup.on_match if entity.dedup is not None else None
    for number, keys in valid:
        match_db = next(((key, value) for key, value in keys if (key, value) in stored), None)
        match_file = next(((key, value) for key, value in keys if (key, value) in first), None)
        for key, value in keys:
            first.setdefault((key, value), number)
        if match_db is not None:
            in_db.append(Duplicate(number, _key_text(*match_db), None, stored[match_db]))
        elif match_file is not None:
            in_file.append(Duplicate(number, _key_text(*match_file), first[match_file], None))
        if match_db is None and match_file is None or on_match is DedupAction.FLAG:
            created += 1
        elif on_match is DedupAction.REJECT:
            rejected[number] = f"与已有记录重复 duplicate of an existing {entity.name} ({_key_text(*(match_db or match_file))})"  # type: ignore[misc]
        else:
            merged += 1
    unmapped = [header for header in table.headers
                if header not in {column.column for column in spec.columns}]
    return HealthReport(table.name, entity.name, spec.name, position + 1, table.encoding,
                        [h for h in unmapped if not _mapped_loosely(spec, h)], mapper.missing,
                        list(fields.values()), in_file, in_db, created, merged, len(rejected), rejected,
                        on_match.value if on_match is not None else "none")


def _rest(records: RecordService, entity: EntitySpec, values: dict[str, Any],
          errors: list[FieldError]) -> list[FieldError]:
    """The write path's errors for the fields the mapping could read (its own errors come first)."""
    wrong = {error.field for error in errors}
    more = row_errors(records, entity, {name: value for name, value in values.items() if name not in wrong})
    return [error for error in more if error.field not in wrong]


def _mapped_loosely(spec: ImportSpec, header: str) -> bool:
    from engine.io.mapping import _norm
    return any(_norm(column.column) == _norm(header) for column in spec.columns)


def _labels(entity: EntitySpec, name: str) -> tuple[str, str]:
    if name == OWNER:
        return "Owner", "负责人"
    spec = created_at_field(entity) if name == CREATED_AT else entity.field(name) if entity.has_field(name) else None
    return (spec.label.text("en"), spec.label.text("zh")) if spec is not None else (name, name)


def _raw(mapper: RowMapper, cells: Sequence[Any], name: str) -> str:
    texts = [cell_text(cells[position]) for position, column, _, _ in mapper.columns if column.field == name]
    return " ".join(text for text in texts if text)


def _key_text(key: tuple[str, ...], value: Any) -> str:
    return " + ".join(f"{name}={part}" for name, part in zip(key, value))


def _stored_matches(records: RecordService, entity: EntitySpec,
                    valid: list[tuple[int, list[tuple[tuple[str, ...], Any]]]]) -> dict[tuple[tuple[str, ...], Any], int]:
    """(key, value) → the oldest stored record with it, for every key value of the valid rows."""
    if entity.dedup is None:
        return {}
    table = records.schema.table(entity.name)
    found: dict[tuple[tuple[str, ...], Any], int] = {}
    with records.db.read() as connection:
        for key in entity.dedup.keys:
            values = sorted({value for _, keys in valid for k, value in keys if k == key}, key=repr)
            if len(key) == 1:
                column = table.c[key[0]]
                for start in range(0, len(values), 900):
                    chunk = [value[0] for value in values[start:start + 900]]
                    rows = connection.execute(sa.select(table.c.id, column).where(column.in_(chunk))
                                              .order_by(table.c.id))
                    for row in rows:
                        found.setdefault((key, (row[1],)), row[0])
            else:
                for value in values:
                    match = connection.execute(sa.select(table.c.id).where(
                        *(table.c[name] == part for name, part in zip(key, value))).order_by(table.c.id).limit(1)).first()
                    if match is not None:
                        found[(key, value)] = match[0]
    return found
