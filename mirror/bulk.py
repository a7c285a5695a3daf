"""The bulk lane: in watch mode, a large upload no longer holds back every other change.

A watch pass used to send everything it planned before the next pass could start: an
invoice written while a 60 MiB scan went out over a 20 Mbit/s link reached the target
13-25 s late. Now a watch pass sends its small files itself and hands its large puts to
this lane, one per target: a thread with an executor of its own, so the pass ends, and
the next one (the invoice) starts, while the large file is still on its way.

What the lane owns:

- The plan's tail: the large puts, and with them every removal of their plan, which
  must still wait for all the uploads of its plan (data-safety rule 2: a file renamed
  and not recognised is a put plus a delete; the delete alone would lose it).
- The paths it works on ("busy"). A later change that touches one (the same path, a
  folder above it, a path below it, the same file under a new name) waits here until
  the lane is done with it, then goes back to the runner, which stats it again and
  plans it against an index that now holds what the lane sent. Wait-for-it, not
  cancel-and-restart: no backend can cut an upload off half-way, and a file that
  changed while it was being sent is sent again once it settles.
- Handing back every path it finished: the runner's next pass finds it recorded (or
  changed since, and sends it again), and tells status the target is idle.
- Telling the runner how each run ended (``finished``): a run that found the target
  down, or failing as a whole, makes the runner's loop back off exactly as its own
  passes do.

Full passes, listing passes and ``--once`` never hand anything here: they first wait
until the lane is empty (a listing would take its temp file for a leftover).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from mirror.errors import StateError
from mirror.execute import Executor, RunStats
from mirror.plan import Delete, Move, Plan, Put, Trash
from mirror.progress import human_bytes
from mirror.scan import LocalEntry

#: a watch pass hands files of at least this size to the lane. At a modest 20 Mbit/s
#: uplink (2.5 MB/s) 2 MiB take about a second, the delay watch mode promises for a
#: change; a smaller file costs the others less than its hand-off is worth. Invoices
#: are tens to hundreds of kB, scans and exports megabytes.
LANE_FILE_BYTES = 2 << 20


def split(actions: Plan, threshold: int | None = None) -> tuple[Plan, Plan | None]:
    """A watch plan as (what its pass runs now, what the lane runs after it): the puts
    of ``threshold`` bytes and more (LANE_FILE_BYTES) go to the lane, and every removal
    with them. None when nothing is large."""
    threshold = LANE_FILE_BYTES if threshold is None else threshold
    large = [t for t in actions.transfers if isinstance(t, Put) and t.entry.size >= threshold]
    if not large:
        return actions, None
    rest = tuple(t for t in actions.transfers if not (isinstance(t, Put) and t.entry.size >= threshold))
    now = dataclasses.replace(actions, transfers=rest, removals=())
    return now, Plan(transfers=tuple(large), removals=actions.removals)


def related(a: str, b: str) -> bool:
    """Whether two paths are one, or one lies below the other."""
    return a == b or a.startswith(f"{b}/") or b.startswith(f"{a}/")


#: a source file as the lane tells it apart: (inode, size, mtime in ns); NONE for none
Identity = tuple[int, int, int]
NONE: Identity = (0, 0, 0)


def identity(entry: LocalEntry | None) -> Identity:
    return NONE if entry is None else (entry.ino, entry.size, entry.mtime_ns)


@dataclass
class Busy:
    """What the lane works on: source paths with their files' identities, and target paths."""

    srcs: dict[str, Identity] = dataclasses.field(default_factory=dict)
    dsts: set[str] = dataclasses.field(default_factory=set)

    def add(self, later: Plan, key: Callable[[str], str]) -> None:
        for put in later.transfers:
            assert isinstance(put, Put)
            self.srcs[put.src] = identity(put.entry)
            self.dsts.add(key(put.dst))
        for removal in later.removals:
            self.srcs.setdefault(removal.src, NONE)
            if isinstance(removal, (Delete, Trash)):
                self.dsts.add(key(removal.dst))

    def holds(self, path: str, now: Identity) -> bool:
        """Whether a change of ``path`` (now the file ``now``; NONE: none) touches what
        the lane works on: the same file, a folder above or below it, or the file itself
        renamed: same inode, size and time (a source without stable inodes has none: its
        rename is a put of the new path and a removal of the old one, which waits). By
        inode alone, an invoice given the inode of a large file just deleted (ext4 hands
        them out again at once) waited for the whole lane run."""
        return any(related(path, src) for src in self.srcs) or (now[0] != 0 and now in self.srcs.values())

    def meets(self, dst: str) -> bool:
        return any(related(dst, busy) for busy in self.dsts)


