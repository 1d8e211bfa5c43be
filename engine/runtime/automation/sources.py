"""Inbound webhooks at /hooks/{source}: log first, then authenticate, map, deduplicate, create.

Every delivery is written to crm_deliveries in its own transaction before anything else is
looked at, so a rejected, malformed or failing delivery is never lost: it can be read and
replayed. A source's event id makes processing idempotent: the (source, event id) pair is
inserted in the same transaction as the record, so a re-delivered event creates nothing new,
even when two copies arrive at once.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import datetime as dt
import functools
import hashlib
import hmac
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from engine.metamodel.sources import AuthKind, SourceSpec
from engine.runtime.automation.delivery_records import DeliveryRecords, MadeRecord, RecordRefused
from engine.runtime.records.actors import Actor
from engine.runtime.records.errors import NotFound, RecordError, StageRefused, ValidationFailed
from engine.runtime.records.fieldkinds import FieldError
from engine.runtime.storage import jsontext
from engine.runtime.storage.prepared import Prepared
from engine.runtime.storage.tables import Schema
from engine.runtime.storage.times import naive_utc
from engine.metamodel.model import Metamodel
from engine.rules.time import Clock
from engine.runtime.records.service import RecordService
from engine.runtime.storage.database import Database, savepoint

MAX_BODY = 1024 * 1024
PREVIEW_BYTES = 2048  # what is kept of a body refused for its size
log = logging.getLogger(__name__)
_SECRET_HEADERS = {"authorization", "cookie", "x-api-key", "x-token", "proxy-authorization"}
_SECRET_WORDS = ("token", "secret", "signature", "password", "apikey", "api-key", "api_key", "sign")


def _is_secret(name: str, declared: str) -> bool:
    lowered = name.lower()
    return lowered in _SECRET_HEADERS or lowered == declared or any(word in lowered for word in _SECRET_WORDS)


def _masked_query(query: str, declared: str) -> str:
    """The query string with the values of secret-looking parameters replaced by ***."""
    parts = []
    for pair in query[:2000].split("&"):
        name, sep, _ = pair.partition("=")
        parts.append(f"{name}=***" if sep and _is_secret(name, declared) else pair)
    return "&".join(parts)


class DeliveryStatus(enum.StrEnum):
    """What became of one inbound delivery (the crm_deliveries `status` column)."""

    RECEIVED = "received"    # logged, not yet processed
    PROCESSED = "processed"  # a record was created or merged
    DUPLICATE = "duplicate"  # its event id was processed before
    REJECTED = "rejected"    # unknown source, failed authentication, or a payload that maps to nothing valid
    FAILED = "failed"        # the record was refused (validation, permissions)


@dataclass(frozen=True, slots=True)
class IntakeResult:
    """What happened to one delivery, as the HTTP answer and the log say it."""

    status: int
    outcome: DeliveryStatus
    delivery_id: int | None  # None: refused before anything was logged (an unknown source, too many a minute)
    message: str
    record_id: int | None = None
    merged: bool = False
    errors: tuple[dict[str, Any], ...] = ()
    records: tuple[dict[str, Any], ...] = ()  # every record the delivery made or linked (a source with records:)
    # a refusal's machine code and the values its message names: the web edge says it in the
    # sender's language (catalogue `hook_error_<code>`); `message` stays the log's English text
    code: str = ""
    params: tuple[tuple[str, Any], ...] = ()
    error: RecordError | None = None  # the record's refusal, translated like the API's

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"outcome": self.outcome, "message": self.message}
        if self.delivery_id is not None:
            body["delivery_id"] = self.delivery_id
        if self.code:
            body["code"] = self.code
        if self.record_id is not None:
            body["record_id"] = self.record_id
        if self.records:
            body["records"] = list(self.records)
        if self.errors:
            body["errors"] = list(self.errors)
        return body


class IntakeRefused(Exception):
    """A delivery refused before any record: its HTTP status, English message (for the log) and
    machine code, with the values the message names (the sender reads it in their language)."""

    def __init__(self, status: int, code: str, message: str, **params: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.params = tuple(params.items())

    def result(self, delivery_id: int | None) -> IntakeResult:
        return IntakeResult(self.status, DeliveryStatus.REJECTED, delivery_id, self.message, code=self.code,
                            params=self.params)


def source_actor(source: str) -> Actor:
    """Intake writes as the system (routing assigns owners), named for the source in the audit."""
    return Actor(None, f"webhook:{source}", role="system", is_system=True)


class Intake:
    """Inbound deliveries: logged first, then authenticated, mapped, deduplicated and created through RecordService."""

    def __init__(self, model: Metamodel, schema: Schema, db: Database, clock: Clock, records: RecordService) -> None:
        self.model = model
        self.schema = schema
        self.db = db
        self.clock = clock
        self.records = records
        self.linked = DeliveryRecords(records)

    def log_delivery(self, source: str, headers: Mapping[str, str], query: str, body: bytes) -> int:
        """Keep the raw delivery before anything can go wrong with it; secrets in headers and in
        the query string (the source's own token header or parameter, and any that looks like
        one) are masked before they are stored."""
        spec = self.model.source(source) if self.model.has_source(source) else None
        secret_header = (spec.auth.header or "").lower() if spec is not None else ""
        secret_param = (spec.auth.query or "").lower() if spec is not None else ""
        # An HMAC source's signature and timestamp prove one body and reveal no key: they are
        # kept, so a replay (crm hooks replay) can check the signature again.
        proof = {(spec.auth.header or "").lower(), (spec.auth.timestamp_header or "").lower()} - {""} \
            if spec is not None and spec.auth.kind is AuthKind.HMAC else set()
        kept = {name.lower()[:128]: ("***" if name.lower() not in proof and _is_secret(name, secret_header)
                                     else value[:1024])
                for name, value in list(headers.items())[:100]}
        query = _masked_query(query, secret_param)
        with self.db.write() as connection:
            return int(_statements(self.schema).log.scalar(connection, {
                "source": source[:64], "received_at": naive_utc(self.clock.now()), "headers": kept, "query": query[:2000],
                "body": body, "status": DeliveryStatus.RECEIVED, "attempts": 1}))

    def _finish(self, delivery_id: int, status: DeliveryStatus, error: str | None = None, **values: Any) -> None:
        with self.db.write() as connection:
            _mark(connection, self.schema, delivery_id, status=status, error=error, **values)

    def process(self, source_name: str, delivery_id: int, headers: Mapping[str, str],
                         query: Mapping[str, str], body: bytes, *, check_auth: bool = True) -> IntakeResult:
        """Authenticate, parse, map and create (or merge) the record; every outcome is logged."""
        try:
            source = next(s for s in self.model.sources if s.name == source_name)
        except StopIteration:
            self._finish(delivery_id, DeliveryStatus.REJECTED, f"unknown source '{source_name}'")
            return IntakeRefused(404, "unknown_source", f"there is no webhook source '{source_name}'",
                                 source=source_name).result(delivery_id)
        try:
            if not source.is_enabled:
                raise IntakeRefused(503, "source_disabled", f"source '{source.name}' is disabled in the blueprint",
                                    source=source.name)
            if check_auth:
                verify(source, headers, query, body, self.clock.now())
            try:  # orjson: nesting beyond 1024, NaN and lone surrogates are errors, never a crash
                payload = jsontext.loads(body or b"null")
            except orjson.JSONDecodeError as exc:
                raise IntakeRefused(400, "invalid_json", f"the body is not valid JSON: {exc}", reason=str(exc)) from None
            if not isinstance(payload, (dict, list)):
                raise IntakeRefused(400, "not_an_object", "the body must be a JSON object")
        except IntakeRefused as refused:
            self._finish(delivery_id, DeliveryStatus.REJECTED, refused.message)
            return refused.result(delivery_id)
        event_id = source.event_key(payload)
        values = source.map_payload(payload)
        try:
            submitted = _submitted_at(values.pop("created_at", None), self.model.settings.timezone)
        except ValidationFailed as failed:
            self._finish(delivery_id, DeliveryStatus.FAILED, failed.message, event_id=event_id, entity=source.entity)
            return _failed(delivery_id, failed)
        return self._create(source, delivery_id, event_id, payload, values, submitted)

    def _create(self, source: SourceSpec, delivery_id: int, event_id: str | None, payload: Any,
                values: dict[str, Any], submitted: dt.datetime | None) -> IntakeResult:
        """Claim the event id first (insert-or-return): a concurrent copy of the same event waits on
        the claim and then answers the first copy's record as a duplicate, never a unique-key error.
        The source's further records, then its own, are written in one savepoint: all, or none."""
        statements = _statements(self.schema)
        with self.db.write() as connection:
            if event_id is not None:
                claimed = _claim(self.schema.source_events, connection.dialect.name).run(connection, {
                    "source": source.name, "event_id": event_id, "delivery_id": delivery_id, "record_id": None})
                if not claimed:
                    seen = statements.seen.first(connection, {"source": source.name, "event_id": event_id})
                    record_id = seen.record_id if seen is not None else None
                    _mark(connection, self.schema, delivery_id, status=DeliveryStatus.DUPLICATE, event_id=event_id,
                          entity=source.entity, record_id=record_id)
                    return IntakeResult(200, DeliveryStatus.DUPLICATE, delivery_id,
                                        f"event {event_id} was already processed", record_id)
            actor = source_actor(source.name)
            # Within a savepoint, a refused record leaves the transaction usable for the log. The
            # record service writes each record in a savepoint of its own: the source's further
            # records need one around them all (all, or none); its own record alone needs no other.
            try:
                with savepoint(connection) if source.records else contextlib.nullcontext():
                    made = {} if self.linked.is_filtered(source, values) else \
                        self.linked.make_linked(connection, source, payload, actor)
                    try:
                        self.linked.resolve_links(connection, self.model.entity(source.entity), source.mapping,
                                                  payload, values, made)
                        if source.match is not None:
                            record_id, outcome = self._update_matched(connection, source, values), "updated"
                        else:
                            result = self.records.create(source.entity, values, actor=actor, within=connection,
                                                         origin="webhook", source=source.name, created_at=submitted)
                            record_id, outcome = result.record["id"], result.outcome
                    except RecordError as error:
                        raise RecordRefused(source.entity, source.entity, error) from None
            except RecordRefused as refused:  # recorded in the same transaction: one write per delivery
                if event_id is not None:  # the event id is not spent by a refused delivery
                    statements.forget.run(connection, {"source": source.name, "event_id": event_id})
                message = f"{refused.name}: {refused.error.message}" if source.records else refused.error.message
                _mark(connection, self.schema, delivery_id, status=DeliveryStatus.FAILED, error=message,
                      event_id=event_id, entity=source.entity)
                return _failed(delivery_id, refused.error, record=refused.name if source.records else None,
                               message=message)
            merged = outcome == "merged"
            listed = [*(record.as_dict() for record in made.values()),
                      MadeRecord(source.entity, source.entity, int(record_id), outcome).as_dict()]
            if event_id is not None:
                statements.remember.run(connection, {"source": source.name, "event_id": event_id,
                                                     "record_id": record_id})
            _mark(connection, self.schema, delivery_id, status=DeliveryStatus.PROCESSED, error=None, event_id=event_id,
                  entity=source.entity, record_id=record_id, records=listed if source.records else None)
        if source.match is not None:
            return IntakeResult(200, DeliveryStatus.PROCESSED, delivery_id, f"updated {source.entity} {record_id}",
                                record_id, records=tuple(listed) if source.records else ())
        return IntakeResult(200 if merged else 201, DeliveryStatus.PROCESSED, delivery_id,
                            f"{'merged into' if merged else 'created'} {source.entity} {record_id}", record_id, merged,
                            records=tuple(listed) if source.records else ())

    def _update_matched(self, connection: sa.Connection, source: SourceSpec, values: dict[str, Any]) -> int:
        """A `match:` source's delivery: the record whose match field holds the mapped value gets
        the other values, and — when a handover node names this source in `completed_by` and the
        item sits at that node — moves to the next node (the funnel gate checks what it hands over)."""
        assert source.match is not None
        key = values.pop(source.match, None)
        if key in (None, ""):
            raise ValidationFailed([FieldError(source.match, "required",
                                               f"{source.match}: the payload names no record to update")])
        table = self.schema.table(source.entity)
        found = connection.execute(sa.select(table.c.id).where(table.c[source.match] == key).limit(2)).all()
        if len(found) != 1:
            raise NotFound(f"{'no' if not found else 'more than one'} {source.entity} has {source.match} '{key}'",
                           field=source.match, value=str(key), matches=len(found))
        record_id = int(found[0].id)
        current = self.records.find(connection, source.entity, record_id)
        for handover in self.model.handovers:
            if handover.entity == source.entity and current is not None:
                target = handover.move_by(source.name, current.get(handover.field))
                if target is not None:
                    values[handover.field] = target
        self.records.update(source.entity, record_id, values, actor=source_actor(source.name), within=connection,
                            origin="webhook")
        return record_id

    def process_logged(self, source_name: str, delivery_id: int, headers: Mapping[str, str],
                       query: Mapping[str, str], body: bytes, *, check_auth: bool = True) -> IntakeResult:
        """`process`, and should it fail unexpectedly (a database error), the delivery is marked
        failed with the reason in a transaction of its own — never left `received` — and the
        sender is asked to try again later (503)."""
        try:
            return self.process(source_name, delivery_id, headers, query, body, check_auth=check_auth)
        except Exception as exc:  # noqa: BLE001 — any failure is recorded on the delivery, then answered
            log.exception("delivery %s from %s could not be processed", delivery_id, source_name)
            message = f"processing failed: {type(exc).__name__}: {str(exc)[:300]}"
            try:
                self._finish(delivery_id, DeliveryStatus.FAILED, message)
            except Exception:  # noqa: BLE001 — the database is gone; doctor shows the row as stuck
                log.exception("delivery %s could not be marked failed", delivery_id)
            return IntakeResult(503, DeliveryStatus.FAILED, delivery_id,
                                "the delivery was kept but could not be processed now; please send it again later",
                                code="processing_failed")

    def stuck(self, older_than: dt.timedelta = dt.timedelta(minutes=5)) -> list[Any]:
        """Deliveries still `received` `older_than` after arrival: their processing never finished
        (the process died between logging and processing). `crm hooks replay --stuck` reprocesses them."""
        table = self.schema.deliveries
        since = naive_utc(self.clock.now() - older_than)
        with self.db.read() as connection:
            return list(connection.execute(sa.select(table.c.id, table.c.source, table.c.received_at)
                                           .where(table.c.status == DeliveryStatus.RECEIVED,
                                                  table.c.received_at <= since).order_by(table.c.id)))

    def replay(self, delivery_id: int, *, check_auth: bool = True) -> IntakeResult:
        """Process a logged delivery again (after fixing a mapping, a secret or a routing rule).
        Authentication is checked again unless `check_auth` is False (`--skip-auth`): a delivery
        refused for a bad signature or a stale timestamp is not turned into a record silently."""
        table = self.schema.deliveries
        with self.db.read() as connection:
            row = connection.execute(sa.select(table).where(table.c.id == delivery_id)).first()
        if row is None:
            raise LookupError(f"there is no delivery {delivery_id}")
        with self.db.write() as connection:
            connection.execute(table.update().where(table.c.id == delivery_id).values(attempts=row.attempts + 1))
        query = dict(pair.split("=", 1) for pair in row.query.split("&") if "=" in pair)
        headers = dict(row.headers or {})
        if check_auth and any(value == "***" for value in headers.values()) and \
                self._auth_header_masked(row.source, headers):
            message = ("the delivery's credential header was masked when it was logged, so it cannot be "
                       "verified again; replay it with --skip-auth if you trust it")
            self._finish(delivery_id, DeliveryStatus.REJECTED, message)
            return IntakeResult(401, DeliveryStatus.REJECTED, delivery_id, message)
        return self.process_logged(row.source, delivery_id, headers, query, row.body, check_auth=check_auth)

    def _auth_header_masked(self, source_name: str, headers: Mapping[str, str]) -> bool:
        source = next((s for s in self.model.sources if s.name == source_name), None)
        header = (source.auth.header or "").lower() if source is not None else ""
        return bool(header) and headers.get(header) == "***"

    def log_refused(self, source: str, headers: Mapping[str, str], query: str, body: bytes, size: int,
                    status: DeliveryStatus, message: str) -> int:
        """Log a delivery refused before it was read whole (too large): its size and first bytes only."""
        delivery_id = self.log_delivery(source, headers, query, body[:PREVIEW_BYTES])
        self._finish(delivery_id, status, f"{message} ({size} bytes; the first {min(size, PREVIEW_BYTES)} kept)")
        return delivery_id

    def prune(self, days: int) -> int:
        """Delete deliveries received more than `days` ago (their bodies are the bulk of what
        anonymous senders store); records made from them and their event ids stay, so a
        re-delivery is still recognised. Returns how many were deleted."""
        if days < 1:
            raise ValueError("keep deliveries at least 1 day")
        table = self.schema.deliveries
        cutoff = naive_utc(self.clock.now()) - dt.timedelta(days=days)
        with self.db.write() as connection:
            return int(connection.execute(table.delete().where(table.c.received_at < cutoff)).rowcount)

    def deliveries(self, *, source: str | None = None, status: str | None = None,
                        limit: int = 50) -> list[Any]:
        table = self.schema.deliveries
        query = sa.select(table).order_by(table.c.id.desc()).limit(limit)
        if source:
            query = query.where(table.c.source == source)
        if status:
            query = query.where(table.c.status == status)
        with self.db.read() as connection:
            return list(connection.execute(query))

