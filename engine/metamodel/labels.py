"""Bilingual text: every label in a blueprint may be a string or `{zh: …, en: …}`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Label:
    """Text in one or more languages; `text(lang)` falls back to any language present."""

    texts: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, value: str | dict[str, str] | None, fallback: str = "") -> Label:
        if value is None:
            return cls((("en", fallback),)) if fallback else cls(())
        if isinstance(value, str):
            return cls((("*", value),))
        return cls(tuple((lang, str(text)) for lang, text in value.items()))

    def text(self, lang: str = "en") -> str:
        texts = dict(self.texts)
        for key in (lang, "*", "en", "zh"):
            if key in texts:
                return texts[key]
        return next(iter(texts.values()), "")

    def as_dict(self) -> dict[str, str]:
        texts = dict(self.texts)
        if "*" in texts:
            return {"zh": texts["*"], "en": texts["*"]}
        return texts
