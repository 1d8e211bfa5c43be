"""The `crm` command: validate, migrate, serve, demo."""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from zoneinfo import ZoneInfo

import click

from engine.analytics import Figure, Period, period_at, point_name, split_period
from engine.engine import Engine, open_engine
from engine.extensions import Extensions, load_extensions
from engine.io.demo import USERS as DEMO_USERS
from engine.io.demo import demo_password, seed_demo
from engine.metamodel import BlueprintInvalid, Metamodel
from engine.metamodel.cache import load_blueprint_cached
from engine.runtime.ops.users import NewUser, chat_types, parse_im_ids
from engine.runtime.records.actors import SYSTEM, Actor
from engine.runtime.records.errors import RecordError
from engine.runtime.storage.database import Database
from engine.runtime.storage.migrations import apply_migration, plan_migration
from engine.runtime.storage.tables import build_schema
from engine.runtime.web.auth import SecretKeyMissing, secret_key
from engine.runtime.web.server import BODY_IDLE_TIMEOUT, HEADER_TIMEOUT, deadline_protocol

SHIPPED_BLUEPRINT = Path(__file__).resolve().parent / "blueprints" / "crm"
DEFAULT_DB = "sqlite:///crm.sqlite"  # `crm demo` writes here too, so every command finds the demo's data


def _local(moment: Any, zone: str) -> str:
    """A stored UTC moment as the screens show it: in the blueprint's business time zone."""
    if moment is None:
        return "-"
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return f"{moment.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M:%S}"


def cli_language() -> str:
    """The language the `crm` command speaks: CRM_LANG, else the locale (LC_ALL, LC_MESSAGES,
    LANG) when it names Chinese or English, else English (scripts parse it; `C.UTF-8` is English)."""
    import os

    for name in ("CRM_LANG", "LC_ALL", "LC_MESSAGES", "LANG"):
        code = os.environ.get(name, "").strip().lower()[:2]
        if code in ("zh", "en"):
            return code
        if name == "CRM_LANG" and code:
            break  # an explicit but unknown CRM_LANG: English, not whatever the locale says
    return "en"


def say(key: str, **values: object) -> str:
    """The CLI message `key` (catalogue id `cli_<key>`) in the CLI's language."""
    from engine.runtime.web.screens.i18n import translate

    return translate(cli_language(), f"cli_{key}", **values)


def _words() -> Callable[..., str]:
    """The catalogue's texts in the CLI's language, for reports that take the reader's words."""
    import functools

    from engine.runtime.web.screens.i18n import translate

    return functools.partial(translate, cli_language())


_Command = TypeVar("_Command", bound=Callable[..., Any])


class DatabaseUrl(click.ParamType[str]):
    """A database URL, or a plain file path meaning a SQLite file there (`--db demo.sqlite`)."""

    name = "url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        import sqlalchemy as sa

        text = str(value).strip()
        if "://" not in text:
            if not text:
                self.fail(say("db_url_empty"), param, ctx)
            return f"sqlite:///{text}"
        try:
            sa.engine.make_url(text).get_dialect().import_dbapi()  # an unknown scheme or missing driver too
        except (sa.exc.ArgumentError, ValueError, ImportError):
            self.fail(say("db_url_invalid", value=text), param, ctx)
        return text


def _blueprint_option(function: _Command) -> _Command:
    return click.option("--blueprint", "blueprint", envvar="CRM_BLUEPRINT", default=str(SHIPPED_BLUEPRINT),
                        show_default="the shipped CRM blueprint (CRM_BLUEPRINT overrides)",
                        help="Blueprint folder or app file.")(function)


def _db_option(function: _Command) -> _Command:
    return click.option("--db", "db_url", envvar="CRM_DATABASE_URL", default=DEFAULT_DB, type=DatabaseUrl(),
                        show_default="crm.sqlite in this folder (CRM_DATABASE_URL overrides)",
                        help="Database URL (sqlite:///file.sqlite, postgresql://user@host/db) or a SQLite file's path")(function)


def extensions_or_exit() -> Extensions:
    """The engine's own and the installed plugins, or the reason they cannot work together (status 1)."""
    try:
        return load_extensions()
    except ValueError as exc:  # PluginError, WidgetConfigError: two plugins claim one name
        click.echo(f"plugins: {exc}", err=True)
        sys.exit(1)


def load_or_exit(path: str, extensions: Extensions | None = None) -> Metamodel:
    """Load the blueprint against what the installed plugins provide, or print every error
    and exit with status 1."""
    vocabulary = (extensions or extensions_or_exit()).vocabulary
    try:
        model = load_blueprint_cached(path, vocabulary=vocabulary)
    except BlueprintInvalid as exc:
        click.echo(exc.text(cli_language()), err=True)
        sys.exit(1)
    for warning in model.warnings:
        click.echo(warning.text(cli_language()), err=True)
    return model