def verify(source: SourceSpec, headers: Mapping[str, str], query: Mapping[str, str], body: bytes,
           now: dt.datetime, environ: Mapping[str, str] = os.environ) -> None:
    """IntakeRefused(401) unless the delivery carries the source's token or a valid, fresh signature."""
    auth = source.auth
    if auth.kind is AuthKind.NONE:
        return
    secret = environ.get(auth.secret_env or "", "")
    if not secret:
        raise IntakeRefused(503, "no_secret", f"source '{source.name}' has no secret configured: set the "
                                              f"environment variable {auth.secret_env}",
                            source=source.name, variable=auth.secret_env)
    lowered = {name.lower(): value for name, value in headers.items()}
    if auth.kind is AuthKind.TOKEN:
        given = lowered.get((auth.header or "").lower()) or query.get(auth.query or "", "")
        given = given[7:] if given.lower().startswith("bearer ") else given
        if not given or not hmac.compare_digest(given.encode(), secret.encode()):
            raise IntakeRefused(401, "wrong_token", "missing or wrong token")
        return
    signature = lowered.get((auth.header or "").lower(), "")
    if auth.prefix and signature.startswith(auth.prefix):
        signature = signature[len(auth.prefix):]
    signed = body
    if auth.timestamp_header:
        stamp = lowered.get(auth.timestamp_header.lower(), "")
        try:
            sent = float(stamp)
        except ValueError:
            raise IntakeRefused(401, "bad_timestamp", f"missing or unreadable timestamp header {auth.timestamp_header}",
                                header=auth.timestamp_header) from None
        if sent > 1e12:  # milliseconds
            sent /= 1000
        if abs(now.timestamp() - sent) > auth.max_skew_seconds:
            raise IntakeRefused(401, "stale_timestamp", f"timestamp is more than {auth.max_skew_seconds} s away from "
                                                       "now (an old or replayed delivery)",
                                seconds=auth.max_skew_seconds)
        signed = stamp.encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, getattr(hashlib, auth.algorithm)).digest()
    expected = base64.b64encode(digest).decode() if auth.encoding == "base64" else digest.hex()
    if not signature or not hmac.compare_digest(signature.strip().encode(), expected.encode()):
        raise IntakeRefused(401, "bad_signature", "signature does not match the body")


