"""The layout holds: imports point one way and no module imports another that imports it back.

Every module of engine/ (and cli.py) is read — top-level and function-local imports alike;
imports under `if TYPE_CHECKING:` are left out, as they never run. The direction is
metamodel ← plugins ← rules ← channels ← runtime (storage ← records ← automation/background
← ops ← web) ← the composition root (engine/engine.py) ← cli. engine/io and engine/analytics
sit beside ops: they read and write through the runtime and are used by the web and the cli.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# a module may import modules of its own rank or lower; same-rank packages may import each other
RANKS = {
    "engine.metamodel": 0, "engine.plugins": 1, "engine.rules": 2, "engine.channels": 3,
    "engine.runtime.storage": 4, "engine.runtime.records": 5,
    # a field kind says how its values are stored (their columns) as well as coerced and read:
    # storage's tables ask it, so it sits with storage, importing nothing else of records
    "engine.runtime.records.fieldkinds": 4,
    "engine.runtime.automation": 6, "engine.runtime.background": 6,
    "engine.runtime.ops": 7, "engine.io": 7, "engine.analytics": 7,
    "engine.runtime.web": 8, "engine.runtime": 8,
    "engine.engine": 9, "engine": 9, "cli": 10,
}


def _modules() -> dict[str, Path]:
    found = {"cli": ROOT / "cli.py"}
    for path in sorted((ROOT / "engine").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _rank(module: str) -> int:
    best = max((name for name in RANKS if module == name or module.startswith(name + ".")), key=len)
    return RANKS[best]


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The engine modules `module` imports when it runs (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skipped |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([node.module] if node.module else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in known:
                    found.add(target)
                elif base in known:
                    found.add(base)
    found.discard(module)
    return found


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {module: _imports(module, path, known) for module, path in known.items()}


def test_no_import_goes_against_the_direction_of_the_layers() -> None:
    wrong = [f"{module} (rank {_rank(module)}) imports {target} (rank {_rank(target)})"
             for module, targets in _graph().items() for target in sorted(targets)
             if _rank(target) > _rank(module) and not module.startswith(target + ".")]
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_runtime_module_imports_the_composition_root() -> None:
    back = [module for module, targets in _graph().items() if "engine.engine" in targets
            and module not in ("cli", "engine.engine")]
    assert not back, f"these import the composition root back: {back}"


def test_there_is_no_import_cycle() -> None:
    graph = _graph()
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" → ".join(cycle) for cycle in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def test_the_checker_sees_a_cycle_and_a_wrong_direction(tmp_path: Path) -> None:
    """The checks above can fail: a two-module cycle is found, a rules → runtime import is ranked wrong."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert _rank("engine.rules.sla") < _rank("engine.runtime.records.service")
    assert _rank("engine.runtime.web.app") > _rank("engine.runtime.ops.doctor")