class _Commands(click.Group):
    """The `crm` group: a database that cannot be reached is said in one line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        import sqlalchemy as sa

        try:
            return super().invoke(ctx)
        except sa.exc.OperationalError as exc:
            click.echo(say("db_unreachable", error=str(exc.orig or exc).strip().splitlines()[0]), err=True)
            sys.exit(1)


@click.group(cls=_Commands)
def main() -> None:
    """blueprint-crm: a CRM engine driven by YAML blueprints."""


@main.command()
@click.argument("path", type=click.Path(exists=True))
def validate(path: str) -> None:
    """Check a blueprint; print every error with file:line, or a summary when valid."""
    model = load_or_exit(path)
    lang = cli_language()
    click.echo(say("valid", name=model.name, label=model.label.text(lang), count=len(model.entities)))
    for entity in model.entities:
        links = [f"{f.name}→{f.link_entity}" for f in entity.fields if f.link_entity]
        extras = []
        if entity.dedup:
            extras.append(say("validate_dedup", keys=" | ".join("+".join(key) for key in entity.dedup.keys),
                              action=entity.dedup.on_match.value))
        if entity.list_views:
            extras.append(say("validate_views", count=len(entity.list_views)))
        if links:
            extras.append(say("validate_links", links=", ".join(links)))
        click.echo(f"  {entity.name:<14} " + say("validate_entity", label=entity.label.text(lang), count=len(entity.fields))
                   + "".join(say("validate_separator") + extra for extra in extras))
    counts = [(len(model.roles), "roles"), (len(model.rules), "rules"), (len(model.routing), "routing"),
              (len(model.sources), "sources")]
    for kind in ("calendars", "slas", "channels", "cadences", "jobs", "imports"):
        counts.append((len(getattr(model, kind, ())), kind))
    click.echo("  " + say("validate_list_separator").join(say(f"validate_count_{what}", count=count)
                                                           for count, what in counts if count))
    for funnel in model.funnels:
        click.echo("  " + say("validate_funnel", name=funnel.name, entity=funnel.entity, field=funnel.field,
                              path=" → ".join(stage.name for stage in funnel.path),
                              gated=sum(1 for stage in funnel.stages if stage.requirements)))
    for sla in model.slas:
        if sla.name.startswith("approval:"):
            continue  # an approval step's deadline: shown with its approval below
        click.echo("  " + say("validate_sla_from_created" if sla.counts_from_creation else "validate_sla",
                              name=sla.name, entity=sla.entity, start=sla.starts.kind))
    for approval in model.approvals:
        steps = " → ".join(" + ".join(step.name + ("?" if step.when else "") for step in group)
                           for group in approval.groups())
        click.echo("  " + say("validate_approval", name=approval.name, entity=approval.entity, steps=steps))
    if model.warnings:
        click.echo(say("warnings_above", count=len(model.warnings)))


def _open(db_url: str, blueprint: str, *, migrate: bool = True) -> Engine:
    """Load the blueprint and connect; safe schema changes apply, refused ones are reported."""
    extensions = extensions_or_exit()
    model = load_or_exit(blueprint, extensions)
    engine = open_engine(model, db_url, migrate=migrate, extensions=extensions)
    if engine.migration and engine.migration.refused:
        click.echo(engine.migration.describe(), err=True)
    return engine


@main.command()
@_db_option
@_blueprint_option
@click.option("--plan", "plan_only", is_flag=True, help="Print what would change and change nothing.")
@click.option("--allow-destructive", is_flag=True, help="Also drop columns/tables and narrow types (after a backup!).")
def migrate(db_url: str, blueprint: str, plan_only: bool, allow_destructive: bool) -> None:
    """Bring the database in line with the blueprint."""
    extensions = extensions_or_exit()
    model = load_or_exit(blueprint, extensions)
    schema = build_schema(model, extensions.field_kinds)
    if plan_only and db_url.startswith("sqlite:///") and not Path(db_url.removeprefix("sqlite:///")).exists():
        # planning changes nothing: no file is created; the plan is the one for an empty database
        click.echo(say("plan_new_file", file=db_url.removeprefix('sqlite:///')))
        db_url = "sqlite://"
    db = Database(db_url)
    try:
        if plan_only:
            plan = plan_migration(db, schema)
            click.echo(plan.describe())
            if plan.destructive:
                click.echo(say("plan_destructive", count=len(plan.destructive)))
            return
        outcome = apply_migration(db, schema, allow_destructive=allow_destructive)
        click.echo(outcome.describe())
        if outcome.refused:
            sys.exit(1)
    finally:
        db.dispose()


def _serve(engine: Engine, host: str, port: int, with_worker: bool | None = None, access_log: bool = False, *,
           required_key: bool = True, header_timeout: float = HEADER_TIMEOUT,
           body_timeout: float = BODY_IDLE_TIMEOUT) -> None:
    """Serve over HTTP; on SQLite (or when asked) the worker ticks in this process too.
    uvicorn logs at info level (start, stop, warnings, errors with their traceback); one line
    per request only with `access_log` (formatting and writing it costs CPU on every request).
    A client gets `header_timeout` seconds to send a request's headers and may not stall a body for
    longer than `body_timeout` (engine/runtime/web/server.py)."""
    import uvicorn
    run_worker = engine.db.is_sqlite if with_worker is None else with_worker
    click.echo(say("serving", host=host, port=port))
    if run_worker:
        click.echo(say("worker_inside"))
    click.echo(say("access_log_on") if access_log else say("access_log_off"))
    try:
        app = engine.web_app(key=secret_key(engine.db.url, required=required_key))
    except SecretKeyMissing as missing:
        _fail(str(missing))
    stop = engine.start_background_worker() if run_worker else None
    try:
        # SIGTERM/Ctrl+C: stop accepting, let requests under way finish for at most 10 s, then exit
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=access_log, timeout_graceful_shutdown=10,
                    http=deadline_protocol(header_timeout, body_timeout))
    finally:
        if stop is not None:
            stop()


@main.command()
@_db_option
@_blueprint_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--worker/--no-worker", "with_worker", default=None,
              help="Run the worker in this process [default: on for SQLite, off for PostgreSQL].")
@click.option("--access-log/--no-access-log", "access_log", envvar="CRM_ACCESS_LOG", default=False, show_default=True,
              help="Log one line per request (method, path, status).")
@click.option("--header-timeout", envvar="CRM_HEADER_TIMEOUT", default=HEADER_TIMEOUT, show_default=True,
              type=click.FloatRange(min=0.1),
              help="Seconds a client gets to send a request's headers before it is answered 408 and disconnected.")
@click.option("--body-timeout", envvar="CRM_BODY_TIMEOUT", default=BODY_IDLE_TIMEOUT, show_default=True,
              type=click.FloatRange(min=0.1),
              help="Seconds a request body may stall between two chunks before it is answered 408 and disconnected.")
def serve(db_url: str, blueprint: str, host: str, port: int, with_worker: bool | None, access_log: bool,
          header_timeout: float, body_timeout: float) -> None:
    """Serve the screens, the JSON API and the webhooks."""
    _serve(_open(db_url, blueprint), host, port, with_worker, access_log, header_timeout=header_timeout,
           body_timeout=body_timeout)


@main.command()
@click.option("--db", "db_url", envvar="CRM_DATABASE_URL", default=DEFAULT_DB, type=DatabaseUrl(),
              show_default="crm.sqlite in this folder, the same as every other command (CRM_DATABASE_URL overrides)",
              help="Where the demo data goes: a SQLite file's path or a database URL.")
@_blueprint_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--leads", default=600, show_default=True, type=int, help="How many demo leads.")
@click.option("--fresh", is_flag=True, help="Delete the SQLite file first (all of its data) and start over.")
@click.option("--no-serve", is_flag=True, help="Only create the data.")
def demo(db_url: str, blueprint: str, host: str, port: int, leads: int, fresh: bool, no_serve: bool) -> None:
    """Create a SQLite file with realistic demo data and serve it."""
    if fresh and db_url.startswith("sqlite:///"):
        for suffix in ("", "-wal", "-shm"):
            Path(db_url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
    engine = _open(db_url, blueprint)
    try:
        summary = seed_demo(engine, leads=leads)
    except ValueError:
        click.echo(say("demo_exists", db=db_url))
        existing = {row.username: row for row in engine.users.all()}
        people = [existing[user.username] for user in DEMO_USERS if user.username in existing]
    else:
        counts = ", ".join(f"{count} {entity}" for entity, count in summary.counts.items())
        click.echo(say("demo_created", db=db_url, counts=counts))
        people = list(summary.users)
    if people:  # every time, so the second run still says how to sign in
        click.echo(say("demo_sign_ins"))
        for user in people:
            click.echo(say("demo_person", username=f"{user.username:<8}", password=f"{demo_password(user.username):<16}",
                           role=user.role, team=user.team or "-"))
    if not no_serve:
        _serve(engine, host, port, required_key=False)  # the demo keeps a generated key beside its database


@main.command()
@_db_option
@_blueprint_option
@click.argument("entity")
@click.argument("record_id", type=int)
def explain(db_url: str, blueprint: str, entity: str, record_id: int) -> None:
    """Why ENTITY RECORD_ID is as it is: every rule evaluated, the values each condition saw,
    the actions taken or why none, and each routing decision with who was skipped."""
    engine = _open(db_url, blueprint)
    lang = cli_language()
    if lang != "en":  # the reasoning below is stored in English: first the changes in the reader's words
        lines = engine.doctor.decision_lines(entity, record_id, lang)
        if lines:
            click.echo(say("explain_decisions") + "\n" + "\n".join(f"  {line}" for line in lines) + "\n")
        click.echo(say("explain_detail"))
    click.echo(engine.doctor.explain(entity, record_id))


@main.command()
@_db_option
@_blueprint_option
@click.argument("dashboard", required=False)
@click.argument("widget", required=False)
@click.option("--period", default=None, help="day, week, month, quarter, year or all (default: the dashboard's).")
@click.option("--previous", is_flag=True, help="The period before the current one.")
@click.option("--date", "on", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="The period that contains this day, YYYY-MM-DD (default: today, business time zone).")
@click.option("--by", "by", default=None, help="Slice by this field instead of the widget's (record figures).")
@click.option("--filter", "filters", multiple=True, help="FIELD=VALUE, as the dashboard's filters; repeatable.")
@click.option("--as", "username", default=None, help="Whose read scope applies (default: everything).")
@click.option("--lang", default="zh", show_default=True)
@click.option("--format", "output", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
def metrics(db_url: str, blueprint: str, dashboard: str | None, widget: str | None, period: str | None,
            previous: bool, on: dt.datetime | None, by: str | None, filters: tuple[str, ...], username: str | None, lang: str,
            output: str) -> None:
    """Print a dashboard widget's figures (DASHBOARD WIDGET) with the link behind each; without
    arguments, list the declared dashboards and widgets."""
    engine = _open(db_url, blueprint)
    model = engine.model
    if dashboard is None or widget is None:
        for spec in model.dashboards:
            click.echo(f"{spec.name} ({spec.label.text(lang)}): " + ", ".join(w.name for w in spec.widgets))
        return
    if not any(spec.name == dashboard for spec in model.dashboards):
        _fail(say("no_dashboard", dashboard=dashboard, known=", ".join(spec.name for spec in model.dashboards) or "—"))
    spec = model.dashboard(dashboard)
    if not any(w.name == widget for w in spec.widgets):
        _fail(say("no_widget", dashboard=dashboard, widget=widget, known=", ".join(w.name for w in spec.widgets)))
    chosen = spec.widget(widget)
    actor: Actor = SYSTEM
    if username is not None:
        found = engine.users.find(username)
        if found is None:
            _fail(say("no_user", username=username))
        actor = found
    pairs = {}
    for item in filters:
        name, sep, value = item.partition("=")
        if not sep:
            _fail(say("filter_form", item=item))
        pairs[name] = value
    try:
        zone = model.settings.timezone
        now = engine.clock.now() if on is None else on.replace(hour=12, tzinfo=ZoneInfo(zone))
        when = period_at(period or chosen.span or spec.period, now, zone, 1 if previous else 0)
    except ValueError as error:
        _fail(str(error))
    header: list[str]
    rows: list[list[Any]]
    try:
        if chosen.funnel is not None and chosen.kind.value in ("stages", "heatmap"):
            cells = engine.analytics.stage_cells(model.funnel(chosen.funnel), actor=actor, period=when,
                                                 filters=pairs, rows=chosen.rows, lang=lang)
            labels = engine.analytics.row_labels(model.funnel(chosen.funnel), chosen.rows, cells, lang) \
                if chosen.rows else {None: ""}
            header = ["row", "stage", "entered", "left", "dwell_mean_days", "dwell_median_days", "conversion",
                      "skip_rate", "return_rate", "url"]
            rows = [[labels.get(key, key), cell.stage, cell.entered, cell.left, cell.dwell_mean, cell.dwell_median,
                     cell.conversion, cell.skip_rate, cell.return_rate, cell.urls["left"]]
                    for key, row in cells.items() for cell in row.values() if cell.entered or cell.left]
        elif chosen.kind.value == "line":  # a row per point, with the previous period's same point
            current, before = split_period(when, str(chosen.every), now, zone)

            def point(piece: Period) -> Figure:
                return engine.analytics.figures(chosen, actor=actor, period=piece, filters=pairs, lang=lang)[0]

            header = ["point", "records", chosen.measure.text, "previous", "url"]
            rows = []
            for index, piece in enumerate(current):
                figure = point(piece)
                old = point(before[index]).value if index < len(before) else None
                rows.append([point_name(piece, str(chosen.every)), figure.count, figure.value, old, figure.url])
                if chosen.has_rate:
                    rows[-1] += [figure.numerator, figure.numerator_url]
            if chosen.has_rate:
                header += ["counted", "counted_url"]
        elif chosen.kind.value == "stuck":
            total, url, stuck = engine.analytics.stuck(chosen, actor=actor, filters=pairs, now=engine.clock.now())
            header = ["id", "title", "stage", "days_in_stage", "norm_days", "url"]
            rows = [[item.id, item.title, item.stage, item.days, item.norm,
                     f"/{model.funnel(str(chosen.funnel)).entity}/{item.id}"] for item in stuck]
            rows.append(["", f"total {total}", "", "", "", url])
        else:
            figures = engine.analytics.figures(chosen, actor=actor, period=when, filters=pairs, lang=lang, by=by)
            header = ["group", "records", *(m.text for m in chosen.measures), "url"]
            rows = [[figure.label, figure.count, *figure.values, figure.url] for figure in figures]
            if chosen.has_rate:  # a rate's numerator and the list of exactly those records
                header += ["counted", "counted_url"]
                rows = [[*row, figure.numerator, figure.numerator_url] for row, figure in zip(rows, figures, strict=True)]
    except RecordError as error:
        _fail(error.message)
    click.echo(f"# {spec.label.text(lang)} / {chosen.label.text(lang)} — {when.name} {when.text()}", err=True)
    if output == "json":
        click.echo(json.dumps([dict(zip(header, row)) for row in rows], ensure_ascii=False, default=str, indent=2))
    elif output == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(header)
        writer.writerows(rows)
    else:
        for row in [header, *rows]:
            click.echo("\t".join("" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)
                                 for value in row))


@main.command()
@_db_option
@_blueprint_option
def doctor(db_url: str, blueprint: str) -> None:
    """Check the installation for the usual causes of records stuck unassigned; exit 1 on errors."""
    engine = _open(db_url, blueprint)
    findings = engine.doctor.diagnose(cli_language())
    for finding in findings:
        click.echo(str(finding))
    errors = sum(1 for finding in findings if finding.severity == "error")
    click.echo(say("doctor_counts", errors=errors, others=len(findings) - errors))
    if errors:
        sys.exit(1)


@main.command()
@_db_option
@_blueprint_option
@click.argument("entity")
@click.option("--where", "where", required=True,
              help='Which records, as a blueprint expression, e.g. "is_empty(owner)" or "source == \'website\'".')
@click.option("--reason", default="re-routed after a routing fix", show_default=True,
              help="Recorded on each record's timeline.")
@click.option("--dry-run", is_flag=True, help="Only count the records that match.")
def route(db_url: str, blueprint: str, entity: str, where: str, reason: str, dry_run: bool) -> None:
    """Route ENTITY records again through the routing policies (after fixing a policy that
    stranded them); each gets a 'rerouted' timeline entry with the reason."""
    from engine.runtime.automation.reroute import RerouteRefused
    from engine.runtime.records.actors import Actor
    engine = _open(db_url, blueprint)
    try:
        ids = engine.rerouter.matching(entity, where)
        if dry_run:
            click.echo(say("route_matching", count=len(ids), entity=entity, where=where))
            return
        report = engine.rerouter.reroute(entity, ids, actor=Actor(None, "crm route", role="system", is_system=True),
                                         reason=reason)
    except RerouteRefused as exc:
        _fail(str(exc))
    click.echo(report.summary())
    for record_id, why in report.skipped[:20]:
        click.echo(f"  {entity} {record_id}: {why}")
    if report.parked:
        click.echo(say("route_still_unassigned", ids=", ".join(map(str, report.parked[:20]))
                       + (" …" if len(report.parked) > 20 else ""), entity=entity))
        sys.exit(1)


@main.group()
def hooks() -> None:
    """Inbound webhook deliveries: list them, replay one, prune old ones."""


@hooks.command("prune")
@_db_option
@_blueprint_option
@click.option("--days", default=30, show_default=True, type=click.IntRange(1, 3650),
              help="Keep the deliveries of this many days.")
def hooks_prune(db_url: str, blueprint: str, days: int) -> None:
    """Delete deliveries (and their raw bodies) older than DAYS; run it daily (cron or a `jobs:` entry)."""
    click.echo(say("hooks_pruned", count=_open(db_url, blueprint).intake.prune(days), days=days))


@hooks.command("list")
@_db_option
@_blueprint_option
@click.option("--source", default=None)
@click.option("--status", default=None, help="received, processed, duplicate, rejected or failed")
@click.option("--limit", default=50, show_default=True)
def hooks_list(db_url: str, blueprint: str, source: str | None, status: str | None, limit: int) -> None:
    """The latest deliveries, newest first, with their outcome."""
    engine = _open(db_url, blueprint)
    zone = engine.model.settings.timezone
    for row in engine.intake.deliveries(source=source, status=status, limit=limit):
        target = f"{row.entity} {row.record_id}" if row.record_id else "-"
        made = [f"{item['entity']} {item['id']} {item['outcome']}" for item in row.records or []
                if (item["entity"], item["id"]) != (row.entity, row.record_id)]  # a source's records: besides its own
        click.echo(f"{row.id:>6}  {_local(row.received_at, zone)}  {row.source:<16} {row.status:<10} "
                   f"{target:<14} {'with ' + ', '.join(made) + ' ' if made else ''}{row.error or ''}")


@hooks.command("replay")
@_db_option
@_blueprint_option
@click.argument("delivery_ids", type=int, nargs=-1)
@click.option("--stuck", is_flag=True, help="Every delivery still 'received' 5 minutes after it arrived.")
@click.option("--skip-auth", is_flag=True,
              help="Do not check the token or signature again (a stale timestamp would refuse an old delivery).")
def hooks_replay(db_url: str, blueprint: str, delivery_ids: tuple[int, ...], stuck: bool, skip_auth: bool) -> None:
    """Process logged deliveries again (after fixing the mapping or the blueprint). The token or
    signature is checked again unless --skip-auth is given."""
    engine = _open(db_url, blueprint)
    ids = list(delivery_ids) + ([row.id for row in engine.intake.stuck()] if stuck else [])
    if not ids:
        _fail(say("hooks_name_one" if not stuck else "hooks_none_stuck"))
    click.echo(say("hooks_auth_skipped" if skip_auth else "hooks_auth_checked"))
    refused = 0
    for delivery_id in ids:
        try:
            result = engine.intake.replay(delivery_id, check_auth=not skip_auth)
        except LookupError as exc:
            _fail(str(exc))
        click.echo(f"{delivery_id}: {result.outcome}: {result.message}")
        refused += result.outcome in ("rejected", "failed")
    if refused:
        sys.exit(1)


@main.group()
def user() -> None:
    """Manage users: add, list, set-role, im, disable, enable, leave, token, password."""


def _user_runtime(db_url: str, blueprint: str) -> Engine:
    return _open(db_url, blueprint)


def _audit(engine: Engine, action: str, target: str, detail: dict[str, Any] | None = None) -> None:
    """Record a `crm user` change in the audit log the admin screens show (/admin/audit)."""
    import getpass

    from engine.runtime.ops.audit import AuditLog
    from engine.runtime.records.actors import Actor

    try:
        who = getpass.getuser()
    except Exception:  # no login name in this environment (a container): say it was the CLI
        who = "?"
    AuditLog(engine.schema, engine.db, engine.clock).record(Actor(None, f"cli:{who}"[:64], None, None), action,
                                                            target, detail)


def _fail(message: str) -> NoReturn:
    click.echo(say("error", message=message), err=True)
    sys.exit(1)


@user.command("add")
@_db_option
@_blueprint_option
@click.argument("username")
@click.option("--role", required=True, help="A role declared in the blueprint.")
@click.option("--name", "display_name", default=None, help="Display name (default: the username).")
@click.option("--team", default=None)
@click.option("--manager", default=None, help="Username of the manager.")
@click.option("--email", default=None)
@click.option("--phone", default=None, help="Mobile number (DingTalk and WeCom robots @mention by it).")
@click.option("--im", "im", multiple=True, metavar="TYPE=ID",
              help="Chat id for @mentions, repeatable: feishu=ou_…, slack=U…, dingtalk=…, wecom=….")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, envvar="CRM_NEW_PASSWORD")
def user_add(db_url: str, blueprint: str, username: str, role: str, display_name: str | None, team: str | None,
             manager: str | None, email: str | None, phone: str | None, im: tuple[str, ...], password: str) -> None:
    """Add a user who signs in with USERNAME."""
    engine = _user_runtime(db_url, blueprint)
    try:
        actor = engine.users.add(NewUser(username, display_name or username, role, team, manager, email, phone,
                                          password=password,
                                          im_ids=parse_im_ids(im, chat_types(engine.extensions.channels.names))))
    except ValueError as exc:
        _fail(str(exc))
    _audit(engine, "user_created", username, {"role": role, "team": team})
    click.echo(say("user_added", username=username, id=actor.id, role=role))


@user.command("list")
@_db_option
@_blueprint_option
def user_list(db_url: str, blueprint: str) -> None:
    """List users with role, team and state."""
    for row in _user_runtime(db_url, blueprint).users.all():
        state = say("user_active") if row.is_active else say("user_disabled")
        if row.on_leave:
            state += say("user_on_leave")
        click.echo(f"{row.id:>4}  {row.username:<16} {row.role or '-':<16} {row.team or '-':<10} {state:<18} "
                   f"{row.display_name or ''}")


@user.command("set-role")
@_db_option
@_blueprint_option
@click.argument("username")
@click.argument("role")
def user_set_role(db_url: str, blueprint: str, username: str, role: str) -> None:
    """Give USERNAME the role ROLE (it applies at their next request)."""
    _change_user(db_url, blueprint, username, say("user_role_set", username=username, role=role), "role", role=role)


@user.command("im")
@_db_option
@_blueprint_option
@click.argument("username")
@click.argument("ids", nargs=-1, required=True, metavar="TYPE=ID...")
def user_im(db_url: str, blueprint: str, username: str, ids: tuple[str, ...]) -> None:
    """Set USERNAME's chat ids for @mentions, e.g. feishu=ou_… slack=U… (TYPE= clears one)."""
    engine = _user_runtime(db_url, blueprint)
    try:
        changes = parse_im_ids(ids, chat_types(engine.extensions.channels.names))
        current = next((dict(row.im_ids or {}) for row in engine.users.all() if row.username == username), None)
        if current is None:
            raise ValueError(f"there is no user '{username}'")
        merged = {kind: value for kind, value in {**current, **changes}.items() if value}
        engine.users.update(username, im_ids=merged or None)
    except ValueError as exc:
        _fail(str(exc))
    _audit(engine, "user_im", username, {"im_ids": sorted(merged)})
    click.echo(f"{username}: " + (", ".join(f"{kind}={value}" for kind, value in sorted(merged.items())) or
                                  say("no_chat_ids")))


