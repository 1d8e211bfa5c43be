"""Cross-reference checks: every name a blueprint uses must exist, in the place it is used.

Runs per entity document after the JSON Schema passed, with the source document at hand
so each error points at the exact line of the offending name.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from typing import Any

from engine.metamodel.conditions import RowConditionError, check_row_condition
from engine.metamodel.entities import EntitySpec, FieldSpec, FieldType
from engine.metamodel.errors import BlueprintError, did_you_mean, unknown_name_hint
from engine.metamodel.expression_checks import RULE_ONLY_FUNCTIONS, rule_only_calls, unknown_options
from engine.metamodel.expressions import Expression
from engine.metamodel.messages import Msg
from engine.metamodel.patterns import PatternError, compile_pattern
from engine.metamodel.schema import COMMON_OPTIONS, REQUIRED_OPTIONS, TYPE_OPTIONS
from engine.metamodel.source import PathKey, SourceDocument

SYSTEM_FIELDS = ("id", "created_at", "updated_at", "created_by", "owner", "version")
TEXT_TYPES = frozenset({FieldType.STRING, FieldType.TEXT, FieldType.PHONE, FieldType.EMAIL, FieldType.URL})
UNSORTABLE_TYPES = frozenset({FieldType.TEXT, FieldType.JSON, FieldType.TAGS, FieldType.MULTICHOICE})
# What a literal default, min or max must look like, per field type.
_LITERALS: dict[FieldType, tuple[tuple[type, ...], Msg]] = {
    FieldType.INTEGER: ((int,), Msg("a whole number")),
    FieldType.DECIMAL: ((int, float), Msg("a number")),
    FieldType.MONEY: ((int, float), Msg("a number")),
    FieldType.BOOLEAN: ((bool,), Msg("true or false")),
    FieldType.DATE: ((dt.date, str), Msg("a date like 2026-01-31")),
    FieldType.DATETIME: ((dt.datetime, str), Msg("a date and time like 2026-01-31T09:00")),
    FieldType.STRING: ((str, int, float), Msg("text")),
    FieldType.TAGS: ((list,), Msg("a list")),
    FieldType.MULTICHOICE: ((list,), Msg("a list of options")),
}
# Names an expression may read besides the entity's fields.
EXPRESSION_CONSTANTS = frozenset({"True", "False", "None", "true", "false", "null"})


def check_entity(doc: SourceDocument, entity: EntitySpec, *, known_entities: Collection[str],
                 functions: Collection[str]) -> list[BlueprintError]:
    """Every problem with the names `entity` uses, each at the line where it is used."""
    checker = _EntityChecker(doc, entity, known_entities, functions)
    checker.run()
    return checker.errors


def check_link_filters(doc: SourceDocument, entity: EntitySpec, entities: Mapping[str, EntitySpec]
                       ) -> list[BlueprintError]:
    """A link's `filter_by: G` names another link G of the same entity, and the linked entity has a
    link of the same name to the same entity (contact.account for activity.account), so its choices
    can be narrowed to the targets that belong to what G holds."""
    errors = []
    for spec in entity.fields:
        if spec.filter_by is None or spec.type is not FieldType.LINK:
            continue
        path: PathKey = ("fields", spec.name, "filter_by")
        links = [other.name for other in entity.fields if other.type is FieldType.LINK and other.name != spec.name]
        if not entity.has_field(spec.filter_by) or spec.filter_by not in links:
            errors.append(BlueprintError(doc.where(path), path,
                                         Msg("filter_by '{name}' is not another link field of entity '{entity}'",
                                             name=spec.filter_by, entity=entity.name),
                                         did_you_mean(spec.filter_by, links)))
            continue
        parent = entity.field(spec.filter_by).link_entity
        target = entities.get(spec.link_entity or "")
        if target is None or parent is None:
            continue  # an unknown link target is reported on its own line
        theirs = target.field(spec.filter_by) if target.has_field(spec.filter_by) else None
        if theirs is None or theirs.type is not FieldType.LINK or theirs.link_entity != parent:
            errors.append(BlueprintError(
                doc.where(path), path,
                Msg("{field} links to {target}, which has no link '{filter_by}' to {parent}, so its choices cannot "
                    "be narrowed by {entity}.{filter_by}", field=spec.name, target=target.name,
                    filter_by=spec.filter_by, parent=parent, entity=entity.name),
                Msg("add '{filter_by}: {{type: link, entity: {parent}}}' to {target}.fields or remove filter_by",
                    filter_by=spec.filter_by, parent=parent, target=target.name)))
    return errors


class _EntityChecker:
    def __init__(self, doc: SourceDocument, entity: EntitySpec, known_entities: Collection[str],
                 functions: Collection[str]) -> None:
        self.doc = doc
        self.entity = entity
        self.known_entities = known_entities
        self.functions = functions
        self.errors: list[BlueprintError] = []
        self.names = set(entity.field_names()) | set(SYSTEM_FIELDS)

    def error(self, path: PathKey, message: str, hint: str, *, key: bool = False,
              severity: str = "error") -> None:
        where = self.doc.where_key(path) if key else self.doc.where(path)
        self.errors.append(BlueprintError(where, path, message, hint, severity))

    def run(self) -> None:
        data = self.doc.data
        for spec in self.entity.fields:
            self.check_field(spec, data["fields"][spec.name])
        self.check_names(("title",), [data["title"]] if "title" in data else [], Msg("title field"))
        self.check_names(("search",), data.get("search") or [], Msg("search field"))
        for position, name in enumerate(data.get("search") or []):
            if self.entity.has_field(name) and self.entity.field(name).value_type not in TEXT_TYPES:
                self.error(("search", position), Msg("search field '{name}' is not text", name=name),
                           Msg("free-text search reads string, text, phone, email or url fields"))
        for index, item in enumerate(data.get("indexes") or []):
            self.check_names(("indexes", index, "fields"), item["fields"], Msg("indexed field"))
        for index, item in enumerate(data.get("validations") or []):
            if "field" in item:
                self.check_names(("validations", index), [item["field"]], Msg("validation field"), key="field")
        checks = {spec.check.location: spec.check for spec in self.entity.validations}
        for index in range(len(data.get("validations") or [])):
            path: PathKey = ("validations", index, "check")
            if self.doc.where(path) in checks:
                self.check_expression(path, checks[self.doc.where(path)])
        if "dedup" in data:
            for index, key in enumerate(data["dedup"]["keys"]):
                names = [key] if isinstance(key, str) else key
                self.check_names(("dedup", "keys", index), names, Msg("dedup key"))
        views = data.get("views") or {}
        for view_name, view in (views.get("list") or {}).items():
            base: PathKey = ("views", "list", view_name)
            self.check_names(base + ("columns",), view.get("columns") or [], Msg("column"))
            self.check_names(base + ("filters",), view.get("filters") or [], Msg("filter"))
            sort = view.get("sort")
            sorts = [sort] if isinstance(sort, str) else (sort or [])
            stripped = [item.strip().lstrip("+-") for item in sorts]
            self.check_names(base + ("sort",), stripped, Msg("sort field"))
            for name in stripped:
                if self.entity.has_field(name) and self.entity.field(name).value_type in UNSORTABLE_TYPES:
                    self.error(base + ("sort",), Msg("cannot sort by '{name}': it is a {type} field", name=name,
                                                     type=self.entity.field(name).value_type.value),
                               Msg("sort by a field holding one short value (text up to 255, number, date, choice)"))
            for position, name in enumerate(view.get("filters") or []):
                if self.entity.has_field(name) and self.entity.field(name).value_type is FieldType.JSON:
                    self.error(base + ("filters", position),
                               Msg("cannot filter by '{name}': it is a json field", name=name),
                               Msg("filter by a field with a plain value"))
        stamp = data.get("assigned_at")
        if stamp is not None and (not self.entity.has_field(stamp)
                                  or self.entity.field(stamp).type is not FieldType.DATETIME):
            self.error(("assigned_at",), Msg("assigned_at: '{stamp}' is not a datetime field of {entity}",
                                             stamp=stamp, entity=self.entity.name),
                       did_you_mean(stamp, [spec.name for spec in self.entity.fields
                                            if spec.type is FieldType.DATETIME]))
        for view_spec in self.entity.list_views:
            if view_spec.where is not None:
                try:
                    check_row_condition(view_spec.where, self.entity)
                except RowConditionError as problem:
                    self.error(("views", "list", view_spec.name, "where"),
                               Msg("list view '{view}': {problem}", view=view_spec.name, problem=str(problem)),
                               Msg("the view's where: is answered by the database on every page; see "
                                   "docs/blueprint-reference.md#list-views"))
        board = views.get("board")
        if board:
            self.check_names(("views", "board", "field"), [board["field"]], Msg("board field"))
            if self.entity.has_field(board["field"]) and self.entity.field(board["field"]).type is not FieldType.CHOICE:
                self.error(("views", "board", "field"),
                           Msg("board field '{name}' is not a choice field", name=board["field"]),
                           Msg("a board has one column per option, so it needs a choice field such as stage"))
            self.check_names(("views", "board", "card"), board.get("card") or [], Msg("card field"))
            total = board.get("sum")
            if total:
                self.check_names(("views", "board", "sum"), [total], Msg("sum field"))
                if self.entity.has_field(total) and self.entity.field(total).type is not FieldType.MONEY:
                    self.error(("views", "board", "sum"), Msg("board sum '{name}' is not a money field", name=total),
                               Msg("each column adds up a money field, such as budget or amount"))
        form = views.get("form")
        if form:
            placed: dict[str, PathKey] = {}
            for index, section in enumerate(form["sections"]):
                path = ("views", "form", "sections", index, "fields")
                self.check_names(path, section["fields"], Msg("form field"), system_ok=False)
                for position, name in enumerate(section["fields"]):
                    if name in placed:
                        self.error(path + (position,), Msg("field '{name}' is placed twice in the form", name=name),
                                   Msg("keep it in one section"))
                    placed[name] = path + (position,)
            for spec in self.entity.fields:
                if spec.name not in placed:
                    self.error(("fields", spec.name),
                               Msg("field '{name}' is in no form section, so forms and record pages never show it",
                                   name=spec.name),
                               Msg("add it to a section under {entity}.views.form (or leave it out on purpose: it "
                                   "still works in the API, rules and lists)", entity=self.entity.name),
                               key=True, severity="warning")

    def check_names(self, path: PathKey, names: list[Any], what: str, *, key: str | None = None,
                    system_ok: bool = True) -> None:
        known = self.names if system_ok else set(self.entity.field_names())
        for position, name in enumerate(names):
            if name not in known:
                item = path + (position,)
                where = path + (key,) if key else (item if item in self.doc.values else path)
                self.error(where, Msg("unknown {what} '{name}' on entity '{entity}'", what=what, name=name,
                                      entity=self.entity.name),
                           Msg("{suggestion} Declare it under {entity}.fields or correct the name.",
                               suggestion=did_you_mean(str(name), known), entity=self.entity.name))

    def check_field(self, spec: FieldSpec, data: dict[str, Any]) -> None:
        path: PathKey = ("fields", spec.name)
        if spec.name in SYSTEM_FIELDS:
            self.error(path, Msg("'{name}' is a system field that every record already has", name=spec.name),
                       Msg("choose another name; system fields: {names}", names=", ".join(SYSTEM_FIELDS)), key=True)
        allowed = COMMON_OPTIONS | TYPE_OPTIONS[spec.type]
        for option in data:
            if option not in allowed:
                users = sorted(kind.value for kind, options in TYPE_OPTIONS.items() if option in options)
                self.error(path + (option,), Msg("option '{option}' does not apply to a {kind} field",
                                                 option=option, kind=spec.kind),
                           Msg("it applies to: {kinds}", kinds=", ".join(users)) if users else Msg("remove it"),
                           key=True)
        for option in REQUIRED_OPTIONS.get(spec.type, ()):
            if option not in data:
                self.error(path, Msg("a {kind} field needs '{option}'", kind=spec.kind, option=option),
                           Msg("add '{option}:' under fields.{field}", option=option, field=spec.name), key=True)
        if spec.type is FieldType.LINK and spec.link_entity and spec.link_entity not in self.known_entities:
            self.error(path + ("entity",), Msg("link to unknown entity '{name}'", name=spec.link_entity),
                       did_you_mean(spec.link_entity, self.known_entities))
        if spec.pattern is not None:
            try:
                compile_pattern(spec.pattern)
            except PatternError as exc:
                self.error(path + ("pattern",), Msg("bad pattern: {problem}", problem=str(exc)),
                           Msg("escape special characters with a backslash, e.g. \\. for a dot"))
        if spec.default is not None and spec.choices:
            defaults = spec.default if isinstance(spec.default, list) else [spec.default]
            for value in defaults:
                if str(value) not in spec.choice_values():
                    self.error(path + ("default",), Msg("default '{value}' is not one of the options", value=value),
                               did_you_mean(str(value), spec.choice_values()))
        if spec.type is FieldType.LINK and spec.is_required and spec.on_delete.value == "set_null":
            self.error(path + ("on_delete",), Msg("a required link cannot be emptied when its target is deleted"),
                       Msg("use on_delete: restrict (refuse the delete) or cascade (delete this record too)"))
        if spec.type is FieldType.COMPUTED:
            for option in ("default", "required"):
                if option in data:
                    self.error(path + (option,), Msg("a computed field cannot have '{option}'", option=option),
                               Msg("its value always comes from its expression; remove the option"), key=True)
        for option, value in (("default", spec.default), ("min", spec.minimum), ("max", spec.maximum)):
            self.check_literal(path + (option,), spec, option, value)
        if spec.default_expression is not None:
            self.check_expression(path + ("default",), spec.default_expression)
        if spec.expression is not None:
            self.check_expression(path + ("expression",), spec.expression, exclude=spec.name)
        if spec.minimum is not None and spec.maximum is not None:
            try:
                if spec.minimum > spec.maximum:
                    self.error(path + ("min",), Msg("min {minimum} is greater than max {maximum}",
                                                    minimum=spec.minimum, maximum=spec.maximum), Msg("swap them"))
            except TypeError:
                pass

    def check_literal(self, path: PathKey, spec: FieldSpec, option: str, value: Any) -> None:
        """A literal default/min/max must have the field's type (dates as YYYY-MM-DD text)."""
        expected = _LITERALS.get(spec.value_type)
        if value is None or expected is None:
            return
        types, words = expected
        wrong = not isinstance(value, types) or isinstance(value, bool) and bool not in types
        if not wrong and isinstance(value, str) and spec.value_type in (FieldType.DATE, FieldType.DATETIME):
            try:
                (dt.date if spec.value_type is FieldType.DATE else dt.datetime).fromisoformat(value)
            except ValueError:
                wrong = True
        if wrong:
            self.error(path, Msg("{option} {value} does not fit a {type} field: expected {words}", option=option,
                                 value=repr(value), type=spec.type.value, words=words),
                       Msg("for a computed default write it as an expression starting with '=', e.g. '=today()'"))

    def check_expression(self, path: PathKey, expression: Expression, *, exclude: str | None = None) -> None:
        names = (self.names - {exclude}) | EXPRESSION_CONSTANTS
        for name in sorted(expression.names - names):
            self.error(path, Msg("expression uses unknown field '{name}'", name=name),
                       Msg("{suggestion} Fields of {entity} can be used by name.",
                           suggestion=did_you_mean(name, self.names - {exclude} if exclude else self.names),
                           entity=self.entity.name))
        for function in sorted(expression.functions - set(self.functions)):
            self.error(path, Msg("expression calls unknown function '{function}'", function=function),
                       Msg("{hint} See docs/expressions.md.",
                           hint=unknown_name_hint(function, self.functions, Msg("functions"))))
        for function in rule_only_calls(expression):
            self.error(path, Msg("{function}() cannot work here: {what} is known only in a rule's condition, so in "
                                 "a validation or computed field it would always be 0", function=function,
                                 what=RULE_ONLY_FUNCTIONS[function]),
                       Msg("move this check into a rule (rules.yaml) whose `when:` uses it"))
        for name, value, options in unknown_options(expression, self.entity):
            self.error(path, Msg("'{value}' is not an option of {name}, so this comparison is never true",
                                 value=value, name=name),
                       Msg("{suggestion} Options of {name}: {options}.", suggestion=did_you_mean(value, options),
                           name=name, options=", ".join(options)))
