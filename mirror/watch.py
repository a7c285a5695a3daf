"""Watching the source: watchfiles events become batches of settled, re-stat'ed paths.

Events are hints, not facts: every path an event names is stat'ed again, a new folder is
scanned whole (inotify can miss files created right after their folder), and a file is
handed on only once it has settled (size and mtime unchanged for ``settle`` seconds); a
file that never stops changing waits, without holding up any other. The watcher never
uploads anything; it asks for a full rescan when it cannot trust itself.
"""

from __future__ import annotations

import logging
import os
import resource
import stat
import threading
import time
from collections.abc import Container, Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path

import watchfiles
from watchfiles._rust_notify import WatchfilesRustInternalError

from mirror import inotify
from mirror.filters import Filter
from mirror.mounts import Identity, MountTableWatch, folder_identity, mounts_below
from mirror.paths import ancestors
from mirror.scan import LocalEntry, kind_of, mtime_ns, racy, scan, stat_paths, valid_name

log = logging.getLogger("mirror")

#: how long watchfiles gathers events after the last one (its default, 1.6 s, is too slow)
DEBOUNCE_MS = 200
STEP_MS = 30
#: wake-up period while idle, to re-check files that are settling
TICK_MS = 100
#: up to this many folders to look below at once, one prefix test per known file is
#: quickest; beyond it, one look-up per parent folder of each known file
FEW_FOLDERS = 16
#: seconds between looks at a folder that holds a name that is not valid UTF-8: notify's
#: watcher ends at each event that names one (and polling fails on it too), so such a
#: folder is looked at, not watched
ODD_LOOK = 0.3
#: a file still changing after this many seconds is named in a warning, once
RESTLESS_AFTER = 60.0
#: files with more than one name (hard links) are stat'ed this often, at most: inotify
#: tells a change by the name it was written through only, and none at all for a name
#: outside the source. Where there are many, at most LINK_STATS_PER_S a second
LINK_POLL = 1.0
LINK_STATS_PER_S = 5_000
#: in poll mode, a whole scan this often: watchfiles' poller compares modification times
#: in whole seconds, and missed a file rewritten, or two swapped by renames, within one
POLL_SWEEP = 10.0
#: about how many inotify events each kind of change stands for (a new file: created,
#: opened, written, closed), to tell a burst that may have filled the kernel's queue
EVENTS_PER_CHANGE = {watchfiles.Change.added: 4, watchfiles.Change.modified: 3, watchfiles.Change.deleted: 1}
#: a burst of at least this share of the queue's events is taken for an overflow: a file
#: can stand for more events than counted (a chmod after writing it), and a rescan is one
#: local scan
OVERFLOW_SHARE = 0.5
#: a wait for watchfiles' next batch this much longer than the CPU time the process used
#: meanwhile (it returns within about a third of a second) means the whole process was
#: held up, notify's reader of the queue with it; the process's own threads contending
#: for the GIL use the CPU time they take
HELD_UP_AFTER = 1.0
#: seconds between rescans for hold-ups, at least; one within them is rescanned for then
HELD_UP_RESCANS = 10.0
#: looks at the files settling this far apart mean the watcher was held up (its ticks
#: come every TICK_MS, a batch within DEBOUNCE_MS): the time between proves no quiet
LOOK_GAP = 0.5
#: the kernel's inotify settings, in /proc/sys/fs/inotify
INOTIFY_SETTINGS = Path("/proc/sys/fs/inotify")
#: the same limits set per user namespace (a container's): the lower one holds
USER_SETTINGS = Path("/proc/sys/user")
_IN_USER_NS = {"max_user_watches": "max_inotify_watches", "max_user_instances": "max_inotify_instances"}


@dataclass(frozen=True)
class Batch:
    """Settled changes: path -> entry (None: gone). ``rescan``: trust nothing, scan all."""

    changes: dict[str, LocalEntry | None]
    rescan: bool = False
    #: the source folder is missing: nothing to watch until it is back
    missing: bool = False


Signature = tuple[int, int, int] | None
#: one name of a folder as looked at: its type, size, time and inode (a folder's type and
#: inode only: its time changes with every file made in it)
Look = tuple[int, int, int, int]


