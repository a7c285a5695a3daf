"""The tools compared: how each one is invoked for a local or an SFTP target."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import trees
from bench.sshd import Server

DEBIAN_PACKAGES = {"rsync": "rsync", "rclone": "rclone", "ssh": "openssh-client", "sshd": "openssh-server"}


@dataclass(frozen=True)
class Target:
    """Where a tool writes. ``path`` is the folder on this machine (a tmpfs) either way;
    for ``sftp`` it is reached through the loopback ``server``."""

    kind: str
    path: Path
    server: Server | None = None


@dataclass(frozen=True)
class Invocation:
    cmd: list[str]
    env: dict[str, str]


Builder = Callable[[Path, Target, Path], Invocation]


@dataclass(frozen=True)
class Tool:
    """``reruns``: whether a second run is meaningful (cp -a copies everything again)."""

    name: str
    kinds: frozenset[str]
    reruns: bool
    build: Builder


def ensure_installed() -> None:
    """Find rsync, rclone and ssh; apt-get install the Debian packages that are missing."""
    missing = [pkg for exe, pkg in DEBIAN_PACKAGES.items() if not _which(exe)]
    if missing:
        print(f"bench: installing {' '.join(missing)} with apt-get", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True)


def _which(exe: str) -> str | None:
    return shutil.which(exe) or shutil.which(exe, path="/usr/sbin:/usr/bin")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


def _cp(src: Path, target: Target, scratch: Path) -> Invocation:
    return Invocation(["cp", "-a", f"{src}/.", str(target.path)], _env())


def _rsync(src: Path, target: Target, scratch: Path) -> Invocation:
    if target.server is None:
        return Invocation(["rsync", "-a", "--delete", f"{src}/", f"{target.path}/"], _env())
    s = target.server
    dest = f"{s.user}@{s.host}:{target.path}/"
    return Invocation(["rsync", "-a", "--delete", "-e", s.ssh_command(), f"{src}/", dest], _env())


def _rclone(src: Path, target: Target, scratch: Path) -> Invocation:
    config = scratch / "rclone.conf"
    config.touch()
    base = ["rclone", "sync", str(src), "--config", str(config), "-q"]
    if target.server is None:
        return Invocation([*base, str(target.path)], _env())
    s = target.server
    # without --sftp-disable-hashcheck rclone runs md5sum on the server for every file (~985 s)
    return Invocation(
        [
            *base,
            f":sftp:{target.path}",
            f"--sftp-host={s.host}",
            f"--sftp-port={s.port}",
            f"--sftp-user={s.user}",
            f"--sftp-key-file={s.key}",
            f"--sftp-known-hosts-file={s.known_hosts}",
            "--sftp-disable-hashcheck",
        ],
        _env(),
    )


@functools.cache
def mirror_command() -> list[str]:
    """mirror installed from this checkout the way a user installs it: a regular (not
    editable) install with its bytecode compiled, in a venv of its own.

    Run from the development interpreter instead, every start paid for this machine's
    site hooks and the editable-install finder: about 0.05-0.1 s a run that a user's
    install never pays. The venv is reused; the checkout is reinstalled once a session.
    """
    top = Path(__file__).resolve().parent.parent
    venv = trees.cache_dir() / "venv"
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"bench: installing mirror[sftp] into {venv}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"{top}[sftp]"], check=True, timeout=1800)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(top)],
        check=True,
        timeout=600,
    )
    return [str(venv / "bin" / "mirror")]


def _mirror(src: Path, target: Target, scratch: Path) -> Invocation:
    env = _env(MIRROR_STATE_DIR=str(scratch / "mirror-state"))
    if target.server is None:
        return Invocation([*mirror_command(), "run", str(src), str(target.path), "--once", "-q"], env)
    config = scratch / "mirror.toml"
    config.write_text(mirror_sftp_config(src, target))
    return Invocation([*mirror_command(), "run", "-c", str(config), "--once", "-q"], env)


def mirror_sftp_config(src: Path, target: Target) -> str:
    """A config file for an SFTP target (key and known_hosts need options)."""
    s = target.server
    assert s is not None
    return (
        f'source = "{src}"\n\n[targets.bench]\n'
        f'url = "sftp://{s.user}@{s.host}:{s.port}{target.path}"\n'
        f'options = {{ key_filename = "{s.key}", known_hosts = "{s.known_hosts}" }}\n'
    )


BOTH = frozenset({"local", "sftp"})
TOOLS: dict[str, Tool] = {
    "cp -a": Tool("cp -a", frozenset({"local"}), False, _cp),
    "rsync": Tool("rsync", BOTH, True, _rsync),
    "rclone": Tool("rclone", BOTH, True, _rclone),
    "mirror": Tool("mirror", BOTH, True, _mirror),
}
