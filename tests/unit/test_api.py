"""The embedding API: a host builds a config in code, runs once or forever, reads status;
examples/embed.py (several folders, several targets, one process) really works."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mirror import api, engine, progress, watch
from mirror import status as status_mod
from mirror.errors import ConfigError
from mirror.index import Index
from mirror.runner import TargetRunner
from mirror.scan import LocalEntry
from mirror.wording import summarize
from tests.cli import files, run, wait_for
from tests.support import watching, written_on

EMBED = Path(__file__).resolve().parents[2] / "examples" / "embed.py"


class Recorder(api.Observer):
    def __init__(self) -> None:
        self.reports: list[api.Report] = []
        self.states: list[tuple[str, str]] = []

    def on_report(self, report: api.Report) -> None:
        self.reports.append(report)

    def on_state(self, target: str, state: str, error: str | None) -> None:
        self.states.append((target, state))


def setup(tmp_path: Path, rescan: float = 3600.0) -> tuple[api.Config, Path, Path]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"a" * 10)
    settings = api.TargetSettings(settle=0.1, rescan_interval=rescan)
    cfg = api.Config(
        source=src, targets=(api.TargetConfig("disk", str(dst), settings=settings),), state_dir=tmp_path / "s"
    )
    return cfg, src, dst


def test_run_once_then_status(tmp_path: Path) -> None:
    cfg, src, dst = setup(tmp_path)
    seen = Recorder()
    with api.running(cfg, observers=[seen]) as m:
        reports = m.run_once()
    assert [(r.target, r.uploaded, r.ok) for r in reports] == [("disk", 1, True)]
    assert files(dst) == files(src)
    assert seen.reports == reports and ("disk", "idle") in seen.states
    (status,) = api.status(cfg)
    assert (status.name, status.files, status.bytes, status.running, status.stale) == ("disk", 1, 10, False, False)
    assert status.last_complete_sync is not None and status.last_complete_sync > time.time() - 60


def test_a_pass_stopped_midway_leaves_the_target_incomplete_until_a_pass_ends(tmp_path: Path) -> None:
    """Ctrl-C or SIGTERM during a first copy: status must not call the half-filled
    target in sync, and the next run completes it."""
    cfg, src, dst = setup(tmp_path)
    for i in range(2000):
        (src / f"invoice {i:04}.pdf").write_bytes(b"%PDF")
    with api.running(cfg) as m:
        (runner,) = m.runners
        runner.on_done = lambda n: m.stop.set()
        (report,) = m.run_once()
    assert report.cut_short and 0 < report.uploaded < 2001
    assert report.ok and not report.in_sync  # as `mirror run --once` stopped so exits 1
    assert "stopped before the pass finished" in summarize(report)
    (status,) = api.status(cfg)
    assert status.incomplete and not status.in_sync and status.last_complete_sync is None
    shown = run("status", state=tmp_path / "s")
    assert shown.returncode == 1 and "incomplete: the last run ended before its pass finished" in shown.stdout
    # what is left only a running mirror knows: 'pending 0' read as nothing left
    assert "pending" not in shown.stdout, shown.stdout
    with api.running(cfg) as m:
        (report,) = m.run_once()
    assert not report.cut_short and files(dst) == files(src)
    (status,) = api.status(cfg)
    assert not status.incomplete and status.in_sync and status.last_complete_sync is not None
    assert run("status", state=tmp_path / "s").returncode == 0


def test_a_file_left_out_of_the_pass_is_not_in_sync_as_the_cli_exits_1_for_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A host checked its reports for "all mirrored" and was told so with an invoice whose
    name is not valid UTF-8 on no target, where `mirror run --once` exits 1."""
    caplog.set_level(logging.ERROR, "mirror")  # the warning's undecodable name cannot cross to pytest-xdist
    cfg, src, dst = setup(tmp_path)
    os.close(os.open(os.path.join(os.fsencode(src), b"inv-\xff.pdf"), os.O_CREAT | os.O_WRONLY, 0o644))
    seen = Recorder()
    with api.running(cfg, observers=[seen]) as m:
        (report,) = m.run_once()
    assert (report.ok, report.in_sync, report.left_out) == (True, False, 1)
    assert seen.reports == [report]
    assert run("run", str(src), str(tmp_path / "cli"), "--once", state=tmp_path / "cli-state").returncode == 1
    os.unlink(os.path.join(os.fsencode(src), b"inv-\xff.pdf"))
    with api.running(cfg) as m:
        (report,) = m.run_once()
    assert report.in_sync and report.left_out == 0 and files(dst) == files(src)


