"""`crm serve` as a user starts it: what it logs, and that it answers over real HTTP."""

from __future__ import annotations

import os
import socket
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
