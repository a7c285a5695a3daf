"""Limits of the host mirror runs on: memory, threads, the state disk and a target disk
filling up while it watches for months.

Disks are real tmpfs mounts (as root; skipped with the reason otherwise). A memory error
cannot be made to come at a chosen place, so the tests of those raise one where the real
one came (said in each); everything else is real.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mirror import api
from mirror.index import Index
from tests.cli import files, run, start, wait_for
from tests.integration.test_metrics import reachable, samples
from tests.reliability.common import hashes, landed
from tests.reliability.test_faults import remount, stop, tmpfs
from tests.servers.sshd import free_port
from tests.support import watching


class States(api.Observer):
    """Every state a target went through, with its reason."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    def on_state(self, target: str, state: str, error: str | None) -> None:
        self.seen.append((state, error))


def _config(tmp_path: Path) -> tuple[api.Config, Path, Path]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "invoice 1.pdf").write_bytes(b"%PDF one")
    settings = api.TargetSettings(settle=0.1)
    cfg = api.Config(
        source=src, targets=(api.TargetConfig("disk", str(dst), settings=settings),), state_dir=tmp_path / "s"
    )
    return cfg, src, dst


# -- 1: a target's thread never dies silently ---------------------------------------------------
@pytest.mark.timeout(60)
def test_a_target_thread_out_of_memory_is_told_and_runs_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Under ``ulimit -v`` a MemoryError came while the loop handled another: the target's
    thread died ('Exception ignored in: ... Thread(mirror-t4 ...) MemoryError'), mirror ran
    on, that target never got another file, status said 'running, starting', exit 0.
    Raised here where sqlite raises it when it cannot allocate (SQLITE_NOMEM): the index's
    first two writes, the pass's and then the handler's."""
    cfg, src, dst = _config(tmp_path)
    short = [2]
    set_meta = Index.set_meta

    def out_of_memory(self: Index, **values: Any) -> None:
        if values.get("state") in ("syncing", "failing") and short[0]:
            short[0] -= 1
            raise MemoryError
        set_meta(self, **values)

    monkeypatch.setattr(Index, "set_meta", out_of_memory)
    states = States()
    caplog.set_level(logging.INFO, logger="mirror")
    with watching(cfg, [states]):
        wait_for(lambda: files(dst) == files(src), timeout=30, what="the copy once the thread runs again")
        (src / "invoice 2.pdf").write_bytes(b"%PDF two")
        wait_for(lambda: files(dst) == files(src), timeout=30, what="a later invoice")
        wait_for(lambda: api.status(cfg)[0].in_sync, what="status to be in sync again")
    told = [error or "" for state, error in states.seen if state == "failed"]
    assert told and told[0].startswith("out of memory"), states.seen
    assert "out of memory" in caplog.text and "starting this target again in 1 s" in caplog.text, caplog.text
    assert "internal error" not in caplog.text


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_target_thread_that_ended_before_mirror_s_code_ran_is_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread can also die in Python's own start of it, out of memory, before any of
    mirror's code runs: raised here as the first thing the thread does."""
    cfg, src, dst = _config(tmp_path)
    run = threading.Thread.run
    starts = [0]

    def dies_at_once(self: threading.Thread) -> None:
        if self.name == "mirror-disk":
            starts[0] += 1
            if starts[0] == 1:
                raise MemoryError
        run(self)

    monkeypatch.setattr(threading.Thread, "run", dies_at_once)
    states = States()
    with watching(cfg, [states]):
        wait_for(lambda: files(dst) == files(src), timeout=30, what="the copy by the thread started again")
        wait_for(lambda: api.status(cfg)[0].in_sync, what="status to be in sync again")
    assert ("failed", "its thread ended unexpectedly (out of memory?)") in states.seen


# -- 2: mirror's own state disk full while watching -----------------------------------------------
def fill(disk: Path) -> Path:
    """Fill ``disk`` up with one file; remove it to give the space back."""
    filler = disk / "filler"
    try:
        # unbuffered: a buffer left to flush as the file closes failed the test with ENOSPC
        f = open(filler, "wb", buffering=0)  # noqa: SIM115 - closed below
    except OSError as exc:
        # full already: the index's WAL, checkpointed late on a loaded machine, took the rest
        if exc.errno != errno.ENOSPC:
            raise
        return filler
    with f, contextlib.suppress(OSError):
        while True:
            f.write(bytes(64 * 1024))
    return filler


FULL_STATE = "is full; free space there, or set state_dir"


