"""Search indexes from each entity's `search:` fields, kept in the same transaction as the write.

`q=` finds records whose searchable fields contain the text anywhere — "精工" inside
"宁波精工机械", "13912" inside a phone number. A plain `LIKE '%…%'` reads every row (2 s at a
million leads), so the engine keeps an index that answers substrings:

- **SQLite**: an FTS5 table `<entity>__search` with the trigram tokenizer over the search fields,
  an external-content index of the entity's own table (the text is not stored twice), kept in
  step by three triggers — so every write, whatever path it takes, updates it in its own
  transaction. A query of three characters or more is a trigram phrase match (a substring
  match, case-insensitive). Two characters — 王磊, 精工, the commonest Chinese query — are no
  trigram, so each value is indexed with two spaces after it (`PAD`): then every place a
  two-character text occurs starts some trigram ("王磊 " where a value ends), the index's
  vocabulary (an fts5vocab table) lists those trigrams by prefix, and the match is any of them —
  exactly the rows a scan would find. One character is still answered by scanning.
- **PostgreSQL**: a GIN index with `gin_trgm_ops` (the pg_trgm extension) on each search field,
  which the planner uses for the same `ILIKE '%…%'` the query already says. When the extension
  cannot be installed (no privilege), search still works, unindexed, and `crm doctor` says so.

The indexes are schema steps like any other: `crm migrate --plan` lists them, every start applies
them, and a change of `search:` (or a table rebuilt by a migration, which drops its triggers)
rebuilds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.runtime.storage.tables import Schema

TRIGRAM = 3  # characters: a text this long is a trigram phrase; two are looked up by prefix
PAD = "  "  # after each indexed value, so that a value's last two characters start a trigram
SAMPLE = 1_000  # newest records read to tell how common a searched text is (`too_common`)
_EXTENSION = "pg_trgm"


@dataclass(frozen=True, slots=True)
class SearchIndex:
    """One entity's search index: its table and the columns it covers."""

    table: str
    columns: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.table}__search"

    @property
    def vocabulary(self) -> str:
        return f"{self.name}_vocab"

    def sqlite_statements(self) -> list[str]:
        """The FTS5 table, its triggers and its vocabulary, in the order they are created. Each
        value is indexed with `PAD` after it (the table's own rows are not changed)."""
        name, table = _quote(self.name), _quote(self.table)
        columns = ", ".join(_quote(column) for column in self.columns)
        new = ", ".join(f"new.{_quote(column)} || '{PAD}'" for column in self.columns)
        old = ", ".join(f"old.{_quote(column)} || '{PAD}'" for column in self.columns)
        insert = f"INSERT INTO {name}(rowid, {columns}) VALUES (new.id, {new});"
        delete = f"INSERT INTO {name}({name}, rowid, {columns}) VALUES ('delete', old.id, {old});"
        return [
            f"CREATE VIRTUAL TABLE {name} USING fts5({columns}, content={table}, content_rowid='id', "
            f"tokenize='trigram')",
            f"CREATE TRIGGER {_quote(self.name + '_insert')} AFTER INSERT ON {table} BEGIN {insert} END",
            f"CREATE TRIGGER {_quote(self.name + '_delete')} AFTER DELETE ON {table} BEGIN {delete} END",
            f"CREATE TRIGGER {_quote(self.name + '_update')} AFTER UPDATE OF {columns} ON {table} "
            f"BEGIN {delete} {insert} END",
            f"CREATE VIRTUAL TABLE {_quote(self.vocabulary)} USING fts5vocab({name}, 'row')",
        ]

    def sqlite_fill(self) -> str:
        """Index what the table already holds, padded as the triggers pad (FTS5's own 'rebuild'
        would read the values as they are)."""
        columns = ", ".join(_quote(column) for column in self.columns)
        padded = ", ".join(f"{_quote(column)} || '{PAD}'" for column in self.columns)
        return f"INSERT INTO {_quote(self.name)}(rowid, {columns}) SELECT id, {padded} FROM {_quote(self.table)}"

    def postgresql_index(self, column: str) -> str:
        return f"{self.table}__search_{column}"


@dataclass(frozen=True, slots=True)
class SearchChange:
    """A step of a migration plan that (re)builds one entity's search index."""

    index: SearchIndex
    reason: str

    def describe(self) -> str:
        return f"{self.reason} search index {self.index.name} on {self.index.table}({', '.join(self.index.columns)})"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def search_indexes(schema: Schema) -> list[SearchIndex]:
    """Every entity's search index: its `search:` fields (the title when none are declared)
    that are stored as text."""
    indexes = []
    for entity in schema.model.entities:
        table = schema.table(entity.name)
        names = entity.search or ((entity.title_field,) if entity.title_field else ())
        columns = tuple(dict.fromkeys(name for name in names if name in table.c and _is_text(table.c[name])))
        if columns:
            indexes.append(SearchIndex(entity.name, columns))
    return indexes


