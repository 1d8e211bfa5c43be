"""Each user's in-app inbox: the notices the chat bots get, kept where the user signs in.

Three doors write here, each in the transaction that caused the notice (a rolled-back write
notifies nobody):

- `enqueue_notification` (notify.py) — every blueprint `notify` (a rule's, an SLA warning or
  breach, a cadence step, a job) posts one notice to each recipient who is a user, besides
  the chat message; the same event sent to two chat groups is one notice;
- `InboxObserver` — a record given to someone (created with, or changed to, an owner other than
  whoever made the change) tells the new owner; an approval task is such a record;
- comments (comments.py) — an @mention.

One notice per (user, key): a timer firing twice, or a rule and its retry, notify once.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from engine.metamodel import Metamodel
from engine.metamodel.approvals import TASK_ENTITY
from engine.rules.rules import Change
from engine.runtime.records.lifecycle import WriteContext
from engine.runtime.storage.collab import INBOX
from engine.runtime.storage.database import Database
from engine.runtime.storage.prepared import Prepared
from engine.runtime.storage.tables import Schema
from engine.runtime.storage.times import naive_utc

PAGE = 50


@dataclass(frozen=True, slots=True)
class Notice:
    id: int
    kind: str
    title: str
    text: str
    entity: str | None
    record_id: int | None
    actor_id: int | None
    created_at: dt.datetime
    read_at: dt.datetime | None


def inbox_table(schema: Schema) -> sa.Table:
    return schema.metadata.tables[INBOX]


@functools.lru_cache(maxsize=16)
def _insert_once(table: sa.Table, dialect: str) -> Prepared:
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    return Prepared(insert.on_conflict_do_nothing(index_elements=[table.c.user_id, table.c.key]),
                    columns=("user_id", "kind", "key", "title", "text", "entity", "record_id", "actor_id",
                             "created_at", "read_at"))


def post(connection: sa.Connection, schema: Schema, *, user_ids: Iterable[int], kind: str, key: str, title: str,
         text: str, now: dt.datetime, entity: str | None = None, record_id: int | None = None,
         actor_id: int | None = None) -> None:
    """One notice for each of `user_ids`, in the caller's transaction; a (user, key) seen before is skipped."""
    statement = _insert_once(inbox_table(schema), connection.dialect.name)
    for user_id in dict.fromkeys(user_ids):
        statement.run_later(connection, {
            "user_id": user_id, "kind": kind, "key": key[:255], "title": title[:255], "text": text,
            "entity": entity, "record_id": record_id, "actor_id": actor_id, "created_at": naive_utc(now),
            "read_at": None})


_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")


def plain_text(text: str) -> str:
    """A chat message's Markdown as plain lines: headings, bullets and links lose their marks; a line
    that is only a link ("- [打开线索](url)") goes, as the notice itself links to its record."""
    lines = []
    for line in text.splitlines():
        if not _LINK.sub("", line).strip(" -*·"):
            continue
        line = _LINK.sub(r"\1", line).strip()
        line = line.lstrip("#").strip()
        if line.startswith(("- ", "* ")):
            line = "· " + line[2:]
        line = line.replace("**", "")
        if line:
            lines.append(line)
    return "\n".join(lines)


def notify_key(entity: str | None, record_id: int | None, what: str, now: dt.datetime) -> str:
    """The key of a notify's notice: the same message about the same record at the same moment
    (one SLA breach sent to two chat groups) is one notice."""
    digest = hashlib.sha1(what.encode()).hexdigest()[:16]
    return f"notify:{entity}:{record_id}:{digest}:{naive_utc(now).isoformat()}"


class InboxObserver:
    """Tells a record's new owner that it is theirs (unless they took it themselves)."""

    def __init__(self, model: Metamodel, schema: Schema) -> None:
        self.model = model
        self.schema = schema

    def before_write(self, context: WriteContext) -> Mapping[str, Any]:
        return {}

    def after_write(self, context: WriteContext) -> None:
        if context.change not in (Change.CREATED, Change.UPDATED):
            return
        owner = context.after.get("owner")
        before = context.before.get("owner") if context.before is not None else None
        if owner is None or owner == before or owner == context.actor.id:
            return
        entity = context.entity
        title_field = entity.title_field
        title = str(context.after.get(title_field) or "") if title_field else ""
        record_id = int(context.after["id"])
        kind = "approval" if entity.name == TASK_ENTITY else "assigned"  # an approval step waiting for them
        post(context.connection, self.schema, user_ids=(int(owner),), kind=kind,
             key=f"assigned:{entity.name}:{record_id}:{naive_utc(context.now).isoformat()}",
             title=title, text="", now=context.now,
             entity=entity.name, record_id=record_id, actor_id=context.actor.id)


def _notice(row: Any) -> Notice:
    return Notice(row.id, row.kind, row.title, row.text, row.entity, row.record_id, row.actor_id, row.created_at,
                  row.read_at)


class Inbox:
    """Reading and marking one user's notices (the screens' side)."""

    def __init__(self, schema: Schema, db: Database) -> None:
        self.schema = schema
        self.db = db
        self.table = inbox_table(schema)

    def unread_count(self, user_id: int) -> int:
        table = self.table
        with self.db.read() as connection:
            return int(connection.execute(sa.select(sa.func.count()).select_from(table).where(
                table.c.user_id == user_id, table.c.read_at.is_(None))).scalar_one())

    def notices(self, user_id: int, *, unread_only: bool = False, page: int = 1) -> tuple[list[Notice], int]:
        """A page of the user's notices, newest first, and how many there are in all."""
        table = self.table
        where = [table.c.user_id == user_id]
        if unread_only:
            where.append(table.c.read_at.is_(None))
        with self.db.read() as connection:
            total = int(connection.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one())
            rows = connection.execute(sa.select(table).where(*where)
                                      .order_by(table.c.created_at.desc(), table.c.id.desc())
                                      .limit(PAGE).offset((max(page, 1) - 1) * PAGE))
            return [_notice(row) for row in rows], total

    def notice(self, user_id: int, notice_id: int) -> Notice | None:
        table = self.table
        with self.db.read() as connection:
            row = connection.execute(sa.select(table).where(table.c.id == notice_id,
                                                            table.c.user_id == user_id)).first()
        return None if row is None else _notice(row)

    def mark_read(self, user_id: int, now: dt.datetime, notice_ids: Iterable[int] | None = None) -> int:
        """Mark the given notices (all unread ones when None) of this user read; how many changed."""
        table = self.table
        where = [table.c.user_id == user_id, table.c.read_at.is_(None)]
        if notice_ids is not None:
            wanted = list(notice_ids)
            if not wanted:
                return 0
            where.append(table.c.id.in_(wanted))
        with self.db.write() as connection:
            return int(connection.execute(table.update().where(*where).values(read_at=naive_utc(now))).rowcount)
