"""Alerts on a wall clock that is set back (NTP, a VM resumed), while mirror runs or
between two runs."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from mirror.alerts import KEEPALIVE, Alerts
from mirror.config import Config, TargetConfig, TargetSettings
from mirror.events import Report
from tests.cli import wait_for


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


WEEK = 7 * 86400.0


def notifier(tmp_path: Path) -> tuple[Config, Path]:
    """A config whose on_failure command records each event with its MIRROR_SINCE."""
    calls = tmp_path / "calls.txt"
    settings = TargetSettings(on_failure=f'echo "$MIRROR_EVENT $MIRROR_SINCE" >> "{calls}"', alert_after=60.0)
    target = TargetConfig(name="usb", url="memory://backup", settings=settings)
    return Config(source=tmp_path, targets=(target,), state_dir=tmp_path / "state"), calls


def calls_of(path: Path) -> list[tuple[str, float]]:
    """Each event the command got, with its MIRROR_SINCE as a Unix time."""
    events = [line.split() for line in path.read_text().splitlines()] if path.exists() else []
    return [(event, dt.datetime.fromisoformat(since).timestamp()) for event, since in events]


def cron_run(config: Config, clock: Clock) -> Alerts:
    """The alerts of one failing ``mirror run --once``."""
    alerts = Alerts(config, clock=clock)
    alerts.on_state("usb", "failing", "target unreachable: the target folder is gone")
    alerts.close()
    return alerts


def test_a_failure_begun_while_the_clock_was_ahead_is_alerted_alert_after_the_clock_is_put_right(
    tmp_path: Path,
) -> None:
    """First seen by a cron run with the clock a week ahead (NTP not yet synced), the
    failure kept that time as its start: run after run failed for a week, with no alert."""
    config, calls = notifier(tmp_path)
    clock = Clock()
    right = clock.now
    clock.now += WEEK
    cron_run(config, clock)
    clock.now = right
    alerts = cron_run(config, clock)
    assert calls_of(calls) == []
    assert json.loads(alerts.files["usb"].read_text())["since"] == right, "kept with the time to come"
    clock.now += 61
    cron_run(config, clock)
    assert calls_of(calls) == [("failure", right)]


def test_a_failure_begun_while_the_clock_was_ahead_is_alerted_by_a_running_mirror(tmp_path: Path) -> None:
    """The clock put right while mirror watched: the failure waited for the clock to reach
    its start again, and a recovery named that start, a time to come."""
    config, calls = notifier(tmp_path)
    clock = Clock()
    right = clock.now
    clock.now += WEEK
    alerts = Alerts(config, clock=clock)
    try:
        alerts.on_state("usb", "failing", "target unreachable: the target folder is gone")
        clock.now = right
        alerts.on_state("usb", "failing", "target unreachable: the target folder is gone")
        wait_for(
            lambda: json.loads(alerts.files["usb"].read_text())["since"] == right,
            what="the incident to count from now",
        )
        clock.now += 61
        alerts.on_state("usb", "failing", "target unreachable: the target folder is gone")
        wait_for(lambda: len(calls_of(calls)) == 1, what="the on_failure call")
        clock.now = right - 3600  # set back once more, before the target heals
        alerts.on_report(Report(target="usb", kind="full"))
    finally:
        alerts.close()
    assert calls_of(calls) == [("failure", right), ("recovery", right - 3600)]
