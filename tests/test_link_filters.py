"""Link pickers that follow each other (`filter_by`): on the shipped CRM, an activity's or an
opportunity's contact choices are the chosen account's contacts the user may read; a contact of
another account is refused by form and API alike, naming the field and changing nothing; and a
`filter_by` that cannot work is refused when the blueprint loads, at its line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from engine.engine import Engine
from engine.metamodel import BlueprintInvalid
from engine.runtime.ops.users import NewUser
from engine.runtime.records.actors import SYSTEM, Actor
from engine.runtime.records.queries import ListQuery
from tests.support.blueprints import SHIPPED_CRM, load, write_blueprint
from tests.support.web import api_client, csrf_of, sign_in, visible_text

PASSWORD = "correct horse battery"

APP = """
    app: shop
    label: {zh: 商店, en: Shop}
    include: [entities/*.yaml]
"""
ACCOUNT = """
    entity: account
    label: {zh: 客户, en: Account}
    fields:
      name: {type: string, required: true}
"""
CONTACT = """
    entity: contact
    label: {zh: 联系人, en: Contact}
    fields:
      name: {type: string, required: true}
      company: {type: link, entity: account}
"""


def _load_errors(tmp_path: Path, deal: str) -> list[str]:
    folder = write_blueprint(tmp_path / "bp", {"app.yaml": APP, "entities/account.yaml": ACCOUNT,
                                               "entities/contact.yaml": CONTACT, "entities/deal.yaml": deal})
    with pytest.raises(BlueprintInvalid) as caught:
        load(folder)
    return [str(error) for error in caught.value.errors]


def test_filter_by_naming_no_link_of_the_entity_is_refused_at_its_line(tmp_path: Path) -> None:
    errors = _load_errors(tmp_path, """
        entity: deal
        label: {zh: 商机, en: Deal}
        fields:
          name: {type: string}
          company: {type: link, entity: account}
          contact:
            type: link
            entity: contact
            filter_by: compnay
    """)
    assert any("deal.yaml:9" in error and "filter_by 'compnay'" in error and "company" in error
               for error in errors), errors


def test_filter_by_whose_target_has_no_such_link_is_refused_with_the_fix(tmp_path: Path) -> None:
    errors = _load_errors(tmp_path, """
        entity: deal
        label: {zh: 商机, en: Deal}
        fields:
          account: {type: link, entity: account}
          contact: {type: link, entity: contact, filter_by: account}
    """)
    assert any("deal.yaml:5" in error and "which has no link 'account' to account" in error
               and "add 'account: {type: link, entity: account}' to contact.fields" in error
               for error in errors), errors


def test_filter_by_on_a_field_that_is_no_link_is_refused(tmp_path: Path) -> None:
    errors = _load_errors(tmp_path, """
        entity: deal
        label: {zh: 商机, en: Deal}
        fields:
          company: {type: link, entity: account}
          note: {type: string, filter_by: company}
    """)
    assert any("deal.yaml:5" in error and "'filter_by' does not apply to a string field" in error
               for error in errors), errors


def test_the_shipped_crm_declares_its_contact_pickers_by_account() -> None:
    model = load(SHIPPED_CRM)
    assert model.entity("activity").field("contact").filter_by == "account"
    assert model.entity("opportunity").field("contact").filter_by == "account"
    assert model.entity("order").field("opportunity").filter_by == "account"


# -- on the shipped CRM ------------------------------------------------------------------------------

@pytest.fixture
def crm(make_engine: Any) -> tuple[Engine, dict[str, Actor], dict[str, int]]:
    runtime = make_engine(SHIPPED_CRM)
    people = {user.username: runtime.users.add(user) for user in (
        NewUser("wang", "王磊", "sales_rep", "east", password=PASSWORD),
        NewUser("zhao", "赵敏", "sales_rep", "south", password=PASSWORD))}
    wang, zhao = people["wang"].id, people["zhao"].id

    def create(entity: str, **values: Any) -> int:
        return int(runtime.records.create(entity, values, actor=SYSTEM).record["id"])
    ids = {"ningbo": create("account", name="宁波精工", owner=wang),
           "suzhou": create("account", name="苏州机电", owner=wang)}
    ids["zhang"] = create("contact", name="张伟", account=ids["ningbo"], phone="13800000001", owner=wang)
    ids["chen"] = create("contact", name="陈静", account=ids["ningbo"], phone="13800000002", owner=zhao)
    ids["liu"] = create("contact", name="刘洋", account=ids["suzhou"], phone="13800000003", owner=wang)
    return runtime, people, ids


def _options(page: str, field: str) -> list[str]:
    select = re.search(rf'<select id="f-{field}" name="{field}"[^>]*>(.*?)</select>', page, re.S)
    assert select, f"no select for {field}"
    return [text for text in re.findall(r"<option[^>]*>([^<]*)</option>", select.group(1)) if text != "—"]


def test_the_activity_form_offers_only_the_chosen_accounts_contacts_the_rep_may_read(crm: Any) -> None:
    runtime, _, ids = crm
    client = sign_in(runtime, "wang", PASSWORD)
    page = client.get(f"/activity/new?account={ids['ningbo']}").text
    assert _options(page, "contact") == ["张伟"]  # not 陈静 (another team's), not 刘洋 (another account)
    assert 'data-filter-by="account" data-options-url="/api/contact"' in page
    other = client.get(f"/activity/new?account={ids['suzhou']}").text
    assert _options(other, "contact") == ["刘洋"]
    unchosen = client.get("/activity/new?lead=").text
    assert sorted(_options(unchosen, "contact")) == ["刘洋", "张伟"]  # no account yet: every readable contact


def test_the_api_narrows_the_contacts_as_the_pages_script_asks(crm: Any) -> None:
    runtime, _, ids = crm
    client = sign_in(runtime, "wang", PASSWORD)
    listed = client.get(f"/api/contact?per_page=200&fields=name&account={ids['ningbo']}",
                        headers={"Accept": "application/json"})
    assert listed.status_code == 200
    assert listed.json()["items"] == [{"id": ids["zhang"], "name": "张伟"}]


def test_a_contact_of_another_account_is_refused_on_the_form_naming_the_field(crm: Any) -> None:
    runtime, _, ids = crm
    client = sign_in(runtime, "wang", PASSWORD)
    client.headers["Accept-Language"] = "zh"
    page = client.get(f"/activity/new?account={ids['ningbo']}").text
    refused = client.post("/activity/new", data={
        "csrf_token": csrf_of(page), "subject": "电话", "kind": "call", "account": str(ids["ningbo"]),
        "contact": str(ids["liu"])})
    assert refused.status_code == 422
    assert "所选联系人不属于所选客户" in visible_text(refused.text)
    assert re.search(r'id="f-contact"[^>]*aria-invalid="true"', refused.text)
    assert runtime.records.list("activity", ListQuery(), actor=SYSTEM).total == 0


def test_the_api_refuses_a_contact_of_another_account_and_a_later_account_change_alike(crm: Any) -> None:
    runtime, people, ids = crm
    client = api_client(runtime, "wang", "en")
    refused = client.post("/api/opportunity", json={"name": "二期", "account": ids["suzhou"],
                                                    "contact": ids["zhang"], "amount": {"amount": "100000"}})
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["field"] == "contact" and "does not belong to the chosen account" in body["message"]
    made = client.post("/api/opportunity", json={"name": "二期", "account": ids["ningbo"], "contact": ids["zhang"],
                                                 "amount": {"amount": "100000"}})
    assert made.status_code == 201, made.text
    moved = client.patch(f"/api/opportunity/{made.json()['id']}", json={"account": ids["suzhou"]})
    assert moved.status_code == 422 and moved.json()["field"] == "contact"
    kept = runtime.records.get("opportunity", made.json()["id"], actor=SYSTEM)
    assert kept["account"] == ids["ningbo"] and kept["contact"] == ids["zhang"]



def test_an_import_by_a_rep_rejects_the_row_whose_contact_is_of_another_account(crm: Any) -> None:
    """The batch write path (imports) checks `filter_by` as a form and the API do: the row is
    rejected naming the field, the rows beside it are written."""
    runtime, people, ids = crm
    rows = [{"name": "一期", "account": ids["ningbo"], "contact": ids["zhang"], "amount": {"amount": "100000"}},
            {"name": "二期", "account": ids["suzhou"], "contact": ids["zhang"], "amount": {"amount": "80000"}},
            {"name": "三期", "account": ids["suzhou"], "contact": ids["liu"], "amount": {"amount": "60000"}}]
    with runtime.db.write() as connection:
        results = runtime.records.create_batch("opportunity", rows, actor=people["wang"], connection=connection)
    assert [result.outcome for result in results] == ["created", "rejected", "created"]
    assert [error.field for error in results[1].errors] == ["contact"]
    assert "所选主要联系人不属于所选客户" in results[1].reason("zh")
    names = {item["name"] for item in runtime.records.list("opportunity", ListQuery(), actor=SYSTEM).items}
    assert names == {"一期", "三期"}