def test_a_second_mirror_of_a_target_in_one_host_is_told_it_is_this_process(tmp_path: Path) -> None:
    """A host that opened a target twice was told to stop "another mirror process (pid N)",
    N its own pid."""
    cfg, _, dst = setup(tmp_path)
    (tmp_path / "scans").mkdir()
    usb = api.TargetConfig("usb", str(dst))
    scans = api.Config(source=tmp_path / "scans", targets=(usb,), state_dir=cfg.state_dir)
    with api.running(cfg):
        for again, held in ((cfg, "target 'disk' is already"), (scans, f"{dst} is already")):
            with pytest.raises(ConfigError) as refused, api.running(again):
                pass
            told = str(refused.value)
            assert told.startswith(f"{held} being mirrored by another Mirror of this process (")
            assert told.endswith("); close that one first") and str(os.getpid()) not in told
    with api.running(scans) as m:
        assert m.run_once()[0].in_sync


def test_status_shows_the_pending_files_go_down_during_a_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service's only progress is `mirror status` and the mirror_pending metric: both
    must count down while a first copy runs, not show its total until it ends."""
    monkeypatch.setattr(progress, "WRITE_EVERY", 0.0)
    cfg, src, _ = setup(tmp_path)
    for i in range(3000):
        (src / f"invoice {i:04}.pdf").write_bytes(b"%PDF")
    seen: list[int] = []
    with api.running(cfg) as m:
        (runner,) = m.runners
        runner.on_done = lambda n: seen.append(api.status(cfg)[0].pending)
        m.run_once()
    assert seen[0] < 3001 and seen[-1] < 100 and seen == sorted(seen, reverse=True)
    assert api.status(cfg)[0].pending == 0


def test_a_first_copy_under_way_is_not_in_sync(tmp_path: Path) -> None:
    """A cron check during a first copy (hours, to a cloud) got exit 0, the code for
    'everything in sync', with a tenth of the files on the target."""
    cfg, src, _ = setup(tmp_path)
    for i in range(200):
        (src / f"invoice {i:04}.pdf").write_bytes(b"%PDF")
    seen: list[tuple[bool, bool]] = []
    with api.running(cfg) as m:
        (runner,) = m.runners
        runner.on_done = lambda n: seen.append((api.status(cfg)[0].running, api.status(cfg)[0].in_sync))
        m.run_once()
    assert seen and all(running and not in_sync for running, in_sync in seen)
    assert api.status(cfg)[0].in_sync
    shown = json.loads(run("status", "--json", state=tmp_path / "s").stdout)
    assert [(t["in_sync"], t["never_synced"]) for t in shown] == [(True, False)]


def test_requests_tried_again_for_over_a_minute_are_not_in_sync(tmp_path: Path) -> None:
    """A server that stops answering costs a timeout a try, minutes before the target
    counts as down: a cron check meanwhile got exit 0. A retry that gets through within
    a minute is no news."""
    cfg, src, _ = setup(tmp_path)
    (src / "invoice.pdf").write_bytes(b"%PDF")
    with api.running(cfg) as m:
        m.run_once()
        (runner,) = m.runners
        runner.note(retrying="s3: connection problem (ReadTimeoutError)", retrying_since=time.time() - 5)
        (brief,) = api.status(cfg)
        runner.note(retrying_since=time.time() - 90)
        (long,) = api.status(cfg)
    assert brief.in_sync and brief.retrying == "s3: connection problem (ReadTimeoutError)"
    assert not long.in_sync


def test_a_listing_recorded_while_the_clock_was_ahead_does_not_put_off_the_next(tmp_path: Path) -> None:
    """A clock a year ahead for one run (fixed later by NTP) must not stop the safety-net
    listing that finds copies gone from the target, for a year."""
    cfg, src, dst = setup(tmp_path)
    with api.running(cfg) as m:
        m.run_once()
        (runner,) = m.runners
        assert runner.index is not None
        runner.index.set_meta(last_listing=time.time() + 365 * 86400)
    (dst / "a.pdf").unlink()  # behind mirror's back
    with api.running(cfg) as m:
        m.run_once()
    assert files(dst) == files(src)


def test_run_forever_in_a_thread_rescans_while_idle(tmp_path: Path) -> None:
    """With nothing changing in the source, the rescan schedule still runs: a file removed
    from the target behind mirror's back comes back, and the last complete sync advances."""
    cfg, src, dst = setup(tmp_path, rescan=0.5)
    with api.running(cfg) as m:
        thread = threading.Thread(target=m.run_forever)
        thread.start()
        try:
            wait_for(lambda: files(dst) == files(src), what="the first copy")
            (first,) = api.status(cfg)
            assert first.running
            (dst / "a.pdf").unlink()
            wait_for(lambda: files(dst) == files(src), what="the rescan to restore the file")
            wait_for(
                lambda: (api.status(cfg)[0].last_complete_sync or 0) > (first.last_complete_sync or 0),
                what="a later complete sync",
            )
        finally:
            m.shutdown()
            thread.join(15)
    assert not thread.is_alive()


