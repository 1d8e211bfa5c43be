"""Related records as the blueprint names them: "the activities of this opportunity", "the
contacts of its account", "the orders of its account" — an entity, the link that relates it to
this record, and an optional condition each related record must meet.

A stage requirement ("a done demo activity"), an approval's named count ("overdue payments in
the last 3 months") and `update_related` all mean the same two shapes, so one spec and one
builder serve them:

- children: `via` is a link of `entity` pointing at this record (activity.opportunity);
- siblings: `via` is a link both `entity` and this record have, to the same third entity
  (contact.account and opportunity.account: "contacts of this opportunity's account").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from engine.metamodel.checks import Checker
from engine.metamodel.entities import EntitySpec, FieldType
from engine.metamodel.errors import did_you_mean
from engine.metamodel.expressions import Expression
from engine.metamodel.schema import EXPRESSION, NAME
from engine.metamodel.source import PathKey


class RelatedMode(Enum):
    CHILDREN = "children"   # entity.via == this record's id
    SIBLINGS = "siblings"   # entity.via == this record's own via


@dataclass(frozen=True, slots=True)
class RelatedSpec:
    """Records of `entity` related to a record of `source` through `via`, that meet `where`."""

    entity: str
    via: str
    mode: RelatedMode
    where: Expression | None = None

    def describe(self) -> str:
        return f"{self.entity}.{self.via}" + (f" where {self.where.source}" if self.where else "")


RELATED_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["entity"], "additionalProperties": False,
    "properties": {"entity": NAME, "via": NAME, "where": EXPRESSION}}


def related_mode(checker: Checker, path: PathKey, source: EntitySpec, target: EntitySpec,
                 via: str) -> RelatedMode | None:
    """children when target.via links to `source`; siblings when both link through `via` to the
    same entity; None after reporting what to write instead."""
    links = [spec.name for spec in target.fields if spec.type is FieldType.LINK]
    spec = target.field(via) if target.has_field(via) else None
    if spec is None or spec.type is not FieldType.LINK:
        checker.error(path, f"via '{via}' is not a link field of {target.name}",
                      did_you_mean(via, links) + f" Name the link of {target.name} that points at {source.name} "
                      f"or at what {source.name} links to.")
        return None
    if spec.link_entity == source.name:
        return RelatedMode.CHILDREN
    own = source.field(via) if source.has_field(via) else None
    if own is not None and own.type is FieldType.LINK and own.link_entity == spec.link_entity:
        return RelatedMode.SIBLINGS
    checker.error(path, f"{target.name}.{via} links to {spec.link_entity}; {source.name} neither is that nor has "
                  f"a '{via}' link to it", f"name a link of {target.name} to {source.name}, or a link both "
                  "entities share")
    return None


def build_related(checker: Checker, path: PathKey, raw: dict[str, Any], source: EntitySpec) -> RelatedSpec | None:
    """A RelatedSpec from `{entity, via, where}`; `via` may be left out when exactly one link of
    the entity points at `source`."""
    target = checker.entity(path + ("entity",), raw["entity"], "related records")
    if target is None:
        return None
    via = raw.get("via")
    if via is None:
        pointing = [spec.name for spec in target.fields if spec.type is FieldType.LINK
                    and spec.link_entity == source.name]
        if len(pointing) != 1:
            checker.error(path, f"say which link of {target.name} relates it to {source.name}",
                          f"add via: <link field>; links of {target.name} to {source.name}: "
                          f"{', '.join(pointing) or 'none'}")
            return None
        via = pointing[0]
    mode = related_mode(checker, path + ("via",), source, target, via)
    if mode is None:
        return None
    where = checker.expression(path + ("where",), raw["where"], target) if raw.get("where") else None
    return RelatedSpec(target.name, via, mode, where)