def _change_user(db_url: str, blueprint: str, username: str, done: str, action: str, **values: object) -> None:
    engine = _user_runtime(db_url, blueprint)
    try:
        engine.users.update(username, **values)
    except ValueError as exc:
        _fail(str(exc))
    _audit(engine, f"user_{action}", username, {key: value for key, value in values.items() if key == "role"})
    click.echo(done)


@user.command("disable")
@_db_option
@_blueprint_option
@click.argument("username")
def user_disable(db_url: str, blueprint: str, username: str) -> None:
    """Stop USERNAME from signing in or using tokens (their records stay)."""
    _change_user(db_url, blueprint, username, say("user_disabled_done", username=username), "disable", is_active=False)


@user.command("enable")
@_db_option
@_blueprint_option
@click.argument("username")
def user_enable(db_url: str, blueprint: str, username: str) -> None:
    """Let a disabled user sign in again."""
    _change_user(db_url, blueprint, username, say("user_enabled_done", username=username), "enable", is_active=True)


@user.command("leave")
@_db_option
@_blueprint_option
@click.argument("username")
@click.option("--back", is_flag=True, help="The user is back from leave.")
def user_leave(db_url: str, blueprint: str, username: str, back: bool) -> None:
    """Mark USERNAME on leave (routing skips them) or back."""
    _change_user(db_url, blueprint, username, say("user_back" if back else "user_leave", username=username),
                 "back_from_leave" if back else "leave", on_leave=not back)


