"""Approvals on SQLite and PostgreSQL: plans with conditional steps, tasks given to approvers,
decisions carried through, step SLAs that remind and escalate on the fake clock, and the
approver's "my pending approvals". Blueprint: tests/support/funnel_blueprint.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from engine.engine import Engine
from engine.metamodel.approvals import ApprovalSpec, ApprovalStepSpec
from engine.metamodel.labels import Label
from engine.rules.approvals import Person, StepOutcome, choose_approvers, next_group, plan_steps, step_outcome
from engine.rules.expressions import Evaluator
from engine.rules.time import FakeClock
from engine.runtime.background.outbox import list_messages
from engine.runtime.ops.users import NewUser
from engine.runtime.records.actors import SYSTEM, Actor
from engine.runtime.records.errors import ValidationFailed
from engine.runtime.records.permissions import Forbidden
from tests.support.funnel_blueprint import FILES, PASSWORD, signed_in
from tests.support.web import api_client, csrf_of, visible_text

CST = ZoneInfo("Asia/Shanghai")


def _local(*args: int) -> dt.datetime:
    """A wall-clock moment in Shanghai, as the UTC time the engine's clock gives."""
    return dt.datetime(*args, tzinfo=CST).astimezone(dt.timezone.utc)


@pytest.fixture
def desk(make_engine: Any, clock: FakeClock) -> tuple[Engine, dict[str, Actor]]:
    clock.set(_local(2026, 11, 23, 10, 0))  # a Monday, office hours
    runtime = make_engine(FILES)
    people = {}
    for user in (NewUser("boss", "吴总监", "sales_manager", "east", password=PASSWORD),
                 NewUser("zhou", "周经理", "sales_manager", "east", "boss", password=PASSWORD),
                 NewUser("wang", "王磊", "sales_rep", "east", "zhou", password=PASSWORD),
                 NewUser("qian", "钱会计", "finance", "finance", password=PASSWORD),
                 NewUser("admin", "管理员", "admin", password=PASSWORD)):
        people[user.username] = runtime.users.add(user)
    return runtime, people


def tasks(runtime: Engine, **where: Any) -> list[dict[str, Any]]:
    table = runtime.schema.table("approval_task")
    with runtime.db.read() as connection:
        ids = [row.id for row in connection.execute(sa.select(table.c.id).where(
            *(table.c[name] == value for name, value in where.items())).order_by(table.c.id))]
        return [runtime.records.find(connection, "approval_task", task) or {} for task in ids]


def sample_request(runtime: Engine, rep: Actor, overdue: int) -> dict[str, Any]:
    """A sample request for a customer with `overdue` late payments in the last 90 days (and one
    paid on time, one late but long ago: neither counts)."""
    account = runtime.records.create("account", {"name": f"客户{overdue}"}, actor=SYSTEM).record
    today = runtime.clock.now().astimezone(CST).date()
    orders = [{"payment_due": today - dt.timedelta(days=10 + n)} for n in range(overdue)]
    orders.append({"payment_due": today - dt.timedelta(days=20), "paid_on": today - dt.timedelta(days=25)})
    orders.append({"payment_due": today - dt.timedelta(days=200)})
    for index, values in enumerate(orders):
        runtime.records.create("order", {"order_no": f"SO-{overdue}-{index}", "account": account["id"], **values},
                               actor=SYSTEM)
    return runtime.records.create("sample_request", {"subject": "样机 2 台", "account": account["id"],
                                                     "owner": rep.id}, actor=SYSTEM).record


# -- conditional steps ---------------------------------------------------------------------------------

def test_a_sample_request_with_three_overdue_payments_goes_to_finance_as_an_extra_step(desk: Any) -> None:
    runtime, people = desk
    sample = sample_request(runtime, people["wang"], overdue=3)
    request = runtime.approvals.request("sample_request", sample["id"], "sample_approval", actor=people["wang"])
    plan = {step["step"]: step for step in request["plan"]}
    assert plan["finance"]["applies"] is True and "overdue_payments = 3" in plan["finance"]["why"]
    (manager,) = tasks(runtime, status="pending")
    assert manager["owner"] == people["zhou"].id and manager["step"] == "manager"
    runtime.approvals.decide(manager["id"], "approve", "可以", actor=people["zhou"])
    (finance,) = tasks(runtime, status="pending")
    assert finance["owner"] == people["qian"].id and finance["step"] == "finance"
    assert runtime.records.get("sample_request", sample["id"], actor=SYSTEM)["status"] == "draft"
    runtime.approvals.decide(finance["id"], "approve", "已核对回款", actor=people["qian"])
    assert runtime.records.get("sample_request", sample["id"], actor=SYSTEM)["status"] == "approved"


