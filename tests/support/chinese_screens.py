"""Checking that a Chinese screen shows no English message: none of the catalogue's English texts
(long enough to be a message, not a word shared by both languages) and none of RecordService's
English phrases, in the page's header and main part (the language switch says "English" by design)."""

from __future__ import annotations

from typing import Any

from engine.runtime.web.screens.catalogue import catalogue

ENGLISH_PHRASES = ("you lack", "wrong username", "is required", "does not exist", "does not belong",
                   "please ", "refused", "logged")


def english_texts() -> list[str]:
    return sorted({text.split("{")[0].strip() for text in catalogue("en").values()
                   if len(text.split("{")[0].strip()) >= 8}, key=len, reverse=True)


def assert_no_english(page: Any, where: str) -> None:
    """Fail naming `where` and the English found on the (Playwright) page."""
    shown = page.locator("main").inner_text() + page.locator("header").inner_text()
    leaked = [text for text in english_texts() if text in shown]
    assert not leaked, f"{where}: English on the Chinese screen: {leaked}"
    lowered = shown.lower()
    for phrase in ENGLISH_PHRASES:
        assert phrase not in lowered, f"{where}: English on the Chinese screen: {phrase!r}"