class SourceWatcher:
    def __init__(
        self,
        root: Path,
        link: Path | None,
        filt: Filter,
        settle: float,
        poll: bool,
        stop: threading.Event,
        known: MutableMapping[str, LocalEntry],
        retry_every: float = 3600.0,
    ) -> None:
        self.root = root
        #: the source as given, through a link that leads to ``root`` (Config.source_link)
        self.link = link
        self.filt = filt
        self.settle = settle
        self.poll = poll
        #: whether the current watcher got as far as its first tick (its watches in place)
        self._began = False
        #: why the source is polled though inotify was asked for (a kernel limit), the
        #: limits already warned of, and when to try inotify again
        self.fallback: str | None = None
        self._warned: set[str] = set()
        self.retry_every = retry_every
        self._retry_at = 0.0
        #: inotify events the current burst stands for (event batches with no idle tick
        #: between them), and how many changes it brought
        self._burst = 0
        self._burst_changes = 0
        #: the paths of the burst's last batch
        self._burst_paths: set[str] = set()
        #: how long the process was held up since the last rescan for it, and when that was
        self._held_up = 0.0
        self._held_up_rescan = float("-inf")
        #: the inotify instance of the watcher at hand (its file descriptor), the folders of
        #: this event batch that must have a watch in it, the folder without one that
        #: restarted the watcher, and whether /proc's list of watches can be trusted here
        self._inotify_fd: int | None = None
        self._new_folders: set[str] = set()
        self._rewatching: str | None = None
        self._check_watches = True
        #: the watcher told that the source folder itself was deleted
        self._root_deleted = False
        self.stop = stop
        #: the source as last handed on; kept current so folder deletes can be expanded
        self.known = known
        self._pending: dict[str, tuple[Signature, float]] = {}
        #: when :meth:`_settled` last looked at the files settling (monotonic)
        self._looked: float | None = None
        #: when each pending file began changing, and those a warning already named: a
        #: file that never settles (a log someone left in the folder) is never sent
        self._changing_since: dict[str, float] = {}
        self._told: set[str] = set()
        #: folders of this event batch whose known files may be gone, and the files the
        #: batch's scans found (see :meth:`_expand_gone`)
        self._look_below: set[str] = set()
        self._found: set[str] = set()
        #: inodes of this event batch's files that have more than one name, with their
        #: size and time now: inotify tells a change by the name it was written through only
        self._linked: dict[int, tuple[int, int]] = {}
        #: the source's files with more than one name, as the engine's last full scan and
        #: the events since found them, polled (LINK_POLL); and when they last were
        self.linked: set[str] = set()
        self._links_polled = 0.0
        #: shares and disks mounted inside the source (or expected there), each with the
        #: filesystem the engine's last full scan saw there: inotify says nothing when one
        #: is mounted or unmounted, and the watches below it die with it
        self.inner_mounts: dict[str, Identity] = {}
        #: those of them not mounted at that scan: a file written into the folder below the
        #: mount point (the scanner's, while its share was down) went over the copy of the
        #: share's file of its name, which the scan's hold promised to keep
        self.away_mounts: frozenset[str] = frozenset()
        #: tells of mounts made since: one inside the source is a new inner mount
        self._mount_table = MountTableWatch()
        #: event folders without the links on their way, for the event batch at hand, and
        #: the source's own path without them, as the current watcher watches it
        self._real_folders: dict[str, str] = {}
        self._real_root = root
        #: folders there that could not be read (by the engine's last full scan, or by a
        #: scan here): inotify has no watch in them, and it adds none when one becomes
        #: readable, so an event on one that can be read now restarts the watcher
        self.unreadable: set[str] = set()
        self._readable_again: str | None = None
        #: a folder this watcher found it cannot read (chmod 000 while watched): only a
        #: full scan tells the log and status (left out, exit 1), which said in sync while
        #: files changed in it unseen
        self._unreadable_now: str | None = None
        #: the source folder's own permissions (or owner, or times) changed
        self._root_changed = False
        #: watchfiles' ignore_permission_denied also swallows the inotify watch limit
        #: (a tree watched in part, silently), so it is only turned on once a folder is unreadable
        self._skip_denied = False
        #: why the watcher watches each folder on its own, if it does (_watch):
        #: - a folder notify could not watch: its walk of the source stopped there, and
        #:   the folders it would have walked after got no watch either (a service whose
        #:   source is a disk's root, with lost+found, missed most changes);
        #: - a link to a folder: notify follows it, and inotify, with one watch a folder,
        #:   names the folder's changes by the path notify walked last, the link's. Once
        #:   the link was switched or removed, they were lost (latest -> 2024 -> 2025).
        #: - a name that is not valid UTF-8: notify's watcher ends at each event that
        #:   names one, and a new one started with a rescan of the whole source, at each
        #:   write of a Latin-1 program's log (5-12 s late, a CPU core busy). The folders
        #:   that hold such names are looked at (ODD_LOOK), each name as last seen
        self._per_folder: str | None = None
        self._odd: dict[str, dict[str, Look]] = {}
        self._odd_looked = 0.0
        #: the watcher must start again: a link to a folder appeared, or, watching folder
        #: by folder, a folder was made, moved or renamed (the watches cannot follow it)
        self._rewatch = False

    @property
    def watching(self) -> str | None:
        """How the source is watched, for status, when not by inotify: "polling (why)"."""
        if not self.poll:
            return None
        return f"polling ({self.fallback or 'poll = true in the config'})"

    def unsettled(self) -> int:
        """How many changed paths wait to settle before they are handed on."""
        return len(self._pending)

    def restless(self) -> frozenset[str]:
        """The files that have kept changing for RESTLESS_AFTER and more, not sent since."""
        return frozenset(self._told)

    def unsent(self) -> list[str]:
        """The changes waiting to settle that would change a target, at a stop: a path
        whose file is as it was handed on is none (an event that came after its change
        went out, which settle held back a moment)."""
        if not self._pending:
            return []
        fresh = stat_paths(self.root, list(self._pending), self.filt)
        return [rel for rel in self._pending if rel in fresh and fresh[rel] != self.known.get(rel)]

    def expect(self, paths: Iterable[str]) -> None:
        """Treat ``paths`` as changed: they are handed on once they settle."""
        now = time.monotonic()
        for rel in paths:
            self._pending.setdefault(rel, (None, now))

    def batches(self) -> Iterator[Batch]:
        """Yield batches until ``stop`` is set; survives watcher errors by rescanning
        (every start of the watcher asks for a rescan once its watches are in place)."""
        try:
            yield from self._batches()
        finally:
            self._mount_table.close()

    def _batches(self) -> Iterator[Batch]:
        while not self.stop.is_set():
            if not self.root.is_dir():
                # the engine warns, and tells status and alerts, if the targets hold files from it
                log.info("source folder %s is missing; waiting for it to come back", self.root)
                while not self.root.is_dir():
                    yield Batch({}, missing=True)
                    if self.stop.wait(2.0):
                        return
            started = inotify.instances()
            self._began = False
            try:
                yield from self._watch(started)
            except WatchfilesRustInternalError as exc:
                if not self.poll and str(exc).startswith("Error creating"):
                    # no inotify instance to be had: nothing would ever be watched, nor
                    # the first copy made (it waits for the watcher's first rescan)
                    self._fall_back(*_cannot_start(exc))
                    continue
                if "Unable to decode path" in str(exc):
                    # the next watcher (or poller) looks at the folders that hold such
                    # names; a folder whose own name it is failed every watcher as it set
                    # up, and nothing was ever mirrored (the first pass waits for its
                    # first tick)
                    self._per_folder = self._per_folder or "a name in the source is not valid UTF-8"
                    # a name the walk does not find (gone again) must not make a busy loop
                    self.stop.wait(0.1)
                    continue
                log.info("watcher error (%s); rescanning the source", exc)
                self.stop.wait(1.0)
            except OSError as exc:
                if isinstance(exc, PermissionError) and not self._skip_denied:
                    log.warning("%s; watching the rest of the source", exc)
                    self._skip_denied = True
                    self._per_folder = str(exc)
                elif not self.poll and "MaxFilesWatch" in str(exc):
                    # watchfiles: "OS file watch limit reached. about [...] (Error { kind: MaxFilesWatch ... })"
                    self._fall_back(
                        f"inotify watch limit reached ({_setting('max_user_watches')})",
                        ": the source has more folders than there are watches left",
                        _raise_or_poll("max_user_watches"),
                    )
                else:
                    log.warning("watcher error (%s); rescanning the source", exc)
                    self.stop.wait(1.0)

    def _fall_back(self, why: str, detail: str, fix: tuple[str, str]) -> None:
        """Watch by polling from now on, as inotify cannot watch the source: told once
        per cause, with its fix (in full, and short for status); inotify is tried again
        every ``retry_every`` seconds."""
        self.poll = True
        self.fallback = f"{why}; {fix[1]}"
        self._retry_at = time.monotonic() + self.retry_every
        if why in self._warned:
            log.info("%s%s; polling on", why, detail)
            return
        self._warned.add(why)
        log.warning("%s%s; falling back to polling, which costs more CPU. To fix: %s", why, detail, fix[0])

    def _watch(self, started: set[int]) -> Iterator[Batch]:
        """One watcher's events until it ends; ``started``: the inotify instances the
        process held before it (its own is told apart from them)."""
        root_id = folder_identity(self.root)
        link_id = folder_identity(self.link) if self.link is not None else root_id
        # inotify names events by the path it was given, and _real resolves each: a root
        # that is reached through a link from now on must be watched by its real path
        self._real_root = Path(os.path.realpath(self.root))
        paths, recursive = [self._real_root], True
        if self._per_folder is not None:
            folders, odd = _folders_below(self._real_root)
            self._look_anew(odd)
            paths, recursive = [self._real_root / rel for rel in sorted(folders - odd)], False
        events = watchfiles.watch(
            *paths,
            recursive=recursive,
            watch_filter=None,
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            rust_timeout=TICK_MS,
            yield_on_timeout=True,
            stop_event=self.stop,
            force_polling=self.poll,
            poll_delay_ms=300,
            raise_interrupt=True,  # a host's Ctrl-C ends Mirror.run_forever, not this watcher only
            ignore_permission_denied=self._skip_denied,
        )
        watching = False
        swept = time.monotonic()
        self._root_deleted = False
        self._inotify_fd = None
        self._burst = self._burst_changes = 0
        self._burst_paths = set()
        self._held_up = 0.0
        ticked: tuple[float, float] | None = None
        queue = None if self.poll else _limit("max_queued_events")[1]
        for changes in events:
            stalled = 0.0 if ticked is None else _stalled_since(ticked)
            if not watching:
                # the watches exist only from the first tick on: whatever changed between
                # the caller's scan and now sent no event, so one more scan catches it
                watching = self._began = True
                self._inotify_started(started)
                yield Batch({}, rescan=True)
            if self.poll and time.monotonic() - swept >= POLL_SWEEP:
                swept = time.monotonic()
                yield Batch({}, rescan=True)
            if queue is not None and self._overflowed(changes, queue, stalled):
                yield Batch({}, rescan=True)
            self._real_folders.clear()  # a link may point elsewhere by the next batch
            for change, path in changes:
                self._note(self._real(path), deleted=change == watchfiles.Change.deleted)
            self._expand_gone()
            self._expand_links()
            self._poll_links()
            self._look_at_odd()
            # an empty batch on an idle tick lets the engine run its rescan schedule
            yield Batch(self._settled())
            if self._unreadable_now is not None or self._root_changed:
                lost = self._unreadable_now
                why = f"{lost} cannot be read now" if lost else "the source folder changed"
                log.debug("%s; rescanning the source", why)
                self._unreadable_now, self._root_changed = None, False
                yield Batch({}, rescan=True)
            if self._switching():
                return
            if (rescan := self._ending(root_id, link_id)) is not None:
                if rescan:
                    yield Batch({}, rescan=True)
                return
            ticked = (time.monotonic(), time.process_time())

    def links_found(self, paths: Iterable[str]) -> None:
        """The links in the source a full scan skipped: one to a folder makes the watcher
        watch folder by folder (:attr:`_per_folder`)."""
        for rel in paths:
            self._link_found(rel)

    def _link_found(self, rel: str) -> None:
        if self._per_folder is None and not self.poll and os.path.isdir(self.root / rel):
            self._per_folder = f"{rel} is a link to a folder"
            log.info("%s; watching the source folder by folder", self._per_folder)
            self._rewatch = True

    def _ending(self, root_id: Identity | None, link_id: Identity | None) -> bool | None:
        """Why this watcher must end, after a batch: None while it may go on, else
        whether a rescan must follow. ``root_id``, ``link_id``: the source folder and
        the link to it as the watcher began."""
        if self._rewatch:
            self._rewatch = False
            return True
        now_id = folder_identity(self.root)
        if now_id != root_id:
            # unmounted or mounted again, or swapped for another: the watches died with the
            # old folder, and a folder that is still there (a mount point) sends no event
            # to say so
            if now_id is not None:
                why = "swapped for another, or mounted anew"
                log.warning("source folder %s was replaced (%s); rescanning", self.root, why)
            return now_id is not None
        if self.link is not None and folder_identity(self.link) != link_id:
            return True  # the link leads elsewhere: the engine tells
        if (real := os.path.realpath(self.root)) != str(self._real_root):
            # the same folder, moved, with a link left in its place (or in place of a
            # folder above it): the watches follow it, but name its changes by a path
            # that is not the source's. A new watcher watches it where it is, and
            # rescans as it starts
            log.warning(
                "source folder %s now leads to %s (moved, and a link left?); watching it there", self.root, real
            )
            return False
        if self._root_deleted:
            # deleted and made again (rm -rf export && mkdir export), where ext4 often
            # gives the new folder the old one's inode number: the watches died with it
            log.warning("source folder %s was deleted and made again; rescanning", self.root)
            return True
        if (moved := self._inner_moved()) is not None:
            log.warning("%s in the source was mounted or unmounted; rescanning", moved)
            return True
        if self._readable_again is not None:
            # a new watcher watches it; its first tick asks for the rescan that clears
            # the folder from status's "left out"
            log.info("%s can be read now; watching it", self._readable_again)
            self._readable_again = None
            return False
        return None

    def _inotify_started(self, started: set[int]) -> None:
        """An inotify watcher has its watches in place: find its instance (the one the
        process did not hold before), and end a fallback to polling."""
        if self.poll:
            return
        mine = inotify.instances() - started
        self._inotify_fd = mine.pop() if len(mine) == 1 and self._check_watches else None
        if self._inotify_fd is not None:
            folders, odd = _folders_below(self._real_root)
            inotify.ignore_opens(self._inotify_fd, (self._real_root / rel for rel in folders - odd))
            if self._per_folder is not None:
                self._new_folders.update(folders - odd)  # checked with this batch
        if self._rewatching is not None:
            self._new_folders.add(self._rewatching)  # checked again with this batch
        if self.fallback is not None:
            log.info("inotify watches the source again; polling ends")
            self.fallback = None
            self._warned.clear()  # a limit reached again is news again

    def _switching(self) -> bool:
        """Whether to end this watcher for another: polling, as a new folder got no
        inotify watch, or inotify tried again after a fallback to polling."""
        if self.fallback is not None and time.monotonic() >= self._retry_at:
            self.poll = False  # the limit may have been raised, or the watches freed
            return True
        unwatched = self._unwatched()
        if unwatched is None:
            self._rewatching = None
            return False
        if self._rewatching is None:
            # notify adds a new folder's watch itself, and drops the error when the watch
            # limit refuses it: the folder's changes would never be told. A new watcher
            # watches every folder, or fails on the limit (and polls). Watching folder by
            # folder (_per_folder), a new folder always takes a new watcher
            level = logging.DEBUG if self._per_folder is not None else logging.INFO
            log.log(level, "the new folder %s got no inotify watch; watching the source anew", unwatched)
            self._rewatching = unwatched
            return True
        self._rewatching = None
        if not self._skip_denied:
            # a new watcher watched the whole source without an error, and /proc still shows
            # no watch for it: its inode is not the one /proc shows on this filesystem
            log.debug("inotify watches cannot be checked on this filesystem (%s)", unwatched)
            self._check_watches = False
            self._inotify_fd = None
            return False
        # watchfiles' ignore_permission_denied swallowed the limit error of the new watcher
        self._fall_back(
            f"inotify watch limit reached ({_setting('max_user_watches')})",
            f": the folder {unwatched} got no watch",
            _raise_or_poll("max_user_watches"),
        )
        return True

    def _overflowed(self, changes: set[tuple[watchfiles.Change, str]], queue: int, stalled: float) -> bool:
        """The kernel's inotify queue of ``queue`` events may have overflowed: the process
        was held up (``stalled``: the seconds it did not run while watchfiles waited for
        ``changes``), or a burst of changes (event batches with no idle tick between
        them) has ended that was about that large. watchfiles drops the kernel's
        overflow notice (notify's Rescan event, which names no path). Held up, two logs
        appended to write after write fill the queue with the events of two paths, and
        reads, where their events could not be turned off (inotify.ignore_opens), with
        events watchfiles drops."""
        now = time.monotonic()
        if stalled >= HELD_UP_AFTER:
            self._held_up = max(self._held_up, stalled)
        # a batch of paths all changed in the one before (a log written every 20 ms) ends
        # a burst as an idle tick does: with such a file, no idle tick came, and the
        # files an overflow lost waited until it stopped changing
        paths = {path for _, path in changes}
        ended = not changes or (bool(self._burst) and paths <= self._burst_paths)
        if not ended:
            self._burst += sum(EVENTS_PER_CHANGE.get(change, 1) for change, _ in changes)
            self._burst_changes += len(changes)
            self._burst_paths = paths
        # at once, whatever the batch holds: reads fill the queue with events watchfiles
        # drops (a backup tool's), and a log written every 20 ms leaves no idle tick to
        # end a burst. At most every HELD_UP_RESCANS seconds: on a machine that keeps
        # holding mirror up, the rescans must not add to its load
        if self._held_up and now - self._held_up_rescan >= HELD_UP_RESCANS:
            held_up, self._held_up, self._held_up_rescan = self._held_up, 0.0, now
            self._burst = self._burst_changes = 0
            self._burst_paths = set()
            # info, not a warning: the rescan finds whatever was lost, if anything was
            log.info(
                "mirror was held up for %.1f s (stopped, or the machine overloaded): the inotify event queue "
                "(fs.inotify.max_queued_events = %d) may have overflowed, which loses events without a word; "
                "rescanning the source",
                held_up,
                queue,
            )
            return True
        if not ended:
            return False
        events, self._burst = self._burst, 0
        count, self._burst_changes = self._burst_changes, 0
        self._burst_paths = set()
        # most bursts this large (an export of thousands of files) lost nothing, which
        # cannot be told
        if not count or events < max(1, queue * OVERFLOW_SHARE):
            return False
        log.info(
            "%d changes came at once, about as many events as the inotify event queue holds "
            "(fs.inotify.max_queued_events = %d): it may have overflowed, which loses events without a word; "
            "rescanning the source",
            count,
            queue,
        )
        return True

    def _unwatched(self) -> str | None:
        """A folder of this event batch that the inotify instance has no watch for."""
        folders, self._new_folders = self._new_folders, set()
        if self._inotify_fd is None or not folders:
            return None
        missing = None
        for look in range(2):
            watched = inotify.watches(self._inotify_fd)
            if watched is None:
                return None
            missing = next((rel for rel in sorted(folders) if not self._watched(rel, watched)), None)
            if missing is None:
                inotify.ignore_opens(self._inotify_fd, (self.root / rel for rel in folders), watched)
                return None
            if look:
                return missing
            # the watcher's thread adds a new folder's watch just after telling of it
            self.stop.wait(0.2)
        return missing

    def _watched(self, rel: str, watched: Container[int]) -> bool:
        if not rel or rel in self.unreadable or rel in self._odd:
            return True  # the source itself is watched from the start; no watch can read that one
        try:
            st = os.stat(self.root / rel)
        except OSError:
            return True  # gone again: nothing to watch
        if not stat.S_ISDIR(st.st_mode):
            return True
        # by inode alone: a btrfs subvolume's folders show another device to stat than to /proc
        return st.st_ino in watched

    def _real(self, path: str) -> str:
        """``path`` with no link on the way to it. watchfiles follows a link to a folder
        (latest -> 2024), and inotify, with one watch per folder, then names that folder's
        changes by the link's path, which a scan skips: an edited invoice stayed old on
        the target until the next rescan."""
        folder, name = os.path.split(path)
        real = self._real_folders.get(folder)
        if real is None:
            real = self._real_folders[folder] = os.path.realpath(folder)
        return os.path.join(real, name)

    def _inner_moved(self) -> str | None:
        """A mount point inside the source that shows another filesystem than the last
        full scan saw there. Compared with the scan's look, not this watcher's first: a
        share mounted between the two was taken for the one seen, and its files waited
        for the hourly rescan."""
        # mounted since the last full scan: its files are the source's, and inotify's
        # watches of the folder below it see none of their changes
        made = mounts_below(str(self.root)) - self.inner_mounts.keys() if self._mount_table.changed() else set()
        if made:
            for rel in made:
                self.inner_mounts[rel] = folder_identity(self.root / rel)
            return min(made)
        for rel, seen in self.inner_mounts.items():
            if (now := folder_identity(self.root / rel)) != seen:
                # told once: a rescan that cannot be made now (the source unreadable)
                # must not have every tick tell it again
                self.inner_mounts[rel] = now
                return rel
        return None

    def _note(self, path: str, deleted: bool) -> None:
        """Turn one event path into pending source-relative paths (``deleted``: the event
        said the path went away, whatever is there now)."""
        try:
            rel = Path(path).relative_to(self._real_root).as_posix()
        except ValueError:
            return
        if rel in ("", "."):
            # the source folder itself is gone: its watch with it, whether or not a folder
            # of its name (on ext4 often with its inode number) is made again
            self._root_deleted = self._root_deleted or deleted
            # else its permissions changed (the only other event of its own): a file that
            # failed while it could not be read is sent now, not with the next change
            self._root_changed = self._root_changed or not deleted
            return
        if self.away_mounts and not self.away_mounts.isdisjoint(ancestors(rel)):
            return  # the mount's return makes a rescan (_inner_moved)
        now = time.monotonic()
        try:
            st = os.lstat(path)
        except OSError:
            st = None
        if st is not None and stat.S_ISLNK(st.st_mode):
            self._link_found(rel)
        if st is not None and stat.S_ISDIR(st.st_mode):
            self._note_folder(rel, now)
            return
        self._pending.setdefault(rel, (None, now))
        if st is not None and st.st_nlink > 1 and stat.S_ISREG(st.st_mode):
            self._linked[st.st_ino] = (st.st_size, mtime_ns(st))
            self.linked.add(rel)
        if (st is None or deleted) and rel not in self.known:
            # a folder that vanished, or was renamed away with a file made in its place
            # within one debounce. A known file has nothing below it: with thousands
            # deleted at once, looking below each took minutes
            self._look_below.add(rel)

    def _note_folder(self, rel: str, now: float) -> None:
        """:meth:`_note` of a folder: its files are scanned, and pending."""
        # a watcher of each folder on its own watches none made, moved in or renamed since
        # it started, and the look in /proc for a folder without a watch could miss it:
        # the edit of a file in a new folder was lost (4 of 20 runs on a loaded machine)
        self._rewatch = self._rewatch or self._per_folder is not None
        snap = scan(self.root, self.filt, start=rel)
        # the folder, or files in it: one whose names could be read but not its files
        # (chmod 444) had those left out, not itself
        again = {u for u in self.unreadable if u == rel or u.startswith(f"{rel}/")} - snap.unreadable
        if again:
            self._readable_again = min(again)
        if lost := snap.unreadable - self.unreadable:
            self._unreadable_now = min(lost)
        self.unreadable.update(snap.unreadable)
        if self._inotify_fd is not None:
            self._new_folders.add(rel)
            self._new_folders.update(os.path.dirname(sub) for sub in snap.entries)
        for sub in snap.entries:
            self._pending.setdefault(sub, (None, now))
        for sub in snap.linked:
            entry = snap.entries[sub]
            self._linked[entry.ino] = (entry.size, entry.mtime_ns)
        self.linked.update(snap.linked)
        self.links_found(snap.links())  # a folder moved in with a link
        self._found.update(snap.entries)
        self._look_below.add(rel)
        if rel in self.known:
            # a file replaced by a folder of its name: the file is gone
            self._pending.setdefault(rel, (None, now))

    def _expand_gone(self) -> None:
        """Known files below the folders of this event batch that vanished, were renamed
        away or were scanned again are pending too, unless a scan found them. One pass
        over the known files for all those folders: a pass per folder took minutes when
        thousands of new folders arrived at once in a large tree."""
        folders, found = self._look_below, self._found
        self._look_below, self._found = set(), set()
        if not folders:
            return
        if len(folders) <= FEW_FOLDERS:
            prefixes = tuple(f"{folder}/" for folder in folders)
            gone = [k for k in self.known if k.startswith(prefixes) and k not in found]
        else:
            gone = [k for k in self.known if not folders.isdisjoint(ancestors(k)) and k not in found]
        now = time.monotonic()
        for rel in gone:
            self._pending.setdefault(rel, (None, now))

    def _expand_links(self) -> None:
        """The other names of this event batch's files with hard links are polled from
        now on, and pending where their content changed: a file rewritten through one
        name (or through a link made to it and written at once) left the copy of the
        other old. Only a change of content: making a link (cp -al of a tree) changes
        none, and would put every other name of each file in waiting."""
        linked, self._linked = self._linked, {}
        if not linked:
            return
        now = time.monotonic()
        for rel, entry in self.known.items():
            stamp = linked.get(entry.ino)
            if stamp is not None:
                self.linked.add(rel)
                if stamp != (entry.size, entry.mtime_ns):
                    self._pending.setdefault(rel, (None, now))

    def _poll_links(self) -> None:
        """Pending: the files with more than one name whose size, time or inode is not
        what was handed on (changed through a name outside the source, which inotify
        does not watch), or that are gone."""
        now = time.monotonic()
        if not self.linked or now - self._links_polled < max(LINK_POLL, len(self.linked) / LINK_STATS_PER_S):
            return
        self._links_polled = now
        for rel, entry in stat_paths(self.root, list(self.linked), self.filt).items():
            if entry is None:
                self.linked.discard(rel)
            if entry != self.known.get(rel):
                self._pending.setdefault(rel, (None, now))

    def _look_anew(self, odd: set[str]) -> None:
        """Look at the folders ``odd`` from now on, each holding a name that is not valid
        UTF-8; the first look is the base that later ones are compared with."""
        for rel in sorted(odd - self._odd.keys()):
            log.info(
                "%s holds a name that is not valid UTF-8, which the watcher cannot pass on; looking at it "
                "every %.1f s instead",
                rel or "the source folder",
                ODD_LOOK,
            )
        self._odd = {rel: _look(self._real_root / rel)[0] for rel in odd}
        self._odd_looked = time.monotonic()

    def _look_at_odd(self) -> None:
        """Pending: each name of the folders looked at (:attr:`_odd`) that came, went, or
        changed since the last look. A folder without an odd name now, or gone, takes a
        new watcher: inotify can watch it again."""
        now = time.monotonic()
        if not self._odd or now - self._odd_looked < ODD_LOOK:
            return
        self._odd_looked = now
        for rel, before in self._odd.items():
            names, odd = _look(self._real_root / rel)
            self._rewatch = self._rewatch or not odd
            self._odd[rel] = names
            for name in before.keys() | names.keys():
                if before.get(name) != names.get(name):
                    self._note(os.path.join(self._real_root, rel, name), deleted=name not in names)

    def _tell_if_restless(self, rel: str, now: float) -> None:
        since = self._changing_since.setdefault(rel, now)
        if now - since >= RESTLESS_AFTER and rel not in self._told:
            self._told.add(rel)
            log.warning(
                "%s has kept changing for %.0f s; it is sent once it stays unchanged for %.1f s "
                "(a log file, or one a program keeps open, belongs in exclude)",
                rel,
                now - since,
                self.settle,
            )

    def _hold_renames(self, ready: dict[str, LocalEntry | None], fresh: dict[str, LocalEntry | None]) -> None:
        """Keep a vanished path back while its inode still settles under a new name, so
        both halves of a rename travel in one batch and become a move on the target; and
        while files below it (a folder that took the file's name) still settle, so that
        the pass that plans its removal sees that a new file needs its name: under
        ``delete = keep`` the copy, kept in a pass of its own, stood where the folder had
        to be made, and the folder's files failed until a run with --rescan."""
        gone = [r for r, e in ready.items() if e is None]
        if not gone:
            return
        waiting = {e.ino for rel, e in fresh.items() if e is not None and rel in self._pending}
        below = {a for rel in self._pending for a in ancestors(rel)}
        for rel in gone:
            old = self.known.get(rel)
            if (old is not None and old.ino in waiting) or rel in below:
                del ready[rel]
                now = time.monotonic()
                self._pending[rel] = (None, now)

    def _settled(self) -> dict[str, LocalEntry | None]:
        now = time.monotonic()
        looked, self._looked = self._looked, now
        if not self._pending:
            return {}
        # a machine so loaded that it ran neither mirror nor the program writing a scan for
        # a second: the scan had not changed when mirror looked again, and went out
        # half-written. Only time mirror spent looking counts as quiet
        unseen = looked is not None and now - looked > LOOK_GAP
        wall = time.time_ns()
        fresh = stat_paths(self.root, list(self._pending), self.filt)
        ready: dict[str, LocalEntry | None] = {}
        for rel, (old_sig, since) in list(self._pending.items()):
            if rel not in fresh:
                # it could not be read (a folder's permissions changed, an I/O error): that
                # is neither a change nor a deletion; the next full scan looks again
                del self._pending[rel]
                continue
            entry = fresh[rel]
            sig: Signature = None if entry is None else (entry.size, entry.mtime_ns, entry.ino)
            if entry is None:
                ready[rel] = None
            elif sig != old_sig:
                self._pending[rel] = (sig, now)
                self._tell_if_restless(rel, now)
                continue
            elif unseen:
                self._pending[rel] = (sig, now)
                continue
            elif now - since >= self.settle and not racy(entry.mtime_ns, wall):
                # counted on mirror's clock from when it saw the file: an mtime older than
                # settle (a share whose clock is behind, a disk that keeps whole seconds)
                # sent a scan half-written, page after page
                ready[rel] = entry
            else:
                continue
            del self._pending[rel]
            self._changing_since.pop(rel, None)
            self._told.discard(rel)
        self._hold_renames(ready, fresh)
        for rel, entry in ready.items():
            if entry is None:
                self._tell_skipped(rel)
                self.known.pop(rel, None)
            else:
                self.known[rel] = entry
        return ready

    def _tell_skipped(self, rel: str) -> None:
        """Say why a path handed on as gone is not mirrored where something stands there
        that is not a file (a link, a FIFO), as a full scan says it: the invoice's copy
        left the target, and the log said only '1 deleted'."""
        try:
            mode = os.lstat(os.path.join(self.root, rel)).st_mode
        except OSError:
            return
        if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode) and self.filt.wants_file(rel):
            log.info("skipped %s: %s", rel, kind_of(mode))


