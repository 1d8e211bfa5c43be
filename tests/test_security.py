"""Issue 13's attacks, kept as regression tests against the running app (uvicorn on loopback,
the shipped CRM blueprint, SQLite and PostgreSQL): a hostile signed-in rep, an anonymous web
form and a careless blueprint each get a clear 4xx, and nothing is written."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from engine.engine import Engine
from engine.metamodel.expressions import parse_expression
from engine.metamodel.errors import NOWHERE
from engine.rules import FakeClock
from engine.rules.expressions import Evaluator, ExpressionError
from engine.runtime.ops.users import NewUser, password_problem
from engine.runtime.web.auth import SecretKeyMissing, secret_key
from tests.support.blueprints import SHIPPED_CRM
from tests.support.live_server import serving

PEOPLE = (NewUser("admin", "Admin", "admin", password="crm-demo-admin"),
          NewUser("boss", "Zhou", "sales_manager", "east", password="crm-demo-boss"),
          NewUser("wang", "Wang", "sales_rep", "east", "boss", password="crm-demo-wang"),
          NewUser("li", "Li", "sales_rep", "east", "boss", password="crm-demo-li"),
          NewUser("zhao", "Zhao", "sales_rep", "south", password="crm-demo-zhao"),
          NewUser("chen", "Chen", "service_agent", "service", password="crm-demo-chen"))


class Site:
    """The served app and an API client per user (bearer tokens)."""

    def __init__(self, runtime: Engine, base: str) -> None:
        self.runtime, self.base = runtime, base
        self.api = {person.username: httpx.Client(base_url=base, timeout=30, headers={
            "Authorization": f"Bearer {runtime.users.create_token(person.username)}"}) for person in PEOPLE}

    def count(self, table: str) -> int:
        with self.runtime.db.read() as connection:
            return int(connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())

    def browser(self, forwarded_for: str | None = None) -> httpx.Client:
        headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
        return httpx.Client(base_url=self.base, timeout=30, headers=headers, follow_redirects=False)


@pytest.fixture
def site(make_engine: Any, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    monkeypatch.delenv("CRM_SECRET_KEY", raising=False)
    monkeypatch.setenv("CRM_SECRET_KEY_FILE", str(tmp_path / "secret-key"))
    runtime = make_engine(SHIPPED_CRM)
    for person in PEOPLE:
        runtime.users.add(person)
    with serving(runtime.web_app()) as base:
        yield Site(runtime, base)


def _lead(site: Site, who: str, name: str, **values: Any) -> dict[str, Any]:
    response = site.api[who].post("/api/lead", json={"name": name, "source": "website", **values})
    assert response.status_code == 201, response.text
    return dict(response.json())


def _account(site: Site, who: str, name: str) -> dict[str, Any]:
    response = site.api[who].post("/api/account", json={"name": name})
    assert response.status_code == 201, response.text
    return dict(response.json())


# -- 1. one request must not freeze the server ----------------------------------------------------

def test_a_million_tags_are_refused_before_reading_while_other_requests_are_answered(site: Site) -> None:
    before = site.count("lead")
    body = json.dumps({"name": "刷标签", "source": "website", "tags": [f"t{i}" for i in range(1_000_000)]})
    answers: list[int] = []

    def reader() -> None:
        answers.append(site.api["wang"].get("/api/lead").status_code)
    other = threading.Thread(target=reader)
    other.start()
    big = site.api["wang"].post("/api/lead", content=body, headers={"Content-Type": "application/json"})
    other.join()
    assert big.status_code == 413 and big.json()["code"] == "body_too_large"
    assert answers == [200]
    # 40,000 tags fit under the body cap: refused by the field's own cap, naming the field
    many = site.api["wang"].post("/api/lead", json={"name": "刷标签", "source": "website",
                                                    "tags": [f"t{i}" for i in range(40_000)]})
    assert many.status_code == 422
    assert many.json()["errors"][0]["field"] == "tags" and "最多 100" in many.json()["errors"][0]["message"]
    assert site.count("lead") == before


# -- 2. attachments follow the record they are attached to -----------------------------------------

def test_a_file_is_read_only_by_its_uploader_and_those_who_may_read_its_record(site: Site) -> None:
    account = _account(site, "wang", "华东机械")
    uploaded = site.api["wang"].post("/api/files", files={"file": ("合同.pdf", b"%PDF-1.4 contract", "application/pdf")})
    assert uploaded.status_code == 201
    file_id = uploaded.json()["id"]
    assert site.api["li"].get(f"/api/files/{file_id}").status_code == 404  # not attached yet: the uploader's
    deal = site.api["wang"].post("/api/opportunity", json={"name": "大单", "account": account["id"],
                                                           "signed_quote": file_id})
    assert deal.status_code == 201, deal.text
    for outsider in ("li", "zhao", "chen"):  # li: same team, but opportunities are read `own`
        refused = site.api[outsider].get(f"/api/files/{file_id}")
        assert refused.status_code == 404 and "合同" not in refused.text
    for reader in ("wang", "boss", "admin"):
        got = site.api[reader].get(f"/api/files/{file_id}")
        assert got.status_code == 200 and got.content == b"%PDF-1.4 contract"
        assert got.headers["content-disposition"].startswith("attachment;")
        assert got.headers["x-content-type-options"] == "nosniff" and "no-store" in got.headers["cache-control"]
    # a file id one may not read cannot be attached to one's own record either (then downloaded)
    own = _lead(site, "li", "李的线索")
    files_before = site.count("activity")
    linked = site.api["li"].post("/api/activity", json={"subject": "偷看", "kind": "call", "lead": own["id"],
                                                        "attachment": file_id})
    assert linked.status_code == 422 and "attachment" in {error["field"] for error in linked.json()["errors"]}
    assert site.count("activity") == files_before
    # an uploaded script is served as bytes, never as JavaScript of this origin
    script = site.api["wang"].post("/api/files", files={"file": ("x.js", b"alert(1)", "text/javascript")}).json()
    served = site.api["wang"].get(f"/api/files/{script['id']}?inline=1")
    assert served.headers["content-type"] == "application/octet-stream"
    assert served.headers["content-disposition"].startswith("attachment;")


def test_uploads_stop_at_the_users_quota(site: Site) -> None:
    site.runtime.records.upload_quota = 64 * 1024
    first = site.api["wang"].post("/api/files", files={"file": ("a.bin", b"x" * 60_000, "application/octet-stream")})
    assert first.status_code == 201
    before = site.count("crm_files")
    second = site.api["wang"].post("/api/files", files={"file": ("b.bin", b"x" * 10_000, "application/octet-stream")})
    assert second.status_code == 413 and second.json()["code"] == "quota_exceeded"
    assert site.count("crm_files") == before
    assert site.api["li"].post("/api/files", files={"file": ("c.bin", b"y", "text/plain")}).status_code == 201


# -- 3. titles of out-of-scope records never leak; links to them are refused --------------------

def _signed_in(site: Site, username: str, forwarded_for: str | None = None) -> httpx.Client:
    client = site.browser(forwarded_for)
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    answer = client.post("/login", data={"username": username, "password": f"crm-demo-{username}",
                                         "csrf_token": token.group(1), "next": "/"})
    assert answer.status_code == 303, answer.text[:500]
    return client


def test_form_prefill_and_links_refuse_records_outside_the_users_scope(site: Site) -> None:
    lead = _lead(site, "wang", "王总的机密线索")
    account = _account(site, "wang", "华东秘密客户")
    li = _signed_in(site, "li")
    prefilled = li.get(f"/activity/new?lead={lead['id']}")
    assert prefilled.status_code == 404 and "王总的机密线索" not in prefilled.text
    zhao = _signed_in(site, "zhao")
    other_team = zhao.get(f"/opportunity/new?account={account['id']}")
    assert other_team.status_code == 404 and "华东秘密客户" not in other_team.text
    own = li.get("/activity/new")
    assert own.status_code == 200 and "王总的机密线索" not in own.text
    before = site.count("activity"), site.count("opportunity")
    linked = site.api["li"].post("/api/activity", json={"subject": "跟进", "kind": "call", "lead": lead["id"]})
    assert linked.status_code == 422 and linked.json()["errors"][0]["field"] == "lead"
    assert "王总" not in linked.text
    deal = site.api["zhao"].post("/api/opportunity", json={"name": "抢单", "account": account["id"]})
    assert deal.status_code == 422 and deal.json()["errors"][0]["field"] == "account"
    assert (site.count("activity"), site.count("opportunity")) == before
    # the lead's own rep links to it as before
    mine = site.api["wang"].post("/api/activity", json={"subject": "跟进", "kind": "call", "lead": lead["id"]})
    assert mine.status_code == 201


# -- 4. sign-in throttling ------------------------------------------------------------------------

def _login_form(client: httpx.Client) -> str:
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert token is not None
    return token.group(1)


def test_thirty_parallel_sign_ins_reserve_their_attempts_so_the_right_password_at_20_is_refused(site: Site) -> None:
    clients = [site.browser("203.0.113.7") for _ in range(30)]
    tokens = [_login_form(client) for client in clients]

    def attempt(index: int) -> int:
        password = "crm-demo-wang" if index == 19 else f"guess-{index:04d}x"
        return clients[index].post("/login", data={"username": "wang", "password": password,
                                                   "csrf_token": tokens[index], "next": "/"}).status_code
    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        statuses = list(pool.map(attempt, range(30)))
    checked = [status for status in statuses if status in (303, 401)]
    assert len(checked) <= 5 and statuses.count(429) >= 25, statuses  # 5 per account and address
    late = site.browser("203.0.113.7")
    assert late.post("/login", data={"username": "wang", "password": "crm-demo-wang",
                                     "csrf_token": _login_form(late), "next": "/"}).status_code == 429
    # … while the victim, from their own address, still signs in
    assert _signed_in(site, "wang", "198.51.100.20").get("/lead").status_code == 200


def test_an_unknown_username_costs_a_password_hash_like_a_known_one(site: Site) -> None:
    checked: list[str] = []

    class Counting(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> bool:
            checked.append(str(password))
            return super().verify(hash, password)
    users = site.runtime.users
    users.hasher = Counting(time_cost=1, memory_cost=8, parallelism=1)
    for name in ("nobody", "wang"):
        with pytest.raises(Exception, match="wrong username or password"):
            users.login(name, "not-the-password", "192.0.2.1")
    assert checked == ["not-the-password", "not-the-password"]


def test_weak_passwords_are_refused_and_change_nothing(site: Site) -> None:
    for weak in ("12345678", "password", "password123", "aaaaaaaaaaaa", "1234567890"):
        assert password_problem(weak) is not None
    with pytest.raises(ValueError, match="10"):
        site.runtime.users.set_password("wang", "short-1")
    assert password_problem("蓝色-机床-42-河流") is None
    assert _signed_in(site, "wang").get("/lead").status_code == 200  # the old password still works


# -- 8. sessions live in the database ---------------------------------------------------------------

def test_a_session_cookie_copied_before_sign_out_is_refused_after_it(site: Site) -> None:
    client = _signed_in(site, "wang")
    stolen = dict(client.cookies)
    assert client.get("/lead").status_code == 200
    thief = site.browser()
    thief.cookies.update(stolen)
    assert thief.get("/lead").status_code == 200
    page = client.get("/lead").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf is not None
    assert client.post("/logout", data={"csrf_token": csrf.group(1)}).status_code == 303
    replay = site.browser()
    replay.cookies.update(stolen)
    assert replay.get("/lead").status_code == 303  # to the sign-in page
    assert replay.get("/api/lead").status_code == 401


def test_password_change_and_sign_out_everywhere_end_every_session(site: Site) -> None:
    first, second = _signed_in(site, "wang"), _signed_in(site, "wang")
    site.runtime.users.set_password("wang", "crm-demo-wang")  # even to the same password
    assert first.get("/lead").status_code == 303 and second.get("/lead").status_code == 303
    third, fourth = _signed_in(site, "wang"), _signed_in(site, "wang")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', third.get("/lead").text)
    assert csrf is not None
    assert third.post("/logout", data={"csrf_token": csrf.group(1), "everywhere": "1"}).status_code == 303
    assert fourth.get("/lead").status_code == 303
    assert site.runtime.users.sessions.live_count(site.runtime.users.user_id("wang")) == 0


def test_api_tokens_expire_are_revocable_one_by_one_and_may_be_read_only(site: Site, clock: FakeClock) -> None:
    users = site.runtime.users
    keep, drop = users.create_token("wang", "ci"), users.create_token("wang", "laptop")
    reader = users.create_token("wang", "report", scope="read", days=1)
    call = lambda token, method="GET", **kw: httpx.request(  # noqa: E731
        method, f"{site.base}/api/lead", headers={"Authorization": f"Bearer {token}"}, timeout=30, **kw)
    assert call(drop).status_code == 200
    listed = {info.name: info for info in users.sessions.list_tokens(users.user_id("wang"))}
    assert listed["laptop"].last_used_at is not None and listed["ci"].last_used_at is None
    users.sessions.revoke_token(listed["laptop"].id)
    assert call(drop).status_code == 401 and call(keep).status_code == 200
    before = site.count("lead")
    refused = call(reader, "POST", json={"name": "x", "source": "website"})
    assert refused.status_code == 403 and refused.json()["code"] == "token_read_only"
    assert call(reader).status_code == 200 and site.count("lead") == before
    clock.advance(days=2)
    assert call(reader).status_code == 401 and call(keep).status_code == 200


# -- 5 / 9. anonymous webhooks -------------------------------------------------------------------

def test_webhooks_for_unknown_sources_store_nothing_and_oversized_bodies_keep_only_their_first_bytes(
        site: Site) -> None:
    before = site.count("crm_deliveries")
    anonymous = site.browser()
    unknown = anonymous.post("/hooks/anything", content=b"x" * 1_000_000)
    assert unknown.status_code == 404
    assert site.count("crm_deliveries") == before
    huge = anonymous.post("/hooks/website_form", content=b"{" + b" " * 600_000 + b"}")
    assert huge.status_code == 413 and "max_body_kb" in huge.json()["message"]
    # the refusal is logged for the operator (issue 14), with at most its first 2 KiB
    with site.runtime.db.read() as connection:
        stored = connection.execute(sa.text("SELECT length(body) FROM crm_deliveries")).scalars().all()
    assert len(stored) == before + 1 and max(stored) <= 2048


def test_webhook_secrets_are_masked_before_the_delivery_is_stored(site: Site,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_WEBSITE_FORM_TOKEN", "s3cret-form-token")
    monkeypatch.setenv("CRM_FORM_BUILDER_TOKEN", "s3cret-query-token")
    anonymous = site.browser()
    anonymous.post("/hooks/website_form", headers={"X-Webhook-Token": "s3cret-form-token"},
                   json={"submission_id": "s1", "contact": {"name": "张三", "phone": "13800138000"}})
    anonymous.post("/hooks/form_builder?token=s3cret-query-token", json={"entry": {"serial_number": 1}})
    with site.runtime.db.read() as connection:
        rows = connection.execute(sa.text("SELECT headers, query FROM crm_deliveries")).all()
    assert len(rows) == 2
    stored = " ".join(str(value) for row in rows for value in row)
    assert "s3cret" not in stored and "***" in stored


def test_a_source_answers_429_beyond_its_rate_and_old_deliveries_are_pruned(site: Site, clock: FakeClock) -> None:
    limit = site.runtime.model.source("website_form").rate_per_minute
    anonymous = site.browser("192.0.2.50")
    statuses = [anonymous.post("/hooks/website_form", json={}).status_code for _ in range(limit + 3)]
    assert statuses[:limit].count(429) == 0 and statuses[limit:] == [429, 429, 429]
    assert site.count("crm_deliveries") == limit
    assert site.browser("192.0.2.51").post("/hooks/website_form", json={}).status_code != 429
    clock.advance(days=31)
    assert site.runtime.intake.prune(days=30) == limit + 1
    assert site.count("crm_deliveries") == 0


# -- 6. json fields ---------------------------------------------------------------------------------

def test_a_json_field_refuses_a_scalar_and_a_bad_stored_row_still_reads(site: Site) -> None:
    lead = _lead(site, "admin", "原始数据")
    refused = site.api["admin"].post("/api/lead", json={"name": "坏数据", "source": "website", "raw_payload": 5})
    assert refused.status_code in (403, 422)  # raw_payload is readonly: the engine fills it
    table = site.runtime.schema.table("lead")
    with site.runtime.db.write() as connection:  # a row written before the check, or by hand
        connection.execute(table.update().where(table.c.id == lead["id"]).values(raw_payload=5))
    assert site.api["admin"].get("/api/lead").status_code == 200
    assert site.api["admin"].get(f"/api/lead/{lead['id']}").json()["raw_payload"] == 5
    kind = site.runtime.schema.kinds.of_field(site.runtime.model.entity("lead").field("raw_payload"))
    with pytest.raises(Exception, match="expected a JSON object or list"):
        kind.coerce(site.runtime.model.entity("lead").field("raw_payload"), 5)


# -- 10. readonly fields ----------------------------------------------------------------------------

def test_readonly_fields_hold_on_the_api_and_the_form(site: Site) -> None:
    lead = _lead(site, "admin", "只读字段")
    refused = site.api["admin"].patch(f"/api/lead/{lead['id']}", json={"raw_payload": {"forged": True}})
    assert refused.status_code == 403 and refused.json()["field"] == "raw_payload"
    account = _account(site, "boss", "经理的客户")
    deal = site.api["boss"].post("/api/opportunity", json={"name": "审批单", "account": account["id"]}).json()
    forged = site.api["boss"].patch(f"/api/opportunity/{deal['id']}", json={"approval_status": "approved"})
    assert forged.status_code == 403
    assert site.api["boss"].get(f"/api/opportunity/{deal['id']}").json()["approval_status"] == "not_required"


# -- 11. exports -----------------------------------------------------------------------------------

def test_csv_export_escapes_formulas(site: Site) -> None:
    for name in ('=HYPERLINK("http://evil.example","点我")', "+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3"):
        _lead(site, "boss", name)
    exported = _signed_in(site, "boss").get("/lead/export")
    assert exported.status_code == 200
    cells = exported.text
    assert "'=HYPERLINK" in cells and "'+cmd" in cells and "'@SUM" in cells and "'-2+3" in cells
    assert not re.search(r'(^|,)"?[=+@]', cells, re.MULTILINE)


# -- 12. markdown messages -------------------------------------------------------------------------

def test_user_text_cannot_add_links_to_markdown_messages() -> None:
    from engine.channels.templates import render_message
    context = {"record": {"name": "[点此领奖](https://evil.example)"}}
    text = render_message("**新线索** {{ record.name }}", context, markdown=True)
    assert text.startswith("**新线索** ") and "](" not in text and "\\[点此领奖\\]" in text
    assert render_message("{{ record.name }}", context) == "[点此领奖](https://evil.example)"  # text channels


# -- 13. no input answers 500 -----------------------------------------------------------------------

def test_hostile_values_get_4xx_and_change_nothing(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_WEBSITE_FORM_TOKEN", "form-token-1234")
    api = site.api["admin"]
    before = site.count("lead")
    assert api.get(f"/api/lead/{2**64}").status_code == 404
    assert api.get(f"/api/lead/{2**31}").status_code == 404
    assert api.get(f"/api/lead?page={2**64}").status_code == 422
    assert api.get(f"/api/lead?id={2**70}").status_code == 422
    assert api.get(f"/api/files/{2**64}").status_code == 404
    assert api.get("/api/lead", params={"q": "a\x00b"}).status_code == 422  # found by schemathesis (PostgreSQL)
    assert api.get("/api/activity", params={"subject": "\x00"}).status_code == 422
    nested = b'{"name": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    for path in ("/api/lead", "/hooks/website_form"):
        answer = api.post(path, content=nested, headers={"Content-Type": "application/json",
                                                         "X-Webhook-Token": "form-token-1234"})
        assert 400 <= answer.status_code < 500, (path, answer.status_code)
    bodies = [b'{"name": "x", "source": "website", "next_follow_up": "0001-01-01"}',
              b'{"name": "x", "source": "website", "assigned_at": "0001-01-01T00:00:00+14:00"}',
              b'{"name": "\\ud800", "source": "website"}', b'{"name": "a\\u0000b", "source": "website"}',
              b'{"name": NaN, "source": "website"}', b'{"name": "x", "source": "website", "employee_count": 1e999999}',
              b'{"name": "x", "source": "website", "employee_count": "1e999999999"}']
    for body in bodies:
        answer = api.post("/api/lead", content=body, headers={"Content-Type": "application/json"})
        assert 400 <= answer.status_code < 500, (body, answer.status_code, answer.text[:200])
        assert "field" in answer.json()
    assert site.browser().get(f"/lead/{2**64}").status_code in (303, 404)
    assert site.count("lead") == before


# -- 14. cookies, caching, secrets, OpenAPI ----------------------------------------------------------

def test_cookies_are_secure_behind_https_and_api_answers_are_not_cached(site: Site) -> None:
    proxied = site.browser()
    proxied.headers["X-Forwarded-Proto"] = "https"
    token = _login_form(proxied)
    answer = proxied.post("/login", data={"username": "wang", "password": "crm-demo-wang", "csrf_token": token})
    assert "secure" in answer.headers["set-cookie"].lower()
    plain = site.browser().get("/login")
    assert "secure" not in plain.headers["set-cookie"].lower()  # http on loopback: the demo still works
    assert site.api["wang"].get("/api/lead").headers["cache-control"] == "no-store"
    paths = site.api["wang"].get("/api/openapi.json").json()["paths"]
    assert "/api/files" in paths and "/api/files/{file_id}" in paths


def test_the_secret_key_comes_from_the_environment_or_a_private_file(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRM_SECRET_KEY", raising=False)
    monkeypatch.delenv("CRM_SECRET_KEY_FILE", raising=False)
    with pytest.raises(SecretKeyMissing, match="CRM_SECRET_KEY"):
        secret_key("postgresql://db/crm", required=True)
    database = tmp_path / "crm.sqlite"
    key = secret_key(f"sqlite:///{database}")
    path = Path(f"{database}.secret-key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(key) >= 32
    assert secret_key(f"sqlite:///{database}") == key  # the same key after a restart
    os.chmod(path, 0o644)
    with pytest.raises(SecretKeyMissing, match="chmod 600"):
        secret_key(f"sqlite:///{database}")
    monkeypatch.setenv("CRM_SECRET_KEY", "short")
    with pytest.raises(SecretKeyMissing, match="at least 32"):
        secret_key("")


# -- 7. expressions have a budget ----------------------------------------------------------------------

@pytest.mark.parametrize("source", [
    "(((999999**1000)**10)**10)**10",
    "'%0*d' % (999999999, 1)",
    "lower(['a'*100000]*100000)",
    "len(str_field * 100000)",
    "999999 * 999999 ** 999",
])
def test_expressions_that_would_run_away_are_stopped(source: str) -> None:
    evaluator = Evaluator(FakeClock())
    expression = parse_expression(source.replace("str_field", "name"), NOWHERE)
    with pytest.raises(ExpressionError):
        evaluator.evaluate(expression, {"name": "x" * 100})


def test_many_bounded_steps_over_a_long_text_run_out_of_their_cpu_budget() -> None:
    """Each step is within its limits; together they pass the 10 ms budget and are stopped —
    while the same expression over a short text, well inside it, gives its value."""
    evaluator = Evaluator(FakeClock())
    expression = parse_expression(" + ".join(["len(lower(upper(name)))"] * 20), NOWHERE)
    assert evaluator.evaluate(expression, {"name": "Xé" * 100}) == 4000
    with pytest.raises(ExpressionError, match="budget of 10 ms"):
        evaluator.evaluate(expression, {"name": "Xé" * 400_000})
