"""Workload trees: generated once, with a fixed seed, into a cache folder outside git.

A tree is complete when its marker file (next to it, never inside it) exists, so an
interrupted generation is redone rather than benchmarked half-built.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

SEED = 20240607
CACHE_ENV = "MIRROR_BENCH_CACHE"
DEFAULT_CACHE = Path("/var/tmp/mirror-bench")


@dataclass(frozen=True)
class TreeSpec:
    """``files`` files of ``size`` bytes spread evenly over ``folders`` folders."""

    name: str
    files: int
    size: int
    folders: int

    @property
    def total_bytes(self) -> int:
        return self.files * self.size


SPECS: dict[str, TreeSpec] = {
    "small": TreeSpec("small", 10_000, 4096, 100),
    "large": TreeSpec("large", 8, 64 * 1024 * 1024, 1),
    "huge": TreeSpec("huge", 100_000, 1024, 1_000),
    "million": TreeSpec("million", 1_000_000, 128, 10_000),
}


def cache_dir() -> Path:
    """Where trees and scratch folders live (on disk): $MIRROR_BENCH_CACHE or /var/tmp."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def rel_path(spec: TreeSpec, i: int) -> str:
    """The source-relative path of file number ``i``."""
    folder = i % spec.folders
    return f"d{folder:05d}/f{i:07d}.bin"


def tree(spec: TreeSpec, root: Path | None = None) -> Path:
    """The folder holding ``spec``'s tree, generating it first when needed."""
    base = root or cache_dir() / "trees"
    path = base / spec.name
    marker = base / f"{spec.name}.done"
    if marker.exists() and path.is_dir():
        return path
    if path.exists():
        shutil.rmtree(path)
    generate(spec, path)
    marker.write_text(f"{spec}\nseed={SEED}\n")
    return path


def generate(spec: TreeSpec, path: Path) -> None:
    """Write the tree: same names and bytes on every machine for the same seed."""
    rng = random.Random(f"{SEED}-{spec.name}")
    for folder in range(spec.folders):
        (path / f"d{folder:05d}").mkdir(parents=True, exist_ok=True)
    chunk = 1024 * 1024
    for i in range(spec.files):
        fd = os.open(path / rel_path(spec, i), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            left = spec.size
            while left:
                n = min(left, chunk)
                os.write(fd, rng.randbytes(n))
                left -= n
        finally:
            os.close(fd)


def edit(spec: TreeSpec, path: Path, round_: int, count: int = 10) -> list[str]:
    """Rewrite ``count`` files with new bytes (same size); the edited relative paths."""
    rng = random.Random(f"{SEED}-{spec.name}-edit-{round_}")
    chosen = rng.sample(range(spec.files), min(count, spec.files))
    edited = []
    for i in chosen:
        rel = rel_path(spec, i)
        with open(path / rel, "r+b") as f:
            # a new head is enough to change content; large files keep most of their bytes
            f.write(rng.randbytes(min(spec.size, 64 * 1024)))
        edited.append(rel)
    return edited
