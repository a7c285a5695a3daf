"""The ``on_failure`` command at work: tried again when it fails, for as long as the
target stays broken, across restarts and cron runs."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import pytest

from mirror import alerts as alerts_module
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
    assert "on_failure command failed: " in caplog.text
    assert "notify.sh exited with 1 (relay unreachable)" in caplog.text

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


def running(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie no one reaped yet does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_command_that_hangs_is_ended_with_all_it_started_and_its_token_stays_out_of_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cut off after 60 s, only the shell was killed: what it started ran on. The log said
    it "could not run", quoting the whole command line with its token."""
    monkeypatch.setattr(alerts_module, "COMMAND_TIMEOUT", 1.0)
    pid_file = tmp_path / "child.pid"
    command = f"page-me --token TOKEN-s3cr3t-4711 2>/dev/null || {{ sleep 300 & echo $! > {pid_file}; wait; }}"
    settings = TargetSettings(on_failure=command, alert_after=0.0)
    target = TargetConfig(name="nas", url="memory://backup", settings=settings)
    alerts = Alerts(Config(source=tmp_path, targets=(target,), state_dir=tmp_path / "state"))
    alerts.on_state("nas", "failing", "cannot connect")
    wait_for(lambda: "trying it again" in caplog.text, what="the warning")
    alerts.close()
    pid = int(pid_file.read_text())
    try:
        wait_for(lambda: not running(pid), timeout=5, what="the command's child to end")
    finally:
        if running(pid):
            os.kill(pid, signal.SIGKILL)
    assert "on_failure command failed: page-me timed out after 1 s" in caplog.text
    assert "TOKEN" not in caplog.text


@pytest.mark.parametrize(
    ("command", "named"),
    [
        ("PAGER_TOKEN=s3cr3t false --to 's3cr3t'", "false exited with 1"),
        (("/bin/false", "--token", "s3cr3t"), "/bin/false exited with 1"),
    ],
)
def test_the_log_names_the_program_never_its_arguments(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, command: str | tuple[str, ...], named: str
) -> None:
    settings = TargetSettings(on_failure=command, alert_after=0.0)
    target = TargetConfig(name="nas", url="memory://backup", settings=settings)
    alerts = Alerts(Config(source=tmp_path, targets=(target,), state_dir=tmp_path / "state"))
    alerts.on_state("nas", "failing", "cannot connect")
    alerts.close()
    assert f"on_failure command failed: {named};" in caplog.text
    assert "s3cr3t" not in caplog.text


@pytest.mark.parametrize(
    "command",
    [
        'echo "--2026-12-03-- $0 failed: refused." >&2; exit 4',  # as wget echoes its URL
        "echo 'POST https://push.example/notify/tk-Push-s3cr3t: refused' >&2; exit 4",  # a URL made up
    ],
    ids=["its arguments", "an address"],
)
def test_what_a_failed_command_said_is_logged_without_its_arguments_or_the_paths_of_addresses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, command: str
) -> None:
    """wget, its push service down in the same outage, echoed its URL: the token in it
    went into the log, which names the command's program only for that reason."""
    caplog.set_level(logging.INFO, logger="mirror")
    settings = TargetSettings(on_failure=("sh", "-c", command, "--topic=tk-Push-s3cr3t"), alert_after=0.0)
    target = TargetConfig(name="nas", url="memory://backup", settings=settings)
    alerts = Alerts(Config(source=tmp_path, targets=(target,), state_dir=tmp_path / "state"))
    alerts.on_state("nas", "failing", "cannot connect")
    alerts.close()
    assert "on_failure command failed: sh exited with 4 (" in caplog.text
    assert "refused" in caplog.text and "s3cr3t" not in caplog.text, caplog.text


