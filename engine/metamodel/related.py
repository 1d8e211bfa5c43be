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
from engine.metamodel.messages import Msg
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
        checker.error(path, Msg("via '{via}' is not a link field of {target}", via=via, target=target.name),
                      Msg("{suggestion} Name the link of {target} that points at {source} or at what {source} "
                          "links to.",
                          suggestion=did_you_mean(via, links), target=target.name, source=source.name))
        return None
    if spec.link_entity == source.name:
        return RelatedMode.CHILDREN
    own = source.field(via) if source.has_field(via) else None
    if own is not None and own.type is FieldType.LINK and own.link_entity == spec.link_entity:
        return RelatedMode.SIBLINGS
    checker.error(path, Msg("{target}.{via} links to {linked}; {source} neither is that nor has a '{via}' link to it",
                            target=target.name, via=via, linked=spec.link_entity, source=source.name),
                  Msg("name a link of {target} to {source}, or a link both entities share",
                      target=target.name, source=source.name))
    return None


def build_related(checker: Checker, path: PathKey, raw: dict[str, Any], source: EntitySpec) -> RelatedSpec | None:
    """A RelatedSpec from `{entity, via, where}`; `via` may be left out when exactly one link of
    the entity points at `source`."""
    target = checker.entity(path + ("entity",), raw["entity"], Msg("related records"))
    if target is None:
        return None
    via = raw.get("via")
    if via is None:
        pointing = [spec.name for spec in target.fields if spec.type is FieldType.LINK
                    and spec.link_entity == source.name]
        if len(pointing) != 1:
            checker.error(path, Msg("say which link of {target} relates it to {source}",
                                    target=target.name, source=source.name),
                          Msg("add via: <link field>; links of {target} to {source}: {links}", target=target.name,
                              source=source.name, links=", ".join(pointing) or Msg("none")))
            return None
        via = pointing[0]
    mode = related_mode(checker, path + ("via",), source, target, via)
    if mode is None:
        return None
    where = checker.expression(path + ("where",), raw["where"], target) if raw.get("where") else None
    return RelatedSpec(target.name, via, mode, where)
