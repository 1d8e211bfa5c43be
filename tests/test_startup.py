"""A restart on an unchanged SQLite file skips comparing the schema — and only then.

Whatever changed the file's schema (another start with another blueprint, someone's DDL)
or the blueprint's tables, the next start compares again and repairs or reports as before.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.engine import open_engine
from engine.metamodel import Vocabulary
from engine.metamodel.loader import load_blueprint
from engine.rules import FUNCTION_NAMES

ROOT = Path(__file__).resolve().parent.parent
V1 = """
    entity: lead
    fields:
      name: {type: string, required: true}
      region: {type: choice, options: {east: 华东, south: 华南}}
      notes: {type: text}
    views:
      list:
        default: {columns: [name], filters: [region], sort: -created_at}
"""


def _blueprint(folder: Path, lead: str) -> Path:
    (folder / "entities").mkdir(parents=True, exist_ok=True)
    (folder / "app.yaml").write_text("app: t\ninclude: [entities/*.yaml]\n", encoding="utf-8")
    (folder / "entities" / "lead.yaml").write_text(lead, encoding="utf-8")
    return folder


def _open(blueprint: Path, db: Path):  # type: ignore[no-untyped-def]
    model = load_blueprint(blueprint, vocabulary=Vocabulary.of(functions=FUNCTION_NAMES))
    return open_engine(model, f"sqlite:///{db}")


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("CRM_CACHE_DIR", str(folder))
    return folder


def test_a_restart_of_an_unchanged_file_changes_nothing_and_is_remembered(tmp_path: Path, cache: Path) -> None:
    blueprint, db = _blueprint(tmp_path / "bp", V1), tmp_path / "crm.sqlite"
    first = _open(blueprint, db)
    assert first.migration is not None and first.migration.applied  # the tables were created
    first.close()
    assert len(list(cache.glob("schema-clean-*"))) == 1
    again = _open(blueprint, db)
    assert again.migration is not None and not again.migration.applied and not again.migration.refused
    again.close()


def test_an_index_someone_dropped_is_created_again_on_the_next_start(tmp_path: Path, cache: Path) -> None:
    blueprint, db = _blueprint(tmp_path / "bp", V1), tmp_path / "crm.sqlite"
    _open(blueprint, db).close()
    with sa.create_engine(f"sqlite:///{db}").begin() as connection:
        name = connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'lead' "
                                          "AND name LIKE 'ix_%' ORDER BY name").scalars().first()
        connection.exec_driver_sql(f"DROP INDEX {name}")
    repaired = _open(blueprint, db)
    assert repaired.migration is not None
    assert any(name in step.description for step in repaired.migration.applied)
    repaired.close()


def test_a_new_field_becomes_a_column_on_the_next_start(tmp_path: Path) -> None:
    folder, db = tmp_path / "bp", tmp_path / "crm.sqlite"
    _open(_blueprint(folder, V1), db).close()
    grown = _open(_blueprint(folder, V1.replace("      notes: {type: text}\n",
                                                "      notes: {type: text}\n      budget: {type: integer}\n")), db)
    assert grown.migration is not None and any("budget" in step.description for step in grown.migration.applied)
    with grown.db.read() as connection:
        assert "budget" in {column["name"] for column in sa.inspect(connection).get_columns("lead")}
    grown.close()


def test_a_refused_destructive_step_is_reported_at_every_start(tmp_path: Path) -> None:
    folder, db = tmp_path / "bp", tmp_path / "crm.sqlite"
    _open(_blueprint(folder, V1), db).close()
    without_notes = _blueprint(folder, V1.replace("      notes: {type: text}\n", ""))
    for _ in range(2):
        runtime = _open(without_notes, db)
        assert runtime.migration is not None and [step.table for step in runtime.migration.refused] == ["lead"]
        runtime.close()


def test_a_restart_does_not_load_the_schema_comparison_at_all(tmp_path: Path, cache: Path) -> None:
    blueprint, db = _blueprint(tmp_path / "bp", V1), tmp_path / "crm.sqlite"
    _open(blueprint, db).close()
    program = ("import sys; from pathlib import Path; from engine.engine import open_engine; "
               "from engine.metamodel import Vocabulary; from engine.metamodel.loader import load_blueprint; "
               "from engine.rules import FUNCTION_NAMES; "
               f"m = load_blueprint(Path({str(blueprint)!r}), vocabulary=Vocabulary.of(functions=FUNCTION_NAMES)); "
               f"e = open_engine(m, 'sqlite:///{db}'); print(e.migration.describe()); "
               "print('alembic loaded' if 'alembic' in sys.modules else 'alembic not loaded')")
    out = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "CRM_CACHE_DIR": str(cache)}).stdout
    assert "nothing to change" in out and "alembic not loaded" in out
