"""The per-target index: what mirror put on a target, what failed, and run facts.

One sqlite file per target, in WAL mode so ``mirror status`` can read while a run writes.
It is a cache, never the only truth: a full reconcile (first run, rescan, ``verify``)
rebuilds it from the source and the target listing. A row is written only after the
target confirmed the action, and commits are batched: a crash loses at most the last
batch of rows, which costs re-sending those few files, never data. The files a pass is
about to send are journaled first, so a listing finds those of a lost batch again.
"""

from __future__ import annotations

import datetime as dt
import errno
import itertools
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from mirror.errors import ConfigError, MirrorError, StateError

log = logging.getLogger(__name__)

#: the index format this mirror writes (sqlite's user_version): raised when a later
#: mirror changes what the tables mean, so that an older one refuses its index. 2: files
#: has a ``gen`` column (an older mirror's rows could no longer be written), and the
#: journal (sending) holds each file's size, time and inode (``fields``: 6, not 3)
FORMAT = 2
#: fields per file in a journal entry (Index.sending): src, dst, date, size, mtime, inode
_JOURNALED = 6


class NewerIndex(ConfigError):
    """The index was written by a newer mirror, whose tables may mean what this one
    cannot tell: neither a run nor a reader (status, verify, a dry run) may use it."""


class DamagedIndex(StateError):
    """The index reads as damaged (a crash of its disk, a bad sector): a reader cannot use
    it, and the next start of a run moves it aside and rebuilds it."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    src TEXT PRIMARY KEY,
    dst TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    date TEXT NOT NULL,
    remote_hash TEXT,
    gen INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS failures (
    src TEXT PRIMARY KEY,
    dst TEXT,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    first_at REAL NOT NULL,
    last_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sending (
    id INTEGER PRIMARY KEY,
    items TEXT NOT NULL,
    fields INTEGER NOT NULL DEFAULT 3
);
CREATE TABLE IF NOT EXISTS leftovers (dst TEXT PRIMARY KEY, src TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS driver_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL NOT NULL,
    uploaded INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    result TEXT NOT NULL
);
"""
_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)")
#: the errors of a disk with no room left, for blocks or for inodes
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)
#: rows written between commits while a batch runs
COMMIT_EVERY = 500
#: files per journal entry (Index.sending)
_JOURNAL_CHUNK = 5000
#: rows read per query when streaming the index
_BATCH = 2000
#: paths per ``IN (...)`` query (SQLite allows at least 999 parameters)
_IN_BATCH = 500
_SELECT = "SELECT src, dst, size, mtime_ns, ino, date, remote_hash, gen FROM files"
#: the same from the files of an index written before ``gen`` (format 1)
_SELECT_NO_GEN = _SELECT.replace(", gen ", ", 0 ")
_SELECT_STAMPS = "SELECT src, size, mtime_ns, ino, NULLIF(dst, src), date FROM files"
_SELECT_TARGETS = "SELECT src, dst FROM files"
_SELECT_HOLDERS = "SELECT dst, src FROM files"
#: what a full pass compares for each row: src, size, mtime_ns, inode, dst (None when
#: it is src, as with the tree layout) and the date (ISO)
Stamp = tuple[str, int, int, int, "str | None", str]


class IndexEntry(NamedTuple):
    """A file mirror put on the target (or found there identical).

    A NamedTuple for the same reason as LocalEntry: one per mirrored file, every pass.
    """

    src: str
    dst: str
    size: int
    mtime_ns: int
    ino: int
    date: dt.date
    remote_hash: str | None = None
    #: the inode's generation (mirror.source_files.generation) when the file was read for
    #: sending; 0 where not known. An inode number a deleted file freed can go to a new
    #: file, of the same size and time: only the generation tells it from the file renamed
    gen: int = 0


@dataclass(frozen=True)
class Failure:
    src: str
    dst: str | None
    error: str
    attempts: int
    first_at: float
    last_at: float


