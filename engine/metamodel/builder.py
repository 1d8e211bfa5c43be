"""Build frozen metamodel objects from schema-valid documents."""

from __future__ import annotations

from typing import Any

from engine.metamodel.errors import BlueprintError
from engine.metamodel.expressions import ExpressionSyntaxError, parse_expression
from engine.metamodel.model import (BoardSpec, Choice, DedupAction, DedupSpec, EntitySpec, Expression, FieldSpec,
                                    FieldType, FormSection, FormViewSpec, IndexSpec, Label, ListViewSpec, MenuGroup,
                                    OnDelete, Settings, SortKey, ValidationSpec)
from engine.metamodel.source import PathKey, SourceDocument

EXPRESSION_PREFIX = "="


def build_menu(items: list[Any], entity_names: list[str]) -> tuple[MenuGroup, ...]:
    """Menu groups from the app's `menu:`; without one, every entity in declaration order."""
    if not items:
        return (MenuGroup(Label.of({"zh": "菜单", "en": "Menu"}), tuple(entity_names)),)
    groups: list[MenuGroup] = []
    loose: list[str] = []
    for item in items:
        if isinstance(item, str):
            loose.append(item)
        else:
            groups.append(MenuGroup(Label.of(item.get("label")), tuple(item["items"])))
    if loose:
        groups.insert(0, MenuGroup(Label.of({"zh": "菜单", "en": "Menu"}), tuple(loose)))
    return tuple(groups)


def build_settings(data: dict[str, Any]) -> Settings:
    defaults = Settings()
    return Settings(
        phone_region=data.get("phone_region", defaults.phone_region),
        currency=data.get("currency", defaults.currency),
        timezone=data.get("timezone", defaults.timezone),
        languages=tuple(data.get("languages", defaults.languages)),
        default_language=data.get("default_language", defaults.default_language),
        territories=tuple((name, tuple(str(v) for v in values))
                          for name, values in (data.get("territories") or {}).items()),
    )


def _expression(doc: SourceDocument, path: PathKey, source: str,
                errors: list[BlueprintError]) -> Expression | None:
    location = doc.where(path)
    try:
        return parse_expression(source, location)
    except ExpressionSyntaxError as exc:
        errors.append(BlueprintError(location, path, f"bad expression '{source}': {exc}",
                                     "see docs/expressions.md for what an expression may contain"))
        return None


def build_field(doc: SourceDocument, name: str, data: dict[str, Any], errors: list[BlueprintError],
                settings: Settings) -> FieldSpec:
    path: PathKey = ("fields", name)
    kind = FieldType(data["type"])
    default = data.get("default")
    default_expression = None
    if isinstance(default, str) and default.startswith(EXPRESSION_PREFIX):
        default_expression = _expression(doc, path + ("default",), default[1:], errors)
        default = None
    expression = None
    if "expression" in data:
        expression = _expression(doc, path + ("expression",), data["expression"], errors)
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
        expression=expression,
        result_type=result,
        phone_region=data.get("region", settings.phone_region),
        timezone=settings.timezone,
        widget=data.get("widget"),
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


def build_entity(doc: SourceDocument, errors: list[BlueprintError], settings: Settings) -> EntitySpec:
    data = doc.data
    name = data["entity"]
    fields = tuple(build_field(doc, field_name, field_data, errors, settings)
                   for field_name, field_data in data["fields"].items())
    validations = []
    for index, item in enumerate(data.get("validations") or []):
        check = _expression(doc, ("validations", index, "check"), item["check"], errors)
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
        )
        for view_name, view in (views.get("list") or {}).items()
    )
    board = None
    if "board" in views:
        spec = views["board"]
        board = BoardSpec(spec["field"], Label.of(spec.get("label"), "Board"),
                          tuple(spec.get("card") or [f.name for f in fields[:3]]))
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
    )
