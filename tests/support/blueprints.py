"""Blueprints for tests: the shipped ones, and inline YAML written into a temporary folder."""

from __future__ import annotations

import textwrap
from functools import cache
from pathlib import Path

from engine.metamodel import Metamodel, load_blueprint
from engine.rules import FUNCTION_NAMES

SHIPPED_CRM = Path(__file__).resolve().parents[2] / "blueprints" / "crm"
SHIPPED_SERVICE = Path(__file__).resolve().parents[2] / "blueprints" / "service"


def write_blueprint(folder: Path, files: dict[str, str]) -> Path:
    """Write inline YAML files (dedented) into `folder`; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return folder


def load(folder: Path) -> Metamodel:
    """Load and validate a blueprint folder; the shipped ones are loaded once per test run."""
    if folder in (SHIPPED_CRM, SHIPPED_SERVICE):
        return _shipped(folder)
    return load_blueprint(folder, functions=FUNCTION_NAMES)


@cache
def _shipped(folder: Path) -> Metamodel:
    # The metamodel is frozen, so tests may share it; the shipped files do not change during a run.
    return load_blueprint(folder, functions=FUNCTION_NAMES)
