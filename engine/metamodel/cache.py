"""The validated metamodel kept between starts, keyed by the blueprint files' contents.

Reading and validating the shipped blueprint (YAML with line numbers, JSON Schema, cross
checks) takes most of a `crm serve` start. `load_blueprint_cached` keeps the result as a
pickle in the user's cache folder under a key hashed from everything the result depends on:
the app file and every file its `include:` patterns match now (so an edited, added or removed
file is a new key), the vocabulary the installed plugins provide, the metamodel code itself,
the Python version and the working folder (locations are shown relative to it). A blueprint
with errors is never cached: each load reports them again. An unreadable or stale cache
entry is ignored and rewritten.

The folder is `CRM_CACHE_DIR`, else `$XDG_CACHE_HOME/blueprint-crm`, else
`~/.cache/blueprint-crm`; `CRM_CACHE_DIR=off` turns the cache off.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import os
import pickle
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.metamodel.loader import _app_file, load_blueprint
from engine.metamodel.model import Metamodel
from engine.metamodel.vocabulary import Vocabulary

KEEP = 16  # cache entries kept (the newest); older ones are removed when a new one is written


def cache_folder(environ: Mapping[str, str] = os.environ) -> Path | None:
    """Where cached metamodels go, or None when `CRM_CACHE_DIR=off`."""
    configured = environ.get("CRM_CACHE_DIR")
    if configured is not None:
        return None if configured.strip().lower() in ("", "off", "0", "no", "false") else Path(configured)
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "blueprint-crm"


def load_blueprint_cached(path: str | os.PathLike[str], *, vocabulary: Vocabulary,
                          folder: Path | None = None, environ: Mapping[str, str] = os.environ) -> Metamodel:
    """`load_blueprint(path, vocabulary=vocabulary)`, from the cache when nothing it depends on changed."""
    folder = folder if folder is not None else cache_folder(environ)
    key = _key(Path(path), vocabulary) if folder is not None else None
    if folder is None or key is None:
        return load_blueprint(path, vocabulary=vocabulary)
    entry = folder / f"{key}.pickle"
    try:
        model = pickle.loads(entry.read_bytes())
        if isinstance(model, Metamodel):
            return model
    except Exception:  # noqa: BLE001 — missing, half-written or from other code: load afresh
        pass
    model = load_blueprint(path, vocabulary=vocabulary)  # (raises BlueprintInvalid: nothing is cached)
    _store(folder, entry, model)
    return model


def _store(folder: Path, entry: Path, model: Metamodel) -> None:
    """Write the entry atomically (a reader never sees half of it); a read-only home only costs speed."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".tmp-", delete=False) as handle:
            handle.write(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(handle.name, entry)
        entries = sorted(folder.glob("*.pickle"), key=lambda item: item.stat().st_mtime, reverse=True)
        for old in entries[KEEP:]:
            old.unlink(missing_ok=True)
    except OSError:
        pass


def _key(path: Path, vocabulary: Vocabulary) -> str | None:
    """The hash of everything the loaded metamodel depends on; None when the app file cannot
    be read cheaply (the loader then reports the problem with its location)."""
    try:
        app_path = _app_file(path)
        app_text = app_path.read_bytes()
        patterns = _include_patterns(app_text)
    except Exception:  # noqa: BLE001
        return None
    if patterns is None:
        return None
    digest = hashlib.sha256()
    for part in (sys.version, os.getcwd(), _code_hash(), _vocabulary_text(vocabulary), str(app_path.resolve())):
        digest.update(part.encode() + b"\0")
    digest.update(app_text + b"\0")
    for pattern in patterns:
        digest.update(pattern.encode() + b"\0")
        for match in sorted(glob.glob(str(app_path.parent / pattern), recursive=True)):
            file = Path(match)
            digest.update(str(file.resolve()).encode() + b"\0")
            try:
                digest.update(file.read_bytes() if file.is_file() else b"<folder>")
            except OSError:
                return None
            digest.update(b"\0")
    return digest.hexdigest()[:40]


def _include_patterns(app_text: bytes) -> list[str] | None:
    """The app document's `include:` patterns (libyaml when present: a fraction of a millisecond)."""
    import yaml
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for document in yaml.load_all(app_text, Loader=loader):
        if isinstance(document, dict) and "app" in document:
            include = document.get("include") or []
            if not isinstance(include, list) or not all(isinstance(item, str) for item in include):
                return None
            return include
    return None


def _vocabulary_text(vocabulary: Vocabulary) -> str:
    def plain(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(key): plain(item) for key, item in value.items()}
        if isinstance(value, (set, frozenset)):
            return sorted(str(item) for item in value)
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        return value if isinstance(value, (str, int, float, bool)) or value is None else repr(value)
    return json.dumps({"functions": plain(vocabulary.functions), "channel_types": plain(vocabulary.channel_types),
                       "field_types": plain(vocabulary.field_types), "actions": plain(vocabulary.actions)},
                      sort_keys=True)


@functools.lru_cache(maxsize=1)
def _code_hash() -> str:
    """The metamodel package's source: a cached model is only valid for the code that built it."""
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).resolve().parent.rglob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    return digest.hexdigest()