def _is_text(column: sa.Column[object]) -> bool:
    return isinstance(column.type, sa.String)  # VARCHAR and TEXT alike


def is_search_object(name: str | None) -> bool:
    """Whether a table, trigger or index name is one of the search indexes' own (a migration's
    comparison with the blueprint leaves them alone)."""
    return bool(name) and "__search" in str(name)


# -- planning and building --------------------------------------------------------------------

def plan_search(connection: sa.Connection, schema: Schema) -> list[SearchChange]:
    """The search indexes that are missing or out of date (nothing is changed)."""
    if connection.dialect.name == "sqlite":
        return _plan_sqlite(connection, schema)
    if connection.dialect.name == "postgresql":
        return _plan_postgresql(connection, schema)
    return []


def apply_search(connection: sa.Connection, schema: Schema, changes: Sequence[SearchChange]) -> None:
    """Build what `plan_search` found, in the caller's transaction."""
    for change in changes:
        if connection.dialect.name == "sqlite":
            _build_sqlite(connection, change.index)
        else:
            _build_postgresql(connection, change.index)
    if connection.dialect.name == "sqlite":
        for name in _stale_sqlite(connection, schema):
            connection.exec_driver_sql(f"DROP TABLE IF EXISTS {_quote(name)}")
    elif connection.dialect.name == "postgresql":
        wanted = {index.postgresql_index(column) for index in search_indexes(schema) for column in index.columns}
        for name in _postgresql_indexes(connection) - wanted:
            connection.exec_driver_sql(f"DROP INDEX IF EXISTS {_quote(name)}")


def _sqlite_objects(connection: sa.Connection) -> dict[str, str]:
    rows = connection.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE name LIKE '%\\_\\_search%' ESCAPE '\\' AND sql IS NOT NULL")
    return {str(name): str(sql) for name, sql in rows}


def _plan_sqlite(connection: sa.Connection, schema: Schema) -> list[SearchChange]:
    existing = _sqlite_objects(connection)
    changes = []
    for index in search_indexes(schema):
        wanted = index.sqlite_statements()
        have = [existing.get(name) for name in (index.name, index.name + "_insert", index.name + "_delete",
                                                 index.name + "_update", index.vocabulary)]
        if have == wanted:
            continue
        reason = "create" if have[0] is None else "rebuild"
        changes.append(SearchChange(index, reason))
    return changes


def _stale_sqlite(connection: sa.Connection, schema: Schema) -> list[str]:
    """FTS tables of entities that no longer declare search fields."""
    wanted = {name for index in search_indexes(schema) for name in (index.name, index.vocabulary)}
    return [name for name, sql in _sqlite_objects(connection).items()
            if sql.startswith("CREATE VIRTUAL TABLE") and name not in wanted]


def _build_sqlite(connection: sa.Connection, index: SearchIndex) -> None:
    for suffix in ("_insert", "_delete", "_update"):
        connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {_quote(index.name + suffix)}")
    connection.exec_driver_sql(f"DROP TABLE IF EXISTS {_quote(index.vocabulary)}")
    connection.exec_driver_sql(f"DROP TABLE IF EXISTS {_quote(index.name)}")
    for statement in index.sqlite_statements():
        connection.exec_driver_sql(statement)
    connection.exec_driver_sql(index.sqlite_fill())


def _trigram_schema(connection: sa.Connection) -> str | None:
    """The schema pg_trgm lives in, or None when it is not installed."""
    return connection.exec_driver_sql(
        "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = %(name)s",
        {"name": _EXTENSION}).scalar_one_or_none()


def _install_trigram(connection: sa.Connection) -> str | None:
    """Install pg_trgm (into `public`, so no application schema owns it) unless it is there;
    None when this role may not."""
    schema = _trigram_schema(connection)
    if schema is not None:
        return schema
    try:
        with connection.begin_nested():
            connection.exec_driver_sql(f"CREATE EXTENSION IF NOT EXISTS {_EXTENSION} SCHEMA public")
    except sa.exc.DBAPIError:  # no privilege, or another process installing it at this moment
        pass
    return _trigram_schema(connection)


