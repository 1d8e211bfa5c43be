"""Suggestions on a record page (engine/metamodel/suggestions.py): the records of `suggest` whose
match fields equal this record's, ranked by how many settled records of the same match used them.

One grouped count over the settled records (an index on the match fields serves it) joined to
the candidates; the viewer sees only suggestions they may read.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.metamodel.suggestions import SuggestionSpec
from engine.runtime.records.actors import Actor
from engine.runtime.records.permissions import Forbidden
from engine.runtime.records.service import RecordService
from engine.runtime.storage.tables import Schema


@dataclass(frozen=True, slots=True)
class Suggested:
    record: dict[str, Any]
    uses: int   # settled records of the same match that used it


def rank(connection: sa.Connection, schema: Schema, spec: SuggestionSpec,
         record: Mapping[str, Any]) -> list[tuple[int, int]]:
    """(suggestion id, uses), best first; empty when the record has no match value yet."""
    matching = [(name, record.get(name)) for name in spec.match if record.get(name) not in (None, "")]
    if not matching:
        return []
    on, suggest = schema.table(spec.on), schema.table(spec.suggest)
    settled = [on.c[name].in_([value for value in values if value is not None]) for name, values in spec.settled]
    uses = (sa.select(on.c[spec.used_by].label("sid"), sa.func.count().label("uses"))
            .where(*(on.c[name] == value for name, value in matching), *settled, on.c[spec.used_by].is_not(None))
            .group_by(on.c[spec.used_by]).subquery())
    count = sa.func.coalesce(uses.c.uses, 0)
    query = (sa.select(suggest.c.id, count.label("uses")).select_from(suggest.outerjoin(uses, uses.c.sid == suggest.c.id))
             .where(*(suggest.c[name] == value for name, value in matching))
             .order_by(count.desc(), suggest.c.id).limit(spec.limit))
    return [(int(row.id), int(row.uses)) for row in connection.execute(query)]


def suggested(records: RecordService, ranked: list[tuple[int, int]], spec: SuggestionSpec,
              actor: Actor) -> Iterator[Suggested]:
    """The ranked suggestions the actor may read (`ranked` from `rank`, read beforehand)."""
    for suggestion_id, uses in ranked:
        try:
            yield Suggested(records.get(spec.suggest, suggestion_id, actor=actor), uses)
        except Forbidden:
            continue