def _mark(connection: sa.Connection, schema: Schema, delivery_id: int, **values: Any) -> None:
    """Set the delivery's outcome columns (`values`) in the caller's transaction."""
    _mark_statement(schema.deliveries, tuple(values)).run(connection, {"delivery_id": delivery_id, **values})


@functools.lru_cache(maxsize=64)
def _mark_statement(deliveries: sa.Table, columns: tuple[str, ...]) -> Prepared:
    return Prepared(deliveries.update().where(deliveries.c.id == sa.bindparam("delivery_id")), columns=columns)


@dataclass(frozen=True, slots=True)
class _Statements:
    log: Prepared
    seen: Prepared
    remember: Prepared
    forget: Prepared


def _statements(schema: Schema) -> _Statements:
    """The statements every delivery runs, prepared once (engine/runtime/prepared.py)."""
    return _built(schema.deliveries, schema.source_events)


@functools.lru_cache(maxsize=16)
def _built(deliveries: sa.Table, events: sa.Table) -> _Statements:
    return _Statements(
        log=Prepared(deliveries.insert().returning(deliveries.c.id),
                     columns=("source", "received_at", "headers", "query", "body", "status", "attempts")),
        seen=Prepared(sa.select(events.c.record_id).where(events.c.source == sa.bindparam("source"),
                                                          events.c.event_id == sa.bindparam("event_id"))),
        remember=Prepared(events.update().where(events.c.source == sa.bindparam("source"),
                                                events.c.event_id == sa.bindparam("event_id"))
                          .values(record_id=sa.bindparam("record_id"))),
        forget=Prepared(events.delete().where(events.c.source == sa.bindparam("source"),
                                              events.c.event_id == sa.bindparam("event_id"))))


