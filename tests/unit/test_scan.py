"""Scanning the source: junk, special files, links and hostile names."""

from __future__ import annotations

import os
import socket
import tempfile
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirror.filters import Filter
from mirror.scan import Entries, LocalEntry, scan, stat_paths

HOSTILE = ["a [1].pdf", "b*?.pdf", "c #%20 d.pdf", "-leading.pdf", "trailing. ", "ünïcödé €.pdf", "x" * 255]


def test_regular_files_are_found_with_size_and_mtime(tmp_path: Path) -> None:
    (tmp_path / "sub" / "deep").mkdir(parents=True)
    for name in HOSTILE:
        (tmp_path / "sub" / name).write_bytes(b"12345")
    (tmp_path / "sub" / "deep" / "f.txt").write_text("hi")
    os.utime(tmp_path / "sub" / "deep" / "f.txt", ns=(10**18, 1_234_567_891_234_567_891))
    snap = scan(tmp_path, Filter())
    assert set(snap.entries) == {f"sub/{n}" for n in HOSTILE} | {"sub/deep/f.txt"}
    assert snap.entries["sub/deep/f.txt"].mtime_ns == 1_234_567_891_234_567_891
    assert snap.entries["sub/a [1].pdf"].size == 5


def test_junk_is_skipped_by_default(tmp_path: Path) -> None:
    junk = [
        "Thumbs.db",
        "desktop.ini",
        ".DS_Store",
        "~$invoice.docx",
        ".~lock.x.odt#",
        "a.tmp",
        "b.part",
        "c.crdownload",
        "THUMBS.DB",
    ]
    for name in [*junk, "keep.pdf"]:
        (tmp_path / name).write_text("x")
    assert set(scan(tmp_path, Filter()).entries) == {"keep.pdf"}


