"""The worker: a tick that fires due timers, delivers the outbox and runs scheduled jobs.

APScheduler only drives the tick (every second by default); all durable state lives in our
own tables, so any number of workers can run against one PostgreSQL database, and a worker
that was down fires what came due meanwhile, once, oldest first, when it returns.
Scheduled jobs run once per scheduled moment across all workers: the first worker to insert
the (job, moment) row into crm_job_runs — a unique key — runs it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from apscheduler.triggers.cron import CronTrigger

from engine.metamodel.crontab import crontab_trigger
from engine.runtime.background.outbox import LEASE, OutboxMessage, Outcome, claim, record_outcomes, renew_lease
from engine.runtime.background.digests import Digests
from engine.runtime.background.pacing import Pacing
from engine.runtime.background.timers import FireReport, TimerHandler, fire_due_timers
from engine.runtime.storage.times import naive_utc
from engine.rules.retry import RetryPolicy, next_attempt_at
from engine.rules.time import Clock
from engine.runtime.storage.database import Database
from engine.runtime.storage.tables import Schema

Deliver = Callable[[Sequence[OutboxMessage]], list[Outcome]]  # a claimed batch in, an outcome per message out
NextAttempt = Callable[[int, dt.datetime], "dt.datetime | None"]


def one_at_a_time(deliver_one: Callable[[OutboxMessage], Outcome]) -> Deliver:
    """A `Deliver` from a function that sends one message (simple channels, tests)."""
    def attempt(message: OutboxMessage) -> Outcome:
        try:
            return deliver_one(message)
        except Exception as exc:  # one broken message must not hold up the others
            return Outcome(False, True, f"{type(exc).__name__}: {exc}")

    def deliver(messages: Sequence[OutboxMessage]) -> list[Outcome]:
        return [attempt(message) for message in messages]
    return deliver


class _BusyTickFilter(logging.Filter):
    """A tick still running when the next is due is skipped (max_instances=1, coalesced): that
    is the design while the worker catches up, not something to warn about every second."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


def quiet_busy_ticks() -> None:
    scheduler_log = logging.getLogger("apscheduler.scheduler")
    if not any(isinstance(existing, _BusyTickFilter) for existing in scheduler_log.filters):
        scheduler_log.addFilter(_BusyTickFilter())


@dataclass(frozen=True, slots=True)
class ScheduledJob:
    """Run `run(moment)` at every moment matched by the crontab `cron` in `timezone`."""

    name: str
    cron: str
    run: Callable[[dt.datetime], str]
    timezone: str = "Asia/Shanghai"

    def trigger(self) -> CronTrigger:
        return crontab_trigger(self.cron, self.timezone)  # weekday 1 is Monday, as in crontab


@dataclass
class TickReport:
    fired: int = 0
    failed: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    jobs: list[str] = field(default_factory=list)


STATISTICS_EVERY_SECONDS = 3600  # how often a timers worker checks whether the planner's statistics went stale

_DEFAULT_RETRY = RetryPolicy(max_attempts=8, base_delay=dt.timedelta(seconds=10), max_delay=dt.timedelta(minutes=30),
                             jitter=0)


def default_next_attempt(attempts: int, now: dt.datetime) -> dt.datetime | None:
    """Exponential backoff: 10 s, 20 s, 40 s … capped at 30 min; dead after 8 attempts."""
    return next_attempt_at(attempts, now, _DEFAULT_RETRY)


