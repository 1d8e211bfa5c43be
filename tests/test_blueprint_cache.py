"""The metamodel cache: a restart skips reading the blueprint, and never serves a stale one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.metamodel import BlueprintInvalid, Vocabulary
from engine.metamodel.cache import cache_folder, load_blueprint_cached
from engine.metamodel.loader import load_blueprint
from engine.rules import FUNCTION_NAMES

ROOT = Path(__file__).resolve().parent.parent
VOCABULARY = Vocabulary.of(functions=FUNCTION_NAMES)


@pytest.fixture
def blueprint(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "blueprints", tmp_path / "blueprints")  # (the CRM includes ../service files)
    return tmp_path / "blueprints" / "crm"


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.pickle"))


def test_the_second_load_comes_from_the_cache_and_equals_a_fresh_load(blueprint: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = load_blueprint_cached(blueprint, vocabulary=VOCABULARY, folder=cache)
    assert len(_entries(cache)) == 1
    stamp = _entries(cache)[0].stat().st_mtime_ns
    second = load_blueprint_cached(blueprint, vocabulary=VOCABULARY, folder=cache)
    assert second == first == load_blueprint(blueprint, vocabulary=VOCABULARY)
    assert _entries(cache)[0].stat().st_mtime_ns == stamp  # read, not rewritten
    assert second.entity("lead").label.text("zh") == "线索"


def test_an_edited_file_is_read_again(blueprint: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_blueprint_cached(blueprint, vocabulary=VOCABULARY, folder=cache)
    lead = blueprint / "entities" / "lead.yaml"
    lead.write_text(lead.read_text(encoding="utf-8").replace("{zh: 线索, en: Lead}", "{zh: 商机线索, en: Lead}", 1),
                    encoding="utf-8")
    model = load_blueprint_cached(blueprint, vocabulary=VOCABULARY, folder=cache)
    assert model.entity("lead").label.text("zh") == "商机线索"
    assert len(_entries(cache)) == 2


def test_a_new_file_matched_by_an_include_is_picked_up(blueprint: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    before = load_blueprint_cached(blueprint, vocabulary=VOCABULARY, folder=cache)
    assert "visit" not in before.entity_names()
    (blueprint / "entities" / "visit.yaml").write_text(
        "entity: visit\nlabel: {zh: 拜访, en: Visit}\nfields:\n  subject: {type: string}\n", encoding="utf-8")
    assert "visit" in load_blueprint_cached(blueprint, vocabulary=VOCABULARY, folder=cache).entity_names()


def test_a_broken_blueprint_is_reported_every_time_and_never_cached(blueprint: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    lead = blueprint / "entities" / "lead.yaml"
    lead.write_text(lead.read_text(encoding="utf-8").replace("type: phone", "type: telephone", 1), encoding="utf-8")
    for _ in range(2):
        with pytest.raises(BlueprintInvalid) as refused:
            load_blueprint_cached(blueprint, vocabulary=VOCABULARY, folder=cache)
        assert "lead.yaml" in str(refused.value) and "telephone" in str(refused.value)
    assert _entries(cache) == []


def test_another_vocabulary_is_another_entry(blueprint: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_blueprint_cached(blueprint, vocabulary=VOCABULARY, folder=cache)
    with pytest.raises(BlueprintInvalid):  # the shipped rules use functions this vocabulary lacks
        load_blueprint_cached(blueprint, vocabulary=Vocabulary.of(functions=()), folder=cache)
    assert len(_entries(cache)) == 1


def test_a_damaged_entry_is_ignored_and_rewritten(blueprint: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    model = load_blueprint_cached(blueprint, vocabulary=VOCABULARY, folder=cache)
    entry, = _entries(cache)
    entry.write_bytes(b"not a pickle")
    assert load_blueprint_cached(blueprint, vocabulary=VOCABULARY, folder=cache) == model
    assert entry.read_bytes() != b"not a pickle"


def test_the_cache_folder_follows_the_environment(tmp_path: Path) -> None:
    assert cache_folder({"CRM_CACHE_DIR": str(tmp_path)}) == tmp_path
    assert cache_folder({"CRM_CACHE_DIR": "off"}) is None
    assert cache_folder({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "blueprint-crm"


def test_with_the_cache_off_nothing_is_written(blueprint: Path, tmp_path: Path) -> None:
    model = load_blueprint_cached(blueprint, vocabulary=VOCABULARY, environ={"CRM_CACHE_DIR": "off",
                                                                            "HOME": str(tmp_path)})
    assert model.entity("lead") is not None and not list(tmp_path.rglob("*.pickle"))


def test_an_included_file_outside_the_blueprint_folder_counts_too(blueprint: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_blueprint_cached(blueprint, vocabulary=VOCABULARY, folder=cache)
    ticket = blueprint.parent / "service" / "entities" / "ticket.yaml"  # included as ../service/entities/…
    text = ticket.read_text(encoding="utf-8")
    first_label = text.split("label:", 1)[1].split("\n", 1)[0]
    ticket.write_text(text.replace(first_label, " {zh: 工单X, en: Ticket X}", 1), encoding="utf-8")
    assert load_blueprint_cached(blueprint, vocabulary=VOCABULARY, folder=cache).entity("ticket").label.text("zh") == "工单X"
