"""Search by `q=` through the search index (SQLite FTS5 trigram, PostgreSQL pg_trgm), on both
databases: substrings in Chinese and Latin text, every write kept in step, short text still found,
and the index planned, built and rebuilt like any schema step."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from engine.engine import Engine
from engine.runtime.records.actors import SYSTEM
from engine.runtime.records.queries import build_list_statements, parse_list_query
from engine.runtime.storage.migrations import plan_migration
from tests.support.records_blueprint import BLUEPRINT, LEAD


@pytest.fixture
def crm(make_engine: Any) -> Engine:
    return make_engine(BLUEPRINT)


def found(runtime: Engine, text: str, **filters: str) -> list[str]:
    page = runtime.records.list("lead", parse_list_query(runtime.model.entity("lead"), {"q": text, **filters}),
                                actor=SYSTEM)
    assert page.total == len(page.items)
    return sorted(item["name"] for item in page.items)


def lead(runtime: Engine, name: str, company: str = "", phone: str | None = None, **values: Any) -> dict[str, Any]:
    return runtime.records.create("lead", {"name": name, "company": company, "phone": phone, **values},
                                  actor=SYSTEM).record


def test_a_search_finds_substrings_of_names_companies_and_phones(crm: Engine) -> None:
    lead(crm, "王磊", "宁波精工机械有限公司", "13800000001")
    lead(crm, "Li Na", "ACME Tools Shanghai", "13912345678")
    lead(crm, "张伟", "杭州精密仪器", "13700000002", source="expo")
    assert found(crm, "精工机械") == ["王磊"]
    assert found(crm, "acme tools") == ["Li Na"]  # case does not matter
    assert found(crm, "91234") == ["Li Na"]  # inside the stored +86… number
    assert found(crm, "精") == ["张伟", "王磊"]  # one character: no trigram, still found
    assert found(crm, "王磊") == ["王磊"]
    assert found(crm, "精密仪", source="expo") == ["张伟"]  # with a filter
    assert found(crm, "精密仪", source="website") == []
    assert found(crm, '"引号" OR 1') == []  # the search language is not the user's to speak
    assert found(crm, "nothing like it") == []


def test_every_write_keeps_the_index_in_step(crm: Engine) -> None:
    record = lead(crm, "王磊", "宁波精工机械")
    crm.records.update("lead", record["id"], {"company": "温州海鸥电器"}, actor=SYSTEM, expected_version=record["version"])
    assert found(crm, "精工机械") == []
    assert found(crm, "海鸥电器") == ["王磊"]
    crm.records.delete("lead", record["id"], actor=SYSTEM)
    assert found(crm, "海鸥电器") == []


def test_the_plan_names_the_search_index_and_a_changed_search_list_rebuilds_it(make_engine: Any) -> None:
    narrow = LEAD.replace("search: [name, company, phone]", "search: [name]")
    first = make_engine({**BLUEPRINT, "entities/lead.yaml": narrow})
    lead(first, "王磊", "宁波精工机械")
    assert found(first, "精工机械") == []  # company is not searched
    first.close()
    wider = make_engine(BLUEPRINT, folder="bp2", migrate=False)
    plan = plan_migration(wider.db, wider.schema).describe()
    assert "safe] rebuild search index lead__search on lead(name, company, phone)" in plan
    wider.close()
    migrated = make_engine(BLUEPRINT, folder="bp2")
    assert found(migrated, "精工机械") == ["王磊"]  # the record written before is indexed
    assert "search index" not in plan_migration(migrated.db, migrated.schema).describe()


def test_a_table_rebuilt_by_a_migration_keeps_its_search(make_engine: Any) -> None:
    first = make_engine(BLUEPRINT)
    lead(first, "王磊", "宁波精工机械")
    first.close()
    # a longer name column: SQLite rebuilds the lead table (and drops its triggers) to widen it
    second = make_engine({**BLUEPRINT, "entities/lead.yaml": LEAD.replace("length: 50", "length: 80")}, folder="bp2")
    lead(second, "赵敏", "宁波精工电子")
    assert found(second, "宁波精工") == ["王磊", "赵敏"]


def test_the_database_answers_a_search_from_the_index(crm: Engine) -> None:
    for number in range(200):
        lead(crm, f"客户{number}", f"公司{number}号")
    lead(crm, "王磊", "宁波精工机械")
    entity = crm.model.entity("lead")
    statement, _ = build_list_statements(entity, crm.schema.table("lead"), parse_list_query(entity, {"q": "精工机械"}),
                                         crm.db.engine.dialect.name, kinds=crm.schema.kinds,
                                         search_index=crm.records.search_indexes["lead"])
    with crm.db.read() as connection:
        if crm.db.is_sqlite:
            sql = str(statement.compile(connection, compile_kwargs={"literal_binds": True}))
            plan = " ".join(str(row[-1]) for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
            assert "VIRTUAL TABLE INDEX" in plan and "lead__search" in plan, plan
        else:
            connection.exec_driver_sql("ANALYZE lead")
            # a 201-row table is read whole or walked in date order otherwise; a million rows are not
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            connection.exec_driver_sql("SET LOCAL enable_indexscan = off")
            sql = str(statement.compile(connection, compile_kwargs={"literal_binds": True}))
            plan = " ".join(str(row[0]) for row in connection.exec_driver_sql(f"EXPLAIN {sql}"))
            assert "lead__search_company" in plan, plan
    assert found(crm, "精工机械") == ["王磊"]


def test_two_characters_find_what_a_scan_finds_from_the_index(crm: Engine) -> None:
    """王磊 or 精工 — the commonest Chinese queries — are no trigram: found where they are a whole
    value, start it, end it or sit inside it, in any case, and on SQLite from the search index
    (its vocabulary by prefix), not by reading every row."""
    lead(crm, "王磊", "宁波精工机械")          # the whole name; inside the company
    lead(crm, "王磊磊", "精工")                # at the start; the whole company
    lead(crm, "李王磊", "温州海鸥精工")         # at the end, both
    lead(crm, "Li Na", "ACME", "13912345678")  # Latin and digits
    lead(crm, "王五", "宁波磊石")
    assert found(crm, "王磊") == ["李王磊", "王磊", "王磊磊"]
    assert found(crm, "精工") == ["李王磊", "王磊", "王磊磊"]
    assert found(crm, "na") == ["Li Na"] and found(crm, "NA") == ["Li Na"] and found(crm, "me") == ["Li Na"]
    assert found(crm, "78") == ["Li Na"]  # the phone's last two digits
    assert found(crm, " 王磊 ") == ["李王磊", "王磊", "王磊磊"]  # spaces around it are not part of it
    assert found(crm, "磊 ") == found(crm, "磊")  # one character (with a space typed after it): a scan, the same rows
    assert found(crm, "王六") == [] and found(crm, '"x') == []
    if crm.db.is_sqlite:
        entity = crm.model.entity("lead")
        statement, _ = build_list_statements(entity, crm.schema.table("lead"), parse_list_query(entity, {"q": "王磊"}),
                                             "sqlite", kinds=crm.schema.kinds,
                                             search_index=crm.records.search_indexes["lead"])
        with crm.db.read() as connection:
            sql = str(statement.compile(connection, compile_kwargs={"literal_binds": True}))
            plan = " ".join(str(row[-1]) for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
        assert "lead__search" in plan and "lead__search_vocab" in plan, plan


def test_a_text_in_most_records_is_listed_by_reading_newest_first_with_the_same_rows(crm: Engine) -> None:
    """有限公司 is in nearly every company name: collecting every match from the index took 546 ms
    at a million leads, reading newest first 8 ms. Past a few thousand records the list reads
    when the newest records say the text is that common — and lists the same records."""
    from engine.runtime.storage.search import too_common
    table = crm.schema.table("lead")
    stamp = dt.datetime(2026, 11, 1)
    with crm.db.write() as connection:
        connection.execute(table.insert(), [
            {"name": f"客户{number}", "company": f"宁波第{number}机械有限公司", "created_at": stamp, "updated_at": stamp,
             "version": 1, "source": "website", "status": "new"} for number in range(8_000)])
    lead(crm, "王磊", "温州海鸥精工")
    index = crm.records.search_indexes["lead"]
    with crm.db.read() as connection:
        if crm.db.is_sqlite:
            assert too_common(connection, index, table, "有限公司") and not too_common(connection, index, table, "海鸥精工")
        else:
            assert not too_common(connection, index, table, "有限公司")  # PostgreSQL plans it itself
    page = crm.records.list("lead", parse_list_query(crm.model.entity("lead"), {"q": "机械有限公司", "per_page": "5"}),
                            actor=SYSTEM)
    assert page.total == 8_000 and [item["name"] for item in page.items] == [f"客户{n}" for n in range(7_999, 7_994, -1)]
    assert found(crm, "海鸥精工") == ["王磊"]


def test_search_indexes_are_left_out_of_the_comparison_with_the_blueprint(crm: Engine) -> None:
    with crm.db.read() as connection:
        names = set(sa.inspect(connection).get_table_names()) | {
            index["name"] for index in sa.inspect(connection).get_indexes("lead") if index["name"]}
    assert any("__search" in name for name in names)
    assert plan_migration(crm.db, crm.schema).is_empty
