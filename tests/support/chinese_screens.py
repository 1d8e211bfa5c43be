"""Finding English on a Chinese screen: the words a reader would see, minus the ones that are
names (brands, formats, units) or the data the page shows (record values, user names)."""

from __future__ import annotations

import re
from collections.abc import Iterable

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
