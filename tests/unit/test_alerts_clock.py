"""Alerts on a wall clock that is set back while mirror runs (NTP, a VM resumed)."""

from __future__ import annotations

from pathlib import Path

from mirror.alerts import KEEPALIVE, Alerts
from mirror.config import Config


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_keep_alive_pings_go_on_after_the_clock_is_set_back(tmp_path: Path) -> None:
    """Set back an hour, the pings stopped for an hour and five minutes, while mirroring
    went on: healthchecks.io called the service down."""
    clock = Clock()
    alerts = Alerts(Config(source=tmp_path, targets=()), clock=clock)
    url = "https://hc-ping.com/x"
    assert alerts._ping_due(url, KEEPALIVE)
    clock.now += KEEPALIVE / 2
    assert not alerts._ping_due(url, KEEPALIVE)
    clock.now -= 3600
    assert alerts._ping_due(url, KEEPALIVE), "the next ping waited for the clock to catch up"
    clock.now += KEEPALIVE / 2
    assert not alerts._ping_due(url, KEEPALIVE)
