"""The lock file beside each index: the mirror process mirroring the target holds it
exclusively for as long as it runs, and ``mirror status`` looks at it (a shared lock,
taken and dropped at once) to tell whether one runs.

A mirror starting in the instant status looks must wait for the look to end, not stop as
if another mirror ran: a monitor running status every few seconds made a service or a
cron run fail to start now and then.

The holder writes in the file what it does with the target (:class:`Holding`), so that a
mirror refused the target can tell a one-off run, which lets go by itself, from a watcher.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import suppress
from enum import Enum
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


class Holding(Enum):
    """What the mirror holding a target's lock does with it, as its lock file tells."""

    STARTING = "starting"
    ONE_OFF = "a one-off run"
    WATCHING = "watching"


def tell(fd: int, holding: Holding) -> None:
    """Write in the lock ``fd``, held, what this process does with the target."""
    line = f"pid {os.getpid()}, {holding.value}\n".encode()
    # written over the old line before the file is cut to it, so a reader never finds it
    # empty; not written (a full disk), the ended holder's line stays, and reads as unknown
    with suppress(OSError):
        os.pwrite(fd, line, 0)
        os.ftruncate(fd, len(line))


def holder(fd: int) -> tuple[str, Holding | None]:
    """Who holds the lock ``fd`` ("pid 12"), and what it does with the target; None where
    the lock file does not say: the holder is a mirror from before holders wrote it, and
    the line there, if any, is an ended holder's (its pid is gone)."""
    try:
        line = os.pread(fd, 200, 0).decode(errors="replace").partition("\n")[0]
    except OSError:
        return "", None
    pid, _, doing = line.partition(", ")
    known = {h.value: h for h in Holding}
    if not (pid.startswith("pid ") and pid[4:].isdigit() and doing in known):
        return "", None
    try:
        os.kill(int(pid[4:]), 0)
    except ProcessLookupError:
        return "", None
    except PermissionError:
        pass  # another user's: alive
    return pid, known[doing]


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
