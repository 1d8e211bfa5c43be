"""schemathesis against /api/openapi.json of the running app (uvicorn on loopback, the shipped CRM
blueprint, SQLite and PostgreSQL): generated requests for every documented operation get no
5xx, and every answer matches the document (status code, content type, body schema).

Examples are bounded (a few per operation) so the suite stays quick; run it with
HYPOTHESIS_MAX_EXAMPLES=200 for a deeper search."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from engine.runtime.ops.users import NewUser
from tests.support.blueprints import SHIPPED_CRM
from tests.support.live_server import serving

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,  # noqa: E402
                                               status_code_conformance)

from schemathesis.checks import not_a_server_error  # noqa: E402

EXAMPLES = int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "4"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
_served: dict[str, str] = {}


@pytest.fixture
def api_schema(make_engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("CRM_SECRET_KEY_FILE", str(tmp_path / "secret-key"))
    runtime = make_engine(SHIPPED_CRM, password_hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    runtime.users.add(NewUser("admin", "Admin", "admin", password="crm-demo-admin"))
    token = runtime.users.create_token("admin")
    with serving(runtime.web_app()) as base:
        _served["token"], _served["base"] = token, base
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield schemathesis.openapi.from_url(f"{base}/api/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_every_operation_answers_within_its_document_and_never_5xx(case: Any) -> None:
    case.call_and_validate(base_url=_served["base"], headers={"Authorization": f"Bearer {_served['token']}"},
                           checks=CHECKS)
