"""Blueprint changes become planned schema changes; data survives every applied plan."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.runtime.records.actors import SYSTEM
from engine.runtime.storage.migrations import apply_migration, plan_migration
from engine.runtime.storage.tables import build_schema
from tests.support.blueprints import load, write_blueprint

APP = {"app.yaml": "app: t\ninclude: [entities/*.yaml]\n"}
V1 = """
    entity: lead
    fields:
      name: {type: string, required: true, length: 100}
      region: {type: choice, options: {east: 华东, south: 华南}}
      source: {type: choice, options: {web: 官网, expo: 展会}}
      notes: {type: text}
    views:
      list:
        default: {columns: [name], filters: [region, source], sort: -created_at}
"""
V2_ADDS_FIELD = V1.replace("      notes: {type: text}\n",
                           "      notes: {type: text}\n      budget: {type: money}\n")
V3_DROPS_NOTES = V2_ADDS_FIELD.replace("      notes: {type: text}\n", "")


def _rows(runtime: Any) -> list[dict[str, Any]]:
    with runtime.db.read() as connection:
        table = sa.Table("lead", sa.MetaData(), autoload_with=connection)
        return [dict(row) for row in connection.execute(sa.select(table).order_by(table.c.id)).mappings()]


def _seed(runtime: Any) -> None:
    for index in range(3):
        runtime.records.create("lead", {"name": f"线索{index}", "region": "east", "notes": f"备注{index}"},
                               actor=SYSTEM)


def test_list_view_filters_and_sort_get_a_matching_index(make_engine: Any) -> None:
    runtime = make_engine({**APP, "entities/lead.yaml": V1})
    with runtime.db.read() as connection:
        indexes = {tuple(index["column_names"]) for index in sa.inspect(connection).get_indexes("lead")}
    assert ("region", "source", "created_at") in indexes
    assert ("source", "created_at") in indexes


def test_adding_a_field_and_restarting_keeps_every_row(make_engine: Any) -> None:
    first = make_engine({**APP, "entities/lead.yaml": V1}, folder="v1")
    _seed(first)
    before = _rows(first)
    first.close()

    plan = plan_migration(first.db, build_schema(_model(V2_ADDS_FIELD)))
    assert [step.description for step in plan.steps] == ["add column lead.budget (NUMERIC(20, 2))",
                                                         "add column lead.budget_currency (VARCHAR(3))"]
    assert not plan.destructive

    second = make_engine({**APP, "entities/lead.yaml": V2_ADDS_FIELD}, folder="v2")
    after = _rows(second)
    assert [{k: v for k, v in row.items() if k in before[0]} for row in after] == before
    assert all(row["budget"] is None for row in after)
    record = second.records.update("lead", 1, {"budget": "88000"}, actor=SYSTEM)
    assert record["budget"][0] == 88000
    assert plan_migration(second.db, second.schema).is_empty


def _model(entity_yaml: str) -> Any:
    """A loaded model for `entity_yaml`, for planning without opening a runtime."""
    return load(write_blueprint(Path(tempfile.mkdtemp()), {**APP, "entities/lead.yaml": entity_yaml}))


def test_dropping_a_field_is_refused_without_the_flag_and_applied_with_it(make_engine: Any) -> None:
    first = make_engine({**APP, "entities/lead.yaml": V2_ADDS_FIELD}, folder="v2")
    _seed(first)
    first.close()

    refused = make_engine({**APP, "entities/lead.yaml": V3_DROPS_NOTES}, folder="v3")
    outcome = refused.migration
    assert [step.description for step in outcome.refused] == [
        "drop column lead.notes (3 non-empty values would be lost)"]
    assert [row["notes"] for row in _rows(refused)] == ["备注0", "备注1", "备注2"]
    # the engine keeps working on the remaining fields meanwhile
    refused.records.create("lead", {"name": "新线索"}, actor=SYSTEM)
    refused.close()

    applied = apply_migration(refused.db, refused.schema, allow_destructive=True)
    assert [step.description for step in applied.applied] == [
        "drop column lead.notes (3 non-empty values would be lost)"]
    rows = _rows(refused)
    assert "notes" not in rows[0] and [row["name"] for row in rows] == ["线索0", "线索1", "线索2", "新线索"]


def test_narrowing_a_type_is_destructive(make_engine: Any) -> None:
    first = make_engine({**APP, "entities/lead.yaml": V1}, folder="v1")
    _seed(first)
    first.close()
    narrowed = make_engine({**APP, "entities/lead.yaml": V1.replace("length: 100", "length: 20")}, folder="n")
    assert len(narrowed.migration.refused) == 1
    assert "narrow" in narrowed.migration.refused[0].description
    widened = make_engine({**APP, "entities/lead.yaml": V1.replace("length: 100", "length: 200")}, folder="w")
    assert not widened.migration.refused
    assert any("widen type of lead.name" in step.description for step in widened.migration.applied)


def test_removing_an_entity_keeps_its_table_until_allowed(make_engine: Any) -> None:
    account = "entity: account\nfields:\n  name: {type: string}\n"
    first = make_engine({**APP, "entities/lead.yaml": V1, "entities/account.yaml": account}, folder="a")
    first.records.create("account", {"name": "华东机械"}, actor=SYSTEM)
    first.close()
    second = make_engine({**APP, "entities/lead.yaml": V1}, folder="b")
    assert [s.description for s in second.migration.refused] == ["drop table account (1 rows would be lost)"]
    # still remembered as ours on the next start, so it is neither forgotten nor dropped silently
    again = plan_migration(second.db, second.schema)
    assert [s.description for s in again.destructive] == ["drop table account (1 rows would be lost)"]


def test_tables_the_engine_did_not_create_are_never_touched(db_url: str, make_engine: Any) -> None:
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE legacy_orders (id INTEGER PRIMARY KEY, note VARCHAR(20))"))
        connection.execute(sa.text("INSERT INTO legacy_orders VALUES (1, 'keep me')"))
    engine.dispose()
    runtime = make_engine({**APP, "entities/lead.yaml": V1})
    assert not any("legacy_orders" in step.description for step in runtime.migration.applied)
    with runtime.db.read() as connection:
        assert connection.execute(sa.text("SELECT note FROM legacy_orders")).scalar_one() == "keep me"


@pytest.mark.parametrize("child_on_delete", ["cascade"])
def test_rebuilding_a_parent_table_on_sqlite_does_not_cascade_into_children(make_engine: Any,
                                                                            child_on_delete: str) -> None:
    parent = "entity: account\nfields:\n  name: {type: string, length: 50}\n"
    child = f"entity: contact\nfields:\n  name: {{type: string}}\n  account: {{type: link, entity: account, on_delete: {child_on_delete}}}\n"
    first = make_engine({**APP, "entities/account.yaml": parent, "entities/contact.yaml": child}, folder="p1")
    account = first.records.create("account", {"name": "甲"}, actor=SYSTEM).record
    first.records.create("contact", {"name": "张三", "account": account["id"]}, actor=SYSTEM)
    first.close()
    # narrowing forces a table rebuild of `account` on SQLite
    second = make_engine({**APP, "entities/account.yaml": parent.replace("50", "40"),
                           "entities/contact.yaml": child}, folder="p2", allow_destructive=True)
    with second.db.read() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM contact")).scalar_one() == 1


def test_entities_that_link_each_other_both_ways_can_be_created(make_engine: Any) -> None:
    runtime = make_engine({**APP,
                            "entities/lead.yaml": "entity: lead\nfields:\n  name: {type: string}\n"
                                                  "  opportunity: {type: link, entity: opportunity, on_delete: set_null}\n",
                            "entities/opportunity.yaml": "entity: opportunity\nfields:\n  name: {type: string}\n"
                                                         "  lead: {type: link, entity: lead, on_delete: set_null}\n"})
    lead = runtime.records.create("lead", {"name": "甲"}, actor=SYSTEM).record
    deal = runtime.records.create("opportunity", {"name": "甲-设备采购", "lead": lead["id"]}, actor=SYSTEM).record
    runtime.records.update("lead", lead["id"], {"opportunity": deal["id"]}, actor=SYSTEM)
    runtime.records.delete("opportunity", deal["id"], actor=SYSTEM)
    assert runtime.records.get("lead", lead["id"], actor=SYSTEM)["opportunity"] is None
    assert plan_migration(runtime.db, runtime.schema).is_empty