@user.command("token")
@_db_option
@_blueprint_option
@click.argument("username")
@click.option("--name", default="api", show_default=True, help="What the token is for.")
def user_token(db_url: str, blueprint: str, username: str, name: str) -> None:
    """Create an API token for USERNAME (same as `crm token create`; shown once, sent as
    'Authorization: Bearer …')."""
    engine = _user_runtime(db_url, blueprint)
    try:
        click.echo(engine.users.create_token(username, name))
    except ValueError as exc:
        _fail(str(exc))
    _audit(engine, "user_token", username, {"name": name})


@user.command("sign-out")
@_db_option
@_blueprint_option
@click.argument("username")
def user_sign_out(db_url: str, blueprint: str, username: str) -> None:
    """End every browser session of USERNAME at once (a lost laptop, a shared screen)."""
    try:
        users = _user_runtime(db_url, blueprint).users
        ended = users.sessions.end_all(users.user_id(username))
    except ValueError as exc:
        _fail(str(exc))
    click.echo(say("sessions_ended", count=ended, username=username))


@main.group()
def token() -> None:
    """API tokens: create (shown once), list, revoke."""


@token.command("create")
@_db_option
@_blueprint_option
@click.argument("username")
@click.option("--name", default="api", show_default=True, help="What the token is for.")
@click.option("--scope", type=click.Choice(["write", "read"]), default="write", show_default=True,
              help="read: GET requests only.")
