"""Target fixtures that need no server: ``memory`` and ``file``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from tests.support import TargetSpec


@pytest.fixture
def memory_target() -> Iterator[TargetSpec]:
    root = f"/t-{uuid.uuid4().hex}"
    yield TargetSpec("memory", f"memory://{root}")
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.fixture
def file_target(tmp_path: Path) -> TargetSpec:
    return TargetSpec("file", str(tmp_path / "target"))
