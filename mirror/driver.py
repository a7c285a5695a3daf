"""What the engine needs from a target besides fsspec: capabilities, errors, a few hooks.

A backend is an fsspec filesystem plus a :class:`Capabilities` record, wrapped in a
:class:`Driver`. The default driver works for any fsspec filesystem, so a new backend
needs only configuration; a backend module subclasses it where its library falls short
(a missing mtime setter, a broken upload path, library exceptions to classify).

Every path a driver method takes is relative to the target root, ``/``-separated, and
already checked by :func:`mirror.paths.check_relative`; the driver joins it to its root,
so no call can reach outside the root. Methods are called from several worker threads at
once where the driver says it is thread-safe (:attr:`Driver.thread_safe`), and from
``concurrency`` of them where the config sets it.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import difflib
import errno
import functools
import inspect
import io
import logging
import os
import re
import socket
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol, TypeVar
from urllib.parse import unquote

from mirror.errors import ConfigError, FatalError, ItemError, MirrorError, Refused, TargetFull, TransientError
from mirror.hashing import HashKind, file_hash
from mirror.paths import ancestors, check_relative, parent, temp_name
from mirror.redact import redact_url

if TYPE_CHECKING:
    import asyncio
    from pathlib import Path

    from fsspec.spec import AbstractFileSystem

T = TypeVar("T")
log = logging.getLogger("mirror")


#: the time steps of filesystems that keep coarser mtimes than nanoseconds
COARSER_TICKS_NS = (100, 1_000, 10_000_000, 1_000_000_000, 2_000_000_000)


@dataclass(frozen=True)
class Capabilities:
    """Facts about a backend that the planner and executor act on."""

    case_sensitive: bool = True
    hash_kind: HashKind = HashKind.NONE
    #: the target keeps the mtime we give it, to this precision
    mtime_settable: bool = False
    mtime_precision_ns: int = 1_000_000_000
    #: the mtimes it can hold (None: any); one outside is kept as the nearest of them
    mtime_range_ns: tuple[int, int] | None = None
    #: a put is committed whole by the server (never visible half-written)
    atomic_put: bool = False
    #: rename over an existing file is atomic: upload to a temp name, then rename
    atomic_rename: bool = False
    #: moves happen on the server, without re-sending the bytes
    server_side_move: bool = False
    #: names refused or silently ignored, compared case-insensitively
    forbidden_names: frozenset[str] = frozenset()
    #: what no name may start with, or hold anywhere (in lower case, compared so)
    forbidden_prefixes: frozenset[str] = frozenset()
    forbidden_infixes: frozenset[str] = frozenset()
    forbidden_chars: str = ""
    #: characters a name may not start / end with (e.g. trailing " ." for Dropbox)
    forbidden_leading: str = ""
    forbidden_trailing: str = ""
    max_name_bytes: int = 255
    max_path_chars: int | None = None
    #: characters the target's own folder adds in front of each path (with the "/"),
    #: where the service counts them in ``max_path_chars``
    root_chars: int = 0
    #: the longest path below the target's folder, in bytes of UTF-8 (S3: 1024 for the
    #: whole key, less its prefix)
    max_path_bytes: int | None = None
    max_file_bytes: int | None = None

    def with_overrides(self, overrides: Mapping[str, Any]) -> Capabilities:
        """A copy with fields replaced from a config table (values already type-checked)."""
        values = dict(overrides)
        if "hash_kind" in values:
            values["hash_kind"] = HashKind(values["hash_kind"])
        if "forbidden_names" in values:
            values["forbidden_names"] = frozenset(n.lower() for n in values["forbidden_names"])
        return dataclasses.replace(self, **values)

    def kept_mtime(self, mtime_ns: int) -> int:
        """The mtime the target holds after being given ``mtime_ns``."""
        if self.mtime_range_ns is None:
            return mtime_ns
        low, high = self.mtime_range_ns
        return min(max(mtime_ns, low), high)

    def mtime_matches(self, there_ns: int, local_ns: int) -> bool:
        """Whether a target file's mtime is the one it keeps for the local file's: to the
        backend's precision, or cut down to a coarser filesystem's tick below it."""
        kept = self.kept_mtime(local_ns)
        if abs(there_ns - kept) < max(self.mtime_precision_ns, 1):
            return True
        # a USB stick or a NAS disk under a local folder or an SFTP server (NTFS keeps
        # 100 ns, exFAT 10 ms, ext3 1 s, FAT 2 s) cuts the time down: unmatched, each
        # listing would send every file again, and verify would never pass
        cut = kept - there_ns
        return any(there_ns % tick == 0 and 0 <= cut < tick for tick in COARSER_TICKS_NS)

    @functools.cached_property
    def refused_pattern(self) -> re.Pattern[str]:
        """Finds any part of a path refused by name or character (one search per path)."""
        rules = ["(?!)"]  # matches nothing, for a target that refuses nothing
        if self.forbidden_chars:
            rules.append(f"[{re.escape(self.forbidden_chars)}]")
        if self.forbidden_leading:
            rules.append(f"(?:^|/)[{re.escape(self.forbidden_leading)}]")
        if self.forbidden_trailing:
            rules.append(f"[{re.escape(self.forbidden_trailing)}](?:/|$)")
        if self.forbidden_names:
            names = "|".join(re.escape(n) for n in sorted(self.forbidden_names))
            rules.append(f"(?:^|/)(?:{names})(?:/|$)")
        if self.forbidden_prefixes:
            rules.append(f"(?:^|/)(?:{'|'.join(re.escape(p) for p in sorted(self.forbidden_prefixes))})")
        rules += [re.escape(infix) for infix in sorted(self.forbidden_infixes)]
        return re.compile("|".join(rules), re.IGNORECASE)


@dataclass(frozen=True)
class RemoteEntry:
    """One file on a target, as listed: path relative to the target root."""

    path: str
    #: None where the target does not tell it (a WebDAV server may leave it out)
    size: int | None
    mtime_ns: int | None = None
    hash: str | None = None
    extra: tuple[tuple[str, str], ...] = field(default=())

    def size_is(self, size: int) -> bool:
        """Whether the file may be ``size`` bytes: it is, or the target did not tell. A
        size not told is not a difference: read as 0, every copy differed, and each
        listing moved it into the trash and sent it again."""
        return self.size is None or self.size == size


def _as_read() -> bool:
    return True


class BatchPut(NamedTuple):
    """One small file of a batch: upload ``local_path`` to ``tmp``, then rename it to ``dst``."""

    local_path: str
    tmp: str
    dst: str
    mtime_ns: int
    #: ``local_path`` already open at its start, for a driver that reads it in place
    #: rather than by name (it may move the offset; the caller closes it); -1 for none
    fd: int = -1
    #: the source file's permission bits, for a driver that can keep them; -1: not known
    mode: int = -1
    #: whether the source file is still the version that was to be sent: asked once it
    #: has been read (:meth:`check`), before the rename
    unchanged: Callable[[], bool] = _as_read

    def check(self) -> None:
        """Refuse the rename of a file that changed while it was read: the temp file may
        hold a mix of two versions, which must not take the place of the copy there."""
        if not self.unchanged():
            raise ItemError("the source file changed while it was read; it is not put in place")


class StateStore(Protocol):
    """Small persistent key/value store a driver may keep state in (e.g. upload sessions).

    The engine hands each driver the store of its target's index; keys are the driver's.
    """

    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str) -> None: ...

    def delete(self, key: str) -> None: ...


class MemoryState:
    """A StateStore that forgets everything at exit (until the engine attaches the index)."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        return self._values.get(key)

    def set(self, key: str, value: str) -> None:
        self._values[key] = value

    def delete(self, key: str) -> None:
        self._values.pop(key, None)


