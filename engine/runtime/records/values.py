"""Turning input into a record's values: coercion, defaults, computed fields, required
checks and validation rules. Pure functions of the metamodel, the input and the clock;
nothing here touches the database."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from typing import Any

from engine.metamodel import SYSTEM_FIELDS, EntitySpec, FieldSpec, FieldType
from engine.metamodel.errors import did_you_mean
from engine.rules import Evaluator, ExpressionError
from engine.runtime.records.fieldkinds import FieldError, FieldKinds
from engine.runtime.storage.times import as_utc

# System fields a caller may set; the rest are maintained by the engine.
WRITABLE_SYSTEM_FIELDS = frozenset({"owner"})
_SYSTEM_READONLY = frozenset(SYSTEM_FIELDS) - WRITABLE_SYSTEM_FIELDS


def is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def coerce_input(entity: EntitySpec, values: Mapping[str, Any], *, kinds: FieldKinds,
                 trusted: bool = False) -> tuple[dict[str, Any], list[FieldError]]:
    """Typed values for the fields in `values`, and every problem found along the way.
    `trusted` input (from the engine's own rules) may also set computed-free engine fields."""
    data: dict[str, Any] = {}
    errors: list[FieldError] = []
    by_kind = kinds.by_name
    for name, raw in values.items():
        if (name in _SYSTEM_READONLY or name == "duplicate_of") and not trusted:
            errors.append(FieldError(name, "read_only", f"{name}: is maintained by the engine and cannot be set"))
            continue
        if name == "owner":
            try:
                data[name] = None if is_empty(raw) else _coerce_user_id(raw)
            except FieldError as error:
                errors.append(error)
            continue
        spec = entity.find_field(name)
        if spec is None:
            errors.append(FieldError(name, "unknown_field",
                                     f"{name}: {entity.name} has no such field; "
                                     f"{did_you_mean(name, entity.field_names())}"))
            continue
        if spec.type is FieldType.COMPUTED:
            errors.append(FieldError(name, "read_only", f"{name}: is computed and cannot be set"))
            continue
        try:
            data[name] = None if is_empty(raw) else by_kind[spec.kind].coerce(spec, raw)
        except FieldError as error:
            errors.append(error)
    return data, errors


def _coerce_user_id(raw: Any) -> int:
    try:
        value = int(raw["id"] if isinstance(raw, dict) else raw)
    except (TypeError, ValueError, KeyError):
        raise FieldError("owner", "invalid", f"owner: '{raw}' is not a user id") from None
    if value <= 0:
        raise FieldError("owner", "invalid", f"owner: '{raw}' is not a user id")
    return value


def apply_defaults(entity: EntitySpec, data: dict[str, Any], evaluator: Evaluator, *,
                   kinds: FieldKinds) -> list[FieldError]:
    """Fill fields the input left out with their literal or expression defaults."""
    errors: list[FieldError] = []
    for spec in entity.fields:
        if spec.name in data or spec.type is FieldType.COMPUTED:
            continue
        try:
            if spec.default_expression is not None:
                value = evaluator.evaluate(spec.default_expression, data)
            elif spec.default is not None:
                value = spec.default
            else:
                continue
            data[spec.name] = None if is_empty(value) else kinds.of_field(spec).coerce(spec, _plain(value))
        except (FieldError, ExpressionError) as error:
            errors.append(FieldError(spec.name, "bad_default", f"{spec.name}: the default could not be used ({error})"))
    return errors


def _plain(value: Any) -> Any:
    """Expression results (dates, datetimes) in a form every kind's `coerce` accepts."""
    if isinstance(value, dt.datetime):
        return as_utc(value) if value.tzinfo else value
    return value


def compute_fields(entity: EntitySpec, data: dict[str, Any], evaluator: Evaluator, *,
                   kinds: FieldKinds) -> list[FieldError]:
    """Recompute every computed field from the record's values, in declaration order."""
    errors: list[FieldError] = []
    for spec in entity.fields:
        if spec.type is not FieldType.COMPUTED or spec.expression is None:
            continue
        values = expression_values(entity, data)
        try:
            value = evaluator.evaluate(spec.expression, values)
            data[spec.name] = None if is_empty(value) else kinds.of_field(spec).coerce(spec, _plain(value))
        except (ExpressionError, FieldError, ArithmeticError) as error:
            data[spec.name] = None
            # An input that is still empty makes the result empty, not the write invalid.
            if not any(is_empty(values.get(name)) for name in spec.expression.names):
                errors.append(FieldError(spec.name, "compute_failed",
                                         f"{spec.name}: could not be computed ({error})"))
    return errors


def expression_values(entity: EntitySpec, data: Mapping[str, Any]) -> dict[str, Any]:
    """Record values as expressions see them: a money field is its amount."""
    values = dict(data)
    for name in entity.money_fields:
        value = values.get(name)
        if isinstance(value, tuple):
            values[name] = value[0]
    return values


def check_required(entity: EntitySpec, data: Mapping[str, Any], names: set[str] | None = None,
                   *, already_wrong: Collection[FieldError] = ()) -> list[FieldError]:
    """Required fields that are empty; only those in `names` when given (an update). A field
    that already has an error (its input could not be read) is not reported twice."""
    errors = []
    skip = {error.field for error in already_wrong}
    for spec in entity.fields:
        if spec.name in skip:
            continue
        if spec.is_required and (names is None or spec.name in names) and is_empty(data.get(spec.name)):
            errors.append(FieldError(spec.name, "required", f"{spec.name}: is required ({spec.label.text('en')})",
                                     "必填"))
    return errors


def check_validations(entity: EntitySpec, data: Mapping[str, Any], evaluator: Evaluator,
                      lang: str = "en", *, before: Mapping[str, Any] | None = None) -> list[FieldError]:
    """The blueprint's validation rules that the record breaks. On an update (`before` given), a
    rule none of whose fields the update touches does not block it: a record that broke a rule
    added later can still be edited in other respects (the rule bites once its fields change)."""
    errors = []
    values = expression_values(entity, data)
    old = expression_values(entity, before) if before is not None else None
    for rule in entity.validations:
        if old is not None and all(old.get(name) == values.get(name) for name in rule.check.names):
            continue
        try:
            passed = bool(evaluator.evaluate(rule.check, values))
        except ExpressionError as error:
            # A check that trips over an empty field does not apply yet; `required` demands presence.
            if not any(is_empty(values.get(name)) for name in rule.check.names):
                errors.append(FieldError(rule.field, "rule_failed", f"{rule.message.text(lang)} ({error})"))
            continue
        if not passed:
            errors.append(FieldError(rule.field, "rule", rule.message.text(lang)))
    return errors


def references(entity: EntitySpec, data: Mapping[str, Any]) -> list[tuple[FieldSpec | None, str, int]]:
    """(field, target table kind, id) for every link, user or file the values point to."""
    found: list[tuple[FieldSpec | None, str, int]] = []
    if data.get("owner") is not None:
        found.append((None, "user", data["owner"]))
    for spec in entity.fields:
        value = data.get(spec.name)
        if value is None:
            continue
        if spec.type is FieldType.LINK:
            found.append((spec, spec.link_entity or "", value))
        elif spec.type is FieldType.USER:
            found.append((spec, "user", value))
        elif spec.type is FieldType.ATTACHMENT:
            found.append((spec, "file", value))
    return found


def link_filter_error(entity: EntitySpec, spec: FieldSpec, chosen: int, wanted: Any) -> FieldError:
    """A `filter_by` link pointing at a record of another parent (a contact of another account)."""
    parent = str(spec.filter_by)
    parent_label = entity.field(parent).label
    return FieldError(
        spec.name, "link_filter",
        f"{spec.name}: {spec.link_entity} {chosen} does not belong to the chosen {parent} {wanted}; "
        f"choose one of its {parent_label.text('en')}'s records or change {parent}",
        f"所选{spec.label.text('zh')}不属于所选{parent_label.text('zh')}，请从该{parent_label.text('zh')}的"
        f"记录中选择，或更换{parent_label.text('zh')}")
