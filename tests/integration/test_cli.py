"""The command line as users meet it: help, exit codes, one-line errors, the guard."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import importlib.util
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from mirror import engine
from mirror.cli import main
from tests.cli import MIRROR, files, run, same_day, start, wait_for, watching
from tests.support import written_on


@pytest.fixture
def src(tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    (folder / "2026").mkdir(parents=True)
    for i in range(12):
        (folder / "2026" / f"invoice [{i}] #%.pdf").write_bytes(b"%PDF " + bytes([i]) * (100 + i))
    (folder / "Thumbs.db").write_bytes(b"junk")
    return folder


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def assert_one_line_error(result, code: int, *words: str) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("mirror: error:") or "Error:" in line]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], errors[0]


@pytest.mark.parametrize(
    "command", [[], ["run"], ["verify"], ["status"], ["init"], ["backends"], ["auth"], ["auth", "dropbox"]]
)
def test_every_command_has_help(command: list[str], state: Path) -> None:
    result = run(*command, "--help", state=state)
    assert result.returncode == 0 and "Usage:" in result.stdout


def test_first_copy_then_nothing_to_do_then_verify(src: Path, tmp_path: Path, state: Path) -> None:
    target = tmp_path / "backup"
    first = run("run", str(src), str(target), "--once", state=state)
    assert first.returncode == 0, first.stderr
    expected = {k: v for k, v in files(src).items() if k != "Thumbs.db"}
    assert files(target) == expected
    for rel in expected:
        assert (target / rel).stat().st_mtime_ns == (src / rel).stat().st_mtime_ns
    again = run("run", str(src), str(target), "--once", state=state)
    assert again.returncode == 0 and "0 sent" in again.stdout
    assert run("verify", str(src), str(target), state=state).returncode == 0
    (target / "notes from the accountant.txt").write_text("not from the source")
    extra = run("verify", str(src), str(target), state=state)
    # still a faithful mirror, but not silently "identical" to the source
    assert extra.returncode == 0 and "identical (12 files; sizes and times compared)" in extra.stdout
    assert "1 other file(s) on the target" in extra.stdout and "notes from the accountant.txt" in extra.stdout
    # an upload under way (or one a stopped run left) is mirror's own, not someone else's
    (target / "2026" / ".~mirror-0123456789ab.tmp").write_bytes(b"half an invoice")
    sending = run("verify", str(src), str(target), state=state)
    assert sending.returncode == 0 and "1 upload under way" in sending.stdout, sending.stdout
    assert "1 other file(s)" in sending.stdout
    (target / "2026" / ".~mirror-0123456789ab.tmp").unlink()
    (target / "2026" / "invoice [3] #%.pdf").write_bytes(b"tampered")
    verify = run("verify", str(src), str(target), state=state)
    assert verify.returncode == 1 and "invoice [3] #%.pdf: size differs" in verify.stdout
    # a run trusts the index: "0 sent", exit 0, while verify finds the copy changed or gone
    (target / "2026" / "invoice [2] #%.pdf").unlink()
    verify = run("verify", str(src), str(target), state=state)
    mend = f"mirror run {src} {target} --once --rescan"
    assert "default: 2026/invoice [2] #%.pdf: missing on the target\n" in verify.stdout, verify.stdout
    assert f"default: to send what is missing or differs: {mend}\n" in verify.stdout, verify.stdout
    assert run(*mend.split()[1:], state=state).returncode == 0
    mended = run("verify", str(src), str(target), state=state)
    assert mended.returncode == 0 and "to send" not in mended.stdout, mended.stdout


def test_verify_checks_a_target_with_the_layout_it_was_mirrored_with(
    src: Path, tmp_path: Path, state: Path
) -> None:
    target = tmp_path / "backup"
    first = run("run", str(src), str(target), "--once", "--layout", "flat", state=state)
    assert first.returncode == 0, first.stderr
    as_placed = run("verify", str(src), str(target), "--layout", "flat", state=state)
    assert as_placed.returncode == 0 and "identical" in as_placed.stdout, as_placed.stdout + as_placed.stderr
    # without --layout, the one the last run used, said out loud (was: every file "missing")
    as_run = run("verify", str(src), str(target), state=state)
    assert as_run.returncode == 0 and "identical (12 files;" in as_run.stdout, as_run.stdout + as_run.stderr
    assert "default: layout flat, which mirror run last used here" in as_run.stdout
    as_tree = run("verify", str(src), str(target), "--layout", "tree", state=state)
    assert as_tree.returncode == 1 and "missing on the target" in as_tree.stdout
    (src / "2025").mkdir()
    (src / "2025" / "invoice [1] #%.pdf").write_bytes(b"a year older, same name")
    second = run("run", str(src), str(target), "--once", "--layout", "flat", state=state)
    assert second.returncode == 1, second.stdout + second.stderr
    clash = run("verify", str(src), str(target), "--layout", "flat", state=state)
    assert clash.returncode == 1
    # the source file left out is named, and where it would have gone
    left_out = "2025/invoice [1] #%.pdf -> invoice [1] #%.pdf"
    holder = "'2026/invoice [1] #%.pdf'"
    assert f"{left_out}: not mirrored: {holder} holds that target path" in clash.stdout, clash.stdout
    bad = run("verify", str(src), str(target), "--layout", "{nope}", state=state)
    assert bad.returncode == 2 and "--layout" in bad.stderr and "Traceback" not in bad.stderr


def _two_years(tmp_path: Path) -> tuple[Path, Path]:
    """An export of four files from two years (two in a subfolder), and where its backup goes."""
    src, target = tmp_path / "export", tmp_path / "backup"
    (src / "scans").mkdir(parents=True)
    for year in (2024, 2025):
        made = dt.datetime(year, 6, 1, 12).timestamp()
        for name in (f"scans/{year}-a.pdf", f"{year}-b.pdf"):
            (src / name).write_bytes(name.encode())
            os.utime(src / name, (made, made))
    return src, target


@pytest.mark.parametrize("layout", ["by-year", "archive/{year}/{name}"])
def test_verify_tells_the_layout_of_an_index_that_records_none(layout: str, tmp_path: Path, state: Path) -> None:
    """After an upgrade, verify SOURCE TARGET of a target an older mirror filled by year
    (its index records no layout) reported every file missing, exit 1: it checked the
    tree layout."""
    src, target = _two_years(tmp_path)
    assert run("run", str(src), str(target), "--once", "--layout", layout, state=state).returncode == 0
    (db,) = (state / "targets").glob("*.sqlite")
    with sqlite3.connect(db) as older:  # as mirror wrote it before it recorded the layout
        older.execute("DELETE FROM meta WHERE key = 'layout'")
    older.close()
    checked = run("verify", str(src), str(target), state=state)
    if layout == "by-year":
        assert checked.returncode == 0 and "default: identical (4 files;" in checked.stdout, checked.stdout
        assert "default: layout by-year, told from where the index has its files" in checked.stdout
        return
    assert checked.returncode == 1 and "missing on the target" in checked.stdout
    told = (
        "default: the index records no layout (an older mirror wrote it), and most of its files are not where "
        "the tree layout puts them; give --layout as mirror run had it\n"
    )
    assert checked.stdout.startswith(told), checked.stdout
    given = run("verify", str(src), str(target), "--layout", layout, state=state)
    assert given.returncode == 0 and "identical (4 files;" in given.stdout, given.stdout


def test_a_correction_within_the_second_on_a_disk_that_keeps_whole_seconds_is_sent(
    tmp_path: Path, state: Path
) -> None:
    """On a source disk that keeps whole seconds (ext3; FAT keeps 2 s), a run that read an
    invoice, then a same-size correction within that second (size and time as they were):
    the first version stayed on the target for good, and verify said identical."""
    src, target = tmp_path / "export", tmp_path / "backup"
    src.mkdir()
    config = tmp_path / "mirror.toml"
    config.write_text(f'source = "{src}"\n[defaults]\nsettle = "0.1s"\n[targets.usb]\nurl = "{target}"\n')
    time.sleep(1 - time.time() % 1)  # at the start of a second, so that the run starts within it
    second = time.time_ns() // 10**9 * 10**9
    invoice = src / "invoice.pdf"
    invoice.write_bytes(b"total 100.00")
    os.utime(invoice, ns=(second, second))  # as such a disk keeps the time of the write
    started = start("run", "-c", str(config), "--once", state=state)
    time.sleep(max(0.0, (second + 1_500_000_000 - time.time_ns()) / 1e9))
    invoice.write_bytes(b"total 900.00")
    os.utime(invoice, ns=(second, second))
    if time.time_ns() >= second + 1_900_000_000:
        started.kill()
        pytest.skip("the correction came too late to fall within the second (a busy machine)")
    assert started.wait(30) == 0
    assert (target / "invoice.pdf").read_bytes() == b"total 900.00"


@pytest.mark.parametrize("tick", [10**9, 2 * 10**9], ids=["ext3", "fat"])
def test_a_target_disk_with_coarser_times_is_not_sent_everything_again(
    tick: int, tmp_path: Path, state: Path
) -> None:
    """A USB stick that keeps whole seconds (ext3) or 2 s (FAT): each listing pass (every
    hour, --rescan) sent every file again, and verify called every time different."""
    src, target = _two_years(tmp_path)
    for path in src.rglob("*.pdf"):  # written by a program on a disk that keeps nanoseconds
        made = path.stat().st_mtime_ns + 1_234_567_891
        os.utime(path, ns=(made, made))
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    for path in target.rglob("*.pdf"):  # as the stick's filesystem keeps them
        given = path.stat().st_mtime_ns
        os.utime(path, ns=(given - given % tick, given - given % tick))
    again = run("run", str(src), str(target), "--once", "--rescan", state=state)
    assert again.returncode == 0 and "0 sent (0 B)" in again.stdout, again.stdout
    checked = run("verify", str(src), str(target), state=state)
    assert checked.returncode == 0 and "identical (4 files; sizes and times compared)" in checked.stdout, (
        checked.stdout
    )


def test_verify_with_a_new_state_folder_tells_the_layout_from_the_target(tmp_path: Path, state: Path) -> None:
    """On a new machine (or from another account), verify SOURCE TARGET of a target
    filled by year reported every file missing, exit 1: with no index it checked the
    tree layout."""
    src, target = _two_years(tmp_path)
    assert run("run", str(src), str(target), "--once", "--layout", "by-year", state=state).returncode == 0
    elsewhere = tmp_path / "new-machine"
    checked = run("verify", str(src), str(target), state=elsewhere)
    assert checked.returncode == 0 and "default: identical (4 files;" in checked.stdout, checked.stdout
    assert "default: layout by-year, told from where the target has the source's files" in checked.stdout
    (target / "2025" / "2025-b.pdf").unlink()
    damaged = run("verify", str(src), str(target), state=elsewhere)
    assert damaged.returncode == 1 and "2025-b.pdf -> 2025/2025-b.pdf: missing on the target" in damaged.stdout


def test_a_new_machine_that_left_the_layout_out_does_not_send_every_file_again(
    tmp_path: Path, state: Path
) -> None:
    """A new machine (a state folder with no index of the target) whose `mirror run`
    left out the --layout by-year the target was filled with sent every file again in
    the tree layout, beside its copy."""
    src, target = _two_years(tmp_path)
    assert run("run", str(src), str(target), "--once", "--layout", "by-year", state=state).returncode == 0
    before = files(target)
    elsewhere = tmp_path / "new-machine"
    refused = run("run", str(src), str(target), "--once", state=elsewhere)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "the target holds 4 of the source's 4 files where the by-year layout puts them" in refused.stderr
    assert "give --layout by-year" in refused.stderr and "Traceback" not in refused.stderr
    assert files(target) == before
    again = run("run", str(src), str(target), "--once", state=elsewhere)
    assert again.returncode == 1 and files(target) == before  # not only once: the index is still empty
    went_on = run("run", str(src), str(target), "--once", "--layout", "by-year", state=elsewhere)
    assert went_on.returncode == 0 and files(target) == before, went_on.stderr
    anew = tmp_path / "another-machine"
    relaid = run("run", str(src), str(target), "--once", "--layout", "tree", state=anew)
    assert relaid.returncode == 0 and (target / "scans" / "2024-a.pdf").exists(), relaid.stderr


def test_verify_and_status_of_source_target_find_a_config_s_target_there(
    src: Path, tmp_path: Path, state: Path
) -> None:
    """The service mirrors by config (target 'usb', by year); a check by hand names the
    two folders. It must not call every file missing, nor the target never run."""
    config = tmp_path / "mirror.toml"
    config.write_text(f'source = "{src}"\n[targets.usb]\nurl = "{tmp_path / "backup"}"\nlayout = "by-year"\n')
    assert run("run", "-c", str(config), "--once", state=state).returncode == 0
    checked = run("verify", str(src), str(tmp_path / "backup"), state=state)
    assert checked.returncode == 0 and "usb: identical (12 files;" in checked.stdout, checked.stdout
    shown = run("status", str(src), str(tmp_path / "backup"), state=state)
    assert shown.returncode == 0 and "files:   12" in shown.stdout and "never run" not in shown.stdout, (
        shown.stdout
    )
    # a run by hand with the two words would lay a second, tree-shaped copy beside it
    before = files(tmp_path / "backup")
    by_hand = run("run", str(src), str(tmp_path / "backup"), "--once", state=state)
    assert_one_line_error(by_hand, 2, "as target 'usb' of a config", "--target usb")
    assert files(tmp_path / "backup") == before


def test_verify_of_source_target_takes_the_patterns_of_the_config_s_target_there(
    tmp_path: Path, state: Path
) -> None:
    """The service leaves drafts/ out by config; a check by hand named the two folders and
    reported every draft missing on the target (exit 1), at every check."""
    src, backup = tmp_path / "export", tmp_path / "backup"
    (src / "drafts").mkdir(parents=True)
    (src / "inv.pdf").write_bytes(b"invoice")
    (src / "drafts" / "d.pdf").write_bytes(b"draft")
    config = tmp_path / "mirror.toml"
    config.write_text(f'source = "{src}"\n[targets.usb]\nurl = "{backup}"\nexclude = ["drafts/"]\n')
    assert run("run", "-c", str(config), "--once", state=state).returncode == 0
    checked = run("verify", str(src), str(backup), state=state)
    assert checked.returncode == 0 and "usb: identical (1 file;" in checked.stdout, checked.stdout


def test_a_renamed_folder_leaves_no_empty_folder_behind(tmp_path: Path, state: Path) -> None:
    src, target = tmp_path / "export", tmp_path / "backup"
    (src / "drafts" / "march").mkdir(parents=True)
    (src / "drafts" / "march" / "invoice.pdf").write_bytes(b"paid")
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    (src / "drafts").rename(src / "final")
    moved = run("run", str(src), str(target), "--once", state=state)
    assert moved.returncode == 0 and "1 moved" in moved.stdout, moved.stdout + moved.stderr
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "final",
        "final/march",
        "final/march/invoice.pdf",
    ]


def test_a_folder_replaced_by_a_file_of_its_name_is_mirrored_in_one_pass(tmp_path: Path, state: Path) -> None:
    src, target = tmp_path / "export", tmp_path / "backup"
    (src / "scans" / "2026").mkdir(parents=True)
    (src / "scans" / "2026" / "a.tif").write_bytes(b"scan")
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    shutil.rmtree(src / "scans")
    (src / "scans").write_bytes(b"now a file")
    swapped = run("run", str(src), str(target), "--once", state=state)
    assert swapped.returncode == 0, swapped.stdout + swapped.stderr
    assert files(target) == {"scans": b"now a file"}


def test_two_files_of_one_size_and_time_swapped_by_renames_swap_on_the_target(tmp_path: Path, state: Path) -> None:
    src, target = tmp_path / "export", tmp_path / "backup"
    src.mkdir()
    for name, text in (("001.pdf", b"invoice A"), ("002.pdf", b"invoice B")):
        (src / name).write_bytes(text)
        os.utime(src / name, ns=(1_709_294_400 * 10**9,) * 2)
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    os.rename(src / "001.pdf", src / "swap.tmp")
    os.rename(src / "002.pdf", src / "001.pdf")
    os.rename(src / "swap.tmp", src / "002.pdf")
    swapped = run("run", str(src), str(target), "--once", state=state)
    assert swapped.returncode == 0 and "2 sent" in swapped.stdout, swapped.stdout + swapped.stderr
    assert files(target) == {"001.pdf": b"invoice B", "002.pdf": b"invoice A"}
    again = run("run", str(src), str(target), "--once", state=state)
    assert "0 sent" in again.stdout, again.stdout


def _sixty_invoices_mirrored(tmp_path: Path, state: Path) -> tuple[Path, Path, tuple[int, int]]:
    """A source of 60 invoices of one size, dated March 2024, mirrored: (source, target,
    their time)."""
    src, target = tmp_path / "export", tmp_path / "backup"
    src.mkdir()
    march = (1_709_294_400 * 10**9,) * 2
    for n in range(1001, 1061):
        (src / f"RE-{n}.pdf").write_bytes(b"total: 100.00 EUR")
        os.utime(src / f"RE-{n}.pdf", ns=march)
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    return src, target, march


def _reuse_inodes(src: Path, data: bytes, when: tuple[int, int]) -> int:
    """Delete every file of ``src`` and make new ones until some get the freed inodes;
    each such file takes the path whose file had its inode, with ``data`` (of that
    file's size) and the time ``when``. How many did."""
    freed = {}
    for old in src.iterdir():
        freed[old.stat().st_ino] = old.name
        old.unlink()
    # other processes (and mirror's runs) free and take inodes too: files are made until
    # some get the freed ones
    spares = [src.parent / f"spare-{n}" for n in range(2000)]
    reused = 0
    for spare in spares:
        spare.write_bytes(b"")
        if (name := freed.pop(spare.stat().st_ino, None)) is not None:
            spare.write_bytes(data)
            os.utime(spare.rename(src / name), ns=when)
            reused += 1
    for spare in spares:
        spare.unlink(missing_ok=True)
    return reused


@pytest.mark.parametrize("where", ["own path", "another name"])
def test_files_replaced_while_an_older_mirror_was_upgraded_are_sent(
    tmp_path: Path, state: Path, where: str
) -> None:
    """Upgraded from a mirror whose index told no inode generation, and meanwhile each
    invoice deleted and written again, corrected, with its old inode, size and time (at
    its own path, or under another name): the target kept the old invoices for good,
    under the new names too, and verify said identical."""
    src, target, march = _sixty_invoices_mirrored(tmp_path, state)
    (db,) = (state / "targets").glob("*.sqlite")
    with contextlib.closing(sqlite3.connect(db)) as index, index:  # format 1's table
        index.execute("ALTER TABLE files DROP COLUMN gen")
        index.execute("DELETE FROM meta WHERE key = 'generations'")
        index.execute("PRAGMA user_version = 1")
    reused = _reuse_inodes(src, b"total: 190.00 EUR", march)
    if where == "another name":
        for n, old in enumerate(sorted(src.iterdir())):
            old.rename(src / f"CN-{n}.pdf")  # a rename keeps the inode, size and time
    if not reused:
        pytest.skip("this filesystem did not hand the freed inodes to new files")
    result = run("run", str(src), str(target), "--once", "--max-delete", "60", state=state)
    assert result.returncode == 0, result.stdout + result.stderr
    assert files(target) == files(src), result.stdout


def _status(src: Path, target: Path, state: Path) -> str:
    return run("status", str(src), str(target), state=state).stdout


@pytest.mark.parametrize("how", ["watching", "rescan"])
def test_a_new_file_given_the_inode_size_and_time_of_the_file_at_its_path_is_sent(
    tmp_path: Path, state: Path, how: str
) -> None:
    """A program deleted each invoice and wrote it again, corrected, dating it with the
    invoice's date: ext4 gave each new file its old inode, and with the same size and
    time the target kept the old invoice for good, while status and verify said in sync.
    A watch pass, which looks at the changed files one by one, and a pass that lists the
    target tell the new file by its inode generation."""
    src, target, march = _sixty_invoices_mirrored(tmp_path, state)

    corrected = b"total: 190.00 EUR"
    if how == "watching":
        log = tmp_path / "mirror.log"
        with watching("run", str(src), str(target), "--max-delete", "60", state=state, log=log):
            wait_for(lambda: "(running, idle)" in _status(src, target, state), what="the start's pass", log=log)
            if not _reuse_inodes(src, corrected, march):
                pytest.skip("this filesystem did not hand the freed inodes to new files")
            wait_for(lambda: files(target) == files(src), timeout=20, what="the corrected invoices", log=log)
    else:
        if not _reuse_inodes(src, corrected, march):
            pytest.skip("this filesystem did not hand the freed inodes to new files")
        result = run("run", str(src), str(target), "--once", "--rescan", "--max-delete", "60", state=state)
        assert result.returncode == 0, result.stdout + result.stderr
    assert files(target) == files(src) and set(files(src).values()) == {corrected}


@pytest.mark.parametrize("first", ["sent", "found-on-the-target", "sent-by-an-older-mirror"])
def test_a_new_file_given_a_deleted_file_s_inode_size_and_time_is_sent_not_taken_for_a_rename(
    tmp_path: Path, state: Path, first: str
) -> None:
    """ext4 hands the inode a deleted file freed to the next file made: with the same
    size and time (``touch -d``, ``cp -p``, an unzip) it looked like the old file renamed,
    and the target got the old invoice under the new name, for good. So too for files
    the first run found on the target already (a copy made by another tool), and for
    those an older mirror sent, whose index told no inode generation."""
    src, target = tmp_path / "export", tmp_path / "backup"
    src.mkdir()
    march = (1_709_294_400 * 10**9,) * 2
    for n in range(1001, 1061):
        (src / f"RE-{n}.pdf").write_bytes(b"invoice %d" % n)
        os.utime(src / f"RE-{n}.pdf", ns=march)
    if first == "found-on-the-target":
        shutil.copytree(src, target)
    adopted = run("run", str(src), str(target), "--once", state=state)
    assert adopted.returncode == 0 and (": 0 sent" in adopted.stdout) == (first == "found-on-the-target")
    if first == "sent-by-an-older-mirror":
        (db,) = (state / "targets").glob("*.sqlite")
        with sqlite3.connect(db) as index:  # format 1's table
            index.execute("ALTER TABLE files DROP COLUMN gen")
            index.execute("DELETE FROM meta WHERE key = 'generations'")
            index.execute("PRAGMA user_version = 1")
        index.close()
    # a real rename stays a move, and the file's row keeps telling its inode's generation.
    # Not the first after an upgrade: with no generation to tell, a file of another name
    # with a gone file's inode, size and time may be a new one, and is sent
    (src / "RE-1001.pdf").rename(src / "RE-1001 paid.pdf")
    renamed = run("run", str(src), str(target), "--once", state=state)
    if first == "sent-by-an-older-mirror":
        assert "1 sent" in renamed.stdout and "1 deleted" in renamed.stdout, renamed.stdout + renamed.stderr
        (src / "RE-1001 paid.pdf").rename(src / "RE-1001 paid late.pdf")
        renamed = run("run", str(src), str(target), "--once", state=state)
    assert "1 moved" in renamed.stdout, renamed.stdout + renamed.stderr
    freed = set()
    for old in src.iterdir():
        freed.add(old.stat().st_ino)
        old.unlink()
    # files are made until some get the freed inodes: other processes (and this one's
    # runs) free and take inodes too
    spares = [src / f"spare-{n}" for n in range(2000)]
    reused = 0
    for n, spare in enumerate(spares):
        spare.write_bytes(b"invoice %d" % (2001 + n % 60))
        if spare.stat().st_ino in freed:
            os.utime(spare.rename(src / f"RE-{2001 + reused}.pdf"), ns=march)
            reused += 1
    for spare in spares:
        spare.unlink(missing_ok=True)
    if not reused:
        pytest.skip("this filesystem did not hand the freed inodes to new files")
    # every file replaced: the delete guard would hold back every deletion
    result = run("run", str(src), str(target), "--once", "--max-delete", "60", state=state)
    assert result.returncode == 0, result.stdout + result.stderr
    assert files(target) == files(src) and len(files(target)) == reused


def test_a_file_taking_the_path_of_another_of_one_size_and_time_is_sent_not_taken_for_its_copy(
    tmp_path: Path, state: Path
) -> None:
    """Flat layout: folder A renamed to C, then C/f0.pdf and B/f2.pdf swapped by renames,
    all invoices of one size and time. A pass that lists the target (--rescan, every
    rescan_interval, a restart after a crash) found f0.pdf there with C/f0.pdf's size and
    time and took it for its copy: it was A/f0.pdf's, the other invoice."""
    src, target = tmp_path / "export", tmp_path / "backup"
    (src / "A").mkdir(parents=True)
    (src / "B").mkdir()
    for rel, text in (("A/f0.pdf", b"invoice 0000"), ("B/f2.pdf", b"invoice 0002")):
        (src / rel).write_bytes(text)
        os.utime(src / rel, ns=(1_700_000_000 * 10**9,) * 2)
    flat = ("run", str(src), str(target), "--layout", "flat", "--once")
    assert run(*flat, state=state).returncode == 0
    (src / "A").rename(src / "C")
    (src / "C" / "f0.pdf").rename(src / "swap")
    (src / "B" / "f2.pdf").rename(src / "C" / "f0.pdf")
    (src / "swap").rename(src / "B" / "f2.pdf")
    listed = run(*flat, "--rescan", state=state)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert files(target) == {"f0.pdf": b"invoice 0002", "f2.pdf": b"invoice 0000"}


def test_a_run_cut_short_after_a_folder_became_a_file_leaves_nothing_failing(tmp_path: Path, state: Path) -> None:
    src, target = tmp_path / "export", tmp_path / "backup"
    (src / "scans").mkdir(parents=True)
    (src / "scans" / "a.tif").write_bytes(b"scan")
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    shutil.rmtree(src / "scans")
    (src / "scans").write_bytes(b"now a file")
    # as a run killed after sending the file, before its index rows were committed
    shutil.rmtree(target / "scans")
    (target / "scans").write_bytes(b"now a file")
    resumed = run("run", str(src), str(target), "--once", state=state)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert files(target) == {"scans": b"now a file"}
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0


def test_an_empty_folder_left_where_a_file_goes_is_removed(tmp_path: Path, state: Path) -> None:
    src, target = tmp_path / "export", tmp_path / "backup"
    src.mkdir()
    (src / "scans").write_bytes(b"a file named like a folder that was")
    (target / "scans").mkdir(parents=True)  # as a pass cut short between a delete and its folder
    result = run("run", str(src), str(target), "--once", state=state)
    assert result.returncode == 0, result.stdout + result.stderr
    assert files(target) == {"scans": b"a file named like a folder that was"}
    (target / "scans").unlink()
    (target / "scans" / "2026" / "03").mkdir(parents=True)  # a run cut short before pruning
    (target / "scans" / "2025").mkdir()
    tree = run("run", str(src), str(target), "--once", "--rescan", state=state)
    assert tree.returncode == 0, tree.stdout + tree.stderr
    assert files(target) == {"scans": b"a file named like a folder that was"}
    (target / "scans").unlink()
    (target / "scans" / "2026").mkdir(parents=True)
    (target / "scans" / "2026" / "someone else's.pdf").write_bytes(b"not mirror's")
    kept = run("run", str(src), str(target), "--once", "--rescan", state=state)
    assert kept.returncode == 1 and files(target) == {"scans/2026/someone else's.pdf": b"not mirror's"}


def test_a_prefilled_target_is_adopted_not_copied_again(src: Path, tmp_path: Path, state: Path) -> None:
    target = tmp_path / "backup"
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    fresh_state = tmp_path / "other-state"
    result = run("run", str(src), str(target), "--once", state=fresh_state)
    assert result.returncode == 0 and "0 sent" in result.stdout and "12 already there" in result.stdout


def test_a_path_too_long_for_a_deeper_target_folder_is_refused_and_holds_back_no_deletion(
    src: Path, tmp_path: Path, state: Path
) -> None:
    """A file whose path fits below the source, but not below a target folder deeper in
    its disk (the kernel's 4,096 bytes): it failed as "OSError: [Errno 36] File name too
    long", a transfer error, which held back every deletion for good."""
    dst = tmp_path / ("x" * 200) / ("y" * 200)
    deep = src.joinpath(*["d" * 200] * 19)
    deep.mkdir(parents=True)
    (deep / "deep.pdf").write_bytes(b"deep")
    assert len(os.fsencode(dst / deep.relative_to(src) / "deep.pdf")) > 4095
    run("run", str(src), str(dst), "--once", state=state)
    (src / "2026" / "invoice [0] #%.pdf").unlink()
    again = run("run", str(src), str(dst), "--once", state=state)
    told = (again.stdout + again.stderr).replace("d" * 200, "D")
    assert not (dst / "2026" / "invoice [0] #%.pdf").exists(), told
    assert "Errno 36" not in told and "longer than the target allows" in told, told
    assert again.returncode == 1  # the file is not on the target: a look is needed


def test_emptied_source_is_refused_by_the_guard(src: Path, tmp_path: Path, state: Path) -> None:
    target = tmp_path / "backup"
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    for f in (src / "2026").iterdir():
        f.unlink()
    dry = run("run", str(src), str(target), "--once", "--dry-run", state=state)
    assert (dry.stdout + dry.stderr).count("deletions withheld") == 1, dry.stdout + dry.stderr
    result = run("run", str(src), str(target), "--once", state=state)
    assert result.returncode == 1
    assert "deletions withheld" in result.stderr and "empty" in result.stderr
    assert len(files(target)) == 12


def test_patterns_that_take_in_no_file_are_refused_by_the_guard_in_a_single_run(
    tmp_path: Path, state: Path
) -> None:
    """include = ["*.PDF"] (a typo for *.pdf) in the config of a cron job: 'nas: 0 sent,
    8 deleted', exit 0, every copy gone, where watch mode withheld the same deletions."""
    src, target = tmp_path / "src", tmp_path / "nas"
    src.mkdir()
    for i in range(1, 9):
        (src / f"inv{i}.pdf").write_bytes(b"invoice %d" % i)
    cfg = tmp_path / "mirror.toml"
    cfg.write_text(f'source = "{src}"\n[targets.nas]\nurl = "{target}"\n')
    assert run("run", "-c", str(cfg), "--once", state=state).returncode == 0
    cfg.write_text(f'source = "{src}"\n[defaults]\ninclude = ["*.PDF"]\n[targets.nas]\nurl = "{target}"\n')
    result = run("run", "-c", str(cfg), "--once", state=state)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "deletions withheld: this target's include/exclude patterns take in no file" in result.stderr
    assert len(files(target)) == 8


def test_too_many_deletes_are_refused_unless_allowed(src: Path, tmp_path: Path, state: Path) -> None:
    target = tmp_path / "backup"
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    for f in sorted((src / "2026").iterdir())[:11]:
        f.unlink()
    refused = run("run", str(src), str(target), "--once", state=state)
    assert refused.returncode == 1 and "11 of 12" in refused.stderr
    assert len(files(target)) == 12
    allowed = run("run", str(src), str(target), "--once", "--max-delete", "11", state=state)
    assert allowed.returncode == 0, allowed.stderr
    assert len(files(target)) == 1


def test_a_new_source_disk_keeps_the_history_on_the_target_until_it_is_restored(
    tmp_path: Path, state: Path
) -> None:
    """The source disk died; a new, empty one went in and the program wrote new invoices
    each day. Daily runs withheld the old invoices' deletion until the new ones
    outnumbered them, then deleted them all."""
    src, target = tmp_path / "export", tmp_path / "backup"
    (src / "2025").mkdir(parents=True)
    for i in range(40):
        (src / "2025" / f"R-{i}.pdf").write_bytes(b"invoice 2025 %d" % i)
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    shutil.rmtree(src)
    (src / "2026").mkdir(parents=True)
    for day in range(6):
        for i in range(10):
            (src / "2026" / f"R-{day}-{i}.pdf").write_bytes(b"invoice 2026 %d %d" % (day, i))
        daily = run("run", str(src), str(target), "--once", state=state)
        assert daily.returncode == 1 and "deletions withheld" in daily.stderr, daily.stderr
        assert len(list((target / "2025").iterdir())) == 40, f"day {day}"
    assert "--max-delete 40" in daily.stderr, daily.stderr
    # restored from the target (a year at a time): nothing left to withhold, all clear
    shutil.copytree(target / "2025", src / "2025")
    done = run("run", str(src), str(target), "--once", state=state)
    assert done.returncode == 0 and "0 deleted" in done.stdout, done.stdout + done.stderr
    assert run("status", str(src), str(target), state=state).returncode == 0


def test_deletions_an_older_mirror_withheld_stay_withheld_after_an_upgrade(tmp_path: Path, state: Path) -> None:
    """The source disk was replaced, and a mirror from before the guard remembered its
    count withheld the deletions (its index says so, with no count). Upgraded while the
    user restored it from the target a year at a time, mirror deleted the copies not yet
    restored, their only copies, once just over half were back (60 deleted, exit 0)."""
    src, target = tmp_path / "export", tmp_path / "backup"
    for year in (2023, 2024, 2025):
        (src / str(year)).mkdir(parents=True)
        for i in range(60):
            (src / str(year) / f"R-{i}.pdf").write_bytes(b"invoice %d %d" % (year, i))
    (src / "misc").mkdir()
    for i in range(20):
        (src / "misc" / f"note-{i}.txt").write_bytes(b"note %d" % i)
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    for year in (2023, 2024, 2025):
        shutil.rmtree(src / str(year))
    withheld = run("run", str(src), str(target), "--once", state=state)
    assert withheld.returncode == 1 and "deletions withheld" in withheld.stderr, withheld.stderr
    (index,) = (state / "targets").glob("*.sqlite")
    with contextlib.closing(sqlite3.connect(index)) as db, db:
        db.execute("DELETE FROM meta WHERE key = 'guard_base'")  # as the older mirror left it
    for year in (2023, 2024):
        shutil.copytree(target / str(year), src / str(year))
    during = run("run", str(src), str(target), "--once", state=state)
    assert len(list((target / "2025").iterdir())) == 60, during.stdout + during.stderr
    assert during.returncode == 1 and "deletions withheld" in during.stderr, during.stderr


def test_a_copy_edited_on_the_target_goes_to_the_trash_before_a_listing_pass_sends_the_file_again(
    tmp_path: Path, state: Path
) -> None:
    """Someone corrected the copy on the target; the next --rescan (or hourly listing
    pass) sent the source's file over it without a word, exit 0, and the edit was lost."""
    src, target = tmp_path / "export", tmp_path / "backup"
    src.mkdir()
    (src / "inv-07.pdf").write_bytes(b"invoice 07")
    (src / "inv-08.pdf").write_bytes(b"invoice 08")
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    (target / "inv-07.pdf").write_bytes(b"edited on the backup")
    os.utime(target / "inv-08.pdf", (0, 0))  # its time alone: the same copy, sent again
    done = run("run", str(src), str(target), "--once", "--rescan", state=state)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 sent" in done.stdout, done.stdout
    assert (
        "inv-07.pdf: the copy on the target changed since mirror put it there: its size changed (10 to 20 bytes); "
        "the copy on the target is kept in .mirror-trash/"
    ) in done.stderr, done.stderr
    assert "inv-08.pdf" not in done.stderr
    mirrored = {k: v for k, v in files(target).items() if not k.startswith(".mirror-trash/")}
    assert mirrored == {"inv-07.pdf": b"invoice 07", "inv-08.pdf": b"invoice 08"}
    assert [k.read_bytes() for k in target.glob(".mirror-trash/*/*")] == [b"edited on the backup"]


def test_a_source_restored_from_an_older_backup_keeps_the_newer_copies(tmp_path: Path, state: Path) -> None:
    src, target = tmp_path / "export", tmp_path / "backup"
    src.mkdir()
    (src / "inv-07.pdf").write_bytes(b"invoice 07, total 100.00")
    week_ago = time.time() - 7 * 86400
    os.utime(src / "inv-07.pdf", (week_ago, week_ago))
    backup = tmp_path / "last-week"
    shutil.copytree(src, backup)
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    (src / "inv-07.pdf").write_bytes(b"CORRECTED: total 120.00 (credit note)")
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    shutil.rmtree(src)
    shutil.copytree(backup, src)  # the older backup, times kept
    dry = run("run", str(src), str(target), "--once", "--dry-run", state=state)
    assert "set aside    inv-07.pdf -> .mirror-trash/" in dry.stdout and "older than the copy" in dry.stdout
    done = run("run", str(src), str(target), "--once", state=state)
    assert done.returncode == 0 and "older than the copy mirror sent" in done.stderr, done.stderr
    assert (target / "inv-07.pdf").read_bytes() == b"invoice 07, total 100.00"
    kept = list(target.glob(".mirror-trash/*/inv-07.pdf"))
    assert [k.read_bytes() for k in kept] == [b"CORRECTED: total 120.00 (credit note)"]
    # the trash copied back with the rest of the target is not mirrored again
    shutil.copytree(target / ".mirror-trash", src / ".mirror-trash")
    again = run("run", str(src), str(target), "--once", state=state)
    assert again.returncode == 0 and "0 sent" in again.stdout, again.stdout + again.stderr
    shutil.rmtree(src / ".mirror-trash")
    assert run("run", str(src), str(target), "--once", "--rescan", state=state).returncode == 0
    assert len(list(target.glob(".mirror-trash/*/inv-07.pdf"))) == 1


def test_an_export_dated_after_writing_keeps_no_copy_of_the_same_file(tmp_path: Path, state: Path) -> None:
    """The invoicing program exports each night and then dates each file as its document
    (touch -d 2024-01-15): every night each copy mirror had just sent, the same bytes,
    was kept in the trash, with a warning of a source restored from an older backup."""
    src, target = tmp_path / "export", tmp_path / "backup"
    src.mkdir()
    dated = dt.datetime(2024, 1, 15, 12, tzinfo=dt.UTC).timestamp()
    for night in range(2):
        (src / "inv-1.pdf").write_bytes(b"invoice 1, total 100.00")
        assert run("run", str(src), str(target), "--once", state=state).returncode == 0, f"night {night}"
        os.utime(src / "inv-1.pdf", (dated, dated))
        done = run("run", str(src), str(target), "--once", state=state)
        assert done.returncode == 0 and "1 sent" in done.stdout, done.stdout + done.stderr
        assert "older than the copy" not in done.stderr, done.stderr
    assert not (target / ".mirror-trash").exists()
    assert files(target) == {"inv-1.pdf": b"invoice 1, total 100.00"}
    assert (target / "inv-1.pdf").stat().st_mtime == dated


def test_an_older_backup_of_the_same_size_keeps_the_newer_copy(tmp_path: Path, state: Path) -> None:
    """Where the copy's bytes are compared, one that differs is kept though its size is the same."""
    src, target = tmp_path / "export", tmp_path / "backup"
    src.mkdir()
    (src / "inv-07.pdf").write_bytes(b"invoice 07, total 120.00")
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    (src / "inv-07.pdf").write_bytes(b"invoice 07, total 100.00")
    week_ago = time.time() - 7 * 86400
    os.utime(src / "inv-07.pdf", (week_ago, week_ago))  # the older backup, times kept
    done = run("run", str(src), str(target), "--once", state=state)
    assert done.returncode == 0 and "older than the copy mirror sent" in done.stderr, done.stderr
    assert (target / "inv-07.pdf").read_bytes() == b"invoice 07, total 100.00"
    kept = list(target.glob(".mirror-trash/*/inv-07.pdf"))
    assert [k.read_bytes() for k in kept] == [b"invoice 07, total 120.00"]


def test_a_copy_edited_on_the_target_is_not_deleted_by_a_listing_pass(
    src: Path, tmp_path: Path, state: Path
) -> None:
    target = tmp_path / "backup"
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    edited = target / "2026" / "invoice [3] #%.pdf"
    edited.write_bytes(b"corrected on the backup disk by the accountant")
    (src / "2026" / "invoice [3] #%.pdf").unlink()
    done = run("run", str(src), str(target), "--once", "--rescan", state=state)
    assert done.returncode == 0 and "0 deleted" in done.stdout, done.stdout + done.stderr
    assert "left on the target: its size changed" in done.stderr
    assert edited.read_bytes() == b"corrected on the backup disk by the accountant"


def test_delete_keep_and_trash(src: Path, tmp_path: Path, state: Path) -> None:
    keep, trash = tmp_path / "keep", tmp_path / "trash"
    for target, policy in ((keep, "keep"), (trash, "trash")):
        assert run("run", str(src), str(target), "--once", "--delete", policy, state=state).returncode == 0
    (src / "2026" / "invoice [0] #%.pdf").unlink()
    said = {}
    for target, policy in ((keep, "keep"), (trash, "trash")):
        done = run("run", str(src), str(target), "--once", "--delete", policy, state=state)
        assert done.returncode == 0
        said[policy] = done.stdout
    # a user reading "1 deleted" under the trash policy would think the copy gone
    assert "0 deleted, 1 moved to trash, 0 failed" in said["trash"], said["trash"]
    assert "0 deleted, 0 failed" in said["keep"], said["keep"]
    assert (keep / "2026" / "invoice [0] #%.pdf").exists()
    assert not (trash / "2026" / "invoice [0] #%.pdf").exists()
    assert [p.name for p in trash.glob(".mirror-trash/*/2026/*")] == ["invoice [0] #%.pdf"]


def test_a_long_name_trashed_twice_in_a_day_goes_to_the_trash_with_the_rest(tmp_path: Path, state: Path) -> None:
    """' (2)' made a 251-byte name too long for the target: the whole target failed all day."""
    same_day()
    src, target = tmp_path / "export", tmp_path / "backup"
    src.mkdir()
    long = "x" * 251 + ".pdf"
    for name in ("a.pdf", "b.pdf", "c.pdf", long):
        (src / name).write_bytes(name.encode()[:8])
    trash = ("run", str(src), str(target), "--once", "--delete", "trash", "--max-delete", "9")
    assert run(*trash, state=state).returncode == 0
    (src / long).unlink()
    assert run(*trash, state=state).returncode == 0
    (src / long).write_bytes(b"again")
    assert run(*trash, state=state).returncode == 0
    (src / long).unlink()
    (src / "a.pdf").unlink()
    done = run(*trash, state=state)
    assert done.returncode == 0 and "2 moved to trash, 0 failed" in done.stdout, done.stdout + done.stderr
    (day,) = (target / ".mirror-trash").iterdir()
    assert sorted(p.name for p in day.iterdir()) == sorted([long, "x" * 247 + " (2).pdf", "a.pdf"])


def test_a_file_trashed_again_on_the_same_day_keeps_its_earlier_copies(tmp_path: Path, state: Path) -> None:
    same_day()
    src, target = tmp_path / "export", tmp_path / "backup"
    src.mkdir()
    (src / "other.pdf").write_bytes(b"stays")

    def mirror() -> None:
        done = run("run", str(src), str(target), "--once", "--delete", "trash", "--max-delete", "9", state=state)
        assert done.returncode == 0, done.stdout + done.stderr

    # two at once go in one batch move on this target; one alone, by itself
    for version, names in ((1, ("a.pdf", "b")), (2, ("a.pdf", "b")), (3, ("a.pdf",))):
        for name in names:
            (src / name).write_bytes(b"%s version %d" % (name.encode(), version))
        mirror()
        for name in names:
            (src / name).unlink()
        mirror()
    trashed = {p.name: p.read_bytes() for p in target.glob(".mirror-trash/*/*")}
    assert trashed == {
        "a.pdf": b"a.pdf version 1",
        "a (2).pdf": b"a.pdf version 2",
        "a (3).pdf": b"a.pdf version 3",
        "b": b"b version 1",
        "b (2)": b"b version 2",
    }


@pytest.mark.parametrize(
    ("order", "kept"),
    [
        (["a/b.txt", "a"], {"a/b.txt": "a/b.txt", "a (2)": "a"}),
        (["a", "a/b.txt"], {"a": "a", "a (2)/b.txt": "a/b.txt"}),
    ],
)
def test_a_name_trashed_as_a_folder_and_as_a_file_on_one_day_keeps_both(
    tmp_path: Path, state: Path, order: list[str], kept: dict[str, str]
) -> None:
    """The second of the two once failed every run of that day: a file where the trash
    has a folder of its name, or a folder's file below a trashed file."""
    same_day()
    src, target = tmp_path / "export", tmp_path / "backup"
    src.mkdir()
    (src / "k.txt").write_text("stays")
    for rel in order:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
        assert run("run", str(src), str(target), "--once", "--delete", "trash", state=state).returncode == 0
        (src / rel).unlink()
        if "/" in rel:
            (src / rel).parent.rmdir()
        trashed = run("run", str(src), str(target), "--once", "--delete", "trash", state=state)
        assert trashed.returncode == 0, trashed.stdout + trashed.stderr
    (day,) = (target / ".mirror-trash").iterdir()
    assert files(day) == {k: v.encode() for k, v in kept.items()}


def test_a_numbered_trash_name_that_a_folder_blocks_takes_the_next_number(tmp_path: Path, state: Path) -> None:
    """x.pdf is in the trash, and a folder named like its next number: the third copy
    once went to 'x (2x (2).pdf', the number cut into the name."""
    same_day()
    src, target = tmp_path / "export", tmp_path / "backup"
    src.mkdir()
    (src / "k.pdf").write_text("stays")
    for version in ("one", "two"):
        (src / "x.pdf").write_text(version)
        assert run("run", str(src), str(target), "--once", "--delete", "trash", state=state).returncode == 0
        (src / "x.pdf").unlink()
        if version == "two":
            (day,) = (target / ".mirror-trash").iterdir()
            (day / "x (2).pdf").mkdir()
            (day / "x (2).pdf" / "theirs").write_text("not mirror's")
        assert run("run", str(src), str(target), "--once", "--delete", "trash", state=state).returncode == 0
    (day,) = (target / ".mirror-trash").iterdir()
    assert files(day) == {"x.pdf": b"one", "x (2).pdf/theirs": b"not mirror's", "x (3).pdf": b"two"}


def test_layout_flag_and_dry_run(src: Path, tmp_path: Path, state: Path) -> None:
    target = tmp_path / "flat"
    dry = run("run", str(src), str(target), "--once", "--dry-run", "--layout", "flat", state=state)
    assert dry.returncode == 0 and "put" in dry.stdout and "-> invoice [5] #%.pdf" in dry.stdout
    assert not target.exists() and not state.exists()
    assert run("run", str(src), str(target), "--once", "--layout", "flat", state=state).returncode == 0
    assert sorted(files(target)) == sorted(f"invoice [{i}] #%.pdf" for i in range(12))


@pytest.mark.parametrize(
    ("before", "after", "old", "new"),
    [
        # the file's new path lies below its old one, then the reverse: its old path's folder
        ("{year}/{stem}{suffix}", "by-year", "2024/scans", "2024/scans/scans"),
        ("by-year", "{year}/{stem}{suffix}", "2024/scans/scans", "2024/scans"),
    ],
)
def test_a_new_layout_can_put_a_file_below_its_old_path_or_onto_its_folder(
    tmp_path: Path, state: Path, before: str, after: str, old: str, new: str
) -> None:
    source, target = tmp_path / "export", tmp_path / "backup"
    (source / "scans").mkdir(parents=True)
    scan = source / "scans" / "scans"
    scan.write_bytes(b"scanned")
    os.utime(scan, (1_714_521_600, 1_714_521_600))  # 2024-05-01
    assert run("run", str(source), str(target), "--once", "--layout", before, state=state).returncode == 0
    assert files(target) == {old: b"scanned"}
    moved = run("run", str(source), str(target), "--once", "--layout", after, state=state)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert files(target) == {new: b"scanned"}
    again = run("run", str(source), str(target), "--once", "--layout", after, state=state)
    assert again.returncode == 0 and "0 sent (0 B), 0 deleted, 0 failed" in again.stdout, again.stdout


@pytest.mark.parametrize(
    ("before", "first", "after"),
    [
        # z/q leaves 2024/q, which q/w/v needs as a folder
        (
            "{year}/{stem}{suffix}",
            {"z/q": "2024/q", "q/w/v": "2024/v"},
            {"z/q": "2024/z/q", "q/w/v": "2024/q/w/v"},
        ),
        # each needs the other's old path as a folder
        ("{year}/{stem}{suffix}", {"b/a": "2024/a", "a/b": "2024/b"}, {"b/a": "2024/b/a", "a/b": "2024/a/b"}),
        # 05 takes the name of the folder r leaves
        ("by-month", {"r": "2024/05/r", "05": "2024/05/05"}, {"r": "2024/r", "05": "2024/05"}),
    ],
)
def test_a_new_layout_whose_files_stand_in_each_others_way_lands_in_one_run(
    tmp_path: Path, state: Path, before: str, first: dict[str, str], after: dict[str, str]
) -> None:
    source, target = tmp_path / "export", tmp_path / "backup"
    for rel in first:
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_text(rel)
        os.utime(source / rel, (1_714_521_600, 1_714_521_600))  # 2024-05-01
    assert run("run", str(source), str(target), "--once", "--layout", before, state=state).returncode == 0
    assert files(target) == {dst: rel.encode() for rel, dst in first.items()}
    moved = run("run", str(source), str(target), "--once", "--layout", "by-year", state=state)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert files(target) == {dst: rel.encode() for rel, dst in after.items()}
    assert "Traceback" not in moved.stderr


def test_an_old_copy_left_by_a_pass_whose_deletions_waited_goes_with_a_later_one(
    tmp_path: Path, state: Path
) -> None:
    """a/x.txt is edited as the layout changes, so it is sent to 2024/a/x.txt; n.txt fails
    (a folder stands in its way), so deletions wait. The old copy a/x.txt then stayed for
    good, unknown to every later run, and verify said identical."""
    source, target = tmp_path / "export", tmp_path / "backup"
    (source / "a").mkdir(parents=True)
    (source / "a" / "x.txt").write_text("first")
    os.utime(source / "a" / "x.txt", (1_714_521_600, 1_714_521_600))  # 2024-05-01
    assert run("run", str(source), str(target), "--once", state=state).returncode == 0
    (source / "a" / "x.txt").write_text("edited")
    os.utime(source / "a" / "x.txt", (1_714_521_601, 1_714_521_601))
    (source / "n.txt").write_text("new")
    os.utime(source / "n.txt", (1_714_521_600, 1_714_521_600))
    (target / "2024" / "n.txt").mkdir(parents=True)
    (target / "2024" / "n.txt" / "theirs").write_text("not mirror's")
    waited = run("run", str(source), str(target), "--once", "--layout", "by-year", state=state)
    assert waited.returncode == 1 and "deletions postponed: 1 transfer(s) failed" in waited.stderr, waited.stderr
    # a full target: deleting files in the source to make room never would
    assert "the 1 deletion(s) wait for a pass in which every transfer gets through" in waited.stderr
    assert "make room on the target itself" in waited.stderr
    assert (target / "a" / "x.txt").read_text() == "first"
    shutil.rmtree(target / "2024" / "n.txt")
    later = run("run", str(source), str(target), "--once", "--layout", "by-year", state=state)
    assert later.returncode == 0, later.stdout + later.stderr
    assert files(target) == {"2024/a/x.txt": b"edited", "2024/n.txt": b"new"}


def test_the_old_copy_of_a_move_that_became_a_put_goes(tmp_path: Path, state: Path) -> None:
    """An empty folder stands where the new layout puts a/x.txt: the move fails, the file
    is sent instead (the folder removed), and its old copy was then left for good."""
    source, target = tmp_path / "export", tmp_path / "backup"
    (source / "a").mkdir(parents=True)
    for name in ("x.txt", "y.txt"):
        (source / "a" / name).write_text(name)
        os.utime(source / "a" / name, (1_714_521_600, 1_714_521_600))  # 2024-05-01
    assert run("run", str(source), str(target), "--once", state=state).returncode == 0
    (target / "2024" / "a" / "x.txt").mkdir(parents=True)
    relaid = run("run", str(source), str(target), "--once", "--layout", "by-year", state=state)
    assert relaid.returncode == 0, relaid.stdout + relaid.stderr
    again = run("run", str(source), str(target), "--once", "--layout", "by-year", state=state)
    assert again.returncode == 0 and "1 deleted" in again.stdout, again.stdout + again.stderr
    assert files(target) == {"2024/a/x.txt": b"x.txt", "2024/a/y.txt": b"y.txt"}


def test_a_file_moved_aside_that_cannot_land_is_sent_again_by_the_next_run(tmp_path: Path, state: Path) -> None:
    """Under flat, c.txt/x must leave the folder c.txt (q/c.txt takes its name), but its
    new name x is a folder the refused x/2020/03 keeps. Its copy went with its temp name
    while its row still named c.txt/x: back in the tree layout, no run sent it again."""
    source, target = tmp_path / "export", tmp_path / "backup"
    for rel, data in {"c.txt/x": "precious", "q/c.txt": "other", "03": "a", "x/2020/03": "b"}.items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_text(data)
    assert run("run", str(source), str(target), "--once", state=state).returncode == 0
    flat = run("run", str(source), str(target), "--once", "--layout", "flat", state=state)
    assert flat.returncode == 1 and "Traceback" not in flat.stderr, flat.stdout + flat.stderr
    back = run("run", str(source), str(target), "--once", "--layout", "tree", state=state)
    assert back.returncode == 0, back.stdout + back.stderr
    assert files(target) == {"c.txt/x": b"precious", "q/c.txt": b"other", "03": b"a", "x/2020/03": b"b"}


@pytest.mark.parametrize("rescan", [True, False])
def test_a_copy_gone_from_the_target_when_the_layout_changes_is_sent_and_no_folder_moves(
    tmp_path: Path, state: Path, rescan: bool
) -> None:
    """z/q's copy at 2024/q is gone (a pass killed while it stood aside, or a hand on the
    target); q/w/v's move makes 2024/q a folder. Moving "2024/q" for z/q after that
    once moved the folder, v and all, and called the result mirrored."""
    source, target = tmp_path / "export", tmp_path / "backup"
    for rel in ("z/q", "q/w/v"):
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_text(rel)
        os.utime(source / rel, (1_714_521_600, 1_714_521_600))  # 2024-05-01
    first = run("run", str(source), str(target), "--once", "--layout", "{year}/{stem}{suffix}", state=state)
    assert first.returncode == 0, first.stderr
    (target / "2024" / "q").rename(target / ".~mirror-0123456789ab.tmp")
    flags = ["--rescan"] if rescan else []
    moved = run("run", str(source), str(target), "--once", "--layout", "by-year", *flags, state=state)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    leftover = {} if rescan else {".~mirror-0123456789ab.tmp": b"z/q"}  # only a listing finds it
    assert files(target) == {"2024/z/q": b"z/q", "2024/q/w/v": b"q/w/v", **leftover}
    verify = run("verify", str(source), str(target), "--layout", "by-year", state=state)
    assert verify.returncode == 0, verify.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["run", "/no/such/folder", "/tmp/x", "--once"], ["/no/such/folder", "does not exist"]),
        (["run", "{src}", "nosuch://bucket", "--once"], ["unknown protocol 'nosuch'"]),
        (["run", "{src}", "{tmp}/t", "--once", "--layout", "../{{path}}"], ["--layout"]),
        (["run", "{src}", "{tmp}/t", "-c", "{tmp}/x.toml"], ["not both"]),
        (["run", "{src}", "--once"], ["missing TARGET: mirror run SOURCE TARGET"]),
        (["verify", "{src}"], ["missing TARGET: mirror verify SOURCE TARGET"]),
        (["run", "-c", "{tmp}/missing.toml"], ["missing.toml", "mirror init"]),
        (["run", "{src}", "{tmp}/t", "--frobnicate"], ["--frobnicate"]),
        (["run", "{src}", "{tmp}/t", "--once", "-v", "-q"], ["-v or -q"]),
        (["run", "{src}", "sftp:///backup", "--once"], ["sftp URL needs a host"]),
        (["run", "{src}", "webdav://", "--once"], ["webdav URL needs a host"]),
        (["run", "{src}", "s3://", "--once"], ["s3 URL needs a bucket"]),
        (["run", "{src}", "ftp:///backup", "--once"], ["ftp:///backup", "needs host"]),
        (["run", "{src}", "http://127.0.0.1:9/x", "--once"], ["HTTPFileSystem", "cannot delete files"]),
        (["run", "{src}", "zip://{tmp}/a.zip", "--once"], ["ZipFileSystem", "cannot delete files"]),
        (["run", "{src}", "sftp://me@nas/inv#a", "--once"], ["sftp://me@nas/inv#a", "write it as %23"]),
        (["run", "{src}", "webdav://nas/inv?a", "--once"], ["webdav://nas/inv?a", "write it as %3F"]),
        (["verify", "-c", "{tmp}/bad.toml"], ["bad.toml", "invalid TOML"]),
        (["run", "-c", "{tmp}/secret.toml", "--once"], ["secret.toml", "MIRROR_TEST_TOKEN is not set"]),
        (["run", "-c", "{tmp}/local_options.toml", "--once"], ["takes no options (got key_filename)"]),
        (["run", "-c", "{tmp}/sftp_timeout.toml", "--once"], ["sftp option timeout", "expected a duration"]),
        (["run", "-c", "{tmp}/webdav_timeout.toml", "--once"], ["webdav option timeout", "expected a duration"]),
        # ftp's class swallows any name: '530 Authentication failed', exit 1, said nothing of the typo
        (
            ["run", "-c", "{tmp}/ftp_passwd.toml", "--once"],
            ["unknown ftp option(s) passwd (did you mean password?)"],
        ),
        (["run", "-c", "{tmp}/ftp_port.toml", "--once"], ["ftp option port must be a number", "not '2121'"]),
        # each a traceback of fsspec's half-built FTPFileSystem, exit 1, at every connection
        (["run", "{src}", "ftp://bookkeeper@/backup", "--once"], ["ftp://bookkeeper@/backup", "needs host"]),
        (["run", "-c", "{tmp}/ftp_tls.toml", "--once"], ["ftp option tls must be true or false", "not 'yes'"]),
        (["run", "-c", "{tmp}/ftp_password.toml", "--once"], ["ftp option password must be text", "not 12345"]),
        # fsspec cut the path at the '?': ftp://host/inv?2024 and ftp://host/inv?old both wrote into inv
        (["run", "{src}", "ftp://127.0.0.1/inv?2024", "--once"], ["inv?2024", "folder whose name has no '?'"]),
        (["run", "{src}", "dir::file://{tmp}/t", "--once"], ["chains filesystems (dir::...)", "target_protocol"]),
        (["run", "-c", "{tmp}/webdav_verify.toml", "--once"], ["webdav option verify", "names no CA bundle file"]),
    ],
)
def test_usage_and_config_errors_exit_2_with_one_line(
    args: list[str], words: list[str], src: Path, tmp_path: Path, state: Path
) -> None:
    (tmp_path / "bad.toml").write_text("source = [")
    (tmp_path / "local_options.toml").write_text(
        f'source = "{src}"\n[targets.usb]\nurl = "{tmp_path}/usb"\noptions = {{ key_filename = "~/.ssh/id" }}\n'
    )
    # an internal error (ValueError), exit 1, asking for a bug report
    (tmp_path / "sftp_timeout.toml").write_text(
        f'source = "{src}"\n[targets.nas]\nurl = "sftp://me@127.0.0.1:1/srv"\noptions = {{ timeout = "soon" }}\n'
    )
    (tmp_path / "webdav_timeout.toml").write_text(
        f'source = "{src}"\n[targets.dav]\nurl = "webdav://127.0.0.1:1/srv"\noptions = {{ timeout = "soon" }}\n'
    )
    ftp = f'source = "{src}"\n[targets.ftp]\nurl = "ftp://127.0.0.1/backup"\noptions = '
    (tmp_path / "ftp_passwd.toml").write_text(ftp + '{ port = 1, username = "bookkeeper", passwd = "pw" }\n')
    (tmp_path / "ftp_port.toml").write_text(ftp + '{ port = "2121", username = "bookkeeper" }\n')
    (tmp_path / "ftp_tls.toml").write_text(ftp + '{ tls = "yes" }\n')
    (tmp_path / "ftp_password.toml").write_text(ftp + '{ username = "bookkeeper", password = 12345 }\n')
    (tmp_path / "webdav_verify.toml").write_text(
        f'source = "{src}"\n[targets.dav]\nurl = "webdav://127.0.0.1:1/srv"\n'
        f'options = {{ verify = "{tmp_path}/ca.pem" }}\n'
    )
    (tmp_path / "secret.toml").write_text(
        f'source = "{src}"\n[targets.m]\nurl = "memory://x"\noptions = {{ token = "${{MIRROR_TEST_TOKEN}}" }}\n'
    )
    result = run(
        *(a.format(src=src, tmp=tmp_path) for a in args),
        state=state,
        env={"MIRROR_TEST_TOKEN": ""} if False else None,
    )
    assert_one_line_error(result, 2, *words)


