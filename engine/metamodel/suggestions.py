"""`suggestions:` documents: records of one entity suggested on the page of another, ranked by how
often they settled similar records ("knowledge-base solutions suggested on a ticket by product
model and fault code, ranked by how many closed tickets they resolved").

A suggestion names the entity whose pages show it (`on`), the entity suggested (`suggest`),
the fields both have that must be equal (`match`), the link of `on` that records which
suggestion was used (`used_by`) and when a record counts as settled (`settled`: field →
values). The rank is computed from the settled records, never typed in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from engine.metamodel.checks import Built, Checker, build_items, default_label
from engine.metamodel.entities import FieldType
from engine.metamodel.errors import NOWHERE, Location, did_you_mean
from engine.metamodel.labels import Label
from engine.metamodel.messages import Msg
from engine.metamodel.schema import LABEL, NAME
from engine.metamodel.source import PathKey, SourceDocument


if TYPE_CHECKING:  # the Metamodel holds these specs; builders only read it
    from engine.metamodel.model import Metamodel
    from engine.metamodel.vocabulary import Vocabulary


@dataclass(frozen=True, slots=True)
class SuggestionSpec:
    name: str
    label: Label
    on: str
    suggest: str
    match: tuple[str, ...]
    used_by: str
    settled: tuple[tuple[str, tuple[Any, ...]], ...]
    limit: int = 5
    location: Location = NOWHERE


SUGGESTIONS_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["suggestions"], "additionalProperties": False, "properties": {
        "suggestions": {"type": "object", "minProperties": 1, "propertyNames": NAME, "additionalProperties": {
            "type": "object", "required": ["on", "suggest", "match", "used_by", "settled"],
            "additionalProperties": False,
            "properties": {"label": LABEL, "description": {"type": "string"}, "on": NAME, "suggest": NAME,
                           "match": {"type": "array", "items": NAME, "minItems": 1, "uniqueItems": True},
                           "used_by": NAME, "settled": {"type": "object", "minProperties": 1, "propertyNames": NAME},
                           "limit": {"type": "integer", "minimum": 1, "maximum": 20}}}}}}


def build_suggestions(documents: list[SourceDocument], model: Metamodel, vocabulary: Vocabulary) -> Built:
    items, errors = build_items("suggestions", Msg("suggestion"), documents, model, vocabulary, _build)
    return replace(model, suggestions=tuple(items)), errors


def _build(checker: Checker, name: str, data: dict[str, Any], path: PathKey, _: int) -> SuggestionSpec | None:
    on = checker.entity(path + ("on",), data["on"], Msg("suggestion '{name}'", name=name))
    suggest = checker.entity(path + ("suggest",), data["suggest"], Msg("suggestion '{name}'", name=name))
    if on is None or suggest is None:
        return None
    for index, field in enumerate(data["match"]):
        mine = checker.field(path + ("match", index), on, field, Msg("match field"))
        theirs = checker.field(path + ("match", index), suggest, field, Msg("match field"))
        if mine is not None and theirs is not None and mine.value_type is not theirs.value_type:
            checker.error(path + ("match", index), Msg("{on}.{field} is a {mine} field but {suggest}.{field} is a "
                                                       "{theirs} field", on=on.name, field=field, mine=mine.type.value,
                                                       suggest=suggest.name, theirs=theirs.type.value),
                          Msg("match fields of the same type"))
    link = checker.field(path + ("used_by",), on, data["used_by"], Msg("used_by link"), types=(FieldType.LINK,))
    if link is not None and link.link_entity != suggest.name:
        checker.error(path + ("used_by",), Msg("{on}.{link} links to {target}, not {suggest}", on=on.name,
                                               link=link.name, target=str(link.link_entity), suggest=suggest.name),
                      did_you_mean(suggest.name, [f.name for f in on.fields if f.link_entity == suggest.name]))
    settled = []
    for field, value in data["settled"].items():
        spec = checker.field(path + ("settled", field), on, field, Msg("settled field"))
        values = tuple(value) if isinstance(value, list) else (value,)
        for item in values:
            checker.option(path + ("settled", field), spec, item, Msg("value"))
        settled.append((field, values))
    return SuggestionSpec(name, default_label(data, name), on.name, suggest.name, tuple(data["match"]),
                          data["used_by"], tuple(settled), int(data.get("limit", 5)), checker.doc.where_key(path))
