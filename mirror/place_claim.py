"""A claim on the place a target writes to that every mirror process on this machine sees.

The locks beside the indexes only meet mirrors that share a state folder: a service
with ``MIRROR_STATE_DIR`` set and a run by hand without it, or a service whose state
folder was deleted under it, mirrored one target side by side, each removing the
other's uploads as leftovers. On Linux a name in the abstract socket namespace is
claimed as well: held by a socket, it is free again the moment its process ends, even
by ``kill -9``, and it needs no folder anyone could delete or that a unit's private
/tmp would hide. Elsewhere there is no claim beyond the state folder's locks.
"""

from __future__ import annotations

import errno
import socket
import sys

#: the names this process holds, so that a second Mirror of a host program is told apart
_HERE: set[str] = set()


#: where Linux lists every socket, the abstract names with "@" for their leading NUL
_SOCKETS = "/proc/net/unix"


def _name(key: str) -> str:
    return f"\0fsspec-mirror/place/{key}"


def claimed(key: str) -> bool:
    """Whether a process on this machine holds the claim on ``key``. Read from the list
    of sockets, so looking takes nothing: a claim tried, to see whether it is taken,
    would refuse a mirror that starts at that moment."""
    listed = " @" + _name(key)[1:] + "\n"
    try:
        with open(_SOCKETS, encoding="utf-8", errors="replace") as sockets:
            return any(line.endswith(listed) for line in sockets)
    except OSError:
        return False


class PlaceClaim:
    """The claim on one place (by its key, a hash that holds no secret) until :meth:`release`.
    :attr:`taken_by` says who holds it instead, if someone does: ``"here"`` (another Mirror
    of this process) or ``"elsewhere"`` (another process)."""

    def __init__(self, key: str) -> None:
        self._name = _name(key)
        self._socket: socket.socket | None = None
        self.taken_by: str | None = None
        if not sys.platform.startswith("linux"):
            return
        if self._name in _HERE:
            self.taken_by = "here"
            return
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError:
            return  # no socket to be had (a unit's RestrictAddressFamilies): the state folder's locks still hold
        try:
            sock.bind(self._name)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                self.taken_by = "elsewhere"
            return
        self._socket = sock
        _HERE.add(self._name)

    def release(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
            _HERE.discard(self._name)