class Worker:
    def __init__(self, db: Database, schema: Schema, clock: Clock, *, handlers: Mapping[str, TimerHandler] | None = None,
                 deliver: Deliver | None = None, next_attempt: NextAttempt = default_next_attempt,
                 jobs: Sequence[ScheduledJob] = (), name: str | None = None, batch: int = 500,
                 fire_timers: bool = True, pacing: Pacing | None = None, digests: Digests | None = None) -> None:
        self.pacing = pacing or {}  # channel → rate limits, shared with every other worker through the database
        self.digests = digests or {}  # channel → when and how its backlog folds into one message
        self.db = db
        self.schema = schema
        self.clock = clock
        self.fire_timers = fire_timers  # False: an outbox-only worker, beside others that fire timers
        self.handlers = dict(handlers or {})
        self.deliver = deliver
        self.next_attempt = next_attempt
        self.jobs = tuple(jobs)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.batch = batch
        self._statistics_due = time.monotonic() + STATISTICS_EVERY_SECONDS

    def tick(self, *, budget_seconds: float = 5.0) -> TickReport:
        """One round: timers until none are due (or the budget is spent), one outbox batch, due jobs."""
        report = TickReport()
        started = time.monotonic()
        while self.fire_timers:
            result: FireReport = fire_due_timers(self.db, self.schema, self.handlers, self.clock.now(),
                                                 worker=self.name, limit=self.batch)
            report.fired += result.fired
            report.failed += result.failed
            if not result.remaining_due or time.monotonic() - started > budget_seconds:
                break
        if self.deliver is not None:
            self._deliver_outbox(self.deliver, report)
        for job in self.jobs:
            if self._run_job_if_due(job):
                report.jobs.append(job.name)
        if self.fire_timers and time.monotonic() >= self._statistics_due:
            self._statistics_due = time.monotonic() + STATISTICS_EVERY_SECONDS
            self.refresh_statistics()
        return report

    def refresh_statistics(self) -> list[str]:
        """The planner's statistics of the entities' tables, refreshed where the row count moved 2×
        since they were taken (Database.analyze); hourly, so lists stay fast as the data grows."""
        analyzed = self.db.analyze(self.schema.tables.values())
        if analyzed:
            logging.getLogger(__name__).info("planner statistics refreshed: %s", "; ".join(analyzed))
        return analyzed

    def _deliver_outbox(self, deliver: Deliver, report: TickReport) -> None:
        """Deliver one claimed batch (the deliverer sends side by side). Each outcome is recorded
        right after its send when the deliverer offers `deliver_each` (a crash later in the batch
        cannot send it twice); the claim's short lease is renewed while the batch is in flight,
        so a worker killed mid-batch holds its unsent messages up for one LEASE at most."""
        messages = claim(self.db, self.schema, self.clock.now(), worker=self.name, pacing=self.pacing,
                         digests=self.digests)
        if not messages:
            return
        recorded: dict[int, str] = {}
        guard = threading.Lock()

        def record(message: OutboxMessage, outcome: Outcome) -> None:
            status = record_outcomes(self.db, self.schema, [(message, outcome)], self.clock.now(), worker=self.name,
                                     next_attempt=self.next_attempt)[0]
            with guard:
                recorded[message.id] = status

        each = getattr(deliver, "deliver_each", None)
        stop = threading.Event()
        keeper = threading.Thread(target=self._keep_lease, args=([m.id for m in messages], stop), daemon=True)
        keeper.start()
        try:
            outcomes = list(each(messages, record) if each is not None else deliver(messages))
        except Exception as exc:  # a deliverer bug must not lose the batch: every unrecorded message is retried
            outcomes = [Outcome(False, True, f"{type(exc).__name__}: {exc}")] * len(messages)
        finally:
            stop.set()
            keeper.join()
        if len(outcomes) != len(messages):
            outcomes = [Outcome(False, True, "the deliverer gave no outcome for this message")] * len(messages)
        rest = [(message, outcome) for message, outcome in zip(messages, outcomes) if message.id not in recorded]
        statuses = list(recorded.values()) + record_outcomes(self.db, self.schema, rest, self.clock.now(),
                                                             worker=self.name, next_attempt=self.next_attempt)
        for status in statuses:
            if status == "delivered":
                report.delivered += 1
            elif status == "dead":
                report.dead += 1
            else:
                report.retried += 1

    def _keep_lease(self, message_ids: list[int], stop: threading.Event) -> None:
        """Renew the batch's lease every third of it until the batch is done."""
        while not stop.wait(LEASE.total_seconds() / 3):
            try:
                renew_lease(self.db, self.schema, message_ids, self.clock.now(), worker=self.name)
            except Exception:  # noqa: BLE001 — a failed renewal only shortens the lease; the next one tries again
                logging.getLogger(__name__).exception("renewing the outbox lease failed")

    def _run_job_if_due(self, job: ScheduledJob) -> bool:
        runs = self.schema.job_runs
        now = self.clock.now()
        with self.db.read() as connection:
            last = connection.execute(sa.select(sa.func.max(runs.c.scheduled_for)).where(runs.c.job == job.name)).scalar()
        since = (last.replace(tzinfo=dt.timezone.utc) if last else now - dt.timedelta(days=1))
        moment = self._latest_fire_time(job, since, now)
        if moment is None:
            return False
        try:
            with self.db.write() as connection:
                connection.execute(runs.insert().values(job=job.name, scheduled_for=naive_utc(moment), status="running",
                                                        worker=self.name, started_at=naive_utc(now)))
        except sa.exc.IntegrityError:
            return False  # another worker holds this run
        status, output = "succeeded", ""
        try:
            output = job.run(moment) or ""
        except Exception as exc:  # recorded in the run log, visible to admins
            status, output = "failed", f"{type(exc).__name__}: {exc}"
        with self.db.write() as connection:
            connection.execute(runs.update().where(runs.c.job == job.name, runs.c.scheduled_for == naive_utc(moment))
                               .values(status=status, output=output[:10000], finished_at=naive_utc(self.clock.now())))
        return True

    @staticmethod
    def _latest_fire_time(job: ScheduledJob, since: dt.datetime, now: dt.datetime) -> dt.datetime | None:
        """The last scheduled moment after `since` and not after `now` (missed runs coalesce into one)."""
        trigger = job.trigger()
        moment: Any = trigger.get_next_fire_time(None, since + dt.timedelta(seconds=1))
        latest = None
        while moment is not None and moment <= now:
            latest = moment
            moment = trigger.get_next_fire_time(moment, moment + dt.timedelta(seconds=1))
        return latest.astimezone(dt.timezone.utc) if latest else None

    def run_forever(self, interval: float = 1.0) -> None:
        """Tick every `interval` seconds until stopped (SIGINT/SIGTERM)."""
        from apscheduler.schedulers.blocking import BlockingScheduler
        quiet_busy_ticks()
        scheduler = BlockingScheduler()
        scheduler.add_job(self.tick, "interval", seconds=interval, max_instances=1, coalesce=True,
                          next_run_time=dt.datetime.now(dt.timezone.utc))
        import signal
        signal.signal(signal.SIGTERM, lambda *_: scheduler.shutdown(wait=False))
        try:
            scheduler.start()
        except (KeyboardInterrupt, SystemExit):
            pass