@dataclass(frozen=True)
class RunRecord:
    kind: str
    started: float
    finished: float
    uploaded: int
    bytes: int
    deleted: int
    failed: int
    result: str


def private_dir(path: Path) -> None:
    """Create ``path`` (and parents) readable by the owner only."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


class Index:
    """Thread-safe access to one target's sqlite index."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._dirty = 0
        #: sources with a failure row, so recording a success costs no DELETE when there is none
        self._failed: set[str] = set()
        self._rows: list[tuple[str, str, int, int, int, str, str | None, int]] = []
        #: journal entries whose files are recorded: dropped in the same transaction
        self._sent: list[int] = []
        if readonly:
            if _emptied(path):
                raise _damaged(path, "the file is empty")
            try:
                self._db = _read_only(path)
                self._select = _select_of(self._db)
            except sqlite3.Error as exc:
                raise state_error(path, exc) from exc
            return
        private_dir(path.parent)
        self._db = self._open_or_rebuild(path)
        self._select = _SELECT
        with self._using():
            self._failed = {row[0] for row in self._db.execute("SELECT src FROM failures")}

    @contextmanager
    def _using(self) -> Iterator[None]:
        """The lock, with sqlite's errors turned into mirror's: a full disk under the state
        folder is no bug, and the message says where and what to do."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise state_error(self.path, exc) from exc

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        if not path.exists():
            _create(path)
        db = sqlite3.connect(path, check_same_thread=False, timeout=10)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        written = _refuse_newer(db, path)
        db.executescript(SCHEMA)
        if _select_of(db) == _SELECT_NO_GEN:
            db.execute("ALTER TABLE files ADD COLUMN gen INTEGER NOT NULL DEFAULT 0")
        if "fields" not in _columns(db, "sending"):
            db.execute("ALTER TABLE sending ADD COLUMN fields INTEGER NOT NULL DEFAULT 3")
        if written < FORMAT:
            db.execute(f"PRAGMA user_version = {FORMAT}")
        if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise sqlite3.DatabaseError("quick_check failed")
        _one_row_per_target_path(db)
        return db

    def _open_or_rebuild(self, path: Path) -> sqlite3.Connection:
        try:
            if _emptied(path):
                # sqlite would take it for a new index, and its files for someone else's
                raise sqlite3.DatabaseError("the file is empty")
            return self._connect(path)
        except sqlite3.Error as exc:
            if not damaged(exc):
                raise state_error(path, exc) from exc
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            log.warning("index %s is damaged (%s); moved aside to %s and rebuilding it", path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                old = Path(f"{path}{suffix}")
                if old.exists():
                    old.rename(Path(f"{aside}{suffix}"))
        try:
            db = self._connect(path)
            rows = _salvage(aside, db)
        except sqlite3.Error as exc:
            raise state_error(path, exc) from exc
        log.warning("kept %d file record(s) that still read; the next pass checks them against the target", rows)
        return db

    # -- files ----------------------------------------------------------------------
    def entries(self) -> dict[str, IndexEntry]:
        """Every row in memory: for passes that compare each file with a target listing."""
        return {row.src: row for row in self.rows()}

    def rows(self) -> Iterator[IndexEntry]:
        """Every row in path order, read in batches, so the whole index never has to sit in
        memory."""
        dates: dict[str, dt.date] = {}
        for row in self._paged(self._select):
            yield _entry(row, dates)

    def stamps(self) -> Iterator[Stamp]:
        """Every row's :data:`Stamp`, in path order: the little a full pass compares per
        file, with no entry built for the (usually nearly all) unchanged ones."""
        return self._paged(_SELECT_STAMPS)

    def targets(self) -> Iterator[tuple[str, str]]:
        """(src, dst) of every row, in path order: who holds which target path."""
        return self._paged(_SELECT_TARGETS)

    def _paged(self, select: str) -> Iterator[Any]:
        # each batch is its own query: other threads may use the index in between
        after = ""
        while True:
            with self._using():
                self._drain()
                query = f"{select} WHERE src > ? ORDER BY src LIMIT ?"
                batch = self._db.execute(query, (after, _BATCH)).fetchall()
            yield from batch
            if len(batch) < _BATCH:
                return
            after = batch[-1][0]

    def lookup_many(self, srcs: Collection[str]) -> dict[str, IndexEntry]:
        """The rows of ``srcs`` that exist, a few hundred per query."""
        found: dict[str, IndexEntry] = {}
        wanted = list(srcs)
        dates: dict[str, dt.date] = {}
        for at in range(0, len(wanted), _IN_BATCH):
            chunk = wanted[at : at + _IN_BATCH]
            with self._using():
                self._drain()
                query = f"{self._select} WHERE src IN ({','.join('?' * len(chunk))})"
                rows = self._db.execute(query, chunk).fetchall()
            found.update((row[0], _entry(row, dates)) for row in rows)
        return found

    def lookup(self, src: str) -> IndexEntry | None:
        with self._using():
            self._drain()
            row = self._db.execute(f"{self._select} WHERE src = ?", (src,)).fetchone()
        return None if row is None else _entry(row, {})

    def holders(self, dsts: Collection[str]) -> dict[str, str]:
        """The source path of the row holding each of the target paths ``dsts`` that one holds."""
        found: dict[str, str] = {}
        wanted = list(dsts)
        for at in range(0, len(wanted), _IN_BATCH):
            chunk = wanted[at : at + _IN_BATCH]
            with self._using():
                self._drain()
                query = f"{_SELECT_HOLDERS} WHERE dst IN ({','.join('?' * len(chunk))}) ORDER BY src"
                found.update(self._db.execute(query, chunk).fetchall())
        return found

    def held_below(self, folder: str, limit: int) -> list[str]:
        """Up to ``limit`` target paths of rows below ``folder`` (not the root), in order."""
        with self._using():
            self._drain()
            rows = self._db.execute(
                "SELECT dst FROM files WHERE dst > ? AND dst < ? ORDER BY dst LIMIT ?",
                (f"{folder}/", f"{folder}0", limit),
            ).fetchall()
        return [row[0] for row in rows]

    def under(self, paths: Iterable[str]) -> set[str]:
        """The source paths of the rows at or below each of ``paths`` (``""``: every row)."""
        found: set[str] = set()
        with self._using():
            self._drain()
            for path in paths:
                if not path:
                    return {row[0] for row in self._db.execute("SELECT src FROM files")}
                # "/" and "0" are neighbours in byte order: the range holds exactly path/...
                rows = self._db.execute(
                    "SELECT src FROM files WHERE src = ? OR (src > ? AND src < ?)", (path, f"{path}/", f"{path}0")
                )
                found.update(row[0] for row in rows)
        return found

    def count(self) -> int:
        with self._using():
            self._drain()
            return int(self._db.execute("SELECT COUNT(*) FROM files").fetchone()[0])

    def record(self, entry: IndexEntry) -> None:
        self.record_many([entry])

    def record_many(self, entries: Iterable[IndexEntry]) -> None:
        """Record files mirror put on the target; a failure recorded for one is cleared."""
        rows = [
            (e.src, e.dst, e.size, e.mtime_ns, e.ino, e.date.isoformat(), e.remote_hash, e.gen) for e in entries
        ]
        with self._using():
            # rows are written in batches (one executemany) before anything else touches the db
            self._rows.extend(rows)
            if self._failed:
                for row in rows:
                    self._clear_failure(row[0])
            self._wrote(len(rows))

    # -- the journal of files being sent -------------------------------------------------
    # A file can land on the target and its row be lost with the transaction a kill or a
    # power cut ends. Unrecorded, it would stay on the target for good once its source
    # goes: mirror only removes files it knows it put there. So the files a pass is about
    # to send are written down (and committed) first, and dropped together with the rows
    # once the pass has sent them all. Each with the size, time and inode it is sent as:
    # what a copy found after a crash is told by, and what its row then records.
    def sending(self, rows: Iterable[IndexEntry]) -> list[int]:
        """Journal the rows of files about to be sent or moved (src, dst, date, size,
        mtime, inode); the ids of the entries."""
        tokens = []
        with self._using():
            pending = iter(rows)
            while chunk := list(itertools.islice(pending, _JOURNAL_CHUNK)):
                # NUL-separated: no path holds one, and it is half the time of JSON
                fields = (
                    f"{r.src}\0{'' if r.dst == r.src else r.dst}\0{r.date.isoformat()}\0"
                    f"{r.size}\0{r.mtime_ns}\0{r.ino}"
                    for r in chunk
                )
                cursor = self._db.execute(
                    "INSERT INTO sending (items, fields) VALUES (?, ?)", ("\0".join(fields), _JOURNALED)
                )
                tokens.append(cursor.lastrowid or 0)
            # buffered rows stay buffered: committing them here would rewrite the pages
            # of the files table far more often
            self._db.commit()
        return tokens

    def sent(self, tokens: Iterable[int]) -> None:
        """The files of these journal entries are recorded (or did not land): the entries
        go in the transaction of the last rows."""
        with self._using():
            self._sent.extend(tokens)

    def has_in_flight(self) -> bool:
        with self._using():
            return self._db.execute("SELECT 1 FROM sending LIMIT 1").fetchone() is not None

    def in_flight(self) -> list[IndexEntry]:
        """The rows journaled by a pass that never finished sending them: it was cut
        short. An older mirror's journal tells no size, time or inode: -1, -1 and 0."""
        with self._using():
            self._drain()
            entries = self._db.execute("SELECT items, fields FROM sending").fetchall()
        found = []
        for text, width in entries:
            fields = text.split("\0")
            for at in range(0, len(fields), width):
                src, dst, day, *stamp = fields[at : at + width]
                size, mtime_ns, ino = map(int, stamp) if stamp else (-1, -1, 0)
                found.append(IndexEntry(src, dst or src, size, mtime_ns, ino, dt.date.fromisoformat(day)))
        return found

    def clear_in_flight(self) -> None:
        with self._using():
            self._drain()
            self._db.execute("DELETE FROM sending")
            self._db.commit()
            self._dirty = 0

    def forget(self, src: str, keep_failure: bool = False) -> None:
        self.forget_many([src], keep_failure)

    def set_generations(self, generations: Iterable[tuple[str, int]]) -> None:
        """Record the inode generation (:attr:`IndexEntry.gen`) of rows that had none:
        (source path, generation) pairs."""
        with self._using():
            self._drain()
            self._db.executemany("UPDATE files SET gen = ? WHERE src = ?", [(g, src) for src, g in generations])
            self._db.commit()
            self._dirty = 0

    def doubt(self, changed: Iterable[str], unknown: Iterable[str]) -> None:
        """Make rows no longer vouch for their files: those of ``changed`` are sent again
        (their time is none a file has), those of ``unknown`` are matched by no inode."""
        with self._using():
            self._drain()
            self._db.executemany("UPDATE files SET mtime_ns = -1 WHERE src = ?", [(src,) for src in changed])
            self._db.executemany("UPDATE files SET ino = 0 WHERE src = ?", [(src,) for src in unknown])
            self._db.commit()
            self._dirty = 0

    def forget_many(self, srcs: Iterable[str], keep_failure: bool = False) -> None:
        """Drop the rows of files no longer on the target (or no longer mirror's), and
        the failures recorded for them, unless ``keep_failure`` (the file still fails)."""
        gone = list(srcs)
        if not gone:
            return
        with self._using():
            self._drain()
            self._db.executemany("DELETE FROM files WHERE src = ?", [(src,) for src in gone])
            if self._failed and not keep_failure:
                for src in gone:
                    self._clear_failure(src)
            self._wrote(len(gone))

    def failed_sources(self) -> frozenset[str]:
        return frozenset(self._failed)

    def clear_failures(self, srcs: Iterable[str]) -> None:
        with self._using():
            self._drain()
            for src in srcs:
                self._clear_failure(src)
            self._wrote()

    def _clear_failure(self, src: str) -> None:
        if src in self._failed:
            self._db.execute("DELETE FROM failures WHERE src = ?", (src,))
            self._failed.discard(src)

    def holds_files(self) -> bool:
        """Whether any row says a file is on the target (one row read, not a count)."""
        return self.a_file() is not None

    def a_file(self) -> str | None:
        """The target path of the file the rows say is on the target and was recorded
        longest ago, or None: not one a pass just sent, whose copy tells nothing of the
        files sent before it (a row recorded again gets a new rowid)."""
        with self._using():
            self._drain()
            row = self._db.execute("SELECT dst FROM files ORDER BY rowid LIMIT 1").fetchone()
            return None if row is None else str(row[0])

    def totals(self) -> tuple[int, int]:
        """(files, bytes) the mirror manages on this target."""
        with self._using():
            self._drain()
            row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM files").fetchone()
            return int(row[0]), int(row[1])

    # -- old copies of files sent to a new path ----------------------------------------
    # A file sent to its new path (a new layout with an edit, a move that had to become a
    # put) has its row pointed there at once; its old copy goes later in the pass, or not
    # at all when the pass is cut short or its deletions are postponed. Written down first,
    # the old copy stays known until it is removed.
    def leave(self, copies: Iterable[tuple[str, str]]) -> None:
        """Journal (src, old target path) of copies about to be left behind (committed)."""
        pairs = [(dst, src) for src, dst in copies]
        if not pairs:
            return
        with self._using():
            self._drain()
            self._db.executemany("INSERT OR REPLACE INTO leftovers VALUES (?, ?)", pairs)
            self._db.commit()

    def leftovers(self) -> dict[str, str]:
        """The old copies still on the target: target path -> the source file it was."""
        with self._using():
            self._drain()
            return dict(self._db.execute("SELECT dst, src FROM leftovers").fetchall())

    def left(self, dsts: Iterable[str]) -> None:
        """These old copies are removed (or no longer mirror's to remove)."""
        gone = [(dst,) for dst in dsts]
        if gone:
            with self._using():
                self._drain()
                self._db.executemany("DELETE FROM leftovers WHERE dst = ?", gone)
                self._wrote(len(gone))

    # -- failures -------------------------------------------------------------------
    def fail(self, src: str, dst: str | None, error: str) -> bool:
        """Record that ``src`` failed; True when it had failed so already (the same error)."""
        now = time.time()
        with self._using():
            self._drain()
            before = self._db.execute("SELECT error FROM failures WHERE src = ?", (src,)).fetchone()
            self._db.execute(
                "INSERT INTO failures VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT(src) DO UPDATE SET "
                "dst = excluded.dst, error = excluded.error, attempts = attempts + 1, last_at = excluded.last_at",
                (src, dst, error, now, now),
            )
            self._failed.add(src)
            self._wrote()
        return before is not None and before[0] == error

    def failures(self) -> list[Failure]:
        with self._using():
            self._drain()
            rows = self._db.execute(
                "SELECT src, dst, error, attempts, first_at, last_at FROM failures ORDER BY src"
            ).fetchall()
        return [Failure(*r) for r in rows]

    # -- meta and runs ----------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self._using():
            self._drain()
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, **values: str | float | int | None) -> None:
        with self._using():
            self._drain()
            for key, value in values.items():
                if value is None:
                    self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
                else:
                    self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))
            self._db.commit()
            self._dirty = 0

    def add_run(self, run: RunRecord) -> None:
        with self._using():
            self._drain()
            self._db.execute(
                "INSERT INTO runs (kind, started, finished, uploaded, bytes, deleted, failed, result) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run.kind,
                    run.started,
                    run.finished,
                    run.uploaded,
                    run.bytes,
                    run.deleted,
                    run.failed,
                    run.result,
                ),
            )
            self._db.execute("DELETE FROM runs WHERE id <= (SELECT MAX(id) FROM runs) - 1000")
            self._db.commit()
            self._dirty = 0

    # -- driver state (a mirror.driver.StateStore) -----------------------------------------
    def get(self, key: str) -> str | None:
        with self._using():
            self._drain()
            row = self._db.execute("SELECT value FROM driver_state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set(self, key: str, value: str) -> None:
        with self._using():
            self._drain()
            self._db.execute("INSERT OR REPLACE INTO driver_state VALUES (?, ?)", (key, value))
            self._db.commit()

    def delete(self, key: str) -> None:
        with self._using():
            self._drain()
            self._db.execute("DELETE FROM driver_state WHERE key = ?", (key,))
            self._db.commit()

    # -- transactions -----------------------------------------------------------------
    def _wrote(self, count: int = 1) -> None:
        self._dirty += count
        if self._dirty >= COMMIT_EVERY:
            self._drain()
            self._db.commit()
            self._dirty = 0

    def _drain(self) -> None:
        """Write buffered file rows (caller holds the lock)."""
        if self._rows:
            self._db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)", self._rows)
            self._rows.clear()
        if self._sent:
            self._db.executemany("DELETE FROM sending WHERE id = ?", [(token,) for token in self._sent])
            self._sent.clear()

    def flush(self) -> None:
        with self._using():
            self._drain()
            self._db.commit()
            self._dirty = 0

    def close(self) -> None:
        with self._using():
            self._drain()
            self._db.commit()
            self._db.close()