def test_a_file_that_keeps_changing_is_not_in_sync_while_watching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log in the source written every 20 ms is never sent: the log warned once, and
    status said in sync, exit 0, where a --once run exits 1."""
    monkeypatch.setattr(watch, "RESTLESS_AFTER", 0.5)
    cfg, src, dst = setup(tmp_path, rescan=3600)
    with watching(cfg):
        wait_for(lambda: files(dst) == files(src), what="the first copy")
        with written_on(src / "app.log", 0.02):
            wait_for(lambda: not api.status(cfg)[0].in_sync, what="status to tell the log not sent")
            assert api.status(cfg)[0].restless == 1
        wait_for(lambda: api.status(cfg)[0].in_sync, what="the log sent once it rests")


def test_a_mirror_stuck_is_not_taken_for_one_in_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process stopped, or its watch loop stuck (a hung mount, a deadlock): it held
    its lock, and status said running, idle, in sync, exit 0, for as long as it lasted,
    while new invoices were not sent."""
    monkeypatch.setattr(engine, "ALIVE_EVERY", 0.2)
    monkeypatch.setattr(status_mod, "SILENT_AFTER", 1.0)
    stuck, freed = threading.Event(), threading.Event()
    check_thread = TargetRunner.check_thread

    def held(runner: TargetRunner) -> None:
        if stuck.is_set():
            freed.wait(30)
        check_thread(runner)

    monkeypatch.setattr(TargetRunner, "check_thread", held)
    cfg, src, dst = setup(tmp_path, rescan=3600)
    try:
        with watching(cfg):
            wait_for(lambda: files(dst) == files(src), what="the first copy")
            time.sleep(1.5)
            assert api.status(cfg)[0].in_sync  # said alive all along
            stuck.set()
            wait_for(lambda: not api.status(cfg)[0].in_sync, what="status to tell the mirror stuck")
            assert api.status(cfg)[0].silent
            stuck.clear()
            freed.set()
            wait_for(lambda: api.status(cfg)[0].in_sync, what="status once it goes on")
    finally:
        freed.set()


def test_a_start_is_not_taken_for_a_mirror_stuck_by_the_last_run_s_word(tmp_path: Path) -> None:
    """The last run's word that it was alive, hours old, stood for the new run's until its
    watch loop turned, minutes on where a large source's watches take long to set up."""
    cfg, _, _ = setup(tmp_path, rescan=3600)
    with watching(cfg):
        wait_for(lambda: api.status(cfg)[0].alive is not None, what="the watch loop's word")
    (found,) = api.status(cfg)
    index = Index(Path(found.index))
    try:
        index.set_meta(alive=time.time() - 3600)
    finally:
        index.close()
    with api.running(cfg):  # opened, its watch loop not started
        assert not api.status(cfg)[0].silent


