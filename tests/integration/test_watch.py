"""Watch mode as a real subprocess: every kind of change reaches the target, and stops cleanly."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli import MIRROR, files, run, start, wait_for, watching


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    """A source with two files, mirrored by ``mirror run`` in watch mode."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"A" * 100)
    (src / "keep.pdf").write_bytes(b"K")
    proc = start("run", str(src), str(dst), state=state, log=tmp_path / "mirror.log")
    try:
        wait_for(lambda: files(dst) == files(src), what="the first copy")
        # its end recorded too (the source's disk with it): a folder wiped before that looked
        # like an older mirror's source not mounted, and nothing more was sent
        wait_for(lambda: "(running, idle)" in run("status", state=state).stdout, what="the first pass to end")
        yield src, dst, state
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(15)
            log = (tmp_path / "mirror.log").read_text()
            assert code == 0, log
            assert "Traceback" not in log, log
        assert not [p for p in dst.rglob(".~mirror-*")], "temp files left on the target"


def same(src: Path, dst: Path) -> bool:
    return files(src) == files(dst)


def mirrored(src: Path, dst: Path, tree: dict[str, bytes], what: str) -> None:
    """Write ``tree`` into the source, then wait until the target holds it too."""
    for rel, data in tree.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    wait_for(lambda: same(src, dst), what=what)


def test_create_modify_delete_rename(live: tuple[Path, Path, Path]) -> None:
    src, dst, _ = live
    (src / "new.pdf").write_bytes(b"new")
    wait_for(lambda: files(dst).get("new.pdf") == b"new", what="a new file")
    (src / "a.pdf").write_bytes(b"B" * 100)  # same size, same second
    wait_for(lambda: files(dst).get("a.pdf") == b"B" * 100, what="a same-size edit")
    (src / "new.pdf").unlink()
    wait_for(lambda: "new.pdf" not in files(dst), what="a delete")
    os.rename(src / "a.pdf", src / "renamed.pdf")
    wait_for(lambda: same(src, dst), what="a rename")
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "sub" / "deeper" / "x.pdf").write_bytes(b"x")
    wait_for(lambda: same(src, dst), what="a file in a new nested folder")
    os.rename(src / "sub", src / "moved")
    wait_for(lambda: same(src, dst), what="a renamed folder")
    for f in (src / "moved" / "deeper").iterdir():
        f.unlink()
    wait_for(lambda: same(src, dst), what="a file deleted in a folder")
    (src / "renamed.pdf").unlink()
    (src / "renamed.pdf").mkdir()
    (src / "renamed.pdf" / "inside.pdf").write_bytes(b"in")
    wait_for(lambda: same(src, dst), what="a file replaced by a folder of its name")
    shutil.rmtree(src / "moved")
    (src / "moved").write_bytes(b"a file now")
    wait_for(lambda: same(src, dst), what="a folder replaced by a file of its name")


def test_a_name_that_is_not_utf8_does_not_stop_the_watch(live: tuple[Path, Path, Path]) -> None:
    """watchfiles cannot decode such a name and gave up, taking the whole run with it: no
    later change reached the target."""
    src, dst, _ = live
    latin1 = os.path.join(os.fsencode(src), b"Rechnung M\xfcller.pdf")
    with open(latin1, "wb") as f:
        f.write(b"%PDF")
    time.sleep(1.0)  # its event first, alone
    with open(latin1, "ab") as f:
        f.write(b" more")
    (src / "later.pdf").write_bytes(b"later")
    wait_for(lambda: files(dst).get("later.pdf") == b"later", what="a file after one whose name is not UTF-8")


@pytest.mark.parametrize("poll", [False, True], ids=["inotify", "poll"])
def test_a_file_whose_name_is_not_utf8_written_again_and_again_leaves_the_watch_be(
    tmp_path: Path, poll: bool
) -> None:
    """A Latin-1 program's log in the export folder, written to every 0.2 s: each write
    ended the watcher (the poller of ``poll = true`` too), and the next one scanned the
    whole source again. With 100,000 files a change took 5-12 s to arrive, and a CPU
    core stayed busy."""
    src, dst, state, log = tmp_path / "src", tmp_path / "dst", tmp_path / "state", tmp_path / "m.log"
    (src / "2024").mkdir(parents=True)
    (src / "2024" / "a.pdf").write_bytes(b"a")
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'source = "{src}"\n[targets.t]\nurl = "{dst}"\npoll = {str(poll).lower()}\n')
    with watching("run", "-c", str(cfg), "-v", state=state, log=log):
        wait_for(lambda: files(dst) == {"2024/a.pdf": b"a"}, what="the first copy")
        journal = os.path.join(os.fsencode(src / "2024"), b"journal-\xe9t\xe9.log")
        for _ in range(15):
            with open(journal, "ab") as f:
                f.write(b"line\n")
            time.sleep(0.2)
        # in the folder that holds the name, and beside it
        (src / "2024" / "b.pdf").write_bytes(b"b")
        (src / "2024" / "a.pdf").write_bytes(b"A2")
        (src / "other.pdf").write_bytes(b"o")
        want = {"2024/a.pdf": b"A2", "2024/b.pdf": b"b", "other.pdf": b"o"}
        wait_for(lambda: files(dst) == want, what="the changes beside the log", log=log)
        (src / "2024" / "b.pdf").unlink()
        (src / "2024" / "q4").mkdir()
        (src / "2024" / "q4" / "c.pdf").write_bytes(b"c")
        want = {"2024/a.pdf": b"A2", "2024/q4/c.pdf": b"c", "other.pdf": b"o"}
        wait_for(lambda: files(dst) == want, what="a deletion and a new folder beside the log", log=log)
        (src / "2024" / "q4" / "c.pdf").write_bytes(b"c2")
        wait_for(lambda: files(dst)["2024/q4/c.pdf"] == b"c2", what="an edit in the new folder", log=log)
    text = log.read_text(errors="replace")
    assert text.count("rescanning the source") <= 1, text
    assert "2024 holds a name that is not valid UTF-8" in text, text


def test_a_folder_whose_name_is_not_utf8_does_not_keep_the_watch_from_starting(tmp_path: Path) -> None:
    """A folder of a Latin-1 program's in the source: watchfiles failed as it set up its
    watches, again every second, and nothing was ever mirrored, new files neither."""
    src, dst, state, log = tmp_path / "src", tmp_path / "dst", tmp_path / "state", tmp_path / "m.log"
    os.makedirs(os.path.join(os.fsencode(src), b"Kunde M\xfcller"))
    with open(os.path.join(os.fsencode(src), b"Kunde M\xfcller", b"inv.pdf"), "wb") as f:
        f.write(b"%PDF-1")
    (src / "invoice.pdf").write_bytes(b"%PDF")
    (src / "2024").mkdir()
    proc = start("run", str(src), str(dst), state=state, log=log)
    try:
        wait_for(lambda: files(dst).get("invoice.pdf") == b"%PDF", what="the first pass", timeout=30)
        (src / "later.pdf").write_bytes(b"later")
        (src / "2024" / "deeper.pdf").write_bytes(b"deeper")
        want = {"invoice.pdf": b"%PDF", "later.pdf": b"later", "2024/deeper.pdf": b"deeper"}
        wait_for(lambda: files(dst) == want, what="changes beside the folder", log=log)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    text = log.read_text()
    assert "not mirrored: Kunde M\\xfcller/inv.pdf: its name is not valid UTF-8; rename it" in text, text