def _postgresql_indexes(connection: sa.Connection) -> set[str]:
    return {str(name) for (name,) in connection.exec_driver_sql(
        "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
        "AND indexname LIKE '%%\\_\\_search\\_%%'")}


def _plan_postgresql(connection: sa.Connection, schema: Schema) -> list[SearchChange]:
    existing = _postgresql_indexes(connection)
    changes = []
    for index in search_indexes(schema):
        wanted = {index.postgresql_index(column) for column in index.columns}
        have = {name for name in existing if name.startswith(index.name + "_")}
        if have != wanted:
            changes.append(SearchChange(index, "rebuild" if have else "create"))
    return changes


def _build_postgresql(connection: sa.Connection, index: SearchIndex) -> None:
    trigram = _install_trigram(connection)
    if trigram is None:
        return  # search works unindexed; `crm doctor` reports it
    for column in index.columns:
        connection.exec_driver_sql(
            f"CREATE INDEX IF NOT EXISTS {_quote(index.postgresql_index(column))} ON {_quote(index.table)} "
            f"USING gin ({_quote(column)} {_quote(trigram)}.gin_trgm_ops)")


# -- querying ---------------------------------------------------------------------------------

def fts_match(index: SearchIndex, table: sa.Table, text: str,
              columns: Sequence[str]) -> sa.ColumnElement[bool] | None:
    """On SQLite, `id IN (records whose `columns` contain `text`)` answered by the FTS table:
    a phrase of three characters or more, or any indexed trigram that starts with a text of
    two (see the module's docstring); None for one character, or when no indexed column is allowed."""
    allowed = [column for column in index.columns if column in columns]
    short = text.strip()
    if not allowed or not short or (len(text) < TRIGRAM and len(short) != TRIGRAM - 1):
        return None
    restrict = "{" + " ".join(allowed) + "}: " if list(allowed) != list(index.columns) else ""
    if len(text) >= TRIGRAM:
        query: sa.ColumnElement[Any] = sa.literal(restrict + _quoted(text))
    else:
        vocabulary = sa.table(index.vocabulary, sa.column("term"))
        prefix = short.lower()  # the trigram tokenizer folds case: its terms are lower case
        terms = (sa.select(sa.func.group_concat(sa.literal('"') + sa.func.replace(vocabulary.c.term, '"', '""')
                                                + sa.literal('"'), " OR "))
                 .where(vocabulary.c.term >= prefix, vocabulary.c.term < prefix + "\U0010ffff").scalar_subquery())
        # no trigram starts so: a term no text holds (private-use characters; an empty match is an error)
        query = sa.literal(restrict + "(") + sa.func.coalesce(terms, _quoted("\ue000" * TRIGRAM)) + sa.literal(")")
    fts = sa.table(index.name, sa.column("rowid"))
    matches = sa.select(fts.c.rowid).where(sa.literal_column(_quote(index.name)).op("MATCH")(query))
    return table.c.id.in_(matches)


def too_common(connection: sa.Connection, index: SearchIndex, table: sa.Table, text: str) -> bool:
    """Whether so many records hold `text` (有限公司 is in nearly every company name) that reading
    the table newest first finds a page, and the count that stops at 10,000, sooner than
    collecting every match from the index: 546 ms by the index against 8 ms by reading, at a
    million leads. The newest `SAMPLE` records say how common the text is (the index cannot say
    it cheaply: its vocabulary counts a trigram's records by reading them all). Reading costs
    about 10,000 / share records, the index about share × rows matches: reading wins when
    share² × rows > 7,300 (measured, bench/RESULTS.md §12) — on a million leads, a text in more
    than one record in twelve."""
    if connection.dialect.name != "sqlite" or len(text.strip()) < TRIGRAM - 1:
        return False
    rows = int(connection.execute(sa.select(sa.func.max(table.c.id))).scalar() or 0)
    if rows <= 7_300:  # even a text in every record is found as fast from the index
        return False
    pattern = f"%{escape_like(text)}%"
    newest = sa.select(*(table.c[column] for column in index.columns)).order_by(table.c.id.desc()) \
        .limit(SAMPLE).subquery()
    hits = int(connection.execute(sa.select(sa.func.count()).select_from(newest).where(
        sa.or_(*(newest.c[column].ilike(pattern, escape="\\") for column in index.columns)))).scalar_one())
    share = hits / SAMPLE
    return share * share * rows > 7_300


def escape_like(text: str) -> str:
    """`text` for a LIKE pattern with escape character backslash: its %, _ and \\ match themselves."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _quoted(text: str) -> str:
    """`text` as an FTS5 string (a phrase)."""
    return '"' + text.replace('"', '""') + '"'
