"""The administrators' audit log: who created, changed, disabled a user, reset a password,
issued or revoked an API token — from the admin screens and the `crm user` commands alike."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.rules import Clock
from engine.runtime.records.actors import Actor
from engine.runtime.storage.collab import AUDIT
from engine.runtime.storage.database import Database
from engine.runtime.storage.tables import Schema
from engine.runtime.storage.times import as_utc, naive_utc

PAGE = 50


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: dt.datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


class AuditLog:
    def __init__(self, schema: Schema, db: Database, clock: Clock) -> None:
        self.table = schema.metadata.tables[AUDIT]
        self.db = db
        self.clock = clock

    def record(self, actor: Actor, action: str, target: str, detail: Mapping[str, Any] | None = None) -> None:
        """One line: `actor` did `action` to user `target`; never a password or a token in `detail`."""
        with self.db.write() as connection:
            connection.execute(self.table.insert().values(
                at=naive_utc(self.clock.now()), actor_id=actor.id, actor=actor.username[:64], action=action[:32],
                target=target[:64], detail=dict(detail or {})))

    def entries(self, page: int = 1, target: str | None = None) -> tuple[list[AuditEntry], int]:
        """A page of the log, newest first, and how many lines there are (for one target user when given)."""
        table = self.table
        where = [table.c.target == target] if target else []
        with self.db.read() as connection:
            total = int(connection.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one())
            rows = connection.execute(sa.select(table).where(*where).order_by(table.c.id.desc()).limit(PAGE)
                                      .offset((max(page, 1) - 1) * PAGE))
            return [AuditEntry(row.id, as_utc(row.at), row.actor, row.action, row.target, dict(row.detail or {}))
                    for row in rows], total
