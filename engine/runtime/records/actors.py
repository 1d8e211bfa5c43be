"""Who is acting: every RecordService call names its actor explicitly."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Actor:
    id: int | None
    username: str
    role: str | None = None
    team: str | None = None
    is_system: bool = False


SYSTEM = Actor(None, "system", role="system", is_system=True)
