"""The import job: a spreadsheet into the CRM in batches, resumable, idempotent, accounted for.

`Importer.prepare` reads nothing from the database but the users (owners by name); `health`
is the data-health report (engine/io/health.py), written nowhere. `run` writes: each batch of
at most 2,000 rows is one transaction through `RecordService.create_batch` — coercion,
validation, dedup and merge, funnel gates (history rows pass as history, and say so in their
events), rules with origin `import` (or none, with --no-rules), events — and in the same
transaction the import's checkpoint (`crm_imports.next_row`, the counts, the owners' tallies)
and the rejected rows with their reasons (`crm_import_errors`). An interrupted import —
Ctrl-C, SIGKILL, a crash — lost at most the batch in flight, which rolled back; `--resume`
starts at the first unfinished batch. The same file with the same mapping is found again by its
fingerprint: once finished, running it again writes nothing. At the end rows in = created +
merged + rejected, stored with the import's record, and each owner gets one message through the
outbox saying how many records were imported for them (the mapping's `notify` channel).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import io
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from engine.metamodel import EntitySpec, Metamodel
from engine.metamodel.imports import ImportSpec
from engine.rules import Clock
from engine.rules.rules import Origin
from engine.runtime.automation.notify import enqueue_notification
from engine.runtime.automation.rules import rules_suspended
from engine.runtime.records.actors import Actor
from engine.runtime.records.batch import RowResult
from engine.runtime.records.lookups import key_index
from engine.runtime.records.service import RecordService
from engine.runtime.storage.import_tables import IMPORT_ERRORS, IMPORTS
from engine.runtime.storage.times import as_utc, naive_utc

from engine.io.health import HealthReport, Say, analyse
from engine.io.mapping import RowMapper, mapping_yaml
from engine.io.readers import Table, cell_text

Progress = Callable[[int, int], None]  # (rows done, rows to do)


class ImportRefused(Exception):
    """The import cannot start as asked; the message says why and what to do (zh in `zh`)."""

    def __init__(self, message: str, zh: str) -> None:
        super().__init__(message)
        self.zh = zh


@dataclass(frozen=True, slots=True)
class ImportPlan:
    """A file, the mapping applied to it and the file's fingerprint."""

    table: Table
    spec: ImportSpec
    mapper: RowMapper
    file_sha256: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class ImportRecord:
    """An import as stored in crm_imports: who, when, which file and mapping, how far, what became of the rows."""

    id: int
    entity: str
    mapping: str
    file_name: str
    file_sha256: str
    status: str
    rows_total: int
    next_row: int
    created: int
    merged: int
    rejected: int
    rules: bool
    history: bool
    actor_id: int | None
    started_at: dt.datetime
    finished_at: dt.datetime | None
    owners: dict[str, int]
    headers: list[str]

    @property
    def accounted(self) -> bool:
        """rows in = created + merged + rejected (for the rows written so far)."""
        return self.next_row == self.created + self.merged + self.rejected

    def summary(self, say: Say) -> str:
        """One line for the terminal in the reader's language (`say`: see engine/io/health.py)."""
        state = say(f"import_status_{self.status}") if self.status in ("done", "running", "paused", "failed") \
            else self.status
        return (say("import_record_summary", id=self.id, file=self.file_name, entity=self.entity, mapping=self.mapping,
                    state=state, rows=self.next_row, total=self.rows_total, created=self.created, merged=self.merged,
                    rejected=self.rejected)
                + ("" if self.rules else f" · {say('import_rules_off')} (--no-rules)")
                + (f" · {say('import_history_short')}" if self.history else ""))


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    record: ImportRecord
    resumed_from: int        # the first row this run wrote (0 unless resumed)
    already_done: bool       # the same file and mapping had been imported before: nothing written