#: the ad hoc `mirror run SOURCE TARGET` has no way to give options: a message that asks
#: for one says where it goes
IN_A_CONFIG = "in the target's options in a config file (mirror init writes one; SOURCE TARGET takes no options)"


@pytest.mark.parametrize("secret", ["wJalrXUtnFEMI-SECRET", "wJalrXUtnFEMI/K7MDENG/bPxRfiCY"])
def test_credentials_in_an_s3_url_are_refused_without_being_shown(
    secret: str, src: Path, tmp_path: Path, state: Path
) -> None:
    """s3://KEY:SECRET@bucket/x failed as a target, botocore's 'Invalid bucket name' in two
    lines carrying the secret, in text and JSON logs alike."""
    url = f"s3://AKIAEXAMPLE:{secret}@bucket/x"
    # SOURCE TARGET has no options: the message said 'set options.key' all the same
    why = 'do not put credentials in the s3 URL; set key and secret = "${ENV_VAR}" ' + IN_A_CONFIG
    text = run("run", str(src), url, "--once", state=state, timeout=30)
    assert_one_line_error(text, 2, why)
    as_json = run("run", str(src), url, "--once", "--log-format", "json", state=state, timeout=30)
    (error,) = [json.loads(line) for line in as_json.stderr.splitlines()]
    assert as_json.returncode == 2 and error["message"] == why
    assert secret not in text.stdout + text.stderr + as_json.stdout + as_json.stderr