@click.option("--days", default=90, show_default=True, type=click.IntRange(1, 3650), help="Expires after.")
def token_create(db_url: str, blueprint: str, username: str, name: str, scope: str, days: int) -> None:
    """Create an API token for USERNAME (shown once; send it as 'Authorization: Bearer …')."""
    engine = _user_runtime(db_url, blueprint)
    try:
        click.echo(engine.users.create_token(username, name, scope=scope, days=days))
    except ValueError as exc:
        _fail(str(exc))
    _audit(engine, "user_token", username, {"name": name})


@token.command("list")
@_db_option
@_blueprint_option
@click.argument("username", required=False)
def token_list(db_url: str, blueprint: str, username: str | None) -> None:
    """Every token (of USERNAME): id, user, name, scope, expiry, last use, state."""
    engine = _user_runtime(db_url, blueprint)
    users, zone = engine.users, engine.model.settings.timezone
    try:
        found = users.sessions.list_tokens(users.user_id(username) if username else None)
    except ValueError as exc:
        _fail(str(exc))
    for info in found:  # times in the business time zone, as the admin screen shows them
        expires = _local(info.expires_at, zone)[:10] if info.expires_at else say("token_never")
        used = _local(info.last_used_at, zone)[:16] if info.last_used_at else say("token_never_used")
        click.echo(f"{info.id:>5}  {info.username:<16} {info.name:<16} {info.scope:<6} "
                   f"{say('token_expires', date=expires):<16} {used:<17} {info.state}")


