"""The tables an import keeps about itself (engine/io/imports.py).

`crm_imports` is the import's own record and its checkpoint: who ran it, when, the file's
hash, the mapping, how far it got (`next_row`, the first row of the first unfinished batch)
and the counts so far; each batch updates it in the batch's own transaction, so after an
interruption (Ctrl-C, SIGKILL, a crash) it says exactly where to resume. `fingerprint` (file
hash + entity + mapping) finds the import again when the same file is run once more.
`crm_import_errors` holds each rejected row — its cells and the reasons — for the error file.
"""

from __future__ import annotations

import sqlalchemy as sa

IMPORTS, IMPORT_ERRORS = "crm_imports", "crm_import_errors"


def import_tables(metadata: sa.MetaData) -> None:
    sa.Table(
        IMPORTS, metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False, unique=True),
        sa.Column("entity", sa.String(48), nullable=False),
        sa.Column("mapping", sa.String(64), nullable=False),
        sa.Column("mapping_text", sa.Text, nullable=False),
        sa.Column("file_name", sa.String(255), nullable=False),
        sa.Column("file_sha256", sa.String(64), nullable=False),
        sa.Column("headers", sa.JSON, nullable=False),              # the file's columns, for the error file
        sa.Column("status", sa.String(16), nullable=False),        # running | done
        sa.Column("rows_total", sa.Integer, nullable=False),
        sa.Column("batch_size", sa.Integer, nullable=False),
        sa.Column("next_row", sa.Integer, nullable=False),         # rows before it are written (0-based data row)
        sa.Column("created", sa.Integer, nullable=False, server_default="0"),
        sa.Column("merged", sa.Integer, nullable=False, server_default="0"),
        sa.Column("rejected", sa.Integer, nullable=False, server_default="0"),
        sa.Column("owners", sa.JSON, nullable=False),              # {"owner id": records imported for them}
        sa.Column("rules", sa.Boolean, nullable=False),
        sa.Column("history", sa.Boolean, nullable=False),
        sa.Column("actor_id", sa.Integer),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime),
    )
    sa.Table(
        IMPORT_ERRORS, metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("import_id", sa.Integer, sa.ForeignKey(f"{IMPORTS}.id", ondelete="CASCADE"), nullable=False),
        sa.Column("row_number", sa.Integer, nullable=False),      # as Excel numbers it: the header is row 1
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("cells", sa.JSON, nullable=False),
        sa.Index("ix_crm_import_errors_import_row", "import_id", "row_number"),
    )
