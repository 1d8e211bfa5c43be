"""RecordService on SQLite and PostgreSQL: validation, defaults, dedup, concurrency, links, audit."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from engine.engine import Engine
from engine.runtime.records.actors import SYSTEM
from engine.runtime.records.errors import DuplicateRecord, NotFound, RecordReferenced, ValidationFailed, VersionConflict
from engine.runtime.records.queries import parse_list_query
from tests.support.records_blueprint import BLUEPRINT, LEAD

def _count(runtime: Engine, table: str, **where: Any) -> int:
    target = runtime.schema.metadata.tables[table] if table in runtime.schema.metadata.tables else \
        runtime.schema.table(table)
    query = sa.select(sa.func.count()).select_from(target)
    for name, value in where.items():
        query = query.where(target.c[name] == value)
    with runtime.db.read() as connection:
        return int(connection.execute(query).scalar_one())


def _events(runtime: Engine, entity: str, record_id: int) -> list[tuple[str, dict, dict]]:
    events = runtime.schema.events
    with runtime.db.read() as connection:
        rows = connection.execute(sa.select(events.c.kind, events.c.changes, events.c.data)
                                  .where(events.c.entity == entity, events.c.record_id == record_id)
                                  .order_by(events.c.id)).all()
    return [(row.kind, row.changes, row.data) for row in rows]


@pytest.fixture
def crm(make_engine: Any) -> Engine:
    return make_engine(BLUEPRINT)


def test_create_fills_defaults_and_computed_fields_and_records_who_and_what(crm: Engine) -> None:
    record = crm.records.create("lead", {"name": " 王芳 ", "capital": "5,000,000"}, actor=SYSTEM).record
    assert record["name"] == "王芳"
    assert record["source"] == "website" and record["status"] == "new"
    # the fake clock stands at 2026-11-20 09:00 UTC = 17:00 in Shanghai, so today()+2 is the 22nd
    assert record["next_follow_up"] == dt.date(2026, 11, 22)
    assert record["capital"] == (Decimal("5000000.00"), "CNY")
    assert record["capital_wan"] == Decimal("500.00")
    kind, changes, _ = _events(crm, "lead", record["id"])[0]
    assert kind == "created"
    assert changes["name"] == [None, "王芳"] and changes["capital"][1] == {"amount": "5000000.00", "currency": "CNY"}


def test_invalid_input_lists_every_bad_field_and_changes_nothing(crm: Engine) -> None:
    before = (_count(crm, "lead"), _count(crm, "crm_events"))
    with pytest.raises(ValidationFailed) as caught:
        crm.records.create("lead", {"phone": "12345", "email": "not-mail", "source": "tv", "employees": 0,
                                    "capital": "-1", "unknown": 1}, actor=SYSTEM)
    fields = {error.field: error.code for error in caught.value.errors}
    assert fields == {"phone": "invalid_phone", "email": "invalid_email", "source": "invalid_choice",
                      "employees": "out_of_range", "capital": "out_of_range", "unknown": "unknown_field", "name": "required"}
    with pytest.raises(ValidationFailed) as caught:
        crm.records.create("lead", {"employees": 5}, actor=SYSTEM)
    assert [(e.field, e.code) for e in caught.value.errors] == [("name", "required")]
    assert (_count(crm, "lead"), _count(crm, "crm_events")) == before


def test_validation_rule_message_is_attached_to_its_field(crm: Engine) -> None:
    with pytest.raises(ValidationFailed) as caught:
        crm.records.create("lead", {"name": "A", "status": "paused"}, actor=SYSTEM)
    assert [(e.field, e.message) for e in caught.value.errors] == [
        ("pause_reason", "A paused lead needs a pause reason")]
    record = crm.records.create("lead", {"name": "A", "status": "paused", "pause_reason": "客户预算冻结"},
                                actor=SYSTEM).record
    assert record["status"] == "paused"


def test_same_person_by_two_phone_spellings_leaves_one_lead_and_one_merge_event(crm: Engine) -> None:
    first = crm.records.create("lead", {"name": "李雷", "phone": "+86 138-0013-8000"}, actor=SYSTEM)
    second = crm.records.create("lead", {"name": "李雷", "phone": "13800138000", "company": "华东机械"},
                                actor=SYSTEM)
    third = crm.records.create("lead", {"name": "李雷", "phone": "8613800138000"}, actor=SYSTEM)
    assert first.outcome == "created" and second.outcome == "merged" and third.outcome == "merged"
    assert _count(crm, "lead") == 1
    assert second.record["id"] == first.record["id"] and second.record["company"] == "华东机械"
    kinds = [kind for kind, _, _ in _events(crm, "lead", first.record["id"])]
    assert kinds == ["created", "merged", "merged"]
    _, changes, data = _events(crm, "lead", first.record["id"])[1]
    assert changes == {"company": [None, "华东机械"]} and data["matched_on"] == ["phone"]
    assert crm.records.get("lead", first.record["id"], actor=SYSTEM)["phone"] == "+8613800138000"


def test_email_dedup_ignores_case_and_spaces(crm: Engine) -> None:
    crm.records.create("lead", {"name": "A", "email": "Li.Lei@Example.com"}, actor=SYSTEM)
    result = crm.records.create("lead", {"name": "A", "email": "  li.lei@example.COM "}, actor=SYSTEM)
    assert result.outcome == "merged" and _count(crm, "lead") == 1


@pytest.mark.parametrize("on_match", ["reject", "flag"])
def test_dedup_reject_and_flag(make_engine: Any, on_match: str) -> None:
    runtime = make_engine({**BLUEPRINT, "entities/lead.yaml": LEAD.replace("on_match: update",
                                                                             f"on_match: {on_match}")})
    first = runtime.records.create("lead", {"name": "A", "phone": "13800138000"}, actor=SYSTEM).record
    if on_match == "reject":
        with pytest.raises(DuplicateRecord) as caught:
            runtime.records.create("lead", {"name": "B", "phone": "+86 13800138000"}, actor=SYSTEM)
        assert caught.value.details["existing_id"] == first["id"] and caught.value.field == "phone"
        assert _count(runtime, "lead") == 1
    else:
        result = runtime.records.create("lead", {"name": "B", "phone": "+86 13800138000"}, actor=SYSTEM)
        assert result.outcome == "flagged" and result.record["duplicate_of"] == first["id"]
        assert _count(runtime, "lead") == 2
        assert [k for k, _, _ in _events(runtime, "lead", result.record["id"])] == ["created", "duplicate_flagged"]


def test_update_records_before_and_after_and_bumps_version(crm: Engine) -> None:
    record = crm.records.create("lead", {"name": "A", "source": "expo"}, actor=SYSTEM).record
    updated = crm.records.update("lead", record["id"], {"source": "douyin", "name": "A"}, actor=SYSTEM,
                                 expected_version=1)
    assert updated["version"] == 2 and updated["source"] == "douyin"
    kind, changes, _ = _events(crm, "lead", record["id"])[-1]
    assert kind == "updated" and changes == {"source": ["expo", "douyin"]}
    unchanged = crm.records.update("lead", record["id"], {"source": "douyin"}, actor=SYSTEM)
    assert unchanged["version"] == 2 and len(_events(crm, "lead", record["id"])) == 2


def test_two_updates_with_the_same_version_one_wins_the_other_conflicts(crm: Engine) -> None:
    record = crm.records.create("lead", {"name": "A"}, actor=SYSTEM).record
    crm.records.update("lead", record["id"], {"company": "甲"}, actor=SYSTEM, expected_version=1)
    with pytest.raises(VersionConflict) as caught:
        crm.records.update("lead", record["id"], {"employees": 7}, actor=SYSTEM, expected_version=1)
    assert caught.value.details["current_version"] == 2
    stored = crm.records.get("lead", record["id"], actor=SYSTEM)
    assert stored["company"] == "甲" and stored["employees"] is None and stored["version"] == 2


def test_concurrent_updates_never_lose_one(crm: Engine) -> None:
    record = crm.records.create("lead", {"name": "A", "employees": 1}, actor=SYSTEM).record
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def bump(value: int) -> None:
        barrier.wait()
        try:
            crm.records.update("lead", record["id"], {"employees": value}, actor=SYSTEM, expected_version=1)
            outcomes.append(f"ok:{value}")
        except VersionConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=bump, args=(n,)) for n in range(10, 18)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if o.startswith("ok")]
    assert len(winners) == 1 and outcomes.count("conflict") == 7
    stored = crm.records.get("lead", record["id"], actor=SYSTEM)
    assert stored["version"] == 2 and f"ok:{stored['employees']}" == winners[0]


def test_links_must_exist_and_on_delete_rules_are_applied_with_events(crm: Engine) -> None:
    with pytest.raises(ValidationFailed) as caught:
        crm.records.create("lead", {"name": "A", "account": 999}, actor=SYSTEM)
    assert caught.value.errors[0].field == "account" and caught.value.errors[0].code == "unknown_reference"
    account = crm.records.create("account", {"name": "华东机械"}, actor=SYSTEM).record
    lead = crm.records.create("lead", {"name": "A", "account": account["id"]}, actor=SYSTEM).record
    crm.records.create("activity", {"subject": "首次电话", "lead": lead["id"]}, actor=SYSTEM)
    blocker = crm.records.create("activity", {"subject": "拜访", "account": account["id"]}, actor=SYSTEM).record

    with pytest.raises(RecordReferenced) as refused:
        crm.records.delete("account", account["id"], actor=SYSTEM)
    assert "activity" in refused.value.message
    assert _count(crm, "account") == 1

    crm.records.delete("activity", blocker["id"], actor=SYSTEM)
    crm.records.delete("account", account["id"], actor=SYSTEM)
    assert crm.records.get("lead", lead["id"], actor=SYSTEM)["account"] is None  # set_null
    assert [k for k, _, _ in _events(crm, "lead", lead["id"])] == ["created", "updated"]

    crm.records.delete("lead", lead["id"], actor=SYSTEM)
    assert _count(crm, "activity") == 0  # cascade
    with pytest.raises(NotFound):
        crm.records.get("lead", lead["id"], actor=SYSTEM)
    assert _events(crm, "lead", lead["id"])[-1][0] == "deleted"


def test_list_filters_search_sort_and_totals(crm: Engine, clock: Any) -> None:
    entity = crm.model.entity("lead")
    rows = [("甲", "website", "new", 10, "13800000001", ["vip"]), ("乙", "expo", "new", 20, None, ["vip", "s"]),
            ("丙", "expo", "won", 30, None, []), ("丁", "douyin", "paused", None, None, ["s"])]
    for name, source, status, employees, phone, tags in rows:
        clock.advance(minutes=1)
        crm.records.create("lead", {"name": name, "company": f"{name}公司", "source": source, "status": status,
                                    "employees": employees, "phone": phone, "tags": tags,
                                    "pause_reason": "等待预算" if status == "paused" else None}, actor=SYSTEM)

    def names(**params: str) -> tuple[list[str], int]:
        page = crm.records.list("lead", parse_list_query(entity, params), actor=SYSTEM)
        return [item["name"] for item in page.items], page.total

    assert names(source="expo") == (["丙", "乙"], 2)
    assert names(source__in="website,douyin", sort="name") == (["丁", "甲"], 2)
    assert names(employees__gte="15", employees__lte="30", sort="employees") == (["乙", "丙"], 2)
    assert names(employees__isnull="true") == (["丁"], 1)
    assert names(company__contains="丙") == (["丙"], 1)
    assert names(tags__contains="vip", sort="name") == (["乙", "甲"], 2)
    assert names(q="+86 138 0000 0001") == (["甲"], 1)
    assert names(q="0001") == (["甲"], 1)  # part of a number: still found, by substring
    assert names(q="丁公") == (["丁"], 1)
    assert names(per_page="3") == (["丁", "丙", "乙"], 4)
    assert names(per_page="3", page="2") == (["甲"], 4)


def test_a_whole_phone_number_or_email_is_looked_up_through_the_index(crm: Engine) -> None:
    """Finding a caller by number must not scan the table: on SQLite the plan uses the phone
    index (the dedup key's), for every way the number may be typed."""
    from engine.runtime.records.queries import build_list_statements
    crm.records.create("lead", {"name": "甲", "phone": "13800000001", "email": "jia@example.cn"}, actor=SYSTEM)
    entity, table = crm.model.entity("lead"), crm.schema.table("lead")
    for typed in ("13800000001", "+86 138-0000-0001", "8613800000001"):
        page = crm.records.list("lead", parse_list_query(entity, {"q": typed}), actor=SYSTEM)
        assert [item["name"] for item in page.items] == ["甲"], typed
        if crm.db.is_sqlite:
            _, count = build_list_statements(entity, table, parse_list_query(entity, {"q": typed}), "sqlite",
                                             kinds=crm.schema.kinds)
            with crm.db.read() as connection:
                plan = " ".join(str(row[-1]) for row in connection.execute(
                    sa.text("EXPLAIN QUERY PLAN " + str(count.compile(compile_kwargs={"literal_binds": True})))))
            assert "USING" in plan and "INDEX" in plan and "phone" in plan, plan


def test_bad_list_queries_name_the_field(crm: Engine) -> None:
    from engine.runtime.records.errors import QueryInvalid
    entity = crm.model.entity("lead")
    for params, field in (({"sorce": "x"}, "sorce"), ({"source": "tv"}, "source"), ({"sort": "-nme"}, "nme"),
                          ({"employees__gte": "many"}, "employees")):
        with pytest.raises(QueryInvalid) as caught:
            crm.records.list("lead", parse_list_query(entity, params), actor=SYSTEM)
        assert caught.value.field == field


def test_a_record_breaking_a_rule_can_still_be_edited_elsewhere_until_the_rule_fields_change(crm: Engine) -> None:
    record = crm.records.create("lead", {"name": "A", "status": "paused", "pause_reason": "预算冻结"},
                                actor=SYSTEM).record
    table = crm.schema.table("lead")
    with crm.db.write() as connection:  # data from before the rule existed: paused without a reason
        connection.execute(table.update().where(table.c.id == record["id"]).values(pause_reason=None))
    assert crm.records.update("lead", record["id"], {"company": "华东机械"}, actor=SYSTEM)["company"] == "华东机械"
    fresh = crm.records.create("lead", {"name": "B"}, actor=SYSTEM).record
    with pytest.raises(ValidationFailed) as caught:  # the rule's own fields change: it applies
        crm.records.update("lead", fresh["id"], {"status": "paused"}, actor=SYSTEM)
    assert caught.value.errors[0].field == "pause_reason"


def test_mainland_numbers_normalise_exactly_as_phonenumbers_decides() -> None:
    """normalize_phone answers the common mainland mobile itself; it must agree with phonenumbers
    (valid or not, and the E.164 form) for every prefix and the usual spellings."""
    import random

    import phonenumbers

    from engine.runtime.records.fieldkinds import FieldError, normalize_phone

    def reference(text: str) -> str | None:  # what normalize_phone did before it had a fast path
        digits = "".join(c for c in text if c.isdigit() or c == "+")
        candidates = [text]
        if digits.startswith("86") and len(digits) == 13:
            candidates.insert(0, "+" + digits)
        for candidate in candidates:
            try:
                number = phonenumbers.parse(candidate, "CN")
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        return None

    def ours(text: str) -> str | None:
        try:
            return normalize_phone(text, "CN")
        except FieldError:
            return None
    rng = random.Random(7)
    checked = valid = 0
    for prefix in range(100, 200):
        for _ in range(8):
            national = f"{prefix}{rng.randrange(10 ** 8):08d}"
            for text in (national, f"+86 {national[:3]}-{national[3:7]}-{national[7:]}", f"86{national}",
                         f"({national[:3]}) {national[3:]}", f"+86{national}"):
                expected = reference(text)
                assert ours(text) == expected, text
                checked, valid = checked + 1, valid + (expected is not None)
    assert checked == 4000 and 0 < valid < checked  # both valid and invalid prefixes were compared
