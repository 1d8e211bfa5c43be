"""`imports:` documents: how the columns of a spreadsheet become a record's fields.

A mapping names the target entity, the file's columns (header → field, with value maps for
choices and an optional date format), defaults for fields the file lacks, whether the rows
are history (records already in a late stage, written without the stage's requirements and
marked as history in their events), the batch size and the channel that tells each owner how
many records were imported for them. Deduplication follows the entity's own `dedup:` keys,
the same as for every other door. A mapping may live in the blueprint (`imports/*.yaml`,
included by app.yaml) or in a file of its own (`crm import --mapping M.yaml`), checked the
same way with file:line errors.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema

from engine.metamodel.checks import Built, Checker, build_items, default_label
from engine.metamodel.entities import EntitySpec, FieldSpec, FieldType
from engine.metamodel.errors import NOWHERE, BlueprintError, BlueprintInvalid, Location, did_you_mean
from engine.metamodel.labels import Label
from engine.metamodel.messages import Msg
from engine.metamodel.schema import LABEL, NAME, named_schema
from engine.metamodel.source import PathKey, SourceDocument, read_documents

if TYPE_CHECKING:  # the Metamodel holds these specs; builders only read it
    from engine.metamodel.model import Metamodel
    from engine.metamodel.vocabulary import Vocabulary

MAX_BATCH = 2000  # the seeds' rule: batches of at most 2,000 rows, each its own transaction
OWNER = "owner"   # a column may fill the record's owner (a username or display name)
CREATED_AT = "created_at"  # a history import's column may give when each record was first entered


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One column of the file: its header, the field it fills, a value map for choices
    (file value → option; compared without case and surrounding spaces) and a date format
    (strftime, e.g. "%d.%m.%Y") when the column's dates are in none of the usual forms."""

    column: str
    field: str
    values: tuple[tuple[str, str], ...] = ()
    date_format: str | None = None
    location: Location = NOWHERE
    lookup: str | None = None   # a link column holding the target's `lookup` field (an account's name), not an id


@dataclass(frozen=True, slots=True)
class ImportSpec:
    name: str
    label: Label
    entity: str
    columns: tuple[ColumnSpec, ...]
    defaults: tuple[tuple[str, Any], ...] = ()
    history: bool = False
    batch: int = 1000
    notify: str | None = None      # channel for the owners' summaries
    location: Location = NOWHERE

    def fields(self) -> tuple[str, ...]:
        """The fields the mapping fills, in column order, each once."""
        return tuple(dict.fromkeys(column.field for column in self.columns))


_COLUMN = {"oneOf": [NAME, {"type": "object", "required": ["field"], "additionalProperties": False, "properties": {
    "field": NAME, "values": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
    "date_format": {"type": "string", "minLength": 2}, "lookup": NAME}}]}

IMPORTS_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["imports"], "additionalProperties": False, "properties": {
        "imports": named_schema({
            "type": "object", "required": ["entity", "columns"], "additionalProperties": False, "properties": {
                "name": NAME, "label": LABEL, "description": {"type": "string"}, "entity": NAME,
                "history": {"type": "boolean"}, "batch": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH},
                "notify": NAME,
                "columns": {"type": "object", "minProperties": 1, "additionalProperties": _COLUMN},
                "defaults": {"type": "object", "propertyNames": NAME}}})}}


def build_imports(documents: list[SourceDocument], model: Metamodel, vocabulary: Vocabulary) -> Built:
    """ImportSpecs: a known entity, known fields, value maps onto real options, a known channel."""
    imports, errors = build_items("imports", Msg("import mapping"), documents, model, vocabulary, _build_import)
    return replace(model, imports=tuple(imports)), errors


def _lookup_fits(checker: Checker, at: PathKey, spec: FieldSpec | None, lookup: str) -> bool:
    """`lookup:` needs a link column, and names a field of the link's target."""
    if spec is None or spec.type is not FieldType.LINK or spec.link_entity is None:
        checker.error(at + ("lookup",), Msg("'lookup' applies to link fields (it finds the linked record by one of its "
                                            "fields)"),
                      Msg("remove lookup, or map the column to a link field"), key=True)
        return False
    if not checker.model.has_entity(spec.link_entity):
        return False
    return checker.field(at + ("lookup",), checker.model.entity(spec.link_entity), lookup, Msg("lookup field")) is not None


def created_at_field(entity: EntitySpec) -> FieldSpec:
    """The record's creation moment as a column of a history import fills it: a date and time in
    the business time zone (the one the entity's own date fields use)."""
    zone = entity.fields[0].timezone if entity.fields else "Asia/Shanghai"  # every field carries the app's zone
    return FieldSpec(CREATED_AT, FieldType.DATETIME, Label.of({"zh": "创建时间", "en": "Created"}), timezone=zone)