#: the longest a driver waits by itself where a service asks it to (Retry-After): a longer
#: wait is the engine's, which tells it in the log and in status, and ends it at once when
#: mirror stops (a Retry-After of an hour kept a target silent, 'starting', for hours)
QUIET_WAIT = 10.0


def file_in_the_way(path: str) -> str:
    """What to say of a file on a target that stands where a folder must be made."""
    return (
        f"{path} on the target is a file where a folder is needed; if mirror did not put it there "
        "(or delete = keep kept it), a run with --rescan moves it into .mirror-trash/"
    )


def through_link(path: str) -> str:
    """Why a write may not go through the symbolic link at ``path``."""
    return f"{path} on the target is a symbolic link; mirror does not write through it"


class LinkGuard:
    """Keeps a driver's writes out of symbolic links, where a target's folders can be
    links (a local folder, an SFTP server): someone may swap a folder mirror made for a
    link to a folder of theirs, and the system follows it, so every upload, rename and
    delete below it would land there, outside the target. The root itself may be a link.

    Each folder is looked at once a pass (``Driver.begin_pass`` forgets what was found,
    so a watching mirror looks again): a few lstat calls, or one round trip, a folder,
    not a realpath or a round trip a file. Left open: a link swapped in for a folder
    after it was looked at, within the same pass. Workers share one guard; its dict
    operations are atomic, and two looking at one folder at once only look twice.
    """

    def __init__(self, full: Callable[[str], str], modes: Callable[[Sequence[str]], dict[str, int]]) -> None:
        """``modes(rels)``: the lstat mode of each of the root-relative paths that has one."""
        self._full = full
        self._modes = modes
        #: folders looked at in this pass: "" when reached through real folders alone,
        #: else why nothing goes below them; a folder missing or behind a file is not kept
        #: (the write fails by itself, or makes it)
        self._found: dict[str, str] = {}

    def clear(self) -> None:
        self._found = {}

    def check(self, rel: str) -> None:
        """ItemError when a symbolic link stands between the root and ``rel``."""
        self.check_folder(parent(rel))

    def check_folder(self, folder: str) -> bool:
        """ItemError when ``folder`` or one above it is a symbolic link; True when it is
        there, a real folder reached through real ones."""
        if not folder:
            return True
        reason = self._found.get(folder)
        if reason is None:
            reason = self._looked([folder]).get(folder)
        if reason:
            raise ItemError(reason)
        return reason == ""

    def made(self, folder: str) -> None:
        """``folder`` was just made, through real folders."""
        self._found[folder] = ""

    def refusals(self, rels: Sequence[str]) -> list[str]:
        """For each of ``rels``, why nothing may be written there ("" where no symbolic
        link stands above it), looking at the folders not known yet all at once."""
        unknown = {parent(rel) for rel in rels} - self._found.keys() - {""}
        if unknown:
            self._looked(sorted(unknown))
        return [self._found.get(parent(rel)) or "" for rel in rels]

    def _looked(self, folders: list[str]) -> dict[str, str]:
        paths = sorted({at for folder in folders for at in (folder, *ancestors(folder))})
        modes = self._modes(paths)
        found: dict[str, str] = {}
        for folder in folders:
            for at in (*reversed(ancestors(folder)), folder):
                mode = modes.get(at)
                if mode is not None and stat.S_ISLNK(mode):
                    found[folder] = through_link(self._full(at))
                if mode is None or not stat.S_ISDIR(mode):
                    break
            else:
                found[folder] = ""
        self._found.update(found)
        return found


#: where a target's options go, for a message that asks for one: ``mirror run SOURCE
#: TARGET`` has no way to give them
IN_A_CONFIG = "in the target's options in a config file (mirror init writes one; SOURCE TARGET takes no options)"


