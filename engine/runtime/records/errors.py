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

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message, "field": self.field}
        body.update(self.details)
        return body


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

    def as_dict(self) -> dict[str, Any]:
        body = super().as_dict()
        body["errors"] = [error.as_dict() for error in self.errors]
        return body


class UnknownEntity(RecordError):
    status = 404
    code = "unknown_entity"


class NotFound(RecordError):
    status = 404
    code = "not_found"


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
