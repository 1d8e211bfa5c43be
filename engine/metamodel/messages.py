"""What `crm validate` says, in the analyst's language.

Every blueprint error and hint is a `Msg`: its English text (the `str` itself, so logs, tests and
the API read it as before) plus its English template and values. `Msg.text(lang)` says it in
another language by looking the template up in that language's gettext catalogue,
`engine/metamodel/locale/<lang>/LC_MESSAGES/blueprint.po` (msgid: the English template, msgstr:
the translation with the same `{name}` placeholders), and saying nested messages the same way.
A template missing from the catalogue is said in English; `tests/test_blueprint_messages.py`
checks that every template in the code has a Chinese text with the same placeholders.
"""

from __future__ import annotations

import functools
from pathlib import Path

from babel.messages.pofile import read_po

LOCALE = Path(__file__).resolve().parent / "locale"
DOMAIN = "blueprint"


class Msg(str):
    """An English message that can be said in another language (see the module's docstring)."""

    template: str
    values: dict[str, object]

    def __new__(cls, template: str, /, **values: object) -> Msg:
        made = super().__new__(cls, template.format(**values))
        made.template = template
        made.values = values
        return made

    def __reduce__(self) -> tuple[object, ...]:  # pickled in the blueprint cache
        return _rebuilt, (self.template, self.values)

    def text(self, lang: str) -> str:
        wording = catalogue(lang).get(self.template) or self.template
        return wording.format(**{name: say(value, lang) for name, value in self.values.items()})


class MsgError(ValueError):
    """A blueprint value that is wrong, said by a `Msg`: `str(error)` is that Msg itself, so a
    caller that reports `str(exc)` can still say it in the reader's language."""

    def __str__(self) -> str:
        message = self.args[0] if self.args else ""
        return message if isinstance(message, str) else super().__str__()


def _rebuilt(template: str, values: dict[str, object]) -> Msg:
    return Msg(template, **values)


def say(message: object, lang: str) -> object:
    """A message in `lang` when it is a `Msg` (or an exception raised with one); anything else as
    it is (a name, a number, an error from a library)."""
    if isinstance(message, BaseException) and message.args and isinstance(message.args[0], Msg):
        message = message.args[0]
    return message.text(lang) if isinstance(message, Msg) else message


@functools.lru_cache(maxsize=None)
def catalogue(lang: str) -> dict[str, str]:
    """English template → its text in `lang` (empty for English and for a language without a file)."""
    return read_catalogue(LOCALE / lang / "LC_MESSAGES" / f"{DOMAIN}.po")


def read_catalogue(path: Path) -> dict[str, str]:
    """A gettext PO file's message id → text (translated entries only); empty when there is no file."""
    if not path.exists():
        return {}
    with path.open("rb") as handle:
        parsed = read_po(handle, locale=None)
    return {str(message.id): str(message.string) for message in parsed
            if message.id and isinstance(message.id, str) and isinstance(message.string, str) and message.string}
