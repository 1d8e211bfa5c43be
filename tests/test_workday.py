"""The working day on the shipped CRM, on SQLite and PostgreSQL: a logged call drives its lead
(first touch, last activity, next follow-up, the first-call SLA stopped), leads typed in or
posted to the API are routed and stamped, views mean what their names say in the API and on the
list screen alike, and a manager sees and assigns the team's unassigned queue while reps never do.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import warnings
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import sqlalchemy as sa

from engine.engine import Engine
from engine.metamodel import BlueprintInvalid
from engine.runtime.ops.users import NewUser
from engine.runtime.records.actors import SYSTEM, Actor
from engine.runtime.records.queries import parse_list_query
from tests.support.blueprints import SHIPPED_CRM, load, write_blueprint

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

CST = ZoneInfo("Asia/Shanghai")
PASSWORD = "correct horse battery"


def _local(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=CST).astimezone(dt.timezone.utc)


@pytest.fixture
def crm(make_engine: Any, clock: Any) -> tuple[Engine, dict[str, Actor]]:
    clock.set(_local(2026, 11, 23, 9, 0))  # a Monday morning in Shanghai
    runtime = make_engine(SHIPPED_CRM)
    people = {}
    for user in (NewUser("admin", "管理员", "admin", password=PASSWORD),
                 NewUser("manager", "周经理", "sales_manager", "east", password=PASSWORD),
                 NewUser("wang", "王磊", "sales_rep", "east", "manager", password=PASSWORD),
                 NewUser("li", "李娜", "sales_rep", "east", "manager", password=PASSWORD),
                 NewUser("zhao", "赵敏", "sales_rep", "south", password=PASSWORD)):
        people[user.username] = runtime.users.add(user)
    return runtime, people


def api(runtime: Engine, username: str) -> TestClient:
    return TestClient(runtime.web_app(), headers={"Authorization": f"Bearer {runtime.users.create_token(username)}",
                                                  "Accept-Language": "zh"})


def lead(runtime: Engine, **values: Any) -> dict[str, Any]:
    return runtime.records.create("lead", {"name": "张伟", "source": "website", "region": "east",
                                           "industry": "saas", **values}, actor=SYSTEM).record


def listed(runtime: Engine, actor: Actor, entity: str = "lead", **params: str) -> list[int]:
    query = parse_list_query(runtime.model.entity(entity), {"per_page": "500", **params})
    return sorted(item["id"] for item in runtime.records.list(entity, query, actor=actor).items)


# -- a logged call drives its lead --------------------------------------------------------------------

def test_a_done_call_touches_the_lead_and_stops_its_first_call_sla(crm: Any, clock: Any) -> None:
    runtime, people = crm
    record = lead(runtime, phone="13812345678")
    owner = next(person for person in people.values() if person.id == record["owner"])
    assert owner.username in ("wang", "li") and record["assigned_at"] == clock.now()  # routed and stamped
    clock.advance(minutes=10)
    call = runtime.records.create("activity", {"subject": "首次电话", "kind": "call", "done": True,
                                               "outcome": "reached", "lead": record["id"],
                                               "next_follow_up": "2026-11-27"}, actor=owner).record
    assert call["done_at"] == clock.now()  # the done time is filled in when it is saved as done
    touched = runtime.records.get("lead", record["id"], actor=owner)
    assert touched["first_touched_at"] == clock.now() and touched["last_activity_at"] == clock.now()
    assert touched["next_follow_up"] == dt.date(2026, 11, 27) and touched["status"] == "contacted"
    clock.advance(hours=48)  # long past the first-call target: the clock stopped, nothing breaches
    runtime.worker(environ={}).tick()
    after = runtime.records.get("lead", record["id"], actor=owner)
    assert after["owner"] == owner.id and "sla_breached" not in (after["tags"] or [])
    kinds = [event.kind for event in runtime.records.events("lead", record["id"], actor=SYSTEM)]
    assert "sla_breached" not in kinds


def test_a_later_activity_moves_last_activity_but_never_the_first_touch(crm: Any, clock: Any) -> None:
    runtime, people = crm
    record = lead(runtime)
    owner = Actor(record["owner"], "owner", role="sales_rep", team="east")
    first = clock.now()
    runtime.records.create("activity", {"subject": "电话", "kind": "call", "done": True, "outcome": "reached",
                                        "lead": record["id"]}, actor=owner)
    clock.advance(days=1)
    planned = runtime.records.create("activity", {"subject": "上门拜访", "kind": "visit", "lead": record["id"],
                                                  "due_at": (clock.now() + dt.timedelta(days=1)).isoformat()},
                                     actor=owner).record
    assert runtime.records.get("lead", record["id"], actor=SYSTEM)["last_activity_at"] == first  # planned: no
    clock.advance(days=1)
    runtime.records.update("activity", planned["id"], {"done": True, "notes": "见到了采购经理"}, actor=owner)
    touched = runtime.records.get("lead", record["id"], actor=SYSTEM)
    assert touched["first_touched_at"] == first and touched["last_activity_at"] == clock.now()


def test_an_email_is_activity_but_not_a_first_touch(crm: Any) -> None:
    runtime, _ = crm
    record = lead(runtime)
    runtime.records.create("activity", {"subject": "发资料", "kind": "email", "done": True, "outcome": "reached",
                                        "lead": record["id"]}, actor=SYSTEM)
    touched = runtime.records.get("lead", record["id"], actor=SYSTEM)
    assert touched["first_touched_at"] is None and touched["last_activity_at"] is not None
    assert touched["status"] == "new"


# -- routing on every door ------------------------------------------------------------------------------

def test_a_lead_posted_to_the_api_by_the_admin_is_routed_not_owned_by_the_admin(crm: Any) -> None:
    runtime, people = crm
    answer = api(runtime, "admin").post("/api/lead", json={"name": "李雷", "source": "cold_call", "region": "east",
                                                             "industry": "saas"})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["owner"] in (people["wang"].id, people["li"].id) and body["assigned_at"]
    kept = api(runtime, "admin").post("/api/lead", json={"name": "韩梅梅", "source": "cold_call",
                                                           "owner": people["zhao"].id})
    assert kept.json()["owner"] == people["zhao"].id  # an owner given is kept


def test_the_s_grade_call_task_belongs_to_the_routed_owner(crm: Any) -> None:
    runtime, _ = crm
    record = lead(runtime, registered_capital="9000000", hiring_recently=True, has_tenders=True)
    assert record["grade"] == "S" and record["owner"] is not None
    tasks = runtime.records.list("activity", parse_list_query(runtime.model.entity("activity"),
                                                              {"lead": str(record["id"])}), actor=SYSTEM).items
    assert [task["owner"] for task in tasks] == [record["owner"]]


def test_a_reassignment_restamps_assigned_at(crm: Any, clock: Any) -> None:
    runtime, people = crm
    record = lead(runtime)
    clock.advance(hours=3)
    other = people["li"] if record["owner"] == people["wang"].id else people["wang"]
    moved = runtime.records.update("lead", record["id"], {"owner": other.id}, actor=people["manager"])
    assert moved["assigned_at"] == clock.now()


# -- views and the unassigned queue ------------------------------------------------------------------------

def _unowned(runtime: Engine, region: str, **values: Any) -> dict[str, Any]:
    record = lead(runtime, region=region, **values)
    return runtime.records.update("lead", record["id"], {"owner": None}, actor=SYSTEM)


def test_the_manager_sees_the_team_unassigned_queue_and_reps_never_do(crm: Any) -> None:
    runtime, people = crm
    east = [_unowned(runtime, "east")["id"], _unowned(runtime, "north")["id"]]
    south = _unowned(runtime, "south")["id"]
    closed = _unowned(runtime, "east", status="disqualified", disqualify_reason="spam")["id"]
    owned = lead(runtime)["id"]
    assert listed(runtime, people["manager"], view="unassigned") == east
    assert listed(runtime, people["manager"], owner="unassigned") == sorted([*east, closed])
    assert listed(runtime, people["admin"], view="unassigned") == sorted([*east, south])
    for rep in ("wang", "li", "zhao"):
        assert listed(runtime, people[rep], view="unassigned") == []
        assert set(listed(runtime, people[rep])) <= {owned}  # only ever their own
    # the API answers the same as the engine, and the manager assigns the queue in one go
    client = api(runtime, "manager")
    assert sorted(item["id"] for item in client.get("/api/lead?view=unassigned").json()["items"]) == east
    for record_id in east:
        assert client.patch(f"/api/lead/{record_id}", json={"owner": people["wang"].id}).status_code == 200
    assert listed(runtime, people["manager"], view="unassigned") == []
    assert set(east) <= set(listed(runtime, people["wang"]))
    assert runtime.records.get("lead", east[0], actor=SYSTEM)["assigned_at"] is not None


def test_the_manager_may_open_an_unassigned_lead_of_the_team_but_not_of_another(crm: Any) -> None:
    runtime, people = crm
    mine, theirs = _unowned(runtime, "east"), _unowned(runtime, "south")
    client = api(runtime, "manager")
    assert client.get(f"/api/lead/{mine['id']}").status_code == 200
    assert client.get(f"/api/lead/{theirs['id']}").status_code == 403


def test_views_mean_what_their_names_say(crm: Any) -> None:
    runtime, people = crm
    wang = people["wang"]
    open_lead = lead(runtime, owner=wang.id)
    lost = lead(runtime, owner=wang.id, status="disqualified", disqualify_reason="spam")
    paused = lead(runtime, owner=wang.id, status="paused", pause_reason="预算冻结")
    assert listed(runtime, wang, view="my_follow_ups") == [open_lead["id"]]
    assert listed(runtime, wang, view="paused") == [paused["id"]]
    assert lost["id"] in listed(runtime, wang)  # the default view still lists everything they own
    assert listed(runtime, wang, owner="me") == sorted([open_lead["id"], lost["id"], paused["id"]])
    # the API reads the same view the same way, and refuses one that does not exist, naming it
    client = api(runtime, "wang")
    assert [item["id"] for item in client.get("/api/lead?view=my_follow_ups").json()["items"]] == [open_lead["id"]]
    wrong = client.get("/api/lead?view=my_followups")
    assert wrong.status_code == 422 and "my_follow_ups" in wrong.text


def test_the_pipeline_leaves_out_won_and_lost_deals(crm: Any) -> None:
    runtime, people = crm
    account = runtime.records.create("account", {"name": "宁波精工"}, actor=SYSTEM).record
    open_deal = runtime.records.create("opportunity", {"name": "产线改造", "account": account["id"],
                                                       "owner": people["wang"].id}, actor=SYSTEM).record
    lost = runtime.records.create("opportunity", {"name": "旧项目", "account": account["id"], "stage": "lost",
                                                  "loss_reason": "price", "owner": people["wang"].id},
                                  actor=SYSTEM, history=True).record
    assert listed(runtime, people["manager"], "opportunity", view="pipeline") == [open_deal["id"]]
    assert lost["id"] in listed(runtime, people["manager"], "opportunity")


# -- the blueprint says it at load time --------------------------------------------------------------------

VIEW_BLUEPRINT = {
    "app.yaml": "app: t\ninclude: ['entities/*.yaml', 'roles.yaml']\n",
    "entities/lead.yaml": """
        entity: lead
        fields:
          name: {type: string}
          status: {type: choice, options: {new: New, won: Won}}
        views:
          list:
            open:
              where: "{where}"
    """,
    "roles.yaml": """
        teams:
          east: {covers: {lead: "{covers}"}}
        roles:
          rep: {entities: {lead: {read: team}}}
    """,
}


@pytest.mark.parametrize(("where", "covers", "expected"), [
    ("status != 'wonn'", "status == 'new'", "status has no option 'wonn'"),
    ("stauts == 'new'", "status == 'new'", "'stauts' is not a field of lead"),
    ("len(name) > 3", "status == 'new'", "'len(name)' is not a field name"),
    ("name", "status == 'new'", "only for a yes/no field"),
    ("name == me", "status == 'new'", "'me' is a user"),
    ("status == 'new'", "owner == me", "'me' (the signed-in user) has no meaning here"),
    ("status == 'new'", "status == 'neww'", "status has no option 'neww'"),
])
def test_a_view_or_team_condition_the_database_cannot_answer_is_refused_at_its_line(
        tmp_path: Any, where: str, covers: str, expected: str) -> None:
    files = {name: text.replace("{where}", where).replace("{covers}", covers) for name, text in VIEW_BLUEPRINT.items()}
    with pytest.raises(BlueprintInvalid) as caught:
        load(write_blueprint(tmp_path / "bp", files))
    text = str(caught.value)
    assert expected in text and (".yaml:" in text)


# -- lead conversion -----------------------------------------------------------------------------------

def _qualified(runtime: Engine, owner: Actor, **values: Any) -> dict[str, Any]:
    record = lead(runtime, owner=owner.id, company="苏州精工机械有限公司", phone="13912345678", budget="300000",
                  demand_level="A", contact_role="decision_maker", job_title="总经理", **values)
    runtime.records.create("activity", {"subject": "电话沟通需求", "kind": "call", "done": True,
                                        "outcome": "interested", "lead": record["id"]}, actor=owner)
    return runtime.records.transition("lead", record["id"], "qualified", actor=owner)


def test_conversion_creates_account_contact_and_opportunity_linked_both_ways(crm: Any) -> None:
    runtime, people = crm
    wang = people["wang"]
    record = _qualified(runtime, wang)
    answer = api(runtime, "wang").post(f"/api/lead/{record['id']}/convert")
    assert answer.status_code == 201, answer.text
    created = answer.json()["created"]
    account = runtime.records.get("account", created["account"]["id"], actor=wang)
    contact = runtime.records.get("contact", created["contact"]["id"], actor=wang)
    deal = runtime.records.get("opportunity", created["opportunity"]["id"], actor=wang)
    assert account["name"] == "苏州精工机械有限公司" and account["owner"] == wang.id
    assert contact["account"] == account["id"] and contact["phone"] == record["phone"]
    assert contact["role"] == "decision_maker" and contact["job_title"] == "总经理"
    assert deal["account"] == account["id"] and deal["contact"] == contact["id"] and deal["lead"] == record["id"]
    assert deal["amount"][0] == 300000 and deal["owner"] == wang.id
    converted = runtime.records.get("lead", record["id"], actor=wang)
    assert (converted["converted_account"], converted["converted_contact"], converted["converted_opportunity"]) == \
        (account["id"], contact["id"], deal["id"])
    assert converted["status"] == "converted" and converted["converted_at"] is not None
    assert "converted" in [event.kind for event in runtime.records.events("lead", record["id"], actor=wang)]
    assert "converted" in [event.kind for event in runtime.records.events("opportunity", deal["id"], actor=wang)]
    timeline = _text(signed_in(runtime, "wang").get(f"/lead/{record['id']}").text)
    assert f"转化为 客户 #{account['id']}；联系人 #{contact['id']}；商机 #{deal['id']}" in timeline
    assert "{targets}" not in timeline and "记录了 converted" not in timeline
    assert f"由线索 #{record['id']} 转化而来" in _text(signed_in(runtime, "wang").get(f"/opportunity/{deal['id']}").text)


def test_conversion_reuses_the_account_of_the_same_company_and_refuses_a_second_time(crm: Any) -> None:
    runtime, people = crm
    wang = people["wang"]
    existing = runtime.records.create("account", {"name": "苏州精工机械有限公司", "owner": wang.id}, actor=SYSTEM).record
    record = _qualified(runtime, wang)
    client = api(runtime, "wang")
    first = client.post(f"/api/lead/{record['id']}/convert").json()["created"]
    assert first["account"] == {"entity": "account", "id": existing["id"], "matched": True}
    again = client.post(f"/api/lead/{record['id']}/convert")
    assert again.status_code == 409 and "converted already" in again.text
    with runtime.db.read() as connection:  # nothing was created twice
        for entity in ("account", "contact", "opportunity"):
            table = runtime.schema.table(entity)
            assert connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == 1


def test_a_lead_not_yet_qualified_is_refused_and_nothing_is_created(crm: Any) -> None:
    runtime, people = crm
    record = lead(runtime, owner=people["wang"].id, company="杭州云启")
    refused = api(runtime, "wang").post(f"/api/lead/{record['id']}/convert")
    # the condition in the field's words, in the asker's language, not the blueprint's expression
    assert refused.status_code == 422 and "现在还不能转化：需要线索状态为“已确认需求”" in refused.json()["message"], refused.text
    assert "status ==" not in refused.text
    with runtime.db.read() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(runtime.schema.table("account"))).scalar_one() == 0


# -- on the screens ---------------------------------------------------------------------------------------

def signed_in(runtime: Engine, username: str) -> TestClient:
    client = TestClient(runtime.web_app(), follow_redirects=False, headers={"Accept-Language": "zh"})
    token = _csrf(client.get("/login").text)
    assert client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token,
                                       "next": "/"}).status_code == 303
    return client


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match
    return match.group(1)


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def test_a_rep_logs_a_call_on_the_lead_page_and_lands_back_on_it(crm: Any, clock: Any) -> None:
    runtime, people = crm
    record = lead(runtime, owner=people["wang"].id, company="宁波精工")
    client = signed_in(runtime, "wang")
    page = client.get(f"/lead/{record['id']}").text
    form = page.split('id="log"', 1)[1].split("</form>", 1)[0]
    assert f'action="/lead/{record["id"]}/log"' in form
    assert 'value="2026-11-25"' in form  # the next follow-up defaults as activity.yaml says: two days ahead
    saved = client.post(f"/lead/{record['id']}/log", data={
        "csrf_token": _csrf(page), "kind": "call", "outcome": "reached", "notes": "约了下周拜访",
        "next_follow_up": "2026-11-30"})
    assert saved.status_code == 303 and saved.headers["location"] == f"/lead/{record['id']}#log"
    touched = runtime.records.get("lead", record["id"], actor=SYSTEM)
    assert touched["first_touched_at"] == clock.now() and touched["last_activity_at"] == clock.now()
    assert touched["next_follow_up"] == dt.date(2026, 11, 30) and touched["status"] == "contacted"
    after = _text(client.get(f"/lead/{record['id']}").text)
    assert "已记录电话" in after
    assert "跟进记录「电话 · 张伟」" in after.split("动态", 1)[-1]


def test_a_note_logged_with_the_follow_up_date_emptied_leaves_the_leads_date_alone(crm: Any) -> None:
    runtime, people = crm
    record = lead(runtime, owner=people["wang"].id, company="宁波精工")
    runtime.records.update("lead", record["id"], {"next_follow_up": dt.date(2026, 12, 9)}, actor=SYSTEM)
    client = signed_in(runtime, "wang")
    page = client.get(f"/lead/{record['id']}").text
    saved = client.post(f"/lead/{record['id']}/log", data={
        "csrf_token": _csrf(page), "kind": "wechat", "notes": "发了资料", "next_follow_up": ""})
    assert saved.status_code == 303
    (note_id,) = listed(runtime, SYSTEM, "activity", lead=str(record["id"]))
    assert runtime.records.get("activity", note_id, actor=SYSTEM)["next_follow_up"] is None  # emptied on the form: not the field's default (two days ahead)
    assert runtime.records.get("lead", record["id"], actor=SYSTEM)["next_follow_up"] == dt.date(2026, 12, 9)


def test_a_logged_call_without_notes_or_outcome_is_refused_on_the_page_and_changes_nothing(crm: Any) -> None:
    runtime, people = crm
    record = lead(runtime, owner=people["wang"].id)
    client = signed_in(runtime, "wang")
    page = client.get(f"/lead/{record['id']}").text
    refused = client.post(f"/lead/{record['id']}/log", data={"csrf_token": _csrf(page), "kind": "visit",
                                                            "next_follow_up": "2026-12-01"})
    assert refused.status_code == 422
    shown = _text(refused.text)
    assert "完成的跟进必须填写沟通要点或跟进结果" in shown and "请修正标出的字段" in shown
    assert 'value="2026-12-01"' in refused.text  # the input is kept
    assert runtime.records.get("lead", record["id"], actor=SYSTEM)["first_touched_at"] is None
    assert listed(runtime, SYSTEM, "activity", lead=str(record["id"])) == []


def test_the_log_form_is_not_offered_to_who_may_not_create_activities_and_its_post_is_refused(crm: Any) -> None:
    runtime, _ = crm
    runtime.users.add(NewUser("fin", "财务", "finance", password=PASSWORD))  # finance reads, creates nothing
    record = lead(runtime)
    client = signed_in(runtime, "fin")
    page = client.get(f"/lead/{record['id']}").text
    assert f'action="/lead/{record["id"]}/log"' not in page
    refused = client.post(f"/lead/{record['id']}/log", data={"csrf_token": _csrf(page), "kind": "call",
                                                            "outcome": "reached"})
    assert refused.status_code == 403
    assert listed(runtime, SYSTEM, "activity", lead=str(record["id"])) == []
    product = runtime.records.create("product", {"name": "数控机床", "model_code": "CNC-1", "category": "equipment"},
                                     actor=SYSTEM).record  # activities do not link to products: no such form
    wang = signed_in(runtime, "wang")
    page = wang.get(f"/product/{product['id']}").text
    assert f'action="/product/{product["id"]}/log"' not in page
    assert wang.post(f"/product/{product['id']}/log", data={"csrf_token": _csrf(page)}).status_code == 404


def test_the_convert_button_converts_once_and_the_page_then_links_what_it_became(crm: Any) -> None:
    runtime, people = crm
    record = _qualified(runtime, people["wang"])
    client = signed_in(runtime, "wang")
    page = client.get(f"/lead/{record['id']}").text
    assert "转化为客户" in page
    done = client.post(f"/lead/{record['id']}/convert", data={"csrf_token": _csrf(page)})
    assert done.status_code == 303
    after = client.get(f"/lead/{record['id']}").text
    assert "已转化" in _text(after) and "转化为客户</button>" not in after
    again = client.post(f"/lead/{record['id']}/convert", data={"csrf_token": _csrf(after)})
    assert "已经转化过" in _text(client.get(again.headers["location"]).text)


def test_the_manager_assigns_the_unassigned_queue_from_the_list(crm: Any) -> None:
    runtime, people = crm
    queue = [_unowned(runtime, "east")["id"], _unowned(runtime, "north")["id"]]
    client = signed_in(runtime, "manager")
    page = client.get("/lead?view=unassigned").text
    for record_id in queue:
        assert f'/lead/{record_id}"' in page
    assert '<option value="unassigned"' in client.get("/lead").text  # the owner filter offers me / unassigned
    answer = client.post("/lead/assign", data={"csrf_token": _csrf(page), "ids": [str(i) for i in queue],
                                                "owner": str(people["li"].id), "back": "view=unassigned"})
    assert answer.status_code == 303
    assert all(runtime.records.get("lead", i, actor=SYSTEM)["owner"] == people["li"].id for i in queue)
    rep_page = signed_in(runtime, "wang").get("/lead?view=unassigned").text
    assert not any(f'/lead/{record_id}"' in rep_page for record_id in queue)


def test_the_list_shows_each_rows_sla_and_sorts_overdue_first(crm: Any, clock: Any) -> None:
    runtime, people = crm
    wang = people["wang"]
    late = lead(runtime, owner=wang.id, name="超时客户", grade="C")
    clock.advance(hours=3)
    fresh = lead(runtime, owner=wang.id, name="新客户", grade="C")
    touched = lead(runtime, owner=wang.id, name="已联系客户", grade="C")
    runtime.records.create("activity", {"subject": "电话", "kind": "call", "done": True, "outcome": "reached",
                                        "lead": touched["id"]}, actor=wang)
    clock.advance(hours=5, minutes=50)  # 17:50: both missed "opened within 15 min"; the call is due at 18:00
    runtime.worker(environ={}).tick()
    client = api(runtime, "wang")
    ordered = [item["id"] for item in client.get("/api/lead?sort=sla_due").json()["items"]]
    assert ordered == [late["id"], fresh["id"], touched["id"]]  # the contacted one's clock is days away
    rows = {row.split("</tr>")[0] for row in signed_in(runtime, "wang").get("/lead?sort=sla_due").text.split("<tr")}
    late_row = next(row for row in rows if f'/lead/{late["id"]}"' in row)
    touched_row = next(row for row in rows if f'/lead/{touched["id"]}"' in row)
    assert "sla-chip overdue" in late_row and "已超时" in late_row
    assert "sla-chip on-track" in touched_row and "剩余" in touched_row
    for row in (late_row, touched_row):  # how late / how long left in Chinese units, not "5h50m" or "2d"
        assert re.search(r"(已超时|剩余)[^<]*\d+(天|小时|分钟)", row) and not re.search(r"\d+(h|m|d)\b", _text(row))


def test_money_columns_are_totalled_and_board_columns_count_sum_and_link_the_rest(
        crm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, people = crm
    account = runtime.records.create("account", {"name": "宁波精工"}, actor=SYSTEM).record
    for name, amount in (("一期", "120000"), ("二期", "80000.50"), ("三期", "300000")):
        runtime.records.create("opportunity", {"name": name, "account": account["id"], "amount": amount,
                                               "owner": people["wang"].id}, actor=SYSTEM)
    client = signed_in(runtime, "manager")
    listing = _text(client.get("/opportunity?view=pipeline").text)
    assert "合计" in listing and "500,000.50 CNY" in listing  # every matching record, not just the page
    import engine.runtime.web.screens.boards as boards
    monkeypatch.setattr(boards, "CARDS_PER_COLUMN", 2)
    board = client.get("/opportunity/board").text
    assert "金额 500,000.50 CNY" in _text(board)  # the total names what it adds up
    assert "显示了 2 / 3 张" in _text(board) and 'href="/opportunity?stage=qualify"' in board
    lead(runtime, owner=people["wang"].id, company="宁波精工", budget="200000", registered_capital="5000000")
    leads_board = _text(client.get("/lead/board").text)  # lead.yaml: sum: budget, not the registered capital
    assert "预算 200,000.00 CNY" in leads_board and "5,000,000" not in leads_board


def test_the_activity_form_tells_two_leads_of_the_same_name_apart(crm: Any) -> None:
    runtime, people = crm
    first = lead(runtime, owner=people["wang"].id, company="宁波精工")
    second = lead(runtime, owner=people["wang"].id, company="杭州云启")
    form = _text(signed_in(runtime, "wang").get("/activity/new").text)
    assert f"张伟 · 宁波精工 #{first['id']}" in form and f"张伟 · 杭州云启 #{second['id']}" in form


def test_the_sla_breached_tag_does_not_regrade_a_lead(crm: Any) -> None:
    runtime, people = crm
    record = lead(runtime, industry="manufacturing", tags=["trial_requested"], registered_capital="6000000",
                  hiring_recently=True, budget="1500000")
    assert record["demand_level"] == "A" and record["grade"] == "A"  # 25 + 15 + 15 + 20 = 75
    flagged = runtime.records.update("lead", record["id"], {"contact_role": "decision_maker"}, actor=SYSTEM)
    again = runtime.records.update("lead", record["id"], {"tags": [*flagged["tags"], "sla_breached"]}, actor=SYSTEM)
    assert again["grade"] == "A" and again["contact_role"] == "decision_maker" and again["score"] == flagged["score"]


def test_a_rep_disqualifies_a_lead_from_its_page_with_the_reason_and_a_missing_reason_is_refused(crm: Any) -> None:
    runtime, people = crm
    record = lead(runtime, owner=people["wang"].id)
    client = signed_in(runtime, "wang")
    page = client.get(f"/lead/{record['id']}").text
    assert 'class="set-aside-form" data-stage="disqualified"' in page
    assert 'class="set-aside-form" data-stage="paused"' in page
    assert "改为“无效”" in _text(page)
    missing = client.post(f"/lead/{record['id']}/set_aside", data={
        "csrf_token": _csrf(page), "to": "disqualified", "version": str(record["version"]), "disqualify_reason": ""})
    assert missing.status_code == 303
    assert "标记为无效时请选择无效原因" in _text(client.get(missing.headers["location"]).text)
    assert runtime.records.get("lead", record["id"], actor=SYSTEM)["status"] == "new"  # nothing changed
    done = client.post(f"/lead/{record['id']}/set_aside", data={
        "csrf_token": _csrf(page), "to": "disqualified", "version": str(record["version"]),
        "disqualify_reason": "spam"})
    assert done.status_code == 303
    after = runtime.records.get("lead", record["id"], actor=SYSTEM)
    assert after["status"] == "disqualified" and after["disqualify_reason"] == "spam"
    moves = [event for event in runtime.records.events("lead", record["id"], actor=SYSTEM)
             if event.kind == "stage_changed"]
    assert moves and moves[-1].data.get("to") == "disqualified"
    assert "已移动到“无效”" in _text(client.get(done.headers["location"]).text)
    assert "set-aside-form" not in client.get(f"/lead/{record['id']}").text  # closed: no side moves left
    bogus = client.post(f"/lead/{record['id']}/set_aside", data={"csrf_token": _csrf(page), "to": "converted"})
    assert "不是可以直接设置的状态" in _text(client.get(bogus.headers["location"]).text)


def test_a_board_sum_that_is_not_money_is_refused_at_its_line(tmp_path: Any) -> None:
    import shutil
    folder = shutil.copytree(SHIPPED_CRM.parent, tmp_path / "blueprints") / SHIPPED_CRM.name  # it includes ../service
    lead_yaml = folder / "entities" / "lead.yaml"
    text = lead_yaml.read_text(encoding="utf-8")
    assert "    sum: budget" in text
    lead_yaml.write_text(text.replace("    sum: budget", "    sum: employee_count"), encoding="utf-8")
    line = next(number for number, row in enumerate(lead_yaml.read_text(encoding="utf-8").splitlines(), 1)
                if row.startswith("    sum: employee_count"))
    with pytest.raises(BlueprintInvalid) as raised:
        load(folder)
    assert f"lead.yaml:{line}" in str(raised.value) and "board sum 'employee_count' is not a money field" \
        in str(raised.value) and str(raised.value).startswith("1 error in the blueprint")