class Importer:
    def __init__(self, records: RecordService, clock: Clock) -> None:
        self.records = records
        self.model: Metamodel = records.model
        self.schema = records.schema
        self.db = records.db
        self.clock = clock
        self.imports = self.schema.metadata.tables[IMPORTS]
        self.errors = self.schema.metadata.tables[IMPORT_ERRORS]

    # -- before anything is written ----------------------------------------------------------

    def prepare(self, table: Table, spec: ImportSpec, file: bytes | Path) -> ImportPlan:
        """The mapping applied to this file (its content, or its path: hashed as a stream);
        ImportRefused when the file lacks a mapped column."""
        entity = self.records.entity(spec.entity)
        mapper = RowMapper(entity, spec, table.headers, self._users(), self._link_keys(entity, spec))
        if mapper.missing and len(mapper.missing) == len(spec.columns):
            raise ImportRefused(f"{table.name}: none of the mapping's columns are in the file "
                                f"(it has: {', '.join(table.headers)}); choose the right mapping or file",
                                f"{table.name}：文件中没有映射里的任何一列（文件的列：{'、'.join(table.headers)}）")
        if isinstance(file, Path):
            with file.open("rb") as stream:
                digest = hashlib.file_digest(stream, "sha256").hexdigest()
        else:
            digest = hashlib.sha256(file).hexdigest()
        fingerprint = hashlib.sha256(f"{digest}|{spec.entity}|{mapping_yaml(spec)}".encode()).hexdigest()
        return ImportPlan(table, spec, mapper, digest, fingerprint)

    def health(self, plan: ImportPlan, sample: int | None = None) -> HealthReport:
        return analyse(self.records, plan.table, plan.spec, plan.mapper, sample or None)

    def _link_keys(self, entity: EntitySpec, spec: ImportSpec) -> dict[str, tuple[EntitySpec, dict[str, tuple[int, ...]]]]:
        """For each link column given by a natural key (`lookup:`), the target's ids by that key —
        read once for the file."""
        found: dict[str, tuple[EntitySpec, dict[str, tuple[int, ...]]]] = {}
        with self.db.read() as connection:
            for column in spec.columns:
                link = entity.field(column.field) if column.lookup and entity.has_field(column.field) else None
                if link is not None and link.link_entity is not None and column.lookup is not None:
                    target = self.model.entity(link.link_entity)
                    found[column.field] = (target, key_index(connection, self.schema, target, column.lookup))
        return found

    def _users(self) -> dict[str, int]:
        users = self.schema.users
        with self.db.read() as connection:
            rows = connection.execute(sa.select(users.c.id, users.c.username, users.c.display_name)
                                      .where(users.c.is_active.is_(True)).order_by(users.c.id)).all()
        found: dict[str, int] = {}
        for row in rows:
            if row.display_name:
                found.setdefault(row.display_name, row.id)
        for row in rows:
            found[row.username] = row.id
        return found

    # -- writing -----------------------------------------------------------------------------

    def run(self, plan: ImportPlan, *, actor: Actor, resume: bool = False, rules: bool = True,
            sample: int | None = None, batch: int | None = None, progress: Progress | None = None) -> ImportOutcome:
        """Write the file's rows (the first `sample` only, when given) in batches; see the module's docstring."""
        size = max(1, min(batch or plan.spec.batch, 2000))
        existing = self.find(plan.fingerprint)
        if existing is not None and existing.status == "done":
            return ImportOutcome(existing, existing.next_row, True)
        if existing is not None and not resume and existing.next_row > 0:
            raise ImportRefused(
                f"this file was partly imported already (import #{existing.id}: {existing.next_row} of "
                f"{existing.rows_total} rows written); run it again with --resume to continue where it stopped",
                f"该文件已部分导入（第 {existing.id} 次导入，已写入 {existing.next_row}/{existing.rows_total} 行）；"
                "请加 --resume 从中断处继续")
        record_id = existing.id if existing is not None else self._start(plan, actor, rules, size)
        start = existing.next_row if existing is not None else 0
        total = plan.table.row_count
        limit = min(total, sample) if sample else total
        if progress:
            progress(start, limit)
        history = plan.spec.history
        rows = plan.table.iter_rows(start, limit)  # streamed: one batch of cells in memory at a time
        with rules_suspended() if not rules else contextlib.nullcontext():
            done = start
            while done < limit:
                end = min(done + size, limit)
                self._write_batch(plan, record_id, done, end, list(itertools.islice(rows, end - done)), actor, history)
                done = end
                if progress:
                    progress(done, limit)
        if done > start:  # many rows at once: the planner's statistics of what grew (Database.analyze)
            self.db.analyze([self.schema.table(plan.spec.entity), self.schema.events, self.schema.timers,
                             self.schema.clocks])
        if limit == total:
            self._finish(plan, record_id)
        elif sample:
            with self.db.write() as connection:
                connection.execute(self.imports.update().where(self.imports.c.id == record_id)
                                   .values(status="paused"))
        stored = self.get(record_id)
        assert stored is not None
        return ImportOutcome(stored, start, False)

    def begin(self, plan: ImportPlan, *, actor: Actor, rules: bool = True, batch: int | None = None) -> int:
        """The import's id — the earlier one of this file and mapping, else a new one — before its rows
        are written (the screen shows its page while a thread runs `run(..., resume=True)`)."""
        existing = self.find(plan.fingerprint)
        if existing is not None:
            return existing.id
        return self._start(plan, actor, rules, max(1, min(batch or plan.spec.batch, 2000)))

    def _start(self, plan: ImportPlan, actor: Actor, rules: bool, size: int) -> int:
        now = naive_utc(self.clock.now())
        with self.db.write() as connection:
            key = connection.execute(self.imports.insert().values(
                fingerprint=plan.fingerprint, entity=plan.spec.entity, mapping=plan.spec.name,
                mapping_text=mapping_yaml(plan.spec), file_name=plan.table.name, headers=list(plan.table.headers), file_sha256=plan.file_sha256,
                status="running", rows_total=plan.table.row_count, batch_size=size, next_row=0, created=0,
                merged=0, rejected=0, owners={}, rules=rules, history=plan.spec.history,
                actor_id=actor.id, started_at=now, updated_at=now)).inserted_primary_key
        assert key is not None
        return int(key[0])

    def _write_batch(self, plan: ImportPlan, import_id: int, first: int, end: int, rows: list[list[Any]],
                     actor: Actor, history: bool) -> None:
        mapped: list[tuple[int, dict[str, Any]]] = []
        failed: list[tuple[int, str]] = []
        for offset, cells in enumerate(rows):
            values, errors = plan.mapper.values(cells)
            if errors:
                failed.append((offset, RowResult(offset, "rejected", errors=errors).reason()))
            else:
                mapped.append((offset, values))
        with self.db.write() as connection:
            current = connection.execute(sa.select(self.imports.c.next_row, self.imports.c.owners,
                                                   self.imports.c.rules)
                                         .where(self.imports.c.id == import_id)).one()
            if current.next_row != first:  # another run got here first: leave this batch to it
                raise ImportRefused(f"import #{import_id} is being run elsewhere (it is at row {current.next_row})",
                                    f"第 {import_id} 次导入正在别处运行（已到第 {current.next_row} 行）")
            results = self.records.create_batch(plan.spec.entity, [values for _, values in mapped], actor=actor,
                                                connection=connection, origin=Origin.IMPORT, history=history)
            counts = {"created": 0, "merged": 0, "rejected": len(failed)}
            owners: dict[str, int] = dict(current.owners or {})
            for (offset, _), result in zip(mapped, results):
                if result.outcome == "rejected":
                    failed.append((offset, result.reason()))
                    counts["rejected"] += 1
                    continue
                counts["merged" if result.outcome == "merged" else "created"] += 1
                if result.owner is not None:
                    owners[str(result.owner)] = owners.get(str(result.owner), 0) + 1
            if failed:
                connection.execute(self.errors.insert(), [
                    {"import_id": import_id, "row_number": first + offset + 2, "reason": reason,
                     "cells": [cell_text(cell) for cell in rows[offset]]} for offset, reason in sorted(failed)])
            connection.execute(self.imports.update().where(self.imports.c.id == import_id).values(
                next_row=end, owners=owners, updated_at=naive_utc(self.clock.now()),
                created=self.imports.c.created + counts["created"], merged=self.imports.c.merged + counts["merged"],
                rejected=self.imports.c.rejected + counts["rejected"]))

    def _finish(self, plan: ImportPlan, import_id: int) -> None:
        """Mark the import done and tell each owner, once, how many records were imported for them."""
        now = self.clock.now()
        with self.db.write() as connection:
            row = connection.execute(sa.select(self.imports).where(self.imports.c.id == import_id)).mappings().one()
            if row["status"] == "done":
                return
            if plan.spec.notify:
                entity = self.model.entity(plan.spec.entity)
                for owner, count in sorted((row["owners"] or {}).items()):
                    enqueue_notification(
                        connection, self.schema, self.model, channel=plan.spec.notify, to=["owner"],
                        owner_id=int(owner), now=now, key=f"import:{import_id}:owner:{owner}",
                        context={"count": count, "file": plan.table.name, "entity": entity.label.text("zh")},
                        text=f"数据导入完成：{plan.table.name} 中有 {count} 条{entity.plural.text('zh')}已分配给你，"
                             f"请在系统中查看并跟进。")
            connection.execute(self.imports.update().where(self.imports.c.id == import_id).values(
                status="done", finished_at=naive_utc(now), updated_at=naive_utc(now)))

    # -- what was done -----------------------------------------------------------------------

    def find(self, fingerprint: str) -> ImportRecord | None:
        with self.db.read() as connection:
            row = connection.execute(sa.select(self.imports).where(self.imports.c.fingerprint == fingerprint)
                                     ).mappings().first()
        return None if row is None else _record(row)

    def get(self, import_id: int) -> ImportRecord | None:
        with self.db.read() as connection:
            row = connection.execute(sa.select(self.imports).where(self.imports.c.id == import_id)).mappings().first()
        return None if row is None else _record(row)

    def recent(self, limit: int = 50) -> list[ImportRecord]:
        with self.db.read() as connection:
            rows = connection.execute(sa.select(self.imports).order_by(self.imports.c.id.desc()).limit(limit)
                                      ).mappings().all()
        return [_record(row) for row in rows]

    def error_rows(self, import_id: int) -> Iterator[tuple[int, str, list[str]]]:
        """(row number, reason, original cells) of every rejected row, in file order."""
        with self.db.read() as connection:
            rows = connection.execute(sa.select(self.errors.c.row_number, self.errors.c.reason, self.errors.c.cells)
                                      .where(self.errors.c.import_id == import_id)
                                      .order_by(self.errors.c.row_number)).all()
        for row in rows:
            yield row.row_number, row.reason, list(row.cells)

    def error_file(self, import_id: int, *, xlsx: bool = False) -> bytes:
        """The rejected rows as they were in the file, plus 行号 row and 原因 reason columns —
        fix them and import this file again (CSV UTF-8 with BOM, which Excel opens, or XLSX)."""
        stored = self.get(import_id)
        header = [*(stored.headers if stored is not None else []), "行号 Row", "原因 Reason"]
        rows = ([*cells, number, reason] for number, reason, cells in self.error_rows(import_id))
        if not xlsx:
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow(header)
            writer.writerows(rows)
            return out.getvalue().encode("utf-8-sig")
        import xlsxwriter
        buffer = io.BytesIO()
        workbook = xlsxwriter.Workbook(buffer, {"constant_memory": True, "in_memory": True})
        sheet = workbook.add_worksheet("errors")
        sheet.write_row(0, 0, header)
        for index, row in enumerate(rows, start=1):
            sheet.write_row(index, 0, row)
        workbook.close()
        return buffer.getvalue()



def _record(row: sa.RowMapping) -> ImportRecord:
    return ImportRecord(row["id"], row["entity"], row["mapping"], row["file_name"], row["file_sha256"], row["status"],
                        row["rows_total"], row["next_row"], row["created"], row["merged"], row["rejected"],
                        bool(row["rules"]), bool(row["history"]), row["actor_id"], as_utc(row["started_at"]) or
                        row["started_at"], as_utc(row["finished_at"]), dict(row["owners"] or {}),
                        list(row["headers"] or []))
