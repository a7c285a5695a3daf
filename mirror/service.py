"""``mirror service install|uninstall|status|print``: running ``mirror run -c CONFIG`` under systemd.

Owns the unit text (one function, also the source of examples/systemd/mirror.service:
``python -m mirror.service > examples/systemd/mirror.service``), where units live (user:
``~/.config/systemd/user``, system: ``/etc/systemd/system``, or ``--unit-dir``), and the
few ``systemctl`` calls. Where systemd is not running, nothing is enabled: the unit is
printed (or written to ``--unit-dir``) for the user to place by hand.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import click

from mirror import config as config_mod
from mirror.errors import ConfigError
from mirror.index_files import state_dir as state_dir_of
from mirror.scan import check_source

#: what examples/systemd/mirror.service is generated with
EXAMPLE_EXEC = "%h/.local/bin/mirror"
EXAMPLE_CONFIG = "%h/.config/mirror/mirror.toml"
NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]+$")
STATE_VARIABLE = "MIRROR_STATE_DIR"

UNIT = """\
# Written by `mirror service install` (by hand: copy it into {unit_dir}/, then
# systemctl {ctl}daemon-reload && systemctl {ctl}enable --now {name}); removed by `{uninstall}`.
#   {log_hint}
#   mirror service status{flags}                # its state and how each target is doing
[Unit]
Description=mirror: keep the targets of {description} identical to its source
After=network-online.target
Wants=network-online.target
# never give up restarting: a target may be unreachable for hours
StartLimitIntervalSec=0

[Service]
Type=simple
ExecStart={exec_start}
Restart=on-failure
RestartSec=10
# SIGTERM stops mirror cleanly (exit 0) within a few seconds
KillSignal=SIGTERM
# systemctl {ctl}reload {name}: stop cleanly and start again with the config read anew
ExecReload=/bin/kill -HUP $MAINPID
TimeoutStopSec=30
Environment=PYTHONUNBUFFERED=1
{state_line}# Secrets such as NEXTCLOUD_PASSWORD (config: "${{NEXTCLOUD_PASSWORD}}") from a private file:
# EnvironmentFile={env_file}
{user_line}
[Install]
WantedBy={wanted_by}
"""


@dataclass(frozen=True)
class Scope:
    """User or system units: where they live and how systemctl/journalctl address them."""

    user: bool

    @property
    def flag(self) -> list[str]:
        return ["--user"] if self.user else []

    def default_dir(self) -> Path:
        if not self.user:
            return Path("/etc/systemd/system")
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(base) / "systemd" / "user"

    def log_hint(self, unit: str) -> str:
        return f"journalctl {'--user ' if self.user else ''}-u {unit} -f   # its log"


def unit_flags(name: str, user: bool, unit_dir: Path | None = None) -> str:
    """The options `mirror service status|uninstall` need to find this unit again: a unit
    written to a folder of the user's own is not where they look by default."""
    import shlex

    where = "" if unit_dir is None else f" --unit-dir {shlex.quote(str(unit_dir))}"
    return ("" if name == "mirror" else f" --name {name}") + ("" if user else " --system") + where


def _quote(arg: str, specifiers: bool) -> str:
    """One ExecStart argument (or Environment assignment): ``%`` escaped unless it is a
    specifier, quoted when needed."""
    if not specifiers:
        arg = arg.replace("%", "%%")
    if re.search(r"[\s\"'\\;$]", arg):
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg


def unit_text(
    executable: list[str],
    config: str,
    user: bool,
    specifiers: bool = False,
    name: str = "mirror",
    state_dir: str | None = None,
) -> str:
    """The unit that runs ``EXECUTABLE run -c CONFIG --log-format json``, with
    ``MIRROR_STATE_DIR`` set to ``state_dir`` where one is given.

    ``specifiers``: the paths contain systemd specifiers such as ``%h`` (the example);
    otherwise every ``%`` is literal and escaped.
    """
    args = [*executable, "run", "-c", config, "--log-format", "json"]
    scope = Scope(user)
    return UNIT.format(
        unit_dir="~/.config/systemd/user" if user else "/etc/systemd/system",
        ctl="--user " if user else "",
        name=name,
        log_hint=scope.log_hint(name),
        uninstall=f"mirror service uninstall{unit_flags(name, user)}",
        flags=unit_flags(name, user),
        description=config if specifiers else config.replace("%", "%%"),
        exec_start=" ".join(_quote(a, specifiers) for a in args),
        env_file="%h/.config/mirror/secrets.env" if user else "/etc/mirror/secrets.env",
        user_line="" if user else "# run as an unprivileged user that can read the source:\n# User=mirror\n",
        state_line="" if state_dir is None else _state_line(state_dir),
        wanted_by="default.target" if user else "multi-user.target",
    )


def _state_line(state_dir: str) -> str:
    """``Environment=MIRROR_STATE_DIR=...``, quoted as systemd reads it, ``%`` literal,
    with a line that says why."""
    why = "# the state folder `mirror service install` ran with, where `mirror status` looks too"
    return f"{why}:\nEnvironment={_quote(f'{STATE_VARIABLE}={state_dir}', specifiers=False)}\n"


