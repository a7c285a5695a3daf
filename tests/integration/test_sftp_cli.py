"""End to end: ``mirror run --once`` then ``mirror verify`` against the real sshd."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.cli import files, start, wait_for
from tests.servers.sshd import SshServer


def mirror(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mirror.cli", *args], capture_output=True, text=True, timeout=100, check=False
    )


def test_run_once_then_verify_over_sftp(sshd: SshServer, tmp_path: Path) -> None:
    source = tmp_path / "export"
    for i in range(30):
        folder = source / f"2024-{i % 3:02}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"invoice {i}.pdf").write_bytes(os.urandom(1000 + i))
    remote = tmp_path / "remote"
    config = tmp_path / "mirror.toml"
    config.write_text(
        f'source = "{source}"\n'
        f'state_dir = "{tmp_path / "state"}"\n'
        "[targets.box]\n"
        f'url = "{sshd.url(remote)}"\n'
        "concurrency = 4\n"
        f'options = {{ key_filename = "{sshd.client_key}", known_hosts = "{sshd.known_hosts}", '
        "allow_agent = false, look_for_keys = false }\n"
    )
    run = mirror("run", "--once", "-c", str(config))
    assert run.returncode == 0, run.stdout + run.stderr
    landed = sorted(str(p.relative_to(remote)) for p in remote.rglob("*") if p.is_file())
    expected = sorted(str(p.relative_to(source)) for p in source.rglob("*") if p.is_file())
    assert landed == expected
    for name in expected:
        assert (remote / name).read_bytes() == (source / name).read_bytes()
    verify = mirror("verify", "-c", str(config))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # a changed file is found by verify, and the next run fixes it
    (remote / expected[0]).write_bytes(b"tampered")
    assert mirror("verify", "-c", str(config)).returncode == 1


def test_a_run_with_one_change_logs_in_once(sshd: SshServer, tmp_path: Path) -> None:
    """Each login is a process on the server (and counts against MaxStartups): the worker
    that sends the file takes the connection the run opened, rather than its own."""
    source = tmp_path / "export"
    source.mkdir()
    for i in range(5):
        (source / f"invoice {i}.pdf").write_bytes(os.urandom(2000))
    remote = tmp_path / "remote"
    config = _config(sshd, source, remote, tmp_path)
    assert mirror("run", "--once", "-c", str(config)).returncode == 0
    (source / "invoice 3.pdf").write_bytes(b"credit note")
    logins = sshd.log.read_text().count("Accepted publickey")
    run = mirror("run", "--once", "-c", str(config))
    assert run.returncode == 0, run.stdout + run.stderr
    assert (remote / "invoice 3.pdf").read_bytes() == b"credit note"
    assert sshd.log.read_text().count("Accepted publickey") == logins + 1


def test_a_folder_in_place_of_a_mirrored_file_is_named_not_blamed_on_a_full_disk(
    sshd: SshServer, tmp_path: Path
) -> None:
    """Someone put a folder on the server where mirror's file was: every update of the
    file failed as 'refused the write without a reason (a full disk, a quota, or a
    read-only disk?)', the small files' batch and a large file's upload alike."""
    source, remote = tmp_path / "export", tmp_path / "remote"
    source.mkdir()
    (source / "report.pdf").write_bytes(b"one")
    (source / "scan.tif").write_bytes(os.urandom(3 << 20))  # sent on its own, not in a batch
    config = _config(sshd, source, remote, tmp_path)
    assert mirror("run", "--once", "-c", str(config)).returncode == 0
    for name in ("report.pdf", "scan.tif"):
        (remote / name).unlink()
        (remote / name).mkdir()
        (remote / name / "theirs.txt").write_bytes(b"theirs")
    (source / "report.pdf").write_bytes(b"one, edited")
    (source / "scan.tif").write_bytes(os.urandom(3 << 20))
    run = mirror("run", "--once", "-c", str(config))
    assert run.returncode == 1, run.stdout + run.stderr
    for name in ("report.pdf", "scan.tif"):
        assert f"{name}: {remote / name} on the target is a folder where a file goes" in run.stderr, run.stderr
    assert "full disk" not in run.stderr