@functools.lru_cache(maxsize=16)
def _claim(events: sa.Table, dialect: str) -> Prepared:
    """INSERT … ON CONFLICT DO NOTHING of the (source, event id) pair: 1 row for the first copy of
    an event; 0 for a copy whose event is claimed — on PostgreSQL after waiting for the claiming
    transaction, so a rolled-back first copy leaves the event to the next."""
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(events)
    return Prepared(insert.on_conflict_do_nothing(index_elements=[events.c.source, events.c.event_id]),
                    columns=("source", "event_id", "delivery_id", "record_id"))


def _failed(delivery_id: int, error: RecordError, *, record: str | None = None,
            message: str | None = None) -> IntakeResult:
    """The answer to a refused record; `record` names which of the delivery's records it was."""
    errors = tuple(e.as_dict() for e in error.errors) if isinstance(error, ValidationFailed) else ()
    if isinstance(error, StageRefused):  # the stage the payload asked for: every missing item, as the API lists them
        errors = tuple(error.items("en"))
    if record is not None:  # a source with records: each error says which record it is about
        if not errors and error.field is not None:
            errors = ({"field": error.field, "code": error.code, "message": error.message},)
        errors = tuple({**item, "record": record} for item in errors)
    return IntakeResult(error.status, DeliveryStatus.FAILED, delivery_id, message or error.message, errors=errors,
                        code=error.code, params=(("record", record),) if record is not None else (), error=error)


def _submitted_at(value: Any, timezone: str) -> dt.datetime | None:
    """The customer's submit time from the payload (ISO 8601, or unix seconds/milliseconds)."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)) or str(value).isdigit():
        seconds = float(value)
        return dt.datetime.fromtimestamp(seconds / 1000 if seconds > 1e12 else seconds, dt.timezone.utc)
    try:
        moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed([FieldError("created_at", "invalid", f"created_at: '{value}' is not a time")]) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(timezone))