@pytest.mark.parametrize(
    ("scheme", "why"),
    [
        ("sftp", 'do not put a password in the sftp URL; set password = "${ENV_VAR}" ' + IN_A_CONFIG),
        ("webdav", "do not put credentials in the webdav URL; set username and password " + IN_A_CONFIG),
    ],
)
def test_a_password_with_a_slash_in_the_url_is_refused_and_never_shown(
    scheme: str, why: str, src: Path, tmp_path: Path, state: Path
) -> None:
    """sftp://bob:se/cr3t@host failed with 'port must be a number', and status showed the
    password whole."""
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'source = "{src}"\n[targets.t]\nurl = "{scheme}://bob:se/cr3t@127.0.0.1:2/x"\n')
    refused = run("run", "--config", str(cfg), "--once", state=state, timeout=30)
    assert_one_line_error(refused, 2, why)
    status = run("status", "--config", str(cfg), state=state, timeout=30)
    assert f"{scheme}://bob:***@127.0.0.1:2/x" in status.stdout
    assert "cr3t" not in refused.stdout + refused.stderr + status.stdout + status.stderr


def test_secrets_never_reach_output_or_index(src: Path, tmp_path: Path, state: Path) -> None:
    secret = "s3cr3t-T0ken-value"
    cfg = tmp_path / "m.toml"
    cfg.write_text(
        f'source = "{src}"\n[targets.mem]\nurl = "memory://box"\noptions = {{ token = "${{TOK}}" }}\n'
        f'[targets.disk]\nurl = "{tmp_path}/disk"\n'
    )
    result = run("run", "-c", str(cfg), "--once", "-vv", state=state, env={"TOK": secret})
    assert result.returncode == 0, result.stderr
    assert "debug" in result.stderr
    assert secret not in result.stdout + result.stderr
    status = run("status", "-c", str(cfg), "--json", state=state, env={"TOK": secret})
    assert secret not in status.stdout
    for db in state.rglob("*.sqlite*"):
        assert secret.encode() not in db.read_bytes()


def test_state_files_are_private(src: Path, tmp_path: Path, state: Path) -> None:
    assert run("run", str(src), str(tmp_path / "t"), "--once", state=state).returncode == 0
    assert oct(os.stat(state).st_mode & 0o777) == "0o700"
    for db in (state / "targets").glob("*.sqlite"):
        assert oct(os.stat(db).st_mode & 0o777) == "0o600"


