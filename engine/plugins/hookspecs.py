"""Every hook a plugin may implement, each documented where it is declared.

A plugin is any object or module with functions marked `@hookimpl` and named like a hook
below. Installed packages announce theirs under the entry point group "blueprint_crm":

```toml
[project.entry-points.blueprint_crm]
star_rating = "crm_star_rating"
```
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pluggy

PROJECT = "blueprint_crm"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def crm_widgets() -> Sequence[Any]:
    """Return field widgets (objects with `name`, `field_types`, `render_form`, `render_display`, `parse`)."""
