"""A paced robot's backlog merged into digests (`digest: {after: N}` on the channel): 50 messages
waiting for one DingTalk robot arrive at a loopback receiver as a few messages that carry all 50
in order, each within the size limit; every outbox row ends delivered, the merged ones naming
their digest. On SQLite and PostgreSQL, with the fake clock."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.engine import Engine
from engine.metamodel import BlueprintInvalid
from engine.rules import FakeClock
from engine.runtime.background.outbox import enqueue
from tests.support.blueprints import load, write_blueprint
from tests.support.chat_receiver import chat_receiver

FILES = {
    "app.yaml": "app: digest\ninclude: ['*.yaml', 'entities/*.yaml']\n",
    "entities/lead.yaml": "entity: lead\nfields:\n  name: {type: string}\n",
    "channels.yaml": """
        channels:
          robot:
            type: dingtalk
            url: {env: DIGEST_ROBOT_URL}
            digest: {after: 10, max_bytes: 600}
          quiet: {type: dingtalk, url: {env: DIGEST_QUIET_URL}}
    """,
}


def _enqueue(runtime: Engine, channel: str, count: int) -> None:
    with runtime.db.write() as connection:
        for index in range(count):
            enqueue(connection, runtime.schema, channel=channel, key=f"{channel}-{index:02d}",
                    payload={"text": f"线索 {index:02d} 待跟进"}, now=runtime.clock.now())


def _rows(runtime: Engine) -> list[Any]:
    outbox = runtime.schema.outbox
    with runtime.db.read() as connection:
        return list(connection.execute(sa.select(outbox).order_by(outbox.c.id)))


def _deliver_all(runtime: Engine, clock: FakeClock, url: str) -> None:
    worker = runtime.worker(role="outbox", environ={"DIGEST_ROBOT_URL": f"{url}/dingtalk",
                                                   "DIGEST_QUIET_URL": f"{url}/dingtalk"})
    for _ in range(30):
        worker.tick()
        if all(row.status in ("delivered", "dead") for row in _rows(runtime)):
            return
        clock.advance(seconds=20)


def test_a_backlog_of_50_to_one_paced_robot_arrives_as_digests_in_order_nothing_lost(
        make_engine: Any, clock: FakeClock) -> None:
    runtime = make_engine(FILES)
    _enqueue(runtime, "robot", 50)
    with chat_receiver() as receiver:
        _deliver_all(runtime, clock, receiver.url)
    contents = [request.json()["text"]["content"] for request in receiver.on("dingtalk")]
    digests = [content for content in contents if content.startswith("【汇总】机器人限速期间积压的")]
    assert len(digests) >= 2 and len(contents) <= 12  # 50 messages in a dozen sends at most
    assert contents[:len(digests)] == digests  # the backlog first; the last ones (≤ 10) go as they are
    assert all(len(content.encode("utf-8")) <= 600 for content in contents)
    carried = [line.split(". ", 1)[1] for content in digests for line in content.split("\n\n")[1:]]
    assert carried + contents[len(digests):] == [f"线索 {index:02d} 待跟进" for index in range(50)]
    rows = _rows(runtime)
    assert {row.status for row in rows} == {"delivered"} and len(rows) == 50
    merged = [row for row in rows if row.digest_id is not None]
    assert len(merged) == len(carried)  # every row a digest carried names it …
    assert {row.digest_id for row in merged} == {row.id for row in merged if row.digest_id == row.id}  # … one of them
    assert len({row.digest_id for row in merged}) == len(digests)


def test_a_backlog_within_the_threshold_goes_message_by_message(make_engine: Any, clock: FakeClock) -> None:
    runtime = make_engine(FILES)
    _enqueue(runtime, "robot", 10)
    _enqueue(runtime, "quiet", 15)  # no digest declared: never merged
    with chat_receiver() as receiver:
        _deliver_all(runtime, clock, receiver.url)
    contents = [request.json()["text"]["content"] for request in receiver.on("dingtalk")]
    assert len(contents) == 25 and not any(content.startswith("【汇总】") for content in contents)
    assert all(row.status == "delivered" and row.digest_id is None for row in _rows(runtime))


@pytest.mark.parametrize("option, message", [
    ("digest: {aftr: 10}", "channels.yaml:5:14: error: unknown option 'aftr'"),
    ("digest: {after: 10, max_bytes: 90000}", "max_bytes 90000 is over what one dingtalk message may carry"),
])
def test_a_wrong_digest_is_refused_at_its_line(tmp_path: Path, option: str, message: str) -> None:
    channels = FILES["channels.yaml"].replace("digest: {after: 10, max_bytes: 600}", option)
    folder = write_blueprint(tmp_path / "bp", {**FILES, "channels.yaml": channels})
    with pytest.raises(BlueprintInvalid) as raised:
        load(folder)
    assert message in str(raised.value) and ("did you mean 'after'?" in str(raised.value) or "aftr" not in option)


def test_a_digest_on_a_mail_channel_is_refused(tmp_path: Path) -> None:
    quiet = "quiet: {type: dingtalk, url: {env: DIGEST_QUIET_URL}}"
    channels = FILES["channels.yaml"].replace(quiet, quiet + "\n          mail: {type: mail, host: smtp.example.com, "
                                                             "sender: crm@example.com, digest: {after: 5}}")
    folder = write_blueprint(tmp_path / "bp", {**FILES, "channels.yaml": channels})
    with pytest.raises(BlueprintInvalid) as raised:
        load(folder)
    assert "channels.yaml:7" in str(raised.value) and "cannot merge messages into a digest" in str(raised.value)


def test_two_workers_fold_a_backlog_once_and_send_every_message_once(make_engine: Any, clock: FakeClock) -> None:
    first, second = make_engine(FILES), make_engine(FILES, folder="other")  # two pools, one database
    _enqueue(first, "robot", 50)
    with chat_receiver() as receiver:
        environ = {"DIGEST_ROBOT_URL": f"{receiver.url}/dingtalk", "DIGEST_QUIET_URL": f"{receiver.url}/dingtalk"}
        workers = [first.worker(role="outbox", environ=environ, name="a"),
                   second.worker(role="outbox", environ=environ, name="b")]
        for _ in range(30):
            ticks = [threading.Thread(target=worker.tick) for worker in workers]
            for tick in ticks:
                tick.start()
            for tick in ticks:
                tick.join()
            if all(row.status == "delivered" for row in _rows(first)):
                break
            clock.advance(seconds=20)
    contents = [request.json()["text"]["content"] for request in receiver.on("dingtalk")]
    lines = [line.split(". ", 1)[1] if content.startswith("【汇总】") else line
             for content in contents for line in (content.split("\n\n")[1:] if content.startswith("【汇总】")
                                                  else [content])]
    assert sorted(lines) == [f"线索 {index:02d} 待跟进" for index in range(50)]  # each once, none lost
    assert {row.status for row in _rows(first)} == {"delivered"}


def test_the_outbox_screen_shows_messages_folded_into_a_digest(make_engine: Any) -> None:
    import html
    import re

    from starlette.testclient import TestClient

    from engine.runtime.background.digests import Digest, fold_backlogs
    from engine.runtime.ops.users import NewUser
    roles = "roles:\n  admin: {label: Administrator, admin: true}\n"
    runtime = make_engine({**FILES, "roles.yaml": roles})
    _enqueue(runtime, "robot", 30)
    with runtime.db.write() as connection:  # what a claim does before the robot answers
        fold_backlogs(connection, runtime.schema, runtime.clock.now(), {"robot": Digest(10, 600, "【汇总】{count}")})
    merged = sum(row.status == "merged" for row in _rows(runtime))
    assert merged > 0
    runtime.users.add(NewUser("chief", "管理员", "admin", password="chief-pass1"))
    browser = TestClient(runtime.web_app())
    token = re.search(r'name="csrf_token" value="([^"]+)"', browser.get("/login").text).group(1)  # type: ignore
    browser.post("/login", data={"username": "chief", "password": "chief-pass1", "csrf_token": token})
    everything = browser.get("/admin/outbox")
    assert everything.status_code == 200 and "已并入摘要" in html.unescape(everything.text)
    for status in ("pending", "sending", "dead", "delivered"):
        assert browser.get("/admin/outbox", params={"status": status}).status_code == 200
    only_merged = html.unescape(browser.get("/admin/outbox", params={"status": "merged"}).text)
    assert f"共 {merged} 条" in only_merged
