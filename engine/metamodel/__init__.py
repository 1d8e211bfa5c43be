"""Blueprint YAML → one immutable, validated `Metamodel`. Imports nothing else of the engine."""

from engine.metamodel.crossrefs import SYSTEM_FIELDS
from engine.metamodel.entities import DedupAction, EntitySpec, FieldSpec, FieldType, ListViewSpec, OnDelete, SortKey
from engine.metamodel.errors import BlueprintError, BlueprintInvalid, Location
from engine.metamodel.labels import Label
from engine.metamodel.loader import load_blueprint
from engine.metamodel.model import Metamodel
from engine.metamodel.vocabulary import Vocabulary

__all__ = ["BlueprintError", "BlueprintInvalid", "DedupAction", "EntitySpec", "FieldSpec", "FieldType",
           "Label", "ListViewSpec", "Location", "Metamodel", "OnDelete", "SYSTEM_FIELDS", "SortKey",
           "Vocabulary", "load_blueprint"]
