"""FTP through the generic driver against real FTP servers (pyftpdlib) on 127.0.0.1, as
users configure it: the ``mirror`` command with an ``ftp://`` target."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.cli import files, run, start, wait_for
from tests.reliability.common import write_config
from tests.servers.ftp import ENV, PASSWORD, USER, FtpServer, serve


def test_an_edit_and_a_deletion_reach_a_server_that_renames_onto_no_name(
    iis_like_ftp_server: FtpServer, tmp_path: Path
) -> None:
    """IIS refuses to rename onto an existing name ('550 File exists.'): every edited file
    failed at every pass, and with it every deletion, for as long as mirror ran."""
    source = tmp_path / "export"
    source.mkdir()
    (source / "inv-001.pdf").write_bytes(b"v1")
    (source / "old.pdf").write_bytes(b"old")
    config = write_config(
        tmp_path / "m.toml", source, {"ftp": ("ftp://127.0.0.1/edited", iis_like_ftp_server.options())}
    )
    state = tmp_path / "state"
    first = run("run", "-c", str(config), "--once", state=state, env=ENV)
    assert first.returncode == 0, first.stderr
    (source / "inv-001.pdf").write_bytes(b"v2, corrected total")
    (source / "old.pdf").unlink()
    second = run("run", "-c", str(config), "--once", state=state, env=ENV)
    assert second.returncode == 0, second.stderr
    assert "ftp: 1 sent (19 B), 1 deleted, 0 failed" in second.stdout, second.stdout
    assert files(iis_like_ftp_server.folder / "edited") == {"inv-001.pdf": b"v2, corrected total"}


def test_a_name_with_a_line_break_is_not_mirrored_and_deletions_go_ahead(
    ftp_server: FtpServer, tmp_path: Path
) -> None:
    """No FTP command can carry a CR or LF: a scan named with a newline failed at every
    pass as a transfer error, which held back every deletion for as long as it was there."""
    source = tmp_path / "export"
    source.mkdir()
    for name in ("old-invoice.pdf", "keep.pdf", "scan\nfrom-printer.pdf", "fax\r.pdf"):
        (source / name).write_bytes(b"x")
    config = write_config(tmp_path / "m.toml", source, {"ftp": ("ftp://127.0.0.1/breaks", ftp_server.options())})
    state = tmp_path / "state"
    first = run("run", "-c", str(config), "--once", state=state, env=ENV)
    assert "not mirrored: scan\\nfrom-printer.pdf: the target refuses the character(s) '\\n'" in first.stderr
    assert "not mirrored: fax\\r.pdf: the target refuses the character(s) '\\r'" in first.stderr
    (source / "old-invoice.pdf").unlink()
    second = run("run", "-c", str(config), "--once", state=state, env=ENV)
    assert "ftp: 0 sent (0 B), 1 deleted, 2 failed" in second.stdout, second.stdout + second.stderr
    assert "deletions postponed" not in second.stderr, second.stderr
    assert files(ftp_server.folder / "breaks") == {"keep.pdf": b"x"}


def test_a_password_with_url_characters_percent_encoded_in_the_url_logs_in(tmp_path: Path) -> None:
    """A password holding '@', '#', ':' or '/' can only be written percent-encoded in a URL;
    fsspec handed it to the server as written, so ftp://me:p%40ss@host failed with '530
    Authentication failed' at every run, however right the password."""
    password = "p@ss#w:rd/50%"
    (tmp_path / "served").mkdir()
    server = serve(tmp_path / "served", password=password)
    try:
        source = tmp_path / "export"
        source.mkdir()
        (source / "inv-001.pdf").write_bytes(b"invoice")
        url = f"ftp://{USER}:{quote(password, safe='')}@127.0.0.1:{server.port}/invoices"
        done = run("run", str(source), url, "--once", state=tmp_path / "state")
        assert done.returncode == 0, done.stdout + done.stderr
        assert files(server.folder / "invoices") == {"inv-001.pdf": b"invoice"}
        assert password not in done.stdout + done.stderr
    finally:
        server.stop()


