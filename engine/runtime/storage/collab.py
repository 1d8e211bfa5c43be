"""The system tables people work together through: each user's inbox (the in-app side of every
notification), comments on any record (with the users they mention), and the administrators'
audit log. Created and migrated with the other system tables (`tables.build_schema`)."""

from __future__ import annotations

import sqlalchemy as sa

INBOX, COMMENTS, AUDIT = "crm_inbox", "crm_comments", "crm_audit"


def collab_tables(metadata: sa.MetaData, users: str) -> None:
    sa.Table(
        INBOX, metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey(f"{users}.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),        # assigned | approval | mention | notify
        sa.Column("key", sa.String(255), nullable=False),         # one notice per user and key
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("entity", sa.String(48)),
        sa.Column("record_id", sa.Integer),
        sa.Column("actor_id", sa.Integer),                        # who caused it (None: the system)
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("read_at", sa.DateTime),
        sa.UniqueConstraint("user_id", "key", name="uq_crm_inbox_user_id_key"),
        sa.Index("ix_crm_inbox_user_unread", "user_id", "read_at", "id"),
    )
    sa.Table(
        COMMENTS, metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("entity", sa.String(48), nullable=False),
        sa.Column("record_id", sa.Integer, nullable=False),
        sa.Column("author_id", sa.Integer, sa.ForeignKey(f"{users}.id", ondelete="SET NULL")),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("mentions", sa.JSON, nullable=False),          # user ids named with @username
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Index("ix_crm_comments_record", "entity", "record_id", "id"),
    )
    sa.Table(
        AUDIT, metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("actor_id", sa.Integer),
        sa.Column("actor", sa.String(64), nullable=False),       # the username, kept if the user goes
        sa.Column("action", sa.String(32), nullable=False),      # user_created, password_reset, token_revoked …
        sa.Column("target", sa.String(64), nullable=False),      # the username acted on
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Index("ix_crm_audit_at", "at"),
    )
