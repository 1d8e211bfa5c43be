"""Roles from the shipped blueprint, enforced for every entry point (service and API), on both databases."""

from __future__ import annotations

from typing import Any

import pytest

from engine.engine import Engine
from engine.runtime.ops.users import NewUser
from engine.runtime.records.actors import SYSTEM
from engine.runtime.records.permissions import Forbidden
from engine.runtime.records.queries import ListQuery
from engine.runtime.ops.users import LoginRefused
from tests.support.blueprints import SHIPPED_CRM
from starlette.testclient import TestClient

PEOPLE = (NewUser("manager", "周经理", "sales_manager", "east", password="manager-pass"),
          NewUser("wang", "王磊", "sales_rep", "east", "manager", password="wang-pass1"),
          NewUser("li", "李娜", "sales_rep", "east", "manager", password="li-pass-123"),
          NewUser("zhao", "赵敏", "sales_rep", "south", password="zhao-pass-1"),
          NewUser("chen", "陈静", "service_agent", "service", password="chen-pass-1"))


@pytest.fixture
def crm(make_engine: Any) -> tuple[Engine, dict[str, Any]]:
    runtime = make_engine(SHIPPED_CRM)
    actors = {person.username: runtime.users.add(person) for person in PEOPLE}
    return runtime, actors


def _lead(runtime: Engine, owner: Any, name: str) -> dict[str, Any]:
    return runtime.records.create("lead", {"name": name, "source": "website", "owner": owner.id,
                                           "raw_payload": {"ip": "10.0.0.1"}, "score": 40}, actor=SYSTEM).record


def _names(runtime: Engine, actor: Any) -> set[str]:
    return {item["name"] for item in runtime.records.list("lead", ListQuery(per_page=100), actor=actor).items}


def test_reps_see_their_own_managers_their_team(crm: tuple[Engine, dict[str, Any]]) -> None:
    runtime, people = crm
    _lead(runtime, people["wang"], "王的线索")
    _lead(runtime, people["li"], "李的线索")
    south = _lead(runtime, people["zhao"], "赵的线索")
    assert _names(runtime, people["wang"]) == {"王的线索"}
    assert _names(runtime, people["manager"]) == {"王的线索", "李的线索"}
    with pytest.raises(Forbidden) as refused:
        runtime.records.get("lead", south["id"], actor=people["wang"])
    assert "read" in refused.value.message and "lead" in refused.value.message
    with pytest.raises(Forbidden):
        runtime.records.get("lead", south["id"], actor=people["manager"])
    assert runtime.records.get("lead", south["id"], actor=people["zhao"])["name"] == "赵的线索"


def test_a_role_without_read_gets_403_not_an_empty_list(crm: tuple[Engine, dict[str, Any]]) -> None:
    runtime, people = crm
    _lead(runtime, people["wang"], "王的线索")
    with pytest.raises(Forbidden) as refused:
        runtime.records.list("lead", ListQuery(), actor=people["chen"])
    assert refused.value.status == 403 and "you lack permission 'read' on lead" in refused.value.message


def test_hidden_field_never_appears_and_readonly_field_cannot_be_changed(crm: tuple[Engine, dict[str, Any]]) -> None:
    runtime, people = crm
    lead = _lead(runtime, people["wang"], "王的线索")
    client = TestClient(runtime.web_app(), headers={"Authorization": f"Bearer {runtime.users.create_token('wang')}"})
    assert "raw_payload" not in client.get(f"/api/lead/{lead['id']}").json()
    assert all("raw_payload" not in item for item in client.get("/api/lead").json()["items"])
    history = client.get(f"/api/lead/{lead['id']}/events").json()["items"]
    assert history and all("raw_payload" not in event["changes"] for event in history)
    assert "10.0.0.1" not in client.get(f"/api/lead/{lead['id']}/events").text
    assert client.get("/api/lead", params={"raw_payload__isnull": "false"}).status_code == 403

    scored = runtime.records.get("lead", lead["id"], actor=SYSTEM)["score"]  # the shipped scoring rule sets it
    refused = client.patch(f"/api/lead/{lead['id']}", json={"score": 99})
    assert refused.status_code == 403 and refused.json()["field"] == "score"
    assert runtime.records.get("lead", lead["id"], actor=SYSTEM)["score"] == scored != 99
    assert client.patch(f"/api/lead/{lead['id']}", json={"company": "王氏机械"}).status_code == 200


