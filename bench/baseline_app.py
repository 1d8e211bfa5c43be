"""The hand-written baseline: Starlette + SQLAlchemy Core over the same `lead` table as the engine.

The table (columns, types, indexes) comes from the engine's own `build_schema` on the bench
blueprint, so both servers run over an identical table shape; everything else here is what a
competent developer would write by hand for one entity:

* POST /leads   — parse the JSON body, light input checks, insert one row, commit, 201 + the row.
* GET  /leads   — `region=` and `source=` equality filters, 50 rows newest first, plus count(*).

SQLite is set up like the engine's (WAL, synchronous=NORMAL, foreign_keys, 64 MiB cache). Writes
are serialised behind a process lock and start with BEGIN IMMEDIATE (so concurrent writers queue
instead of hitting "database is locked"). The DB work runs either in Starlette's thread pool
(`mode="threadpool"`, the textbook choice) or inline on the event loop (`mode="inline"`: no thread
hand-off; fine for SQLite calls that take well under a millisecond). bench_api.py picks the mode.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.metamodel import load_blueprint
from engine.rules import FUNCTION_NAMES
from engine.runtime.storage.tables import build_schema

BLUEPRINT = Path(__file__).resolve().parent / "blueprint"
PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=30000",
           "cache_size=-65536", "temp_store=MEMORY")
REGIONS = ("east", "south", "north", "central", "southwest", "northwest", "northeast", "overseas")
SOURCES = ("website", "wecom", "douyin", "baidu", "expo", "referral", "cold_call", "csv_import")
STATUSES = ("new", "contacted", "qualified", "converted", "disqualified")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_MOBILE = re.compile(r"^(?:\+?86)?(1[3-9]\d{9})$")


def lead_table(blueprint: Path = BLUEPRINT) -> tuple[sa.MetaData, sa.Table, sa.Table]:
    """The engine-generated `lead` table (and crm_users, which its foreign keys point at) of
    `blueprint` (the bench blueprint, or the shipped one for bench/compare.py)."""
    schema = build_schema(load_blueprint(blueprint, functions=FUNCTION_NAMES))
    return schema.metadata, schema.table("lead"), schema.users


def make_engine(db_url: str) -> sa.Engine:
    engine = sa.create_engine(db_url, connect_args={"check_same_thread": False, "timeout": 30},
                              poolclass=sa.pool.QueuePool, pool_size=8, max_overflow=8)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in PRAGMAS:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        immediate = connection.get_execution_options().get("write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class BadInput(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


def _text(payload: dict[str, Any], name: str, limit: int, required: bool = False) -> str | None:
    value = payload.get(name)
    if value is None or value == "":
        if required:
            raise BadInput(name, f"{name} is required")
        return None
    text = str(value).strip()
    if len(text) > limit:
        raise BadInput(name, f"{name} is too long")
    return text


def _choice(payload: dict[str, Any], name: str, options: tuple[str, ...]) -> str | None:
    value = payload.get(name)
    if value is None or value == "":
        return None
    if value not in options:
        raise BadInput(name, f"{name} must be one of {', '.join(options)}")
    return value


def parse_lead(payload: Any) -> dict[str, Any]:
    """Checked column values for a new lead (what a hand-written endpoint would check)."""
    if not isinstance(payload, dict):
        raise BadInput("", "the body must be a JSON object")
    row: dict[str, Any] = {"name": _text(payload, "name", 100, required=True),
                           "company": _text(payload, "company", 200),
                           "region": _choice(payload, "region", REGIONS),
                           "source": _choice(payload, "source", SOURCES),
                           "status": _choice(payload, "status", STATUSES) or "new"}
    phone = _text(payload, "phone", 32)
    if phone is not None:
        match = _MOBILE.match(re.sub(r"[\s-]", "", phone))
        if match is None:
            raise BadInput("phone", "phone must be a mainland China mobile number")
        phone = "+86" + match.group(1)
    row["phone"] = phone
    email = _text(payload, "email", 254)
    if email is not None:
        email = email.lower()
        if not _EMAIL.match(email):
            raise BadInput("email", "not an email address")
    row["email"] = email
    follow_up = payload.get("next_follow_up")
    try:
        row["next_follow_up"] = dt.date.fromisoformat(follow_up) if follow_up else None
    except (TypeError, ValueError):
        raise BadInput("next_follow_up", "write the date as YYYY-MM-DD") from None
    amount = payload.get("amount")
    if amount is None or amount == "":
        row["amount"], row["amount_currency"] = None, None
    else:
        try:
            value = decimal.Decimal(str(amount)).quantize(decimal.Decimal("0.01"))
        except decimal.InvalidOperation:
            raise BadInput("amount", "amount must be a number") from None
        if not value.is_finite() or value < 0:
            raise BadInput("amount", "amount must be a non-negative number")
        row["amount"], row["amount_currency"] = value, "CNY"
    return row


def row_json(row: Any) -> dict[str, Any]:
    out = dict(row)
    for key in ("created_at", "updated_at"):
        if out.get(key) is not None:
            out[key] = out[key].replace(tzinfo=dt.timezone.utc).isoformat()
    if out.get("next_follow_up") is not None:
        out["next_follow_up"] = out["next_follow_up"].isoformat()
    if out.get("amount") is not None:
        out["amount"] = {"amount": str(out["amount"]), "currency": out.pop("amount_currency")}
    else:
        out.pop("amount_currency", None)
    return out


def create_baseline_app(db_url: str, *, mode: str = "threadpool", blueprint: Path = BLUEPRINT) -> Starlette:
    metadata, leads, users = lead_table(blueprint)
    columns = set(leads.c.keys())  # the shipped lead has budget (money) where the bench one has amount
    engine = make_engine(db_url)
    # (the shipped lead points at accounts, contacts and opportunities: every table of its schema)
    metadata.create_all(engine, tables=[users, leads] if blueprint == BLUEPRINT else None, checkfirst=True)
    write_lock = threading.Lock()
    insert = leads.insert()
    select_page = (sa.select(leads)
                   .where(leads.c.region == sa.bindparam("region"), leads.c.source == sa.bindparam("source"))
                   .order_by(leads.c.created_at.desc(), leads.c.id.desc()).limit(50))
    select_count = (sa.select(sa.func.count()).select_from(leads)
                    .where(leads.c.region == sa.bindparam("region"), leads.c.source == sa.bindparam("source")))

    def insert_lead(row: dict[str, Any]) -> dict[str, Any]:
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        row.update(created_at=now, updated_at=now, created_by=None, owner=None, version=1, duplicate_of=None)
        if "amount" not in columns and "budget" in columns:
            row["budget"], row["budget_currency"] = row.pop("amount"), row.pop("amount_currency")
        row = {name: value for name, value in row.items() if name in columns}
        with write_lock:
            with engine.connect().execution_options(write=True) as connection:
                with connection.begin():
                    row["id"] = connection.execute(insert, row).inserted_primary_key[0]
        return row

    def list_leads(region: str, source: str) -> tuple[list[Any], int]:
        with engine.connect() as connection:
            with connection.begin():
                params = {"region": region, "source": source}
                rows = connection.execute(select_page, params).mappings().all()
                total = connection.execute(select_count, params).scalar_one()
        return rows, total

    if mode == "threadpool":
        async def do_insert(row: dict[str, Any]) -> dict[str, Any]:
            return await run_in_threadpool(insert_lead, row)

        async def do_list(region: str, source: str) -> tuple[list[Any], int]:
            return await run_in_threadpool(list_leads, region, source)
    elif mode == "inline":
        async def do_insert(row: dict[str, Any]) -> dict[str, Any]:
            return insert_lead(row)

        async def do_list(region: str, source: str) -> tuple[list[Any], int]:
            return list_leads(region, source)
    else:
        raise ValueError(f"unknown baseline mode {mode!r}")

    async def create(request: Request) -> Response:
        try:
            payload = json.loads(await request.body())
            row = parse_lead(payload)
        except json.JSONDecodeError:
            return JSONResponse({"field": None, "message": "invalid JSON"}, status_code=400)
        except BadInput as error:
            return JSONResponse({"field": error.field, "message": error.message}, status_code=422)
        row = await do_insert(row)
        return JSONResponse(row_json(row), status_code=201, headers={"Location": f"/leads/{row['id']}"})

    async def index(request: Request) -> Response:
        region = request.query_params.get("region", "")
        source = request.query_params.get("source", "")
        if region not in REGIONS or source not in SOURCES:
            return JSONResponse({"field": "region", "message": "give region= and source="}, status_code=422)
        rows, total = await do_list(region, source)
        return JSONResponse({"items": [row_json(row) for row in rows], "total": total, "per_page": 50})

    app = Starlette(routes=[Route("/leads", create, methods=["POST"]), Route("/leads", index, methods=["GET"])])
    app.state.engine = engine
    return app
