"""Walking the source folder: which regular files are there, with size and times.

Only regular files are mirrored. Symlinks are never followed (a link could point outside
the source); FIFOs, sockets and devices are skipped without being opened; names that are
not valid UTF-8 cannot be stored on most targets and are skipped with a reason.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from collections.abc import ItemsView, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISDIR, S_ISREG
from typing import NamedTuple

from mirror.errors import ConfigError
from mirror.filters import Filter, is_junk


class LocalEntry(NamedTuple):
    """One regular file of the source, relative to the source root.

    A NamedTuple rather than a frozen dataclass: a pass builds one per source file
    (hundreds of thousands), and a tuple is built several times faster and smaller.
    """

    path: str
    size: int
    mtime_ns: int
    ino: int = 0


@dataclass(frozen=True, slots=True)
class Skip:
    """A source item that is not mirrored, and why."""

    path: str
    reason: str
    #: it is there but cannot be read: its copies on the targets stay
    unreadable: bool = False
    #: what the user can do about it: a file that should be mirrored and cannot be, as
    #: against one mirror leaves out by design (a symlink, a FIFO)
    fix: str | None = None
    #: a regular file left out for its name: its size, time and inode, by which a file
    #: mirrored before and renamed to that name is known (its copy stays: mirror.plan).
    #: Not compared: a skip is told once a run, whatever its file's size
    entry: LocalEntry | None = field(default=None, compare=False)


#: size, mtime_ns, inode
_RECORD = struct.Struct("<qqQ")
_MTIME = struct.Struct("<q")
#: the start of a record: size, mtime_ns
_SIZE_MTIME = struct.Struct("<qq")
#: the end of a record whose inode is not known
_NO_INO = bytes(8)
_ROOT = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_SUBDIR = _ROOT | os.O_NOFOLLOW
#: the mtimes a 64-bit count of nanoseconds holds (1677 to 2262), as the index stores them
_NS_MIN, _NS_MAX = -(2**63), 2**63 - 1


#: how long after its mtime a file may still be written without its size or time
#: changing: a filesystem that keeps whole seconds (ext3, many shares) or 2 s (FAT) gives
#: every write within that step the time of its start; one with nanosecond times takes
#: them from a clock that moves every few milliseconds
COARSE_NS = 2_000_000_000
FINE_NS = 10_000_000


def racy(mtime_ns: int, now_ns: int) -> bool:
    """Whether a file of this mtime, read at ``now_ns``, may yet be written again unseen
    (its size, time and inode as they were): as git's "racily clean" files, it must not
    be read, or taken for settled, until its time's step has passed."""
    step = COARSE_NS if mtime_ns % 1_000_000_000 == 0 else FINE_NS
    return mtime_ns <= now_ns < mtime_ns + step


def mtime_ns(st: os.stat_result) -> int:
    """``st_mtime_ns``, held to the years a 64-bit count of nanoseconds spans: ext4 and
    others allow dates to 2446 (a camera's wrong clock, ``touch -d 2300-01-01``), and one
    such file must not stop every run. Its copy gets the nearest date in range."""
    return min(max(st.st_mtime_ns, _NS_MIN), _NS_MAX)


