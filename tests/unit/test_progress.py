"""How far a pass has got, as a service's log and mirror status tell it."""

from __future__ import annotations

from mirror.progress import LOG_EVERY, PassProgress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_long_pass_logs_how_far_it_has_got_and_the_time_left() -> None:
    clock, lines, written = Clock(), [], []
    progress = PassProgress(10_000, 41_000_000, written.append, lines.append, clock)
    clock.now += 1
    progress.done(64, 262_144)
    assert lines == [] and written == [10_000 - 64]
    clock.now += LOG_EVERY
    progress.done(2436, 9_977_856)
    assert lines == ["2,500 of 10,000 files (25 %), 10.2 MB of 41.0 MB sent; about 93 s left"]
    clock.now += 1
    progress.done(100, 409_600)
    assert len(lines) == 1 and written[-1] == 10_000 - 2600


def test_a_pass_under_a_terminal_s_bar_logs_nothing_but_still_counts_down() -> None:
    clock, written = Clock(), []
    progress = PassProgress(3, 0, written.append, None, clock)
    for _ in range(3):
        clock.now += LOG_EVERY
        progress.done(1, 0)
    assert written == [2, 1, 0]
