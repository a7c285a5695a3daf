"""The two channels of an alert, the ``on_failure`` command and the ``healthcheck_url``
ping, each on its own: a monitor that answers no HTTP, or nothing at all, keeps neither
the mail from going nor the next alert, and is told on a later try."""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirror.alerts import Alerts
from mirror.config import Config, TargetConfig, TargetSettings
from mirror.events import Report
from tests.cli import wait_for
from tests.unit.test_alerts_command import Clock, calls_of


class Monitor(socketserver.ThreadingTCPServer):
    """A healthcheck endpoint on 127.0.0.1 that answers as ``mode`` says: ``http`` (and
    records the request line), ``banner`` (an sshd on the wrong port) or ``silent`` (a
    firewall dropping the answers: it accepts, reads, and never says a word)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.mode = "http"
        self.seen: list[str] = []
        self.stop = threading.Event()
        monitor = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                request: socket.socket = self.request
                head = request.recv(65536).decode(errors="replace")
                if monitor.mode == "banner":
                    request.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10\r\n")
                elif monitor.mode == "silent":
                    monitor.stop.wait(60)
                else:
                    monitor.seen.append(head.split("\r\n", 1)[0])
                    request.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nOK")

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/ping/8f2c"


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    server = Monitor()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()


def both_channels(tmp_path: Path, url: str) -> tuple[Config, Path]:
    """A config that mails (records each on_failure call) and pings ``url``."""
    calls = tmp_path / "calls.txt"
    settings = TargetSettings(
        on_failure=f'echo "$MIRROR_EVENT" >> "{calls}"', healthcheck_url=url, alert_after=0.0
    )
    target = TargetConfig(name="nas", url="memory://backup", settings=settings)
    return Config(source=tmp_path, targets=(target,), state_dir=tmp_path / "state"), calls


def test_a_healthcheck_url_that_answers_no_http_keeps_neither_the_mail_nor_later_alerts_from_going(
    tmp_path: Path, monitor: Monitor, caplog: pytest.LogCaptureFixture
) -> None:
    """An sshd's banner at the URL killed the alert thread (BadStatusLine) before the
    on_failure command ran, with the incident saved as announced: the mail never went, in
    that run or any later one, nor the recovery."""
    monitor.mode = "banner"
    config, calls = both_channels(tmp_path, monitor.url)
    clock = Clock()
    alerts = Alerts(config, clock=clock)
    try:
        alerts.on_state("nas", "failing", "cannot connect")
        wait_for(lambda: calls_of(calls) == ["failure"], what="the on_failure call")
        wait_for(lambda: "sending the /fail ping again in 60 s" in caplog.text, what="the ping's warning")
        assert "BadStatusLine" in caplog.text

        # the admin fixes the URL: the next try tells the monitor, and mails no more
        monitor.mode = "http"
        clock.now += 61
        alerts.on_state("nas", "failing", "cannot connect")
        wait_for(lambda: monitor.seen == ["POST /ping/8f2c/fail HTTP/1.1"], what="the /fail ping")
        alerts.on_report(Report(target="nas", kind="full"))
        wait_for(lambda: len(calls_of(calls)) == 2, what="the recovery call")
    finally:
        alerts.close()
    assert calls_of(calls) == ["failure", "recovery"]
    assert monitor.seen == ["POST /ping/8f2c/fail HTTP/1.1", "POST /ping/8f2c HTTP/1.1"]


def test_a_cron_run_mails_at_once_while_the_monitor_does_not_answer_and_the_next_run_tells_the_monitor(
    tmp_path: Path, monitor: Monitor, caplog: pytest.LogCaptureFixture
) -> None:
    """The /fail ping's three tries of 10 s came first, a cron run waits 15 s for its
    alerts: the run ended before on_failure ran, with the incident saved as announced, so
    no later run mailed either."""
    caplog.set_level(logging.INFO, logger="mirror")
    monitor.mode = "silent"
    config, calls = both_channels(tmp_path, monitor.url)
    clock = Clock()
    alerts = Alerts(config, clock=clock)
    alerts.on_state("nas", "failing", "cannot connect")
    wait_for(lambda: calls_of(calls) == ["failure"], what="the on_failure call, not held by the ping")
    alerts.close(timeout=0.5)  # the end of the cron run, the ping still waiting for an answer
    assert "a failure alert not yet delivered is tried again by the next run" in caplog.text

    # the next cron runs: the monitor answers again; it hears of the outage, the admin
    # gets no second mail
    monitor.mode = "http"
    for _ in range(2):
        clock.now += 61
        alerts = Alerts(config, clock=clock)
        alerts.on_state("nas", "failing", "cannot connect")
        alerts.close()
    assert monitor.seen == ["POST /ping/8f2c/fail HTTP/1.1"]
    assert calls_of(calls) == ["failure"]
