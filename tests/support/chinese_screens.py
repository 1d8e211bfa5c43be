"""Finding English on a Chinese screen, two ways: `english_words` — the words a reader would see
in a page's HTML, minus the ones that are names (brands, formats, units) or the data the page
shows; and `assert_no_english` — none of the catalogue's English texts (long enough to be a
message) nor RecordService's English phrases on a Playwright page's header and main part."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from engine.runtime.web.screens.catalogue import catalogue

# Words a Chinese screen may show in Latin letters: product and vendor names, file formats,
# units and abbreviations every Chinese office worker reads as they are.
NAMES = frozenset({
    "crm", "api", "sla", "csv", "xlsx", "excel", "pdf", "id", "url", "sha", "utc", "gmt", "p", "cny", "usd", "eur",
    "dingtalk", "wecom", "feishu", "slack", "webhook", "mail", "email", "e-mail", "ip", "json", "svg", "ok",
    "english",  # the language switch names each language in itself
    "kpi", "vip", "it", "ai", "b2b", "b2c", "saas", "erp", "iot", "pos", "h", "s", "min", "kb", "mb", "gb",
    "utf", "gbk", "sem", "seo", "salesforce", "ou", "u",  # encodings, channels, vendor id formats (feishu=ou_…)
})
# scripts and styles are not read; <code> and <pre> hold names and traces (YAML keys, `crm explain`), not messages
_SCRIPTS = re.compile(r"<(script|style|code|pre)\b.*?</\1>", re.S | re.I)
_TAGS = re.compile(r"<[^>]+>")
_ATTRIBUTES = re.compile(r'\b(?:placeholder|title|aria-label|alt)="([^"]*)"')
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*[A-Za-z]|[A-Za-z]")
_ADDRESSES = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+|https?://\S+|/[\w/.?=&%-]+")


def readable_text(page: str) -> str:
    """What a reader (or a screen reader) meets on the page: text nodes and labelling attributes."""
    import html
    body = _SCRIPTS.sub(" ", page)
    labels = " ".join(_ATTRIBUTES.findall(body))
    return html.unescape(_TAGS.sub(" ", body) + " " + labels)


def english_words(page: str, data: Iterable[str] = ()) -> set[str]:
    """The English words on `page` that are neither names nor part of the `data` it shows."""
    text = _ADDRESSES.sub(" ", readable_text(page))
    allowed = set(NAMES)
    for value in data:  # charts shorten long names ("王磊 Wang (Sa…"): a word's beginnings are data too
        allowed |= {word.lower()[:end] for word in _WORD.findall(value) for end in range(min(2, len(word)), len(word) + 1)}
    return {word for word in _WORD.findall(text) if word.lower() not in allowed}


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


# an English sentence in a flash, a refusal or a field's error: a message the catalogue missed
ENGLISH_MESSAGE = re.compile(r"\b(you|your|please|cannot|must|is required|refused|permission|error|logged)\b", re.I)


def assert_no_english_message(page: Any, where: str) -> None:
    """Fail naming `where` when the (Playwright) page's messages, header or main part show English."""
    messages = " ".join(page.locator(".flash, .refusal, .card-refusal, .field-error, .error, .clocks"
                                     ).all_inner_texts())
    assert not ENGLISH_MESSAGE.search(messages), f"{where}: {messages}"
    assert_no_english(page, where)
