"""Shared vocabulary of the reliability suite: test sources, digests, configs, output parsing."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mirror.paths import TEMP_RE
from tests.cli import files
from tests.servers.sshd import SshServer

MIB = 1024 * 1024
SENT_RE = re.compile(r"(\d+) sent \(")


def make_source(root: Path, small: int, large: int, large_bytes: int, seed: int = 6) -> Path:
    """``small`` files of 0-16 kB in nested folders plus ``large`` files of ``large_bytes``."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(small):
        folder = root / f"{2020 + i % 5}" / f"{i % 12 + 1:02}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"invoice {i:05}.pdf").write_bytes(rng.randbytes(rng.randrange(0, 16_000)))
    block = rng.randbytes(MIB)
    for i in range(large):
        with open(root / f"archive-{i}.zip", "wb") as f:
            for j in range(large_bytes // MIB):
                # each MiB differs, so a file stitched from the wrong pieces cannot pass
                f.write(j.to_bytes(8, "big") + block[8:])
            f.write(block[: large_bytes % MIB])
    return root


def digest(root: Path) -> dict[str, tuple[str, int, int, int]]:
    """Every entry below ``root``: content hash, size, mtime_ns and mode (what 'untouched' means)."""
    result: dict[str, tuple[str, int, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            try:
                st = path.lstat()
                content = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
            except FileNotFoundError:
                continue  # renamed away meanwhile (a temp file put in place): not there
            result[path.relative_to(root).as_posix()] = (content, st.st_size, st.st_mtime_ns, st.st_mode)
    return result


def hashes(root: Path) -> dict[str, str]:
    """Content hash of every regular file below ``root``."""
    return {rel: info[0] for rel, info in digest(root).items() if info[0]}


def landed(root: Path) -> dict[str, bytes]:
    """Files under final names below ``root`` while a mirror may still be writing there."""
    return {rel: data for rel, data in files(root).items() if not TEMP_RE.match(rel.rpartition("/")[2])}


def temp_files(root: Path) -> list[str]:
    """Temp upload files (``.~mirror-*.tmp``) anywhere below ``root``."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if TEMP_RE.match(p.name))


def sent(output: str) -> int:
    """Files sent according to a ``mirror run --once`` summary (0 when none printed)."""
    return sum(int(n) for n in SENT_RE.findall(output))


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(
    path: Path, source: Path, targets: dict[str, tuple[str, dict[str, Any]]], **settings: Any
) -> Path:
    """A config file with ``targets`` = name -> (url, options) and ``[defaults]`` settings."""
    lines = [f"source = {toml_value(str(source))}", "[defaults]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in settings.items()]
    for name, (url, options) in targets.items():
        lines += [f"[targets.{name}]", f"url = {toml_value(url)}"]
        if options:
            inner = ", ".join(f"{k} = {toml_value(v)}" for k, v in options.items())
            lines.append(f"options = {{ {inner} }}")
    path.write_text("\n".join(lines) + "\n")
    return path


def sftp_options(server: SshServer) -> dict[str, Any]:
    return {
        "key_filename": str(server.client_key),
        "known_hosts": str(server.known_hosts),
        "allow_agent": False,
        "look_for_keys": False,
        "timeout": 5,
    }


@contextlib.contextmanager
def bind(disk: Path, where: Path) -> Iterator[None]:
    """``disk`` mounted at ``where`` (a bind mount, as root; skips the test otherwise)."""
    done = subprocess.run(["mount", "--bind", str(disk), str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here ({done.stderr.decode().strip()})")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def unmount(where: Path) -> None:
    """Unmount what is mounted at ``where`` as a user pulling the disk would: at once,
    whatever still has files open there."""
    subprocess.run(["umount", "-l", str(where)], check=True, timeout=30)
