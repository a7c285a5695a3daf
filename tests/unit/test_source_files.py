"""A folder swapped for a symlink after mirror saw a file must not get an outside file
uploaded in its place (anyone who may write to the source could otherwise have mirror
send its keys and passwords to the targets)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from mirror.plan import plan
from mirror.source_files import SourceFiles
from tests.unit.test_plan import Rig

SECRET = b"-----BEGIN OPENSSH PRIVATE KEY----- not for the targets"


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("swapped", ["x", "x/.ssh"])
def test_a_folder_swapped_for_a_symlink_after_the_scan_sends_nothing_from_outside(
    batched: bool, swapped: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        outside = Path(tmp) / "outside"
        (outside / ".ssh").mkdir(parents=True)
        (outside / ".ssh" / "id_rsa").write_bytes(SECRET)
        rig = Rig(Path(tmp), batched=batched)
        rig.write({"x/.ssh/id_rsa": b"decoy", "x/.ssh/known.pdf": b"k", "ok.pdf": b"ok", "z.pdf": b"z"})
        actions = plan(rig.local(), {}, rig.settings("tree"), remote={})
        # between the scan and the upload, someone swaps a folder for a link
        (rig.source / swapped).rename(rig.source / f"{swapped}.real")
        (rig.source / swapped).symlink_to(outside / swapped.removeprefix("x").lstrip("/"))
        stats = rig.executor.run(actions)
        landed = rig.target()
        rig.close()
    assert SECRET not in landed.values()
    assert landed == {"ok.pdf": b"ok", "z.pdf": b"z"}
    assert not stats.failed  # gone from the source as mirror sees it, like any removal


def test_source_files_name_the_file_that_was_opened(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.pdf").write_bytes(b"first")
    with SourceFiles(str(tmp_path)) as files:
        name = files.path("a/f.pdf")
        (tmp_path / "a" / "f.pdf").rename(tmp_path / "a" / "moved.pdf")
        (tmp_path / "a" / "f.pdf").write_bytes(b"someone else's")
        assert Path(name).read_bytes() == b"first"
        with pytest.raises(FileNotFoundError):
            files.path("a/missing.pdf")
        os.mkfifo(tmp_path / "a" / "fifo")
        with pytest.raises(FileNotFoundError):
            files.path("a/fifo")  # refused, and the open did not wait for a writer
