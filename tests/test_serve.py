"""`crm serve` as a user starts it: what it logs, and that it answers over real HTTP."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], int]:
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--db", f"sqlite:///{tmp_path / 'crm.sqlite'}",
                                "--port", str(port), *extra], cwd=ROOT,
                               env={**os.environ, "CRM_SECRET_KEY": "serve-test-" + "k" * 40, **(env or {})},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/lead", timeout=2)
            return process, port
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError("crm serve did not start:\n" + (process.stdout.read() if process.stdout else ""))
            time.sleep(0.2)


def _stop(process: subprocess.Popen[Any]) -> str:
    process.terminate()
    out, _ = process.communicate(timeout=30)
    return str(out)


def test_serve_logs_start_and_errors_but_no_line_per_request_by_default(tmp_path: Path) -> None:
    process, port = _serve(tmp_path)
    try:
        for _ in range(3):
            assert httpx.get(f"http://127.0.0.1:{port}/api/lead", timeout=5).status_code == 401
    finally:
        output = _stop(process)
    assert "add --access-log for a line per request" in output
    assert "Uvicorn running on" in output  # uvicorn's own start line: info level stays on
    assert "GET /api/lead" not in output


def test_serve_with_access_log_logs_every_request(tmp_path: Path) -> None:
    process, port = _serve(tmp_path, "--access-log")
    try:
        for _ in range(3):
            httpx.get(f"http://127.0.0.1:{port}/api/lead", timeout=5)
    finally:
        output = _stop(process)
    assert "Requests are logged one by one" in output
    assert output.count("GET /api/lead HTTP/1.1\" 401") >= 3


def test_serve_takes_the_access_log_setting_from_the_environment(tmp_path: Path) -> None:
    process, port = _serve(tmp_path, env={"CRM_ACCESS_LOG": "1"})
    try:
        httpx.get(f"http://127.0.0.1:{port}/api/lead", timeout=5)
    finally:
        output = _stop(process)
    assert "GET /api/lead HTTP/1.1\" 401" in output


def _read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """What the server wrote before closing the connection, and when it closed (time.monotonic())."""
    sock.settimeout(limit)
    received = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return received, time.monotonic()
        received += chunk


def test_a_client_that_never_finishes_its_headers_is_cut_off_while_others_are_answered(tmp_path: Path) -> None:
    """Slowloris: half-sent headers, a silent socket and a stalled body each hold a connection
    only for the deadline, get 408 and are closed; a normal request meanwhile is answered."""
    process, port = _serve(tmp_path, "--header-timeout", "1.5", "--body-timeout", "1.5")
    try:
        opened = time.monotonic()
        trickling, silent, stalled = (socket.create_connection(("127.0.0.1", port)) for _ in range(3))
        trickling.sendall(b"GET /api/lead HTTP/1.1\r\nHost: x\r\n")
        stalled.sendall(b"POST /hooks/website_form HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                        b"content-length: 100\r\n\r\n{\"name\":")
        trickling.sendall(b"X-Slow: 1\r\n")  # still sending, one line at a time: not enough
        assert httpx.get(f"http://127.0.0.1:{port}/api/lead", timeout=5).status_code == 401
        for sock in (trickling, silent):
            with sock:
                answer, closed = _read_until_closed(sock, limit=10)
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert 1.0 < closed - opened < 5
        with stalled:
            answer, closed = _read_until_closed(stalled, limit=10)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert 1.0 < closed - opened < 5
        assert httpx.get(f"http://127.0.0.1:{port}/api/lead", timeout=5).status_code == 401
    finally:
        _stop(process)
    with sqlite3.connect(tmp_path / "crm.sqlite") as db:  # the half-sent webhook stored nothing
        assert db.execute("select count(*) from lead").fetchone() == (0,)
        assert db.execute("select count(*) from crm_deliveries").fetchone() == (0,)
