"""The screens' own words in Chinese and English; blueprint labels come from the metamodel."""

from __future__ import annotations

from engine.metamodel import EntitySpec
from engine.runtime.records.fieldkinds import FieldError
from engine.runtime.web.screens.catalogue import catalogue

LANGUAGES = ("zh", "en")


def translate(lang: str, key: str, **values: object) -> str:
    """The screen text `key` in `lang` (zh or en), with `{name}` placeholders filled in."""
    text = catalogue(lang).get(key) or catalogue("zh" if lang == "zh" else "en")[key]
    return text.format(**values) if values else text


def permission_word(lang: str, action: str) -> str:
    """A permission's name for people (catalogue `permission_<action>`: read, create, update,
    delete, assign, export, and admin for the admin screens); an unknown one as it is."""
    key = f"permission_{action}"
    return translate(lang, key) if key in catalogue("en") else action


def field_error_text(entity: EntitySpec, error: FieldError, lang: str) -> str:
    """A RecordService field error for people, in the user's language where one is known: a
    blueprint validation's own message, else the error's Chinese text on Chinese screens, else
    the catalogue's text for its code (`api_error_<code>`), else its message without the
    leading "field: " (the form shows it under the field)."""
    if error.code == "rule":
        for rule in entity.validations:
            if rule.field == error.field and rule.message.text("en") == error.message:
                return rule.message.text(lang)
    if lang == "zh" and error.zh:
        return str(error.zh)
    if lang != "en" and f"api_error_{error.code}" in catalogue(lang):  # no text of its own: what its code means
        return translate(lang, f"api_error_{error.code}", field="")
    return error.message.removeprefix(f"{error.field}: ") if error.field else error.message