def test_a_state_folder_given_that_exists_keeps_its_own_permissions(src: Path, tmp_path: Path) -> None:
    """--state-dir pointed at a shared folder (sticky, everyone's: /tmp, or a group's):
    mirror made it 0700, locking every other user out of it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    assert run("run", str(src), str(tmp_path / "t"), "--once", state=shared).returncode == 0
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert stat.S_IMODE((shared / "targets").stat().st_mode) == 0o700


def test_status_reports_files_failures_and_last_sync(src: Path, tmp_path: Path, state: Path) -> None:
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'source = "{src}"\n[targets.flat]\nurl = "{tmp_path}/flat"\nlayout = "flat"\n')
    (src / "other").mkdir()
    (src / "other" / "invoice [1] #%.pdf").write_bytes(b"same name, other folder")
    result = run("run", "-c", str(cfg), "--once", state=state)
    assert result.returncode == 1 and "already taken" in result.stderr
    data = json.loads(run("status", "-c", str(cfg), "--json", state=state).stdout)
    assert [(d["name"], d["files"], d["running"]) for d in data] == [("flat", 12, False)]
    assert [f["src"] for f in data[0]["failures"]] == ["other/invoice [1] #%.pdf"]
    shown = run("status", "-c", str(cfg), state=state)
    assert "flat:" in shown.stdout and "failed: other/invoice [1] #%.pdf" in shown.stdout
    assert shown.returncode == 1  # a monitoring script needs no parsing to hear of it
    # a second pass that fails it too: counted in passes (each pass tried it several
    # times), with times in the user's zone, named, not the server's unnamed
    run("run", "-c", str(cfg), "--once", state=state)
    shown = run("status", "-c", str(cfg), state=state, env={"TZ": "Asia/Kolkata"})
    assert re.search(r"already taken .*\(since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d IST, in 2 passes\)\n", shown.stdout)


def test_status_of_a_mirror_killed_while_watching_needs_a_look(tmp_path: Path, state: Path) -> None:
    """kill -9 (or a crash) of a watching mirror: new invoices went to no target while a
    cron check of status said all was well (exit 0) for up to two hours."""
    src, target, log = tmp_path / "export", tmp_path / "backup", tmp_path / "m.log"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"a")
    proc = start("run", str(src), str(target), state=state, log=log)
    try:
        wait_for(lambda: run("status", state=state).returncode == 0, what="the first copy")
    finally:
        proc.kill()
        proc.wait(15)
    shown = run("status", state=state)
    assert shown.returncode == 1 and "ended without stopping cleanly (killed, or a crash)" in shown.stdout, (
        shown.stdout
    )
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    assert run("status", state=state).returncode == 0


def test_a_run_of_every_target_leaves_one_a_one_off_run_has_to_it_and_mirrors_the_rest(
    tmp_path: Path, state: Path
) -> None:
    """Cron runs started together (`--target c`, and one of every target): the second
    locked a, was refused at c and exited 2 having mirrored nothing, and a `--target a`
    run started meanwhile was refused at a. Nobody mirrored a. A one-off run now leaves a
    target a one-off run took to that run, and mirrors the others."""
    src, log, cfg = tmp_path / "export", tmp_path / "c.log", tmp_path / "m.toml"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"a")
    os.utime(src / "a.pdf", (time.time() - 3600,) * 2)
    cfg.write_text(
        f'source = "{src}"\n[targets.a]\nurl = "{tmp_path / "a"}"\n'
        f'[targets.c]\nurl = "{tmp_path / "c"}"\nsettle = "20s"\n'
    )
    assert run("run", "-c", str(cfg), "--once", state=state).returncode == 0
    (src / "new.pdf").write_bytes(b"new")  # young: the run of c waits for it to settle
    cron_c = start("run", "-c", str(cfg), "--target", "c", "--once", state=state, log=log)
    try:

        def running() -> bool:
            shown = json.loads(run("status", "-c", str(cfg), "--target", "c", "--json", state=state).stdout)
            return bool(shown[0]["running"])

        wait_for(running, what="the run of c", log=log)
        every = run("run", "-c", str(cfg), "--once", state=state)
        assert every.returncode == 0, every.stderr
        assert "target 'c' is already being mirrored by another mirror process (pid" in every.stderr
        assert "left to it" in every.stderr
        assert files(tmp_path / "a") == {"a.pdf": b"a", "new.pdf": b"new"}
        assert "new.pdf" not in files(tmp_path / "c")
    finally:
        cron_c.send_signal(signal.SIGTERM)
        cron_c.wait(15)


def test_a_run_refused_after_opening_a_killed_mirror_s_target_leaves_it_needing_a_look(
    tmp_path: Path, state: Path
) -> None:
    """A watcher of target a was killed with an invoice not sent. A cron run of every
    target then opened a, was refused at c (another process had it) and, closing a,
    recorded it as stopped cleanly: status said a was in sync, exit 0, the invoice missing."""
    src, log, cfg = tmp_path / "export", tmp_path / "m.log", tmp_path / "m.toml"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"a")
    cfg.write_text(
        f'source = "{src}"\n[targets.a]\nurl = "{tmp_path / "a"}"\n[targets.c]\nurl = "{tmp_path / "c"}"\n'
    )
    assert run("run", "-c", str(cfg), "--once", state=state).returncode == 0
    proc = start("run", "-c", str(cfg), "--target", "a", state=state, log=log)
    try:
        wait_for(lambda: "(running, idle)" in run("status", "-c", str(cfg), state=state).stdout, what="the watch")
    finally:
        proc.kill()
        proc.wait(15)
    (src / "late.pdf").write_bytes(b"sent by nobody")
    (c_index,) = (p for p in (state / "targets").glob("c-*.sqlite"))
    with held_as_by_an_older_mirror(c_index):
        refused = run("run", "-c", str(cfg), "--once", state=state)
    assert refused.returncode == 2 and "already being mirrored" in refused.stderr, refused.stderr
    shown = run("status", "-c", str(cfg), "--target", "a", state=state)
    assert shown.returncode == 1 and "ended without stopping cleanly" in shown.stdout, shown.stdout
    assert run("run", "-c", str(cfg), "--once", state=state).returncode == 0
    assert files(tmp_path / "a") == {"a.pdf": b"a", "late.pdf": b"sent by nobody"}
    assert run("status", "-c", str(cfg), state=state).returncode == 0


def test_status_of_a_config_names_targets_never_run(src: Path, tmp_path: Path, state: Path) -> None:
    cfg = tmp_path / "m.toml"
    targets = f'[targets.usb]\nurl = "{tmp_path}/usb"\n[targets.nas]\nurl = "{tmp_path}/nas"\n'
    cfg.write_text(f'source = "{src}"\n{targets}')
    assert run("run", "-c", str(cfg), "--target", "usb", "--once", state=state).returncode == 0
    shown = run("status", "-c", str(cfg), "--json", state=state)
    assert [(d["name"], d["state"], d["files"]) for d in json.loads(shown.stdout)] == [
        ("usb", "stopped", 12),
        ("nas", "never run", 0),
    ]
    assert shown.returncode == 1
    assert run("run", "-c", str(cfg), "--once", state=state).returncode == 0
    assert run("status", "-c", str(cfg), state=state).returncode == 0
    # without the config, --target picks from what the state folder holds
    one = run("status", "--target", "nas", "--json", state=state)
    assert [d["name"] for d in json.loads(one.stdout)] == ["nas"]
    assert_one_line_error(run("status", "--target", "nope", state=state), 2, "'nope'")


def test_status_of_a_config_edited_since_the_running_mirror_read_it_says_to_reload(
    src: Path, tmp_path: Path, state: Path
) -> None:
    """A target added to the config of a running service showed as 'not running, never run'
    (exit 1) beside one running, with nothing saying the service still had the old config."""
    cfg, log = tmp_path / "m.toml", tmp_path / "m.log"
    cfg.write_text(f'source = "{src}"\n[targets.usb]\nurl = "{tmp_path}/usb"\n')
    proc = start("run", "-c", str(cfg), state=state, log=log)
    try:
        wait_for(lambda: run("status", "-c", str(cfg), state=state).returncode == 0, what="the first copy")
        assert "reload" not in run("status", "-c", str(cfg), state=state).stdout
        cfg.write_text(cfg.read_text() + f'[targets.nas]\nurl = "{tmp_path}/nas"\n')
        shown = run("status", "-c", str(cfg), state=state)
        assert shown.returncode == 1 and "nas: " in shown.stdout and "(not running, never run)" in shown.stdout
        assert shown.stdout.splitlines()[-1] == (
            f"note: the running mirror has not read {cfg} since it changed, and mirrors the targets it named "
            "before: reload it (systemctl --user reload mirror for the service, or send the process SIGHUP)"
        ), shown.stdout
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: run("status", "-c", str(cfg), state=state).returncode == 0, what="both targets in sync")
        assert "reload" not in run("status", "-c", str(cfg), state=state).stdout
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize("edit", ["target renamed", "source changed"])
def test_status_of_a_config_edited_under_a_running_mirror_blames_the_edit_not_the_state_folder(
    src: Path, tmp_path: Path, state: Path, edit: str
) -> None:
    """A target renamed (or the source changed) in a running service's config: status said
    the process ran "without an index here: the state folder was deleted while it ran"
    (nothing was) and nothing of a reload. Once stopped, a renamed target showed "never
    run" (exit 1), though the next run takes its index over."""
    cfg, log = tmp_path / "m.toml", tmp_path / "m.log"
    cfg.write_text(f'source = "{src}"\n[targets.t1]\nurl = "{tmp_path}/usb"\n')
    proc = start("run", "-c", str(cfg), state=state, log=log)
    try:
        wait_for(lambda: run("status", "-c", str(cfg), state=state).returncode == 0, what="the first copy")
        time.sleep(0.05)  # a config time after the start, on a clock of coarse steps too
        if edit == "target renamed":
            cfg.write_text(cfg.read_text().replace("targets.t1", "targets.usb"))
        else:
            (tmp_path / "scans").mkdir()
            cfg.write_text(cfg.read_text().replace(str(src), str(tmp_path / "scans")))
        shown = run("status", "-c", str(cfg), state=state)
        assert "deleted while it ran" not in shown.stdout, shown.stdout
        assert f"note: the running mirror has not read {cfg} since it changed" in shown.stdout, shown.stdout
        if edit == "target renamed":
            assert shown.stdout.startswith(f"usb: {tmp_path}/usb  (running, idle)"), shown.stdout
            assert "files:   12 " in shown.stdout, shown.stdout
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    if edit == "target renamed":
        stopped = run("status", "-c", str(cfg), state=state)
        assert stopped.returncode == 0 and stopped.stdout.startswith(
            f"usb: {tmp_path}/usb  (not running, stopped)"
        )


def test_verify_checks_every_target_when_one_cannot_be_reached(src: Path, tmp_path: Path, state: Path) -> None:
    cfg = tmp_path / "m.toml"
    down = 'url = "sftp://me@127.0.0.1:1/backup"\noptions = { timeout = 5, look_for_keys = false, password = "x" }'
    cfg.write_text(f'source = "{src}"\n[targets.nas]\n{down}\n[targets.usb]\nurl = "{tmp_path}/usb"\n')
    assert run("run", "-c", str(cfg), "--target", "usb", "--once", state=state).returncode == 0
    (tmp_path / "usb" / "2026" / "invoice [3] #%.pdf").unlink()
    checked = run("verify", "-c", str(cfg), state=state)
    assert checked.returncode == 1
    assert checked.stdout.splitlines() == [
        "nas: cannot verify: sftp: cannot connect to me@127.0.0.1:1 (connection refused or unreachable)",
        "usb: 2026/invoice [3] #%.pdf: missing on the target",
        f"usb: to send what is missing or differs: mirror run -c {cfg} --target usb --once --rescan",
    ], checked.stdout + checked.stderr


def test_status_with_no_target_found_is_no_all_clear(tmp_path: Path) -> None:
    """A monitoring check run as another user than the service reads another state folder."""
    shown = run("status", state=tmp_path / "elsewhere")
    assert shown.returncode == 1 and "no targets have been mirrored yet" in shown.stdout


def test_status_of_source_target_shows_that_target(src: Path, tmp_path: Path, state: Path) -> None:
    """After mirror run SOURCE TARGET, the same two words ask for its status."""
    for name in ("usb", "nas"):
        assert run("run", str(src), str(tmp_path / name), "--once", state=state).returncode == 0
    shown = run("status", str(src), str(tmp_path / "usb"), state=state)
    assert shown.returncode == 0 and f"{tmp_path / 'usb'}  (not running, stopped)" in shown.stdout, shown.stdout
    assert "nas" not in shown.stdout
    never = run("status", str(src), str(tmp_path / "elsewhere"), state=state)
    assert never.returncode == 1 and "never run" in never.stdout
    assert_one_line_error(run("status", str(src), state=state), 2, "missing TARGET")


@pytest.mark.parametrize("owned", ["targets", "lock"])
def test_a_state_folder_of_another_user_is_named_with_its_fix(
    owned: str, src: Path, tmp_path: Path, state: Path
) -> None:
    """Made by a run as root, then used by the service's user; or restored with other
    owners. Played by root handing the files to 'nobody' and then running without the
    capabilities that let it use, or take back, others' files."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to hand the state to another user")
    target = tmp_path / "backup"
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    for path in [state / "targets"] if owned == "targets" else (state / "targets").glob("*.lock"):
        os.chown(path, 65534, 65534)
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner,-chown"]
    env = {**os.environ, "MIRROR_STATE_DIR": str(state)}
    commands = [("run", str(src), str(target), "--once")]
    # verify and status only read: a lock file they cannot open does not stop them
    commands += [("verify", str(src), str(target)), ("status",)] if owned == "targets" else []
    for command in commands:
        denied = subprocess.run([*drop, *MIRROR, *command], capture_output=True, text=True, env=env, timeout=60)
        assert_one_line_error(denied, 2, "cannot use mirror's state in", "--state-dir")


def test_status_and_verify_read_a_state_folder_they_may_read_but_not_write(
    src: Path, tmp_path: Path, state: Path
) -> None:
    """A colleague checking a service's state folder, which its owner let others read:
    both said "cannot write mirror's state" and showed nothing (a WAL index needs its
    shared-memory file made, even to be read)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to hand the state to another user")
    target = tmp_path / "backup"
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    for path in [state / "targets", *(state / "targets").iterdir()]:
        os.chown(path, 65534, 65534)
        path.chmod(0o755 if path.is_dir() else 0o644)
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner,-chown"]
    env = {**os.environ, "MIRROR_STATE_DIR": str(state)}
    shown = subprocess.run([*drop, *MIRROR, "status"], capture_output=True, text=True, env=env, timeout=60)
    assert shown.returncode == 0 and "files:   12" in shown.stdout, shown.stdout + shown.stderr
    checked = subprocess.run(
        [*drop, *MIRROR, "verify", str(src), str(target)], capture_output=True, text=True, env=env, timeout=60
    )
    assert checked.returncode == 0 and "identical (12 files" in checked.stdout, checked.stdout + checked.stderr
    assert not [p.name for p in (state / "targets").iterdir() if p.name.endswith(("-shm", "-wal"))]


def test_status_of_a_config_needs_none_of_its_secrets(src: Path, tmp_path: Path, state: Path) -> None:
    """Asked from a shell without the service's environment, status said a variable was not set."""
    cfg = tmp_path / "m.toml"
    cfg.write_text(
        f'source = "{src}"\n[targets.usb]\nurl = "memory://${{MIRROR_TEST_DIR}}"\n'
        'options = { token = "${MIRROR_TEST_SECRET}" }\n'
    )
    env = {"MIRROR_TEST_DIR": "usb", "MIRROR_TEST_SECRET": "s3cret"}
    assert run("run", "-c", str(cfg), "--once", state=state, env=env).returncode == 0
    shown = run("status", "-c", str(cfg), state=state)
    assert shown.returncode == 0 and "files:   12" in shown.stdout, shown.stdout + shown.stderr
    assert "memory://usb" in shown.stdout  # the variable filled in, not a folder named '${MIRROR_TEST_DIR}'"
    assert_one_line_error(run("run", "-c", str(cfg), "--once", state=state), 2, "is not set (export MIRROR_TEST_")
    assert "not set here" not in shown.stderr, shown.stderr  # found all the same: no news


def test_status_tells_a_variable_not_set_here_that_names_a_place(src: Path, tmp_path: Path, state: Path) -> None:
    """It showed '${MIRROR_TEST_BASE}/export' and 'never run', exit 1, and nothing of why."""
    cfg = tmp_path / "m.toml"
    cfg.write_text(
        'source = "${MIRROR_TEST_BASE}/export"\n[targets.usb]\nurl = "${MIRROR_TEST_BASE}/usb"\n'
        '[targets.nas]\nurl = "memory://nas"\noptions = { token = "${MIRROR_TEST_PW}" }\n'
    )
    env = {"MIRROR_TEST_BASE": str(tmp_path), "MIRROR_TEST_PW": "s3cret"}
    assert run("run", "-c", str(cfg), "--once", state=state, env=env).returncode == 0
    shown = run("status", "-c", str(cfg), state=state)
    assert shown.returncode == 1 and "never run" in shown.stdout, shown.stdout + shown.stderr
    told = "environment variable MIRROR_TEST_BASE is not set here, so the paths that use it are shown as written"
    assert told in shown.stderr and "MIRROR_TEST_PW" not in shown.stderr, shown.stderr


def test_a_run_of_one_target_needs_only_that_target_s_secrets(src: Path, tmp_path: Path, state: Path) -> None:
    cfg = tmp_path / "m.toml"
    cfg.write_text(
        f'source = "{src}"\n[targets.usb]\nurl = "{tmp_path}/usb"\n'
        '[targets.dav]\nurl = "webdav://127.0.0.1:9/x"\noptions = { password = "${MIRROR_TEST_DAVPW}" }\n'
    )
    alone = run("run", "-c", str(cfg), "--target", "usb", "--once", state=state)
    assert alone.returncode == 0 and len(files(tmp_path / "usb")) == 12, alone.stderr
    assert_one_line_error(run("run", "-c", str(cfg), "--once", state=state), 2, "MIRROR_TEST_DAVPW is not set")


def test_a_target_never_reached_leaves_no_state_to_report(src: Path, tmp_path: Path, state: Path) -> None:
    """A one-off run to a mistyped host: every later `mirror status` showed it failing, exit 1,
    and nothing removed it. Asked about, it still says why it never ran: a cron job's
    status said 'never run' and nothing else."""
    typo = run("run", str(src), "sftp://me@127.0.0.1:1/srv/x", "--once", state=state)
    assert typo.returncode == 1 and "cannot connect" in typo.stderr, typo.stderr
    assert run("run", str(src), str(tmp_path / "usb"), "--once", state=state).returncode == 0
    shown = run("status", state=state)
    assert shown.returncode == 0 and "127.0.0.1:1" not in shown.stdout, shown.stdout
    asked = run("status", str(src), "sftp://me@127.0.0.1:1/srv/x", state=state)
    assert asked.returncode == 1
    assert re.search(
        r"\(not running, never run; last attempt \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \w+ failed\)\n", asked.stdout
    )
    assert "  last error: sftp: cannot connect to me@127.0.0.1:1 (connection refused" in asked.stdout, asked.stdout


def test_target_given_twice_runs_both(src: Path, tmp_path: Path, state: Path) -> None:
    """--target usb --target nas ran nas alone, silently."""
    cfg = tmp_path / "m.toml"
    cfg.write_text(
        f'source = "{src}"\n'
        + "".join(f'[targets.{n}]\nurl = "{tmp_path / n}"\n' for n in ("usb", "nas", "cloud"))
    )
    both = run("run", "-c", str(cfg), "--target", "usb", "--target", "nas", "--once", state=state)
    assert both.returncode == 0, both.stderr
    assert [n for n in ("usb", "nas", "cloud") if (tmp_path / n).exists()] == ["usb", "nas"]
    shown = run("status", "--target", "usb", "--target", "nas", state=state)
    assert shown.returncode == 0 and shown.stdout.count("files:   12") == 2, shown.stdout


def test_a_preset_that_writes_into_the_source_under_another_name_is_refused(
    src: Path, tmp_path: Path, state: Path
) -> None:
    """fsspec's dir protocol over the local disk: the target was the source's own folder
    'copy', and watch mode nested it 15 levels deep in 8 s."""
    before = files(src)
    cfg = tmp_path / "m.toml"
    cfg.write_text(
        f'source = "{src}"\n[backends.disk]\nprotocol = "dir"\n'
        f'options = {{ path = "{src}", target_protocol = "file" }}\n[targets.t]\nurl = "disk://copy"\n'
    )
    refused = run("run", "-c", str(cfg), "--once", state=state)
    told = f"target 't' ({src}/copy) overlaps the source folder {src}; choose a target outside the source"
    assert refused.returncode == 2 and told in refused.stderr, refused.stderr
    assert files(src) == before


def test_a_dry_run_of_a_target_that_writes_into_a_local_folder_under_another_name_needs_no_state(
    src: Path, tmp_path: Path, state: Path
) -> None:
    """fsspec's simplecache over the local disk, tried with --dry-run first, as the README
    advises: 'internal error: FileNotFoundError' of a lock in a state folder a dry run
    never makes."""
    cfg = tmp_path / "m.toml"
    cfg.write_text(
        f'source = "{src}"\n[targets.sc]\nurl = "simplecache://{tmp_path}/dst"\n'
        'options = { target_protocol = "file" }\n'
    )
    done = run("run", "-c", str(cfg), "--once", "--dry-run", state=state)
    assert done.returncode == 0, done.stderr
    assert "sc: would do 12 actions" in done.stdout + done.stderr, done.stdout + done.stderr
    assert not (tmp_path / "dst").exists()


def test_a_dir_target_on_the_folder_of_another_target_is_refused(src: Path, tmp_path: Path, state: Path) -> None:
    """fsspec's dir protocol onto the folder a plain target writes to: both ran, and the
    plain one deleted what the other kept (delete = keep). Then the run found out only
    once the plain one had sent its files: now none is touched."""
    cfg = tmp_path / "m.toml"
    for url, told in (
        ("dir://invoices", "targets 'live' and 'archive' both write to {backup}/invoices; "),
        (
            "dir://invoices/2024",
            "target 'archive' writes to {backup}/invoices/2024, inside the folder of target 'live'; ",
        ),
    ):
        cfg.write_text(
            f'source = "{src}"\n[targets.live]\nurl = "{tmp_path}/backup/invoices"\n'
            f'[targets.archive]\nurl = "{url}"\ndelete = "keep"\n'
            f'options = {{ path = "{tmp_path}/backup", target_protocol = "file" }}\n'
        )
        done = run("run", "-c", str(cfg), "--once", state=state)
        assert done.returncode == 2, done.stdout + done.stderr
        assert told.format(backup=tmp_path / "backup") + "give each target a folder of its own" in done.stderr
        assert not (tmp_path / "backup").exists()


