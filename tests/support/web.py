"""Driving the web app as a browser or an API client would, in process."""

from __future__ import annotations

import html
import re

from starlette.testclient import TestClient

from engine.engine import Engine


def csrf_of(page: str) -> str:
    """The CSRF token a page's form carries."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the page carries no CSRF token"
    return match.group(1)


def visible_text(page: str) -> str:
    """A page's text as a reader sees it: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def sign_in(runtime: Engine, username: str, password: str, *, next: str = "/lead") -> TestClient:
    """A client signed in through the login form (CSRF token and session cookie included)."""
    client = TestClient(runtime.web_app(), follow_redirects=False)
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"username": username, "password": password,
                                           "csrf_token": token, "next": next})
    assert response.status_code == 303, response.text
    return client


def api_client(runtime: Engine, username: str, lang: str = "zh") -> TestClient:
    """A client carrying a fresh API token of an existing user."""
    return TestClient(runtime.web_app(), headers={"Authorization": f"Bearer {runtime.users.create_token(username)}",
                                                  "Accept-Language": lang})