def test_a_file_renamed_to_a_name_that_is_not_utf8_keeps_its_copy_until_renamed_again(
    live: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Its copy was deleted at the rescan the watcher's error asked for, the file still in
    the source under its new name."""
    src, dst, _ = live
    os.rename(src / "a.pdf", os.path.join(os.fsencode(src), b"a\xe9.pdf"))
    log = tmp_path / "mirror.log"
    told = "a.pdf: renamed in the source to a\\xe9.pdf, which is not mirrored (its name is not valid UTF-8)"
    wait_for(lambda: told in log.read_text(), what="the kept copy told")
    (src / "gone.pdf").write_bytes(b"g")
    wait_for(lambda: "gone.pdf" in files(dst), what="another file")
    (src / "gone.pdf").unlink()  # a deletion pass, with the source far from empty
    wait_for(lambda: "gone.pdf" not in files(dst), what="its deletion")
    assert files(dst) == {"a.pdf": b"A" * 100, "keep.pdf": b"K"}
    os.rename(os.path.join(os.fsencode(src), b"a\xe9.pdf"), src / "a-good.pdf")
    wait_for(lambda: same(src, dst), what="the copy moved to the good name")
    wait_for(lambda: "1 moved" in log.read_text(), what="a move, not a copy sent again")


def test_a_file_renamed_to_a_name_the_target_refuses_keeps_its_copy_and_moves_once_renamed_again(
    tmp_path: Path,
) -> None:
    """Watch passes plan the paths that changed: the old path gone (held, then deleted)
    and the new one refused. The copy stays; a later rename to a good name, which the
    old path takes no part in, still moves it (its row is planned with every batch)."""
    src, dst, state, log = tmp_path / "src", tmp_path / "dst", tmp_path / "state", tmp_path / "m.log"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"the only copy")
    (src / "keep.pdf").write_bytes(b"K")
    cfg = tmp_path / "m.toml"
    cfg.write_text(
        f'source = "{src}"\n[backends.fat]\nprotocol = "file"\ncapabilities = {{ forbidden_chars = "?" }}\n'
        f'[targets.usb]\nurl = "fat://{dst}"\n'
    )
    proc = start("run", "-c", str(cfg), state=state, log=log)
    try:
        wait_for(lambda: files(dst) == files(src), what="the first copy")
        os.rename(src / "a.pdf", src / "a?b.pdf")
        told = "a.pdf: renamed in the source to a?b.pdf, which is not mirrored (the target refuses the character"
        wait_for(lambda: told in log.read_text(), what="the kept copy told")
        (src / "gone.pdf").write_bytes(b"g")
        wait_for(lambda: "gone.pdf" in files(dst), what="another file")
        (src / "gone.pdf").unlink()
        wait_for(lambda: "gone.pdf" not in files(dst), what="its deletion")
        assert files(dst) == {"a.pdf": b"the only copy", "keep.pdf": b"K"}
        shown = run("status", state=state)
        assert "failed: a.pdf: renamed in the source to a?b.pdf" in shown.stdout, shown.stdout
        os.rename(src / "a?b.pdf", src / "a-b.pdf")
        wait_for(lambda: files(dst) == files(src), what="the copy moved to the good name")
        wait_for(lambda: "1 moved" in log.read_text(), what="a move, not a copy sent again")
        wait_for(lambda: run("status", state=state).returncode == 0, what="status in sync")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text()
    assert "Traceback" not in log.read_text()


def test_a_file_replaced_by_a_folder_of_its_name_waits_for_no_other_deletion(
    live: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """The old file's deletion was held with the others (until the source stops losing
    files, up to a minute), and the folder's new file refused as a clash meanwhile, with
    a warning each batch."""
    src, dst, _ = live
    mirrored(src, dst, {"x": b"a file", **{f"old{i:02}": b"o" for i in range(40)}}, "the files")
    (src / "x").unlink()
    time.sleep(0.6)  # the file's deletion is held first
    (src / "x").mkdir()
    (src / "x" / "in").write_bytes(b"in")
    for i in range(40):  # meanwhile other files keep going, as a cleanup job would have them
        if files(dst).get("x/in") == b"in":
            break
        (src / f"old{i:02}").unlink()
        time.sleep(0.3)
    assert files(dst).get("x/in") == b"in", "x/in waited for the other deletions"
    assert "clashes" not in (tmp_path / "mirror.log").read_text()
    wait_for(lambda: same(src, dst), what="the deletions")


def test_a_file_turned_into_a_folder_of_its_name_under_keep_moves_the_kept_copy_into_the_trash(
    tmp_path: Path,
) -> None:
    """delete = keep: the file's removal went in a pass of its own, before the folder's
    file had settled; that pass kept the copy, which then stood where the folder had to
    be made, and the folder's file failed, also in later runs, until one with --rescan."""
    src, dst, state, log = tmp_path / "src", tmp_path / "dst", tmp_path / "state", tmp_path / "mirror.log"
    src.mkdir()
    (src / "x").write_bytes(b"a file")
    proc = start("run", str(src), str(dst), "--delete", "keep", state=state, log=log)
    try:
        wait_for(lambda: files(dst) == {"x": b"a file"}, what="the first copy")
        (src / "x").unlink()
        (src / "x").mkdir()
        (src / "x" / "z.pdf").write_bytes(b"in the folder")
        wait_for(lambda: files(dst).get("x/z.pdf") == b"in the folder", what="the folder's file", log=log)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert [p.read_bytes() for p in dst.glob(".mirror-trash/*/x")] == [b"a file"]
    assert "failed: x/z.pdf" not in log.read_text(), log.read_text()


