"""The `crm` command: validate, migrate, serve, demo."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from engine.metamodel import BlueprintInvalid, Metamodel, load_blueprint
from engine.rules import FUNCTION_NAMES

SHIPPED_BLUEPRINT = Path(__file__).resolve().parent / "blueprints" / "crm"
DEFAULT_DB = "sqlite:///crm.sqlite"


def _blueprint_option(function):  # type: ignore[no-untyped-def]
    return click.option("--blueprint", "blueprint", envvar="CRM_BLUEPRINT", default=str(SHIPPED_BLUEPRINT),
                        show_default="the shipped CRM blueprint (CRM_BLUEPRINT overrides)",
                        help="Blueprint folder or app file.")(function)


def _db_option(function):  # type: ignore[no-untyped-def]
    return click.option("--db", "db_url", envvar="CRM_DATABASE_URL", default=DEFAULT_DB,
                        show_default="crm.sqlite in this folder (CRM_DATABASE_URL overrides)",
                        help="Database URL: sqlite:///file.sqlite or postgresql://user@host/db")(function)


def load_or_exit(path: str) -> Metamodel:
    """Load the blueprint or print every error and exit with status 1."""
    try:
        model = load_blueprint(path, functions=FUNCTION_NAMES)
    except BlueprintInvalid as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    for warning in model.warnings:
        click.echo(str(warning), err=True)
    return model


@click.group()
def main() -> None:
    """blueprint-crm: a CRM engine driven by YAML blueprints."""


@main.command()
@click.argument("path", type=click.Path(exists=True))
def validate(path: str) -> None:
    """Check a blueprint; print every error with file:line, or a summary when valid."""
    model = load_or_exit(path)
    click.echo(f"{model.name} ({model.label.text('en')}): {len(model.entities)} entities — valid")
    for entity in model.entities:
        links = [f"{f.name}→{f.link_entity}" for f in entity.fields if f.link_entity]
        extras = []
        if entity.dedup:
            extras.append("dedup " + " | ".join("+".join(key) for key in entity.dedup.keys)
                          + f" ({entity.dedup.on_match.value})")
        if entity.list_views:
            extras.append(f"{len(entity.list_views)} list view(s)")
        if links:
            extras.append("links " + ", ".join(links))
        click.echo(f"  {entity.name:<14} {entity.label.text('zh')} / {entity.label.text('en')}: "
                   f"{len(entity.fields)} fields" + ("; " + "; ".join(extras) if extras else ""))


if __name__ == "__main__":
    main()