def test_two_targets_on_one_ftp_folder_are_refused_however_the_port_and_login_are_written(
    ftp_server: FtpServer, tmp_path: Path
) -> None:
    """One target with the port in its URL, one with it in its options (the login in the
    URL for a third, fsspec's dir over FTP for a fourth): both ran, and once a file left
    the source the live one deleted the copy the other kept (delete = keep)."""
    source = tmp_path / "export"
    source.mkdir()
    (source / "inv-001.pdf").write_bytes(b"invoice")
    port, login = ftp_server.port, {"username": USER, "password": "${MIRROR_TEST_FTP_PASSWORD}"}
    spellings = {
        "live": (f"ftp://127.0.0.1:{port}/invoices", login),
        "archive": ("ftp://localhost/invoices/", {"port": port, **login}),
        "copy": (f"ftp://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{port}/invoices", {}),
        "wrapped": (
            "dir://invoices",
            {"path": "/", "target_protocol": "ftp", "target_options": {"host": "localhost", "port": port} | login},
        ),
    }
    for other in ("archive", "copy", "wrapped"):
        targets = {"live": spellings["live"], other: spellings[other]}
        config = write_config(tmp_path / f"{other}.toml", source, targets)
        done = run("run", "-c", str(config), "--once", state=tmp_path / "state", env=ENV)
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"targets 'live' and '{other}' both write to ftp://" in done.stderr, done.stderr
        assert f":{port}/invoices; give each target a folder of its own" in done.stderr, done.stderr
        assert PASSWORD not in done.stdout + done.stderr
    assert not (ftp_server.folder / "invoices").exists()


def test_a_refused_login_names_the_server_and_what_to_check(tmp_path: Path) -> None:
    """It said 'ftp: target failed: error_perm: 530 Authentication failed.' alone."""
    source = tmp_path / "export"
    source.mkdir()
    (source / "inv-001.pdf").write_bytes(b"invoice")
    # a server of its own: one that saw failed logins may drop the next connection
    (tmp_path / "served").mkdir()
    server = serve(tmp_path / "served")
    try:
        options = {"port": server.port, "username": USER, "password": "not-the-password"}
        config = write_config(tmp_path / "m.toml", source, {"ftp": ("ftp://127.0.0.1/invoices", options)})
        done = run("run", "-c", str(config), "--once", state=tmp_path / "state")
    finally:
        server.stop()
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        "ftp: target failed: target URL ftp://127.0.0.1/invoices refused the connection (error_perm: 530 "
        "Authentication failed.); check the login (username, password) and the other options"
    ) in done.stderr, done.stderr


def test_a_server_that_refuses_the_connection_is_named_with_what_to_check(tmp_path: Path) -> None:
    """It said 'nas: target failed: ConnectionRefusedError: [Errno 111] Connection
    refused', in run, status and verify: no server, nothing to check."""
    source = tmp_path / "export"
    source.mkdir()
    (source / "inv-001.pdf").write_bytes(b"invoice")
    with socket.socket() as closed:  # a port nothing listens at
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    config = write_config(tmp_path / "m.toml", source, {"nas": ("ftp://127.0.0.1/invoices", {"port": port})})
    done = run("run", "-c", str(config), "--once", state=tmp_path / "state")
    checked = run("verify", "-c", str(config), state=tmp_path / "state")
    told = (
        f"cannot connect to ftp://127.0.0.1/invoices port {port} (connection refused): is the server running, "
        "and are the host and port right?"
    )
    assert done.returncode == 1 and f"nas: target failed: {told}" in done.stderr, done.stderr
    assert checked.returncode != 0 and f"nas: cannot verify: {told}" in checked.stdout + checked.stderr, checked


def _published_names(pid: int) -> set[str]:
    """The abstract socket names process ``pid`` holds, as /proc/net/unix shows them to
    every local user."""
    links = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    with open("/proc/net/unix") as sockets:
        rows = [line.split() for line in sockets]
    return {
        row[7] for row in rows[1:] if len(row) > 7 and f"socket:[{row[6]}]" in links and row[7].startswith("@")
    }


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract socket names are Linux's")
def test_the_names_every_local_user_can_read_tell_nothing_of_the_password(tmp_path: Path) -> None:
    """The claim on a target's place is a socket name any user reads in /proc/net/unix; it
    was a short hash of every option, the password too: a user with a list of likely
    passwords found the bookkeeper's. The names must be the same whatever the password."""
    source = tmp_path / "export"
    source.mkdir()
    (source / "inv-001.pdf").write_bytes(b"invoice")
    (tmp_path / "served").mkdir()
    port, names = None, []
    for password in ("Summer2024!", "Winter2023!"):
        server = serve(tmp_path / "served", port, password=password)
        port = server.port
        options = {"port": port, "username": USER, "password": "${FTP_PW}"}
        config = write_config(tmp_path / "m.toml", source, {"nas": ("ftp://127.0.0.1/invoices", options)})
        log = tmp_path / f"{password}.log"
        proc = start("run", "-c", str(config), state=tmp_path / "state", env={"FTP_PW": password}, log=log)
        try:
            wait_for(lambda: "mirroring" in log.read_text() and bool(_published_names(proc.pid)), log=log)  # noqa: B023
            names.append(_published_names(proc.pid))
        finally:
            proc.terminate()
            assert proc.wait(15) == 0, log.read_text()
            server.stop()
    assert names[0] and names[0] == names[1], names
