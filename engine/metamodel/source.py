"""Read YAML while remembering where every node came from.

PyYAML's composer gives us nodes with marks; we build plain Python values from them and
keep a side table from each value's path to its `Location`, so every later error can
point at file:line:column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.metamodel.errors import BlueprintError, Location
from engine.metamodel.messages import Msg

PathKey = tuple[str | int, ...]


@dataclass(slots=True)
class SourceDocument:
    """One YAML document: its data, and where each of its values and keys stands."""

    file: str
    data: Any
    values: dict[PathKey, Location] = field(default_factory=dict)
    keys: dict[PathKey, Location] = field(default_factory=dict)

    def where(self, path: PathKey) -> Location:
        """The location of the value at `path`, or of its nearest ancestor that has one."""
        for cut in range(len(path), -1, -1):
            location = self.values.get(path[:cut])
            if location is not None:
                return location
        return Location(self.file, 1, 1)

    def where_key(self, path: PathKey) -> Location:
        """The location of the key introducing `path` (falls back to its value)."""
        return self.keys.get(path) or self.where(path)


_constructor = yaml.constructor.SafeConstructor()


def _location(file: str, node: yaml.Node) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)


def _build(doc: SourceDocument, node: yaml.Node, path: PathKey, errors: list[BlueprintError]) -> Any:
    doc.values[path] = _location(doc.file, node)
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                errors.append(BlueprintError(_location(doc.file, key_node), path,
                                             Msg("a key must be a plain word"),
                                             Msg("write the key as a simple name")))
                continue
            key = str(key_node.value)  # as written: `yes:` stays "yes", not True
            if key in result:
                first = doc.keys[path + (key,)]
                errors.append(BlueprintError(
                    _location(doc.file, key_node), path + (key,),
                    Msg("key '{key}' appears twice in the same block (first at line {line})", key=key, line=first.line),
                    Msg("keep one of them; YAML would silently use the last one")))
            doc.keys[path + (key,)] = _location(doc.file, key_node)
            result[key] = _build(doc, value_node, path + (key,), errors)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(doc, item, path + (index,), errors) for index, item in enumerate(node.value)]
    return _constructor.construct_object(node)


def read_documents(path: Path, display_name: str) -> tuple[list[SourceDocument], list[BlueprintError]]:
    """Parse every YAML document in `path`; syntax errors come back as located errors."""
    errors: list[BlueprintError] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [BlueprintError(Location(display_name, 1, 1), (), Msg("cannot read the file: {problem}", problem=exc),
                                   Msg("check that the file exists and is UTF-8 text"))]
    documents: list[SourceDocument] = []
    try:
        for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
            if node is None:
                continue
            doc = SourceDocument(display_name, None)
            doc.data = _build(doc, node, (), errors)
            documents.append(doc)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        errors.append(BlueprintError(Location(display_name, line, column), (), Msg("YAML syntax error: {problem}", problem=problem),
                                     Msg("check the indentation and that every ':' is followed by a space")))
    return documents, errors