@token.command("revoke")
@_db_option
@_blueprint_option
@click.argument("token_id", type=int)
def token_revoke(db_url: str, blueprint: str, token_id: int) -> None:
    """Revoke one token by its id (from `crm token list`); it is refused from the next request on."""
    engine = _user_runtime(db_url, blueprint)
    info = next((info for info in engine.users.sessions.list_tokens() if info.id == token_id), None)
    try:
        engine.users.sessions.revoke_token(token_id)
    except ValueError as exc:
        _fail(str(exc))
    if info is not None:
        _audit(engine, "user_revoke", info.username, {"name": info.name})
    click.echo(say("token_revoked", id=token_id))


@user.command("password")
@_db_option
@_blueprint_option
@click.argument("username")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, envvar="CRM_NEW_PASSWORD")
def user_password(db_url: str, blueprint: str, username: str, password: str) -> None:
    """Set USERNAME's password."""
    engine = _user_runtime(db_url, blueprint)
    try:
        engine.users.set_password(username, password)
    except ValueError as exc:
        _fail(str(exc))
    _audit(engine, "user_password", username)
    click.echo(say("password_changed", username=username))


# --- the worker, the outbox, scheduled-job runs (engine/engine/background/) ---

@main.command()
@_db_option
@_blueprint_option
@click.option("--interval", default=1.0, show_default=True, type=float, help="Seconds between ticks.")
@click.option("--once", is_flag=True, help="Run one tick, print what it did and exit.")
@click.option("--role", type=click.Choice(["all", "timers", "outbox"]), default="all", show_default=True,
              help="Split the work between processes: 'timers' fires timers and runs jobs, 'outbox' only "
                   "delivers notifications (run one of each, or several of either).")
def worker(db_url: str, blueprint: str, interval: float, once: bool, role: str) -> None:
    """Fire due SLA and cadence timers, deliver the outbox, run scheduled jobs (Ctrl+C stops it)."""
    from engine.runtime.background.delivery import channel_warnings

    engine = _open(db_url, blueprint)
    for warning in channel_warnings(engine.model):
        click.echo(say("channel_warning", warning=warning), err=True)
    running = engine.worker(role=role)
    if once:
        report = running.tick()
        click.echo(say("worker_tick", fired=report.fired, failed=report.failed, delivered=report.delivered,
                       retried=report.retried, dead=report.dead, jobs=", ".join(report.jobs) or say("none")))
        return
    click.echo(say("worker_running", name=running.name, role=role, interval=f"{interval:g}", db=db_url))
    running.run_forever(interval)


@main.group()
def outbox() -> None:
    """Outgoing notifications: list them (e.g. the dead letters), retry dead ones."""


@outbox.command("list")
@_db_option
@_blueprint_option
@click.option("--status", default=None, help="pending, sending, delivered, dead or merged (folded into a digest)")
@click.option("--limit", default=50, show_default=True)
def outbox_list(db_url: str, blueprint: str, status: str | None, limit: int) -> None:
    """The latest messages, newest first, with attempts and the last error."""
    from engine.runtime.background.outbox import list_messages

    engine = _open(db_url, blueprint)
    rows = list_messages(engine.db, engine.schema, status=status, limit=limit)
    for row in rows:
        target = f"{row['entity']} {row['record_id']}" if row["record_id"] else "-"
        click.echo(f"{row['id']:>6}  {_local(row['created_at'], engine.model.settings.timezone)}  {row['channel']:<20} "
                   f"{row['status']:<9} {row['attempts']:>2}x  {target:<14} {row['last_error'] or ''}")
    if not rows:
        click.echo(say("no_messages_status", status=status) if status else say("no_messages"))


