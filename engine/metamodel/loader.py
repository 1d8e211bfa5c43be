"""Load a blueprint: read YAML with locations, check each document's shape, build the
frozen metamodel, then check cross-references. All errors are collected and raised
together as `BlueprintInvalid`, sorted by file and line."""

from __future__ import annotations

import copy
import dataclasses
import functools
import glob
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.metamodel.app import MenuGroup, Settings, build_menu, build_settings
from engine.metamodel.approvals import MANAGED_ENTITIES, approval_entities, declared_approvals
from engine.metamodel.crossrefs import check_entity, check_link_filters
from engine.metamodel.entities import EntitySpec, FieldType, build_entity
from engine.metamodel.errors import BlueprintError, BlueprintInvalid, Location, did_you_mean, unknown_name_hint
from engine.metamodel.messages import Msg
from engine.metamodel.kinds import SECONDARY_KINDS
from engine.metamodel.labels import Label
from engine.metamodel.model import Metamodel
from engine.metamodel.schema import DOCUMENT_SCHEMAS
from engine.metamodel.source import SourceDocument, read_documents
from engine.metamodel.vocabulary import Vocabulary

_SCHEMAS = {**DOCUMENT_SCHEMAS, **{kind.key: kind.schema for kind in SECONDARY_KINDS}}

if TYPE_CHECKING:  # jsonschema is imported by the first load that validates (a cached metamodel needs none)
    import jsonschema


@functools.lru_cache(maxsize=1)
def _validators() -> dict[str, jsonschema.Draft202012Validator]:
    import jsonschema
    return {kind: jsonschema.Draft202012Validator(schema) for kind, schema in _SCHEMAS.items()}


def load_blueprint(path: str | os.PathLike[str], *, functions: Collection[str] = (),
                   vocabulary: Vocabulary | None = None) -> Metamodel:
    """Load the blueprint at `path` (an app file or a folder holding `app.yaml`).

    `vocabulary` is what the running engine provides beyond the blueprint — expression
    functions, plugin field types, channel types, plugin action verbs (engine/extensions.py
    builds it from the plugins); a blueprint naming anything else is an error. `functions`
    alone is the shorthand for the built-in vocabulary with those expression functions.
    Raises `BlueprintInvalid` with every problem found.
    """
    if vocabulary is None:
        vocabulary = Vocabulary.of(functions=functions)
    elif functions:
        raise TypeError("load_blueprint takes functions= or vocabulary=, not both")
    app_path = _app_file(Path(path))
    errors: list[BlueprintError] = []
    documents = _read(app_path, errors)
    app_docs = [doc for doc in documents if _kind(doc) == "app"]
    if not app_docs:
        raise BlueprintInvalid([BlueprintError(Location(_display(app_path), 1, 1), (),
                                               Msg("this file is not an app file"),
                                               Msg("start it with 'app: <name>' and list entity files under "
                                                   "'include:'"))])
    app = app_docs[0]
    for doc in _included(app, app_path, errors):
        documents.append(doc)
    if errors:
        # A file that cannot be read (YAML syntax, a missing include) leaves its entities and
        # rules out, and every name pointing at them would be reported too, hiding the cause.
        # Stop at the reading errors; the rest is checked once they are fixed.
        raise BlueprintInvalid(errors)

    validators = {**_validators(), "entity": _entity_validator(tuple(sorted(vocabulary.field_types)))}
    valid: list[tuple[str, SourceDocument]] = []
    seen_entities: set[str] = set()
    for doc in documents:
        kind = _kind(doc)
        if kind is None:
            first = next(iter(doc.data), None) if isinstance(doc.data, dict) else None
            errors.append(BlueprintError(doc.where(()), (), Msg("unknown kind of document (it starts with '{key}')",
                                                                key=first) if first else Msg("unknown kind of document"),
                                         Msg("a blueprint file starts with one of: {kinds}", kinds=", ".join(_SCHEMAS))))
            continue
        if kind == "entity" and isinstance(doc.data.get("entity"), str):
            seen_entities.add(doc.data["entity"])
        schema_errors = [_explain(doc, error, vocabulary) for error in validators[kind].iter_errors(doc.data)]
        errors.extend(schema_errors)
        if not schema_errors:
            valid.append((kind, doc))
        elif kind == "entity":
            pruned = _prune(doc, schema_errors, validators["entity"])
            if pruned is not None:
                valid.append((kind, pruned))

    app_data = app.data if isinstance(app.data, dict) else {}
    settings = build_settings(app_data.get("settings") or {}) if not _has_errors_at(errors, app) else Settings()
    entities = []
    names: dict[str, Location] = {}
    built: list[tuple[SourceDocument, EntitySpec]] = []
    for kind, doc in valid:
        if kind != "entity":
            continue
        entity = build_entity(doc, errors, settings, vocabulary.field_types)
        built.append((doc, entity))
        errors.extend(check_entity(doc, entity, known_entities=seen_entities, functions=vocabulary.functions))
        if entity.name in names:
            errors.append(BlueprintError(entity.location, ("entity",),
                                         Msg("entity '{name}' is declared twice (also at {place})",
                                             name=entity.name, place=names[entity.name]),
                                         Msg("rename one of them or remove the copy")))
            continue
        names[entity.name] = entity.location
        entities.append(entity)

    by_name = {entity.name: entity for entity in entities}
    for doc, entity in built:
        errors.extend(check_link_filters(doc, entity, by_name))
    entities.extend(_managed_entities([doc for kind, doc in valid if kind == "approval"], names, settings, errors))
    menu = build_menu(app_data.get("menu") or [], [entity.name for entity in entities])
    errors.extend(_check_menu(app, menu, {**{entity.name: entity.location for entity in entities}, **names}))
    model = Metamodel(
        name=str(app_data.get("app", "app")),
        label=Label.of(app_data.get("label"), str(app_data.get("app", "app"))),
        entities=tuple(entities),
        settings=settings,
        menu=menu,
    )
    for secondary in SECONDARY_KINDS:
        model, problems = secondary.build([doc for key, doc in valid if key == secondary.key], model, vocabulary)
        errors.extend(problems)
    blocking = [error for error in errors if error.severity == "error"]
    if blocking:
        raise BlueprintInvalid(errors)
    warnings = tuple(sorted((e for e in errors if e.severity != "error"), key=lambda e: e.location))
    return dataclasses.replace(model, warnings=warnings)