def test_a_dir_target_without_its_path_says_what_it_needs(src: Path, state: Path) -> None:
    """It failed with "AttributeError: 'NoneType' object has no attribute 'startswith'",
    again and again in watch mode."""
    done = run("run", str(src), "dir://backup/invoices", state=state, timeout=30)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the dir backend cannot take these options (AttributeError: " in done.stderr, done.stderr
    assert "see its fsspec documentation for the options it needs" in done.stderr
    assert "Traceback" not in done.stderr


def stick_config(tmp_path: Path, contents: dict[str, bytes], capabilities: str) -> Path:
    """A source holding ``contents`` and a config mirroring it to a local folder, usb,
    through a preset with these ``capabilities`` (a FAT stick, a WebDAV server's rules)."""
    src = tmp_path / "export"
    src.mkdir()
    for name, data in contents.items():
        (src / name).write_bytes(data)
    cfg = tmp_path / "m.toml"
    cfg.write_text(
        f'source = "{src}"\n[backends.stick]\nprotocol = "file"\ncapabilities = {{ {capabilities} }}\n'
        f'[targets.usb]\nurl = "stick://{tmp_path}/usb"\n'
    )
    return cfg


def test_a_case_folding_local_target_gets_one_of_two_names_that_differ_in_case(
    tmp_path: Path, state: Path
) -> None:
    """What a FAT or exFAT stick is told (its mount type; here a preset, as this kernel has
    no FAT): of Invoice.pdf and INVOICE.pdf one lands, the other is named as refused."""
    cfg = stick_config(tmp_path, {"Invoice.pdf": b"first", "INVOICE.pdf": b"second"}, "case_sensitive = false")
    first = run("run", "-c", str(cfg), "--once", state=state)
    assert first.returncode == 1 and "on the target is already taken by" in first.stderr, first.stderr
    landed = files(tmp_path / "usb")
    assert len(landed) == 1 and next(iter(landed.values())) in (b"first", b"second")
    again = run("run", "-c", str(cfg), "--once", state=state)
    assert "0 sent" in again.stdout + again.stderr and files(tmp_path / "usb") == landed


def test_verify_names_a_file_the_target_refuses_as_not_mirrored(tmp_path: Path, state: Path) -> None:
    """verify said 'identical (2 files;' and exited 0 while what?.pdf, a name the target
    refuses (a preset here, as WebDAV's '?'), was not on it; run had reported it."""
    cfg = stick_config(tmp_path, {"invoice.pdf": b"invoice", "what?.pdf": b"questions"}, 'forbidden_chars = "?"')
    why = "the target refuses the character(s) '?' in 'what?.pdf'"
    first = run("run", "-c", str(cfg), "--once", state=state)
    assert first.returncode == 1 and f"not mirrored: what?.pdf: {why}" in first.stderr, first.stderr
    assert files(tmp_path / "usb") == {"invoice.pdf": b"invoice"}
    verify = run("verify", "-c", str(cfg), state=state)
    assert verify.returncode == 1 and verify.stdout.splitlines() == [f"usb: what?.pdf: not mirrored: {why}"]


@pytest.mark.timeout(90)
def test_two_files_sent_to_one_path_before_the_target_was_known_to_fold_case_are_judged_anew(
    tmp_path: Path, state: Path
) -> None:
    """smb:// was taken as case-sensitive before d6860d2 (here: a preset's rule changed):
    Inv.pdf and inv.pdf went to a share that folds case, one over the other. After the
    upgrade their rows were trusted: run said 0 sent and status in sync, exit 0, while the
    share held inv.pdf's bytes under Inv.pdf; only verify said "'inv.pdf' holds that target
    path". Now the two are judged as a fresh mirror judges them: Inv.pdf (first in path
    order) is sent again, inv.pdf is refused with the reason, exit 1, and stays refused."""
    cfg = stick_config(
        tmp_path, {"Inv.pdf": b"UPPER", "inv.pdf": b"lower", "other.pdf": b"x"}, "case_sensitive = true"
    )
    src, usb = tmp_path / "export", tmp_path / "usb"
    for name in ("Inv.pdf", "inv.pdf"):  # one size and time: which is on the share, only the bytes tell
        os.utime(src / name, ns=(1_700_000_000 * 10**9, 1_700_000_000 * 10**9))
    first = run("run", "-c", str(cfg), "--once", state=state)
    assert first.returncode == 0 and "3 sent" in first.stdout, first.stdout + first.stderr
    # the share held one file for both: inv.pdf's bytes, sent last, under the first name
    (usb / "inv.pdf").replace(usb / "Inv.pdf")
    cfg.write_text(cfg.read_text().replace("case_sensitive = true", "case_sensitive = false"))
    why = "inv.pdf: 'inv.pdf' on the target is already taken by 'Inv.pdf'"

    upgraded = run("run", "-c", str(cfg), "--once", state=state)
    assert upgraded.returncode == 1 and "usb: 1 sent (5 B), 0 deleted, 1 failed" in upgraded.stdout, (
        upgraded.stdout
    )
    assert f"usb: failed: {why}" in upgraded.stderr
    assert files(usb) == {"Inv.pdf": b"UPPER", "other.pdf": b"x"}
    status = run("status", "-c", str(cfg), state=state)
    assert status.returncode == 1 and f"  failed: {why} (since" in status.stdout, status.stdout
    rescan = run("run", "-c", str(cfg), "--once", "--rescan", state=state)
    assert rescan.returncode == 1 and "usb: 0 sent (0 B), 0 deleted, 1 failed" in rescan.stdout, rescan.stdout
    assert files(usb) == {"Inv.pdf": b"UPPER", "other.pdf": b"x"}
    verify = run("verify", "-c", str(cfg), state=state)
    assert verify.returncode == 1
    assert verify.stdout.splitlines() == ["usb: inv.pdf: not mirrored: 'Inv.pdf' holds that target path"]


@pytest.mark.timeout(90)
def test_a_name_an_older_mirror_sent_after_this_one_refused_it_is_refused_again(
    tmp_path: Path, state: Path
) -> None:
    """Rolled back to an older mirror for a while (its rules let ';' through), then
    upgraded again: the row the older one wrote was trusted, so run said 0 sent and status
    in sync, exit 0. Now the name is refused again, as before the rollback, and the copy
    the older mirror sent is left on the target with a warning."""
    cfg = stick_config(tmp_path, {"invoice.pdf": b"invoice", "offer;v1.pdf": b"offer"}, 'forbidden_chars = ";"')
    src, usb = tmp_path / "export", tmp_path / "usb"
    why = "offer;v1.pdf: the target refuses the character(s) ';' in 'offer;v1.pdf'"
    fresh = run("run", "-c", str(cfg), "--once", state=state)
    assert fresh.returncode == 1 and f"usb: failed: {why}" in fresh.stderr, fresh.stderr
    # what the older mirror's run left: the file sent, its row, no failure, and (as every
    # run does) the time it started
    (usb / "offer;v1.pdf").write_bytes(b"offer")
    st = (src / "offer;v1.pdf").stat()
    (db,) = (state / "targets").glob("*.sqlite")
    with sqlite3.connect(db) as old:
        day = old.execute("SELECT date FROM files").fetchone()[0]
        old.execute(
            "INSERT INTO files VALUES ('offer;v1.pdf', 'offer;v1.pdf', ?, ?, ?, ?, NULL, 0)",
            (st.st_size, st.st_mtime_ns, st.st_ino, day),
        )
        old.execute("DELETE FROM failures")
        old.execute("UPDATE meta SET value = ? WHERE key = 'started'", (str(time.time()),))
    old.close()

    again = run("run", "-c", str(cfg), "--once", state=state)
    assert again.returncode == 1 and "usb: 0 sent (0 B), 0 deleted, 1 failed" in again.stdout, again.stdout
    assert f"usb: failed: {why}" in again.stderr
    assert (
        "offer;v1.pdf: the copy sent before the target refused its name is left there as it landed" in again.stderr
    )
    assert files(usb) == {"invoice.pdf": b"invoice", "offer;v1.pdf": b"offer"}
    status = run("status", "-c", str(cfg), state=state)
    assert status.returncode == 1 and f"  failed: {why} (since" in status.stdout, status.stdout
    for args in (("--once",), ("--once", "--rescan")):
        later = run("run", "-c", str(cfg), *args, state=state)
        assert later.returncode == 1 and "usb: 0 sent (0 B), 0 deleted, 1 failed" in later.stdout, later.stdout
        assert files(usb) == {"invoice.pdf": b"invoice", "offer;v1.pdf": b"offer"}
    verify = run("verify", "-c", str(cfg), state=state)
    assert verify.returncode == 1 and verify.stdout.splitlines() == [
        f"usb: {why.replace(': ', ': not mirrored: ', 1)}"
    ]


def test_invisible_and_control_characters_in_names_are_escaped_in_every_output(
    tmp_path: Path, state: Path
) -> None:
    """NEL (U+0085), the line separator (U+2028) and a right-to-left override (U+202E)
    reached logs, plans, status and verify raw, where ESC was escaped: a name could forge
    a log line, or pass for another ('invoice\u202efdp.exe' shows as 'invoiceexe.pdf')."""
    escaped = {
        "nel\x85x.pdf": r"nel\x85x.pdf",
        "fake\u2028line.pdf": r"fake\u2028line.pdf",
        "invoice\u202efdp.exe": r"invoice\u202efdp.exe",
        "esc\x1b[31mred.pdf": r"esc\x1b[31mred.pdf",
        "refused!\u2066.pdf": r"refused!\u2066.pdf",  # a failed item, for status and verify
    }
    cfg = stick_config(tmp_path, dict.fromkeys(escaped, b"x"), 'forbidden_chars = "!"')
    raw = re.compile("[\x1b\x85\u2028\u202e\u2066]")
    dry = run("run", "-c", str(cfg), "--once", "--dry-run", state=state)
    logged = run("run", "-c", str(cfg), "--once", "-v", state=state)
    for name in escaped:
        (tmp_path / "export" / name).write_bytes(b"changed")  # sent again, logged in JSON
    as_json = run("run", "-c", str(cfg), "--once", "-v", "--log-format", "json", state=state)
    status = run("status", "-c", str(cfg), state=state)
    verify = run("verify", "-c", str(cfg), state=state)
    for result in (dry, logged, as_json, status, verify):
        output = result.stdout + result.stderr
        assert not raw.search(output), output
    for name, shown in escaped.items():
        assert shown in dry.stdout and shown in logged.stderr, (shown, dry.stdout, logged.stderr)
        # JSON escapes them as it escapes control characters: read back, they are the name
        assert any(name in json.loads(line)["message"] for line in as_json.stderr.splitlines()), name
    assert r"failed: refused!\u2066.pdf" in status.stdout and r"refused!\u2066.pdf: not mirrored" in verify.stdout


def test_status_shows_withheld_deletions_until_they_are_made(tmp_path: Path, state: Path) -> None:
    src, target = tmp_path / "export", tmp_path / "backup"
    src.mkdir()
    for i in range(30):
        (src / f"invoice {i:02}.pdf").write_bytes(b"%PDF")
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    assert run("status", state=state).returncode == 0
    for i in range(20):
        (src / f"invoice {i:02}.pdf").unlink()
    assert run("run", str(src), str(target), "--once", state=state).returncode == 1
    shown = run("status", state=state)
    assert shown.returncode == 1 and "deletions withheld: 20 of 30 mirrored files" in shown.stdout, shown.stdout
    (data,) = json.loads(run("status", "--json", state=state).stdout)
    assert data["withheld"].startswith("20 of 30 mirrored files would be deleted")
    assert run("run", str(src), str(target), "--once", "--max-delete", "20", state=state).returncode == 0
    cleared = run("status", state=state)
    assert cleared.returncode == 0 and "deletions withheld" not in cleared.stdout, cleared.stdout


def test_init_writes_a_config_that_runs(tmp_path: Path, state: Path) -> None:
    cfg = tmp_path / "mirror.toml"
    assert run("init", str(cfg), state=state).returncode == 0
    assert_one_line_error(run("init", str(cfg), state=state), 2, "already exists")
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "a.pdf").write_text("a")
    result = run("run", "-c", str(cfg), "--once", state=state)
    assert result.returncode == 0, result.stderr
    assert files(tmp_path / "backup") == {"a.pdf": b"a"}


def test_init_makes_the_folders_it_needs_and_writes_into_a_folder(tmp_path: Path, state: Path) -> None:
    fresh = tmp_path / "home" / ".config" / "mirror" / "mirror.toml"  # the README's service recipe
    made = run("init", str(fresh), state=state)
    assert made.returncode == 0, made.stderr
    assert fresh.is_file() and f"mirror run -c {fresh}" in made.stdout

    folder = tmp_path / "configs"
    folder.mkdir()
    into = run("init", str(folder), state=state)
    assert into.returncode == 0, into.stderr
    assert (folder / "mirror.toml").is_file()
    assert into.stdout.startswith(f"wrote {folder / 'mirror.toml'} ({folder} is a folder")
    assert_one_line_error(run("init", str(folder), state=state), 2, str(folder / "mirror.toml"), "already exists")
    # below a file: it said "cannot make the folder ...: File exists"; an empty name: "( is a folder"
    (tmp_path / "invoices.pdf").write_bytes(b"%PDF")
    below = run("init", str(tmp_path / "invoices.pdf" / "mirror.toml"), state=state)
    assert_one_line_error(below, 2, f"{tmp_path / 'invoices.pdf'} is a file, not a folder; choose another path")
    assert_one_line_error(run("init", "", state=state), 2, "PATH is empty")


def test_backends_lists_every_builtin_with_install_hints(state: Path) -> None:
    out = run("backends", state=state).stdout
    for name in ("file/local", "memory", "dropbox", "sftp", "webdav", "s3", "gdrive", "onedrive"):
        assert name in out
    assert "installed" in out


def test_backends_tells_which_cannot_be_a_target(state: Path) -> None:
    """http, zip and hdfs without pyarrow were listed as installed; every run refused them."""
    listed = {line.split()[0]: line for line in run("backends", state=state).stdout.splitlines()}
    for name in ("http", "zip", "tar"):
        assert listed[name].endswith("installed, read-only: cannot be a target"), listed[name]
    assert listed["ftp"].endswith(" installed") and listed["memory"].endswith(" installed")
    if importlib.util.find_spec("pyarrow") is None:
        assert "missing: pyarrow" in listed["hdfs"], listed["hdfs"]


def test_a_plugin_half_installed_or_shadowed_is_told(src: Path, tmp_path: Path, state: Path) -> None:
    """A third-party backend whose module is missing was listed as installed, its error
    ended with a dangling '; ', and one named like a built-in was ignored without a word."""
    site = tmp_path / "site"
    info = site / "mirror_plugin_demo-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mirror-plugin-demo\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[mirror.backends]\nminfs = mirror_absent_plugin.driver:MinDriver\nsftp = mirror_absent_plugin.sftp:Mine\n"
    )
    env = {"PYTHONPATH": os.pathsep.join(filter(None, (str(site), os.environ.get("PYTHONPATH"))))}
    listed = run("backends", state=state, env=env).stdout.splitlines()
    [minfs] = [line for line in listed if line.startswith("minfs ")]
    assert minfs.endswith("missing: mirror_absent_plugin"), minfs
    assert any(line.startswith("sftp ") and "ignored: the built-in sftp takes its name" in line for line in listed)
    result = run("run", str(src), "minfs://box/x", "--once", state=state, env=env)
    assert_one_line_error(result, 2, "'minfs' needs mirror_absent_plugin", "pip install mirror_absent_plugin")


def test_two_processes_cannot_mirror_the_same_target(src: Path, tmp_path: Path, state: Path) -> None:
    target = tmp_path / "t"
    proc = start("run", str(src), str(target), state=state)
    try:
        wait_for(lambda: len(files(target)) == 12, what="first copy")
        second = run("run", str(src), str(target), "--once", state=state)
        assert_one_line_error(second, 2, "already being mirrored")
        # the same folder by other names: another index each, the same place
        cfg = tmp_path / "m.toml"
        cfg.write_text(f'source = "{src}"\n[targets.usb]\nurl = "{target}"\n')
        for other in (("run", str(src), f"file://{target}", "--once"), ("run", "-c", str(cfg), "--once")):
            again = run(*other, state=state)
            assert_one_line_error(again, 2, "is already being mirrored by another mirror process (pid")
        running = json.loads(run("status", "--json", state=state).stdout)
        assert running[0]["running"] is True
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_two_processes_with_two_state_folders_cannot_mirror_the_same_target(
    src: Path, tmp_path: Path, state: Path
) -> None:
    """A service with MIRROR_STATE_DIR set and a run by hand without it (or a service whose
    state folder was deleted under it) met no lock: they mirrored one target side by side,
    each removing the other's uploads as leftovers."""
    target, elsewhere = tmp_path / "t", tmp_path / "other-state"
    proc = start("run", str(src), str(target), state=state)
    try:
        wait_for(lambda: len(files(target)) == 12, what="first copy")
        second = run("run", str(src), str(target), "--once", state=elsewhere)
        assert_one_line_error(second, 2, "is already being mirrored by another mirror process", str(elsewhere))
        shutil.rmtree(state)
        third = run("run", str(src), str(target), "--once", state=state)
        assert_one_line_error(third, 2, "is already being mirrored by another mirror process")
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    assert run("run", str(src), str(target), "--once", state=elsewhere).returncode == 0


SQUAT = """
import socket, sys, time
held = []
for name in sys.argv[1:]:
    held.append(socket.socket(socket.AF_UNIX))
    held[-1].bind(name.replace("@", "\\0", 1))
print("holding", flush=True)
time.sleep(60)
"""


