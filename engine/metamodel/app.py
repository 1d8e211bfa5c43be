"""The `app:` document: the blueprint's name, settings (phone region, currency, time zone,
languages, territories) and the menu.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.metamodel.labels import Label


@dataclass(frozen=True, slots=True)
class Settings:
    phone_region: str = "CN"
    currency: str = "CNY"
    timezone: str = "Asia/Shanghai"
    languages: tuple[str, ...] = ("zh", "en")
    default_language: str = "zh"
    # named territories: territory → the region values it covers, for in_territory(region, 'name')
    territories: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class MenuGroup:
    label: Label
    items: tuple[str, ...]


def build_menu(items: list[Any], entity_names: list[str]) -> tuple[MenuGroup, ...]:
    """Menu groups from the app's `menu:`; without one, every entity in declaration order."""
    if not items:
        return (MenuGroup(Label.of({"zh": "菜单", "en": "Menu"}), tuple(entity_names)),)
    groups: list[MenuGroup] = []
    loose: list[str] = []
    for item in items:
        if isinstance(item, str):
            loose.append(item)
        else:
            groups.append(MenuGroup(Label.of(item.get("label")), tuple(item["items"])))
    if loose:
        groups.insert(0, MenuGroup(Label.of({"zh": "菜单", "en": "Menu"}), tuple(loose)))
    return tuple(groups)


def build_settings(data: dict[str, Any]) -> Settings:
    defaults = Settings()
    return Settings(
        phone_region=data.get("phone_region", defaults.phone_region),
        currency=data.get("currency", defaults.currency),
        timezone=data.get("timezone", defaults.timezone),
        languages=tuple(data.get("languages", defaults.languages)),
        default_language=data.get("default_language", defaults.default_language),
        territories=tuple((name, tuple(str(v) for v in values))
                          for name, values in (data.get("territories") or {}).items()),
    )
