"""The Monday process-health brief: one DingTalk message per rep, through the scheduler and
the outbox to a loopback receiver, each with that rep's own figures against the team's median
and the biggest gap named (fake clock)."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from engine.rules import FakeClock
from tests.support.analytics_blueprint import OWNERS, build_world, walk


@pytest.fixture
def received() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    bodies: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
            bodies.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))))
            reply = b'{"errcode":0,"errmsg":"ok"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/dingtalk?access_token=t", bodies
    server.shutdown()
    server.server_close()


def test_the_monday_brief_reaches_each_rep_once_with_their_own_figures(make_engine: Any, clock: FakeClock,
                                                                       received: Any) -> None:
    url, bodies = received
    runtime, _, _ = build_world(make_engine, clock)
    clock.set(dt.datetime(2026, 11, 30, 1, 5, tzinfo=dt.timezone.utc))  # Monday 30 November, 09:05 in Shanghai
    worker = runtime.worker(environ={"DT_URL": url})
    report = worker.tick()
    assert report.jobs == ["rep_brief"]
    worker.tick()
    assert runtime.worker(environ={"DT_URL": url}).tick().jobs == []  # once per Monday, however many ticks
    messages = [body["markdown"]["text"] for body in bodies]
    assert len(messages) == 3  # wang, li, zhao: one each; managers get none
    # by hand from the walks: the opportunities whose last move was into quote, per rep
    in_quote = {name: 0 for name in ("wang", "li", "zhao")}
    for index, owner in enumerate(OWNERS):
        if walk(index)[-1][1] == "quote":
            in_quote[owner] += 1
    for name, display in (("wang", "王磊"), ("li", "李娜"), ("zhao", "赵强")):
        mine = [text for text in messages if text.startswith(f"### {display} ")]
        assert len(mine) == 1, name
        assert f"新商机：{OWNERS.count(name)}（" in mine[0]
        assert f"报价中：{in_quote[name]}（" in mine[0]
        assert "/dashboards/pipeline" in mine[0] and "最大差距" in mine[0]
    east = [text for text in messages if text.startswith("### 王磊") or text.startswith("### 李娜")]
    median = (OWNERS.count("wang") + OWNERS.count("li")) / 2
    assert len(east) == 2 and all(f"团队中位数 {median}" in text for text in east)
    assert not any(text.startswith("### 周经理") or text.startswith("### 孙经理") for text in messages)
