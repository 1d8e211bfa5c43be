"""Secrets from the environment or a secrets file, never from the blueprint."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from engine.metamodel.messages import Msg


class SecretError(LookupError):
    """A secret could not be found; the message names where it was looked for, never a value."""


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where a channel's secret lives: an environment variable or a dotted key in CRM_SECRETS_FILE."""

    env: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        if (self.env is None) == (self.key is None):
            raise SecretError(Msg("a secret reference names exactly one of env (a variable) or key (in the secrets file)"))


def resolve_secret(ref: SecretRef, environ: Mapping[str, str], secrets_file: str | Path | None = None) -> str:
    """The secret's value from the environment or the secrets file (default: $CRM_SECRETS_FILE)."""
    if ref.env is not None:
        value = environ.get(ref.env)
        if not value:
            raise SecretError(Msg("environment variable {name} is not set; export it for the worker", name=ref.env))
        return value
    path = secrets_file or environ.get("CRM_SECRETS_FILE")
    if not path:
        raise SecretError(Msg("secret '{key}' lives in the secrets file, but CRM_SECRETS_FILE is not set", key=ref.key))
    try:
        text = Path(path).read_text(encoding="utf-8")
        node: Any = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise SecretError(Msg("secrets file {path} cannot be read: {problem}", path=path, problem=type(exc).__name__)) from None
    for part in str(ref.key).split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise SecretError(Msg("secrets file {path} has no key '{key}' (missing at '{part}')", path=path, key=ref.key, part=part))
        node = node[part]
    if not isinstance(node, (str, int)) or isinstance(node, bool) or node == "":
        raise SecretError(Msg("secrets file {path}: '{key}' must be a non-empty string", path=path, key=ref.key))
    return str(node)
