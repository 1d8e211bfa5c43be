"""`sources:` documents: how an inbound webhook becomes records — authentication, event id,
field mapping with value maps, defaults, and test/spam filters; the further records one delivery
makes and links (`records:`, e.g. the account and contact behind a lead) and links looked up by a
natural key (`lookup:`, e.g. an account by its name).
"""

from __future__ import annotations

import enum
import re
import dataclasses
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from engine.metamodel.checks import Built, Checker, build_items
from engine.metamodel.entities import EntitySpec, FieldSpec, FieldType
from engine.metamodel.errors import NOWHERE, Location, did_you_mean
from engine.metamodel.expressions import Expression
from engine.metamodel.labels import Label
from engine.metamodel.messages import Msg
from engine.metamodel.schema import COMMON, ENV_NAME, EXPRESSION, HEADER_NAME, NAME, either, named_schema
from engine.metamodel.source import PathKey, SourceDocument


if TYPE_CHECKING:  # the Metamodel holds these specs; builders only read it
    from engine.metamodel.model import Metamodel
    from engine.metamodel.vocabulary import Vocabulary


ANY_VALUE = "*"


class AuthKind(enum.Enum):
    NONE = "none"
    TOKEN = "token"
    HMAC = "hmac"


@dataclass(frozen=True, slots=True)
class AuthSpec:
    """How a delivery proves where it comes from. Secrets live in environment variables.

    token: the secret must equal the `header` value (an optional 'Bearer ' is accepted) or
    the `query` parameter. hmac: `header` holds HMAC-`algorithm` of the body (or of
    `timestamp + "." + body` when `timestamp_header` is set), `encoding` hex or base64,
    optionally after `prefix` (e.g. 'sha256='); the timestamp (unix seconds) may differ
    from now by at most `max_skew_seconds`.
    """

    kind: AuthKind
    secret_env: str | None = None
    header: str | None = None
    query: str | None = None
    algorithm: str = "sha256"
    encoding: str = "hex"
    prefix: str = ""
    timestamp_header: str | None = None
    max_skew_seconds: int = 300


