"""`surveys:` documents: a satisfaction survey the customer answers without signing in
("closing a ticket sends the customer a link: 1–5 and a comment").

```yaml
surveys:
  ticket_satisfaction:
    entity: ticket
    send_when: "status == 'closed'"   # the write that makes this true issues a new link
    expires: 7d                       # the link works this long (calendar time)
    score_field: satisfaction         # integer: the 1–5 answer
    comment_field: satisfaction_comment   # text (optional)
    answered_at_field: satisfaction_at    # datetime: set by the answer, so the link works once
    sent_at_field: survey_sent_at     # datetime: when the current link was issued
    link_field: survey_link           # url: the link, shown on the record
    question: {zh: 您对本次服务满意吗？, en: How satisfied are you with our service?}
    send: {channel: service_mail, template: satisfaction_survey, address_field: reporter_email}
```

The link is signed with the installation's secret key (HMAC-SHA256) over the survey, the record
and the moment it was issued; it works while unexpired, unanswered and the newest one issued
for the record. Every field named here must exist with the right type, checked at load.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from engine.metamodel.checks import Built, Checker, build_items, default_label
from engine.metamodel.durations import DURATION_SCHEMA, DurationSpec, checked_duration
from engine.metamodel.entities import FieldType
from engine.metamodel.errors import NOWHERE, Location, did_you_mean
from engine.metamodel.expressions import Expression
from engine.metamodel.labels import Label
from engine.metamodel.messages import Msg
from engine.metamodel.schema import LABEL, NAME
from engine.metamodel.source import PathKey, SourceDocument

if TYPE_CHECKING:  # the Metamodel holds these specs; builders only read it
    from engine.metamodel.model import Metamodel
    from engine.metamodel.vocabulary import Vocabulary

SCALE = (1, 2, 3, 4, 5)


@dataclass(frozen=True, slots=True)
class SurveySend:
    """The message carrying the link: `template` on `channel`, mentioning `to` (people of the
    record, as in notify) and mailed to the address in `address_field` when there is one."""

    channel: str
    template: str
    to: tuple[str, ...] = ()
    address_field: str | None = None


@dataclass(frozen=True, slots=True)
class SurveySpec:
    name: str
    label: Label
    entity: str
    send_when: Expression
    expires: DurationSpec
    score_field: str
    answered_at_field: str
    sent_at_field: str
    link_field: str
    question: Label
    comment_field: str | None = None
    send: SurveySend | None = None
    location: Location = NOWHERE


_SEND = {"type": "object", "required": ["channel", "template"], "additionalProperties": False, "properties": {
    "channel": NAME, "template": NAME, "address_field": NAME,
    "to": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}}}

SURVEYS_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["surveys"], "additionalProperties": False, "properties": {
        "surveys": {"type": "object", "minProperties": 1, "propertyNames": NAME, "additionalProperties": {
            "type": "object", "additionalProperties": False,
            "required": ["entity", "send_when", "expires", "score_field", "answered_at_field", "sent_at_field",
                         "link_field", "question"],
            "properties": {
                "label": LABEL, "description": {"type": "string"}, "entity": NAME,
                "send_when": {"type": "string", "minLength": 1}, "expires": DURATION_SCHEMA,
                "score_field": NAME, "comment_field": NAME, "answered_at_field": NAME, "sent_at_field": NAME,
                "link_field": NAME, "question": LABEL, "send": _SEND}}}}}


def build_surveys(documents: list[SourceDocument], model: Metamodel, vocabulary: Vocabulary) -> Built:
    surveys, errors = build_items("surveys", Msg("survey"), documents, model, vocabulary, _build_survey)
    return replace(model, surveys=tuple(surveys)), errors


def _build_survey(checker: Checker, name: str, data: dict[str, Any], path: PathKey, _: int) -> SurveySpec | None:
    entity = checker.entity(path + ("entity",), data["entity"], Msg("survey '{name}'", name=name))
    if entity is None:
        return None
    score = checker.field(path + ("score_field",), entity, data["score_field"], Msg("score field"),
                          types=(FieldType.INTEGER,))
    if score is not None and (score.minimum, score.maximum) != (SCALE[0], SCALE[-1]):
        checker.error(path + ("score_field",), Msg("score field '{field}' must hold 1 to 5", field=score.name),
                      Msg("declare it with min: 1 and max: 5 under {entity}.fields.{field}", entity=entity.name,
                          field=score.name))
    for key, what, types in (
            ("answered_at_field", Msg("answered at field"), (FieldType.DATETIME,)),
            ("sent_at_field", Msg("sent at field"), (FieldType.DATETIME,)),
            ("link_field", Msg("link field"), (FieldType.URL, FieldType.STRING, FieldType.TEXT)),
            ("comment_field", Msg("comment field"), (FieldType.TEXT, FieldType.STRING))):
        if data.get(key) is not None:
            checker.field(path + (key,), entity, data[key], what, types=types)
    send_when = checker.expression(path + ("send_when",), data["send_when"], entity)
    expires = checked_duration(checker, path + ("expires",), str(data["expires"]))
    if expires.business_days:
        checker.error(path + ("expires",), Msg("expires '{duration}' is in business time", duration=expires.text),
                      Msg("a link expires in calendar time: use d, h or min, e.g. expires: 7d"))
    raw_send = data.get("send")
    send = _send(checker, path + ("send",), raw_send, entity) if raw_send else None
    if send_when is None:
        return None
    return SurveySpec(name, default_label(data, name), entity.name, send_when, expires, data["score_field"],
                      data["answered_at_field"], data["sent_at_field"], data["link_field"],
                      Label.of(data["question"], name), data.get("comment_field"), send, checker.doc.where_key(path))


def _send(checker: Checker, path: PathKey, raw: dict[str, Any], entity: Any) -> SurveySend:
    channels = [spec.name for spec in checker.model.channels]
    templates = [spec.name for spec in checker.model.templates]
    if raw["channel"] not in channels:
        checker.error(path + ("channel",), Msg("unknown channel '{name}'", name=raw["channel"]),
                      did_you_mean(raw["channel"], channels))
    if raw["template"] not in templates:
        checker.error(path + ("template",), Msg("unknown message template '{name}'", name=raw["template"]),
                      did_you_mean(raw["template"], templates))
    if raw.get("address_field") is not None:
        checker.field(path + ("address_field",), entity, raw["address_field"], Msg("address field"),
                      types=(FieldType.EMAIL,))
    return SurveySend(raw["channel"], raw["template"], tuple(raw.get("to") or ()), raw.get("address_field"))
