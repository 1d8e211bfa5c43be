"""The JSON API on SQLite and PostgreSQL: status codes, error bodies, and that failures change nothing."""

from __future__ import annotations

import datetime as dt
import os
import socket
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from openapi_spec_validator import validate

from engine.engine import Engine
from engine.runtime.ops.users import NewUser
from engine.runtime.storage.times import as_utc, naive_utc
from tests.support.blueprints import SHIPPED_CRM
from tests.support.records_blueprint import BLUEPRINT
from tests.support.web import sign_in, visible_text

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def runtime(make_engine: Any) -> Engine:
    return make_engine(BLUEPRINT)


def signed_in_client(runtime: Engine, username: str = "admin", role: str = "admin", team: str | None = None) -> TestClient:
    """A client carrying an API token of a (new) user with `role`."""
    if runtime.users.find(username) is None:
        runtime.users.add(NewUser(username, username, role, team, password="correct horse"))
    return TestClient(runtime.web_app(), headers={"Authorization": f"Bearer {runtime.users.create_token(username)}"})


@pytest.fixture
def client(runtime: Engine) -> TestClient:
    return signed_in_client(runtime)


def _counts(runtime: Engine) -> tuple[int, int]:
    with runtime.db.read() as connection:
        leads = connection.execute(sa.select(sa.func.count()).select_from(runtime.schema.table("lead"))).scalar_one()
        events = connection.execute(sa.select(sa.func.count()).select_from(runtime.schema.events)).scalar_one()
    return leads, events


def test_invalid_payload_gets_422_naming_each_bad_field_and_nothing_changes(client: TestClient,
                                                                           runtime: Engine) -> None:
    client.post("/api/lead", json={"name": "已有线索"})
    before = _counts(runtime)
    response = client.post("/api/lead", json={"name": "x" * 51, "phone": "123", "employees": "many",
                                              "source": "tv", "next_follow_up": "31/12/2026"})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_failed" and body["field"] == "name"
    assert {error["field"]: error["code"] for error in body["errors"]} == {
        "name": "too_long", "phone": "invalid_phone", "employees": "invalid", "source": "invalid_choice",
        "next_follow_up": "invalid"}
    assert "2026-11-20" in next(e["message"] for e in body["errors"] if e["field"] == "next_follow_up")  # an example
    english = client.post("/api/lead", json={"name": "x", "source": "website", "next_follow_up": "31/12/2026"},
                          headers={"Accept-Language": "en"}).json()
    assert "YYYY-MM-DD" in english["errors"][0]["message"] and english["errors"][0]["code"] == "invalid"
    assert _counts(runtime) == before


def test_create_read_update_delete_with_versions(client: TestClient) -> None:
    created = client.post("/api/lead", json={"name": "张伟", "capital": {"amount": "1200.5", "currency": "usd"},
                                             "tags": "vip, expo"})
    assert created.status_code == 201 and created.headers["X-CRM-Outcome"] == "created"
    lead = created.json()
    assert lead["capital"] == {"amount": "1200.50", "currency": "USD"} and lead["tags"] == ["vip", "expo"]
    assert created.headers["Location"] == f"/api/lead/{lead['id']}"
    assert client.get(f"/api/lead/{lead['id']}").json()["name"] == "张伟"

    first = client.patch(f"/api/lead/{lead['id']}", json={"company": "甲公司", "version": 1})
    second = client.patch(f"/api/lead/{lead['id']}", json={"company": "乙公司"}, headers={"If-Match": '"1"'})
    assert first.status_code == 200 and first.json()["version"] == 2
    assert second.status_code == 409 and second.json()["code"] == "version_conflict"
    assert second.json()["current_version"] == 2
    assert client.get(f"/api/lead/{lead['id']}").json()["company"] == "甲公司"

    history = client.get(f"/api/lead/{lead['id']}/events").json()["items"]
    assert [event["kind"] for event in history] == ["created", "updated"]
    assert history[1]["changes"] == {"company": [None, "甲公司"]}

    moved = client.post(f"/api/lead/{lead['id']}/transition", json={"to": "won", "field": "status"})
    assert moved.status_code == 200 and moved.json()["status"] == "won"

    assert client.delete(f"/api/lead/{lead['id']}").status_code == 204
    gone = client.get(f"/api/lead/{lead['id']}", headers={"Accept-Language": "en"})
    assert gone.status_code == 404 and gone.json() == {
        "code": "not_found", "message": f"lead {lead['id']} does not exist (it may have been deleted)", "field": "id"}