def state_of(unit: str) -> str | None:
    """The state folder a unit written by install sets (its MIRROR_STATE_DIR), if any."""
    import shlex

    for line in unit.splitlines():
        if line.startswith("Environment="):
            name, _, value = shlex.split(line.removeprefix("Environment="))[0].partition("=")
            if name == STATE_VARIABLE:
                return value.replace("%%", "%")
    return None


def example() -> str:
    """The text of examples/systemd/mirror.service."""
    return unit_text([EXAMPLE_EXEC], EXAMPLE_CONFIG, user=True, specifiers=True)


def mirror_executable() -> list[str]:
    """How the unit starts this very installation of mirror."""
    script = Path(sys.executable).parent / "mirror"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which("mirror")
    if found:
        return [str(Path(found).resolve())]
    return [sys.executable, "-m", "mirror"]


def systemctl(scope: Scope, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemctl", *scope.flag, *args], capture_output=True, text=True, check=False, timeout=60
    )


def systemd_running(scope: Scope) -> bool:
    """True when ``systemctl`` exists and can talk to the (user or system) manager."""
    if shutil.which("systemctl") is None:
        return False
    try:
        return systemctl(scope, "show-environment").returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _checked(scope: Scope, *args: str) -> None:
    done = systemctl(scope, *args)
    if done.returncode != 0:
        why = " ".join((done.stderr or done.stdout).split()) or f"exit {done.returncode}"
        raise click.ClickException(f"systemctl {' '.join([*scope.flag, *args])} failed: {why}")


def _unit_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise click.BadParameter("letters, digits, '_', '-', '.', '@' only", param_hint="--name")
    return f"{name}.service"


def _usage_error(message: str) -> NoReturn:
    click.echo(f"mirror: error: {message}", err=True)
    sys.exit(2)


def _planned(config_path: Path, user: bool, name: str) -> tuple[str, Path, str, Path]:
    """The unit's file name, the config it runs, its text and the config's source folder,
    for install and print alike."""
    unit = _unit_name(name)
    config = config_path.expanduser().resolve()
    try:
        # its secrets are the unit's (its EnvironmentFile), not the installing shell's
        loaded = config_mod.load(config, config_mod.Unresolved(os.environ))
    except ConfigError as exc:
        _usage_error(str(exc))
    # the state folder this shell uses, where the config names none: without it the
    # service kept a second index elsewhere, `mirror status` said 'not running', and a
    # second mirror on the same targets was not refused
    state = os.environ.get(STATE_VARIABLE) if loaded.state_dir is None else None
    if loaded.state_dir is None and not state and os.environ.get("XDG_STATE_HOME"):
        # the platform folder under this shell's XDG_STATE_HOME, which the unit does not
        # have: the service kept its indexes elsewhere, and status advised a restart
        state = str(state_dir_of(loaded))
    state_dir = str(Path(state).expanduser().resolve()) if state else None
    text = unit_text(mirror_executable(), str(config), user, name=name, state_dir=state_dir)
    return unit, config, text, loaded.source


# -- the commands ---------------------------------------------------------------------------
config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("mirror.toml"),
    show_default=True,
    help="The config the service runs.",
)
scope_option = click.option(
    "--user/--system",
    "user",
    default=True,
    show_default=True,
    help="A user unit (runs as you, ~/.config/systemd/user) or a system unit (/etc/systemd/system).",
)
name_option = click.option("--name", default="mirror", show_default=True, help="Unit name (one per config).")
write_dir_option = click.option(
    "--unit-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the unit here instead of systemd's folder (packaging, tests).",
)
find_dir_option = click.option(
    "--unit-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Look for the unit here instead of in systemd's folder (where install --unit-dir wrote it).",
)


@click.group()
def service() -> None:
    """Run mirror as a systemd service that starts at boot and restarts on failure."""


@service.command()
@config_option
@scope_option
@name_option
@write_dir_option
def install(config_path: Path, user: bool, name: str, unit_dir: Path | None) -> None:
    """Write and enable a unit that runs `mirror run -c CONFIG`, and start it."""
    unit, config, text, source = _planned(config_path, user, name)
    try:
        check_source(source)
    except ConfigError as exc:
        # started, the unit would exit 2 at once and be restarted every 10 s for ever
        _usage_error(f"{exc}; nothing was installed")
    scope = Scope(user)
    running = systemd_running(scope)
    if unit_dir is None and not running:
        click.echo(
            "systemd is not running on this machine, so nothing was installed. Place this unit where your "
            f"service manager expects it (for systemd: {scope.default_dir() / unit}), or have your init "
            "system run its ExecStart line:",
            err=True,
        )
        click.echo(text, nl=False)
        sys.exit(1)
    folder = unit_dir or scope.default_dir()
    path = folder / unit
    _refuse_another_config(path, config, unit_flags(name, user, unit_dir))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        hint = " (a system unit needs root: sudo, or --user)" if not user else ""
        raise click.ClickException(f"cannot write {path}: {exc.strerror}{hint}") from None
    click.echo(f"wrote {path}")
    if not running:
        click.echo("systemd is not running here, so the unit was not enabled; place it by hand")
        return
    _checked(scope, "daemon-reload")
    _checked(scope, "enable", "--now", unit)
    click.echo(f"enabled and started {unit}; it starts at {'login' if user else 'boot'} and restarts on failure")
    click.echo(f"  its log:    {scope.log_hint(name).split('#')[0].strip()}")
    click.echo(f"  its status: mirror service status{unit_flags(name, user, unit_dir)}")
    if user:
        click.echo('  to keep it running while you are logged out: loginctl enable-linger "$USER"')