@functools.lru_cache(maxsize=16)
def _entity_validator(plugin_types: tuple[str, ...]) -> jsonschema.Draft202012Validator:
    """The entity schema accepting the built-in field types and `plugin_types` (one per set of
    installed plugins, built once)."""
    import jsonschema
    if not plugin_types:
        return _validators()["entity"]
    schema = copy.deepcopy(_SCHEMAS["entity"])
    options = schema["properties"]["fields"]["additionalProperties"]["properties"]
    options["type"] = {"enum": [*(kind.value for kind in FieldType), *plugin_types]}
    return jsonschema.Draft202012Validator(schema)


def _managed_entities(approval_docs: list[SourceDocument], names: dict[str, Location], settings: Settings,
                      errors: list[BlueprintError]) -> list[Any]:
    """The engine's approval entities, when the blueprint declares approvals (their names are then taken)."""
    if not approval_docs:
        return []
    for name in MANAGED_ENTITIES:
        if name in names:
            errors.append(BlueprintError(names[name], ("entity",),
                                         Msg("entity name '{name}' is taken by the approvals", name=name),
                                         Msg("a blueprint with approval: documents gets the entities approval and "
                                             "approval_task from the engine; rename yours")))
    return list(approval_entities(declared_approvals(approval_docs), settings))


def _check_menu(app: SourceDocument, menu: tuple[MenuGroup, ...], entities: dict[str, Location]) -> list[BlueprintError]:
    errors = []
    for index, item in enumerate(app.data.get("menu") or []):
        names = [item] if isinstance(item, str) else item.get("items", [])
        for position, name in enumerate(names):
            if name not in entities:
                path = ("menu", index) if isinstance(item, str) else ("menu", index, "items", position)
                errors.append(BlueprintError(app.where(path), path, Msg("menu item '{name}' is not an entity", name=name),
                                             did_you_mean(name, entities)))
    return errors


_STAND_INS: dict[str, Any] = {"indexes": {"fields": ["id"]}, "validations": {"check": "True", "message": "-"}}
_PRUNE_DEPTH = {"fields": 2, "indexes": 2, "validations": 2, "views": 3, "dedup": 1, "search": 1}


def _prune(doc: SourceDocument, problems: list[BlueprintError],
           validator: jsonschema.Draft202012Validator) -> SourceDocument | None:
    """A copy of an entity document without the parts that failed the schema, so the rest
    can still be cross-checked and every error reported in one run. A field with a failing
    option keeps its name and its other options (its type guessed from them when the type
    itself failed), so its uses — filters, search, dashboards — are not reported again; when
    that still does not fit the schema, such a field becomes a stand-in json field."""
    pruned = _pruned(doc.data, problems, careful=True)
    if pruned is not None and list(validator.iter_errors(pruned)):
        pruned = _pruned(doc.data, problems, careful=False)
    if pruned is None or list(validator.iter_errors(pruned)):
        return None
    return SourceDocument(doc.file, pruned, doc.values, doc.keys)


