"""What the kernel's mount table says about a folder: the filesystem it is on, whether
that is reached over a network, and whether its inode numbers tell files apart; and
whether a disk or share the system is set up to mount there (``/etc/fstab``, systemd
``.mount`` units) is missing from it.

Read from ``/proc/self/mountinfo`` on each call (a mount can change while mirror runs);
where there is no such table (not Linux), nothing is known and callers assume a local
disk.
"""

from __future__ import annotations

import os
import posixpath
import re
import select
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import IO, NamedTuple

#: where the system says what it mounts, and where
FSTAB = "/etc/fstab"
MOUNT_UNITS = "/etc/systemd/system"

#: kernel filesystems reached over a network; every FUSE filesystem counts too
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "afs", "lustre", "gpfs", "ocfs2", "davfs"}
)


class Mount(NamedTuple):
    """The filesystem a folder is on."""

    point: str
    fs_type: str
    #: the filesystem's own options (mountinfo's last field), such as ``noserverino``
    options: frozenset[str]
    #: the filesystem's device (major:minor), and the folder of it the mount shows: a
    #: bind mount shows a folder below that filesystem's root
    device: str = ""
    root: str = "/"

    @property
    def networked(self) -> bool:
        return self.fs_type in NETWORK_FILESYSTEMS or self.fs_type.startswith("fuse")

    @property
    def stable_inodes(self) -> bool:
        """Whether a file keeps its inode number while it exists, and only it has it.

        FUSE filesystems number files as they are looked up unless the filesystem brings
        its own numbers (ntfs-3g, as ``fuseblk``, does), and CIFS without server inode
        numbers makes them up on the client: either may give one file another number on
        the next look. Local disks, NFS and CIFS with server numbers keep them.
        """
        if self.fs_type.startswith("fuse"):
            return self.fs_type == "fuseblk"
        return not (self.fs_type in ("cifs", "smb3") and "noserverino" in self.options)


def mount_of(path: str, mountinfo: str = "/proc/self/mountinfo") -> Mount | None:
    """The mount ``path`` (or its nearest existing parent) is on; None without a table."""
    table = _table(mountinfo)
    if table is None:
        return None
    target = os.path.realpath(path)
    best: Mount | None = None
    for mount in table:
        inside = target == mount.point or target.startswith(mount.point.rstrip("/") + "/")
        if inside and (best is None or len(mount.point) >= len(best.point)):
            best = mount
    return best


#: (device, inode) of a folder, None when there is none: tells a remount apart
Identity = tuple[int, int] | None


def folder_identity(folder: str | Path) -> Identity:
    """What filesystem shows at ``folder`` now (see :data:`Identity`)."""
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


class MountTableWatch:
    """Tells that the mount table changed since the last look, without reading it: the
    kernel marks /proc/self/mountinfo with POLLPRI on every mount and unmount. A share
    mounted inside the source while watching went unseen: its files never reached the
    target, and status said in sync."""

    def __init__(self, mountinfo: str = "/proc/self/mountinfo") -> None:
        self._file: IO[bytes] | None = None
        self._poll = select.poll()
        try:
            self._file = open(mountinfo, "rb")  # noqa: SIM115 - held open to be polled, closed by close()
        except OSError:
            return  # no table to watch: mounts inside the source are seen by full passes alone
        self._file.read()
        self._poll.register(self._file, select.POLLPRI | select.POLLERR)

    def changed(self) -> bool:
        if self._file is None or not self._poll.poll(0):
            return False
        self._file.seek(0)
        self._file.read()  # the mark is cleared by reading the table anew
        return True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def mounts_below(folder: str, mountinfo: str = "/proc/self/mountinfo") -> frozenset[str]:
    """The mount points inside ``folder`` (a share mounted into the source), relative to it."""
    top = os.path.realpath(folder).rstrip("/") + "/"
    points = (m.point for m in _table(mountinfo) or ())
    return frozenset(p[len(top) :] for p in points if p.startswith(top) and p != top)


def _table(mountinfo: str) -> list[Mount] | None:
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    table = []
    for line in lines:
        fields, _, rest = line.partition(" - ")
        parts = fields.split(" ")
        after = rest.split(" ")
        if len(parts) < 5 or not rest:
            continue
        # mountinfo escapes space, tab, newline and backslash in octal
        point, root = (re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), part) for part in (parts[4], parts[3]))
        options = frozenset(after[2].split(",")) if len(after) > 2 else frozenset()
        table.append(Mount(point, after[0], options, parts[2], root))
    return table