def test_a_file_replaced_by_a_link_or_a_fifo_while_watching_is_told_as_a_skip(
    live: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Its copy left the target and the log said only '1 deleted'; a full scan tells each
    skip with its reason."""
    src, dst, _ = live
    (src / "a.pdf").unlink()
    (src / "a.pdf").symlink_to("keep.pdf")
    os.mkfifo(src / "pipe.pdf")
    wait_for(lambda: "a.pdf" not in files(dst), what="the copy of the file now a link")
    log = tmp_path / "mirror.log"
    wait_for(lambda: "skipped pipe.pdf: a FIFO" in log.read_text(), what="the FIFO told", log=log)
    assert "skipped a.pdf: a symbolic link (links are not followed)" in log.read_text()


def test_two_files_of_one_size_and_time_swapped_by_renames(live: tuple[Path, Path, Path]) -> None:
    src, dst, _ = live
    (src / "001.pdf").write_bytes(b"invoice A")
    (src / "002.pdf").write_bytes(b"invoice B")
    for name in ("001.pdf", "002.pdf"):
        os.utime(src / name, ns=(1_709_294_400 * 10**9,) * 2)
    wait_for(lambda: same(src, dst), what="the two files")
    os.rename(src / "001.pdf", src / "swap.tmp")
    os.rename(src / "002.pdf", src / "001.pdf")
    os.rename(src / "swap.tmp", src / "002.pdf")
    # until the swap arrives, each path on the target holds the other's content
    wait_for(lambda: same(src, dst), what="the swap")


def test_a_file_with_two_names_rewritten_through_one_updates_both_copies(tmp_path: Path) -> None:
    """2024/inv-17.pdf and latest/invoice.pdf, one file under two names (ln, cp -al),
    rewritten in place through the first: inotify names the change by that name only,
    and the other copy stayed old until the hourly rescan, with status idle."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    (src / "2024").mkdir(parents=True)
    (src / "latest").mkdir()
    (src / "2024" / "inv-17.pdf").write_bytes(b"draft")
    os.link(src / "2024" / "inv-17.pdf", src / "latest" / "invoice.pdf")
    proc = start("run", str(src), str(dst), state=state, log=tmp_path / "mirror.log")
    try:
        wait_for(lambda: same(src, dst), what="the first copy")
        with open(src / "2024" / "inv-17.pdf", "r+b") as out:
            out.write(b"final, signed")
        wait_for(lambda: files(dst)["latest/invoice.pdf"] == b"final, signed", what="the other name's copy")
        assert same(src, dst)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_a_folder_swapped_for_a_link_to_elsewhere_leaves_no_stale_copy(
    live: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    src, dst, _ = live
    mirrored(src, dst, {"d/f.pdf": b"mine"}, what="the folder")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.pdf").write_bytes(b"someone else's")
    os.rename(src / "d", src / "d.old")
    (src / "d").symlink_to(outside)
    expected = {"a.pdf": b"A" * 100, "keep.pdf": b"K", "d.old/f.pdf": b"mine"}
    wait_for(lambda: files(dst) == expected, what="the folder's files under its new name only")


def test_a_target_folder_swapped_for_a_link_while_watching_is_not_written_through(
    live: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """backup/sub swapped for a link to someone's folder while mirror watches, then a new
    file in export/sub: it landed in their folder. Now it fails, the log names the link,
    and status tells."""
    src, dst, state = live
    mirrored(src, dst, {"sub/x.pdf": b"mine"}, what="the folder")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(dst / "sub")
    (dst / "sub").symlink_to(outside)
    (src / "sub" / "new.pdf").write_bytes(b"a new invoice")
    log = tmp_path / "mirror.log"
    refused = f"{dst / 'sub'} on the target is a symbolic link; mirror does not write through it"
    wait_for(lambda: refused in log.read_text() or (outside / "new.pdf").exists(), what="the file failed")
    assert list(outside.iterdir()) == []
    status = run("status", str(src), str(dst), state=state)
    assert status.returncode == 1 and "symbolic link" in status.stdout, status.stdout + status.stderr


@pytest.mark.parametrize("link", ["latest", "zz-latest", "up"])
def test_changes_in_a_folder_a_link_points_to_are_seen(tmp_path: Path, link: str) -> None:
    """A link to a folder of the source (latest -> 2024) or to the source itself: the
    watcher follows it (watchfiles does), and inotify then names the folder's changes
    by the link's path, one watch per folder. Those were dropped as paths through a
    link: an edited invoice stayed old on the target until the hourly rescan."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    (src / "2024").mkdir(parents=True)
    (src / "2024" / "a.pdf").write_bytes(b"v1")
    (src / "top.pdf").write_bytes(b"v1")
    (src / link).symlink_to("2024" if "latest" in link else "..")
    proc = start("run", str(src), str(dst), state=state, log=tmp_path / "mirror.log")
    try:
        wait_for(lambda: files(dst) == files(src), what="the first copy")
        (src / "2024" / "a.pdf").write_bytes(b"v2")
        (src / "2024" / "new.pdf").write_bytes(b"new")
        (src / "top.pdf").write_bytes(b"v2")
        expected = {"2024/a.pdf": b"v2", "2024/new.pdf": b"new", "top.pdf": b"v2"}
        wait_for(lambda: files(dst) == expected, what="the changes, under their own paths")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


@pytest.mark.parametrize("link", ["latest", "zz-latest", "up"])
@pytest.mark.parametrize("then", ["switched", "removed"])
def test_changes_in_a_folder_a_link_pointed_to_are_seen_once_the_link_is_switched_or_gone(
    tmp_path: Path, link: str, then: str
) -> None:
    """latest -> 2024 when mirror started, then switched to 2025 (or removed): inotify
    still named 2024's changes by the link's path, which led elsewhere by then, and a new
    invoice in 2024 never reached the target while status said idle (for "up -> ..", a
    folder moved into the source, every change in the source's top folder)."""
    src, dst, state, log = tmp_path / "src", tmp_path / "dst", tmp_path / "state", tmp_path / "m.log"
    for year in ("2024", "2025"):
        (src / year).mkdir(parents=True)
        (src / year / "a.pdf").write_bytes(b"v1")
    (src / "top.pdf").write_bytes(b"v1")
    (src / link).symlink_to("2024" if "latest" in link else "..")
    proc = start("run", str(src), str(dst), state=state, log=log)
    try:
        wait_for(lambda: files(dst) == files(src), what="the first copy", log=log)
        (src / link).unlink()
        if then == "switched":
            (src / link).symlink_to("2025")
        time.sleep(0.5)
        (src / "2024" / "a.pdf").write_bytes(b"v2")
        (src / "2024" / "new.pdf").write_bytes(b"new")
        (src / "top.pdf").write_bytes(b"v2")
        expected = {"2024/a.pdf": b"v2", "2024/new.pdf": b"new", "2025/a.pdf": b"v1", "top.pdf": b"v2"}
        wait_for(lambda: files(dst) == expected, what="the changes, under their own paths", log=log)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


@pytest.mark.parametrize("moved", ["src", "parent"])
def test_a_source_moved_and_a_link_left_in_its_place_is_still_watched(tmp_path: Path, moved: str) -> None:
    """mv export export.real && ln -s export.real export (or the same of a folder above
    it), with mirror watching: inotify followed the moved folder but named its changes by
    the link's path, which were dropped as outside the source. Nothing reached the target
    until the hourly rescan, status idle, exit 0. It is now watched where it is."""
    src, dst, state, log = tmp_path / "parent" / "src", tmp_path / "dst", tmp_path / "state", tmp_path / "m.log"
    src.mkdir(parents=True)
    (src / "old.pdf").write_bytes(b"old")
    (src / "edited.pdf").write_bytes(b"v1")
    proc = start("run", str(src), str(dst), state=state, log=log)
    try:
        wait_for(lambda: files(dst) == files(src), what="the first copy")
        place = tmp_path / moved if moved == "parent" else src
        place.rename(place.with_name(f"{place.name}.real"))
        place.symlink_to(f"{place.name}.real")
        (src / "new.pdf").write_bytes(b"new")
        (src / "edited.pdf").write_bytes(b"v2")
        (src / "old.pdf").unlink()
        wait_for(
            lambda: files(dst) == {"new.pdf": b"new", "edited.pdf": b"v2"},
            what="the changes made through the link",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert "now leads to" in log.read_text()


def test_an_item_that_keeps_failing_is_told_once_not_at_every_pass(tmp_path: Path) -> None:
    """Each watch pass tries the failed items again: told at each, eight failing invoices
    made 36 warnings, a weekend's outage thousands. Told again at full passes (hourly)."""
    src, dst, state, log = tmp_path / "src", tmp_path / "dst", tmp_path / "state", tmp_path / "m.log"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"a")
    (dst / "a.pdf").mkdir(parents=True)
    (dst / "a.pdf" / "someone else's.txt").write_bytes(b"in the way")
    proc = start("run", str(src), str(dst), state=state, log=log)
    try:
        wait_for(lambda: "failed: a.pdf" in log.read_text(), what="the failure")
        for i in range(4):
            (src / f"new {i}.pdf").write_bytes(b"n")
            wait_for(lambda i=i: (dst / f"new {i}.pdf").exists(), what=f"new {i}.pdf")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    told = [line for line in log.read_text().splitlines() if "failed: a.pdf" in line]
    assert len(told) == 1, told


def test_a_source_link_switched_while_watching_is_told_and_changes_nothing(tmp_path: Path) -> None:
    """Watching current -> releases/1, then current switched to releases/2: mirror kept
    watching releases/1, and the target silently stopped following the source. It now
    says so, holds the target as it is, status exits 1; a restart mirrors releases/2."""
    (tmp_path / "releases" / "1").mkdir(parents=True)
    (tmp_path / "releases" / "2").mkdir(parents=True)
    (tmp_path / "releases" / "1" / "a.pdf").write_bytes(b"r1")
    (tmp_path / "releases" / "2" / "a.pdf").write_bytes(b"r2")
    current, dst, state, log = tmp_path / "current", tmp_path / "dst", tmp_path / "state", tmp_path / "m.log"
    current.symlink_to("releases/1")
    proc = start("run", str(current), str(dst), state=state, log=log)
    try:
        wait_for(lambda: files(dst) == {"a.pdf": b"r1"}, what="the first copy")
        (tmp_path / "next").symlink_to("releases/2")
        os.replace(tmp_path / "next", current)
        wait_for(lambda: "now leads to" in log.read_text(), what="the warning")
        (tmp_path / "releases" / "1" / "late.pdf").write_bytes(b"not the source any more")
        time.sleep(1)
        assert files(dst) == {"a.pdf": b"r1"}
        shown = run("status", str(current), str(dst), state=state)
        assert shown.returncode == 1 and "restart mirror" in shown.stdout, shown.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert run("run", str(current), str(dst), "--once", state=state).returncode == 0
    assert files(dst) == {"a.pdf": b"r2"}


def test_what_a_scan_leaves_out_is_told_once_a_run_not_at_every_rescan(tmp_path: Path) -> None:
    """A link and a name that is not UTF-8 were told again at every rescan: 24 lines a
    day each, for as long as mirror ran."""
    src, dst, state, log = tmp_path / "src", tmp_path / "dst", tmp_path / "state", tmp_path / "m.log"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"a")
    (src / "shortcut.pdf").symlink_to(src / "a.pdf")
    (src / os.fsdecode(b"bad-\xff.pdf")).write_bytes(b"b")
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'source = "{src}"\n[defaults]\nrescan_interval = "1s"\n[targets.usb]\nurl = "{dst}"\n')
    proc = start("run", "-c", str(cfg), "-v", state=state, log=log)
    try:
        wait_for(lambda: log.read_text().count("skipped shortcut.pdf") >= 4, what="four rescans")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    lines = log.read_text().splitlines()
    assert sum("info    skipped shortcut.pdf" in line for line in lines) == 1, lines
    assert sum("warning not mirrored: bad-" in line for line in lines) == 1, lines


def test_watching_a_restore_from_an_older_backup_moves_the_copies_of_files_it_lacks_into_the_trash(
    live: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """The backup copied over the source (cp -a), then the files written since removed:
    watching, the two come in passes of their own, and the second deleted the only copies
    of the newer invoices."""
    src, dst, _ = live
    (src / "new.pdf").write_bytes(b"written since the backup")
    wait_for(lambda: "new.pdf" in files(dst), what="the newer invoice")
    (src / "a.pdf").write_bytes(b"a" * 50)  # last month's version, its time kept
    hour_ago = time.time() - 3600
    os.utime(src / "a.pdf", (hour_ago, hour_ago))
    log = tmp_path / "mirror.log"
    wait_for(lambda: "older than the copy mirror sent" in log.read_text(), what="the restore", log=log)
    (src / "new.pdf").unlink()
    wait_for(lambda: "new.pdf" not in files(dst), what="the newer invoice's copy leaving its path", log=log)
    trashed = {
        rel.rpartition("/")[2]: blob for rel, blob in files(dst).items() if rel.startswith(".mirror-trash/")
    }
    assert trashed == {"a.pdf": b"A" * 100, "new.pdf": b"written since the backup"}, files(dst)


def test_a_folder_renamed_away_and_a_file_made_in_its_place_at_once(live: tuple[Path, Path, Path]) -> None:
    # the watcher sees both within one debounce: the old folder's files must still leave
    # the target now, not at the next hourly rescan
    src, dst, _ = live
    mirrored(src, dst, {f"inbox/scan {i}.pdf": b"%d" % i for i in range(3)}, what="the folder")
    os.rename(src / "inbox", src / "filed")
    (src / "inbox").write_bytes(b"a file where the folder was")
    wait_for(lambda: same(src, dst), what="the folder's files to move and the file to take its name")


def test_a_folder_emptied_in_steps_meets_the_delete_guard_as_one(
    live: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    # each step alone deletes under half of the mirrored files, all three together over
    # half: the backup must not lose the first steps' files before the guard sees the rest
    src, dst, _ = live
    mirrored(src, dst, {f"export/invoice {i:02d}.pdf": b"%d" % i for i in range(30)}, what="the export")
    for step in range(3):
        for i in range(step * 7, step * 7 + 7):
            (src / "export" / f"invoice {i:02d}.pdf").unlink()
        time.sleep(0.6)
    log = tmp_path / "mirror.log"
    wait_for(lambda: "deletions withheld: 21 of 32 mirrored files" in log.read_text(), what="the guard")
    assert len(files(dst)) == 32
    (src / "export" / "invoice 29.pdf").unlink()  # a deletion the guard allows, later on
    wait_for(lambda: "invoice 29.pdf" not in " ".join(files(dst)), what="a later deletion")
    assert len(files(dst)) == 31


def test_a_folder_emptied_in_steps_across_a_restart_meets_the_delete_guard_as_one(tmp_path: Path) -> None:
    """mirror stopped (a reload, a service restart) between two steps of a folder being
    emptied: the new start deleted the first step at once, under half, and the later steps
    were judged against a target that had already lost it: every copy went."""
    src, dst, state, log = tmp_path / "src", tmp_path / "dst", tmp_path / "state", tmp_path / "m.log"
    src.mkdir()
    for i in range(30):
        (src / f"invoice {i:02d}.pdf").write_bytes(b"%d" % i)
    assert run("run", str(src), str(dst), "--once", state=state).returncode == 0
    (src / "first.pdf").write_bytes(b"first")
    first = start("run", str(src), str(dst), state=state, log=tmp_path / "first.log")
    try:
        wait_for(lambda: "first.pdf" in files(dst), what="the watcher's first pass", log=tmp_path / "first.log")
        for i in range(7):
            (src / f"invoice {i:02d}.pdf").unlink()
    finally:
        first.send_signal(signal.SIGINT)  # before the 2 s without deletions the watcher waits for
        assert first.wait(15) == 0
    (src / "new.pdf").write_bytes(b"new")
    with watching("run", str(src), str(dst), state=state, log=log):
        wait_for(lambda: "new.pdf" in files(dst), what="the restarted watcher's first pass", log=log)
        for step in range(1, 3):
            for i in range(step * 7, step * 7 + 7):
                (src / f"invoice {i:02d}.pdf").unlink()
            time.sleep(0.6)
        wait_for(lambda: "deletions withheld: 21 of" in log.read_text(), what="the guard", log=log)
        assert len(files(dst)) == 32, log.read_text()


def test_a_watcher_started_during_a_restore_keeps_the_copies_not_yet_restored(tmp_path: Path) -> None:
    """The guard withheld the deletion of 21 of 30 files (a source disk replaced); the
    user restores them, 9 so far, and starts the service: its first pass waits 2 s before
    deleting what is gone, which must not also forget that the guard is still withholding
    (12 of 30 is under half, but still gone since the guard first withheld)."""
    src, dst, state, log = tmp_path / "src", tmp_path / "dst", tmp_path / "state", tmp_path / "m.log"
    src.mkdir()
    for i in range(30):
        (src / f"invoice {i:02d}.pdf").write_bytes(b"%d" % i)
    assert run("run", str(src), str(dst), "--once", state=state).returncode == 0
    for i in range(21):
        (src / f"invoice {i:02d}.pdf").unlink()
    killed = start("run", str(src), str(dst), state=state, log=tmp_path / "killed.log")
    try:
        wait_for(lambda: "deletions withheld" in (tmp_path / "killed.log").read_text(), what="the guard")
    finally:
        killed.kill()  # so that the next start lists the target: a pass that plans every file
        killed.wait(15)
    for i in range(9):
        shutil.copy2(dst / f"invoice {i:02d}.pdf", src)  # as restored: settled
    with watching("run", str(src), str(dst), state=state, log=log):
        wait_for(lambda: "12 files are still gone" in log.read_text(), what="the guard", log=log)
        assert len(files(dst)) == 30, log.read_text()


def test_a_new_folder_with_hundreds_of_files(live: tuple[Path, Path, Path]) -> None:
    src, dst, _ = live
    folder = src / "batch"
    folder.mkdir()
    for i in range(400):
        (folder / f"scan {i:03d}.pdf").write_bytes(b"%d" % i)
    wait_for(lambda: same(src, dst), timeout=30, what="400 files in a brand-new folder")


def test_a_slowly_written_file_never_shows_partially(live: tuple[Path, Path, Path]) -> None:
    src, dst, _ = live
    final = b"".join(b"chunk %02d\n" % i for i in range(12))
    seen: set[bytes] = set()
    with open(src / "slow.pdf", "wb") as f:
        for i in range(12):
            f.write(b"chunk %02d\n" % i)
            f.flush()
            deadline = time.monotonic() + 0.2
            while time.monotonic() < deadline:
                if (dst / "slow.pdf").exists():
                    seen.add((dst / "slow.pdf").read_bytes())
                time.sleep(0.01)
    wait_for(lambda: files(dst).get("slow.pdf") == final, what="the finished slow file")
    assert seen <= {final}, f"a partial file was visible on the target: {sorted(seen)[:2]}"


def test_status_works_while_running(live: tuple[Path, Path, Path]) -> None:
    _, _, state = live
    data = json.loads(run("status", "--json", state=state).stdout)
    assert data[0]["running"] is True and data[0]["files"] == 2


def test_a_source_folder_deleted_and_made_again_is_watched_again(live: tuple[Path, Path, Path]) -> None:
    """An export that wipes its folder (rm -rf export && mkdir export): ext4 gives the new
    folder the old one's inode number, the watcher took it for the same folder, and no
    change in it was seen again until the hourly rescan, while status said in sync."""
    src, dst, _ = live
    for _ in range(5):
        before = src.stat().st_ino
        shutil.rmtree(src)
        src.mkdir()
        if src.stat().st_ino == before:
            break
    else:
        pytest.skip("this filesystem never gave the folder made again its old inode number")
    log = src.parent / "mirror.log"
    # the files that arrive, not the target equal to the source: a.pdf and keep.pdf are
    # deleted only once the delete guard looks again (10 s or more) if the watcher saw
    # the folder empty, as a loaded machine lets it (CI did)
    (src / "new.pdf").write_bytes(b"new")
    wait_for(lambda: files(dst).get("new.pdf") == b"new", what="a file in the folder made again", log=log)
    time.sleep(1)
    (src / "later.pdf").write_bytes(b"later")
    wait_for(lambda: files(dst).get("later.pdf") == b"later", what="a file written later", log=log)


def test_changes_made_while_stopped_are_picked_up_on_restart(tmp_path: Path) -> None:
    """And Ctrl-C is answered: stopping in silence looked like a hang from a shell."""
    src, dst, state, log = tmp_path / "src", tmp_path / "dst", tmp_path / "state", tmp_path / "m.log"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"a")
    assert run("run", str(src), str(dst), "--once", state=state).returncode == 0
    (src / "b.pdf").write_bytes(b"b")
    (src / "a.pdf").unlink()
    proc = start("run", str(src), str(dst), state=state, log=log)
    try:
        wait_for(lambda: files(dst) == {"b.pdf": b"b"}, what="changes made while stopped")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    assert log.read_text().rstrip().endswith("info    stopped"), log.read_text()
    # with no terminal (a service's journal), no key to press
    assert "press Ctrl-C" not in log.read_text(), log.read_text()


def test_a_target_folder_emptied_or_made_anew_is_filled_again(tmp_path: Path) -> None:
    """A new backup disk, or a folder someone emptied: the index says every file is there,
    so only a listing finds them gone, once, and again in watch mode at the next change."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    src.mkdir()
    for i in range(5):
        (src / f"invoice {i}.pdf").write_bytes(b"%d" % i)
    assert run("run", str(src), str(dst), "--once", state=state).returncode == 0
    shutil.rmtree(dst)
    dst.mkdir()  # on ext4, often with the inode number of the folder just removed
    again = run("run", str(src), str(dst), "--once", state=state)
    assert again.returncode == 0 and "5 sent" in again.stdout, again.stdout + again.stderr
    proc = start("run", str(src), str(dst), state=state)
    try:
        wait_for(lambda: files(dst) == files(src), what="the first pass")
        for child in dst.iterdir():
            child.unlink()
        (src / "new.pdf").write_bytes(b"new")
        wait_for(lambda: files(dst) == files(src), what="every file back, not only the new one")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


@contextlib.contextmanager
def watching_invoices(
    tmp_path: Path, count: int, release_after: str = "30m"
) -> Iterator[tuple[Path, Path, Path, Path]]:
    """``count`` invoices mirrored by a watching mirror: (source, target, state, log)."""
    src, dst, state, log = tmp_path / "src", tmp_path / "dst", tmp_path / "state", tmp_path / "m.log"
    src.mkdir()
    for i in range(count):
        (src / f"invoice {i:02}.pdf").write_bytes(b"%d" % i)
    config = tmp_path / "mirror.toml"
    config.write_text(
        f'source = "{src}"\n[defaults]\nrelease_after = "{release_after}"\n[targets.usb]\nurl = "{dst}"\n'
    )
    proc = start("run", "-c", str(config), state=state, log=log)
    try:
        wait_for(lambda: files(dst) == files(src), what="the first pass")
        yield src, dst, state, log
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_deletions_the_guard_withheld_are_made_once_the_source_is_whole_again(tmp_path: Path) -> None:
    """A nightly re-export empties the folder and writes it back: the guard withholds the
    deletions it sees half way, and the few real ones waited for the hourly rescan, with
    status saying '40 of 50 would be deleted' (exit 1) all the while. They go once they
    have stood for release_after."""
    with watching_invoices(tmp_path, 50, release_after="3s") as (src, dst, state, log):
        for i in range(40):
            (src / f"invoice {i:02}.pdf").unlink()
        wait_for(lambda: "deletions withheld" in log.read_text(), what="the guard")
        for i in range(5, 40):
            (src / f"invoice {i:02}.pdf").write_bytes(b"v2 %d" % i)
        wait_for(lambda: "they go once the source has stayed so for 3 s" in log.read_text(), what="the wait")
        assert len(files(dst)) == 50
        wait_for(lambda: files(dst) == files(src), timeout=60, what="the five real deletions", log=log)
        wait_for(lambda: run("status", state=state).returncode == 0, what="status to clear")


def test_patterns_that_take_in_no_file_withhold_deletions_in_watch_mode_too(tmp_path: Path) -> None:
    """README: patterns that take in no file of the source withhold every deletion, as an
    empty source does. A full pass did; in watch mode (the guard judging the whole source),
    each invoice the program touched then lost its copy, as removed from the source."""
    src, dst, state, log = tmp_path / "src", tmp_path / "dst", tmp_path / "state", tmp_path / "m.log"
    src.mkdir()
    for i in range(10):
        (src / f"invoice {i:02}.pdf").write_bytes(b"%d" % i)
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'source = "{src}"\n[targets.usb]\nurl = "{dst}"\n')
    assert run("run", "-c", str(cfg), "--once", state=state).returncode == 0
    cfg.write_text(f'source = "{src}"\n[targets.usb]\nurl = "{dst}"\ninclude = ["*.PDF"]\n')  # a typo
    # -v: the watch pass's withholding, the same as the first pass's, is told at debug level within 5 s
    proc = start("run", "-c", str(cfg), "-v", state=state, log=log)
    try:
        wait_for(lambda: "patterns take in no file" in log.read_text(), what="the first pass", log=log)
        for i in range(3):
            with (src / f"invoice {i:02}.pdf").open("ab") as invoice:
                invoice.write(b" paid")
        wait_for(lambda: log.read_text().count("patterns take in no file") >= 2, what="the watch pass", log=log)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert len(files(dst)) == 10
    assert "removed from the source" not in log.read_text()


def test_a_target_s_longer_settle_holds_a_scan_between_its_pages(tmp_path: Path) -> None:
    """archive waits 3 s for the scanner's pauses between pages, usb the default: the
    watcher waited the shortest, and archive got page 1 alone under the scan's final name."""
    src, state, log = tmp_path / "src", tmp_path / "state", tmp_path / "m.log"
    usb, archive = tmp_path / "usb", tmp_path / "archive"
    src.mkdir()
    (src / "inv.pdf").write_bytes(b"invoice")
    cfg = tmp_path / "m.toml"
    cfg.write_text(
        f'source = "{src}"\n[targets.usb]\nurl = "{usb}"\n[targets.archive]\nurl = "{archive}"\nsettle = "3s"\n'
    )
    proc = start("run", "-c", str(cfg), state=state, log=log)
    try:
        wait_for(lambda: "inv.pdf" in files(usb) and "inv.pdf" in files(archive), what="the first passes", log=log)
        page = os.urandom(300_000)
        (src / "scan.pdf").write_bytes(page)
        time.sleep(1.5)  # the scanner's pause between pages
        with (src / "scan.pdf").open("ab") as scan:
            scan.write(page)
        both = page * 2
        wait_for(
            lambda: files(usb).get("scan.pdf") == both == files(archive).get("scan.pdf"), what="the scan", log=log
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert "300.0 kB" not in log.read_text(), "a page alone was sent"


def test_withheld_deletions_clear_soon_after_the_files_come_back(tmp_path: Path) -> None:
    """The guard's checks back off while the folder stays emptied (10 s, 20 s, 40 s...):
    once the export was written again, status said 'deletions withheld' (exit 1) until
    the next check, up to rescan_interval later, with source and target identical."""
    with watching_invoices(tmp_path, 20) as (src, _, state, log):
        for i in range(11):
            (src / f"invoice {i:02}.pdf").unlink()
        # the checks at 10 s and 30 s withhold again: the next waits 40 s
        wait_for(lambda: log.read_text().count("deletions withheld") >= 3, timeout=60, what="two checks")
        for i in range(11):
            (src / f"invoice {i:02}.pdf").write_bytes(b"%d" % i)
        wait_for(lambda: run("status", state=state).returncode == 0, timeout=25, what="status to clear")


def test_poll_mode_sees_files_swapped_within_the_second_they_were_written(tmp_path: Path) -> None:
    """poll = true (NFS/SMB sources): watchfiles' poller compares modification times in
    whole seconds, so two files of one second swapped by renames stayed swapped on the
    target, with status saying all was well, until the hourly rescan."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "x.pdf").write_bytes(b"XXXX")
    (src / "y.pdf").write_bytes(b"YY")
    second = time.time() // 1
    os.utime(src / "x.pdf", (second, second))
    os.utime(src / "y.pdf", (second + 0.5, second + 0.5))
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'source = "{src}"\n[targets.t]\nurl = "{dst}"\npoll = true\n')
    proc = start("run", "-c", str(cfg), state=tmp_path / "state", log=tmp_path / "mirror.log")
    try:
        wait_for(lambda: same(src, dst), what="the first copy")
        os.rename(src / "x.pdf", src / "t.pdf")
        os.rename(src / "y.pdf", src / "x.pdf")
        os.rename(src / "t.pdf", src / "y.pdf")
        wait_for(lambda: same(src, dst), timeout=30, what="the swap")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_a_folder_replaced_by_a_file_just_before_the_start_is_mirrored(tmp_path: Path) -> None:
    """The start-up pass leaves a file still being written to the watcher, and with it the
    rows of the folder it replaced: the file then clashed with that folder on the target,
    every minute, until the hourly rescan."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    (src / "x" / "e0.pdf").mkdir(parents=True)
    for name in ("a1", "a2"):
        (src / "x" / "e0.pdf" / name).write_bytes(name.encode())
    (src / "pad.pdf").write_bytes(b"pad")
    assert run("run", str(src), str(dst), "--once", state=state).returncode == 0
    shutil.rmtree(src / "x" / "e0.pdf")
    (src / "x" / "e0.pdf").write_bytes(b"now a file")  # younger than settle when mirror starts
    proc = start("run", str(src), str(dst), state=state, log=tmp_path / "mirror.log")
    try:
        wait_for(lambda: same(src, dst), timeout=20, what="the file in the folder's place")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert "clashes" not in (tmp_path / "mirror.log").read_text()


def test_a_stop_leaves_incomplete_only_the_targets_whose_patterns_take_the_unsent_changes(tmp_path: Path) -> None:
    """A notes file still settling at the stop was counted against a target that takes
    only PDFs: 'stopped with 1 change(s) not yet sent', and status said it incomplete
    (exit 1) with every PDF on it."""
    src, state, log = tmp_path / "src", tmp_path / "state", tmp_path / "mirror.log"
    pdfs, everything = tmp_path / "pdfs", tmp_path / "all"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"a")
    os.utime(src / "a.pdf", (1_700_000_000, 1_700_000_000))  # settled long ago
    cfg = tmp_path / "m.toml"
    cfg.write_text(
        f'source = "{src}"\n[defaults]\nsettle = "10s"\n'
        f'[targets.pdfs]\nurl = "{pdfs}"\ninclude = ["*.pdf"]\n'
        f'[targets.all]\nurl = "{everything}"\n'
    )
    proc = start("run", "-c", str(cfg), state=state, log=log)
    try:
        wait_for(lambda: same(src, pdfs) and same(src, everything), what="the first copies", log=log)
        (src / "notes.txt").write_bytes(b"still being written")
        time.sleep(1)  # seen by the watcher, far from settled
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    told = log.read_text()
    assert "[all] stopped with 1 change(s) not yet sent" in told, told
    assert "[pdfs] stopped with" not in told, told
    shown = json.loads(run("status", "-c", str(cfg), "--json", state=state).stdout)
    assert {t["name"]: t["incomplete"] for t in shown} == {"pdfs": False, "all": True}, shown


def test_a_stop_with_changes_still_settling_leaves_the_target_incomplete(tmp_path: Path) -> None:
    """SIGTERM 0.2 s after 1,000 files were written: exit 0 and nothing said, and status
    called the target in sync (exit 0) with a quarter of them missing."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"a")
    os.utime(src / "a.pdf", (1_700_000_000, 1_700_000_000))  # settled long ago
    log = tmp_path / "mirror.log"
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'source = "{src}"\n[targets.default]\nurl = "{dst}"\nsettle = "10s"\n')
    proc = start("run", "-c", str(cfg), state=state, log=log)
    try:
        wait_for(lambda: same(src, dst), what="the first copy")
        for i in range(50):
            (src / f"late {i}.pdf").write_bytes(b"late")
        time.sleep(1)  # seen by the watcher, far from settled
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert "change(s) not yet sent; the next run sends them" in log.read_text()
    shown = run("status", state=state)
    assert shown.returncode == 1 and "incomplete" in shown.stdout, shown.stdout
    assert run("run", str(src), str(dst), "--once", state=state).returncode == 0  # settle 0.5 s
    assert same(src, dst) and run("status", state=state).returncode == 0


def test_a_first_copy_of_files_still_settling_at_the_start_is_not_called_complete(tmp_path: Path) -> None:
    """Files written just before watch mode started wait to settle: status said 'last
    complete sync' at once, with nothing on the target yet."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    src.mkdir()
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'source = "{src}"\n[targets.default]\nurl = "{dst}"\nsettle = "8s"\n')
    for i in range(20):
        (src / f"scan {i}.pdf").write_bytes(b"scan")
    proc = start("run", "-c", str(cfg), state=state, log=tmp_path / "mirror.log")
    try:

        def shown() -> dict:
            statuses = json.loads(run("status", "--json", state=state).stdout)
            return statuses[0] if statuses else {}

        # the first pass has ended (idle) and left the files to the watcher
        wait_for(lambda: shown().get("state") == "idle", what="the first pass")
        first = shown()
        assert files(dst) == {} and first["last_complete_sync"] is None, first
        wait_for(lambda: same(src, dst), timeout=30, what="the files, once settled")
        wait_for(lambda: shown()["last_complete_sync"] is not None, what="the complete sync")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert run("status", state=state).returncode == 0


def test_sighup_stops_cleanly_and_starts_again_with_the_config_read_anew(tmp_path: Path) -> None:
    """kill -HUP (systemctl reload) ended mirror with status 129 and no log line: status
    then said 'ended without stopping cleanly', and a config edited while it ran was
    ignored until a restart, which listed the whole target."""
    src, dst, second, state, log = (tmp_path / n for n in ("src", "dst", "second", "state", "mirror.log"))
    src.mkdir()
    (src / "a.pdf").write_bytes(b"a")
    (src / "b.log").write_bytes(b"b")
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'source = "{src}"\n[targets.usb]\nurl = "{dst}"\n')
    proc = start("run", "-c", str(cfg), state=state, log=log)
    taken = socket.create_server(("127.0.0.1", 0))  # another program's port
    port = taken.getsockname()[1]
    try:
        wait_for(lambda: same(src, dst), what="the first copy")
        cfg.write_text(
            f'source = "{src}"\n[targets.usb]\nurl = "{dst}"\nexclude = ["*.log"]\n'
            f'[targets.second]\nurl = "{second}"\n'
        )
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "b.log" not in files(dst) and same(src, second), what="the edited config to apply")
        assert proc.poll() is None, log.read_text()
        # a typo: reloaded, it stopped every target, and systemd's restarts failed alike
        for broken, why in (
            ("this is = = not toml\n", f"{cfg}: invalid TOML"),
            (f'source = "{src}"\n[targets.usb]\nurl = "{dst}"\nlayuot = "flat"\n', "did you mean 'layout'?"),
            (f'source = "{src}"\n[targets.usb]\nurl = "ftp:///x"\n', "needs host"),
            # refused only once the new start opened the config: the service ended (exit 2)
            (f'source = "{src}x"\n[targets.usb]\nurl = "{dst}"\n', f"source folder {src}x does not exist"),
            (f'source = "{src}"\nstate_dir = "{cfg}"\n[targets.usb]\nurl = "{dst}"\n', f"{cfg} is not a folder"),
            (f'source = "{src}"\n[targets.usb]\nurl = "{src / "copy"}"\n', "overlaps the source folder"),
            (
                f'source = "{src}"\nstate_dir = "{src / "st"}"\n[targets.usb]\nurl = "{dst}"\n',
                "lies inside the source",
            ),
            (
                f'source = "{src}"\nmetrics_addr = "127.0.0.1:{port}"\n[targets.usb]\nurl = "{dst}"\n',
                "choose a free port",
            ),
        ):
            cfg.write_text(broken)
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda why=why: why in log.read_text(), what="the reload refused")
        (src / "c.pdf").write_bytes(b"c")
        wait_for(lambda: (dst / "c.pdf").exists() and (second / "c.pdf").exists(), what="a file after the typos")
        assert proc.poll() is None, log.read_text()
    finally:
        taken.close()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
    text = log.read_text()
    assert code == 0, text
    assert text.count("stopped on SIGHUP; starting again with the config read anew") == 1, text
    assert text.count("not reloaded: ") == 8, text
    assert "mirroring on with the config read before; fix it and reload again" in text, text
    assert "Traceback" not in text, text
    shown = run("status", state=state)
    assert shown.returncode == 0 and "ended without stopping cleanly" not in shown.stdout, shown.stdout


