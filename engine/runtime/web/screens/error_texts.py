"""API and screen errors in the reader's language, translated at the edge.

RecordService and the API raise errors with a stable machine `code`, the offending `field`
and an English message (what logs, `crm explain` and existing clients read). A reader of
another language gets the message from the catalogue instead: field errors through the
field kinds' own Chinese texts and the blueprint's validation messages, every other error
through its code (`api_error_<code>`), naming the field by its blueprint label. The English
message stays the source: English readers get it unchanged."""

from __future__ import annotations

import difflib
from typing import Any

from engine.metamodel import Metamodel
from engine.runtime.records.errors import RecordError, StageRefused, ValidationFailed
from engine.runtime.records.fieldkinds import FieldError
from engine.runtime.web.screens.catalogue import catalogue
from engine.runtime.web.screens.i18n import field_error_text, permission_word, translate

LIST_PARAMETERS = ("q", "sort", "page", "per_page", "owner", "created_at", "updated_at", "id", "view", "sla",
                   "created_by", "version", "fields", "format")


def error_body(error: RecordError, lang: str, model: Metamodel, entity: str | None = None,
               record_id: str | None = None) -> dict[str, Any]:
    """The API's error body for `error` with its `message` (and each field error's) in `lang`;
    `entity` and `record_id` are the request's, for messages that name the record."""
    body = error.as_dict(lang)
    if lang == "en" or isinstance(error, StageRefused):
        return body
    body["message"] = error_text(error, lang, model, entity, record_id)
    if body["message"] != error.message:
        body["detail"] = error.message  # the precise English text, for the developer reading the response
    if isinstance(error, ValidationFailed):
        body["errors"] = [{**failure.as_dict(), "message": _field_text(failure, lang, model, entity)}
                          for failure in error.errors]
    return body


def coded_text(code: str, lang: str, message: str, field: str | None = None, *, model: Metamodel | None = None,
               entity: str | None = None) -> str:
    """A message known only by its code (the API's own refusals): the catalogue's text for
    `api_error_<code>` naming the field, else the English message."""
    if lang == "en" or f"api_error_{code}" not in catalogue(lang):
        return message
    label = _field_label(field, lang, model, entity) if field else ""
    return translate(lang, f"api_error_{code}", field=label and translate(lang, "api_error_field", field=label))


def error_text(error: RecordError, lang: str, model: Metamodel, entity: str | None = None,
               record_id: str | None = None) -> str:
    """One line for a person reading `lang`."""
    entity = entity if entity and model.has_entity(entity) else _entity_of(error, model)
    if lang == "en":
        return error.message
    if isinstance(error, StageRefused):
        return error.text(lang)
    if isinstance(error, ValidationFailed):
        return translate(lang, "list_separator").join(_field_text(failure, lang, model, entity)
                                                      for failure in error.errors)
    if error.code == "forbidden" and error.field and entity and model.entity(entity).has_field(error.field):
        return translate(lang, "forbidden_field", field=model.entity(entity).field(error.field).label.text(lang))
    if error.code == "forbidden":
        name = str(error.details.get("entity") or entity or "")
        label = model.entity(name).plural.text(lang) if model.has_entity(name) else translate(lang, "api_error_area")
        return translate(lang, "forbidden_text", permission=permission_word(lang, str(error.details.get(
            "permission", ""))), entity=label)
    if error.code == "not_found" and entity and error.field and "value" in error.details \
            and model.entity(entity).has_field(error.field):  # no record (or several) with that value: name it
        spec = model.entity(entity)
        return translate(lang, "api_error_several_records_with" if error.details.get("matches") else
                         "api_error_no_record_with", entity=spec.label.text(lang),
                         field=spec.field(error.field).label.text(lang), value=error.details["value"])
    if error.code == "not_found" and entity and record_id:
        return translate(lang, "api_error_record_not_found", entity=model.entity(entity).label.text(lang), id=record_id)
    if error.code == "invalid_query" and entity and error.field and _is_unknown_parameter(error.field, model, entity):
        return _unknown_parameter(error.field, lang, model, entity)
    zh = error.details.get("zh")
    if lang == "zh" and isinstance(zh, str) and zh:
        return zh
    return coded_text(error.code, lang, error.message, error.field, model=model, entity=entity)


def _field_text(failure: FieldError, lang: str, model: Metamodel, entity: str | None) -> str:
    spec = model.entity(entity) if entity and model.has_entity(entity) else None
    text = field_error_text(spec, failure, lang) if spec is not None else (failure.zh if lang == "zh" and failure.zh
                                                                            else None)
    english = failure.message.removeprefix(f"{failure.field}: ")
    if text is None and _is_written_in(english, lang):
        text = english  # a screen's own refusal, already in the reader's language
    if text is None or (text == english and not _is_written_in(text, lang)):
        text = coded_text(failure.code, lang, failure.message, None) if \
            f"api_error_{failure.code}" in catalogue(lang) else translate(lang, "api_error_invalid_value")
    if spec is None or not failure.field:
        return text
    if not spec.has_field(failure.field):
        # a name the entity lacks, or a column the engine keeps (id, version): named as the client
        # wrote it, so "没有这个字段" says which one, with the closest real field when there is one
        close = difflib.get_close_matches(failure.field, [field.name for field in spec.fields], n=1, cutoff=0.6)
        hint = translate(lang, "api_error_did_you_mean", name=close[0]) if close and \
            failure.code == "unknown_field" else ""
        return translate(lang, "api_error_field_message", field=failure.field, message=text + hint)
    label = _field_label(failure.field, lang, model, entity)
    return translate(lang, "api_error_field_message", field=label, message=text)


def _is_written_in(text: str, lang: str) -> bool:
    """Whether a message some screen already wrote for its reader is in `lang` (Chinese has CJK)."""
    return lang != "zh" or any("\u4e00" <= char <= "\u9fff" for char in text)


def _is_unknown_parameter(name: str, model: Metamodel, entity: str) -> bool:
    base = name.split("__")[0]
    return base not in LIST_PARAMETERS and not model.entity(entity).has_field(base)


def _unknown_parameter(name: str, lang: str, model: Metamodel, entity: str) -> str:
    """A list parameter the entity does not know, with the closest name it does know."""
    known = [spec.name for spec in model.entity(entity).fields] + list(LIST_PARAMETERS)
    close = difflib.get_close_matches(name.split("__")[0], known, n=1, cutoff=0.6)
    hint = translate(lang, "api_error_did_you_mean", name=close[0]) if close else ""
    return translate(lang, "api_error_unknown_parameter", name=name, hint=hint)


def _field_label(field: str | None, lang: str, model: Metamodel | None, entity: str | None) -> str:
    if not field:
        return ""
    if model is not None and entity and model.has_entity(entity) and model.entity(entity).has_field(field):
        return model.entity(entity).field(field).label.text(lang)
    return field


def _entity_of(error: RecordError, model: Metamodel) -> str | None:
    name = error.details.get("entity")
    return name if isinstance(name, str) and model.has_entity(name) else None
