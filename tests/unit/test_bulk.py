"""The bulk lane: how a watch plan is split, which later changes and actions must wait
for what the lane works on, and what a run that ends as mirror stops tells."""

from __future__ import annotations

import datetime as dt
import logging
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirror.bulk import NONE, BulkLane, Busy, clashing, related, split
from mirror.errors import StateError
from mirror.execute import RunStats
from mirror.paths import path_key
from mirror.plan import Delete, Move, Plan, Put, Trash
from mirror.scan import LocalEntry

DAY = dt.date(2024, 5, 1)
KEY = path_key(True)
LARGE = 1000

names = st.sampled_from(["a", "b", "c", "d/e", "d/f", "g/h/i"])


def put(src: str, size: int, ino: int = 0) -> Put:
    return Put(src, src, LocalEntry(src, size, 1, ino), DAY, "new")


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    srcs = draw(st.lists(names, unique=True, max_size=6))
    puts = tuple(put(s, draw(st.integers(0, 2 * LARGE))) for s in srcs)
    gone = draw(st.lists(st.sampled_from(["x", "y/z", "w"]), unique=True, max_size=3))
    return Plan(transfers=puts, removals=tuple(Delete(g, g, "gone") for g in gone))


@given(plans())
def test_split_sends_large_puts_and_every_removal_to_the_lane_and_keeps_the_rest(actions: Plan) -> None:
    now, later = split(actions, LARGE)
    large = [t for t in actions.transfers if t.entry.size >= LARGE]
    if not large:
        assert later is None and now == actions
        return
    assert later is not None
    assert list(later.transfers) == large
    assert later.removals == actions.removals and now.removals == ()
    assert [t for t in actions.transfers if t not in large] == list(now.transfers)


def test_a_change_waits_for_the_same_path_a_folder_around_it_a_path_below_it_or_the_file_renamed() -> None:
    busy = Busy()
    busy.add(Plan(transfers=(put("scans/big.pdf", LARGE, ino=7),)), KEY)
    assert busy.holds("scans/big.pdf", NONE)  # deleted, edited, replaced
    assert busy.holds("scans", NONE)  # its folder deleted or moved
    assert busy.holds("scans/big.pdf/x", NONE)  # a folder now takes its name
    assert busy.holds("archive/big-2024.pdf", (7, LARGE, 1))  # itself, renamed
    assert not busy.holds("scans/other.pdf", (8, LARGE, 1))
    # a new file given its inode once it was deleted (ext4 reuses them at once)
    assert not busy.holds("invoice.pdf", (7, 40_000, 2))
    assert not busy.holds("scans2", NONE) and not busy.holds("scan", NONE)


def test_removals_sent_to_the_lane_make_their_paths_wait_too() -> None:
    busy = Busy()
    busy.add(Plan(transfers=(put("big.pdf", LARGE),), removals=(Delete("old.pdf", "old.pdf", "gone"),)), KEY)
    assert busy.holds("old.pdf", NONE) and busy.meets("old.pdf")


def test_an_action_that_writes_or_removes_where_the_lane_works_waits() -> None:
    busy = Busy()
    busy.add(Plan(transfers=(Put("a/x.pdf", "x.pdf", LocalEntry("a/x.pdf", LARGE, 1, 1), DAY, "new"),)), KEY)
    entry = LocalEntry("b/x.pdf", 5, 1, 2)
    same_target_path = Plan(transfers=(Put("b/x.pdf", "x.pdf", entry, DAY, "new"), put("c.pdf", 5)))
    assert clashing(same_target_path, busy, KEY) == {"b/x.pdf"}
    onto_it = Plan(moves=(Move("b/y.pdf", "y.pdf", "x.pdf/y.pdf", entry, DAY, "moved", old_src="a/y.pdf"),))
    assert clashing(onto_it, busy, KEY) == {"b/y.pdf", "a/y.pdf"}
    trashed = Plan(removals=(Trash("q", "q.pdf", "x.pdf", "gone"),))
    assert clashing(trashed, busy, KEY) == {"q"}
    assert clashing(Plan(transfers=(put("c.pdf", 5),)), busy, KEY) == set()


def test_a_target_that_ignores_case_compares_its_paths_so() -> None:
    fold = path_key(False)
    busy = Busy()
    busy.add(Plan(transfers=(Put("a/X.pdf", "X.pdf", LocalEntry("a/X.pdf", LARGE, 1, 1), DAY, "new"),)), fold)
    other = Plan(transfers=(Put("b/x.pdf", "x.pdf", LocalEntry("b/x.pdf", 5, 1, 2), DAY, "new"),))
    assert clashing(other, busy, fold) == {"b/x.pdf"}


@given(names, names)
def test_related_is_symmetric_and_means_one_path_is_or_holds_the_other(a: str, b: str) -> None:
    assert related(a, b) == related(b, a)
    assert related(a, b) == (a == b or a.startswith(b + "/") or b.startswith(a + "/"))


def test_a_lane_run_that_ends_as_mirror_stops_is_no_error(caplog: pytest.LogCaptureFixture) -> None:
    """A stop during a large upload logged 'error [nas] cannot record the bulk lane's run:',
    with no reason, or naming another target's index that the stop was closing."""
    stop = threading.Event()

    def closed(stats: RunStats, started: float) -> None:
        raise StateError("cannot use the index usb.sqlite (Cannot operate on a closed database.)")

    log = logging.LoggerAdapter(logging.getLogger("mirror.test"), {})
    lane = BulkLane(None, stop, str, lambda paths: None, closed, log)  # type: ignore[arg-type]
    stop.set()
    with caplog.at_level(logging.DEBUG):
        lane._after(Plan(), RunStats(), 0.0)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    stop.clear()
    lane._after(Plan(), RunStats(), 0.0)
    assert "cannot record the bulk lane's run" in caplog.text