def clashing(actions: Plan, busy: Busy, key: Callable[[str], str]) -> set[str]:
    """Sources of the actions in ``actions`` that would write or remove where the lane
    is working on the target: two sources of one target path (a flat layout), a folder
    made where the lane's file goes. Their changes wait for the lane."""
    found: set[str] = set()
    for action in (*actions.moves, *actions.transfers, *actions.early, *actions.removals):
        paths: list[str | None] = []
        if isinstance(action, Move):
            paths = [action.dst, action.old_dst, action.aside]
        elif isinstance(action, Put):
            paths = [action.dst, action.aside]
        elif isinstance(action, Trash):
            paths = [action.dst, action.trash_dst]
        elif isinstance(action, Delete):
            paths = [action.dst]
        else:
            paths = [getattr(action, "dst", None)]
        if any(p is not None and busy.meets(key(p)) for p in paths):
            found.add(action.src)
            if isinstance(action, Move) and action.old_src:
                found.add(action.old_src)
    return found


class BulkLane:
    """One target's lane: a queue of plan tails, and the thread that runs them."""

    def __init__(
        self,
        executor: Executor,
        stop: threading.Event,
        key: Callable[[str], str],
        hand_back: Callable[[Collection[str]], None],
        finished: Callable[[RunStats, float], None],
        logger: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        """``hand_back(paths)``: queue paths for the runner's next pass, to stat again.
        ``finished(stats, started)``: a run of the lane ended (for the index and status)."""
        self.executor = executor
        self.stop = stop
        self._key = key
        self._hand_back = hand_back
        self._finished = finished
        self.log = logger
        self._cv = threading.Condition()
        self._queue: list[Plan] = []
        self._busy = Busy()
        #: paths whose changes wait for the lane, with the file each had (NONE: none)
        self._waiting: dict[str, Identity] = {}
        #: the tail being sent now
        self._current: Plan | None = None
        #: an error no one expected that ended the lane's last run (a bug)
        self._bug: Exception | None = None
        self._thread: threading.Thread | None = None

    # -- the runner's side ---------------------------------------------------------------
    def take(self, later: Plan) -> None:
        """Queue a plan's tail (:func:`split`)."""
        for put in later.transfers:
            assert isinstance(put, Put)
            size = human_bytes(put.entry.size)
            self.log.info("sending %s (%s) on its own; other changes go on meanwhile", put.src, size)
        with self._cv:
            self._queue.append(later)
            self._busy.add(later, self._key)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="mirror-bulk", daemon=True)
                self._thread.start()
            self._cv.notify_all()

    def hold_back(self, changes: dict[str, LocalEntry | None]) -> dict[str, LocalEntry | None]:
        """The changes free to go now; those touching the lane's work wait in it. When
        any waits, so does every file gone from the source in the same changes: one may
        have been renamed onto a path the lane works on (``mv inv7.pdf scan.pdf``), and
        its removal alone, without the put of its new name, would delete the only copy of
        it on the target until the lane is done (rule 2: deletions wait for transfers)."""
        with self._cv:
            if not self._busy.srcs:
                return changes
            free: dict[str, LocalEntry | None] = {}
            for path, entry in changes.items():
                now = identity(entry)
                if path in self._waiting or self._busy.holds(path, now):
                    self._waiting[path] = now if entry is not None else self._waiting.get(path, NONE)
                else:
                    free[path] = entry
            if len(free) < len(changes):
                for path in [p for p, entry in free.items() if entry is None]:
                    self._waiting[path] = NONE
                    del free[path]
            return free

    def clashing(self, actions: Plan) -> set[str]:
        """:func:`clashing` against what the lane works on now."""
        with self._cv:
            if not self._busy.dsts:
                return set()
            return clashing(actions, self._busy, self._key)

    def wait_with(self, local: Mapping[str, LocalEntry], paths: Iterable[str]) -> None:
        """Let ``paths`` (with their entries in ``local``) wait for the lane."""
        with self._cv:
            for path in paths:
                self._waiting[path] = identity(local.get(path))
            self._cv.notify_all()

    def files(self) -> int:
        """Files queued in the lane or being sent by it (status counts them as pending)."""
        with self._cv:
            current = len(self._current.transfers) if self._current is not None else 0
            return current + sum(len(p.transfers) for p in self._queue)

    def waiting(self) -> int:
        """Changes that wait for the lane (not yet sent: a stop leaves them to the next run)."""
        with self._cv:
            return len(self._waiting)

    def bug(self) -> Exception | None:
        """The error no one expected that ended the lane's last run, once: the runner
        raises it, and its loop logs it and rescans."""
        with self._cv:
            bug, self._bug = self._bug, None
            return bug

    def drain(self) -> None:
        """Wait until the lane has nothing queued or running (or mirror stops)."""
        with self._cv:
            while (self._queue or self._current is not None) and not self.stop.is_set():
                self._cv.wait(0.2)

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()

    def join(self, timeout: float) -> bool:
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    # -- the lane's thread --------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self.stop.is_set():
                    self._cv.wait(1.0)
                if self.stop.is_set():
                    return
                later, self._queue = _merged(self._queue), []
                self._current = later
            started = time.time()
            stats, bug = RunStats(), None
            try:
                stats = self.executor.run(later, retell=False)
            except Exception as exc:  # a bug: the runner's loop logs it, and rescans
                bug = exc
            self._after(later, stats, started, bug)

    def _after(self, later: Plan, stats: RunStats, started: float, bug: Exception | None = None) -> None:
        """A run ended: let what waited for its paths go, record it, hand its paths back."""
        whole = bug is not None or bool(stats.down or stats.fatal or stats.state_error)
        with self._cv:
            self._current = None
            failed = {src for src, _ in stats.failed}
            # a file that failed by itself is retried with the next changes, as before;
            # handed back at once, it would be sent again and again
            done = [p.src for p in later.transfers if whole or p.src not in failed]
            self._busy = Busy()
            for queued in self._queue:
                self._busy.add(queued, self._key)
            released = [p for p, now in self._waiting.items() if not self._busy.holds(p, now)]
            for path in released:
                del self._waiting[path]
            self._bug = bug
            self._cv.notify_all()
        try:
            self._finished(stats, started)
        except Exception as exc:
            if self.stop.is_set():
                # a stop closes the indexes meanwhile (the runner's, and those a place check
                # reads): logged as an error, it named another target's healthy index
                self.log.debug("the bulk lane's run ended as mirror stopped: not recorded", exc_info=True)
            else:  # the index cannot take it (a full disk), or a bug
                self.log.error(
                    "cannot record the bulk lane's run: %s", exc, exc_info=not isinstance(exc, StateError)
                )
                with self._cv:
                    self._bug = self._bug or exc
        if not self.stop.is_set():
            self._hand_back([*done, *released])


def _merged(plans: list[Plan]) -> Plan:
    """Queued tails as one plan, its files sent ``bulk_concurrency`` at a time."""
    if len(plans) == 1:
        return plans[0]
    return Plan(
        transfers=tuple(t for p in plans for t in p.transfers),
        removals=tuple(r for p in plans for r in p.removals),
    )