@pytest.mark.timeout(150)
def test_a_state_disk_filling_up_while_watching_is_waited_out(tmp_path: Path) -> None:
    """The main thread's bookkeeping (the count of files settling) met the full disk and
    ended 'mirror run' with exit 1: every target stopped, nothing resumed with space, and
    status said 'ended without stopping cleanly', exit 0."""
    source, target, log = tmp_path / "export", tmp_path / "backup", tmp_path / "m.log"
    source.mkdir()
    for i in range(200):
        (source / f"invoice {i:03}.pdf").write_bytes(b"%%PDF %d" % i)
    with tmpfs(tmp_path / "state", "2m") as state:
        proc = start("run", str(source), str(target), state=state, log=log)
        try:
            wait_for(lambda: files(target) == files(source), timeout=30, what="the first copy")
            filler = fill(state)
            for i in range(300):  # the program goes on writing
                (source / f"scan {i:03}.pdf").write_bytes(b"%%PDF scan %d" % i)
            wait_for(lambda: FULL_STATE in log.read_text(), timeout=30, what="the full disk to be told")
            assert proc.poll() is None, log.read_text()
            filler.unlink(missing_ok=True)
            (source / "late.pdf").write_bytes(b"%PDF late")
            wait_for(lambda: files(target) == files(source), timeout=90, what="the copy once space is back")
        finally:
            output = stop(proc, log)
    assert output.count(FULL_STATE) == 1, output
    assert "mirror's state can be written again; carrying on" in output


@pytest.mark.timeout(150)
def test_status_and_metrics_tell_a_full_state_disk(tmp_path: Path) -> None:
    """New invoices were not mirrored and on_failure fired, but `mirror status` said
    'running, idle', exit 0, and the metrics mirror_in_sync 1: the index on the full disk
    could not take the failure, and kept what it said last."""
    source, target, log = tmp_path / "export", tmp_path / "backup", tmp_path / "m.log"
    source.mkdir()
    (source / "invoice 1.pdf").write_bytes(b"%PDF first")
    port = free_port()
    with tmpfs(tmp_path / "state", "2m") as state:
        args = ("run", str(source), str(target), "--metrics-addr", f"127.0.0.1:{port}")
        proc = start(*args, state=state, log=log)
        try:
            wait_for(lambda: reachable(port) and files(target) == files(source), what="the first copy")
            fill(state)
            (source / "late.pdf").write_bytes(b"%PDF late")
            wait_for(lambda: FULL_STATE in log.read_text(), timeout=30, what="the full disk to be told")
            running = run("status", state=state)
            assert running.returncode == 1 and "(running, failing)" in running.stdout, running.stdout
            assert FULL_STATE in running.stdout, running.stdout
            told = samples(port)
            assert told['mirror_in_sync{target="default"}'] == 0, told
            assert told['mirror_target_state{state="failing",target="default"}'] == 1, told
        finally:
            proc.terminate()  # its last record cannot be written either: exit 1
            proc.wait(30)
        [stopped] = json.loads(run("status", "--json", state=state).stdout)
    assert not stopped["in_sync"] and FULL_STATE in stopped["last_error"], stopped


@pytest.mark.timeout(150)
def test_a_state_disk_full_at_start_is_waited_for_in_watch_mode(tmp_path: Path) -> None:
    """A service started on a full state disk exited 1 and stayed down; --once still fails."""
    source, target, log = tmp_path / "export", tmp_path / "backup", tmp_path / "m.log"
    source.mkdir()
    for i in range(200):
        (source / f"invoice {i:03}.pdf").write_bytes(b"%%PDF %d" % i)
    with tmpfs(tmp_path / "state", "2m") as state:
        assert run("run", str(source), str(target), "--once", state=state).returncode == 0
        for shm in state.rglob("*-shm"):
            shm.unlink()  # as after a reboot: opening the index has to make it again
        filler = fill(state)
        (source / "new.pdf").write_bytes(b"%PDF new")
        once = run("run", str(source), str(target), "--once", state=state)
        assert once.returncode == 1 and FULL_STATE in once.stderr, once.stderr
        proc = start("run", str(source), str(target), state=state, log=log)
        try:
            wait_for(lambda: "waiting for that" in log.read_text(), timeout=30, what="the wait to be told")
            assert proc.poll() is None, log.read_text()
            filler.unlink(missing_ok=True)
            wait_for(lambda: files(target) == files(source), timeout=90, what="the copy once space is back")
        finally:
            output = stop(proc, log)
    assert output.count(FULL_STATE) == 1, output
    assert "mirror's state can be written again; starting" in output


# -- 3: a full target is tried again within minutes ------------------------------------------------
@pytest.mark.timeout(180)
def test_a_target_full_in_its_first_pass_is_waited_for_not_exited_on(tmp_path: Path) -> None:
    """The log said 'target stopped: target is full ...; trying it again in 60 min', then
    at once 'every target has stopped before its first pass; exiting', exit 1."""
    source, state, log = tmp_path / "export", tmp_path / "state", tmp_path / "m.log"
    source.mkdir()
    for i in range(20):
        (source / f"scan {i:02}.pdf").write_bytes(os.urandom(300_000))
    with tmpfs(tmp_path / "disk", "3m") as disk:
        proc = start("run", str(source), str(disk / "backup"), state=state, log=log)
        try:
            wait_for(lambda: "target stopped: target is full" in log.read_text(), timeout=30, what="the full disk")
            time.sleep(2)  # the exit came within a second
            assert proc.poll() is None, log.read_text()
            remount(disk, "16m")
            wait_for(lambda: hashes(disk / "backup") == hashes(source), timeout=120, what="the copy after")
        finally:
            output = stop(proc, log)
    assert "trying it again in 30 s" in output and "every target has stopped" not in output, output


