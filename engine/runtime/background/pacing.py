"""Pacing per channel, shared by every worker through the database.

A vendor's group robot takes only so many requests (DingTalk 20 a minute, then error 130101 and
ten minutes of silence). Each request to a paced channel is logged in crm_channel_sends when it
is claimed; a claim takes, per channel, only as many messages as every sliding window
(`RateLimit`: count per duration) still allows, and moves the rest to the moment a slot frees —
in their order, none spent. The channel's crm_channel_pace row is locked while a worker decides
(PostgreSQL; SQLite's write lock already serialises), so several workers together stay within
the limit. A vendor's "too fast" answer or Retry-After silences the whole channel until then.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from engine.metamodel.channels import RateLimit
from engine.runtime.storage.prepared import Prepared
from engine.runtime.storage.tables import Schema
from engine.runtime.storage.times import as_utc, naive_utc

Pacing = Mapping[str, tuple[RateLimit, ...]]  # channel name → its limits (a channel not named is not paced)


def pace(connection: sa.Connection, schema: Schema, rows: Sequence[Any], now: dt.datetime,
         pacing: Pacing) -> tuple[list[Any], dict[int, dt.datetime]]:
    """Of the due outbox `rows` (in delivery order), those that may be sent now, and for the
    others the moment their channel has room again. Logs a send for each row kept."""
    by_channel: dict[str, list[Any]] = {}
    for row in rows:
        by_channel.setdefault(row.channel, []).append(row)
    held: dict[int, dt.datetime] = {}
    sends: list[dict[str, Any]] = []
    for channel in sorted(by_channel):  # locked in one order: two workers never wait on each other in a circle
        limits = pacing.get(channel, ())
        blocked = _lock(connection, schema, channel)
        waiting = by_channel[channel]
        if blocked is not None and blocked > now:
            held.update({row.id: blocked for row in waiting})
            continue
        if not limits:
            continue
        logged = _recent(connection, schema, channel, now, max(limit.per for limit in limits))
        allowed = min(max(0, limit.count - sum(1 for at in logged if at > now - limit.per)) for limit in limits)
        taken = waiting[:allowed]
        sends += [{"channel": channel, "sent_at": naive_utc(now), "message_id": row.id} for row in taken]
        if len(waiting) > allowed:
            window = sorted([*logged, *([now] * len(taken))])
            free_at = max((window[-limit.count] + limit.per if len(window) >= limit.count else now)
                          for limit in limits)
            held.update({row.id: free_at for row in waiting[allowed:]})
    if sends:
        connection.execute(schema.channel_sends.insert(), sends)
    return [row for row in rows if row.id not in held], held


def lock_paced(connection: sa.Connection, schema: Schema, pacing: Pacing) -> None:
    """Lock every paced channel's row before the due messages are chosen: a second worker then
    chooses only after the first has taken (and moved) its share, so a robot's messages keep
    their order across workers."""
    for channel in sorted(pacing):
        _lock(connection, schema, channel)


def sent(connection: sa.Connection, schema: Schema, message_ids: Sequence[int], claimed_at: dt.datetime,
         now: dt.datetime) -> None:
    """The claimed sends went out by `now`: their log rows move from the claim time to now (a
    send is never counted earlier than it happened)."""
    if message_ids:
        table = schema.channel_sends
        connection.execute(table.update().where(table.c.message_id.in_(list(message_ids)),
                                                table.c.sent_at == naive_utc(claimed_at))
                           .values(sent_at=naive_utc(now)))


def silence(connection: sa.Connection, schema: Schema, channel: str, until: dt.datetime, reason: str) -> None:
    """The vendor said "too fast" (or Retry-After): nothing goes to `channel` before `until`."""
    blocked = _lock(connection, schema, channel)
    if blocked is None or blocked < until:
        table = schema.channel_pace
        connection.execute(table.update().where(table.c.channel == channel)
                           .values(blocked_until=naive_utc(until), reason=reason[:255]))


def _lock(connection: sa.Connection, schema: Schema, channel: str) -> dt.datetime | None:
    """The channel's pace row, made the first time and locked for this transaction; its block."""
    statements = _statements(schema.channel_pace, connection.dialect.name)
    row = statements[0].first(connection, {"channel": channel})
    if row is None:
        statements[1].run(connection, {"channel": channel, "blocked_until": None, "reason": None})
        row = statements[0].first(connection, {"channel": channel})
    return as_utc(row.blocked_until) if row is not None else None


def _recent(connection: sa.Connection, schema: Schema, channel: str, now: dt.datetime,
            longest: dt.timedelta) -> list[dt.datetime]:
    """Sends to `channel` within the longest window (older log rows are deleted on the way)."""
    table = schema.channel_sends
    connection.execute(table.delete().where(table.c.channel == channel, table.c.sent_at <= naive_utc(now - longest)))
    return [as_utc(at) or at for (at,) in connection.execute(
        sa.select(table.c.sent_at).where(table.c.channel == channel, table.c.sent_at > naive_utc(now - longest)))]


@functools.lru_cache(maxsize=16)
def _statements(table: sa.Table, dialect: str) -> tuple[Prepared, Prepared]:
    read = sa.select(table.c.blocked_until).where(table.c.channel == sa.bindparam("channel"))
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    return (Prepared(read.with_for_update() if dialect == "postgresql" else read),
            Prepared(insert.on_conflict_do_nothing(index_elements=[table.c.channel]),
                     columns=("channel", "blocked_until", "reason")))
