"""A claim on the place a target writes to that every mirror process of this user sees.

The locks beside the indexes only meet mirrors that share a state folder: a service
with ``MIRROR_STATE_DIR`` set and a run by hand without it, or a service whose state
folder was deleted under it, mirrored one target side by side, each removing the
other's uploads as leftovers. On Linux a name in the abstract socket namespace is
claimed as well: held by a socket, it is free again the moment its process ends, even
by ``kill -9``, and it needs no folder anyone could delete or that a unit's private
/tmp would hide. Elsewhere there is no claim beyond the state folder's locks.

Such a name has no owner or permissions: any local user can bind it first, and every
user can read it in /proc/net/unix. So the name holds the user's id and a key without
secrets, and a name held by no process of this user is no claim of a mirror's: a user
that bound root's name first stopped root's backups. What is given up: mirrors of two
users are not kept out of one place (they meet only through a shared state folder), and
where someone holds this user's name, neither are this user's mirrors with two state
folders (told as a warning by the caller).
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

#: where Linux lists every socket, the abstract names with "@" for their leading NUL
_SOCKETS = "/proc/net/unix"


@dataclass
class _Held:
    """A name this process claims: its socket (None where a stranger holds the name) and
    the accounts (:class:`PlaceClaim`) of the places that share it here."""

    socket: socket.socket | None
    accounts: set[str] = field(default_factory=set)


#: the names this process claims, so that a second Mirror of a host program is told apart
_HERE: dict[str, _Held] = {}


def _name(key: str) -> str:
    return f"\0fsspec-mirror/place/{os.geteuid()}/{key}"


def _listed(name: str) -> str | None:
    """The inode of the socket that holds the abstract ``name``, from the list of sockets;
    None where none does. OSError where the list cannot be read (a unit's ProcSubset=pid)."""
    listed = " @" + name[1:] + "\n"
    with open(_SOCKETS, encoding="utf-8", errors="replace") as sockets:
        # Num RefCount Protocol Flags Type St Inode Path
        return next((line.split()[6] for line in sockets if line.endswith(listed)), None)


def _fd_links(pid: str) -> Iterator[str]:
    """What the open files of process ``pid`` are, as /proc links them; a file closed while
    looked at, or a process that ended, gives nothing."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return
    for fd in fds:
        try:
            yield os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue


def _held_by_this_user(name: str, unknown: bool) -> bool:
    """Whether a process of this user holds the abstract ``name``: its socket is among the
    open files of one (a process of another user's cannot put its socket there); ``unknown``
    where the list of sockets cannot be read."""
    try:
        inode = _listed(name)
    except OSError:
        return unknown
    if inode is None:
        return False
    link, uid = f"socket:[{inode}]", os.geteuid()
    for pid in os.listdir("/proc"):
        try:
            if not pid.isdigit() or os.stat(f"/proc/{pid}").st_uid != uid:
                continue
        except OSError:
            continue
        if link in _fd_links(pid):
            return True
    return False


def claimed(key: str) -> bool:
    """Whether a process of this user holds the claim on ``key``. Read from the list of
    sockets and the processes' open files, so looking takes nothing: a claim tried, to see
    whether it is taken, would refuse a mirror that starts at that moment."""
    return _held_by_this_user(_name(key), unknown=False)


class PlaceClaim:
    """The claim on one place until :meth:`release`: by its ``key``, which every local user
    can read (a hash of what holds no secret), and within this process by its ``account``
    too (never published), so that places with one key and other accounts share it.
    :attr:`taken_by` says who holds it instead, if someone does: ``"here"`` (another Mirror
    of this process) or ``"elsewhere"`` (another process of this user). :attr:`stranger`:
    a process of another user holds the name, which is no mirror of this user's; the place
    is claimed in this process alone."""

    def __init__(self, key: str, account: str = "") -> None:
        self._name = _name(key)
        self._account = account
        self._held = False
        self.taken_by: str | None = None
        self.stranger = False
        if not sys.platform.startswith("linux"):
            return
        here = _HERE.get(self._name)
        if here is not None:
            if account in here.accounts:
                self.taken_by = "here"
            else:
                here.accounts.add(account)
                self._held = True
            return
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError:
            return  # no socket to be had (a unit's RestrictAddressFamilies): the state folder's locks still hold
        # twice: a holder that ended between the bind and the look is no stranger
        for _ in range(2):
            try:
                sock.bind(self._name)
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    sock.close()
                    return
                # a holder that cannot be told is taken for a mirror: two mirrors in one
                # place remove each other's uploads
                if _held_by_this_user(self._name, unknown=True):
                    sock.close()
                    self.taken_by = "elsewhere"
                    return
        else:
            sock.close()
            self.stranger = True
        _HERE[self._name] = _Held(None if self.stranger else sock, {account})
        self._held = True

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        here = _HERE[self._name]
        here.accounts.discard(self._account)
        if not here.accounts:
            del _HERE[self._name]
            if here.socket is not None:
                here.socket.close()