@dataclass(frozen=True, slots=True)
class PayloadPath:
    """A path into a JSON payload: '$' (all of it), 'a.b', '$.a.b', 'items[0].value' or 'items.0'."""

    text: str
    parts: tuple[str | int, ...]
    _steps: tuple[tuple[str | int, str], ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:  # each part with the key it is in an object (read for every delivery)
        object.__setattr__(self, "_steps", tuple((part, str(part)) for part in self.parts))

    def read(self, payload: Any) -> Any:
        """The value at this path, or None when any step is missing."""
        value = payload
        for part, key in self._steps:
            if isinstance(value, dict):
                value = value.get(key)
            elif isinstance(value, list) and isinstance(part, int) and -len(value) <= part < len(value):
                value = value[part]
            else:
                return None
        return value


@dataclass(frozen=True, slots=True)
class FieldMapping:
    """One target field from the payload: `map` translates values ('*' catches the rest);
    `default` is used when the payload has no value. A link field may instead take the id of a
    record this delivery made (`record`), or look its target up by the value of one of the
    target's fields (`lookup`: a campus by name, a product by code) — both resolved at intake,
    where the database is."""

    field: str
    path: PayloadPath | None
    value_map: tuple[tuple[str, Any], ...] = ()
    default: Any = None
    location: Location = NOWHERE
    record: str | None = None   # the name of a record made earlier in the same delivery
    lookup: str | None = None   # the link target's field whose value the payload gives
    _table: dict[str, Any] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_table", dict(self.value_map))

    def value_from(self, payload: Any) -> Any:
        if self.path is None:
            return None
        value = self.path.read(payload)
        if value is None or value == "":
            return self.default
        if type(value) is str:  # (what almost every mapped value is)
            if not self._table:
                return value
            value = self._table.get(value, self._table.get(ANY_VALUE, value))
        elif self._table and not isinstance(value, (dict, list)):
            value = self._table.get(str(value), self._table.get(ANY_VALUE, value))
        return list(value) if isinstance(value, (list, tuple)) else value


def _map_values(mapping: tuple[FieldMapping, ...], defaults: tuple[tuple[str, Any], ...],
                payload: Any) -> dict[str, Any]:
    """Defaults, overlaid by every mapped value present (links to records of the delivery are left out)."""
    values = dict(defaults)
    for item in mapping:
        value = item.value_from(payload)
        if value is not None:
            values[item.field] = value
    return values


@dataclass(frozen=True, slots=True)
class LinkedRecordSpec:
    """A further record one delivery makes before the source's own (a guardian before the student,
    the account and contact behind a lead): all of them, or none, in the delivery's transaction.
    `when` names a payload path that must hold a value, else the record is skipped (and links to
    it stay empty). An existing record with the same `match_on` values is linked instead of a new
    one; without `match_on` the entity's own dedup keys decide (update merges, reject links the
    existing record, flag makes a flagged duplicate)."""

    name: str
    entity: str
    mapping: tuple[FieldMapping, ...]
    defaults: tuple[tuple[str, Any], ...] = ()
    match_on: tuple[str, ...] = ()
    when: PayloadPath | None = None
    location: Location = NOWHERE

    def applies_to(self, payload: Any) -> bool:
        if self.when is None:
            return True
        value = self.when.read(payload)
        return value not in (None, "", [], {})

    def map_payload(self, payload: Any) -> dict[str, Any]:
        return _map_values(self.mapping, self.defaults, payload)


@dataclass(frozen=True, slots=True)
class SourceSpec:
    name: str
    entity: str
    auth: AuthSpec
    mapping: tuple[FieldMapping, ...]
    records: tuple[LinkedRecordSpec, ...] = ()  # made first, in this order, then the source's own record
    event_id: tuple[PayloadPath, ...] = ()  # one path, or several whose values together name the event
    defaults: tuple[tuple[str, Any], ...] = ()
    test_filter: Expression | None = None
    spam_filter: Expression | None = None
    is_enabled: bool = True
    max_body_kb: int = 256           # a larger delivery is refused (413) before anything is stored
    rate_per_minute: int = 120       # deliveries per minute from one address (429 beyond it)
    match: str | None = None         # a delivery updates the record whose this field equals the mapped value
    label: Label = Label(())
    description: str = ""
    location: Location = NOWHERE

    def event_key(self, payload: Any) -> str | None:
        """The sender's event id: the value at the one `event_id` path, or the values at several
        paths joined by '/' (e.g. form + serial number: a per-form counter is not unique alone).
        None when any of them is missing — the delivery is then recognised by the dedup keys only."""
        values = [path.read(payload) for path in self.event_id]
        if not values or any(value in (None, "") or isinstance(value, (dict, list)) for value in values):
            return None
        return "/".join(str(value) for value in values)[:255]

    def map_payload(self, payload: Any) -> dict[str, Any]:
        """Field values for a new record: defaults, overlaid by every mapped value present."""
        return _map_values(self.mapping, self.defaults, payload)


_PATH = {"type": "string", "minLength": 1}


_MAPPING_ITEM = either("string", _PATH, {"type": "object", "additionalProperties": False,
                                          "properties": {"path": _PATH, "map": {"type": "object"}, "default": {},
                                                         "lookup": NAME, "record": NAME}})
_MAPPING = {"type": "object", "minProperties": 1, "additionalProperties": _MAPPING_ITEM}
_RECORD = {"type": "object", "required": ["entity", "mapping"], "additionalProperties": False,
           "properties": {"entity": NAME, "when": _PATH, "match_on": {"type": "array", "minItems": 1, "items": NAME,
                                                                       "uniqueItems": True},
                          "mapping": _MAPPING, "defaults": {"type": "object"}}}


_SOURCE = {"type": "object", "required": ["entity", "auth", "mapping"], "additionalProperties": False,
           "properties": {
               **COMMON, "enabled": {"type": "boolean"},
               "max_body_kb": {"type": "integer", "minimum": 1, "maximum": 1024},
               "rate_per_minute": {"type": "integer", "minimum": 1, "maximum": 100000},
               "auth": {"type": "object", "required": ["type"], "additionalProperties": False, "properties": {
                   "type": {"enum": [kind.value for kind in AuthKind]}, "secret_env": ENV_NAME, "header": HEADER_NAME,
                   "query": NAME, "algorithm": {"enum": ["sha256", "sha1", "sha512"]},
                   "encoding": {"enum": ["hex", "base64"]}, "prefix": {"type": "string"},
                   "timestamp_header": HEADER_NAME, "max_skew_seconds": {"type": "integer", "minimum": 1}}},
               "event_id": either("string", _PATH, {"type": "array", "minItems": 1, "items": _PATH}),
               "mapping": _MAPPING,
               "records": {"type": "object", "minProperties": 1, "propertyNames": NAME, "additionalProperties": _RECORD},
               "defaults": {"type": "object"},
               "test_filter": EXPRESSION, "spam_filter": EXPRESSION, "match": NAME}}


SOURCES_SCHEMA: dict[str, Any] = {"type": "object", "required": ["sources"], "additionalProperties": False,
                                  "properties": {"sources": named_schema(_SOURCE)}}


_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_payload_path(text: str) -> PayloadPath:
    """'$.a.b', 'a.b', 'items[0].id' or 'items.0.id' → PayloadPath; ValueError when malformed."""
    rest = text.strip()
    rest = rest[1:] if rest.startswith("$") else rest
    rest = rest[1:] if rest.startswith(".") else rest
    parts: list[str | int] = []
    position = 0
    while position < len(rest):
        match = _PATH_PART.match(rest, position)
        if match is None:
            raise ValueError(Msg("cannot read '{text}' as a path", text=text))
        name, index = match.groups()
        parts.append(int(index) if index is not None else int(name) if name.isdigit() else name)
        position = match.end()
        if position < len(rest) and rest[position] == ".":
            position += 1
            if position == len(rest):
                raise ValueError(Msg("'{text}' ends with a dot", text=text))
    return PayloadPath(text, tuple(parts))


def build_sources(documents: list[SourceDocument], model: Metamodel,
                  vocabulary: Vocabulary) -> Built:
    """SourceSpecs (inbound webhooks) from every `sources:` document."""
    sources, errors = build_items("sources", Msg("source"), documents, model, vocabulary,
                                   lambda checker, name, data, path, _: _build_source(checker, name, data, path))
    return replace(model, sources=tuple(sources)), errors


def _path(checker: Checker, path: PathKey, text: str) -> PayloadPath | None:
    try:
        return parse_payload_path(text)
    except ValueError as exc:
        problem = exc.args[0] if exc.args and isinstance(exc.args[0], Msg) else str(exc)
        checker.error(path, problem, Msg("write a path like $.event.id, contact.mobile or items[0].value"))
        return None


def _build_source(checker: Checker, name: str, data: dict[str, Any], path: PathKey) -> SourceSpec | None:
    entity = checker.entity(path + ("entity",), data["entity"], Msg("source '{name}'", name=name))
    if entity is None:
        return None
    auth = _build_auth(checker, name, data["auth"], path + ("auth",))
    records = _build_records(checker, data.get("records") or {}, path + ("records",))
    made = {record.name: record.entity for record in records}
    mapping = _build_mapping(checker, entity, data["mapping"], path + ("mapping",), made)
    _check_defaults(checker, entity, data.get("defaults") or {}, path + ("defaults",))
    raw_event_id = data.get("event_id")
    event_paths = [raw_event_id] if isinstance(raw_event_id, str) else list(raw_event_id or [])
    single = isinstance(raw_event_id, str)
    event_id = tuple(found for index, text in enumerate(event_paths)
                     if (found := _path(checker, path + ("event_id",) + (() if single else (index,)), text)) is not None)
    if "event_id" not in data:
        checker.error(path, Msg("source '{name}' has no event_id", name=name),
                      Msg("without it a re-delivered event is recognised only by the entity's dedup keys; "
                          "add event_id: <path to the sender's event or submission id>"), key=True, severity="warning")
    filters = {option: checker.expression(path + (option,), data[option], entity)
               for option in ("test_filter", "spam_filter") if option in data}
    match = data.get("match")
    if match is not None and checker.field(path + ("match",), entity, match, Msg("match field")) is not None \
            and match not in data["mapping"]:
        checker.error(path + ("match",), Msg("source '{name}' matches on {field}, which its mapping never fills",
                                             name=name, field=match),
                      Msg("map {field} from the payload (e.g. {field}: contract.number)", field=match))
    return SourceSpec(
        name=name, entity=entity.name, auth=auth, mapping=mapping, records=records, event_id=event_id,
        defaults=tuple((data.get("defaults") or {}).items()), test_filter=filters.get("test_filter"),
        spam_filter=filters.get("spam_filter"), is_enabled=bool(data.get("enabled", True)),
        max_body_kb=int(data.get("max_body_kb", 256)), rate_per_minute=int(data.get("rate_per_minute", 120)),
        match=match,
        label=Label.of(data.get("label"), name.replace("_", " ").capitalize()),
        description=str(data.get("description", "")), location=checker.doc.where_key(path))


def _build_mapping(checker: Checker, entity: EntitySpec, data: dict[str, Any], path: PathKey,
                   made: dict[str, str]) -> tuple[FieldMapping, ...]:
    """One FieldMapping per mapped field of `entity`; `made` names the records of the delivery made
    before this one (name → entity), which a link field may take with `record:`."""
    mapping = []
    for field, raw in data.items():
        item_path = path + (field,)
        raw = {"path": raw} if isinstance(raw, str) else raw
        spec = checker.field(item_path, entity, field, Msg("mapped field")) if field != "created_at" else None
        if ("path" in raw) == ("record" in raw):
            checker.error(item_path, Msg("mapped field '{field}' needs either 'path' (where the payload holds its "
                                         "value) or 'record' (a record this delivery makes), not both or neither",
                                         field=field),
                          Msg("e.g. account: {{record: account}}, or account: {{path: company, lookup: name}}"))
            continue
        if "record" in raw:
            if _check_record_link(checker, item_path, spec, raw, made):
                mapping.append(FieldMapping(field, None, location=checker.doc.where_key(item_path),
                                            record=raw["record"]))
            continue
        payload_path = _path(checker, item_path + ("path",), raw["path"])
        lookup = raw.get("lookup")
        if lookup is not None and not _check_lookup(checker, item_path, spec, lookup):
            continue
        if lookup is None:
            for original, value in (raw.get("map") or {}).items():
                if spec is not None:
                    checker.check_literal(item_path + ("map", original), spec, value)
            if raw.get("default") is not None and spec is not None:
                checker.check_literal(item_path + ("default",), spec, raw["default"])
        if payload_path is not None:
            mapping.append(FieldMapping(field, payload_path, tuple((str(k), v) for k, v in (raw.get("map") or {}).items()),
                                        raw.get("default"), checker.doc.where_key(item_path), lookup=lookup))
    return tuple(mapping)


def _check_record_link(checker: Checker, path: PathKey, spec: FieldSpec | None, raw: dict[str, Any],
                       made: dict[str, str]) -> bool:
    """`record:` needs a link field to the entity of a record made before this one."""
    name = raw["record"]
    if any(option in raw for option in ("map", "default", "lookup")):
        checker.error(path, Msg("'record' takes the id of a record this delivery makes: map, default and lookup "
                                "do not apply"), Msg("remove them"), key=True)
        return False
    if name not in made:
        checker.error(path + ("record",), Msg("there is no record '{name}' made before this one", name=name),
                      Msg("{suggestion} Declare it under the source's records: (records are made "
                          "in the order they are written, the source's own record last)",
                          suggestion=did_you_mean(name, list(made))))
        return False
    if spec is None:
        return False
    if spec.type is not FieldType.LINK or spec.link_entity != made[name]:
        checker.error(path + ("record",), Msg("field '{field}' cannot hold record '{name}' (a {entity})",
                                              field=spec.name, name=name, entity=made[name]),
                      Msg("take it into a link field to {entity}", entity=made[name]))
        return False
    return True


def _check_lookup(checker: Checker, path: PathKey, spec: FieldSpec | None, lookup: str) -> bool:
    """`lookup:` needs a link field, and names a field of the link's target entity."""
    if spec is None:
        return False
    if spec.type is not FieldType.LINK or spec.link_entity is None:
        checker.error(path + ("lookup",), Msg("'lookup' applies to link fields; '{field}' is a {type} field",
                                              field=spec.name, type=spec.type.value),
                      Msg("remove lookup, or map a link field"), key=True)
        return False
    target = checker.model.entity(spec.link_entity) if checker.model.has_entity(spec.link_entity) else None
    if target is None:
        return False
    return checker.field(path + ("lookup",), target, lookup, Msg("lookup field")) is not None


def _check_defaults(checker: Checker, entity: EntitySpec, defaults: dict[str, Any], path: PathKey) -> None:
    for field, value in defaults.items():
        spec = checker.field(path + (field,), entity, field, Msg("default field"))
        if spec is not None:
            checker.check_literal(path + (field,), spec, value)


def _build_records(checker: Checker, data: dict[str, Any], path: PathKey) -> tuple[LinkedRecordSpec, ...]:
    """The further records of one delivery, in the order they are written (a record may link
    only to those before it)."""
    records: list[LinkedRecordSpec] = []
    made: dict[str, str] = {}
    for name, raw in data.items():
        record_path = path + (name,)
        entity = checker.entity(record_path + ("entity",), raw["entity"], Msg("record '{name}'", name=name))
        if entity is None:
            continue
        mapping = _build_mapping(checker, entity, raw["mapping"], record_path + ("mapping",), made)
        if "created_at" in raw["mapping"]:
            checker.error(record_path + ("mapping", "created_at"),
                          Msg("created_at is taken only by the source's own record"),
                          Msg("map the submit time under the source's mapping"), key=True)
        _check_defaults(checker, entity, raw.get("defaults") or {}, record_path + ("defaults",))
        match_on = tuple(raw.get("match_on") or ())
        for index, field in enumerate(match_on):
            checker.field(record_path + ("match_on", index), entity, field, Msg("match_on field"))
        when = _path(checker, record_path + ("when",), raw["when"]) if "when" in raw else None
        records.append(LinkedRecordSpec(name, entity.name, mapping, tuple((raw.get("defaults") or {}).items()),
                                        match_on, when, checker.doc.where_key(record_path)))
        made[name] = entity.name
    return tuple(records)


def _build_auth(checker: Checker, name: str, data: dict[str, Any], path: PathKey) -> AuthSpec:
    kind = AuthKind(data["type"])
    if kind is AuthKind.NONE:
        checker.error(path, Msg("source '{name}' accepts deliveries from anyone who knows its URL", name=name),
                      Msg("use type: token or type: hmac with a secret_env"), severity="warning")
        return AuthSpec(kind)
    if "secret_env" not in data:
        checker.error(path, Msg("{kind} authentication needs 'secret_env'", kind=kind.value),
                      Msg("name the environment variable holding the secret, e.g. secret_env: CRM_DOUYIN_SECRET"))
    if kind is AuthKind.TOKEN and "header" not in data and "query" not in data:
        checker.error(path, Msg("token authentication needs 'header' or 'query'"),
                      Msg("say where the token comes: header: X-Token, or query: token for ?token=…"))
    if kind is AuthKind.HMAC:
        if "header" not in data:
            checker.error(path, Msg("hmac authentication needs 'header' (where the signature comes)"),
                          Msg("e.g. header: X-Signature"))
        if "query" in data:
            checker.error(path + ("query",), Msg("'query' applies to token authentication"), Msg("remove it"),
                          key=True)
    elif any(option in data for option in ("timestamp_header", "algorithm", "encoding", "prefix")):
        checker.error(path, Msg("timestamp_header, algorithm, encoding and prefix apply to hmac authentication"),
                      Msg("use type: hmac, or remove them"), key=True)
    return AuthSpec(kind, data.get("secret_env"), data.get("header"), data.get("query"),
                    data.get("algorithm", "sha256"), data.get("encoding", "hex"), data.get("prefix", ""),
                    data.get("timestamp_header"), int(data.get("max_skew_seconds", 300)))
