"""A source file that changes while it is sent, on targets that upload to a temp name and
rename it into place (a local folder; memory told to, which takes batches) and on one
that commits an upload at once (memory, as S3 or Dropbox): what was read while the file
changed never takes the place of the copy the target had, the index never claims a
version the target lacks, and the file is sent again by a later pass, not at once while
it may still be being written."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backends.local import LocalDriver
from backends.memory import MemoryDriver
from mirror.driver import RemoteEntry
from mirror.events import Report
from mirror.execute import RunStats
from mirror.paths import TEMP_RE
from mirror.plan import plan
from mirror.wording import summarize
from tests.unit.test_plan import Rig


class Meddled(LocalDriver):
    """A local target whose uploads, alone or in batches, run ``meddle`` with the name
    written once the file has been read."""

    meddle: Callable[[str], None] = staticmethod(lambda rel: None)

    def _write(self, src: int, rel: str, mtime_ns: int, mode: int = -1) -> None:
        super()._write(src, rel, mtime_ns, mode)
        self.meddle(rel)


class MeddledMemory(MemoryDriver):
    """A memory target with :class:`Meddled`'s hook; it commits each upload at once,
    unless its capabilities say it renames (then it takes batches too)."""

    meddle: Callable[[str], None] = staticmethod(lambda rel: None)
    batch_files = 3

    def put(self, local_path: str, rel: str, mtime_ns: int) -> RemoteEntry | None:
        landed = super().put(local_path, rel, mtime_ns)
        self.meddle(rel)
        return landed


@pytest.fixture(params=["local folder", "at once", "memory, renaming"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    made = Rig(tmp_path, disk=request.param == "local folder", batched=request.param == "memory, renaming")
    if request.param == "local folder":
        made.driver = Meddled(None, made.root, made.driver.caps)
    else:
        made.driver = MeddledMemory(made.driver.fs, made.root, made.driver.caps)
    made.executor.driver = made.driver
    yield made
    made.close()


def meddle(rig: Rig, work: Callable[[], None]) -> None:
    """Run ``work`` after the next upload has read the file, once."""

    def once(rel: str) -> None:
        rig.driver.meddle = lambda rel: None  # type: ignore[attr-defined]
        work()

    rig.driver.meddle = once  # type: ignore[attr-defined]


def uploaded(rig: Rig, rel: str) -> bytes:
    """What the target holds at ``rel`` (a temp name too)."""
    if isinstance(rig.driver, LocalDriver):
        return Path(rig.root, rel).read_bytes()
    return bytes(rig.driver.fs.cat_file(rig.driver.full(rel)))


def run(rig: Rig) -> RunStats:
    return rig.executor.run(plan(rig.local(), rig.index.entries(), rig.settings("tree")))


def via_temp(rig: Rig) -> bool:
    return rig.driver.caps.atomic_rename


def no_temps(rig: Rig) -> bool:
    return not any(TEMP_RE.match(rel.rpartition("/")[2]) for rel in rig.target())


def test_a_file_rewritten_while_it_is_sent_fails_for_the_pass_and_the_next_sends_it(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """The way of a folder being written: told as news, and apart from the failures in
    the summary. A service log showed a warning for each of 63 files rewritten during a
    pass, and '437 sent, 63 failed'."""
    scan = rig.source / "scan.pdf"
    scan.write_bytes(b"first version")
    assert run(rig).uploaded == 1
    scan.write_bytes(b"second version")
    meddle(rig, lambda: scan.write_bytes(b"third version, still being written"))
    with caplog.at_level(logging.INFO, logger="mirror"):
        stats = run(rig)
    [(src, reason)] = stats.failed
    assert src == "scan.pdf" and "changed while it was sent" in reason
    assert [r.levelno for r in caplog.records if "changed while it was sent" in r.getMessage()] == [logging.INFO]
    report = Report("t", "update", uploaded=2, failed=((src, reason), ("b.pdf", "permission denied")))
    assert summarize(report, named=False).startswith(
        "2 sent (0 B), 0 deleted, 1 failed, 1 changed while sent (sent again once settled) in"
    )
    assert stats.uploaded == 0
    there = rig.target()["scan.pdf"]
    if via_temp(rig):
        # what was read may be a mix of two versions: the copy the target had stays
        assert there == b"first version" and "dropped" in reason
        assert rig.index.entries()["scan.pdf"].size == len(b"first version")
    else:
        # committed as it was read: recorded as such, so the next pass sends the file again
        assert there == b"second version"
        assert rig.index.entries()["scan.pdf"].size == len(b"second version")
    assert no_temps(rig)
    again = run(rig)
    assert again.uploaded == 1 and not again.failed, again
    assert rig.target() == {"scan.pdf": b"third version, still being written"}


def test_a_file_deleted_while_it_is_sent_leaves_no_copy_behind(rig: Rig) -> None:
    scan = rig.source / "scan.pdf"
    (rig.source / "keep.pdf").write_bytes(b"stays, so the source is not empty")
    run(rig)
    scan.write_bytes(b"on its way")
    meddle(rig, scan.unlink)
    stats = run(rig)
    assert not stats.failed, stats
    # a commit that landed is recorded, so the pass that finds the file gone removes it
    assert ("scan.pdf" in rig.target()) == ("scan.pdf" in rig.index.entries()) == (not via_temp(rig))
    run(rig)
    assert rig.target() == {"keep.pdf": b"stays, so the source is not empty"}


def test_a_file_replaced_by_a_folder_while_it_is_sent_is_not_said_to_be_sent_again(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    scan = rig.source / "scan.pdf"
    scan.write_bytes(b"on its way")

    def to_folder() -> None:
        os.unlink(scan)
        scan.mkdir()
        (scan / "page1.pdf").write_bytes(b"page one")

    meddle(rig, to_folder)
    with caplog.at_level(logging.DEBUG, logger="mirror"):
        stats = run(rig)
    assert not stats.failed, stats
    told = [r.getMessage() for r in caplog.records if "scan.pdf" in r.getMessage()]
    assert not [line for line in told if "sending it again" in line or "changed while" in line], told
    assert no_temps(rig)
    run(rig)
    run(rig)  # the copy of the file first, then what the folder holds
    assert rig.target() == {"scan.pdf/page1.pdf": b"page one"}
    shutil.rmtree(scan)


def test_a_small_file_rewritten_while_its_batch_reads_it_keeps_the_copy_there(rig: Rig) -> None:
    if not via_temp(rig):
        pytest.skip("files go in batches to targets that rename them into place")
    invoices = {name: rig.source / name for name in ("a.pdf", "b.pdf")}
    for name, path in invoices.items():
        path.write_bytes(f"invoice {name}".encode())
    assert run(rig).uploaded == 2
    for name, path in invoices.items():
        path.write_bytes(f"invoice {name}, corrected".encode())

    def rewrite_a(rel: str) -> None:
        if uploaded(rig, rel) == b"invoice a.pdf, corrected":
            rig.driver.meddle = lambda rel: None  # type: ignore[attr-defined]
            invoices["a.pdf"].write_bytes(b"invoice a.pdf, corrected again, still being written")

    rig.driver.meddle = rewrite_a  # type: ignore[attr-defined]
    stats = run(rig)
    [(src, reason)] = stats.failed
    assert src == "a.pdf" and "changed while it was sent" in reason
    assert rig.target() == {"a.pdf": b"invoice a.pdf", "b.pdf": b"invoice b.pdf, corrected"}
    assert rig.index.entries()["a.pdf"].size == len(b"invoice a.pdf")
    assert run(rig).uploaded == 1
    assert rig.target()["a.pdf"] == b"invoice a.pdf, corrected again, still being written"
