"""The outbox: messages written in the transaction that caused them, delivered after commit.

A rolled-back change leaves no row, so it notifies nobody. Delivery happens outside any
database transaction (an HTTP call must not hold the SQLite write lock): a worker claims a
batch with a lease, delivers, and records the outcome. A worker that dies mid-delivery
leaves its lease to expire and the rows are claimed again; receivers get the row's
idempotency key, so a message delivered twice by such a crash can be recognised.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Sequence
import enum
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from engine.runtime.background.digests import Digests, deliver_folded, fold_backlogs
from engine.runtime.background.pacing import Pacing, lock_paced, pace, sent, silence
from engine.runtime.storage.times import as_utc
from engine.runtime.storage.database import Database
from engine.runtime.storage.prepared import Prepared
from engine.runtime.storage.tables import Schema
from engine.runtime.storage.times import naive_utc

# A claimed batch's lease is short and renewed every third of it while the batch is in flight
# (Worker._keep_lease), and each message is marked delivered right after its send: a worker
# killed mid-batch holds its unsent messages up for at most LEASE, and only the messages in
# flight at that moment (≤ the deliverer's concurrency) can reach a receiver twice.
CLAIM_BATCH = 200
LEASE = dt.timedelta(seconds=30)


class OutboxStatus(enum.StrEnum):
    """Where an outbox message stands (the crm_outbox `status` column)."""

    PENDING = "pending"      # waiting for its next attempt
    SENDING = "sending"      # claimed by a worker until `claimed_until`
    DELIVERED = "delivered"
    DEAD = "dead"            # gave up: a permanent error, or out of attempts; `crm outbox retry` revives it
    MERGED = "merged"        # folded into the digest row `digest_id`; delivered with it (background/digests.py)


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    id: int
    channel: str
    idempotency_key: str
    payload: dict[str, Any]
    attempts: int
    entity: str | None
    record_id: int | None
    claimed_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one delivery attempt did: delivered, or failed (retryable or not) with the reason;
    `retry_after`: the vendor asked for a pause (Retry-After, a "too fast" code) — the message
    is not tried again, nor anything else sent to its channel, before it has passed."""

    ok: bool
    retryable: bool = True
    error: str = ""
    retry_after: dt.timedelta | None = None


def enqueue(connection: sa.Connection, schema: Schema, *, channel: str, key: str, payload: dict[str, Any],
            now: dt.datetime, entity: str | None = None, record_id: int | None = None) -> None:
    """Add a message in the caller's transaction (held back while the caller defers writes);
    the same key twice is one message."""
    _insert_once(schema.outbox, connection.dialect.name).run_later(connection, {
        "channel": channel, "idempotency_key": key, "payload": payload, "status": OutboxStatus.PENDING,
        "attempts": 0,
        "next_attempt_at": naive_utc(now), "entity": entity, "record_id": record_id, "created_at": naive_utc(now)})


@functools.lru_cache(maxsize=16)
def _insert_once(table: sa.Table, dialect: str) -> Any:
    """INSERT … ON CONFLICT (idempotency_key) DO NOTHING, built once per table and dialect (bound parameters)."""
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    return Prepared(insert.on_conflict_do_nothing(index_elements=[table.c.idempotency_key]), columns=_ENQUEUED)


_ENQUEUED = ("channel", "idempotency_key", "payload", "status", "attempts", "next_attempt_at", "entity", "record_id",
             "created_at")


def claim(db: Database, schema: Schema, now: dt.datetime, *, worker: str,
          limit: int = CLAIM_BATCH, pacing: Pacing | None = None, digests: Digests | None = None) -> list[OutboxMessage]:
    """Take up to `limit` due messages (pending, or sending with an expired lease) for this worker;
    a paced channel's messages beyond what its limits allow now wait, in order, for the moment a
    slot frees (engine/runtime/background/pacing.py); a digest channel's backlog is first folded
    into one message (engine/runtime/background/digests.py)."""
    table = schema.outbox
    due = sa.or_(sa.and_(table.c.status == OutboxStatus.PENDING, table.c.next_attempt_at <= naive_utc(now)),
                 sa.and_(table.c.status == OutboxStatus.SENDING, table.c.claimed_until < naive_utc(now)))
    with db.write() as connection:
        lock_paced(connection, schema, {**{channel: () for channel in digests or {}}, **(pacing or {})})
        if digests:  # (their channels' rows are locked above, paced or not: one worker folds at a time)
            fold_backlogs(connection, schema, now, digests)
        query = sa.select(table).where(due).order_by(table.c.next_attempt_at, table.c.id).limit(limit)
        if connection.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = connection.execute(query).all()
        rows, held = pace(connection, schema, rows, now, pacing or {})
        for moment in sorted(set(held.values())):
            connection.execute(table.update().where(table.c.id.in_([key for key, at in held.items() if at == moment]))
                               .values(status=OutboxStatus.PENDING, next_attempt_at=naive_utc(moment),
                                       claimed_by=None, claimed_until=None))
        if rows:
            connection.execute(table.update().where(table.c.id.in_([row.id for row in rows])).values(
                status=OutboxStatus.SENDING, claimed_by=worker, claimed_until=naive_utc(now + LEASE)))
    return [OutboxMessage(row.id, row.channel, row.idempotency_key, dict(row.payload), row.attempts, row.entity,
                          row.record_id, now) for row in rows]


