"""The ``sftp`` backend (``sftp://user@host[:port]/path``): an SSH server, through paramiko.

Library choice: fsspec's paramiko ``sftp`` over asyncssh's ``sshfs``. Measured on this
machine against a loopback OpenSSH with 10,000 small files on one connection, fsspec's
paramiko ``sftp`` took 31 s and sshfs 39 s, both paying round trips for stat, mkdirs,
open, write, close of each file. paramiko runs several connections at once with plain
threads, which is what the executor has. Installing sshfs would also take over
``sftp://`` for every fsspec user through entry points, and asyncssh breaks under the
cryptography version pydrive2 pins.

What this module owns, and why it does not just call fsspec's SFTPFileSystem:

- Host keys. fsspec's default policy auto-adds any key and it never loads known_hosts.
  Here keys are checked against ``known_hosts`` (default ``~/.ssh/known_hosts``);
  ``host_key_policy = "accept-new"`` records an unknown key (like OpenSSH's
  ``StrictHostKeyChecking=accept-new``); a changed key is always a FatalError.
- Connections shared out one thread at a time, replaced after a drop: a thread takes an
  idle connection for each operation (the one the listing has just used, say) and
  opens one only when none is free, so a run with one thing to send opens one. A
  connection error marks every open connection stale (a restarted server has dropped
  them all), the call fails with TransientError, and the next call reconnects. The
  engine backs off.
- Uploads that cost few round trips and little CPU. Once round trips are few, the
  client's CPU is the limit (paramiko spends ~0.2 ms of it per request and reply, in
  Python). A put sends OPEN, then the writes, an FSETSTAT (the mtime) and the CLOSE in
  one channel write, and checks every reply: two round trips and two SSH packets out
  for a small file, where paramiko's file object plus ``utime`` take four and four
  (measured per 4 KiB file with its rename: 0.65 ms of client CPU instead of 0.87 ms).
  The protocol makes requests on one file take effect in the order sent, so the
  setstat and the close follow the writes (draft-ietf-secsh-filexfer, "Request
  Synchronization and Reordering").
  No stat after the upload (paramiko's ``put`` confirms with one), no exists() probe
  per path component. Large files go out about 1 MiB at a time with 2 MiB in flight:
  measured side by side on one connection, 203 MiB/s against 107 MiB/s for paramiko's
  file object. Writes are as large as the server takes (255 KiB on OpenSSH, asked
  through limits@openssh.com), so there are 8 times fewer replies to read. Every
  failed reply counts: paramiko's pipelined writes register no owner for their
  replies, so a refused write (a full disk) went unnoticed and the short file would
  have been renamed into place. The requests go out through :mod:`ssh_data`, which
  seals the SSH packets many at a time instead of one by one in paramiko.
- Small files in batches (:meth:`SFTPDriver.send_batch`): 64 files take three round
  trips together, every OPEN in one write, then every file's writes, FSETSTAT and
  CLOSE, then every rename, so per-packet and per-reply costs are shared (a first copy
  of 10,000 files of 4 KiB: 4.1 s against 11.9 s one file at a time).
- Connections at once, from the round trip (:func:`connections_for`). Several hide the
  waits of a distant server, but a near one (the same machine, a LAN) keeps the
  client's CPU busy with one or two, and more threads only fight over the GIL.
- Logins the server ends. paramiko only logs why a server disconnected; the transport
  here keeps it, so OpenSSH's "Too many authentication failures" (every key from an
  agent and ~/.ssh counts against MaxAuthTries) is a refused login with that reason and
  the options to fix it, not a connection to retry forever.
- paramiko (~0.3 s to import) and fsspec are imported on first connection: a run that
  finds nothing to send never connects, and then never pays for them.

Secrets (password, key passphrase) stay in a record that never prints them.
"""

from __future__ import annotations

import errno
import getpass
import io
import os
import posixpath
import shlex
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote, urlsplit

from mirror.config import parse_duration
from mirror.driver import (
    IN_A_CONFIG,
    BatchPut,
    Capabilities,
    Driver,
    LinkGuard,
    RemoteEntry,
    check_url_path,
    classify_os_error,
    file_in_the_way,
)
from mirror.errors import ConfigError, FatalError, ItemError, MirrorError, Refused, TransientError
from mirror.private_files import read_private
from mirror.redact import has_password

from . import ssh_data

if TYPE_CHECKING:
    # paramiko (~0.3 s) and fsspec are imported on first connection, not with this
    # module: the registry loads it on every start, and a run with nothing to send
    # never connects
    import paramiko
    from fsspec.spec import AbstractFileSystem

OPTIONS = frozenset(
    {
        "username",
        "port",
        "password",
        "password_file",
        "key_filename",
        "passphrase",
        "known_hosts",
        "host_key_policy",
        "allow_agent",
        "look_for_keys",
        "timeout",
    }
)
POLICIES = ("strict", "accept-new")
#: bytes per SFTP write request when the server does not say what it takes: the size
#: paramiko and most servers agree on
WRITE_SIZE = 32 * 1024
#: the largest write asked for even when a server takes more (OpenSSH takes 255 KiB)
WRITE_SIZE_MAX = 255 * 1024
#: bytes read from the local file at once (at most), sent as one batch of write requests
READ_SIZE = 1024 * 1024
#: bytes written but not yet acknowledged before an upload waits (OpenSSH sftp's default
#: of 64 requests of 32 KiB)
IN_FLIGHT_BYTES = 64 * 32 * 1024
KEEPALIVE_S = 15
#: a round trip shorter than this is a near server: see :func:`connections_for`
NEAR_ROUND_TRIP_S = 0.002
#: length, type and request number: the start of every SFTP request and reply
_REPLY_HEAD = struct.Struct(">IBI")
_NUMBER = struct.Struct(">I")
_NOTHING = memoryview(b"")
#: a WRITE's offset and data length
_OFFSET_LENGTH = struct.Struct(">QI")
#: the status code SSH_FX_OK, as the first four bytes of a status reply
_OK = bytes(4)
#: an SFTP request: its type, and its payload in pieces (sent without joining them first)
Request = tuple[int, tuple[bytes | memoryview, ...]]


class UnknownHostKey(Exception):
    """The server's key is not in known_hosts and the policy is strict."""

    def __init__(self, host: str, key: paramiko.PKey, known_hosts: str) -> None:
        super().__init__(f"host key of {host} is not known")
        self.host = host
        self.key = key
        self.known_hosts = known_hosts


