"""The screens' message catalogue: every message in Chinese and English with the same
placeholders, every key the templates and screens ask for present in one language table or
the other, and Chinese screens free of the English texts."""

from __future__ import annotations

import re
import string
from pathlib import Path

from engine.runtime.web.screens.catalogue import LOCALE, catalogue, languages
from engine.runtime.web.screens.i18n import translate

WEB = Path(__file__).resolve().parent.parent / "engine" / "runtime" / "web"


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_message_is_in_both_languages_with_the_same_placeholders() -> None:
    assert set(languages()) >= {"zh", "en"}
    zh, en = catalogue("zh"), catalogue("en")
    assert zh and set(zh) == set(en), sorted(set(zh) ^ set(en))
    for key in zh:
        assert zh[key].strip() and en[key].strip(), key
        assert placeholders(zh[key]) == placeholders(en[key]), key
        assert not re.search(r"[\u4e00-\u9fff]", en[key]), f"{key}: Chinese in the English text"
        words = re.sub(r"\{[a-z_]+\}", "", zh[key])  # a pure arrangement ("{field}{aggregate}") needs no Chinese
        assert re.search(r"[\u4e00-\u9fff]", zh[key]) or not re.search(r"[A-Za-z]", words) \
            or key in ("search_everything_placeholder", "export_csv", "api_tokens"), key


def test_every_key_the_screens_use_has_a_text() -> None:
    used: set[str] = set()
    for template in (WEB / "templates").glob("*.html"):
        used |= set(re.findall(r"\bt\('([a-z_0-9]+)'", template.read_text(encoding="utf-8")))
    for module in (WEB / "screens").glob("*.py"):
        used |= set(re.findall(r'translate\([a-z_.()]+, "([a-z_0-9]+)"', module.read_text(encoding="utf-8")))
    missing = sorted(key for key in used if key not in catalogue("zh") and not key.endswith("_"))  # prefixes of keys built at run time
    assert not missing, missing


def test_a_message_is_filled_in_per_language() -> None:
    assert translate("zh", "inbox_unread", count=3) == "通知：3 条未读"
    assert translate("en", "inbox_unread", count=3) == "Inbox: 3 unread"
    assert translate("zh", "save") == "保存"  # moved from the older in-code table
    assert (LOCALE / "zh" / "LC_MESSAGES" / "messages.po").read_text(encoding="utf-8").count("msgid") > 50


def test_every_event_kind_outbox_status_and_clock_state_has_a_text_a_screen_can_show() -> None:
    from engine.rules.clocks import ClockState
    from engine.runtime.background.outbox import OutboxStatus
    from engine.runtime.records.events import EventKind
    wanted = ([f"event_{kind.value}" for kind in EventKind] + [f"outbox_{status.value}" for status in OutboxStatus]
              + [f"cadence_state_{state.value}" for state in ClockState])
    for lang in languages():
        assert [key for key in wanted if key not in catalogue(lang)] == [], lang
