"""Running one tool as a child process: wall time, exit code, peak RSS of its process tree.

The peak RSS comes from GNU time (``/usr/bin/time -f %M``), not from our own ``wait4``:
a child forked from this Python process starts with Python's pages, and ``ru_maxrss``
would bill those (about 18 MiB) to ``cp``.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """One timed run. ``rss_kib`` is the largest RSS of the child or any descendant it waited for."""

    seconds: float
    rss_kib: int
    returncode: int
    stderr: str = ""
    #: user + system CPU time of the command and the children it waited for: it leaves
    #: out the time spent waiting for a core, which a busy host adds to wall time
    cpu_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0


TIME = "/usr/bin/time"


class ToolFailed(RuntimeError):
    """A benchmarked command exited with an error: its figures would mean nothing."""


def timed(cmd: Sequence[str], env: Mapping[str, str] | None = None, *, check: bool = True) -> Sample:
    """``sync``, then run ``cmd`` and measure it (wait4's rusage, as /usr/bin/time -v does)."""
    os.sync()
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as rss:
        started = time.perf_counter()
        returncode = subprocess.call(
            [TIME, "-f", "%M %U %S", "-o", rss.name, *cmd],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=dict(env or os.environ),
        )
        seconds = time.perf_counter() - started
        err.seek(0)
        text = err.read().decode(errors="replace")[-4000:]
        # the last line; a command killed by a signal gets a line about that before it
        lines = rss.read().splitlines()
    fields = lines[-1].split() if lines else []
    rss_kib, cpu = 0, 0.0
    if len(fields) == 3 and fields[0].isdigit():
        rss_kib, cpu = int(fields[0]), float(fields[1]) + float(fields[2])
    sample = Sample(seconds, rss_kib, returncode, text, cpu)
    if check and not sample.ok:
        raise ToolFailed(f"{' '.join(cmd)} exited with {sample.returncode}:\n{text}")
    return sample
