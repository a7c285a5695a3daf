"""A source folder that cannot be read is not a deletion: its copies stay on the target.

Permissions changed by a program, a backup tool or an admin, or a network share answering
"permission denied" for a while, must never empty the mirror of that folder. Root reads
everything, so mirror runs in a user namespace of its own (``unshare --user``), where it
keeps its user id but loses the power to override permissions.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import MIRROR, files, run, wait_for
from tests.reliability.common import landed

TREE = {"2025/a.pdf": b"a", "2025/b.pdf": b"b", "2026/c.pdf": b"c", "2026/d.pdf": b"d", "e.pdf": b"e"}


@pytest.fixture
def mirrored(tmp_path: Path) -> Iterator[tuple[Path, Path, dict[str, str]]]:
    """A source whose first copy is done, and the environment of later runs."""
    source, target, state = tmp_path / "export", tmp_path / "backup", tmp_path / "state"
    for rel, data in TREE.items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_bytes(data)
    probe = source / "2025" / "a.pdf"
    probe.chmod(0o000)
    check = subprocess.run(["unshare", "--user", "cat", str(probe)], capture_output=True, check=False)
    probe.chmod(0o644)
    if check.returncode == 0 or b"Permission denied" not in check.stderr:
        pytest.skip("cannot run a process that file permissions apply to")
    first = run("run", str(source), str(target), "--once", state=state)
    assert first.returncode == 0, first.stderr
    assert landed(target) == TREE
    try:
        yield source, target, {**os.environ, "MIRROR_STATE_DIR": str(state)}
    finally:
        (source / "2025").chmod(0o755)


def once(source: Path, target: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["unshare", "--user", *MIRROR, "run", str(source), str(target), "--once"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


@contextlib.contextmanager
def watching(source: Path, target: Path, env: dict[str, str], log: Path) -> Iterator[None]:
    """``mirror run`` in watch mode, permissions applying, for the ``with`` block; then a
    clean stop with exit 0 and no traceback in ``log``."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["unshare", "--user", *MIRROR, "run", str(source), str(target)],
            stdout=out, stderr=subprocess.STDOUT, text=True, env=env, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
    output = log.read_text()
    assert code == 0, output
    assert "Traceback" not in output, output


