"""mirror.inotify on an inotify instance of the test's own, made as notify makes its own."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirror import inotify

libc = ctypes.CDLL(None, use_errno=True)
#: what notify asks of a folder's watch: opens among the rest
NOTIFY_MASK = 0x3EE


@pytest.fixture
def instance() -> Iterator[int]:
    fd = libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
    assert fd >= 0
    yield fd
    os.close(fd)


def watch(fd: int, folder: Path) -> int:
    wd = libc.inotify_add_watch(fd, os.fsencode(folder), NOTIFY_MASK)
    assert wd >= 0
    return int(wd)


def test_every_watch_is_found_by_its_folder_s_inode(tmp_path: Path, instance: int) -> None:
    """/proc numbers watches in hex: the 10th and later were misread."""
    folders = [tmp_path / f"folder {i}" for i in range(40)]
    made = {}
    for folder in folders:
        folder.mkdir()
        made[folder.stat().st_ino] = watch(instance, folder)
    assert instance in inotify.instances()
    assert {ino: w.wd for ino, w in (inotify.watches(instance) or {}).items()} == made


def test_opens_queue_no_event_once_ignored(tmp_path: Path, instance: int) -> None:
    read, other = tmp_path / "read", tmp_path / "other"
    for folder in (read, other):
        folder.mkdir()
        (folder / "invoice.pdf").write_bytes(b"invoice")
    wds = {watch(instance, folder) for folder in (read, other)}
    inotify.ignore_opens(instance, [read, tmp_path / "gone"])
    (read / "invoice.pdf").read_bytes()
    with pytest.raises(BlockingIOError):
        os.read(instance, 4096)  # no event queued
    shown = inotify.watches(instance) or {}
    assert {w.wd for w in shown.values()} == wds  # the same watches, none added
    assert shown[read.stat().st_ino].mask == NOTIFY_MASK & ~inotify.IN_OPEN
    (other / "invoice.pdf").read_bytes()
    assert os.read(instance, 4096)  # a folder not named keeps its watch as it was
