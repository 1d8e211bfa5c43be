"""Blueprint YAML → one immutable, validated `Metamodel`. Imports nothing else of the engine."""

from engine.metamodel.errors import BlueprintError, BlueprintInvalid, Location
from engine.metamodel.loader import load_blueprint
from engine.metamodel.model import (DedupAction, EntitySpec, FieldSpec, FieldType, Label, ListViewSpec, Metamodel,
                                    OnDelete, SortKey)
from engine.metamodel.crossrefs import SYSTEM_FIELDS

__all__ = ["BlueprintError", "BlueprintInvalid", "DedupAction", "EntitySpec", "FieldSpec", "FieldType",
           "Label", "ListViewSpec", "Location", "Metamodel", "OnDelete", "SYSTEM_FIELDS", "SortKey",
           "load_blueprint"]
