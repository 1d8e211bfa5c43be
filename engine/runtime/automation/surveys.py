"""Satisfaction surveys (engine/metamodel/surveys.py): a signed, single-use, expiring link issued
in the write that closes a record, and the customer's answer written through RecordService.

Issuing: the write that makes `send_when` true (a ticket closed) gets, in the same transaction,
the issue time in `sent_at_field`, the link in `link_field` (so agents see it on the record) and
the message carrying it in the outbox. The link is `/survey/<survey>/<record id>.<issued>.<mac>`,
the MAC being HMAC-SHA256 with the installation's secret key over survey, record and issue time:
nothing about it is stored apart from the issue time, and a link cannot be made up or altered.

Answering works once: the link must verify, be the record's newest (its issue time equals
`sent_at_field`), be unexpired at the clock's now, and be unanswered (`answered_at_field` empty
or older than the link). The answer is one RecordService update — an event in the timeline —
made with the version the checks read, so of two answers racing on PostgreSQL one is refused.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.metamodel import Metamodel
from engine.metamodel.surveys import SCALE, SurveySpec
from engine.rules.expressions import Evaluator
from engine.rules.rules import Change, Origin, evaluate_condition
from engine.runtime.automation.notify import enqueue_notification
from engine.runtime.records.actors import Actor
from engine.runtime.records.errors import VersionConflict
from engine.runtime.records.lifecycle import WriteContext
from engine.runtime.records.service import RecordService
from engine.runtime.records.values import expression_values
from engine.runtime.storage.database import Database
from engine.runtime.storage.tables import Schema

SURVEY_ACTOR = Actor(None, "survey", role="system", is_system=True)
COMMENT_LIMIT = 2000


class Refusal(enum.Enum):
    """Why a link does not take an answer; each has its own page (engine/runtime/web/screens/surveys.py)."""

    FORGED = "forged"      # unknown survey, bad signature, no such record
    REPLACED = "replaced"  # the record was closed again since: a newer link exists
    EXPIRED = "expired"
    USED = "used"          # answered already


@dataclass(frozen=True, slots=True)
class SurveyLink:
    survey: SurveySpec
    record: Mapping[str, Any]
    issued: dt.datetime


class SurveyInputError(ValueError):
    """The answer itself is wrong (no score, a score outside 1–5, a comment too long); `field` names it."""

    def __init__(self, field: str, key: str) -> None:
        super().__init__(key)
        self.field = field
        self.key = key


class SurveyRefused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.value)
        self.refusal = refusal


def _stamp(moment: dt.datetime) -> int:
    return int(moment.timestamp())


class SurveyLinks:
    """Signs and reads survey links with the installation's secret key (given lazily: the key is
    read once, the first time a link is made or checked)."""

    def __init__(self, key: Callable[[], str], base_url: str = "") -> None:
        self._key = key
        self._cached: bytes | None = None
        self.base_url = base_url.rstrip("/")

    def _mac(self, survey: str, record_id: int, issued: int) -> str:
        if self._cached is None:
            self._cached = self._key().encode()
        digest = hmac.new(self._cached, f"survey:{survey}:{record_id}:{issued}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def token(self, survey: str, record_id: int, issued: dt.datetime) -> str:
        stamp = _stamp(issued)
        return f"{record_id}.{stamp}.{self._mac(survey, record_id, stamp)}"

    def url(self, survey: str, record_id: int, issued: dt.datetime) -> str:
        return f"{self.base_url}/survey/{survey}/{self.token(survey, record_id, issued)}"

    def read(self, survey: str, token: str) -> tuple[int, int]:
        """(record id, issue stamp) of a well-signed token; SurveyRefused(FORGED) otherwise."""
        parts = token.split(".")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit() or len(parts[0]) > 10:
            raise SurveyRefused(Refusal.FORGED)
        record_id, stamp = int(parts[0]), int(parts[1])
        if not hmac.compare_digest(parts[2].encode(), self._mac(survey, record_id, stamp).encode()):
            raise SurveyRefused(Refusal.FORGED)
        return record_id, stamp


class SurveyDesk:
    """The write observer issuing links, and the answering of them."""

    def __init__(self, model: Metamodel, schema: Schema, db: Database, records: RecordService, evaluator: Evaluator,
                 links: SurveyLinks) -> None:
        self.model = model
        self.schema = schema
        self.db = db
        self.records = records
        self.evaluator = evaluator
        self.links = links
        self._by_entity: dict[str, tuple[SurveySpec, ...]] = {}
        for spec in model.surveys:
            self._by_entity[spec.entity] = (*self._by_entity.get(spec.entity, ()), spec)

    # -- issuing, inside the write that closes the record ------------------------------------------
    def before_write(self, context: WriteContext) -> Mapping[str, Any]:
        return {}

    def after_write(self, context: WriteContext) -> None:
        if context.change not in (Change.CREATED, Change.UPDATED):
            return
        for spec in self._by_entity.get(context.entity.name, ()):
            if self._holds(spec, context.after) and (context.before is None or not self._holds(spec, context.before)):
                self._issue(context, spec)

    def _holds(self, spec: SurveySpec, record: Mapping[str, Any]) -> bool:
        values = expression_values(self.model.entity(spec.entity), record)
        return evaluate_condition(spec.send_when, values, self.evaluator).is_true

    def _issue(self, context: WriteContext, spec: SurveySpec) -> None:
        record_id = int(context.after["id"])
        issued = context.now.replace(microsecond=0)
        url = self.links.url(spec.name, record_id, issued)
        record = self.records.update(spec.entity, record_id, {spec.sent_at_field: issued, spec.link_field: url},
                                     actor=SURVEY_ACTOR, within=context.connection, origin=Origin.RULE.value)
        address = record.get(spec.send.address_field) if spec.send is not None and spec.send.address_field else None
        if spec.send is None or not (address or spec.send.to):
            return  # nobody to send it to: the link stays on the record for the agent to pass on
        survey = {"name": spec.name, "url": url, "expires_at": issued + spec.expires.fixed,
                  "expires": spec.expires.text, "question": spec.question.text("zh")}
        enqueue_notification(context.connection, self.schema, self.model, channel=spec.send.channel,
                             to=spec.send.to, owner_id=record.get("owner"),
                             context={"record": record, "survey": survey, "url": url},
                             key=f"survey:{spec.name}:{record_id}:{_stamp(issued)}", now=context.now,
                             template=spec.send.template, entity=spec.entity, record_id=record_id,
                             addresses=(str(address),) if address else ())

    # -- answering, from the public page ---------------------------------------------------------
    def open(self, survey: str, token: str, now: dt.datetime) -> SurveyLink:
        """The link's survey and record when it may still be answered; SurveyRefused says why not."""
        with self.db.read() as connection:
            return self._check(connection, survey, token, now)

    def answer(self, survey: str, token: str, score: str, comment: str, now: dt.datetime) -> SurveyLink:
        """Store the answer on the record (one update, one event); SurveyRefused or SurveyInputError
        when the link or the answer is not good — then nothing is written."""
        value = score.strip()
        if value not in {str(point) for point in SCALE}:
            raise SurveyInputError("score", "survey_score_missing")
        text = comment.strip()
        if len(text) > COMMENT_LIMIT:
            raise SurveyInputError("comment", "survey_comment_too_long")
        with self.db.write() as connection:
            link = self._check(connection, survey, token, now)
            spec = link.survey
            changes: dict[str, Any] = {spec.score_field: int(value), spec.answered_at_field: now}
            if spec.comment_field is not None:
                changes[spec.comment_field] = text or None
            try:
                self.records.update(spec.entity, int(link.record["id"]), changes, actor=SURVEY_ACTOR,
                                    within=connection, origin=Origin.USER.value,
                                    expected_version=int(link.record["version"]))
            except VersionConflict:  # another answer (or a change) came first
                raise SurveyRefused(Refusal.USED) from None
        return link

    def _check(self, connection: Any, survey: str, token: str, now: dt.datetime) -> SurveyLink:
        spec = next((spec for spec in self.model.surveys if spec.name == survey), None)
        if spec is None:
            raise SurveyRefused(Refusal.FORGED)
        record_id, stamp = self.links.read(spec.name, token)
        record = self.records.find(connection, spec.entity, record_id) if record_id < 2**31 else None
        if record is None:
            raise SurveyRefused(Refusal.FORGED)
        sent = record.get(spec.sent_at_field)
        if not isinstance(sent, dt.datetime) or _stamp(sent) != stamp:
            raise SurveyRefused(Refusal.REPLACED if isinstance(sent, dt.datetime) and _stamp(sent) > stamp
                                else Refusal.FORGED)
        answered = record.get(spec.answered_at_field)
        if isinstance(answered, dt.datetime) and _stamp(answered) >= stamp:
            raise SurveyRefused(Refusal.USED)
        if now >= sent + spec.expires.fixed:
            raise SurveyRefused(Refusal.EXPIRED)
        return SurveyLink(spec, record, sent)
