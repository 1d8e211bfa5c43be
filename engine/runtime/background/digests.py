"""Digests: a paced robot's backlog merged into few messages (`digest: {after: N}` on the channel).

A DingTalk robot takes 20 messages a minute; 200 SLA warnings at nine o'clock would take ten
minutes to trickle out, each one late. When more than N messages wait for one channel, the claim
folds the oldest of them — in the order they were written, as many as fit the vendor's text
limit — into a digest, again until no more than N wait. The first folded row becomes the digest
(its payload replaced, the original kept inside it): it keeps the lowest id of its run and takes
the earliest next-attempt time of everything waiting, so digests and the messages left over go
out in their order, paced like any message. Every folded row gets `digest_id` (the digest's own
row included); the others become `merged`, and are marked delivered when the digest is — every
message accounted for, none sent twice.

This runs inside the claim's transaction, after the paced channels' rows are locked, so two
workers never fold the same rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.runtime.storage.tables import Schema
from engine.runtime.storage.times import naive_utc

SEPARATOR = "\n\n"


@dataclass(frozen=True, slots=True)
class Digest:
    """One channel's digest rule: fold when more than `after` messages wait; at most `max_bytes`
    of UTF-8 text; `header` (with `{count}`) opens the digest, in the channel's language."""

    after: int
    max_bytes: int
    header: str


Digests = Mapping[str, Digest]  # channel name → its digest rule (a channel not named never folds)


def fold_backlogs(connection: sa.Connection, schema: Schema, now: dt.datetime, digests: Digests) -> int:
    """Fold each digest channel's backlog into one digest row when it is over the channel's
    threshold; returns how many rows were folded."""
    folded = 0
    for channel in sorted(digests):
        folded += _fold(connection, schema, channel, digests[channel], now)
    return folded


def _fold(connection: sa.Connection, schema: Schema, channel: str, digest: Digest, now: dt.datetime) -> int:
    table = schema.outbox
    waiting = connection.execute(
        sa.select(table.c.id, table.c.payload, table.c.next_attempt_at)
        .where(table.c.channel == channel, table.c.status == "pending", table.c.digest_id.is_(None))
        .order_by(table.c.id)).all()
    if len(waiting) <= digest.after:
        return 0
    due = min(row.next_attempt_at for row in waiting)
    folded = 0
    while len(waiting) > digest.after:
        chosen = _fitting(waiting, digest)
        if len(chosen) < 2:
            break  # the first message alone fills a message (or cannot be folded): it goes as it is
        head, rest = chosen[0], chosen[1:]
        connection.execute(table.update().where(table.c.id == head.id).values(
            payload=_digest_payload(digest, [dict(row.payload) for row in chosen]), digest_id=head.id,
            next_attempt_at=due))
        connection.execute(table.update().where(table.c.id.in_([row.id for row in rest]))
                           .values(status="merged", digest_id=head.id, claimed_by=None, claimed_until=None))
        folded += len(chosen)
        waiting = waiting[len(chosen):]
    return folded


def _is_digest(payload: Any) -> bool:
    return isinstance(payload, Mapping) and "digest_of" in payload


def _fitting(rows: Sequence[Any], digest: Digest) -> list[Any]:
    """The leading rows whose texts fit together (with the header) in `max_bytes`; rows that
    cannot be folded (a render error, a digest) end the run, keeping the order."""
    size = len(digest.header.format(count=len(rows)).encode("utf-8"))
    chosen: list[Any] = []
    for row in rows:
        payload = row.payload
        if not isinstance(payload, Mapping) or "error" in payload or _is_digest(payload):
            break
        size += len((SEPARATOR + _entry(payload, len(chosen) + 1)).encode("utf-8"))
        if size > digest.max_bytes:
            break
        chosen.append(row)
    return chosen


def _entry(payload: Mapping[str, Any], number: int) -> str:
    title, text = str(payload.get("title") or ""), str(payload.get("text") or "")
    return f"{number}. " + (f"{title}\n{text}" if title and title not in text else text)


def _digest_payload(digest: Digest, payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """One message saying every folded one, numbered in order; mentions of all of them kept."""
    text = SEPARATOR.join([digest.header.format(count=len(payloads)),
                           *(_entry(payload, index) for index, payload in enumerate(payloads, 1))])
    mobiles = sorted({str(m) for payload in payloads for m in payload.get("mention_mobiles") or ()})
    user_ids = sorted({str(u) for payload in payloads for u in payload.get("mention_user_ids") or ()})
    markdown = any(payload.get("format") == "markdown" for payload in payloads)
    return {"text": text, "title": digest.header.format(count=len(payloads)),
            "format": "markdown" if markdown else "text", "mention_mobiles": mobiles, "mention_user_ids": user_ids,
            "mention_all": any(bool(payload.get("mention_all")) for payload in payloads),
            "digest_of": len(payloads), "original": payloads[0]}


def deliver_folded(connection: sa.Connection, schema: Schema, digest_ids: Sequence[int], now: dt.datetime) -> None:
    """The digests went out: every row folded into them is delivered, with the digest's id."""
    if digest_ids:
        table = schema.outbox
        connection.execute(table.update().where(table.c.digest_id.in_(list(digest_ids)), table.c.status == "merged")
                           .values(status="delivered", delivered_at=naive_utc(now), last_error=None))


def folded_into(connection: sa.Connection, schema: Schema, digest_id: int) -> list[int]:
    """The outbox ids a digest carries, in their order (for `crm outbox` and tests)."""
    table = schema.outbox
    return [row.id for row in connection.execute(sa.select(table.c.id).where(table.c.digest_id == digest_id)
                                                 .order_by(table.c.id))]