def test_a_run_with_nothing_to_send_logs_in_to_ask_about_the_folder_once_it_was_last_seen_a_while_ago(
    sshd: SshServer, tmp_path: Path
) -> None:
    """A cron job every few minutes over a quiet week: a run with nothing changed logs in
    once, for the one question whether the folder is still there and filled (a NAS share
    back empty after an outage), and sends nothing: without the question, such a run never
    noticed a folder emptied. Within five minutes of reaching the target, it trusts that."""
    source = tmp_path / "export"
    source.mkdir()
    (source / "invoice.pdf").write_bytes(b"paid")
    config = _config(sshd, source, tmp_path / "remote", tmp_path)
    assert mirror("run", "--once", "-c", str(config)).returncode == 0
    logins = sshd.log.read_text().count("Accepted publickey")
    again = mirror("run", "--once", "-c", str(config))
    assert again.returncode == 0 and "0 sent" in again.stdout, again.stdout + again.stderr
    assert sshd.log.read_text().count("Accepted publickey") == logins
    (index,) = (tmp_path / "state").glob("targets/*.sqlite")
    with sqlite3.connect(index) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'target_seen'", (time.time() - 600,))
    later = mirror("run", "--once", "-c", str(config))
    assert later.returncode == 0 and "0 sent" in later.stdout, later.stdout + later.stderr
    assert sshd.log.read_text().count("Accepted publickey") == logins + 1


def test_a_run_with_nothing_to_send_to_a_server_that_is_down_is_no_all_clear(tmp_path: Path) -> None:
    """The NAS was off: a cron run with nothing new said '0 sent', exit 0, and stamped a
    complete sync of a target it never reached; status exited 0, no alert came."""
    server = SshServer(tmp_path / "sshd")
    server.start()
    source = tmp_path / "export"
    source.mkdir()
    (source / "invoice.pdf").write_bytes(b"paid")
    config = _config(server, source, tmp_path / "remote", tmp_path)
    try:
        assert mirror("run", "--once", "-c", str(config)).returncode == 0
    finally:
        server.stop()
    (index,) = (tmp_path / "state").glob("targets/*.sqlite")
    with sqlite3.connect(index) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'target_seen'", (time.time() - 600,))
        synced = db.execute("SELECT value FROM meta WHERE key = 'last_complete_sync'").fetchone()
    down = mirror("run", "--once", "-c", str(config))
    assert down.returncode == 1 and "unreachable" in down.stderr, down.stdout + down.stderr
    with sqlite3.connect(index) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'last_complete_sync'").fetchone() == synced
    assert mirror("status", "-c", str(config)).returncode == 1


def _config(
    server: SshServer, source: Path, remote: Path, tmp_path: Path, extra: str = "", timeout: int = 5
) -> Path:
    config = tmp_path / "restart.toml"
    config.write_text(
        f'source = "{source}"\n'
        f'state_dir = "{tmp_path / "state"}"\n'
        f"{extra}"
        "[targets.box]\n"
        f'url = "{server.url(remote)}"\n'
        f'options = {{ key_filename = "{server.client_key}", known_hosts = "{server.known_hosts}", '
        f"allow_agent = false, look_for_keys = false, timeout = {timeout} }}\n"
    )
    return config


def _serving(tmp_path: Path, contents: dict[str, bytes]) -> tuple[SshServer, Path, Path, Path]:
    """A started sshd, a source holding ``contents``, an empty remote folder, and the
    config mirroring the one to the other: (server, source, remote, config)."""
    server = SshServer(tmp_path / "sshd")
    server.start()
    source, remote = tmp_path / "export", tmp_path / "remote"
    source.mkdir()
    remote.mkdir()
    for name, data in contents.items():
        (source / name).write_bytes(data)
    return server, source, remote, _config(server, source, remote, tmp_path)


