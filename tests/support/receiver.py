"""A real HTTP receiver on 127.0.0.1 playing the chat vendors (WeCom, Feishu, DingTalk): it keeps
every request and answers each vendor's "ok"."""

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
            "/feishu": b'{"code":0,"msg":"success","data":{}}'}


@dataclass
class Request:
    path: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ChatReceiver:
    url: str = ""
    requests: list[Request] = field(default_factory=list)

    def on(self, path: str) -> list[Request]:
        return [request for request in self.requests if request.path == path]


@contextmanager
def chat_receiver() -> Iterator[ChatReceiver]:
    state = ChatReceiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
            path = urllib.parse.urlsplit(self.path).path
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.requests.append(Request(path, body))
            reply = _REPLIES.get(path, b'{"errcode":0}')
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
