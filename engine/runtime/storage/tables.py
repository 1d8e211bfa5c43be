"""SQLAlchemy Core tables from the metamodel: one table per entity plus the system tables.

Indexes come from three places: what the analyst declared (`indexes`, `unique`, `index`),
what list views need (their filters followed by their default sort, so a filtered, sorted
page is an index range scan), and what the engine itself looks up (links, owner, dedup keys).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.metamodel import EntitySpec, FieldType, Metamodel, OnDelete
from engine.metamodel.dashboards import WidgetKind
from engine.runtime.records.fieldkinds import BUILTIN_KINDS, FieldKinds
from engine.runtime.storage.collab import collab_tables
from engine.runtime.storage.import_tables import import_tables

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
USERS, EVENTS, FILES, TIMERS, OUTBOX, TABLES = ("crm_users", "crm_events", "crm_files", "crm_timers",
                                                "crm_outbox", "crm_tables")
TOKENS, LOGINS, SETTINGS, JOB_RUNS = "crm_api_tokens", "crm_login_attempts", "crm_settings", "crm_job_runs"
SESSIONS = "crm_sessions"  # browser sign-ins, revocable (engine/runtime/ops/sessions.py)
DELIVERIES, SOURCE_EVENTS = "crm_deliveries", "crm_source_events"
TRACES, ROUTING_STATE = "crm_traces", "crm_routing_state"
ROUTING_ASSIGNMENTS = "crm_routing_assignments"  # one row per record a routing policy gave a rep: per-day/week caps
CHANNEL_SENDS, CHANNEL_PACE = "crm_channel_sends", "crm_channel_pace"  # per-channel pacing, shared by workers
CLOCKS = "crm_clocks"  # per-record SLA and cadence clocks (engine/runtime/timekeeping.py)
STAGE_MOVES = "crm_stage_moves"  # one typed row per stage_changed event: what the dashboards' stage figures read
ALERTS = "crm_alerts"  # the alert record raised per alert and group (engine/runtime/automation/alerts.py)
_ON_DELETE = {OnDelete.RESTRICT: None, OnDelete.SET_NULL: "SET NULL", OnDelete.CASCADE: "CASCADE"}
_REFERENCE_TABLE = {FieldType.USER: USERS, FieldType.ATTACHMENT: FILES}


@dataclass(frozen=True, slots=True)
class Schema:
    """The database shape of one metamodel, and the field kinds that shaped it (which the
    records layer asks how to coerce, store and read each field)."""

    model: Metamodel
    metadata: sa.MetaData
    tables: dict[str, sa.Table]
    kinds: FieldKinds = BUILTIN_KINDS

    def table(self, entity: str) -> sa.Table:
        return self.tables[entity]

    @property
    def users(self) -> sa.Table:
        return self.metadata.tables[USERS]

    @property
    def events(self) -> sa.Table:
        return self.metadata.tables[EVENTS]

    @property
    def files(self) -> sa.Table:
        return self.metadata.tables[FILES]

    @property
    def timers(self) -> sa.Table:
        return self.metadata.tables[TIMERS]

    @property
    def outbox(self) -> sa.Table:
        return self.metadata.tables[OUTBOX]

    @property
    def channel_sends(self) -> sa.Table:
        return self.metadata.tables[CHANNEL_SENDS]

    @property
    def channel_pace(self) -> sa.Table:
        return self.metadata.tables[CHANNEL_PACE]

    @property
    def deliveries(self) -> sa.Table:
        return self.metadata.tables[DELIVERIES]

    @property
    def source_events(self) -> sa.Table:
        return self.metadata.tables[SOURCE_EVENTS]

    @property
    def traces(self) -> sa.Table:
        return self.metadata.tables[TRACES]

    @property
    def routing_state(self) -> sa.Table:
        return self.metadata.tables[ROUTING_STATE]

    @property
    def routing_assignments(self) -> sa.Table:
        return self.metadata.tables[ROUTING_ASSIGNMENTS]

    @property
    def job_runs(self) -> sa.Table:
        return self.metadata.tables[JOB_RUNS]

    @property
    def alerts(self) -> sa.Table:
        return self.metadata.tables[ALERTS]

    @property
    def clocks(self) -> sa.Table:
        return self.metadata.tables[CLOCKS]

    @property
    def stage_moves(self) -> sa.Table:
        return self.metadata.tables[STAGE_MOVES]


def _index_name(table: str, columns: tuple[str, ...], unique: bool) -> str:
    name = f"{'uq' if unique else 'ix'}_{table}_{'_'.join(columns)}"
    if len(name) <= 60:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[:51]}_{digest}"


def _system_tables(metadata: sa.MetaData) -> None:
    sa.Table(
        USERS, metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("display_name", sa.String(128)),
        sa.Column("email", sa.String(254)),
        sa.Column("phone", sa.String(32)),
        sa.Column("role", sa.String(64)),
        sa.Column("team", sa.String(64)),
        sa.Column("manager_id", sa.Integer, sa.ForeignKey(f"{USERS}.id", ondelete="SET NULL")),
        sa.Column("language", sa.String(8)),
        sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("on_leave", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("password_hash", sa.String(255)),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("im_ids", sa.JSON),  # chat ids per channel type, for @mentions: {"feishu": "ou_…", "slack": "U…"}
    )
    sa.Table(
        EVENTS, metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("entity", sa.String(48), nullable=False),
        sa.Column("record_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("actor_id", sa.Integer),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("changes", sa.JSON),
        sa.Column("data", sa.JSON),
        sa.Index("ix_crm_events_record", "entity", "record_id", "id"),
        sa.Index("ix_crm_events_kind_at", "kind", "at"),
    )
    sa.Table(
        FILES, metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(128), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("created_by", sa.Integer),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    sa.Table(
        TIMERS, metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("kind", sa.String(48), nullable=False),
        sa.Column("key", sa.String(255), nullable=False, unique=True),
        sa.Column("entity", sa.String(48)),
        sa.Column("record_id", sa.Integer),
        sa.Column("due_at", sa.DateTime, nullable=False),
        sa.Column("payload", sa.JSON),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("fired_by", sa.String(64)),
        sa.Column("fired_at", sa.DateTime),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Index("ix_crm_timers_due", "status", "due_at"),
        sa.Index("ix_crm_timers_record", "entity", "record_id"),
    )
    sa.Table(
        OUTBOX, metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False, unique=True),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("claimed_by", sa.String(64)),
        sa.Column("claimed_until", sa.DateTime),
        sa.Column("entity", sa.String(48)),
        sa.Column("record_id", sa.Integer),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("delivered_at", sa.DateTime),
        sa.Column("digest_id", sa.BigInteger().with_variant(sa.Integer, "sqlite")),  # merged into that digest row
        sa.Index("ix_crm_outbox_due", "status", "next_attempt_at"),
    )
    sa.Table(  # one row per request sent (or about to be) to a paced channel: the sliding window's log
        CHANNEL_SENDS, metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("sent_at", sa.DateTime, nullable=False),
        sa.Column("message_id", sa.BigInteger().with_variant(sa.Integer, "sqlite")),
        sa.Index("ix_crm_channel_sends_channel", "channel", "sent_at"),
    )
    sa.Table(  # one row per paced channel: locked while a worker decides what it may send; a vendor's "too fast"
        CHANNEL_PACE, metadata,  # or Retry-After silences the channel until blocked_until
        sa.Column("channel", sa.String(64), primary_key=True),
        sa.Column("blocked_until", sa.DateTime),
        sa.Column("reason", sa.String(255)),
    )
    sa.Table(
        JOB_RUNS, metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job", sa.String(64), nullable=False),
        sa.Column("scheduled_for", sa.DateTime, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("worker", sa.String(64), nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("output", sa.Text),
        sa.UniqueConstraint("job", "scheduled_for", name="uq_crm_job_runs_job_scheduled_for"),
    )
    sa.Table(TABLES, metadata, sa.Column("name", sa.String(64), primary_key=True))
    sa.Table(
        TOKENS, metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey(f"{USERS}.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("last_used_at", sa.DateTime),
        sa.Column("revoked_at", sa.DateTime),
        sa.Column("expires_at", sa.DateTime),   # None: never (only when asked for explicitly)
        sa.Column("scope", sa.String(16)),      # read (GET only) | write; None (older tokens): write
    )
    sa.Table(
        SESSIONS, metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey(f"{USERS}.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("last_seen_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("revoked_at", sa.DateTime),
        sa.Column("client", sa.String(64)),
        sa.Column("user_agent", sa.String(255)),
        sa.Index("ix_crm_sessions_user_id", "user_id"),
    )
    sa.Table(
        LOGINS, metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("succeeded", sa.Boolean, nullable=False),
        sa.Index("ix_crm_login_attempts_username_at", "username", "at"),
        sa.Index("ix_crm_login_attempts_client_at", "client", "at"),
    )
    sa.Table(
        DELIVERIES, metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime, nullable=False),
        sa.Column("headers", sa.JSON, nullable=False),
        sa.Column("query", sa.Text, nullable=False, server_default=""),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("event_id", sa.String(255)),
        sa.Column("entity", sa.String(48)),
        sa.Column("record_id", sa.Integer),
        sa.Column("records", sa.JSON),  # every record a source with records: made or linked (record, entity, id, outcome)
        sa.Column("attempts", sa.Integer, nullable=False, server_default="1"),
        sa.Index("ix_crm_deliveries_source_status", "source", "status", "id"),
    )
    sa.Table(
        SOURCE_EVENTS, metadata,
        sa.Column("source", sa.String(64), primary_key=True),
        sa.Column("event_id", sa.String(255), primary_key=True),
        sa.Column("delivery_id", sa.Integer, nullable=False),
        sa.Column("record_id", sa.Integer),
    )
    sa.Table(
        TRACES, metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("entity", sa.String(48), nullable=False),
        sa.Column("record_id", sa.Integer, nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("change", sa.String(16), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("decisions", sa.JSON, nullable=False),
        sa.Index("ix_crm_traces_record", "entity", "record_id", "id"),
    )
    sa.Table(
        ROUTING_STATE, metadata,
        sa.Column("cursor_key", sa.String(255), primary_key=True),
        sa.Column("state", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    sa.Table(  # counted by (policy, user, since): an index range per rep, never the records themselves
        ROUTING_ASSIGNMENTS, metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("policy", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("entity", sa.String(48), nullable=False),
        sa.Column("record_id", sa.Integer),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Index("ix_crm_routing_assignments_policy_user_at", "policy", "user_id", "at"),
    )
    sa.Table(
        CLOCKS, metadata,
        sa.Column("kind", sa.String(16), primary_key=True),      # sla | cadence
        sa.Column("entity", sa.String(48), primary_key=True),
        sa.Column("record_id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),      # the policy or cadence
        sa.Column("started_at", sa.DateTime, nullable=False),    # the cycle; part of every timer key
        sa.Column("tier", sa.String(64)),
        sa.Column("pauses", sa.JSON, nullable=False),            # [[start, end | null], ...] ISO UTC
        sa.Column("state", sa.String(16), nullable=False),       # running | paused | stopped | cancelled | done
        sa.Column("due_at", sa.DateTime),                        # the breach (or next step) moment
        sa.Column("breached_at", sa.DateTime),
        sa.Column("stopped_at", sa.DateTime),
        sa.Column("met", sa.Boolean),
        sa.Column("reason", sa.String(255)),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Index("ix_crm_clocks_due", "entity", "kind", "state", "due_at"),
    )
    sa.Table(
        STAGE_MOVES, metadata,  # written with each stage_changed event, in its transaction (automation/funnels.py)
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("funnel", sa.String(48), nullable=False),
        sa.Column("entity", sa.String(48), nullable=False),
        sa.Column("record_id", sa.Integer, nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("from_stage", sa.String(64)),
        sa.Column("to_stage", sa.String(64), nullable=False),
        sa.Column("move", sa.String(16), nullable=False),          # forward | skip | back | reopen | lose | hold
        sa.Column("is_return", sa.Boolean, nullable=False),
        sa.Column("dwell_seconds", sa.BigInteger),                 # time spent in from_stage
        # every column a stage figure reads, so a period's moves are read from the index alone
        sa.Index("ix_crm_stage_moves_figures", "funnel", "at", "record_id", "from_stage", "to_stage", "move",
                 "is_return", "dwell_seconds"),
        sa.Index("ix_crm_stage_moves_record", "record_id"),
    )
    sa.Table(
        ALERTS, metadata,
        sa.Column("alert", sa.String(64), primary_key=True),       # the alerts: item
        sa.Column("group_key", sa.String(255), primary_key=True),  # JSON of the group_by values
        sa.Column("record_id", sa.Integer, primary_key=True),      # the alert record raised
        sa.Column("raised_at", sa.DateTime, nullable=False),
        sa.Column("last_at", sa.DateTime, nullable=False),         # the latest member joined
        sa.Column("members", sa.Integer, nullable=False),
        sa.Index("ix_crm_alerts_group", "alert", "group_key", "raised_at"),
    )
    sa.Table(SETTINGS, metadata, sa.Column("key", sa.String(64), primary_key=True),
             sa.Column("value", sa.Text, nullable=False))
    import_tables(metadata)


def _entity_table(entity: EntitySpec, metadata: sa.MetaData, kinds: FieldKinds,
                  covering: tuple[tuple[str, ...], ...] = ()) -> sa.Table:
    columns: list[Any] = [
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("created_by", sa.Integer, sa.ForeignKey(f"{USERS}.id", ondelete="SET NULL")),
        sa.Column("owner", sa.Integer, sa.ForeignKey(f"{USERS}.id", ondelete="SET NULL")),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    ]
    for spec in entity.fields:
        for column in kinds.of_field(spec).columns(spec):
            target = spec.link_entity if spec.type is FieldType.LINK else _REFERENCE_TABLE.get(spec.type)
            if target is not None:
                # Entities may link each other both ways; use_alter lets PostgreSQL add such
                # constraints after both tables exist (SQLite declares them inline).
                column = sa.Column(column.name, column.type,
                                   sa.ForeignKey(f"{target}.id", ondelete=_ON_DELETE[spec.on_delete],
                                                 use_alter=spec.type is FieldType.LINK),
                                   nullable=True)
            columns.append(column)
    if entity.dedup is not None:
        columns.append(sa.Column("duplicate_of", sa.Integer))
    table = sa.Table(entity.name, metadata, *columns)
    for columns_, unique in entity_indexes(entity, covering):
        sa.Index(_index_name(entity.name, columns_, unique), *(table.c[name] for name in columns_), unique=unique)
    return table


_MOVE_KINDS = (WidgetKind.HEATMAP, WidgetKind.STAGES, WidgetKind.STUCK)  # figures of the stage moves, not records


def dashboard_indexes(model: Metamodel, entity: str) -> tuple[tuple[str, ...], ...]:
    """Covering indexes for the dashboards' group-bys: (by, measured fields) and, for scoped
    viewers, (owner, by, measured fields) — a figure then reads the index, not the table. A
    figure of a period, for scoped viewers: (owner, period field, measured fields) — else a
    manager's month was read through all of his team's records (0.4 s a statement at 1M leads)."""
    found: list[tuple[str, ...]] = []
    for dashboard in model.dashboards:
        for widget in dashboard.widgets:
            if widget.entity != entity or widget.kind in _MOVE_KINDS:
                continue
            measured = tuple(name for m in widget.measures for name in m.fields)
            if widget.by is not None:
                found.append((widget.by, *measured))
                if widget.by != "owner":
                    found.append(("owner", widget.by, *measured))
            if widget.period_field is not None:
                found.append(("owner", widget.period_field, *measured))
    return tuple(found)


def entity_indexes(entity: EntitySpec, covering: tuple[tuple[str, ...], ...] = ()
                   ) -> list[tuple[tuple[str, ...], bool]]:
    """Every index the entity's table gets, de-duplicated, without ones a longer index covers."""
    wanted: list[tuple[tuple[str, ...], bool]] = [(("owner",), False)]
    wanted.extend((columns, False) for columns in covering)
    for spec in entity.fields:
        if spec.is_unique:
            wanted.append(((spec.name,), True))
        elif spec.has_index or spec.type in (FieldType.LINK, FieldType.USER):
            wanted.append(((spec.name,), False))
    for index in entity.indexes:
        wanted.append((index.fields, index.is_unique))
    if entity.dedup is not None:
        wanted.extend((key, False) for key in entity.dedup.keys)
    for view in entity.list_views:
        sort = tuple(key.field for key in view.sort[:1])
        filters = tuple(name for name in view.filters if _is_indexable(entity, name))
        if filters:
            wanted.append((filters + sort, False))
            wanted.extend(((name,) + sort, False) for name in filters[1:])
        if sort and sort != ("id",):
            wanted.append((sort, False))  # the unfiltered first page, newest first
    result: list[tuple[tuple[str, ...], bool]] = []
    for columns, unique in wanted:
        columns = tuple(dict.fromkeys(columns))
        if (columns, unique) in result:
            continue
        result.append((columns, unique))
    return [(columns, unique) for columns, unique in result
            if unique or not any(other != columns and other[:len(columns)] == columns for other, _ in result)]


def _is_indexable(entity: EntitySpec, name: str) -> bool:
    if not entity.has_field(name):
        return True  # a system column
    spec = entity.field(name)
    return spec.type not in (FieldType.TEXT, FieldType.JSON, FieldType.MULTICHOICE, FieldType.TAGS)


def build_schema(model: Metamodel, kinds: FieldKinds = BUILTIN_KINDS) -> Schema:
    """The tables for `model`, on a fresh MetaData; `kinds` are the engine's field kinds (the
    built-in ones unless the blueprint uses a plugin's field type)."""
    kinds.check(model)
    metadata = sa.MetaData(naming_convention=NAMING)
    _system_tables(metadata)
    collab_tables(metadata, USERS)  # inbox, comments, audit log (storage/collab.py)
    # Entities may link to each other in any order; create all tables, then foreign keys resolve.
    tables = {entity.name: _entity_table(entity, metadata, kinds, dashboard_indexes(model, entity.name))
              for entity in model.entities}
    return Schema(model, metadata, tables, kinds)