def test_same_phone_posted_twice_gives_one_lead_and_a_merge(client: TestClient, runtime: Engine) -> None:
    first = client.post("/api/lead", json={"name": "李雷", "phone": "+86 138-0013-8000"})
    second = client.post("/api/lead", json={"name": "李雷", "phone": "13800138000", "company": "华东机械"})
    assert first.status_code == 201 and second.status_code == 200
    assert second.headers["X-CRM-Outcome"] == "merged" and second.json()["id"] == first.json()["id"]
    listing = client.get("/api/lead", params={"fields": "company"}).json()
    assert listing["total"] == 1 and listing["items"][0]["company"] == "华东机械"
    kinds = [e["kind"] for e in client.get(f"/api/lead/{first.json()['id']}/events").json()["items"]]
    assert kinds.count("merged") == 1


def test_list_filters_and_errors(client: TestClient) -> None:
    for name, source in (("甲", "website"), ("乙", "expo"), ("丙", "expo")):
        client.post("/api/lead", json={"name": name, "source": source})
    page = client.get("/api/lead", params={"source": "expo", "sort": "name", "per_page": 1}).json()
    assert page["total"] == 2 and page["pages"] == 2 and [i["name"] for i in page["items"]] == ["丙"]
    bad = client.get("/api/lead", params={"sorce": "expo"}, headers={"Accept-Language": "en"})
    assert bad.status_code == 422 and bad.json()["field"] == "sorce" and "did you mean 'source'" in bad.json()["message"]
    chinese = client.get("/api/lead", params={"sorce": "expo"})  # the blueprint's default language
    assert chinese.json()["field"] == "sorce" and "是不是“source”" in chinese.json()["message"]
    assert client.get("/api/leads").status_code == 404
    assert client.get("/api/leads").json()["code"] == "unknown_entity"


def test_malformed_bodies_are_refused_with_a_code(client: TestClient, runtime: Engine) -> None:
    before = _counts(runtime)
    assert client.post("/api/lead", content=b"{not json").json()["code"] == "invalid_json"
    assert client.post("/api/lead", json=[1, 2]).status_code == 422
    assert client.patch("/api/lead/abc", json={}).status_code == 404
    assert _counts(runtime) == before


def test_files_upload_and_attach(client: TestClient, make_engine: Any) -> None:
    uploaded = client.post("/api/files", files={"file": ("报价单.pdf", b"%PDF-1.4 demo", "application/pdf")})
    assert uploaded.status_code == 201
    file_id = uploaded.json()["id"]
    downloaded = client.get(f"/api/files/{file_id}")
    assert downloaded.content == b"%PDF-1.4 demo" and downloaded.headers["content-type"] == "application/pdf"


