"""`entity:` documents: fields and their types, validations, dedup keys, indexes, search, list views,
the form and the board — the frozen `EntitySpec` and its builder.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.metamodel.app import Settings
from engine.metamodel.errors import NOWHERE, BlueprintError, Location
from engine.metamodel.expressions import EXPRESSION_PREFIX, Expression, ExpressionSyntaxError, parse_expression
from engine.metamodel.labels import Label
from engine.metamodel.messages import Msg
from engine.metamodel.source import PathKey, SourceDocument


class FieldType(enum.Enum):
    """Every kind of field a blueprint may declare."""

    # Members are singletons compared by identity, so identity is a valid hash — and a C-level
    # one: Enum's own __hash__ is Python code, run for every field of every record written.
    __hash__ = object.__hash__

    STRING = "string"
    TEXT = "text"
    INTEGER = "integer"
    DECIMAL = "decimal"
    MONEY = "money"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"
    CHOICE = "choice"
    MULTICHOICE = "multichoice"
    TAGS = "tags"
    PHONE = "phone"
    EMAIL = "email"
    URL = "url"
    LINK = "link"
    USER = "user"
    ATTACHMENT = "attachment"
    JSON = "json"
    COMPUTED = "computed"


class OnDelete(enum.Enum):
    """What happens to records linking to a record that is deleted."""

    RESTRICT = "restrict"
    SET_NULL = "set_null"
    CASCADE = "cascade"


class DedupAction(enum.Enum):
    UPDATE = "update"
    REJECT = "reject"
    FLAG = "flag"


@dataclass(frozen=True, slots=True)
class Choice:
    value: str
    label: Label


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field. `type` is the built-in type that stores it and decides its options, widgets
    and expressions; `kind` is the `type:` name the blueprint wrote — the same word, or a field
    type a plugin provides (engine/plugins/hookspecs.py, crm_field_kinds) stored as `type`."""

    name: str
    type: FieldType
    label: Label
    location: Location = NOWHERE
    help: Label = Label(())
    is_required: bool = False
    is_unique: bool = False
    is_readonly: bool = False
    has_index: bool = False
    default: Any = None
    default_expression: Expression | None = None
    minimum: Any = None
    maximum: Any = None
    length: int | None = None
    pattern: str | None = None
    choices: tuple[Choice, ...] = ()
    currency: str = "CNY"
    scale: int = 2
    link_entity: str | None = None
    on_delete: OnDelete = OnDelete.RESTRICT
    filter_by: str | None = None  # link: offer only targets whose link of this name equals this record's
    expression: Expression | None = None
    result_type: FieldType | None = None
    phone_region: str = "CN"
    timezone: str = "Asia/Shanghai"
    widget: str | None = None
    kind: str = ""
    _choice_values: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", self.type.value)
        # (read for every choice field of every record written: built once)
        object.__setattr__(self, "_choice_values", tuple(choice.value for choice in self.choices))

    @property
    def value_type(self) -> FieldType:
        """The type of the stored value: a computed field stores its result type."""
        if self.type is FieldType.COMPUTED:
            return self.result_type or FieldType.STRING
        return self.type

    def choice_values(self) -> tuple[str, ...]:
        return self._choice_values

    def choice_label(self, value: str, lang: str = "en") -> str:
        for choice in self.choices:
            if choice.value == value:
                return choice.label.text(lang)
        return value


@dataclass(frozen=True, slots=True)
class IndexSpec:
    fields: tuple[str, ...]
    is_unique: bool = False
    location: Location = NOWHERE
    reason: str = "declared"


@dataclass(frozen=True, slots=True)
class ValidationSpec:
    check: Expression
    message: Label
    field: str | None = None


@dataclass(frozen=True, slots=True)
class DedupSpec:
    keys: tuple[tuple[str, ...], ...]
    on_match: DedupAction
    location: Location = NOWHERE


@dataclass(frozen=True, slots=True)
class SortKey:
    field: str
    descending: bool = False

    def __str__(self) -> str:
        return ("-" if self.descending else "") + self.field


@dataclass(frozen=True, slots=True)
class ListViewSpec:
    name: str
    label: Label
    columns: tuple[str, ...]
    filters: tuple[str, ...]
    sort: tuple[SortKey, ...]
    page_size: int = 50
    location: Location = NOWHERE
    where: Expression | None = None  # a row condition (engine/metamodel/conditions.py): which records it lists


@dataclass(frozen=True, slots=True)
class FormSection:
    label: Label
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FormViewSpec:
    sections: tuple[FormSection, ...]


