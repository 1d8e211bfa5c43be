"""JSON Schemas, one per blueprint document kind.

A document's kind is its first key: `app: crm` is an app file, `entity: lead` an entity
file. The schemas check shape and spelling; meaning (does a link name an entity that
exists?) is checked afterwards in `crossrefs.py`.
"""

from __future__ import annotations

from typing import Any

from engine.metamodel.entities import DedupAction, FieldType, OnDelete


NAME = {"type": "string", "pattern": "^[a-z][a-z0-9_]*$", "maxLength": 48}
LABEL: dict[str, Any] = {
    "oneOf": [
        {"type": "string"},
        {"type": "object", "minProperties": 1,
         "propertyNames": {"enum": ["zh", "en"]},
         "additionalProperties": {"type": "string"}},
    ]
}
NAME_LIST = {"type": "array", "items": NAME, "uniqueItems": True}
EXPRESSION = {"type": "string", "minLength": 1}
SORT = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}

FIELD_OPTIONS: dict[str, Any] = {
    "type": {"enum": [kind.value for kind in FieldType]},
    "label": LABEL,
    "help": LABEL,
    "required": {"type": "boolean"},
    "unique": {"type": "boolean"},
    "readonly": {"type": "boolean"},
    "index": {"type": "boolean"},
    "default": {},
    "min": {"type": ["number", "string"]},
    "max": {"type": ["number", "string"]},
    "length": {"type": "integer", "minimum": 1, "maximum": 100000},
    "pattern": {"type": "string"},
    "options": {"type": "object", "minProperties": 1,
                "propertyNames": {"pattern": "^[A-Za-z0-9_\\-.]+$"},
                "additionalProperties": LABEL},
    "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
    "scale": {"type": "integer", "minimum": 0, "maximum": 10},
    "entity": NAME,
    "on_delete": {"enum": [action.value for action in OnDelete]},
    "filter_by": NAME,  # a link's choices narrowed to targets whose same-named link equals this form's field
    "expression": EXPRESSION,
    "result": {"enum": ["string", "integer", "decimal", "boolean", "date", "datetime"]},
    "region": {"type": "string", "pattern": "^[A-Z]{2}$"},
    "widget": NAME,  # a screen widget by name (built-in or from a plugin); checked when the app starts
}

# Which options make sense for which type; anything else is reported by crossrefs.
COMMON_OPTIONS = frozenset({"type", "label", "help", "required", "readonly", "index", "default", "widget"})
TYPE_OPTIONS: dict[FieldType, frozenset[str]] = {
    FieldType.STRING: frozenset({"unique", "length", "pattern"}),
    FieldType.TEXT: frozenset({"length"}),
    FieldType.INTEGER: frozenset({"unique", "min", "max"}),
    FieldType.DECIMAL: frozenset({"min", "max", "scale"}),
    FieldType.MONEY: frozenset({"min", "max", "currency"}),
    FieldType.BOOLEAN: frozenset(),
    FieldType.DATE: frozenset({"min", "max"}),
    FieldType.DATETIME: frozenset({"min", "max"}),
    FieldType.CHOICE: frozenset({"options"}),
    FieldType.MULTICHOICE: frozenset({"options"}),
    FieldType.TAGS: frozenset({"options"}),
    FieldType.PHONE: frozenset({"unique", "region"}),
    FieldType.EMAIL: frozenset({"unique"}),
    FieldType.URL: frozenset({"unique"}),
    FieldType.LINK: frozenset({"entity", "on_delete", "filter_by"}),
    FieldType.USER: frozenset({"on_delete"}),
    FieldType.ATTACHMENT: frozenset(),
    FieldType.JSON: frozenset(),
    FieldType.COMPUTED: frozenset({"expression", "result", "scale"}),
}
REQUIRED_OPTIONS: dict[FieldType, tuple[str, ...]] = {
    FieldType.CHOICE: ("options",),
    FieldType.MULTICHOICE: ("options",),
    FieldType.LINK: ("entity",),
    FieldType.COMPUTED: ("expression",),
}

FIELD: dict[str, Any] = {
    "type": "object",
    "required": ["type"],
    "properties": FIELD_OPTIONS,
    "additionalProperties": False,
}

ENTITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["entity", "fields"],
    "additionalProperties": False,
    "properties": {
        "entity": NAME,
        "label": LABEL,
        "plural": LABEL,
        "description": LABEL,
        "title": NAME,
        "fields": {"type": "object", "minProperties": 1,
                   "propertyNames": NAME, "additionalProperties": FIELD},
        "search": NAME_LIST,
        "owner_on_create": {"enum": ["creator", "routing"]},
        "assigned_at": NAME,
        "indexes": {"type": "array", "items": {
            "type": "object", "required": ["fields"], "additionalProperties": False,
            "properties": {"fields": {**NAME_LIST, "minItems": 1}, "unique": {"type": "boolean"}}}},
        "validations": {"type": "array", "items": {
            "type": "object", "required": ["check", "message"], "additionalProperties": False,
            "properties": {"check": EXPRESSION, "message": LABEL, "field": NAME}}},
        "dedup": {"type": "object", "required": ["keys"], "additionalProperties": False,
                  "properties": {
                      "keys": {"type": "array", "minItems": 1,
                               "items": {"oneOf": [NAME, {**NAME_LIST, "minItems": 1}]}},
                      "on_match": {"enum": [action.value for action in DedupAction]}}},
        "views": {"type": "object", "additionalProperties": False, "properties": {
            "list": {"type": "object", "propertyNames": NAME, "additionalProperties": {
                "type": "object", "additionalProperties": False, "properties": {
                    "label": LABEL, "columns": {**NAME_LIST, "minItems": 1}, "filters": NAME_LIST,
                    "sort": SORT, "page_size": {"type": "integer", "minimum": 1, "maximum": 500},
                    "where": EXPRESSION}}},
            "board": {"type": "object", "required": ["field"], "additionalProperties": False,
                      "properties": {"field": NAME, "label": LABEL, "card": NAME_LIST, "sum": NAME}},
            "form": {"type": "object", "required": ["sections"], "additionalProperties": False,
                     "properties": {"sections": {"type": "array", "minItems": 1, "items": {
                         "type": "object", "required": ["fields"], "additionalProperties": False,
                         "properties": {"label": LABEL, "fields": {**NAME_LIST, "minItems": 1}}}}}},
        }},
    },
}

APP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["app"],
    "additionalProperties": False,
    "properties": {
        "app": NAME,
        "label": LABEL,
        "description": LABEL,
        "version": {"type": ["integer", "string"]},
        "include": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "menu": {"type": "array", "items": {"oneOf": [NAME, {
            "type": "object", "required": ["items"], "additionalProperties": False,
            "properties": {"label": LABEL, "items": {**NAME_LIST, "minItems": 1}}}]}},
        "settings": {"type": "object", "additionalProperties": False, "properties": {
            "phone_region": {"type": "string", "pattern": "^[A-Z]{2}$"},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "timezone": {"type": "string"},
            "languages": {"type": "array", "items": {"enum": ["zh", "en"]}, "minItems": 1},
            "default_language": {"enum": ["zh", "en"]},
            "territories": {"type": "object", "additionalProperties": {
                "type": "array", "items": {"type": "string"}, "minItems": 1}},
        }},
    },
}

DOCUMENT_SCHEMAS: dict[str, dict[str, Any]] = {"app": APP_SCHEMA, "entity": ENTITY_SCHEMA}


def either(kind: str, then: dict[str, Any], otherwise: dict[str, Any]) -> dict[str, Any]:
    """`then` for a value of JSON type `kind`, else `otherwise` — unlike oneOf, errors stay precise."""
    return {"if": {"type": kind}, "then": then, "else": otherwise}


SCALAR = {"type": ["string", "number", "boolean"]}


TEXT_OR_LIST = either("array", {"type": "array", "items": SCALAR, "minItems": 1}, SCALAR)


USERNAME = {"type": "string", "pattern": "^[A-Za-z0-9_.@-]+$", "maxLength": 64}


ENV_NAME = {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$"}


HEADER_NAME = {"type": "string", "pattern": "^[A-Za-z0-9-]+$"}


COMMON = {"name": NAME, "label": LABEL, "description": {"type": "string"}, "entity": NAME}


VALUES = {"type": "object", "minProperties": 1, "propertyNames": NAME}


def named_schema(item: dict[str, Any]) -> dict[str, Any]:
    """Items as a list (each with `name`) or as a mapping name → item."""
    listed = {**item, "required": [*item["required"], "name"]}
    return either("array", {"type": "array", "items": listed, "minItems": 1},
                   {"type": "object", "minProperties": 1, "propertyNames": NAME, "additionalProperties": item})
