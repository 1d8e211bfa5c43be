"""Reading related records for the blueprint's `related` specs (stage requirements, approval counts).

`where` is a blueprint expression over the related record, evaluated here in Python on the
columns it reads — the same evaluator every rule uses — so a requirement means exactly what
it says. Newest records are read first and reading stops once enough match (a requirement
needs one done demo, not all of them); at most MAX_SCANNED are read for a count.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from engine.metamodel import Metamodel
from engine.metamodel.crossrefs import SYSTEM_FIELDS
from engine.metamodel.related import RelatedMode, RelatedSpec
from engine.rules.expressions import Evaluator, ExpressionError
from engine.runtime.records.values import expression_values
from engine.runtime.storage.prepared import Prepared
from engine.runtime.storage.times import as_utc
from engine.runtime.storage.tables import Schema

MAX_SCANNED = 5000


class RelatedReader:
    """Ids of the records a RelatedSpec names for one record; statements prepared once per spec."""

    def __init__(self, model: Metamodel, schema: Schema, evaluator: Evaluator) -> None:
        self.model = model
        self.schema = schema
        self.evaluator = evaluator
        # by the spec's identity: specs live as long as the model, and hashing one (a frozen
        # dataclass holding an expression) costs more than the query it looks up
        self._statements: dict[tuple[int, bool], tuple[Prepared, tuple[tuple[str, Any], ...]]] = {}

    def matching(self, connection: sa.Connection, spec: RelatedSpec, source: str, record: Mapping[str, Any], *,
                 enough: int | None = None) -> tuple[int, ...]:
        """The ids (newest first) of the related records meeting `where`; stops at `enough`."""
        key = record.get("id") if spec.mode is RelatedMode.CHILDREN else record.get(spec.via)
        if key is None:
            return ()
        same = spec.mode is RelatedMode.SIBLINGS and spec.entity == source
        statement, fields = self._statement(spec, same)
        params: dict[str, Any] = {"key": key, "scan": MAX_SCANNED}
        if same:
            params["own"] = record.get("id") or 0
        found: list[int] = []
        for row in statement.rows(connection, params):
            if spec.where is not None and not self._meets(spec, fields, row):
                continue
            found.append(int(row.id))
            if enough is not None and len(found) >= enough:
                break
        return tuple(found)

    def count(self, connection: sa.Connection, spec: RelatedSpec, source: str, record: Mapping[str, Any]) -> int:
        return len(self.matching(connection, spec, source, record))

    def _meets(self, spec: RelatedSpec, fields: tuple[tuple[str, Any], ...], row: Any) -> bool:
        assert spec.where is not None
        mapping = row._asdict()
        values: dict[str, Any] = {name: as_utc(mapping[name]) if isinstance(mapping[name], dt.datetime) else mapping[name]
                                  for name in SYSTEM_FIELDS if name in mapping}  # created_at as now() compares
        for name, field in fields:
            values[name] = self.schema.kinds.by_name[field.kind].from_row(field, mapping)
        if self.model.entity(spec.entity).money_fields:
            values = expression_values(self.model.entity(spec.entity), values)
        try:
            return bool(self.evaluator.evaluate(spec.where, values))
        except (ExpressionError, ArithmeticError, TypeError):
            return False  # a condition over an empty field does not hold for this record

    def _statement(self, spec: RelatedSpec, same: bool) -> tuple[Prepared, tuple[tuple[str, Any], ...]]:
        cached = self._statements.get((id(spec), same))
        if cached is not None:
            return cached
        target = self.model.entity(spec.entity)
        table = self.schema.table(spec.entity)
        names = sorted(spec.where.names) if spec.where is not None else []
        fields = tuple(name for name in names if target.has_field(name))
        columns = {"id"} | {name for name in names if name in SYSTEM_FIELDS}
        for name in fields:
            field_spec = target.field(name)
            columns |= {column.name for column in self.schema.kinds.by_name[field_spec.kind].columns(field_spec)}
        query = sa.select(*(table.c[name] for name in sorted(columns))).where(
            table.c[spec.via] == sa.bindparam("key"))
        if same:
            query = query.where(table.c.id != sa.bindparam("own"))
        query = query.order_by(table.c.id.desc()).limit(sa.bindparam("scan"))
        cached = self._statements[(id(spec), same)] = (Prepared(query), tuple((name, target.field(name))
                                                                              for name in fields))
        return cached