def test_openapi_document_is_valid_and_describes_every_entity(client: TestClient, runtime: Engine) -> None:
    document = client.get("/api/openapi.json").json()
    validate(document)
    assert document["openapi"] == "3.1.0"
    for entity in runtime.model.entity_names():
        assert f"/api/{entity}" in document["paths"] and f"/api/{entity}/{{record_id}}" in document["paths"]
    lead = document["components"]["schemas"]["Lead"]["properties"]
    assert lead["source"]["anyOf"][0]["enum"] == ["website", "expo", "douyin"]
    assert document["components"]["schemas"]["LeadCreate"]["required"] == ["name"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_crm_demo_serves_the_shipped_blueprint_over_http(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "CRM_BLUEPRINT": str(SHIPPED_CRM)}
    process = subprocess.Popen([sys.executable, "-m", "cli", "demo", "--db", f"sqlite:///{tmp_path / 'demo.sqlite'}",
                                "--port", str(port), "--leads", "520"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    token = None
    try:
        deadline = time.monotonic() + 600  # the demo writes every lead and call through rules and routing
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/lead", params={"per_page": 1}, timeout=2)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.terminate()  # else reading its output waits for a server that never exits
                    raise AssertionError("crm demo did not start:\n" + (process.stdout.read() if process.stdout else ""))
                time.sleep(0.3)
        assert response.status_code == 401 and response.json()["code"] == "unauthenticated"
        token = subprocess.run([sys.executable, "-m", "cli", "user", "token", "admin", "--db",
                                f"sqlite:///{tmp_path / 'demo.sqlite'}"], cwd=ROOT, env=env, capture_output=True,
                               text=True, check=True).stdout.strip()
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"})
        with sqlite3.connect(tmp_path / "demo.sqlite") as database:  # the demo's sample ledger import adds some
            (imported,) = database.execute("SELECT coalesce(sum(created), 0) FROM crm_imports").fetchone()
        assert imported > 0 and api.get("/api/lead", params={"per_page": 1}).json()["total"] == 520 + imported
        regions = {api.get("/api/lead", params={"region": region, "per_page": 1}).json()["total"]
                   for region in ("east", "south", "north")}
        assert all(count > 0 for count in regions)
        for entity in ("account", "contact", "opportunity", "ticket", "activity", "order", "product"):
            assert api.get(f"/api/{entity}").json()["total"] > 0, entity
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_shipped_crm_blueprint_with_demo_data_on_both_databases(make_engine: Any) -> None:
    from engine.io.demo import seed_demo
    runtime = make_engine(SHIPPED_CRM)
    summary = seed_demo(runtime, leads=40)
    assert summary.counts["lead"] == 40 and summary.counts["ticket"] == 120
    client = signed_in_client(runtime, "boss")
    page = client.get("/api/lead", params={"region": "east", "source": "website", "sort": "-created_at"}).json()
    assert page["total"] == sum(1 for item in client.get("/api/lead", params={"per_page": 500}).json()["items"]
                                if item["region"] == "east" and item["source"] == "website")
    assert client.get("/api/account", params={"q": "华东"}).json()["total"] > 0
    # the demo's history ran through the SLA clocks: open tickets are on the clock, and a user
    # finds the overdue ones with the list filter
    running = client.get("/api/ticket", params={"sla": "running"}).json()["total"]
    overdue = client.get("/api/ticket", params={"sla": "overdue"}).json()["total"]
    assert running > 0 and overdue > 0
    validate(client.get("/api/openapi.json").json())
    # people read their notices day by day: what is unread is the last day's, not four months'
    from engine.runtime.automation.inbox import inbox_table
    table, timers = inbox_table(runtime.schema), runtime.schema.timers
    now = runtime.clock.now()
    with runtime.db.read() as connection:
        unread = connection.execute(sa.select(table.c.created_at).where(table.c.read_at.is_(None))).scalars().all()
        total = connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        # the worker ran all along: what fell due in the history fired then, none waits for the first tick
        states = dict(connection.execute(sa.select(timers.c.status, sa.func.count()).where(
            timers.c.due_at <= naive_utc(now)).group_by(timers.c.status)).all())
    assert total > len(unread) > 0 and all(as_utc(moment) >= now - dt.timedelta(days=1) for moment in unread)
    assert states.get("fired", 0) > 0 and states.get("pending", 0) == 0
    # the imported ledger's contacted leads say when they were first touched (its 首次联系 column)
    leads = runtime.schema.table("lead")
    with runtime.db.read() as connection:
        imported = connection.execute(sa.select(leads.c.status, leads.c.first_touched_at).where(
            leads.c.source == "csv_import")).all()
    touched = [row for row in imported if row.status != "new"]
    assert touched and all(row.first_touched_at is not None for row in touched)
    # the administrator's audit log tells how the team was set up, not nothing
    from engine.runtime.ops.audit import AuditLog
    entries, _ = AuditLog(runtime.schema, runtime.db, runtime.clock).entries()
    created = {entry.target for entry in entries if entry.action == "user_created" and entry.actor == "admin"}
    assert created == {user.username for user in summary.users if user.username != "admin"}
    assert [entry.target for entry in entries if entry.action == "user_token"] == ["manager"]


def test_requests_arriving_together_behave_as_if_one_after_another(runtime: Engine) -> None:
    """On SQLite the writes of requests that arrive together share one commit (group commit);
    each must still see the ones before it: eight sign-ups of one person make one lead."""
    import asyncio

    runtime.users.add(NewUser("burst", "burst", "admin"))
    app, token = runtime.web_app(), runtime.users.create_token("burst")
    commits: list[int] = []
    sa.event.listen(runtime.db.engine, "commit", lambda _connection: commits.append(1))

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://crm.test",
                                     headers={"Authorization": f"Bearer {token}"}) as api:
            return list(await asyncio.gather(*(api.post("/api/lead", json={"name": f"李雷{n}", "phone": "13800138000",
                                                                           "company": f"公司{n}"})
                                               for n in range(8))))
    responses = asyncio.run(main())
    assert sorted(response.status_code for response in responses) == [200] * 7 + [201]
    assert len({response.json()["id"] for response in responses}) == 1
    if runtime.db.is_sqlite:
        assert len(commits) < 8  # the requests did share commits: the case this test is about
    leads, _ = _counts(runtime)
    assert leads == 1
    with runtime.db.read() as connection:
        events = runtime.schema.events
        kinds = [row.kind for row in connection.execute(sa.select(events.c.kind).order_by(events.c.id))]
    assert kinds == ["created"] + ["merged"] * 7


def test_a_list_carries_the_views_columns_or_the_fields_asked_for_and_refuses_a_misspelt_one(
        make_engine: Any) -> None:
    from engine.io.demo import seed_demo
    runtime = make_engine(SHIPPED_CRM)
    seed_demo(runtime, leads=40)
    boss = signed_in_client(runtime, "boss")
    full = {item["id"]: item for item in boss.get("/api/lead", params={"per_page": 500, "fields": "*"}).json()["items"]}
    assert len(next(iter(full.values()))) > 40  # fields=*: every field of the lead
    # by default: what names the record and the columns of the list view asked for (the default view)
    default = boss.get("/api/lead", params={"per_page": 500}).json()["items"]
    high_value = boss.get("/api/lead", params={"view": "by_grade"}).json()["items"]
    view = runtime.model.entity("lead").list_view
    assert [list(item) for item in default] == [["id", "version", *dict.fromkeys(("name", *view("default").columns))]
                                               ] * len(full)
    assert high_value and all(list(item) == ["id", "version", *dict.fromkeys(("name", *view("by_grade").columns))]
                              for item in high_value)
    assert all(item == {name: full[item["id"]][name] for name in item} for item in default)
    page = boss.get("/api/lead", params={"fields": "name,phone,owner,registered_capital,created_at", "per_page": 500,
                                         "sort": "-created_at"}).json()
    assert page["total"] == len(full) > 0
    for item in page["items"]:
        assert list(item) == ["id", "name", "phone", "owner", "registered_capital", "created_at"]
        assert item == {name: full[item["id"]][name] for name in item}  # the same values the full item has
    assert any(item["registered_capital"] is not None for item in page["items"])
    # a field hidden from the role stays hidden when asked for by name
    rep = next(user.username for user in runtime.users.all() if user.role == "sales_rep")
    mine = signed_in_client(runtime, rep).get("/api/lead", params={"fields": "name,raw_payload"}).json()["items"]
    assert mine and all(list(item) == ["id", "name"] for item in mine)
    wrong = boss.get("/api/lead", params={"fields": "name,phnoe"}, headers={"Accept-Language": "en"})
    assert wrong.status_code == 422 and wrong.json()["field"] == "fields"
    assert "'phnoe'" in wrong.json()["message"] and "did you mean 'phone'" in wrong.json()["message"]


def test_past_ten_thousand_matches_the_total_says_so_and_every_page_still_follows(make_engine: Any,
                                                                                   clock: Any) -> None:
    """A list counts its matches up to 10,000 ("10,000+" on screen, total_exact false in the API);
    paging on by has_more reaches every record, and the last page's total is exact again."""
    runtime = make_engine(SHIPPED_CRM)
    table = runtime.schema.table("lead")
    now = clock.now().replace(tzinfo=None)
    with runtime.db.write() as connection:  # 10,050 stored leads, as an earlier bulk import leaves them
        connection.execute(table.insert(), [{"name": f"客户{n}", "source": "website", "region": "east" if n % 2 else
                                             "south", "status": "new", "created_at": now, "updated_at": now,
                                             "version": 1} for n in range(10_050)])
    client = signed_in_client(runtime, "boss")
    first = client.get("/api/lead", params={"per_page": 500, "fields": "name"}).json()
    assert (first["total"], first["total_exact"], first["has_more"]) == (10_000, False, True)
    assert first["pages"] >= 20
    seen, page = {item["id"] for item in first["items"]}, first
    while page["has_more"]:
        page = client.get("/api/lead", params={"per_page": 500, "fields": "name", "page": page["page"] + 1}).json()
        seen |= {item["id"] for item in page["items"]}
    assert len(seen) == 10_050 and page["page"] == 21
    assert (page["total"], page["total_exact"], page["pages"]) == (10_050, True, 21)
    east = client.get("/api/lead", params={"region": "east", "per_page": 10}).json()  # 5,025 match: exact
    assert (east["total"], east["total_exact"], east["pages"]) == (5_025, True, 503)
    screen = visible_text(sign_in(runtime, "boss", "correct horse").get("/lead").text)
    assert "共 10,000+ 条，第 1/200+ 页" in screen and "1 / 200+" in screen
    assert "共 5,025 条，第 1/101 页" in visible_text(sign_in(runtime, "boss", "correct horse").get(
        "/lead", params={"region": "east"}).text)