def _stalled_since(since: tuple[float, float]) -> float:
    """Seconds since ``since`` (monotonic time, process time) the process spent not running."""
    return time.monotonic() - since[0] - (time.process_time() - since[1])


def _folders_below(root: Path) -> tuple[set[str], set[str]]:
    """Every folder below ``root`` that can be listed, relative to it ("" for itself),
    and those of them that hold a name that is not valid UTF-8; links are not followed,
    nor folders whose name is not valid UTF-8 (nothing in them is mirrored)."""
    found: set[str] = set()
    odd: set[str] = set()
    todo = [""]
    while todo:
        rel = todo.pop()
        try:
            with os.scandir(root / rel) as entries:
                subs = []
                for item in entries:
                    if not (item.name.isascii() or valid_name(item.name)):
                        odd.add(rel)
                    elif item.is_dir(follow_symlinks=False):
                        subs.append(f"{rel}/{item.name}" if rel else item.name)
        except OSError:
            continue
        found.add(rel)
        todo.extend(subs)
    return found, odd & found


def _look(folder: Path) -> tuple[dict[str, Look], bool]:
    """Each name in ``folder`` that is valid UTF-8, with its :data:`Look`, and whether
    the folder holds one that is not (none, and False, where it cannot be listed: gone,
    it takes a new watcher as well)."""
    names: dict[str, Look] = {}
    odd = False
    try:
        with os.scandir(folder) as entries:
            for item in entries:
                if not (item.name.isascii() or valid_name(item.name)):
                    odd = True
                    continue
                try:
                    st = item.stat(follow_symlinks=False)
                except OSError:
                    continue
                kind = stat.S_IFMT(st.st_mode)
                names[item.name] = (
                    (kind, 0, 0, st.st_ino)
                    if kind == stat.S_IFDIR
                    else (kind, st.st_size, mtime_ns(st), st.st_ino)
                )
    except OSError:
        return {}, False
    return names, odd


