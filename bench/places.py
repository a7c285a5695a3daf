"""Scratch places: a tmpfs for targets (see BENCHMARKING.md) and fresh folders on it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

TMPFS = Path("/tmp/mirror-bench-tmpfs")
#: tmpfs only uses what is written; the million-file target needs about 4 GiB of pages
TMPFS_SIZE = "8g"


def is_mounted(path: Path) -> bool:
    with open("/proc/mounts", encoding="utf-8") as f:
        return any(line.split()[1] == str(path) for line in f)


def target_root() -> Path:
    """A tmpfs for targets, mounted if needed (root only); falls back to the cache disk."""
    TMPFS.mkdir(parents=True, exist_ok=True)
    if not is_mounted(TMPFS):
        if os.geteuid() != 0:
            raise SystemExit(f"bench: mount a tmpfs at {TMPFS} first (as root): mount -t tmpfs tmpfs {TMPFS}")
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(TMPFS)], check=True)
    return TMPFS


def fresh(path: Path) -> Path:
    """An empty folder at ``path`` (whatever was there is removed)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def count_files(path: Path) -> int:
    """Regular files under ``path`` (a cheap completeness check of a copy)."""
    total = 0
    for _dir, _subdirs, files in os.walk(path):
        total += len(files)
    return total