@outbox.command("retry")
@_db_option
@_blueprint_option
@click.argument("message_id", type=int, required=False)
@click.option("--all", "retry_all", is_flag=True, help="Retry every dead message.")
def outbox_retry(db_url: str, blueprint: str, message_id: int | None, retry_all: bool) -> None:
    """Put dead message MESSAGE_ID (or --all of them) back in the queue for the worker."""
    from engine.runtime.background.outbox import retry_dead

    if (message_id is None) == (not retry_all):
        _fail(say("give_message"))
    engine = _open(db_url, blueprint)
    count = retry_dead(engine.db, engine.schema, engine.clock.now(), None if retry_all else message_id)
    if message_id is not None and count == 0:
        _fail(say("message_not_dead", id=message_id))
    click.echo(say("messages_queued", count=count))


@main.command("jobs")
@_db_option
@_blueprint_option
@click.option("--limit", default=20, show_default=True)
def jobs_log(db_url: str, blueprint: str, limit: int) -> None:
    """The blueprint's scheduled jobs and their latest runs (from crm_job_runs)."""
    import sqlalchemy as sa

    engine = _open(db_url, blueprint)
    for job in engine.model.jobs:
        click.echo(f"{job.name:<28} cron '{job.cron}' ({job.timezone}) → {job.channel}"
                   + (f", working days of {job.calendar}" if job.calendar else ""))
    for score in engine.model.scores:
        if score.is_nightly:  # the nightly score pass runs as a job too (docs/service-desk.md)
            click.echo(f"{'score:' + score.name:<28} cron '{score.nightly_cron}' ({engine.model.settings.timezone}) "
                       f"→ rescores every {score.entity}")
    runs = engine.schema.job_runs
    with engine.db.read() as connection:
        rows = connection.execute(sa.select(runs).order_by(runs.c.id.desc()).limit(limit)).all()
    for row in rows:
        first_line = (row.output or "").splitlines()[0] if row.output else ""
        click.echo(f"{_local(row.scheduled_for, engine.model.settings.timezone)}  {row.job:<28} {row.status:<10} {row.worker:<24} "
                   f"{first_line[:80]}")


# -- import and export (engine/io) ------------------------------------------------------------

def _actor_or_exit(engine: Engine, username: str | None) -> Any:
    from engine.runtime.records.actors import SYSTEM

    if username is None:
        return SYSTEM
    actor = engine.users.find(username)
    if actor is None:
        _fail(say("no_user", username=username))
    return actor


def _mapping_or_exit(engine: Engine, table: Any, entity: str, mapping: str | None) -> Any:
    """The mapping named or in the file given, else the blueprint's for the entity that fits the
    file's columns, else one suggested from the headers (printed, to be saved and edited)."""
    from engine.io.mapping import mapping_from_suggestions, suggest_mapping
    from engine.metamodel.imports import load_import_file

    model = engine.model
    if mapping is not None and Path(mapping).is_file():
        try:
            specs = load_import_file(Path(mapping), model, engine.extensions.vocabulary)
        except BlueprintInvalid as exc:
            click.echo(exc.text(cli_language()), err=True)
            sys.exit(1)
        chosen = [spec for spec in specs if spec.entity == entity]
        if not chosen:
            _fail(say("mapping_file_other", file=mapping, entity=entity,
                      entities=", ".join(sorted({spec.entity for spec in specs}))))
        return chosen[0]
    if mapping is not None:
        known = {spec.name: spec for spec in model.imports}
        if mapping not in known:
            _fail(say("mapping_unknown", mapping=mapping, known=", ".join(known) or "—"))
        if known[mapping].entity != entity:
            _fail(say("mapping_other_entity", mapping=mapping, other=known[mapping].entity, entity=entity))
        return known[mapping]
    headers = set(table.headers)
    fitting = sorted(((sum(1 for c in spec.columns if c.column in headers), spec) for spec in model.imports_for(entity)),
                     key=lambda pair: -pair[0])
    if fitting and fitting[0][0] * 2 >= len(fitting[0][1].columns):
        click.echo(say("mapping_chosen", mapping=fitting[0][1].name))
        return fitting[0][1]
    suggestions = suggest_mapping(engine.model.entity(entity), table.headers)
    click.echo(say("mapping_suggested"))
    for item in suggestions:
        click.echo(f"  {item.column:<24} → {item.field or say('mapping_not_imported')}"
                   + (f"  [{item.why}]" if item.why else ""))
    return mapping_from_suggestions(engine.model.entity(entity), suggestions)


@main.command("import")
@_db_option
@_blueprint_option
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--entity", required=True, help="What the rows become, e.g. lead.")
@click.option("--mapping", default=None, help="A mapping YAML file, or the name of a mapping in the blueprint.")
@click.option("--dry-run", is_flag=True, help="Print the data-health report and write nothing.")
@click.option("--sample", type=click.IntRange(min=1), default=None, help="Import only the first N rows (continue later with --resume).")
@click.option("--batch", type=click.IntRange(1, 2000), default=None, help="Rows per transaction (default: the mapping's, 1000).")
@click.option("--resume", is_flag=True, help="Continue an interrupted import of this file at its first unfinished batch.")
@click.option("--no-rules", is_flag=True, help="Run no automation rules on the imported rows (the report says so).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the health report to this .xlsx or .html file.")
@click.option("--errors", "errors_path", type=click.Path(dir_okay=False), default=None,
              help="Where to write the rejected rows with their reasons (.csv or .xlsx; default FILE-errors.csv).")
