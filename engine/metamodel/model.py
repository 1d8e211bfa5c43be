"""The immutable metamodel: what a loaded blueprint means, with no YAML or dicts left in it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from engine.metamodel.errors import Location

NOWHERE = Location("<engine>", 0, 0)


@dataclass(frozen=True, slots=True)
class Label:
    """Text in one or more languages; `text(lang)` falls back to any language present."""

    texts: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, value: str | dict[str, str] | None, fallback: str = "") -> Label:
        if value is None:
            return cls((("en", fallback),)) if fallback else cls(())
        if isinstance(value, str):
            return cls((("*", value),))
        return cls(tuple((lang, str(text)) for lang, text in value.items()))

    def text(self, lang: str = "en") -> str:
        texts = dict(self.texts)
        for key in (lang, "*", "en", "zh"):
            if key in texts:
                return texts[key]
        return next(iter(texts.values()), "")

    def as_dict(self) -> dict[str, str]:
        texts = dict(self.texts)
        if "*" in texts:
            return {"zh": texts["*"], "en": texts["*"]}
        return texts


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
class Expression:
    """A checked blueprint expression: its source, where it was written and the names it uses."""

    source: str
    location: Location
    names: frozenset[str]
    functions: frozenset[str]


@dataclass(frozen=True, slots=True)
class Choice:
    value: str
    label: Label


@dataclass(frozen=True, slots=True)
class FieldSpec:
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
    expression: Expression | None = None
    result_type: FieldType | None = None
    phone_region: str = "CN"
    timezone: str = "Asia/Shanghai"
    widget: str | None = None

    @property
    def value_type(self) -> FieldType:
        """The type of the stored value: a computed field stores its result type."""
        if self.type is FieldType.COMPUTED:
            return self.result_type or FieldType.STRING
        return self.type

    def choice_values(self) -> tuple[str, ...]:
        return tuple(choice.value for choice in self.choices)

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

    _by_name: dict[str, FieldSpec] = field(init=False, repr=False, compare=False)
    money_fields: tuple[str, ...] = field(init=False, repr=False, compare=False)  # names of the money fields

    def __post_init__(self) -> None:
        # lookups built once; the write path asks for fields by name many times per record
        object.__setattr__(self, "_by_name", {spec.name: spec for spec in self.fields})
        object.__setattr__(self, "money_fields", tuple(spec.name for spec in self.fields
                                                       if spec.type is FieldType.MONEY))

    def field(self, name: str) -> FieldSpec:
        spec = self._by_name.get(name)
        if spec is None:
            raise KeyError(f"entity '{self.name}' has no field '{name}' "
                           f"(known: {', '.join(self.field_names())})")
        return spec

    def has_field(self, name: str) -> bool:
        return name in self._by_name

    def field_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.fields)

    def list_view(self, name: str = "default") -> ListViewSpec:
        for view in self.list_views:
            if view.name == name:
                return view
        if self.list_views:
            return self.list_views[0]
        return ListViewSpec("default", self.plural, self.field_names()[:6], (), (SortKey("id", True),))


@dataclass(frozen=True, slots=True)
class Settings:
    phone_region: str = "CN"
    currency: str = "CNY"
    timezone: str = "Asia/Shanghai"
    languages: tuple[str, ...] = ("zh", "en")
    default_language: str = "zh"
    # named territories: territory → the region values it covers, for in_territory(region, 'name')
    territories: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class MenuGroup:
    label: Label
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Metamodel:
    """Everything a blueprint says. Kinds beyond entities are built by their own modules
    (roles.py, automation.py) and stored here as tuples of their frozen specs."""

    name: str
    label: Label
    entities: tuple[EntitySpec, ...]
    settings: Settings = Settings()
    warnings: tuple[Any, ...] = field(default=(), compare=False)
    menu: tuple[MenuGroup, ...] = ()
    roles: tuple[Any, ...] = ()       # RoleSpec, see roles.py
    rules: tuple[Any, ...] = ()       # RuleSpec, see automation.py
    routing: tuple[Any, ...] = ()     # RoutingPolicySpec, see automation.py
    sources: tuple[Any, ...] = ()     # SourceSpec (inbound webhooks), see automation.py
    calendars: tuple[Any, ...] = ()   # CalendarDecl, see timekeeping.py
    slas: tuple[Any, ...] = ()        # SlaSpec, see timekeeping.py
    channels: tuple[Any, ...] = ()    # ChannelSpec, see timekeeping.py
    templates: tuple[Any, ...] = ()   # MessageTemplateSpec (in channels documents), see timekeeping.py
    cadences: tuple[Any, ...] = ()    # CadenceSpec, see timekeeping.py
    jobs: tuple[Any, ...] = ()        # JobSpec, see timekeeping.py

    def role(self, name: str) -> Any:
        for spec in self.roles:
            if spec.name == name:
                return spec
        raise KeyError(f"no role '{name}' (known: {', '.join(r.name for r in self.roles)})")

    def has_role(self, name: str) -> bool:
        return any(spec.name == name for spec in self.roles)

    def entity(self, name: str) -> EntitySpec:
        for spec in self.entities:
            if spec.name == name:
                return spec
        raise KeyError(f"no entity '{name}' (known: {', '.join(self.entity_names())})")

    def has_entity(self, name: str) -> bool:
        return any(spec.name == name for spec in self.entities)

    def entity_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.entities)
