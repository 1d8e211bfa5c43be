"""Located checks shared by the builders of the automation and time documents (rules, routing,
sources, calendars, channels, SLA policies, cadences, jobs): a `Checker` per document collects
every error with its file:line, and `build_items` builds the named items of a document kind."""

from __future__ import annotations


import jinja2
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from engine.metamodel.crossrefs import EXPRESSION_CONSTANTS, SYSTEM_FIELDS
from engine.metamodel.entities import EntitySpec, FieldSpec, FieldType
from engine.metamodel.errors import BlueprintError, Location, did_you_mean, unknown_name_hint
from engine.metamodel.expression_checks import unknown_options
from engine.metamodel.expressions import EXPRESSION_PREFIX, Expression, ExpressionSyntaxError, ValueSpec, parse_expression
from engine.metamodel.labels import Label
from engine.metamodel.messages import Msg
from engine.metamodel.source import PathKey, SourceDocument


if TYPE_CHECKING:  # the Metamodel holds these specs; builders only read it
    from engine.metamodel.model import Metamodel
    from engine.metamodel.vocabulary import Vocabulary




class Checker:
    """Located checks shared by the builders; collects errors for one document. `vocabulary`
    holds what the engine provides beyond the blueprint (functions, channel types, actions)."""

    def __init__(self, doc: SourceDocument, model: Metamodel, vocabulary: Vocabulary,
                 errors: list[BlueprintError]) -> None:
        self.doc = doc
        self.model = model
        self.vocabulary = vocabulary
        self.functions = vocabulary.functions
        self.errors = errors

    def error(self, path: PathKey, message: str, hint: str = "", *, key: bool = False,
              severity: str = "error") -> None:
        where = self.doc.where_key(path) if key else self.doc.where(path)
        self.errors.append(BlueprintError(where, path, message, hint, severity))

    def entity(self, path: PathKey, name: str, what: str) -> EntitySpec | None:
        if self.model.has_entity(name):
            return self.model.entity(name)
        self.error(path, Msg("{what} names unknown entity '{name}'", what=what, name=name),
                   did_you_mean(name, self.model.entity_names()))
        return None

    def field(self, path: PathKey, entity: EntitySpec, name: str, what: str,
              types: Collection[FieldType] = (), system_ok: bool = False) -> FieldSpec | None:
        """The named field, or None after reporting it missing or of the wrong type."""
        if not entity.has_field(name):
            if system_ok and name in SYSTEM_FIELDS:
                return None
            known = [*entity.field_names(), *(SYSTEM_FIELDS if system_ok else ())]
            self.error(path, Msg("{what} '{name}' is not a field of '{entity}'",
                                 what=what, name=name, entity=entity.name),
                       Msg("{suggestion} Declare it under {entity}.fields or correct the name.",
                           suggestion=did_you_mean(name, known), entity=entity.name))
            return None
        spec = entity.field(name)
        if types and spec.value_type not in types:
            self.error(path, Msg("{what} '{name}' is a {type} field", what=what, name=name, type=spec.type.value),
                       Msg("it needs a {types} field", types=either(sorted(kind.value for kind in types))))
            return None
        return spec

    def option(self, path: PathKey, spec: FieldSpec | None, value: Any, what: str) -> None:
        if spec is not None and spec.choices and str(value) not in spec.choice_values():
            self.error(path, Msg("{what} '{value}' is not an option of {field}",
                                 what=what, value=value, field=spec.name),
                       did_you_mean(str(value), spec.choice_values()))

    def expression(self, path: PathKey, source: str, entity: EntitySpec) -> Expression | None:
        """Parse and name-check an expression over the entity's fields and system fields."""
        location = self.doc.where(path)
        try:
            expression = parse_expression(source, location)
        except ExpressionSyntaxError as exc:
            self.error(path, Msg("bad expression '{source}': {problem}", source=source, problem=str(exc)),
                       Msg("see docs/expressions.md for what an expression may contain"))
            return None
        known = set(entity.field_names()) | set(SYSTEM_FIELDS)
        for name in sorted(expression.names - known - EXPRESSION_CONSTANTS):
            self.error(path, Msg("expression uses unknown field '{name}'", name=name),
                       Msg("{suggestion} Fields of {entity} can be used by name.",
                           suggestion=did_you_mean(name, known), entity=entity.name))
        for function in sorted(expression.functions - set(self.functions)):
            self.error(path, Msg("expression calls unknown function '{function}'", function=function),
                       Msg("{hint} See docs/expressions.md.",
                           hint=unknown_name_hint(function, self.functions, Msg("functions"))))
        for name, value, options in unknown_options(expression, entity):
            self.error(path, Msg("'{value}' is not an option of {name}, so this comparison is never true",
                                 value=value, name=name),
                       Msg("{suggestion} Options of {name}: {options}.", suggestion=did_you_mean(value, options),
                           name=name, options=", ".join(options)))
        return expression

    def value(self, path: PathKey, raw: Any, source: EntitySpec, target: FieldSpec | None) -> ValueSpec:
        """A literal or '=expression' value; expressions read `source`, literals must fit `target`."""
        if isinstance(raw, str) and raw.startswith(EXPRESSION_PREFIX):
            return ValueSpec(expression=self.expression(path, raw[len(EXPRESSION_PREFIX):], source))
        if target is not None:
            self.check_literal(path, target, raw)
        return ValueSpec(literal=tuple(raw) if isinstance(raw, list) else raw)

    def check_literal(self, path: PathKey, spec: FieldSpec, raw: Any) -> None:
        kind = spec.value_type
        if raw is None:
            return
        if kind in (FieldType.TAGS, FieldType.MULTICHOICE):
            for item in raw if isinstance(raw, list) else [raw]:
                self.option(path, spec, item, Msg("value"))
        elif kind is FieldType.CHOICE:
            self.option(path, spec, raw, Msg("value"))
        elif kind is FieldType.BOOLEAN and not isinstance(raw, bool):
            self.error(path, Msg("{field} is a yes/no field; '{value}' is not true or false",
                                 field=spec.name, value=raw),
                       Msg("write true or false"))
        elif kind in (FieldType.INTEGER, FieldType.DECIMAL, FieldType.MONEY) and (
                isinstance(raw, bool) or not isinstance(raw, (int, float))):
            self.error(path, Msg("{field} is a number field; '{value}' is not a number", field=spec.name, value=raw),
                       Msg("write a number, or an expression starting with '='"))

    def jinja(self, path: PathKey, text: str, what: str, entity: EntitySpec | None = None) -> None:
        """Jinja2 text (notification texts and templates): its syntax, and every `record.<field>`
        it reads against `entity` when the text is used for one."""
        try:
            tree = jinja2.Environment().parse(text)
        except jinja2.TemplateSyntaxError as exc:
            self.error(path, Msg("{what} line {line}: {problem}", what=what, line=exc.lineno, problem=exc.message),
                       Msg("texts are Jinja2: {{{{ record.name }}}}, {{% if … %}}…{{% endif %}}"))
            return
        if entity is None:
            return
        known = set(entity.field_names()) | set(SYSTEM_FIELDS)
        for node in tree.find_all(jinja2.nodes.Getattr):
            if node.attr.startswith("_"):
                self.error(path, Msg("{what}: placeholder reads '{name}', which a message may not",
                                     what=what, name=node.attr),
                           Msg("placeholders read fields and values: {{{{ record.name }}}}, "
                               "{{{{ owner.display_name }}}}"))
            elif isinstance(node.node, jinja2.nodes.Name) and node.node.name == "record" and node.attr not in known:
                self.error(path, Msg("{what}: placeholder '{{{{ record.{name} }}}}' is not a field of '{entity}'",
                                     what=what, name=node.attr, entity=entity.name), did_you_mean(node.attr, known))


