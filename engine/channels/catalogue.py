"""The channel types an engine can deliver to: the shipped vendors and the plugins', by name.

A blueprint's channel names its `type:`; the catalogue gives the class that builds that
vendor's request (engine/channels/vendors.py shows the contract). Built once per engine
from every plugin's answer to `crm_channels`, so two plugins claiming one type name fail at
startup, naming both, rather than one of them winning by import order.
"""

from __future__ import annotations

import datetime as dt
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.channels.delivery import DeliveryJob
from engine.channels.messages import Message
from engine.channels.vendors import BUILTIN_CHANNELS
from engine.metamodel.channels import ChannelSpec
from engine.plugins import PluginError, claim


class Channel(Protocol):
    """One configured channel: a `Message` → the job that delivers it (pure, built per attempt)."""

    def build_request(self, message: Message, secret: str | None, now: dt.datetime) -> DeliveryJob: ...


class ChannelClass(Protocol):
    """What `crm_channels` maps a type name to: a class made from the blueprint's channel."""

    def for_channel(self, spec: ChannelSpec, url: str) -> Channel: ...


@dataclass(frozen=True, slots=True)
class ChannelTypes:
    """Channel classes by type name, and which plugin provides each."""

    classes: Mapping[str, ChannelClass] = field(default_factory=lambda: types.MappingProxyType({}))
    providers: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}))

    @classmethod
    def of(cls, answers: Iterable[tuple[str, Mapping[str, Any]]]) -> ChannelTypes:
        """From each plugin's answer to crm_channels; PluginError on a type claimed twice or a
        class that cannot be made from a channel."""
        classes: dict[str, ChannelClass] = {}
        providers: dict[str, str] = {}
        for plugin, answered in answers:
            for name, channel_class in answered.items():
                if not callable(getattr(channel_class, "for_channel", None)):
                    raise PluginError(f"plugin {plugin} provides the channel type '{name}' as {channel_class!r}, "
                                      "which has no for_channel(spec, url); see docs/plugins.md")
                claim(classes, providers, name, channel_class, plugin, "channel type")
        return cls(types.MappingProxyType(classes), types.MappingProxyType(providers))

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.classes)

    def channel(self, spec: ChannelSpec, url: str) -> Channel | None:
        """The channel for the blueprint's `spec`, or None when no installed plugin provides its type."""
        channel_class = self.classes.get(spec.type)
        return None if channel_class is None else channel_class.for_channel(spec, url)


SHIPPED_CHANNELS = ChannelTypes.of([("engine.channels.vendors", BUILTIN_CHANNELS)])
