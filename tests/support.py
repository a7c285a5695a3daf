"""Shared test vocabulary: how a server fixture describes the target it provides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TargetSpec:
    """An empty target root on a running backend, as a user would configure it.

    ``url`` and ``options`` go into a ``[targets.NAME]`` table; ``env`` holds the
    environment variables the options refer to as ``${VAR}`` (secrets); ``presets`` are
    extra ``[backends.NAME]`` tables the URL may refer to.
    """

    backend: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