def _build_import(checker: Checker, name: str, data: dict[str, Any], path: PathKey, _: int) -> ImportSpec | None:
    entity = checker.entity(path + ("entity",), data["entity"], Msg("import mapping '{name}'", name=name))
    if entity is None:
        return None
    columns = []
    for header, raw in data["columns"].items():
        at = path + ("columns", header)
        item = raw if isinstance(raw, dict) else {"field": raw}
        field = item["field"]
        spec = None
        if field == CREATED_AT and not data.get("history"):
            checker.error(at, Msg("column '{column}' fills created_at, which only an import of past records may set",
                                  column=header),
                          Msg("add history: true to the mapping (the rows are past records), or leave the column out"))
            continue
        if field == CREATED_AT:
            spec = created_at_field(entity)
        elif field != OWNER:
            spec = checker.field(at + (("field",) if isinstance(raw, dict) else ()), entity, field,
                                 Msg("column's field"))
            if spec is None:
                continue
            if spec.type is FieldType.COMPUTED:
                checker.error(at, Msg("column '{column}' fills '{field}', which is computed", column=header, field=field),
                              Msg("computed fields are worked out from others: leave the column out"))
        values = tuple((str(key), str(value)) for key, value in (item.get("values") or {}).items())
        for key, value in values:
            if spec is not None and spec.choices:
                checker.option(at + ("values", key), spec, value, Msg("mapped value"))
        if values and spec is not None and not spec.choices and spec.type is not FieldType.BOOLEAN:
            checker.error(at + ("values",), Msg("value map on '{field}', a {type} field", field=field,
                                                type=spec.type.value),
                          Msg("value maps translate choices (and yes/no); remove it or map the column to a choice"))
        date_format = item.get("date_format")
        if date_format is not None:
            if spec is None or spec.type not in (FieldType.DATE, FieldType.DATETIME):
                checker.error(at + ("date_format",), Msg("date_format on '{field}', which is not a date field",
                                                         field=field),
                              Msg("remove it, or map the column to a date or datetime field"))
            elif _bad_format(date_format):
                checker.error(at + ("date_format",), Msg("date_format '{format}' reads no date", format=date_format),
                              Msg('use strftime codes, e.g. "%d.%m.%Y" or "%Y年%m月%d日"'))
        lookup = item.get("lookup")
        if lookup is not None and not _lookup_fits(checker, at, spec, lookup):
            continue
        columns.append(ColumnSpec(str(header), field, values, date_format, checker.doc.where(at), lookup))
    defaults = []
    for field, value in (data.get("defaults") or {}).items():
        spec = checker.field(path + ("defaults", field), entity, field, Msg("default field")) if field != OWNER else None
        if spec is None and field != OWNER:
            continue
        if isinstance(value, list):
            for item in value:
                checker.option(path + ("defaults", field), spec, item, Msg("default"))
        elif value is not None:
            checker.option(path + ("defaults", field), spec, value, Msg("default"))
        defaults.append((field, value))
    notify = data.get("notify")
    if notify is not None and notify not in {channel.name for channel in checker.model.channels}:
        checker.error(path + ("notify",), Msg("unknown channel '{name}'", name=notify),
                      did_you_mean(notify, [channel.name for channel in checker.model.channels]))
    mapped = {column.field for column in columns} | {field for field, _ in defaults}
    for spec in entity.fields:
        if spec.is_required and spec.default is None and spec.default_expression is None and spec.name not in mapped:
            checker.error(path + ("columns",), Msg("required field '{field}' is filled by no column and no default",
                                                   field=spec.name),
                          Msg("map a column to {field} or give it under defaults:", field=spec.name), key=True)
    return ImportSpec(name, default_label(data, name), entity.name, tuple(columns), tuple(defaults),
                      bool(data.get("history", False)), int(data.get("batch", 1000)), notify,
                      checker.doc.where_key(path))


def _bad_format(text: str) -> bool:
    sample = dt.datetime(2026, 1, 5, 9, 30)
    try:
        return dt.datetime.strptime(sample.strftime(text), text).date() != sample.date()
    except ValueError:
        return True


def load_import_file(path: Path, model: Metamodel, vocabulary: Vocabulary) -> tuple[ImportSpec, ...]:
    """The mappings of a mapping file outside the blueprint, checked like one of its files.
    Raises BlueprintInvalid with every problem at file:line."""
    documents, errors = read_documents(path, str(path))
    validator = jsonschema.Draft202012Validator(IMPORTS_SCHEMA)
    valid = []
    for doc in documents:
        problems = [BlueprintError(doc.where(tuple(error.absolute_path)), tuple(error.absolute_path),
                                   error.message, Msg("see docs/import-export.md for what a mapping holds"))
                    for error in validator.iter_errors(doc.data)]
        errors.extend(problems)
        if not problems:
            valid.append(doc)
    if not documents and not errors:
        errors.append(BlueprintError(Location(str(path), 1, 1), (), Msg("the mapping file is empty"),
                                     Msg("start it with 'imports:' (see docs/import-export.md)")))
    built, problems = build_imports(valid, model, vocabulary)
    errors.extend(problems)
    blocking = [error for error in errors if error.severity == "error"]
    if blocking:
        raise BlueprintInvalid(blocking)
    return built.imports
