"""The lock file beside each index: the mirror process mirroring the target holds it
exclusively for as long as it runs, and ``mirror status`` looks at it (a shared lock,
taken and dropped at once) to tell whether one runs.

A mirror starting in the instant status looks must wait for the look to end, not stop as
if another mirror ran: a monitor running status every few seconds made a service or a
cron run fail to start now and then."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from mirror.index import state_denied

#: how long a starting mirror waits for looks at the lock to end (each lasts microseconds)
LOOKS_S = 5.0


def take(fd: int) -> bool:
    """Lock ``fd`` for this process; False where another mirror process holds it."""
    deadline = time.monotonic() + LOOKS_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        try:
            # only a mirror holds it exclusively; shared holders are looking, and go
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fd, fcntl.LOCK_UN)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def held(index_file: Path) -> bool:
    """True while a mirror process holds the lock of ``index_file``."""
    lock = Path(f"{index_file}.lock")
    if not lock.exists():
        return False
    try:
        fd = os.open(lock, os.O_RDONLY)
    except PermissionError as exc:
        raise state_denied(lock.parent, exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