def test_an_unreadable_folder_keeps_its_copies_until_it_can_be_read(
    mirrored: tuple[Path, Path, dict[str, str]],
) -> None:
    source, target, env = mirrored
    (source / "2025").chmod(0o000)
    (source / "2026" / "d.pdf").unlink()  # a real deletion next to it still goes through
    result = once(source, target, env)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert landed(target) == {k: v for k, v in TREE.items() if k != "2026/d.pdf"}, output
    assert "2025: folder cannot be read (Permission denied); its copies on the targets stay" in output
    assert result.returncode == 1, output  # not "in sync": a run from cron must tell

    (source / "2025").chmod(0o755)
    (source / "2025" / "b.pdf").unlink()
    again = once(source, target, env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert landed(target) == {"2025/a.pdf": b"a", "2026/c.pdf": b"c", "e.pdf": b"e"}


def test_an_unlisted_but_searchable_folder_keeps_its_copies(mirrored: tuple[Path, Path, dict[str, str]]) -> None:
    """Execute without read permission: names cannot be listed, yet each file can be stat'ed."""
    source, target, env = mirrored
    (source / "2025").chmod(0o100)
    result = once(source, target, env)
    assert landed(target) == TREE, result.stdout + result.stderr


def test_a_folder_turning_unreadable_in_watch_mode_keeps_its_copies_and_is_told(
    mirrored: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    """Its copies stay; and the log and status say it cannot be read: status said in
    sync (exit 0) while files written into it by another user never arrived."""
    source, target, env = mirrored
    log = tmp_path / "watch.log"
    with watching(source, target, env, log):
        (source / "late.pdf").write_bytes(b"late")
        wait_for(lambda: files(target).get("late.pdf") == b"late", what="the watcher's first change")
        (source / "2025").chmod(0o000)
        (source / "later.pdf").write_bytes(b"later")
        wait_for(lambda: files(target).get("later.pdf") == b"later", what="a change after the chmod")
        # the chmod's event was handled in the same or an earlier batch than the new file
        assert landed(target) == {**TREE, "late.pdf": b"late", "later.pdf": b"later"}, log.read_text()
        wait_for(lambda: "skipped 2025: folder cannot be read" in log.read_text(), what="the warning", log=log)
        status = subprocess.run(
            [*MIRROR, "status", str(source), str(target)],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        assert status.returncode == 1 and "left out: 1" in status.stdout, status.stdout


def test_verify_does_not_call_files_in_an_unreadable_folder_removed(
    mirrored: tuple[Path, Path, dict[str, str]],
) -> None:
    source, target, env = mirrored
    (source / "2025").chmod(0o000)
    result = subprocess.run(
        ["unshare", "--user", *MIRROR, "verify", str(source), str(target)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "removed from the source" not in output, output
    assert "2025/a.pdf: cannot be read in the source, so it was not compared" in output, output


@pytest.mark.parametrize("mode", [0o000, 0o444], ids=["unreadable", "not-searchable"])
def test_a_folder_readable_again_in_watch_mode_is_watched_again(
    mirrored: tuple[Path, Path, dict[str, str]], tmp_path: Path, mode: int
) -> None:
    """inotify adds no watch to a folder that becomes readable: a file written into it
    later stayed off the target, with status still naming it 'left out', until the
    hourly rescan. A folder whose names could be read, but not its files (chmod 444),
    was left out for good too: its files, not it, were the ones that could not be read."""
    source, target, env = mirrored
    (source / "2025").chmod(mode)
    log = tmp_path / "watch.log"
    with watching(source, target, env, log):
        wait_for(lambda: "cannot be read" in log.read_text(), what="the unreadable folder told")
        (source / "2025").chmod(0o755)
        (source / "seen.pdf").write_bytes(b"seen")  # lands after the chmod's event is handled
        wait_for(lambda: files(target).get("seen.pdf") == b"seen", what="a change after the chmod")
        (source / "2025" / "new.pdf").write_bytes(b"new")
        (source / "2025" / "a.pdf").write_bytes(b"a, corrected")
        wait_for(
            lambda: files(target).get("2025/new.pdf") == b"new" and files(target)["2025/a.pdf"] == b"a, corrected",
            what="changes inside the folder that became readable",
        )
        status = subprocess.run(
            [*MIRROR, "status", str(source), str(target)],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        assert "left out" not in status.stdout, status.stdout


def test_an_unreadable_folder_at_the_start_leaves_no_other_folder_unwatched(
    mirrored: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    """A service whose source is a disk's root, where lost+found cannot be read: inotify's
    walk of the source stopped at it, the folders after it got no watch, and their new
    files never arrived (until the hourly rescan) while status said running, idle."""
    source, target, env = mirrored
    for i in range(20):
        (source / f"dir{i:02d}" / "sub").mkdir(parents=True)
    (source / "lost+found").mkdir(mode=0o000)
    log = tmp_path / "watch.log"
    try:
        with watching(source, target, env, log):
            wait_for(lambda: "cannot be read" in log.read_text(), what="the unreadable folder told", log=log)
            time.sleep(1.0)  # the watch is set up (or falls back) meanwhile
            for i in range(20):
                (source / f"dir{i:02d}" / "sub" / "new.pdf").write_bytes(b"%d" % i)
            wait_for(
                lambda: all(files(target).get(f"dir{i:02d}/sub/new.pdf") == b"%d" % i for i in range(20)),
                what="a file in each folder",
                log=log,
            )
            (source / "2027" / "q1").mkdir(parents=True)  # a folder made later is watched too
            (source / "2027" / "q1" / "inv.pdf").write_bytes(b"q1")
            wait_for(lambda: files(target).get("2027/q1/inv.pdf") == b"q1", what="a file in a new folder", log=log)
            (source / "2027" / "q1" / "inv.pdf").write_bytes(b"q1, corrected")
            wait_for(lambda: files(target)["2027/q1/inv.pdf"] == b"q1, corrected", what="its edit", log=log)
    finally:
        (source / "lost+found").chmod(0o755)


def test_a_file_that_failed_while_the_source_folder_was_unreadable_is_sent_once_it_is_readable(
    mirrored: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    """chmod 311 on the source folder for a moment (a umask, an admin) while a file was
    written: it failed as "cannot read the source file", and once the folder could be
    read again nothing sent it while nothing else changed (up to the hourly rescan)."""
    source, target, env = mirrored
    log = tmp_path / "watch.log"
    try:
        with watching(source, target, env, log):
            (source / "late.pdf").write_bytes(b"late")
            wait_for(lambda: files(target).get("late.pdf") == b"late", what="the watcher's first change", log=log)
            source.chmod(0o311)
            (source / "new.pdf").write_bytes(b"new")
            wait_for(lambda: "new.pdf: cannot read" in log.read_text(), what="the file's failure", log=log)
            source.chmod(0o755)
            wait_for(lambda: files(target).get("new.pdf") == b"new", what="the file, once readable", log=log)
    finally:
        source.chmod(0o755)


def test_a_folder_the_patterns_leave_out_is_no_problem_unread(
    mirrored: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    """A source at a disk's root holds lost+found, which the user excluded: unreadable to
    mirror, it still kept run, status and verify at exit 1 for good, as 'could not be read'."""
    source, _, env = mirrored
    (source / "lost+found").mkdir()
    (source / "lost+found" / "#1234").write_bytes(b"fsck's")
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'source = "{source}"\n[targets.usb]\nurl = "{tmp_path / "usb"}"\nexclude = ["lost+found/"]\n')
    (source / "lost+found").chmod(0o000)
    try:
        for command in (["run", "-c", str(cfg), "--once"], ["status", "-c", str(cfg)], ["verify", "-c", str(cfg)]):
            done = subprocess.run(
                ["unshare", "--user", *MIRROR, *command],
                capture_output=True, text=True, env=env, timeout=60, check=False,
            )  # fmt: skip
            assert done.returncode == 0, (command, done.stdout + done.stderr)
    finally:
        (source / "lost+found").chmod(0o755)
    assert files(tmp_path / "usb") == TREE
