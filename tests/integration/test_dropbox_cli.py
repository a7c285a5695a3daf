"""End to end: `mirror run --once` then `mirror verify` against the fake Dropbox, as subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.servers.dropbox import DropboxServer

MiB = 1024 * 1024


def test_mirror_run_once_then_verify(dropbox_server: DropboxServer, tmp_path: Path) -> None:
    source = tmp_path / "export"
    (source / "2024").mkdir(parents=True)
    invoices = {f"2024/inv-{i:03d}.pdf": os.urandom(200 + i) for i in range(60)}
    invoices["big scan.tif"] = os.urandom(20 * MiB + 7)
    for rel, data in invoices.items():
        (source / rel).write_bytes(data)
    config = tmp_path / "mirror.toml"
    config.write_text(
        f'source = "{source}"\n\n[targets.dropbox]\nurl = "dropbox://Invoices"\n'
        'options = { token = "${DROPBOX_TOKEN}" }\n'
    )
    env = {**os.environ, **dropbox_server.env, "DROPBOX_TOKEN": dropbox_server.token}

    def mirror(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mirror.cli", *args, "-c", str(config), "--state-dir", str(tmp_path / "state")],
            capture_output=True,
            text=True,
            timeout=90,
            env=env,
            cwd=tmp_path,
        )

    first = mirror("run", "--once")
    assert first.returncode == 0, first.stdout + first.stderr
    fake = dropbox_server.fake
    assert {n.display: n.data for n in fake.state.files.values()} == {
        f"/Invoices/{rel}": data for rel, data in invoices.items()
    }
    assert dropbox_server.token not in first.stdout + first.stderr

    (source / "2024" / "inv-000.pdf").write_bytes(b"corrected invoice")
    before = len(fake.log)
    second = mirror("run", "--once")
    assert second.returncode == 0, second.stdout + second.stderr
    assert fake.file_bytes("/Invoices/2024/inv-000.pdf") == b"corrected invoice"
    uploads = [r for r in fake.log[before:] if r.body_bytes]
    assert sum(r.body_bytes for r in uploads) == len(b"corrected invoice")

    check = mirror("verify")
    assert check.returncode == 0, check.stdout + check.stderr