class LoginEnded(Exception):
    """The server ended the connection during the login, giving a reason: it refused."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the server ended the login: {reason}")
        self.reason = reason


def _login_refused(params: Params, exc: LoginEnded) -> str:
    hint = (
        # OpenSSH counts every key offered, from an agent and ~/.ssh, against MaxAuthTries
        "offer only the right key: set key_filename, allow_agent = false and look_for_keys = false"
        if "too many" in exc.reason.lower()
        else "check username, key_filename, passphrase or password"
    )
    return f'sftp: authentication failed for {params.label}: the server ended the login ("{exc.reason}"); {hint}'


@dataclass(frozen=True)
class Params:
    """How to reach and authenticate to the server (secrets hidden from repr)."""

    host: str
    port: int
    username: str
    known_hosts: str
    accept_new: bool
    key_filename: str | None = None
    allow_agent: bool = True
    look_for_keys: bool = True
    timeout: float = 30.0
    password: str | None = field(default=None, repr=False)
    passphrase: str | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"

    @property
    def host_key_name(self) -> str:
        """The name known_hosts files use for this server."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


class _RecordNewKey:
    """Host key policy accept-new: trust a key never seen for this host, and append it to known_hosts."""

    def __init__(self, known_hosts: str, lock: threading.Lock) -> None:
        self.known_hosts = known_hosts
        self.lock = lock

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        with self.lock:
            # several connections open at once: the first one records, the others
            # must find that record and compare against it, not append a second line
            recorded = _load_known_hosts(self.known_hosts).lookup(hostname)
            if recorded is not None:
                old = recorded.get(key.get_name()) or next(iter(recorded.values()))
                if old != key:
                    from paramiko import BadHostKeyException

                    raise BadHostKeyException(hostname, key, old)
                return
            folder = os.path.dirname(self.known_hosts)
            if folder:
                os.makedirs(folder, mode=0o700, exist_ok=True)
            with open(self.known_hosts, "a", encoding="ascii") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


class _RefuseUnknownKey:
    """Host key policy strict: an unknown key stops the connection."""

    def __init__(self, known_hosts: str) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise UnknownHostKey(hostname, key, self.known_hosts)


_IMPORTING = threading.Lock()


def _load_paramiko() -> None:
    """Import paramiko without invoke; :meth:`SFTPDriver.connect` calls this before
    anything else here imports paramiko.

    paramiko imports invoke (and with it asyncio and unittest.mock) only to run ``Match
    exec`` lines of ssh_config files, which this backend never reads: that cost every
    run that connects about 0.09 s and 6 MiB (0.26 s -> 0.17 s to import paramiko). A
    None in sys.modules makes ``import invoke`` fail, and paramiko carries on without.
    """
    with _IMPORTING:
        if "paramiko" in sys.modules:
            return
        blocked = "invoke" not in sys.modules
        if blocked:
            sys.modules["invoke"] = None  # type: ignore[assignment]
        try:
            import paramiko  # noqa: F401  # loaded here for every later import of it
        finally:
            if blocked:
                del sys.modules["invoke"]


def _load_known_hosts(path: str) -> paramiko.HostKeys:
    from paramiko import HostKeys

    keys = HostKeys()
    if os.path.exists(path):
        keys.load(path)
    return keys


@cache
def _transport_class() -> type[paramiko.Transport]:
    from paramiko import Transport

    class _Transport(Transport):  # type: ignore[misc]  # paramiko has no type hints
        """Keeps what the server said when it ended the connection: paramiko only logs it,
        and "Too many authentication failures" would read as a dropped connection."""

        server_said: str | None = None

        def _parse_disconnect(self, m: paramiko.Message) -> None:
            at = m.packet.tell()
            m.get_int()
            self.server_said = m.get_text()
            m.packet.seek(at)
            super()._parse_disconnect(m)

    return _Transport


