"""Links given by a natural key instead of a record id — a campus by its name, a product by its
code, an account by its name — as webhook mappings (`lookup:`) and import columns (`lookup:`) give
them. One rule for both: the value must name exactly one record of the link's target; none or
several is a FieldError naming the field and the value, in English and Chinese.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from engine.metamodel.entities import EntitySpec
from engine.runtime.records.fieldkinds import FieldError
from engine.runtime.records.values import coerce_input
from engine.runtime.storage.tables import Schema


def find_by_key(connection: sa.Connection, schema: Schema, field: str, target: EntitySpec, key: str,
                value: Any) -> int:
    """The id of the one `target` record whose `key` field holds `value` (the value read as that field
    reads input); FieldError for `field` when it cannot be such a value, or names no record or several."""
    spec = target.field(key)
    data, problems = coerce_input(target, {key: value}, kinds=schema.kinds)
    if problems or data.get(key) is None:
        shown = str(value)[:100]
        raise FieldError(field, "lookup_invalid", f"{field}: '{shown}' cannot be a {target.name} {key}",
                         f"“{shown}”不是有效的{_zh(target)}{_zh_field(target, key)}")
    table = schema.table(target.name)
    row = schema.kinds.of_field(spec).to_row(spec, data[key])
    found = connection.execute(sa.select(table.c.id).where(*(table.c[column] == stored for column, stored
                                                             in row.items())).limit(2)).scalars().all()
    return only_match(field, target, key, value, [int(record_id) for record_id in found])


def key_index(connection: sa.Connection, schema: Schema, target: EntitySpec, key: str) -> dict[str, tuple[int, ...]]:
    """Every `target` record's id by the text of its `key` field (spaces around it dropped): what an
    import looks its rows' links up in, read once per file rather than once per row."""
    table = schema.table(target.name)
    index: dict[str, tuple[int, ...]] = {}
    for record_id, value in connection.execute(sa.select(table.c.id, table.c[key]).where(table.c[key].is_not(None))
                                               .order_by(table.c.id)):
        text = str(value).strip()
        index[text] = (*index.get(text, ()), int(record_id))
    return index


def only_match(field: str, target: EntitySpec, key: str, value: Any, found: Iterable[int]) -> int:
    """The one id in `found`; FieldError naming `field` and `value` when there is none, or several."""
    ids = list(found)
    shown = str(value)[:100]
    if not ids:
        raise FieldError(field, "lookup_not_found", f"{field}: there is no {target.name} whose {key} is '{shown}'",
                         f"找不到{_zh_field(target, key)}为“{shown}”的{_zh(target)}")
    if len(ids) > 1:
        raise FieldError(field, "lookup_ambiguous",
                         f"{field}: several {target.name} records have {key} '{shown}'; make the {key} unique "
                         "or give a more specific value",
                         f"有多条{_zh(target)}的{_zh_field(target, key)}都是“{shown}”，无法确定是哪一条")
    return ids[0]


def _zh(entity: EntitySpec) -> str:
    return entity.label.text("zh") or entity.name


def _zh_field(entity: EntitySpec, name: str) -> str:
    return entity.field(name).label.text("zh") or name