@dataclass(frozen=True, slots=True)
class BoardSpec:
    """A kanban board: one column per option of a choice field, cards showing `card` fields."""

    field: str
    label: Label
    card: tuple[str, ...]
    sum: str | None = None  # the money field each column adds up (default: the first money field on the cards)


@dataclass(frozen=True, slots=True)
class EntitySpec:
    name: str
    label: Label
    plural: Label
    title_field: str
    fields: tuple[FieldSpec, ...]
    location: Location = NOWHERE
    indexes: tuple[IndexSpec, ...] = ()
    validations: tuple[ValidationSpec, ...] = ()
    dedup: DedupSpec | None = None
    search: tuple[str, ...] = ()
    list_views: tuple[ListViewSpec, ...] = ()
    form: FormViewSpec | None = None
    board: BoardSpec | None = None
    is_managed: bool = False   # records created and advanced by the engine only (approval requests and tasks)
    routes_new_records: bool = False  # `owner_on_create: routing`: a record created without an owner is
    #                                   left to the entity's assign rules (routing), not given to its creator
    assigned_at_field: str | None = None  # `assigned_at:` a datetime field stamped whenever the owner changes

    _by_name: dict[str, FieldSpec] = field(init=False, repr=False, compare=False)
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _stage: str | None = field(init=False, repr=False, compare=False)
    money_fields: tuple[str, ...] = field(init=False, repr=False, compare=False)  # names of the money fields

    def __post_init__(self) -> None:
        # lookups built once; the write path asks for fields by name many times per record
        object.__setattr__(self, "_by_name", {spec.name: spec for spec in self.fields})
        object.__setattr__(self, "_names", tuple(self._by_name))
        object.__setattr__(self, "_stage", next((name for name in ("stage", "status") if name in self._by_name), None))
        object.__setattr__(self, "money_fields", tuple(spec.name for spec in self.fields
                                                       if spec.type is FieldType.MONEY))

    def field(self, name: str) -> FieldSpec:
        spec = self._by_name.get(name)
        if spec is None:
            raise KeyError(f"entity '{self.name}' has no field '{name}' "
                           f"(known: {', '.join(self.field_names())})")
        return spec

    @property
    def stage_field(self) -> str | None:
        """The field a record moves through — `stage`, else `status` — when the entity has one
        (the one rule every transition, trigger and clock uses when no field is named)."""
        return self._stage

    def find_field(self, name: str) -> FieldSpec | None:
        """The field called `name`, or None when the entity has none."""
        return self._by_name.get(name)

    def has_field(self, name: str) -> bool:
        return name in self._by_name

    def field_names(self) -> tuple[str, ...]:
        return self._names

    def list_view(self, name: str = "default") -> ListViewSpec:
        for view in self.list_views:
            if view.name == name:
                return view
        if self.list_views:
            return self.list_views[0]
        return ListViewSpec("default", self.plural, self.field_names()[:6], (), (SortKey("id", True),))


def entity_expression(doc: SourceDocument, path: PathKey, source: str,
                errors: list[BlueprintError]) -> Expression | None:
    location = doc.where(path)
    try:
        return parse_expression(source, location)
    except ExpressionSyntaxError as exc:
        errors.append(BlueprintError(location, path,
                                     Msg("bad expression '{source}': {problem}", source=source, problem=str(exc)),
                                     Msg("see docs/expressions.md for what an expression may contain")))
        return None


