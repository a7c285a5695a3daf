"""Alerts from the real ``mirror run``: a WebDAV target on a closed port fails, one
``on_failure`` call and one ``/fail`` ping follow after ``alert_after``, nothing more while
it stays down, and one recovery ping (and recovery call) once the server comes up."""

from __future__ import annotations

import json
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mirror.alerts import KEEPALIVE, Alerts
from mirror.config import load
from mirror.events import Report
from tests.cli import files, run, start, wait_for
from tests.servers.sshd import free_port
from tests.servers.webdav import PASSWORD, USER, WebdavServer, start_webdav


class Pings:
    """A healthchecks-style endpoint on 127.0.0.1 that records every request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []
        pings = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                pings.seen.append((self.command, self.path, body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ping/8f2c"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.seen]


@pytest.fixture
def pings() -> Iterator[Pings]:
    p = Pings()
    yield p
    p.server.shutdown()
    p.server.server_close()


@pytest.fixture
def webdav_later(tmp_path: Path) -> Iterator[tuple[int, Path, list[WebdavServer]]]:
    """A port where nothing listens yet, the folder a server will serve there, and the
    servers started (stopped at the end)."""
    folder = tmp_path / "dav"
    folder.mkdir()
    started: list[WebdavServer] = []
    yield free_port(), folder, started
    for server in started:
        server.server.stop()
        server.thread.join(timeout=10)


def config(tmp_path: Path, port: int, pings: Pings, alert_after: str) -> tuple[Path, Path, Path]:
    src = tmp_path / "export"
    src.mkdir(exist_ok=True)
    (src / "invoice 1.pdf").write_bytes(b"%PDF one")
    calls = tmp_path / "calls.txt"
    cfg = tmp_path / "mirror.toml"
    cfg.write_text(
        f"""
