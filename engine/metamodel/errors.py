"""Located blueprint errors: every problem names file:line:column, what is wrong and a fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from engine.metamodel.messages import Msg, say


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
        return self.text("en")

    def text(self, lang: str) -> str:
        """The error as `crm validate` prints it, in `lang` (zh or en)."""
        where = ".".join(str(part) for part in self.path)
        said = Msg("error: {message}", message=self.message) if self.severity == "error" else \
            Msg("warning: {message}", message=self.message)
        text = f"{self.location}: {said.text(lang)}"
        if where:
            text += "\n    " + str(say(Msg("at {path}", path=where), lang))
        if self.hint:
            text += f"\n    {say(self.hint, lang)}"
        return text


class BlueprintInvalid(Exception):
    """The blueprint has errors; all of them, sorted by place, are in `errors`."""

    def __init__(self, errors: Sequence[BlueprintError]) -> None:
        self.errors = tuple(sorted(errors, key=lambda e: (e.location, e.message)))
        super().__init__(self.text("en"))

    def text(self, lang: str) -> str:
        """Every error, counted and in order of place, in `lang` (zh or en)."""
        failures = sum(1 for error in self.errors if error.severity == "error")
        warnings = len(self.errors) - failures
        errors = Msg("1 error") if failures == 1 else Msg("{count} errors", count=failures)
        counted = Msg("{errors} in the blueprint:", errors=errors) if not warnings else Msg(
            "{errors} and {warnings} in the blueprint:", errors=errors,
            warnings=Msg("1 warning") if warnings == 1 else Msg("{count} warnings", count=warnings))
        return "\n".join([counted.text(lang), *(error.text(lang) for error in self.errors)])


def did_you_mean(name: str, known: Iterable[str]) -> Msg:
    """A hint naming the closest known name, or listing the known names."""
    candidates = sorted(set(known))
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if close:
        return Msg("did you mean '{name}'?", name=close[0])
    if not candidates:
        return Msg("none are declared")
    shown = ", ".join(candidates[:12]) + (", …" if len(candidates) > 12 else "")
    return Msg("known: {names}", names=shown)


def unknown_name_hint(name: str, known: Iterable[str], what: str) -> Msg:
    """The hint for a name no built-in and no installed plugin provides: the closest known one,
    and all of them — the reader may be missing a plugin rather than misspelling."""
    names = sorted(set(known))
    close = did_you_mean(name, names)
    listed = Msg("Known {what}: {names}; a plugin may provide more — install it, or correct the name.",
                 what=what, names=", ".join(names)) if names else \
        Msg("No {what} are known; a plugin may provide them — install it, or correct the name.", what=what)
    if close.template == "did you mean '{name}'?":
        return Msg("{suggestion} {rest}", suggestion=close, rest=listed)
    return listed


NOWHERE = Location("<engine>", 0, 0)
