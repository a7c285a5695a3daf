"""``mirror service``: the unit it writes is valid and runs mirror; install, status and
uninstall talk to systemctl as they should; without systemd it says so and prints the unit.

systemd is not PID 1 in CI containers, so ``systemctl`` is a small script on PATH that
records its arguments (and answers like a running or an absent systemd); the unit file
itself is checked by the real ``systemd-analyze verify`` where installed, and its
ExecStart line is run for real.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mirror import service
from tests.cli import files, run, start, wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "systemd" / "mirror.service"


def fake_systemctl(tmp_path: Path, running: bool) -> tuple[dict[str, str], Path]:
    """PATH with a ``systemctl`` that logs each call; ``running``: whether systemd answers."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "systemctl.calls"
    bin_dir.mkdir()
    script = bin_dir / "systemctl"
    answer = (
        'case "$*" in *is-active*) echo active;; *is-enabled*) echo enabled;; esac\nexit 0'
        if running
        else 'echo "System has not been booted with systemd as init system (PID 1)." >&2\nexit 1'
    )
    script.write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(calls))}\n{answer}\n')
    script.chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    return env, calls


def write_config(tmp_path: Path, name: str = "mirror.toml") -> tuple[Path, Path, Path]:
    src, dst = tmp_path / "export", tmp_path / "backup"
    src.mkdir(exist_ok=True)
    (src / "invoice.pdf").write_bytes(b"%PDF invoice")
    cfg = tmp_path / name
    cfg.write_text(f'source = "{src}"\n[targets.disk]\nurl = "{dst}"\n')
    return cfg, src, dst


def test_the_example_unit_is_what_install_writes() -> None:
    assert EXAMPLE.read_text() == service.example(), (
        "examples/systemd/mirror.service is stale: python -m mirror.service > examples/systemd/mirror.service"
    )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("user", [True, False])
def test_systemd_analyze_accepts_the_unit(tmp_path: Path, user: bool) -> None:
    awkward = tmp_path / "my config 100%.toml"  # spaces and % must be quoted and escaped
    unit = tmp_path / "mirror.service"
    unit.write_text(service.unit_text(service.mirror_executable(), str(awkward), user))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    assert service.config_of(unit.read_text()) == str(awkward)