def _limit(name: str) -> tuple[str, int | None]:
    """The sysctl that sets the inotify limit ``name`` for mirror, and its value: the
    machine's fs.inotify.NAME, or the lower one a container's user namespace sets."""
    found = [(f"fs.inotify.{name}", INOTIFY_SETTINGS / name)]
    if name in _IN_USER_NS:
        found.append((f"user.{_IN_USER_NS[name]}", USER_SETTINGS / _IN_USER_NS[name]))
    best: tuple[str, int | None] = (found[0][0], None)
    for sysctl, path in found:
        try:
            value = int(path.read_text())
        except (OSError, ValueError):
            continue
        if best[1] is None or value < best[1]:
            best = (sysctl, value)
    return best


def _setting(name: str) -> str:
    """``fs.inotify.NAME = VALUE``, as a user finds it with sysctl."""
    sysctl, value = _limit(name)
    return sysctl + ("" if value is None else f" = {value}")


def _raise_or_poll(name: str) -> tuple[str, str]:
    """How to lift the inotify limit ``name``: in full, and short."""
    sysctl, value = _limit(name)
    least = 524288 if name == "max_user_watches" else 1024
    more = max(4 * value, least) if value else least
    return (
        f"raise it (sysctl -w {sysctl}={more}, and the same line in /etc/sysctl.d/ to keep it), "
        "or set poll = true for this source",
        "raise it, or set poll = true",
    )


def _cannot_start(exc: Exception) -> tuple[str, str, tuple[str, str]]:
    """Why watchfiles could not create an inotify watcher, and the fix: it says "Too many
    open files (os error 24)" for the per-user instance limit as for the process's own."""
    if "os error 24" not in str(exc):
        fix = "set poll = true for this source if it keeps failing"
        return f"inotify cannot start ({exc})", "", (fix, fix)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and len(inotify.open_fds()) >= soft - 8:
        return (
            f"inotify cannot start: mirror has as many files open as it may (ulimit -n = {soft})",
            "",
            ("raise the open-files limit (LimitNOFILE= in the service unit, or ulimit -n)", "raise ulimit -n"),
        )
    return (
        f"inotify instance limit reached ({_setting('max_user_instances')})",
        ": this user's programs hold every instance it allows",
        _raise_or_poll("max_user_instances"),
    )
