"""schemathesis against /api/openapi.json of the running app (uvicorn on loopback, the shipped CRM
blueprint, SQLite and PostgreSQL): generated requests for every documented operation get no
5xx, and every answer matches the document (status code, content type, body schema).

Examples are bounded (a few per operation, derandomized: the same each run) so the suite stays
quick; run it with HYPOTHESIS_MAX_EXAMPLES=200 for a deeper search."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.runtime.ops.users import NewUser
from tests.support.blueprints import SHIPPED_CRM
from tests.support.live_server import serving

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,  # noqa: E402
                                               status_code_conformance)

from schemathesis.checks import not_a_server_error  # noqa: E402

EXAMPLES = int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "4"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def served(make_engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """The shipped CRM served on loopback, and an administrator's API token."""
    monkeypatch.setenv("CRM_SECRET_KEY_FILE", str(tmp_path / "secret-key"))
    runtime = make_engine(SHIPPED_CRM)
    runtime.users.add(NewUser("admin", "Admin", "admin", password="crm-demo-admin"))
    token = runtime.users.create_token("admin")
    with serving(runtime.web_app()) as base:
        yield base, token


def test_every_operation_answers_within_its_document_and_never_5xx(served: tuple[str, str]) -> None:
    base, token = served
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        schema = schemathesis.openapi.from_url(f"{base}/api/openapi.json")
    headers = {"Authorization": f"Bearer {token}"}
    tried = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            case.call_and_validate(base_url=base, headers=headers, checks=CHECKS)
        check()
        tried.append(operation.label)
    assert "POST /api/files" in tried and "GET /api/lead/{record_id}" in tried and len(tried) > 50
