"""Faults around a running mirror: full targets, vanishing sources, busy files, watch limits.

Everything runs the real ``mirror`` command as a subprocess against real folders, a real
tmpfs (as root; skipped with the reason otherwise) and the Dropbox fake. Each test says
what a user would see: exit codes, messages, and the files on the target.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirror.held import SETTLE_S
from mirror.runner import ASKS_AT_MOST
from tests.cli import MIRROR, files, run, start, wait_for
from tests.reliability.common import bind, hashes, landed, sftp_options, temp_files, write_config
from tests.servers.dropbox import DropboxServer
from tests.servers.sshd import SshServer
from tests.servers.webdav import start_webdav


@contextlib.contextmanager
def tmpfs(where: Path, size: str, inodes: int | None = None) -> Iterator[Path]:
    """A small tmpfs at ``where`` (with room for ``inodes`` files and folders, if given);
    skips the test when mounting is not permitted here."""
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (f",nr_inodes={inodes}" if inodes else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def remount(where: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], check=True, timeout=30)


def stop(proc: subprocess.Popen[str], log: Path) -> str:
    """SIGTERM, as systemd does; mirror must exit 0. Returns the log."""
    proc.terminate()
    code = proc.wait(30)
    text = log.read_text()
    assert code == 0, text[-3000:]
    return text


def _state(config: Path, state: Path) -> str:
    """What status says the only target of ``config`` is doing (syncing, idle, ...)."""
    shown = run("status", "-c", str(config), "--json", state=state)
    return str(json.loads(shown.stdout)[0]["state"])


def _invoices(source: Path, count: int) -> dict[str, bytes]:
    """A new source folder holding ``count`` invoices; returns them by path."""
    source.mkdir()
    contents = {f"invoice {i}.pdf": os.urandom(1000) for i in range(count)}
    for rel, blob in contents.items():
        (source / rel).write_bytes(blob)
    return contents


# -- target full ------------------------------------------------------------------------------
def test_a_file_larger_than_the_free_space_fails_alone(tmp_path: Path) -> None:
    """A 3 MB scan for a stick with 2 MB free stopped the whole target as 'target is full'
    (the stick 1 % used), and the invoices behind it never got there."""
    source, state = tmp_path / "export", tmp_path / "state"
    source.mkdir()
    (source / "scan.tif").write_bytes(os.urandom(3_000_000))
    for i in range(3):
        (source / f"invoice {i}.pdf").write_bytes(b"PDF %d" % i)
    with tmpfs(tmp_path / "stick", "2m") as stick:
        result = run("run", str(source), str(stick / "backup"), "--once", state=state)
        assert result.returncode == 1 and "target is full" not in result.stderr, result.stderr
        assert "failed: scan.tif: the file (3.0 MB) is larger than the free space on the target" in result.stderr
        assert sorted(hashes(stick / "backup")) == [f"invoice {i}.pdf" for i in range(3)]
        assert temp_files(stick / "backup") == []


@contextlib.contextmanager
def write_protected(folder: Path) -> Iterator[None]:
    """``folder`` refusing writes: immutable as root (EPERM), read-only otherwise (EACCES)."""
    if os.geteuid() == 0:
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot make a folder immutable here ({done.stderr.decode().strip()})")
        undo = ["chattr", "-i", str(folder)]
    else:
        folder.chmod(0o555)
        undo = ["chmod", "755", str(folder)]
    try:
        yield
    finally:
        subprocess.run(undo, capture_output=True, check=False)


def test_a_target_folder_refusing_writes_is_named_with_how_to_fix_it(tmp_path: Path) -> None:
    """An immutable folder on the target failed its files with "PermissionError: [Errno 1]
    Operation not permitted: '.../sub/.~mirror-51250e6eb120.tmp'", naming a temp file and
    no fix, in the log and in status."""
    source, state, target = tmp_path / "export", tmp_path / "state", tmp_path / "backup"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "a.pdf").write_bytes(b"a")
    config = write_config(tmp_path / "mirror.toml", source, {"usb": (str(target), {})})
    assert run("run", "-c", str(config), "--once", state=state).returncode == 0
    (source / "sub" / "b.pdf").write_bytes(b"b")
    (source / "c.pdf").write_bytes(b"c")
    with write_protected(target / "sub"):
        result = run("run", "-c", str(config), "--once", state=state)
        status = run("status", "-c", str(config), state=state)
    told = f"sub/b.pdf: cannot write into {target / 'sub'} ("
    how = "): check the folder's owner, permissions and attributes (ls -ld, lsattr -d)"
    for output in (result.stderr, status.stdout):
        assert told in output and how in output and ".~mirror-" not in output, output
    assert result.returncode == 1 and status.returncode == 1
    assert sorted(hashes(target)) == ["c.pdf", "sub/a.pdf"]


def test_a_full_local_target_is_fatal_corrupts_nothing_and_resumes_when_space_returns(tmp_path: Path) -> None:
    source = tmp_path / "export"
    source.mkdir()
    for i in range(12):
        (source / f"scan {i:02}.tif").write_bytes(os.urandom(300_000))
    state = tmp_path / "state"
    with tmpfs(tmp_path / "disk", "2m") as disk:
        target = disk / "backup"
        full = run("run", str(source), str(target), "--once", state=state)
        assert full.returncode == 1, full.stdout + full.stderr
        assert "Traceback" not in full.stderr
        assert "target failed: target is full (No space left on device)" in full.stderr
        shown = run("status", state=state)
        assert shown.returncode == 1 and "last error: target is full" in shown.stdout, shown.stdout
        # nothing half-written under a final name, no temp file left taking the space
        expected = hashes(source)
        landed = hashes(target)
        assert landed and all(expected[rel] == h for rel, h in landed.items())
        assert len(landed) < len(expected)
        assert temp_files(target) == []
        assert hashes(source) == expected

        remount(disk, "16m")
        resumed = run("run", str(source), str(target), "--once", state=state)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert hashes(target) == expected
        assert run("verify", str(source), str(target), state=state).returncode == 0


def test_a_disk_out_of_inodes_is_named_with_df_i_beside_df_h(tmp_path: Path) -> None:
    """A disk out of inodes said "target is full ...; free space there", while df -h
    showed it 1 % used."""
    source = tmp_path / "export"
    source.mkdir()
    for i in range(40):
        (source / f"invoice {i:02}.pdf").write_bytes(b"PDF %d" % i)
    with tmpfs(tmp_path / "disk", "10m", inodes=20) as disk:
        full = run("run", str(source), str(disk / "backup"), "--once", state=tmp_path / "state")
    assert full.returncode == 1, full.stdout + full.stderr
    assert "target failed: target is full (No space left on device): out of space or of inodes" in full.stderr
    assert "(df -h, df -i)" in full.stderr, full.stderr


def test_a_target_stopped_by_a_full_disk_is_tried_again_while_watching(tmp_path: Path) -> None:
    """It stayed stopped until mirror was restarted: the process ran on (its other targets
    did), so no service manager restarted it, and the backup disk got nothing more."""
    source, state, log = tmp_path / "export", tmp_path / "state", tmp_path / "m.log"
    source.mkdir()
    for i in range(12):
        (source / f"scan {i:02}.tif").write_bytes(os.urandom(300_000))
    with tmpfs(tmp_path / "disk", "2m") as disk:
        cfg = tmp_path / "m.toml"
        cfg.write_text(
            f'source = "{source}"\n[defaults]\nrescan_interval = "2s"\n'
            f'[targets.usb]\nurl = "{disk / "backup"}"\n[targets.nas]\nurl = "{tmp_path / "nas"}"\n'
        )
        proc = start("run", "-c", str(cfg), state=state, log=log)
        try:
            wait_for(lambda: "target stopped: target is full" in log.read_text(), timeout=30, what="the full disk")
            remount(disk, "16m")
            wait_for(lambda: hashes(disk / "backup") == hashes(source), timeout=30, what="the copy after it")
            # an admin who freed space need not wait: a reload tries it at once
            assert "trying it again in 2 s, or at once on a reload (systemctl reload)" in stop(proc, log)
        finally:
            if proc.poll() is None:
                proc.kill()


def usb_config(cfg: Path, source: Path, usb: Path) -> Path:
    """A config that mirrors ``source`` to the one target ``usb``, tried again every 2 s."""
    cfg.write_text(f'source = "{source}"\n[defaults]\nrescan_interval = "2s"\n[targets.usb]\nurl = "{usb}"\n')
    return cfg


def test_the_only_target_filling_up_is_waited_for_not_exited_on(tmp_path: Path) -> None:
    """A USB disk, the only target, full after a month: mirror logged 'trying it again in
    60 min', then 'every target has stopped; exiting', exit 0, so the service manager
    (Restart=on-failure) never restarted it; its alerts and retries ended with it."""
    source, state, log = tmp_path / "export", tmp_path / "state", tmp_path / "m.log"
    source.mkdir()
    (source / "invoice 1.pdf").write_bytes(b"first")
    with tmpfs(tmp_path / "disk", "1m") as disk:
        cfg = usb_config(tmp_path / "m.toml", source, disk / "backup")
        proc = start("run", "-c", str(cfg), state=state, log=log)
        try:
            wait_for(lambda: landed(disk / "backup") == files(source), what="the first copy")
            (source / "scan.tif").write_bytes(os.urandom(1_500_000))
            wait_for(lambda: "target stopped: target is full" in log.read_text(), timeout=30, what="the full disk")
            time.sleep(1)
            assert proc.poll() is None, log.read_text()
            remount(disk, "8m")
            wait_for(lambda: landed(disk / "backup") == files(source), timeout=30, what="the copy after")
            stop(proc, log)
        finally:
            if proc.poll() is None:
                proc.kill()


def test_a_service_started_on_a_target_in_sync_waits_out_a_fatal_error(tmp_path: Path) -> None:
    """Restarted while its target was in sync (a reboot), so its first pass sent nothing,
    the service took a later fatal error (a host key changed, a disk gone read-only) for a
    config mistake: 'every target has stopped before its first pass; exiting', exit 1."""
    source, state, log = tmp_path / "export", tmp_path / "state", tmp_path / "m.log"
    source.mkdir()
    (source / "invoice 1.pdf").write_bytes(b"first")
    with tmpfs(tmp_path / "disk", "1m") as disk:
        cfg = usb_config(tmp_path / "m.toml", source, disk / "backup")
        assert run("run", "-c", str(cfg), "--once", state=state).returncode == 0
        proc = start("run", "-c", str(cfg), state=state, log=log)
        try:

            def first_pass() -> bool:
                [usb] = json.loads(run("status", "-c", str(cfg), "--json", state=state).stdout)
                return bool(usb["running"]) and usb["last_complete_sync"] >= usb["started"]

            wait_for(first_pass, what="the first pass, with nothing to send")
            subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True, timeout=30)
            (source / "invoice 2.pdf").write_bytes(b"second")
            wait_for(lambda: "target stopped" in log.read_text(), timeout=30, what="the read-only disk")
            (source / "invoice 3.pdf").write_bytes(b"third")

            def both_pending() -> bool:
                [usb] = json.loads(run("status", "-c", str(cfg), "--json", state=state).stdout)
                return bool(usb["pending"] == 2)

            # status said "pending 0" while the target waited to be tried again
            wait_for(both_pending, timeout=10, what="status to count the files waiting", log=log)
            subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True, timeout=30)
            arrived = lambda: landed(disk / "backup") == files(source) or proc.poll() is not None  # noqa: E731
            wait_for(arrived, timeout=30, what="the copy after")
            assert proc.poll() is None, log.read_text()
            stop(proc, log)
        finally:
            if proc.poll() is None:
                proc.kill()


def test_a_full_disk_on_a_webdav_server_stops_the_target_as_full_leaving_no_partial_file(tmp_path: Path) -> None:
    """wsgidav answers a write its disk cannot take with 500 and the OS error in the page:
    taken for a server in trouble, it was retried as if down, and the partial temp file
    of the upload kept the disk full until the next listing pass."""
    source, state = tmp_path / "export", tmp_path / "state"
    source.mkdir()
    (source / "scan.tif").write_bytes(os.urandom(400_000))
    with tmpfs(tmp_path / "server disk", "256k") as disk:
        (disk / "invoices").mkdir()
        server = start_webdav(disk)
        try:
            config = write_config(tmp_path / "m.toml", source, {"dav": (server.url("invoices"), server.options())})
            full = run("run", "-c", str(config), "--once", state=state)
        finally:
            server.server.stop()
        left = os.listdir(disk / "invoices")
    assert full.returncode == 1
    assert "dav: target failed: webdav: the server is out of space" in full.stderr, full.stderr
    assert left == [], left


def test_a_full_disk_on_an_sftp_server_is_named_as_a_likely_cause(sshd: SshServer, tmp_path: Path) -> None:
    """OpenSSH reports a write it cannot make as SSH_FX_FAILURE, no reason given: the
    message was 'OSError: Failure'."""
    source, state = tmp_path / "export", tmp_path / "state"
    source.mkdir()
    (source / "scan.tif").write_bytes(os.urandom(3_000_000))
    with tmpfs(tmp_path / "server disk", "1m") as disk:
        config = write_config(tmp_path / "m.toml", source, {"nas": (sshd.url(disk), sftp_options(sshd))})
        full = run("run", "-c", str(config), "--once", state=state)
    assert full.returncode == 1
    assert "nas: failed: scan.tif: sftp:" in full.stderr
    assert "refused the write without a reason (a full disk, a quota, or a read-only disk?)" in full.stderr
    assert "target failed" not in full.stderr, full.stderr  # an empty file still fits: the file's own failure


def test_a_read_only_disk_on_an_sftp_server_fails_the_target(sshd: SshServer, tmp_path: Path) -> None:
    """The server's disk remounted read-only (errors on it, a full check pending): OpenSSH
    says SSH_FX_FAILURE of each write, no reason given, so each file failed on its own, and
    the target never did: no on_failure alert, pass after pass. A read-only WebDAV share
    failed its target."""
    source, state = tmp_path / "export", tmp_path / "state"
    source.mkdir()
    for i in (1, 2):
        (source / f"invoice {i}.pdf").write_bytes(f"%PDF {i}".encode())
    with tmpfs(tmp_path / "server disk", "1m") as disk:
        (disk / "backup").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True, timeout=30)
        target = {"nas": (sshd.url(disk / "backup"), sftp_options(sshd))}
        config = write_config(tmp_path / "m.toml", source, target)
        refused = run("run", "-c", str(config), "--once", state=state)
    assert refused.returncode == 1, refused.stderr
    assert "nas: target failed: the target folder" in refused.stderr, refused.stderr
    assert "refuses writes" in refused.stderr and "a read-only disk?" in refused.stderr, refused.stderr


def test_a_full_dropbox_quota_is_fatal_and_resumes_when_space_returns(
    dropbox_server: DropboxServer, tmp_path: Path
) -> None:
    source = tmp_path / "export"
    source.mkdir()
    data = {f"scan {i:02}.tif": os.urandom(50_000) for i in range(10)}
    for rel, blob in data.items():
        (source / rel).write_bytes(blob)
    fake = dropbox_server.fake
    fake.state.quota_bytes = 260_000
    config = write_config(tmp_path / "m.toml", source, {"box": ("dropbox://Scans", {"token": "${DROPBOX_TOKEN}"})})
    env = {**dropbox_server.env, "DROPBOX_TOKEN": dropbox_server.token}
    state = tmp_path / "state"

    full = run("run", "-c", str(config), "--once", state=state, env=env)
    assert full.returncode == 1, full.stdout + full.stderr
    assert "box: target failed:" in full.stderr and "full" in full.stderr, full.stderr
    assert "Traceback" not in full.stderr
    stored = {n.display.removeprefix("/Scans/"): n.data for n in fake.state.files.values()}
    assert stored and all(data[rel] == blob for rel, blob in stored.items())

    fake.state.quota_bytes = None
    resumed = run("run", "-c", str(config), "--once", state=state, env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert {n.display.removeprefix("/Scans/"): n.data for n in fake.state.files.values()} == data


# -- mirror's own state disk full ------------------------------------------------------------
def test_a_full_state_disk_is_named_and_watch_mode_carries_on_once_space_returns(tmp_path: Path) -> None:
    source = tmp_path / "export"
    for i in range(3000):
        folder = source / f"{i % 30:02}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"invoice with a long descriptive name, number {i:05}.pdf").write_bytes(b"%PDF" * 25)
    target = tmp_path / "backup"
    full_disk = "the disk holding mirror's state"
    with tmpfs(tmp_path / "state", "512k") as state:
        once = run("run", str(source), str(target), "--once", state=state)
        assert once.returncode == 1, once.stdout + once.stderr
        assert full_disk in once.stderr and "is full; free space there" in once.stderr
        assert "Traceback" not in once.stderr and "please report" not in once.stderr
        # the files that landed before the disk filled up are counted, not "0 sent"
        sent = re.search(r"default: (\d+) sent", once.stdout)
        assert sent, once.stdout
        assert 0 < int(sent[1]) == len(files(target)) < len(files(source)), once.stdout
        log = tmp_path / "watch.log"
        proc = start("run", str(source), str(target), state=state, log=log)
        try:
            wait_for(lambda: full_disk in log.read_text(), what="the full disk to be reported")
            remount(state, "16m")
            wait_for(lambda: files(target) == files(source), timeout=60, what="the copy to finish")
        finally:
            output = stop(proc, log)
        assert "retrying in" in output and "Traceback" not in output
        assert run("verify", str(source), str(target), state=state).returncode == 0


def test_files_sent_but_never_recorded_are_still_mirrors_own(tmp_path: Path) -> None:
    """The state disk fills up while rows are written: files are on the target that the
    index lost. Once their sources are deleted, they must go from the target too."""
    source, target = tmp_path / "export", tmp_path / "backup"
    for i in range(3000):
        folder = source / f"{i % 30:02}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"invoice with a long descriptive name, number {i:05}.pdf").write_bytes(b"%PDF" * 25)
    with tmpfs(tmp_path / "state", "512k") as state:
        cut_short = run("run", str(source), str(target), "--once", state=state)
        assert cut_short.returncode == 1, cut_short.stdout + cut_short.stderr
        landed = files(target)
        assert landed
        remount(state, "16m")
        for rel in landed:
            (source / rel).unlink()
        again = run("run", str(source), str(target), "--once", "--max-delete", "3000", state=state)
        assert again.returncode == 0, again.stdout + again.stderr
        assert files(target) == files(source)
        assert run("verify", str(source), str(target), state=state).returncode == 0


def test_an_index_whose_disk_fills_up_is_kept_not_rebuilt(tmp_path: Path) -> None:
    source = tmp_path / "export"
    source.mkdir()
    for i in range(200):
        (source / f"invoice {i:03}.pdf").write_bytes(b"%PDF" * 25)
    target = tmp_path / "backup"
    with tmpfs(tmp_path / "state", "2m") as state:
        assert run("run", str(source), str(target), "--once", state=state).returncode == 0
        for shm in state.rglob("*-shm"):
            shm.unlink()  # as after a reboot: opening the index has to make it again
        filler = state / "filler"
        with open(filler, "wb") as f, contextlib.suppress(OSError):
            f.write(bytes(4 * 1024 * 1024))
        full = run("run", str(source), str(target), "--once", state=state)
        assert full.returncode == 1 and "is full; free space there" in full.stderr, full.stderr
        # a rebuilt index would list the target and compare every file again
        assert not list(state.rglob("*.corrupt-*"))
        filler.unlink()
        again = run("run", str(source), str(target), "--once", state=state)
        assert again.returncode == 0 and "0 sent" in again.stdout and "already there" not in again.stdout


# -- a target disk that is not mounted ---------------------------------------------------------
def test_a_target_disk_that_is_not_mounted_gets_no_copy_on_the_disk_below(tmp_path: Path) -> None:
    source, disk, usb, state = tmp_path / "export", tmp_path / "disk", tmp_path / "usb", tmp_path / "state"
    for folder in (source, disk, usb):
        folder.mkdir()
    (source / "invoice 1.pdf").write_bytes(b"one")
    target = usb / "backup"
    with bind(disk, usb):
        assert run("run", str(source), str(target), "--once", state=state).returncode == 0
    (source / "invoice 2.pdf").write_bytes(b"two")
    missing = run("run", str(source), str(target), "--once", state=state)
    assert missing.returncode == 1 and "is the disk mounted?" in missing.stderr, missing.stdout + missing.stderr
    assert "0 sent" not in missing.stdout  # above "target failed", it read as if all went well
    # a cron run's failure stays for status to tell (it said "stopped", exit 0)
    shown = run("status", state=state)
    assert shown.returncode == 1 and "last error: target folder" in shown.stdout, shown.stdout
    target.mkdir()  # the mount point's own folder, on the system disk
    below = run("run", str(source), str(target), "--once", state=state)
    assert below.returncode == 1 and "is the disk mounted?" in below.stderr, below.stdout + below.stderr
    assert files(usb) == {}

    log = tmp_path / "watch.log"
    proc = start("run", str(source), str(target), state=state, log=log)
    try:
        wait_for(lambda: "is the disk mounted?" in log.read_text(), what="the missing disk to be reported")
        shown = run("status", state=state)
        assert shown.returncode == 1 and "(running, failing)" in shown.stdout, shown.stdout
        with bind(disk, usb):
            wait_for(lambda: files(target) == files(source), what="the copy once the disk is back")
            output = stop(proc, log)
    finally:
        proc.kill()
    assert "Traceback" not in output and files(disk / "backup") == files(source)

    # moved on purpose: a listing asked for accepts the folder where it is now
    moved = run("run", str(source), str(target), "--once", "--rescan", state=state)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert run("run", str(source), str(target), "--once", state=state).returncode == 0


# -- an index from an older mirror, with no record of the mounts -------------------------------
def from_an_older_mirror(state: Path) -> None:
    """The index as a mirror before the source's and the target folder's mounts were
    recorded left it: the files it put on the target, and nothing about which disks."""
    (db,) = (state / "targets").glob("*.sqlite")
    with contextlib.closing(sqlite3.connect(db)) as index, index:
        index.execute("DELETE FROM meta WHERE key IN ('source_place', 'target_place', 'target_folder')")


def upgraded_with_the_share_away(disk: Path, share: Path, target: Path, state: Path) -> dict[str, bytes]:
    """Twelve invoices in ``share/export`` (``disk`` mounted there), mirrored to ``target``
    by an older mirror; then the share is not mounted, and the invoicing program has made
    its folder again below the mount point with one file. The invoices, by name."""
    (disk / "export").mkdir(parents=True)
    share.mkdir()
    contents = {f"invoice {i}.pdf": os.urandom(500) for i in range(12)}
    for rel, blob in contents.items():
        (disk / "export" / rel).write_bytes(blob)
    with bind(disk, share):
        assert run("run", str(share / "export"), str(target), "--once", state=state).returncode == 0
    from_an_older_mirror(state)
    (share / "export").mkdir()
    (share / "export" / "today.pdf").write_bytes(b"written below the mount point")
    return contents


def test_an_upgrade_while_the_source_share_is_not_mounted_deletes_nothing(tmp_path: Path) -> None:
    """The first run after an upgrade, the share not mounted and the invoicing program's
    folder made again below the mount point with one file: '1 sent, 12 deleted', exit 0
    (max_delete raised), every copy gone; and once the share was back mirror refused it
    ('is on .../share, but mirror read it on /: is the share or disk mounted?')."""
    disk, share, target, state = tmp_path / "disk", tmp_path / "share", tmp_path / "backup", tmp_path / "state"
    source, log = share / "export", tmp_path / "m.log"
    contents = upgraded_with_the_share_away(disk, share, target, state)
    once = run("run", str(source), str(target), "--once", "--max-delete", "1000", state=state)
    assert once.returncode == 1, once.stdout + once.stderr
    assert f"source folder {source} holds none of the 12 files mirror copied from it" in once.stderr
    assert "is the share or disk mounted? Nothing was changed on the targets" in once.stderr
    assert landed(target) == contents
    shown = run("status", state=state)
    assert shown.returncode == 1 and "holds none of the 12 files" in shown.stdout, shown.stdout

    proc = start("run", str(source), str(target), "--max-delete", "1000", state=state, log=log)
    try:
        wait_for(lambda: "holds none of the 12 files" in log.read_text(), timeout=30, what="the warning")
        (source / "today.pdf").write_bytes(b"written again below the mount point")
        time.sleep(2)
        assert landed(target) == contents and proc.poll() is None
        with bind(disk, share):
            (source / "after the mount.pdf").write_bytes(b"new")
            expected = {**contents, "after the mount.pdf": b"new"}
            wait_for(lambda: landed(target) == expected, timeout=30, what="the copy once the share is back")
            wait_for(lambda: run("status", state=state).returncode == 0, timeout=30, what="status to clear")
            output = stop(proc, log)
            assert "holds its files again" in output and "Traceback" not in output
            again = run("run", str(source), str(target), "--once", state=state)
            assert again.returncode == 0 and "0 sent" in again.stdout, again.stdout + again.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
    # the share's mount is recorded now: away again, the folder below is refused as before
    away = run("run", str(source), str(target), "--once", "--max-delete", "1000", state=state)
    assert away.returncode == 1 and f"but mirror read it on {share} " in away.stderr, away.stderr
    assert landed(target) == expected


def test_an_upgrade_while_the_source_share_is_not_mounted_then_back_runs_as_usual(tmp_path: Path) -> None:
    """After the refusal, the share mounted again was refused as on the wrong disk until
    --rescan, and status kept 'deletions withheld: 12 of 12' from the pass that should
    never have run."""
    disk, share, target, state = tmp_path / "disk", tmp_path / "share", tmp_path / "backup", tmp_path / "state"
    source = share / "export"
    contents = upgraded_with_the_share_away(disk, share, target, state)
    assert run("run", str(source), str(target), "--once", state=state).returncode == 1
    source.joinpath("today.pdf").unlink()
    source.rmdir()
    with bind(disk, share):
        back = run("run", str(source), str(target), "--once", state=state)
        assert back.returncode == 0 and "0 sent" in back.stdout, back.stdout + back.stderr
        shown = run("status", state=state)
        assert shown.returncode == 0 and "withheld" not in shown.stdout and "error" not in shown.stdout
    assert landed(target) == contents
    # files that left the source on purpose: --rescan, as the refusal says, takes the folder
    # as it is, under the usual guard
    from_an_older_mirror(state)
    source.mkdir()
    (source / "today.pdf").write_bytes(b"written below the mount point")
    rescan = run("run", str(source), str(target), "--once", "--rescan", state=state)
    assert rescan.returncode == 1 and "1 sent" in rescan.stdout, rescan.stdout + rescan.stderr
    assert "deletions withheld: 12 of 12" in rescan.stderr and landed(target)["invoice 0.pdf"]


def test_a_disk_mounted_after_the_first_copy_went_below_its_mount_point_is_told_as_mounted(tmp_path: Path) -> None:
    """A disk with no fstab line, mounted after the service's first start had filled the
    mount point's folder on the system disk: "is the disk mounted? Mount it", of a disk
    that was, and only --rescan got it going."""
    source, disk, usb, state = tmp_path / "export", tmp_path / "disk", tmp_path / "usb", tmp_path / "state"
    for folder in (source, disk, usb):
        folder.mkdir()
    (source / "invoice 1.pdf").write_bytes(b"one")
    target = usb / "backup"
    assert run("run", str(source), str(target), "--once", state=state).returncode == 0
    with bind(disk, usb):
        mounted = run("run", str(source), str(target), "--once", state=state)
        assert mounted.returncode == 1, mounted.stderr
        assert "mounted since mirror filled it on" in mounted.stderr, mounted.stderr
        assert "is the disk mounted?" not in mounted.stderr and files(disk) == {}
        accepted = run("run", str(source), str(target), "--once", "--rescan", state=state)
        assert accepted.returncode == 0 and files(target) == files(source), accepted.stderr


def test_an_upgrade_while_the_target_disk_is_not_mounted_writes_nothing_below_it(tmp_path: Path) -> None:
    """The first run after an upgrade, the USB disk not mounted: the whole copy went to the
    mount point's folder on the system disk (exit 0), hidden there once the disk was
    mounted, and the disk was refused ('is on .../usb, but mirror filled it on /: is the
    disk mounted?') until --rescan."""
    source, disk, usb, state = tmp_path / "export", tmp_path / "disk", tmp_path / "usb", tmp_path / "state"
    for folder in (source, disk, usb):
        folder.mkdir()
    contents = {f"invoice {i}.pdf": os.urandom(500) for i in range(12)}
    for rel, blob in contents.items():
        (source / rel).write_bytes(blob)
    target, log = usb / "backup", tmp_path / "m.log"
    with bind(disk, usb):
        assert run("run", str(source), str(target), "--once", state=state).returncode == 0
    from_an_older_mirror(state)
    (source / "new.pdf").write_bytes(b"new while the disk is away")
    missing = run("run", str(source), str(target), "--once", state=state)
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert f"target folder {target} is missing, but mirror put 12 files there" in missing.stderr
    assert "is the disk mounted?" in missing.stderr and files(usb) == {}
    target.mkdir()  # the mount point's own folder, on the system disk
    empty = run("run", str(source), str(target), "--once", state=state)
    assert empty.returncode == 1 and f"target folder {target} is empty, but" in empty.stderr, empty.stderr
    assert files(usb) == {}

    proc = start("run", str(source), str(target), state=state, log=log)
    try:
        wait_for(lambda: "is empty, but mirror put 12 files" in log.read_text(), timeout=30, what="the warning")
        (source / "newer.pdf").write_bytes(b"written while watching")
        time.sleep(2)
        assert files(usb) == {} and proc.poll() is None
        with bind(disk, usb):
            wait_for(lambda: files(target) == files(source), timeout=30, what="the copy once the disk is back")
            wait_for(lambda: run("status", state=state).returncode == 0, timeout=30, what="status to clear")
            output = stop(proc, log)
            assert "Traceback" not in output
    finally:
        if proc.poll() is None:
            proc.kill()
    assert files(usb) == {}
    # the disk is recorded now: away again, the folder below is refused as for any index
    away = run("run", str(source), str(target), "--once", state=state)
    assert away.returncode == 1 and f"but mirror filled it on {usb} " in away.stderr, away.stderr


# -- a mount point /etc/fstab lists, with nothing mounted -------------------------------------
def run_with_fstab(fstab: str, *args: str, state: Path) -> subprocess.CompletedProcess[str]:
    """``mirror ARGS`` seeing ``fstab`` as /etc/fstab (bound over it in a mount namespace
    of its own, as root; skips the test otherwise)."""
    table = state.parent / "fstab"
    table.write_text(fstab)
    bound = 'mount --bind "$0" /etc/fstab || exit 99; exec "$@"'
    done = subprocess.run(
        ["unshare", "--mount", "sh", "-c", bound, str(table), *MIRROR, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "MIRROR_STATE_DIR": str(state)},
        timeout=60,
        check=False,
    )
    if done.returncode == 99 or "unshare: " in done.stderr:
        pytest.skip(f"cannot give mirror an fstab of its own here ({done.stderr.strip()})")
    return done


def test_a_disk_that_fstab_mounts_but_is_not_mounted_is_never_written_below(tmp_path: Path) -> None:
    """A first run with the USB disk not mounted filled the folder below its mount point on
    the system disk (exit 0), and the disk, once mounted, was refused as on another mount."""
    source, disk, usb, state = tmp_path / "export", tmp_path / "disk", tmp_path / "usb", tmp_path / "state"
    for folder in (source, disk, usb):
        folder.mkdir()
    (source / "invoice.pdf").write_bytes(b"invoice")
    fstab = f"UUID=1234 / ext4 defaults 0 1\nUUID=5678 {usb} ext4 defaults,nofail 0 2\n"
    away = run_with_fstab(fstab, "run", str(source), str(usb / "backup"), "--once", state=state)
    assert away.returncode == 1, away.stdout + away.stderr
    assert f"is below {usb}, where /etc/fstab mounts a disk or share, but none is mounted there" in away.stderr
    assert files(usb) == {}
    # --rescan takes a folder that moved, not a disk that is not there
    rescan = run_with_fstab(fstab, "run", str(source), str(usb / "backup"), "--once", "--rescan", state=state)
    assert rescan.returncode == 1 and files(usb) == {}, rescan.stdout + rescan.stderr
    with bind(disk, usb):
        there = run_with_fstab(fstab, "run", str(source), str(usb / "backup"), "--once", state=state)
        assert there.returncode == 0 and "1 sent" in there.stdout, there.stdout + there.stderr
    assert files(disk) == {"backup/invoice.pdf": b"invoice"}


def test_a_source_share_that_fstab_mounts_but_is_not_mounted_changes_nothing(tmp_path: Path) -> None:
    """A first run with the share not mounted sent what the invoicing program had written
    below its mount point, and recorded the system disk as the source's."""
    disk, share, target, state = tmp_path / "disk", tmp_path / "share", tmp_path / "backup", tmp_path / "state"
    (disk / "export").mkdir(parents=True)
    (disk / "export" / "signed.pdf").write_bytes(b"signed")
    (share / "export").mkdir(parents=True)
    (share / "export" / "draft.pdf").write_bytes(b"written below the mount point")
    fstab = f"//nas/invoices {share} cifs credentials=/etc/nas 0 0\n"
    away = run_with_fstab(fstab, "run", str(share / "export"), str(target), "--once", "--rescan", state=state)
    assert away.returncode == 1, away.stdout + away.stderr
    assert f"is below {share}, where /etc/fstab mounts a share or disk, but none is mounted there" in away.stderr
    assert "Nothing was changed on the targets" in away.stderr and files(target) == {}
    with bind(disk, share):
        there = run_with_fstab(fstab, "run", str(share / "export"), str(target), "--once", state=state)
        assert there.returncode == 0, there.stdout + there.stderr
    assert files(target) == {"signed.pdf": b"signed"}


# -- the source goes away ---------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_a_source_disk_unmounted_during_a_full_pass_is_not_taken_for_the_source_back(tmp_path: Path) -> None:
    """A full pass under way as the disk went away recorded the empty mount point as the
    source's place: mirror said 'source folder ... is back; rescanning', and, once the
    disk was back, refused it as 'on ... (tmpfs), but mirror read it on / (ext4)'; status
    said idle, exit 0, meanwhile."""
    server = SshServer(tmp_path / "sshd")
    server.start()
    remote, state, log = tmp_path / "remote", tmp_path / "state", tmp_path / "m.log"
    remote.mkdir()
    stopped: list[int] = []
    proc: subprocess.Popen[str] | None = None
    try:
        with tmpfs(tmp_path / "export", "8m") as source:
            config = write_config(tmp_path / "m.toml", source, {"nas": (server.url(remote), sftp_options(server))})
            (source / "invoice.pdf").write_bytes(b"invoice")
            assert run("run", "-c", str(config), "--once", state=state).returncode == 0
            for i in range(400):
                (source / f"scan {i}.pdf").write_bytes(b"%d" % i)
            proc = start("run", "-c", str(config), state=state, log=log)
            wait_for(lambda: len(landed(remote)) > 1, timeout=30, what="the pass to start sending")
            stopped = server.pause()  # the pass stays under way while the disk goes
        # at once: paused for seconds (as long as the warning took on a loaded machine),
        # the uploads timed out, the target counted as down, and the pass that follows
        # rightly waits for the source to come back
        server.resume(stopped)
        wait_for(
            lambda: "is the share or disk mounted?" in log.read_text(), timeout=30, what="the warning", log=log
        )
        # the pass's end, by status: it logs no summary when every file of the batch out
        # was gone from the source before its copy could be confirmed
        wait_for(lambda: _state(config, state) != "syncing", timeout=60, what="the pass to end", log=log)
        shown = run("status", "-c", str(config), state=state)
        assert shown.returncode == 1 and "is the share or disk mounted?" in shown.stdout, shown.stdout
        with tmpfs(tmp_path / "export", "8m"):
            (source / "invoice.pdf").write_bytes(b"invoice")
            (source / "after.pdf").write_bytes(b"after the mount")
            wait_for(lambda: "after.pdf" in landed(remote), timeout=30, what="a file once the disk is back")
            assert landed(remote)["invoice.pdf"] == b"invoice"
            stop(proc, log)
    finally:
        server.resume(stopped)
        if proc is not None and proc.poll() is None:
            proc.kill()
        server.stop()


def test_an_unmounted_source_deletes_nothing_in_once_and_watch_mode(tmp_path: Path) -> None:
    target, state, log = tmp_path / "backup", tmp_path / "state", tmp_path / "mirror.log"
    contents = {f"invoice {i}.pdf": os.urandom(2000) for i in range(12)}
    with tmpfs(tmp_path / "export", "4m") as source:
        for rel, blob in contents.items():
            (source / rel).write_bytes(blob)
        assert run("run", str(source), str(target), "--once", state=state).returncode == 0
    # the mount point is still there, empty, as after an unmount or a failed mount
    empty = run("run", str(source), str(target), "--once", state=state)
    assert empty.returncode == 1, empty.stdout + empty.stderr
    assert "is the share or disk mounted? Nothing was changed on the targets" in empty.stderr
    assert files(target) == contents

    with tmpfs(tmp_path / "export", "4m"):
        for rel, blob in contents.items():
            (source / rel).write_bytes(blob)
        proc = start("run", str(source), str(target), state=state, log=log)
        try:
            wait_for(lambda: "mirroring" in log.read_text(), timeout=30, what="mirror to start")
            time.sleep(1)
        except BaseException:
            proc.kill()
            raise
    try:
        # unmounted under a running mirror: nothing may be deleted
        time.sleep(3)
        assert landed(target) == contents
        with tmpfs(tmp_path / "export", "4m"):
            for rel, blob in contents.items():
                (source / rel).write_bytes(blob)
            (source / "after remount.pdf").write_bytes(b"new after the remount")
            expected = {**contents, "after remount.pdf": b"new after the remount"}
            wait_for(lambda: landed(target) == expected, timeout=30, what="a file written after the remount")
            assert proc.poll() is None
            stop(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_verify_of_a_source_disk_not_mounted_says_so_and_compares_nothing(tmp_path: Path) -> None:
    """verify listed every file 'removed from the source but still on the target', and never
    said the disk was not mounted, which run says."""
    target, state = tmp_path / "backup", tmp_path / "state"
    with tmpfs(tmp_path / "export", "4m") as source:
        (source / "invoice.pdf").write_bytes(b"invoice")
        assert run("run", str(source), str(target), "--once", state=state).returncode == 0
    checked = run("verify", str(source), str(target), state=state)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "is the share or disk mounted? Nothing was compared" in checked.stderr, checked.stderr
    assert "removed from the source" not in checked.stdout, checked.stdout


def test_a_missing_source_is_a_clear_error_and_watch_mode_waits_for_it(tmp_path: Path) -> None:
    source, target, state, log = tmp_path / "export", tmp_path / "backup", tmp_path / "state", tmp_path / "m.log"
    source.mkdir()
    contents = {f"invoice {i}.pdf": os.urandom(1000) for i in range(5)}
    for rel, blob in contents.items():
        (source / rel).write_bytes(blob)
    assert run("run", str(source), str(target), "--once", state=state).returncode == 0
    source.rename(tmp_path / "elsewhere")
    missing = run("run", str(source), str(target), "--once", state=state)
    # it was mirrored before, so it has gone missing (exit 1); a never-seen path is a usage error (2)
    assert missing.returncode == 1, missing.stderr
    assert missing.stderr.count("\n") == 1 and f"source folder {source} is missing" in missing.stderr
    assert files(target) == contents
    typo = run("run", str(tmp_path / "exprot"), str(target), "--once", state=state)
    assert typo.returncode == 2 and "does not exist" in typo.stderr

    (tmp_path / "elsewhere").rename(source)
    proc = start("run", str(source), str(target), state=state, log=log)
    try:
        wait_for(lambda: "mirroring" in log.read_text(), timeout=30, what="mirror to start")
        time.sleep(1)
        source.rename(tmp_path / "elsewhere")
        wait_for(lambda: "is missing (not mounted?)" in log.read_text(), timeout=30, what="the warning")
        time.sleep(1)
        assert landed(target) == contents and proc.poll() is None
        # told where a service's user looks (and alerts listen): not "running, idle", exit 0
        shown = run("status", state=state)
        assert shown.returncode == 1 and f"last error: source folder {source} is missing" in shown.stdout
        (tmp_path / "elsewhere").rename(source)
        (source / "back.pdf").write_bytes(b"back again")
        expected = {**contents, "back.pdf": b"back again"}
        wait_for(lambda: landed(target) == expected, timeout=30, what="a file after the source came back")
        wait_for(lambda: run("status", state=state).returncode == 0, timeout=30, what="status to clear")
        stop(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("over", ["local", "sftp"])
def test_a_source_gone_just_after_a_large_batch_of_new_files_deletes_nothing(
    over: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Over ASKS_AT_MOST new files, the pass that sent them planned the batch as the whole
    source and held every other copy for deletion; the source renamed away within the
    hold's settle time, they were deleted 'waiting for it; nothing is changed'."""
    source, target, state, log = tmp_path / "export", tmp_path / "backup", tmp_path / "state", tmp_path / "m.log"
    old = _invoices(source, 8)
    args = [str(source), str(target)]
    if over == "sftp":
        server: SshServer = request.getfixturevalue("sshd")
        target.mkdir()
        config = write_config(tmp_path / "m.toml", source, {"nas": (server.url(target), sftp_options(server))})
        args = ["-c", str(config)]
    proc = start("run", *args, state=state, log=log)
    try:
        wait_for(lambda: landed(target) == old, timeout=30, what="the first copy")
        (source / "batch").mkdir()
        new = {f"batch/doc {i}.pdf": b"%d" % i for i in range(ASKS_AT_MOST + 50)}
        for rel, blob in new.items():
            (source / rel).write_bytes(blob)
        wait_for(lambda: landed(target) == {**old, **new}, timeout=30, what="the batch")
        source.rename(tmp_path / "elsewhere")
        wait_for(lambda: "is missing (not mounted?)" in log.read_text(), timeout=30, what="the warning")
        time.sleep(SETTLE_S + 2)  # past the moment held deletions are planned again
        assert landed(target) == {**old, **new}, log.read_text()[-3000:]
        shown = run("status", *args, state=state)
        assert shown.returncode == 1 and f"last error: source folder {source} is missing" in shown.stdout
        (tmp_path / "elsewhere").rename(source)
        (source / "back.pdf").write_bytes(b"back again")
        wait_for(lambda: "back.pdf" in landed(target), timeout=30, what="a file after the source came back")
        stop(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_source_back_but_empty_is_no_longer_called_missing(tmp_path: Path) -> None:
    """After the folder came back (emptied), status still said it was missing; the guard's
    own line says what holds the deletions back."""
    source, target, state = tmp_path / "export", tmp_path / "backup", tmp_path / "state"
    source.mkdir()
    (source / "a.pdf").write_bytes(b"a")
    assert run("run", str(source), str(target), "--once", state=state).returncode == 0
    source.rename(tmp_path / "elsewhere")
    assert run("run", str(source), str(target), "--once", state=state).returncode == 1
    source.mkdir()
    assert run("run", str(source), str(target), "--once", state=state).returncode == 1
    shown = run("status", state=state)
    assert "is missing" not in shown.stdout, shown.stdout
    assert "the source folder is empty but the target holds 1 mirrored file\n" in shown.stdout, shown.stdout


def test_a_source_share_that_is_not_mounted_changes_nothing_on_the_target(tmp_path: Path) -> None:
    """Unmounted, the folder below the mount point shows: old drafts left there, or a
    folder the invoicing program made again. Mirrored, they replaced the signed copies."""
    source, target, state, log = tmp_path / "export", tmp_path / "backup", tmp_path / "state", tmp_path / "m.log"
    source.mkdir()
    drafted = time.time() - 86400  # the drafts are a day older than the signed copies
    for i in range(30):
        (source / f"invoice {i}.pdf").write_bytes(b"old draft")  # below the mount point
        os.utime(source / f"invoice {i}.pdf", (drafted, drafted))
    signed = {f"invoice {i}.pdf": b"signed %d" % i for i in range(40)}
    with tmpfs(source, "4m"):
        for rel, blob in signed.items():
            (source / rel).write_bytes(blob)
        assert run("run", str(source), str(target), "--once", state=state).returncode == 0
    once = run("run", str(source), str(target), "--once", state=state)
    assert once.returncode == 1 and "is on " in once.stderr and "is the share or disk mounted?" in once.stderr
    assert landed(target) == signed
    shown = run("status", state=state)
    assert shown.returncode == 1 and "is the share or disk mounted?" in shown.stdout, shown.stdout

    proc = start("run", str(source), str(target), state=state, log=log)
    try:
        wait_for(lambda: "is the share or disk mounted?" in log.read_text(), timeout=30, what="the warning")
        (source / "invoice 0.pdf").write_bytes(b"written below the mount point")
        time.sleep(2)
        assert landed(target) == signed and proc.poll() is None
        with tmpfs(source, "4m"):
            for rel, blob in signed.items():
                (source / rel).write_bytes(blob)
            (source / "after remount.pdf").write_bytes(b"new")
            expected = {**signed, "after remount.pdf": b"new"}
            wait_for(lambda: landed(target) == expected, timeout=30, what="the copy once the share is back")
            # stopped mid-pass, the target would rightly be "incomplete"
            ended = re.compile(r"is back; rescanning.*\n.*\[default\] \d+ sent", re.S)
            wait_for(lambda: ended.search(log.read_text()) is not None, timeout=30, what="the pass to end")
            stop(proc, log)
            assert run("status", state=state).returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    # moved on purpose: a listing asked for accepts the folder where it is now, and
    # --max-delete the deletions (the guard may have withheld some while it was away);
    # the signed copies older drafts replace are kept in the trash, and so, in a pass
    # that finds files older than their copies (a restore, as it looks), are the copies
    # of the files gone
    accepted = run("run", str(source), str(target), "--once", "--rescan", "--max-delete", "11", state=state)
    assert accepted.returncode == 0, accepted.stderr
    now = landed(target)
    assert {rel: blob for rel, blob in now.items() if not rel.startswith(".mirror-trash/")} == {
        f"invoice {i}.pdf": b"old draft" for i in range(1, 30)
    } | {"invoice 0.pdf": b"written below the mount point"}
    kept = {rel.rpartition("/")[2]: blob for rel, blob in now.items() if rel.startswith(".mirror-trash/")}
    assert kept == {
        **{f"invoice {i}.pdf": signed[f"invoice {i}.pdf"] for i in range(1, 40)},
        "after remount.pdf": b"new",
    }


def _share_mirrored_then_unmounted(
    source: Path, target: Path, state: Path, count: int
) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """``source`` with an invoice and ``count`` scans on a share mounted at scans/, mirrored
    to ``target``, and the share unmounted again: the scans, and all that was mirrored."""
    (source / "invoices").mkdir(parents=True)
    (source / "invoices" / "i.pdf").write_bytes(b"invoice")
    scans = {f"scans/s{i}.tif": b"scan %d" % i for i in range(count)}
    with tmpfs(source / "scans", "4m"):
        for rel, blob in scans.items():
            (source / rel).write_bytes(blob)
        assert run("run", str(source), str(target), "--once", state=state).returncode == 0
    return scans, {"invoices/i.pdf": b"invoice", **scans}


def test_a_share_mounted_inside_the_source_that_drops_off_deletes_nothing(tmp_path: Path) -> None:
    """export/scans is the scanner's share: unmounted (the NAS rebooting, or mirror
    started at boot before the share), its folder showed empty and 10 deleted went out,
    the backup of every scan with them. Watch mode sees nothing of a mount coming and going
    but must rescan then; a folder removed is a share given up, and its files go."""
    source, target, state, log = tmp_path / "export", tmp_path / "backup", tmp_path / "state", tmp_path / "m.log"
    scans, everything = _share_mirrored_then_unmounted(source, target, state, 10)
    once = run("run", str(source), str(target), "--once", state=state)
    assert once.returncode == 1 and "skipped scans: the share or disk mounted here is not mounted" in once.stderr
    assert "0 deleted" in once.stdout and landed(target) == everything

    proc = start("run", str(source), str(target), state=state, log=log)
    try:
        wait_for(lambda: "skipped scans: the share" in log.read_text(), what="the first pass")
        with tmpfs(source / "scans", "4m"):
            for rel, blob in scans.items():
                (source / rel).write_bytes(blob)
            wait_for(lambda: "scans in the source was mounted or unmounted" in log.read_text(), what="the mount")
            (source / "scans" / "new.tif").write_bytes(b"scanned after the mount")
            wait_for(lambda: landed(target).get("scans/new.tif") == b"scanned after the mount", what="a new scan")
            ends = log.read_text().count("was mounted or unmounted")
        wait_for(lambda: log.read_text().count("was mounted or unmounted") > ends, what="the unmount")
        time.sleep(1)
        assert landed(target) == {**everything, "scans/new.tif": b"scanned after the mount"}
        stop(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
    (source / "scans").rmdir()
    gone = run("run", str(source), str(target), "--once", "--max-delete", "20", state=state)
    assert gone.returncode == 0 and landed(target) == {"invoices/i.pdf": b"invoice"}, gone.stderr


def test_files_below_a_share_s_mount_point_while_it_is_not_mounted_are_not_sent(tmp_path: Path) -> None:
    """The scanner wrote into its folder while the share was down (or old files lay below
    the mount point): they went over the copies of the share's files, which the log said
    stay, and the backup of a scan was an older one."""
    source, target, state, log = tmp_path / "export", tmp_path / "backup", tmp_path / "state", tmp_path / "m.log"
    _, everything = _share_mirrored_then_unmounted(source, target, state, 3)
    (source / "scans" / "s0.tif").write_bytes(b"written below the mount point")
    once = run("run", str(source), str(target), "--once", state=state)
    assert once.returncode == 1 and "skipped scans: the share or disk mounted here is not mounted" in once.stderr
    assert landed(target) == everything, once.stdout + once.stderr
    proc = start("run", str(source), str(target), state=state, log=log)
    try:
        wait_for(lambda: "skipped scans: the share" in log.read_text(), what="the first pass")
        (source / "scans" / "s1.tif").write_bytes(b"written below the mount point, watched")
        (source / "invoices" / "later.pdf").write_bytes(b"later")
        wait_for(lambda: "invoices/later.pdf" in landed(target), what="a change beside it", log=log)
        time.sleep(1)
        assert landed(target) == {**everything, "invoices/later.pdf": b"later"}
        stop(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_share_mounted_inside_the_source_while_watching_is_mirrored(tmp_path: Path) -> None:
    """A disk or share mounted on a folder of the source while mirror watched, where none
    was mounted before: its files never reached the target, the target kept the files
    the mount hid, and status said in sync."""
    source, target, state, log = tmp_path / "export", tmp_path / "backup", tmp_path / "state", tmp_path / "m.log"
    (source / "scans").mkdir(parents=True)
    (source / "scans" / "under.tif").write_bytes(b"under the mount point")
    proc = start("run", str(source), str(target), state=state, log=log)
    try:
        wait_for(lambda: "scans/under.tif" in landed(target), what="the first pass", log=log)
        with tmpfs(source / "scans", "4m"):
            (source / "scans" / "new.tif").write_bytes(b"on the share")
            wait_for(lambda: landed(target).get("scans/new.tif") == b"on the share", what="a file on it", log=log)
            (source / "scans" / "later.tif").write_bytes(b"later")
            wait_for(lambda: landed(target).get("scans/later.tif") == b"later", what="a later file", log=log)
        stop(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_an_emptied_source_in_watch_mode_deletes_nothing(tmp_path: Path) -> None:
    source, target, state, log = tmp_path / "export", tmp_path / "backup", tmp_path / "state", tmp_path / "m.log"
    contents = _invoices(source, 5)
    proc = start("run", str(source), str(target), state=state, log=log)
    try:
        wait_for(lambda: landed(target) == contents, timeout=30, what="the first copy")
        for rel in contents:
            (source / rel).unlink()
        wait_for(
            lambda: "deletions withheld: the source folder is empty" in log.read_text(),
            timeout=30,
            what="the guard",
        )
        assert landed(target) == contents
        stop(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_source_folder_swapped_for_an_empty_one_is_told_once(tmp_path: Path) -> None:
    """The watcher rescans as the folder is replaced, and its successor as it starts:
    two passes a moment apart, each withholding the same deletions, and the warning
    was logged twice in the same second."""
    source, target, state, log = tmp_path / "export", tmp_path / "backup", tmp_path / "state", tmp_path / "m.log"
    contents = _invoices(source, 5)
    proc = start("run", str(source), str(target), state=state, log=log)
    try:
        wait_for(lambda: landed(target) == contents, timeout=30, what="the first copy")
        source.rename(tmp_path / "export.old")
        source.mkdir()
        wait_for(lambda: "was replaced" in log.read_text(), timeout=30, what="the swap", log=log)
        time.sleep(3)  # both passes, and well short of the guard's check 10 s on
        assert log.read_text().count("deletions withheld: the source folder is empty") == 1, log.read_text()
        assert landed(target) == contents
        stop(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()


# -- busy files -------------------------------------------------------------------------------
def test_a_file_that_keeps_changing_never_blocks_the_rest(tmp_path: Path) -> None:
    source, target, state, log = tmp_path / "export", tmp_path / "backup", tmp_path / "state", tmp_path / "m.log"
    source.mkdir()
    (source / "before.pdf").write_bytes(b"before")
    done = threading.Event()

    def append() -> None:
        with open(source / "app.log", "a") as f:
            while not done.is_set():
                f.write(f"{time.time()} a line of the log\n")
                f.flush()
                time.sleep(0.05)

    writer = threading.Thread(target=append, daemon=True)
    writer.start()
    proc = start("run", str(source), str(target), state=state, log=log)
    try:
        wait_for(lambda: "before.pdf" in landed(target), timeout=20, what="a quiet file while the log grows")
        for i in range(20):
            (source / f"invoice {i}.pdf").write_bytes(os.urandom(500))
        wait_for(
            lambda: all(f"invoice {i}.pdf" in landed(target) for i in range(20)),
            timeout=20,
            what="new files while the log grows",
        )
        # the growing file is still to send: "idle, pending 0" read as all done
        shown = json.loads(run("status", "--json", state=state).stdout)
        assert shown[0]["pending"] == 1 and not (target / "app.log").exists(), shown
        done.set()
        writer.join(5)
        wait_for(lambda: landed(target) == files(source), timeout=60, what="the log once it stopped changing")
        wait_for(lambda: json.loads(run("status", "--json", state=state).stdout)[0]["pending"] == 0, what="0")
        stop(proc, log)
    finally:
        done.set()
        if proc.poll() is None:
            proc.kill()


# -- inotify watch limit ----------------------------------------------------------------------
def _can_limit_watches() -> bool:
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "sh", "-c", "echo 20 > /proc/sys/user/max_inotify_watches"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def test_the_inotify_watch_limit_falls_back_to_polling_with_a_warning(tmp_path: Path) -> None:
    """The limit is lowered in a user namespace of its own (/proc/sys/user/max_inotify_watches),
    so the machine's fs.inotify.max_user_watches, shared with everything else, is not touched."""
    if not _can_limit_watches():
        pytest.skip("user namespaces are not available to lower the inotify limit for one process")
    source, target, state, log = tmp_path / "export", tmp_path / "backup", tmp_path / "state", tmp_path / "m.log"
    for i in range(60):
        (source / f"client {i:02}").mkdir(parents=True)
        (source / f"client {i:02}" / "first.pdf").write_bytes(b"first")
    env = {**os.environ, "MIRROR_STATE_DIR": str(state)}
    limited = 'echo 20 > /proc/sys/user/max_inotify_watches && exec "$@"'
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["unshare", "--user", "--map-root-user", "sh", "-c", limited, "sh", *MIRROR, "run", str(source),
             str(target)],
            stdout=out, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
    try:
        wait_for(lambda: len(landed(target)) == 60, timeout=30, what="the first copy")
        for i in range(60):
            (source / f"client {i:02}" / "second.pdf").write_bytes(b"second")
        # every folder is still followed, not only the ones that got a watch
        wait_for(lambda: len(landed(target)) == 120, timeout=30, what="changes in every folder")
        stop(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "inotify watch limit reached" in log.read_text() and "falling back to polling" in log.read_text()