def _gcm_first_transport(sock: socket.socket, **kwargs: Any) -> paramiko.Transport:
    """A Transport offering AES-GCM first: paramiko's default AES-CTR pays for a separate
    HMAC-SHA2 per packet in Python, which made large uploads CPU-bound (measured 40 MiB/s
    against 65-72 MiB/s with GCM on one connection). Servers without GCM still get CTR."""
    transport = _transport_class()(sock, **kwargs)
    options = transport.get_security_options()
    ciphers = tuple(options.ciphers)
    options.ciphers = (
        *(c for c in ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com") if c in ciphers),
        *(c for c in ciphers if "gcm" not in c),
    )
    return transport


class _Link:
    """One SSH connection with its SFTP channel, used by one thread at a time."""

    def __init__(self, params: Params, generation: int, known_hosts_lock: threading.Lock) -> None:
        from paramiko import AuthenticationException, BadAuthenticationType, PasswordRequiredException, SSHClient

        self.generation = generation
        self.client = SSHClient()
        if os.path.exists(params.known_hosts):
            self.client.load_system_host_keys(params.known_hosts)
        policy: _RecordNewKey | _RefuseUnknownKey = (
            _RecordNewKey(params.known_hosts, known_hosts_lock)
            if params.accept_new
            else _RefuseUnknownKey(params.known_hosts)
        )
        self.client.set_missing_host_key_policy(policy)
        started = time.monotonic()
        try:
            self.client.connect(
                params.host,
                port=params.port,
                username=params.username,
                password=params.password,
                key_filename=params.key_filename,
                passphrase=params.passphrase,
                allow_agent=params.allow_agent,
                look_for_keys=params.look_for_keys,
                timeout=params.timeout,
                banner_timeout=params.timeout,
                auth_timeout=params.timeout,
                channel_timeout=params.timeout,
                transport_factory=_gcm_first_transport,
            )
            transport = self.client.get_transport()
            assert transport is not None
            # a half-open connection (network gone without a reset) is noticed this way
            transport.set_keepalive(KEEPALIVE_S)
            self.sftp = self.client.open_sftp()
            channel = self.sftp.get_channel()
            channel.settimeout(params.timeout)
            self.write_size = _write_size(self.sftp)
            #: how uploads send their requests (past paramiko's per-packet path where it can)
            self.send = ssh_data.sender(channel)
        except AuthenticationException as exc:
            transport = self.client.get_transport()
            said = getattr(transport, "server_said", None)
            unanswered = (
                transport is None or not transport.is_active() or time.monotonic() - started >= params.timeout
            )
            self.client.close()
            if said is not None:
                # the server ended the login itself, as OpenSSH does past MaxAuthTries
                raise LoginEnded(said) from exc
            if unanswered and not isinstance(exc, (BadAuthenticationType, PasswordRequiredException)):
                # the server went away or stopped answering halfway through the login (a
                # restart at that moment): that says nothing of the credentials, and a
                # target stopped for "credentials refused" would stay stopped
                raise ConnectionError(f"the server did not finish the login ({exc})") from exc
            raise
        except OSError as exc:
            transport = self.client.get_transport()
            self.client.close()
            if exc.errno is None and transport is not None and not transport.is_active():
                # paramiko's word for a channel the dropped connection closed ("Socket is
                # closed"): a server restarting just after the login, not a file's fault
                raise ConnectionError(f"the server closed the connection as it opened ({exc})") from exc
            raise
        except BaseException:
            self.client.close()
            raise

    def active(self) -> bool:
        """Whether the connection is up and its SFTP channel open (the server may close
        the channel alone, when its SFTP process dies)."""
        transport = self.client.get_transport()
        return transport is not None and transport.is_active() and not self.sftp.get_channel().closed

    def close(self) -> None:
        self.client.close()


def _write_size(sftp: paramiko.SFTPClient) -> int:
    """The write size to use on this connection: the server's largest, up to WRITE_SIZE_MAX.

    Each write request costs the client a reply to read and parse in Python. OpenSSH
    takes writes of 255 KiB and says so through its limits@openssh.com extension: with
    those, a first copy of 8 files of 64 MiB to a loopback OpenSSH took 4.4 s instead
    of 5.2 s (medians of 3) and 20 % less client CPU. A server without the extension
    answers "unsupported" and gets the 32 KiB every server takes.
    """
    from paramiko.sftp import CMD_EXTENDED, CMD_EXTENDED_REPLY

    try:
        kind, reply = sftp._request(CMD_EXTENDED, "limits@openssh.com")
    except (OSError, EOFError):
        return WRITE_SIZE
    if kind != CMD_EXTENDED_REPLY:
        return WRITE_SIZE
    max_packet, _max_read, max_write = reply.get_int64(), reply.get_int64(), reply.get_int64()
    # 0 means "no limit"; a write request carries about 1 KiB besides its data
    limits = [n for n in (max_write, max_packet - 1024) if n > 0]
    return max(WRITE_SIZE, min([WRITE_SIZE_MAX, *limits]))


class _Links:
    """The connections of a target, each used by one thread at a time and kept open for
    the next: a worker takes the connection the listing has just finished with, rather
    than opening its own (about 0.14 s each). Reopened after drops.
    """

    def __init__(self, params: Params) -> None:
        self.params = params
        self._lock = threading.Lock()
        self._known_hosts_lock = threading.Lock()
        self._idle: list[_Link] = []
        #: fsspec's filesystem keeps what it opens across calls: a connection of its own per thread
        self._pinned: dict[threading.Thread, _Link] = {}
        self._every: set[_Link] = set()
        self._generation = 0
        self._closed = False

    def take(self) -> _Link:
        """A connection for the calling thread alone until it hands it back with :meth:`give_back`."""
        stale: list[_Link] = []
        found = None
        with self._lock:
            generation = self._check_open()
            while self._idle and found is None:
                link = self._idle.pop()
                if link.generation == generation and link.active():
                    found = link
                else:
                    stale.append(link)
            self._every.difference_update(stale)
        for old in stale:
            old.close()  # outside the lock: closing waits on the socket
        return found if found is not None else self._opened(generation)

    def give_back(self, link: _Link) -> None:
        with self._lock:
            if not self._closed and link.generation == self._generation:
                self._idle.append(link)
                return
            self._every.discard(link)
        link.close()

    def pinned(self) -> _Link:
        """The calling thread's own connection, for fsspec's filesystem."""
        me = threading.current_thread()
        with self._lock:
            generation = self._check_open()
            link = self._pinned.get(me)
            owners = [t for t in self._pinned if not t.is_alive()]
            if link is not None and (link.generation != generation or not link.active()):
                owners.append(me)
            gone = [self._pinned.pop(t) for t in owners]
            self._every.difference_update(gone)
            link = self._pinned.get(me)
        for old in gone:
            old.close()
        if link is None:
            link = self._opened(generation)
            with self._lock:
                self._pinned[me] = link
        return link

    def broken(self, link: _Link) -> None:
        """A connection failed: the server probably dropped every one, so renew them all."""
        with self._lock:
            if link.generation == self._generation:
                self._generation += 1
            self._every.discard(link)
        link.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            links = list(self._every)
            self._every.clear()
            self._idle.clear()
            self._pinned.clear()
        for link in links:
            link.close()

    def _check_open(self) -> int:
        """The current generation (the lock held); raises once closed."""
        if self._closed:
            raise self._closed_error()
        return self._generation

    def _opened(self, generation: int) -> _Link:
        link = _Link(self.params, generation, self._known_hosts_lock)
        with self._lock:
            closed = self._closed
            if not closed:
                self._every.add(link)
        if closed:
            link.close()
            raise self._closed_error()
        return link

    def _closed_error(self) -> FatalError:
        return FatalError(f"connection to {self.params.label} was closed")


@cache
def _filesystem_class() -> type[AbstractFileSystem]:
    """fsspec's SFTP filesystem on top of the verified connections (one per thread).

    Built on first use: the driver does its work without fsspec, which is slow to import.
    """
    from fsspec.implementations.sftp import SFTPFileSystem
    from fsspec.spec import AbstractFileSystem

    class SFTPFS(SFTPFileSystem):  # type: ignore[misc]
        cachable = False

        def __init__(self, links: _Links) -> None:
            AbstractFileSystem.__init__(self)
            self.links = links
            self.host = links.params.host
            self.ssh_kwargs: dict[str, Any] = {}
            self.temppath = "/tmp"  # noqa: S108  # fsspec's own default, used only by transactions

        @property
        def ftp(self) -> paramiko.SFTPClient:
            return self.links.pinned().sftp

    return SFTPFS


def _is_connection_error(exc: BaseException, link: _Link) -> bool:
    from paramiko import SSHException

    if isinstance(exc, (EOFError, TimeoutError, ConnectionError, socket.timeout, SSHException)):
        return True
    # paramiko reports a closed channel as a bare OSError; the link tells the truth
    return isinstance(exc, OSError) and not link.active()


def parse(url: str, options: Mapping[str, Any]) -> tuple[Params, str]:
    """Connection parameters and the root path (``~`` = login folder) from URL + options."""
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise ConfigError(f"unknown sftp option(s) {', '.join(unknown)}; known: {', '.join(sorted(OPTIONS))}")
    check_url_path(url)
    parts = urlsplit(url)
    if parts.password or has_password(url):
        raise ConfigError(f'do not put a password in the sftp URL; set password = "${{ENV_VAR}}" {IN_A_CONFIG}')
    if not parts.hostname:
        raise ConfigError("sftp URL needs a host: sftp://user@host[:port]/path")
    policy = str(options.get("host_key_policy", "strict"))
    if policy not in POLICIES:
        raise ConfigError(f"host_key_policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    password = options.get("password")
    if options.get("password_file"):
        password = _read_secret_file(str(options["password_file"]))
    try:
        port = int(options.get("port") or parts.port or 22)
    except ValueError as exc:
        raise ConfigError(f"sftp port must be a number: {exc}") from None
    key_filename = options.get("key_filename")
    if key_filename and not os.path.isfile(os.path.expanduser(str(key_filename))):
        raise ConfigError(f"sftp key_filename {key_filename} does not exist")
    params = Params(
        host=parts.hostname,
        port=port,
        username=str(options.get("username") or unquote(parts.username or "") or getpass.getuser()),
        known_hosts=os.path.expanduser(str(options.get("known_hosts", "~/.ssh/known_hosts"))),
        accept_new=policy == "accept-new",
        key_filename=os.path.expanduser(str(key_filename)) if key_filename else None,
        allow_agent=bool(options.get("allow_agent", password is None)),
        look_for_keys=bool(options.get("look_for_keys", key_filename is None and password is None)),
        # in seconds, or written as every other duration of the config is ("30s")
        timeout=parse_duration(options.get("timeout", 30.0), "sftp option timeout"),
        password=str(password) if password is not None else None,
        passphrase=str(options["passphrase"]) if options.get("passphrase") is not None else None,
    )
    return params, unquote(parts.path)


def connections_for(round_trip_s: float) -> int:
    """Connections a target's workers use at once, from the server's round trip.

    Small files go 64 to a batch in three round trips, and a batch costs the client about
    10 ms of CPU. A first copy of 10,000 files of 4 KiB on 2 cores, through a relay that
    delays each way (``python -m bench.connections``, medians of 3), with 1, 2 and 4:
    at a 0.28 ms round trip (a loopback OpenSSH) 4.7, 4.8 and 6.4 s, the client's CPU
    3.8, 4.7 and 6.8 s (every thread more adds GIL handoffs: 1.4 million futex calls with
    4 against 0.26 million with 1); at 2.7 ms 6.6, 5.5 and 5.0 s; at 7.1 ms 8.7, 6.3 and
    5.7 s; at 21.5 ms 18.6, 11.4 and 7.1 s. Two where the round trip is short, not one:
    a second connection covers the waits one leaves, and keeps a link free while a large
    file goes out.
    """
    return 2 if round_trip_s < NEAR_ROUND_TRIP_S else SFTPDriver.default_concurrency


def _home_and_round_trip(sftp: paramiko.SFTPClient) -> tuple[str, float]:
    """The login folder, and the shortest of three round trips asking for it (one alone
    may have waited on a busy machine)."""
    fastest = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        home = sftp.normalize(".")
        fastest = min(fastest, time.perf_counter() - started)
    return home, fastest


def _home_relative(path: str) -> bool:
    """Whether a target URL's path (``~`` = login folder) is below the login folder."""
    return path in ("", "/~") or path.startswith("/~/")


def _read_secret_file(path: str) -> str:
    return read_private(path, "password_file").rstrip("\r\n")


def _fingerprint(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


class SFTPDriver(Driver):
    capabilities = Capabilities(
        case_sensitive=True,
        mtime_settable=True,
        # SFTP v3 carries whole seconds, unsigned 32-bit: 1970 to 2106
        mtime_precision_ns=1_000_000_000,
        mtime_range_ns=(0, (2**32 - 1) * 1_000_000_000),
        atomic_rename=True,
        server_side_move=True,
        max_name_bytes=255,
    )
    #: each worker uses a connection of its own while it works; on 2 cores, 8 were slower
    #: than 4 (small files 5-10 %, 64 MiB files 20 %): the threads fight over the GIL, and
    #: round trips are few now. :meth:`connect` lowers it for a near server
    default_concurrency = 4
    thread_safe = True
    #: large uploads are CPU-bound on a fast link and more of them only fight over the
    #: GIL: a first copy of 8 files of 64 MiB to a loopback OpenSSH took 4.6 s four at a
    #: time, 3.8 s two or one at a time (medians of 5); with the packets sealed in bulk
    #: (ssh_data), one, two and three at a time took the same. Two keep a second SSH
    #: window open for links with a long round trip.
    bulk_concurrency = 2
    #: small files go 64 to a batch: three round trips and a few SSH packets for all of
    #: them (measured on 2,000 files of 4 KiB: 0.15 ms of client CPU each against 0.63 ms
    #: one by one)
    batch_files = 64
    place_picks = True

    def __init__(self, links: _Links, root: str, caps: Capabilities | None = None) -> None:
        super().__init__(None, root, caps)
        self.links = links
        self._guard = LinkGuard(self.full, self._modes)

    @classmethod
    def check_target(cls, url: str, options: Mapping[str, Any]) -> None:
        parse(url, options)

    @classmethod
    def place(cls, url: str, options: Mapping[str, Any]) -> tuple[str, str, str]:
        params, path = parse(url, options)
        # an absolute folder is one for every account on the server; the login folder is the user's
        server = f"{params.host.lower()}:{params.port}"
        return (f"{params.username}@{server}" if _home_relative(path) else server), path, ""

    @classmethod
    def connect(cls, url: str, options: Mapping[str, Any], caps: Capabilities | None = None) -> Driver:
        _load_paramiko()
        from paramiko import AuthenticationException, PasswordRequiredException

        params, path = parse(url, options)
        links = _Links(params)
        try:
            link = links.take()
            home, round_trip = _home_and_round_trip(link.sftp)
            links.give_back(link)
        except LoginEnded as exc:
            links.close()
            raise ConfigError(_login_refused(params, exc)) from None
        except AuthenticationException as exc:
            links.close()
            if isinstance(exc, PasswordRequiredException):
                raise _classify(exc, params) from None
            raise ConfigError(
                f"sftp: authentication failed for {params.label}; check username, "
                "key_filename, passphrase or password"
            ) from None
        except BaseException as exc:
            links.close()
            raise _classify(exc, params) from None
        root = posixpath.join(home, path[3:]) if _home_relative(path) else path
        driver = cls(links, root, caps)
        driver.default_concurrency = connections_for(round_trip)
        return driver

    def make_fs(self) -> AbstractFileSystem:
        return _filesystem_class()(self.links)

    # -- plumbing ---------------------------------------------------------------------
    @contextmanager
    def _session(self) -> Iterator[_Link]:
        """A connection for one operation; connection failures become TransientError."""
        try:
            link = self.links.take()
        except MirrorError:
            raise
        except BaseException as exc:
            raise self.classify(exc) from None
        try:
            yield link
        except Exception as exc:
            if _is_connection_error(exc, link):
                self.links.broken(link)
                raise TransientError(
                    f"sftp connection to {self.links.params.label} lost ({type(exc).__name__}: {exc})"
                ) from None
            self.links.give_back(link)  # a refusal (no such file, permission) leaves it fine
            raise
        except BaseException:
            self.links.broken(link)  # interrupted halfway through a request: not for reuse
            raise
        self.links.give_back(link)

    # -- reading ----------------------------------------------------------------------
    def list(self) -> dict[str, RemoteEntry]:
        result: dict[str, RemoteEntry] = {}
        with self._session() as link:
            sftp = link.sftp
            try:
                pending = [("", _listdir(sftp, self.root))]
            except FileNotFoundError:
                return result
            while pending:
                rel_dir, items = pending.pop()
                for attr in items:
                    rel = f"{rel_dir}/{attr.filename}" if rel_dir else attr.filename
                    mode = attr.st_mode or 0
                    if stat.S_ISDIR(mode):
                        # a folder gone since its parent was read (the trash emptied by hand)
                        with suppress(FileNotFoundError):
                            pending.append((rel, _listdir(sftp, self.full(rel))))
                    elif stat.S_ISREG(mode):
                        result[rel] = _entry(rel, attr)
        return result

    def root_lost(self, known: str) -> bool:
        try:
            with self._session() as link:
                attr = link.sftp.lstat(self.full(known))
        except FileNotFoundError:
            return True
        return not stat.S_ISREG(attr.st_mode or 0)

    def stat(self, rel: str) -> RemoteEntry | None:
        self._guard.check(rel)  # below a link: no answer, or a delete that failed there counts as done
        path = self.full(rel)
        try:
            with self._session() as link:
                attr = link.sftp.lstat(path)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(attr.st_mode or 0):
            return None
        return _entry(rel, attr)

    # -- writing ----------------------------------------------------------------------
    def put(self, local_path: str, rel: str, mtime_ns: int) -> RemoteEntry | None:
        self._guard.check(rel)
        target = self.full(rel)
        mtime_s = self._wire_seconds(mtime_ns) if self.caps.mtime_settable else None
        # buffered: its read(n) returns n bytes unless at the end, where a raw read may
        # return fewer (the upload takes a short read for the end of the file)
        with open(local_path, "rb") as src, self._session() as link:
            st = os.fstat(src.fileno())
            _upload(link, src, st.st_size, target, mtime_s, st.st_mode)
        return None

    def send_batch(self, items: Sequence[BatchPut]) -> Sequence[MirrorError | None]:
        settable = self.caps.mtime_settable
        refused = self._guard.refusals([item.dst for item in items])  # each temp name is in its file's folder
        jobs = [
            _Job(
                item.local_path,
                self.full(item.tmp),
                self.full(item.dst),
                self._wire_seconds(item.mtime_ns) if settable else None,
                item.check,
            )
            for item, why in zip(items, refused, strict=True)
            if not why
        ]
        outcomes: list[BaseException | None] = []
        if jobs:
            with self._session() as link:
                outcomes = _Batch(link, jobs).run()
        return self._merged(refused, outcomes)

    def _wire_seconds(self, mtime_ns: int) -> int:
        """An mtime as SFTP v3 carries it; a date it cannot (a file from 1960, a camera
        clock set to 2200) gets the nearest it can, so the file is still sent."""
        return self.caps.kept_mtime(mtime_ns) // 1_000_000_000

    def set_mtime(self, rel: str, mtime_ns: int) -> None:
        self._guard.check(rel)
        seconds = self._wire_seconds(mtime_ns)
        with self._session() as link:
            link.sftp.utime(self.full(rel), (seconds, seconds))

    def move(self, src: str, dst: str) -> None:
        self._guard.check(src)
        self._guard.check(dst)
        # posix-rename@openssh.com replaces dst atomically; plain SFTP rename refuses to
        with self._session() as link:
            try:
                link.sftp.posix_rename(self.full(src), self.full(dst))
            except OSError as exc:
                raise _why_rename_failed(link.sftp, self.full(dst), exc) from exc

    def delete(self, rel: str) -> None:
        self._guard.check(rel)
        with self._session() as link:
            link.sftp.remove(self.full(rel))

    def move_batch(self, moves: Sequence[tuple[str, str]]) -> Sequence[MirrorError | None]:
        ends = self._guard.refusals([path for move in moves for path in move])
        refused = [src or dst for src, dst in zip(ends[::2], ends[1::2], strict=True)]
        return self._pipelined(
            [
                _renaming(self.full(src), self.full(dst))
                for (src, dst), why in zip(moves, refused, strict=True)
                if not why
            ],
            refused,
        )

    def delete_batch(self, rels: Sequence[str]) -> Sequence[MirrorError | None]:
        from paramiko.sftp import CMD_REMOVE

        refused = self._guard.refusals(rels)
        return self._pipelined(
            [(CMD_REMOVE, (_string(self.full(rel)),)) for rel, why in zip(rels, refused, strict=True) if not why],
            refused,
        )

    def _pipelined(self, requests: Sequence[Request], refused: Sequence[str]) -> Sequence[MirrorError | None]:
        """Requests that each get a status reply, sent at once: one round trip, and none
        of paramiko's per-reply CPU (a move or delete at a time cost 0.3-0.6 ms of it).
        ``refused``: the items of the batch (as :meth:`_merged` takes them)."""
        failures: list[BaseException | None] = []
        if requests:
            with self._session() as link:
                replies = _Replies(link)
                failures = [replies.failure(num) for num in replies.ask(list(requests))]
        return self._merged(refused, failures)

    def _merged(
        self, refused: Sequence[str], outcomes: Sequence[BaseException | None]
    ) -> Sequence[MirrorError | None]:
        """One outcome per item of a batch: for each item ``refused`` says why a
        symbolic link kept it from being sent (ItemError), or "" when it was, and then
        its outcome is the next of ``outcomes``."""
        said = iter(outcomes)
        merged: list[MirrorError | None] = []
        for why in refused:
            if why:
                merged.append(ItemError(why))
            elif (failure := next(said)) is not None:
                merged.append(self.classify(failure))
            else:
                merged.append(None)
        return merged

    def root_there(self) -> bool:
        with self._session() as link:
            try:
                return stat.S_ISDIR(link.sftp.stat(self.root).st_mode or 0)
            except FileNotFoundError:
                return False

    def makedirs(self, rel_dir: str) -> None:
        # the folders on the way are looked at first, with lstat: mkdir goes through a link
        # above the new folder, and stat takes a linked folder for a folder
        if rel_dir and self._guard.check_folder(rel_dir):
            return
        with self._session() as link:
            _mkdirs(link.sftp, self.root if rel_dir == "" else self.full(rel_dir))
        self._guard.made(rel_dir)

    def begin_pass(self) -> None:
        self._guard.clear()

    def forget_folder(self, rel_dir: str) -> None:
        self._guard.clear()  # someone may have put a link where a folder was
        super().forget_folder(rel_dir)

    def _modes(self, rels: Sequence[str]) -> dict[str, int]:
        """For the link guard: the lstat mode of each of ``rels`` that has one, asked in one round trip."""
        from paramiko import Message
        from paramiko.sftp import CMD_ATTRS, CMD_LSTAT
        from paramiko.sftp_attr import SFTPAttributes

        with self._session() as link:
            replies = _Replies(link)
            numbers = replies.ask([(CMD_LSTAT, (_string(self.full(rel)),)) for rel in rels])
            answers = [replies.got.pop(num) for num in numbers]
        return {
            rel: SFTPAttributes._from_msg(Message(payload)).st_mode or 0
            for rel, (kind, payload) in zip(rels, answers, strict=True)
            if kind == CMD_ATTRS
        }

    def remove_dir_if_empty(self, rel_dir: str) -> bool:
        path = self.full(rel_dir)
        try:
            self._guard.check(rel_dir)
            with self._session() as link:
                below = _listdir(link.sftp, path)
            # each folder below in a session of its own: the pool may have no second link
            if any(not stat.S_ISDIR(a.st_mode or 0) for a in below) or not all(
                self.remove_dir_if_empty(f"{rel_dir}/{a.filename}") for a in below
            ):
                return False
            with self._session() as link:
                link.sftp.rmdir(_wire(path))
        except TransientError:
            raise
        except (OSError, ItemError):  # ItemError: a symbolic link above it
            return False
        return True

    # -- errors -----------------------------------------------------------------------
    def classify(self, exc: BaseException) -> MirrorError:
        return _classify(exc, self.links.params)

    def close(self) -> None:
        self.links.close()


class _Replies:
    """The replies to pipelined requests, read straight off the channel.

    paramiko's reader costs about 40 µs a reply: two channel reads, a Message and a
    weak reference each. Here one channel read takes every reply that has arrived and
    each is sliced out with struct. A connection serves one thread at a time, so the replies
    on it answer this object's requests, or requests an earlier upload gave up waiting
    for (those are dropped).
    """

    def __init__(self, link: _Link) -> None:
        self.sftp = link.sftp
        self._send = link.send
        self.got: dict[int, tuple[int, bytes]] = {}
        self.waiting: set[int] = set()
        self._buffer = b""

    def send(
        self, requests: list[Request], laid_out: memoryview = _NOTHING, starts: Sequence[int] = ()
    ) -> list[int]:
        """Send requests in one channel write (one SSH packet when they fit): first those
        laid out in ``laid_out``, each starting at one of ``starts`` (see
        :func:`_read_writes`), then ``requests`` (type, payload pieces). With no
        ``requests`` the laid-out ones go as they are, else everything is copied once.
        Their request numbers."""
        sftp = self.sftp
        with sftp._lock:
            first = sftp.request_number
            sftp.request_number += len(starts) + len(requests)
        numbers = list(range(first, first + len(starts) + len(requests)))
        for number, at in zip(numbers, starts, strict=False):
            _NUMBER.pack_into(laid_out, at + _REPLY_HEAD.size - _NUMBER.size, number)
        out: list[bytes | memoryview] = [laid_out]
        for number, (kind, payload) in zip(numbers[len(starts) :], requests, strict=True):
            out.append(_REPLY_HEAD.pack(sum(map(len, payload)) + 5, kind, number))
            out.extend(payload)
        self.waiting.update(numbers)
        # a view, because paramiko's sendall slices what is left after each packet: a
        # bytes object would be copied whole each time (quadratic in the batch size)
        self._send(memoryview(b"".join(out)) if requests else laid_out)
        return numbers

    def wait(self, most: int = 0) -> None:
        """Read replies until at most ``most`` requests are unanswered.

        Never returns halfway through a reply: the next reader of the channel (paramiko's,
        after an upload that failed) must start at the start of one."""
        while len(self.waiting) > most or self._buffer:
            chunk = self.sftp.sock.recv(1 << 16)
            if not chunk:
                raise EOFError("the server closed the SFTP channel")
            buffer = self._buffer + chunk
            at = 0
            while len(buffer) - at >= _REPLY_HEAD.size:
                length, kind, num = _REPLY_HEAD.unpack_from(buffer, at)
                end = at + 4 + length
                if end > len(buffer):
                    break
                if num in self.waiting:
                    self.waiting.discard(num)
                    self.got[num] = (kind, buffer[at + _REPLY_HEAD.size : end])
                at = end
            self._buffer = buffer[at:]

    def ask(self, requests: list[Request]) -> list[int]:
        """Send the requests and wait for every reply; their request numbers."""
        numbers = self.send(requests)
        self.wait()
        return numbers

    def handle(self, num: int) -> bytes | BaseException:
        """The handle an OPEN got (length-prefixed, ready to send), or its failure."""
        from paramiko.sftp import CMD_HANDLE, SFTPError

        kind, payload = self.got.pop(num)
        if kind == CMD_HANDLE:
            return payload
        return self._status(kind, payload) or SFTPError("Expected handle")

    def failure(self, num: int) -> BaseException | None:
        """The failure a request's status reply reports, if any."""
        return self._status(*self.got.pop(num))

    def first_failure(self) -> BaseException | None:
        """The first failure among the replies read so far (all of them are consumed)."""
        failures = [self.failure(num) for num in sorted(self.got)]
        return next((f for f in failures if f is not None), None)

    def _status(self, kind: int, payload: bytes) -> BaseException | None:
        from paramiko import Message
        from paramiko.sftp import CMD_STATUS, SFTPError

        if kind != CMD_STATUS:
            return SFTPError("Expected status")
        if payload[:4] == _OK:
            return None  # the common case, without building a Message
        try:
            self.sftp._convert_status(Message(payload))  # raises the OSError paramiko raises for a failed call
        except Exception as exc:
            return exc
        return None


class _Job(NamedTuple):
    """One file of a batch: full paths on the server, mtime in seconds (None: not set),
    and :meth:`BatchPut.check` of its file."""

    local_path: str
    tmp: str
    dst: str
    mtime_s: int | None
    check: Callable[[], None] = lambda: None


def _wire(path: str) -> bytes:
    """A path as the server has it: a name read from it that was not valid UTF-8 goes
    back as the bytes it was (see :func:`_text`)."""
    return path.encode("utf-8", "surrogateescape")


def _text(raw: bytes) -> str:
    """A name the server sent, read as the local backend reads one from a folder
    (os.fsdecode under UTF-8): bytes that are not valid UTF-8 (someone's file from a
    Latin-1 system) are kept as surrogates, so the file is listed like any other file
    mirror did not put there, and left alone, where paramiko's strict UTF-8 stopped the
    whole listing."""
    return raw.decode("utf-8", "surrogateescape")


def _string(text: str) -> bytes:
    raw = _wire(text)
    return struct.pack(">I", len(raw)) + raw


def _listdir(sftp: paramiko.SFTPClient, path: str) -> list[paramiko.SFTPAttributes]:
    """paramiko's listdir_attr, with the names read by :func:`_text`."""
    from paramiko.sftp import CMD_CLOSE, CMD_HANDLE, CMD_NAME, CMD_OPENDIR, CMD_READDIR, SFTPError
    from paramiko.sftp_attr import SFTPAttributes

    kind, msg = sftp._request(CMD_OPENDIR, _wire(path))
    if kind != CMD_HANDLE:
        raise SFTPError("Expected handle")
    handle = msg.get_binary()
    entries = []
    while True:
        try:
            kind, msg = sftp._request(CMD_READDIR, handle)
        except EOFError:  # the end of the folder
            break
        if kind != CMD_NAME:
            raise SFTPError("Expected name response")
        for _ in range(msg.get_int()):
            name = _text(msg.get_string())
            msg.get_string()  # the long name, as ls -l prints it
            attr = SFTPAttributes._from_msg(msg, name)
            if name not in (".", ".."):
                entries.append(attr)
    sftp._request(CMD_CLOSE, handle)
    return entries


def _why_rename_failed(sftp: paramiko.SFTPClient, dst: str, failure: BaseException) -> BaseException:
    """``failure`` of a rename onto ``dst``, or, where OpenSSH said only "Failure" and a
    folder stands at ``dst`` (someone's, where mirror's file was), that: the failure was
    told as a full disk, and sent the admin looking at free space."""
    if not (isinstance(failure, OSError) and failure.errno is None and str(failure) == "Failure"):
        return failure
    try:
        mode = sftp.stat(dst).st_mode or 0
    except OSError:
        return failure
    if stat.S_ISDIR(mode):
        return ItemError(f"{dst} on the target is a folder where a file goes")
    return failure


def _renaming(src: str, dst: str) -> Request:
    """Move ``src`` to ``dst``, replacing it atomically (plain SFTP rename refuses to)."""
    from paramiko.sftp import CMD_EXTENDED

    return CMD_EXTENDED, (_string("posix-rename@openssh.com"), _string(src), _string(dst))


def _opening(path: str, mode: int) -> Request:
    """OPEN ``path`` for writing, created or truncated; created with the permissions of
    the source file ``mode`` (the server's umask applies): with none, the server made a
    private invoice readable by every account there."""
    from paramiko.sftp import CMD_OPEN, SFTP_FLAG_CREATE, SFTP_FLAG_TRUNC, SFTP_FLAG_WRITE
    from paramiko.sftp_attr import SFTPAttributes

    flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC
    permissions = stat.S_IMODE(mode) & 0o777  # no setuid, setgid or sticky bit on a copy
    return CMD_OPEN, (_string(path), struct.pack(">III", flags, SFTPAttributes.FLAG_PERMISSIONS, permissions))


def _read_writes(
    src: io.BufferedReader, handle: bytes, offset: int, want: int, size: int, buffer: bytearray
) -> tuple[memoryview, list[int], int, bytearray]:
    """Read up to ``want`` bytes of ``src`` straight into WRITEs of ``size`` bytes (the
    last one less), laid out end to end in ``buffer`` (or a new one when it is too
    small), ready to send as they are.

    Returns the part of the buffer used, where each request starts (its number still to
    be set), how many bytes were read, and the buffer to pass next time. Reading into
    place spares a copy of every byte sent: joined from pieces, a large upload spent a
    tenth of its CPU copying. One buffer serves a whole upload: a fresh one per block
    cost page faults and zeroing.
    """
    from paramiko.sftp import CMD_WRITE

    head = _REPLY_HEAD.size + len(handle) + _OFFSET_LENGTH.size
    needed = head * -(-want // size) + want
    if len(buffer) < needed:
        buffer = bytearray(needed)
    view = memoryview(buffer)
    starts: list[int] = []
    at = got = 0
    while got < want:
        wanted = min(size, want - got)
        read = src.readinto(view[at + head : at + head + wanted])
        if not read:
            break
        _REPLY_HEAD.pack_into(buffer, at, head - 4 + read, CMD_WRITE, 0)
        view[at + _REPLY_HEAD.size : at + _REPLY_HEAD.size + len(handle)] = handle
        _OFFSET_LENGTH.pack_into(buffer, at + head - _OFFSET_LENGTH.size, offset + got, read)
        starts.append(at)
        at += head + read
        got += read
        if read < wanted:
            break
    return view[:at], starts, got, buffer


def _writes(handle: bytes, block: memoryview, offset: int, size: int) -> list[Request]:
    """WRITEs of ``block`` at ``offset``, ``size`` bytes each (the last one less)."""
    from paramiko.sftp import CMD_WRITE

    requests: list[Request] = []
    for at in range(0, len(block), size):
        chunk = block[at : at + size]
        requests.append((CMD_WRITE, (handle, _OFFSET_LENGTH.pack(offset + at, len(chunk)), chunk)))
    return requests


def _closing(handle: bytes, mtime_s: int | None) -> list[Request]:
    """FSETSTAT of the mtime (when it is set) and CLOSE: after the writes, in that order."""
    from paramiko.sftp import CMD_CLOSE, CMD_FSETSTAT
    from paramiko.sftp_attr import SFTPAttributes

    requests: list[Request] = []
    if mtime_s is not None:
        times = struct.pack(">III", SFTPAttributes.FLAG_AMTIME, mtime_s, mtime_s)
        requests.append((CMD_FSETSTAT, (handle, times)))
    requests.append((CMD_CLOSE, (handle,)))
    return requests


class _Batch:
    """Small files uploaded and renamed into place in three round trips for the whole
    batch: every OPEN, then every file's writes, FSETSTAT and CLOSE, then every rename.
    A file whose step fails skips the steps after it; the others go on."""

    def __init__(self, link: _Link, jobs: Sequence[_Job]) -> None:
        self.jobs = jobs
        self.link = link
        self.write_size = link.write_size
        self.replies = _Replies(link)
        #: per job: None while it goes well, else what failed
        self.outcomes: list[BaseException | None] = [None] * len(jobs)
        self.contents: dict[int, bytes] = {}
        #: each file's mode, as read with its contents
        self.modes: dict[int, int] = {}
        self.handles: dict[int, bytes] = {}

    def run(self) -> list[BaseException | None]:
        """One outcome per job: None when the file is in place."""
        self._read()
        self._open()
        self._write()
        self._rename()
        return self.outcomes

    def _read(self) -> None:
        # before anything is sent: a file that cannot be read never leaves one on the target
        for i, job in enumerate(self.jobs):
            try:
                with open(job.local_path, "rb") as src:
                    data = src.read(READ_SIZE + 1)
                    self.modes[i] = os.fstat(src.fileno()).st_mode
            except OSError as exc:
                self.outcomes[i] = exc
                continue
            if len(data) > READ_SIZE:
                self.outcomes[i] = ItemError("the file grew past the size sent in batches; it is sent on its own")
                continue
            try:
                job.check()  # what was read is what is sent: checked now, not before the rename
            except ItemError as exc:
                self.outcomes[i] = exc
                continue
            self.contents[i] = data

    def _open(self) -> None:
        order = list(self.contents)
        numbers = self.replies.ask([_opening(self.jobs[i].tmp, self.modes[i]) for i in order])
        for i, num in zip(order, numbers, strict=True):
            got = self.replies.handle(num)
            if isinstance(got, bytes):
                self.handles[i] = got
            else:
                self.outcomes[i] = got

    def _write(self) -> None:
        # every handle is closed, even after a refused write
        requests: list[Request] = []
        owners: list[int] = []
        for i, handle in self.handles.items():
            writes = _writes(handle, memoryview(self.contents[i]), 0, self.write_size)
            mine = [*writes, *_closing(handle, self.jobs[i].mtime_s)]
            requests += mine
            owners += [i] * len(mine)
        for i, num in zip(owners, self.replies.ask(requests), strict=True):
            failure = self.replies.failure(num)
            if self.outcomes[i] is None:
                self.outcomes[i] = failure

    def _rename(self) -> None:
        done = [i for i in self.handles if self.outcomes[i] is None]
        requests = [_renaming(self.jobs[i].tmp, self.jobs[i].dst) for i in done]
        for i, num in zip(done, self.replies.ask(requests), strict=True):
            failure = self.replies.failure(num)
            self.outcomes[i] = failure and _why_rename_failed(self.link.sftp, self.jobs[i].dst, failure)


def _upload(link: _Link, src: io.BufferedReader, size: int, target: str, mtime_s: int | None, mode: int) -> None:
    """Write ``src`` (``size`` bytes when opened, ``mode`` its permissions) to ``target``,
    set its mtime on the open handle, and close it.

    paramiko's own file object needs a round trip for each of open, the last write,
    close and setstat, and each request is an SSH packet of its own. Here the writes,
    the setstat and the close go out together, so a small file costs two round trips
    and two packets; every reply is checked before this returns, and a failure raises
    the same exception paramiko's file object would.
    """
    from paramiko.sftp import CMD_CLOSE

    replies = _Replies(link)
    write_size = link.write_size
    (num,) = replies.ask([_opening(target, mode)])
    handle = replies.handle(num)
    if isinstance(handle, BaseException):
        raise handle
    # whole writes per read, and about the same bytes in flight whatever the write size
    read_size = write_size * max(1, READ_SIZE // write_size)
    in_flight = max(1, IN_FLIGHT_BYTES // write_size)
    closed = last = False
    buffer = bytearray()
    try:
        offset = 0
        while not last:
            # a small file is asked for its size (+1 to see the end), not 1 MiB; a file
            # that grew since it was opened is read on
            want = min(read_size, size - offset + 1) if offset <= size else read_size
            block, starts, got, buffer = _read_writes(src, handle, offset, want, write_size, buffer)
            offset += got
            last = got < want
            replies.send(_closing(handle, mtime_s) if last else [], block, starts)
            closed = last
            replies.wait(0 if last else in_flight)
            failure = replies.first_failure()
            if failure is not None:
                raise failure
    except BaseException:
        if not closed:
            # the handle would stay open on the server until the connection ends
            with suppress(Exception):
                replies.send([(CMD_CLOSE, (handle,))])
        raise


def _mkdirs(sftp: paramiko.SFTPClient, path: str) -> None:
    """mkdir -p in one round trip when the parent exists (the common case)."""
    try:
        sftp.mkdir(path)
        return
    except OSError as exc:
        if exc.errno not in (None, errno.ENOENT):
            raise
        try:
            mode = sftp.stat(path).st_mode or 0
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISDIR(mode):
                return  # already there (SFTP reports "exists" as a bare failure)
            # the same bare failure, which told of 'a full disk or quota?'
            raise ItemError(file_in_the_way(path))
    parent = posixpath.dirname(path.rstrip("/"))
    if parent in (path, "", "/"):
        raise FileNotFoundError(errno.ENOENT, "cannot create folder", path)
    _mkdirs(sftp, parent)
    try:
        sftp.mkdir(path)
    except OSError:
        if not stat.S_ISDIR(sftp.stat(path).st_mode or 0):
            raise


def _entry(rel: str, attr: paramiko.SFTPAttributes) -> RemoteEntry:
    mtime = attr.st_mtime
    return RemoteEntry(
        path=rel,
        size=int(attr.st_size or 0),
        mtime_ns=int(mtime) * 1_000_000_000 if mtime is not None else None,
    )


def _classify(exc: BaseException, params: Params) -> MirrorError:  # noqa: PLR0911  # one exit per family
    if isinstance(exc, MirrorError):
        return exc
    import paramiko

    if isinstance(exc, paramiko.BadHostKeyException):
        return FatalError(
            f"HOST KEY CHANGED for {params.host_key_name}: {params.known_hosts} holds "
            f"{_fingerprint(exc.expected_key)} but the server presented {_fingerprint(exc.key)}. "
            "Someone may be intercepting the connection, or the server was reinstalled. Nothing "
            "was sent. If the change is expected, remove the old key with "
            f"ssh-keygen -R '{params.host_key_name}' -f {params.known_hosts} and connect again"
        )
    if isinstance(exc, UnknownHostKey):
        known_hosts = shlex.quote(exc.known_hosts)
        # on a fresh machine the folder (~/.ssh) is not there yet, and >> into it fails
        folder = shlex.quote(os.path.dirname(exc.known_hosts) or ".")
        return ConfigError(
            f"host key of {exc.host} ({_fingerprint(exc.key)}) is not in {exc.known_hosts}; "
            "check the fingerprint with the server's administrator and add it "
            f"(mkdir -p -m 700 {folder} && ssh-keyscan -p {params.port} {params.host} >> {known_hosts}), "
            'or set host_key_policy = "accept-new" to record it on first contact'
        )
    if isinstance(exc, paramiko.PasswordRequiredException):
        return ConfigError(f"sftp: key file {params.key_filename} is encrypted; set options.passphrase")
    if isinstance(exc, LoginEnded):
        return FatalError(_login_refused(params, exc))
    if isinstance(exc, paramiko.AuthenticationException):
        return FatalError(f"sftp: authentication failed for {params.label} (credentials refused)")
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return TransientError(f"sftp: cannot connect to {params.label} (connection refused or unreachable)")
    if isinstance(exc, (paramiko.SSHException, EOFError, socket.timeout, TimeoutError, ConnectionError)):
        return TransientError(f"sftp: cannot reach {params.label} ({type(exc).__name__}: {exc})")
    if isinstance(exc, socket.gaierror):
        return TransientError(f"sftp: cannot resolve host {params.host} ({exc.strerror})")
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return TransientError(f"sftp: cannot reach {params.label} ({exc.strerror})")
    if isinstance(exc, OSError) and exc.errno is None and str(exc) == "Failure":
        # SSH_FX_FAILURE, all an OpenSSH server says of a write it could not make: refused,
        # so that when every upload of a pass is, the executor asks whether the folder is
        # (a read-only filesystem), and the target fails
        return Refused(
            f"sftp: {params.label} refused the write without a reason (a full disk, a quota, or a read-only disk?)"
        )
    return classify_os_error(exc)
