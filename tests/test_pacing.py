"""Chat channels paced like their vendors demand: a loopback DingTalk robot that takes 20
messages a minute and answers 130101 beyond gets a burst of 1,000 from two workers — all
delivered, in order, none dead, never more than 20 in any minute (a fake clock shared by
the robot and the workers). A Retry-After is honoured to the second, for the whole channel."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa

from engine.engine import Engine
from engine.rules import FakeClock
from engine.runtime.background.outbox import enqueue

BLUEPRINT = {
    "app.yaml": "app: pace\ninclude: ['*.yaml', 'entities/*.yaml']\n",
    "entities/lead.yaml": "entity: lead\nfields:\n  name: {type: string}\n",
    "channels.yaml": """
        channels:
          robot: {type: dingtalk, url: {env: PACE_ROBOT_URL}}
          slack_sales: {type: slack, url: {env: PACE_SLACK_URL}, rate_limit: none}
    """,
}


class Robot:
    """A loopback vendor robot on the test's fake clock: DingTalk's 20 a minute (130101 beyond),
    or, for Slack, 429 with Retry-After for the first `refuse` requests."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.received: list[tuple[dt.datetime, str, str]] = []  # (fake time, path, text)
        self.refused = 0
        self.refuse = 0
        self.lock = threading.Lock()

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        now = self.clock.now()
        with self.lock:
            text = str((body.get("text") or {}).get("content") if path == "/dingtalk" else body.get("text"))
            if path == "/slack":
                self.received.append((now, path, text))
                if self.refuse:
                    self.refuse -= 1
                    return 429, {"Retry-After": "3000"}, b"rate_limited"
                return 200, {}, b"ok"
            recent = sum(1 for at, where, _ in self.received if where == path and at > now - dt.timedelta(minutes=1))
            if recent >= 20:
                self.refused += 1
                return 200, {}, json.dumps({"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}).encode()
            self.received.append((now, path, text))
            return 200, {}, b'{"errcode": 0, "errmsg": "ok"}'


@pytest.fixture
def robot(clock: FakeClock) -> Iterator[tuple[Robot, str]]:
    state = Robot(clock)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 — the http.server API
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status, headers, reply = state.answer(self.path.split("?")[0], body)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _enqueue(runtime: Engine, channel: str, count: int) -> None:
    with runtime.db.write() as connection:
        for index in range(count):
            enqueue(connection, runtime.schema, channel=channel, key=f"{channel}-{index:04d}",
                    payload={"text": f"线索 {index:04d}"}, now=runtime.clock.now())


def _statuses(runtime: Engine) -> dict[str, int]:
    outbox = runtime.schema.outbox
    with runtime.db.read() as connection:
        return dict(connection.execute(sa.select(outbox.c.status, sa.func.count()).group_by(outbox.c.status)).all())


def test_a_burst_of_1000_to_one_dingtalk_robot_from_two_workers_is_paced_in_order_and_none_dies(
        make_engine: Any, clock: FakeClock, robot: tuple[Robot, str]) -> None:
    state, url = robot
    environ = {"PACE_ROBOT_URL": f"{url}/dingtalk", "PACE_SLACK_URL": f"{url}/slack"}
    first, second = make_engine(BLUEPRINT), make_engine(BLUEPRINT, folder="other")  # two pools, one database
    _enqueue(first, "robot", 1000)
    workers = [first.worker(role="outbox", environ=environ, name="a"),
               second.worker(role="outbox", environ=environ, name="b")]
    for _ in range(1000):  # 5 fake seconds a round; 50 minutes of vendor quota at the least
        ticks = [threading.Thread(target=worker.tick) for worker in workers]
        for tick in ticks:
            tick.start()
        for tick in ticks:
            tick.join()
        if _statuses(first).get("delivered") == 1000:
            break
        clock.advance(seconds=5)
    assert _statuses(first) == {"delivered": 1000}
    assert state.refused == 0  # the robot never had to say "too fast"
    texts = [text for _, _, text in state.received]
    assert texts == [f"线索 {index:04d}" for index in range(1000)]
    times = [at for at, _, _ in state.received]
    assert max(sum(1 for other in times if at - dt.timedelta(minutes=1) < other <= at) for at in times) == 20
    assert times[-1] - times[0] >= dt.timedelta(minutes=49)  # 1,000 at 20 a minute


def test_a_vendor_answer_too_fast_silences_the_robot_for_its_ten_minutes(
        make_engine: Any, clock: FakeClock, robot: tuple[Robot, str]) -> None:
    state, url = robot
    environ = {"PACE_ROBOT_URL": f"{url}/dingtalk"}
    runtime = make_engine({**BLUEPRINT, "channels.yaml": BLUEPRINT["channels.yaml"].replace(
        "url: {env: PACE_ROBOT_URL}}", "url: {env: PACE_ROBOT_URL}, rate_limit: {count: 30, per: 1min}}")})
    _enqueue(runtime, "robot", 30)  # declared 30 a minute, but the robot takes only 20
    worker = runtime.worker(role="outbox", environ=environ)
    worker.tick()
    assert len(state.received) == 20 and state.refused == 10
    clock.advance(minutes=9, seconds=59)
    worker.tick()
    assert len(state.received) == 20  # DingTalk throttles for 10 minutes: nothing is sent meanwhile
    clock.advance(seconds=1)
    worker.tick()
    assert len(state.received) == 30 and _statuses(runtime) == {"delivered": 30}


def test_retry_after_is_honoured_to_the_second_for_the_whole_channel(make_engine: Any, clock: FakeClock,
                                                                     robot: tuple[Robot, str]) -> None:
    state, url = robot
    state.refuse = 1
    runtime = make_engine(BLUEPRINT)
    worker = runtime.worker(role="outbox", environ={"PACE_SLACK_URL": f"{url}/slack"})
    _enqueue(runtime, "slack_sales", 1)
    worker.tick()
    assert len(state.received) == 1 and _statuses(runtime) == {"pending": 1}
    with runtime.db.write() as connection:  # a second message to the same channel meanwhile
        enqueue(connection, runtime.schema, channel="slack_sales", key="later", payload={"text": "later"},
                now=clock.now())
    clock.advance(seconds=2999)
    worker.tick()
    assert len(state.received) == 1  # Retry-After: 3000 — not a second sooner, for either message
    clock.advance(seconds=1)
    worker.tick()
    assert len(state.received) == 3 and _statuses(runtime) == {"delivered": 2}


def test_a_rate_limit_in_business_days_is_refused_at_its_line(tmp_path: Any) -> None:
    from engine.metamodel.errors import BlueprintInvalid
    from tests.support.blueprints import load, write_blueprint
    folder = write_blueprint(tmp_path / "bp", {**BLUEPRINT, "channels.yaml": """
        channels:
          robot: {type: dingtalk, url: {env: PACE_ROBOT_URL}, rate_limit: {count: 20, per: 1bd}}
    """})
    with pytest.raises(BlueprintInvalid) as raised:
        load(folder)
    assert "channels.yaml:2" in str(raised.value) and "rate_limit" in str(raised.value)
