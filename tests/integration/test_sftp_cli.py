"""End to end: ``mirror run --once`` then ``mirror verify`` against the real sshd."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
