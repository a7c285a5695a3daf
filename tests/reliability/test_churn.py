"""Watch mode under steady churn: a program writing, editing, filing away and deleting
files, renaming folders and putting files where folders were (and the reverse), while a
first copy and the passes after it run; both targets end up identical."""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from pathlib import Path

from tests.cli import start, wait_for
from tests.reliability.common import landed, sftp_options, temp_files, write_config
from tests.servers.sshd import SshServer

#: seconds of changes; the first copy of the starting files runs through the first of them
CHURN_S = 8.0


def churn(src: Path, seconds: float, seed: int) -> int:
    """Random changes, about 50 a second, starting at once; returns how many were made
    (a change the tree's shape no longer allows, like a file into a folder that has
    become a file, is skipped)."""
    rng = random.Random(seed)
    made = 0
    until = time.monotonic() + seconds
    names: list[str] = []
    while time.monotonic() < until:
        if made % 25 == 0:  # now and then: a name gone since is one skipped change
            names = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.pdf") if p.is_file())
        op = rng.random()
        try:
            if op < 0.06:
                reshape(src, rng)
            elif op < 0.3 or not names:
                # written, then filed elsewhere at once: the copy being sent loses its source
                rel = f"inbox/new {rng.randrange(10**9)}.pdf"
                filed = src / "filed" / f"{rng.randrange(40):02}" / Path(rel).name
                filed.parent.mkdir(parents=True, exist_ok=True)
                (src / rel).write_bytes(os.urandom(rng.randrange(100, 6000)))
                os.rename(src / rel, filed)
            else:
                path = src / rng.choice(names)
                if op < 0.6:
                    path.write_bytes(os.urandom(rng.randrange(100, 6000)))
                elif op < 0.8:
                    moved = src / "filed" / f"{rng.randrange(40):02}" / f"{rng.randrange(10**9)} {path.name}"
                    moved.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(path, moved)
                else:
                    path.unlink()
        except OSError:
            continue
        made += 1
        time.sleep(0.02)
    return made


def reshape(src: Path, rng: random.Random) -> None:
    """A folder renamed, a file replaced by a folder of its name, or a folder by a file."""
    folders = sorted(p for p in src.glob("*/*") if p.is_dir())
    files = sorted(p for p in src.glob("*/*/*.pdf") if p.is_file())
    op = rng.random()
    if op < 0.4 and folders:
        renamed = src / "renamed" / f"{rng.randrange(10**6)}"
        renamed.parent.mkdir(exist_ok=True)
        os.rename(rng.choice(folders), renamed)
    elif op < 0.7 and files:
        path = rng.choice(files)
        path.unlink()
        path.mkdir()
        (path / "inside.pdf").write_bytes(os.urandom(300))
    elif folders:
        path = rng.choice(folders)
        shutil.rmtree(path)
        path.write_bytes(os.urandom(300))


def test_two_targets_converge_on_a_source_that_never_stops_changing(tmp_path: Path) -> None:
    src, local, remote = tmp_path / "src", tmp_path / "local", tmp_path / "remote"
    (src / "inbox").mkdir(parents=True)
    remote.mkdir()
    rng = random.Random(3)
    for i in range(1500):
        folder = src / f"{2020 + i % 6}" / f"{i % 12 + 1:02}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"invoice {i:05}.pdf").write_bytes(rng.randbytes(rng.randrange(100, 6000)))
    server = SshServer(tmp_path / "sshd")
    server.start()
    log = tmp_path / "mirror.log"
    config = write_config(
        tmp_path / "mirror.toml",
        src,
        {"disk": (str(local), {}), "nas": (server.url(remote), sftp_options(server))},
    )
    proc = start("run", "-c", str(config), state=tmp_path / "state", log=log)
    try:
        assert churn(src, CHURN_S, seed=4) > 100
        expected = landed(src)
        for target in (local, remote):
            wait_for(lambda t=target: landed(t) == expected, timeout=60, what=f"{target.name} to converge")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        server.stop()
    output = log.read_text()
    assert code == 0 and "Traceback" not in output, output[-3000:]
    assert temp_files(local) == [] and temp_files(remote) == []
