"""The ``on_failure`` command at work: tried again when it fails, for as long as the
target stays broken, across restarts and cron runs."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from mirror.alerts import Alerts
from mirror.config import Config, TargetConfig, TargetSettings
from mirror.events import Report
from tests.cli import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def notifier(tmp_path: Path, fails: int) -> tuple[Config, Path]:
    """A config whose on_failure command records each call, and fails the first ``fails``
    (a mail relay down in the same outage)."""
    calls = tmp_path / "calls.txt"
    script = tmp_path / "notify.sh"
    script.write_text(
        f'#!/bin/sh\necho "$MIRROR_EVENT" >> "{calls}"\n'
        f'[ "$(wc -l < "{calls}")" -gt {fails} ] || {{ echo relay unreachable >&2; exit 1; }}\n'
    )
    script.chmod(0o755)
    settings = TargetSettings(on_failure=(str(script),), alert_after=0.0)
    target = TargetConfig(name="nas", url="memory://backup", settings=settings)
    return Config(source=tmp_path, targets=(target,), state_dir=tmp_path / "state"), calls


def calls_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_failed_on_failure_command_runs_again_until_it_gets_through(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """It ran once, failed, and never again: the admin heard nothing of the outage, then
    got a recovery for it."""
    caplog.set_level(logging.INFO, logger="mirror")
    config, calls = notifier(tmp_path, fails=2)
    clock = Clock()
    alerts = Alerts(config, clock=clock)
    alerts.on_state("nas", "failing", "cannot connect")
    wait_for(lambda: "trying it again in 60 s" in caplog.text, what="the warning")
    assert calls_of(calls) == ["failure"]
    assert "on_failure command failed: exited with 1 (relay unreachable)" in caplog.text

    clock.now += 59
    alerts.on_state("nas", "failing", "cannot connect")
    time.sleep(0.5)
    assert calls_of(calls) == ["failure"], "tried again before the backoff"
    clock.now += 2
    alerts.on_state("nas", "failing", "cannot connect")
    wait_for(lambda: "trying it again in 2 min" in caplog.text, what="the second warning")
    assert calls_of(calls) == ["failure", "failure"]

    # a restart, or the next cron run: the backoff is kept with the incident
    alerts.close()
    clock.now += 119
    alerts = Alerts(config, clock=clock)
    alerts.on_state("nas", "failing", "cannot connect")
    alerts.close()
    assert calls_of(calls) == ["failure", "failure"], "tried again before the backoff"
    clock.now += 2
    alerts = Alerts(config, clock=clock)
    alerts.on_state("nas", "failing", "cannot connect")
    wait_for(lambda: len(calls_of(calls)) == 3, what="the third try")
    wait_for(lambda: "succeeded at try 3" in caplog.text, what="the success noted")

    clock.now += 3600  # it got through: no more tries while the target stays down
    alerts.on_state("nas", "failing", "cannot connect")
    time.sleep(0.5)
    assert calls_of(calls) == ["failure"] * 3
    alerts.on_report(Report(target="nas", kind="full"))
    alerts.close()
    assert calls_of(calls) == ["failure"] * 3 + ["recovery"]
    assert len([r for r in caplog.records if "failing since" in r.getMessage() and r.levelname == "ERROR"]) == 1