class Driver:
    """Generic fsspec driver; subclass and override what a backend needs."""

    #: capabilities of the plain fsspec filesystem; subclasses and presets refine them
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: worker threads per target unless the config sets ``concurrency`` (a driver may
    #: refine it once it knows where its target is). One for the generic driver: an fsspec
    #: filesystem need not be thread-safe (FTP's shares one connection among threads, and
    #: four workers failed every file)
    default_concurrency: int = 1
    #: whether threads that work at the same time (the executor's, the bulk lane's) may
    #: share one driver; not an fsspec filesystem's (FTP's holds one control connection,
    #: and a large file and the invoices sent meanwhile mixed up its replies). See
    #: :meth:`for_another_thread`
    thread_safe: ClassVar[bool] = False
    #: large files (``execute.BULK_FILE_BYTES`` and up) sent at once at most, unless the
    #: config sets ``concurrency``; None: as many as any other transfer. For drivers
    #: whose transfers spend their CPU in Python, where more threads fight over the GIL
    bulk_concurrency: int | None = None
    #: files the executor hands to :meth:`send_batch`, :meth:`move_batch` or
    #: :meth:`delete_batch` at once; 1 handles each on its own. Worth more than 1 where
    #: each request costs a round trip and per-request CPU that a batch pays once (SFTP)
    batch_files: int = 1
    #: the options are the fsspec class's arguments, and refused where it has none of
    #: that name or a number is given as anything else (see :meth:`check_target`)
    checks_fs_options: ClassVar[bool] = True
    #: :meth:`root_lost` costs no request (the files live in this process): asked at every
    #: run's first pass, however lately mirror reached the target
    root_lost_free: ClassVar[bool] = False
    #: the files live in this process: no other process can write to its places, so
    #: none is claimed for the whole machine (mirror.place_claim)
    in_process: ClassVar[bool] = False
    #: :meth:`place` names only what picks the folder (server, path, account), not every
    #: option: an index records it (meta ``writes_to``), and an option that now picks
    #: another place (an S3 ``endpoint_url``) makes a new target of it. Not where every
    #: option counts: a new password would have
    place_picks: ClassVar[bool] = False

    def __init__(
        self,
        fs: AbstractFileSystem | None,
        root: str,
        caps: Capabilities | None = None,
        remake: Callable[[], AbstractFileSystem] | None = None,
    ) -> None:
        """``remake``: builds the filesystem anew, once a lost connection dropped it."""
        if fs is not None:
            quiet_loop(fs)
        self._fs = fs
        self._remake = remake
        self.root = root.rstrip("/") or "/"
        self.caps = caps or self.capabilities
        self.state: StateStore = MemoryState()
        #: the source folder, for a backend that gives a folder it makes the permissions
        #: of the source's folder of that path (the runner sets it)
        self.source: Path | None = None

    # -- construction ---------------------------------------------------------------
    @classmethod
    def connect(cls, url: str, options: Mapping[str, Any], caps: Capabilities | None = None) -> Driver:
        """Build the driver for ``url`` (protocol already resolved) with fsspec ``options``."""
        from fsspec.core import url_to_fs

        address, credentials = _credentials_apart(url)
        # a filesystem of its own, not one from fsspec's instance cache that another
        # driver (the bulk lane's) holds too
        options = {**credentials, **options, "skip_instance_cache": True}
        try:
            fs, root = url_to_fs(address, **options)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            if isinstance(exc.__cause__, OSError):
                # a failed connection (see classify_os_error)
                raise _cannot_connect(exc.__cause__, url, options) or classify_os_error(exc) from exc
            # options of the wrong type or name, as the fsspec class takes them, or some it
            # needs (dir:// without its path: "'NoneType' object has no attribute ...")
            name = url.split("://", 1)[0]
            raise ConfigError(
                f"target URL {redact_url(url)}: the {name} backend cannot take these options "
                f"({type(exc).__name__}: {exc}); see its fsspec documentation for the options it needs"
            ) from None
        except OSError as exc:
            if (error := _cannot_connect(exc, url, options)) is not None:
                raise error from exc
            raise
        except (MirrorError, ImportError):  # ImportError: the registry names the package
            raise
        except Exception as exc:
            if isinstance(exc.__cause__, OSError):
                raise
            # refused as the filesystem logged in (FTP's "error_perm: 530 Authentication
            # failed."), which named neither the server nor what to check
            raise ItemError(
                f"target URL {redact_url(url)} refused the connection ({type(exc).__name__}: {exc}); "
                "check the login (username, password) and the other options"
            ) from exc
        # fsspec's filesystems do not connect again by themselves (FTP's, SMB's): after a
        # lost connection every later call failed, for as long as mirror ran
        return cls(fs, root, caps, remake=lambda: url_to_fs(address, **options)[0])

    @classmethod
    def capabilities_for(cls, url: str) -> Capabilities:
        """What this backend promises for ``url``, before any connection. A driver that
        declares no capabilities of its own (the generic one) takes one fact from the
        fsspec class: a filesystem that renames by itself (FTP's RNFR/RNTO) gets uploads
        to a temp name and a rename, so no file is ever seen half-sent under its name,
        and moves made on the server."""
        if cls.capabilities is not Driver.capabilities or not _renames(_fs_class(url)):
            return cls.capabilities
        return dataclasses.replace(cls.capabilities, atomic_rename=True, server_side_move=True)

    def for_another_thread(self) -> Driver | None:
        """A driver of the same target for a thread that works beside this driver's own
        (the bulk lane's): this one where it is thread-safe; else a copy with a
        filesystem of its own, connected on first use, where it can build one; else None."""
        if self.thread_safe:
            return self
        if self._remake is None:
            return None
        other = copy.copy(self)
        other._fs = None
        return other

    @property
    def fs(self) -> AbstractFileSystem:
        """The fsspec filesystem behind this target (built on first use where it can be)."""
        if self._fs is None:
            self._fs = self.make_fs()
        return self._fs

    def make_fs(self) -> AbstractFileSystem:
        """The filesystem of a driver constructed without one (see LocalDriver), or
        whose connection was lost."""
        if self._remake is None:
            raise NotImplementedError
        fs = self._remake()
        quiet_loop(fs)
        return fs

    # -- paths ----------------------------------------------------------------------
    def full(self, rel: str) -> str:
        """The fsspec path of ``rel`` under the root; refuses anything that could escape."""
        check_relative(rel)
        # posixpath.join for a relative path, without its cost (this runs for every action)
        root = self.root
        return f"{root}/{rel}" if root and root[-1] != "/" else root + rel

    def relative(self, name: str) -> str | None:
        """The root-relative path of an fsspec name from a listing, or None if outside."""
        name = self.fs._strip_protocol(name)
        root = self.fs._strip_protocol(self.root).rstrip("/")
        if not name.startswith(root + "/"):
            return None
        return name[len(root) + 1 :]

    # -- reading --------------------------------------------------------------------
    def list(self) -> dict[str, RemoteEntry]:
        """Every file under the root (recursively), keyed by root-relative path."""
        # a listing asks the server: fsspec's directory cache (FTP's) would answer with
        # what an earlier listing saw, for as long as the process runs
        self.fs.invalidate_cache()
        if not self.fs.exists(self.root):
            return {}
        found = self.fs.find(self.root, detail=True, withdirs=False)
        result: dict[str, RemoteEntry] = {}
        for name, info in found.items():
            if name.endswith("/"):
                continue  # an object store's folder marker ('Create folder' in the S3 console)
            rel = self.relative(name)
            if rel is not None and info.get("type", "file") == "file":
                result[rel] = self.entry(rel, info)
        return result

    def stat(self, rel: str) -> RemoteEntry | None:
        """The file at ``rel``, or None when there is none."""
        path = self.full(rel)
        # every answer leads to a write (a file in the way goes to the trash first), so
        # it comes from the server: FTP's info reads the folder's cached listing, and a
        # file someone put there since was overwritten, with no trash copy
        self.fs.invalidate_cache(self.fs._parent(path))
        try:
            info = self.fs.info(path)
        except OSError as exc:
            # smbprotocol's SMBOSError carries ENOENT without being a FileNotFoundError:
            # taken for an error, it failed every move into the trash on SMB
            if isinstance(exc, FileNotFoundError) or exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise
        if info.get("type") != "file":
            return None
        return self.entry(rel, info)

    def entry(self, rel: str, info: Mapping[str, Any]) -> RemoteEntry:
        """Turn an fsspec info dict into a RemoteEntry (override to read a hash)."""
        size = info.get("size")
        return RemoteEntry(path=rel, size=None if size is None else int(size), mtime_ns=info_mtime_ns(info))

    # -- writing --------------------------------------------------------------------
    def put(self, local_path: str, rel: str, mtime_ns: int) -> RemoteEntry | None:
        """Upload one local file to ``rel`` (parent folders exist) and set its mtime.

        Returns what the target now holds when the upload call tells it for free (size,
        hash), else None. Must replace an existing file, never rename around it.
        """
        target = self.full(rel)
        self.fs.put_file(local_path, target)
        if self.caps.mtime_settable:
            self.set_mtime(rel, mtime_ns)
        return None

    def send_batch(self, items: Sequence[BatchPut]) -> Sequence[MirrorError | None]:
        """Upload each item to its temp name and rename it into place; one outcome per item.

        ``None`` means the file is at ``dst``; an error means that item did not get there
        (its temp file may be left for the caller to remove). An exception from the call
        itself, such as a lost connection, counts for every item. This version sends the
        items one by one; a backend overrides it to pipeline them.
        """

        def send(item: BatchPut) -> None:
            self.put(item.local_path, item.tmp, item.mtime_ns)
            item.check()
            self.move(item.tmp, item.dst)

        return self._one_by_one(send, items)

    def move_batch(self, moves: Sequence[tuple[str, str]]) -> Sequence[MirrorError | None]:
        """:meth:`move` each ``(src, dst)`` (parent folders exist); one outcome per move,
        as :meth:`send_batch` gives them. This version moves them one by one."""
        return self._one_by_one(lambda move: self.move(*move), moves)

    def delete_batch(self, rels: Sequence[str]) -> Sequence[MirrorError | None]:
        """:meth:`delete` each file; one outcome per file, as :meth:`send_batch` gives
        them (a file already gone is done or an ItemError, as :meth:`delete` has it). This
        version deletes them one by one."""
        return self._one_by_one(self.delete, rels)

    def _one_by_one(self, work: Callable[[T], None], items: Sequence[T]) -> Sequence[MirrorError | None]:
        """The outcome of ``work`` on each item. After a transient failure (most often a
        target gone) the rest are not tried: each would wait for it in turn, and the
        executor tries them again with its retries."""
        outcomes: list[MirrorError | None] = []
        for item in items:
            try:
                work(item)
            except Exception as exc:
                error = exc if isinstance(exc, MirrorError) else self.classify(exc)
                outcomes.append(error)
                if isinstance(error, TransientError):
                    return outcomes + [error] * (len(items) - len(outcomes))
            else:
                outcomes.append(None)
        return outcomes

    def local_hash(self, local_path: str) -> str | None:
        """The hash the target would report for this local file (caps.hash_kind), or None."""
        return file_hash(local_path, self.caps.hash_kind)

    def same_bytes(self, local_path: str, rel: str) -> bool | None:
        """Whether the file at ``rel`` holds the bytes of the local file ``local_path``;
        None where this driver cannot tell without a download (the generic one). Asked
        only before a copy is kept (``Put.keep``), where no hash of it tells."""
        return None

    def set_mtime(self, rel: str, mtime_ns: int) -> None:
        """Set the modification time of ``rel``; only called when caps say it can."""
        raise NotImplementedError

    def move(self, src: str, dst: str) -> None:
        """Move ``src`` to ``dst``, replacing ``dst``. Never expands glob characters."""
        if _renames(type(self.fs)):
            try:
                self.fs.mv(self.full(src), self.full(dst))
            except Exception:
                # SMB and some FTP servers (IIS: '550 File exists') refuse to rename onto
                # a name, each with an error of its own: every changed file failed, and
                # with it every deletion
                if self.stat(dst) is None:
                    raise
                self._rename_over(src, dst)
            return
        self.fs.cp_file(self.full(src), self.full(dst))
        self.fs.rm_file(self.full(src))

    def _rename_over(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst`` on a filesystem that renames onto no name: the file
        there is set aside first, not removed, and put back if the rename fails still, so
        the copy is never lost. One left aside by a crash has a temp name: the next
        listing removes it, and sends the file again if ``dst`` is missing."""
        aside = temp_name(dst, os.urandom(6).hex())
        self.fs.mv(self.full(dst), self.full(aside))
        try:
            self.fs.mv(self.full(src), self.full(dst))
        except BaseException:
            self.fs.mv(self.full(aside), self.full(dst))
            raise
        self.fs.rm_file(self.full(aside))

    def delete(self, rel: str) -> None:
        self.fs.rm_file(self.full(rel))

    def makedirs(self, rel_dir: str) -> None:
        """Make the folder ``rel_dir`` and its parents; ``""`` is the root itself."""
        path = self.root if rel_dir == "" else self.full(rel_dir)
        # fsspec's makedirs asks exists() of the folder and each one above it, which a
        # cached listing answers: a folder made or removed by someone since failed the
        # mkdir or the upload into it until the next full listing
        self.fs.invalidate_cache()
        self.fs.makedirs(path, exist_ok=True)

    def root_there(self) -> bool | None:
        """Whether the folder the target writes into is there, as one cheap request tells.
        None where the backend does not say: its uploads make missing folders by
        themselves (Dropbox), or it has none (S3), or :meth:`root_remade` tells the runner
        of a folder made again (OneDrive, Google Drive); the executor then makes the root
        like any folder. Where it says False, a target folder mirror has filled is not
        made again (see ``Executor._check_root``)."""
        return None

    def forget_folder(self, rel_dir: str) -> None:
        """Forget what this driver knows of folder ``rel_dir`` and those below it, so the
        next :meth:`makedirs` makes them again: someone may have removed them."""
        if self._fs is not None:
            self._fs.invalidate_cache()  # by path, some implementations drop that entry alone

    def drop_abandoned(self) -> Sequence[str]:
        """Remove what uploads this driver started, and a stop or a kill cut off, left on
        the target out of sight of :meth:`list` (S3's open multipart uploads, whose parts
        are stored and billed); the paths they were for. A listing pass asks, when no
        upload of this process is under way."""
        return []

    def begin_pass(self) -> None:
        """A pass starts: what the driver learned of the target's folders in the last one
        may no longer hold (see :class:`LinkGuard`)."""

    def root_lost(self, known: str) -> bool | None:
        """Whether ``known``, the file the index says mirror put there longest ago, is
        gone, as one cheap request tells: someone deleted, emptied or made anew the
        folder in a web app, or deleted the part of it holding that file, or a NAS share
        or bucket came back empty. The index then says nothing of what the target holds,
        and only a listing does. Asked of that file, not of the folder: the uploads since
        make a folder deleted anew (S3 has none), and fill one emptied. None where the
        backend cannot tell without listing the folder (FTP's answer for a file is its
        folder's listing). The first pass of a run asks it, with or without work, so does
        the first pass after the target was found down, and a watching mirror's first
        pass SEEN_FOR after it last asked."""
        return None

    def root_remade(self) -> bool:
        """Whether this driver made the root folder again since it last listed the target:
        it had been there, so what mirror put in it is gone. Known from the answers to its
        own requests, without one more: every pass asks it."""
        return False

    def remove_dir_if_empty(self, rel_dir: str) -> bool:
        """Remove the folder if it holds no file, with the empty folders below it; True
        when it was removed. A run cut short between deleting a folder's files and
        pruning its folders leaves such a tree, and a file may need its name."""
        path = self.full(rel_dir)
        self.fs.invalidate_cache(path)  # a cached listing may miss a file put there since
        try:
            for child in self.fs.ls(path, detail=True):
                name = child["name"].rstrip("/").rsplit("/", 1)[-1]
                if child.get("type") != "directory" or not self.remove_dir_if_empty(f"{rel_dir}/{name}"):
                    return False
            self.fs.rmdir(path)
        except OSError:  # gone, not a folder, or not removable: not removed
            return False
        return True

    def local_root(self) -> str | None:
        """The folder on this machine the target writes into, if it is one: behind a
        wrapper (fsspec's dir, simplecache) a generic filesystem can be the local one."""
        from fsspec.implementations.dirfs import DirFileSystem
        from fsspec.implementations.local import LocalFileSystem
        from fsspec.spec import AbstractFileSystem

        fs, root = self._fs, self.root
        while fs is not None and not isinstance(fs, LocalFileSystem):
            inner = getattr(fs, "fs", None)
            if not isinstance(inner, AbstractFileSystem):
                return None
            if isinstance(fs, DirFileSystem):
                root = f"{fs.path.rstrip('/')}/{root.lstrip('/')}"
            fs = inner
        return root if fs is not None else None

    @classmethod
    def check_target(cls, url: str, options: Mapping[str, Any]) -> None:
        """Raise ConfigError for a URL or options this backend can never use, without
        connecting: a mistake in the config stops the run before any target is touched.
        The generic driver checks that the fsspec class can delete files (``zip://``,
        ``tar://`` and ``http://`` are read-only), and that it gets every argument it
        requires (``ftp:///x`` names no host), from the URL or the options, and no
        argument it does not take (``passwd`` for ``password``)."""
        fs_class = _fs_class(url)
        if fs_class is None:
            return
        protocol = url.split("://", 1)[0]
        if not _deletes(fs_class):
            raise ConfigError(
                f"target URL {url}: fsspec's {protocol} filesystem ({fs_class.__name__}) cannot delete "
                "files, so it cannot be kept identical to the source; use a writable one (mirror backends)"
            )
        if cls.checks_fs_options:
            _check_options(url, protocol, fs_class, options)
        from_url = fs_class._get_kwargs_from_urls(url)
        if "url_query" in from_url:
            # fsspec takes it for a query: ftp://host/inv?2024 wrote into inv, and so did
            # another target's ftp://host/inv?archive, each deleting the other's files
            raise ConfigError(
                f"target URL {url}: fsspec's {protocol} filesystem reads a '?' in its URL as the end of "
                "the folder's path; choose a folder whose name has no '?'"
            )
        given = {**from_url, **options}
        required = [
            p.name
            for p in list(inspect.signature(fs_class.__init__).parameters.values())[1:]
            if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        # ftp://me@/x gives its host as ''
        missing = [name for name in required if given.get(name) in (None, "")]
        if missing:
            # github:// takes org and repo, not a host: its URL form is its own
            form = f" ({protocol}://HOST/path)" if missing == ["host"] else ""
            raise ConfigError(
                f"target URL {url}: the {protocol} backend needs {', '.join(missing)}, "
                f"from the URL{form} or from options"
            )

    @classmethod
    def writable(cls, protocol: str) -> bool:
        """Whether fsspec's filesystem of ``protocol`` can delete files, as a target's must
        (``mirror backends`` marks those that cannot); True where it names none."""
        fs_class = _fs_class(f"{protocol}://")
        return fs_class is None or _deletes(fs_class)

    @classmethod
    def local_folder(cls, url: str) -> str | None:
        """The local folder a target URL writes into, if it is one (checked against the source)."""
        return None

    @classmethod
    def wrapped_folder(cls, url: str, options: Mapping[str, Any]) -> str | None:
        """The local folder a wrapper writes into, as the URL and options tell before any
        connection: fsspec's dir over the local filesystem (``dir://invoices`` with
        ``path`` and ``target_protocol = "file"``). Checked against the source and the
        other targets before any target is touched; a plain target on that folder, added
        beside it, got its files sent before the run found out. :meth:`local_root` finds
        the other wrappers once connected."""
        from fsspec.implementations.dirfs import DirFileSystem
        from fsspec.implementations.local import LocalFileSystem

        base = options.get("path") or options.get("fo")
        if options.get("target_protocol") not in (None, "file", "local") or not isinstance(base, str) or not base:
            return None  # told before the class is looked up: that imports its client library
        fs_class = _fs_class(url)
        if fs_class is None or not issubclass(fs_class, DirFileSystem) or "fs" in options:
            return None
        inner = url.partition("://")[2].lstrip("/")
        return os.path.abspath(f"{LocalFileSystem._strip_protocol(base).rstrip('/')}/{inner}")

    @classmethod
    def wrapped_target(cls, url: str, options: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
        """The URL and options of the target a wrapper of another filesystem writes into:
        fsspec's dir over FTP (``dir://inv`` with ``path = "/"``, ``target_protocol =
        "ftp"`` and the server in ``target_options``) is ``ftp:///inv``. A plain FTP target
        on that folder was taken for another place, and its deletions defeated the
        wrapper's ``keep``. None for any other target, and for dir over the local
        filesystem (:meth:`wrapped_folder`)."""
        from fsspec.implementations.dirfs import DirFileSystem

        base, protocol = options.get("path") or options.get("fo"), options.get("target_protocol")
        if protocol in (None, "file", "local") or not isinstance(protocol, str) or not isinstance(base, str):
            return None
        fs_class = _fs_class(url)
        if fs_class is None or not issubclass(fs_class, DirFileSystem) or "fs" in options:
            return None
        inner = url.partition("://")[2].lstrip("/")
        return f"{protocol}://{base.rstrip('/')}/{inner}", dict(options.get("target_options") or {})

    @classmethod
    def place(cls, url: str, options: Mapping[str, Any]) -> tuple[str, str, str]:
        """Where a target of ``url`` (protocol already resolved) with ``options`` writes,
        to tell two targets apart: (its server, as shown in messages; the folder's path
        there; what else picks the account, never shown). Only what picks the folder
        counts: two targets that differ in a timeout or a key file write to one folder,
        and one's deletions defeat the other's ``keep``. The generic driver cannot tell
        which of an fsspec filesystem's options pick it, so every one of them does, with
        the server, port and login however the URL and the options share them out (two
        FTP targets, one with the port in its URL and one in its options, wrote to one
        folder and deleted each other's kept files)."""
        host, _, path = url.partition("://")[2].partition("/")
        fs_class = _fs_class(url)
        if fs_class is None:
            return host, path, repr(sorted(options.items()))
        address, login = _credentials_apart(url)
        given = {**fs_class._get_kwargs_from_urls(address), **login, **options}
        if not given.get("host"):
            return host, path, repr(sorted(options.items()))  # a filesystem with no server of its own
        server = str(given.pop("host"))
        server = f"[{server}]" if ":" in server and not server.startswith("[") else server
        port = given.pop("port", None)
        return f"{server}:{port}" if port not in (None, "") else server, path, repr(sorted(given.items()))

    @classmethod
    def same_server(cls, server: str) -> str:
        """``server``, as :meth:`place` gives it, named as two targets' places are compared:
        one name for all the spellings of one server the backend knows of. Only compared,
        never recorded: an index records its place as :meth:`place` gives it. This version
        takes this machine's names for itself for one (two targets on one bucket, through
        localhost and 127.0.0.1, deleted each other's kept files)."""
        return _LOOPBACK.sub(r"\1localhost", server, count=1)

    # -- errors -----------------------------------------------------------------------
    def classify(self, exc: BaseException) -> MirrorError:
        """Turn a library exception into one of mirror's errors (see mirror.errors). A
        transient one may have cost the connection (a server's idle timeout, a restart):
        where the driver can build its filesystem anew, the next call does."""
        error = classify_os_error(exc)
        if isinstance(error, TransientError) and self._remake is not None:
            self._fs = None
        return error

    def close(self) -> None:
        """Release connections; the driver is not used afterwards."""


def _cannot_connect(exc: OSError, url: str, options: Mapping[str, Any]) -> TransientError | None:
    """A connection to the target's server that failed as a driver was built, told with
    the server and what to check; None for any other error. Told as the bare exception
    ("ConnectionRefusedError: [Errno 111] Connection refused"), it named no server."""
    if not (
        isinstance(exc, (ConnectionRefusedError, TimeoutError, socket.gaierror))
        or exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH)
    ):
        return None
    why = (exc.strerror or str(exc) or "timed out").lower()
    port = f" port {options['port']}" if "port" in options else ""
    return TransientError(
        f"cannot connect to {redact_url(url)}{port} ({why}): is the server running, and are the host and "
        "port right?"
    )


def classify_os_error(exc: BaseException) -> MirrorError:
    """The classification every backend shares for plain Python exceptions."""
    if isinstance(exc, MirrorError):
        return exc
    # a library may report a failed connection as an error of its own raised from the
    # OSError (smbprotocol's ValueError "Failed to connect to ...: Connection refused"):
    # taken for an option refused, it stopped the target for an hour
    cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
    text = f"{type(exc).__name__}: {exc}" if cause is exc else str(exc)
    if isinstance(cause, (ConnectionError, TimeoutError, EOFError)):
        return TransientError(text)
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
        # a disk out of inodes says ENOSPC too, while df -h shows it nearly empty
        return TargetFull(
            f"target is full ({cause.strerror}): out of space or of inodes (df -h, df -i); free some there"
        )
    if isinstance(cause, OSError) and cause.errno == errno.EROFS:
        return FatalError("target is read-only; mount it writable")
    if isinstance(cause, PermissionError) and cause.filename:
        # the file named is most often an upload's temp file, which the user never saw:
        # its folder refused it (an immutable folder, a share of another owner)
        folder = os.path.dirname(os.fsdecode(cause.filename)) or "."
        return Refused(
            f"cannot write into {folder} ({(cause.strerror or 'permission denied').lower()}): "
            "check the folder's owner, permissions and attributes (ls -ld, lsattr -d)"
        )
    if isinstance(exc, PermissionError):
        return Refused(text)
    return ItemError(text)


def quiet_loop(fs: AbstractFileSystem) -> None:
    """Keep what asyncio reports on an async filesystem's event loop (fsspec's I/O thread)
    out of the user's log, but for -v. aiohttp leaves the task that writes a request body
    unawaited when a server resets the connection, and asyncio's default handler logged
    each as 'error Task exception was never retrieved', with no target named, one per
    request; the request itself fails, and the driver classifies and retries that."""
    from fsspec.asyn import AsyncFileSystem

    if isinstance(fs, AsyncFileSystem):
        fs.loop.set_exception_handler(_loop_exception)


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    log.debug("async I/O: %s", context.get("message"), exc_info=context.get("exception"))


def info_mtime_ns(info: Mapping[str, Any]) -> int | None:
    """The modification time in an fsspec info dict, whatever key a backend uses."""
    for key in ("mtime", "client_modified", "LastModified", "last_modified", "modified", "modifiedTime"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.UTC)
            return int(value.timestamp() * 1_000_000) * 1000
        if isinstance(value, (int, float)):
            return int(value * 1_000_000) * 1000
        if isinstance(value, str):
            try:
                parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            return info_mtime_ns({key: parsed})
    return None


def check_url_path(url: str) -> None:
    """Refuse a URL whose path a ``?`` or ``#`` cuts short: two targets ``.../inv#a`` and
    ``.../inv#b`` would both write into ``.../inv``, each taking the other's files."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        mark = "?" if "?" in url.split("#", 1)[0] else "#"
        raise ConfigError(
            f"target URL {url}: a {mark!r} ends the path in a URL; write it as {'%3F' if mark == '?' else '%23'} "
            "if the folder's name holds it"
        )


class ReadToCommit(io.BufferedReader):
    """A source file opened for an upload that the target commits as its last part
    arrives (a Dropbox, OneDrive or Google Drive upload session): the read that reaches
    the end first checks that the file is still as it was when opened. A file rewritten
    while its parts went out was committed as bytes of two versions, in place of the good
    copy, until a later pass sent it again; refused, nothing is committed, and the
    executor sends it again once it settles."""

    def __init__(self, path: str, size: int) -> None:
        """``size``: the bytes the upload sends, as the driver found them before."""
        super().__init__(io.FileIO(path, "rb"))
        self._size = size
        self._opened = os.fstat(self.fileno())

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if self.tell() >= self._size:
            now, opened = os.fstat(self.fileno()), self._opened
            if not now.st_size == opened.st_size == self._size or now.st_mtime_ns != opened.st_mtime_ns:
                raise ItemError("the source file changed while it was read; the upload was not committed")
        return data


def check_verify(protocol: str, options: Mapping[str, Any]) -> None:
    """Refuse a ``verify`` option (TLS certificates) that is neither true, false nor the
    path of a CA bundle file: taken as a path, verify = "no" failed every request with
    'No such file or directory', naming neither the option nor the file."""
    verify = options.get("verify", True)
    if not isinstance(verify, bool) and not (isinstance(verify, str) and os.path.isfile(verify)):
        raise ConfigError(
            f"{protocol} option verify = {verify!r} names no CA bundle file; give true, false or the path of one"
        )


def _fs_class(url: str) -> type[AbstractFileSystem] | None:
    """The fsspec class of ``url``'s protocol, if it can be imported."""
    from fsspec.registry import get_filesystem_class

    try:
        return get_filesystem_class(url.split("://", 1)[0])  # type: ignore[no-any-return]
    except (ImportError, ValueError):
        return None


#: this machine's names for itself as a place's server (after any scheme and user@)
_LOOPBACK = re.compile(
    r"^((?:[a-z0-9+.-]+://)?(?:[^/@]*@)?)(?:localhost|127(?:\.\d{1,3}){3}|\[?(?:::1|0:0:0:0:0:0:0:1)\]?)(?=[:/]|$)",
    re.IGNORECASE,
)


def _credentials_apart(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without the user name and password in it, and those as the options the
    fsspec class takes them by, percent-decoded. fsspec hands them on as written, and a
    password holding '@', '#', ':' or '/' can only be written encoded: ftp://me:p%40ss@host
    logged in with 'p%40ss', and failed with '530 Authentication failed' at every run."""
    scheme, _, rest = url.partition("://")
    login, at, address = rest.partition("/")[0].rpartition("@")
    fs_class = _fs_class(url)
    if not at or fs_class is None:
        return url, {}
    from_url = fs_class._get_kwargs_from_urls(url)
    credentials = {
        key: unquote(from_url[key]) for key in ("username", "password") if isinstance(from_url.get(key), str)
    }
    if not credentials:
        return url, {}  # a class that takes no login from its URLs: the URL is its own
    return f"{scheme}://{address}{rest[len(login) + 1 + len(address) :]}", credentials


def _check_options(
    url: str, protocol: str, fs_class: type[AbstractFileSystem], options: Mapping[str, Any]
) -> None:
    """Refuse options the fsspec class takes no argument for, and numbers, true or false,
    and text written as anything else: FTP's class swallows any name, so 'passwd' for
    'password' surfaced as '530 Authentication failed', port = "2121" as a Python
    comparison error, and tls = "yes" and password = 12345 as errors at every connection."""
    params = _init_parameters(fs_class)
    if params is not None:
        unknown = sorted(set(options) - params.keys())
        if unknown:
            named = []
            for name in unknown:
                close = difflib.get_close_matches(name, params, n=1)
                named.append(f"{name} (did you mean {close[0]}?)" if close else name)
            raise ConfigError(
                f"target URL {url}: unknown {protocol} option(s) {', '.join(named)}; "
                f"known: {', '.join(sorted(params))}"
            )
    for name, value in options.items():
        default = params.get(name) if params is not None else None
        if isinstance(default, bool):
            wanted, kind = isinstance(value, bool), "true or false"
        elif isinstance(default, (int, float)):
            wanted, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        elif isinstance(default, str) or name in _TEXT_OPTIONS:
            wanted, kind = isinstance(value, str), "text (in quotes)"
        else:
            continue
        if not wanted:
            like = f", like its default {default!r}" if default not in (None, "") else ""
            raise ConfigError(f"target URL {url}: {protocol} option {name} must be {kind}{like}, not {value!r}")


#: what fsspec's filesystems take only as text, whatever their defaults say (None)
_TEXT_OPTIONS = frozenset({"host", "username", "user", "password"})


def _init_parameters(fs_class: type[AbstractFileSystem]) -> dict[str, Any] | None:
    """The argument names an fsspec class takes, with their defaults (None for those
    without): its own and those its ``**kwargs`` hand on to the classes it is built on,
    down to fsspec's own (its listings cache, its instance cache). None where a class
    takes ``*args`` and ``**kwargs`` alone, and so says nothing of what they are."""
    from fsspec.dircache import DirCache
    from fsspec.spec import AbstractFileSystem

    found: dict[str, Any] = {"skip_instance_cache": False}
    for cls in (*fs_class.__mro__, DirCache):
        if "__init__" not in vars(cls) or cls is AbstractFileSystem:
            continue
        params = list(inspect.signature(vars(cls)["__init__"]).parameters.values())[1:]
        named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if cls is fs_class and not named:
            return None
        for p in named:
            found.setdefault(p.name, None if p.default is p.empty else p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return found


def _deletes(fs_class: type[AbstractFileSystem]) -> bool:
    """Whether the filesystem can delete a file: read-only ones (archives, HTTP) keep
    fsspec's default, which raises NotImplementedError. Caches and async wrappers hand
    every call on to the filesystem they wrap, which the class alone cannot tell."""
    from fsspec.asyn import AsyncFileSystem
    from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper
    from fsspec.implementations.cached import CachingFileSystem
    from fsspec.spec import AbstractFileSystem

    if issubclass(fs_class, (CachingFileSystem, AsyncFileSystemWrapper)):
        return True
    defaults = {getattr(base, name, None) for base in (AbstractFileSystem, AsyncFileSystem) for name in _DELETES}
    return any(getattr(fs_class, name, None) not in defaults for name in _DELETES)


#: the methods an fsspec filesystem deletes a file with, one calling the next
_DELETES = ("rm_file", "_rm_file", "_rm", "rm")


def _renames(fs_class: type[AbstractFileSystem] | None) -> bool:
    """Whether the filesystem renames by itself, where fsspec's generic mv would copy and
    delete (and expand glob characters in names on the way)."""
    from fsspec.implementations.dirfs import DirFileSystem
    from fsspec.spec import AbstractFileSystem

    if fs_class is None or issubclass(fs_class, DirFileSystem):
        return False  # it hands mv on to the filesystem it wraps, whatever that does
    return fs_class.mv is not AbstractFileSystem.mv
