"""What the kernel's mount table says about a folder: the filesystem it is on, whether
that is reached over a network, and whether its inode numbers tell files apart.

Read from ``/proc/self/mountinfo`` on each call (a mount can change while mirror runs);
where there is no such table (not Linux), nothing is known and callers assume a local
disk.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

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
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), parts[4])
        options = frozenset(after[2].split(",")) if len(after) > 2 else frozenset()
        table.append(Mount(point, after[0], options))
    return table


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
    mount = mount_of(folder)
    return None if mount is None else f"{mount.point} ({mount.fs_type})"