def test_sshd_restarted_during_watch_mode_converges_without_restarting_mirror(tmp_path: Path) -> None:
    scans = {f"scan {i:03}.pdf": os.urandom(3000) for i in range(600)}
    server, source, remote, config = _serving(tmp_path, scans)
    proc = start("run", "-c", str(config), state=tmp_path / "state", log=tmp_path / "mirror.log")
    try:
        wait_for(lambda: len(list(remote.iterdir())) >= 60, timeout=60, what="the copy to get going")
        server.stop()
        (source / "written while down.pdf").write_bytes(b"while the server was down")
        time.sleep(3)
        server.start()
        wait_for(lambda: files(remote) == files(source), timeout=90, what="the mirror to converge")
        assert proc.poll() is None, "mirror must survive the outage"
    finally:
        proc.terminate()
        code = proc.wait(20)
    assert code == 0, (tmp_path / "mirror.log").read_text()[-3000:]
    try:
        verify = mirror("verify", "-c", str(config))
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        server.stop()
    log = (tmp_path / "mirror.log").read_text()
    assert "retrying in" in log or "unreachable" in log, "the outage went unnoticed: the test exercised nothing"


def test_a_server_that_stops_answering_gets_one_line_not_library_tracebacks(tmp_path: Path) -> None:
    """A frozen host takes TCP connections and says nothing: paramiko logged each try as
    an error with its traceback, and with no target named."""
    server, _, _, config = _serving(tmp_path, {"invoice.pdf": b"%PDF"})
    assert server.proc is not None
    try:
        os.kill(server.proc.pid, signal.SIGSTOP)
        frozen = mirror("run", "-c", str(config), "--once")
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()
    assert frozen.returncode == 1
    assert "Traceback" not in frozen.stderr and "box: target failed: sftp:" in frozen.stderr, frozen.stderr
    assert len(frozen.stderr.splitlines()) == 1, frozen.stderr


def test_status_counts_new_files_while_a_hung_server_is_being_reached(tmp_path: Path) -> None:
    """The pass that takes new files connects, and asks about the target folder, before
    it records anything: with the server hung, status said "idle, pending 0" and exit 0
    (metrics: in sync) for the whole timeout, none of the files on the server."""
    server, source, remote, _ = _serving(tmp_path, {"invoice 1.pdf": b"%PDF 1"})
    config = _config(server, source, remote, tmp_path, timeout=30)
    assert mirror("run", "-c", str(config), "--once").returncode == 0
    for i in (2, 3, 4):
        (source / f"invoice {i}.pdf").write_bytes(b"%PDF")
    frozen = server.pause()
    proc = start("run", "-c", str(config), state=tmp_path / "state", log=tmp_path / "m.log")
    try:

        def counted() -> bool:
            [box] = json.loads(mirror("status", "-c", str(config), "--json").stdout)
            return bool(box["pending"] == 3 and box["state"] != "idle")

        # well within the 30 s the server is waited for
        wait_for(counted, timeout=10, what="status to count the files not on the server")
    finally:
        server.resume(frozen)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        server.stop()


def test_temp_files_a_dropped_server_left_go_with_the_next_run(tmp_path: Path) -> None:
    """The server died during an upload: its partial temp file (tens of MB) could not be
    removed then, and stayed until the hourly listing; verify called it someone's file."""
    server, _, remote, config = _serving(tmp_path, {f"scan {i}.tif": os.urandom(40_000_000) for i in range(3)})
    try:
        first = start("run", "-c", str(config), "--once", state=tmp_path / "state")
        try:
            wait_for(lambda: any(p.name.startswith(".~mirror-") for p in remote.iterdir()), what="an upload")
            server.stop()
            assert first.wait(120) == 1
        finally:
            first.kill()
        assert any(p.name.startswith(".~mirror-") for p in remote.iterdir()), "no temp file was left to test"
        server.start()
        again = mirror("run", "-c", str(config), "--once")
        assert again.returncode == 0, again.stdout + again.stderr
        assert sorted(p.name for p in remote.iterdir()) == [f"scan {i}.tif" for i in range(3)]
    finally:
        server.stop()