def build_field(doc: SourceDocument, name: str, data: dict[str, Any], errors: list[BlueprintError],
                settings: Settings, field_types: Mapping[str, FieldType] | None = None) -> FieldSpec:
    """The field as declared; `field_types` maps the plugins' field type names to the built-in
    type storing them (the JSON Schema has already refused any other name)."""
    path: PathKey = ("fields", name)
    kind = (field_types or {}).get(data["type"]) or FieldType(data["type"])
    default = data.get("default")
    default_expression = None
    if isinstance(default, str) and default.startswith(EXPRESSION_PREFIX):
        default_expression = entity_expression(doc, path + ("default",), default[1:], errors)
        default = None
    expression = None
    if "expression" in data:
        expression = entity_expression(doc, path + ("expression",), data["expression"], errors)
    result = FieldType(data["result"]) if "result" in data else None
    if kind is FieldType.COMPUTED and result is None:
        result = FieldType.STRING
    choices = tuple(Choice(str(value), Label.of(label, str(value)))
                    for value, label in (data.get("options") or {}).items())
    return FieldSpec(
        name=name,
        type=kind,
        label=Label.of(data.get("label"), name.replace("_", " ").capitalize()),
        location=doc.where_key(path),
        help=Label.of(data.get("help")),
        is_required=bool(data.get("required", False)),
        is_unique=bool(data.get("unique", False)),
        is_readonly=bool(data.get("readonly", False)) or kind is FieldType.COMPUTED,
        has_index=bool(data.get("index", False)),
        default=default,
        default_expression=default_expression,
        minimum=data.get("min"),
        maximum=data.get("max"),
        length=data.get("length"),
        pattern=data.get("pattern"),
        choices=choices,
        currency=data.get("currency", settings.currency),
        scale=int(data.get("scale", 2)),
        link_entity=data.get("entity"),
        on_delete=OnDelete(data.get("on_delete", "set_null" if kind is FieldType.USER else "restrict")),
        filter_by=data.get("filter_by"),
        expression=expression,
        result_type=result,
        phone_region=data.get("region", settings.phone_region),
        timezone=settings.timezone,
        widget=data.get("widget"),
        kind=data["type"],
    )


def _sort_keys(value: str | list[str] | None) -> tuple[SortKey, ...]:
    if value is None:
        return (SortKey("id", True),)
    items = [value] if isinstance(value, str) else value
    keys = []
    for item in items:
        item = item.strip()
        keys.append(SortKey(item[1:], True) if item.startswith("-") else SortKey(item.lstrip("+")))
    return tuple(keys)


def build_entity(doc: SourceDocument, errors: list[BlueprintError], settings: Settings,
                 field_types: Mapping[str, FieldType] | None = None) -> EntitySpec:
    data = doc.data
    name = data["entity"]
    fields = tuple(build_field(doc, field_name, field_data, errors, settings, field_types)
                   for field_name, field_data in data["fields"].items())
    validations = []
    for index, item in enumerate(data.get("validations") or []):
        check = entity_expression(doc, ("validations", index, "check"), item["check"], errors)
        if check is not None:
            validations.append(ValidationSpec(check, Label.of(item["message"]), item.get("field")))
    dedup = None
    if "dedup" in data:
        keys = tuple((key,) if isinstance(key, str) else tuple(key) for key in data["dedup"]["keys"])
        dedup = DedupSpec(keys, DedupAction(data["dedup"].get("on_match", "update")), doc.where(("dedup",)))
    views = data.get("views") or {}
    list_views = tuple(
        ListViewSpec(
            name=view_name,
            label=Label.of(view.get("label"), view_name.replace("_", " ").capitalize()),
            columns=tuple(view.get("columns") or [f.name for f in fields[:6]]),
            filters=tuple(view.get("filters") or ()),
            sort=_sort_keys(view.get("sort")),
            page_size=int(view.get("page_size", 50)),
            location=doc.where_key(("views", "list", view_name)),
            where=entity_expression(doc, ("views", "list", view_name, "where"), view["where"], errors)
            if "where" in view else None,
        )
        for view_name, view in (views.get("list") or {}).items()
    )
    board = None
    if "board" in views:
        spec = views["board"]
        board = BoardSpec(spec["field"], Label.of(spec.get("label"), "Board"),
                          tuple(spec.get("card") or [f.name for f in fields[:3]]), spec.get("sum"))
    form = None
    if "form" in views:
        form = FormViewSpec(tuple(FormSection(Label.of(section.get("label")), tuple(section["fields"]))
                                  for section in views["form"]["sections"]))
    indexes = tuple(IndexSpec(tuple(item["fields"]), bool(item.get("unique", False)),
                              doc.where(("indexes", index)))
                    for index, item in enumerate(data.get("indexes") or []))
    title = data.get("title") or next((f.name for f in fields if f.type is FieldType.STRING), "id")
    return EntitySpec(
        name=name,
        label=Label.of(data.get("label"), name.replace("_", " ").capitalize()),
        plural=Label.of(data.get("plural") or data.get("label"), name.replace("_", " ").capitalize()),
        title_field=title,
        fields=fields,
        location=doc.where(("entity",)),
        indexes=indexes,
        validations=tuple(validations),
        dedup=dedup,
        search=tuple(data.get("search") or ()),
        list_views=list_views,
        form=form,
        board=board,
        routes_new_records=data.get("owner_on_create", "creator") == "routing",
        assigned_at_field=data.get("assigned_at"),
    )
