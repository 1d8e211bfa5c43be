"""Located blueprint errors: every problem names file:line:column, what is wrong and a fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Location:
    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class BlueprintError:
    location: Location
    path: tuple[str | int, ...]
    message: str
    hint: str = ""
    severity: str = "error"  # "error" stops loading; "warning" is reported and loading goes on

    def __str__(self) -> str:
        where = ".".join(str(part) for part in self.path)
        text = f"{self.location}: {self.severity}: {self.message}"
        if where:
            text += f"\n    at {where}"
        if self.hint:
            text += f"\n    {self.hint}"
        return text


class BlueprintInvalid(Exception):
    """The blueprint has errors; all of them, sorted by place, are in `errors`."""

    def __init__(self, errors: Sequence[BlueprintError]) -> None:
        self.errors = tuple(sorted(errors, key=lambda e: (e.location, e.message)))
        failures = sum(1 for error in self.errors if error.severity == "error")
        warnings = len(self.errors) - failures
        counted = f"{failures} error{'s' if failures != 1 else ''}" + (
            f" and {warnings} warning{'s' if warnings != 1 else ''}" if warnings else "")
        super().__init__(f"{counted} in the blueprint:\n" + "\n".join(str(error) for error in self.errors))


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """A hint naming the closest known name, or listing the known names."""
    candidates = sorted(set(known))
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    if not candidates:
        return "none are declared"
    shown = ", ".join(candidates[:12]) + (", …" if len(candidates) > 12 else "")
    return f"known: {shown}"


def unknown_name_hint(name: str, known: Iterable[str], what: str) -> str:
    """The hint for a name no built-in and no installed plugin provides: the closest known one,
    and all of them — the reader may be missing a plugin rather than misspelling."""
    names = sorted(set(known))
    close = did_you_mean(name, names)
    listed = f"known {what}: {', '.join(names) or 'none'}"
    lead = f"{close} " if close.startswith("did you mean") else ""
    return f"{lead}{listed[0].upper()}{listed[1:]}; a plugin may provide more — install it, or correct the name."


NOWHERE = Location("<engine>", 0, 0)
