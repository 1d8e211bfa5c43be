"""Comments on any record, and the people they @mention.

A comment is added by someone who may read the record. Each `@username` in it must name an
active user who may read the record too (otherwise the comment is refused, saying which name
and the nearest username); in the same transaction as the comment, each mentioned user gets
an inbox notice and — for every chat type they have an id for (`crm user im`, the admin's
users screen) — one message to the first channel of that type, @-ing them there. The author
is never notified of their own mention.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from engine.metamodel import Metamodel
from engine.rules import Clock
from engine.runtime.automation.inbox import post
from engine.runtime.automation.notify import enqueue_notification
from engine.runtime.records.actors import Actor
from engine.runtime.records.errors import NotFound
from engine.runtime.records.permissions import Forbidden
from engine.runtime.records.service import RecordService
from engine.runtime.storage.collab import COMMENTS
from engine.runtime.storage.database import Database
from engine.runtime.storage.tables import Schema
from engine.runtime.storage.times import naive_utc

MAX_LENGTH = 4000
MENTION = re.compile(r"(?<![\w@.])@([A-Za-z0-9_][A-Za-z0-9_.-]{0,63})")
MESSAGE = "{{ author }} 在{{ what }}中提到了你：{{ body }}\n{{ url }}"


class CommentRefused(ValueError):
    """A comment that cannot be saved; `key` and `values` name the screen text (i18n) to show."""

    def __init__(self, key: str, message: str, **values: Any) -> None:
        super().__init__(message)
        self.key = key
        self.values = values


@dataclass(frozen=True, slots=True)
class Comment:
    id: int
    author_id: int | None
    body: str
    mentions: tuple[int, ...]
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Posted:
    comment: Comment
    mentioned: tuple[str, ...] = field(default=())   # usernames notified


def mentioned_names(body: str) -> list[str]:
    """The `@username`s of a text, in order, once each (an e-mail address is not a mention)."""
    return list(dict.fromkeys(name.rstrip(".-") for name in MENTION.findall(body)))


class Comments:
    def __init__(self, model: Metamodel, schema: Schema, db: Database, clock: Clock, records: RecordService,
                 base_url: str = "") -> None:
        self.model = model
        self.schema = schema
        self.db = db
        self.clock = clock
        self.records = records
        self.base_url = base_url
        self.table = schema.metadata.tables[COMMENTS]

    def of_record(self, entity: str, record_id: int, *, actor: Actor) -> list[Comment]:
        """The record's comments, oldest first; Forbidden/NotFound as for reading the record."""
        self.records.get(entity, record_id, actor=actor)
        table = self.table
        with self.db.read() as connection:
            rows = connection.execute(sa.select(table).where(table.c.entity == entity, table.c.record_id == record_id)
                                      .order_by(table.c.id))
            return [Comment(row.id, row.author_id, row.body, tuple(row.mentions or ()), row.created_at)
                    for row in rows]

    def add(self, entity_name: str, record_id: int, body: str, *, actor: Actor) -> Posted:
        """Save a comment by `actor` and notify the users it mentions; CommentRefused says what to fix."""
        entity = self.records.entity(entity_name)
        record = self.records.get(entity.name, record_id, actor=actor)
        text = body.strip()
        if not text:
            raise CommentRefused("comment_empty", "write something first")
        if len(text) > MAX_LENGTH:
            raise CommentRefused("comment_too_long", f"a comment holds at most {MAX_LENGTH} characters",
                                 limit=MAX_LENGTH)
        users = self.schema.users
        with self.db.read() as connection:
            everyone = {row.username: row for row in connection.execute(sa.select(users))}
        mentioned = []
        for name in mentioned_names(text):
            row = everyone.get(name)
            if row is None or not row.is_active:
                close = difflib.get_close_matches(name, [n for n, r in everyone.items() if r.is_active], n=1)
                raise CommentRefused("mention_unknown", f"@{name}: there is no such active user"
                                     + (f" (did you mean @{close[0]}?)" if close else ""),
                                     name=name, suggestion=close[0] if close else "")
            try:
                self.records.get(entity.name, record_id, actor=Actor(row.id, row.username, row.role, row.team))
            except (Forbidden, NotFound):
                raise CommentRefused("mention_cannot_read", f"@{name} may not read this record", name=name) \
                    from None
            if row.id != actor.id:
                mentioned.append(row)
        now = self.clock.now()
        with self.db.write() as connection:
            key = connection.execute(self.table.insert().values(
                entity=entity.name, record_id=record_id, author_id=actor.id, body=text,
                mentions=[row.id for row in mentioned], created_at=naive_utc(now))).inserted_primary_key
            assert key is not None
            comment_id = int(key[0])
            if mentioned:
                self._notify(connection, entity.name, record, comment_id, text, actor, mentioned, now)
        return Posted(Comment(comment_id, actor.id, text, tuple(row.id for row in mentioned), naive_utc(now)),
                      tuple(row.username for row in mentioned))

    def _notify(self, connection: sa.Connection, entity_name: str, record: Mapping[str, Any], comment_id: int,
                text: str, actor: Actor, mentioned: list[Any], now: dt.datetime) -> None:
        entity = self.model.entity(entity_name)
        title = str(record.get(entity.title_field) or "") if entity.title_field else ""
        record_id = int(record["id"])
        post(connection, self.schema, user_ids=[row.id for row in mentioned], kind="mention",
             key=f"comment:{comment_id}", title=title, text=text, now=now, entity=entity_name, record_id=record_id,
             actor_id=actor.id)
        author = connection.execute(sa.select(self.schema.users.c.display_name, self.schema.users.c.username)
                                    .where(self.schema.users.c.id == actor.id)).first() if actor.id else None
        label = entity.label.text(self.model.settings.default_language)
        context = {"author": (author.display_name or author.username) if author is not None else actor.username,
                   "what": f"{label}“{title or '#' + str(record_id)}”", "body": text,
                   "url": f"{self.base_url}/{entity_name}/{record_id}"}
        first_of_type: dict[str, str] = {}
        for channel in self.model.channels:
            first_of_type.setdefault(channel.type, channel.name)
        for row in mentioned:
            for kind, chat_id in sorted((row.im_ids or {}).items()):
                channel_name = first_of_type.get(kind)
                if not chat_id or channel_name is None:
                    continue
                enqueue_notification(connection, self.schema, self.model, channel=channel_name,
                                     to=[f"user:{row.username}"], owner_id=record.get("owner"), context=context,
                                     key=f"comment:{comment_id}:{row.id}:{channel_name}", now=now, text=MESSAGE,
                                     entity=entity_name, record_id=record_id, inbox=False)