#: what a rebuilt index keeps of the damaged one's meta: where source and target were
#: (a rebuilt index must still refuse a disk that is not mounted) and the layout
_SALVAGED_META = ("target_place", "source_place", "target_folder", "layout")


def _salvage(damaged_file: Path, db: sqlite3.Connection) -> int:
    """Copy into ``db`` the file rows and meta that still read from a damaged index, and
    return how many rows. Without them, files removed from the source while the index
    was broken stayed on the target for good, and a by-year copy of a file edited since
    got a second one under this year. The rebuilt index has no listing time, so the next
    pass lists the target and checks every row kept against it."""
    try:
        old = sqlite3.connect(f"file:{damaged_file}?mode=ro", uri=True)
    except sqlite3.Error:
        return 0
    try:
        # a damaged page ends a scan where it lies: read from both ends
        select = _select_of(old)
        rows = _readable(old, f"{select} ORDER BY rowid") | _readable(old, f"{select} ORDER BY rowid DESC")
        meta = _readable(old, "SELECT key, value FROM meta")
    finally:
        old.close()
    db.executemany("INSERT OR IGNORE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [r for r in rows if _sane(r)])
    db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [kv for kv in meta if kv[0] in _SALVAGED_META])
    db.commit()
    return int(db.execute("SELECT COUNT(*) FROM files").fetchone()[0])