def overlapping(a: str, b: str, mountinfo: str = "/proc/self/mountinfo") -> bool:
    """Whether folders ``a`` and ``b`` are one, or one lies inside the other, on the
    filesystem under them, whatever mounts show them: a target bind-mounted from a folder
    of the source passed as a folder elsewhere, and mirror copied its own copies into the
    source, a level deeper every second. By their paths where there is no mount table."""
    if overlaps(Path(a), Path(b)):
        return True
    here, there = _on_filesystem(a, mountinfo), _on_filesystem(b, mountinfo)
    if here is None or there is None or here[0] != there[0]:
        return False
    return overlaps(Path(here[1]), Path(there[1]))


def _on_filesystem(folder: str, mountinfo: str) -> tuple[str, str] | None:
    """(device, the path of ``folder`` within that filesystem); None without a table."""
    mount = mount_of(folder, mountinfo)
    if mount is None:
        return None
    inside = os.path.realpath(folder)[len(mount.point.rstrip("/")) :]
    return mount.device, posixpath.normpath(f"{mount.root.rstrip('/')}/{inside.lstrip('/')}")


def overlaps(a: Path, b: Path) -> bool:
    """Whether two paths are one, or one lies inside the other."""
    return a == b or a in b.parents or b in a.parents


#: a folder with fewer than this share of the files mirror knows it held looks emptied
NEARLY_NONE = 0.1


def nearly_none(present: int, known: int) -> bool:
    """Whether a folder that held ``known`` files mirror knows of, of which ``present``
    are there now, looks like the mount point of a share or disk that is not mounted
    rather than like the folder itself. Only asked where no record says which mount the
    folder was on (an index from an older mirror): with a record, the mount tells."""
    return known > 0 and present < known * NEARLY_NONE


def place_of(folder: str) -> str | None:
    """The mount a folder is on, as ``/mnt/usb (ext4)``; ``""`` when the folder is missing,
    None without a mount table. A disk that is not mounted shows as another place: the
    folder missing, or the mount point's own folder on the disk below."""
    if not os.path.isdir(folder):
        return ""
    return mount_place(folder)


def mount_place(path: str) -> str | None:
    """The mount ``path`` (or its nearest existing parent) is on, as :func:`place_of`
    names it; None without a mount table."""
    mount = mount_of(path)
    return None if mount is None else f"{mount.point} ({mount.fs_type})"


def place_point(place: str) -> Path:
    """The mount point of a place (:func:`place_of`: ``/mnt/usb (ext4)``)."""
    return Path(place.rsplit(" (", 1)[0])


class Expected(NamedTuple):
    """A mount point the system is set up to mount something at."""

    point: str
    #: what says so: the fstab file or the systemd unit
    by: str


def not_mounted(folder: str) -> Expected | None:
    """The mount point that ``folder`` is at or below that /etc/fstab or a systemd mount
    unit lists but nothing is mounted at now: the folder showing is then the one below the
    mount point, not the share's or disk's. None when there is none, or no mount table."""
    table = _table("/proc/self/mountinfo")
    if table is None:
        return None
    return unmounted_above(os.path.realpath(folder), expected_mounts(), (m.point for m in table))


def unmounted_above(folder: str, expected: Iterable[Expected], mounted: Iterable[str]) -> Expected | None:
    """Of the ``expected`` mount points at or above the absolute path ``folder``, the
    deepest one not among the ``mounted`` points (a pure decision)."""
    now = {os.path.normpath(p) for p in mounted}
    deepest: Expected | None = None
    for mount in expected:
        point = os.path.normpath(mount.point)
        inside = folder == point or folder.startswith(point.rstrip("/") + "/")
        if inside and point not in now and (deepest is None or len(point) > len(deepest.point)):
            deepest = mount._replace(point=point)
    return deepest


def expected_mounts(fstab: str = FSTAB, units: str = MOUNT_UNITS) -> list[Expected]:
    """The mount points /etc/fstab lists and systemd mount units name (their Where=)."""
    found = [Expected(point, fstab) for point in fstab_points(_read(Path(fstab)))]
    for unit in sorted(Path(units).glob("*.mount")):
        for line in _read(unit).splitlines():
            if line.strip().startswith("Where="):
                found.append(Expected(line.split("=", 1)[1].strip(), str(unit)))
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def fstab_points(text: str) -> list[str]:
    """The mount points of an fstab's lines, but the root's and swap's (always there, or no
    folder): fields are split on blanks, a space in a path written as ``\\040``."""
    points = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2 or fields[0].startswith("#"):
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[1])
        if point.startswith("/") and point != "/" and (len(fields) < 3 or fields[2] != "swap"):
            points.append(point)
    return points
