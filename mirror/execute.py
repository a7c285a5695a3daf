"""The executor: runs a plan against one target, with bounded concurrency and retries.

It decides nothing about *what* to do (that is the planner's); it owns *how*: atomic puts
(temp name + rename where the backend's commit is not atomic by itself), never putting in
place an upload whose file changed while it was sent (it is sent once it settles),
retries with backoff that honour Retry-After, recording each confirmed action in the
index, and running removals last and only after a clean run.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from mirror.driver import BatchPut, Driver, RemoteEntry
from mirror.errors import (
    FatalError,
    ItemError,
    MirrorError,
    Refused,
    RootGone,
    StateError,
    TargetDown,
    TargetFull,
    TransientError,
)
from mirror.index import Index, IndexEntry
from mirror.paths import ancestors, numbered, numbered_top, parent, path_key, temp_name
from mirror.plan import Adopt, Cleanup, Delete, Forget, Move, Plan, Put, Removal, Trash, newer_there
from mirror.scan import LocalEntry, mtime_ns
from mirror.source_files import SourceFiles, generation_of

if TYPE_CHECKING:
    from tenacity import RetryCallState

T = TypeVar("T")
#: temp-name tokens: unique enough among concurrent uploads, and cheap (no syscall each)
_TOKENS = random.Random()  # noqa: S311 - names, not secrets
log = logging.getLogger("mirror")
#: files at least this large go one at a time (a batch holds its files in memory)
BATCH_FILE_BYTES = 1 << 20
#: bytes of file content one batch holds at most
BATCH_BYTES = 8 << 20
#: files at least this large are sent at most ``Driver.bulk_concurrency`` at a time:
#: their transfer time is spent moving bytes, not waiting on round trips
BULK_FILE_BYTES = 8 << 20
#: numbered places tried for a file whose trash path a trashed file or folder blocks
_TRASH_TRIES = 20


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a transient error is retried before the item fails."""

    attempts: int = 5
    initial: float = 0.5
    maximum: float = 30.0
    #: consecutive items that fail (the first after all its retries, the others after
    #: one try each) before the target counts as down
    down_after: int = 8


@dataclass
class RunStats:
    """What one plan's execution did; the engine turns it into a report and exit code."""

    uploaded: int = 0
    adopted: int = 0
    moved: int = 0
    #: files removed from the target, those moved to its trash included
    deleted: int = 0
    trashed: int = 0
    bytes: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: sources whose removal a failed transfer held back, to plan again
    postponed: list[str] = field(default_factory=list)
    guard: str | None = None
    fatal: str | None = None
    #: the fatal error is a full target (TargetFull)
    full: bool = False
    down: str | None = None
    #: mirror's own state could not be written (a full disk): the pass stopped there
    state_error: str | None = None
    #: mirror was stopped (Ctrl-C, SIGTERM) before the plan ran to its end
    cut_short: bool = False


class SourceError(ItemError):
    """An item failed for its source file's sake: nothing is the matter with the target."""


#: how the failure of a file that changed while it was sent begins (:class:`Changed`)
CHANGED_WHILE_SENT = "it changed while it was sent"


class Changed(SourceError):
    """The source file changed while it was sent, so what went out may be parts of two
    versions: it waits to settle before it is sent again."""

    def __init__(self, dropped: bool = False) -> None:
        """``dropped``: the upload went to a temp name, and was not put in place."""
        dropped_it = ", so the upload was dropped" if dropped else ""
        super().__init__(f"{CHANGED_WHILE_SENT}{dropped_it}; it is sent again once it settles")


def _bulk_apart(transfers: Sequence[Put | Adopt]) -> tuple[list[Put | Adopt], list[Put | Adopt]]:
    """(the other transfers, uploads of BULK_FILE_BYTES and more), each in plan order."""
    others: list[Put | Adopt] = []
    bulk: list[Put | Adopt] = []
    for action in transfers:
        (bulk if isinstance(action, Put) and action.entry.size >= BULK_FILE_BYTES else others).append(action)
    return others, bulk


def _unreadable(exc: OSError) -> SourceError:
    """Why a source file could not be read, with the fix when it is the process's limit
    of open files (each worker keeps a batch of source files open)."""
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        import resource

        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return SourceError(
            f"cannot read the source file: too many open files (the limit is {limit}); "
            "raise it (ulimit -n, or LimitNOFILE= in the service unit) or lower concurrency"
        )
    return SourceError(f"cannot read the source file ({exc.strerror})")


def _kept(action: Put | Move) -> bool:
    """Whether ``action`` keeps a newer copy of its own file (:attr:`Put.keep`)."""
    return isinstance(action, Put) and action.keep is not None


def _below(action: Put | Move) -> bool:
    """Whether ``action`` sets aside a file where it needs a folder (:attr:`Put.in_the_way`):
    its failure before was that file's doing, not a copy of its own cut short."""
    return isinstance(action, Put) and action.in_the_way is not None