def test_a_server_down_while_a_quiet_folder_gets_a_few_files_raises_the_alert(tmp_path: Path) -> None:
    """Eight files failing in a row said the target was down; an invoice folder that gets
    two an hour never had eight, so no alert came while the server stayed down."""
    server, source, remote, _ = _serving(tmp_path, {"invoice 1.pdf": b"%PDF 1"})
    calls = tmp_path / "alerts.txt"
    alerts = f'[defaults]\nalert_after = "1s"\non_failure = \'echo "$MIRROR_EVENT" >> "{calls}"\'\n'
    config = _config(server, source, remote, tmp_path, alerts)
    proc = start("run", "-c", str(config), state=tmp_path / "state", log=tmp_path / "mirror.log")
    try:
        wait_for(lambda: files(remote) == files(source), what="the first copy")
        server.stop()
        (source / "invoice 2.pdf").write_bytes(b"%PDF 2")
        wait_for(lambda: calls.exists() and "failure" in calls.read_text(), timeout=60, what="the alert")
        server.start()
        wait_for(lambda: files(remote) == files(source), timeout=90, what="the copy once the server is back")
        wait_for(lambda: "recovery" in calls.read_text(), timeout=30, what="the recovery")
    finally:
        proc.terminate()
        proc.wait(20)
        server.stop()
    log = (tmp_path / "mirror.log").read_text()
    assert "target unreachable (sftp: cannot" in log and "unreachable (target unreachable" not in log, log


