"""The test suite's own rules: modules share helpers only through conftest.py and tests/support,
and the cheap password hasher the tests inject never reaches the product."""

from __future__ import annotations

import ast
from pathlib import Path

from argon2 import PasswordHasher

from engine.engine import open_engine
from tests.support.blueprints import SHIPPED_CRM, load

TESTS = Path(__file__).resolve().parent


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_test_module_imports_another_test_module_or_the_conftest() -> None:
    offenders = {f"{path.relative_to(TESTS.parent)} imports {name}"
                 for path in TESTS.rglob("*.py")
                 for name in _imported_modules(path)
                 if name.startswith(("tests.test_", "tests.conftest")) or name in ("tests.test", "conftest")}
    assert not offenders, "share helpers through tests/support instead:\n" + "\n".join(sorted(offenders))


def test_the_product_hashes_passwords_with_argon2s_safe_defaults(tmp_path: Path) -> None:
    runtime = open_engine(load(SHIPPED_CRM), f"sqlite:///{tmp_path / 'crm.sqlite'}")
    try:
        safe = PasswordHasher()
        hasher = runtime.users.hasher
        assert (hasher.time_cost, hasher.memory_cost, hasher.parallelism) == \
            (safe.time_cost, safe.memory_cost, safe.parallelism)
    finally:
        runtime.close()
