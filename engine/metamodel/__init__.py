"""Blueprint YAML → one immutable, validated `Metamodel`. Imports nothing else of the engine."""

from .errors import BlueprintError, BlueprintInvalid, Location
from .loader import load_blueprint
from .model import (DedupAction, EntitySpec, FieldSpec, FieldType, Label, ListViewSpec, Metamodel,
                    OnDelete, SortKey)
from .crossrefs import SYSTEM_FIELDS

__all__ = ["BlueprintError", "BlueprintInvalid", "DedupAction", "EntitySpec", "FieldSpec", "FieldType",
           "Label", "ListViewSpec", "Location", "Metamodel", "OnDelete", "SYSTEM_FIELDS", "SortKey",
           "load_blueprint"]
