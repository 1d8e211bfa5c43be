"""Database.run: SQLite writes from the web app run at once when nobody else is writing,
and wait off the event loop when someone is — another thread or another process. The
connections the database keeps (for writes, for per-request look-ups) stay correct."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.runtime.storage.database import Database
from engine.runtime.storage.prepared import Prepared

NOTES = sa.Table("notes", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("text", sa.Text))


def _database(tmp_path: Path) -> tuple[Database, Path]:
    path = tmp_path / "run.sqlite"
    db = Database(f"sqlite:///{path}")
    NOTES.metadata.create_all(db.engine)
    return db, path


def _add_note(db: Database, text: str) -> str:
    with db.write() as connection:
        connection.execute(NOTES.insert(), {"text": text})
    return threading.current_thread().name


def _texts(db: Database) -> list[str]:
    with db.read() as connection:
        return [row.text for row in connection.execute(sa.select(NOTES.c.text).order_by(NOTES.c.id))]


async def _loop_stays_free(task: asyncio.Task[str], seconds: float) -> int:
    """How many 10 ms sleeps the loop completed while `task` waited (0 would mean it was blocked)."""
    ticks = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        ticks += 1
        assert not task.done(), "the write finished although the database was busy"
    return ticks


def test_a_write_when_nobody_else_writes_is_done_at_once(tmp_path: Path) -> None:
    db, _ = _database(tmp_path)
    try:
        async def main() -> str:
            return await db.run(_add_note, db, "first", write=True)
        thread = asyncio.run(main())
        assert thread == threading.main_thread().name  # no hand-off: done on the event loop's own thread
        assert _texts(db) == ["first"]
    finally:
        db.dispose()


def test_a_write_waits_off_the_loop_while_another_process_holds_the_database(tmp_path: Path) -> None:
    db, path = _database(tmp_path)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO notes (text) VALUES ('from the other process')")

        async def main() -> tuple[int, str]:
            task = asyncio.ensure_future(db.run(_add_note, db, "queued", write=True))
            ticks = await _loop_stays_free(task, 0.5)
            other.execute("COMMIT")
            return ticks, await asyncio.wait_for(task, 30)
        ticks, thread = asyncio.run(main())
        assert ticks >= 20  # the loop kept serving while the write waited
        assert thread.startswith("sqlite-writer")
        assert _texts(db) == ["from the other process", "queued"]  # written once, after the other commit
    finally:
        other.close()
        db.dispose()


def test_a_write_waits_off_the_loop_while_another_thread_writes(tmp_path: Path) -> None:
    db, _ = _database(tmp_path)
    holding, release = threading.Event(), threading.Event()

    def long_write() -> None:
        with db.write() as connection:
            connection.execute(NOTES.insert(), {"text": "long"})
            holding.set()
            release.wait(10)
    worker = threading.Thread(target=long_write)
    worker.start()
    try:
        assert holding.wait(10)

        async def main() -> tuple[int, str]:
            task = asyncio.ensure_future(db.run(_add_note, db, "after", write=True))
            ticks = await _loop_stays_free(task, 0.3)
            release.set()
            return ticks, await asyncio.wait_for(task, 30)
        ticks, thread = asyncio.run(main())
        assert ticks >= 10
        assert thread.startswith("sqlite-writer")
        assert _texts(db) == ["long", "after"]
    finally:
        release.set()
        worker.join()
        db.dispose()


def test_a_failed_write_leaves_the_kept_write_connection_usable(tmp_path: Path) -> None:
    db, _ = _database(tmp_path)
    try:
        with pytest.raises(sa.exc.IntegrityError):
            with db.write() as connection:
                connection.execute(NOTES.insert(), {"id": 1, "text": "first"})
                connection.execute(NOTES.insert(), {"id": 1, "text": "same id"})
        _add_note(db, "after the failure")
        assert _texts(db) == ["after the failure"]  # the failed transaction left nothing behind
    finally:
        db.dispose()


def test_a_look_up_sees_what_another_process_committed_a_moment_ago(tmp_path: Path) -> None:
    db, path = _database(tmp_path)
    by_id = Prepared(sa.select(NOTES.c.text).where(NOTES.c.id == sa.bindparam("id")))
    try:
        _add_note(db, "token for wang")
        assert db.lookup(by_id, {"id": 1}).text == "token for wang"
        other = sqlite3.connect(path)  # e.g. `crm user token --revoke` in another process
        with other:
            other.execute("UPDATE notes SET text = 'revoked' WHERE id = 1")
        other.close()
        assert db.lookup(by_id, {"id": 1}).text == "revoked"  # the kept connection holds no old snapshot
    finally:
        db.dispose()


# -- group commit: the writes of one turn of the event loop share a transaction -----------------

def _committed_texts(path: Path) -> list[str]:
    """What another process sees: only committed rows."""
    other = sqlite3.connect(path)
    try:
        return [text for (text,) in other.execute("SELECT text FROM notes ORDER BY id")]
    finally:
        other.close()


def _count_commits(db: Database) -> list[int]:
    commits: list[int] = []
    sa.event.listen(db.engine, "commit", lambda _connection: commits.append(1))
    return commits


def test_writes_arriving_together_share_one_commit_and_each_answers_only_once_stored(tmp_path: Path) -> None:
    db, path = _database(tmp_path)
    commits = _count_commits(db)
    try:
        async def write_then_look(text: str) -> list[str]:
            await db.run(_add_note, db, text, write=True)
            return _committed_texts(path)  # what the request could answer: it must already be stored

        async def main() -> list[list[str]]:
            return await asyncio.gather(*(write_then_look(f"note {n}") for n in range(5)))
        seen = asyncio.run(main())
        assert len(commits) == 1  # five requests, one COMMIT
        for n, committed in enumerate(seen):
            assert f"note {n}" in committed
        assert _texts(db) == [f"note {n}" for n in range(5)]
    finally:
        db.dispose()


def test_a_write_in_a_group_sees_the_writes_before_it_as_if_they_ran_one_after_another(tmp_path: Path) -> None:
    db, _ = _database(tmp_path)
    try:
        def add_numbered(prefix: str) -> str:
            with db.read() as connection:  # e.g. a check before the write
                count = connection.execute(sa.select(sa.func.count()).select_from(NOTES)).scalar()
            _add_note(db, f"{prefix} after {count}")
            return prefix

        async def main() -> list[str]:
            return await asyncio.gather(*(db.run(add_numbered, p, write=True) for p in ("a", "b", "c")))
        asyncio.run(main())
        assert _texts(db) == ["a after 0", "b after 1", "c after 2"]
    finally:
        db.dispose()


def test_a_failing_write_in_a_group_is_rolled_back_alone(tmp_path: Path) -> None:
    db, path = _database(tmp_path)
    try:
        def half_then_fail() -> None:
            with db.write() as connection:
                connection.execute(NOTES.insert(), {"text": "half of a failed request"})
                connection.execute(NOTES.insert(), {"id": 1, "text": "the id the first note took"})

        async def main() -> list[Any]:
            return await asyncio.gather(db.run(_add_note, db, "first", write=True),
                                        db.run(half_then_fail, write=True),
                                        db.run(_add_note, db, "third", write=True), return_exceptions=True)
        outcomes = asyncio.run(main())
        assert isinstance(outcomes[1], sa.exc.IntegrityError)
        assert not isinstance(outcomes[0], BaseException) and not isinstance(outcomes[2], BaseException)
        assert _committed_texts(path) == ["first", "third"]
    finally:
        db.dispose()


def test_a_failed_group_commit_fails_every_write_of_the_group_and_keeps_none(tmp_path: Path) -> None:
    db, path = _database(tmp_path)
    parents = sa.Table("parents", NOTES.metadata, sa.Column("id", sa.Integer, primary_key=True))
    children = sa.Table("children", NOTES.metadata, sa.Column("id", sa.Integer, primary_key=True),
                        sa.Column("parent_id", sa.ForeignKey("parents.id")))
    NOTES.metadata.create_all(db.engine, tables=[parents, children])
    try:
        def orphan() -> None:  # passes its own statements; the deferred check fails the group's COMMIT
            with db.write() as connection:
                connection.exec_driver_sql("PRAGMA defer_foreign_keys=ON")
                connection.execute(children.insert(), {"parent_id": 404})

        async def main() -> list[Any]:
            return await asyncio.gather(db.run(_add_note, db, "before", write=True), db.run(orphan, write=True),
                                        db.run(_add_note, db, "after", write=True), return_exceptions=True)
        outcomes = asyncio.run(main())
        assert all(isinstance(outcome, sa.exc.IntegrityError) for outcome in outcomes), outcomes
        assert _committed_texts(path) == []  # nobody was told "stored" for a write that is not

        async def later() -> str:
            return await db.run(_add_note, db, "next request", write=True)
        asyncio.run(later())
        assert _committed_texts(path) == ["next request"]  # the database works on
    finally:
        NOTES.metadata.remove(children)
        NOTES.metadata.remove(parents)
        db.dispose()
