"""What ``mirror status`` shows: facts read from the indexes, also while a run is going."""

from __future__ import annotations

import fcntl
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mirror.index import Failure, Index


@dataclass(frozen=True)
class TargetStatus:
    name: str
    url: str
    source: str
    running: bool
    state: str
    files: int
    bytes: int
    pending: int
    last_complete_sync: float | None
    last_error: str | None
    failures: tuple[Failure, ...]
    index: str

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["failures"] = [asdict(f) for f in self.failures]
        return data


def is_running(index_file: Path) -> bool:
    """True while a mirror process holds the target's lock."""
    lock = Path(f"{index_file}.lock")
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def read(index_file: Path) -> TargetStatus:
    index = Index(index_file, readonly=True)
    try:
        files, size = index.totals()
        running = is_running(index_file)
        last = index.get_meta("last_complete_sync")
        state = index.get_meta("state") or "unknown"
        return TargetStatus(
            name=index.get_meta("target") or index_file.stem,
            url=index.get_meta("url") or "",
            source=index.get_meta("source") or "",
            running=running,
            state=state if running or state == "failed" else "stopped",
            files=files,
            bytes=size,
            pending=int(index.get_meta("pending") or 0) if running else 0,
            last_complete_sync=float(last) if last else None,
            last_error=index.get_meta("last_error"),
            failures=tuple(index.failures()),
            index=str(index_file),
        )
    finally:
        index.close()
