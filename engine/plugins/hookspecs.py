"""Every hook a plugin may implement, each documented where it is declared.

A plugin is any object or module with functions marked `@hookimpl` and named like a hook
below. Installed packages announce theirs under the entry point group "blueprint_crm":

```toml
[project.entry-points.blueprint_crm]
star_rating = "crm_star_rating"
```

The engine's own field kinds, widgets, expression functions and channels register through
these same hooks (engine/runtime/records/fieldkinds.py, engine/runtime/web/widgets.py,
engine/rules/functions.py, engine/channels/vendors.py); engine/extensions.py collects every
answer once per engine and hands the blueprint loader the names it may accept. The answers'
types live in the layers that use them, so this module imports nothing of the engine and
every hook returns plain objects (`Any`); docs/plugins.md shows each contract with an example.
Every hook takes no arguments — what a plugin provides does not depend on the blueprint — and
may answer None for nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pluggy

PROJECT = "blueprint_crm"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def crm_field_kinds() -> Mapping[str, Any] | None:
    """Return runtime field kinds by the `type:` name a blueprint writes (Kind instances of engine/runtime/records/fieldkinds.py; a new name sets `stored_as`)."""


@hookspec
def crm_widgets() -> Sequence[Any] | None:
    """Return field widgets (objects with `name`, `field_types`, `render_form`, `render_display`, `parse`)."""


@hookspec
def crm_functions() -> Sequence[Any] | None:
    """Return expression functions (engine.rules.functions.ExpressionFunction: a name, its callable and its FunctionDoc)."""


@hookspec
def crm_actions() -> Sequence[Any] | None:
    """Return action verbs (objects with `name`, `schema` for the body and `apply(call)` giving actions of the built-in vocabulary)."""


@hookspec
def crm_channels() -> Mapping[str, Any] | None:
    """Return notification channel classes by `type:` name (`Class.for_channel(spec, url)` then `build_request(message, secret, now)`)."""
