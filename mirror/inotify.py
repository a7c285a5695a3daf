"""The process's inotify instances as /proc shows them, and the events their watches queue.

watchfiles (notify) owns its inotify instance; mirror only finds it, to check that each
folder has a watch, and narrows what its watches queue: notify asks for an event at each
file opened, which watchfiles drops. A backup tool or a virus scanner reading the source
filled the kernel's queue with them (16,384 events by default) while mirror was held up,
for less than a second under a CPU quota, and the overflow lost the events of an invoice
written then, without a word.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("mirror")

#: inotify's event bit for a file or folder opened (linux/inotify.h)
IN_OPEN = 0x20
#: one watch of an inotify instance, as /proc/self/fdinfo shows it
_WATCH_LINE = re.compile(r"^inotify wd:(\S+) ino:([0-9a-f]+) \S+ mask:([0-9a-f]+) ", re.MULTILINE)


@dataclass(frozen=True)
class Watch:
    """One watch: its descriptor, and the events it queues (inotify's mask)."""

    wd: int
    mask: int


def instances() -> set[int]:
    """The file descriptors of the process's inotify instances (none where /proc cannot tell)."""
    found: set[int] = set()
    for name in open_fds():
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:inotify":
                found.add(int(name))
        except (OSError, ValueError):
            continue
    return found


def watches(fd: int) -> dict[int, Watch] | None:
    """The watches of the inotify instance ``fd``, by the inode of the folder each
    watches; None: cannot tell."""
    try:
        text = Path(f"/proc/self/fdinfo/{fd}").read_text()
    except OSError:
        return None
    return {int(ino, 16): Watch(int(wd, 16), int(mask, 16)) for wd, ino, mask in _WATCH_LINE.findall(text)}


def ignore_opens(fd: int, folders: Iterable[Path], shown: Mapping[int, Watch] | None = None) -> None:
    """Have the watches of ``folders`` by the instance ``fd`` queue no event for a file
    opened (inotify replaces a watch's mask when its folder is added again); ``shown``:
    its :func:`watches`, if just read. A folder without a watch is left so: a watch made
    for it would be one its owner knows nothing of."""
    shown = watches(fd) if shown is None else shown
    libc = _libc()
    if not shown or libc is None:
        return
    for folder in folders:
        try:
            watch = shown.get(os.stat(folder).st_ino)
        except OSError:
            continue
        if watch is None or not watch.mask & IN_OPEN:
            continue
        wd = libc.inotify_add_watch(fd, os.fsencode(folder), watch.mask & ~IN_OPEN)
        if wd >= 0 and wd != watch.wd:
            # another folder took its path meanwhile, and got a watch of its own
            libc.inotify_rm_watch(fd, wd)


def open_fds() -> list[str]:
    """The process's open file descriptors, by number (none where /proc cannot tell)."""
    try:
        return os.listdir("/proc/self/fd")
    except OSError:
        return []


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):
        log.debug("no inotify in the C library: opens of source files stay in the event queue")
        return None
    return libc
