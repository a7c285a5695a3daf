"""OpenSSH ``sshd`` on 127.0.0.1 for the sftp backend: ``sshd`` fixture and ``sftp_target``.

The server runs from the Debian package openssh-server with its own config, host key
and authorized key in a temporary folder, on a free port; no system configuration is
read or touched. As root, sshd insists on its privilege-separation folder /run/sshd
(an empty runtime folder the package's service normally creates); it is created if
missing. ``SshServer.stop`` ends the listener and every per-connection child it forked,
which is what a server restart looks like to a client.
"""

from __future__ import annotations

import contextlib
import getpass
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support import TargetSpec

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
START_TIMEOUT_S = 10.0


def _first_client_port() -> int:
    """The lowest port the kernel gives outgoing connections (Linux: 32768 by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


#: ports for servers, below the ones clients get: a port picked free (the kernel's pick
#: among the client ports) was taken by a connection meanwhile, and a server brought back
#: on it failed with "Address already in use". Each xdist worker has a thousand of its own.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % 12
_FIRST = max(1024, _first_client_port() - 12_000) + _WORKER * 1000
_PORTS = itertools.cycle(range(_FIRST, _FIRST + 1000))


def free_port() -> int:
    """A port on 127.0.0.1 that is free now and that no client connection will take."""
    for _ in range(1000):
        port = next(_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port for a server on 127.0.0.1 in {_FIRST}-{_FIRST + 999}")


def keygen(path: Path) -> str:
    """Make an ed25519 key pair at ``path``; returns the public line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)
    return path.with_suffix(".pub").read_text().strip()


def _freeze(pid: int) -> list[int]:
    """SIGSTOP ``pid`` and every process below it; returns them, ``pid`` first.

    Stopped from the top down, and looked for again until no new one shows: a process
    found in one look may have forked in the meantime (a connection coming in, a session
    starting its sftp-server), and a child whose stopped parent is still alive keeps it
    as its parent. One look then signals missed such a child, which kept its connection
    through the server's "restart" (and answered during its "pause")."""
    frozen: list[int] = []
    while True:
        parents: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        tree, queue = [pid], [pid]
        while queue:
            above = queue.pop()
            below = [child for child, parent in parents.items() if parent == above]
            tree += below
            queue += below
        new = [p for p in tree if p not in frozen]
        if not new:
            return frozen
        for p in new:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGSTOP)
        frozen += new


class SshServer:
    """One sshd with its own keys; start/stop may be called repeatedly (same port)."""

    def __init__(
        self, workdir: Path, port: int | None = None, sftp_flags: str = "", extra_config: Sequence[str] = ()
    ) -> None:
        """``sftp_flags``: options of the SFTP server (OpenSSH's sftp-server flags);
        ``extra_config``: more sshd_config lines."""
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.user = getpass.getuser()
        self.host_key = workdir / "host_key"
        self.client_key = workdir / "client_key"
        self.host_key_line = keygen(self.host_key)
        (workdir / "authorized_keys").write_text(keygen(self.client_key) + "\n")
        (workdir / "authorized_keys").chmod(0o600)
        self.known_hosts = workdir / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {self.host_key_line.rsplit(' ', 1)[0]}\n")
        self.log = workdir / "sshd.log"
        self.config = workdir / "sshd_config"
        self.config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    "PidFile none",
                    f"AuthorizedKeysFile {workdir / 'authorized_keys'}",
                    # the temporary folder lives under world-writable /tmp
                    "StrictModes no",
                    "UsePAM no",
                    "PermitRootLogin yes",
                    "PasswordAuthentication yes",
                    "KbdInteractiveAuthentication no",
                    f"Subsystem sftp internal-sftp {sftp_flags}".rstrip(),
                    # many parallel connections from one client must not be throttled
                    "MaxStartups 200",
                    "MaxSessions 200",
                    *extra_config,
                    "",
                ]
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stderr=log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(8).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not start on port {self.port}")

    def stop(self) -> None:
        """End sshd and all its connections, as a server restart or crash would."""
        if self.proc is None:
            return
        for pid in reversed(_freeze(self.proc.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def pause(self) -> list[int]:
        """Freeze sshd and every connection (a hung host: nothing answers, nothing
        closes); returns the processes for :meth:`resume`."""
        assert self.proc is not None
        return _freeze(self.proc.pid)

    @staticmethod
    def resume(frozen: list[int]) -> None:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def url(self, root: str | Path) -> str:
        return f"sftp://{self.user}@127.0.0.1:{self.port}{root}"

    def options(self, **extra: Any) -> dict[str, Any]:
        """Key authentication with this server's key, and nothing from ~/.ssh or an agent."""
        base: dict[str, Any] = {
            "key_filename": str(self.client_key),
            "known_hosts": str(self.known_hosts),
            "allow_agent": False,
            "look_for_keys": False,
            "timeout": 10,
        }
        return {**base, **extra}


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    server = SshServer(tmp_path_factory.mktemp("sshd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sftp_target(sshd: SshServer, tmp_path: Path) -> TargetSpec:
    root = tmp_path / "sftp-root"
    root.mkdir()
    return TargetSpec("sftp", sshd.url(root), sshd.options())