def _sane(row: tuple[Any, ...]) -> bool:
    """Whether a salvaged row has the types a row has (src, dst, size, mtime_ns, ino,
    date, remote_hash, gen); a damaged page can read as anything."""
    src, dst, size, mtime_ns, ino, date, remote_hash, gen = row
    try:
        dt.date.fromisoformat(date)
    except (TypeError, ValueError):
        return False
    ints = all(isinstance(n, int) for n in (size, mtime_ns, ino, gen))
    return isinstance(src, str) and isinstance(dst, str) and ints and isinstance(remote_hash, (str, type(None)))


def _readable(db: sqlite3.Connection, select: str) -> set[tuple[Any, ...]]:
    """The rows of ``select`` up to the first that cannot be read."""
    found: set[tuple[Any, ...]] = set()
    try:
        for row in db.execute(select):
            found.add(tuple(row))
    except sqlite3.Error:
        pass
    return found


def damaged(exc: sqlite3.Error) -> bool:
    """Whether the index file itself is broken (rebuilt), not the disk under it (retried)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return isinstance(exc, sqlite3.DatabaseError)  # quick_check's verdict
    return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _read_only(path: Path) -> sqlite3.Connection:
    """The index at ``path``, opened to be read only. A user who may read the state folder
    but not write it (a colleague checking a service's) cannot make the shared-memory
    file a WAL database needs, and got "cannot write mirror's state" from status and
    verify: where no mirror has it open (no such file there), it is read as a file that
    does not change."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    try:
        _refuse_newer(db, path)
    except sqlite3.OperationalError as exc:
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        shm = path.with_name(f"{path.name}-shm")
        if code not in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN) or shm.exists():
            raise
        db.close()
        db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        _refuse_newer(db, path)
    _stand_in_for_missing_tables(db)
    return db