class Entries(MutableMapping[str, LocalEntry]):
    """Source entries by path, each kept as one 24-byte record.

    A tree of a million files is held for a whole pass (and by watch mode for good):
    a tuple of three ints costs about 170 bytes per file, a packed record 64.
    """

    __slots__ = ("_records",)

    def __init__(self, entries: Iterable[tuple[str, LocalEntry]] = ()) -> None:
        self._records: dict[str, bytes] = {}
        for rel, entry in entries:
            self[rel] = entry

    def __getitem__(self, rel: str) -> LocalEntry:
        size, mtime_ns, ino = _RECORD.unpack(self._records[rel])
        return LocalEntry(rel, size, mtime_ns, ino)

    def __setitem__(self, rel: str, entry: LocalEntry) -> None:
        self._records[rel] = _RECORD.pack(entry.size, entry.mtime_ns, entry.ino)

    def __delitem__(self, rel: str) -> None:
        del self._records[rel]

    def __contains__(self, rel: object) -> bool:
        return rel in self._records

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def clear(self) -> None:
        # MutableMapping's pops item after item, each from the dict's start: a watch
        # mode rescan of 300,000 files stalled for 30 s on it, nothing sent meanwhile
        self._records.clear()

    def __repr__(self) -> str:
        return f"Entries({dict(self.items())!r})"

    def items(self) -> ItemsView[str, LocalEntry]:
        return _Items(self)

    def same(self, rel: str, size: int, mtime_ns: int, ino: int = 0) -> bool:
        """Whether ``rel`` is here with this size and mtime, and this inode unless either
        inode is 0 (not known). No entry is built to tell."""
        record = self._records.get(rel)
        if record is None:
            return False
        if ino and record == _RECORD.pack(size, mtime_ns, ino):
            return True  # nearly every file of a full pass: one pack, one compare
        return record[:16] == _SIZE_MTIME.pack(size, mtime_ns) and (not ino or record[16:] == _NO_INO)

    def modified_after(self, mtime_ns: int) -> set[str]:
        """Paths of the files modified after ``mtime_ns`` (one check per record, no entries built)."""
        after = _MTIME.unpack_from
        return {rel for rel, record in self._records.items() if after(record, 8)[0] > mtime_ns}

    def copy(self) -> Entries:
        clone = Entries()
        clone._records = self._records.copy()
        return clone


class _Items(ItemsView[str, LocalEntry]):
    """Unpacks each record once (the generic view would look every path up again)."""

    def __init__(self, entries: Entries) -> None:
        super().__init__(entries)
        self._records = entries._records

    def __iter__(self) -> Iterator[tuple[str, LocalEntry]]:
        unpack = _RECORD.unpack
        for rel, record in self._records.items():
            yield rel, LocalEntry(rel, *unpack(record))


@dataclass
class Snapshot:
    """The source as seen by one walk (or a part of it, for incremental updates)."""

    entries: Entries = field(default_factory=Entries)
    skipped: list[Skip] = field(default_factory=list)
    #: folders and files that are there but could not be read ("" for the root): what
    #: the targets hold of them is neither gone nor changed, and stays
    unreadable: set[str] = field(default_factory=set)
    #: the files with more than one name (hard links), which watch mode polls
    linked: set[str] = field(default_factory=set)

    def hold(self, rel: str, reason: str) -> None:
        """``rel`` is there but cannot be read (``""``: the root): skipped, and held back."""
        self.skipped.append(Skip(rel or ".", reason, unreadable=True))
        self.unreadable.add(rel)

    def links(self) -> list[str]:
        """The links the walk skipped (the watcher watches folder by folder where one
        leads to a folder)."""
        return [s.path for s in self.skipped if s.reason == LINK]

    def left_out(self) -> dict[str, tuple[LocalEntry, str]]:
        """The regular files that are there but cannot be mirrored as they are (a name
        that is not valid UTF-8), path -> (entry, why): a file mirrored before and renamed
        to such a name is still in the source, and its copy stays (mirror.plan)."""
        return {s.path: (s.entry, s.reason) for s in self.skipped if s.fix and s.entry is not None}


#: why a link is not mirrored (:func:`kind_of`)
LINK = "a symbolic link (links are not followed)"


def kind_of(mode: int) -> str:
    """What a source entry that is not mirrored is, said as a skip says it."""
    if stat.S_ISLNK(mode):
        return LINK
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return "not a regular file"


