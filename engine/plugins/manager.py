"""Build the plugin manager: hook specifications, the engine's own plugins, installed ones."""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from engine.plugins import hookspecs

ENTRY_POINT_GROUP = hookspecs.PROJECT


def plugin_manager(builtins: Iterable[object] = (), *, extra: Iterable[object] = (),
                   load_installed: bool = True) -> pluggy.PluginManager:
    """A manager holding `builtins` (the engine's own implementations), every installed
    package of the "blueprint_crm" entry point group (unless `load_installed` is false)
    and `extra` plugin objects (handy in tests)."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    for plugin in builtins:
        manager.register(plugin)
    if load_installed:
        manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in extra:
        manager.register(plugin)
    return manager
