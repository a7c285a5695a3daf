"""``mirror run --metrics-addr``: scrape the real endpoint while files sync and watch the
numbers move; a bad or busy address is a one-line usage error."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cli import files, run, start, wait_for
from tests.servers.sshd import free_port


def scrape(port: int, openmetrics: bool = False) -> str:
    accept = "application/openmetrics-text; version=1.0.0" if openmetrics else "text/plain"
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.read().decode())


def samples(port: int) -> dict[str, float]:
    """``name{label="v",...}`` -> value, for the target and the process-wide series."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(scrape(port)):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def reachable(port: int) -> bool:
    try:
        scrape(port)
    except OSError:
        return False
    return True


def test_counters_and_gauges_follow_a_real_run(tmp_path: Path) -> None:
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"A" * 1000)
    (src / "b.pdf").write_bytes(b"B" * 500)
    port = free_port()
    log = tmp_path / "mirror.log"
    proc = start("run", str(src), str(dst), "--metrics-addr", f"127.0.0.1:{port}", state=state, log=log)
    t = 'target="default"'
    try:
        wait_for(lambda: reachable(port) and files(dst) == files(src), what="the first copy and the endpoint")
        wait_for(lambda: samples(port).get(f'mirror_target_state{{state="idle",{t}}}') == 1, what="idle")
        first = samples(port)
        assert first[f"mirror_uploads_total{{{t}}}"] == 2
        assert first[f"mirror_uploaded_bytes_total{{{t}}}"] == 1500
        assert first[f"mirror_files{{{t}}}"] == 2 and first[f"mirror_bytes{{{t}}}"] == 1500
        assert first[f"mirror_transfer_duration_seconds_count{{{t}}}"] == 2
        assert first[f"mirror_pending{{{t}}}"] == 0 and first[f"mirror_failed_items{{{t}}}"] == 0
        assert first[f"mirror_last_complete_sync_timestamp_seconds{{{t}}}"] > 1.7e9
        assert first[f"mirror_retries_total{{{t}}}"] == 0
        assert first[f'mirror_passes_total{{kind="full",result="ok",{t}}}'] >= 1

        for i in range(3):
            (src / f"scan {i}.pdf").write_bytes(b"S" * 100)
        (src / "b.pdf").unlink()
        wait_for(lambda: files(dst) == files(src), what="three new files and a delete")
        wait_for(lambda: samples(port)[f"mirror_deletes_total{{{t}}}"] == 1, what="the delete counted")
        later = samples(port)
        assert later[f"mirror_uploads_total{{{t}}}"] == 5
        assert later[f"mirror_uploaded_bytes_total{{{t}}}"] == 1800
        assert later[f"mirror_transfer_duration_seconds_count{{{t}}}"] == 5
        assert later[f"mirror_files{{{t}}}"] == 4 and later[f"mirror_bytes{{{t}}}"] == 1300
        assert later["mirror_watcher_events_total"] >= 4
        assert (
            later[f"mirror_last_complete_sync_timestamp_seconds{{{t}}}"]
            >= first[f"mirror_last_complete_sync_timestamp_seconds{{{t}}}"]
        )
        assert scrape(port, openmetrics=True).rstrip().endswith("# EOF")
        assert later[f"mirror_in_sync{{{t}}}"] == 1
        # a file no target can take (a name that is not UTF-8): status exits 1, and so says this
        (src / os.fsdecode(b"scan \xff.pdf")).write_bytes(b"x")
        wait_for(lambda: samples(port)[f"mirror_in_sync{{{t}}}"] == 0, what="the left-out file to count")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
    assert code == 0, log.read_text()
    assert not reachable(port), "the endpoint must close with mirror"