def test_a_user_that_takes_the_name_of_a_mirrors_claim_first_does_not_stop_it(
    src: Path, tmp_path: Path, state: Path
) -> None:
    """The claim on a target's place is an abstract socket name, which any local user can
    take and compute from the target's path: 'nobody' holding it made every run and the
    service of root exit 2, 'already being mirrored by another mirror process', nothing
    copied and no alert sent."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to play another user")
    target = tmp_path / "backup"
    key = hashlib.sha256(repr(("folder", str(target.resolve()))).encode()).hexdigest()[:16]
    # the name as it was, and with the user's id in it: a stranger can take either
    names = [f"@fsspec-mirror/place/{key}", f"@fsspec-mirror/place/{os.geteuid()}/{key}"]
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    squatter = subprocess.Popen(
        [*as_nobody, sys.executable, "-c", SQUAT, *names], stdout=subprocess.PIPE, text=True
    )
    try:
        assert squatter.stdout is not None and squatter.stdout.readline().strip() == "holding"
        done = run("run", str(src), str(target), "--once", state=state)
        assert done.returncode == 0, done.stdout + done.stderr
        assert len(files(target)) == 12
        assert "a process of another user holds the name mirror claims this place by" in done.stderr, done.stderr
    finally:
        squatter.kill()
        squatter.wait(10)


def test_database_reading_does_not_need_a_lock(src: Path, tmp_path: Path, state: Path) -> None:
    assert run("run", str(src), str(tmp_path / "t"), "--once", state=state).returncode == 0
    db = next((state / "targets").glob("*.sqlite"))
    rows = sqlite3.connect(db).execute("SELECT COUNT(*) FROM files").fetchone()
    assert rows == (12,)


#: the backends with a token file: (URL scheme, name in messages, options that keep it off the internet)
TOKEN_BACKENDS = [
    ("dropbox", "Dropbox", ""),
    # nothing reaches the internet, whatever mirror does with the token
    ("gdrive", "Google Drive", ', token_uri = "http://127.0.0.1:1/token"'),
    ("onedrive", "OneDrive", ', authority = "https://127.0.0.1:1/common"'),
]


@pytest.mark.parametrize(("backend", "what", "login"), TOKEN_BACKENDS)
def test_a_token_file_others_can_read_is_refused_as_a_config_error(
    backend: str, what: str, login: str, src: Path, tmp_path: Path, state: Path
) -> None:
    """Google Drive and OneDrive used a token file of mode 0644 silently; Dropbox refused
    it as a failed target (exit 1), not as the configuration mistake it is."""
    token = tmp_path / "token.json"
    token.write_text(json.dumps({"app_key": "k", "refresh_token": "r", "client_id": "c", "client_secret": "s"}))
    token.chmod(0o644)
    cfg = tmp_path / "m.toml"
    cfg.write_text(
        f'source = "{src}"\n[targets.cloud]\nurl = "{backend}://Invoices"\n'
        f'options = {{ token_file = "{token}"{login} }}\n'
    )
    why = f"{what} token file {token} is readable by others; run: chmod 600 {token}"
    for command in (["run", "--once"], ["verify"]):
        refused = run(*command, "-c", str(cfg), state=state, timeout=30)
        assert_one_line_error(refused, 2, why)
    assert token.stat().st_mode & 0o777 == 0o644  # the user's file, the user's fix


@pytest.mark.parametrize(("backend", "what", "login"), TOKEN_BACKENDS)
def test_a_token_file_another_user_owns_is_refused_as_a_config_error(
    backend: str, what: str, login: str, src: Path, tmp_path: Path, state: Path
) -> None:
    """A service running as root used a 0600 token file that 'nobody' owned (planted in a
    folder that user could write): whoever owns the token picks the account the backup
    goes to."""
    if os.geteuid() != 0:
        pytest.skip("needs root to hand the token file to another user")
    token = tmp_path / "token.json"
    token.write_text(json.dumps({"app_key": "k", "refresh_token": "r", "client_id": "c", "client_secret": "s"}))
    token.chmod(0o600)
    os.chown(token, 65534, 65534)
    cfg = tmp_path / "m.toml"
    cfg.write_text(
        f'source = "{src}"\n[targets.cloud]\nurl = "{backend}://Invoices"\n'
        f'options = {{ token_file = "{token}"{login} }}\n'
    )
    me = pwd.getpwuid(os.geteuid()).pw_name
    why = f"{what} token file {token} is owned by another user ({pwd.getpwuid(65534).pw_name}), not {me}"
    for command in (["run", "--once"], ["verify"]):
        refused = run(*command, "-c", str(cfg), state=state, timeout=30)
        assert_one_line_error(refused, 2, why, f"run: chown {me} {token}")
    assert token.stat().st_uid == 65534  # the user's file, the user's fix


@pytest.mark.parametrize("others", ["write", "own"])
def test_a_config_others_can_write_or_own_is_refused(others: str, src: Path, tmp_path: Path, state: Path) -> None:
    """A config made world-writable (or another user's) was used without a word: whoever
    could write it chose the shell line on_failure runs as mirror's user, root for the
    system unit, and where the files go."""
    if others == "own" and os.geteuid() != 0:
        pytest.skip("needs root to hand the config to another user")
    ran = tmp_path / "on-failure-ran"
    cfg = tmp_path / "m.toml"
    cfg.write_text(
        f'source = "{src}"\n[defaults]\nalert_after = "0s"\non_failure = "touch {ran}"\n'
        f'[targets.usb]\nurl = "{tmp_path}/backup"\n'
    )
    if others == "write":
        cfg.chmod(0o666)
        why = (f"{cfg}: config file is writable by every user", f"run: chmod o-w {cfg}")
    else:
        cfg.chmod(0o644)
        os.chown(cfg, 65534, 65534)
        me = pwd.getpwuid(os.geteuid()).pw_name
        why = (f"{cfg}: config file is owned by another user ({pwd.getpwuid(65534).pw_name})", f"chown {me} {cfg}")
    for command in (["run", "--once"], ["verify"], ["status"]):
        assert_one_line_error(run(*command, "-c", str(cfg), state=state), 2, *why)
    assert not (tmp_path / "backup").exists() and not ran.exists()
    cfg.chmod(0o664)  # group-writable: umask 002 under a user's private group makes every file so
    os.chown(cfg, os.geteuid(), os.getegid())
    assert run("run", "--once", "-c", str(cfg), state=state).returncode == 0
    assert len(files(tmp_path / "backup")) == 12


def test_a_file_url_with_a_host_is_refused(src: Path, tmp_path: Path, state: Path) -> None:
    assert_one_line_error(run("run", str(src), "file://backup/2026", "--once", state=state), 2, "names a host")
    assert not Path("/backup").exists()
    here = run("run", str(src), f"file://localhost{tmp_path}/t", "--once", state=state)
    assert here.returncode == 0 and (tmp_path / "t" / "2026").is_dir(), here.stdout + here.stderr


def test_a_percent_encoded_file_url_names_the_folder_it_encodes(src: Path, tmp_path: Path, state: Path) -> None:
    """file:///.../My%20Backup, as file managers copy it, filled a new folder literally
    named 'My%20Backup', exit 0, and the folder meant got nothing."""
    done = run("run", str(src), f"file://{tmp_path}/My%20Backup", "--once", state=state)
    assert done.returncode == 0, done.stdout + done.stderr
    assert files(tmp_path / "My Backup") == {k: v for k, v in files(src).items() if k != "Thumbs.db"}
    assert not (tmp_path / "My%20Backup").exists()


def test_a_url_with_a_slash_missing_is_refused_not_mirrored_into_a_local_folder(
    src: Path, tmp_path: Path, state: Path
) -> None:
    """'sftp:/nas/srv/invoices' mirrored into ./sftp:/nas/srv/invoices and said '1 sent', exit 0."""
    for typo, meant in (("sftp:/nas/srv/invoices", "sftp://nas/srv/invoices"), ("file:/tmp/x", "file:///tmp/x")):
        refused = run("run", str(src), typo, "--once", state=state, cwd=tmp_path)
        assert_one_line_error(refused, 2, f"a URL with a slash missing: write {meant} ")
    assert not (tmp_path / "sftp:").exists() and not (tmp_path / "file:").exists()
    # a Windows path: the advice was 'write c://backup', an unknown protocol in turn
    windows = run("run", str(src), "C:/backup", "--once", state=state, cwd=tmp_path)
    assert_one_line_error(windows, 2, "target 'C:/backup' is no folder path nor URL mirror knows ('C:' is no")
    on_purpose = run("run", str(src), "./sftp:/x", "--once", state=state, cwd=tmp_path)
    assert on_purpose.returncode == 0 and (tmp_path / "sftp:" / "x" / "2026").is_dir(), on_purpose.stderr


def test_a_memory_target_is_filled_again_by_a_run_in_a_new_process(src: Path, state: Path) -> None:
    """memory:// lives in its process: the second `mirror run --once` said '0 sent', exit 0,
    and left the target empty."""
    first = run("run", str(src), "memory://invoices", "--once", state=state)
    assert first.returncode == 0 and "12 sent" in first.stdout, first.stdout + first.stderr
    again = run("run", str(src), "memory://invoices", "--once", state=state)
    assert again.returncode == 0 and "12 sent" in again.stdout, again.stdout + again.stderr


def test_a_target_or_state_inside_the_source_is_refused(src: Path, tmp_path: Path, state: Path) -> None:
    assert_one_line_error(run("run", str(src), str(src / "backup"), "--once", state=state), 2, "overlaps")
    assert_one_line_error(run("run", str(src), str(tmp_path), "--once", state=state), 2, "overlaps")
    inside = run("run", str(src), str(tmp_path / "t"), "--once", "--state-dir", str(src / ".state"), state=state)
    assert_one_line_error(inside, 2, "state folder")
    assert not (src / "backup").exists() and not (src / ".state").exists()


def test_two_targets_writing_to_one_place_are_refused(src: Path, tmp_path: Path, state: Path) -> None:
    """One target's ``keep`` would lose to the other's deletions."""
    cfg = tmp_path / "mirror.toml"
    (tmp_path / "link").symlink_to(tmp_path)
    cfg.write_text(
        f'source = "{src}"\n[targets.archive]\nurl = "{tmp_path}/backup"\ndelete = "keep"\n'
        f'[targets.usb]\nurl = "{tmp_path}/link/backup/"\n'
    )
    assert_one_line_error(run("run", "-c", str(cfg), "--once", state=state), 2, "'archive' and 'usb'", "backup")
    assert not (tmp_path / "backup").exists()
    # the same URL with another account is another place
    cfg.write_text(
        f'source = "{src}"\n[targets.me]\nurl = "memory://box"\noptions = {{ user = "me" }}\n'
        f'[targets.you]\nurl = "memory://box"\noptions = {{ user = "you" }}\n'
        f'[targets.me_again]\nurl = "memory://box/"\noptions = {{ user = "me" }}\n'
    )
    assert_one_line_error(run("run", "-c", str(cfg), "--once", state=state), 2, "'me' and 'me_again'")
    # one server folder, spelled another way: the archive's kept files were deleted by the other
    cfg.write_text(
        f'source = "{src}"\n[targets.cloud]\nurl = "webdav://127.0.0.1:9/invoices"\n'
        f'[targets.archive]\nurl = "dav://127.0.0.1:9//invoices/./"\ndelete = "keep"\n'
    )
    assert_one_line_error(run("run", "-c", str(cfg), "--once", state=state), 2, "'cloud' and 'archive'")


def test_two_targets_on_one_server_folder_that_differ_in_an_option_are_refused(
    src: Path, tmp_path: Path, state: Path
) -> None:
    """An archive block copied from the NAS block, given ``timeout = 30`` and ``delete =
    "keep"``, passed as another place: the NAS target deleted the archive's kept files,
    and run, status and verify said all was well. Checked before connecting."""
    cfg = tmp_path / "mirror.toml"
    cfg.write_text(
        f'source = "{src}"\n[targets.nas]\nurl = "sftp://me@127.0.0.1:9/srv/invoices"\n'
        "options = { look_for_keys = false }\n"
        f'[targets.archive]\nurl = "sftp://127.0.0.1:9/srv/invoices/"\n'
        f'options = {{ username = "other", look_for_keys = false, timeout = 30 }}\ndelete = "keep"\n'
    )
    assert_one_line_error(run("run", "-c", str(cfg), "--once", state=state), 2, "'nas' and 'archive'")
    cfg.write_text(
        f'source = "{src}"\n[targets.c1]\nurl = "s3://bk/same"\n'
        f'options = {{ endpoint_url = "http://127.0.0.1:9" }}\n'
        f'[targets.c2]\nurl = "s3://bk/same/sub"\n'
        f'options = {{ endpoint_url = "HTTP://127.0.0.1:9/", key = "k" }}\n'
    )
    assert_one_line_error(run("run", "-c", str(cfg), "--once", state=state), 2, "'c2' writes to", "target 'c1'")
    # one server by two of this machine's names: the keep target's files were deleted
    cfg.write_text(
        f'source = "{src}"\n[targets.current]\nurl = "s3://bk/b"\n'
        f'options = {{ endpoint_url = "http://127.0.0.1:9" }}\n'
        f'[targets.archive]\nurl = "s3://bk/b"\noptions = {{ endpoint_url = "http://localhost:9" }}\n'
        'delete = "keep"\n'
    )
    assert_one_line_error(run("run", "-c", str(cfg), "--once", state=state), 2, "'current' and 'archive'")
    # a bucket on AWS through the default endpoint and through a regional one
    cfg.write_text(
        f'source = "{src}"\n[targets.current]\nurl = "s3://bk/b"\n'
        f'[targets.archive]\nurl = "s3://bk/b/2026"\n'
        'options = { endpoint_url = "https://s3.eu-central-1.amazonaws.com" }\n'
    )
    assert_one_line_error(run("run", "-c", str(cfg), "--once", state=state), 2, "'archive' writes to", "'current'")
    cfg.write_text(
        f'source = "{src}"\n[targets.nas]\nurl = "sftp://me@[::1]:9/srv/invoices"\n'
        f'[targets.nas2]\nurl = "sftp://localhost:9/srv/invoices"\n'
    )
    assert_one_line_error(run("run", "-c", str(cfg), "--once", state=state), 2, "'nas' and 'nas2'")
    # the login folder is the user's own: another user's is another place
    cfg.write_text(
        f'source = "{src}"\n[targets.me]\nurl = "sftp://me@127.0.0.1:9/~/invoices"\n'
        f'[targets.you]\nurl = "sftp://you@127.0.0.1:9/~/invoices"\n'
    )
    assert "writes to" not in run("run", "-c", str(cfg), "--once", state=state, timeout=60).stderr


def test_a_target_inside_another_target_s_folder_is_refused(src: Path, tmp_path: Path, state: Path) -> None:
    """A flat target in backup/2026 wrote its files into the tree target's 2026/, each
    overwriting the other's on every rescan, while status said in sync."""
    (src / "2026" / "inv.pdf").write_bytes(b"tree")
    (src / "inv.pdf").write_bytes(b"flat")
    cfg = tmp_path / "mirror.toml"
    cfg.write_text(
        f'source = "{src}"\n[targets.usb]\nurl = "{tmp_path}/backup/2026"\nlayout = "flat"\n'
        f'[targets.archive]\nurl = "{tmp_path}/backup"\n'
    )
    refused = run("run", "-c", str(cfg), "--once", state=state)
    assert_one_line_error(refused, 2, "target 'usb' writes to", "inside the folder of target 'archive'")
    assert not (tmp_path / "backup").exists()
    cfg.write_text(
        f'source = "{src}"\n[targets.a]\nurl = "memory://box/backup"\n[targets.b]\nurl = "memory://box/backup/sub"\n'
        f'[targets.c]\nurl = "memory://box/backup-2"\n'
    )
    assert_one_line_error(run("run", "-c", str(cfg), "--once", state=state), 2, "'b' writes to", "target 'a'")


def test_a_cloud_target_inside_another_spelled_in_another_case_is_refused(
    src: Path, tmp_path: Path, state: Path
) -> None:
    """Dropbox and OneDrive ignore case: dropbox://invoices/2024 is inside dropbox://Invoices,
    and the two targets overwrote each other's copies of 2024/ while run and status said in sync."""
    cfg = tmp_path / "mirror.toml"
    for scheme in ("dropbox", "onedrive"):
        cfg.write_text(
            f'source = "{src}"\n[targets.one]\nurl = "{scheme}://Invoices"\noptions = {{ token = "t" }}\n'
            f'[targets.two]\nurl = "{scheme}://invoices/2024"\noptions = {{ token = "t" }}\n'
            f'[targets.three]\nurl = "{scheme}://INVOICES/"\noptions = {{ token = "t" }}\n'
        )
        refused = run("run", "-c", str(cfg), "--once", state=state)
        assert_one_line_error(refused, 2, f"'two' writes to {scheme}://invoices/2024", "target 'one'")
        cfg.write_text(cfg.read_text().replace("invoices/2024", "Invoices-2024"))
        assert_one_line_error(run("run", "-c", str(cfg), "--once", state=state), 2, "'one' and 'three'")


def test_a_target_bind_mounted_from_a_folder_of_the_source_is_refused(
    src: Path, tmp_path: Path, state: Path
) -> None:
    """The overlap check compared paths: a bind mount of src/backup as the target passed,
    and watch mode copied its own copies into the source, a level deeper every second."""
    (src / "backup").mkdir()
    elsewhere = tmp_path / "backup"
    elsewhere.mkdir()
    if subprocess.run(["mount", "--bind", str(src / "backup"), str(elsewhere)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount here (needs root, and a mount namespace that allows it)")
    try:
        result = run("run", str(src), str(elsewhere), "--once", state=state)
        assert_one_line_error(result, 2, f"target 'default' ({elsewhere}) overlaps the source folder {src}")
        assert list((src / "backup").iterdir()) == []
    finally:
        subprocess.run(["umount", str(elsewhere)], check=True)


@pytest.mark.parametrize("below", ["", "/2024"], ids=["one folder", "one inside the other"])
def test_two_targets_on_one_folder_through_a_bind_mount_are_refused(
    src: Path, tmp_path: Path, state: Path, below: str
) -> None:
    """The check of two targets on one folder compared paths: usb (delete = "mirror") and
    kept (delete = "keep"), a bind mount of usb, ran side by side, and usb's deletions
    took the copies kept was there to keep."""
    usb, seen = tmp_path / "usb", tmp_path / "bind"
    (usb / "2024").mkdir(parents=True)
    seen.mkdir()
    if subprocess.run(["mount", "--bind", str(usb), str(seen)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount here (needs root, and a mount namespace that allows it)")
    try:
        cfg = tmp_path / "m.toml"
        cfg.write_text(
            f'source = "{src}"\n[targets.usb]\nurl = "{usb}"\n'
            f'[targets.kept]\nurl = "{seen}{below}"\ndelete = "keep"\n'
        )
        result = run("run", "-c", str(cfg), "--once", state=state)
        assert_one_line_error(result, 2, "'usb' and 'kept'")
        assert "bind mount" in result.stderr, result.stderr
        assert [p.name for p in usb.iterdir()] == ["2024"]
    finally:
        subprocess.run(["umount", str(seen)], check=True)


def test_a_loop_of_links_as_a_folder_is_a_one_line_error(src: Path, tmp_path: Path, state: Path) -> None:
    """a -> b -> a as the source, target or state folder: "internal error: RuntimeError:
    Symlink loop ... please report it", exit 1."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    loop = str(tmp_path / "a")
    for args in (["run", loop, str(tmp_path / "dst"), "--once"], ["verify", loop, str(tmp_path / "dst")]):
        assert_one_line_error(run(*args, state=state), 2, f"source folder {loop}: a loop of symbolic links")
    assert_one_line_error(run("run", str(src), loop, "--once", state=state), 2, f"target {loop}: a loop")
    env = {"MIRROR_STATE_DIR": loop}
    assert_one_line_error(run("status", env=env, state=state), 2, f"MIRROR_STATE_DIR {loop}: a loop")


def test_a_state_folder_that_cannot_be_made_is_a_one_line_error(src: Path, tmp_path: Path) -> None:
    (tmp_path / "a file").write_bytes(b"")
    for state in (tmp_path / "a file", tmp_path / "a file" / "below"):
        result = run("run", str(src), str(tmp_path / "t"), "--once", state=state)
        assert_one_line_error(result, 2, str(tmp_path / "a file"), "--state-dir or MIRROR_STATE_DIR")
    assert not (tmp_path / "t").exists()


def test_a_source_or_target_folder_whose_path_is_not_utf8_is_a_one_line_error(tmp_path: Path, state: Path) -> None:
    """A folder a Latin-1 program made, or a share mounted with iocharset=iso8859-1:
    run and verify ended in 'internal error: UnicodeEncodeError ... please report it'."""
    latin1 = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"Buchhaltung M\xfcller"))
    os.mkdir(latin1)
    Path(latin1, "a.pdf").write_bytes(b"%PDF")
    (tmp_path / "ok").mkdir()
    shown = f"{tmp_path}/Buchhaltung M\\xfcller is not valid UTF-8"
    fix = "rename the folder to a UTF-8 name"
    for command in ("run", "verify"):
        from_it = run(
            command, latin1, str(tmp_path / "backup"), *(("--once",) if command == "run" else ()), state=state
        )
        assert_one_line_error(from_it, 2, f"source folder {shown}", fix)
        into_it = run(
            command, str(tmp_path / "ok"), latin1, *(("--once",) if command == "run" else ()), state=state
        )
        assert_one_line_error(into_it, 2, f"target {shown}", fix)
    # a config in the folder, which names it as the source
    cfg_latin1 = Path(os.fsdecode(os.path.join(os.fsencode(latin1), b"m.toml")))
    cfg_latin1.write_text(f'source = "."\n[targets.usb]\nurl = "{tmp_path}/usb"\n')
    assert_one_line_error(run("run", "-c", str(cfg_latin1), "--once", state=state), 2, "source folder", fix)
    assert not (tmp_path / "backup").exists() and not (tmp_path / "usb").exists()


def test_a_file_whose_name_is_not_utf8_fails_the_run_until_renamed(src: Path, tmp_path: Path, state: Path) -> None:
    """Legacy software may write Latin-1 names; such a file is not backed up, so the run
    must not look clean."""
    target = tmp_path / "t"
    latin1 = os.path.join(os.fsencode(src), b"Rechnung M\xfcller.pdf")
    with open(latin1, "wb") as f:
        f.write(b"%PDF")
    result = run("run", str(src), str(target), "--once", "-q", state=state)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "not mirrored: Rechnung M\\xfcller.pdf: its name is not valid UTF-8; rename it" in result.stderr
    assert "1 source file(s) cannot be mirrored" in result.stderr
    # nor may verify call it identical
    checked = run("verify", str(src), str(target), state=state)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "Rechnung M\\xfcller.pdf: not mirrored: its name is not valid UTF-8; rename it" in checked.stdout
    # nor status (of a service, which warns in a log nobody reads)
    shown = run("status", state=state)
    assert shown.returncode == 1 and "left out: 1 source folder(s) or file(s)" in shown.stdout, shown.stdout
    os.rename(latin1, src / "Rechnung Müller.pdf")
    renamed = run("run", str(src), str(target), "--once", state=state)
    assert renamed.returncode == 0 and (target / "Rechnung Müller.pdf").read_bytes() == b"%PDF"
    assert run("verify", str(src), str(target), state=state).returncode == 0
    assert run("status", state=state).returncode == 0


def test_excluded_files_whose_names_are_not_utf8_are_left_out_quietly(tmp_path: Path, state: Path) -> None:
    """A program's Latin-1 named logs, excluded in the config, were still told 'not
    mirrored: ...; rename it', and run, status and verify exited 1 for ever."""
    src = tmp_path / "export"
    (src / "logs").mkdir(parents=True)
    (src / "invoice.pdf").write_bytes(b"%PDF")
    for name in (b"prot\xf6koll.log", b"logs/lauf-\xe9t\xe9.txt", b"notes-\xe9t\xe9.txt"):
        with open(os.path.join(os.fsencode(src), name), "wb") as f:
            f.write(b"log")
    cfg = tmp_path / "m.toml"
    cfg.write_text(
        f'source = "{src}"\n[defaults]\nexclude = ["*.log", "logs/"]\n'
        f'[targets.usb]\nurl = "{tmp_path}/usb"\ninclude = ["*.pdf"]\n'
        f'[targets.nas]\nurl = "{tmp_path}/nas"\n'
    )
    ran = run("run", "-c", str(cfg), "--once", state=state)
    # only the file the nas target takes is told, and only for the nas
    assert ran.returncode == 1 and ran.stderr.count("not mirrored") == 1, ran.stderr
    assert "not mirrored: notes-\\xe9t\\xe9.txt" in ran.stderr and "1 source file(s)" in ran.stderr
    shown = json.loads(run("status", "-c", str(cfg), "--json", state=state).stdout)
    assert {t["name"]: t["left_out"] for t in shown} == {"usb": 0, "nas": 1}, shown
    checked = run("verify", "-c", str(cfg), state=state)
    assert checked.stdout.splitlines() == [
        "usb: identical (1 file; sizes and times compared)",
        "nas: notes-\\xe9t\\xe9.txt: not mirrored: its name is not valid UTF-8; rename it",
    ], checked.stdout
    os.remove(os.path.join(os.fsencode(src), b"notes-\xe9t\xe9.txt"))
    for command in (("run", "--once"), ("status",), ("verify",)):
        done = run(*command, "-c", str(cfg), state=state)
        assert done.returncode == 0 and "not mirrored" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert files(tmp_path / "usb") == {"invoice.pdf": b"%PDF"} == files(tmp_path / "nas")


def test_verify_names_a_file_whose_name_is_not_utf8_on_each_target_and_calls_none_identical(
    tmp_path: Path, state: Path
) -> None:
    """verify printed 'default: identical (1 file; ...)' under the line of a Latin-1
    named source file (not on any target), a line that named no target; a name one target
    refuses is told per target, without that verdict."""
    src = tmp_path / "export"
    src.mkdir()
    (src / "ok.pdf").write_bytes(b"%PDF")
    with open(os.path.join(os.fsencode(src), b"Rechnung M\xfcller.pdf"), "wb") as f:
        f.write(b"%PDF from a Latin-1 program")
    cfg = tmp_path / "m.toml"
    cfg.write_text(
        f'source = "{src}"\n[targets.usb]\nurl = "{tmp_path}/usb"\n[targets.nas]\nurl = "{tmp_path}/nas"\n'
    )
    assert run("run", "-c", str(cfg), "--once", "-q", state=state).returncode == 1
    checked = run("verify", "-c", str(cfg), state=state)
    why = "Rechnung M\\xfcller.pdf: not mirrored: its name is not valid UTF-8; rename it"
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert checked.stdout.splitlines() == [f"usb: {why}", f"nas: {why}"], checked.stdout


def test_a_source_holding_only_a_file_it_cannot_send_is_not_called_empty(tmp_path: Path, state: Path) -> None:
    """The only mirrored file gone, and a file whose name a Latin-1 program wrote in the
    source: its copy stays (the guard), but run and status said 'the source folder is
    empty' (a disk not mounted?) while the file was there, named just above as not
    mirrored. (The mirrored file renamed to that name keeps its copy as that file's.)"""
    src, target = tmp_path / "export", tmp_path / "t"
    src.mkdir()
    (src / "Rechnung.pdf").write_bytes(b"%PDF")
    assert run("run", str(src), str(target), "--once", "-q", state=state).returncode == 0
    latin1 = os.path.join(os.fsencode(src), b"Rechnung M\xfcller.pdf")
    os.rename(src / "Rechnung.pdf", latin1)
    ran = run("run", str(src), str(target), "--once", state=state)
    assert ran.returncode == 1 and "Rechnung.pdf: renamed in the source to Rechnung M\\xfcller.pdf" in ran.stderr
    assert "withheld" not in ran.stderr and "empty" not in ran.stderr, ran.stderr
    os.unlink(latin1)
    with open(latin1, "wb") as f:
        f.write(b"%PDF, another document")
    why = "the source folder holds no file mirror can send (1 left out) but the target holds 1 mirrored file"
    ran = run("run", str(src), str(target), "--once", state=state)
    assert ran.returncode == 1 and f"default: deletions withheld: {why}" in ran.stderr, ran.stderr
    shown = run("status", state=state)
    assert f"deletions withheld: {why}" in shown.stdout and "empty" not in shown.stdout, shown.stdout
    assert files(target) == {"Rechnung.pdf": b"%PDF"}


def test_a_mirrored_file_or_folder_renamed_to_a_name_that_is_not_utf8_keeps_its_copies(
    src: Path, tmp_path: Path, state: Path
) -> None:
    """A Latin-1 program renamed 'Rechnung.pdf' to 'Rechnung M\\xfcller.pdf', and a folder
    of 5 invoices to 'Kunde M\\xfcller': the old paths were gone and the new ones left
    out, so every copy was deleted ('6 deleted') while the files were still in the source,
    and no target held them any more. The copies stay, run after run, with a line naming
    both paths (run, status, verify), until the files get good names: then they move."""
    target = tmp_path / "t"
    (src / "Rechnung.pdf").write_bytes(b"%PDF invoice of Mr Mueller")
    (src / "Kunde").mkdir()
    for i in range(5):
        (src / "Kunde" / f"inv {i}.pdf").write_bytes(f"%PDF Kunde {i}".encode())
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    before = files(target)
    root = os.fsencode(src)
    os.rename(root + b"/Rechnung.pdf", root + b"/Rechnung M\xfcller.pdf")
    os.rename(root + b"/Kunde", root + b"/Kunde M\xfcller")
    (src / "2026" / "invoice [0] #%.pdf").unlink()  # a file that did leave: its copy goes
    kept = {p: d for p, d in before.items() if p != "2026/invoice [0] #%.pdf"}
    for deleted in (1, 0):  # not merely put off to the next run
        result = run("run", str(src), str(target), "--once", state=state)
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"default: 0 sent (0 B), {deleted} deleted, 0 failed" in result.stdout, result.stdout
        assert files(target) == kept
        assert (
            "Rechnung.pdf: renamed in the source to Rechnung M\\xfcller.pdf, which is not mirrored (its name is "
            "not valid UTF-8); its copy on the target stays until the file can be mirrored" in result.stderr
        ), result.stderr
        assert "Kunde/inv 4.pdf: renamed in the source to Kunde M\\xfcller/inv 4.pdf" in result.stderr
    checked = run("verify", str(src), str(target), state=state)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert (
        "default: Rechnung.pdf: renamed in the source to Rechnung M\\xfcller.pdf, which is not mirrored "
        "(its name is not valid UTF-8); the copy of its old name stays on the target until the file can be "
        "mirrored"
    ) in checked.stdout.splitlines(), checked.stdout
    assert "removed from the source" not in checked.stdout, checked.stdout
    shown = run("status", state=state)
    assert shown.returncode == 1, shown.stdout
    assert "  failed: Kunde/inv 0.pdf: renamed in the source to Kunde M\\xfcller/inv 0.pdf" in shown.stdout
    # good names again: the copies move there, nothing is sent again and nothing is lost
    os.rename(root + b"/Rechnung M\xfcller.pdf", src / "Rechnung Müller.pdf")
    os.rename(root + b"/Kunde M\xfcller", src / "Kunde Müller")
    moved = run("run", str(src), str(target), "--once", state=state)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "default: 0 sent (0 B), 6 moved, 0 deleted, 0 failed" in moved.stdout, moved.stdout
    assert files(target) == {p: d for p, d in files(src).items() if p != "Thumbs.db"}
    assert run("verify", str(src), str(target), state=state).returncode == 0
    assert run("status", state=state).returncode == 0


def test_verify_read_through_head_stops_quietly(tmp_path: Path, state: Path) -> None:
    """``mirror verify SRC DST | head``: more differences than a pipe holds, and the
    reader gone after the first line, once ended in 'internal error: BrokenPipeError'."""
    src, target = tmp_path / "export", tmp_path / "backup"
    src.mkdir()
    target.mkdir()
    for i in range(2000):
        (src / f"invoice {i:04}.pdf").write_bytes(b"x")
    env = {**os.environ, "MIRROR_STATE_DIR": str(state)}
    piped = subprocess.run(
        ["bash", "-c", f'{shlex.join(MIRROR)} verify "$0" "$1" | head -1; exit "${{PIPESTATUS[0]}}"', src, target],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert piped.stdout.startswith("default: invoice 0000.pdf: missing on the target"), piped.stdout
    assert piped.returncode == 1 and piped.stderr == "", piped.stderr


@pytest.mark.parametrize("below", ["", "/2026/invoices"], ids=["the target", "a folder above it"])
def test_a_target_that_is_a_file_fails_once_not_once_per_file(
    src: Path, tmp_path: Path, state: Path, below: str
) -> None:
    """A file below which the target would be made failed each file on its own, as
    "NotADirectoryError: [Errno 20] Not a directory"."""
    (tmp_path / "backup").write_bytes(b"not a folder")
    result = run("run", str(src), f"{tmp_path / 'backup'}{below}", "--once", state=state)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{tmp_path / 'backup'} is a file, not a folder" in result.stderr, result.stderr
    assert "failed: 2026/" not in result.stderr and "Errno" not in result.stderr, result.stderr
    assert (tmp_path / "backup").read_bytes() == b"not a folder"


def test_a_private_file_stays_private_on_a_local_target(tmp_path: Path, state: Path) -> None:
    src, target = tmp_path / "export", tmp_path / "backup"
    src.mkdir()
    for i in range(5):  # several: sent in one batch; the large one alone
        (src / f"salary {i}.pdf").write_bytes(b"%PDF")
    (src / "large salary scan.tif").write_bytes(bytes(2 << 20))
    for path in src.iterdir():
        path.chmod(0o600)
    (src / "salary 0.pdf").chmod(0o640)
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    modes = {p.name: p.stat().st_mode & 0o777 for p in target.iterdir()}
    assert modes == {p.name: p.stat().st_mode & 0o777 for p in src.iterdir()}, modes


def test_a_private_folder_stays_private_on_a_local_target_and_in_its_trash(tmp_path: Path, state: Path) -> None:
    """hr/ (0700) kept other users from its files (0644); on the target it came out
    0755, payroll and all readable by every user of the machine, and so did the copies
    of its files moved into the trash."""
    src, target = tmp_path / "export", tmp_path / "backup"
    (src / "hr" / "2026").mkdir(parents=True)
    (src / "hr" / "2026" / "payroll.pdf").write_bytes(b"salary")
    (src / "hr" / "2026").chmod(0o750)
    (src / "hr").chmod(0o700)
    (target / "hr" / "2026").mkdir(parents=True, mode=0o700)
    (target / "hr" / "2026" / "payroll.pdf").write_bytes(b"someone's")  # goes to the trash
    (target / "hr" / "2026").chmod(0o755)
    (target / "hr").chmod(0o755)
    old = os.umask(0o022)
    try:
        assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    finally:
        os.umask(old)
    modes = {str(p.relative_to(target)): oct(p.stat().st_mode & 0o777) for p in target.rglob("*") if p.is_dir()}
    (day,) = (target / ".mirror-trash").iterdir()
    assert modes["hr"] == modes["hr/2026"] == "0o755"  # there before: the user's
    assert modes[f".mirror-trash/{day.name}/hr"] == "0o700", modes
    assert modes[f".mirror-trash/{day.name}/hr/2026"] == "0o750", modes
    (src / "hr" / "2027").mkdir(mode=0o700)
    (src / "hr" / "2027" / "payroll.pdf").write_bytes(b"salary")
    fresh = tmp_path / "fresh"
    assert run("run", str(src), str(fresh), "--once", state=state).returncode == 0
    made = {str(p.relative_to(fresh)): oct(p.stat().st_mode & 0o777) for p in fresh.rglob("*") if p.is_dir()}
    assert made == {"hr": "0o700", "hr/2026": "0o750", "hr/2027": "0o700"}, made


def test_counts_of_one_read_as_english(tmp_path: Path, state: Path) -> None:
    src, target = tmp_path / "export", tmp_path / "backup"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"%PDF")
    assert "would do 1 action\n" in run("run", str(src), str(target), "--once", "--dry-run", state=state).stdout
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    assert "identical (1 file;" in run("verify", str(src), str(target), state=state).stdout


def test_json_logs_are_one_object_per_line(src: Path, tmp_path: Path, state: Path) -> None:
    (src / "link").symlink_to(src / "Thumbs.db")
    result = run("run", str(src), str(tmp_path / "t"), "--once", "--log-format", "json", state=state)
    assert result.returncode == 0
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert any(r["message"].startswith("skipped link") and r["level"] == "info" for r in records)
    # the outcome too, for a log collector: every line of output is a record
    assert result.stdout == ""
    assert records[-1]["message"].startswith("12 sent") and records[-1]["level"] == "info"
    assert records[-1]["target"] == "default"  # a field to filter on, as in watch mode
    (tmp_path / "file").write_bytes(b"")
    failed = run("run", str(src), str(tmp_path / "file"), "--once", "--log-format", "json", state=state)
    assert failed.returncode == 1 and failed.stdout == ""
    last = json.loads(failed.stderr.splitlines()[-1])
    assert last["level"] == "warning" and "target failed" in last["message"]
    # a mistake in the command line or config too: a collector takes every line as JSON
    refused = run("run", str(src), "sftp://me@nas/inv#a", "--once", "--log-format", "json", state=state)
    (error,) = [json.loads(line) for line in refused.stderr.splitlines()]
    assert refused.returncode == 2 and error["level"] == "error" and "write it as %23" in error["message"]


def test_a_broken_target_does_not_stop_the_others(src: Path, tmp_path: Path, state: Path) -> None:
    cfg = tmp_path / "m.toml"
    cfg.write_text(
        f'source = "{src}"\n[targets.good]\nurl = "{tmp_path}/good"\n'
        '[targets.broken]\nurl = "sftp://nobody@127.0.0.1:1/x"\n'
    )
    once = run("run", "-c", str(cfg), "--once", state=state)
    assert once.returncode == 1 and "broken" in once.stderr
    assert len(files(tmp_path / "good")) == 12
    proc = start("run", "-c", str(cfg), state=state, log=tmp_path / "log")
    try:
        (src / "late.pdf").write_bytes(b"late")
        wait_for(lambda: (tmp_path / "good" / "late.pdf").exists(), what="the healthy target to keep syncing")
        assert proc.poll() is None
    finally:
        proc.terminate()
        assert proc.wait(15) == 0
    assert "unreachable" in (tmp_path / "log").read_text()


def test_a_symlinked_folder_in_a_local_target_is_not_written_through(
    src: Path, tmp_path: Path, state: Path
) -> None:
    target, elsewhere = tmp_path / "backup", tmp_path / "elsewhere"
    elsewhere.mkdir()
    target.mkdir()
    (target / "2026").symlink_to(elsewhere)
    result = run("run", str(src), str(target), "--once", state=state)
    assert result.returncode == 1 and "symbolic link" in result.stderr
    assert list(elsewhere.iterdir()) == []


def test_a_source_given_through_a_link_follows_it_when_it_is_switched(tmp_path: Path, state: Path) -> None:
    """current -> releases/1, switched to releases/2 by the exporting program between two
    --once runs: the second run took releases/2 for a new source, with an index of its
    own, so the file gone from it stayed on the target, and verify said identical."""
    (tmp_path / "releases" / "1").mkdir(parents=True)
    (tmp_path / "releases" / "2").mkdir(parents=True)
    (tmp_path / "releases" / "1" / "inv.pdf").write_bytes(b"invoice v1")
    (tmp_path / "releases" / "1" / "cancelled.pdf").write_bytes(b"cancelled")
    (tmp_path / "releases" / "2" / "inv.pdf").write_bytes(b"invoice v2")
    current, target = tmp_path / "current", tmp_path / "dst"
    current.symlink_to("releases/1")
    assert run("run", str(current), str(target), "--once", state=state).returncode == 0
    (tmp_path / "next").symlink_to("releases/2")
    os.replace(tmp_path / "next", current)
    again = run("run", str(current), str(target), "--once", state=state)
    assert again.returncode == 0 and "1 deleted" in again.stdout, again.stdout + again.stderr
    assert files(target) == {"inv.pdf": b"invoice v2"}


def test_an_index_named_by_the_folder_a_link_leads_to_is_taken_over(tmp_path: Path, state: Path) -> None:
    """Indexes of a source given through a link were named by the folder it led to: the
    first run after the change must find that index, not start one that knows no file."""
    real, target = tmp_path / "exports" / "2026", tmp_path / "dst"
    real.mkdir(parents=True)
    (real / "a.pdf").write_bytes(b"a")
    (real / "b.pdf").write_bytes(b"b")
    assert run("run", str(real), str(target), "--once", state=state).returncode == 0
    (tmp_path / "current").symlink_to(real)
    (real / "b.pdf").unlink()  # only the old index knows the target's copy is mirror's
    again = run("run", str(tmp_path / "current"), str(target), "--once", state=state)
    assert again.returncode == 0 and "1 deleted" in again.stdout, again.stdout + again.stderr
    assert files(target) == {"a.pdf": b"a"}


def test_a_mirror_started_while_status_looks_at_the_target_starts(tmp_path: Path, state: Path) -> None:
    """A monitor ran ``mirror status`` every few seconds. A run that started while status
    looked at the target's lock (a shared lock, for a moment) stopped at once: "already
    being mirrored by another mirror process", exit 2 (a --once from cron, or a service
    start). It waits for the look to end."""
    source, target = tmp_path / "export", tmp_path / "dst"
    source.mkdir()
    (source / "a.pdf").write_bytes(b"a")
    assert run("run", str(source), str(target), "--once", state=state).returncode == 0
    (lock,) = (state / "targets").glob("*.sqlite.lock")
    (source / "b.pdf").write_bytes(b"b")
    looking = os.open(lock, os.O_RDONLY)
    fcntl.flock(looking, fcntl.LOCK_SH | fcntl.LOCK_NB)  # as status looks (index_lock.held)
    done = threading.Timer(0.5, os.close, (looking,))
    done.start()
    try:
        again = run("run", str(source), str(target), "--once", state=state)
    finally:
        done.join()
    assert again.returncode == 0, again.stderr
    assert files(target) == {"a.pdf": b"a", "b.pdf": b"b"}


@contextlib.contextmanager
def held_as_by_an_older_mirror(index_file: Path) -> Iterator[None]:
    """The lock of ``index_file`` held, as a mirror from before place locks (an older
    service, still running after ``pip install -U``) holds it while it mirrors."""
    fd = os.open(f"{index_file}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def test_an_index_an_older_running_mirror_holds_is_not_taken_over(tmp_path: Path, state: Path) -> None:
    """An older mirror, still running as a service on a source given through a link,
    holds the index named by the folder the link leads to: a run by hand renamed it
    under the service and mirrored the same target too (exit 0), and status said 'not
    running'. The same for the index of a target renamed in the config."""
    real, target = tmp_path / "exports" / "2026", tmp_path / "dst"
    real.mkdir(parents=True)
    (real / "a.pdf").write_bytes(b"a")
    (real / "b.pdf").write_bytes(b"b")
    cfg = tmp_path / "mirror.toml"
    cfg.write_text(f'source = "{real}"\n[targets.usb]\nurl = "{target}"\n')
    assert run("run", "-c", str(cfg), "--once", state=state).returncode == 0
    (old,) = (state / "targets").glob("*.sqlite")
    (tmp_path / "current").symlink_to(real)
    cfg.write_text(f'source = "{tmp_path / "current"}"\n[targets.usb]\nurl = "{target}"\n')
    (real / "b.pdf").unlink()
    (real / "c.pdf").write_bytes(b"c")
    renamed = tmp_path / "renamed.toml"
    renamed.write_text(f'source = "{real}"\n[targets.nas]\nurl = "{target}"\n')
    with held_as_by_an_older_mirror(old):
        for args in (("run", "-c", str(cfg), "--once"), ("run", "-c", str(renamed), "--once")):
            refused = run(*args, state=state)
            assert_one_line_error(refused, 2, "already being mirrored by another mirror process", old.name)
        assert files(target) == {"a.pdf": b"a", "b.pdf": b"b"}
        assert list((state / "targets").glob("*.sqlite")) == [old]
        shown = run("status", "-c", str(cfg), state=state)
        assert "(running, " in shown.stdout and "files:   2 " in shown.stdout, shown.stdout
    again = run("run", "-c", str(cfg), "--once", state=state)
    assert again.returncode == 0 and "1 deleted" in again.stdout, again.stdout + again.stderr
    assert files(target) == {"a.pdf": b"a", "c.pdf": b"c"}
    assert not old.exists() and not Path(f"{old}.lock").exists()


def test_a_source_switched_elsewhere_and_back_has_its_target_listed_again(tmp_path: Path, state: Path) -> None:
    """The config's source pointed at another folder for one run, then back: that run's
    index replaced inv.pdf on the target, and the first index, unchanged, took its row for
    the truth: 0 sent, exit 0, status in sync, and the other folder's invoice stayed
    under this one's name. A target another index wrote to since is listed, and the copy
    it finds changed is kept in the trash and sent again; also after a run that ended
    before its pass (the source not there), which must not take the word with it."""
    first, other, target = tmp_path / "a", tmp_path / "b", tmp_path / "dst"
    first.mkdir()
    other.mkdir()
    (first / "inv.pdf").write_bytes(b"invoice A")
    (other / "inv.pdf").write_bytes(b"another invoice")
    cfg = tmp_path / "mirror.toml"
    for source in (first, other):
        cfg.write_text(f'source = "{source}"\n[targets.usb]\nurl = "{target}"\n')
        result = run("run", "-c", str(cfg), "--once", state=state)
        assert result.returncode == 0, result.stdout + result.stderr
    cfg.write_text(f'source = "{first}"\n[targets.usb]\nurl = "{target}"\n')
    first.rename(tmp_path / "away")
    missing = run("run", "-c", str(cfg), "--once", state=state)
    assert missing.returncode == 1 and "is missing" in missing.stderr, missing.stdout + missing.stderr
    (tmp_path / "away").rename(first)
    result = run("run", "-c", str(cfg), "--once", state=state)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (target / "inv.pdf").read_bytes() == b"invoice A"
    assert "kept in .mirror-trash/" in result.stderr, result.stderr
    again = run("run", "-c", str(cfg), "--once", state=state)
    assert "0 sent" in again.stdout and "trash" not in again.stderr, again.stdout + again.stderr


def test_a_failed_file_that_left_the_source_leaves_no_failure_behind(tmp_path: Path, state: Path) -> None:
    """x.pdf failed (a folder of its name on the target), then was deleted from the source:
    every later run said 0 failed, yet status showed its failure and exit 1 for good, and
    'last complete sync: never' (a monitor's alert on the sync's age fired for ever)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (dst / "x.pdf").mkdir(parents=True)
    (dst / "x.pdf" / "not mine").write_bytes(b"someone else's")
    (src / "a.pdf").write_bytes(b"a")
    (src / "x.pdf").write_bytes(b"x")
    first = run("run", str(src), str(dst), "--once", state=state)
    assert first.returncode == 1
    why = "the target holds a folder 'x.pdf' with files mirror did not put there ('x.pdf/not mine'); move or"
    assert f"failed: x.pdf: {why}" in first.stderr, first.stderr
    assert files(dst) == {"a.pdf": b"a", "x.pdf/not mine": b"someone else's"}
    (src / "x.pdf").unlink()
    assert run("run", str(src), str(dst), "--once", state=state).returncode == 0
    shown = run("status", str(src), str(dst), state=state)
    assert shown.returncode == 0 and "failed:" not in shown.stdout, shown.stdout
    assert "sync: never" not in shown.stdout


def test_a_dated_copy_of_a_file_edited_then_renamed_keeps_its_year(tmp_path: Path, state: Path) -> None:
    """by-year: the date is the one a file was first mirrored with, so a 2024 invoice
    corrected in 2026 stays in 2024/. Filed into paid/ afterwards, it was dated anew and
    moved to 2026/paid/."""
    src, target = tmp_path / "export", tmp_path / "backup"
    (src / "open").mkdir(parents=True)
    (src / "paid").mkdir()
    invoice = src / "open" / "inv-17.pdf"
    invoice.write_bytes(b"invoice 2024-17")
    june_2024 = dt.datetime(2024, 6, 1, 12).timestamp()
    os.utime(invoice, (june_2024, june_2024))
    assert run("run", str(src), str(target), "--layout", "by-year", "--once", state=state).returncode == 0
    invoice.write_bytes(b"invoice 2024-17, corrected")
    assert run("run", str(src), str(target), "--layout", "by-year", "--once", state=state).returncode == 0
    invoice.rename(src / "paid" / "inv-17.pdf")
    result = run("run", str(src), str(target), "--layout", "by-year", "--once", state=state)
    assert result.returncode == 0, result.stderr
    assert "1 moved" in result.stdout, result.stdout
    assert files(target) == {"2024/paid/inv-17.pdf": b"invoice 2024-17, corrected"}


def test_a_flat_copy_renamed_in_the_source_keeps_its_name_from_the_file_refused_it(
    tmp_path: Path, state: Path
) -> None:
    """flat: a/x.pdf holds x.pdf, b/x.pdf is refused it. Moving a/x.pdf to c/x.pdf gave the
    name to b/x.pdf, which sorts first: invoice A's only copy was overwritten, and c/x.pdf
    was refused as taken."""
    src, target = tmp_path / "export", tmp_path / "backup"
    for folder in ("a", "b", "c"):
        (src / folder).mkdir(parents=True)
    (src / "a" / "x.pdf").write_bytes(b"invoice A")
    (src / "b" / "x.pdf").write_bytes(b"invoice B, other")
    assert run("run", str(src), str(target), "--layout", "flat", "--once", state=state).returncode == 1
    (src / "a" / "x.pdf").rename(src / "c" / "x.pdf")
    result = run("run", str(src), str(target), "--layout", "flat", "--once", state=state)
    assert result.returncode == 1
    assert "b/x.pdf: 'x.pdf' on the target is already taken by 'c/x.pdf'" in result.stderr, result.stderr
    assert files(target) == {"x.pdf": b"invoice A"}


def test_a_fifo_or_link_in_a_folder_the_patterns_leave_out_is_not_told(tmp_path: Path, state: Path) -> None:
    """Each run told 'skipped cache/fifo: a FIFO' and 'skipped cache/link: a symbolic
    link' of an excluded folder, as of a folder mirrored."""
    src = tmp_path / "export"
    (src / "cache").mkdir(parents=True)
    (src / "inv.pdf").write_bytes(b"invoice")
    os.mkfifo(src / "cache" / "fifo")
    (src / "cache" / "link").symlink_to(src / "inv.pdf")
    os.mkfifo(src / "pipe")
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'source = "{src}"\n[targets.usb]\nurl = "{tmp_path / "usb"}"\nexclude = ["cache/"]\n')
    result = run("run", "-c", str(cfg), "--once", "-v", state=state)
    assert result.returncode == 0, result.stderr
    told = result.stdout + result.stderr
    assert "cache/fifo" not in told and "cache/link" not in told, told
    assert "skipped pipe: a FIFO" in told, told


def test_someone_s_newer_file_of_the_same_size_where_a_new_invoice_goes_is_kept_in_the_trash(
    tmp_path: Path, state: Path
) -> None:
    """A pass without a listing asks the target about a new file's path, and took a file
    of the same size there for mirror's own copy however much newer it was: an old invoice
    put back into the export overwrote someone's file on the target without a trace."""
    src, target = tmp_path / "export", tmp_path / "backup"
    src.mkdir()
    (src / "first.pdf").write_bytes(b"first")
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    (target / "inv.pdf").write_bytes(b"someone BBB")
    (src / "inv.pdf").write_bytes(b"invoice AAA")
    last_year = time.time() - 400 * 86400
    os.utime(src / "inv.pdf", (last_year, last_year))
    result = run("run", str(src), str(target), "--once", state=state)
    assert result.returncode == 0, result.stderr
    assert "inv.pdf on the target is not mirror's" in result.stderr
    trash = f".mirror-trash/{dt.date.today().isoformat()}"
    assert files(target) == {"first.pdf": b"first", "inv.pdf": b"invoice AAA", f"{trash}/inv.pdf": b"someone BBB"}


@pytest.mark.parametrize("listing", [[], ["--rescan"]], ids=["asked", "listed"])
def test_someone_s_newer_file_of_the_same_size_where_a_new_layout_moves_a_copy_is_kept_in_the_trash(
    tmp_path: Path, state: Path, listing: list[str]
) -> None:
    """A move to the path a new layout gives took a file of the same size there for the
    copy's own, however much newer: switching by-year to tree moved 2024/inv.pdf over
    someone's inv.pdf, and verify then said identical."""
    src, target = tmp_path / "export", tmp_path / "backup"
    src.mkdir()
    (src / "inv.pdf").write_bytes(b"invoice AAA")
    june_2024 = dt.datetime(2024, 6, 1, 12).timestamp()
    os.utime(src / "inv.pdf", (june_2024, june_2024))
    assert run("run", str(src), str(target), "--layout", "by-year", "--once", state=state).returncode == 0
    (target / "inv.pdf").write_bytes(b"someone BBB")
    result = run("run", str(src), str(target), "--layout", "tree", "--once", *listing, state=state)
    assert result.returncode == 0, result.stderr
    assert "inv.pdf on the target is not mirror's" in result.stderr
    trash = f".mirror-trash/{dt.date.today().isoformat()}"
    assert files(target) == {"inv.pdf": b"invoice AAA", f"{trash}/inv.pdf": b"someone BBB"}


def test_a_file_kept_by_delete_keep_goes_to_the_trash_when_a_new_one_takes_its_name(
    tmp_path: Path, state: Path
) -> None:
    """delete = keep kept the copy of an invoice gone from the export; a new invoice of
    that number, sent later, replaced the only copy left of the old one."""
    src, target = tmp_path / "export", tmp_path / "backup"
    src.mkdir()
    (src / "inv7.pdf").write_bytes(b"invoice 7 of 2025")
    (src / "inv8.pdf").write_bytes(b"invoice 8")
    cfg = tmp_path / "mirror.toml"
    cfg.write_text(f'source = "{src}"\n[targets.nas]\nurl = "{target}"\ndelete = "keep"\n')
    assert run("run", "-c", str(cfg), "--once", state=state).returncode == 0
    (src / "inv7.pdf").unlink()
    assert run("run", "-c", str(cfg), "--once", state=state).returncode == 0
    (src / "inv7.pdf").write_bytes(b"invoice 7 of 2026, numbering restarted")
    trash = f".mirror-trash/{dt.date.today().isoformat()}"
    preview = run("run", "-c", str(cfg), "--once", "--dry-run", state=state)
    assert f"set aside    inv7.pdf -> {trash}/inv7.pdf  (not mirror's; inv7.pdf takes its place)" in preview.stdout
    result = run("run", "-c", str(cfg), "--once", state=state)
    assert result.returncode == 0, result.stderr
    assert "inv7.pdf on the target is not mirror's" in result.stderr
    assert files(target) == {
        "inv7.pdf": b"invoice 7 of 2026, numbering restarted",
        "inv8.pdf": b"invoice 8",
        f"{trash}/inv7.pdf": b"invoice 7 of 2025",
    }
    # over 100 new files at once: one listing answers for them all
    (src / "inv8.pdf").unlink()
    assert run("run", "-c", str(cfg), "--once", state=state).returncode == 0
    for i in range(8, 130):
        (src / f"inv{i}.pdf").write_bytes(b"invoice %d of 2026" % i)
    many = run("run", "-c", str(cfg), "--once", state=state)
    assert many.returncode == 0, many.stderr
    assert files(target)[f"{trash}/inv8.pdf"] == b"invoice 8"
    assert files(target)["inv8.pdf"] == b"invoice 8 of 2026"
    assert len([p for p in files(target) if not p.startswith(".mirror-trash/")]) == 123


@pytest.mark.parametrize("delete", ["keep", "trash"])
def test_a_kept_copy_goes_to_the_trash_when_a_new_file_takes_its_name_in_the_same_run(
    delete: str, tmp_path: Path, state: Path
) -> None:
    """flat layout: 2025/inv-001.pdf deleted and 2026/inv-001.pdf written while the target
    was down (one cron run) overwrote the copy of the 2025 invoice that keep or trash
    promised to keep: '1 sent, 0 deleted', exit 0, and that invoice gone everywhere."""
    src, target = tmp_path / "export", tmp_path / "usb"
    (src / "2025").mkdir(parents=True)
    (src / "2025/inv-001.pdf").write_bytes(b"invoice 2025 #001, customer A")
    args = ("run", str(src), str(target), "--layout", "flat", "--delete", delete, "--once")
    assert run(*args, state=state).returncode == 0
    (src / "2025/inv-001.pdf").unlink()
    (src / "2026").mkdir()
    (src / "2026/inv-001.pdf").write_bytes(b"invoice 2026 #001, customer B")
    result = run(*args, state=state)
    assert result.returncode == 0, result.stderr
    trash = f".mirror-trash/{dt.date.today().isoformat()}"
    assert "2026/inv-001.pdf: the copy there is of '2025/inv-001.pdf', gone from the source" in result.stderr
    assert files(target) == {
        "inv-001.pdf": b"invoice 2026 #001, customer B",
        f"{trash}/inv-001.pdf": b"invoice 2025 #001, customer A",
    }


def test_a_file_kept_by_delete_keep_and_turned_into_a_folder_does_not_block_the_folder(
    tmp_path: Path, state: Path
) -> None:
    """delete = keep: 'statements' kept after its source went, then made a folder by the
    program: every pass failed, '--rescan' too, 'statements on the target is a file where
    a folder is needed', and the folder's invoices never reached the target."""
    src, target = tmp_path / "src", tmp_path / "usb"
    src.mkdir()
    (src / "statements").write_bytes(b"statements 2025")
    args = ("run", str(src), str(target), "--delete", "keep", "--once")
    assert run(*args, state=state).returncode == 0
    (src / "statements").unlink()
    assert run(*args, state=state).returncode == 0
    (src / "statements").mkdir()
    (src / "statements/2026-01.pdf").write_bytes(b"jan")
    failed = run(*args, state=state)
    assert failed.returncode == 1 and "a run with --rescan moves it into .mirror-trash/" in failed.stderr
    rescanned = run(*args, "--rescan", state=state)
    assert rescanned.returncode == 0, rescanned.stderr
    assert "statements on the target is not mirror's" in rescanned.stderr
    trash = f".mirror-trash/{dt.date.today().isoformat()}"
    assert files(target) == {"statements/2026-01.pdf": b"jan", f"{trash}/statements": b"statements 2025"}
    shown = run("status", str(src), str(target), state=state)
    assert shown.returncode == 0 and "failed:" not in shown.stdout, shown.stdout


def left_by_an_older_mirror(db: Path, meta: dict[str, str], keep_files: bool = True) -> None:
    """``db`` made an index as a mirror from before the incomplete mark (5da931e) left it:
    its meta just ``meta``, its format unmarked, its files without the inode generation."""
    with sqlite3.connect(db) as index:
        if "gen" in {column[1] for column in index.execute("PRAGMA table_info(files)")}:
            index.execute("ALTER TABLE files DROP COLUMN gen")
        index.execute("DELETE FROM meta")
        index.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        if not keep_files:
            index.execute("DELETE FROM files")
        index.execute("PRAGMA user_version = 0")
    index.close()


def test_status_of_an_older_mirror_stopped_before_its_first_sync_is_no_all_clear(
    tmp_path: Path, state: Path
) -> None:
    """An older mirror killed during its first copy (no incomplete mark then), or whose
    one-off run never reached its target: status said 'last complete sync: never' and
    exit 0, where the same under this mirror exits 1."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"a")
    assert run("run", str(src), str(dst), "--once", state=state).returncode == 0
    (db,) = (state / "targets").glob("*.sqlite")
    told = {"target": "nas", "url": str(dst), "source": str(src), "started": str(time.time())}

    left_by_an_older_mirror(db, {**told, "clean_shutdown": "0", "state": "syncing", "pending": "600"})
    killed = run("status", state=state)
    assert killed.returncode == 1, killed.stdout
    assert "(not running, ended without stopping cleanly)" in killed.stdout and "sync: never\n" in killed.stdout
    assert "  incomplete: the last run ended before its pass finished; mirror run carries on" in killed.stdout
    assert json.loads(run("status", "--json", state=state).stdout)[0]["incomplete"] is True

    # killed in a later pass: its last complete sync is no longer the copy's state
    synced_once = {"last_complete_sync": told["started"]}
    left_by_an_older_mirror(db, {**told, **synced_once, "clean_shutdown": "0", "state": "syncing"})
    later = run("status", state=state)
    assert later.returncode == 1, later.stdout
    assert "  incomplete: the last run ended before its pass" in later.stdout, later.stdout

    left_by_an_older_mirror(db, {**told, "clean_shutdown": "1", "state": "stopped"}, keep_files=False)
    unreached = run("status", state=state)
    assert unreached.returncode == 1, unreached.stdout
    assert (
        "  never in sync: no pass to this target has ended without errors yet; run mirror run, "
        f"or if it is not a target of yours, remove its index: rm {db}\n" in unreached.stdout
    ), unreached.stdout

    assert run("run", str(src), str(dst), "--once", state=state).returncode == 0
    synced = run("status", state=state)
    assert synced.returncode == 0 and "incomplete" not in synced.stdout and "never" not in synced.stdout


def test_status_flags_a_last_sync_recorded_while_the_clock_was_ahead(tmp_path: Path, state: Path) -> None:
    """A run with the clock a year ahead, then the clock put right: status showed the sync
    a year in the future, exit 0, and would have called it recent for that year."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"a")
    assert run("run", str(src), str(dst), "--once", state=state).returncode == 0
    (db,) = (state / "targets").glob("*.sqlite")
    with sqlite3.connect(db) as index:  # what the run recorded, had the clock been a year ahead
        index.execute("UPDATE meta SET value = value + 365 * 86400 WHERE key IN ('last_complete_sync', 'started')")
    index.close()
    shown = run("status", state=state)
    assert shown.returncode == 1, shown.stdout
    assert re.search(r"last complete sync: \S+ \S+ \S+  IN THE FUTURE\n", shown.stdout), shown.stdout
    assert "  clock: it was ahead when mirror recorded this" in shown.stdout, shown.stdout
    data = json.loads(run("status", "--json", state=state).stdout)
    assert data[0]["stale"] is True and data[0]["clock_ahead"] is True

    assert run("run", str(src), str(dst), "--once", state=state).returncode == 0
    again = run("status", state=state)
    assert again.returncode == 0 and "FUTURE" not in again.stdout and "clock" not in again.stdout, again.stdout


def test_status_of_a_target_left_behind_says_how_to_drop_its_index(tmp_path: Path, state: Path) -> None:
    """Moved to a new target, the old one's index stayed: bare status flagged it OLDER THAN
    EXPECTED and exited 1 for good, without the way out the never-synced case names."""
    src, old, new = tmp_path / "src", tmp_path / "old", tmp_path / "new"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"a")
    for dst in (old, new):
        assert run("run", str(src), str(dst), "--once", state=state).returncode == 0
    urls = {}
    for f in (state / "targets").glob("*.sqlite"):
        with contextlib.closing(sqlite3.connect(f)) as index:
            urls[index.execute("SELECT value FROM meta WHERE key = 'url'").fetchone()[0]] = f
    db = urls[str(old)]
    with sqlite3.connect(db) as index:  # three days later
        stamps = "('last_complete_sync', 'heartbeat', 'last_listing')"
        index.execute(f"UPDATE meta SET value = value - 3 * 86400 WHERE key IN {stamps}")
    index.close()
    shown = run("status", state=state)
    assert shown.returncode == 1, shown.stdout
    hint = "  not running: mirror run brings it up to date, or if it is no longer a target of yours, remove its"
    assert shown.stdout.count(hint) == 1 and f"{hint} index: rm {db}\n" in shown.stdout, shown.stdout
    db.unlink()
    assert run("status", state=state).returncode == 0


def test_a_file_a_new_exclude_leaves_out_is_removed_as_excluded(tmp_path: Path, state: Path) -> None:
    """After exclude = ["*.log"] was added, the dry-run said 'delete b.log (removed from the
    source)', and so did the log, though b.log was still in the source."""
    src, dst, cfg = tmp_path / "src", tmp_path / "dst", tmp_path / "m.toml"
    src.mkdir()
    for name in ("a.pdf", "b.log", "gone.pdf"):
        (src / name).write_bytes(name.encode())
    cfg.write_text(f'source = "{src}"\n[targets.usb]\nurl = "{dst}"\n')
    assert run("run", "-c", str(cfg), "--once", state=state).returncode == 0
    cfg.write_text(f'source = "{src}"\n[targets.usb]\nurl = "{dst}"\nexclude = ["*.log"]\n')
    (src / "gone.pdf").unlink()

    dry = run("run", "-c", str(cfg), "--dry-run", state=state)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "  delete       b.log  (excluded by the config)\n" in dry.stdout, dry.stdout
    assert "  delete       gone.pdf  (removed from the source)\n" in dry.stdout, dry.stdout
    done = run("run", "-c", str(cfg), "--once", "-v", state=state)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[usb] deleted b.log (excluded by the config)" in done.stderr, done.stderr
    assert "[usb] deleted gone.pdf (removed from the source)" in done.stderr, done.stderr
    assert files(dst) == {"a.pdf": b"a.pdf"}


@pytest.mark.parametrize(
    ("flags", "key", "refused"),
    [
        (("--delete", "keep"), "delete", "delete = 'keep'"),
        (("--layout", "by-year"), "layout", "layout = 'by-year'"),
    ],
)
def test_a_config_that_takes_over_a_target_leaving_out_its_policy_or_layout_is_refused(
    tmp_path: Path, state: Path, flags: tuple[str, ...], key: str, refused: str
) -> None:
    """`mirror run SRC DST --delete keep`, then a config for that place without a delete
    key: the config took the index over with the default policy, and deleted for good the
    next invoice removed from the source (exit 0). A --layout by-year target was moved
    back to tree. Refused now, naming the key to set; set, it is taken over."""
    src, dst, cfg = tmp_path / "export", tmp_path / "backup", tmp_path / "mirror.toml"
    src.mkdir()
    for name in ("a.pdf", "b.pdf"):
        (src / name).write_bytes(name.encode())
        os.utime(src / name, (time.time() - 3600,) * 2)
    assert run("run", str(src), str(dst), *flags, "--once", state=state).returncode == 0
    before = files(dst)
    cfg.write_text(f'source = "{src}"\n[targets.usb]\nurl = "{dst}"\n')
    (src / "a.pdf").unlink()
    result = run("run", "-c", str(cfg), "--once", state=state)
    assert_one_line_error(result, 2, refused, f"set {refused} in targets.usb")
    assert files(dst) == before
    # status said "stopped", in sync, exit 0, of a config mirror run refuses
    shown = run("status", "-c", str(cfg), state=state)
    assert shown.returncode == 1 and "mirror run refuses this config: target 'usb'" in shown.stdout, shown.stdout
    cfg.write_text(f'source = "{src}"\n[targets.usb]\nurl = "{dst}"\n{key} = "{flags[1]}"\n')
    taken = run("run", "-c", str(cfg), "--once", state=state)
    assert taken.returncode == 0 and "taking over the index of" in taken.stderr, taken.stderr


def test_a_target_renamed_or_spelled_anew_keeps_its_index(tmp_path: Path, state: Path) -> None:
    """A new name for a target (or file://, a trailing slash, a config naming what
    'mirror run SOURCE TARGET' mirrored) started a new index: files gone from the
    source were never deleted from the target, and status said never run."""
    src, dst = tmp_path / "export", tmp_path / "backup"
    src.mkdir()
    for name in ("a.pdf", "b.pdf", "c.pdf"):
        (src / name).write_bytes(name.encode())
    assert run("run", str(src), str(dst), "--once", state=state).returncode == 0
    cfg = tmp_path / "mirror.toml"
    for name, url in (("usb", f"file://{dst}/"), ("backup", f"{dst}")):
        cfg.write_text(f'source = "{src}"\n[targets.{name}]\nurl = "{url}"\n')
        (src / "b.pdf" if name == "usb" else src / "c.pdf").unlink()
        result = run("run", "-c", str(cfg), "--once", state=state)
        assert result.returncode == 0, result.stderr
        assert "taking over the index of" in result.stderr, result.stderr
    assert files(dst) == {"a.pdf": b"a.pdf"}
    shown = run("status", "-c", str(cfg), state=state)
    assert shown.returncode == 0 and "files:   1 (5 B)" in shown.stdout, shown.stdout
    assert len(list((state / "targets").glob("*.sqlite"))) == 1


def test_a_layout_left_out_is_not_taken_for_a_layout_change(tmp_path: Path, state: Path) -> None:
    """`mirror run SOURCE TARGET` without the --layout by-year it had been run with moved
    every file on the target back to the tree layout (a cron line typed anew)."""
    source, target = tmp_path / "export", tmp_path / "backup"
    source.mkdir()
    (source / "inv1.pdf").write_bytes(b"one")
    assert run("run", str(source), str(target), "--once", "--layout", "by-year", state=state).returncode == 0
    placed = files(target)
    assert list(placed) == [f"{dt.date.today().year}/inv1.pdf"]
    for flags in (["--once"], ["--once", "--dry-run"]):
        refused = run("run", str(source), str(target), *flags, state=state)
        assert_one_line_error(
            refused, 2, f"{target} was last mirrored with --layout by-year; give --layout by-year to go on"
        )
        assert files(target) == placed
    moved = run("run", str(source), str(target), "--once", "--layout", "tree", state=state)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert files(target) == {"inv1.pdf": b"one"}


def test_patterns_that_take_in_no_file_of_the_source_make_the_run_exit_1(tmp_path: Path, state: Path) -> None:
    """include = ["*.pdf"] where the scanner writes .PDF: a new target got nothing, and
    run, status and verify all said in sync (exit 0)."""
    source, target = tmp_path / "export", tmp_path / "backup"
    source.mkdir()
    for name in ("SCAN1.PDF", "SCAN2.PDF"):
        (source / name).write_bytes(name.encode())
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'source = "{source}"\n[targets.usb]\nurl = "{target}"\ninclude = ["*.pdf"]\n')
    done = run("run", "-c", str(cfg), "--once", state=state)
    assert done.returncode == 1, done.stdout + done.stderr
    told = "[usb] its include/exclude patterns take in none of the 2 files in the source"
    assert told in done.stderr, done.stderr
    assert "usb: its include/exclude patterns take in none of the source's files" in done.stderr, done.stderr
    cfg.write_text(f'source = "{source}"\n[targets.usb]\nurl = "{target}"\ninclude = ["*.pdf", "*.PDF"]\n')
    fixed = run("run", "-c", str(cfg), "--once", state=state)
    assert fixed.returncode == 0 and "take in none" not in fixed.stderr, fixed.stdout + fixed.stderr


@pytest.mark.parametrize("swapped", ["folder", "file"])
def test_a_folder_or_file_swapped_for_a_link_has_its_copies_deleted_as_removed_not_excluded(
    tmp_path: Path, state: Path, swapped: str
) -> None:
    """The log said 'deleted d/a.pdf (excluded by the config)' with no config at all:
    the file was still reached through the link, which mirror does not follow, or was
    the link itself."""
    source, target = tmp_path / "export", tmp_path / "backup"
    (source / "d").mkdir(parents=True)
    (source / "d" / "a.pdf").write_bytes(b"a")
    (source / "keep.pdf").write_bytes(b"keep")
    assert run("run", str(source), str(target), "--once", state=state).returncode == 0
    linked = source / "d" if swapped == "folder" else source / "d" / "a.pdf"
    linked.rename(tmp_path / "elsewhere")
    linked.symlink_to(tmp_path / "elsewhere")
    done = run("run", "-v", str(source), str(target), "--once", state=state)
    assert "deleted d/a.pdf (removed from the source)" in done.stderr, done.stderr
    assert files(target) == {"keep.pdf": b"keep"}


def test_a_state_folder_inside_the_target_is_refused(tmp_path: Path) -> None:
    """Accepted, the index lay on the backup disk: with the disk not mounted, the target
    looked new and was filled anew in the empty folder below the mount point."""
    source, target = tmp_path / "export", tmp_path / "disk" / "backup"
    source.mkdir()
    (source / "a.pdf").write_bytes(b"a")
    state = target / ".mirror-state"
    refused = run("run", str(source), str(target), "--once", state=state)
    assert_one_line_error(refused, 2, f"the state folder {state} lies inside the folder of target 'default'")
    assert not (target / "a.pdf").exists()


def test_a_target_inside_the_state_folder_is_refused(tmp_path: Path) -> None:
    """Accepted, the backup lay among mirror's indexes: a state folder removed to start
    afresh took it along."""
    source, state = tmp_path / "export", tmp_path / "state"
    source.mkdir()
    (source / "a.pdf").write_bytes(b"a")
    target = state / "backup"
    refused = run("run", str(source), str(target), "--once", state=state)
    assert_one_line_error(refused, 2, f"target 'default' ({target}) lies inside the state folder {state}")
    assert not target.exists()


def test_a_delete_policy_left_out_is_not_taken_for_a_change(tmp_path: Path, state: Path) -> None:
    """`mirror run SOURCE TARGET` without the --delete trash it had been run with deleted
    the next file removed from the source for good, as --delete mirror does."""
    source, target = tmp_path / "export", tmp_path / "backup"
    source.mkdir()
    for name in ("inv1.pdf", "inv2.pdf", "stays.pdf"):
        (source / name).write_bytes(name.encode())
    assert run("run", str(source), str(target), "--once", "--delete", "trash", state=state).returncode == 0
    (source / "inv1.pdf").unlink()
    refused = run("run", str(source), str(target), "--once", state=state)
    assert_one_line_error(
        refused, 2, f"{target} was last mirrored with --delete trash; give --delete trash to go on"
    )
    assert files(target) == {"inv1.pdf": b"inv1.pdf", "inv2.pdf": b"inv2.pdf", "stays.pdf": b"stays.pdf"}
    kept = run("run", str(source), str(target), "--once", "--delete", "trash", state=state)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert [p.name for p in target.glob(".mirror-trash/*/*")] == ["inv1.pdf"]
    (source / "inv2.pdf").unlink()
    changed = run("run", str(source), str(target), "--once", "--delete", "mirror", state=state)
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert not (target / "inv2.pdf").exists()


def test_a_file_that_keeps_changing_through_a_once_run_makes_it_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journal written all through the run was 'left for the next run', and the run
    still exited 0, which says the target holds the source."""
    src, target = tmp_path / "export", tmp_path / "backup"
    src.mkdir()
    (src / "invoice.pdf").write_bytes(b"invoice")
    os.utime(src / "invoice.pdf", (1_700_000_000, 1_700_000_000))  # settled long ago
    monkeypatch.setattr(engine, "SETTLE_WAIT", 1.5)
    with written_on(src / "journal.csv", 0.1):
        time.sleep(0.3)
        result = CliRunner().invoke(
            main, ["run", str(src), str(target), "--once"], env={"MIRROR_STATE_DIR": str(tmp_path / "state")}
        )
    assert result.exit_code == 1, result.output
    assert "1 source file(s) kept changing and were left for the next run" in result.stderr, result.stderr
    assert files(target) == {"invoice.pdf": b"invoice"}