@click.option("--save-mapping", type=click.Path(dir_okay=False), default=None, help="Save the mapping used as YAML.")
@click.option("--as", "username", default=None, help="Import as this user (their permissions apply; default: system).")
def import_command(db_url: str, blueprint: str, file: str, entity: str, mapping: str | None, dry_run: bool,
                   sample: int | None, batch: int | None, resume: bool, no_rules: bool, report_path: str | None,
                   errors_path: str | None, save_mapping: str | None, username: str | None) -> None:
    """Import an Excel (.xlsx) or CSV file: health report first, then batches (resumable)."""
    import time

    from engine.io.imports import ImportRefused
    from engine.io.mapping import mapping_yaml
    from engine.io.readers import FileUnreadable, read_table

    engine = _open(db_url, blueprint)
    if not engine.model.has_entity(entity):
        _fail(say("no_entity", entity=entity, known=", ".join(engine.model.entity_names())))
    lang, words = cli_language(), _words()
    path = Path(file)
    try:
        table = read_table(path)
    except FileUnreadable as exc:
        _fail(exc.message_zh if lang == "zh" else exc.message)
    spec = _mapping_or_exit(engine, table, entity, mapping)
    if save_mapping:
        Path(save_mapping).write_text(mapping_yaml(spec), encoding="utf-8")
        click.echo(say("mapping_saved", path=save_mapping))
    importer = engine.importer
    try:
        plan = importer.prepare(table, spec, path)
    except ImportRefused as exc:
        _fail(exc.zh if lang == "zh" else str(exc))
    report = importer.health(plan, sample)
    click.echo(report.text(words, lang))
    if report_path:
        if report_path.lower().endswith(".html"):
            Path(report_path).write_text(report.html(words, lang), encoding="utf-8")
        else:
            report.write_xlsx(Path(report_path))
        click.echo(say("report_written", path=report_path))
    if dry_run:
        click.echo(say("dry_run"))
        return
    actor = _actor_or_exit(engine, username)
    started = time.monotonic()
    with click.progressbar(length=min(table.row_count, sample or table.row_count), label=say("importing"),
                           show_eta=True, show_percent=True, file=sys.stderr) as bar:
        state = {"done": 0, "first": None}

        def progress(done: int, total: int) -> None:
            if state["first"] is None:
                state["first"] = done
            bar.update(done - int(state["done"] or 0))
            state["done"] = done
            elapsed = time.monotonic() - started
            rate = (done - int(state["first"] or 0)) / elapsed if elapsed > 0 else 0
            bar.label = say("importing_rate", rate=f"{rate:,.0f}")

        try:
            outcome = importer.run(plan, actor=actor, resume=resume, rules=not no_rules, sample=sample, batch=batch,
                                   progress=progress)
        except ImportRefused as exc:
            _fail(exc.zh if lang == "zh" else str(exc))
    record = outcome.record
    if outcome.already_done:
        click.echo(say("import_already", summary=record.summary(words)))
        return
    if outcome.resumed_from:
        click.echo(say("import_resumed", row=outcome.resumed_from + 2))
    click.echo(record.summary(words))
    click.echo(say("import_counts", rows=record.next_row, created=record.created, merged=record.merged,
                   rejected=record.rejected, seconds=f"{time.monotonic() - started:.1f}"))
    if record.rejected:
        target = Path(errors_path) if errors_path else path.with_name(f"{path.stem}-errors.csv")
        target.write_bytes(importer.error_file(record.id, xlsx=target.suffix.lower() == ".xlsx"))
        click.echo(say("import_error_file", path=target, count=record.rejected))


@main.command("imports")
@_db_option
@_blueprint_option
@click.option("--limit", default=20, show_default=True)
def imports_list(db_url: str, blueprint: str, limit: int) -> None:
    """Past imports: who, when, the file's hash, the mapping and the counts."""
    engine = _open(db_url, blueprint)
    for mapping in engine.model.imports:
        click.echo(say("imports_mapping_history" if mapping.history else "imports_mapping", name=f"{mapping.name:<24}",
                       entity=mapping.entity, count=len(mapping.columns)))
    words = _words()
    for record in engine.importer.recent(limit):
        click.echo(f"{_local(record.started_at, engine.model.settings.timezone)[:16]}  sha256 {record.file_sha256[:12]}  "
                   + say("imports_by", by=record.actor_id or say("imports_system")) + f"  {record.summary(words)}")


@main.command("export")
@_db_option
@_blueprint_option
@click.argument("entity")
@click.option("--filter", "filters", multiple=True, metavar="FIELD[__OP]=VALUE",
              help="As on the list screen and the API, e.g. region=east, created_at__gte=2026-01-01 (repeatable).")
@click.option("--search", default=None, help="Search text, as the list screen's search box.")
@click.option("--sort", default=None, help="e.g. -created_at,name")
@click.option("--format", "fmt", type=click.Choice(["csv", "xlsx"]), default="xlsx", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="The file to write (default: ENTITY-export.FORMAT).")
@click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True, help="Headers and labels.")
@click.option("--as", "username", default=None, help="Export as this user: their scope, export permission and "
              "hidden fields apply (default: system, everything).")
def export_command(db_url: str, blueprint: str, entity: str, filters: tuple[str, ...], search: str | None,
                   sort: str | None, fmt: str, output: str | None, lang: str, username: str | None) -> None:
    """Export a list (its filters, search and sort) to XLSX or CSV, streaming."""
    import time

    from engine.io.exports import Exporter
    from engine.runtime.records.errors import RecordError
    from engine.runtime.records.permissions import Forbidden
    from engine.runtime.records.queries import parse_list_query

    engine = _open(db_url, blueprint)
    if not engine.model.has_entity(entity):
        _fail(say("no_entity", entity=entity, known=", ".join(engine.model.entity_names())))
    params: list[tuple[str, str]] = []
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(say("filter_form", item=item))
        params.append((key, value))
    if search:
        params.append(("q", search))
    if sort:
        params.append(("sort", sort))

    class _Params(dict[str, str]):
        def multi_items(self) -> list[tuple[str, str]]:
            return params

    actor = _actor_or_exit(engine, username)
    target = Path(output or f"{entity}-export.{fmt}")
    started = time.monotonic()
    try:
        query = parse_list_query(engine.model.entity(entity), _Params(params))
        exporter = Exporter(engine.records)
        export = exporter.export(entity, query, actor=actor, lang=lang)
        if fmt == "csv":
            with target.open("wb") as out:
                count = exporter.write_csv(export, out)
        else:
            count = exporter.write_xlsx(export, target)
    except (RecordError, Forbidden) as exc:
        _fail(str(exc))
    click.echo(say("exported", count=count, entity=entity, target=target, seconds=f"{time.monotonic() - started:.1f}"))


if __name__ == "__main__":
    main()