def test_a_runner_stuck_past_the_stop_says_nothing_of_failing_when_it_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload gave up waiting for an upload stuck on a hung server and closed the
    index; the upload's thread went on into it: "cannot use the index (Cannot operate on
    a closed database)", and the target told as failing, an alert due for a target that
    was fine."""
    from mirror.backends.local import LocalDriver

    entered, freed = threading.Event(), threading.Event()
    write = LocalDriver._write

    def stuck(driver: LocalDriver, *args: Any, **kwargs: Any) -> None:
        entered.set()
        freed.wait(30)
        write(driver, *args, **kwargs)

    monkeypatch.setattr(LocalDriver, "_write", stuck)
    cfg, _, _ = setup(tmp_path, rescan=3600)
    seen = Recorder()
    with api.running(cfg, observers=[seen]) as m:
        thread = threading.Thread(target=m.run_forever, daemon=True)
        thread.start()
        entered.wait(15)
        assert not m.shutdown(timeout=0.5)
    failing = len([s for s in seen.states if s[1] in ("failing", "failed")])
    freed.set()
    thread.join(15)
    time.sleep(1)  # the runner's thread, on after the stop
    assert len([s for s in seen.states if s[1] in ("failing", "failed")]) == failing, seen.states


def test_a_large_file_sent_within_the_stop_s_wait_is_not_told_as_not_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGTERM while a large file went out on its own: the log said 'stopped with 1
    change(s) not yet sent; the next run sends them', then '1 sent' as the stop's wait
    let the upload finish."""
    from mirror.backends.local import LocalDriver

    entered = threading.Event()
    write = LocalDriver._write

    def slow(driver: LocalDriver, *args: Any, **kwargs: Any) -> None:
        entered.set()
        time.sleep(1)  # well within the stop's wait (STOP_WAIT, 5 s)
        write(driver, *args, **kwargs)

    cfg, src, dst = setup(tmp_path, rescan=3600)
    with watching(cfg):
        wait_for(lambda: files(dst) == files(src), what="the first copy")
        monkeypatch.setattr(LocalDriver, "_write", slow)
        (src / "scan.tif").write_bytes(b"s" * (3 * 1024 * 1024))  # large: on its own (bulk lane)
        assert entered.wait(15)
    assert files(dst)["scan.tif"] == b"s" * (3 * 1024 * 1024)
    assert "not yet sent" not in caplog.text, caplog.text


HOST = """
import sys
from pathlib import Path
from mirror import api

base = Path(sys.argv[1])
cfg = api.Config(source=base / "src", targets=(api.TargetConfig("disk", str(base / "dst")),), state_dir=base / "s")
try:
    with api.running(cfg) as m:
        print("running", flush=True)
        m.run_forever()
except KeyboardInterrupt:
    print("host: stopped by Ctrl-C", flush=True)
"""


def test_ctrl_c_ends_run_forever_in_the_host_s_main_thread(tmp_path: Path) -> None:
    """A host that ran m.run_forever() in its main thread could not be stopped by Ctrl-C:
    each one ended the watcher only, a new one started, and the host ran on for good."""
    cfg, src, dst = setup(tmp_path)
    host = subprocess.Popen(
        [sys.executable, "-c", HOST, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: files(dst) == files(src), what="the first copy")
        host.send_signal(signal.SIGINT)
        out, err = host.communicate(timeout=15)
    finally:
        host.kill()
    assert out == "running\nhost: stopped by Ctrl-C\n", err
    (status,) = api.status(cfg)
    assert not status.running and status.in_sync


class Blocks(api.Observer):
    """A host's observer that posts each report to a dashboard that stopped answering."""

    def __init__(self) -> None:
        self.answer = threading.Event()

    def on_report(self, report: api.Report) -> None:
        self.answer.wait(30)


class Exits(api.Observer):
    """A host's observer that calls sys.exit() on the first report."""

    def __init__(self) -> None:
        self.exited = False

    def on_report(self, report: api.Report) -> None:
        if not self.exited:
            self.exited = True
            sys.exit(3)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the SystemExit, on purpose
def test_an_observer_that_blocks_or_exits_is_named_not_an_upload_or_the_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A host's observer that never returned was told as "an upload still running (a large
    file, or a link that hangs)", one that called sys.exit() as "its thread ended
    unexpectedly (out of memory?)"; neither message named the observer."""
    cfg, src, dst = setup(tmp_path)
    blocks = Blocks()
    m = api.Mirror(cfg, observers=[blocks])
    m.open()
    thread = threading.Thread(target=m.run_forever)
    thread.start()
    try:
        wait_for(lambda: files(dst) == files(src), what="the first copy")
        clean = m.shutdown(0.5)
        m.close(clean)
    finally:
        blocks.answer.set()
        thread.join(15)
    assert not clean
    assert "stopped with observer Blocks in on_report still running" in caplog.text
    assert "upload" not in caplog.text

    caplog.clear()
    with api.running(cfg, observers=[Exits()]) as m:
        thread = threading.Thread(target=m.run_forever)
        thread.start()
        try:
            wait_for(lambda: "started it again" in caplog.text, what="the watchdog")
        finally:
            m.shutdown()
            thread.join(15)
    assert "its thread ended in observer Exits in on_report (observers must never raise, nor exit)" in caplog.text
    assert "out of memory" not in caplog.text