def _pruned(original: Any, problems: list[BlueprintError], *, careful: bool) -> Any:
    import copy
    data = copy.deepcopy(original)
    for problem in problems:
        path = problem.path
        if not path or path[0] not in _PRUNE_DEPTH or len(path) < _PRUNE_DEPTH[path[0]]:
            if path and path[0] not in ("entity", "fields"):
                data.pop(path[0], None)
                continue
            return None
        cut = path[:_PRUNE_DEPTH[path[0]]]
        parent: Any = data  # a dict or list along `cut`, None once the path breaks off
        for part in cut[:-1]:
            # a jsonschema path steps into a list by position (an int) and into a dict by key
            is_container = isinstance(parent, dict) or (isinstance(parent, list) and isinstance(part, int))
            parent = parent[part] if is_container else None
            if parent is None:
                break
        if cut[0] == "fields" and isinstance(parent, dict):
            parent[cut[-1]] = _field_without(parent.get(cut[-1]), path[2:]) if careful else {"type": "json"}
        elif isinstance(parent, dict):
            parent.pop(cut[-1], None)
        elif isinstance(parent, list) and isinstance(cut[-1], int) and cut[-1] < len(parent):
            # keep positions (and so locations) of later items: put a harmless stand-in here
            parent[cut[-1]] = _STAND_INS[str(cut[0])]
    return data


def _field_without(field: Any, bad: tuple[str | int, ...]) -> dict[str, Any]:
    """A field's options without the one that failed (`requierd: true`, `max: "ten"`); when its
    type failed (`type: choise`), the type its options suggest."""
    if not isinstance(field, dict) or not bad:
        return {"type": "json"}
    kept = {key: value for key, value in field.items() if key != bad[0]}
    if "type" not in kept:
        kept["type"] = "choice" if "options" in kept else "link" if "entity" in kept else "string"
    return kept


def _has_errors_at(errors: list[BlueprintError], doc: SourceDocument) -> bool:
    return any(error.location.file == doc.file for error in errors)


def _app_file(path: Path) -> Path:
    if path.is_dir():
        return path / "app.yaml"
    return path


def _display(path: Path) -> str:
    """A blueprint file as errors and traces name it: relative to the working folder when it lies
    inside it (blueprints/crm/lead.yaml), else in full — never "../../work/crm/lead.yaml"."""
    absolute = path.resolve()
    return str(absolute.relative_to(Path.cwd())) if absolute.is_relative_to(Path.cwd()) else str(absolute)


def _read(path: Path, errors: list[BlueprintError]) -> list[SourceDocument]:
    documents, problems = read_documents(path, _display(path))
    errors.extend(problems)
    return documents


def _kind(doc: SourceDocument) -> str | None:
    if not isinstance(doc.data, dict):
        return None
    for key in doc.data:
        if key in _SCHEMAS:
            return str(key)
    return None


def _included(app: SourceDocument, app_path: Path, errors: list[BlueprintError]) -> list[SourceDocument]:
    base = app_path.parent
    patterns = app.data.get("include") or []
    documents: list[SourceDocument] = []
    seen: set[Path] = {app_path.resolve()}
    if not isinstance(patterns, list):
        return documents
    for index, pattern in enumerate(patterns):
        if not isinstance(pattern, str):
            continue
        matches = sorted(Path(p) for p in glob.glob(str(base / pattern), recursive=True))
        if not matches:
            errors.append(BlueprintError(app.where(("include", index)), ("include", index),
                                         Msg("include '{pattern}' matches no file", pattern=pattern),
                                         Msg("paths are relative to {folder}; check the spelling",
                                             folder=_display(base) or ".")))
        for match in matches:
            if match.resolve() in seen:
                continue
            seen.add(match.resolve())
            documents.extend(_read(match, errors))
    return documents