def test_bad_and_busy_metrics_addresses_are_usage_errors(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    bad = run("run", str(src), str(tmp_path / "dst"), "--metrics-addr", "localhost", state=tmp_path / "s")
    assert bad.returncode == 2 and "--metrics-addr: expected HOST:PORT" in bad.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = run(
            "run", str(src), str(tmp_path / "dst"), "--metrics-addr", f"127.0.0.1:{port}", state=tmp_path / "s"
        )
    assert taken.returncode == 2 and "cannot listen" in taken.stderr
    assert len(taken.stderr.strip().splitlines()) == 1


def test_the_config_names_the_metrics_address_for_a_service(tmp_path: Path) -> None:
    """The service's unit runs `mirror run -c CONFIG`: with no config key for it, an admin
    had to edit the unit (rewritten by each `service install`) to get metrics."""
    src, state = tmp_path / "src", tmp_path / "state"
    src.mkdir()
    config = tmp_path / "mirror.toml"
    config.write_text(
        f'source = "{src}"\nmetrics_addr = "127.0.0.1:0"\n[targets.usb]\nurl = "{tmp_path / "usb"}"\n'
    )
    done = run("run", "-c", str(config), "--once", state=state)
    assert done.returncode == 0 and re.search(r"metrics at http://127\.0\.0\.1:\d+/metrics", done.stderr), (
        done.stderr
    )
    config.write_text(f'source = "{src}"\nmetrics_addr = "localhost"\n[targets.usb]\nurl = "{tmp_path / "usb"}"\n')
    bad = run("run", "-c", str(config), "--once", state=state)
    assert bad.returncode == 2 and f"{config}: metrics_addr: expected HOST:PORT" in bad.stderr, bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_a_reload_keeps_the_metrics_address_the_process_listens_at(tmp_path: Path) -> None:
    """A reload checks the config's metrics address before it stops the running mirror:
    the address this very process listens at is in use, by it, and must not refuse the
    reload; another that is busy does (the start after it could not listen)."""
    src, state, log = tmp_path / "src", tmp_path / "state", tmp_path / "mirror.log"
    src.mkdir()
    config = tmp_path / "mirror.toml"
    port = free_port()
    usb = f'[targets.usb]\nurl = "{tmp_path / "usb"}"\n'
    config.write_text(f'source = "{src}"\nmetrics_addr = "127.0.0.1:{port}"\n{usb}')
    proc = start("run", "-c", str(config), state=state, log=log)
    try:
        wait_for(lambda: reachable(port), what="the endpoint", log=log)
        config.write_text(f'source = "{src}"\nmetrics_addr = "127.0.0.1:{port}"\n{usb}exclude = ["*.log"]\n')
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "starting again with the config read anew" in log.read_text(), what="the reload", log=log)
        wait_for(lambda: log.read_text().count("metrics at http://") == 2 and reachable(port), what="the endpoint")
        assert "not reloaded" not in log.read_text() and proc.poll() is None, log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text()


def test_an_ipv6_endpoint_is_logged_as_a_url_and_an_address_not_here_gets_a_fitting_hint(tmp_path: Path) -> None:
    """``[::1]:P`` was logged as http://::1:P/metrics (no URL), and a host name that does not
    resolve, or an address of another machine, was told to "choose a free port"."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    src.mkdir()
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    done = run("run", str(src), str(dst), "--once", "--metrics-addr", "[::1]:0", state=state)
    assert done.returncode == 0, done.stderr
    assert re.search(r"metrics at http://\[::1\]:\d+/metrics", done.stderr), done.stderr

    for addr, hint in [
        ("metrics-host.invalid:9108", "cannot resolve metrics-host.invalid"),
        ("192.0.2.1:9108", "192.0.2.1 is not an address of this machine"),  # TEST-NET-1: nobody's
    ]:
        refused = run("run", str(src), str(dst), "--once", "--metrics-addr", addr, state=state)
        assert refused.returncode == 2 and hint in refused.stderr, refused.stderr
        assert "free port" not in refused.stderr


def test_a_last_sync_recorded_with_the_clock_ahead_is_exported_as_0(tmp_path: Path) -> None:
    """The README's alert rule (time() - mirror_last_complete_sync_timestamp_seconds > 7200)
    never fired for a sync recorded a year ahead, where mirror status calls it stale."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"a")
    port = free_port()
    log = tmp_path / "mirror.log"
    proc = start("run", str(src), str(dst), "--metrics-addr", f"127.0.0.1:{port}", state=state, log=log)
    stamp = 'mirror_last_complete_sync_timestamp_seconds{target="default"}'
    try:
        wait_for(lambda: reachable(port) and samples(port).get(stamp, 0) > 1.7e9, what="the first complete sync")
        (db,) = (state / "targets").glob("*.sqlite")
        with sqlite3.connect(db) as index:  # as recorded with the clock a year ahead
            index.execute("UPDATE meta SET value = value + 365 * 86400 WHERE key = 'last_complete_sync'")
        index.close()
        assert samples(port)[stamp] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
    assert code == 0, log.read_text()