def valid_name(rel: str) -> bool:
    """Whether ``rel`` is valid UTF-8 (a name read from the disk decodes with surrogates where not)."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_source(root: Path) -> None:
    """Raise ConfigError unless ``root`` is an existing folder."""
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        raise ConfigError(f"source folder {root} {what}; check the path (or mount it) and try again")


def scan(root: Path, filt: Filter, start: str = "") -> Snapshot:
    """Walk ``root`` (or only its subfolder ``start``) and return what to mirror."""
    snap = Snapshot()
    stack = [start]
    base = str(root)
    while stack:
        rel_dir = stack.pop()
        fd = _open_folder(base, rel_dir, snap)
        if fd is None:
            continue
        try:
            stack += _list_folder(fd, rel_dir, filt, snap)
        except OSError as exc:
            # listing broke off (an I/O error, a share gone stale): the files not yet seen
            # are not gone, so the whole folder is held back like an unreadable one
            snap.hold(rel_dir, f"folder cannot be read ({exc.strerror})")
        finally:
            os.close(fd)
    return snap


def _list_folder(fd: int, rel_dir: str, filt: Filter, snap: Snapshot) -> list[str]:
    """Record the files of one open folder in ``snap``; return its subfolders to walk."""
    records, skipped, linked, pack = snap.entries._records, snap.skipped, snap.linked, _RECORD.pack
    narrows = filt.narrows
    prefix = f"{rel_dir}/" if rel_dir else ""
    valid_dir = valid_name(rel_dir)
    folders = []
    # one loop body for every file: at a few microseconds per file, calls add up; the
    # entries stat through ``fd``, which stays open until they are done
    with os.scandir(fd) as it:
        for item in it:
            name = item.name
            rel = prefix + name
            try:
                st = item.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # vanished between listing and stat: the next event or scan sees it
            except OSError as exc:
                snap.hold(rel, f"cannot be read ({exc.strerror})")
                continue
            mode = st.st_mode
            if S_ISDIR(mode):
                if filt.wants_dir(rel):
                    folders.append(rel)
            elif is_junk(name) or (narrows and not filt.wants_by_pattern(rel)):
                continue
            elif not (valid_dir and (name.isascii() or valid_name(name))):
                entry = LocalEntry(rel, st.st_size, mtime_ns(st), st.st_ino) if S_ISREG(mode) else None
                skipped.append(Skip(rel, "its name is not valid UTF-8", fix="rename it", entry=entry))
            elif S_ISREG(mode):
                try:
                    records[rel] = pack(st.st_size, st.st_mtime_ns, st.st_ino)
                except struct.error:  # kept off the path every file takes
                    records[rel] = pack(st.st_size, mtime_ns(st), st.st_ino)
                if st.st_nlink > 1:
                    linked.add(rel)
            else:
                skipped.append(Skip(rel, kind_of(mode)))
    return folders


def _open_folder(base: str, rel_dir: str, snap: Snapshot) -> int | None:
    """A descriptor of the folder to list, or None (and why in ``snap``) when there is none.

    A subfolder is opened without following a symlink: a folder swapped for a link since
    it was seen (by anyone who may write to the source) must not lead the scan, and so
    the targets, to files outside the source.
    """
    try:
        return os.open(os.path.join(base, rel_dir), _SUBDIR) if rel_dir else os.open(base, _ROOT)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno != errno.ELOOP:  # ELOOP: now a symlink, which the next scan reports
            snap.hold(rel_dir, f"folder cannot be read ({exc.strerror})")
        return None


def stat_paths(root: Path, rels: Iterable[str], filt: Filter) -> dict[str, LocalEntry | None]:
    """Fresh facts for single paths: an entry, or None when it is gone or not mirrored;
    a path that cannot be read (permissions, I/O errors) is left out."""
    result: dict[str, LocalEntry | None] = {}
    # joined as strings: a pathlib join per path was half the time of stat'ing a large batch
    base = os.fspath(root)
    folders: dict[str, bool] = {"": True}
    for rel in rels:
        try:
            st = os.stat(f"{base}/{rel}", follow_symlinks=False)
            # the stat followed any link above the file: a folder swapped for a link to
            # elsewhere must leave its files gone, as the scan (which never follows one) does
            inside = _real_folder(base, rel.rpartition("/")[0], folders)
        except (FileNotFoundError, NotADirectoryError):
            result[rel] = None
            continue
        except OSError:
            continue
        wanted = filt.wants_file(rel) and valid_name(rel) and _dirs_wanted(rel, filt)
        if stat.S_ISREG(st.st_mode) and inside and wanted:
            result[rel] = LocalEntry(rel, st.st_size, mtime_ns(st), st.st_ino)
        else:
            result[rel] = None
    return result


def _real_folder(base: str, rel_dir: str, known: dict[str, bool]) -> bool:
    """Whether each part of ``rel_dir`` is a folder, not a link to one (``known`` caches)."""
    found = known.get(rel_dir)
    if found is None:
        above = _real_folder(base, rel_dir.rpartition("/")[0], known)
        found = known[rel_dir] = above and stat.S_ISDIR(os.lstat(f"{base}/{rel_dir}").st_mode)
    return found


def _dirs_wanted(rel: str, filt: Filter) -> bool:
    parts = rel.split("/")[:-1]
    return all(filt.wants_dir("/".join(parts[: i + 1])) for i in range(len(parts)))
