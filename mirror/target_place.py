"""Where a target writes, told apart from every other spelling of it, and the locks that
keep two mirrors out of one place.

One folder has many names: ``file://`` and a plain path, ``dav://`` and ``webdav://``, a
URL with another timeout, a config's target and ``mirror run SOURCE TARGET``. Two
mirrors writing there removed each other's uploads as leftovers, and one target's
deletions defeated another's ``keep``. :class:`TargetPlace` names the place once, as the
driver tells it, and takes the locks in the state folder (and the machine-wide claim of
:mod:`mirror.place_claim`) that refuse a second writer.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import logging
import os
import posixpath
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

from mirror import registry
from mirror.config import COMMAND_LINE, Config, TargetConfig
from mirror.driver import Capabilities
from mirror.errors import ConfigError, MirrorError, TargetBusy
from mirror.index import Index
from mirror.mounts import overlapping
from mirror.paths import path_key
from mirror.place_claim import PlaceClaim, claimed
from mirror.redact import redact_url

log = logging.getLogger("mirror")


@contextmanager
def located(config: Config, target: TargetConfig, preset: str | None) -> Iterator[None]:
    """A backend's refusal of a target's URL, options or a preset's capabilities, told with
    the config and the tables they came from: of three targets, which one's URL lacks a
    bucket. A target of SOURCE TARGET, whose URL the user just typed, is told as is."""
    try:
        yield
    except ConfigError as exc:
        if config.origin == COMMAND_LINE and not (target.options or preset):
            raise
        at = f"targets.{target.name}" + (f" (with backends.{preset})" if preset else "")
        raise ConfigError(f"{config.origin}: {at}: {exc}") from exc


def resolved(config: Config, target: TargetConfig) -> tuple[registry.Resolved, Capabilities]:
    """The backend, URL and options ``target`` names, and what its driver can do."""
    with located(config, target, None):
        found = registry.resolve(target.url, target.options, config.presets)
    with located(config, target, found.preset):
        # of three targets, the one whose backend's package is missing
        registry.load_driver_class(found.backend)
    try:
        return found, registry.capabilities(found)
    except ConfigError as exc:
        if found.preset is None:
            raise
        # the refusal names the preset's table; the config may not be the only one
        raise ConfigError(f"{config.origin}: {exc}") from exc


class TargetPlace:
    """The place of one target, and its locks in the state folder of ``index_file``."""

    def __init__(self, config: Config, target: TargetConfig, index_file: Path) -> None:
        self.config = config
        self.target = target
        self.index_file = index_file
        self.resolved, self.caps = resolved(config, target)

    @functools.cached_property
    def local_folder(self) -> str | None:
        """The local folder this target writes into, if it is one (Driver.local_folder)."""
        return registry.load_driver_class(self.resolved.backend).local_folder(self.resolved.url)

    @functools.cached_property
    def folder(self) -> str | None:
        """The local folder this target writes into: its own, or one a wrapper of the local
        filesystem (fsspec's dir) writes into (Driver.wrapped_folder)."""
        if self.local_folder is not None:
            return self.local_folder
        driver = registry.load_driver_class(self.resolved.backend)
        return driver.wrapped_folder(self.resolved.url, self.resolved.options)

    def distinct_place(self) -> tuple[str, ...]:
        """:meth:`compared_place`, where a wrapper's is its local folder's: what two
        targets must not share, nor one hold inside the other's."""
        if self.folder is not None:
            return folder_place(self.folder)
        return self.compared_place()

    def place(self) -> tuple[str, ...]:
        """Where this target writes: its folder, resolved, when it is a local one; else its
        server and folder with what picks the account, as its driver tells them
        (:meth:`Driver.place`): two targets that differ only in a timeout write to one
        place, the same URL with another account to another."""
        return self._located_place(compared=False)

    def compared_place(self) -> tuple[str, ...]:
        """:meth:`place` as the target tells folders apart: where names ignore case
        (Dropbox, OneDrive), dropbox://Invoices and dropbox://invoices/2024 are one
        folder and one inside it, and their targets overwrote each other's files. Servers
        are named as the driver compares them (:meth:`Driver.same_server`)."""
        place = self._located_place(compared=True)
        if self.local_folder is not None or self.caps.case_sensitive:
            return place
        kind, where, *account = place
        return (kind, path_key(False)(where), *account)

    def recorded_place(self) -> tuple[str, ...]:
        """The place as indexes record it (meta ``place``, hashed), with every option in
        it: narrowed, it would name another place for every index there is."""
        if self.local_folder is not None:
            return folder_place(self.local_folder)
        host, _, path = self.resolved.url.partition("://")[2].partition("/")
        where = self._where(self.resolved.backend.protocol, host, path)
        return ("url", where, repr(sorted(self.resolved.options.items())))

    def indexes_of_same_place(self) -> list[Path]:
        """The indexes beside :attr:`index_file` that mirrored this source to this place:
        this target's under another name (renamed in the config, its URL spelled anew, or
        what ``mirror run SOURCE TARGET`` mirrored). An index from before places were
        recorded tells a local folder by its URL."""
        mine = place_key(self.recorded_place())
        sources = {str(self.config.named_source), str(self.config.source)}
        return [f for f in sorted(self.index_file.parent.glob("*.sqlite")) if self._mirrored(f, mine, sources)]

    def _mirrored(self, index_file: Path, mine: str, sources: Collection[str]) -> bool:
        """Whether ``index_file`` mirrored one of ``sources`` to the place ``mine``."""
        try:
            index = Index(index_file, readonly=True)
        except MirrorError:
            return False
        try:
            place, url, source = (index.get_meta(k) for k in ("place", "url", "source"))
        finally:
            index.close()
        if source not in sources or not url:
            return False
        if place is not None:
            return place == mine
        try:
            resolved = registry.resolve(url, {}, self.config.presets)
            folder = registry.load_driver_class(resolved.backend).local_folder(resolved.url)
        except MirrorError:
            return False
        return folder is not None and place_key(folder_place(folder)) == mine

    def last_writer(self) -> Path | None:
        """The index beside :attr:`index_file` that last wrote to this place, as its lock
        records it (:func:`note_writer`); None where none does, or it is gone."""
        try:
            name = _writer(self._lock_path().read_bytes())
        except OSError:
            return None
        found = self.index_file.parent / name if name else None
        return found if found is not None and found.exists() else None

    def writes_to(self) -> str | None:
        """The place (:meth:`place`) a remote target's rows describe, as its index records it
        (meta ``writes_to``, hashed). None for a local folder, whose URL names it and whose
        moves the runner tells by its mount, and where the driver does not say which
        options pick its place (:attr:`Driver.place_picks`): a new FTP password would have
        made a new target of it."""
        driver = registry.load_driver_class(self.resolved.backend)
        if self.local_folder is not None or not driver.place_picks:
            return None
        return place_key(self.place())

    def _located_place(self, compared: bool) -> tuple[str, ...]:
        """:meth:`place`; ``compared``: its server named as the driver compares servers
        (:meth:`Driver.same_server`), which the place recorded in the index is not."""
        if self.local_folder is not None:
            return folder_place(self.local_folder)
        resolved = self.resolved
        with located(self.config, self.target, self.resolved.preset):
            driver = registry.load_driver_class(resolved.backend)
            if (inner := driver.wrapped_target(resolved.url, resolved.options)) is not None:
                # a wrapper's place is the place it writes into
                resolved = registry.resolve(*inner, {})
                driver = registry.load_driver_class(resolved.backend)
            server, path, account = driver.place(resolved.url, resolved.options)
        where = self._where(resolved.backend.protocol, driver.same_server(server) if compared else server, path)
        return ("url", where, account)

    def _where(self, protocol: str, server: str, path: str) -> str:
        # one folder has many spellings: dav:// and webdav://, s3a:// and s3://, '//' and
        # '/./' in the path; two targets there deleted each other's files
        path = posixpath.normpath(f"/{path}").strip("/")
        return f"{protocol}://{server}/{path}".rstrip("/")

    def check_overlap(self) -> None:
        """A local target or the state inside the source (or around it) would mirror itself."""
        name, source = self.target.name, self.config.source.resolve()
        folder = self.folder
        target = Path(folder).resolve() if folder is not None else None
        if target is not None and overlapping(str(target), str(source)):
            raise ConfigError(
                f"target {name!r} ({folder}) overlaps the source folder {source}; "
                "choose a target outside the source"
            )
        state = self.index_file.parent.parent.resolve()
        if state == source or source in state.parents:
            raise ConfigError(
                f"the state folder {self.index_file.parent.parent} lies inside the source folder {source}; "
                "use --state-dir or MIRROR_STATE_DIR to put it elsewhere"
            )
        if target is not None and (state == target or target in state.parents):
            # the index would go with the disk: one not mounted would look like a new
            # target, and be filled anew in the empty folder where it is mounted
            raise ConfigError(
                f"the state folder {self.index_file.parent.parent} lies inside the folder of target "
                f"{name!r} ({folder}); use --state-dir or MIRROR_STATE_DIR to put it elsewhere"
            )
        if target is not None and state in target.parents:
            # a state folder removed to start afresh would take the backup with it
            raise ConfigError(
                f"target {name!r} ({folder}) lies inside the state folder {self.index_file.parent.parent}; "
                "choose a target outside it"
            )

    def claim(self) -> PlaceClaim | None:
        """Claim this target's place for this process among this user's mirror processes
        (mirror.place_claim): the place lock only meets mirrors with this state folder."""
        if registry.load_driver_class(self.resolved.backend).in_process:
            return None
        key, account = self._claim_key()
        claim = PlaceClaim(key, account)
        state = self.index_file.parent.parent
        if claim.taken_by is not None:
            # the lock in this state folder was free: the other mirror's is elsewhere, or
            # was this one, deleted under it while it ran (its index open, unlinked)
            detail = f"one with another state folder than {state}, or whose state folder was deleted while it ran"
            raise busy(self.resolved.url, claim.taken_by == "here", detail)
        if claim.stranger:
            log.warning(
                "%s: a process of another user holds the name mirror claims this place by; "
                "ignored, but only mirrors with the state folder %s are kept out of this place now",
                redact_url(self.resolved.url),
                state,
            )
        return claim

    def claimed_by_a_process(self) -> bool:
        """Whether a mirror process of this user mirrors this place, whatever its state
        folder (mirror.place_claim): one whose state folder was deleted under it goes on,
        its index open, and status found no index and said never run."""
        if registry.load_driver_class(self.resolved.backend).in_process:
            return False
        try:
            return claimed(self._claim_key()[0])
        except (MirrorError, OSError):  # a local folder that cannot be resolved is claimed by no one
            return False

    def _claim_key(self) -> tuple[str, str]:
        """The key of this place's claim, which every local user can read (/proc/net/unix),
        and the key of its account, which tells apart the places of this process that share
        the claim. Where the driver does not say which options pick the place
        (:attr:`Driver.place_picks`), every one is in its account, a password too, and a
        short hash of a password is guessed offline: such a place is claimed by its server
        and folder alone, so two mirror processes there with two accounts (two FTP logins,
        two Dropbox accounts) are kept apart as if they wrote to one place."""
        place = self.compared_place()
        driver = registry.load_driver_class(self.resolved.backend)
        published = place if self.local_folder is not None or driver.place_picks else place[:2]
        return place_key(published), place_key(place)

    def _lock_path(self, place: tuple[str, ...] | None = None) -> Path:
        return self.index_file.parent / f"place-{place_key(place or self.compared_place())}.lock"

    def lock(self, place: tuple[str, ...] | None = None) -> int:
        """Take the lock of the place this target writes to (``place``, or its own):
        another index (another target name, ``file://`` for a plain path, another source
        spelling, another timeout) can name the same folder, and two processes there
        remove each other's uploads as leftovers."""
        fd = os.open(self._lock_path(place), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").partition("\n")[0].strip()
            os.close(fd)
            mine = f"pid {os.getpid()}, "
            if place is not None and holder.startswith(mine):
                raise ConfigError(
                    f"target {self.target.name!r} writes into {place[-1]}, as {holder.removeprefix(mine)} does; "
                    "give each target a folder of its own"
                ) from None
            raise busy(self.resolved.url, holder.startswith(mine), holder.removeprefix(mine)) from None
        try:
            # the holder on the first line; the index that wrote there last (note_writer) stays
            _, _, writer = os.pread(fd, 4096, 0).partition(b"\n")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}, target {self.target.name!r}\n".encode() + writer, 0)
        except OSError:
            os.close(fd)  # a full disk: kept, the lock made the next try 'already being mirrored'
            raise
        return fd


def folder_place(folder: str) -> tuple[str, ...]:
    """The place (:meth:`TargetPlace.place`) of a target that is a local folder."""
    return ("folder", str(Path(folder).resolve()))


def place_key(place: tuple[str, ...]) -> str:
    """A place (:meth:`TargetPlace.place`) as a name to store where only this user reads
    (an index, a lock's file name): the options in it may hold secrets, and a short hash of
    a password is guessed offline, so it is never published (mirror.place_claim)."""
    return hashlib.sha256(repr(place).encode()).hexdigest()[:16]


#: how the place lock names the index that last wrote to its place
_WRITER = "index "


def note_writer(fd: int, index_name: str) -> str | None:
    """Record in the place lock ``fd`` (held) that the index ``index_name`` writes there
    now; the file name of the index that did before, None where no mirror that records it
    has (the lock is new, or an older mirror's)."""
    text = os.pread(fd, 4096, 0)
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.partition(b"\n")[0] + f"\n{_WRITER}{index_name}\n".encode(), 0)
    return _writer(text)


def _writer(text: bytes) -> str | None:
    """The file name of the index a place lock's ``text`` says last wrote there, if it does."""
    line = text.partition(b"\n")[2].partition(b"\n")[0].decode(errors="replace")
    return line.removeprefix(_WRITER) if line.startswith(_WRITER) else None


def busy(subject: str, here: bool, detail: str, target: str | None = None, ends: bool = False) -> TargetBusy:
    """``subject`` (a target, a URL) is mirrored by another, which holds its lock: who, and
    what to do about it; ``here``: a Mirror of this process (a host program's), for which
    there is no other process to stop. ``target`` and ``ends``: see TargetBusy."""
    who, advice = ("another Mirror of this process", "close") if here else ("another mirror process", "stop")
    advice = "wait for that one to end" if ends else f"{advice} that one"
    return TargetBusy(f"{subject} is already being mirrored by {who} ({detail})", f"{advice} first", target, ends)