class WallClock:
    """``time.time`` off by ``offset`` seconds, ``time.monotonic`` untouched: a machine
    that slept (the monotonic clock stands still meanwhile), or a clock set back."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = 0.0
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + self.offset)


def full_passes(reports: list[api.Report]) -> list[api.Report]:
    return [r for r in reports if r.kind == "full"]


def test_run_forever_rescans_at_once_after_a_suspend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a night suspended, a running, idle mirror in sync was reported OLDER THAN
    EXPECTED (status exit 1, mirror_in_sync 0) for an hour of awake time, and a target
    emptied overnight (a NAS restarted) was not looked at: the hourly pass was timed by
    the monotonic clock, which stands still while the machine sleeps."""
    cfg, src, dst = setup(tmp_path)
    wall = WallClock(monkeypatch)
    with watching(cfg):
        wait_for(lambda: api.status(cfg)[0].in_sync, what="the first copy")
        (dst / "a.pdf").unlink()
        wall.offset = 8 * 3600.0
        wait_for(lambda: files(dst) == files(src), what="the pass after the resume")
        wait_for(lambda: api.status(cfg)[0].in_sync, what="status to say in sync again")


def test_a_wall_clock_set_back_neither_holds_off_the_rescans_nor_runs_them_on_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rescan goes by the wall clock too, since a suspend: set back a day (NTP, a VM
    resumed), it must neither wait a day for the next listing nor list on every tick."""
    rescan = 1.0
    cfg, src, dst = setup(tmp_path, rescan=rescan)
    wall = WallClock(monkeypatch)
    seen = Recorder()
    with watching(cfg, [seen]):
        wait_for(lambda: files(dst) == files(src), what="the first copy")
        set_back, before = time.monotonic(), len(seen.reports)
        wall.offset = -86400.0
        (dst / "a.pdf").unlink()
        wait_for(lambda: files(dst) == files(src), what="the rescan by the monotonic clock")
        wait_for(lambda: len(full_passes(seen.reports[before:])) >= 3, what="two more rescans")
    # one a rescan_interval, and one that may have been under way at the set-back
    assert len(full_passes(seen.reports[before:])) <= (time.monotonic() - set_back) / rescan + 2


def test_an_error_no_one_classified_shows_in_status_until_a_pass_gets_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug, or a backend's error it failed to classify, in watch mode: the log said
    'unexpected error; will rescan' every few seconds, status said nothing and exited 0."""
    cfg, src, dst = setup(tmp_path)
    broken = threading.Event()
    broken.set()
    pass_ = TargetRunner.pass_

    def failing_pass(self: TargetRunner, *args: Any, **kwargs: Any) -> api.Report:
        if broken.is_set():
            raise RuntimeError("HTTP Error: 503")
        return pass_(self, *args, **kwargs)

    monkeypatch.setattr(TargetRunner, "pass_", failing_pass)
    with api.running(cfg) as m:
        thread = threading.Thread(target=m.run_forever)
        thread.start()
        try:
            wait_for(lambda: api.status(cfg)[0].last_error is not None, what="status to tell of the error")
            (status,) = api.status(cfg)
            assert status.last_error == "internal error: RuntimeError: HTTP Error: 503"
            assert status.state == "failing" and not status.in_sync
            broken.clear()
            wait_for(lambda: api.status(cfg)[0].in_sync, what="the retried pass to clear it")
            assert files(dst) == files(src)
        finally:
            m.shutdown()
            thread.join(15)


