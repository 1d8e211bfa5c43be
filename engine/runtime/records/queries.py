"""List queries: filters, free-text search, sort and pagination, checked against the metamodel.

The query-string form is `field=value` (equals), `field__in=a,b`, `field__gte=…`,
`field__lte=…`, `field__gt`, `field__lt`, `field__ne`, `field__contains=…`,
`field__isnull=true|false`, plus `q=` (search), `sort=-created_at,name`, `page=`, `per_page=`,
`fields=name,phone` (the fields each item carries; `id` always).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from engine.metamodel import SYSTEM_FIELDS, EntitySpec, FieldSpec, FieldType, Label, SortKey
from engine.metamodel.errors import did_you_mean
from engine.runtime.records.errors import QueryInvalid
from engine.runtime.storage.search import SearchIndex, escape_like, fts_match
from engine.runtime.records.fieldkinds import KINDS, FieldError, FieldKinds, ListKind, PhoneKind, normalize_phone

OPERATORS = ("eq", "ne", "in", "gt", "gte", "lt", "lte", "contains", "isnull")
MAX_PARAMS, MAX_PARAM_LENGTH = 100, 2000
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
MAX_PAGE = 1_000_000  # beyond it the offset overflows 64 bits on some databases
MAX_PER_PAGE = 500
ALL_FIELDS = ("*",)  # `fields=*`
RESERVED_PARAMS = frozenset({"q", "sort", "page", "per_page", "view", "sla", "funnel", "within", "stuck", "fields"})
# created_at / updated_at filters parse like a datetime field of the app
_SYSTEM_TIME = KINDS[FieldType.DATETIME]
_SYSTEM_TIME_SPEC = FieldSpec("created_at", FieldType.DATETIME, Label(()))
_SYSTEM_TYPES = {"id": sa.Integer, "version": sa.Integer, "owner": sa.Integer, "created_by": sa.Integer,
                 "created_at": sa.DateTime, "updated_at": sa.DateTime, "duplicate_of": sa.Integer}


@dataclass(frozen=True, slots=True)
class Filter:
    field: str
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class ListQuery:
    filters: tuple[Filter, ...] = ()
    search: str = ""
    sort: tuple[SortKey, ...] = ()
    page: int = 1
    per_page: int = 50
    sla: str | None = None  # overdue, due_within:1h, paused, running (records whose SLA clock is so)
    view: str | None = None  # a list view whose `where:` also limits the rows (RecordService.list)
    funnel: str | None = None  # left:<funnel>:<stage>:<from>/<to> … records behind a stage figure (engine/analytics)
    within: str | None = None  # <field>:<since>:<duration>: field set at most duration after since (engine/analytics)
    stuck: str | None = None  # <funnel>:<stage>=<days>,…: in a stage longer than its norm (engine/analytics)
    fields: tuple[str, ...] = ()  # the fields each item carries besides its id; empty or ALL_FIELDS: every field


COUNT_CAP = 10_000  # a list counts its matching records up to here, then says "10,000+"


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list. `total` counts the matching records exactly up to COUNT_CAP; past it
    `total` is COUNT_CAP and `exact` is False (counting a million rows to print one number is
    what made big lists slow). `more`: whether a page follows this one, known in every case."""
    items: list[dict[str, Any]]
    total: int
    page: int
    per_page: int
    extra: dict[str, Any] = field(default_factory=dict)
    exact: bool = True
    more: bool = False

    @property
    def pages(self) -> int:
        """The number of pages (exact), or the last page known to exist (past COUNT_CAP)."""
        counted = max(1, -(-self.total // self.per_page))
        return counted if self.exact else max(counted, self.page + self.more)

    @property
    def total_text(self) -> str:
        """The total as people read it: 1,234 or 10,000+."""
        return f"{self.total:,}" if self.exact else f"{self.total:,}+"

    @property
    def pages_text(self) -> str:
        """The number of pages as people read it: 25, or 200+ past COUNT_CAP."""
        return str(self.pages) if self.exact else f"{self.pages}+"


def _known(entity: EntitySpec) -> list[str]:
    return [*entity.field_names(), *SYSTEM_FIELDS]


def parse_list_query(entity: EntitySpec, params: Mapping[str, str] | Any) -> ListQuery:
    """A `ListQuery` from query-string parameters; unknown fields or bad values raise QueryInvalid."""
    items = params.multi_items() if hasattr(params, "multi_items") else list(params.items())
    if len(items) > MAX_PARAMS:
        raise QueryInvalid(f"{len(items)} query parameters; at most {MAX_PARAMS}", field=None)
    for key, raw in items:  # text no database can compare (PostgreSQL refuses NUL): a clear 422, not a 500
        if _UNSTORABLE.search(key) or _UNSTORABLE.search(str(raw)) or len(str(raw)) > MAX_PARAM_LENGTH:
            raise QueryInvalid(f"the value of '{key[:40]}' contains a NUL character or an unpaired surrogate, "
                               f"or is longer than {MAX_PARAM_LENGTH} characters", field=key[:64])
    filters: list[Filter] = []
    for key, raw in items:
        if key in RESERVED_PARAMS:
            continue
        name, _, op = key.partition("__")
        op = op or "eq"
        if op not in OPERATORS:
            raise QueryInvalid(f"unknown filter operator '{op}' in '{key}'; use one of {', '.join(OPERATORS)}",
                               field=name)
        filters.append(Filter(name, op, raw.split(",") if op == "in" else raw))
    view_name = (params.get("view") or "").strip() or None
    if view_name is not None and view_name not in [item.name for item in entity.list_views]:
        raise QueryInvalid(f"{entity.name} has no list view '{view_name}'; "
                           f"{did_you_mean(view_name, [item.name for item in entity.list_views])}", field="view")
    view = entity.list_view(view_name or "default")
    sort_text = params.get("sort")
    sort = tuple(SortKey(part[1:], True) if part.startswith("-") else SortKey(part)
                 for part in (sort_text.split(",") if sort_text else []) if part) or view.sort
    try:
        page = int(params.get("page") or 1)
        per_page = int(params.get("per_page") or view.page_size)
    except ValueError:
        raise QueryInvalid("page and per_page must be whole numbers", field="page") from None
    if not 1 <= page <= MAX_PAGE:
        raise QueryInvalid(f"page must be between 1 and {MAX_PAGE}", field="page")
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise QueryInvalid(f"page must be ≥ 1 and per_page between 1 and {MAX_PER_PAGE}", field="per_page")
    return ListQuery(tuple(filters), (params.get("q") or "").strip(), sort, page, per_page,
                     (params.get("sla") or "").strip() or None, view_name,
                     (params.get("funnel") or "").strip() or None, (params.get("within") or "").strip() or None,
                     (params.get("stuck") or "").strip() or None, _fields(entity, params.get("fields")))


def _fields(entity: EntitySpec, text: str | None) -> tuple[str, ...]:
    """`fields=name,phone`: the named fields, each checked (a misspelt one is refused with a
    suggestion, not silently left out of every item); `fields=*`: every field (ALL_FIELDS)."""
    names = tuple(dict.fromkeys(part.strip() for part in (text or "").split(",") if part.strip()))
    if "*" in names:
        return ALL_FIELDS
    known = [*_known(entity), *(("duplicate_of",) if entity.dedup is not None else ())]
    for name in names:
        if name not in known:
            raise QueryInvalid(f"fields: {entity.name} has no field '{name}'; {did_you_mean(name, known)}",
                               field="fields")
    return names


def _column(entity: EntitySpec, table: sa.Table, name: str, purpose: str) -> sa.ColumnElement[Any]:
    if name in table.c and (name in SYSTEM_FIELDS or name == "duplicate_of" or entity.has_field(name)):
        return table.c[name]
    raise QueryInvalid(f"cannot {purpose} by '{name}': {entity.name} has no such field; "
                       f"{did_you_mean(name, _known(entity))}", field=name)


def _typed(entity: EntitySpec, name: str, raw: Any, kinds: FieldKinds) -> Any:
    """A filter value converted like the field's input (so '2026-01-01' compares as a date)."""
    if not entity.has_field(name):
        try:
            if _SYSTEM_TYPES.get(name) is sa.Integer:
                number = int(str(raw)[:20])
                if abs(number) > 2**62:
                    raise ValueError("too large")
                return number
            if _SYSTEM_TYPES.get(name) is sa.DateTime:
                return _SYSTEM_TIME.parse(_SYSTEM_TIME_SPEC, raw).replace(tzinfo=None)
        except (TypeError, ValueError):
            raise QueryInvalid(f"'{raw}' is not a valid value for {name}", field=name) from None
        return raw
    spec = entity.field(name)
    try:
        value = kinds.of_field(spec).coerce(spec, raw)
    except FieldError as error:
        raise QueryInvalid(error.message, field=name) from None
    if spec.type is FieldType.MONEY:
        return value[0]
    if isinstance(value, list):
        return value[0] if value else None
    if hasattr(value, "tzinfo") and getattr(value, "tzinfo", None) is not None:
        return value.replace(tzinfo=None)
    return value


def _condition(entity: EntitySpec, table: sa.Table, item: Filter, dialect: str,
               kinds: FieldKinds) -> sa.ColumnElement[bool]:
    column = _column(entity, table, item.field, "filter")
    spec = entity.find_field(item.field)
    if item.op == "isnull":
        wanted = str(item.value).lower() in ("true", "1", "yes")
        return column.is_(None) if wanted else column.is_not(None)
    if spec is not None and isinstance(kinds.of_field(spec), ListKind):
        if item.op not in ("contains", "eq", "in"):
            raise QueryInvalid(f"{item.field} is a list; filter it with contains or in", field=item.field)
        values = item.value if isinstance(item.value, list) else [item.value]
        return sa.or_(*(_list_contains(column, str(v).strip(), dialect) for v in values))
    if item.op == "contains":
        return column.ilike(f"%{escape_like(str(item.value))}%", escape="\\")
    if item.op == "in":
        return column.in_([_typed(entity, item.field, v, kinds) for v in item.value if str(v).strip() != ""])
    value = _typed(entity, item.field, item.value, kinds)
    comparisons = {"eq": column.__eq__, "ne": column.__ne__, "gt": column.__gt__, "gte": column.__ge__,
                   "lt": column.__lt__, "lte": column.__le__}
    return comparisons[item.op](value)


def _list_contains(column: Any, value: str, dialect: str) -> sa.ColumnElement[bool]:
    if dialect == "postgresql":
        return sa.cast(column, postgresql.JSONB).contains(sa.cast(sa.literal(f'["{_json_escape(value)}"]'),
                                                                   postgresql.JSONB))
    each = sa.func.json_each(column).table_valued("value")
    return sa.exists(sa.select(1).select_from(each).where(each.c.value == value))


def _json_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


_WHOLE_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _search(entity: EntitySpec, table: sa.Table, text: str, unsearchable: Collection[str],
            kinds: FieldKinds, dialect: str, index: SearchIndex | None) -> sa.ColumnElement[bool]:
    """Every searchable field containing `text`. A query that is a whole phone number or e-mail
    address is what someone types to find that person: it then matches the phone (normalised
    to E.164) or e-mail fields exactly — an index look-up — instead of scanning every field.
    Otherwise the search index answers (engine/runtime/storage/search.py): on SQLite its FTS
    table, on PostgreSQL the trigram indexes behind the same ILIKE."""
    names = [name for name in entity.search or (entity.title_field,) if name not in unsearchable and name in table.c]
    specs = [entity.field(name) for name in names if entity.has_field(name)]
    exact = _exact_lookup(specs, table, text.strip(), kinds)
    if exact is not None:
        return exact
    if dialect == "sqlite" and index is not None and set(names) <= set(index.columns):
        indexed = fts_match(index, table, text, names)
        if indexed is not None:
            return indexed
    pattern = f"%{escape_like(text)}%"
    phones = {spec.name for spec in specs if isinstance(kinds.of_field(spec), PhoneKind)}  # digits: no case to fold
    conditions = [(table.c[name].like if name in phones else table.c[name].ilike)(pattern, escape="\\")
                  for name in names]
    return sa.or_(*conditions) if conditions else sa.false()


def _exact_lookup(specs: list[FieldSpec], table: sa.Table, text: str,
                  kinds: FieldKinds) -> sa.ColumnElement[bool] | None:
    """Equality on the phone or e-mail fields when `text` is a whole number or address, else None."""
    phones = [spec for spec in specs if isinstance(kinds.of_field(spec), PhoneKind)]
    emails = [spec for spec in specs if spec.type is FieldType.EMAIL]
    if phones and sum(char.isdigit() for char in text) >= 7:
        numbers = set()
        for spec in phones:
            try:
                numbers.add((spec.name, normalize_phone(text, spec.phone_region)))
            except FieldError:
                pass
        if numbers:
            return sa.or_(*(table.c[name] == number for name, number in numbers))
    if emails and _WHOLE_EMAIL.fullmatch(text):
        return sa.or_(*(table.c[spec.name] == text.lower() for spec in emails))
    return None


def list_conditions(entity: EntitySpec, table: sa.Table, query: ListQuery, dialect: str, *,
                    kinds: FieldKinds, scope: Any = None, unsearchable: Collection[str] = (),
                    search_index: SearchIndex | None = None) -> list[sa.ColumnElement[bool]]:
    """The WHERE conditions of a list: its filters, the actor's `scope`, the search (the
    dashboards count with these, so a figure and the list behind it agree)."""
    conditions = [_condition(entity, table, item, dialect, kinds) for item in query.filters]
    if scope is not None:
        conditions.append(scope)
    if query.search:
        conditions.append(_search(entity, table, query.search, unsearchable, kinds, dialect, search_index))
    return conditions


def build_list_statements(entity: EntitySpec, table: sa.Table, query: ListQuery, dialect: str, *,
                          kinds: FieldKinds, scope: Any = None, unsearchable: Collection[str] = (),
                          ordering: Mapping[str, Any] | None = None,
                          search_index: SearchIndex | None = None) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """The page query and the matching count query; `scope` limits rows to what the actor
    may see and `unsearchable` fields (hidden from the actor) are left out of the search."""
    conditions = list_conditions(entity, table, query, dialect, kinds=kinds, scope=scope, unsearchable=unsearchable,
                                 search_index=search_index)
    order = []
    for key in query.sort:
        if ordering and key.field in ordering:  # e.g. sla_due, contributed by the SLA clocks
            order.append(ordering[key.field].desc().nulls_last() if key.descending
                         else ordering[key.field].asc().nulls_last())
            continue
        column = _column(entity, table, key.field, "sort")
        if entity.has_field(key.field) and not kinds.of_field(entity.field(key.field)).is_orderable:
            raise QueryInvalid(f"cannot sort by '{key.field}': it holds text or a list", field=key.field)
        order.append(column.desc() if key.descending else column.asc())
    if not any(key.field == "id" for key in query.sort):
        last_descending = query.sort[-1].descending if query.sort else True
        order.append(table.c.id.desc() if last_descending else table.c.id.asc())
    page = (sa.select(table).where(*conditions).order_by(*order)
            .limit(query.per_page).offset((query.page - 1) * query.per_page))
    count = sa.select(sa.func.count()).select_from(table).where(*conditions)
    return page, count
