"""The kernel's inotify limits, met by a running mirror: a queue that overflows, no instance
to be had, watches that run out after the start. Nothing may go missing on the target, and
the user is told what happened and how to fix it.

The limits are lowered in a user namespace of mirror's own (/proc/sys/user/max_inotify_*),
so the machine's fs.inotify settings, shared with everything else, are never touched.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.cli import run, start, wait_for
from tests.reliability.common import landed

QUEUE = Path("/proc/sys/fs/inotify/max_queued_events")


def status(state: Path) -> str:
    return run("status", state=state).stdout


def test_an_overflowed_event_queue_is_followed_by_a_rescan(tmp_path: Path) -> None:
    """mirror held up (SIGSTOP, as a host under memory pressure stalls it) while more files
    arrive than the kernel's inotify queue holds events for: watchfiles drops the kernel's
    overflow notice, and the files beyond it waited for the hourly rescan."""
    queue = int(QUEUE.read_text()) if QUEUE.exists() else 16384
    if queue > 100_000:
        pytest.skip(f"fs.inotify.max_queued_events = {queue}: too many files to make for an overflow")
    count = queue // 4 + 2000  # a new file is about four events: created, opened, written, closed
    source, target, state, log = tmp_path / "src", tmp_path / "dst", tmp_path / "state", tmp_path / "m.log"
    (source / "a").mkdir(parents=True)
    (source / "a" / "seed.pdf").write_bytes(b"seed")
    proc = start("run", str(source), str(target), state=state, log=log)
    try:
        wait_for(lambda: "seed.pdf" in str(landed(target)), what="the first copy")
        wait_for(lambda: "idle" in status(state), what="an idle mirror")
        proc.send_signal(signal.SIGSTOP)
        try:
            for i in range(count):
                (source / "a" / f"f{i:05}.pdf").write_bytes(b"x")
        finally:
            proc.send_signal(signal.SIGCONT)
        wait_for(lambda: len(landed(target)) == count + 1, timeout=90, what="every file, the lost events' too")
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    text = log.read_text()
    warnings = [line for line in text.splitlines() if " warning " in line]
    assert len(warnings) == 1, text
    assert "inotify event queue" in warnings[0] and "may have overflowed" in warnings[0], text
    assert "rescanning the source" in warnings[0], text
