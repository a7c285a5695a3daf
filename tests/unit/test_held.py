"""Deletions held in watch mode: due a settle after the last file went, and never later
than the longest wait after the first."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirror.held import HeldDeletions


def test_deletions_are_due_once_the_source_stops_losing_files() -> None:
    held = HeldDeletions(settle=2.0, wait_max=60.0)
    assert held.holding(0.0) and held.due_in(0.0) is None
    held.hold(["a.pdf"], now=10.0)
    held.hold(["b.pdf"], now=11.5)  # another went: the wait starts again
    assert held.holding(13.4) and held.due_in(13.4) == pytest.approx(0.1)
    assert not held.holding(13.5) and held.due_in(13.5) == 0.0
    assert held.release() == {"a.pdf", "b.pdf"}
    assert held.holding(13.5) and held.due_in(13.5) is None and held.paths == set()


@given(gaps=st.lists(st.floats(min_value=0.0, max_value=1.99), min_size=1, max_size=200))
def test_files_going_without_a_pause_are_due_at_most_the_longest_wait_after_the_first(gaps: list[float]) -> None:
    held = HeldDeletions(settle=2.0, wait_max=60.0)
    first = last = now = 100.0
    held.hold(["first"], now)
    for i, gap in enumerate(gaps):
        now += gap
        if not held.holding(now):
            break
        held.hold([f"f{i}"], now)
        last = now
    due_at = first + (held.due_in(first) or 0.0)
    assert due_at == pytest.approx(min(last + 2.0, first + 60.0))


def test_a_held_path_a_new_path_needs_gone_is_taken_out() -> None:
    held = HeldDeletions()
    held.hold(["x", "d/in", "other", "xy/z"], now=0.0)
    # x/in needs the file x gone; the file d needs the folder d (of d/in) gone
    assert held.in_the_way({"x/in": 1, "d": 2}) == {"x", "d/in"}
    assert held.paths == {"other", "xy/z"}
    assert held.in_the_way({"new"}) == set()