def renew_lease(db: Database, schema: Schema, message_ids: Sequence[int], now: dt.datetime, *, worker: str) -> int:
    """Extend this worker's claim on the messages of its batch still being sent."""
    table = schema.outbox
    with db.write() as connection:
        result = connection.execute(table.update().where(
            table.c.id.in_(list(message_ids)), table.c.claimed_by == worker, table.c.status == OutboxStatus.SENDING)
            .values(claimed_until=naive_utc(now + LEASE)))
    return int(result.rowcount or 0)


def record_outcome(db: Database, schema: Schema, message: OutboxMessage, outcome: Outcome, now: dt.datetime, *,
                   worker: str, next_attempt: Callable[[int, dt.datetime], dt.datetime | None]) -> str:
    """Store a delivery's outcome; returns the new status (delivered, pending or dead)."""
    return record_outcomes(db, schema, [(message, outcome)], now, worker=worker, next_attempt=next_attempt)[0]


def record_outcomes(db: Database, schema: Schema, results: Sequence[tuple[OutboxMessage, Outcome]],
                    now: dt.datetime, *, worker: str,
                    next_attempt: Callable[[int, dt.datetime], dt.datetime | None]) -> list[str]:
    """Store a batch of delivery outcomes in one transaction; returns each new status."""
    statuses: list[str] = []
    delivered: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    pauses: dict[str, dt.datetime] = {}
    for message, outcome in results:
        attempts = message.attempts + 1
        if outcome.ok:
            delivered.append({"message_id": message.id, "attempts": attempts})
            statuses.append(OutboxStatus.DELIVERED)
            continue
        retry_at = next_attempt(attempts, now) if outcome.retryable else None
        if retry_at is not None and outcome.retry_after is not None:  # never sooner than the vendor asked
            retry_at = max(retry_at, now + outcome.retry_after)
            pauses[message.channel] = max(pauses.get(message.channel, now), now + outcome.retry_after)
        status = OutboxStatus.PENDING if retry_at else OutboxStatus.DEAD
        failed.append({"message_id": message.id, "attempts": attempts, "status": status,
                       "last_error": outcome.error[:2000], "next_attempt_at": naive_utc(retry_at or now)})
        statuses.append(status)
    mark_delivered, mark_failed = _outcome_statements(schema.outbox)
    with db.write() as connection:
        if delivered:
            connection.execute(mark_delivered,
                               [{**row, "worker": worker, "delivered_at": naive_utc(now)} for row in delivered])
            deliver_folded(connection, schema, [message.id for message, outcome in results
                                                if outcome.ok and "digest_of" in message.payload], now)
        if failed:
            connection.execute(mark_failed, [{**row, "worker": worker} for row in failed])
        for channel, until in sorted(pauses.items()):
            silence(connection, schema, channel, until, "the vendor asked for a pause")
        by_claim: dict[dt.datetime, list[int]] = {}
        for message, _ in results:
            if message.claimed_at is not None and message.claimed_at != now:
                by_claim.setdefault(message.claimed_at, []).append(message.id)
        for claimed_at, ids in by_claim.items():
            sent(connection, schema, ids, claimed_at, now)
    return statuses


@functools.lru_cache(maxsize=16)
def _outcome_statements(table: sa.Table) -> tuple[Any, Any]:
    """Recording a delivery, and a failure (only for rows this worker still holds), built once."""
    mine = table.update().where(table.c.id == sa.bindparam("message_id"), table.c.claimed_by == sa.bindparam("worker"))
    released: dict[str, Any] = {"attempts": sa.bindparam("attempts"), "claimed_by": None, "claimed_until": None}
    return (mine.values(status=OutboxStatus.DELIVERED, last_error=None, delivered_at=sa.bindparam("delivered_at"),
                        **released),
            mine.values(status=sa.bindparam("status"), last_error=sa.bindparam("last_error"),
                        next_attempt_at=sa.bindparam("next_attempt_at"), **released))


def retry_dead(db: Database, schema: Schema, now: dt.datetime, message_id: int | None = None) -> int:
    """Put dead messages (one, or all) back in the queue; returns how many."""
    table = schema.outbox
    condition = table.c.status == OutboxStatus.DEAD
    if message_id is not None:
        condition = sa.and_(condition, table.c.id == message_id)
    with db.write() as connection:
        result = connection.execute(table.update().where(condition).values(
            status=OutboxStatus.PENDING, next_attempt_at=naive_utc(now), attempts=0))
    return int(result.rowcount or 0)


def count_messages(db: Database, schema: Schema, status: str) -> int:
    table = schema.outbox
    with db.read() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(table)
                                      .where(table.c.status == status)).scalar_one())


def list_messages(db: Database, schema: Schema, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    table = schema.outbox
    query = sa.select(table).order_by(table.c.id.desc()).limit(limit)
    if status:
        query = query.where(table.c.status == status)
    with db.read() as connection:
        return [{**row._mapping, "created_at": as_utc(row.created_at)} for row in connection.execute(query)]
