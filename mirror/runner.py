"""One target's side of mirroring: its index and locks, its passes (plan, execute,
record), and the live loop that follows changes on a thread of its own, so a slow or
broken target never stalls the others. :class:`mirror.engine.Mirror` runs one per target.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from mirror import index_lock, registry
from mirror.bulk import BulkLane, split
from mirror.config import Config, TargetConfig
from mirror.driver import Driver, RemoteEntry, classify_os_error
from mirror.errors import ConfigError, FatalError, MirrorError, StateError, TargetFull, TransientError
from mirror.events import Observers, Report
from mirror.execute import Executor, RetryPolicy, RunStats
from mirror.filters import Filter
from mirror.held import HeldDeletions
from mirror.index import FULL_DISK, Index, IndexEntry, RunRecord, private_dir, state_os_error
from mirror.index_files import index_path, move_index, refused_take_over, state_dir
from mirror.index_lock import Holding
from mirror.logs import with_bytes_shown
from mirror.mounts import mount_of, mount_place, not_mounted, overlaps, place_of, place_point
from mirror.paths import ancestors, path_key
from mirror.place_claim import PlaceClaim
from mirror.plan import KnownFiles, Plan, PlanSettings, Put, Renamed, naming_rules, narrow, pending_count, plan
from mirror.policy import DeletePolicy
from mirror.progress import PassProgress, human_duration
from mirror.redact import redact_url
from mirror.scan import Entries, LocalEntry, stat_paths
from mirror.source_files import generation_of
from mirror.status import note_attempt
from mirror.target_place import TargetPlace, busy, folder_place, located, note_writer, place_key
from mirror.wording import described, starved, summarize

log = logging.getLogger("mirror")
T = TypeVar("T")

#: the indexes whose lock a Mirror of this process holds (see mirror.target_place.held_by)
_LOCKED_HERE: set[str] = set()

#: seconds for which a target asked or listed is trusted to still hold what mirror put
#: there: a run within them does not log in only to ask (TargetRunner._seen_lately), and
#: a watching mirror asks again after them (TargetRunner._asked_lately)
SEEN_FOR = 300.0
#: seconds before deletions the guard withheld in watch mode are first planned again
GUARD_RECHECK = 10.0
#: seconds within which the same deletions withheld are told once: a watcher restarted
#: for a replaced source folder rescans, and its successor as it starts, a moment apart
GUARD_RETELL = 5.0
#: new target paths a pass without a listing may ask the target about, one request each
#: (:attr:`Put.ask`); more, and one listing answers for all of them
ASKS_AT_MOST = 100
#: inode generations recorded per write when an older mirror's index gets them: its rows
#: are read one page at a time, and a million would not all wait in memory
GENERATIONS_AT_ONCE = 10_000
#: seconds before a runner's thread that broke down runs again, doubled while it keeps
#: breaking, up to the second figure (see TargetRunner._keep_running)
RESTART_FIRST, RESTART_MOST = 1.0, 60.0
#: seconds a stop waits for the temp files of the uploads it gave up on to be removed
TEMPS_WAIT = 3.0
#: seconds between looks at a source folder that is away (Mirror.source_moved), as the watcher's
SOURCE_WAIT = 2.0
#: seconds before a full target (TargetFull) is tried again, doubled while it stays full,
#: up to the second figure (and never beyond rescan_interval). Waiting for the rescan
#: (an hour) kept invoices off a disk for that long after space was freed; the cap bounds
#: what a target full for days costs: a pass with a listing, and a log line, each time
FULL_FIRST, FULL_MOST = 30.0, 600.0


@dataclass
class Work:
    """What a target runner still has to do, merged as it arrives."""

    full: bool = False
    listing: bool = False
    changes: dict[str, LocalEntry | None] = field(default_factory=dict)
    #: paths a full pass must leave alone: files still being written at start-up, and
    #: files and folders that could not be read
    skip: frozenset[str] = frozenset()


def _changed_since(path: str, since_ns: int) -> bool:
    """Whether the file at ``path`` was written, made or changed after ``since_ns``."""
    try:
        return os.lstat(path).st_ctime_ns > since_ns
    except OSError:
        return True


class TargetRunner:
    """Everything about one target: connection, index, executor, its work queue."""

    #: the lock of the local folder a wrapper (fsspec's dir) writes into, once connected
    _folder_fd: int | None = None
    #: the claim on its place that mirrors with other state folders see too
    _claim: PlaceClaim | None = None
    #: since when requests are being tried again (see _retrying); None: they are not.
    #: Workers set it unlocked: two retrying at once take about the same time
    _retry_since: float | None = None
    #: the deletions withheld last told, and when (_log_report)
    _guard_told: tuple[str, float] = ("", 0.0)
    #: the changes a stop of watch mode left unsent, but the bulk lane's (stopped_with)
    _unsent_at_stop: int | None = None
    #: told as failing (or failed), until a pass records how it went
    _failing = False

    def __init__(
        self,
        config: Config,
        target: TargetConfig,
        stop: threading.Event,
        *,
        dry_run: bool = False,
        retry: RetryPolicy | None = None,
        observer: Observers | None = None,
    ) -> None:
        self.config = config
        self.target = target
        self.name = target.name
        self.stop = stop
        self.dry_run = dry_run
        self.retry = retry or RetryPolicy()
        self.settings = target.settings
        self.filter = Filter(self.settings.include, self.settings.exclude)
        self.log = logging.LoggerAdapter(log, {"target": self.name})
        self.index_file = index_path(state_dir(config), config.named_source, target)
        #: where it writes, and the locks that keep other mirrors out
        self.where = TargetPlace(config, target, self.index_file)
        self.resolved, self.caps = self.where.resolved, self.where.caps
        self.driver: Driver | None = None
        self.index: Index | None = None
        self.executor: Executor | None = None
        #: watch mode: where a pass's large uploads go, so the next pass need not wait
        self.lane: BulkLane | None = None
        #: the runner's thread is in a pass (see _lane_finished)
        self._in_pass = False
        #: the lane's last run found the target down or failing: the next pass raises it
        self._lane_failed: Report | None = None
        self._lock_fd: int | None = None
        self._place_fd: int | None = None
        self._work = Work()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        #: when the watchdog (check_thread) may start a thread that ended again, and the wait after that
        self._restart_at, self._restart_wait = 0.0, RESTART_FIRST
        #: how long a full target waits before it is tried again (_retry_in)
        self._full_wait = FULL_FIRST
        self.dead: str | None = None
        #: a pass got through to the target in this run (see Mirror.run_forever)
        self.reached = False
        #: when to plan deletions the guard withheld again (see _recheck_guard)
        self._recheck_at: float | None = None
        self._recheck_every = GUARD_RECHECK
        #: sources whose removal a failed transfer held back: planned again with the next
        #: changes, so one failure cannot hold every deletion until the next full pass (a
        #: file that took a folder's name waits for the files below it to go)
        self.postponed: set[str] = set()
        #: deletions a watch pass left for later (see mirror.held)
        self.held = HeldDeletions()
        #: the next full pass holds files gone from the source too: a watcher's first after
        #: its start, which may fall in the middle of a folder being emptied (a reload, a
        #: service restart). The burst's first steps, held by the process before, went at
        #: once, under the guard's limit, and the rest was judged against a target that had
        #: lost them already: every copy went
        self._hold_full = False
        #: target paths whose copy a pass cut short may or may not have replaced, where size
        #: and time cannot tell which file it is (:meth:`_recover_in_flight`): no copy there
        #: is taken for a file's, nor moved, by them, until a pass has sent what goes there
        self.doubted: set[str] = set()
        #: the last run did not stop cleanly: list the target to find its leftovers
        self.crashed = False
        #: a local target folder now on another mount is taken as moved on purpose (asked
        #: for with --rescan), not as a disk that is not mounted
        self.accept_new_place = False
        #: what the engine's last scan left out of every pass (Report.left_out)
        self.left_out = 0
        #: source files the last full scan found, this target's patterns take in, and no
        #: target can take as they are (Skip.fix): a source holding only those is not empty
        self.unsendable = 0
        #: when (time.monotonic) the target was last asked if its folder is lost
        #: (Driver.root_lost), or listed; None: not in this run, or not since an outage,
        #: as a NAS share or bucket can come back empty. A cloud target pays a request
        #: for the question: asked again SEEN_FOR after, by a watching mirror's next pass
        self._root_asked: float | None = None
        #: that question, asked while the run scans the source (see ask_early)
        self._asking: Future[bool | None] | None = None
        #: held while connecting: the early question connects in a thread of its own
        self._connecting = threading.Lock()
        #: the target was found down and has not answered since
        self._down = False
        self.observer = observer or Observers()
        #: progress hooks: bytes a pass will send, then bytes as each item completes
        self.on_plan: Callable[[int], None] | None = None
        self.on_done: Callable[[int], None] | None = None
        self._progress: PassProgress | None = None
        #: every index row was checked against the target's naming rules of today
        #: (:meth:`_rows_checked`): passes trust the paths rows hold
        self.names_checked = False
        self._started = ""
        #: names_checked became true in this pass: recorded with its other facts
        self._vouch = False
        #: the source's files (that this target's patterns take in) the engine's last scan
        #: left out for their names, path -> (entry, why): a mirrored file renamed to one
        #: keeps its copy (mirror.plan)
        self.not_sent: Mapping[str, tuple[LocalEntry, str]] = {}
        #: watch mode: why the source folder is not the one mirrored (Mirror.source_moved)
        self._source_away: Callable[[], str | None] = lambda: None

    # -- lifecycle ------------------------------------------------------------------
    def check(self) -> None:
        """Raise ConfigError where the backend can never use this target's URL and
        options (not installed, a host missing, an option misspelled), touching nothing."""
        with located(self.config, self.target, self.resolved.preset):
            registry.load_driver_class(self.resolved.backend).check_target(
                self.resolved.url, self.resolved.options
            )

    def open(self) -> None:
        """Open the index (taking the per-target lock) and check the backend is installed."""
        self.check()
        self.where.check_overlap()
        try:
            self._open_index()
        except BaseException as exc:
            # let go of the locks: watch mode opens it again once its state disk has room
            if self.index is not None:
                with suppress(Exception):
                    self.index.close()
                self.index = None
            self._unlock()
            if isinstance(exc, OSError) and (isinstance(exc, PermissionError) or exc.errno in FULL_DISK):
                raise state_os_error(self.index_file.parent, exc) from None
            raise

    def _open_index(self) -> None:
        if self.dry_run:
            if self.index_file.exists():
                self.index = Index(self.index_file, readonly=True)
                if self._filled_elsewhere(self.index):
                    # what a run would do: mirror to the new place as to a new target
                    self.index.close()
                    self.index = None
                    return
                self._started = self.index.get_meta("started") or ""
                self.names_checked = self._rows_checked(self._started)
            return
        try:
            # made private if made here; one that exists is left as it is: a folder given
            # (--state-dir /tmp, a group's shared folder) lost its sticky bit and others'
            # access. Mirror's own folders and files in it are private by their own modes
            self.index_file.parent.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            private_dir(self.index_file.parent)
        except OSError as exc:
            raise state_os_error(self.index_file.parent.parent, exc) from None
        fd = os.open(f"{self.index_file}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        if not index_lock.take(fd):
            pid, holding = index_lock.holder(fd)
            os.close(fd)
            here = str(self.index_file) in _LOCKED_HERE
            # the pid of this process would only puzzle the host program's user
            doing = f"{pid}, {holding.value}; " if holding is not None and not here else ""
            ends = not here and holding in (Holding.STARTING, Holding.ONE_OFF)
            raise busy(f"target {self.name!r}", here, f"{doing}lock {self.index_file}.lock", self.name, ends)
        index_lock.tell(fd, Holding.STARTING)
        self._lock_fd = fd
        _LOCKED_HERE.add(str(self.index_file))
        try:
            self._place_fd = self.where.lock()
            self._claim = self.where.claim()
            last_writer = note_writer(self._place_fd, self.index_file.name)
            self._take_over_index_of_real_path()
            taken = self._take_over_index_of_same_place()
            self.index = Index(self.index_file)
            if last_writer not in (None, self.index_file.name, taken):
                # another index wrote there since this one last did (its source switched to
                # another folder and back): the rows may not hold until a pass lists the
                # target, this run's or, should it not get that far, a later one's
                self.index.set_meta(last_listing=None)
            if self._filled_elsewhere(self.index):
                self.index.close()
                self._set_aside_index_of_other_place()
                self.index = Index(self.index_file)
        except BaseException:
            # refused: a host program that tries again must not find its own locks held
            self._unlock()
            raise
        self.crashed = self.index.get_meta("clean_shutdown") == "0"
        self.names_checked = self._rows_checked(self.index.get_meta("started") or "")
        self._started = str(time.time())
        self.index.set_meta(
            clean_shutdown=0,
            pid=os.getpid(),
            target=self.name,
            url=redact_url(self.target.url),
            source=str(self.config.source),
            started=self._started,
            names_checked=self._names_checked_mark() if self.names_checked else None,
            state="starting",
            rescan_interval=self.settings.rescan_interval,
            layout=self.settings.layout.template,
            delete=self.settings.delete.value,
            # for a verify of SOURCE TARGET, which has no config to take them from
            patterns=json.dumps([self.settings.include, self.settings.exclude]) if self.filter.narrows else None,
            settling=None,  # what a killed run's watcher held
            watching=None,
            restless=None,
            # the last run's: taken for this one's, a start that sets up its watches for
            # minutes (a large source) showed as not responding
            alive=None,
            place=place_key(self.where.recorded_place()),  # hashed: the options in it may hold secrets
            writes_to=self.where.writes_to(),
        )

    def _rows_checked(self, started: str) -> bool:
        """Whether the index's rows were all checked against the target's naming rules of
        today, by the last run (that started at ``started``) or one before it that passed
        the word on. An older mirror does not pass it on, so after a run of one (rows
        written under its rules) the next run checks every row again, as after a change
        of the rules (an upgrade that made WebDAV refuse ';', smb:// taken to fold case)."""
        assert self.index is not None
        return self.index.get_meta("names_checked") == f"{naming_rules(self.caps)} {started}"

    def _names_checked_mark(self) -> str:
        return f"{naming_rules(self.caps)} {self._started}"

    def _rows_all_checked(self, actions: Plan, every_row: bool) -> None:
        """After a plan that held ``every_row`` to the target's rules (a full pass, no
        path skipped): if none broke them, later passes trust the rows (a full pass then
        reads only those of changed files)."""
        if every_row and not (self.names_checked or actions.unfit or self.dry_run):
            # recorded with the pass's other facts (_after): a commit of its own was one
            # too many on a state disk that the pass filled up
            self.names_checked = self._vouch = True

    def _take_over_index_of_real_path(self) -> None:
        """Before a source given through a link named its indexes by the link, the folder
        it led to did (Config.source_link): such an index is this target's."""
        if self.config.source_link is None or self.index_file.exists():
            return
        old = index_path(state_dir(self.config), self.config.source, self.target)
        if old.exists():
            self._take_over(old, f"named after {self.config.source}, where the source link leads")

    def _take_over_index_of_same_place(self) -> str | None:
        """The index another name gave this source and place is this target's: the
        target renamed in the config, its URL spelled anew (a trailing slash, file://),
        or a config naming what ``mirror run SOURCE TARGET`` mirrored. A new index took
        every file there for someone else's: files gone from the source were never
        deleted, and status said never run. Not one of two that could be it; one a
        running mirror holds is refused (:meth:`_take_over`). The name of the index taken
        over, if one is."""
        if self.index_file.exists():
            return None
        found = self.where.indexes_of_same_place()
        if len(found) != 1:
            return None
        self._refuse_forgotten_settings(found[0])
        self._take_over(found[0], "which mirrored this source to the same place")
        self.log.info("taking over the index of %s, which mirrored this source to the same place", found[0].stem)
        return found[0].name

    def _refuse_forgotten_settings(self, old: Path) -> None:
        """A config that takes over the index ``old`` (of ``mirror run SOURCE TARGET
        --delete keep``, or a target renamed) and leaves out the layout or delete policy
        it was mirrored with: the default policy deleted for good the next file removed
        from a target kept with --delete keep, and the default layout moved every file."""
        if (why := refused_take_over(self.config, self.target, old)) is not None:
            raise ConfigError(why)

    def _filled_elsewhere(self, index: Index) -> bool:
        """Whether ``index`` holds what mirror put in another place than the one this
        target now writes to: a preset's ``base_url`` or an S3 ``endpoint_url`` changed,
        which are options, not part of the URL that names the index. An index from a
        mirror that did not record it is trusted, as it was."""
        recorded = index.get_meta("writes_to")
        return recorded is not None and recorded != self.where.writes_to()

    def _set_aside_index_of_other_place(self) -> None:
        """Move aside the index of a target that now writes to another place, so that a
        new one starts: its rows were taken for the new place's files, so a source file
        deleted deleted the file another account had at that path, an edit overwrote one,
        and what was never sent there was taken for sent. The old index is kept beside
        it, out of the way, not deleted."""
        aside = self.index_file.with_name(f"{self.index_file.name}.other-place")
        move_index(self.index_file, aside)
        server, path, _ = registry.load_driver_class(self.resolved.backend).place(
            self.resolved.url, self.resolved.options
        )
        self.log.warning(
            "target %r now writes to %s on %s, not where mirror filled it before (its server or account "
            "changed in the options): mirroring to it as a new target, listed first (files there are kept, "
            "or moved into .mirror-trash/ where a source file goes); the old index is kept as %s",
            self.name,
            path.strip("/") or "/",
            redact_url(server),
            aside,
        )

    def _take_over(self, old: Path, which: str) -> None:
        """Make the index ``old`` this target's, holding its lock while it is renamed. A
        mirror that holds it is mirroring this target now, maybe an older one still
        running as a service after an upgrade (it has no place lock): the index was
        renamed under it, and both mirrored the same target at once."""
        fd = os.open(f"{old}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if not index_lock.take(fd):
                raise ConfigError(
                    f"target {self.name!r} is already being mirrored by another mirror process, an older "
                    f"mirror still running as a service perhaps: it holds the index {old.name} ({which}); "
                    "stop that one first (restart the service, so it runs this version)"
                )
            move_index(old, self.index_file)
            with suppress(FileNotFoundError):
                os.unlink(f"{old}.lock")
        finally:
            os.close(fd)
        self.observer.on_taken_over(self.name, old.stem)

    def connect(self) -> Driver:
        with self._connecting:
            if self.driver is None:
                try:
                    self.driver = registry.connect(self.resolved, self.caps)
                except MirrorError:
                    raise
                except Exception as exc:
                    raise classify_os_error(exc) from exc
                self._check_written_folder(self.driver)
                if self.index is not None and not self.dry_run:
                    self.driver.state = self.index
                self.driver.source = self.config.source
                concurrency = self.settings.concurrency or self.driver.default_concurrency
                # a driver that threads may not share gives the lane one of its own, or,
                # where it has none to give, sends its large files in the passes
                lane_driver = self.driver.for_another_thread()
                if self.index is not None and not self.dry_run:
                    self.executor = self._new_executor(self.driver, concurrency, self._done)
                    # its own executor: its temp files, retries and failures are not the passes'
                    self.lane = (
                        None
                        if lane_driver is None
                        else BulkLane(
                            self._new_executor(lane_driver, concurrency, self._lane_done),
                            self.stop,
                            path_key(self.driver.caps.case_sensitive),
                            self._hand_back,
                            self._lane_finished,
                            self.log,
                        )
                    )
            return self.driver

    @functools.cached_property
    def stable_inodes(self) -> bool:
        """Whether the source's disk keeps a file's inode number (mirror.mounts): renames
        are told by it."""
        mount = mount_of(str(self.config.source))
        return mount is None or mount.stable_inodes

    @property
    def local_folder(self) -> str | None:
        """The local folder this target writes into, if it is one (Driver.local_folder)."""
        return self.where.local_folder

    def _new_executor(self, driver: Driver, concurrency: int, on_done: Callable[[int, int], None]) -> Executor:
        assert self.index is not None
        return Executor(
            driver,
            self.index,
            self.config.source,
            concurrency,
            self.stop,
            self.retry,
            on_done=on_done,
            on_retry=self._retrying,
            on_answered=self._answered,
            logger=self.log,
            on_transfer=lambda size, seconds: self.observer.on_transfer(self.name, size, seconds),
            on_sent=lambda files, size: self.observer.on_sent(self.name, files, size),
            # a concurrency the user chose holds for large files too
            bulk_concurrency=None if self.settings.concurrency else driver.bulk_concurrency,
        )

    def _check_written_folder(self, driver: Driver) -> None:
        """A backend that writes into a folder on this machine under another name (a
        preset on fsspec's dir or simplecache) must not write into the source, nor into
        a folder another target writes to."""
        folder = driver.local_root()
        if folder is None or self.local_folder is not None or self._folder_fd is not None:
            return
        try:
            if overlaps(Path(folder).resolve(), self.config.source.resolve()):
                raise ConfigError(
                    f"target {self.name!r} writes into {folder}, which overlaps the source folder "
                    f"{self.config.source}; choose a target outside the source"
                )
            # the folder's own lock, as a target naming it takes: a dir:// target on the
            # folder of a plain one deleted what the other kept (delete = keep). A dry run
            # writes nothing, nor makes the state folder the lock is in
            if not self.dry_run:
                self._folder_fd = self.where.lock(folder_place(folder))
        except MirrorError:
            self.driver = None
            driver.close()
            raise

    def close(self, clean: bool = True) -> None:
        """``clean``: the runner's thread stopped in time. Else an action is stuck (a large
        upload, or one whose link stalled): its temp files are removed beside it, waiting
        TEMPS_WAIT at most (over a link that hangs, a new connection waited out the whole
        SSH timeout, 35 s for a stop asked for); those left are named, and noted to the
        next run's listing."""
        if self._asking is not None:
            # a question no pass took (the run was refused) may still be connecting
            with suppress(Exception):
                self._asking.result()
        self._tell_unsent()
        if self.executor is not None and clean:
            self.executor.remove_temps()
            if self.lane is not None:
                self.lane.executor.remove_temps()
        elif not clean and self.index is not None and not self.dry_run:
            self.log.warning("%s%s", self._stuck_in(), self._remove_abandoned_temps())
        # before the index: a driver's close keeps its state there (S3's record of each upload
        # it aborts), and with the index closed the first abort stopped the others
        drivers = [self.driver, self.lane.executor.driver if self.lane is not None else None]
        for driver in {id(d): d for d in drivers if d is not None}.values():
            try:
                driver.close()
            except Exception:
                self.log.debug("error while closing the connection", exc_info=True)
        if self.index is not None:
            # a target never reached (a mistyped host in a one-off run) leaves no index:
            # kept, it would make every later `mirror status` exit 1; its error is kept aside
            never_reached = (
                self.driver is None
                and not self.dry_run
                and self.index.get_meta("last_listing") is None
                and not self.index.holds_files()
            )
            error = self.index.get_meta("last_error")
            if not self.dry_run:
                # stopped when asked, an upload cut off: incomplete (status: the next run
                # finishes it), not 'ended without stopping cleanly' as after a kill; its
                # temp file is left, so the next run lists the target
                cut = {} if clean else {"incomplete": 1, "stranded_temps": 1}
                # a killed run's target no pass has listed since (this run was refused at
                # another target, or stopped first) still needs the look a crash calls for
                shutdown = 0 if self.crashed else 1
                self.index.set_meta(clean_shutdown=shutdown, state="stopped", pid=None, watching=None, **cut)
                self._note_stranded()
                note_attempt(self.index_file, error if never_reached else None)
            self.index.close()
            self.index = None
            if never_reached:
                for suffix in ("", "-wal", "-shm", ".lock"):
                    with suppress(FileNotFoundError):
                        os.unlink(f"{self.index_file}{suffix}")
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            _LOCKED_HERE.discard(str(self.index_file))
        for fd in (self._folder_fd, self._place_fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._lock_fd = self._place_fd = self._folder_fd = None
        if self._claim is not None:
            self._claim.release()
            self._claim = None

    # -- one pass -------------------------------------------------------------------
    def needs_listing(self) -> bool:
        """List the target on the first run, after a crash, every rescan_interval, and
        when the target folder is another folder than the one last filled, or emptied."""
        if self.index is None:
            return True
        last = self.index.get_meta("last_listing")
        if last is None or self.crashed or self.index.has_in_flight() or self._has_stranded():
            return True
        if self.folder_replaced():
            return True
        since = time.time() - float(last)
        # negative: recorded while the clock was ahead; waiting for it would skip listings for as long
        return since >= self.settings.rescan_interval or since < 0

    def pass_(
        self,
        local: Mapping[str, LocalEntry],
        *,
        listing: bool,
        scope: Collection[str] | None,
        source_empty: bool | None = None,
        kind: str = "full",
        skip: Collection[str] = (),
        hold_gone: bool = False,
    ) -> Report:
        """Plan and execute once; transient connection problems propagate to the caller.

        The target is only contacted when it is listed or the plan has something to do,
        so a pass that finds nothing changed works offline. ``skip`` names paths left to
        a later pass: files still being written, and unreadable files and folders (with
        every file the index has below them, which a read error must not delete).
        ``hold_gone``: files gone from the source join :attr:`held` instead of being
        deleted now.
        """
        self._lane_empty_for(listing, scope)
        started = time.time()
        self._check_place()
        given_skip, given_empty, given_scope = skip, source_empty, scope
        full = scope is None
        remote: dict[str, RemoteEntry] | None = None
        if listing:
            remote = self._listing(local)
        # the scan already dropped junk; only a target's own patterns can narrow further
        mine = local
        if self.filter.narrows:
            mine = Entries((p, e) for p, e in local.items() if self.filter.wants_file(p))
        if scope is not None:
            scope = [p for p in scope if p not in mine or self.filter.wants_file(p)]
        if scope is None and source_empty is None:
            source_empty = not mine and not skip  # files still being written count as there
        written = {p for p in skip if os.path.isfile(os.path.join(self.config.source, p))}
        # files still being written wait for the watcher (one that cannot be read is left out)
        settling = any(os.access(os.path.join(self.config.source, p), os.R_OK) for p in written)
        skip = self._with_rows_below(skip, written)
        self._clear_failures_of_gone(mine, scope, skip)
        index, scope = self._index_for(mine, scope, listing)
        if skip:
            scope = set(scope if scope is not None else (*mine, *index)).difference(skip)
        settings = self._plan_settings()
        actions = plan(
            mine,
            index,
            settings,
            remote,
            scope,
            source_empty,
            hold_gone,
            self._leftovers(remote),
            excluded=lambda src: src not in mine and (src in local or self._in_source(src)),
            rows_checked=self.names_checked,
            unsendable=self.unsendable,
            left_out=self.not_sent,
            generation=functools.partial(generation_of, str(self.config.source)),
            doubted=self.doubted,
        )
        self._rows_all_checked(actions, every_row=full and not skip)
        if kind == "update" and given_scope is not None and (clash := self._clashing(actions)):
            return self._without(clash, local, given_scope, given_empty, given_skip, hold_gone)

        def listed() -> Report:
            """This pass again, with a listing. A watch pass keeps its scope: its ``local``
            holds only the changed files, and planned as the whole source it took every
            other file for gone."""
            return self.pass_(
                local,
                listing=True,
                scope=given_scope,
                source_empty=given_empty,
                kind=kind,
                skip=given_skip,
                hold_gone=hold_gone,
            )

        if remote is None and _asks(actions) > (0 if self.dry_run else ASKS_AT_MOST):
            return listed()  # one listing answers for every new file at once (and a dry run cannot ask)
        if self.dry_run:
            return Report(self.name, kind, planned=actions, guard=actions.guard, seconds=time.time() - started)
        self._note_guard(actions, settings, whole=scope is None)
        self._under_way(actions)
        if (
            kind == "full"
            and not listing
            and self.local_folder is None
            and self._root_lost(ask=True, writes=not actions.is_empty())
        ):
            # asked by a run's first pass, with work or without: a run with nothing to send
            # would report all in sync (exit 0) to a NAS share or bucket back empty. One
            # question a run (Driver.root_lost), asked before any work connects
            return listed()
        self._note_renamed(actions, mine, skip, again=kind == "update")
        if actions.held:
            self.held.hold(actions.held, time.monotonic())
            self.log.debug("%d deletions wait until the source stops losing files", len(self.held.paths))
        if actions.is_empty():
            report = self._report(kind, RunStats(guard=actions.guard), started)
            self._after(report, listing, settling)
            return report
        self.connect()
        # a full pass that listed the target and found nothing there (a first copy, a folder
        # deleted on the server that the runner fills again, one --rescan accepts) may make it
        stats = self._update(actions) if kind == "update" else self._execute(actions, True, refill=remote == {})
        with self._cv:
            self.postponed.update(stats.postponed)
        report = self._report(kind, stats, started)
        if report.state_error:
            # the index cannot take the run record: report what was sent, and stop here
            self.observer.on_report(report)
            return report
        self._after(report, listing, settling)
        self._note_stranded()  # after: the listing's all clear is for temps stranded before it
        return report

    def _under_way(self, actions: Plan) -> None:
        """Tell status and metrics that a pass with work is under way, before the target is
        reached: a server that stopped answering held the pass for its timeout, and status
        said "idle, pending 0" (metrics: in sync) meanwhile."""
        if not actions.is_empty():
            self.note(state="syncing", pending=len(actions.transfers) + len(actions.moves))
            self.observer.on_state(self.name, "syncing", None)

    def _listing(self, local: Mapping[str, LocalEntry]) -> dict[str, RemoteEntry]:
        """The target's files, once uploads a killed run left under way are dealt with."""
        remote = self.call(self.connect().list)
        if self.executor is not None:
            for path in self.executor.call(self.connect().drop_abandoned):
                self.log.info("aborted the upload of %s a stopped run left unfinished", path)
        self._recover_in_flight(remote)
        if remote and not self.settings.layout_chosen and self.index is not None and not self.index.holds_files():
            self._refuse_another_layout({p: e for p, e in local.items() if self.filter.wants_file(p)}, remote)
        return remote

    def _refuse_another_layout(self, local: Mapping[str, LocalEntry], remote: Mapping[str, RemoteEntry]) -> None:
        """Refuse to fill, in the default layout, a target that holds most of the source's
        files in another named layout, where this state folder knows none of them (a new
        machine whose `mirror run` left --layout out): every file would be sent again
        beside its copy."""
        from mirror.verify import layout_on

        layout = self.settings.layout
        told, placed = layout_on(local, remote, layout)
        if told == layout or placed * 2 <= len(local):
            return
        name, chosen = told.name, layout.name
        raise FatalError(
            f"the target holds {placed} of the source's {len(local)} files where the {name} layout puts them, "
            f"and the state folder has no index of it (a new machine?): give --layout {name} (layout = "
            f'"{name}" in a config) to go on, or --layout {chosen} to send every file again in that layout'
        )

    def _note_renamed(
        self, actions: Plan, mine: Mapping[str, LocalEntry], skip: Collection[str], again: bool
    ) -> None:
        """Say why the copy of a file renamed to a path that is not mirrored stays, and
        record it as the old path's failure: status names both paths (and the target is
        not in sync), and watch passes plan the old path with every batch, so the rename
        to a good name meets its row and becomes a move. A file at its old path again
        (renamed back) has no such failure any more. ``again``: a watch pass, which tells
        a failure as before at debug level (a full pass tells it again)."""
        if self.index is None:
            return
        for kept in actions.renamed:
            why = renamed_reason(kept)
            before = self.index.fail(kept.src, kept.dst, why)
            self.log.log(logging.DEBUG if before and again else logging.WARNING, "%s: %s", kept.src, why)
        if not self.index.failed_sources():
            return
        kept_now = {kept.src for kept in actions.renamed}
        back = [
            f.src
            for f in self.index.failures()
            if f.error.startswith(RENAMED) and f.src in mine and f.src not in skip and f.src not in kept_now
        ]
        if back:
            self.index.clear_failures(back)

    def _plan_settings(self) -> PlanSettings:
        base = self._guard_base()
        return PlanSettings(
            self.settings.layout,
            self.settings.delete,
            self.caps,
            self.settings.max_delete,
            dt.date.today(),
            self.stable_inodes,
            base,
            self._guard_steady() if base is not None else None,  # one read fewer while at rest
            self.settings.release_after,
            self._restored_lately(),
        )

    def _restored_lately(self) -> bool:
        """Whether a plan found source files older than their copies within release_after
        (mirror.plan.PlanSettings.restored_lately)."""
        seen = self.index.get_meta("restored_at") if self.index is not None else None
        return seen is not None and 0 <= time.time() - float(seen) < self.settings.release_after

    def _guard_base(self) -> int | None:
        """How many files were mirrored when the guard first withheld deletions, if it did
        since a pass last withheld none (mirror.plan._guard). An older mirror recorded only
        that it withheld: upgraded during a restore, mirror forgot it, and deleted the
        copies not yet restored once over half were back. Its rows stand for the count."""
        if self.index is None:
            return None
        base = self.index.get_meta("guard_base")
        if base is not None:
            return int(base)
        return self.index.count() if self.index.get_meta("withheld") else None

    def _guard_steady(self) -> str | None:
        """Which deletions the guard withheld (Plan.withheld_digest), where plans of the
        whole source have withheld those same ones for release_after: only then
        does the stricter guard let them go (mirror.plan._guard)."""
        seen = self._guard_seen()
        return seen[0] if seen is not None and time.time() - seen[1] >= self.settings.release_after else None

    def _guard_seen(self) -> tuple[str, float] | None:
        """The deletions plans of the whole source withhold (Plan.withheld_digest), and
        since when (meta ``guard_seen``)."""
        seen = self.index.get_meta("guard_seen") if self.index is not None else None
        if not seen:
            return None
        digest, _, since = seen.partition(" ")
        return digest, float(since)

    def _note_guard(self, actions: Plan, settings: PlanSettings, whole: bool) -> None:
        """Record whether the delete guard withholds deletions since some pass (it then
        stays stricter until a plan of the whole source withholds none: mirror.plan._guard),
        and since when a plan of the whole source withholds the ones it does now (a clock
        set back starts the wait anew). ``whole``: the plan was of the whole source."""
        if self.index is None:
            return
        if actions.restored:
            self.index.set_meta(restored_at=time.time())
        if actions.guard_base != settings.guard_base:
            self.index.set_meta(guard_base=actions.guard_base)
        if actions.guard_base is None:
            if settings.guard_base is not None:
                self.index.set_meta(guard_seen=None)  # the guard at rest again
            return
        digest = actions.withheld_digest
        if digest is None or not whole:
            return  # none withheld, or a plan of some paths: the whole source's stand
        seen = self._guard_seen()
        if seen is None or seen[0] != digest or seen[1] > time.time():
            self.index.set_meta(guard_seen=f"{digest} {time.time()}")

    def _with_rows_below(self, skip: Collection[str], files: set[str]) -> Collection[str]:
        """``skip`` and every file the index has below its paths, which a read error must
        not delete; ``files``: those of ``skip`` that are files (still being written)."""
        if not skip or self.index is None:
            return skip
        below = self.index.under(skip)
        # rows below a file still being written are of the folder that file replaced:
        # gone from the source, planned with the file, which needs their folder's path
        with self._cv:
            self.postponed.update(p for p in below if not files.isdisjoint(ancestors(p)))
        return {*skip, *below}

    def _lane_empty_for(self, listing: bool, scope: Collection[str] | None) -> None:
        """A full pass plans every file, the bulk lane's too, and a listing would take the
        lane's temp file for a leftover and remove it: both wait until the lane is empty."""
        if self.lane is not None and (listing or scope is None):
            self.lane.drain()

    def _clashing(self, actions: Plan) -> set[str]:
        """Sources of a watch plan's actions that meet the bulk lane's on the target."""
        return self.lane.clashing(actions) if self.lane is not None else set()

    def _update(self, actions: Plan) -> RunStats:
        """Run a watch plan: its large uploads, and its removals with them, go to the bulk
        lane once the rest has run (mirror.bulk), so the next pass need not wait for them."""
        if self.lane is None:
            return self._execute(actions, retell=False)
        now, later = split(actions)
        stats = self._execute(now, retell=False) if not now.is_empty() else RunStats(guard=now.guard)
        if later is not None:
            self._to_lane(later, stats, now)
        return stats

    def _without(
        self,
        clash: Collection[str],
        local: Mapping[str, LocalEntry],
        scope: Collection[str],
        source_empty: bool | None,
        skip: Collection[str],
        hold_gone: bool,
    ) -> Report:
        """A watch pass again, without the sources whose actions would meet the bulk
        lane's on the target: those wait for it (see mirror.bulk)."""
        assert self.lane is not None
        rest = [p for p in scope if p not in clash]
        if len(rest) == len(scope):
            self.lane.drain()  # nothing to leave out (cannot be, but never loop): wait instead
            rest = list(scope)
        else:
            self.lane.wait_with(local, clash)
        return self.pass_(
            {p: e for p, e in local.items() if p not in clash},
            listing=False,
            scope=rest,
            source_empty=source_empty,
            kind="update",
            skip=skip,
            hold_gone=hold_gone,
        )

    def _to_lane(self, later: Plan, stats: RunStats, now: Plan) -> None:
        """Hand a watch plan's tail (mirror.bulk.split) to the bulk lane, unless the pass
        that ran the rest of it failed as a whole: its changes are then queued again."""
        assert self.lane is not None and self.index is not None
        if stats.fatal or stats.down or stats.state_error or self.stop.is_set():
            return
        if later.removals and len(stats.failed) > len(now.refusals):
            # removals wait for every transfer of their plan (rule 2): planned again later
            with self._cv:
                self.postponed.update(r.src for r in later.removals)
            later = dataclasses.replace(later, removals=())
        self.lane.take(later)
        self.index.set_meta(incomplete=1)  # until a pass ends with the lane empty

    def _lane_done(self, files: int, size: int) -> None:
        """The lane's executor's word that ``files`` more are on the target."""
        if self.on_done:
            self.on_done(size)

    def _lane_finished(self, stats: RunStats, started: float) -> None:
        """The bulk lane ended a run: logged and recorded like a pass. Status turns idle
        here only when nothing else is under way; else the pass under way tells."""
        assert self.lane is not None
        report = self._report("update", stats, started)
        with self._cv:
            self.postponed.update(stats.postponed)
            quiet = not (self._in_pass or self._work.changes or self._work.full)
            if report.down or report.fatal or report.state_error:
                self._lane_failed = report
        self._log_report(report)
        self._note_stranded()
        if quiet and not self.lane.files() and not report.error:
            self._after(report, listing=False)
            return
        self._record_run(report)
        self._pending(0)
        self.observer.on_report(report)

    def _hand_back(self, paths: Collection[str]) -> None:
        """Queue ``paths`` the bulk lane is done with, stat'ed again, for the next pass."""
        if paths:
            self.submit(stat_paths(self.config.source, list(paths), self.filter))

    def _fill_generations(self, local: Mapping[str, LocalEntry]) -> None:
        """Once for an index that an older mirror wrote: the inode generation of each
        file its rows record, where the file is still the one recorded. Without it, each
        file mirrored before the upgrade stayed open to a new file taking its inode, size
        and time being taken for it renamed (mirror.plan: _Planner.renamed_from)."""
        assert self.index is not None
        if self.index.get_meta("generations") is not None:
            return
        root = str(self.config.source)
        found: list[tuple[str, int]] = []
        filled = 0
        # the older mirror's last pass ended then: a file changed since (its ctime) may be a
        # new one that took the old one's inode, size and time while mirror was upgraded
        seen = self.index.get_meta("heartbeat")
        since = int(float(seen) * 1e9) if seen else None
        changed: list[str] = []
        unknown: list[str] = []
        resent = 0
        if generation_of(root, ""):  # the source's filesystem keeps generations
            for row in self.index.rows():
                entry = local.get(row.src) if not row.gen else None
                if entry is not None and entry[1:] == (row.size, row.mtime_ns, row.ino):
                    if since is not None and _changed_since(os.path.join(root, row.src), since):
                        changed.append(row.src)
                    else:
                        found.append((row.src, generation_of(root, row.src)))
                elif not row.gen and row.src not in local:
                    unknown.append(row.src)  # gone: a new file with its inode is no rename of it
                if len(found) >= GENERATIONS_AT_ONCE:
                    self.index.set_generations(found)
                    filled, found = filled + len(found), []
                if len(changed) + len(unknown) >= GENERATIONS_AT_ONCE:
                    self.index.doubt(changed, unknown)
                    resent, changed, unknown = resent + len(changed), [], []
        if found:
            self.index.set_generations(found)
        if changed or unknown:
            self.index.doubt(changed, unknown)
        self._tell_filled(filled + len(found), resent + len(changed))
        self.index.set_meta(generations=1)

    def _tell_filled(self, filled: int, resent: int) -> None:
        if resent:
            self.log.info(
                "%d file(s) changed since the older mirror's last pass, keeping their inode, size and time: "
                "sent again, as they may be new files",
                resent,
            )
        if filled:
            self.log.info("recorded the inode generation of %d file(s) an older mirror sent", filled)

    def _clear_failures_of_gone(
        self, mine: Mapping[str, LocalEntry], scope: Collection[str] | None, skip: Collection[str]
    ) -> None:
        """A file that failed and has left the source (or is left out now) has nothing left
        to fail: its failure kept status at exit 1 and 'last complete sync' frozen for good.
        A file on the target that failed to go (its row still there) keeps its failure."""
        if self.index is None or self.dry_run or not (failed := self.index.failed_sources()):
            return
        looked = failed if scope is None else failed.intersection(scope)
        gone = [src for src in looked if src not in mine and src not in skip and self.index.lookup(src) is None]
        if gone:
            self.index.clear_failures(gone)

    def _execute(self, actions: Plan, retell: bool, refill: bool = False) -> RunStats:
        """Run a plan that has work in it, telling how far it has got as it goes
        (``refill``: Executor.run)."""
        assert self.executor is not None
        size = sum(t.entry.size for t in actions.transfers)
        if self.index is not None:
            # incomplete until the pass ends: a kill leaves it so for mirror status to tell
            files = len(actions.transfers) + len(actions.moves)
            self.index.set_meta(state="syncing", pending=files, incomplete=1)
            # a terminal's bar (on_plan) tells it already; a service's log has only this
            self._progress = PassProgress(files, size, self._pending, None if self.on_plan else self.log.info)
        self.observer.on_state(self.name, "syncing", None)
        if self.on_plan and actions.transfers:
            self.on_plan(size)
        try:
            return self.executor.run(actions, retell, refill)
        finally:
            self._progress = None

    def _done(self, files: int, size: int) -> None:
        """The executor's word that ``files`` more are on the target."""
        if self._progress is not None:
            self._progress.done(files, size)
        if self.on_done:
            self.on_done(size)

    def _pending(self, left: int) -> None:
        if self.index is not None:
            self.index.set_meta(pending=left + (self.lane.files() if self.lane is not None else 0))

    def settling(self, files: int) -> None:
        """``files`` changed files wait to settle in the watcher (a scan still being
        written): pending for status, though no pass has them yet."""
        self.note(settling=files or None)

    def restless(self, files: Collection[str]) -> None:
        """``files`` have kept changing for a minute and more, and are not sent: status
        counts those this target's patterns take in."""
        self.note(restless=sum(1 for rel in files if self.filter.wants_file(rel)) or None)

    def note(self, **values: str | float | int | None) -> None:
        """Record facts for status from the main thread (the watcher's bookkeeping). A state
        disk that cannot take them is waited out by this target's passes, which say so:
        raised here, it ended watch mode for every target, and nothing resumed with space."""
        if self.index is None or self.dry_run:
            return
        try:
            self.index.set_meta(**values)
        except StateError as exc:
            self.log.debug("cannot record %s: %s", ", ".join(values), exc)

    def _leftovers(self, remote: Mapping[str, RemoteEntry] | None) -> dict[str, str]:
        """Old copies earlier passes left (Index.leftovers) that are still mirror's to
        remove: not a path a row holds now, nor gone from a listing; none under keep."""
        if self.index is None:
            return {}
        found = self.index.leftovers()
        if not found:
            return found
        holders = self.index.holders(list(found))
        keep = self.settings.delete is DeletePolicy.KEEP
        done = [dst for dst in found if keep or dst in holders or (remote is not None and dst not in remote)]
        if done and not self.dry_run:
            self.index.left(done)
        return {dst: src for dst, src in found.items() if dst not in done}

    def _recover_in_flight(self, remote: Mapping[str, RemoteEntry]) -> None:
        """Record the files a pass cut short sent or moved but did not record
        (Index.sending), as the listing shows them: the plan then treats them as mirror's
        own, to replace, move, keep or delete like any other. A file whose row names
        another target path, still there, is left to the plan, which finds it at its new
        path and adopts it.

        A copy is the file journaled where its size (and time, where the target keeps
        the time it is given) are the journal's: it is recorded as the journal has it,
        inode and all, so the plan sends the file again if it was replaced meanwhile. Any
        other copy there, and any on a target that does not keep times, is recorded with
        no time, and sent again. Where the row that held the path before records a copy
        of that size and time too (invoices of one size and time swapped, or filed from
        open/ to paid/ in the flat layout), the copy there may be either file: nothing is
        recorded, and the path is in doubt for this run's passes (:attr:`doubted`)."""
        if self.index is None or self.dry_run:
            return
        journal = self.index.in_flight()
        landed = [(sent, there) for sent in journal if (there := remote.get(sent.dst)) is not None]
        known = self.index.lookup_many([sent.src for sent, _ in landed])
        holders = self.index.holders([sent.dst for sent, _ in landed])
        holding = self.index.lookup_many(set(holders.values()))
        # a copy's time is its file's only where the target keeps the time it is given;
        # elsewhere (WebDAV) it is when it landed, after the file's, and the file, taken for
        # older than its copy, had the copy kept in the trash and was sent again, warned of.
        # There a copy is told by its size alone, which does not tell it is the file sent
        kept_times = self.caps.mtime_settable
        found = []
        for sent, there in landed:
            row = known.get(sent.src)
            if row is not None and row.dst != sent.dst:
                if row.dst not in remote and there.size_is(row.size):
                    found.append(row._replace(dst=sent.dst))  # moved there: its old path is empty
                continue
            if row is not None and _records(row, there, kept_times):
                continue
            other = holding.get(holders.get(sent.dst, sent.src))
            if other is not None and other.src != sent.src and _records(other, there, kept_times):
                self.doubted.add(sent.dst)
            elif kept_times and _records(sent, there, kept_times):
                gen = generation_of(str(self.config.source), sent.src)
                found.append(sent._replace(remote_hash=there.hash, gen=gen))
            else:
                size = sent.size if there.size is None else there.size
                found.append(IndexEntry(sent.src, sent.dst, size, 0, 0, sent.date, there.hash))
        if found:
            self.log.info("%d file(s) sent or moved by a pass that was cut short are recorded now", len(found))
        self.index.record_many(found)
        self.index.clear_in_flight()

    def _folder_id(self) -> str | None:
        """Device and inode of a local target folder: another one on the same mount (a
        new or another rotated disk, a folder emptied by deleting it) has others."""
        if self.local_folder is None:
            return None
        try:
            st = os.stat(self.local_folder)
        except OSError:
            return None
        return f"{st.st_dev}:{st.st_ino}"

    def folder_replaced(self, ask: bool = False) -> bool:
        """Whether the target folder is not the one the last pass left, or was emptied:
        the index then says nothing of what it holds, and only a listing does. A local
        folder is looked at each time, and for the file mirror put there longest ago once
        a SEEN_FOR; for another target the driver tells what it made
        again, and ``ask`` asks the target once a run and once after it was found down
        (see Driver.root_lost)."""
        if self.index is None:
            return False
        if self.local_folder is None:
            return self._root_lost(ask)
        now = self._folder_id()
        if now is None:
            return False  # missing: _check_place tells
        recorded = self.index.get_meta("target_folder")
        # a folder made anew can get the old one's inode number back: empty says it too
        replaced = (recorded is not None and recorded != now) or (
            _is_empty(self.local_folder) and self.index.holds_files()
        )
        if replaced:
            self.log.info("target folder %s is not the one mirror filled; listing it", self.local_folder)
            return True
        if self._asked_lately():
            return False
        # as a remote target is asked (Driver.root_lost): the file mirror put there longest
        # ago gone says the folder was emptied, or the part of it holding that file
        # deleted, though files were put there since
        self._root_asked = time.monotonic()
        known = self.index.a_file()
        if known is not None and not os.path.lexists(os.path.join(self.local_folder, known)):
            self.log.info("target folder %s lacks %s, put there by mirror; listing it", self.local_folder, known)
            return True
        return False

    def _root_lost(self, ask: bool, writes: bool = False) -> bool:
        """``writes``: the pass has work, so it connects anyway, and asks even where mirror
        reached the target lately: its uploads would make a folder deleted since again,
        out of sight, holding only them, and later runs would find it neither gone nor
        empty (the rest missing until the rescan listing)."""
        assert self.index is not None
        lost = self.driver is not None and self.driver.root_remade()
        trusted = self._seen_lately() and not writes
        ask = ask and (registry.load_driver_class(self.resolved.backend).root_lost_free or not trusted)
        # with nothing mirror put there, there is nothing to fill again, nor to ask about
        if ask and not self._asked_lately() and not lost and self._tells_lost and (known := self.index.a_file()):
            asking, self._asking = self._asking, None
            try:
                if asking is not None and asking.exception() is None:
                    lost = bool(asking.result())
                else:
                    # retried as any request: a 429 with Retry-After failed the whole run
                    driver = self.connect()
                    lost = bool(self.call(lambda: driver.root_lost(known)))
            except Exception as exc:
                # out of reach, or refusing mirror: a run with nothing to send went on
                # offline, said all was in sync (exit 0) and stamped a complete sync of a
                # target it never reached
                raise (
                    exc if isinstance(exc, MirrorError) or self.driver is None else self.driver.classify(exc)
                ) from exc
            else:
                self._root_asked = time.monotonic()
                self._down = False
                if not lost:
                    self.index.set_meta(target_seen=time.time())
        if lost and self.index.holds_files():
            self.log.info(
                "target folder %s was deleted, emptied or made anew, or lost files mirror put there; listing it",
                self.resolved.url,
            )
            return True
        return False

    def ask_early(self) -> None:
        """Start the question the run's first pass asks the target (:meth:`_root_lost`)
        now, in a thread of its own, for the pass to take its answer: a login to an SFTP
        server (0.1-0.2 s to a loopback OpenSSH, more across a network) overlaps the scan
        of the source and the plan. Not where that pass lists the target anyway."""
        asked = self._asked_lately() or self.dry_run or self.local_folder is not None or not self._tells_lost
        if asked or self._seen_lately() or self.needs_listing():
            return
        assert self.index is not None
        if (known := self.index.a_file()) is None:
            return
        asking: Future[bool | None] = Future()

        def ask() -> None:
            try:
                asking.set_result(self.connect().root_lost(known))
            except BaseException as exc:  # the pass that takes the answer judges it
                asking.set_exception(exc)

        threading.Thread(target=ask, name=f"ask-{self.name}", daemon=True).start()
        self._asking = asking

    def _asked_lately(self) -> bool:
        """Whether this run asked the target if its folder is lost, or listed it, within
        SEEN_FOR and since it was last found down: a watching mirror asks again on its
        next pass after that, as someone may have emptied the folder, or deleted the part
        holding the file it asks for, and the uploads since made neither known."""
        return self._root_asked is not None and time.monotonic() - self._root_asked < SEEN_FOR

    def _seen_lately(self) -> bool:
        """Whether mirror asked the target (Driver.root_lost) or listed it within
        SEEN_FOR, and found its files there, in this run or an earlier one: a run then
        trusts that, as rclone trusts its listings for five minutes, and does
        not log in just to ask again (a run right after another, from cron or by hand)."""
        seen = self.index.get_meta("target_seen") if self.index is not None else None
        return seen is not None and 0 <= time.time() - float(seen) < SEEN_FOR

    @functools.cached_property
    def _tells_lost(self) -> bool:
        """Whether the backend answers Driver.root_lost: where it does not (FTP, other
        fsspec targets), asking would connect and log in for nothing."""
        return registry.load_driver_class(self.resolved.backend).root_lost is not Driver.root_lost

    def _note_stranded(self) -> None:
        """Remember temp files a lost connection left on the target (Executor.stranded):
        the next pass lists the target, which removes them, not the hourly one."""
        if self.index is None:
            return
        executors = [self.executor]
        # the lane's temp files while it sends are those of uploads under way, not stranded
        if self.lane is not None and (self.lane.executor.stranded or not self.lane.files()):
            executors.append(self.lane.executor)
        for executor in executors:
            if executor is not None and (executor.stranded or executor.temps):
                self.index.set_meta(stranded_temps=1)
                executor.stranded = False

    def _has_stranded(self) -> bool:
        return self.index is not None and self.index.get_meta("stranded_temps") is not None

    def inner_mounts(self) -> frozenset[str]:
        """The shares and disks mounted inside the source at this target's last full scan."""
        raw = self.index.get_meta("inner_mounts") if self.index is not None else None
        return frozenset(json.loads(raw)) if raw else frozenset()

    def remember_inner_mounts(self, mounts: frozenset[str]) -> None:
        self.note(inner_mounts=json.dumps(sorted(mounts)) if mounts else None)

    def source_place(self) -> str | None:
        """The mount the source folder was on when this target last got a pass."""
        return self.index.get_meta("source_place") if self.index is not None else None

    def _retrying(self, error: str) -> None:
        """A request failed and is tried again: status says so while it lasts. A server
        that stopped answering costs a timeout a try, minutes in all before the target
        counts as down, and status said syncing, in sync, meanwhile."""
        self.observer.on_retry(self.name, error)
        since = self._retry_since = self._retry_since or time.time()
        self.note(retrying=error, retrying_since=since)

    def _answered(self) -> None:
        """A request tried again got through: the target answers."""
        since, self._retry_since = self._retry_since, None
        if since is not None:
            self.note(retrying=None, retrying_since=None)

    def failing(self, why: str, state: str = "failing") -> None:
        """Say this target cannot be mirrored now, and why, where status, metrics and
        alerts look (a pass that ends records its own outcome)."""
        self._failing = True
        if self.index is not None and not self.dry_run:
            try:
                # what comes back may be an empty folder: the next run asks (_seen_lately);
                # the retries, if any, ended in this
                self.index.set_meta(
                    state=state, last_error=why, target_seen=None, retrying=None, retrying_since=None
                )
            except StateError:
                self.log.debug("cannot record the state", exc_info=True)
        self.observer.on_state(self.name, state, why)

    def _place(self) -> str | None:
        """Where a local target folder is (mirror.mounts.place_of); None for other targets."""
        return None if self.local_folder is None else place_of(self.local_folder)

    def _check_place(self) -> None:
        """Refuse a local target folder that is gone, or on another mount than the one mirror
        filled, or below a mount point the system lists with nothing mounted there: a USB
        disk or a NAS share that is not mounted. Written to, the folder below
        the mount point would get a whole new copy on the system disk, and status would say
        all is in sync."""
        if self.index is None or self.dry_run:
            return
        if self.local_folder is not None and (expected := not_mounted(self.local_folder)):
            # needs no record: holds for a first copy too, and --rescan cannot wish it away
            raise TransientError(
                f"target folder {self.resolved.url} is below {expected.point}, where {expected.by} mounts a "
                "disk or share, but none is mounted there: mount it and mirror carries on (gone for good? "
                f"take it out of {expected.by})"
            )
        if self.accept_new_place:
            return
        recorded = self.index.get_meta("target_place")
        place = self._place()
        if place is None or place == recorded or not (files := self.index.count()):
            return
        where = self.resolved.url
        if recorded is None:
            # an index from an older mirror says what it put there, not on which disk:
            # a folder missing or empty is more likely a mount point than the disk
            assert self.local_folder is not None
            if place and not _is_empty(self.local_folder):
                return
            raise TransientError(
                f"target folder {where} is {'missing' if place == '' else 'empty'}, but mirror put {files} files "
                "there (its index, from an older mirror, does not say on which disk): is the disk mounted? "
                "Mount it and mirror carries on; if it was emptied or moved on purpose, run once with --rescan"
            )
        now = "missing" if place == "" else f"on {place}"
        assert self.local_folder is not None
        on = place or mount_place(self.local_folder)
        if on and place_point(recorded) in place_point(on).parents:
            # a disk mounted since on the way to the folder (its first copy went to the
            # mount point's folder before the disk was there): "is the disk mounted?" of
            # a disk that is
            raise TransientError(
                f"target folder {where} is {now}, on {on} mounted since mirror filled it on {recorded}: if "
                "the folder belongs on this disk, run once with --rescan (the copy made before stays below "
                "the mount point); if not, unmount it and mirror carries on"
            )
        raise TransientError(
            f"target folder {where} is {now}, but mirror filled it on {recorded}: is the disk mounted? "
            "Mount it and mirror carries on; if the folder moved on purpose, run once with --rescan"
        )

    def _index_for(
        self, local: Mapping[str, LocalEntry], scope: Collection[str] | None, listing: bool
    ) -> tuple[Mapping[str, IndexEntry], Collection[str] | None]:
        """The index rows this pass plans with, and its scope.

        A pass that checks a listing compares every file, so it loads every row. Otherwise
        only the paths in scope can need an action; for a full pass those are found by
        streaming the index past the scan, so unchanged files never become objects.
        """
        if self.index is None:
            return {}, scope
        if scope is None and not self.dry_run:
            self._fill_generations(local)
        if listing or (scope is None and not self.names_checked):
            # a full pass that checks every row against the target's rules reads them all
            return self.index.entries(), scope
        if scope is None:
            entries = local if isinstance(local, Entries) else Entries(local.items())
            changed, scope, total = narrow(entries, self.index.stamps(), self.settings.layout, self.stable_inodes)
            loaded = self.index.lookup_many(changed)
        else:
            loaded = self.index.lookup_many(scope)
            total = self.index.count()
        index = self.index
        return KnownFiles(
            loaded, scope, total, index.rows, index.lookup, index.targets, index.holders, index.held_below
        ), scope

    def call(self, fn: Callable[[], T]) -> T:
        """``fn`` against the target, its errors as mirror's (and retried, but in a dry run)."""
        assert self.executor is not None or self.dry_run
        if self.executor is None:
            try:
                return fn()
            except MirrorError:
                raise
            except Exception as exc:
                raise self.connect().classify(exc) from exc
        return self.executor.call(fn)

    def _report(self, kind: str, stats: RunStats, started: float) -> Report:
        report = Report(
            self.name,
            kind,
            stats.uploaded,
            stats.adopted,
            stats.moved,
            stats.deleted,
            stats.bytes,
            tuple(stats.failed),
            stats.guard,
            stats.fatal,
            stats.down,
            time.time() - started,
            state_error=stats.state_error,
            cut_short=stats.cut_short,
            trashed=stats.trashed,
            full=stats.full,
            left_out=self.left_out,
        )
        # a pass with nothing to send got through too (a service restarted on a target in
        # sync): a fatal error later is one to wait out, not a config mistake to exit on
        self.reached = self.reached or not (report.fatal or report.down)
        return report

    def _after(self, report: Report, listing: bool, settling: bool = False) -> None:
        """Record how a pass went. ``settling``: it left files still being written to the
        watcher, which sends them once they settle."""
        assert self.index is not None
        now = time.time()
        self._record_run(report)
        # a large file still on its way in the bulk lane: in progress, not in sync
        sending = self.lane.files() if self.lane is not None else 0
        # deletions waiting until the source stops losing files (mirror.held): the
        # target still holds those copies
        held = len(self.held.paths)
        with self._cv:
            queued = len(self._work.changes)  # handed on while this pass went on (submit)
            self._failing = False
        self._retry_since = None  # the pass's retries ended, in an answer or its failure
        values: dict[str, str | float | int | None] = {
            "heartbeat": now,
            "retrying": None,
            "retrying_since": None,
            "state": "syncing" if sending or held or queued else "idle",
        }
        if self._vouch:
            values["names_checked"], self._vouch = self._names_checked_mark(), False
        if not report.down:
            values["pending"] = sending + held + queued  # a target down keeps the count of what is still to send
        if report.down:
            values["target_seen"] = None  # it may come back empty: the next run asks
        elif not report.error and listing:
            # its folder was there (see _seen_lately). Not from an upload: S3 has no
            # folders, and an upload makes a folder someone deleted anew, out of sight
            values["target_seen"] = now
        if listing and not report.error:
            values["last_listing"] = now
            values["stranded_temps"] = None
            self.crashed = False
            self._root_asked = time.monotonic()
        if not (report.cut_short or report.error or sending):
            values["incomplete"] = None
            # the pass itself ran: what stopped an earlier one (a source not mounted) is over;
            # failed items and withheld deletions have their own lines in status
            values["last_error"] = None
        # a folder made again lacks the files it held until a listing pass sends them
        remade = self.local_folder is None and self.driver is not None and self.driver.root_remade()
        # a first copy is not complete while files written just before the start wait to
        # settle: status said so with nothing on the target yet
        first_waits = settling and self.index.get_meta("last_complete_sync") is None
        # what the guard withheld stands until a pass plans every deletion again (a full
        # one that holds none for later): a watch pass deleting another file cleared it,
        # status exited 0 and a complete sync was recorded, the withheld copies still there
        planned_all = report.kind == "full" and not held
        withheld = report.guard if report.guard or planned_all else self.index.get_meta("withheld")
        # the source went away while the pass ran: what the engine told of it then stays told
        away = self._source_away()
        if (
            report.ok
            and not report.cut_short
            and not self.index.failures()
            and not remade
            and not sending
            and not held
            and not first_waits
            and not withheld
            and away is None
        ):
            values["last_complete_sync"] = now
            self.doubted.clear()  # every file has its copy, sent where one was in doubt
        elif report.error or away:
            values["last_error"] = report.error or away
            values["state"] = "failing"
        # looked at again, not taken from the check before the pass: a first copy makes the folder
        if not report.error and (place := self._place()):
            values["target_place"] = place
            values["target_folder"] = self._folder_id()
        # a remount comes with a full pass (the watcher rescans); watch passes need not look.
        # Another place than the recorded one only when accepted (--rescan): a pass that
        # ended as the disk went away recorded the mount point's folder, which then passed
        # for the source come back, and the disk back for a folder moved
        if (
            report.kind == "full"
            and not report.error
            and away is None
            and (self.accept_new_place or self.source_place() is None)
            and (source_place := place_of(str(self.config.source)))
        ):
            values["source_place"] = source_place
        values["withheld"] = withheld
        self.index.set_meta(**values)
        self.observer.on_report(report)
        self.observer.on_state(self.name, str(values["state"]), report.error or away)

    def _record_run(self, report: Report) -> None:
        """A run record for status's history: every full pass, and watch passes that did something."""
        assert self.index is not None
        if report.uploaded or report.deleted or report.moved or report.failed or report.kind != "update":
            now = time.time()
            result = "ok" if report.ok else (report.error or report.guard or "some items failed")
            self.index.add_run(
                RunRecord(
                    report.kind,
                    now - report.seconds,
                    now,
                    report.uploaded,
                    report.bytes,
                    report.deleted,
                    len(report.failed),
                    result,
                )
            )

    # -- the live loop ------------------------------------------------------------------
    def submit(
        self,
        changes: dict[str, LocalEntry | None] | None = None,
        *,
        full: bool = False,
        listing: bool = False,
        skip: frozenset[str] = frozenset(),
    ) -> None:
        """Queue work for the runner's thread; a full pass absorbs earlier ones."""
        with self._cv:
            if full:
                self._work.full = True
                self._work.listing |= listing
                self._work.skip = skip
            if changes:
                self._work.changes.update(changes)
            self._cv.notify()
            waiting = len(self._work.changes)
            between = not (self._in_pass or self._failing)
        if changes and self.dead is not None:
            # a stopped target waits up to rescan_interval: status said "pending 0" meanwhile
            self.note(pending=waiting)
        elif changes and between:
            # until the pass that takes them has planned (seconds, on a large source),
            # status and metrics said "idle, pending 0": in sync. One under way counts
            # them as it ends (_after)
            self.note(state="syncing", pending=waiting)

    def stopped_with(self, unsettled: Collection[str]) -> None:
        """Watch mode ends with the paths ``unsettled`` still settling in the watcher, and
        perhaps some queued here: never sent, so status must not call the target in sync
        (the next run's first pass sends them, and clears it). Only those this target's
        patterns take count: a notes file settling left a PDF-only target 'incomplete'."""
        mine = sum(1 for rel in unsettled if self.filter.wants_file(rel))
        with self._cv:
            # the bulk lane's are counted as the runner closes (_tell_unsent): a large
            # file the stop's wait lets finish was told as not sent, then as sent
            self._unsent_at_stop = mine + len(self._work.changes) + len(self.held.paths)

    def _tell_unsent(self) -> None:
        """Say what a stop of watch mode (:meth:`stopped_with`) left unsent, once the
        runner's threads have had their wait."""
        left, self._unsent_at_stop = self._unsent_at_stop, None
        if left is None:
            return
        if self.lane is not None:
            left += self.lane.files() + self.lane.waiting()
        if left and self.index is not None and not self.dry_run:
            self.note(incomplete=1)
            self.log.warning("stopped with %d change(s) not yet sent; the next run sends them", left)

    def holding(self, what: Holding) -> None:
        """Tell mirrors refused this target what this one does with it (index_lock)."""
        if self._lock_fd is not None:
            index_lock.tell(self._lock_fd, what)

    def start(self, known: Entries, lock: threading.Lock, source_away: Callable[[], str | None]) -> None:
        self._hold_full = True
        self._known = known
        self._known_lock = lock
        self._source_away = source_away
        self._thread = threading.Thread(target=self._keep_running, name=f"mirror-{self.name}", daemon=True)
        self._thread.start()

    def check_thread(self) -> None:
        """The watchdog, from the main thread: start the runner's thread again if it ended
        though no stop was asked for. It ends so only outside the loop's reach (Python's
        own start of a thread out of memory, the handling of an error in
        :meth:`_keep_running` failing too, or an observer that calls sys.exit()): the
        target got nothing more, and status said 'running, starting' for good."""
        thread = self._thread
        if thread is None or thread.is_alive() or self.stop.is_set() or time.monotonic() < self._restart_at:
            return
        ended_in = self.observer.calling(thread)
        why = "its thread ended unexpectedly (out of memory?)"
        if ended_in:
            why = f"its thread ended in {ended_in} (observers must never raise, nor exit)"
        wait, self._restart_wait = self._restart_wait, min(self._restart_wait * 2, RESTART_MOST)
        self._restart_at = time.monotonic() + wait
        self.failing(why, "failed")
        self.submit(full=True, listing=True)  # what it was doing is lost: a listing finds it
        try:
            self._thread = threading.Thread(target=self._keep_running, name=f"mirror-{self.name}", daemon=True)
            self._thread.start()
        except RuntimeError as exc:  # can't start new thread
            self.log.error("%s; cannot start it again: %s; trying again in %.0f s", why, described(exc), wait)
            self.failing(described(exc), "failed")
        else:
            self.log.error("%s; started it again", why)

    def _stuck_in(self) -> str:
        """What the runner's thread is still doing after a stop that it did not answer."""
        busy = self.observer.calling(self._thread) if self._thread is not None else None
        if busy:
            return f"stopped with {busy} still running, which held up this target (observers must return quickly)"
        return "stopped with an upload still running (a large file, or a link that hangs); the next run sends it"

    def _remove_abandoned_temps(self) -> str:
        """Remove the temp files of uploads a stop gave up on, for :meth:`close`; what
        became of them, for its warning. A clean stop left a hidden partial file of up to
        a few GiB on the target, for good if mirror was not run again."""
        executors = [e for e in (self.executor, self.lane.executor if self.lane else None) if e is not None]
        if not any(e.temps.copy() for e in executors):
            return ""

        def remove() -> None:
            for executor in executors:
                executor.remove_temps()

        remover = threading.Thread(target=remove, name=f"mirror-{self.name}-temps", daemon=True)
        remover.start()
        remover.join(TEMPS_WAIT)
        left = sorted(t for e in executors for t in e.temps.copy())
        if not left:
            return "; its temp file on the target was removed"
        return f"; its temp file {', '.join(left)} stays on the target until the next run removes it"

    def wake(self) -> None:
        """Let the runner's thread (and its bulk lane) notice :attr:`stop` at once."""
        with self._cv:
            self._cv.notify_all()
        if self.lane is not None:
            self.lane.wake()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the runner's thread and its bulk lane to end."""
        deadline = time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
        return self.lane is None or self.lane.join(max(0.0, deadline - time.monotonic()))

    def _take(self) -> Work | None:
        """The next work; empty when all there is to do is plan the held deletions, full
        when the guard's verdict is due to be looked at again."""
        with self._cv:
            while not (self._work.full or self._work.changes) and not self.stop.is_set():
                now = time.monotonic()
                due = self.held.due_in(now)
                if self._recheck_at is not None and now >= self._recheck_at:
                    self._recheck_at = None
                    self._work.full = True
                    break
                if self._recheck_at is not None:
                    due = min(due if due is not None else 60.0, self._recheck_at - now)
                if due == 0:
                    break
                self._cv.wait(timeout=60.0 if due is None else min(due, 60.0))
                if self.stop.is_set():
                    break
                if not (self._work.full or self._work.changes) and self.index and self.index.failures():
                    self._work.changes.update(
                        stat_paths(self.config.source, [f.src for f in self.index.failures()], self.filter)
                    )
            if self.stop.is_set():
                return None
            work, self._work = self._work, Work()
            return work

    def _keep_running(self) -> None:
        """The runner's thread: :meth:`_loop`, run again after a while whatever escapes it
        (a MemoryError while it handles another error, a state write in a handler). Such
        a thread ended with a line on stderr at most: the target got nothing more, status
        said 'running, starting', exit 0, and no alert came."""
        wait = RESTART_FIRST
        while True:
            began = time.monotonic()
            try:
                self._loop()
                return
            except Exception as exc:
                if time.monotonic() - began > RESTART_MOST:
                    wait = RESTART_FIRST  # it ran well for a while: this is a new breakdown
                why = described(exc)
                with suppress(Exception):  # short of memory, even saying so can fail
                    bug = not (isinstance(exc, MirrorError) or starved(exc))
                    self.log.error("%s; starting this target again in %.0f s", why, wait, exc_info=bug)
                with suppress(Exception):
                    self.failing(why, "failed")
                with suppress(Exception):
                    self.submit(full=True, listing=True)  # the work it held is lost: a listing finds it
                if self.stop.wait(wait):
                    return
                wait = min(wait * 2, RESTART_MOST)

    def _loop(self) -> None:
        backoff = 1.0
        #: the state error told, said once for as long as it lasts (a full disk for a day)
        told: str | None = None
        while (work := self._take()) is not None:
            try:
                for report in self._passes(work):
                    self._log_report(report)
                    self._recheck_guard(report)
                    raise_failure(report)
                backoff, self._full_wait = 1.0, FULL_FIRST
                if told is not None:
                    self.log.info("mirror's state can be written again; carrying on")
                    told = None
            except TransientError as exc:
                # what comes back may be an empty folder: the next pass asks (see _root_lost)
                self._root_asked = None
                self._down = True
                # a target counted as down says so already (TargetDown)
                reason = str(exc).removeprefix("target unreachable: ")
                self.log.warning("target unreachable (%s); retrying in %.0f s", reason, backoff)
                self.failing(str(exc))
                self.submit(work.changes, full=work.full, listing=work.listing, skip=work.skip)
                with self._cv:
                    queued = dict(self._work.changes)
                if queued and not self.dry_run and self.index is not None:
                    gone = self.index.lookup_many([p for p, e in queued.items() if e is None])
                    # status and metrics count what piles up meanwhile
                    self._pending(pending_count(queued, gone))
                if self.stop.wait(backoff):
                    return
                backoff = min(backoff * 2, 60.0)
            except (FatalError, ConfigError) as exc:
                # a full disk gets space, a revoked token a new grant: tried again at each
                # rescan, where it stayed stopped until mirror was restarted; a full one sooner
                self.dead = str(exc)
                again = self._retry_in(exc)
                self.log.error(
                    "target stopped: %s; trying it again in %s, or at once on a reload (systemctl reload)",
                    exc,
                    human_duration(again),
                )
                self.failing(str(exc), "failed")
                self.submit(work.changes)  # counted in status while it waits (submit)
                if self.stop.wait(again):
                    return
                self.dead = None
                self.submit(full=True, listing=True, skip=work.skip)
            except Exception as exc:
                if self.stop.is_set():
                    # on past a stop that gave up waiting (an upload stuck on a hung server,
                    # a reload), its index closed under it: no failure of the target's
                    self.log.debug("after the stop: %s", described(exc))
                    return
                told = self._tell_broken(exc, told, backoff)
                # rows of the failed pass may have gone with its transaction: listed, the
                # target gives them back
                self.submit(full=True, listing=True)
                if self.stop.wait(backoff):
                    return
                backoff = min(backoff * 2, 60.0)

    def _tell_broken(self, exc: Exception, told: str | None, backoff: float) -> str | None:
        """Tell a pass that broke down on ``exc``; the state error told now (``told``: the
        one told before, said once for as long as it lasts)."""
        if isinstance(exc, StateError):
            level = logging.DEBUG if str(exc) == told else logging.ERROR
            self.log.log(level, "%s; retrying in %.0f s, then less often up to every minute", exc, backoff)
            self.observer.on_state(self.name, "failing", str(exc))
            return str(exc)
        self.log.error("%s; will rescan", described(exc), exc_info=starved(exc) is None)
        # the log alone is where no one looks: status must show it (exit 1)
        self.failing(described(exc))
        return told

    def _passes(self, work: Work) -> list[Report]:
        """:meth:`_do`, known to be under way (see :meth:`_lane_finished`); an error that
        ended the bulk lane's last run counts as this pass's."""
        with self._cv:
            self._in_pass = True
            failed, self._lane_failed = self._lane_failed, None
        try:
            if self.lane is not None and (bug := self.lane.bug()) is not None:
                raise bug
            if failed is not None:
                raise_failure(failed)
            return self._do(work)
        finally:
            with self._cv:
                self._in_pass = False

    def _retry_in(self, exc: MirrorError) -> float:
        """Seconds a target stopped by ``exc`` waits before it is tried again."""
        if not isinstance(exc, TargetFull):
            return self.settings.rescan_interval
        # a full disk was reached: no mistake in the config to exit for (Mirror.run_forever)
        self.reached = True
        wait, self._full_wait = self._full_wait, min(self._full_wait * 2, FULL_MOST)
        return min(wait, self.settings.rescan_interval)

    def _recheck_guard(self, report: Report) -> None:
        """Deletions the guard withheld are planned again by a full pass a while later,
        sooner than the next rescan: a folder emptied and written anew (a nightly
        re-export) is complete by then, and only its real deletions remain, under the
        limit. Backs off while the verdict stands (an unmounted source stays empty)."""
        if report.guard:
            self._recheck_at = time.monotonic() + self._recheck_every
            self._recheck_every = min(self._recheck_every * 2, self.settings.rescan_interval)
        elif report.kind == "full":
            self._recheck_every = GUARD_RECHECK
        elif self._recheck_at is not None and report.uploaded:
            # files coming back (the folder written anew): looked at again soon, not after
            # the backoff (up to rescan_interval), for status said "withheld" meanwhile
            self._recheck_at = min(self._recheck_at, time.monotonic() + GUARD_RECHECK)

    def _do(self, work: Work) -> list[Report]:
        # first: asked after an outage, a target still down ends the pass here, and takes
        # nothing along that the work put back in the queue does not hold
        if not work.full and (self._has_stranded() or self.folder_replaced(ask=True)):
            # its listing finds what a watch pass would not: temp files, an empty folder
            work.full = work.listing = True
        reports = []
        with self._cv:
            retry, self.postponed = self.postponed, set()
        hold = self.held.holding(time.monotonic())
        if work.full or not hold:
            # a full pass plans every deletion itself; otherwise the held ones are due
            released = self.held.release()
            if not work.full:
                work.changes.update(stat_paths(self.config.source, released - work.changes.keys(), self.filter))
        if work.full and not self._source_here(work):
            return []
        if work.full:
            self._lane_empty_for(listing=True, scope=None)  # before: its journal asks for a listing
            with self._known_lock:
                local = self._known.copy()
            listing = work.listing or self.needs_listing()
            hold_gone, self._hold_full = self._hold_full, False
            reports.append(self.pass_(local, listing=listing, scope=None, skip=work.skip, hold_gone=hold_gone))
        elif retry:
            work.changes.update(stat_paths(self.config.source, retry - work.changes.keys(), self.filter))
        if work.changes:
            in_the_way = self.held.in_the_way(work.changes)
            work.changes.update(stat_paths(self.config.source, in_the_way - work.changes.keys(), self.filter))
        if work.changes and self.index is not None:
            # items that failed before get another chance with every batch (failures are few)
            failed = [f.src for f in self.index.failures() if f.src not in work.changes]
            work.changes.update(stat_paths(self.config.source, failed, self.filter))
        if work.changes and not self._source_here(work):
            return reports
        if work.changes and self.lane is not None:
            # changes to what a large upload still works on wait for it (mirror.bulk)
            work.changes = self.lane.hold_back(work.changes)
        if work.changes:
            # the guard must see an emptied source in watch mode too, not only in full passes,
            # and as this target's patterns see it: a typo (include = ["*.PDF"]) withheld
            # every deletion in a full pass, and in watch mode took the copy of each file
            # the program touched
            with self._known_lock:
                source_empty = not any(map(self.filter.wants_file, self._known))
            reports.append(
                self.pass_(
                    {p: e for p, e in work.changes.items() if e is not None},
                    listing=False,
                    scope=list(work.changes),
                    kind="update",
                    source_empty=source_empty,
                    hold_gone=hold,
                )
            )
        if reports and self.local_folder is None and self.folder_replaced():
            # this pass made the target folder again: it is filled now, not at the next rescan
            with self._known_lock:
                local = self._known.copy()
            reports.append(self.pass_(local, listing=True, scope=None, skip=work.skip))
        return reports

    def wants_below(self, rel: str) -> bool:
        """Whether this target's patterns may take in a file at or below the source path
        ``rel`` (``"."`` or ``""``: the source folder itself)."""
        return rel in ("", ".") or self.filter.wants_dir(rel)

    def _in_source(self, src: str) -> bool:
        """Whether ``src`` is in the source, where a pass's files do not say: a watch pass
        has only the changed ones, and a file its patterns leave out was told as removed
        from the source, the guard's 'patterns take in no file' as 'the source is empty'.
        A path reached through a link to a folder is not (links are not followed): a folder
        swapped for a link had its copies deleted as 'excluded by the config'. Nor is one
        that is no longer a regular file (a link, a folder in its place): the scan left it
        out for that, not the patterns."""
        root = self.config.source
        try:
            if not stat.S_ISREG(os.lstat(os.path.join(root, src)).st_mode):
                return False
        except OSError:
            return False
        return not any(os.path.islink(os.path.join(root, folder)) for folder in ancestors(src))

    def _source_here(self, work: Work) -> bool:
        """Wait while the source folder is away (unmounted, renamed away: Mirror.source_moved),
        then stat the changes of ``work`` again; False when stopped meanwhile. Asked after
        the stats of a pass: stat'ed while it was away, every file looked gone, and the held
        deletions and failed items stat'ed here (out of reach of the engine's check of each
        batch) deleted their copies."""
        if self._source_away() is None:
            return True
        while not self.stop.wait(SOURCE_WAIT):
            if self._source_away() is None:
                work.changes = stat_paths(self.config.source, work.changes, self.filter)
                return True
        return False

    def _log_report(self, report: Report) -> None:
        if report.uploaded or report.moved or report.deleted or report.adopted or report.cut_short:
            self.log.info("%s", summarize(report, named=False))
        if report.guard:
            now = time.monotonic()
            again = self._guard_told[0] == report.guard and now - self._guard_told[1] < GUARD_RETELL
            self.log.log(logging.DEBUG if again else logging.WARNING, "deletions withheld: %s", report.guard)
            if not again:
                self._guard_told = (report.guard, now)


def _records(row: IndexEntry, there: RemoteEntry, kept_times: bool) -> bool:
    """Whether ``row`` records the copy ``there``: its size, and its time where the
    target keeps the time it is given."""
    return there.size_is(row.size) and (not kept_times or row.mtime_ns == there.mtime_ns)


def _asks(actions: Plan) -> int:
    """How many moves and puts of ``actions`` must ask the target what stands at their path."""
    puts = sum(1 for t in actions.transfers if isinstance(t, Put) and t.ask)
    return puts + sum(1 for m in actions.moves if m.ask)


def raise_failure(report: Report) -> None:
    """A pass that failed as a whole, as the error the live loop reacts to."""
    if report.down:
        raise TransientError(report.down)
    if report.fatal:
        raise (TargetFull if report.full else FatalError)(report.fatal)
    if report.state_error:
        raise StateError(report.state_error)


#: how the failure recorded for a file renamed to a path that is not mirrored begins
RENAMED = "renamed in the source to "


def renamed_reason(kept: Renamed) -> str:
    """Why the copy of a file renamed to a path that is not mirrored stays, naming the
    path it has now (its bytes shown, where the name is not valid UTF-8: the index keeps
    the reason as a failure of the old path)."""
    copy = "its copy on the target" + (f" ({kept.dst})" if kept.dst != kept.src else "")
    return (
        f"{RENAMED}{with_bytes_shown(kept.now)}, which is not mirrored ({with_bytes_shown(kept.why)}); "
        f"{copy} stays until the file can be mirrored"
    )


def _is_empty(folder: str) -> bool:
    try:
        with os.scandir(folder) as entries:
            return next(entries, None) is None
    except OSError:
        return False