source = "{src}"
[defaults]
on_failure = 'printf "%s %s %s\\n" "$MIRROR_EVENT" "$MIRROR_TARGET" "$MIRROR_REASON" >> "{calls}"'
healthcheck_url = "{pings.url}"
alert_after = "{alert_after}"
[targets.dav]
url = "webdav://127.0.0.1:{port}/backup"
options = {{ username = "{USER}", password = "${{DAV_PASSWORD}}" }}
"""
    )
    return cfg, src, calls


def down_targets(tmp_path: Path, targets: str) -> Path:
    """A config mirroring a source with one invoice to ``targets`` (TOML: no server
    listens at their ports)."""
    src = tmp_path / "export"
    src.mkdir()
    (src / "invoice 1.pdf").write_bytes(b"%PDF one")
    cfg = tmp_path / "mirror.toml"
    cfg.write_text(f'source = "{src}"\n{targets}')
    return cfg


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_one_alert_while_down_then_one_recovery(
    tmp_path: Path, pings: Pings, webdav_later: tuple[int, Path, list[WebdavServer]]
) -> None:
    port, folder, started = webdav_later
    cfg, src, calls = config(tmp_path, port, pings, "1s")
    log = tmp_path / "mirror.log"
    env = {"DAV_PASSWORD": PASSWORD}
    proc = start("run", "-c", str(cfg), state=tmp_path / "state", env=env, log=log)
    try:
        wait_for(lambda: "/ping/8f2c/fail" in pings.paths(), what="the /fail ping")
        wait_for(lambda: len(lines(calls)) == 1, what="the on_failure call")
        assert lines(calls)[0].startswith("failure dav ")
        assert "webdav" in lines(calls)[0]  # the one-line reason
        _, _, body = pings.seen[0]
        assert "dav: failing since" in body

        # it stays down through another reconnection attempt: no further alert
        tries = len(re.findall("target unreachable", log.read_text()))
        wait_for(
            lambda: len(re.findall("target unreachable", log.read_text())) > tries,
            what="another reconnection attempt",
        )
        assert pings.paths() == ["/ping/8f2c/fail"]
        assert len(lines(calls)) == 1

        started.append(start_webdav(folder, port))
        wait_for(lambda: files(folder / "backup") == files(src), timeout=30, what="the copy after recovery")
        wait_for(lambda: len(pings.seen) == 2 and len(lines(calls)) == 2, what="the recovery notices")
        assert pings.paths() == ["/ping/8f2c/fail", "/ping/8f2c"]
        assert "recovered" in pings.seen[1][2]
        assert lines(calls)[1].startswith("recovery dav ")
        assert PASSWORD not in log.read_text() + calls.read_text() + "".join(b for _, _, b in pings.seen)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
    assert code == 0, log.read_text()


def test_cron_runs_alert_once_per_incident_and_ping_each_sync(
    tmp_path: Path, pings: Pings, webdav_later: tuple[int, Path, list[WebdavServer]]
) -> None:
    port, folder, started = webdav_later
    cfg, src, calls = config(tmp_path, port, pings, "0s")
    state, env = tmp_path / "state", {"DAV_PASSWORD": PASSWORD}

    for _ in range(2):  # two runs of `mirror run --once` from cron, both failing
        done = run("run", "-c", str(cfg), "--once", state=state, env=env)
        assert done.returncode == 1
    assert pings.paths() == ["/ping/8f2c/fail"]
    assert [c.split()[0] for c in lines(calls)] == ["failure"]

    started.append(start_webdav(folder, port))
    for _ in range(2):
        done = run("run", "-c", str(cfg), "--once", state=state, env=env)
        assert done.returncode == 0, done.stderr
    assert files(folder / "backup") == files(src)
    # the first good run heals the incident; the second is an ordinary complete sync
    assert pings.paths() == ["/ping/8f2c/fail", "/ping/8f2c", "/ping/8f2c"]
    assert "recovered" in pings.seen[1][2] and "in sync" in pings.seen[2][2]
    assert [c.split()[0] for c in lines(calls)] == ["failure", "recovery"]


def test_an_incident_of_a_source_now_given_through_a_link_still_ends_in_a_recovery(
    tmp_path: Path, pings: Pings, webdav_later: tuple[int, Path, list[WebdavServer]]
) -> None:
    """An older mirror named the incident of a source given through a link after the folder
    the link leads to; after the upgrade the target healed and no recovery was announced,
    the old incident file left behind."""
    port, folder, started = webdav_later
    cfg, src, calls = config(tmp_path, port, pings, "0s")
    state, env = tmp_path / "state", {"DAV_PASSWORD": PASSWORD}
    assert run("run", "-c", str(cfg), "--once", state=state, env=env).returncode == 1
    assert [c.split()[0] for c in lines(calls)] == ["failure"]

    link = tmp_path / "current"
    link.symlink_to(src)
    cfg.write_text(cfg.read_text().replace(f'source = "{src}"', f'source = "{link}"'))
    started.append(start_webdav(folder, port))
    done = run("run", "-c", str(cfg), "--once", state=state, env=env)
    assert done.returncode == 0, done.stderr
    assert [c.split()[0] for c in lines(calls)] == ["failure", "recovery"]
    assert list((state / "alerts").glob("*.json")) == []


def test_a_target_renamed_while_it_fails_ends_its_incident_in_one_recovery(
    tmp_path: Path, pings: Pings, webdav_later: tuple[int, Path, list[WebdavServer]]
) -> None:
    """A target renamed in the config while it was failing took over its index, but not its
    incident: the recovery was never announced, the old name's incident stayed alerted in
    the state folder for ever, and a run still failing announced the outage again."""
    port, folder, started = webdav_later
    cfg, src, calls = config(tmp_path, port, pings, "0s")
    state, env = tmp_path / "state", {"DAV_PASSWORD": PASSWORD}
    server = start_webdav(folder, port)
    assert run("run", "-c", str(cfg), "--once", state=state, env=env).returncode == 0
    server.server.stop()
    server.thread.join(timeout=10)
    (src / "invoice 2.pdf").write_bytes(b"%PDF two")
    assert run("run", "-c", str(cfg), "--once", state=state, env=env).returncode == 1
    assert [c.split()[:2] for c in lines(calls)] == [["failure", "dav"]]

    cfg.write_text(cfg.read_text().replace("[targets.dav]", "[targets.nas]"))
    done = run("run", "-c", str(cfg), "--once", state=state, env=env)
    assert done.returncode == 1 and "taking over the index of dav-" in done.stderr, done.stderr
    assert [c.split()[:2] for c in lines(calls)] == [["failure", "dav"]]
    assert pings.paths() == ["/ping/8f2c", "/ping/8f2c/fail"]

    started.append(start_webdav(folder, port))
    done = run("run", "-c", str(cfg), "--once", state=state, env=env)
    assert done.returncode == 0, done.stderr
    assert files(folder / "backup") == files(src)
    assert [c.split()[:2] for c in lines(calls)] == [["failure", "dav"], ["recovery", "nas"]]
    assert pings.paths() == ["/ping/8f2c", "/ping/8f2c/fail", "/ping/8f2c"]
    assert "recovered" in pings.seen[2][2]
    assert list((state / "alerts").glob("*.json")) == []


def test_json_alert_lines_carry_their_target(
    tmp_path: Path, pings: Pings, webdav_later: tuple[int, Path, list[WebdavServer]]
) -> None:
    """A log collector filtering on ``target`` dropped exactly the alert lines: they alone
    had none."""
    port, folder, started = webdav_later
    cfg, _, _ = config(tmp_path, port, pings, "0s")
    state, env = tmp_path / "state", {"DAV_PASSWORD": PASSWORD}

    def alert_lines(*wanted: str) -> list[dict[str, str]]:
        done = run("run", "-c", str(cfg), "--once", "--log-format", "json", state=state, env=env)
        records = [json.loads(line) for line in done.stderr.splitlines()]
        found = [r for r in records if any(w in r["message"] for w in wanted)]
        assert len(found) == len(wanted), done.stderr
        return found

    failing = alert_lines("failing (", "failing since")
    started.append(start_webdav(folder, port))
    recovered = alert_lines("recovered (")
    assert [r.get("target") for r in failing + recovered] == ["dav"] * 3


def guarded_config(tmp_path: Path, pings: Pings, alert_after: str) -> tuple[Path, Path, Path, Path]:
    """Three invoices mirrored to a folder, alerts by command and by ping."""
    src, backup, calls = tmp_path / "export", tmp_path / "backup", tmp_path / "calls.txt"
    (src / "2025").mkdir(parents=True)
    for i in range(3):
        (src / "2025" / f"R-{i}.pdf").write_bytes(b"invoice %d" % i)
    cfg = tmp_path / "mirror.toml"
    cfg.write_text(
        f"""
