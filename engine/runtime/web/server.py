"""uvicorn's HTTP protocol with read deadlines, so a slow or silent client cannot hold a connection.

uvicorn (httptools) waits for a request's headers for as long as the client keeps the socket
open: a "slowloris" client that sends one header line every few seconds, or a socket opened and
never written to, stays forever, and a few thousand of them exhaust the server's file
descriptors while every other user waits. Here:

- the request line and headers must arrive within `header_timeout` seconds of the connection
  opening or, on a kept-alive connection, of the next request's first byte;
- a body must keep arriving: no more than `body_idle_timeout` seconds between two chunks (a
  large upload on a slow link is fine as long as it moves).

A client that misses either gets `408 Request Timeout` and the connection is closed. Requests
under way in the app are never cut: the deadlines only cover reading the request."""

from __future__ import annotations

import asyncio
from typing import Any

HEADER_TIMEOUT = 10.0
BODY_IDLE_TIMEOUT = 30.0

_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                     b"content-length: 16\r\nconnection: close\r\n\r\nRequest Timeout\n")


def deadline_protocol(header_timeout: float = HEADER_TIMEOUT,
                      body_idle_timeout: float = BODY_IDLE_TIMEOUT) -> type[asyncio.Protocol]:
    """The protocol class for `uvicorn.run(http=...)` with these deadlines (seconds). uvicorn is
    imported here, not with the module, so CLI commands that do not serve do not pay for it."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class DeadlineProtocol(HttpToolsProtocol):
        """HttpToolsProtocol that closes a connection whose request does not arrive in time."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._read_deadline: asyncio.TimerHandle | None = None
            self._reading_headers = False

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._read_deadline = self.loop.call_later(seconds, self._read_timed_out)

        def _disarm(self) -> None:
            if self._read_deadline is not None:
                self._read_deadline.cancel()
                self._read_deadline = None

        def _read_timed_out(self) -> None:
            self._read_deadline = None
            if self.transport.is_closing():
                return
            cycle = None if self._reading_headers else self.cycle
            if cycle is None or not cycle.response_started:
                self.transport.write(_TIMEOUT_RESPONSE)
            if cycle is not None and not cycle.response_complete:
                # the app may be waiting for the rest of the body: it reads a disconnect and stores nothing
                cycle.disconnected = True
                cycle.message_event.set()
            self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._reading_headers = True
            self._arm(header_timeout)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if not self._reading_headers:  # the next request on a kept-alive connection
                self._reading_headers = True
                self._arm(header_timeout)

        def on_headers_complete(self) -> None:
            self._reading_headers = False
            self._disarm()
            super().on_headers_complete()
            if self.cycle is not None and self.cycle.more_body and not self.transport.is_closing():
                self._arm(body_idle_timeout)

        def on_body(self, body: bytes) -> None:
            super().on_body(body)
            if self._read_deadline is not None:
                self._arm(body_idle_timeout)

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

    return DeadlineProtocol