def _refuse_another_config(path: Path, config: Path, flags: str) -> None:
    """Installing again for the same config updates the unit; for another one it would
    silently stop the mirror the unit runs now. ``flags``: what finds that unit again."""
    try:
        existing = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    except OSError as exc:
        _usage_error(f"cannot read {path}: {exc.strerror}")
    runs = config_of(existing)
    if runs is not None and Path(runs) == config:
        return
    what = f"runs {runs}" if runs is not None else "was not written by mirror"
    _usage_error(
        f"{path} already exists and {what}; give this config a unit of its own with --name NAME, "
        f"or remove that one first: mirror service uninstall{flags}"
    )


@service.command()
@scope_option
@name_option
@find_dir_option
def uninstall(user: bool, name: str, unit_dir: Path | None) -> None:
    """Stop and disable the unit, and remove its file (indexes and config stay)."""
    unit = _unit_name(name)
    scope = Scope(user)
    path = (unit_dir or scope.default_dir()) / unit
    running = systemd_running(scope)
    if running and path.exists():
        _checked(scope, "disable", "--now", unit)
    if not path.exists():
        click.echo(f"{unit} is not installed ({path} does not exist)")
        return
    try:
        path.unlink()
    except OSError as exc:
        raise click.ClickException(f"cannot remove {path}: {exc.strerror}") from None
    if running:
        _checked(scope, "daemon-reload")
    click.echo(f"removed {path}; the mirrored files, indexes and config are left as they are")


@service.command()
@scope_option
@name_option
@find_dir_option
@click.pass_context
def status(ctx: click.Context, user: bool, name: str, unit_dir: Path | None) -> None:
    """Whether the unit is installed and running, then `mirror status` for its config."""
    unit = _unit_name(name)
    scope = Scope(user)
    path = (unit_dir or scope.default_dir()) / unit
    if not path.exists():
        # without -c, install runs ./mirror.toml of whatever folder it is typed in
        hint = f"mirror service install -c CONFIG{unit_flags(name, user, unit_dir)}"
        click.echo(f"{unit} is not installed ({path} does not exist); install it with: {hint}")
        sys.exit(1)
    if systemd_running(scope):
        state = systemctl(scope, "is-active", unit).stdout.strip() or "unknown"
        enabled = systemctl(scope, "is-enabled", unit).stdout.strip() or "unknown"
        click.echo(f"{unit}: {state} ({enabled}); unit file {path}")
    else:
        click.echo(f"{unit}: unit file {path}; systemd is not running here")
    installed = path.read_text(encoding="utf-8")
    config = config_of(installed)
    if config is None:
        click.echo(f"cannot find `-c CONFIG` in the ExecStart line of {path}")
        sys.exit(1)
    state_dir = state_of(installed)
    if installed != unit_text(mirror_executable(), config, user, name=name, state_dir=state_dir):
        import shlex

        # a unit an older mirror wrote lacks what the README now relies on (ExecReload)
        click.echo(
            f"{path} is not the unit this mirror writes (an older mirror wrote it, or it was edited); "
            f"to write it anew: mirror service install -c {shlex.quote(config)}{unit_flags(name, user, unit_dir)}"
        )
    from mirror.cli import RELOAD
    from mirror.cli import status as status_command

    ctx.meta[RELOAD] = f"systemctl {'--user ' if user else ''}reload {name}"
    ctx.invoke(status_command, config_path=Path(config), state_dir=Path(state_dir) if state_dir else None)


def config_of(unit: str) -> str | None:
    """The CONFIG of ``ExecStart=... run -c CONFIG ...`` in a unit written by install."""
    import shlex

    for line in unit.splitlines():
        if line.startswith("ExecStart="):
            args = shlex.split(line.removeprefix("ExecStart="))
            if "-c" in args[:-1]:
                return args[args.index("-c") + 1].replace("%%", "%")
    return None


@service.command(name="print")
@config_option
@scope_option
@name_option
def print_unit(config_path: Path, user: bool, name: str) -> None:
    """Print the unit install would write with the same options (to place it by hand)."""
    click.echo(_planned(config_path, user, name)[2], nl=False)


if __name__ == "__main__":
    sys.stdout.write(example())