source = "{src}"
state_dir = "{tmp_path / "state"}"
[targets.usb]
url = "{backup}"
on_failure = 'printf "%s %s %s\\n" "$MIRROR_EVENT" "$MIRROR_TARGET" "$MIRROR_REASON" >> "{calls}"'
healthcheck_url = "{pings.url}"
alert_after = "{alert_after}"
"""
    )
    return cfg, src, backup, calls


def test_deletions_withheld_by_the_guard_alert_once_and_recover_once_deleted_no_more(
    tmp_path: Path, pings: Pings
) -> None:
    """The source disk came back empty: mirror withheld the deletions and status exited 1,
    but no on_failure call and no /fail ping came, run after run, while the backup was one
    step from being emptied. Now the guard opens an incident like a failing target's, and
    the first run that withholds nothing ends it."""
    cfg, src, backup, calls = guarded_config(tmp_path, pings, "0s")
    state = tmp_path / "state"
    assert run("run", "-c", str(cfg), "--once", state=state).returncode == 0
    assert pings.paths() == ["/ping/8f2c"]
    shutil.move(src / "2025", tmp_path / "2025")

    for _ in range(2):  # cron runs, both withholding
        done = run("run", "-c", str(cfg), "--once", state=state)
        assert done.returncode == 1 and "deletions withheld" in done.stderr, done.stderr
    assert len(files(backup)) == 3
    assert pings.paths() == ["/ping/8f2c", "/ping/8f2c/fail"]
    assert "deletions withheld: the source folder is empty" in pings.seen[1][2]
    assert [c.split()[0] for c in lines(calls)] == ["failure"]
    assert "deletions withheld" in lines(calls)[0]

    shutil.move(tmp_path / "2025", src / "2025")
    done = run("run", "-c", str(cfg), "--once", state=state)
    assert done.returncode == 0, done.stderr
    assert pings.paths() == ["/ping/8f2c", "/ping/8f2c/fail", "/ping/8f2c"]
    assert "recovered" in pings.seen[2][2]
    assert [c.split()[0] for c in lines(calls)] == ["failure", "recovery"]


def test_keep_alive_pings_do_not_say_healthy_while_deletions_are_withheld(tmp_path: Path, pings: Pings) -> None:
    """Before alert_after, the pings every 5 minutes said "healthy; nothing to mirror"
    while status exited 1 for the deletions withheld."""
    cfg_path, _src, _backup, _calls = guarded_config(tmp_path, pings, "1h")
    now = [1_800_000_000.0]
    alerts = Alerts(load(cfg_path), clock=lambda: now[0])
    alerts.on_report(Report("usb", "full", uploaded=3))
    wait_for(lambda: pings.paths() == ["/ping/8f2c"], what="the ping of the complete sync")
    alerts.on_report(
        Report("usb", "full", guard="the source folder is empty but the target holds 3 mirrored files")
    )
    now[0] += KEEPALIVE
    alerts.close()  # sends what is due: the keep-alive
    assert pings.paths() == ["/ping/8f2c", "/ping/8f2c"]
    body = pings.seen[1][2]
    assert "healthy;" not in body and "deletions withheld: the source folder is empty" in body, body


def test_withheld_deletions_stay_an_incident_until_a_pass_plans_them_again(tmp_path: Path, pings: Pings) -> None:
    """In watch mode a file written into the emptied source goes up in a pass that plans
    no deletion: the guard still stands (status still names it), so no recovery yet;
    the full pass after it, which withholds nothing, ends the incident."""
    cfg_path, _src, _backup, calls = guarded_config(tmp_path, pings, "0s")
    alerts = Alerts(load(cfg_path))
    try:
        alerts.on_report(
            Report("usb", "full", guard="the source folder is empty but the target holds 3 mirrored files")
        )
        wait_for(lambda: len(lines(calls)) == 1, what="the on_failure call")
        alerts.on_report(Report("usb", "update", uploaded=1))
        assert len(list((tmp_path / "state" / "alerts").glob("*.json"))) == 1, "the incident ended"
        alerts.on_report(Report("usb", "full", uploaded=2))
        wait_for(lambda: len(lines(calls)) == 2, what="the recovery call")
    finally:
        alerts.close()
    assert [c.split()[0] for c in lines(calls)] == ["failure", "recovery"]
    assert pings.paths() == ["/ping/8f2c/fail", "/ping/8f2c"]


def test_a_stop_right_after_a_reload_while_an_alert_command_runs_stops_mirror(
    tmp_path: Path, webdav_later: tuple[int, Path, list[WebdavServer]]
) -> None:
    """systemctl reload, then stop, while a target's on_failure command still ran (a mail
    relay down in the same outage): the reload waited for the alerts, the SIGTERM that
    came meanwhile was lost, and the process started anew and mirrored on, until
    systemd killed it, pass and all."""
    port, _, _ = webdav_later
    began = tmp_path / "began"
    cfg = down_targets(
        tmp_path,
        f"""[defaults]