def test_a_sample_request_without_overdue_payments_needs_no_finance(desk: Any) -> None:
    runtime, people = desk
    sample = sample_request(runtime, people["wang"], overdue=0)
    request = runtime.approvals.request("sample_request", sample["id"], "sample_approval", actor=people["wang"])
    assert {step["step"]: step["applies"] for step in request["plan"]} == {"manager": True, "finance": False}
    (manager,) = tasks(runtime, status="pending")
    runtime.approvals.decide(manager["id"], "approve", None, actor=people["zhou"])
    assert tasks(runtime, status="pending") == []
    assert not tasks(runtime, step="finance")
    assert runtime.records.get("sample_request", sample["id"], actor=SYSTEM)["status"] == "approved"
    approval = runtime.records.get("approval", request["id"], actor=SYSTEM)
    assert approval["status"] == "approved" and approval["decided_at"] is not None


# -- the step SLA on the fake clock ----------------------------------------------------------------------------

def test_an_idle_approval_step_reminds_at_its_warning_and_escalates_at_its_breach(desk: Any, clock: FakeClock) -> None:
    runtime, people = desk
    account = runtime.records.create("account", {"name": "宁波精工"}, actor=SYSTEM).record
    deal = runtime.records.create("opportunity", {"name": "大单", "account": account["id"], "discount": 18,
                                                  "owner": people["wang"].id}, actor=SYSTEM).record
    runtime.approvals.request("opportunity", deal["id"], "price_approval", actor=people["wang"])
    (task,) = tasks(runtime, status="pending")
    worker = runtime.worker(environ={})
    given = [m for m in list_messages(runtime.db, runtime.schema) if "需要你审批" in m["payload"]["text"]]
    assert len(given) == 1  # the approver was told, with a link to the task
    assert f"/approval_task/{task['id']}" in given[0]["payload"]["text"]

    clock.set(_local(2026, 11, 23, 11, 59))  # 1 h 59 of a 4 business-hour target
    worker.tick()
    assert not [m for m in list_messages(runtime.db, runtime.schema) if "仍在等你审批" in m["payload"]["text"]]
    clock.set(_local(2026, 11, 23, 12, 1))  # 50 %: the reminder
    worker.tick()
    (reminder,) = [m for m in list_messages(runtime.db, runtime.schema) if "仍在等你审批" in m["payload"]["text"]]
    assert reminder["channel"] == "wecom_sales" and tasks(runtime, id=task["id"])[0]["owner"] == people["zhou"].id

    clock.set(_local(2026, 11, 23, 15, 1))  # 10-12 and 13-15: the 4 h are up
    worker.tick()
    escalated = tasks(runtime, id=task["id"])[0]
    assert escalated["owner"] == people["boss"].id and escalated["status"] == "pending"
    (message,) = [m for m in list_messages(runtime.db, runtime.schema) if "已超时" in m["payload"]["text"]]
    assert "周经理" in message["payload"]["text"] and "吴总监" in message["payload"]["text"]
    table = runtime.schema.events
    with runtime.db.read() as connection:
        kinds = [row.kind for row in connection.execute(sa.select(table.c.kind).where(
            table.c.entity == "approval_task", table.c.record_id == task["id"]).order_by(table.c.id))]
    assert "sla_warning" in kinds and "sla_breached" in kinds and "assigned" in kinds
    runtime.approvals.decide(task["id"], "approve", "总监同意", actor=people["boss"])  # the one it went to decides
    assert runtime.records.get("opportunity", deal["id"], actor=SYSTEM)["approval_status"] == "approved"


def test_a_decided_step_stops_its_clock(desk: Any, clock: FakeClock) -> None:
    runtime, people = desk
    account = runtime.records.create("account", {"name": "A"}, actor=SYSTEM).record
    deal = runtime.records.create("opportunity", {"name": "B", "account": account["id"], "discount": 18,
                                                  "owner": people["wang"].id}, actor=SYSTEM).record
    runtime.approvals.request("opportunity", deal["id"], "price_approval", actor=people["wang"])
    (task,) = tasks(runtime, status="pending")
    runtime.approvals.decide(task["id"], "approve", None, actor=people["zhou"])
    clock.set(_local(2026, 11, 24, 18, 0))
    runtime.worker(environ={}).tick()
    assert tasks(runtime, id=task["id"])[0]["owner"] == people["zhou"].id  # no escalation after the decision


# -- who decides, and how ----------------------------------------------------------------------------------------

