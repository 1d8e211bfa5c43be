"""Build the plugin manager: hook specifications, the engine's own plugins, installed ones."""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Iterable
from typing import Any

import pluggy

from engine.plugins import hookspecs

ENTRY_POINT_GROUP = hookspecs.PROJECT


class PluginError(ValueError):
    """Plugins that cannot work together or with the engine (two claim one name, a hook answers
    something unusable); the message names the plugins and what to do."""


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
        for name, plugin in installed_plugins():
            if manager.get_plugin(name) is None and not manager.is_registered(plugin):
                manager.register(plugin, name=name)
    for plugin in extra:
        manager.register(plugin)
    return manager


@functools.cache
def installed_plugins() -> tuple[tuple[str, object], ...]:
    """(name, plugin) of every installed package of the entry point group, found and imported
    once per process: scanning the installed distributions takes ~40 ms, and every engine
    (each test opens several) builds its own manager. Like an import, a package installed
    while the process runs is seen by the next process."""
    return tuple((entry.name, entry.load())
                 for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def answers(manager: pluggy.PluginManager, hook: str) -> list[tuple[str, Any]]:
    """Every plugin's answer to the argument-free `hook` with the plugin's name, in the order
    the plugins were registered (the engine's own first), so a registry can say who provided
    what when two plugins claim the same name."""
    caller = getattr(manager.hook, hook)
    found: list[tuple[str, Any]] = []
    for implementation in caller.get_hookimpls():
        if implementation.hookwrapper or implementation.wrapper:
            continue
        result = implementation.function()
        if result is not None:
            found.append((implementation.plugin_name, result))
    return found


def claim(registry: dict[str, Any], providers: dict[str, str], name: str, item: Any, plugin: str, what: str) -> None:
    """Register `item` as `name` for `plugin`, or raise PluginError when another plugin has it."""
    if name in registry and registry[name] is not item:
        raise PluginError(f"two plugins provide the {what} '{name}' ({providers[name]} and {plugin}); "
                          "uninstall one of them")
    registry[name] = item
    providers[name] = plugin
