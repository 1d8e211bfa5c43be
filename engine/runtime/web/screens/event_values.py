"""Values in the event log (JSON form) as people read them, shared by the record page's
timeline and the account panorama's merged timeline."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

from engine.metamodel import EntitySpec, FieldType
from engine.runtime.web.screens.i18n import translate
from engine.runtime.web.widgets import format_number, local_time


def event_value(entity: EntitySpec, name: str, value: Any, lang: str, users: dict[int, str]) -> str:
    """An event value (JSON form) as a person reads it: labels for choices and users, times in
    the field's (business) timezone, yes/no in the reader's language."""
    if value is None or value == "" or value == []:
        return "—"
    spec = entity.find_field(name)
    if name == "owner" or (spec is not None and spec.type is FieldType.USER):
        return users.get(value, f"#{value}")
    if spec is not None and spec.type is FieldType.CHOICE:
        return spec.choice_label(str(value), lang)
    if spec is not None and spec.type in (FieldType.MULTICHOICE, FieldType.TAGS) and isinstance(value, list):
        return ", ".join(spec.choice_label(str(item), lang) for item in value)
    if isinstance(value, bool):
        return translate(lang, "yes" if value else "no")
    if isinstance(value, dict) and "amount" in value:
        try:
            amount = format_number(decimal.Decimal(str(value["amount"])))
        except decimal.InvalidOperation:
            amount = str(value["amount"])
        return f"{amount} {value.get('currency', '')}".strip()
    if spec is not None and spec.type is FieldType.DATETIME and isinstance(value, str):
        try:
            return local_time(dt.datetime.fromisoformat(value), spec.timezone).strftime("%Y-%m-%d %H:%M")
        except ValueError:
            return value
    if spec is not None and spec.type is FieldType.LINK:
        return f"#{value}"
    return str(value)