on_failure = 'touch "{began}"; sleep 30'
alert_after = "0s"
[targets.dav]
url = "webdav://127.0.0.1:{port}/backup"
options = {{ username = "{USER}", password = "${{DAV_PASSWORD}}" }}
""",
    )
    log = tmp_path / "mirror.log"
    proc = start("run", "-c", str(cfg), state=tmp_path / "state", env={"DAV_PASSWORD": PASSWORD}, log=log)
    try:
        wait_for(began.exists, what="the on_failure command", log=log)
        proc.send_signal(signal.SIGHUP)
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(25) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert log.read_text().count("mirroring ") == 1, log.read_text()


def test_one_target_s_slow_alert_command_holds_back_no_other_target_s_alert(tmp_path: Path) -> None:
    """Target a's on_failure command hung (a mail relay down in the same outage) and b
    failed too: b's alert, its own command instant, came when a's was killed, a minute
    late."""
    told = tmp_path / "told"
    cfg = down_targets(
        tmp_path,
        f"""[targets.a]
url = "webdav://127.0.0.1:{free_port()}/backup"
on_failure = 'sleep 30'
alert_after = "0s"
[targets.b]
url = "webdav://127.0.0.1:{free_port()}/backup"
on_failure = 'echo "$MIRROR_TARGET" >> "{told}"'
alert_after = "2s"
""",
    )
    log = tmp_path / "mirror.log"
    proc = start("run", "-c", str(cfg), state=tmp_path / "state", log=log)
    try:
        wait_for(lambda: lines(told) == ["b"], timeout=15, what="b's alert", log=log)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_a_failing_target_a_reload_leaves_out_of_the_config_gets_its_recovery(tmp_path: Path) -> None:
    """Target dav failed and was announced; the admin took it out of the config and
    reloaded: its incident was never closed, the receiver (a healthchecks check, a ticket)
    left down for good, as no run knew the target any more."""
    told = tmp_path / "told"
    dav = f"""[targets.dav]
url = "webdav://127.0.0.1:{free_port()}/backup"
on_failure = 'echo "$MIRROR_EVENT $MIRROR_TARGET" >> "{told}"'
alert_after = "0s"
"""
    usb = tmp_path / "usb"
    cfg = down_targets(tmp_path, f'[targets.usb]\nurl = "{usb}"\n{dav}')
    log, state = tmp_path / "mirror.log", tmp_path / "state"
    proc = start("run", "-c", str(cfg), state=state, log=log)
    try:
        wait_for(lambda: lines(told) == ["failure dav"], what="dav's failure alert", log=log)
        cfg.write_text(cfg.read_text().replace(dav, ""))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: log.read_text().count("mirroring ") == 2, what="the start after the reload", log=log)
        wait_for(lambda: lines(told) == ["failure dav", "recovery dav"], what="dav's recovery", log=log)
        assert list((state / "alerts").glob("*.json")) == []
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
