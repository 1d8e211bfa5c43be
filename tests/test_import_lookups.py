"""An import column may give a link by a natural key (`lookup:` — the contact's company by the
account's name) instead of a record id: the same rule as webhook intake, so a name that matches no
account, or several, rejects the row naming the field and the value."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.engine import Engine
from engine.io.readers import read_table
from engine.metamodel import BlueprintInvalid
from engine.metamodel.imports import load_import_file
from engine.runtime.records.actors import SYSTEM
from tests.support.blueprints import SHIPPED_CRM, write_blueprint

MAPPING = """
    imports:
      expo_contacts:
        entity: contact
        columns:
          姓名: name
          公司:
            field: account
            lookup: name
          手机: phone
"""


def test_an_import_looks_the_account_up_by_name_and_rejects_unknown_and_ambiguous_names(
        make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    engine = make_engine(SHIPPED_CRM)
    known = engine.records.create("account", {"name": "华东机械"}, actor=SYSTEM).record
    for _ in range(2):
        engine.records.create("account", {"name": "同名公司"}, actor=SYSTEM)
    [spec] = load_import_file(write_blueprint(tmp_path / "maps", {"contacts.yaml": MAPPING}) / "contacts.yaml",
                              engine.model, engine.extensions.vocabulary)
    path = tmp_path / "contacts.csv"
    path.write_text("姓名,公司,手机\n王芳, 华东机械 ,13800138000\n李强,不存在的公司,13900139000\n"
                    "赵六,同名公司,13600136000\n", encoding="utf-8")
    plan = engine.importer.prepare(read_table(path), spec, path.read_bytes())
    outcome = engine.importer.run(plan, actor=SYSTEM)
    assert (outcome.record.created, outcome.record.rejected) == (1, 2)
    table = engine.schema.table("contact")
    with engine.db.read() as connection:
        stored = connection.execute(sa.select(table.c.name, table.c.account)).all()
    assert [tuple(row) for row in stored] == [("王芳", known["id"])]
    reasons = {row: reason for row, reason, _ in engine.importer.error_rows(outcome.record.id)}
    # the error file's reasons (in Chinese, like every import reason) name the field and the value
    assert reasons == {3: "account: 找不到客户名称为“不存在的公司”的客户",
                       4: "account: 有多条客户的客户名称都是“同名公司”，无法确定是哪一条"}


def test_a_lookup_on_a_field_that_is_not_a_link_is_reported_at_its_line(
        make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    engine = make_engine(SHIPPED_CRM)
    mapping = write_blueprint(tmp_path / "maps", {"bad.yaml": MAPPING.replace("          手机: phone",
                                                                              "          手机: {field: phone, "
                                                                              "lookup: name}")}) / "bad.yaml"
    with pytest.raises(BlueprintInvalid) as caught:
        load_import_file(mapping, engine.model, engine.extensions.vocabulary)
    assert f"{mapping}:9:" in str(caught.value) and "'lookup' applies to link fields" in str(caught.value)