def test_a_command_that_writes_no_utf_8_still_leaves_the_recovery_to_be_announced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A mail tool answering in a Latin-1 locale ("übermittelt") killed the alert thread
    with a UnicodeDecodeError: the recovery, and every alert after it, never went."""
    calls = tmp_path / "calls.txt"
    said = "printf 'Nachricht \\374bermittelt\\n'; printf 'Relais \\374berlastet' >&2"
    command = f'echo "$MIRROR_EVENT" >> {calls}; {said}; exit 3'
    settings = TargetSettings(on_failure=command, alert_after=0.0)
    target = TargetConfig(name="nas", url="memory://backup", settings=settings)
    alerts = Alerts(Config(source=tmp_path, targets=(target,), state_dir=tmp_path / "state"))
    try:
        alerts.on_state("nas", "failing", "cannot connect")
        wait_for(lambda: "trying it again in 60 s" in caplog.text, what="the warning")
        alerts.on_report(Report(target="nas", kind="full"))
        wait_for(lambda: len(calls_of(calls)) == 2, what="the recovery call")
    finally:
        alerts.close()
    assert calls_of(calls) == ["failure", "recovery"]
    assert "echo exited with 3 (Relais \ufffdberlastet)" in caplog.text


def test_a_command_that_leaves_a_child_in_the_background_succeeds_when_it_exits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``notify ... &``: mirror waited for the child to close the output it inherited,
    called the command "timed out after 60 s", killed the child, and mailed the same
    failure again after 1 min, 2, 4, ..."""
    monkeypatch.setattr(alerts_module, "COMMAND_TIMEOUT", 2.0)
    calls, pid_file = tmp_path / "calls.txt", tmp_path / "child.pid"
    command = f'echo "$MIRROR_EVENT" >> {calls}; sleep 300 & echo $! > {pid_file}'
    settings = TargetSettings(on_failure=command, alert_after=0.0)
    target = TargetConfig(name="nas", url="memory://backup", settings=settings)
    alerts = Alerts(Config(source=tmp_path, targets=(target,), state_dir=tmp_path / "state"))
    alerts.on_state("nas", "failing", "cannot connect")
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() != "", what="the child")
    alerts.close()
    pid = int(pid_file.read_text())
    try:
        assert running(pid), "the background child was killed"
    finally:
        if running(pid):
            os.kill(pid, signal.SIGKILL)
    assert "on_failure command failed" not in caplog.text
    assert calls_of(calls) == ["failure"]


def test_a_command_still_running_when_the_run_ends_is_not_run_again_by_the_next(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A slow mail relay (20 s): the run stopped waiting after 15 s, the command went on
    and delivered its mail, and the next cron run, finding the alert owed, ran it again:
    one failure, one mail a run."""
    caplog.set_level(logging.INFO, logger="mirror")
    calls, gate = tmp_path / "calls.txt", tmp_path / "relay-busy"
    gate.touch()
    script = tmp_path / "notify.sh"
    script.write_text(
        f'#!/bin/sh\nwhile [ -e "{gate}" ]; do sleep 0.05; done\necho "$MIRROR_EVENT" >> "{calls}"\n'
    )
    script.chmod(0o755)
    settings = TargetSettings(on_failure=(str(script),), alert_after=0.0)
    config = Config(
        source=tmp_path,
        targets=(TargetConfig(name="nas", url="memory://backup", settings=settings),),
        state_dir=tmp_path / "state",
    )
    clock = Clock()
    alerts = Alerts(config, clock=clock)
    alerts.on_state("nas", "failing", "cannot connect")
    wait_for(lambda: "failing since" in caplog.text, what="the alert")
    alerts.close(timeout=0.5)
    assert "on_failure command still running after 0 s (pid " in caplog.text
    assert "tried again by the next run" not in caplog.text
    gate.unlink()  # the relay answers, after the run ended
    wait_for(lambda: calls_of(calls) == ["failure"], what="the mail")
    clock.now += 3600  # past any backoff
    alerts = Alerts(config, clock=clock)
    alerts.on_state("nas", "failing", "cannot connect")
    alerts.close()
    assert calls_of(calls) == ["failure"]
