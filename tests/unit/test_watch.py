"""The watcher's bookkeeping: which known files an event batch's folder events put in doubt."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirror import scan, watch
from mirror.filters import Filter
from mirror.mounts import folder_identity
from mirror.scan import LocalEntry
from mirror.watch import FEW_FOLDERS, SourceWatcher

#: short names from a small alphabet, so that paths share folders and prefixes ("a" and "ab")
NAMES = st.text(alphabet="ab.", min_size=1, max_size=3).filter(lambda n: n not in (".", ".."))
PATHS = st.lists(NAMES, min_size=1, max_size=4).map("/".join)


@given(
    known=st.sets(PATHS, max_size=40),
    folders=st.sets(PATHS, max_size=8),
    many=st.booleans(),
    data=st.data(),
)
def test_known_files_below_an_event_batch_s_folders_become_pending(
    known: set[str], folders: set[str], many: bool, data: st.DataObject
) -> None:
    # what the batch's scans found: known files still there, and new ones
    found = data.draw(st.sets(st.sampled_from(sorted(known))) if known else st.just(set())) | data.draw(
        st.sets(PATHS, max_size=5)
    )
    if many:  # more folders than FEW_FOLDERS: the other way of looking below them
        folders |= {f"c{i}" for i in range(FEW_FOLDERS + 1)}
    watcher = SourceWatcher(
        Path("/nonexistent"),
        None,
        Filter(),
        0.5,
        False,
        threading.Event(),
        {k: LocalEntry(k, 1, 1) for k in known},
    )
    watcher._look_below, watcher._found = set(folders), set(found)
    watcher._expand_gone()
    # below a folder means below it at a "/" boundary: "ab/x" is not below "a"
    expected = {k for k in known if any(k.startswith(f"{f}/") for f in folders) and k not in found}
    assert set(watcher._pending) == expected
    assert not watcher._look_below and not watcher._found


def test_a_file_that_never_stops_changing_is_named_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A log left in the folder is never sent: watch mode said nothing of it, ever."""
    monkeypatch.setattr(watch, "RESTLESS_AFTER", 0.3)
    log = tmp_path / "app.log"
    log.write_text("start\n")
    watcher = SourceWatcher(tmp_path, None, Filter(), 0.2, False, threading.Event(), {})
    watcher.expect(["app.log"])
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        with log.open("a") as f:
            f.write("line\n")
        assert watcher._settled() == {}
        time.sleep(0.02)
    told = [r.getMessage() for r in caplog.records if "kept changing" in r.getMessage()]
    assert len(told) == 1 and told[0].startswith("app.log has kept changing for")
    assert "belongs in exclude" in told[0]  # the config key that leaves it out
    time.sleep(0.3)
    assert list(watcher._settled()) == ["app.log"]  # once it rests, it goes


def test_a_file_whose_time_is_behind_mirror_s_clock_waits_the_whole_settle(tmp_path: Path) -> None:
    """On a share whose clock is behind, a file's mtime looked older than settle at once:
    it counted as settled after 0.1 s, and a scan went out half-written after each page."""
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(b"page 1")
    behind = time.time_ns() - 60 * 10**9 + 123_456_789  # the share's clock: a minute behind
    os.utime(scan, ns=(behind, behind))
    watcher = SourceWatcher(tmp_path, None, Filter(), 0.6, False, threading.Event(), {})
    watcher.expect(["scan.pdf"])
    assert watcher._settled() == {}
    time.sleep(0.3)
    assert watcher._settled() == {}  # settle (0.6 s) has not passed since mirror saw it
    time.sleep(0.4)
    assert list(watcher._settled()) == ["scan.pdf"]


def test_time_the_watcher_was_held_up_does_not_count_as_quiet(tmp_path: Path) -> None:
    """A machine so loaded that it ran neither mirror nor the program writing a scan for a
    second: the file had not changed when mirror looked again, and a half-written scan
    went out in place of the good copy (CI saw it). Only time mirror was looking counts."""
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(b"page 1")
    watcher = SourceWatcher(tmp_path, None, Filter(), 0.6, False, threading.Event(), {})
    watcher.expect(["scan.pdf"])
    assert watcher._settled() == {}
    time.sleep(0.9)  # held up: no look meanwhile
    assert watcher._settled() == {}, "the time it was held up counted as the file at rest"
    looking = time.monotonic()
    ready: dict[str, LocalEntry | None] = {}
    while not ready and time.monotonic() < looking + 5.0:
        time.sleep(0.1)  # a look every 0.1 s, as the watcher's ticks come
        ready = watcher._settled()
    assert list(ready) == ["scan.pdf"]
    assert time.monotonic() - looking >= 0.6  # settle, counted from when it looked again


