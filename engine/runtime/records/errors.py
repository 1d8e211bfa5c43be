"""Errors RecordService raises; each maps to one HTTP status and a machine code."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.runtime.records.fieldkinds import FieldError


class RecordError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def as_dict(self, lang: str | None = None) -> dict[str, Any]:
        """The API's error body; `lang` (zh, en) picks the language where the error has both."""
        body: dict[str, Any] = {"code": self.code, "message": self.message, "field": self.field}
        body.update(self.details)
        return body

    def text(self, lang: str) -> str:
        """The message for a person reading `lang` (the English message unless the error has more)."""
        return self.message


class ValidationFailed(RecordError):
    """One or more fields are wrong; all of them are listed."""

    status = 422
    code = "validation_failed"

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        first = self.errors[0]
        summary = first.message if len(self.errors) == 1 else \
            f"{len(self.errors)} fields are invalid: " + "; ".join(error.message for error in self.errors)
        super().__init__(summary, field=first.field)

    def as_dict(self, lang: str | None = None) -> dict[str, Any]:
        body = super().as_dict(lang)
        body["errors"] = [error.as_dict() for error in self.errors]
        return body


class UnknownEntity(RecordError):
    status = 404
    code = "unknown_entity"


class NotFound(RecordError):
    status = 404
    code = "not_found"


class QuotaExceeded(RecordError):
    """A user's uploads would pass their quota."""

    status = 413
    code = "quota_exceeded"


class VersionConflict(RecordError):
    status = 409
    code = "version_conflict"


class DuplicateRecord(RecordError):
    status = 409
    code = "duplicate"


class RecordReferenced(RecordError):
    status = 409
    code = "referenced"


class QueryInvalid(RecordError):
    status = 422
    code = "invalid_query"


class StageRefused(RecordError):
    """A stage move the funnel refuses: not an allowed move, or requirements missing. Carries
    the message and every missing item (stage, what, how) in Chinese and English, the same for
    the API, the board and the form; `trace` is the explanation `crm explain` keeps."""

    status = 422
    code = "stage_requirements"

    def __init__(self, *, entity: str, record_id: int | None, field: str, source: str | None, target: str,
                 move: str, messages: dict[str, str], missing: dict[str, list[dict[str, Any]]], trace: str,
                 origin: str = "user", headlines: dict[str, str] | None = None) -> None:
        super().__init__(messages.get("en") or next(iter(messages.values())), field=field)
        self.entity, self.record_id, self.origin = entity, record_id, origin
        self.source, self.target, self.move = source, target, move
        self.messages, self.missing, self.trace = messages, missing, trace
        self.headlines = headlines or messages

    def text(self, lang: str) -> str:
        return self.messages.get(lang) or self.message

    def headline(self, lang: str) -> str:
        """The refusal without its items ("cannot enter “Quote”"), for screens that list the items."""
        return self.headlines.get(lang) or self.text(lang)

    def items(self, lang: str) -> list[dict[str, Any]]:
        return self.missing.get(lang) or self.missing.get("en") or []

    def as_dict(self, lang: str | None = None) -> dict[str, Any]:
        chosen = lang if lang in self.messages else "en"
        return {"code": self.code, "message": self.text(chosen), "field": self.field, "from": self.source,
                "to": self.target, "move": self.move, "missing": self.items(chosen)}