def test_a_reload_while_a_one_off_run_takes_the_target_waits_for_that_run(tmp_path: Path) -> None:
    """systemctl reload while a cron `mirror run --once` started: the watcher let go of
    the target's lock to start again, the cron run took it, and the watcher ended with
    'already being mirrored by another mirror process', exit 2. Nobody mirrored after the
    cron run ended. A watcher started again on SIGHUP now waits for that run."""
    src, dst, state, log = (tmp_path / n for n in ("src", "dst", "state", "mirror.log"))
    src.mkdir()
    (src / "a.pdf").write_bytes(b"a")
    proc = start("run", str(src), str(dst), state=state, log=log)
    try:
        wait_for(lambda: same(src, dst), what="the first copy")
        (lock,) = (state / "targets").glob("*.sqlite.lock")
        cron = os.open(lock, os.O_RDWR)
        try:
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 15
            while True:  # as a one-off run takes it, between the two processes
                try:
                    fcntl.flock(cron, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    assert time.monotonic() < deadline, "the watcher never let go of the target"
            wait_for(lambda: "waiting for it" in log.read_text(), what="the wait", log=log)
            assert proc.poll() is None, log.read_text()
        finally:
            os.close(cron)
        (src / "b.pdf").write_bytes(b"b")
        wait_for(lambda: same(src, dst), what="a file written after the one-off run", log=log)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
    assert code == 0, log.read_text()


#: ``mirror`` whose first copy of a large file to a local target waits, once written,
#: until the file named by MIRROR_TEST_GATE is gone: a large upload still under way. It
#: holds one upload only, in whichever process (mirror starts again as a new one).
GATED = """
import os, sys, time
from mirror.backends import local
real, gate = local._copy, os.environ["MIRROR_TEST_GATE"]
def _copy(src, dst):
    real(src, dst)
    if os.fstat(src).st_size > 2 << 20 and not os.path.exists(gate + ".held"):
        open(gate + ".held", "w").close()
        while os.path.exists(gate):
            time.sleep(0.05)
local._copy = _copy
from mirror.cli import entry
sys.exit(entry())
"""


def _gated(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """``mirror run SRC DST ARGS`` as GATED, its gate closed: SRC, DST, the gate, the state
    and the log (mirror.log) are named so in ``tmp_path``."""
    (tmp_path / "gate").touch()
    script = tmp_path / "gated.py"
    script.write_text(GATED)
    env = {**os.environ, "MIRROR_STATE_DIR": str(tmp_path / "state"), "MIRROR_TEST_GATE": str(tmp_path / "gate")}
    command = [sys.executable, str(script), "run", str(tmp_path / "src"), str(tmp_path / "dst"), *args]
    with open(tmp_path / "mirror.log", "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=out, env=env)


def _held_in_watch_mode(tmp_path: Path) -> subprocess.Popen[bytes]:
    """A watching GATED mirror of src/a.pdf, once the upload of a large scan.pdf written
    after the first copy is held."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"a")
    proc = _gated(tmp_path)
    try:
        wait_for(lambda: same(src, dst), what="the first copy")
        (src / "scan.pdf").write_bytes(b"s" * (3 << 20))
        wait_for(lambda: (tmp_path / "gate.held").exists(), what="the large upload to be under way")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def test_sighup_during_a_large_upload_holds_back_no_invoice(tmp_path: Path) -> None:
    """systemctl reload while a scan uploaded waited for that upload to end before it
    started again: nothing reached any target meanwhile, an invoice written after the
    reload included (18-50 s in tests, minutes on a slow uplink), while status said
    'running, idle'. The upload is now cut off after the stop's wait, and sent again by
    the new start, which cannot meet an old upload putting back a file it deleted."""
    src, dst, state, log, gate = (tmp_path / n for n in ("src", "dst", "state", "mirror.log", "gate"))
    proc = _held_in_watch_mode(tmp_path)
    try:
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "stopped on SIGHUP; starting again" in log.read_text(), what="the start again")
        (src / "invoice.pdf").write_bytes(b"invoice")
        wait_for(lambda: same(src, dst), timeout=30, what="the invoice and the scan, the upload still held")
        (src / "scan.pdf").unlink()
        wait_for(lambda: same(src, dst), what="the scan gone from the target")
    finally:
        gate.unlink()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert run("status", state=state).returncode == 0


def test_sighup_stops_a_run_once_as_sigterm_does(tmp_path: Path) -> None:
    src, dst, state, log = tmp_path / "src", tmp_path / "dst", tmp_path / "state", tmp_path / "mirror.log"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"a")  # young: --once waits for it to settle
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'source = "{src}"\n[targets.usb]\nurl = "{dst}"\nsettle = "20s"\n')

    def running() -> bool:
        return any(t["running"] for t in json.loads(run("status", "--json", state=state).stdout or "[]"))

    proc = start("run", "-c", str(cfg), "--once", state=state, log=log)
    try:
        wait_for(running, what="the run to start")
        time.sleep(0.3)  # past opening the indexes, where the signals are taken
        proc.send_signal(signal.SIGHUP)
        code = proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 1 and "Traceback" not in log.read_text(), log.read_text()
    assert "ended without stopping cleanly" not in run("status", state=state).stdout


def _gated_once(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path, Path, Path]:
    """``mirror run --once`` of a large file whose upload waits, written, for the gate to
    go (see GATED); once it is held: the process, the target, the state and the log."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "scan.pdf").write_bytes(b"s" * (3 << 20))
    proc = _gated(tmp_path, "--once")
    wait_for(lambda: (tmp_path / "gate.held").exists(), timeout=30, what="the large upload to be under way")
    return proc, tmp_path / "dst", tmp_path / "state", tmp_path / "mirror.log"


def _stop_held(proc: subprocess.Popen[bytes], gate: Path) -> int:
    """SIGTERM to a GATED mirror whose upload is held; its exit status. The gate opens after."""
    try:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(30)
    finally:
        gate.unlink()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_stop_ends_a_run_once_that_uploads_a_large_file(tmp_path: Path) -> None:
    """Ctrl-C or SIGTERM of mirror run --once went unheeded until a large upload ended (56 s
    for 100 MiB at 2 MB/s; most of an hour for 2 GiB on a slow uplink): a cron job's
    timeout, or a user at a terminal, could only kill it. It now gives up on the upload
    after the stop's wait, as watch mode does, and the next run sends the file."""
    proc, _dst, state, log = _gated_once(tmp_path)
    code = _stop_held(proc, tmp_path / "gate")
    text = log.read_text()
    assert code == 1 and "Traceback" not in text, text
    assert "stopped with an upload still running" in text, text
    shown = run("status", state=state)
    assert shown.returncode == 1 and "incomplete: the last run ended before its pass finished" in shown.stdout


def test_runs_that_find_the_target_taken_by_a_one_off_run_leave_it_to_that_run_or_wait(tmp_path: Path) -> None:
    """Cron runs overlapping a long first copy were each refused ("already being mirrored
    ...; stop that one first", exit 2: an error mailed every few minutes, with advice to
    stop the copy), and a service started meanwhile ended so too. A one-off run now leaves
    the target to the one-off run before it, and a watcher waits for that run to end; a
    second watcher is still refused at once."""
    proc, dst, state, log = _gated_once(tmp_path)
    src, watcher_log = tmp_path / "src", tmp_path / "watcher.log"
    watcher = None
    try:
        (src / "invoice.pdf").write_bytes(b"written after the first run's scan")
        overlapping = run("run", str(src), str(dst), "--once", state=state)
        assert overlapping.returncode == 0, overlapping.stderr
        assert "a one-off run; lock" in overlapping.stderr and "left to it" in overlapping.stderr
        watcher = start("run", str(src), str(dst), state=state, log=watcher_log)
        wait_for(lambda: "waiting for it" in watcher_log.read_text(), what="the watcher's wait", log=watcher_log)
        assert watcher.poll() is None, watcher_log.read_text()
        (tmp_path / "gate").unlink()
        assert proc.wait(30) in (0, 1), log.read_text()
        wait_for(lambda: same(src, dst), timeout=30, what="the invoice, sent by the watcher", log=watcher_log)
        wait_for(
            lambda: "watching" in next((state / "targets").glob("*.sqlite.lock")).read_text(), what="the watch"
        )
        second = run("run", str(src), str(dst), state=state, timeout=30)
        assert second.returncode == 2 and "watching; lock" in second.stderr, second.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
        if watcher is not None:
            watcher.send_signal(signal.SIGTERM)
            assert watcher.wait(15) == 0, watcher_log.read_text()


def test_a_run_once_whose_pass_ends_after_a_stop_is_complete(tmp_path: Path) -> None:
    """A stop that came while the last upload of a --once pass went on, and that upload
    then ended: every file was on the target, yet the run said 'stopped before the pass
    finished' and status 'never in sync, incomplete' (exit 1) until the next run."""
    proc, dst, state, log = _gated_once(tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the stop lands while the upload is held
        (tmp_path / "gate").unlink()
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert code == 1 and "Traceback" not in text, text  # stopped when asked: it says so
    assert same(tmp_path / "src", dst), text
    assert "stopped before the pass finished" not in text, text
    shown = run("status", state=state)
    assert shown.returncode == 0 and "incomplete" not in shown.stdout, shown.stdout


def test_a_stop_removes_the_temp_file_of_an_upload_it_gives_up_on(tmp_path: Path) -> None:
    """A clean stop (SIGTERM) that gave up on a large upload left its partial file on the
    target as a hidden temp file (70 MB on an SFTP NAS), there for good unless mirror ran
    again, though the docs said the temp files of abandoned uploads are removed."""
    code = _stop_held(_held_in_watch_mode(tmp_path), tmp_path / "gate")
    text = (tmp_path / "mirror.log").read_text()
    assert code == 0, text
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["a.pdf"], text
    assert "its temp file on the target was removed" in text, text


def _holds_sighup(pid: int) -> bool:
    """Whether the process ignores or catches SIGHUP (its signal masks in /proc)."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return any(int(line.split()[1], 16) & 1 for line in lines if line.startswith(("SigIgn:", "SigCgt:")))


def test_sighup_as_mirror_starts_does_not_end_it(tmp_path: Path) -> None:
    """A SIGHUP in the first moments after a start (systemctl reload just after a restart)
    ended mirror with status 129, nothing logged: it was taken only once the mirror was
    opened, half a second and more after the start."""
    src, dst, state, log = tmp_path / "src", tmp_path / "dst", tmp_path / "state", tmp_path / "mirror.log"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"a")
    proc = start("run", str(src), str(dst), state=state, log=log)
    try:
        wait_for(lambda: _holds_sighup(proc.pid), what="mirror to hold SIGHUP")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: same(src, dst), what="the first copy")
        assert proc.poll() is None, log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
    assert code == 0, log.read_text()


#: ``mirror status``, interrupted (SIGINT, as Ctrl-C) while it loads its command
INTERRUPTED_WHILE_LOADING = """
import builtins, os, signal, sys
real = builtins.__import__
def load(name, *args, **kwargs):
    if name == "mirror.cli":
        os.kill(os.getpid(), signal.SIGINT)
    return real(name, *args, **kwargs)
builtins.__import__ = load
sys.argv = ["mirror", "status"]
from mirror.__main__ import entry
entry()
"""


def test_ctrl_c_while_mirror_loads_says_interrupted_in_one_line(tmp_path: Path) -> None:
    """Ctrl-C in the moment after a start printed a KeyboardInterrupt traceback."""
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_WHILE_LOADING],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "MIRROR_STATE_DIR": str(tmp_path / "state")},
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (1, "mirror: error: interrupted\n")


def test_sighup_from_a_closed_terminal_stops_mirror(tmp_path: Path) -> None:
    """Run from a terminal, SIGHUP is the terminal closing: mirror went on after its
    user logged out, unseen, writing its log to nowhere."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"a")
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [*MIRROR, "run", str(src), str(dst)],
        stdin=terminal, stdout=terminal, stderr=terminal,
        env={**os.environ, "MIRROR_STATE_DIR": str(state)},
    )  # fmt: skip
    os.close(terminal)
    seen = bytearray()
    try:
        wait_for(lambda: files(dst) == {"a.pdf": b"a"}, what="the first copy")
        proc.send_signal(signal.SIGHUP)
        code = proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(OSError):  # the terminal is gone once mirror is
            while chunk := os.read(controller, 65536):
                seen += chunk
        os.close(controller)
    text = seen.decode(errors="replace")
    assert code == 0, text
    assert "starting again" not in text, text
    assert "stopped" in text, text
    assert "; press Ctrl-C to stop" in text, text  # a terminal's user is told how


def test_deletions_withheld_stay_told_after_a_watch_pass_deletes_another_file(tmp_path: Path) -> None:
    """The guard withheld a folder's deletions; then one other file went, and its watch
    pass deleted that copy: status dropped 'deletions withheld', exited 0 and recorded a
    complete sync, the withheld copies still on the target, until the guard's re-check
    (backing off up to rescan_interval)."""
    src, dst, state, log = tmp_path / "src", tmp_path / "dst", tmp_path / "state", tmp_path / "mirror.log"
    (src / "mid").mkdir(parents=True)
    for n in range(3):
        (src / "mid" / f"{n}.pdf").write_bytes(b"invoice %d" % n)
    (src / "other.pdf").write_bytes(b"other")
    (src / "keep.pdf").write_bytes(b"keep")
    config = tmp_path / "mirror.toml"
    config.write_text(
        f'source = "{src}"\nstate_dir = "{state}"\n[defaults]\nsettle = "0.2s"\nmax_delete = 2\n'
        f'[targets.disk]\nurl = "{dst}"\n'
    )
    with watching("run", "-c", str(config), state=state, log=log):
        wait_for(lambda: same(src, dst), what="the first copy", log=log)
        shutil.rmtree(src / "mid")
        wait_for(lambda: "deletions withheld" in log.read_text(), what="the deletions withheld", log=log)

        def told() -> dict[str, Any]:
            return dict(json.loads(run("status", "-c", str(config), "--json", state=state).stdout)[0])

        synced = told()["last_complete_sync"]
        (src / "other.pdf").unlink()
        wait_for(lambda: not (dst / "other.pdf").exists(), what="the other file's copy deleted", log=log)
        shown, after = run("status", "-c", str(config), state=state), told()
    assert sorted(p.name for p in (dst / "mid").iterdir()) == ["0.pdf", "1.pdf", "2.pdf"]
    assert shown.returncode == 1 and "deletions withheld" in shown.stdout, shown.stdout
    assert after["last_complete_sync"] == synced


def test_deletions_waiting_for_the_source_to_stop_losing_files_are_pending_not_in_sync(tmp_path: Path) -> None:
    """An export folder emptied a file at a time: the deletions wait until no more files
    go (mirror.held), the copies still on the target. Status said 'pending 0', and each
    batch recorded a new 'last complete sync'; a stop then left it in sync."""
    src, dst, state, log = tmp_path / "src", tmp_path / "dst", tmp_path / "state", tmp_path / "mirror.log"
    src.mkdir()
    for n in range(8):
        (src / f"{n}.pdf").write_bytes(b"invoice %d" % n)
    proc = start("run", str(src), str(dst), state=state, log=log)
    try:
        wait_for(lambda: same(src, dst), what="the first copy", log=log)

        def status() -> dict[str, Any]:
            return dict(json.loads(run("status", "--json", state=state).stdout)[0])

        wait_for(lambda: status()["state"] == "idle", what="idle")
        synced = status()["last_complete_sync"]

        def delete_steadily() -> None:
            # under the 2 s that let the held deletions go, whatever a status takes: on a
            # busy machine one took over a second, and the deletions went between two
            for n in range(6):
                (src / f"{n}.pdf").unlink()
                time.sleep(0.7)

        deleting = threading.Thread(target=delete_steadily)
        deleting.start()
        seen: list[tuple[int, str, float]] = []
        while deleting.is_alive():
            shown = status()
            seen.append((shown["pending"], shown["state"], shown["last_complete_sync"]))
        deleting.join()
        assert all(last == synced for _, _, last in seen), seen
        assert any(pending > 0 and state_ == "syncing" for pending, state_, _ in seen), seen
        assert "0.pdf" in files(dst)  # still held: not deleted piece by piece
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    told = log.read_text()
    assert "stopped with 6 change(s) not yet sent" in told, told
    shown = json.loads(run("status", "--json", state=state).stdout)[0]
    assert shown["incomplete"] is True and shown["last_complete_sync"] == synced, shown


@pytest.mark.parametrize("when", ["before-the-start", "while-watching"])
def test_a_file_changed_through_a_hard_link_outside_the_source_is_sent(tmp_path: Path, when: str) -> None:
    """The ERP keeps its file in its own folder and links it into the export (ln): a
    change written through its own name sends inotify no event in the source, and the
    copy stayed old, with status in sync, until the hourly rescan."""
    src, dst, state, erp = tmp_path / "src", tmp_path / "dst", tmp_path / "state", tmp_path / "erp"
    src.mkdir()
    erp.mkdir()
    (src / "old.pdf").write_bytes(b"older invoice")
    (erp / "current.pdf").write_bytes(b"draft")
    if when == "before-the-start":
        os.link(erp / "current.pdf", src / "invoice.pdf")
    log = tmp_path / "mirror.log"
    with watching("run", str(src), str(dst), state=state, log=log):
        wait_for(lambda: same(src, dst), what="the first copy", log=log)
        if when == "while-watching":
            os.link(erp / "current.pdf", src / "invoice.pdf")
            wait_for(lambda: same(src, dst), what="the link's copy", log=log)
        with open(erp / "current.pdf", "r+b") as out:
            out.write(b"final, signed")
        wanted = {"old.pdf": b"older invoice", "invoice.pdf": b"final, signed"}
        wait_for(lambda: files(dst) == wanted, what="the change", log=log)


def test_a_hard_link_made_and_written_through_at_once_updates_the_other_name(tmp_path: Path) -> None:
    """ln a.pdf b.pdf, then b.pdf rewritten in place straight away: inotify tells of b.pdf
    only, which is new, and a.pdf's copy stayed old until the hourly rescan."""
    src, dst, state, log = tmp_path / "src", tmp_path / "dst", tmp_path / "state", tmp_path / "mirror.log"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"draft")
    with watching("run", str(src), str(dst), state=state, log=log):
        wait_for(lambda: same(src, dst), what="the first copy", log=log)
        os.link(src / "a.pdf", src / "b.pdf")
        with open(src / "b.pdf", "r+b") as out:
            out.write(b"final, signed")
        wanted = {"a.pdf": b"final, signed", "b.pdf": b"final, signed"}
        wait_for(lambda: files(dst) == wanted, what="both names' copies", log=log)


def test_status_and_a_second_mirror_after_the_state_folder_was_deleted_under_the_first_say_so(
    tmp_path: Path,
) -> None:
    """The state folder deleted while mirror watched: a second mirror was refused, rightly,
    as held by a mirror 'with another state folder' than the one both were given; status
    said 'not running, never run', though a mirror ran on with its index deleted."""
    src, dst, state, log = tmp_path / "src", tmp_path / "dst", tmp_path / "state", tmp_path / "mirror.log"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"a")
    with watching("run", str(src), str(dst), state=state, log=log):
        wait_for(lambda: same(src, dst), what="the first copy", log=log)
        shutil.rmtree(state)
        second = run("run", str(src), str(dst), "--once", state=state)
        status = run("status", str(src), str(dst), state=state)
    assert second.returncode == 2, second.stdout + second.stderr
    assert "or whose state folder was deleted while it ran); stop that one first" in second.stderr, second.stderr
    assert status.returncode == 1, status.stdout + status.stderr
    assert "(running, running without an index here)" in status.stdout, status.stdout
    assert "the state folder was deleted while it ran" in status.stdout, status.stdout
