"""The screens' message catalogue: gettext PO files, one per language, read with Babel.

`engine/runtime/web/locale/<lang>/LC_MESSAGES/messages.po` holds, for each message id (a
short key such as `inbox_unread`), its text in that language with `{name}` placeholders.
Translators edit the PO files with any PO editor (Poedit, Weblate); `tests/test_catalogue.py`
checks that every id has a non-empty text in every language and the same placeholders in each.
Every screen text is here; there is no table of texts in code (see docs/i18n.md).
"""

from __future__ import annotations

import functools
from pathlib import Path

from engine.metamodel.messages import read_catalogue

LOCALE = Path(__file__).resolve().parent.parent / "locale"
DOMAIN = "messages"


@functools.lru_cache(maxsize=None)
def catalogue(lang: str) -> dict[str, str]:
    """message id → text for `lang` (empty when there is no PO file for it)."""
    return read_catalogue(LOCALE / lang / "LC_MESSAGES" / f"{DOMAIN}.po")


def languages() -> tuple[str, ...]:
    return tuple(sorted(path.name for path in LOCALE.iterdir() if (path / "LC_MESSAGES" / f"{DOMAIN}.po").exists()))