def test_status_flags_a_target_whose_last_sync_is_too_old(tmp_path: Path) -> None:
    cfg, _, _ = setup(tmp_path, rescan=0.2)
    with api.running(cfg) as m:
        m.run_once()
    assert not api.status(cfg)[0].stale
    time.sleep(0.5)  # two rescan intervals pass without a complete sync
    (status,) = api.status(cfg)
    assert status.stale and status.expected_every == 0.4


def embed_once(base: Path, state: Path) -> subprocess.CompletedProcess[str]:
    """``python examples/embed.py BASE --once``, to its end."""
    env = {**os.environ, "MIRROR_STATE_DIR": str(state)}
    command = [sys.executable, str(EMBED), str(base), "--once"]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)


def stopped(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGTERM to a watching ``examples/embed.py``, and its output once it has ended;
    killed if it has not within 15 s, so that a failing test leaves no mirror running."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise


def test_the_embedding_example_mirrors_two_folders_in_one_process(tmp_path: Path) -> None:
    for folder in ("invoices", "scans"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / f"{folder}-1.pdf").write_bytes(folder.encode())
    env = {**os.environ, "MIRROR_STATE_DIR": str(tmp_path / "state")}
    done = embed_once(tmp_path, tmp_path / "state")
    assert done.returncode == 0, done.stderr
    assert files(tmp_path / "backup") == {"invoices/invoices-1.pdf": b"invoices", "scans/scans-1.pdf": b"scans"}
    assert "status invoices-memory: 1 files" in done.stdout

    proc = subprocess.Popen(
        [sys.executable, str(EMBED), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        time.sleep(0.5)  # let the watchers start; a file written before is found by the first pass anyway
        (tmp_path / "scans" / "scans-2.pdf").write_bytes(b"two")
        wait_for(lambda: files(tmp_path / "backup" / "scans").get("scans-2.pdf") == b"two", what="a live change")
    finally:
        out, err = stopped(proc)
    assert proc.returncode == 0, out + err
    assert "status scans-disk: 2 files" in out


def test_the_embedding_example_mirrors_every_folder_when_a_target_fails_and_says_so(tmp_path: Path) -> None:
    """A file where the invoices' backup folder should be: with --once the scans were never
    mirrored (all() stopped at the first target not in sync), and watch mode exited 0."""
    for folder in ("invoices", "scans", "backup"):
        (tmp_path / folder).mkdir()
    (tmp_path / "scans" / "scan-1.pdf").write_bytes(b"scan")
    (tmp_path / "backup" / "invoices").write_bytes(b"in the way")
    state = tmp_path / "state"
    done = embed_once(tmp_path, state)
    assert done.returncode == 1, done.stderr
    assert files(tmp_path / "backup" / "scans") == {"scan-1.pdf": b"scan"}
    assert "status invoices-disk: 0 files, 0 bytes, 0 failed, not in sync: the target " in done.stdout
    assert "is a file, not a folder" in done.stdout.split("status invoices-disk")[1].splitlines()[0]

    disk = api.TargetConfig("invoices-disk", str(tmp_path / "backup" / "invoices"))
    invoices = api.Config(source=tmp_path / "invoices", targets=(disk,), state_dir=state)
    shutil.rmtree(state)
    env = {**os.environ, "MIRROR_STATE_DIR": str(state)}
    command = [sys.executable, str(EMBED), str(tmp_path)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for(lambda: api.status(invoices)[0].last_error is not None, what="the target's failure")
        # stopped while its mirrors open, it ends before any pass, and says "never run":
        # a live change going through tells that watch mode is under way
        (tmp_path / "scans" / "scan-2.pdf").write_bytes(b"two")
        wait_for(lambda: files(tmp_path / "backup" / "scans").get("scan-2.pdf") == b"two", what="a live change")
    finally:
        out, err = stopped(proc)
    assert proc.returncode == 1, err
    assert "status invoices-disk: 0 files, 0 bytes, 0 failed, not in sync: the target " in out


def test_the_embedding_example_starts_on_a_new_folder_and_tells_a_mistake_in_one_line(tmp_path: Path) -> None:
    """Run as its docstring says on a new BASE, the example ended in a 23-line traceback."""
    base, state = tmp_path / "new", tmp_path / "state"

    first = embed_once(base, state)
    assert first.returncode == 0, first.stderr
    assert "scans-disk: 0 sent, 0 deleted, in sync" in first.stdout
    assert (base / "invoices").is_dir() and (base / "scans").is_dir()
    scans = api.TargetConfig("scans-disk", str(base / "backup" / "scans"))
    with api.running(api.Config(source=base / "scans", targets=(scans,), state_dir=state)):
        busy = embed_once(base, state)
    assert busy.returncode == 2 and busy.stderr.count("\n") == 1, busy.stderr
    assert busy.stderr.startswith("embed.py: error: ") and "is already being mirrored" in busy.stderr


def test_status_of_a_url_with_an_unset_variable_finds_that_target_s_index_not_a_namesake(tmp_path: Path) -> None:
    """'usb' must not be read from the index of 'usb-backup', mirrored later from the same source."""
    cfg, src, dst = setup(tmp_path)
    settings = cfg.targets[0].settings
    targets = (api.TargetConfig("usb", str(dst), settings=settings),)
    targets += (api.TargetConfig("usb-backup", str(tmp_path / "other"), settings=settings),)
    (src / "b.pdf").write_bytes(b"b")
    with api.running(dataclasses.replace(cfg, targets=targets[:1])) as m:
        m.run_once()
    (src / "b.pdf").unlink()
    with api.running(dataclasses.replace(cfg, targets=targets[1:])) as m:
        m.run_once()
    unresolved = dataclasses.replace(cfg, targets=(api.TargetConfig("usb", "${MIRROR_TEST_UNSET}/x"),))
    (shown,) = api.status(unresolved)
    assert (shown.name, shown.files) == ("usb", 2)


def test_a_url_with_a_slash_missing_is_refused(tmp_path: Path) -> None:
    """A host's settings UI took 'nextcloud:/Invoices': files went to a local folder 'nextcloud:'."""
    cfg, _, _ = setup(tmp_path)
    typo = dataclasses.replace(cfg, targets=(api.TargetConfig("cloud", "nextcloud:/Invoices"),))
    with pytest.raises(ConfigError, match="a URL with a slash missing: write nextcloud://Invoices "):
        api.status(typo)


def test_two_targets_of_one_name_are_refused(tmp_path: Path) -> None:
    """A settings UI gave two targets the name "backup": run_once returned one report
    twice, so the target that got none of the files read as ok."""
    cfg, _, dst = setup(tmp_path)
    twice = dataclasses.replace(cfg, targets=(*cfg.targets, api.TargetConfig("disk", str(tmp_path / "other"))))
    why = "target 'disk': two targets have this name; give each target a name of its own"
    with pytest.raises(ConfigError, match=why), api.running(twice) as m:
        m.run_once()
    with pytest.raises(ConfigError, match=why):
        api.status(twice)
    assert not dst.exists() and not (tmp_path / "other").exists()


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        (lambda c, t: dataclasses.replace(c, source=str(c.source)), "source: expected a pathlib.Path"),
        (lambda c, t: dataclasses.replace(c, state_dir=str(c.state_dir)), "state_dir: expected a pathlib.Path"),
        (lambda c, t: dataclasses.replace(c, targets=()), "targets: expected a tuple of at least one"),
        (lambda c, t: dataclasses.replace(c, targets=(dataclasses.replace(t, name="../../x"),)), "names may use"),
        (lambda c, t: dataclasses.replace(c, targets=(dataclasses.replace(t, name="a/b c"),)), "names may use"),
        (lambda c, t: dataclasses.replace(c, targets=(dataclasses.replace(t, url=""),)), "url: expected a path"),
        (
            lambda c, t: dataclasses.replace(
                c,
                targets=(dataclasses.replace(t, settings=api.TargetSettings(settle="2s")),),  # type: ignore[arg-type]
            ),
            "settle: expected seconds as a number >= 0, got '2s'",
        ),
        (
            lambda c, t: dataclasses.replace(
                c, targets=(dataclasses.replace(t, settings=api.TargetSettings(settle=-1)),)
            ),
            "settle: expected seconds",
        ),
        (
            lambda c, t: dataclasses.replace(
                c, targets=(dataclasses.replace(t, settings=api.TargetSettings(concurrency=0)),)
            ),
            "concurrency: expected a whole number >= 1, got 0",
        ),
    ],
)
def test_a_config_built_in_code_is_checked_as_a_config_file_is(tmp_path: Path, mistake: Any, message: str) -> None:
    """Mistakes surfaced as AttributeError, TypeError or ValueError from deep inside, or
    passed: no targets read as in sync, and a target named ../../x wrote its index
    outside the state folder."""
    cfg, _, _ = setup(tmp_path)
    bad = mistake(cfg, cfg.targets[0])
    with pytest.raises(ConfigError, match=re.escape(message)) as refused, api.running(bad) as m:
        m.run_once()
    assert "\n" not in str(refused.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_one_metrics_for_two_mirrors_refuses_a_target_name_both_have(tmp_path: Path) -> None:
    """Two configs with a target 'usb' each, one api.Metrics attached to both: /metrics
    served 11 series twice with the same labels, and Prometheus kept the in-sync one,
    hiding the failing target's mirror_in_sync 0."""
    for folder in ("invoices", "scans"):
        (tmp_path / folder).mkdir()
    invoices, _, _ = setup(tmp_path / "invoices")
    scans, _, _ = setup(tmp_path / "scans")
    usb = [
        dataclasses.replace(c, targets=(dataclasses.replace(c.targets[0], name="usb"),)) for c in (invoices, scans)
    ]
    metrics = api.Metrics()
    with api.running(usb[0]) as first:
        metrics.attach(first)
        with api.running(usb[1]) as second, pytest.raises(ConfigError) as refused:
            metrics.attach(second)
    assert str(refused.value) == (
        f"metrics: target 'usb' of {scans.source} has the name of a target of {invoices.source}, attached before; "
        "give each target of one api.Metrics a name of its own"
    )
    with api.running(usb[1]) as again:  # the first one closed, as on a reload
        metrics.attach(again)


def test_metrics_count_files_sent_as_they_land_not_when_the_pass_ends(tmp_path: Path) -> None:
    """A first copy of 100,000 files showed mirror_uploads_total 0 while 94,900 were on
    the target: the counters grew from the pass's report only, and graphed it as stalled."""
    cfg, src, _ = setup(tmp_path)
    (src / "a.pdf").unlink()
    for name in ("scan 1.pdf", "scan 2.pdf"):
        (src / name).write_bytes(os.urandom(3 << 20))  # large: each one goes alone
    cfg = dataclasses.replace(
        cfg,
        targets=tuple(
            dataclasses.replace(t, settings=dataclasses.replace(t.settings, concurrency=1)) for t in cfg.targets
        ),
    )
    metrics = api.Metrics()
    counted: list[tuple[float, float]] = []

    class Sampler(api.Observer):
        def on_transfer(self, target: str, size: int, seconds: float) -> None:
            sample = {
                s.name: s.value for f in metrics.registry.collect() for s in f.samples if not s.labels.get("kind")
            }
            counted.append((sample["mirror_uploads_total"], sample["mirror_uploaded_bytes_total"]))

    with api.running(cfg, observers=[metrics, Sampler()]) as m:
        metrics.attach(m)
        (report,) = m.run_once()
    assert report.uploaded == 2
    assert counted == [(0, 0), (1, 3 << 20)]  # each seen as the next one lands


def test_changes_handed_to_a_target_count_as_pending_before_a_pass_plans_them(tmp_path: Path) -> None:
    """4,000 new files handed on by the watcher on a large source: status and metrics said
    "idle, pending 0" (in sync) for seconds, until the pass that took them had planned,
    and again between two passes of one burst."""
    cfg, _, _ = setup(tmp_path)
    with api.running(cfg) as m:
        m.run_once()
        (runner,) = m.runners
        assert runner.index is not None
        new = {f"scan {i}.pdf": LocalEntry(f"scan {i}.pdf", 10, 1, i + 10) for i in range(3)}
        runner.submit(new)
        assert (runner.index.get_meta("state"), runner.index.get_meta("pending")) == ("syncing", "3")