class Executor:
    def __init__(
        self,
        driver: Driver,
        index: Index,
        source: Path,
        concurrency: int,
        stop: threading.Event,
        retry: RetryPolicy | None = None,
        on_done: Callable[[int, int], None] | None = None,
        on_retry: Callable[[str], None] | None = None,
        logger: logging.LoggerAdapter[logging.Logger] | None = None,
        on_transfer: Callable[[int, float], None] | None = None,
        bulk_concurrency: int | None = None,
        on_answered: Callable[[], None] | None = None,
        on_sent: Callable[[int, int], None] | None = None,
    ) -> None:
        """``on_done(files, bytes)``: files sent, adopted or moved, as they complete;
        ``on_sent(files, bytes)``: files sent that the report counts as sent.
        ``on_retry(error)``: a call failed and is tried again; ``on_answered()``: one
        tried again got through.
        ``bulk_concurrency``: how many large files (BULK_FILE_BYTES and up) at once at
        most; None: ``concurrency``."""
        self.driver = driver
        self.index = index
        self.source = source
        self._root = str(source)
        #: joined with a source path by concatenation: this runs several times per file
        self._prefix = self._root if self._root.endswith("/") else self._root + "/"
        self.concurrency = max(1, concurrency)
        self.bulk_concurrency = min(self.concurrency, max(1, bulk_concurrency or self.concurrency))
        self.stop = stop
        self.retry = retry or RetryPolicy()
        self.on_done = on_done or (lambda files, size: None)
        self.on_retry = on_retry or (lambda error: None)
        self.on_answered = on_answered or (lambda: None)
        self.on_transfer = on_transfer or (lambda size, seconds: None)
        self.on_sent = on_sent or (lambda files, size: None)
        self.log = logger or logging.LoggerAdapter(log, {})
        self._lock = threading.Lock()
        self._dirs: set[str] = set()
        #: a lock for each folder being made, so workers sending into one new folder at
        #: once make it once (on a cloud target each call is a request, and a write)
        self._making: dict[str, threading.Lock] = {}
        self._abort = threading.Event()
        #: this pass left something undone for a stop (or an abort): see _going_on
        self._cut = False
        self._streak = 0
        #: in this pass: the target answered once at least; the last error of an item
        #: that gave up because it did not
        self._answered = False
        self._unanswered: str | None = None
        #: in this pass: the target refused to write an item (see _check_writable)
        self._refused = False
        #: the last pass found the target down: until something answers, a call that
        #: cannot get through is not retried, as the runner's back-off spaces the passes
        #: (five tries a pass wrote four more log lines a minute for as long as a NAS was off)
        self.probing = False
        self._stats = RunStats()
        self._retell = True
        #: the inode generation of each source file read for sending, until it is recorded
        self._generations: dict[str, int] = {}
        #: this pass may make the target folder, once (see :meth:`_check_root`)
        self._refill = False
        self.temps: set[str] = set()
        #: temp files were left on the target, for a listing pass to find and remove
        self.stranded = False

    # -- public ---------------------------------------------------------------------
    def run(self, plan: Plan, retell: bool = True, refill: bool = False) -> RunStats:
        """``retell``: log an item failing as it failed before as a warning again (a full
        pass); otherwise at debug level: each watch pass tries every failed item again, and
        eight failing files made 36 warnings. ``refill``: the runner listed the target and
        found its folder gone or empty, and fills it again: this pass may make the folder."""
        stats = self._begin(plan, retell, refill)
        for refusal in plan.refusals:
            again = self.index.fail(refusal.src, refusal.dst, refusal.reason)
            stats.failed.append((refusal.src, refusal.reason))
            level = logging.DEBUG if again and not retell else logging.WARNING
            self.log.log(level, "not mirrored: %s: %s", refusal.src, refusal.reason)
        try:
            # old copies of files sent to a new path: known until removed (Index.leave)
            removals = (*plan.early, *plan.removals)
            self.index.leave((r.src, r.dst) for r in removals if isinstance(r, (Delete, Trash)) and not r.forget)
            self._parallel(plan.cleanups, self._cleanup)
            self._remove_all(plan.early)
            # a file taking the place of a folder needs the folders these emptied gone too
            self._prune_dirs(r.dst for r in plan.early if isinstance(r, (Delete, Trash)))
            # journaled (Index.sending): after an error the entries stay, and the next
            # listing pass looks for the files on the target
            journaled: list[Put | Move] = [t for t in plan.transfers if isinstance(t, Put)]
            journaled += plan.moves
            journal = self.index.sending(
                IndexEntry(a.src, a.dst, a.entry.size, a.entry.mtime_ns, a.entry.ino, a.date) for a in journaled
            )
            self._move_all(self._cleared(plan.moves))
            self._send_all(self._cleared(plan.transfers))
            self.index.sent(journal)
            transfers_failed = len(stats.failed) - len(plan.refusals)
            removed: tuple[Removal, ...] = ()
            if plan.removals and self._going_on():
                if transfers_failed:
                    # a full target stays full: the user's deletions in the source wait too
                    self.log.warning(
                        "deletions postponed: %d transfer(s) failed in this run, and the %d deletion(s) wait for "
                        "a pass in which every transfer gets through (on a full target, make room on the target "
                        "itself, or leave the failing files out with exclude)",
                        transfers_failed,
                        len(plan.removals),
                    )
                    stats.postponed = [r.src for r in plan.removals]
                else:
                    self._remove_all(plan.removals)
                    removed = plan.removals
            emptied = [r.dst for r in removed if isinstance(r, (Delete, Trash))]
            moved_away = [m.old_dst for m in plan.moves if parent(m.old_dst) != parent(m.dst)]
            # a folder made for an upload a kill cut short may hold nothing but its temp file
            cleaned = [c.dst for c in plan.cleanups]
            self._prune_dirs([*emptied, *moved_away, *cleaned])
        except FatalError as exc:
            stats.fatal = str(exc)
            stats.full = isinstance(exc, TargetFull)
        except TargetDown as exc:
            stats.down = str(exc)
        except StateError as exc:
            stats.state_error = str(exc)
        finally:
            try:
                self.index.flush()
            except StateError as exc:
                stats.state_error = stats.state_error or str(exc)
        stats.cut_short = self._cut and self.stop.is_set()
        if not self._stopping():
            self._leftover_temps(reachable=not (stats.fatal or stats.down))
        self.probing = stats.down is not None
        return stats

    def _begin(self, plan: Plan, retell: bool, refill: bool) -> RunStats:
        """Start a pass afresh: nothing aborted or answered yet, and the driver told, as
        what it found of the target's folders may have changed since (a link put there)."""
        self._retell, self._refill = retell, refill
        if refill:
            # listed, the target holds nothing: folders known made are gone, and the first
            # one made now makes the target folder, the one this pass may make
            with self._lock:
                self._dirs.clear()
        self._abort.clear()
        self._cut = False
        self._answered, self._unanswered, self._refused = False, None, False
        self.driver.begin_pass()
        self._stats = RunStats(guard=plan.guard)
        return self._stats

    def _send_all(self, transfers: Sequence[Put | Adopt]) -> None:
        """Small files in batches, then the rest alone, large files fewer at a time."""
        batches, singles = self._batches(transfers)
        self._parallel(batches, self._put_batch)
        others, bulk = _bulk_apart(singles)
        self._parallel(others, self._transfer)
        self._parallel(bulk, self._transfer, self.bulk_concurrency)
        if self._unanswered and not self._answered:
            # a quiet folder never has down_after files failing in a row: that none got
            # through says the same, so the target counts as down (status, alerts)
            raise TargetDown(f"target unreachable: {self._unanswered}")
        if self._refused and not self._stats.uploaded:
            self._check_writable()

    def _check_writable(self) -> None:
        """Every upload of the pass was refused: a read-only share (sftp-server -R, a
        WebDAV share without write access) refuses each file alike, which as a failure of
        each file's own never stopped the target nor alerted, pass after pass. An empty
        file written into the target folder, under a temp name, tells it from files
        refused one by one (another owner's copies); the folder's refusal fails the target."""
        probe = temp_name("", f"{_TOKENS.getrandbits(48):012x}")
        with tempfile.TemporaryDirectory() as folder:
            empty = os.path.join(folder, "probe")
            Path(empty).touch()
            try:
                self._classified(lambda: self.driver.put(empty, probe, time.time_ns()))
            except Refused as exc:
                raise FatalError(
                    f"the target folder {self.driver.root} refuses writes ({exc}), every upload with it; "
                    "give the user mirror logs in as write access to it, or choose a folder it may write to"
                ) from None
            except MirrorError:
                return  # no answer on the folder: the files stay failures of their own
        with self._lock:
            self.temps.add(probe)
        self._drop_temp(probe)

    def remove_temps(self) -> None:
        """Delete the temp files this executor knows of: those of uploads still running
        (at a clean shutdown), and those a lost connection kept it from removing. Stops at
        the first the target cannot be reached for: the rest would only wait for it too."""
        self._drop_temps(list(self.temps))

    def _leftover_temps(self, reachable: bool) -> None:
        """After a pass, nothing is being uploaded: temp files still listed are ones a lost
        connection kept from being removed. Try once more if the target answered in this
        pass; what still fails is left to a listing pass (which removes every leftover
        temp file), so the list never grows while a target stays down."""
        if self.temps and reachable:
            self.remove_temps()
        with self._lock:
            self.stranded = self.stranded or bool(self.temps)
            self.temps.clear()

    # -- the pool -------------------------------------------------------------------
    def _stopping(self) -> bool:
        return self.stop.is_set() or self._abort.is_set()

    def _going_on(self) -> bool:
        """Whether to do what comes next; not once stopping, when the pass is cut short.
        A pass whose last item was done as the stop came is not: it was reported 'stopped
        before the pass finished' (exit 1, status 'incomplete') with every file sent."""
        if self._stopping():
            self._cut = True
            return False
        return True

    def _parallel(self, items: Sequence[T], work: Callable[[T], object], workers: int | None = None) -> None:
        if not items:
            return
        todo = iter(items)
        raised: list[BaseException] = []

        def worker() -> None:
            while not self._stopping():
                with self._lock:
                    item = next(todo, None)
                if item is None:
                    return
                try:
                    work(item)
                except Exception as exc:  # fatal, target down, or a bug: stop the pass, loudly
                    raised.append(exc)
                    self._abort.set()

        threads = [
            threading.Thread(target=worker, daemon=True, name="mirror-worker")
            for _ in range(min(workers or self.concurrency, len(items)))
        ]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)
        if next(todo, None) is not None:
            self._cut = True
        if raised:
            raise raised[0]

    # -- calling the driver -----------------------------------------------------------
    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), 300.0)
        from tenacity import wait_exponential_jitter

        return float(wait_exponential_jitter(multiplier=self.retry.initial, max=self.retry.maximum)(state))

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        self.log.info("retrying in %.1f s (attempt %d): %s", delay, state.attempt_number + 2, exc)
        self.on_retry(str(exc))

    def _sleep(self, seconds: float) -> None:
        """Back off, but wake up at once when mirror is stopping."""
        self.stop.wait(seconds)

    def call(self, fn: Callable[[], T]) -> T:
        """Run one driver call, classifying its errors and retrying transient ones."""
        try:
            return self._classified(fn)
        except RootGone:
            raise  # the target's folder is gone: its runner waits for it, and asks how it came back
        except TransientError as first:
            # the retry machinery is only built once a call has failed: most calls succeed
            if self.retry.attempts <= 1 or self._stopping() or self._probe_failed(first) or self._gave_up():
                raise
            delay = self.retry.initial if first.retry_after is None else min(max(first.retry_after, 0.0), 300.0)
            self.log.info("retrying in %.1f s (attempt 2): %s", delay, first)
            self.on_retry(str(first))
            self._sleep(delay)
        from tenacity import (
            Retrying,
            retry_if_exception_type,
            retry_if_not_exception_type,
            stop_after_attempt,
            stop_when_event_set,
        )

        retrying = Retrying(
            stop=stop_after_attempt(self.retry.attempts - 1) | stop_when_event_set(self.stop),
            wait=self._wait,
            retry=retry_if_exception_type(TransientError) & retry_if_not_exception_type(RootGone),
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                result = self._classified(fn)
            outcome = attempt.retry_state.outcome  # the block's, set as it ended
            if outcome is not None and not outcome.failed:
                self.on_answered()
                return result
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def _gave_up(self) -> bool:
        """An item gave up since the last one got through: the target is likely down, so
        each further item gets one try until one gets through. With every item retried, a
        server that stopped answering held a pass for down_after items of ``attempts``
        timeouts each (10 minutes at the default 30 s), in silence but for the retries."""
        with self._lock:
            return self._streak > 0

    def _probe_failed(self, exc: TransientError) -> bool:
        """The target is still down (see :attr:`probing`); a server that says when to come
        back (429 with Retry-After) is up, and is waited for."""
        with self._lock:
            return self.probing and not self._answered and exc.retry_after is None

    def _classified(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except MirrorError:
            raise
        except Exception as exc:
            raise self.driver.classify(exc) from exc

    def _item(self, src: str, dst: str | None, work: Callable[[], None]) -> bool:
        """Run the work for one item; record a per-item failure instead of raising. True
        when the work was done."""
        try:
            work()
        except RootGone:
            raise  # the target's failure, not the item's
        except TransientError as exc:
            if self._probe_failed(exc):
                # the target's failure, not the item's: the item waits for the next pass
                raise TargetDown(f"target unreachable: {exc}") from exc
            with self._lock:
                tries = 1 if self._streak else self.retry.attempts  # see _gave_up
            self._failed(src, dst, f"gave up after {tries} attempt{'s' if tries > 1 else ''}: {exc}")
            with self._lock:
                self._streak += 1
                self._unanswered = str(exc)
                down = self._streak >= self.retry.down_after
            if down:
                raise TargetDown(f"target unreachable: {exc}") from exc
            return False
        except ItemError as exc:
            self._failed(src, dst, str(exc), expected=isinstance(exc, Changed))
            with self._lock:
                self._answered = True  # refused, but by a target that answered
                self._refused = self._refused or isinstance(exc, Refused)
            return False
        with self._lock:
            self._streak = 0
            self._answered = True
        return True

    def _failed(self, src: str, dst: str | None, reason: str, expected: bool = False) -> None:
        """``expected``: the way of a folder being written (a file that changed while it
        was sent, sent again once it settles), told as news, not as a warning: a service
        log showed a warning for each of 63 files rewritten during one pass."""
        if not self._going_on():
            return
        again = self.index.fail(src, dst, reason)
        with self._lock:
            self._stats.failed.append((src, reason))
        level = logging.DEBUG if again and not self._retell else logging.INFO if expected else logging.WARNING
        self.log.log(level, "failed: %s: %s", src, reason)

    # -- actions ----------------------------------------------------------------------
    def _ensure_dir(self, folder: str) -> None:
        with self._lock:
            if folder in self._dirs:
                return
            making = self._making.setdefault(folder, threading.Lock())
        with making:
            # whoever waited finds the folder made, or tries itself if it could not be
            with self._lock:
                if folder in self._dirs:
                    return
            if "" not in self._dirs:
                self._check_root()
            self.call(lambda: self.driver.makedirs(folder))
            with self._lock:
                # the root too, which every driver makes along
                self._dirs.update((folder, *ancestors(folder), ""))
                self._making.pop(folder, None)  # gone already if the folder was pruned and made again
                self._refill = False

    def _check_root(self) -> None:
        """Before a folder is made where the target folder is not known to be there (this
        executor's first, or after an upload failed as if folders had gone): once mirror
        has filled the target folder, it never makes it again by itself. Made again, a
        folder deleted, or below the mount point of a disk unmounted under an upload, took
        that upload and every later one, on the system disk, and the runner took it for
        the folder it had filled. The target counts as unreachable instead: the runner
        waits for the folder to come back, and lists it then. Made by a first copy, and by
        a pass that lists the target and fills it again (``refill``)."""
        if self._refill or not self.index.holds_files():
            return
        if self.call(self.driver.root_there) is False:
            # its temp file may be left where the folder was (on a disk unmounted under
            # it): the pass that finds the folder back lists it, which removes that too
            self.stranded = True
            raise RootGone(
                f"target unreachable: the target folder {self.driver.root} is gone (deleted, or its disk or "
                "share not mounted); mirror does not make it again, and carries on once it is back"
            )

    def _cleanup(self, action: Cleanup) -> None:
        self._item(action.dst, action.dst, lambda: self.call(lambda: self.driver.delete(action.dst)))
        self.log.info("removed leftover temp file %s", action.dst)

    def _transfer(self, action: Put | Adopt) -> None:
        if isinstance(action, Adopt):
            # the file is not read, but its row must tell its inode's generation as a sent
            # file's does (a first run onto a copy another tool made adopts every file)
            self._generations[action.src] = generation_of(self._root, action.src)
            self._record(action.src, action.dst, action.entry, action, action.remote_hash)
            with self._lock:
                self._stats.adopted += 1
            self.on_done(1, 0)
            return
        self._item(action.src, action.dst, lambda: self._put(action))

    def _local(self, src: str) -> LocalEntry | None:
        """The source file ``src`` as it is now; None when no regular file is there."""
        try:
            st = os.stat(self._prefix + src, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):  # the latter: a file took a folder's name
            return None
        except OSError as exc:
            raise _unreadable(exc) from None
        if not stat.S_ISREG(st.st_mode):  # a folder or a link took the file's name
            return None
        return LocalEntry(src, st.st_size, mtime_ns(st), st.st_ino)

    def _unchanged(self, src: str, entry: LocalEntry) -> bool:
        """Whether the source file ``src`` is still ``entry``: a local stat, no round trip."""
        return self._local(src) == entry

    def _put(self, action: Put) -> None:
        """Send one file, and record it once the source is found unchanged since the scan
        (its stat then stands for what was read). A file that changed meanwhile may have
        gone out as a mix of two versions: it is not sent again now, while it may still
        be being written, but fails for this pass (:class:`Changed`); the watcher, which
        saw it change, or the next pass sends it once it has settled."""
        entry = action.entry
        with SourceFiles(self._root) as files:
            local = self._open(files, action.src)
            if local is None:
                return  # gone: the watcher or the next pass plans its removal
            self._generations.update(files.generations)
            if action.unless_hash and self._source_hash(local) == action.unless_hash:
                self._record(action.src, action.dst, entry, action, action.unless_hash)
                with self._lock:
                    self._stats.adopted += 1
                self.on_done(1, entry.size)
                return
            sending = time.monotonic()
            try:
                remote = self._send_in_place(local, action.dst, action.src, entry)
            except ItemError:
                if not self._readable(action.src):
                    return  # gone (or no longer a file) while it was sent: planned again like any removal
                raise
        self.on_transfer(entry.size, time.monotonic() - sending)
        if not self._via_temp() and (after := self._local(action.src)) != entry:
            # committed as it was read: recorded, so that the pass that finds the file gone
            # removes it, or finds it changed and sends it again
            self._landed([(action, entry, remote.hash if remote else None)])
            if after is None:
                return
            raise Changed()
        if remote is not None and not remote.size_is(entry.size):
            # recorded, it would stand as a good copy until the source changes
            raise ItemError(
                f"the target holds {remote.size} bytes after {entry.size} were sent; "
                "it is sent again on the next pass"
            )
        self._uploaded([(action, entry, remote.hash if remote else None)])

    def _landed(self, landed: Sequence[tuple[Put, LocalEntry, str | None]]) -> None:
        """Record versions that reached the target: each file as it was sent, with the hash
        the target gave for it, if any. That includes versions the source has moved on
        from while they were sent, on a target that commits an upload at once (or a batch
        renamed into place): unrecorded, a file gone from the source meanwhile would stay
        on the target for good; recorded, the pass that finds it gone removes it, or finds
        it changed and sends it again."""
        self.index.record_many(
            self._row(action.src, action.dst, entry, action, remote_hash) for action, entry, remote_hash in landed
        )

    def _uploaded(self, done: Sequence[tuple[Put, LocalEntry, str | None]]) -> None:
        """Record uploads that the source still matches, and count them as sent."""
        if not done:
            return
        size = sum(entry.size for _, entry, _ in done)
        # counted before they are recorded: a state disk that fails to record them does
        # not take them off the target, and the report must say they were sent
        with self._lock:
            self._stats.uploaded += len(done)
            self._stats.bytes += size
            self._streak = 0
            self._answered = True
        self.on_sent(len(done), size)
        self._landed(done)
        if self.log.isEnabledFor(logging.DEBUG):  # a first copy has tens of thousands
            for action, entry, _ in done:
                self.log.debug("put %s -> %s (%s, %d bytes)", action.src, action.dst, action.reason, entry.size)
        self.on_done(len(done), size)

    def _batches(self, transfers: Sequence[Put | Adopt]) -> tuple[list[list[Put]], list[Put | Adopt]]:
        """Small plain uploads grouped for :meth:`Driver.send_batch`; everything else alone."""
        most = self.driver.batch_files
        if most <= 1 or not self._via_temp():
            return [], list(transfers)
        batches: list[list[Put]] = []
        singles: list[Put | Adopt] = []
        batch: list[Put] = []
        size = 0
        for action in transfers:
            if isinstance(action, Adopt) or action.unless_hash or action.entry.size >= BATCH_FILE_BYTES:
                singles.append(action)
                continue
            if len(batch) == most or size + action.entry.size > BATCH_BYTES:
                batches.append(batch)
                batch, size = [], 0
            batch.append(action)
            size += action.entry.size
        if len(batch) > 1:
            batches.append(batch)
        else:
            singles.extend(batch)
        return batches, singles

    def _grouped(self, items: Sequence[T]) -> tuple[list[list[T]], list[T]]:
        """``items`` in groups for one batch call each, and those to handle alone: all of
        them where the driver takes one at a time, else a last group of one. Groups are
        small enough to give every worker one (a target that takes a batch one item at a
        time keeps its parallel requests)."""
        most = min(self.driver.batch_files, -(-len(items) // self.concurrency))
        if most <= 1:
            return [], list(items)
        groups = [list(items[at : at + most]) for at in range(0, len(items), most)]
        if groups and len(groups[-1]) == 1:
            return groups[:-1], groups[-1]
        return groups, []

    def _in_one_call(
        self, folders: Iterable[str], batch: Callable[[], Sequence[MirrorError | None]], count: int
    ) -> Sequence[MirrorError | None]:
        """One batch call after making ``folders``, without retries (what failed is
        handled again alone); a failure of the call itself, or of a folder, is every
        item's outcome."""
        try:
            for folder in folders:
                self._ensure_dir(folder)
            return self._classified(batch)
        except (TransientError, ItemError) as exc:
            return [exc] * count

    def _put_batch(self, actions: list[Put]) -> None:
        """Send small files together; any file that did not arrive cleanly, or changed
        after it was put in place, takes the one-at-a-time path with its retries."""
        try:
            for folder in sorted({parent(a.dst) for a in actions}):
                self._ensure_dir(folder)
        except (TransientError, ItemError):
            again = actions  # each one alone reports its own failure
        else:
            sending = time.monotonic()
            outcomes = self._send_batch(actions)
            seconds = (time.monotonic() - sending) / len(actions)
            again = []
            landed = []
            for action, outcome in zip(actions, outcomes, strict=True):
                if outcome is None:
                    self.on_transfer(action.entry.size, seconds)
                    landed.append(action)
                else:
                    again.append(action)
            self._confirm(landed)
        for action in again:
            if not self._going_on():
                return
            self._item(action.src, action.dst, partial(self._alone, action))

    def _alone(self, action: Put) -> None:
        """Send alone a file its batch did not put in place; not one that changed since it
        was planned (the batch may have read it as a mix of two versions, and refused to
        put that in place), while it may still be being written. One gone as mirror sees the
        source (a link now on its way, which a stat would follow) is no change: gone."""
        with SourceFiles(self._root) as files:
            if self._open(files, action.src) is None:
                return
        now = self._local(action.src)
        if now is not None and now != action.entry:
            raise Changed(dropped=True)
        self._put(action)

    def _send_batch(self, actions: list[Put]) -> list[MirrorError | None]:
        """One :meth:`Driver.send_batch` call (no retries: a failed file is sent again alone)."""
        with SourceFiles(self._root) as files:
            outcomes: list[MirrorError | None] = []
            opened: list[tuple[int, BatchPut]] = []
            for at, action in enumerate(actions):
                try:
                    local, fd, mode = files.opened(action.src)
                except OSError as exc:
                    # sent alone, where a file that is gone is told from one that cannot be read
                    outcomes.append(_unreadable(exc))
                    continue
                outcomes.append(None)
                tmp = self._temp_for(action.dst)
                unchanged = partial(self._unchanged, action.src, action.entry)
                opened.append((at, BatchPut(local, tmp, action.dst, action.entry.mtime_ns, fd, mode, unchanged)))
            self._generations.update(files.generations)
            for (at, _), outcome in zip(opened, self._send_opened([item for _, item in opened]), strict=True):
                outcomes[at] = outcome
        return outcomes

    def _send_opened(self, items: list[BatchPut]) -> list[MirrorError | None]:
        if not items:
            return []
        with self._lock:
            self.temps.update(item.tmp for item in items)
        try:
            try:
                outcomes = self._classified(lambda: self.driver.send_batch(items))
            except (TransientError, ItemError) as exc:
                outcomes = [exc] * len(items)
        except BaseException:
            self._drop_temps(item.tmp for item in items)
            raise
        landed: list[str] = []
        failed: list[str] = []
        for item, outcome in zip(items, outcomes, strict=True):
            (landed if outcome is None else failed).append(item.tmp)
        self._drop_temps(failed)
        with self._lock:
            self.temps.difference_update(landed)
        return list(outcomes)

    def _confirm(self, actions: list[Put]) -> None:
        """After a batch put ``actions`` in place: record the files unchanged since the
        scan, all at once, then send again, one at a time, those that changed meanwhile."""
        unchanged: list[tuple[Put, LocalEntry, str | None]] = []
        superseded: list[tuple[Put, LocalEntry, str | None]] = []
        changed: list[Put] = []
        unreadable: list[tuple[Put, str]] = []
        for action in actions:
            try:
                after = self._local(action.src)
            except ItemError as exc:
                superseded.append((action, action.entry, None))
                unreadable.append((action, str(exc)))
                continue
            if after == action.entry:
                unchanged.append((action, after, None))
            else:
                superseded.append((action, action.entry, None))
                if after is not None:
                    changed.append(action._replace(entry=after))
        # recorded before any file is sent again: that may fail the pass, and what is on
        # the target must be in the index even then
        self._uploaded(unchanged)
        self._landed(superseded)
        for action, reason in unreadable:  # after the rows, which clear a file's failure
            self._failed(action.src, action.dst, reason)
        for action in changed:
            self.log.info("%s changed while it was sent; sending it again", action.src)
            self._item(action.src, action.dst, partial(self._put, action))

    def _drop_temps(self, tmps: Iterable[str]) -> None:
        """:meth:`_drop_temp` each, until the target cannot be reached: the rest stay in
        :attr:`temps` for the end of the pass. Tried one by one, each of a batch's 64 cost a
        server that stopped answering a whole timeout, in silence, before the pass could
        tell the target down."""
        for tmp in tmps:
            if not self._drop_temp(tmp):
                return

    def _drop_temp(self, tmp: str) -> bool:
        """Remove a temp file that did not become its final file; False when the target
        cannot be reached, or looks down (:meth:`_gave_up`): the name stays in
        :attr:`temps`, for the end of the pass."""
        if self._gave_up():
            return False
        try:
            self._classified(lambda: self.driver.delete(tmp))
        except (TransientError, FatalError):
            self.log.debug("could not remove temp file %s yet", tmp)
            return False
        except ItemError:
            pass  # never created, or already gone
        with self._lock:
            self.temps.discard(tmp)
        return True

    def _source_hash(self, local: str) -> str | None:
        try:
            return self.driver.local_hash(local)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _unreadable(exc) from None

    def _readable(self, src: str) -> bool:
        """After a failed send: False if the source file is gone (the next pass sees that);
        ItemError if it cannot be read; True if the problem was the target's."""
        with SourceFiles(self._root) as files:
            return self._open(files, src) is not None

    @staticmethod
    def _open(files: SourceFiles, src: str) -> str | None:
        """The name to send ``src`` by; None when it is gone, ItemError when it cannot be read."""
        try:
            return files.path(src)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _unreadable(exc) from None

    def _send_in_place(self, local: str, dst: str, src: str, entry: LocalEntry) -> RemoteEntry | None:
        """:meth:`_send`; when that fails because an empty folder stands on the path (one a
        pass cut short left behind, where a file has since taken the folder's name), the
        folder is removed and the file sent again."""
        try:
            return self._send(local, dst, src, entry)
        except SourceError:
            raise
        except ItemError:
            if not self._unchanged(src, entry):
                # refused for the change itself (an upload session that came up short):
                # sent again now, it would go out while it may still be being written
                raise Changed() from None
            if self.call(lambda: self.driver.remove_dir_if_empty(dst)):
                self._forget_dirs(dst)
                self.log.info("removed an empty folder that stood where %s goes", dst)
            elif not self._forget_made(parent(dst)):
                raise
        return self._send(local, dst, src, entry)

    def _via_temp(self) -> bool:
        """Whether uploads go to a temp name and are renamed into place."""
        caps = self.driver.caps
        return caps.atomic_rename and not caps.atomic_put

    def _send(self, local: str, dst: str, src: str, entry: LocalEntry) -> RemoteEntry | None:
        """Upload ``local`` (the source file ``src``, as ``entry`` found it) to ``dst``;
        through a temp name that takes the place of the old copy only if the source is
        still ``entry`` once it has all been read (:class:`Changed` if not)."""
        self._ensure_dir(parent(dst))
        if not self._via_temp():
            return self.call(lambda: self.driver.put(local, dst, entry.mtime_ns))
        tmp = self._temp_for(dst)
        with self._lock:
            self.temps.add(tmp)
        try:
            remote = self.call(lambda: self.driver.put(local, tmp, entry.mtime_ns))
            # a file rewritten while it was read must not replace the good copy with a
            # mix of two versions, even for a moment
            if not self._unchanged(src, entry):
                raise Changed(dropped=True)
            self.call(self._rename_into_place(tmp, dst, entry.size))
        except BaseException:
            self._drop_temp(tmp)
            raise
        with self._lock:
            self.temps.discard(tmp)
        return remote

    @staticmethod
    def _temp_for(dst: str) -> str:
        return temp_name(dst, f"{_TOKENS.getrandbits(48):012x}")

    def _rename_into_place(self, tmp: str, dst: str, size: int) -> Callable[[], None]:
        """The last step of an upload, for :meth:`call`. A retry that finds the temp file
        gone and a file of the size sent in place counts as done: the connection dropped
        after the server renamed, before its reply came."""
        tries = 0

        def rename() -> None:
            nonlocal tries
            tries += 1
            try:
                self.driver.move(tmp, dst)
            except Exception:
                if tries > 1 and self.driver.stat(tmp) is None:
                    landed = self.driver.stat(dst)
                    if landed is not None and landed.size == size:
                        return
                raise

        return rename

    def _record(
        self, src: str, dst: str, entry: LocalEntry, action: Put | Adopt | Move, remote_hash: str | None
    ) -> None:
        self.index.record(self._row(src, dst, entry, action, remote_hash))

    def _row(
        self, src: str, dst: str, entry: LocalEntry, action: Put | Adopt | Move, remote_hash: str | None
    ) -> IndexEntry:
        """The index row of a file on the target, with the generation of the inode it was
        read from where this pass read it. A move's is its row's, or, where the row told
        none (an older mirror's), the file's now: the plan took it for the same file."""
        if isinstance(action, Move):
            gen = action.gen or generation_of(self._root, src)
        else:
            gen = self._generations.pop(src, 0)
        return IndexEntry(src, dst, entry.size, entry.mtime_ns, entry.ino, action.date, remote_hash, gen)

    def _key(self, path: str) -> str:
        """``path`` as the target compares paths: as it is, or ignoring case."""
        return path_key(self.driver.caps.case_sensitive)(path)

    def _plain(self, old: str, new: str) -> bool:
        """Whether the target moves ``old`` to ``new`` in one rename: ``new`` is neither
        ``old`` (in any case), nor below it, nor above it (see :meth:`_relocate`)."""
        old, new = self._key(old), self._key(new)
        return old != new and not new.startswith(f"{old}/") and not old.startswith(f"{new}/")

    def _move_all(self, moves: Sequence[Move]) -> None:
        """Moves the target makes in one rename go in batches; the others, which go
        through a temp name, alone. Parked moves (:attr:`Move.park`) first go aside, and
        the folders they leave empty go, so the other moves and the puts find their
        paths free."""
        aside = self._park([m for m in moves if m.park])
        self._prune_dirs(m.old_dst for m, _ in aside)
        plain: list[Move] = []
        alone: list[Move] = []
        for move in moves:
            if not move.park:
                (plain if self._plain(move.old_dst, move.dst) else alone).append(move)
        batches, leftover = self._grouped(plain)
        self._parallel(batches, self._move_batch)
        self._parallel([*leftover, *alone], self._move)
        self._parallel(aside, lambda parked: self._move(parked[0], parked[1], lost=parked[1] is None))

    def _park(self, moves: Sequence[Move]) -> list[tuple[Move, str | None]]:
        """Move each file to a temp name at the target's root, where no folder it leaves
        can be needed: (move, temp name) of each, the name None when its old copy is
        gone or cannot be moved (its move then sends the file again: a folder another
        move makes may soon stand on the old path). One the target did not answer for
        failed, and is left out."""
        aside: list[tuple[Move, str | None]] = []

        def park(move: Move) -> None:
            tmp = self._temp_for("")
            try:
                self.call(lambda: self.driver.move(move.old_dst, tmp))
            except ItemError:
                with self._lock:
                    aside.append((move, None))
                return
            with self._lock:
                self.temps.add(tmp)  # removed at the end of the pass if it does not leave
                aside.append((move, tmp))

        self._parallel(moves, lambda move: self._item(move.src, move.dst, partial(park, move)))
        return aside

    def _move_batch(self, actions: list[Move]) -> None:
        """Plain moves in one :meth:`Driver.move_batch` call; any that did not go through
        takes the one-at-a-time path, with its retries, and sends the file again if its
        old copy is gone."""
        outcomes = self._in_one_call(
            sorted({parent(a.dst) for a in actions}),
            lambda: self.driver.move_batch([(a.old_dst, a.dst) for a in actions]),
            len(actions),
        )
        self._moved([a for a, outcome in zip(actions, outcomes, strict=True) if outcome is None])
        for action, outcome in zip(actions, outcomes, strict=True):
            if outcome is not None and self._going_on():
                self._move(action)

    def _moved(self, actions: Sequence[Move]) -> None:
        """Record moves made on the target: each row taken over goes, the new one comes."""
        if not actions:
            return
        self.index.forget_many(a.old_src for a in actions if a.old_src)
        self.index.record_many(self._row(a.src, a.dst, a.entry, a, a.remote_hash) for a in actions)
        with self._lock:
            self._stats.moved += len(actions)
            self._streak = 0
            self._answered = True
        for action in actions:
            self.log.debug("moved %s -> %s (%s)", action.old_dst, action.dst, action.reason)
        self.on_done(len(actions), 0)

    def _move(self, action: Move, parked: str | None = None, lost: bool = False) -> None:
        """Make ``action`` on the target: move the file from its old path, or from
        ``parked`` (where :meth:`_park` put it); when its old copy is ``lost``, or
        proves gone or unmovable, send the file instead."""

        def work() -> None:
            where = parked or action.old_dst
            # a rename that keeps its target path (flat layout: a/x.pdf -> x.pdf) only
            # changes the row; asked to, fsspec's generic move copies the file onto itself
            # and then deletes it
            if where != action.dst and (lost or not self._relocated(where, action.dst)):
                self._put(Put(action.src, action.dst, action.entry, action.date, action.reason))
                if action.old_src:
                    self.index.forget(action.old_src)
                if not (lost or parked):
                    self.index.leave([(action.src, action.old_dst)])  # the copy the move left: next pass
                return
            self._moved([action])

        def tracked() -> None:
            try:
                work()
            except (TransientError, ItemError) as exc:
                if not self._going_on():
                    raise
                if parked or lost:
                    # the file left its old path, and its temp name goes at the end of the
                    # pass: no row may say it is on the target, so the next pass sends it
                    self.index.forget_many(s for s in (action.src, action.old_src) if s)
                elif action.old_src:
                    # retried by path, the new half alone would become a put and the old
                    # copy would stay on the target until the next full pass
                    self.index.fail(action.old_src, action.old_dst, str(exc))
                raise

        self._item(action.src, action.dst, tracked)

    def _remove_all(self, removals: Sequence[Removal]) -> None:
        delete_batches, deletes = self._grouped([r for r in removals if isinstance(r, Delete)])
        trash_batches, trash = self._grouped([r for r in removals if isinstance(r, Trash)])
        self._parallel(delete_batches, self._delete_batch)
        self._parallel(trash_batches, self._trash_batch)
        alone: list[Removal] = [*deletes, *trash, *(r for r in removals if isinstance(r, Forget))]
        self._parallel(alone, self._remove)

    def _delete_batch(self, actions: list[Delete]) -> None:
        outcomes = self._in_one_call((), lambda: self.driver.delete_batch([a.dst for a in actions]), len(actions))
        self._batch_removed(actions, outcomes)

    def _trash_batch(self, actions: list[Trash]) -> None:
        placed: list[Trash] = []
        for action in actions:
            try:
                placed.append(self._in_free_place(action))
            except ItemError:
                self._remove(action)  # alone, its failure is its own, not the whole pass's
        if not placed:
            return
        actions = placed
        outcomes = self._in_one_call(
            sorted({parent(a.trash_dst) for a in actions}),
            lambda: self.driver.move_batch([(a.dst, a.trash_dst) for a in actions]),
            len(actions),
        )
        self._batch_removed(actions, outcomes)

    def _batch_removed(self, actions: Sequence[Delete | Trash], outcomes: Sequence[MirrorError | None]) -> None:
        """Record what a batch call removed; the rest is removed again alone, where a file
        already gone from the target counts as removed."""
        self._removed([a for a, outcome in zip(actions, outcomes, strict=True) if outcome is None])
        for action, outcome in zip(actions, outcomes, strict=True):
            if outcome is not None and self._going_on():
                self._remove(action)

    def _removed(self, actions: Sequence[Delete | Trash]) -> None:
        """Record removals made on the target: rows of files gone from the source go."""
        if not actions:
            return
        self.index.forget_many(a.src for a in actions if a.forget)
        self.index.left(a.dst for a in actions if not a.forget)
        with self._lock:
            self._stats.deleted += len(actions)
            self._stats.trashed += sum(isinstance(a, Trash) for a in actions)
            self._streak = 0
            self._answered = True
        for action in actions:
            verb = "moved to trash" if isinstance(action, Trash) else "deleted"
            self.log.debug("%s %s (%s)", verb, action.dst, action.reason)

    def _remove(self, action: Removal) -> None:
        if isinstance(action, Forget):
            self.index.forget(action.src, keep_failure=action.refused)
            if action.warn:
                self.log.warning("%s: %s", action.src, action.reason)
            return

        def work() -> None:
            if isinstance(action, Trash):
                self._trash(action)
            else:
                self._gone_ok(action.dst, lambda: self.driver.delete(action.dst))
            self._removed([action])

        self._item(action.src, action.dst, work)

    def _trash(self, action: Trash) -> None:
        """Move a file into the trash. Where the trash already holds its name the other
        way round (``a`` trashed as a folder and ``a`` as a file on one day), it goes below
        a numbered top folder instead: ``.mirror-trash/DAY/a (2)/b.txt``."""
        head = action.trash_dst[: len(action.trash_dst) - len(action.dst)]  # .mirror-trash/DAY/
        trash_dst, n = self._in_free_place(action).trash_dst, 1
        while True:
            try:
                self._ensure_dir(parent(trash_dst))
                self._gone_ok(action.dst, partial(self.driver.move, action.dst, trash_dst))
                return
            except ItemError:
                n += 1
                if n > _TRASH_TRIES:
                    raise
                trash_dst = head + numbered_top(action.dst, n)

    def _cleared(self, actions: Sequence[T]) -> list[T]:
        """``actions`` whose way is clear: someone else's file where a move or put writes
        (:attr:`Put.aside`) is moved into the trash first; one whose way could not be
        cleared fails, and that file stays as it is."""
        asides = [a for a in actions if isinstance(a, (Put, Move)) and a.aside]
        if not asides:
            return list(actions)
        # a send that failed may have left mirror's own copy there (one a target cut
        # short): that is replaced, not set aside. A failed setting aside is recorded
        # under the trash path, so the next pass tries that again
        sent_before = {(f.src, f.dst) for f in self.index.failures()}
        cleared = {a.src for a in asides if (a.src, a.dst) in sent_before and not _kept(a) and not _below(a)}

        def clear(action: Put | Move, aside: str) -> None:
            if isinstance(action, Put) and action.keep and self._as_there(action):
                return  # the put takes the copy there for the source's: nothing to keep
            if isinstance(action, Put) and action.keep:
                # a copy already gone (kept by a pass whose send then failed) counts as kept
                self._trash(Trash(action.src, action.dst, aside, action.keep, forget=False))
                where = parent(aside)
                self.log.warning("%s: %s; the copy on the target is kept in %s/", action.src, action.keep, where)
                return
            if action.ask:
                there = self.call(partial(self.driver.stat, action.dst))
                if there is None or (
                    there.size == action.entry.size and not newer_there(action.entry, there, self.driver.caps)
                ):
                    return
            path = action.in_the_way if isinstance(action, Put) and action.in_the_way else action.dst
            self._trash(Trash(action.src, path, aside, "a file mirror did not put there", forget=False))
            self.log.warning(
                "%s on the target is not mirror's (someone else's, or kept after its source went); "
                "moved into %s/ before %s takes its place",
                path,
                parent(aside),
                action.src,
            )

        def work(action: Put | Move) -> None:
            aside = action.aside or ""
            if self._item(action.src, aside, partial(clear, action, aside)):
                with self._lock:
                    cleared.add(action.src)

        self._parallel([a for a in asides if a.src not in cleared], work)
        return [a for a in actions if not (isinstance(a, (Put, Move)) and a.aside) or a.src in cleared]

    def _as_there(self, action: Put) -> bool:
        """Whether the source file holds what the copy ``action`` would replace holds: it
        has the copy's hash (:attr:`Put.unless_hash`), or, where the target recorded none,
        its bytes (:meth:`Driver.same_bytes`). One restored with an older time, say, or
        dated by its program after it was written."""
        with SourceFiles(self._root) as files:
            local = self._open(files, action.src)
            if local is None:
                return False
            if action.unless_hash:
                return self._source_hash(local) == action.unless_hash
            return self.call(partial(self.driver.same_bytes, local, action.dst)) is True

    def _in_free_place(self, action: Trash) -> Trash:
        """``action`` with a trash path no earlier trashed file holds (``inv (2).pdf``, ...):
        a file trashed twice in one day must not take the place of its first copy."""
        path, n = action.trash_dst, 1
        while self.call(partial(self.driver.stat, path)) is not None:
            n += 1
            path = numbered(action.trash_dst, n)
        return action._replace(trash_dst=path)

    def _gone_ok(self, dst: str, fn: Callable[[], None]) -> None:
        """Run a removal; a file already gone from the target counts as removed."""
        try:
            self.call(fn)
        except ItemError:
            if self.call(lambda: self.driver.stat(dst)) is not None:
                raise

    def _relocated(self, old: str, new: str) -> bool:
        """:meth:`_relocate`; False when the file at ``old`` is gone or cannot be moved."""
        try:
            self._relocate(old, new)
        except ItemError:
            return False
        with self._lock:
            self.temps.discard(old)  # a parked file that left its temp name
        return True

    def _relocate(self, old: str, new: str) -> None:
        """Move a target file, through a temp name when one path lies below the other (a
        new layout can put a file under its own old path, or onto the folder holding it),
        or when both name one file on a target that ignores case; there fsspec's generic
        move would copy the file onto itself, then delete it."""
        if self._plain(old, new):
            self._ensure_dir(parent(new))
            self.call(lambda: self.driver.move(old, new))
            return
        key = self._key
        tmp = self._temp_for(old if key(new).startswith(f"{key(old)}/") else new)
        self.call(lambda: self.driver.move(old, tmp))
        try:
            # the folders from the file's old place up to its new path, which it now leaves empty
            for folder in [f for f in ancestors(old) if f"{key(f)}/".startswith(f"{key(new)}/")]:
                self.call(partial(self.driver.remove_dir_if_empty, folder))
                self._forget_dirs(folder)
            self._ensure_dir(parent(new))
            self.call(lambda: self.driver.move(tmp, new))
        except MirrorError:
            with suppress(MirrorError):  # put back; else a listing finds the temp name and removes it
                self._ensure_dir(parent(old))
                self.call(lambda: self.driver.move(tmp, old))
            raise

    def _forget_made(self, folder: str) -> bool:
        """Forget that ``folder`` (and those above it) were made, so the next put makes
        them again: someone may have removed them from the target since. False when none
        was known made, and making them again would change nothing."""
        # the root too: the folder may be gone with it (deleted in a web app), and a
        # driver that still knew the root made would fail to make the folder in it
        known = {folder, *ancestors(folder), ""}
        with self._lock:
            made = known & self._dirs
            # every send makes the root along: without it, another worker forgot it for the
            # same failure and makes it again, which this one must wait for and try once more
            raced = "" not in self._dirs
            self._dirs -= made
        if made:
            self.driver.forget_folder("")
        return bool(made) or raced

    def _forget_dirs(self, folder: str) -> None:
        """A removed folder takes the empty folders below it along: none is known made."""
        with self._lock:
            self._dirs = {d for d in self._dirs if d != folder and not d.startswith(f"{folder}/")}

    def _prune_dirs(self, vacated: Iterable[str]) -> None:
        """Remove the folders of files deleted or moved away that are empty now (never the
        root): a renamed folder leaves none behind, and a file can take a folder's name."""
        if self._stopping():
            return
        folders = sorted({d for dst in vacated for d in ancestors(dst)}, key=lambda d: -d.count("/"))
        for folder in folders:
            try:
                if self.driver.remove_dir_if_empty(folder):
                    self._forget_dirs(folder)
            except Exception:
                self.log.debug("could not remove folder %s", folder)