def test_someones_file_named_in_latin_1_on_the_server_is_left_alone_and_the_rest_is_mirrored(
    sshd: SshServer, tmp_path: Path
) -> None:
    """An old backup from a Latin-1 system on the NAS: every pass that listed the target
    failed it whole with a bare UnicodeDecodeError, nothing was sent, and verify could not
    run. The files are now listed as on a local target: named among the target's other
    files, never sent to or removed, and mirror's own files beside them move and go."""
    source, remote = tmp_path / "export", tmp_path / "remote"
    (source / "alte Sicherung").mkdir(parents=True)
    (source / "invoice-001.pdf").write_bytes(b"%PDF new invoice")
    (source / "alte Sicherung" / "neu.pdf").write_bytes(b"%PDF mirrored beside it")
    theirs = {
        b"alte Sicherung/Rechnung M\xfcller.pdf": b"someone's old backup",
        b"Kunde M\xfcller/Angebot.pdf": b"an old offer",
    }
    for rel, data in theirs.items():
        path = os.path.join(os.fsencode(remote), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    config = _config(sshd, source, remote, tmp_path)

    first = mirror("run", "--once", "-c", str(config))
    assert first.returncode == 0, first.stdout + first.stderr
    assert (remote / "invoice-001.pdf").read_bytes() == b"%PDF new invoice"
    verify = mirror("verify", "-c", str(config))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "2 other file(s) on the target" in verify.stdout, verify.stdout
    assert "alte Sicherung/Rechnung M\\xfcller.pdf" in verify.stdout, verify.stdout

    (source / "alte Sicherung" / "neu.pdf").rename(source / "alte Sicherung" / "neuer.pdf")
    moved = mirror("run", "--once", "--rescan", "-c", str(config))
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "1 moved" in moved.stdout, moved.stdout
    (source / "alte Sicherung" / "neuer.pdf").unlink()
    deleted = mirror("run", "--once", "--rescan", "-c", str(config))
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert "1 deleted" in deleted.stdout, deleted.stdout

    assert sorted(os.fsencode(p.relative_to(remote)) for p in remote.rglob("*") if p.is_file()) == sorted(
        [b"invoice-001.pdf", *theirs]
    )
    for rel, data in theirs.items():
        with open(os.path.join(os.fsencode(remote), rel), "rb") as f:
            assert f.read() == data


def test_a_read_only_share_fails_the_target_and_raises_the_alert(tmp_path: Path) -> None:
    """A share served read-only (sftp-server -R): every run said '0 sent, 2 failed'
    (Permission denied, file by file) and exit 1, and on_failure never ran, for ever."""
    server = SshServer(tmp_path / "sshd", sftp_flags="-R")
    server.start()
    source, remote = tmp_path / "export", tmp_path / "remote"
    source.mkdir()
    remote.mkdir()
    for i in (1, 2):
        (source / f"invoice {i}.pdf").write_bytes(f"%PDF {i}".encode())
    calls = tmp_path / "alerts.txt"
    alerts = f'[defaults]\nalert_after = "1s"\non_failure = \'echo "$MIRROR_EVENT $MIRROR_REASON" >> "{calls}"\'\n'
    config = _config(server, source, remote, tmp_path, alerts)
    try:
        once = mirror("run", "-c", str(config), "--once")
        # the watching service stops at once too (the target never got going), and is
        # started again by systemd 10 s later: that start finds the incident the run opened
        # older than alert_after and announces it (on a fast machine, a start within
        # alert_after of it exited before the alert was due, and the test waited in vain)
        opened = time.monotonic()
        wait_for(lambda: time.monotonic() - opened > 1.5, timeout=5, what="alert_after to pass")
        proc = start("run", "-c", str(config), state=tmp_path / "state", log=tmp_path / "mirror.log")
        try:
            wait_for(lambda: calls.exists() and "failure" in calls.read_text(), timeout=60, what="the alert")
        finally:
            proc.terminate()
            proc.wait(20)
    finally:
        server.stop()
    refused = f"the target folder {remote} refuses writes (PermissionError: [Errno 13] Permission denied)"
    assert once.returncode == 1 and refused in once.stdout + once.stderr, once.stdout + once.stderr
    assert refused in calls.read_text()
    assert not os.listdir(remote)


def test_a_target_folder_below_a_file_on_the_server_says_so(sshd: SshServer, tmp_path: Path) -> None:
    """A target folder below a file (sftp://host/srv/b.pdf/sub) failed each file with
    'refused the write without a reason (a full disk or quota?)'."""
    source = tmp_path / "export"
    (source / "2026").mkdir(parents=True)
    (source / "2026" / "invoice.pdf").write_bytes(b"%PDF")
    (tmp_path / "b.pdf").write_bytes(b"%PDF")
    done = mirror("run", "-c", str(_config(sshd, source, tmp_path / "b.pdf" / "sub", tmp_path)), "--once")
    # one line naming the fix, as for a local target: it was a NotADirectoryError's text
    told = (
        f"{tmp_path / 'b.pdf'} on the target is a file where a folder is needed; if mirror did not put it there "
        "(or delete = keep kept it), a run with --rescan moves it into .mirror-trash/"
    )
    assert done.returncode == 1 and told in done.stdout + done.stderr, done.stdout + done.stderr


def test_files_land_on_the_server_no_more_readable_than_in_the_source(sshd: SshServer, tmp_path: Path) -> None:
    """A private invoice (0600) landed as 0644, readable by every account on the server,
    while a local target and OpenSSH's own sftp keep a file's permissions."""
    source = tmp_path / "export"
    source.mkdir()
    made = (("payroll.pdf", 2000, 0o600), ("scan.tif", 3 << 20, 0o600), ("offer.pdf", 100, 0o644))
    for name, size, mode in made:
        (source / name).write_bytes(os.urandom(size))  # small ones go in a batch, a large one alone
        (source / name).chmod(mode)
    remote = tmp_path / "remote"
    run = mirror("run", "--once", "-c", str(_config(sshd, source, remote, tmp_path)))
    assert run.returncode == 0, run.stdout + run.stderr
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in remote.iterdir()}
    assert modes == {"payroll.pdf": "0o600", "scan.tif": "0o600", "offer.pdf": "0o644"}
