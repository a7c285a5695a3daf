"""Secrets stay secret, state stays private, writes stay inside the target root.

One run at debug level against targets that carry every kind of secret (a WebDAV
password, S3 keys, a Dropbox token, a wrong password on a target that fails), then
``status``, ``status --json`` and ``verify``; every byte they print, and every file in
the state folder (sqlite, WAL, lock) while mirror runs and after, is searched for each
secret. File modes are checked while a watch-mode run holds its WAL open.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.cli import files, run, start, wait_for
from tests.reliability.common import landed
from tests.servers.dropbox import DropboxServer
from tests.servers.s3 import S3Server
from tests.servers.sshd import SshServer
from tests.servers.webdav import WebdavServer

WRONG_PASSWORD = "Wr0ng-pa55word-for-the-test"


def state_bytes(state: Path) -> bytes:
    return b"".join(p.read_bytes() for p in state.rglob("*") if p.is_file())


def test_secrets_never_appear_in_output_status_or_state(
    tmp_path: Path, webdav_server: WebdavServer, s3_server: S3Server, dropbox_server: DropboxServer
) -> None:
    source = tmp_path / "export"
    source.mkdir()
    for i in range(5):
        (source / f"invoice {i}.pdf").write_bytes(os.urandom(300))
    bucket = s3_server.new_bucket()
    secrets = {
        "WEBDAV_PW": webdav_server.options()["password"],
        "S3_KEY": "AKIA" + "K3YF0RTHETEST",
        "S3_SECRET": "s3-s3cret/with+slash=" + "x" * 8,
        "DROPBOX_TOKEN": dropbox_server.token,
        "BAD_PW": WRONG_PASSWORD,
    }
    config = tmp_path / "m.toml"
    config.write_text(
        f'source = "{source}"\n'
        "[targets.dav]\n"
        f'url = "{webdav_server.url("sec")}"\n'
        f'options = {{ username = "{webdav_server.options()["username"]}", password = "${{WEBDAV_PW}}" }}\n'
        "[targets.s3]\n"
        f'url = "s3://{bucket}/m"\n'
        f'options = {{ endpoint_url = "{s3_server.endpoint}", region = "us-east-1", key = "${{S3_KEY}}", '
        'secret = "${S3_SECRET}" }\n'
        "[targets.box]\n"
        'url = "dropbox://Sec"\n'
        'options = { token = "${DROPBOX_TOKEN}" }\n'
        "[targets.baddav]\n"
        f'url = "{webdav_server.url("bad")}"\n'
        'options = { username = "intruder", password = "${BAD_PW}" }\n'
    )
    env = {**dropbox_server.env, **secrets}
    state = tmp_path / "state"
    outputs = []
    once = run("run", "-c", str(config), "--once", "-vv", state=state, env=env, timeout=120)
    outputs.append(once.stdout + once.stderr)
    assert once.returncode in (1, 2), once.stderr  # the bad password fails its target
    assert "debug" in once.stderr or "intruder" in once.stderr
    json_run = run(
        "run", "-c", str(config), "--once", "-v", "--log-format", "json", "--target", "dav",
        state=state, env=env, timeout=120,
    )  # fmt: skip
    outputs.append(json_run.stdout + json_run.stderr)
    log = tmp_path / "watch.log"
    proc = start("run", "-c", str(config), "--target", "s3", "-vv", state=state, env=env, log=log)
    try:
        wait_for(lambda: "mirroring" in log.read_text(), timeout=30, what="watch mode")
        (source / "while watching.pdf").write_bytes(b"new")
        wait_for(lambda: "while watching.pdf" in log.read_text(), timeout=30, what="the new file")
        running_state = state_bytes(state)
    finally:
        proc.terminate()
        proc.wait(30)
    outputs.append(log.read_text())
    for args in (["status", "-c", str(config)], ["status", "-c", str(config), "--json"], ["status"],
                 ["verify", "-c", str(config), "-vv"]):  # fmt: skip
        done = run(*args, state=state, env=env, timeout=120)
        outputs.append(done.stdout + done.stderr)
    everything = "\n".join(outputs)
    stored = running_state + state_bytes(state)
    for name, secret in secrets.items():
        assert secret not in everything, f"{name} leaked into the output"
        assert secret.encode() not in stored, f"{name} leaked into the state folder"
    assert "intruder" in everything, "the failing target was never reported: the test proves nothing"


def test_state_files_are_0600_and_folders_0700_while_running(tmp_path: Path) -> None:
    source, target, state, log = tmp_path / "export", tmp_path / "backup", tmp_path / "state", tmp_path / "m.log"
    source.mkdir()
    (source / "a.pdf").write_bytes(b"a")
    old = os.umask(0o022)  # a typical umask: mirror must not rely on a strict one
    try:
        proc = start("run", str(source), str(target), state=state, log=log)
    finally:
        os.umask(old)
    try:
        wait_for(lambda: "a.pdf" in landed(target), timeout=30, what="the first copy")
        wait_for(lambda: any(state.rglob("*-wal")), timeout=10, what="the WAL file")
        seen = list(state.rglob("*"))
        assert any(p.name.endswith(".lock") for p in seen) and any(p.name.endswith("-wal") for p in seen)
        for path in [state, *seen]:
            mode = stat.S_IMODE(path.stat().st_mode)
            expected = 0o700 if path.is_dir() else 0o600
            assert mode == expected, f"{path.relative_to(tmp_path)} has mode {oct(mode)}"
    finally:
        proc.terminate()
        proc.wait(30)


def test_no_name_writes_outside_the_target_root(tmp_path: Path) -> None:
    """Names that look like paths, and every named layout, stay inside the root."""
    source, sandbox, state = tmp_path / "export", tmp_path / "sandbox", tmp_path / "state"
    target = sandbox / "a" / "b" / "backup"
    target.mkdir(parents=True)
    for name in ["...", ". .", "..\\..\\escape.pdf", "..%2f..%2fescape.pdf", "%2e%2e", "~", "$HOME", "-"]:
        (source / "x").mkdir(parents=True, exist_ok=True)
        (source / "x" / name).write_bytes(name.encode())
    for layout in ["tree", "flat", "by-year", "by-month", "{parent}/{year}/{stem}{suffix}"]:
        result = run("run", str(source), str(target / layout.strip("{}/")), "--once", "--layout", layout,
                     state=state / layout.strip("{}/"))  # fmt: skip
        assert result.returncode == 0, result.stderr
    outside = {p for p in files(sandbox) if not p.startswith("a/b/backup/")}
    assert outside == set(), outside
    assert not (tmp_path / "escape.pdf").exists() and not (sandbox / "escape.pdf").exists()


def test_sftp_refuses_an_unknown_host_key_by_default(sshd: SshServer, tmp_path: Path) -> None:
    """No known_hosts option: ~/.ssh/known_hosts (empty here) is used, and nothing is written."""
    source, remote = tmp_path / "export", tmp_path / "remote"
    source.mkdir()
    remote.mkdir()
    (source / "a.pdf").write_bytes(b"a")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    config = tmp_path / "m.toml"
    config.write_text(
        f'source = "{source}"\n[targets.nas]\nurl = "{sshd.url(remote)}"\n'
        f'options = {{ key_filename = "{sshd.client_key}", allow_agent = false, look_for_keys = false }}\n'
    )
    result = run("run", "-c", str(config), "--once", state=tmp_path / "state", env={"HOME": str(home)})
    assert result.returncode in (1, 2), result.stdout + result.stderr
    assert "host key" in result.stderr and "Traceback" not in result.stderr
    assert list(remote.iterdir()) == []
    # and the unknown key was not quietly recorded either
    known = home / ".ssh" / "known_hosts"
    assert not known.exists() or "127.0.0.1" not in known.read_text()