def test_a_unit_installed_from_a_shell_with_xdg_state_home_keeps_its_state_folder(tmp_path: Path) -> None:
    """XDG_STATE_HOME set in the user's shell only: the service, started without it,
    kept its indexes in ~/.local/state/mirror, and status in that shell said 'running
    without an index here; restart it', which could never help."""
    env, _ = fake_systemctl(tmp_path, running=True)
    cfg, _, _ = write_config(tmp_path)
    units, xdg = tmp_path / "units", tmp_path / "xdg state"
    done = run(
        "service", "print", "-c", str(cfg), state=tmp_path / "unused",
        env={**env, "MIRROR_STATE_DIR": "", "XDG_STATE_HOME": str(xdg)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f'\nEnvironment="MIRROR_STATE_DIR={xdg / "mirror"}"\n' in done.stdout, done.stdout
    assert not units.exists()


def test_install_status_uninstall_with_systemd(tmp_path: Path) -> None:
    env, calls = fake_systemctl(tmp_path, running=True)
    cfg, src, dst = write_config(tmp_path)
    units = tmp_path / "units"
    state = tmp_path / "state"

    done = run("service", "install", "-c", str(cfg), "--unit-dir", str(units), state=state, env=env)
    assert done.returncode == 0, done.stderr
    unit = units / "mirror.service"
    assert unit.is_file()
    assert "journalctl --user -u mirror -f" in done.stdout
    assert f"its status: mirror service status --unit-dir {units}\n" in done.stdout
    assert calls.read_text().splitlines() == [
        "--user show-environment",
        "--user daemon-reload",
        "--user enable --now mirror.service",
    ]
    text = unit.read_text()
    assert "Restart=on-failure" in text and "WantedBy=default.target" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text  # systemctl reload: the config read anew
    # the state folder install ran with (MIRROR_STATE_DIR): without it the service kept its
    # indexes elsewhere, status said 'not running', and a second mirror was not refused
    assert f"\nEnvironment=MIRROR_STATE_DIR={state}\n" in text

    # the ExecStart line, in the unit's environment, runs this mirror on this config: the
    # unit really works
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    args = [a.replace("%%", "%") for a in shlex.split(exec_start.removeprefix("ExecStart="))]
    unit_env = dict(
        shlex.split(line.removeprefix("Environment="))[0].split("=", 1)
        for line in text.splitlines()
        if line.startswith("Environment=")
    )
    proc = subprocess.Popen(
        args,
        env={**{k: v for k, v in os.environ.items() if k != "MIRROR_STATE_DIR"}, **unit_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: files(dst) == files(src), what="the service's first copy")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert '"level": "info"' in err  # --log-format json, as journald collectors want

    calls.unlink()
    # from a shell with another state folder: the unit's is the one looked at
    shown = run("service", "status", "--unit-dir", str(units), state=tmp_path / "elsewhere", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "mirror.service: active (enabled)" in shown.stdout
    assert "disk:" in shown.stdout and "files:   1" in shown.stdout
    assert "not the unit this mirror writes" not in shown.stdout

    # a unit an older mirror wrote, before systemctl reload worked
    unit.write_text(text.replace("ExecReload=/bin/kill -HUP $MAINPID\n", ""))
    old = run("service", "status", "--unit-dir", str(units), state=state, env=env)
    assert old.returncode == 0, old.stderr
    assert (
        f"{unit} is not the unit this mirror writes (an older mirror wrote it, or it was edited); "
        f"to write it anew: mirror service install -c {cfg} --unit-dir {units}\n"
    ) in old.stdout

    gone = run("service", "uninstall", "--unit-dir", str(units), state=state, env=env)
    assert gone.returncode == 0, gone.stderr
    assert not unit.exists()
    assert calls.read_text().splitlines()[-2:] == ["--user disable --now mirror.service", "--user daemon-reload"]
    assert files(dst) == files(src), "uninstall must leave the mirrored files alone"


def test_a_system_unit_with_its_own_name(tmp_path: Path) -> None:
    env, calls = fake_systemctl(tmp_path, running=True)
    cfg, src, dst = write_config(tmp_path, "office.toml")
    units = tmp_path / "units"
    done = run(
        "service",
        "install",
        "-c",
        str(cfg),
        "--system",
        "--name",
        "mirror-office",
        "--unit-dir",
        str(units),
        state=tmp_path / "state",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    text = (units / "mirror-office.service").read_text()
    assert "WantedBy=multi-user.target" in text and "journalctl -u mirror-office -f" in text
    assert "enable --now mirror-office.service" in calls.read_text()
    assert "--user" not in calls.read_text()

    # running, then its config changed: the note names this unit's reload, not the user one's
    service_run = start("run", "-c", str(cfg), state=tmp_path / "state")
    try:
        wait_for(lambda: files(dst) == files(src), what="the first copy")
        time.sleep(0.05)
        cfg.write_text(cfg.read_text() + "# edited\n")
        shown = run(
            "service",
            "status",
            "--system",
            "--name",
            "mirror-office",
            "--unit-dir",
            str(units),
            state=tmp_path,
            env=env,
        )
    finally:
        service_run.send_signal(signal.SIGTERM)
        service_run.wait(timeout=15)
    assert f"has not read {cfg} since it changed" in shown.stdout, shown.stdout
    assert "reload it (systemctl reload mirror-office for the service, or send the process SIGHUP)" in shown.stdout


@pytest.mark.parametrize("options", [[], ["--name", "invoices", "--system"]])
def test_print_shows_exactly_what_install_writes(tmp_path: Path, options: list[str]) -> None:
    env, _ = fake_systemctl(tmp_path, running=True)
    write_config(tmp_path)  # ./mirror.toml: the default of both
    units = tmp_path / "units"
    printed = run("service", "print", *options, state=tmp_path / "state", env=env, cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    installed = run(
        "service", "install", *options, "--unit-dir", str(units), state=tmp_path / "state", env=env, cwd=tmp_path
    )
    assert installed.returncode == 0, installed.stderr
    (unit,) = units.iterdir()
    assert printed.stdout == unit.read_text()
    if options:
        # the unit's own notes find it again: another name, a system unit
        assert unit.name == "invoices.service"
        assert "mirror service uninstall --name invoices --system`" in printed.stdout
        assert "#   mirror service status --name invoices --system " in printed.stdout


def test_a_second_config_does_not_take_over_the_unit_of_the_first(tmp_path: Path) -> None:
    env, calls = fake_systemctl(tmp_path, running=True)
    invoices, _, _ = write_config(tmp_path, "invoices.toml")
    scans, _, _ = write_config(tmp_path, "scans.toml")
    units, state = tmp_path / "units", tmp_path / "state"

    def install(cfg: Path, *options: str) -> subprocess.CompletedProcess[str]:
        return run("service", "install", "-c", str(cfg), *options, "--unit-dir", str(units), state=state, env=env)

    assert install(invoices).returncode == 0
    calls.unlink()
    refused = install(scans)
    assert refused.returncode == 2 and refused.stdout == ""
    (line,) = refused.stderr.splitlines()
    assert line.startswith("mirror: error: ") and f"runs {invoices}" in line and "--name NAME" in line
    assert line.endswith(f"mirror service uninstall --unit-dir {units}"), "the command that finds it"
    assert service.config_of((units / "mirror.service").read_text()) == str(invoices)
    assert calls.read_text().split("\n")[:-1] == ["--user show-environment"], "the running service stays"

    assert install(invoices).returncode == 0, "installing the same config again is an update"
    assert install(scans, "--name", "scans").returncode == 0
    assert service.config_of((units / "scans.service").read_text()) == str(scans)
    assert service.config_of((units / "mirror.service").read_text()) == str(invoices)


def test_without_systemd_it_says_so_and_prints_the_unit(tmp_path: Path) -> None:
    env, _ = fake_systemctl(tmp_path, running=False)
    cfg, _, _ = write_config(tmp_path)
    done = run("service", "install", "-c", str(cfg), state=tmp_path / "state", env=env)
    assert done.returncode == 1
    assert "systemd is not running" in done.stderr
    assert done.stdout.startswith("# Written by `mirror service install`")
    assert f"run -c {cfg} --log-format json" in done.stdout
    assert not (tmp_path / "xdg").exists(), "nothing may be installed without systemd"


def test_a_broken_config_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    env, calls = fake_systemctl(tmp_path, running=True)
    cfg = tmp_path / "mirror.toml"
    cfg.write_text('source = "x"\n[targets.a]\nurl = "/t"\nalert_after = "soon"\n')
    done = run("service", "install", "-c", str(cfg), "--unit-dir", str(tmp_path / "u"), state=tmp_path, env=env)
    assert done.returncode == 2
    assert "alert_after" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "u").exists() and not calls.exists()


def test_a_config_whose_source_folder_is_not_there_is_refused_as_mirror_run_refuses_it(tmp_path: Path) -> None:
    """The README's steps before the export folder existed: install said 'enabled and
    started', exit 0, and the unit exited 2 at once, restarted every 10 s for ever."""
    env, calls = fake_systemctl(tmp_path, running=True)
    cfg, src, _ = write_config(tmp_path)
    shutil.rmtree(src)
    refused = run("run", "-c", str(cfg), "--once", state=tmp_path / "state")
    done = run("service", "install", "-c", str(cfg), "--unit-dir", str(tmp_path / "u"), state=tmp_path, env=env)
    assert done.returncode == refused.returncode == 2, done.stdout + done.stderr
    assert refused.stderr.strip() in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "u").exists() and not calls.exists()


def test_status_of_a_unit_not_installed_says_how_to_install_it_for_a_config(tmp_path: Path) -> None:
    """It said 'install it with: mirror service install', which installs ./mirror.toml of
    whatever folder it is typed in, under the default name."""
    env, _ = fake_systemctl(tmp_path, running=True)
    done = run("service", "status", "--system", "--name", "books", state=tmp_path, env=env)
    assert done.returncode == 1
    assert "install it with: mirror service install -c CONFIG --name books --system\n" in done.stdout, done.stdout


def test_install_needs_none_of_the_secrets_the_unit_reads_from_its_environment_file(tmp_path: Path) -> None:
    """The README puts secrets in the unit's EnvironmentFile: installing from a shell
    without them said the variable was not set, exit 2, and installed nothing."""
    env, _ = fake_systemctl(tmp_path, running=True)
    cfg, _, _ = write_config(tmp_path)
    cfg.write_text(
        cfg.read_text()
        + '[targets.cloud]\nurl = "memory://x"\noptions = { token = "${MIRROR_TEST_SERVICE_SECRET}" }\n'
    )
    done = run("service", "install", "-c", str(cfg), "--unit-dir", str(tmp_path / "u"), state=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert service.config_of((tmp_path / "u" / "mirror.service").read_text()) == str(cfg)


def test_help_says_what_each_option_is_for(tmp_path: Path) -> None:
    commands = ("install", "status", "uninstall")
    helps = {cmd: run("service", cmd, "--help", state=tmp_path).stdout for cmd in commands}
    assert "Write the unit here" in helps["install"]
    for cmd in ("status", "uninstall"):
        assert "Look for the unit here" in helps[cmd] and "Write the unit" not in helps[cmd], helps[cmd]
    printed = run("service", "print", "--help", state=tmp_path).stdout
    assert "-c, --config FILE  The config the service runs." in printed, printed