def test_a_file_on_a_disk_that_keeps_whole_seconds_waits_until_its_second_is_over(tmp_path: Path) -> None:
    """On a source disk that keeps whole seconds (ext3; FAT keeps 2 s), a same-size
    correction within the second after mirror read the first version left size and time
    as they were: the correction never reached the target, and verify said identical."""
    invoice = tmp_path / "invoice.pdf"
    invoice.write_bytes(b"total 100.00")
    second = time.time_ns() // 10**9 * 10**9  # as such a disk keeps the time of the write
    os.utime(invoice, ns=(second, second))
    watcher = SourceWatcher(tmp_path, None, Filter(), 0.1, False, threading.Event(), {})
    watcher.expect(["invoice.pdf"])
    deadline = time.monotonic() + 5.0
    ready: dict[str, LocalEntry | None] = {}
    while not ready and time.monotonic() < deadline:
        ready = watcher._settled()
        if not ready:
            time.sleep(0.05)
    assert list(ready) == ["invoice.pdf"]
    # only once a write of the same size could no longer keep that time
    assert time.time_ns() >= second + scan.COARSE_NS


def test_a_stop_counts_only_changes_that_were_not_handed_on(tmp_path: Path) -> None:
    """An event that came after its file went out (settle holds it back a moment) made a
    stop warn 'stopped with 1 change(s) not yet sent' of a file the target had."""
    sent, new = tmp_path / "sent.pdf", tmp_path / "new.pdf"
    sent.write_bytes(b"sent")
    watcher = SourceWatcher(tmp_path, None, Filter(), 0.5, False, threading.Event(), {})
    watcher.expect(["sent.pdf"])
    deadline = time.monotonic() + 5.0
    while not watcher._settled() and time.monotonic() < deadline:  # handed on once settled
        time.sleep(0.05)
    assert "sent.pdf" in watcher.known
    watcher.expect(["sent.pdf"])  # a late event of the same file
    assert watcher.unsent() == []
    new.write_bytes(b"new")
    watcher.expect(["new.pdf"])
    assert watcher.unsent() == ["new.pdf"]


def test_a_share_mounted_before_the_watcher_s_first_look_is_rescanned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The scan saw the share's folder unmounted and held it; the share came back before
    the watcher first looked, which took it for the folder scanned: its files waited for
    the hourly rescan."""
    (tmp_path / "scans").mkdir()
    scanned = folder_identity(tmp_path / "scans")
    (tmp_path / "mounted").mkdir()
    (tmp_path / "scans").rename(tmp_path / "was")
    (tmp_path / "mounted").rename(tmp_path / "scans")  # what a mount there shows: another folder
    stop = threading.Event()
    watcher = SourceWatcher(tmp_path, None, Filter(), 0.5, False, stop, {})
    watcher.inner_mounts = {"scans": scanned}
    rescans, told = 0, None
    deadline = time.monotonic() + 10.0
    for batch in watcher.batches():
        rescans += batch.rescan
        if told is None and "scans in the source was mounted" in caplog.text:
            told = rescans
            deadline = time.monotonic() + 2.0  # no scan hands the watcher a new look meanwhile
        if time.monotonic() > deadline or rescans > 5:
            stop.set()
    assert told == 2  # the watcher's first tick, then the share
    # told once, with the rescan of the watcher it starts in its place
    assert caplog.text.count("was mounted or unmounted") == 1 and rescans == 3, caplog.text


def test_a_folder_whose_name_is_not_utf8_leaves_the_watch_be_and_is_seen_once_renamed(tmp_path: Path) -> None:
    """A folder with a Latin-1 name made the watcher poll the whole source, where each
    change of a name in the folder ended the poller too; renamed to UTF-8, it was still
    polled for an hour. Now the folder that holds the name is looked at: the rename is
    seen, and the files of the folder renamed."""
    latin1 = os.path.join(os.fsencode(tmp_path), b"Kunde M\xfcller")
    os.mkdir(latin1)
    with open(os.path.join(latin1, b"inv.pdf"), "wb") as f:
        f.write(b"%PDF")
    stop = threading.Event()
    watcher = SourceWatcher(tmp_path, None, Filter(), 0.3, False, stop, {}, retry_every=3600.0)
    seen: set[str] = set()
    renamed = polled = False
    deadline = time.monotonic() + 10.0
    for batch in watcher.batches():
        polled = polled or watcher.poll
        seen.update(batch.changes)
        if batch.rescan and not renamed:
            renamed = True
            os.rename(latin1, tmp_path / "Kunde Mueller")  # the fix the scan's warning asks for
        if "Kunde Mueller/inv.pdf" in seen or time.monotonic() > deadline:
            break
    stop.set()
    assert not polled, "the whole source polled"
    assert "Kunde Mueller/inv.pdf" in seen, seen
