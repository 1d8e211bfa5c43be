"""The plugin mechanism: one pluggy project, `blueprint_crm`, shared by the engine's own
extensions and third-party packages (entry point group "blueprint_crm").

Imports nothing of the engine except `engine.metamodel`, so rules and runtime can both use it.
"""

from engine.plugins.hookspecs import PROJECT, hookimpl, hookspec
from engine.plugins.manager import ENTRY_POINT_GROUP, PluginError, answers, claim, plugin_manager

__all__ = ["ENTRY_POINT_GROUP", "PROJECT", "PluginError", "answers", "claim", "hookimpl", "hookspec", "plugin_manager"]
