"""Everything the plugins give one engine, collected once: field kinds, widgets, expression
functions, action verbs and channel types.

The engine's own implementations are plugins like any other — one built-in plugin module
per hook, registered first — and installed packages follow (entry point group
"blueprint_crm"). Each hook's answers become the registry the layer using them reads
(`FieldKinds` for storage and records, `WidgetRegistry` for screens, `FunctionLibrary` for
expressions, `ActionTypes` for rules, `ChannelTypes` for delivery); two plugins claiming
one name fail here, at startup, naming both. The `vocabulary` is the part the blueprint
loader needs — names and body schemas, as data — so `crm validate` accepts what the
installed plugins provide and reports, at file:line, what none does.

Part of the composition root: it knows every layer, and nothing below imports it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from engine.channels import ChannelTypes
from engine.channels import vendors as builtin_channels
from engine.metamodel.vocabulary import Vocabulary
from engine.plugins import answers, plugin_manager
from engine.rules import functions as builtin_functions
from engine.rules.actions import ActionTypes
from engine.rules.functions import FunctionLibrary
from engine.runtime.records import fieldkinds as builtin_field_kinds
from engine.runtime.records.fieldkinds import FieldKinds
from engine.runtime.web import widgets as builtin_widgets
from engine.runtime.web.widgets import WidgetRegistry

# The engine's own plugin modules, one per hook; action verbs have none (see engine/rules/actions.py).
BUILTIN_PLUGINS: tuple[object, ...] = (builtin_field_kinds, builtin_widgets, builtin_functions, builtin_channels)


@dataclass(frozen=True, slots=True)
class Extensions:
    """One engine's registries, each built from every plugin's answer to its hook."""

    field_kinds: FieldKinds
    widgets: WidgetRegistry
    functions: FunctionLibrary
    actions: ActionTypes
    channels: ChannelTypes

    @property
    def vocabulary(self) -> Vocabulary:
        """What a blueprint may name beyond its own declarations, for the loader to check."""
        return Vocabulary.of(functions=self.functions.names, channel_types=self.channels.names,
                             field_types=self.field_kinds.field_types(), actions=self.actions.schemas())


def load_extensions(*, extra: Iterable[object] = (), load_installed: bool = True) -> Extensions:
    """The engine's own plugins, then every installed one (unless `load_installed` is false),
    then `extra` plugin objects (tests register theirs this way). PluginError or
    WidgetConfigError when two of them claim one name."""
    manager = plugin_manager(BUILTIN_PLUGINS, extra=extra, load_installed=load_installed)
    return Extensions(
        field_kinds=FieldKinds.of(answers(manager, "crm_field_kinds")),
        widgets=WidgetRegistry.answered(answers(manager, "crm_widgets")),
        functions=FunctionLibrary.of(answers(manager, "crm_functions")),
        actions=ActionTypes.of(answers(manager, "crm_actions")),
        channels=ChannelTypes.of(answers(manager, "crm_channels")),
    )
