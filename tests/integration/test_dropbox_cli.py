"""End to end: `mirror run --once` then `mirror verify` against the fake Dropbox, as subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.servers.dropbox import DropboxServer

MiB = 1024 * 1024


def cli(
    dropbox_server: DropboxServer, tmp_path: Path, source: Path, settings: str = ""
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``mirror ARGS`` as a subprocess, with a config mirroring ``source`` to the fake."""
    config = tmp_path / "mirror.toml"
    config.write_text(
        f'source = "{source}"\n\n[targets.dropbox]\nurl = "dropbox://Invoices"\n{settings}'
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

    return mirror


def test_mirror_run_once_then_verify(dropbox_server: DropboxServer, tmp_path: Path) -> None:
    source = tmp_path / "export"
    (source / "2024").mkdir(parents=True)
    invoices = {f"2024/inv-{i:03d}.pdf": os.urandom(200 + i) for i in range(60)}
    invoices["big scan.tif"] = os.urandom(20 * MiB + 7)
    for rel, data in invoices.items():
        (source / rel).write_bytes(data)
    mirror = cli(dropbox_server, tmp_path, source)

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


def test_a_renamed_folder_moves_and_a_deleted_one_goes_in_batch_routes(
    dropbox_server: DropboxServer, tmp_path: Path
) -> None:
    source = tmp_path / "export"
    for year in ("2023", "2024"):
        (source / year).mkdir(parents=True)
        for i in range(100):
            (source / year / f"inv-{i:03d}.pdf").write_bytes(b"%s %d" % (year.encode(), i))
    mirror = cli(dropbox_server, tmp_path, source, "max_delete = 150\n")

    assert mirror("run", "--once").returncode == 0
    fake = dropbox_server.fake
    (source / "archive").mkdir()
    (source / "2023").rename(source / "archive" / "2023")
    for path in (source / "2024").iterdir():
        path.unlink()
    before = len(fake.log)
    done = mirror("run", "--once")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "100 moved, 100 deleted" in done.stdout + done.stderr
    assert {n.display for n in fake.state.files.values()} == {
        f"/Invoices/archive/2023/inv-{i:03d}.pdf" for i in range(100)
    }
    routes = [r.route for r in fake.log[before:]]
    # 16 workers: 100 files go in groups of 7, each one batch route and its checks
    assert routes.count("files/move_batch_v2") == 15 and routes.count("files/delete_batch") == 15, routes
    assert "files/move_batch/check_v2" in routes and "files/delete_batch/check" in routes
    # one at a time: only the two folders left empty (2023 moved away, 2024 emptied)
    assert "files/move_v2" not in routes and routes.count("files/delete_v2") == 2, routes
    # the workers moving into archive/2023 at once wait for one of them to make it
    assert routes.count("files/create_folder_v2") == 1, routes
    check = mirror("verify")
    assert check.returncode == 0, check.stdout + check.stderr


def test_files_copied_to_a_new_disk_with_their_times_are_checked_by_hash_not_sent_again(
    dropbox_server: DropboxServer, tmp_path: Path
) -> None:
    """New inodes with the same sizes and times (the source folder restored or copied to
    another disk) could hide a swap, so each file is compared with Dropbox's hash of it:
    equal files are not uploaded again, and a swapped pair is."""
    source = tmp_path / "export"
    source.mkdir()
    invoices = {f"inv-{i:02d}.pdf": b"invoice %02d" % i for i in range(20)}
    for rel, data in invoices.items():
        (source / rel).write_bytes(data)
        os.utime(source / rel, ns=(1_709_294_400 * 10**9,) * 2)
    mirror = cli(dropbox_server, tmp_path, source)
    assert mirror("run", "--once").returncode == 0
    fake = dropbox_server.fake

    # the old files stay linked elsewhere, as on the old disk: a freed inode number could
    # otherwise come back for another file, and hide the swap below from any inode check
    (tmp_path / "old disk").mkdir()
    for rel in invoices:
        os.link(source / rel, tmp_path / "old disk" / rel)
        copy = source / f"{rel}.copy"
        copy.write_bytes((source / rel).read_bytes())
        os.utime(copy, ns=(1_709_294_400 * 10**9,) * 2)
        copy.replace(source / rel)
    (source / "inv-00.pdf").rename(source / "swap")
    (source / "inv-01.pdf").rename(source / "inv-00.pdf")
    (source / "swap").rename(source / "inv-01.pdf")
    before = len(fake.log)
    again = mirror("run", "--once")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 sent" in again.stdout and "18 already there" in again.stdout, again.stdout
    assert sum(r.body_bytes for r in fake.log[before:]) == len(b"invoice 00") * 2
    assert fake.file_bytes("/Invoices/inv-00.pdf") == b"invoice 01"
    assert fake.file_bytes("/Invoices/inv-01.pdf") == b"invoice 00"
    assert "0 sent" in mirror("run", "--once").stdout


def test_a_folder_and_a_stray_file_dropbox_takes_for_one_name_send_the_folder(
    dropbox_server: DropboxServer, tmp_path: Path
) -> None:
    """A folder Belege/ of invoices and a stray export file 'belege' beside it, to a new
    Dropbox folder: both were refused on every run, 'clashes with a file or folder of the
    same name on the target' while the target was empty, and no invoice was ever sent.
    The folder's files are now sent; only the file is refused, naming the folder."""
    source = tmp_path / "export"
    (source / "Belege").mkdir(parents=True)
    for i in range(3):
        (source / "Belege" / f"beleg-{i}.pdf").write_bytes(b"%%PDF %d" % i)
    (source / "belege").write_bytes(b"a stray export file")
    mirror = cli(dropbox_server, tmp_path, source)

    first = mirror("run", "--once")
    assert first.returncode == 1, first.stdout + first.stderr
    assert (
        "failed: belege: 'belege' clashes with the folder 'Belege' (the target takes the two names for one): "
        "the folder's files are sent, this file is not; rename one of them"
    ) in first.stderr, first.stderr
    for run in (first, mirror("run", "--once")):
        assert "Belege/" not in run.stderr and "failed: belege:" in run.stderr, run.stderr
    assert {n.display for n in dropbox_server.fake.state.files.values()} == {
        f"/Invoices/Belege/beleg-{i}.pdf" for i in range(3)
    }
    check = mirror("verify")
    assert check.returncode == 1 and "belege: missing on the target" in check.stdout, check.stdout
    assert "Belege/beleg-0.pdf" not in check.stdout, check.stdout


def test_an_expired_token_is_told_in_one_line(dropbox_server: DropboxServer, tmp_path: Path) -> None:
    """The Dropbox SDK's own warning came first, with the spaces of its source's line
    continuation: 'Unable to refresh access token without                 refresh token
    and app key'."""
    source = tmp_path / "export"
    source.mkdir()
    (source / "a.pdf").write_bytes(b"a")
    mirror = cli(dropbox_server, tmp_path, source)
    assert mirror("run", "--once").returncode == 0
    (source / "b.pdf").write_bytes(b"b")
    fake = dropbox_server.fake
    for token in fake.access_tokens:  # hours later, a short-lived token has expired
        fake.access_tokens[token] = 0.0
    expired = mirror("run", "--once")
    assert expired.returncode == 1
    told = expired.stderr.splitlines()
    assert len(told) == 1 and told[0].startswith("dropbox: target failed: "), expired.stderr
    assert "mirror auth dropbox" in told[0]
