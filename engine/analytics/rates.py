"""The `within=<field>:<since>:<duration>` list filter: records whose `field` is set at most
`duration` after `since` (e.g. `within=assigned_at:created_at:24h`, assigned within a day of
arriving). Rates such as the 24 h assignment rate count their numerator with it, so the list
behind the numerator holds exactly the records counted; it works in lists, the JSON API and
exports like any list filter."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from engine.metamodel import FieldType, Metamodel
from engine.metamodel.durations import parse_duration
from engine.runtime.records.errors import QueryInvalid

_MOMENTS = ("created_at", "updated_at")


def within_condition(model: Metamodel, entity_name: str, table: sa.Table, value: str, dialect: str) -> Any:
    """`field` not empty and `field - since ≤ duration` (seconds compared in SQL on both databases)."""
    parts = value.split(":")
    if len(parts) != 3:
        raise QueryInvalid("within= takes <field>:<since>:<duration>, e.g. assigned_at:created_at:24h",
                           field="within")
    entity = model.entity(entity_name)
    moments = [*_MOMENTS, *(spec.name for spec in entity.fields if spec.type in (FieldType.DATETIME, FieldType.DATE))]
    for name in parts[:2]:
        if name not in moments:
            raise QueryInvalid(f"within=: '{name}' is not a date/datetime field of {entity.name} "
                               f"(known: {', '.join(moments)})", field="within")
    try:
        duration = parse_duration(parts[2])
    except ValueError as error:
        raise QueryInvalid(f"within=: {error}", field="within") from None
    if duration.business_days:
        raise QueryInvalid("within=: business days (bd) depend on a calendar; write hours or days (24h, 3d)",
                           field="within")
    end, start = table.c[parts[0]], table.c[parts[1]]
    if dialect == "postgresql":
        seconds: Any = sa.func.extract("epoch", end - start)
    else:
        seconds = (sa.func.julianday(end) - sa.func.julianday(start)) * 86400.0
    # a millisecond of slack: julianday's floating point must not drop a record exactly on the bound
    return sa.and_(end.is_not(None), start.is_not(None), seconds <= duration.fixed.total_seconds() + 0.001)
