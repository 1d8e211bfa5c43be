"""A loopback HTTP server that plays a chat vendor's webhook (DingTalk, WeCom, Feishu, Slack):
it keeps every request and answers the way the vendor does on success."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

_REPLIES = {"/dingtalk": b'{"errcode":0,"errmsg":"ok"}', "/wecom": b'{"errcode":0,"errmsg":"ok"}',
            "/feishu": b'{"code":0,"msg":"success","data":{}}', "/slack": b"ok"}


@dataclass
class Received:
    path: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ChatReceiver:
    url: str = ""
    requests: list[Received] = field(default_factory=list)

    def on(self, vendor: str) -> list[Received]:
        return [request for request in self.requests if request.path == f"/{vendor}"]


@contextmanager
def chat_receiver() -> Iterator[ChatReceiver]:
    state = ChatReceiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
            path = urllib.parse.urlsplit(self.path).path
            state.requests.append(Received(path, self.rfile.read(int(self.headers.get("Content-Length", 0)))))
            reply = _REPLIES.get(path, b"{}")
            self.send_response(200)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
