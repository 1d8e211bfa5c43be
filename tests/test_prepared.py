"""Prepared statements on the driver's cursor store and read exactly what SQLAlchemy would,
inside the caller's transaction, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest
import sqlalchemy as sa

from engine.runtime.storage.database import Database, savepoint
from engine.runtime.storage.prepared import Prepared, deferring

metadata = sa.MetaData()
things = sa.Table(
    "prepared_things", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(50), nullable=False, unique=True),
    sa.Column("at", sa.DateTime),
    sa.Column("day", sa.Date),
    sa.Column("amount", sa.Numeric(12, 2)),
    sa.Column("active", sa.Boolean),
    sa.Column("data", sa.JSON),
    sa.Column("status", sa.String(20)),
)
INSERT = Prepared(things.insert().values(status="new").returning(things.c.id),
                  columns=("name", "at", "day", "amount", "active", "data"))
BY_NAME = Prepared(sa.select(things).where(things.c.name == sa.bindparam("name")))
RENAME = Prepared(things.update().where(things.c.id == sa.bindparam("key")).values(name=sa.bindparam("name")))
VALUES = {"at": dt.datetime(2026, 11, 22, 9, 30, 15, 123456), "day": dt.date(2027, 2, 6),
          "amount": decimal.Decimal("1234.50"), "active": True, "data": {"tags": ["vip", "展会"], "n": 3}}


@pytest.fixture
def db(db_url: str) -> Database:
    database = Database(db_url)
    metadata.create_all(database.engine)
    yield database
    database.dispose()


def test_values_round_trip_exactly_as_sqlalchemy_stores_them(db: Database) -> None:
    with db.write() as connection:
        new_id = INSERT.scalar(connection, {"name": "张伟", **VALUES})
        connection.execute(things.insert(), {"name": "reference", "status": "new", **VALUES})
    with db.read() as connection:
        mine = BY_NAME.first(connection, {"name": "张伟"})
        reference = connection.execute(sa.select(things).where(things.c.name == "reference")).first()
        assert BY_NAME.first(connection, {"name": "nobody"}) is None
    assert mine.id == new_id and mine.name == "张伟" and mine.status == "new"
    assert tuple(mine)[2:] == tuple(reference)[2:]  # the same Python values SQLAlchemy reads back
    assert (mine.at, mine.day, mine.amount, mine.data) == (VALUES["at"], VALUES["day"], VALUES["amount"],
                                                           VALUES["data"])


@pytest.mark.parametrize("at, active", [
    (dt.datetime(2026, 11, 22, 9, 30, 15), False),                      # no microseconds
    (dt.datetime(999, 1, 2, 3, 4, 5, 6), None),                         # a three-digit year
    (dt.datetime(2026, 11, 22, 9, 30, tzinfo=dt.timezone.utc), True),   # aware
    (dt.date(2026, 11, 22), True),                                      # a date where a datetime goes
])
def test_stored_text_is_sqlalchemys_to_the_character(db: Database, at: dt.date, active: bool | None) -> None:
    """Comparisons and sorts in SQL see the stored text: the fast paths must not change it."""
    values = {**VALUES, "at": at, "active": active}
    with db.write() as connection:
        INSERT.run(connection, {"name": "mine", **values})
        connection.execute(things.insert(), {"name": "reference", "status": "new", **values})
    with db.read() as connection:
        stored = connection.execute(sa.select(things.c.name, sa.cast(things.c.at, sa.String),
                                              sa.cast(things.c.active, sa.String))).all()
    assert len({(at_text, active_text) for _, at_text, active_text in stored}) == 1, stored


def test_statements_join_the_callers_transaction_and_errors_are_sqlalchemys(db: Database) -> None:
    with pytest.raises(RuntimeError):
        with db.write() as connection:
            INSERT.run(connection, {"name": "rolled back", **VALUES})
            raise RuntimeError("the caller fails after the insert")
    with db.write() as connection:
        INSERT.run_many(connection, [{"name": "a", **VALUES}, {"name": "b", **VALUES}])
        with pytest.raises(sa.exc.IntegrityError):
            with connection.begin_nested():
                INSERT.run(connection, {"name": "a", **VALUES})  # the unique name
        assert RENAME.run(connection, {"key": BY_NAME.first(connection, {"name": "b"}).id, "name": "c"}) == 1
    with db.read() as connection:
        names = [row.name for row in connection.execute(sa.select(things.c.name).order_by(things.c.name))]
    assert names == ["a", "c"]


def test_held_back_writes_go_out_together_and_a_rolled_back_savepoint_drops_its_own(db: Database) -> None:
    add = Prepared(things.insert().values(status="new"), columns=("name",))

    def names(connection: sa.Connection) -> list[str]:
        return [row.name for row in connection.execute(sa.select(things.c.name).order_by(things.c.id))]
    with db.write() as connection:
        with deferring(connection):
            add.run_later(connection, {"name": "first"})
            assert names(connection) == []  # held back
            with pytest.raises(RuntimeError):
                with savepoint(connection):  # what was held back before it is sent first
                    add.run_later(connection, {"name": "inside a failed step"})
                    raise RuntimeError("the step fails")
            assert names(connection) == ["first"]
            add.run_later(connection, {"name": "second"})
            add.run_later(connection, {"name": "third"})
        assert names(connection) == ["first", "second", "third"]  # sent when the block ended
        with pytest.raises(RuntimeError):
            with deferring(connection):
                add.run_later(connection, {"name": "never sent"})
                raise RuntimeError("the batch fails")
    with db.read() as connection:
        assert names(connection) == ["first", "second", "third"]