def test_only_the_approver_decides_and_a_rejection_says_why(desk: Any) -> None:
    runtime, people = desk
    sample = sample_request(runtime, people["wang"], overdue=0)
    request = runtime.approvals.request("sample_request", sample["id"], "sample_approval", actor=people["wang"])
    (task,) = tasks(runtime, status="pending")
    with pytest.raises(Forbidden):
        runtime.approvals.decide(task["id"], "approve", None, actor=people["qian"])
    refused = api_client(runtime, "zhou").post(f"/api/approval_task/{task['id']}/decide", json={"decision": "reject"})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "comment"
    with pytest.raises(ValidationFailed):  # a task keeps its request's data
        runtime.records.update("approval_task", task["id"], {"step": "finance"}, actor=people["zhou"])
    with pytest.raises(Forbidden):  # requests are opened from the record, not created by hand
        runtime.records.create("approval", {"name": "x"}, actor=people["wang"])
    rejected = api_client(runtime, "zhou").post(f"/api/approval_task/{task['id']}/decide",
                                         json={"decision": "reject", "comment": "客户信用待核实"})
    assert rejected.status_code == 200
    approval = runtime.records.get("approval", request["id"], actor=SYSTEM)
    assert approval["status"] == "rejected" and approval["decision_comment"] == "客户信用待核实"
    assert runtime.records.get("sample_request", sample["id"], actor=SYSTEM)["status"] == "rejected"
    told = [m for m in list_messages(runtime.db, runtime.schema) if "已驳回" in m["payload"]["text"]]
    assert told and "客户信用待核实" in told[0]["payload"]["text"]
    again = api_client(runtime, "zhou").post(f"/api/approval_task/{task['id']}/decide", json={"decision": "approve"})
    assert again.status_code == 422  # decided once


def test_the_requester_withdraws_a_pending_request(desk: Any) -> None:
    runtime, people = desk
    sample = sample_request(runtime, people["wang"], overdue=0)
    request = runtime.approvals.request("sample_request", sample["id"], "sample_approval", actor=people["wang"])
    runtime.records.update("approval", request["id"], {"status": "cancelled"}, actor=people["wang"])
    assert tasks(runtime, status="pending") == []
    assert runtime.records.get("approval", request["id"], actor=SYSTEM)["decided_at"] is not None


def test_the_approver_sees_my_pending_approvals_and_decides_on_the_task_page(desk: Any) -> None:
    runtime, people = desk
    sample = sample_request(runtime, people["wang"], overdue=0)
    runtime.approvals.request("sample_request", sample["id"], "sample_approval", actor=people["wang"])
    (task,) = tasks(runtime, status="pending")
    browser = signed_in(runtime, "zhou")
    listing = browser.get(f"/approval_task?view=pending&owner={people['zhou'].id}&status=pending").text
    assert "我的待审批（1）" in visible_text(listing) and f'href="/approval_task/{task["id"]}"' in listing
    page = browser.get(f"/approval_task/{task['id']}").text
    assert f'href="/sample_request/{sample["id"]}"' in page and "同意" in visible_text(page)
    decided = browser.post(f"/approval_task/{task['id']}/decide", data={
        "csrf_token": csrf_of(page), "decision": "approve", "comment": "同意寄样", "version": str(task["version"])})
    assert decided.status_code == 303
    assert runtime.records.get("sample_request", sample["id"], actor=SYSTEM)["status"] == "approved"
    assert "我的待审批（0）" in visible_text(browser.get("/opportunity").text)
    timeline = visible_text(browser.get(f"/approval/{task['approval']}").text)
    assert "审批转到下一环节" in timeline and "已批准" in timeline  # the request has its own timeline


# -- the pure decisions, in bulk -------------------------------------------------------------------------------------

def _step(name: str, group: int, mode: str = "any") -> ApprovalStepSpec:
    return ApprovalStepSpec(name, Label.of(name), ("role:x",), group, mode)


def test_parallel_steps_and_modes() -> None:
    legal, director = _step("legal", 0), _step("director", 0, mode="all")
    assert step_outcome(legal, ["pending", "approved"]) is StepOutcome.APPROVED
    assert step_outcome(director, ["approved", "pending"]) is StepOutcome.OPEN
    assert step_outcome(director, ["approved", "approved", "cancelled"]) is StepOutcome.APPROVED
    assert step_outcome(director, ["approved", "rejected"]) is StepOutcome.REJECTED
    spec = ApprovalSpec("a", Label.of("a"), "deal", (legal, director, _step("finance", 1)))
    plan = plan_steps(spec, {}, Evaluator(FakeClock()).evaluate)
    assert next_group(plan, None) == 0 and next_group(plan, 0) == 1 and next_group(plan, 1) is None


def test_approvers_on_leave_or_requesting_are_passed_over_and_nobody_falls_to_the_admins() -> None:
    wang, zhou = Person(1, "wang", "王"), Person(2, "zhou", "周", on_leave=True)
    admin = Person(9, "admin", "管理员")
    choice = choose_approvers([wang, zhou], requester=1, fallback=[admin])
    assert choice.people == (admin,) and choice.is_fallback
    assert "zhou: on leave" in choice.notes and any("requester" in note for note in choice.notes)