def state_error(path: Path, exc: sqlite3.Error) -> StateError:
    """What an index error means for the user, and where to act."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    # a full disk can also surface as an I/O error (the shared-memory file cannot grow),
    # and one out of inodes as a file it cannot open (its journal cannot be made)
    if code in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN) and (
        full := no_room(path.parent, sure=code == sqlite3.SQLITE_FULL)
    ):
        return full
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM):
        return StateError(
            f"cannot write mirror's state in {path.parent} ({exc}); check the folder's owner and "
            "permissions, or choose another state folder (--state-dir, MIRROR_STATE_DIR or state_dir)"
        )
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return _damaged(path, str(exc))
    return StateError(f"cannot use the index {path} ({exc})")


def _damaged(path: Path, why: str) -> DamagedIndex:
    return DamagedIndex(
        f"the index {path} is damaged ({why}); a start of mirror run moves it aside and rebuilds it"
    )


def _create(path: Path) -> None:
    """Make a new index file at ``path`` that is never empty (its tables come with
    :meth:`Index._connect`): written under another name and renamed into place, since
    status or verify reading it meanwhile took the empty file sqlite starts from for a
    damaged index ("(running, index damaged)", exit 1). WAL mode writes its first page."""
    new = path.with_name(f"{path.name}.new")
    with suppress(FileNotFoundError):
        new.unlink()  # a run killed while it made one
    os.close(os.open(new, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    db = sqlite3.connect(new)
    try:
        db.execute("PRAGMA journal_mode=WAL")
    finally:
        db.close()
    os.rename(new, path)


def _emptied(path: Path) -> bool:
    """Whether the index file is there but empty, with no write-ahead log to fill it: cut
    to nothing (a crash of a disk that does not order writes, a backup restored badly).
    An index mirror makes holds a page from its first moments on (WAL mode is written
    into its header), and its first rows may be in the log alone."""
    try:
        if os.stat(path).st_size:
            return False
    except FileNotFoundError:
        return False
    try:
        return os.stat(f"{path}-wal").st_size == 0
    except FileNotFoundError:
        return True


def state_denied(folder: Path, exc: OSError) -> ConfigError:
    """A state folder or file mirror may not make or open: made by another user (a run as
    root, then the service as a user), or restored from a backup with other owners.
    Nothing can start until that is fixed, as with a bad config."""
    return ConfigError(
        f"cannot use mirror's state in {folder} ({exc.strerror or exc}); check the owner and "
        "permissions of the folder and its files, or set --state-dir or MIRROR_STATE_DIR"
    )


def no_room(folder: Path, sure: bool = True) -> StateError | None:
    """What to say when the disk holding ``folder`` is full or out of inodes; None when
    it is neither, unless ``sure`` (the system said no space is left: a quota, say)."""
    try:
        disk = os.statvfs(folder)
    except OSError:
        disk = None
    if disk is not None and disk.f_files and not disk.f_favail:
        return StateError(
            f"the disk holding mirror's state ({folder}) has no room for another file (out of inodes); "
            "delete files there, or set state_dir to a folder on another disk"
        )
    if sure or (disk is not None and disk.f_bavail * disk.f_frsize < 1024 * 1024):
        return StateError(
            f"the disk holding mirror's state ({folder}) is full; free space there, or set "
            "state_dir to a folder on another disk"
        )
    return None


def state_os_error(folder: Path, exc: OSError) -> MirrorError:
    """A state folder or file mirror cannot make or write: its disk full or out of inodes
    (it said 'internal error: OSError: [Errno 28] ... please report it', or sent one to
    check the folder's permissions), else a matter of owner and permissions."""
    if exc.errno in FULL_DISK:
        return no_room(folder) or StateError(f"cannot write mirror's state in {folder} ({exc.strerror})")
    return state_denied(folder, exc)


def _refuse_newer(db: sqlite3.Connection, path: Path) -> int:
    """The index format ``db`` was written in (sqlite's user_version); NewerIndex, with
    ``db`` closed, when a newer mirror wrote it."""
    written = int(db.execute("PRAGMA user_version").fetchone()[0])
    if written > FORMAT:
        db.close()
        # used as it is, rows it reads otherwise would be taken for facts (an older
        # mirror verified a newer index "identical" with files left to delete)
        raise NewerIndex(
            f"the index {path} was written by a newer mirror (index format {written}; this one reads "
            f"{FORMAT}); run the newer mirror (pip install -U fsspec-mirror)"
        )
    return written


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _select_of(db: sqlite3.Connection) -> str:
    """What reads rows from ``db``'s files, which has no ``gen`` where an older mirror
    wrote it (opened read-only, or damaged, it is not upgraded: see below)."""
    try:
        columns = _columns(db, "files")
    except sqlite3.Error:
        return _SELECT
    return _SELECT if "gen" in columns or not columns else _SELECT_NO_GEN


def _stand_in_for_missing_tables(db: sqlite3.Connection) -> None:
    """An older mirror's index lacks the tables added since (a dry-run failed on "no such
    table: leftovers"). Opened read-only (dry-run, verify, status) it is not upgraded:
    that takes no lock, so a running mirror may own the file, and the mirror that wrote
    it must read it as before. Empty temporary tables stand in, as the upgrade makes them."""
    have = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for statement in SCHEMA.split(";"):
        table = _TABLE.search(statement)
        if table is not None and table[1] not in have:
            db.execute(statement.replace("CREATE TABLE", "CREATE TEMP TABLE", 1))


def _one_row_per_target_path(db: sqlite3.Connection) -> None:
    """A unique index on ``dst``, which also answers who holds a target path.

    Recording a file then drops the row of the file it replaced there (INSERT OR REPLACE):
    a stale row, its removal postponed by a failed transfer or cut off by a stop, would
    have a later pass delete the new file. Indexes from before it may hold such rows; the
    newest row of a path is the file there (a replaced row gets a new rowid). Older
    builds can still write to the file: sqlite maintains an index it was not told of.
    """
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'files_dst_one'").fetchone():
        return
    db.execute("DELETE FROM files WHERE rowid NOT IN (SELECT MAX(rowid) FROM files GROUP BY dst)")
    db.execute("DROP INDEX IF EXISTS files_dst")
    db.execute("CREATE UNIQUE INDEX files_dst_one ON files(dst)")
    db.commit()


def _entry(row: tuple[str, str, int, int, int, str, str | None, int], dates: dict[str, dt.date]) -> IndexEntry:
    src, dst, size, mtime_ns, ino, day, remote_hash, gen = row
    # most rows share a handful of dates, and (layout tree) have dst == src: share them
    date = dates.get(day) or dates.setdefault(day, dt.date.fromisoformat(day))
    return IndexEntry(src, src if dst == src else dst, size, mtime_ns, ino, date, remote_hash, gen)


def iter_index_files(state_dir: Path) -> Iterator[Path]:
    """Every index file in a state folder, sorted by name."""
    folder = state_dir / "targets"
    try:
        # not glob, which takes a folder it may not read for an empty one
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return
    except PermissionError as exc:
        raise state_denied(folder, exc) from None
    yield from sorted(folder / name for name in names if name.endswith(".sqlite"))