def test_api_answers_403_for_another_teams_record_and_401_without_credentials(
        crm: tuple[Engine, dict[str, Any]]) -> None:
    runtime, people = crm
    south = _lead(runtime, people["zhao"], "赵的线索")
    app = runtime.web_app()
    wang = TestClient(app, headers={"Authorization": f"Bearer {runtime.users.create_token('wang')}"})
    response = wang.get(f"/api/lead/{south['id']}")
    assert response.status_code == 403 and response.json()["code"] == "forbidden"
    assert "赵" not in response.text
    assert wang.patch(f"/api/lead/{south['id']}", json={"company": "x"}).status_code == 403
    assert TestClient(app).get("/api/lead").status_code == 401


def test_assigning_needs_the_assign_permission_within_scope(crm: tuple[Engine, dict[str, Any]]) -> None:
    runtime, people = crm
    lead = _lead(runtime, people["wang"], "王的线索")
    with pytest.raises(Forbidden):
        runtime.records.update("lead", lead["id"], {"owner": people["li"].id}, actor=people["wang"])
    with pytest.raises(Forbidden):
        runtime.records.update("lead", lead["id"], {"owner": people["zhao"].id}, actor=people["manager"])
    moved = runtime.records.update("lead", lead["id"], {"owner": people["li"].id}, actor=people["manager"])
    assert moved["owner"] == people["li"].id
    assert _names(runtime, people["li"]) == {"王的线索"} and _names(runtime, people["wang"]) == set()


def test_disabled_user_loses_access_at_once(crm: tuple[Engine, dict[str, Any]]) -> None:
    runtime, people = crm
    client = TestClient(runtime.web_app(), headers={"Authorization": f"Bearer {runtime.users.create_token('wang')}"})
    assert client.get("/api/lead").status_code == 200
    runtime.users.update("wang", is_active=False)
    assert client.get("/api/lead").status_code == 401
    with pytest.raises(LoginRefused):
        runtime.users.login("wang", "wang-pass1", "127.0.0.1")


def test_repeated_failed_sign_ins_are_throttled(crm: tuple[Engine, dict[str, Any]], clock: Any) -> None:
    runtime, _ = crm
    assert runtime.users.login("li", "li-pass-123", "10.1.1.1").username == "li"
    for _ in range(5):
        with pytest.raises(LoginRefused, match="wrong username or password"):
            runtime.users.login("li", "guess", "10.1.1.1")
    with pytest.raises(LoginRefused, match="too many failed sign-ins"):
        runtime.users.login("li", "li-pass-123", "10.1.1.1")
    clock.advance(minutes=16)
    assert runtime.users.login("li", "li-pass-123", "10.1.1.1").username == "li"


def test_a_browser_session_must_send_its_csrf_token_to_write_through_the_api(
        crm: tuple[Engine, dict[str, Any]]) -> None:
    runtime, _ = crm
    browser = TestClient(runtime.web_app())
    page = browser.get("/login")
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    signed_in = browser.post("/login", data={"username": "wang", "password": "wang-pass1", "csrf_token": token},
                             follow_redirects=False)
    assert signed_in.status_code in (302, 303)
    refused = browser.post("/api/lead", json={"name": "跨站请求", "source": "website"})
    assert refused.status_code == 403 and refused.json()["code"] == "csrf_refused"
    assert browser.get("/api/lead").json()["total"] == 0