def _explain(doc: SourceDocument, error: jsonschema.ValidationError, vocabulary: Vocabulary) -> BlueprintError:
    """Turn a jsonschema error into a located message with a hint."""
    if error.validator in ("oneOf", "anyOf") and error.context:
        deepest = max(error.context, key=lambda e: len(e.absolute_path))
        if len(deepest.absolute_path) > len(error.absolute_path):
            return _explain(doc, deepest, vocabulary)
    path = tuple(error.absolute_path)
    instance = error.instance
    where = doc.where(path)
    # The stubs allow an unset or boolean schema (errors built by hand); one from iter_errors
    # carries the failing subschema, and every subschema that can fail here is a mapping.
    schema: Mapping[str, Any] = error.schema if isinstance(error.schema, Mapping) else {}
    keyword_value: Any = error.validator_value
    if error.validator == "additionalProperties":
        allowed = list((schema.get("properties") or {}).keys())
        if len(path) == 2 and path[0] == "fields" and isinstance(instance, dict):
            allowed = _field_options(vocabulary.field_type(str(instance.get("type"))), allowed)
        extra = [key for key in instance if key not in allowed] if isinstance(instance, dict) else []
        key = extra[0] if extra else "?"
        return BlueprintError(doc.where_key(path + (key,)), path + (key,), Msg("unknown option '{key}'", key=key),
                              did_you_mean(key, allowed))
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return BlueprintError(where, path, Msg("missing required option '{key}'", key=missing),
                              Msg("add '{key}:' here", key=missing))
    if error.validator == "enum" and len(path) == 3 and path[0] == "fields" and path[2] == "type":
        return BlueprintError(where, path, Msg("'{value}' is not one of the allowed values", value=instance),
                              _unknown_field_type(str(instance), vocabulary))
    if error.validator == "enum":
        allowed = [str(v) for v in keyword_value]
        return BlueprintError(where, path, Msg("'{value}' is not one of the allowed values", value=instance),
                              did_you_mean(str(instance), allowed))
    if error.validator == "propertyNames":
        return BlueprintError(where, path, Msg("'{value}' is not a valid name here", value=instance),
                              Msg("names use lowercase letters, digits and _ and start with a letter"))
    if error.validator == "pattern" and schema.get("pattern") == "^[a-z][a-z0-9_]*$":
        return BlueprintError(where, path, Msg("'{value}' is not a valid name", value=instance),
                              Msg("names use lowercase letters, digits and _ and start with a letter, "
                                  "e.g. 'next_follow_up'"))
    if error.validator == "type":
        expected = keyword_value if isinstance(keyword_value, list) else [keyword_value]
        wanted = _article(expected[0]) if len(expected) == 1 else \
            Msg("{one} or {other}", one=_article(expected[0]), other=_article(expected[1]))
        return BlueprintError(where, path, Msg("expected {wanted}, got {value}", wanted=wanted,
                                               value=_describe(instance)),
                              Msg("check the indentation: a nested block needs two more spaces"))
    if error.validator == "oneOf" and schema.get("oneOf") == \
            _label_alternatives():
        return BlueprintError(where, path, Msg("a label must be text or {{zh: …, en: …}}, got {value}",
                                               value=_describe(instance)),
                              Msg("write e.g. label: {{zh: 线索, en: Lead}}"))
    return BlueprintError(where, path, Msg("this value does not fit the option: {detail}", detail=error.message),
                          Msg("see docs/blueprint-reference.md for this option"))


def _field_options(kind: FieldType | None, every: list[str]) -> list[str]:
    from engine.metamodel.schema import COMMON_OPTIONS, TYPE_OPTIONS
    return every if kind is None else sorted(COMMON_OPTIONS | TYPE_OPTIONS[kind])


def _unknown_field_type(name: str, vocabulary: Vocabulary) -> Msg:
    """A close name, else every known one (built-in and the installed plugins')."""
    hint = did_you_mean(name, vocabulary.field_type_names())
    return hint if hint.startswith("did you mean") else unknown_name_hint(name, vocabulary.field_type_names(),
                                                                          Msg("field types"))


def _label_alternatives() -> Any:
    from engine.metamodel.schema import LABEL
    return LABEL["oneOf"]


def _article(kind: str) -> Msg:
    """A JSON schema type as the analyst says it."""
    return {"object": Msg("a block of options"), "array": Msg("a list"), "string": Msg("text"),
            "integer": Msg("a whole number"), "number": Msg("a number"), "boolean": Msg("true or false"),
            "null": Msg("nothing")}.get(kind) or Msg("{kind}", kind=kind)


def _describe(value: Any) -> Msg:
    if isinstance(value, dict):
        return Msg("a block of options")
    if isinstance(value, list):
        return Msg("a list")
    if value is None:
        return Msg("nothing")
    return Msg("'{value}'", value=value)
