"""Running the real ``mirror`` command in a subprocess, as users do."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

MIRROR = [sys.executable, "-m", "mirror"]
#: what a test that reads the trash's folder of the day may take: it starts this far from
#: local midnight at least, or the day's trash would be two folders
ONE_DAY_TEST = 120.0


def run(
    *args: str,
    state: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
    cwd: Path | None = None,
    typed: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``mirror ARGS`` to completion, with its own state folder; ``typed``: what the user
    types at its prompts (none by default: a prompt then fails)."""
    full_env = {**os.environ, "MIRROR_STATE_DIR": str(state), **(env or {})}
    return subprocess.run(
        [*MIRROR, *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
        stdin=subprocess.DEVNULL if typed is None else None,
        input=typed,
        check=False,
    )


def start(
    *args: str, state: Path, env: Mapping[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[str]:
    """``mirror ARGS`` in the background (watch mode); output goes to ``log``."""
    full_env = {**os.environ, "MIRROR_STATE_DIR": str(state), **(env or {})}
    out = open(log or os.devnull, "w")  # noqa: SIM115 - closed when the process is reaped
    return subprocess.Popen(
        [*MIRROR, *args], stdout=out, stderr=subprocess.STDOUT, text=True, env=full_env, stdin=subprocess.DEVNULL
    )


@contextlib.contextmanager
def watching(*args: str, state: Path, log: Path) -> Iterator[subprocess.Popen[str]]:
    """:func:`start` for the ``with`` block; a SIGTERM then stops it, which must end it
    cleanly (exit 0)."""
    proc = start(*args, state=state, log=log)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text(errors="replace")[-4000:]


def wait_for(
    check: Callable[[], bool], timeout: float = 15.0, what: str = "condition", log: Path | None = None
) -> float:
    """Poll until ``check()`` holds; returns the seconds it took, fails after ``timeout``
    (with the end of mirror's ``log``, if given: what it did meanwhile)."""
    start_at = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start_at
        if time.monotonic() - start_at > timeout:
            told = f"\n{log.read_text(errors='replace')[-4000:]}" if log is not None and log.exists() else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{told}")
        time.sleep(0.02)


def files(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` with its content, by relative path (a temp file renamed
    away while this reads is simply not there, nor is a folder removed meanwhile: os.walk
    skips it, where Path.rglob raises)."""
    found: dict[str, bytes] = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            try:
                if path.is_file():
                    found[path.relative_to(root).as_posix()] = path.read_bytes()
            except FileNotFoundError:
                continue
    return found


def same_day() -> None:
    """Wait for local midnight to pass if it comes within :data:`ONE_DAY_TEST` seconds:
    mirror names the trash's folders by the local date, and a test across midnight
    found two."""
    now = time.localtime()
    left = 86400 - (now.tm_hour * 3600 + now.tm_min * 60 + now.tm_sec)
    if left < ONE_DAY_TEST:
        time.sleep(left + 1)
