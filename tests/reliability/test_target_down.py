"""A target down in the middle of watch mode, then back: converges without a restart.

sshd is stopped and the Dropbox fake answers 503 to everything for the outage; a third,
local target stays healthy. While the two are down, files are created, changed, renamed
and deleted: the local target must follow at once, and once the others return they must
end identical to the source with no change lost (lsyncd loses them: its issues #381 and
#566), with the same ``mirror`` process still running.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.cli import files, run, start, wait_for
from tests.fakes.dropbox_api import Fault
from tests.reliability.common import landed, sftp_options, write_config
from tests.servers.dropbox import DropboxServer
from tests.servers.ftp import serve
from tests.servers.sshd import SshServer, free_port


def dropbox_files(server: DropboxServer, root: str) -> dict[str, bytes]:
    prefix = f"/{root}/"
    return {n.display.removeprefix(prefix): n.data for n in server.fake.state.files.values()}


@pytest.mark.parametrize(
    "outage", [pytest.param(4.0, id="4s"), pytest.param(30.0, id="30s", marks=pytest.mark.slow)]
)
@pytest.mark.timeout(400)
def test_targets_down_in_watch_mode_converge_and_lose_nothing(
    outage: float, tmp_path: Path, dropbox_server: DropboxServer
) -> None:
    server = SshServer(tmp_path / "sshd")
    server.start()
    source, remote, disk = tmp_path / "export", tmp_path / "remote", tmp_path / "disk"
    source.mkdir()
    remote.mkdir()
    for i in range(20):
        (source / f"invoice {i:02}.pdf").write_bytes(os.urandom(2000))
    config = write_config(
        tmp_path / "m.toml",
        source,
        {
            "nas": (server.url(remote), sftp_options(server)),
            "box": ("dropbox://Down", {"token": "${DROPBOX_TOKEN}"}),
            "disk": (str(disk), {}),
        },
        settle="0.2s",
    )
    env = {**dropbox_server.env, "DROPBOX_TOKEN": dropbox_server.token}
    log = tmp_path / "mirror.log"
    proc = start("run", "-c", str(config), state=tmp_path / "state", env=env, log=log)
    fault = None
    try:
        wait_for(
            lambda: landed(remote) == files(source) == dropbox_files(dropbox_server, "Down") == landed(disk),
            timeout=60,
            what="the first copy on all three targets",
        )
        server.stop()
        fault = dropbox_server.fake.inject(Fault("503", count=10**9))
        down_at = time.monotonic()
        (source / "new while down.pdf").write_bytes(b"created during the outage")
        (source / "invoice 00.pdf").write_bytes(b"changed during the outage")
        (source / "invoice 01.pdf").rename(source / "invoice 01 renamed.pdf")
        (source / "invoice 02.pdf").unlink()
        (source / "sub").mkdir()
        (source / "sub" / "nested.pdf").write_bytes(b"in a new folder")
        # the healthy target keeps syncing while the others are down
        wait_for(lambda: landed(disk) == files(source), timeout=30, what="the healthy target during the outage")
        time.sleep(max(0.0, outage / 2 - (time.monotonic() - down_at)))
        (source / "late while down.pdf").write_bytes(b"written in the second half of the outage")
        wait_for(lambda: landed(disk) == files(source), timeout=30, what="the healthy target, second change")
        time.sleep(max(0.0, outage - (time.monotonic() - down_at)))
        assert proc.poll() is None, "mirror must survive the outage"
        server.start()
        fault.count = 0
        expected = files(source)
        # after the outage the runner's backoff (at most 60 s) must still bring both back
        wait_for(lambda: landed(remote) == expected, timeout=120, what="the SFTP target after the outage")
        wait_for(
            lambda: dropbox_files(dropbox_server, "Down") == expected, timeout=120, what="Dropbox after the outage"
        )
        assert landed(disk) == expected
        assert proc.poll() is None
        proc.terminate()
        assert proc.wait(30) == 0
    finally:
        if fault is not None:
            fault.count = 0
        if proc.poll() is None:
            proc.kill()
        server.stop()
    text = log.read_text()
    assert "unreachable" in text or "retrying" in text, "the outage went unnoticed: the test exercised nothing"


@pytest.mark.timeout(120)
def test_a_target_that_stays_down_is_probed_not_retried_at_every_pass(tmp_path: Path) -> None:
    """A NAS switched off for a week: once a pass has found it down, each later pass makes
    one attempt and one log line, where each made five attempts and five lines (thousands
    a day in the journal); a file waiting is not marked failed again and again."""
    server = SshServer(tmp_path / "sshd")
    server.start()
    source, remote = tmp_path / "export", tmp_path / "remote"
    source.mkdir()
    remote.mkdir()
    (source / "a.pdf").write_bytes(b"a")
    config = write_config(tmp_path / "m.toml", source, {"nas": (server.url(remote), sftp_options(server))})
    log = tmp_path / "mirror.log"
    proc = start("run", "-c", str(config), state=tmp_path / "state", log=log)
    try:
        wait_for(lambda: landed(remote) == files(source), what="the first copy")
        server.stop()
        (source / "b.pdf").write_bytes(b"written while the NAS is off")
        wait_for(lambda: log.read_text().count("target unreachable") >= 4, timeout=60, what="four passes")
        shown = json.loads(run("status", "--json", state=tmp_path / "state").stdout)
        assert shown[0]["pending"] == 1, shown  # the file waiting, where status said 0
        server.start()
        wait_for(lambda: landed(remote) == files(source), timeout=60, what="the file written during the outage")
    finally:
        proc.terminate()
        proc.wait(30)
        server.stop()
    lines = log.read_text().splitlines()
    retries = [line for line in lines if "retrying in" in line and "attempt" in line]
    assert len(retries) <= 4, "\n".join(lines)  # the first pass's tries 2 to 5
    assert sum("failed: b.pdf" in line for line in lines) <= 1, "\n".join(lines)


@pytest.mark.timeout(120)
def test_an_ftp_server_restarted_in_watch_mode_gets_the_next_invoice(tmp_path: Path) -> None:
    """An FTP server restarted while mirror watched (or one that closed the idle
    connection, as every server does after a few minutes): the next invoice reaches it
    over a new connection, where every later file failed with BrokenPipeError for as long
    as mirror ran, and the target was called unreachable with the server up."""
    source, remote = tmp_path / "export", tmp_path / "ftp"
    source.mkdir()
    remote.mkdir()
    (source / "inv-001.pdf").write_bytes(b"a")
    server = serve(remote)
    targets = {"ftp": ("ftp://127.0.0.1/backup", server.options())}
    config = write_config(tmp_path / "m.toml", source, targets, settle="0.2s")
    proc = start("run", "-c", str(config), state=tmp_path / "state", log=tmp_path / "mirror.log")
    try:
        wait_for(lambda: landed(remote / "backup") == files(source), what="the first copy")
        server.stop()
        server = serve(remote, server.port)
        (source / "inv-002.pdf").write_bytes(b"b")
        wait_for(lambda: landed(remote / "backup") == files(source), timeout=60, what="the file after the restart")
    finally:
        proc.terminate()
        proc.wait(30)
        server.stop()


@pytest.mark.timeout(120)
def test_an_smb_server_down_at_start_is_retried_not_taken_for_a_mistake_in_the_options(tmp_path: Path) -> None:
    """A NAS still booting after a power cut when mirror starts: its SMB share is retried
    within seconds, as an FTP server's is, where the target was stopped for an hour as
    'the smb backend cannot take these options: Failed to connect to ...'."""
    pytest.importorskip("smbprotocol")
    source = tmp_path / "export"
    source.mkdir()
    (source / "inv-001.pdf").write_bytes(b"a")
    nas = ("smb://127.0.0.1/invoices/2026", {"username": "backup", "password": "pw", "port": free_port()})
    config = write_config(tmp_path / "m.toml", source, {"nas": nas}, settle="0.2s")
    log = tmp_path / "mirror.log"
    proc = start("run", "-c", str(config), state=tmp_path / "state", log=log)
    try:
        wait_for(lambda: log.read_text().count("[nas] target unreachable") >= 2, timeout=60, what="two attempts")
    finally:
        proc.terminate()
        proc.wait(30)
    text = log.read_text()
    told = "cannot connect to smb://127.0.0.1/invoices/2026 port"
    assert told in text and "(connection refused)" in text and "cannot take these options" not in text, text


@pytest.mark.timeout(180)
def test_a_nas_share_that_comes_back_empty_after_an_outage_is_filled_again(tmp_path: Path) -> None:
    """The NAS went down in watch mode and its share came back as an empty folder (a disk
    swapped, a share restored empty): the first pass after the outage sends every file,
    where it sent only the one written meanwhile (3 files of 23 on the NAS), status said
    in sync with a fresh last complete sync, a restart sent nothing, and only verify or
    the hourly rescan found the rest missing."""
    server = SshServer(tmp_path / "sshd")
    server.start()
    source, remote = tmp_path / "export", tmp_path / "remote"
    (source / "2026-01").mkdir(parents=True)
    remote.mkdir()
    for i in range(20):
        (source / "2026-01" / f"invoice-{i:02}.pdf").write_bytes(os.urandom(2000))
    config = write_config(
        tmp_path / "m.toml", source, {"nas": (server.url(remote), sftp_options(server))}, settle="0.2s"
    )
    state = tmp_path / "state"
    log = tmp_path / "mirror.log"
    proc = start("run", "-c", str(config), state=state, log=log)
    try:
        wait_for(lambda: landed(remote) == files(source), what="the first copy")
        server.stop()
        remote.rename(tmp_path / "remote.old")
        remote.mkdir()
        # a new month's folder: making it fails, and no temp file is left that would have
        # the next pass list the NAS anyway
        (source / "2026-02").mkdir()
        (source / "2026-02" / "during.pdf").write_bytes(b"written during the outage")
        wait_for(lambda: "target unreachable" in log.read_text(), timeout=60, what="the NAS found down")
        server.start()
        (source / "2026-02" / "invoice-1.pdf").write_bytes(b"after the outage")
        wait_for(lambda: landed(remote) == files(source), timeout=60, what="every file back on the NAS")
        status = run("status", "-c", str(config), state=state)
        assert status.returncode == 0, status.stdout + status.stderr
    finally:
        proc.terminate()
        proc.wait(30)
        server.stop()
    server.start()
    try:
        verify = run("verify", "-c", str(config), state=state)
    finally:
        server.stop()
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.timeout(120)
def test_a_stop_while_the_server_hangs_mid_upload_is_prompt(tmp_path: Path) -> None:
    """SIGTERM while an upload's link had stalled took 35 s: after 5 s of waiting for the
    stuck upload, mirror opened a new connection to remove its temp file, and waited the
    whole SSH timeout for it; a service manager stopping it sooner killed it."""
    server = SshServer(tmp_path / "sshd")
    server.start()
    source, remote, log = tmp_path / "export", tmp_path / "remote", tmp_path / "mirror.log"
    source.mkdir()
    remote.mkdir()
    (source / "first.pdf").write_bytes(b"first")
    options = {**sftp_options(server), "timeout": 30}
    config = write_config(tmp_path / "m.toml", source, {"nas": (server.url(remote), options)}, settle="0.2s")
    proc = start("run", "-c", str(config), state=tmp_path / "state", log=log)
    stopped: list[int] = []
    try:
        wait_for(lambda: files(remote) == {"first.pdf": b"first"}, timeout=30, what="the first copy")
        with open(source / "scan.pdf", "wb") as big:
            big.truncate(400 * 2**20)
        wait_for(lambda: any(p.name.startswith(".~mirror-") for p in remote.iterdir()), what="the upload to start")
        stopped = server.pause()  # the link stalls: nothing answers, nothing closes
        time.sleep(1.0)
        asked = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        took = time.monotonic() - asked
    finally:
        server.resume(stopped)
        if proc.poll() is None:
            proc.kill()
        server.stop()
    text = log.read_text()
    assert code == 0, text
    assert took < 20, f"stopping took {took:.1f} s\n{text}"
    assert "[nas] stopped with an upload still running" in text, text
    # a stop asked for, with an upload cut off: incomplete, not 'killed, or a crash'
    shown = run("status", "-c", str(config), state=tmp_path / "state")
    assert shown.returncode == 1 and "incomplete: the last run ended before" in shown.stdout, shown.stdout
    assert "without stopping cleanly" not in shown.stdout, shown.stdout


@pytest.mark.timeout(120)
def test_a_folder_renamed_while_the_target_is_down_counts_each_file_once(tmp_path: Path) -> None:
    """A USB disk unplugged while a folder of 20 invoices was renamed: status and the
    mirror_pending metric said 41 pending (both paths of each rename, and the folder),
    where the disk, back, got 20 moves."""
    source, usb, state = tmp_path / "export", tmp_path / "usb", tmp_path / "state"
    (source / "2025").mkdir(parents=True)
    for i in range(20):
        (source / "2025" / f"inv{i}.pdf").write_bytes(f"invoice {i}".encode())
    log = tmp_path / "mirror.log"
    proc = start("run", str(source), str(usb), state=state, log=log)

    def pending() -> int:
        shown = json.loads(run("status", str(source), str(usb), "--json", state=state).stdout)
        return int(shown[0]["pending"])

    try:
        wait_for(lambda: files(usb) == files(source), what="the first copy")
        usb.rename(tmp_path / "unplugged")
        (source / "2025").rename(source / "archive-2025")
        wait_for(lambda: pending() == 20, timeout=30, what="20 pending")
        (tmp_path / "unplugged").rename(usb)
        wait_for(lambda: files(usb) == files(source), timeout=60, what="the moves once the disk is back")
    finally:
        proc.terminate()
        proc.wait(30)
    assert "0 sent (0 B), 20 moved, 0 deleted, 0 failed" in log.read_text()
