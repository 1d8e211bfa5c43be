"""Signing in to the dashboards and reading a list page's total, for the dashboard screen tests."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from engine.engine import Engine

PASSWORD = "pw-correct-horse"


def signed_in(runtime: Engine, username: str) -> TestClient:
    client = TestClient(runtime.web_app(), follow_redirects=False)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert token
    assert client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token.group(1),
                                       "next": "/"}).status_code == 303
    return client


def list_total(client: TestClient, url: str) -> int:
    """The total the list page behind `url` says it holds."""
    page = client.get(url)
    assert page.status_code == 200, url
    match = re.search(r'<p class="totals">[^0-9]*([0-9]+)', page.text)
    assert match, url
    return int(match.group(1))