def either(words: list[str]) -> str:
    """'a', 'a or b', 'a or b or c' — said in the reader's language."""
    said = words[0] if words else ""
    for word in words[1:]:
        said = Msg("{one} or {other}", one=said, other=word)
    return said


def named_items(root: str, items: Any) -> Iterator[tuple[str, dict[str, Any], PathKey]]:
    """(name, item, path) for a list of named items or a mapping name → item."""
    if isinstance(items, list):
        for index, item in enumerate(items):
            yield item["name"], item, (root, index)
    else:
        for name, item in items.items():
            yield name, item, (root, name)


def duplicate(checker: Checker, seen: dict[str, Location], name: str, path: PathKey, what: str) -> bool:
    if name in seen:  # a mapping item is reported at its name, a list item where it starts
        checker.error(path, Msg("{what} '{name}' is declared twice", what=what, name=name),
                      Msg("the first is at {place}; rename one", place=str(seen[name])), key=isinstance(path[-1], str))
        return True
    seen[name] = checker.doc.where_key(path)
    return False


def texts(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(str(item) for item in (value if isinstance(value, list) else [value]))


_Item = TypeVar("_Item")
# build_one(checker, name, data, path, position): the item, or None when it is left out
ItemBuilder = Callable[[Checker, str, dict[str, Any], PathKey, int], _Item | None]


def build_items(key: str, what: str, documents: list[SourceDocument], model: Metamodel, vocabulary: Vocabulary,
                build_one: ItemBuilder[_Item]) -> tuple[list[_Item], list[BlueprintError]]:
    """Every named item of the `key:` documents built by `build_one(checker, name, data, path, position)`
    (None: left out, its errors reported), with duplicate names reported where they stand."""
    errors: list[BlueprintError] = []
    items: list[_Item] = []
    seen: dict[str, Location] = {}
    for doc in documents:
        checker = Checker(doc, model, vocabulary, errors)
        for name, data, path in named_items(key, doc.data.get(key) or {}):
            if duplicate(checker, seen, name, path, what):
                continue
            item = build_one(checker, name, data, path, len(items))
            if item is not None:
                items.append(item)
    return items, errors


# What a document kind's builder returns: the model with that kind's specs filled in, and the
# located errors. (A string: the Metamodel is imported for type checking only, to avoid a cycle.)
Built = tuple["Metamodel", list[BlueprintError]]


def default_label(data: dict[str, Any], name: str) -> Label:
    return Label.of(data.get("label"), name.replace("_", " ").capitalize())


def language_texts(raw: Any) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (("*", raw),)
    return tuple((str(lang), str(text)) for lang, text in raw.items())