@pytest.mark.timeout(180)
def test_a_target_filling_up_while_watching_gets_new_invoices_minutes_after_space_returns(tmp_path: Path) -> None:
    """Stopped 'trying it again in 60 min' (the rescan interval): space freed a minute
    later changed nothing, and new invoices stayed off the disk for up to an hour."""
    source, state, log = tmp_path / "export", tmp_path / "state", tmp_path / "m.log"
    source.mkdir()
    (source / "invoice 1.pdf").write_bytes(b"%PDF first")
    with tmpfs(tmp_path / "disk", "1m") as disk:
        proc = start("run", str(source), str(disk / "backup"), state=state, log=log)
        try:
            wait_for(lambda: landed(disk / "backup") == files(source), timeout=30, what="the first copy")
            (source / "scan.tif").write_bytes(os.urandom(1_500_000))
            wait_for(lambda: "target stopped: target is full" in log.read_text(), timeout=30, what="the full disk")
            remount(disk, "16m")
            (source / "invoice 2.pdf").write_bytes(b"%PDF after space came back")
            wait_for(lambda: hashes(disk / "backup") == hashes(source), timeout=120, what="the files after")
        finally:
            output = stop(proc, log)
    assert "trying it again in 30 s" in output, output


# -- 4: a state disk with no room at start is named as such -----------------------------------------
def _invoices(source: Path) -> None:
    source.mkdir()
    for i in range(20):
        (source / f"invoice {i:02}.pdf").write_bytes(b"%%PDF %d" % i)


@pytest.mark.timeout(120)
def test_a_full_state_disk_at_the_first_run_is_named_and_waited_for_in_watch_mode(tmp_path: Path) -> None:
    """It said 'internal error: OSError: [Errno 28] No space left on device (run with -v
    for details, and please report it)', naming no folder."""
    source, target, log = tmp_path / "export", tmp_path / "backup", tmp_path / "m.log"
    _invoices(source)
    with tmpfs(tmp_path / "state", "1m") as state:
        filler = fill(state)
        once = run("run", str(source), str(target), "--once", state=state)
        assert once.returncode == 1, once.stderr
        told = f"the disk holding mirror's state ({state / 'targets'}) {FULL_STATE} to a folder on another disk"
        assert once.stderr == f"mirror: error: {told}\n"
        proc = start("run", str(source), str(target), state=state, log=log)
        try:
            wait_for(lambda: "waiting for that" in log.read_text(), timeout=30, what="the wait to be told")
            filler.unlink(missing_ok=True)
            wait_for(lambda: files(target) == files(source), timeout=90, what="the copy once space is back")
        finally:
            stop(proc, log)


@pytest.mark.timeout(120)
def test_a_state_disk_full_at_start_raises_the_alert_and_then_the_recovery(tmp_path: Path) -> None:
    """A service started on a full state disk waited for space and said so in its log
    only: no on_failure call came, for as long as the disk stayed full, and nothing was
    mirrored meanwhile."""
    source, target, log, calls = tmp_path / "export", tmp_path / "backup", tmp_path / "m.log", tmp_path / "calls"
    _invoices(source)
    config = tmp_path / "m.toml"
    config.write_text(
        f"""
source = "{source}"
[defaults]
on_failure = 'printf "%s %s\\n" "$MIRROR_EVENT" "$MIRROR_REASON" >> "{calls}"'
alert_after = "1s"
[targets.disk]
url = "{target}"
"""
    )

    def told() -> list[str]:
        return calls.read_text().splitlines() if calls.exists() else []

    with tmpfs(tmp_path / "state", "1m") as state:
        filler = fill(state)
        proc = start("run", "-c", str(config), state=state, log=log)
        try:
            wait_for(lambda: len(told()) == 1, timeout=30, what="the alert", log=log)
            assert told()[0].startswith("failure ") and FULL_STATE in told()[0], told()
            filler.unlink(missing_ok=True)
            wait_for(lambda: len(told()) == 2, timeout=90, what="the recovery", log=log)
            assert told()[1].startswith("recovery "), told()
            assert files(target) == files(source)
        finally:
            output = stop(proc, log)
    assert output.count("cannot keep alert state") == 1, output  # the full disk, told once


@pytest.mark.timeout(120)
@pytest.mark.parametrize("inodes", [3, 4, 5])
def test_a_state_disk_out_of_inodes_is_named_as_such(tmp_path: Path, inodes: int) -> None:
    """Out of inodes, it said 'internal error ... please report it', or sent the user to
    check the folder's owner and permissions, which were fine."""
    source, target = tmp_path / "export", tmp_path / "backup"
    _invoices(source)
    with tmpfs(tmp_path / "state", f"4m,nr_inodes={inodes}") as state:  # size=4m,nr_inodes=...
        once = run("run", str(source), str(target), "--once", state=state)
    assert once.returncode == 1, once.stderr
    assert once.stderr == (
        f"mirror: error: the disk holding mirror's state ({state / 'targets'}) has no room for another file "
        "(out of inodes); delete files there, or set state_dir to a folder on another disk\n"
    )