def test_include_and_exclude_patterns_are_gitignore_style(tmp_path: Path) -> None:
    for rel in ["a.pdf", "b.txt", "drafts/c.pdf", "x/drafts/d.pdf", "x/e.pdf"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    only_pdf = Filter(include=["*.pdf"], exclude=["drafts/"])
    assert set(scan(tmp_path, only_pdf).entries) == {"a.pdf", "x/e.pdf"}
    assert stat_paths(tmp_path, ["drafts/c.pdf", "x/e.pdf"], only_pdf) == {
        "drafts/c.pdf": None,
        "x/e.pdf": scan(tmp_path, only_pdf).entries["x/e.pdf"],
    }


@pytest.mark.parametrize("typed", ["NFC", "NFD"])
def test_patterns_match_names_in_either_unicode_form(tmp_path: Path, typed: str) -> None:
    """Typed in a config (composed), they missed names a Mac made (decomposed), and the
    other way round: excluded drafts went to the target."""
    made = "NFD" if typed == "NFC" else "NFC"
    for rel in ["Entwürfe/a.pdf", "Rechnung-Müller.pdf", "ok.pdf"]:
        path = tmp_path / unicodedata.normalize(made, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    patterns = [unicodedata.normalize(typed, p) for p in ["Entwürfe/", "*Müller*"]]
    assert set(scan(tmp_path, Filter(exclude=patterns)).entries) == {"ok.pdf"}
    only = Filter(include=[unicodedata.normalize(typed, "*Müller*")])
    assert set(scan(tmp_path, only).entries) == {unicodedata.normalize(made, "Rechnung-Müller.pdf")}


def test_links_fifos_and_sockets_are_skipped_without_being_opened(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    outside = tmp_path / "secret.txt"
    outside.write_text("outside the source")
    (src / "link-out").symlink_to(outside)
    (src / "link-dir").symlink_to(tmp_path)
    (src / "real.pdf").write_text("x")
    (src / "link-in").symlink_to(src / "real.pdf")
    os.mkfifo(src / "fifo")  # opening it would block forever: a hang would fail the test by timeout
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock"))
    try:
        snap = scan(src, Filter())
    finally:
        sock.close()
    assert set(snap.entries) == {"real.pdf"}
    reasons = {s.path: s.reason for s in snap.skipped}
    assert set(reasons) == {"link-out", "link-dir", "link-in", "fifo", "sock"}
    assert "link" in reasons["link-out"] and "FIFO" in reasons["fifo"] and "socket" in reasons["sock"]


def test_names_that_are_not_utf8_are_skipped_with_a_reason(tmp_path: Path) -> None:
    os.close(os.open(os.path.join(os.fsencode(tmp_path), b"bad-\xff.pdf"), os.O_CREAT | os.O_WRONLY, 0o644))
    (tmp_path / "good.pdf").write_text("x")
    snap = scan(tmp_path, Filter())
    assert set(snap.entries) == {"good.pdf"}
    assert [(s.reason, s.fix) for s in snap.skipped] == [("its name is not valid UTF-8", "rename it")]


def test_files_left_out_for_their_names_are_known_by_inode_size_and_time(tmp_path: Path) -> None:
    """A mirrored file renamed to such a name (or moved into such a folder) is still in
    the source: the planner tells it by these, and keeps its copy (mirror.plan)."""
    root = os.fsencode(tmp_path)
    os.mkdir(root + b"/Kunde M\xfcller")
    for name in (b"bad-\xff.pdf", b"Kunde M\xfcller/inv.pdf"):
        with open(root + b"/" + name, "wb") as f:
            f.write(b"%PDF " + name)
    os.mkfifo(root + b"/fifo-\xff")  # not a file: nothing to tell it by
    snap = scan(tmp_path, Filter())
    assert not snap.entries
    left_out = snap.left_out()
    assert sorted(left_out) == [os.fsdecode(b"Kunde M\xfcller/inv.pdf"), os.fsdecode(b"bad-\xff.pdf")]
    for rel, (entry, why) in left_out.items():
        st = os.stat(root + b"/" + os.fsencode(rel))
        assert entry == LocalEntry(rel, st.st_size, st.st_mtime_ns, st.st_ino)
        assert why == "its name is not valid UTF-8"
    assert len(snap.skipped) == 3


def test_packed_entries_keep_every_value_and_find_recent_files() -> None:
    """Pre-1970 times, 64-bit inodes and large sizes survive the packing."""
    entries = Entries()
    old = LocalEntry("old.pdf", 5 * 2**40, -86_400 * 10**9, 2**64 - 1)
    new = LocalEntry("dir/new.pdf", 0, 1_800_000_000 * 10**9, 7)
    entries["old.pdf"], entries["dir/new.pdf"] = old, new
    assert entries == {"old.pdf": old, "dir/new.pdf": new}
    assert dict(entries.items()) == {"old.pdf": old, "dir/new.pdf": new}
    assert entries.modified_after(0) == {"dir/new.pdf"}
    assert entries.modified_after(-(10**18)) == {"old.pdf", "dir/new.pdf"}
    clone = entries.copy()
    del clone["old.pdf"]
    assert "old.pdf" in entries and "old.pdf" not in clone


class _SwapOnSight(Filter):
    """Replaces a folder with a symlink to ``outside`` right after the scan has seen it."""

    def __init__(self, root: Path, folder: str, outside: Path) -> None:
        super().__init__()
        self.root, self.folder, self.outside = root, folder, outside

    def wants_dir(self, rel: str) -> bool:
        if rel == self.folder:
            (self.root / rel).rename(self.root / f"{rel}.old")
            (self.root / rel).symlink_to(self.outside, target_is_directory=True)
        return super().wants_dir(rel)


def source_and_outside(tmp_path: Path, folder: str, theirs: str) -> tuple[Path, Path]:
    """A source holding ``folder/mine.pdf``, and a folder outside it holding ``theirs``."""
    source, outside = tmp_path / "source", tmp_path / "outside"
    (source / folder).mkdir(parents=True)
    (source / folder / "mine.pdf").write_bytes(b"mine")
    outside.mkdir()
    (outside / theirs).write_bytes(b"not for the targets")
    return source, outside


def test_a_folder_swapped_for_a_symlink_while_scanning_is_not_followed(tmp_path: Path) -> None:
    source, outside = source_and_outside(tmp_path, "scans", "secret.key")
    snap = scan(source, _SwapOnSight(source, "scans", outside))
    assert "scans/secret.key" not in snap.entries
    assert set(snap.entries) <= {"scans.old/mine.pdf"}


def test_a_file_below_a_folder_swapped_for_a_link_is_gone(tmp_path: Path) -> None:
    """os.stat follows links above the file; stat_paths must not, as the scan never does."""
    root, outside = source_and_outside(tmp_path, "d", "mine.pdf")
    assert stat_paths(root, ["d/mine.pdf"], Filter())["d/mine.pdf"] is not None
    (root / "d").rename(root / "d.old")
    (root / "d").symlink_to(outside)
    fresh = stat_paths(root, ["d/mine.pdf", "d.old/mine.pdf"], Filter())
    assert fresh["d/mine.pdf"] is None and fresh["d.old/mine.pdf"] is not None
    assert set(scan(root, Filter()).entries) == {"d.old/mine.pdf"}


def test_a_date_past_2262_is_held_to_the_last_one_the_index_can_store(tmp_path: Path) -> None:
    """The scan and the watcher's stat agree, or the file would count as changed forever."""
    (tmp_path / "far.pdf").write_bytes(b"x")
    os.utime(tmp_path / "far.pdf", (10_413_792_000, 10_413_792_000))  # 2300-01-01
    last = 2**63 - 1
    assert scan(tmp_path, Filter()).entries["far.pdf"].mtime_ns == last
    assert stat_paths(tmp_path, ["far.pdf"], Filter())["far.pdf"] == LocalEntry(
        "far.pdf", 1, last, (tmp_path / "far.pdf").stat().st_ino
    )


#: folders and files of a small export, and patterns over them (with '!' to take files back)
_TREE = ["top.pdf", "top.xml", "2026/a.pdf", "2026/a.xml", "2026/12/scan.pdf", "drafts/keep.pdf", "drafts/d.xml"]
_PATTERNS = st.lists(
    st.sampled_from(
        ["*", "!*.pdf", "!*/", "*.xml", "drafts/", "!drafts/keep.pdf", "2026/", "!2026/12/", "/top.*"]
    ),
    max_size=4,
)


@given(_PATTERNS, _PATTERNS)
def test_a_file_is_wanted_alike_by_the_full_scan_and_by_a_fresh_stat(
    include: list[str], exclude: list[str]
) -> None:
    """What a full pass mirrors (the shared scan, then the target's patterns per file) a
    fresh stat in watch mode mirrors too: with exclude = ["*", "!*.pdf"], the stat judged
    2026/12/scan.pdf by its folder, and watch mode deleted the copy the full pass sent."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for rel in _TREE:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(b"x")
        target = Filter(include, exclude)
        full = {p for p in scan(root, Filter()).entries if target.wants_file(p)}
        fresh = {p for p, entry in stat_paths(root, _TREE, target).items() if entry is not None}
        assert fresh == full
