"""What a blueprint may name that it does not declare itself: expression functions, field
types beyond the built-in ones, channel types and plugin action verbs.

The running engine decides these (its own extensions and the installed plugins, collected
by engine/extensions.py); the metamodel only checks a blueprint against them, so whoever
loads a blueprint passes them in as data. That keeps the metamodel free of the plugin
manager, and makes "unknown channel type 'discord'" an error at file:line when the plugin
providing it is not installed.
"""

from __future__ import annotations

import types
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.metamodel.channels import CHANNEL_TYPES
from engine.metamodel.entities import FieldType

SHIPPED_CHANNEL_TYPES = frozenset(CHANNEL_TYPES)


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return types.MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """The names beyond a blueprint's own declarations it may use, as the engine provides them.

    `field_types` maps each extra field `type:` name to the built-in type whose options,
    widgets and expressions it shares; `actions` maps each extra action verb to the JSON
    Schema its body must satisfy."""

    functions: frozenset[str] = frozenset()
    channel_types: frozenset[str] = SHIPPED_CHANNEL_TYPES
    field_types: Mapping[str, FieldType] = field(default_factory=lambda: _frozen(None))
    actions: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: _frozen(None))

    @classmethod
    def of(cls, *, functions: Collection[str] = (), channel_types: Collection[str] = SHIPPED_CHANNEL_TYPES,
           field_types: Mapping[str, FieldType] | None = None,
           actions: Mapping[str, Mapping[str, Any]] | None = None) -> Vocabulary:
        return cls(frozenset(functions), frozenset(channel_types), _frozen(field_types), _frozen(actions))

    def field_type(self, name: str) -> FieldType | None:
        """The built-in type that stores fields of `type: name`, or None when nothing provides it."""
        try:
            return FieldType(name)
        except ValueError:
            return self.field_types.get(name)

    def field_type_names(self) -> list[str]:
        return sorted({kind.value for kind in FieldType} | set(self.field_types))

