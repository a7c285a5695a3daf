"""The planner: source entries + index + (optional) target listing -> actions (pure).

Nothing here does I/O, so the whole decision of *what* to do is property-tested. The
executor runs a plan in phases: cleanups, then moves, then puts/adopts, then (only if
nothing failed and the guard allows) removals. The planner makes that order safe: a
path that a move or delete vacates and another file claims is never removed afterwards.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import unicodedata
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, ValuesView
from dataclasses import dataclass
from typing import Any, NamedTuple

from mirror.driver import Capabilities, RemoteEntry
from mirror.errors import ItemError
from mirror.index import IndexEntry, Stamp
from mirror.layout import Layout, date_of
from mirror.logs import with_bytes_shown
from mirror.paths import TRASH_DIR, ancestors, in_trash, is_temp, path_key
from mirror.policy import DeletePolicy
from mirror.progress import counted, human_duration
from mirror.scan import Entries, LocalEntry

#: once the guard has withheld deletions, it lets them go when they are at most this
#: share (one in RELEASE_SHARE) of the files mirrored then, and have stood unchanged for
#: the target's release_after (see _guard)
RELEASE_SHARE = 10
#: a file this much older than the copy it replaces is an older version: the copy is
#: kept (clocks stepped back by NTP, and FAT's 2 s times, stay below it)
OLDER_SLACK_NS = 3_000_000_000
#: what becomes of a copy sent under a name the target refuses now (an older mirror sent
#: it, or the target's rules changed): the target may have stored it under another name
#: (WebDAV took 'offer;v1.pdf' for 'offer'), so no delete or move of that name is sent
UNFIT_LEFT = (
    "left there as it landed, perhaps under another name (mirror verify lists the target's "
    "other files); mirror no longer manages it"
)


#: why a new path that the target holds, or needs, as a file where the other needs a folder is refused
CLASHES = "clashes with a file or folder of the same name on the target"


@dataclass(frozen=True)
class PlanSettings:
    layout: Layout
    delete: DeletePolicy
    caps: Capabilities
    max_delete: int | None = None
    today: dt.date = dt.date(1970, 1, 1)
    #: the source's filesystem keeps inode numbers (mirror.mounts): a file of unchanged
    #: size and mtime with another inode is another file put in its place
    stable_inodes: bool = True
    #: the number of mirrored files when the delete guard first withheld deletions, while
    #: it still withholds some: see :func:`_guard`
    guard_base: int | None = None
    #: :attr:`Plan.withheld_digest` of the deletions the guard withheld, where plans of
    #: the whole source have withheld those same ones for the target's release_after
    guard_steady: str | None = None
    #: release_after, to name it in the guard's verdict
    release_after: float = 1800.0
    #: an earlier plan, within release_after, found source files older than their copies
    #: (:attr:`Plan.restored`): watching, a restore copied over the source and the
    #: removal of the files it lacks come in passes of their own
    restored_lately: bool = False


# The actions are NamedTuples, as LocalEntry is: a plan holds one per file that needs
# work (a million in a first copy), and a tuple class costs a tenth of a frozen dataclass
# to define at start-up and to build per file. Being tuples, a Put and an Adopt with equal
# fields compare equal: tell kinds apart with isinstance.


#: a put's reason where the source file is unchanged and its listed copy is not what it sent
DIFFERS_THERE = "differs on the target"
#: why a file is sent whose row matches it but for its inode (see _replaced)
REPLACED = "another file took its place"
#: why the copy a file replaces is kept: the file is an older version of it
OLDER_SENT = "the source's file is older than the copy mirror sent"


class Put(NamedTuple):
    src: str
    dst: str
    entry: LocalEntry
    date: dt.date
    reason: str
    #: the target already has a file of this size with this hash: skip if ours matches
    unless_hash: str | None = None
    #: where a file at ``dst`` that mirror did not put there goes first (into the trash),
    #: so that sending this one loses nobody's file (promise 2); None: none is there
    aside: str | None = None
    #: no listing told whether such a file is there: the executor asks the target
    ask: bool = False
    #: why the copy at ``dst`` goes into the trash (``aside``) though mirror put it there
    #: or it is the source's own: it is newer than the file sent now (_Planner.keep_newer)
    keep: str | None = None
    #: the file that ``aside`` takes is not at ``dst`` but here, where ``dst`` needs a
    #: folder (_Planner.clear_folders)
    in_the_way: str | None = None


class Adopt(NamedTuple):
    """The target already holds this file identical: record it, send nothing."""

    src: str
    dst: str
    entry: LocalEntry
    date: dt.date
    reason: str
    remote_hash: str | None = None


class Move(NamedTuple):
    src: str
    old_dst: str
    dst: str
    entry: LocalEntry
    date: dt.date
    reason: str
    #: the index row this move takes over (a rename), if not ``src`` itself
    old_src: str | None = None
    remote_hash: str | None = None
    #: another file of the plan needs ``old_dst`` gone first (as a folder, or from a
    #: folder it takes the name of): the executor moves it aside before any other move
    park: bool = False
    #: the inode generation of the row moved (:attr:`IndexEntry.gen`), which stays the file's
    gen: int = 0
    #: as :attr:`Put.aside` and :attr:`Put.ask`: someone else's file at ``dst``
    aside: str | None = None
    ask: bool = False


class Delete(NamedTuple):
    src: str
    dst: str
    reason: str
    #: drop the index row of ``src`` (False when ``src`` lives on at a new path)
    forget: bool = True


class Trash(NamedTuple):
    src: str
    dst: str
    trash_dst: str
    reason: str
    forget: bool = True


class Forget(NamedTuple):
    """Drop the index row only; the target file stays (policy keep, or replaced)."""

    src: str
    reason: str
    #: the user should hear of it: a file mirror would have removed is left on the target
    warn: bool = False
    #: the source file is refused in this plan: the failure recorded for it stays
    refused: bool = False


class Refuse(NamedTuple):
    """A file that cannot be mirrored to this target, and why (a per-item error)."""

    src: str
    dst: str | None
    reason: str


class Cleanup(NamedTuple):
    """A temp file left on the target by an interrupted upload."""

    dst: str


class Renamed(NamedTuple):
    """A mirrored file gone from its path and still in the source under one this target
    does not get (a name that is not valid UTF-8, or one the target refuses): its copy
    at the old name stays, and its row, until the file can be mirrored again."""

    src: str
    dst: str
    #: the source path the file has now, and why that is not mirrored
    now: str
    why: str


Transfer = Put | Adopt | Move
Removal = Delete | Trash | Forget


@dataclass(frozen=True)
class Plan:
    cleanups: tuple[Cleanup, ...] = ()
    moves: tuple[Move, ...] = ()
    transfers: tuple[Put | Adopt, ...] = ()
    removals: tuple[Removal, ...] = ()
    refusals: tuple[Refuse, ...] = ()
    #: why deletions were withheld (they are then not in ``removals``)
    guard: str | None = None
    withheld: int = 0
    #: removals that must happen before moves and puts: they free a name a new file or
    #: folder needs (a folder replaced by a file of the same name, or the reverse)
    early: tuple[Removal, ...] = ()
    #: source paths gone whose removal the caller asked to leave for a later plan
    held: tuple[str, ...] = ()
    #: source paths whose index row today's naming rules refuse (sent by an older mirror,
    #: or under other rules): forgotten, and their copies left on the target
    unfit: tuple[str, ...] = ()
    #: :attr:`PlanSettings.guard_base` after this plan: set when the guard withholds,
    #: None once a plan of the whole source withholds nothing
    guard_base: int | None = None
    #: files renamed in the source to a path that is not mirrored: their copies stay
    renamed: tuple[Renamed, ...] = ()
    #: which deletions the guard withheld, as a digest of their paths (None: none)
    withheld_digest: str | None = None
    #: how many source files this plan found older than the copies mirror sent
    restored: int = 0

    def is_empty(self) -> bool:
        return not (self.cleanups or self.moves or self.transfers or self.removals or self.refusals or self.early)


class KnownFiles(Mapping[str, IndexEntry]):
    """The index as a plan sees it: the rows of the paths in ``scope`` in memory, every
    other row read on demand.

    Holding a whole index costs hundreds of bytes per file and rarely helps: a plan only
    acts on the paths in its scope. The other rows are still counted (the delete guard
    needs the total) and streamed where a plan needs all of them (to keep a new file off
    a target path that another file holds).
    """

    def __init__(
        self,
        loaded: Mapping[str, IndexEntry],
        scope: Collection[str],
        total: int,
        rows: Callable[[], Iterator[IndexEntry]],
        lookup: Callable[[str], IndexEntry | None],
        targets: Callable[[], Iterator[tuple[str, str]]],
        holders: Callable[[Collection[str]], dict[str, str]] | None = None,
        held_below: Callable[[str, int], list[str]] | None = None,
    ) -> None:
        self._loaded = loaded
        # asked once per path: in a list, a watch pass of 20,000 new files took minutes
        self._scope = scope if isinstance(scope, set | frozenset) else frozenset(scope)
        self._total = total
        self._rows = rows
        self._lookup = lookup
        self._targets = targets
        self._holders = holders
        self._held_below = held_below

    def targets(self) -> Iterator[tuple[str, str]]:
        """(src, dst) of every row: all a plan needs to know who holds which target path,
        streamed without building entries (:meth:`Index.targets`)."""
        return self._targets()

    @property
    def answers_by_path(self) -> bool:
        """Whether :meth:`holders` and :meth:`held_below` ask the index (by exact path)
        instead of a plan reading every row to know who holds what."""
        return self._holders is not None and self._held_below is not None

    def holders(self, dsts: Collection[str]) -> dict[str, str]:
        """The source path holding each of the target paths ``dsts`` that a row holds."""
        assert self._holders is not None
        return self._holders(dsts)

    def held_below(self, folder: str, limit: int) -> list[str]:
        """Up to ``limit`` target paths that rows hold below ``folder``, in path order."""
        assert self._held_below is not None
        return self._held_below(folder, limit)

    def __getitem__(self, src: str) -> IndexEntry:
        row = self.find(src)
        if row is None:
            raise KeyError(src)
        return row

    def find(self, src: str) -> IndexEntry | None:
        row = self._loaded.get(src)
        if row is None and src not in self._scope:
            row = self._lookup(src)
        return row

    # get() and ``in`` without raising KeyError: a first copy asks both of every file
    def get(self, src: str, default: object = None) -> IndexEntry | Any:
        row = self.find(src)
        return default if row is None else row

    def __contains__(self, src: object) -> bool:
        return isinstance(src, str) and self.find(src) is not None

    def __len__(self) -> int:
        return self._total

    def __iter__(self) -> Iterator[str]:
        return (row.src for row in self._rows())

    def values(self) -> ValuesView[IndexEntry]:
        return _StreamedRows(self, self._rows)


class _StreamedRows(ValuesView[IndexEntry]):
    """All rows in one stream instead of a lookup per path."""

    def __init__(self, known: KnownFiles, rows: Callable[[], Iterator[IndexEntry]]) -> None:
        super().__init__(known)
        self._rows = rows

    def __iter__(self) -> Iterator[IndexEntry]:
        return self._rows()


def _placed(layout: Layout, src: str, dst: str, date: dt.date) -> bool:
    """Whether the layout still puts ``src`` (of ``date``) at ``dst``."""
    try:
        return layout.target_path(src, date) == dst
    except ItemError:
        return False  # planned, so the planner can say why the path is refused


def narrow(
    local: Entries, stamps: Iterable[Stamp], layout: Layout, stable_inodes: bool = True
) -> tuple[set[str], set[str], int]:
    """Split the index against a scan, for a full pass that trusts the index.

    ``stamps`` must come in path order (as :meth:`Index.stamps` gives them): the scan's
    paths are sorted and merged with them, which needs far less memory than a set of
    either. Returns the paths whose rows may need an action (changed, gone, or moved by
    a new layout), the scope to plan (those and the new paths) and the number of rows.
    Unchanged files, usually nearly all, are only counted.
    """
    kept: set[str] = set()
    scope: set[str] = set()
    dates: dict[str, dt.date] = {}
    total = 0
    same = local.same
    # a row stored at its own path (dst NULL) was checked safe when placed, and the tree
    # layout puts it there again: no layout call for the usual case
    keeps_paths = layout.keeps_paths
    paths = iter(sorted(local))
    path = next(paths, None)
    for src, size, mtime_ns, ino, dst, day in stamps:
        total += 1
        while path is not None and path < src:
            scope.add(path)  # no row: new
            path = next(paths, None)
        if path == src:
            path = next(paths, None)
            if same(src, size, mtime_ns, ino if stable_inodes else 0):
                if dst is None and keeps_paths:
                    continue
                date = dates.get(day) or dates.setdefault(day, dt.date.fromisoformat(day))
                if _placed(layout, src, dst or src, date):
                    continue
        kept.add(src)
    if path is not None:
        scope.add(path)
        scope.update(paths)
    scope.update(kept)
    return kept, scope, total


def refused_name(dst: str, caps: Capabilities) -> str | None:
    """Why the target would refuse or ignore ``dst``, or None when it accepts it."""
    size = len(dst.encode("utf-8", "surrogatepass"))
    if why := _too_long(dst, size, caps):
        return why
    # nearly every path passes: one search and one length decide that; its
    # parts are only looked at one by one to say why a path is refused
    if size <= caps.max_name_bytes and not caps.refused_pattern.search(dst):
        return None
    return next(filter(None, (_refused_part(part, caps) for part in dst.split("/"))), None)


def _refused_part(part: str, caps: Capabilities) -> str | None:
    """Why the target would refuse ``part`` as a name in a path, or None."""
    low = part.lower()
    if low in caps.forbidden_names:
        return f"the target refuses the name {part!r}"
    if refused := next((p for p in sorted(caps.forbidden_prefixes) if low.startswith(p)), None):
        return f"the target refuses names starting with {refused!r}: {part!r}"
    if refused := next((i for i in sorted(caps.forbidden_infixes) if i in low), None):
        return f"the target refuses names holding {refused!r}: {part!r}"
    bad = sorted({c for c in part if c in caps.forbidden_chars})
    if bad:
        return f"the target refuses the character(s) {' '.join(repr(c) for c in bad)} in {part!r}"
    if part[0] in caps.forbidden_leading:
        return f"the target refuses names starting with {part[0]!r}: {part!r}"
    if part[-1] in caps.forbidden_trailing:
        return f"the target refuses names ending with {part[-1]!r}: {part!r}"
    if len(part.encode("utf-8")) > caps.max_name_bytes:
        return f"name is longer than the target allows ({caps.max_name_bytes} bytes)"
    return None


def _untrashable(trash: str, why: str) -> str:
    """Why the copy of a file gone from the source stays where it is, and what to do."""
    return (
        f"gone from the source, but the target refuses its trash path {trash!r} ({why}); "
        'delete = "mirror" deletes the copy instead; or delete it on the target yourself and run with --rescan'
    )


def _too_long(dst: str, size: int, caps: Capabilities) -> str | None:
    """Why ``dst`` (``size`` bytes of UTF-8) is too long a path for the target, or None."""
    if caps.max_path_chars is not None and len(dst) + caps.root_chars > caps.max_path_chars:
        if caps.root_chars:
            length = len(dst) + caps.root_chars
            return f"path is {length} characters with the target's folder; the target allows {caps.max_path_chars}"
        return f"path is longer than the target allows ({caps.max_path_chars} characters)"
    if caps.max_path_bytes is not None and size > caps.max_path_bytes:
        return (
            f"path is {size} bytes of UTF-8, longer than the target allows ({caps.max_path_bytes} bytes); "
            "shorten its folder or file names"
        )
    return None


def naming_rules(caps: Capabilities) -> str:
    """A short digest of the rules by which ``caps`` refuses names, and tells them apart:
    an index records the rules its rows were checked against (:func:`plan`'s
    ``rows_checked``), and a new rule (an upgrade, a changed backend) checks them again."""
    newer = (
        ("prefixes", sorted(caps.forbidden_prefixes)),
        ("infixes", sorted(caps.forbidden_infixes)),
        ("root_chars", caps.root_chars),
        ("max_path_bytes", caps.max_path_bytes),
    )
    rules = (
        caps.case_sensitive,
        sorted(caps.forbidden_names),
        caps.forbidden_chars,
        caps.forbidden_leading,
        caps.forbidden_trailing,
        caps.max_name_bytes,
        caps.max_path_chars,
        # rules added since, only where set: a new rule of one backend must not have every
        # other backend's index checked again
        *((name, value) for name, value in newer if value),
    )
    return hashlib.sha256(repr(rules).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def refusal(dst: str, size: int, caps: Capabilities) -> str | None:
    """Why the target would refuse a file of ``size`` bytes at ``dst``, or None."""
    if dst == TRASH_DIR:
        # sent, it took the trash folder's place: every move into the trash failed after it
        return f"{TRASH_DIR} is the name of mirror's trash folder on the target; rename the file"
    why = refused_name(dst, caps)
    if why is None and caps.max_file_bytes is not None and size > caps.max_file_bytes:
        why = f"file is larger than the target allows ({caps.max_file_bytes} bytes)"
    return why


def plan(
    local: Mapping[str, LocalEntry],
    index: Mapping[str, IndexEntry],
    settings: PlanSettings,
    remote: Mapping[str, RemoteEntry] | None = None,
    scope: Collection[str] | None = None,
    source_empty: bool | None = None,
    hold_gone: bool = False,
    leftovers: Mapping[str, str] | None = None,
    excluded: Callable[[str], bool] | None = None,
    rows_checked: bool = False,
    unsendable: int = 0,
    left_out: Mapping[str, tuple[LocalEntry, str]] | None = None,
    generation: Callable[[str], int] | None = None,
    doubted: Collection[str] = (),
) -> Plan:
    """Decide what to do for the source paths in ``scope`` (all known paths when None).

    ``local`` holds the current entries (a path in scope but not in ``local`` is gone);
    ``remote`` is a full target listing when the caller made one, else the index is
    trusted. ``source_empty`` tells the guard the whole source is empty (derived from
    ``local`` for a full plan). With ``hold_gone``, files gone from the source are not
    removed but listed in ``held``, unless a new file needs their place; the delete
    guard then judges them with those of a later plan. ``leftovers``: old copies of files
    sent to a new path that earlier passes did not remove (:meth:`Index.leftovers`).
    ``excluded``: whether a path not in ``local`` is still in the source but left out by
    the target's patterns, so that its removal says why.

    ``rows_checked``: the index's rows were all checked against the target's naming rules
    of today (:func:`naming_rules`), so a path a row holds is not judged again. Without
    it, each row in scope is held to the rules as a new file is: an older mirror, or the
    same target under other rules, may have sent a name the target refuses (WebDAV cut
    'offer;v1.pdf' to 'offer'), or two names it takes for one (Inv.pdf and inv.pdf). Such
    a file is refused and its row forgotten: nothing is sent to that name again, and the
    copy the target holds is left there, with a warning (see :meth:`_Planner.removals`).

    ``unsendable``: source files that are there but cannot be sent as they are (a name
    that is not UTF-8), so that a guard withholding deletions from a source that holds
    nothing else does not call it empty.

    ``left_out``: the source's files that the scan left out for their names (not valid
    UTF-8), path -> (entry, why). A file gone from its path that is one of those, or one
    this plan refuses, by inode, size and time, was renamed to a path that is not
    mirrored: it is still in the source, so its copy is not removed (:attr:`Plan.renamed`).

    ``generation``: the inode generation of a source file (0 where not known), asked of
    the few files that are, by inode, size and time, a file gone from its path renamed:
    one whose generation is not its row's is a new file given the inode the gone one
    freed (ext4 does that at once), with the same size and time (``touch -d``, ``cp -p``,
    an unzip). Taken for a rename, it got the other file's copy under its name.

    ``doubted``: target paths whose copy may be one of two files of one size and time
    (a pass cut short while it moved or sent them): no copy there is taken for a file's,
    or moved to another path, on the strength of its size and time.
    """
    if scope is None:
        candidates: Iterable[str] = local
        gone = sorted(src for src in index if src not in local)
    else:
        wanted = set(scope)
        candidates = [src for src in wanted if src in local]
        gone = sorted(src for src in wanted if src not in local and src in index)
    if source_empty is None:
        source_empty = scope is None and not local
    looks_closer = scope is not None or remote is not None
    planner = _Planner(local, index, settings, remote, rows_checked, generation, doubted, looks_closer)
    desired = planner.place(candidates, _by_identity(gone, index))
    # before their paths count as vacated: a file renamed to a name refused by the rules
    gone = planner.keep_renamed(gone, left_out or {})
    moves, transfers = planner.assign(desired, gone)
    del desired  # a first copy's million entries: freed before the next steps build sets of paths
    moves, transfers = planner.refuse_file_folder_clashes(moves, transfers)
    moves, transfers = planner.refuse_folders_there(moves, transfers)
    gone = planner.keep_renamed(gone)  # and to one refused since (another file's, a clash)
    moves = planner.order_moves(moves, transfers)
    removals = planner.removals(transfers, moves, gone, leftovers or {}, excluded)
    moves, transfers = planner.keep_replaced(moves, transfers)
    held: tuple[str, ...] = ()
    if hold_gone:
        needed, late = planner.split_early(removals, moves, transfers)  # a new file's place: now
        held = tuple(r.src for r in late if not isinstance(r, Forget) and r.forget)
        removals = [*needed, *(r for r in late if isinstance(r, Forget) or not r.forget)]
    managed = len(index)
    # a pattern typo (include = ["*.PDF"]) empties the source as this target sees it
    by_patterns = source_empty and excluded is not None and any(excluded(src) for src in gone)
    digest = _digest(sorted(r.src for r in removals if not isinstance(r, Forget) and r.forget))
    # a plan of some paths deletes what events named gone; only one of the whole source
    # deletes what never came back (a restore's last folders), and waits to see it stand
    unsteady = settings.release_after if scope is None and settings.guard_steady != digest else None
    guard, removals, withheld = _guard(
        removals,
        managed,
        settings.max_delete,
        source_empty,
        settings.guard_base,
        unsendable,
        by_patterns,
        unsteady,
    )
    guard_base = settings.guard_base
    if guard is not None and guard_base is None:
        guard_base = managed
    elif guard is None and scope is None and not held:
        guard_base = None  # the whole source planned, nothing withheld: the guard is at rest
    transfers = planner.keep_newer(transfers, restoring=guard_base is not None)
    restored = sum(1 for t in transfers if isinstance(t, Put) and (t.keep or "").startswith(OLDER_SENT))
    removals = planner.trash_if_restored(removals, bool(restored) or settings.restored_lately)
    transfers = planner.keep_renamed_copies(transfers, left_out or {})
    transfers = planner.clear_folders(transfers)
    early, removals = planner.split_early(removals, moves, transfers)
    cleanups: tuple[Cleanup, ...] = ()
    if remote is not None:
        cleanups = tuple(Cleanup(p) for p in sorted(remote) if is_temp(p))
    return Plan(
        cleanups,
        tuple(moves),
        tuple(transfers),
        tuple(removals),
        tuple(planner.refusals),
        guard,
        withheld,
        tuple(early),
        held,
        tuple(sorted(planner.unfit)),
        guard_base,
        tuple(planner.renamed[src] for src in sorted(planner.renamed)),
        digest if withheld else None,
        restored,
    )


class _Planner:
    """The steps of :func:`plan`, sharing what they know about this target."""

    def __init__(
        self,
        local: Mapping[str, LocalEntry],
        index: Mapping[str, IndexEntry],
        settings: PlanSettings,
        remote: Mapping[str, RemoteEntry] | None,
        rows_checked: bool = False,
        generation: Callable[[str], int] | None = None,
        doubted: Collection[str] = (),
        looks_closer: bool = False,
    ) -> None:
        """``looks_closer``: the plan looks at its files one by one anyway (a watch pass's
        changed paths, a pass that lists the target), so it asks each file that its row
        records by inode, size and time for its generation too (:meth:`_new_file_at`)."""
        self.local = local
        self.doubted = doubted
        self.rows_checked = rows_checked
        self._generation = generation
        #: the generations asked of ``generation``, by source path
        self._generations: dict[str, int] = {}
        self._looks_closer = looks_closer
        #: source paths where a new file stands with the inode, size and time of the file
        #: its row records (:meth:`_new_file_at`)
        self.new_files: set[str] = set()
        #: source path -> why its row is forgotten: today's rules refuse the path it holds
        self.unfit: dict[str, str] = {}
        self.index = index
        self.settings = settings
        self.caps = settings.caps
        self.key = path_key(self.caps.case_sensitive)
        self.remote = None if remote is None else {self.key(p): r for p, r in remote.items()}
        self.refusals: list[Refuse] = []
        #: target path (as compared on this target) -> the source path that gets it
        self.claimed: dict[str, str] = {}
        #: target paths whose current file leaves in this plan
        self.vacated: set[str] = set()
        #: rows of files renamed in the source to a path that is not mirrored (by old path)
        self.renamed: dict[str, Renamed] = {}
        #: target paths (by key) whose copy of a file gone from the source stays, though
        #: another file of this plan claims them -> why (:meth:`keep_replaced`)
        self.kept_copies: dict[str, str] = {}
        #: how many of :attr:`refusals` :meth:`keep_renamed` has looked at
        self._refusals_seen = 0
        self._holders: dict[str, str] | None = None
        #: the listed paths a dated layout can give, by undated path (:meth:`_first_date`)
        self._first_dates: FirstDates | None = None
        #: who holds each target path of this plan (by key), found by :meth:`assign`
        self.owner: dict[str, str] = {}
        #: the index answers "who holds this path?" itself (exact paths, so only where
        #: the target tells case apart): no plan reads every row for a few new files
        self._asks: KnownFiles | None = None
        if isinstance(index, KnownFiles) and index.answers_by_path and self.caps.case_sensitive:
            self._asks = index

    def place(
        self, paths: Iterable[str], gone: Mapping[tuple[int, int, int], IndexEntry]
    ) -> dict[str, tuple[str, dt.date]]:
        """Target path and date of every source path that may need an action, in path
        order (the order decides who gets a contested target path). A file with no row
        that is one of the ``gone`` rows renamed (:func:`_by_identity`) keeps its row's
        date: dated anew, a 2024 invoice corrected in 2026 and then filed into paid/
        moved to 2026/paid/."""
        desired: dict[str, tuple[str, dt.date]] = {}
        for src in paths:
            entry = self.local[src]
            known = self.index.get(src)
            dated = known or (self.renamed_from(src, entry, gone) if gone else None)
            date = dated.date if dated else self._first_date(src, entry)
            try:
                dst = self.settings.layout.target_path(src, date)
            except ItemError as exc:
                self.refusals.append(Refuse(src, None, str(exc)))
                continue
            unchanged = False
            if known is not None and known.dst == dst and known.size == entry.size:
                unchanged = _unchanged(known, entry, self.settings.stable_inodes)
                unchanged = unchanged and not self._new_file_at(src, known)
                if self.rows_checked:
                    if self.remote is None and unchanged:
                        continue  # unchanged (as narrow() tells), and no listing to check it against
                    desired[src] = (dst, date)  # the target accepted this path before
                    continue
            why = refusal(dst, entry.size, self.caps)
            if why:
                self.refusals.append(Refuse(src, dst, why))
                if known is not None and known.dst == dst and refused_name(dst, self.caps):
                    self.unfit[src] = f"the copy sent before the target refused its name is {UNFIT_LEFT}"
                continue
            if unchanged and self.remote is None and self.caps.case_sensitive:
                continue  # one row per path: no other row can hold its path, and no listing
            desired[src] = (dst, date)
        # sorting the keys alone: a list of (key, value) pairs costs a million tuples more
        return {src: desired[src] for src in sorted(desired)}

    def renamed_from(
        self, src: str, entry: LocalEntry, gone: Mapping[tuple[int, int, int], IndexEntry]
    ) -> IndexEntry | None:
        """The row of ``gone`` (:func:`_by_identity`) whose file the new path ``src`` is:
        same inode, size and time, and the same inode generation where both are known."""
        row = gone.get((entry.ino, entry.size, entry.mtime_ns)) if entry.ino else None
        if row is None or not row.gen:
            return row
        return row if self._generation_of(src) in (0, row.gen) else None

    def _new_file_at(self, src: str, known: IndexEntry) -> bool:
        """Whether a new file stands at ``src`` that has the inode, size and time its row
        records: ext4 hands a deleted file's inode to the next file made, at once, and a
        program that dates each document it writes gives the time. The generation tells
        (a new file's is not the row's), where the plan looks at files one by one."""
        if not (self._looks_closer and known.gen):
            return False
        if self._generation_of(src) in (0, known.gen):
            return False
        self.new_files.add(src)
        return True

    def _generation_of(self, src: str) -> int:
        """The inode generation of ``src``, asked once a plan; 0 where not known."""
        gen = self._generations.get(src)
        if gen is None:
            gen = self._generations[src] = self._generation(src) if self._generation is not None else 0
        return gen

    def _first_date(self, src: str, entry: LocalEntry) -> dt.date:
        if self._first_dates is None:
            self._first_dates = FirstDates(self.settings.layout, self.remote, self.caps, self.key, self._owned)
        return self._first_dates.of(src, entry)

    def _owned(self, key: str) -> bool:
        return bool(self._owners_of([key]))

    def keep_renamed(
        self, gone: list[str], left_out: Mapping[str, tuple[LocalEntry, str]] | None = None
    ) -> list[str]:
        """``gone`` without the files renamed to a path that is not mirrored: one of
        ``left_out`` (the scan's), or of the source files refused since the last call.
        The file is still in the source: its copy stays where it is, with its row, until
        it can be mirrored again (renamed back, or to a good name: a move then, or a put).
        Deleted as a file gone, its only copy went from every target. A copy another file
        of this plan takes the place of is replaced as before, and one at a name the
        target refuses now is left as it landed (:meth:`removals`)."""
        refused = self.refusals[self._refusals_seen :]
        self._refusals_seen = len(self.refusals)
        if not gone:
            return gone
        there = self._not_sent(left_out or {}, refused)
        if not there:
            return gone
        found = renamed_away((self.index[src] for src in gone), there, self.settings.stable_inodes)
        for src, (now, why) in found.items():
            row = self.index[src]
            # a copy at a name the target refuses now is left as it is anyway (removals)
            if self.key(row.dst) not in self.claimed and refused_name(row.dst, self.caps) is None:
                self.renamed[src] = Renamed(src, row.dst, now, why)
                self.vacated.discard(self.key(row.dst))
        return [src for src in gone if src not in self.renamed] if self.renamed else gone

    def _not_sent(
        self, left_out: Mapping[str, tuple[LocalEntry, str]], refused: Iterable[Refuse]
    ) -> list[tuple[str, LocalEntry, str]]:
        """(path, entry, why) of the source files not mirrored: ``left_out`` by the scan,
        and those of ``refused``."""
        there = [(path, entry, why) for path, (entry, why) in left_out.items()]
        there += [(r.src, self.local[r.src], r.reason) for r in refused if r.src in self.local]
        return there

    def keep_renamed_copies(
        self, transfers: list[Put | Adopt], left_out: Mapping[str, tuple[LocalEntry, str]]
    ) -> list[Put | Adopt]:
        """``transfers``, each put onto the copy of a file renamed to a path that is not
        mirrored (another file now stands at its old path: an export written anew under
        its fixed name) moving that copy into the trash first (:attr:`Put.keep`): it is
        the only copy of a file still in the source, as in :meth:`keep_renamed`."""
        stable = self.settings.stable_inodes
        replacing = {
            put.src: known
            for put in transfers
            if isinstance(put, Put)
            and put.aside is None
            and (known := self.index.get(put.src)) is not None
            and known.dst == put.dst
            and not _unchanged(known, put.entry, stable)
        }
        if not replacing or not (there := self._not_sent(left_out, self.refusals)):
            return transfers
        found = renamed_away(replacing.values(), there, stable)
        if not found:
            return transfers
        kept: list[Put | Adopt] = []
        for action in transfers:
            if isinstance(action, Put) and action.src in found:
                now, why = (with_bytes_shown(text) for text in found[action.src])
                keep = f"the copy there is of the file renamed in the source to {now}, not mirrored ({why})"
                kept.append(action._replace(aside=self._trash_path(action.dst), keep=keep))
            else:
                kept.append(action)
        return kept

    def assign(
        self, desired: dict[str, tuple[str, dt.date]], gone: list[str]
    ) -> tuple[list[Move], list[Put | Adopt]]:
        """Give each target path to one source file (others are refused), and decide."""
        key, index = self.key, self.index
        matched = self._match_renames(gone, desired)
        for src, old in matched.items():
            if key(desired[src][0]) == key(old.dst):
                # renamed, its copy staying where it is (flat: a/x.pdf -> c/x.pdf): the path
                # is still its own, before a file refused it can take it (b/x.pdf, sorting
                # first, overwrote invoice A's only copy)
                self.claimed.setdefault(key(old.dst), src)
        # a copy in doubt is sent again, not moved: it may be another file's
        movable = self.caps.server_side_move
        renames = {s: row for s, row in matched.items() if movable and row.dst not in self.doubted}
        # paths whose current occupant leaves in this plan (deleted, renamed, re-laid-out)
        vacated = {key(index[src].dst) for src in gone}
        vacated |= {key(index[s].dst) for s in desired if s in index and index[s].dst != desired[s][0]}
        self.vacated = vacated
        # who holds each target path: only needed (and the whole index only read) when
        # some file goes to a path that is not already its own
        relocating = any(self._relocates(src, dst) for src, (dst, _) in desired.items())
        owner = self._owners_of([key(dst) for dst, _ in desired.values()]) if relocating else {}
        self.owner = owner
        moves: list[Move] = []
        transfers: list[Put | Adopt] = []
        #: files whose copy on the target is one file with another's (rows an older
        #: mirror, or other rules, left on one path): sent again, whatever is there
        shared: dict[str, str] = {}
        for src, (dst, date) in desired.items():
            k = key(dst)
            holder = self.claimed.get(k) or (owner.get(k) if k not in vacated else None)
            if holder is not None and holder != src:
                self.refusals.append(Refuse(src, dst, _taken(dst, holder)))
                known = index.get(src)
                if known is not None and key(known.dst) == k:
                    # its row holds the path too: two rows, one file there (of either)
                    shared.setdefault(holder, src)
                    self.unfit[src] = (
                        f"its copy on the target was one file with that of {holder!r} (the target does not "
                        f"tell the two names apart), which now holds {holder!r}"
                    )
                continue
            self.claimed[k] = src
            theirs = owner.get(k) not in (None, src) or dst in self.doubted
            action = _decide(
                src,
                dst,
                date,
                self.local[src],
                index.get(src),
                renames.get(src),
                self.remote,
                key,
                self.settings,
                theirs,
                src in self.new_files,
            )
            if (
                isinstance(action, (Put, Move))
                and owner.get(k) is None
                and k not in vacated
                and self._relocates(src, dst)
            ):
                # no row holds the path (its own row does, unless it moves there)
                action = self._clear_the_way(action)
            if isinstance(action, Move):
                moves.append(action)
            elif action is not None:
                transfers.append(action)
        first_gone: dict[str, str] = {}
        for src in gone:
            # a file gone whose row held a path another row holds too (its name in another
            # case, to a target that does not tell the two apart): the one file there may
            # hold the gone file's bytes, and the file that stays was never sent again
            k = key(index[src].dst)
            holder = self.claimed.get(k)
            if holder is not None and holder != src and holder in index and key(index[holder].dst) == k:
                shared.setdefault(holder, src)
            elif (other := first_gone.setdefault(k, src)) != src:
                # both gone (A renamed, a deleted): the one file holds whichever went last,
                # and a move of either row's copy took those bytes to the new name
                shared.setdefault(other, src)
                shared.setdefault(src, other)
        if shared:
            moves, transfers = self._send_again(shared, desired, moves, transfers)
        # a file refused its new path keeps its old copy, and with it the copy's folders
        self.vacated -= {key(index[r.src].dst) for r in self.refusals if r.src in index}
        return moves, transfers

    def _match_renames(self, gone: list[str], desired: Mapping[str, tuple[str, dt.date]]) -> dict[str, IndexEntry]:
        """New paths that are a gone path renamed (:meth:`renamed_from`), each taking one."""
        by_identity = _by_identity(gone, self.index)
        if not by_identity:
            return {}
        result: dict[str, IndexEntry] = {}
        for src in desired:
            if src in self.index:
                continue
            e = self.local[src]
            match = self.renamed_from(src, e, by_identity)
            if match is not None:
                del by_identity[(e.ino, e.size, e.mtime_ns)]
                result[src] = match
        return result

    def _send_again(
        self,
        shared: Mapping[str, str],
        desired: Mapping[str, tuple[str, dt.date]],
        moves: list[Move],
        transfers: list[Put | Adopt],
    ) -> tuple[list[Move], list[Put | Adopt]]:
        """Send each file of ``shared`` (holder -> the other file its copy was one with)
        again: the one file on the target holds whichever of the two went last, and a
        listing cannot always tell which (WebDAV keeps no time and gives no hash). So is
        a file renamed from the other: moved, that one file took the holder's bytes along
        to the new name (A and a were one file; A renamed, its copy held a's bytes)."""
        sent = {a.src for a in transfers if isinstance(a, Put)}
        holders = {other: holder for holder, other in shared.items()}
        renamed = {m.src: holders[m.old_src] for m in moves if m.old_src in holders}
        with_ = {**shared, **renamed}  # file -> the one whose copy it was one file with
        again = [src for src in with_ if src in desired and src not in sent]
        if not again:
            return moves, transfers
        redo = set(again)
        moves = [m for m in moves if m.src not in redo]
        transfers = [a for a in transfers if a.src not in redo]
        for src in again:
            dst, date = desired[src]
            why = f"sent again: its copy on the target was one file with that of {with_[src]!r}"
            transfers.append(Put(src, dst, self.local[src], date, why))
        return moves, transfers

    def _clear_the_way(self, action: Put | Move) -> Put | Move:
        """``action`` writes to a path no index row holds: a file there is someone else's
        (put by hand, or kept by ``delete = keep`` after its source went) and is moved
        into the trash before ``action`` replaces it. A listing tells whether one is there;
        without one, the executor asks. A file of the same size is taken for the source's
        own copy (a lost index, or a pass cut short after sending): it is adopted or
        replaced as before."""
        if self.remote is None:
            return action._replace(aside=self._trash_path(action.dst), ask=True)
        there = self.remote.get(self.key(action.dst))
        if there is None:
            return action  # a first copy's every file: no string built for it
        # a size not told (None) is not the same: the file may be someone's, and goes aside
        if there.size == action.entry.size and (
            isinstance(action, Put) or not newer_there(action.entry, there, self.caps)
        ):
            return action  # a put's newer copy there is kept by keep_newer, with its reason
        return action._replace(aside=self._trash_path(action.dst))

    def clear_folders(self, transfers: list[Put | Adopt]) -> list[Put | Adopt]:
        """``transfers``, the first put below each listed file that no row holds and
        that stands where the put needs a folder moving that file into the trash first
        (:attr:`Put.in_the_way`): one ``delete = keep`` kept after its source went, and
        the source then made a folder of that name, blocked the folder's files for good;
        so did someone's file put on the target in place of a mirrored folder, though the
        failures named --rescan as the fix."""
        if not self.remote:
            return transfers
        remote = self.remote
        blocked: dict[int, str] = {}  # id of the put -> the listed file where it needs a folder
        for put in transfers:
            if not isinstance(put, Put) or put.aside is not None:
                continue
            if (k := next((a for a in ancestors(self.key(put.dst)) if a in remote), None)) is not None:
                blocked[id(put)] = k
        if not blocked:
            return transfers
        held = self._owners_of(set(blocked.values()))
        cleared: set[str] = set()
        result: list[Put | Adopt] = []
        for action in transfers:
            k = blocked.get(id(action))
            if not isinstance(action, Put) or k is None or k in held or k in cleared or k in self.claimed:
                result.append(action)
                continue
            cleared.add(k)
            path = remote[k].path
            result.append(action._replace(aside=self._trash_path(path), in_the_way=path))
        return result

    def keep_newer(self, transfers: list[Put | Adopt], restoring: bool) -> list[Put | Adopt]:
        """``transfers``, each put that would replace a newer copy on the target moving that
        copy into the trash first (:attr:`Put.keep`): a source restored from an older
        backup overwrote the corrected invoice, and a new index, a newer copy there of the
        same size. ``restoring``: the guard withholds deletions (the source looked lost),
        so a file smaller than its copy may be a restore cut short: the copy is kept too."""
        if not self.remote and not self.index:
            return transfers  # a first copy to an empty target: no copy there to keep
        kept: list[Put | Adopt] = []
        for action in transfers:
            if isinstance(action, Put) and action.aside is None and (why := self._newer_there(action, restoring)):
                kept.append(action._replace(aside=self._trash_path(action.dst), keep=why))
            else:
                kept.append(action)
        return kept

    def _newer_there(self, put: Put, restoring: bool) -> str | None:
        """Why the copy ``put`` replaces is worth keeping, if it is."""
        entry = put.entry
        if put.reason in (DIFFERS_THERE, REPLACED):
            return self._edited_there(put)
        if put.reason == "changed":
            known = self.index.get(put.src)
            if known is None or known.dst != put.dst:
                return None
            if entry.mtime_ns < known.mtime_ns - OLDER_SLACK_NS:
                ages = _ages(entry, known.mtime_ns, "copy")
                return f"{OLDER_SENT} ({ages})"
            if restoring and entry.size < known.size:
                return "deletions are withheld (the source looked lost); a smaller file may be a restore cut short"
            return None
        if put.reason != "new" or put.unless_hash is not None or self.remote is None:
            return None
        there = self.remote.get(self.key(put.dst))
        return None if there is None else newer_there(entry, there, self.caps)

    def _edited_there(self, put: Put) -> str | None:
        """Why the copy ``put`` replaces, the index's row matching the source file, is
        worth keeping: an edit on the target, which a listing pass replaced without a
        word; also under a file restored with a new inode (an image of the machine a week
        old, the state folder with it), which wrote last week's invoice over the
        corrected one. A copy newer than the source's file, of its size, on a target that
        keeps times, is one too (a snapshot of the machine rolled back)."""
        known = self.index.get(put.src)
        there = self.remote.get(self.key(put.dst)) if self.remote is not None else None
        if known is None or there is None:
            return None
        if (changed := _changed_there(known, there)) is not None:
            return f"the copy on the target changed since mirror put it there: {changed}"
        return newer_there(put.entry, there, self.caps)

    def trash_if_restored(self, removals: list[Removal], restored: bool) -> list[Removal]:
        """``removals``, the deletions moving their copies into the trash instead where
        ``restored``: this plan, or one a while ago, replaces copies with older versions
        of their files. A source restored from an older backup lacks the files written
        since, and their copies, the only ones left, were deleted in the pass that kept
        the corrected invoice."""
        if not restored:
            return removals
        why = "moved into the trash, not deleted: the source holds files older than their copies (a restore?)"
        result: list[Removal] = []
        for removal in removals:
            if isinstance(removal, Delete) and removal.forget:
                trashed = self._removal(
                    removal.src, removal.dst, f"{removal.reason}; {why}", True, DeletePolicy.TRASH
                )
                if trashed is not None:
                    result.append(trashed)
            else:
                result.append(removal)
        return result

    def _trash_path(self, dst: str) -> str:
        return f"{TRASH_DIR}/{self.settings.today.isoformat()}/{dst}"

    def _owners(self) -> dict[str, str]:
        """Who holds each target path (by key), from one read of the whole index, shared by
        the steps that need it."""
        if self._holders is None:
            key = self.key
            if self.rows_checked:
                self._holders = {key(dst): src for src, dst in self._targets()}
                return self._holders
            holders: dict[str, str] = {}
            for src, dst in self._targets():
                # two rows on one path (Inv.pdf and inv.pdf, sent before the target's case
                # was known): the first in path order holds it, as among new files
                k = key(dst)
                if holders.setdefault(k, src) > src:
                    holders[k] = src
            self._holders = holders
        return self._holders

    def _targets(self) -> Iterable[tuple[str, str]]:
        """(src, dst) of every index row, streamed where the index can."""
        index = self.index
        return index.targets() if isinstance(index, KnownFiles) else ((e.src, e.dst) for e in index.values())

    def _owners_of(self, keys: Collection[str]) -> dict[str, str]:
        """Who holds each of these target paths (by key), asked of the index where it can."""
        if self._asks is not None:
            return self._asks.holders(keys)
        owners = self._owners()
        return {k: owners[k] for k in keys if k in owners}

    def _relocates(self, src: str, dst: str) -> bool:
        """Whether ``src`` goes to a target path other than the one the index has for it."""
        known = self.index.get(src)
        return known is None or self.key(known.dst) != self.key(dst)

    def refuse_file_folder_clashes(
        self, moves: list[Move], transfers: list[Put | Adopt]
    ) -> tuple[list[Move], list[Put | Adopt]]:
        """A name cannot be a file and a folder at once: refuse the newcomer.

        After the plan the target holds the claimed paths plus the index's paths that no
        one vacates; a new path clashing with one of those (as file vs. folder) is refused.
        """
        key = self.key
        if not (moves or transfers):
            return moves, transfers
        # a path a file already holds is established: only the others can be new
        candidates = {key(a.dst) for a in [*moves, *transfers] if self._relocates(a.src, a.dst)}
        if not candidates:
            return moves, transfers
        if self._asks is not None:
            return self._refuse_clashes_asking(self._asks, candidates, moves, transfers)
        established = self._owners().keys()
        new = candidates - established if established else candidates
        if not new:
            return moves, transfers
        # no copies of a million keys when nothing is established yet (a first copy)
        files = self.claimed.keys() | (established - self.vacated) if established else self.claimed.keys()
        # every folder on the target: the files' parents and theirs (far fewer than files)
        parents = {f.rpartition("/")[0] for f in files}
        parents.discard("")
        folders = parents.union(*(ancestors(p) for p in parents))
        if files.isdisjoint(folders):
            return moves, transfers  # every new path's folders are in folders, none is a file
        if new & folders:
            moves, transfers = self._give_way_to_new_folders(new & folders, new, moves, transfers)
            files = self.claimed.keys() | (established - self.vacated) if established else self.claimed.keys()
        return self._refuse(new, lambda k: k in folders or any(a in files for a in ancestors(k)), moves, transfers)

    def refuse_folders_there(
        self, moves: list[Move], transfers: list[Put | Adopt]
    ) -> tuple[list[Move], list[Put | Adopt]]:
        """With a listing, refuse a file to a new path where the target holds a folder of
        files no row holds (someone's, or copies mirror no longer manages): the write
        failed there on every pass ("IsADirectoryError"), and a copy left under a name
        the target refuses now, where a file of the name the target folds it to arrived,
        was sent anew at each pass."""
        if not self.remote or not (moves or transfers):
            return moves, transfers
        new = {self.key(a.dst) for a in [*moves, *transfers] if self._relocates(a.src, a.dst)}
        parents = {k.rpartition("/")[0] for k in self.remote}
        parents.discard("")
        there = new & parents.union(*(ancestors(p) for p in parents))
        if not there:
            return moves, transfers  # the usual case: one pass over the listing's paths
        below = {k: r for k, r in self.remote.items() if not is_temp(k) and not there.isdisjoint(ancestors(k))}
        held = self._owners_of(below)
        theirs: dict[str, str] = {}  # folder key -> a file below it no row holds
        for k in sorted(below.keys() - held.keys()):
            for a in ancestors(k):
                if a in there:
                    theirs.setdefault(a, below[k].path)
        return self._refuse(
            set(theirs),
            lambda k: True,
            moves,
            transfers,
            lambda dst: (
                f"the target holds a folder {dst!r} with files mirror did not put there "
                f"({theirs[self.key(dst)]!r}); move or rename that folder on the target"
            ),
        )

    def _give_way_to_new_folders(
        self, contested: set[str], new: set[str], moves: list[Move], transfers: list[Put | Adopt]
    ) -> tuple[list[Move], list[Put | Adopt]]:
        """A new file and a new folder the target takes for one name (``belege`` and
        ``Belege/`` where case is folded): each is a newcomer to the other, and refusing
        the newcomer refused both on every pass. The folder's files are sent and the file
        is refused, whatever their order (``contested``: the new paths folders need)."""
        folder_of: dict[str, str] = {}  # contested key -> the folder as a new path below it spells it
        for action in [*moves, *transfers]:
            k = self.key(action.dst)
            if k in new and k not in contested:  # a file that stays: it spells the folder as sent
                for depth, a in enumerate(reversed(ancestors(k)), 1):
                    if a in contested:
                        folder_of.setdefault(a, "/".join(action.dst.split("/")[:depth]))
        given_way = set()
        for action in [*moves, *transfers]:
            k = self.key(action.dst)
            if k in folder_of:
                why = (
                    f"{action.dst!r} clashes with the folder {folder_of[k]!r} (the target takes the two names "
                    "for one): the folder's files are sent, this file is not; rename one of them"
                )
                self.refusals.append(Refuse(action.src, action.dst, why))
                self.claimed.pop(k, None)
                given_way.add(action.src)
        return [m for m in moves if m.src not in given_way], [t for t in transfers if t.src not in given_way]

    def _refuse_clashes_asking(
        self, index: KnownFiles, candidates: set[str], moves: list[Move], transfers: list[Put | Adopt]
    ) -> tuple[list[Move], list[Put | Adopt]]:
        """:meth:`refuse_file_folder_clashes` with the index asked about the new paths'
        surroundings instead of working out every folder on the target (exact paths)."""
        new = candidates - self.owner.keys()  # a candidate relocates, so assign asked about it
        if not new:
            return moves, transfers
        vacated, claimed = self.vacated, self.claimed
        above = {a for k in new for a in ancestors(k)}
        held_above = {a for a in index.holders(above) if a not in vacated}
        claimed_folders = {a for k in claimed for a in ancestors(k)}

        def clashes(k: str) -> bool:
            if any(a in claimed or a in held_above for a in ancestors(k)):
                return True  # a file stays or lands where this path needs a folder
            if k in claimed_folders:
                return True  # a file of this plan lands below this path
            # among the first len(vacated) + 1 rows below it, one stays if any does
            return any(d not in vacated for d in index.held_below(k, len(vacated) + 1))

        return self._refuse(new, clashes, moves, transfers)

    def _refuse(
        self,
        new: set[str],
        clashes: Callable[[str], bool],
        moves: list[Move],
        transfers: list[Put | Adopt],
        why: Callable[[str], str] = lambda dst: f"{dst!r} {CLASHES}",
    ) -> tuple[list[Move], list[Put | Adopt]]:
        """Refuse the actions to a new path that ``clashes`` as file vs. folder, each for ``why``."""
        clashing = set()
        for action in [*moves, *transfers]:
            k = self.key(action.dst)
            if k in new and clashes(k):
                self.refusals.append(Refuse(action.src, action.dst, why(action.dst)))
                clashing.add(action.src)
        if not clashing:
            return moves, transfers
        return [m for m in moves if m.src not in clashing], [t for t in transfers if t.src not in clashing]

    def split_early(
        self, removals: list[Removal], moves: list[Move], transfers: list[Put | Adopt]
    ) -> tuple[list[Removal], list[Removal]]:
        """Removals of paths that a new file needs as a folder, or the reverse, go first."""
        if not removals:
            return [], []  # a first copy: no folder of a million new paths needs working out
        blocks = self._blocking(moves, transfers)
        early: list[Removal] = []
        late: list[Removal] = []
        for removal in removals:
            dst = getattr(removal, "dst", None)
            (early if dst and blocks(dst) else late).append(removal)
        return early, late

    def _blocking(self, moves: list[Move], transfers: list[Put | Adopt]) -> Callable[[str], bool]:
        """Whether a file at a target path stands in the way of the plan's new paths: a
        folder of one of them, or a file below one."""
        new = {self.key(a.dst) for a in [*moves, *transfers]}
        new_folders = {a for k in new for a in ancestors(k)}

        def blocks(dst: str) -> bool:
            k = self.key(dst)
            return k in new_folders or any(a in new for a in ancestors(k))

        return blocks

    def order_moves(self, moves: list[Move], transfers: list[Put | Adopt]) -> list[Move]:
        """Moves run at once, before puts, so no order among them may matter: one that
        would land on a path another move still has to vacate is turned into a put, and
        one whose old path stands in the way of another new path is parked."""
        leaving = {self.key(m.old_dst) for m in moves}
        safe = []
        for move in moves:
            if self.key(move.dst) in leaving and self.key(move.dst) != self.key(move.old_dst):
                transfers.append(Put(move.src, move.dst, move.entry, move.date, move.reason + " (re-sent)"))
            else:
                safe.append(move)
        return self._park(safe, transfers) if safe else safe

    def _park(self, moves: list[Move], transfers: list[Put | Adopt]) -> list[Move]:
        """Mark the moves whose old path another move's new path needs as a folder, or
        which lie below another new path (a folder that must go for a file to take its
        name). A new layout does this: x/a.pdf leaves 2026/a.pdf for 2026/x/a.pdf while
        a.pdf/b.pdf arrives at 2026/a.pdf/b.pdf. A move's own new path does not count:
        :meth:`Executor._relocate` handles a file moving below or above itself."""
        key = self.key
        olds = [key(m.old_dst) for m in moves]
        dsts = [key(m.dst) for m in moves]
        new = set(dsts).union(key(t.dst) for t in transfers)
        needed: Counter[str] = Counter()  # how many moves need each folder (puts come after every move)
        for dst in dsts:
            needed.update(ancestors(dst))
        parked = set()
        for i, (old, dst) in enumerate(zip(olds, dsts, strict=True)):
            others_need = needed[old] > (old in ancestors(dst))  # its own new path aside
            if old != dst and (others_need or any(f in new and f != dst for f in ancestors(old))):
                parked.add(i)
        return [m._replace(park=True) if i in parked else m for i, m in enumerate(moves)] if parked else moves

    def removals(
        self,
        transfers: list[Put | Adopt],
        moves: list[Move],
        gone: list[str],
        leftovers: Mapping[str, str],
        excluded: Callable[[str], bool] | None = None,
    ) -> list[Removal]:
        """What leaves the target (by policy), never a path another file now claims.
        ``leftovers``: old copies an earlier pass left (target path -> source path);
        ``excluded``: see :func:`plan`."""
        stale: list[tuple[str, str, bool]] = []  # (src, old target path, forget the row)
        # a file sent to a new layout path (changed, or a move turned into a put) leaves its old copy
        for action in transfers:
            known = self.index.get(action.src)
            if isinstance(action, (Put, Adopt)) and known is not None and known.dst != action.dst:
                stale.append((action.src, known.dst, False))
        if leftovers:
            planned = {dst for _, dst, _ in stale}
            stale += [(src, dst, False) for dst, src in sorted(leftovers.items()) if dst not in planned]
        taken_over = {m.old_src for m in moves if m.old_src}
        stale += [(src, self.index[src].dst, True) for src in sorted(set(gone) - taken_over)]
        policy, remote = self.settings.delete, self.remote
        held = self._held_by_others(stale, gone)
        blocks = self._blocking(moves, transfers) if policy is DeletePolicy.KEEP and gone else None
        result: list[Removal] = []
        # rows an older mirror made of a source restored along with the target's trash
        left = f"in {TRASH_DIR}/ on the target, which mirror leaves alone"
        result += [Forget(src, left) for src, dst, forget in stale if forget and in_trash(dst)]
        for src, dst, forget in self._leave_refused([s for s in stale if not in_trash(s[1])]):
            there = remote.get(self.key(dst)) if remote is not None else None
            if remote is not None and there is None:
                if forget:  # a listing shows nothing there: nothing to delete, nor to guard
                    result.append(Forget(src, "gone from the target already"))
                continue
            if forget and there is not None and (changed := _changed_there(self.index[src], there)):
                # not the copy mirror put there: someone's edit, or their own file where
                # mirror's was (a state folder restored from an older backup)
                self._keep_from(src, dst, f"left on the target: {changed} since mirror put it there")
                result.append(Forget(src, f"left on the target: {changed} since mirror put it there", warn=True))
                continue
            taken = self.key(dst) in self.claimed or self.key(dst) in held
            # keep keeps the copies of files gone from the source, not the old copy of one
            # sent to a new path: left, it stood out of the index for good
            if taken or (forget and policy is DeletePolicy.KEEP):
                if forget:
                    result += self._kept(src, dst, taken, blocks)
                continue
            why = "the file was sent to its new path"
            if forget:
                # a file a new pattern leaves out is still in the source: "removed from the
                # source" sent users looking for who deleted it
                left_out = excluded is not None and excluded(src)
                why = "excluded by the config" if left_out else "removed from the source"
            if (removal := self._removal(src, dst, why, forget)) is not None:
                result.append(removal)
        # rows today's naming rules refuse: forgotten, their copies left (and told of)
        refused = {r.src for r in self.refusals}
        result += [Forget(src, why, True, src in refused) for src, why in sorted(self.unfit.items())]
        return result

    def _kept(self, src: str, dst: str, taken: bool, blocks: Callable[[str], bool] | None) -> list[Removal]:
        """The removal of the row of ``src``, gone from the source, whose copy at ``dst``
        stays: another file of this plan takes its place (``taken``), or ``delete = keep``
        keeps it, in the trash where a new file needs its name (``blocks``)."""
        policy = self.settings.delete
        if not taken and blocks is not None and blocks(dst):
            # kept there, it would stand for good where a new file needs a folder (a file
            # turned into a folder of that name), or the reverse
            why = "gone from the source; kept in the trash (delete = keep), as a new file needs its name"
            removal = self._removal(src, dst, why, True, DeletePolicy.TRASH)
            return [] if removal is None else [removal]
        if policy is not DeletePolicy.MIRROR:
            self._keep_from(src, dst, f"gone from the source (delete = {policy.value!r})")
        return [Forget(src, "replaced by another file" if taken else "kept (delete = keep)")]

    def _keep_from(self, src: str, dst: str, why: str) -> None:
        """The copy of ``src`` (gone from the source) at ``dst`` is to stay: if another
        file of this plan claims that path, the copy goes into the trash before that file
        takes its place (:meth:`keep_replaced`), as when the two changes come in two passes."""
        if self.key(dst) in self.claimed:
            self.kept_copies[self.key(dst)] = f"the copy there is of {src!r}, {why}"

    def keep_replaced(
        self, moves: list[Move], transfers: list[Put | Adopt]
    ) -> tuple[list[Move], list[Put | Adopt]]:
        """``moves`` and ``transfers``, each one that writes over a copy :meth:`removals`
        keeps moving that copy into the trash first (an adopt writes nothing)."""
        if not self.kept_copies:
            return moves, transfers

        def why(action: Put | Move) -> str | None:
            return None if action.aside is not None else self.kept_copies.get(self.key(action.dst))

        moves = [m if why(m) is None else m._replace(aside=self._trash_path(m.dst)) for m in moves]
        transfers = [
            t
            if not isinstance(t, Put) or (w := why(t)) is None
            else t._replace(aside=self._trash_path(t.dst), keep=w)
            for t in transfers
        ]
        return moves, transfers

    def _removal(
        self, src: str, dst: str, why: str, forget: bool, policy: DeletePolicy | None = None
    ) -> Removal | None:
        """The removal of a copy as the delete policy (or ``policy``) has it, or None for
        the copy of a file gone from the source whose trash path the target refuses: the
        move would fail on every pass, naming the copy's own path, so the copy stays and
        the file is refused, saying what to do."""
        if (policy or self.settings.delete) is not DeletePolicy.TRASH:
            return Delete(src, dst, why, forget)
        trash = self._trash_path(dst)
        if forget and (unfit := refused_name(trash, self.caps)):
            self.refusals.append(Refuse(src, dst, _untrashable(trash, unfit)))
            return None
        return Trash(src, dst, trash, why, forget)

    def _leave_refused(self, stale: list[tuple[str, str, bool]]) -> list[tuple[str, str, bool]]:
        """The ``stale`` copies but those at a name the target refuses now: sent before it
        refused the name, they are left as they are, as what a delete or move of that name
        reaches is not known (WebDAV took 'a;b.pdf' for 'a'). The rows of such files gone
        from the source are forgotten, with a warning."""
        kept = []
        for src, dst, forget in stale:
            bad = refused_name(dst, self.caps)
            if bad is None:
                kept.append((src, dst, forget))
            elif forget:
                self.unfit[src] = f"removed from the source, but {bad} now: the copy sent before is {UNFIT_LEFT}"
        return kept

    def _held_by_others(self, stale: list[tuple[str, str, bool]], gone: list[str]) -> set[str]:
        """Keys of the ``stale`` target paths that a row staying in the index still holds.

        Only a target that ignores case needs asking: the index keeps one row per exact
        target path, but can hold 'Inv.pdf' and 'inv.pdf' for one file there (the row of
        the replaced file left behind by a failed pass), and deleting the one deletes the
        other.
        """
        if self.caps.case_sensitive or not stale:
            return set()
        keys = {self.key(dst) for _, dst, _ in stale}
        leaving = {*gone, *(src for src, _, _ in stale)}
        return {k for src, dst in self._targets() if src not in leaving and (k := self.key(dst)) in keys}


def _changed_there(row: IndexEntry, there: RemoteEntry) -> str | None:
    """How a listed target file differs from the copy the index says mirror put there."""
    if not there.size_is(row.size):
        return f"its size changed ({row.size} to {there.size} bytes)"
    if there.hash and row.remote_hash and there.hash != row.remote_hash:
        return "its content changed"
    return None


def _decide(
    src: str,
    dst: str,
    date: dt.date,
    entry: LocalEntry,
    known: IndexEntry | None,
    renamed_from: IndexEntry | None,
    remote: Mapping[str, RemoteEntry] | None,
    key: Callable[[str], str],
    settings: PlanSettings,
    theirs: bool = False,
    new_file: bool = False,
) -> Transfer | None:
    """What to do for one source file; ``theirs``: the index records the copy at ``dst``
    as another file's (one gone, whose path this file takes), or it is in doubt: its size
    and time tell nothing of this file, only its hash does. ``new_file``: a new file has
    the inode, size and time its row records (_Planner._new_file_at)."""
    caps = settings.caps
    there = None if remote is None else remote.get(key(dst))
    if known is not None and known.size == entry.size and known.mtime_ns == entry.mtime_ns:
        if new_file or not _unchanged(known, entry, settings.stable_inodes):
            return _replaced(src, dst, date, entry, known, remote, there, caps)
        if known.dst != dst:
            move = Move(src, known.dst, dst, entry, date, "layout changed")
            return _move_or_put(move, known, remote, key, caps, theirs)
        if remote is None or (there is not None and _same(entry, there, caps, known.remote_hash)):
            return None
        return Put(src, dst, entry, date, "missing on the target" if there is None else DIFFERS_THERE)
    if renamed_from is not None:
        why = f"renamed from {renamed_from.src!r}"
        move = Move(src, renamed_from.dst, dst, entry, date, why, renamed_from.src)
        return _move_or_put(move, renamed_from, remote, key, caps, theirs)
    reason = "changed" if known is not None else "new"
    if there is not None and there.size == entry.size:
        if (
            caps.mtime_settable
            and not theirs
            and there.mtime_ns is not None
            and caps.mtime_matches(there.mtime_ns, entry.mtime_ns)
        ):
            return Adopt(src, dst, entry, date, "already on the target (same size and time)", there.hash)
        if caps.hash_kind.value != "none" and there.hash:
            return Put(src, dst, entry, date, reason, unless_hash=there.hash)
    return Put(src, dst, entry, date, reason, unless_hash=_hash_of_copy(dst, entry, known, remote, caps))


def _hash_of_copy(
    dst: str,
    entry: LocalEntry,
    known: IndexEntry | None,
    remote: Mapping[str, RemoteEntry] | None,
    caps: Capabilities,
) -> str | None:
    """The hash the target gave for the copy the index has of a file that changed, when
    the file kept its size and path and no listing says otherwise: a file given a new
    time only (a restore that lost the times, a `touch`) is not sent again where one hash
    of it tells (a whole archive, to the cloud)."""
    if remote is not None or known is None or known.dst != dst or known.size != entry.size:
        return None
    return known.remote_hash if caps.hash_kind.value != "none" else None


def _move_or_put(
    move: Move,
    known: IndexEntry,
    remote: Mapping[str, RemoteEntry] | None,
    key: Callable[[str], str],
    caps: Capabilities,
    theirs: bool = False,
) -> Move | Put | Adopt:
    """``move``, of the copy the row ``known`` records, if that copy is still the file:
    without a listing the index is trusted; a listed target must hold it unchanged. Else
    the file is sent, unless it is at its new path already (a pass cut short after the
    move, before recording it), unless the copy there is another file's or in doubt
    (``theirs``, as for :func:`_decide`). A copy at a path the target refuses now is not
    moved: what a move of that name would reach is not known."""
    if refused_name(move.old_dst, caps) is not None:
        return Put(move.src, move.dst, move.entry, move.date, f"{move.reason}, from a path the target refuses now")
    if remote is None:
        return move._replace(remote_hash=known.remote_hash, gen=known.gen)
    there = remote.get(key(move.old_dst))
    if there is not None and _same(move.entry, there, caps, known.remote_hash):
        return move._replace(remote_hash=known.remote_hash, gen=known.gen)
    landed = remote.get(key(move.dst))
    if landed is not None and not theirs and _same(move.entry, landed, caps, known.remote_hash):
        return Adopt(move.src, move.dst, move.entry, move.date, "already at its new path", landed.hash)
    return Put(move.src, move.dst, move.entry, move.date, f"{move.reason}, and the old copy is missing or differs")


def _unchanged(known: IndexEntry, entry: LocalEntry, stable_inodes: bool) -> bool:
    """Whether the source file is the one the index row records: same size and mtime,
    and the same inode where the source keeps them (0 is an inode not known)."""
    if known.size != entry.size or known.mtime_ns != entry.mtime_ns:
        return False
    return not (stable_inodes and known.ino and entry.ino and known.ino != entry.ino)


class FirstDates:
    """The date a dated layout gave a file the index has no row of: its mtime's, unless
    the listing ``remote`` (by ``key``) shows its copy (same size and time) at its path
    under another date, not ``owned`` by a row, and nothing at the mtime's. The date a
    file was first mirrored lives in its row only: with the index lost, a file edited
    since (a 2024 invoice corrected in 2026) was sent again into 2026/, its 2024 copy
    left for good; and verify called it missing there."""

    def __init__(
        self,
        layout: Layout,
        remote: Mapping[str, RemoteEntry] | None,
        caps: Capabilities,
        key: Callable[[str], str],
        owned: Callable[[str], bool],
    ) -> None:
        self.layout, self.remote, self.caps, self.key, self.owned = layout, remote, caps, key, owned
        #: undated path -> (date, path) of the listing's files (built at the first question)
        self._dated: dict[str, list[tuple[dt.date, str]]] | None = None

    def of(self, src: str, entry: LocalEntry) -> dt.date:
        date = date_of(entry.mtime_ns)
        layout, remote = self.layout, self.remote
        if not remote or not self.caps.mtime_settable or not layout.dated:
            return date
        try:
            if self.key(layout.target_path(src, date)) in remote:
                return date
        except ItemError:
            return date
        if self._dated is None:
            self._dated = layout.dates_of(there.path for there in remote.values())
        for first, path in sorted(self._dated.get(layout.undated(src), ())):
            there = remote[self.key(path)]
            if (
                there.size == entry.size
                and there.mtime_ns is not None
                and self.caps.mtime_matches(there.mtime_ns, entry.mtime_ns)
                and layout.target_path(src, first) == path
                and not self.owned(self.key(path))
            ):
                return first
        return date


def _taken(dst: str, holder: str) -> str:
    """Why ``dst`` cannot be had: ``holder`` has it. Two names that read alike are two
    Unicode spellings of one (a Mac writes 'ü' as 'u' and an accent): told 'taken by'
    a name that looked the same, the user could not tell which to rename."""
    why = f"{dst!r} on the target is already taken by {holder!r}"
    composed = unicodedata.normalize("NFC", holder)
    if dst == holder or unicodedata.normalize("NFC", dst) != composed:
        return why  # the very same name (a flat layout's a/x.pdf and x.pdf), or another
    spelling = (
        "composed, as Windows and Linux write accents" if holder == composed else "decomposed, as a Mac does"
    )
    return f"{why}, the same name in another Unicode spelling ({spelling}); rename one of the two"


def newer_there(entry: LocalEntry, there: RemoteEntry, caps: Capabilities) -> str | None:
    """Why a file of the source file's size at its copy's path is not taken for its copy,
    if it is not: it is newer than the source's file, on a target that keeps times
    (someone's own, which a copy written over it would have destroyed without a trace)."""
    if not caps.mtime_settable or not there.size_is(entry.size) or there.mtime_ns is None:
        return None
    if there.mtime_ns > caps.kept_mtime(entry.mtime_ns) + OLDER_SLACK_NS:
        return f"the target's file is newer than the source's ({_ages(entry, there.mtime_ns, 'target')})"
    return None


def _ages(entry: LocalEntry, other_ns: int, other: str) -> str:
    """The source file's modification time and ``other``'s, to the minute, each named (two
    bare times read as swapped after 'the target's file is newer')."""

    def day(ns: int) -> str:
        return dt.datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M")

    return f"source {day(entry.mtime_ns)}, {other} {day(other_ns)}"


def _replaced(
    src: str,
    dst: str,
    date: dt.date,
    entry: LocalEntry,
    known: IndexEntry,
    remote: Mapping[str, RemoteEntry] | None,
    there: RemoteEntry | None,
    caps: Capabilities,
) -> Put:
    """Another file of the same size and mtime now stands at ``src`` (two files swapped
    by renames, or one copied over another with its times): its content may differ, so
    it is sent, unless the target's hash of what is there shows it equal."""
    target_hash = known.remote_hash if remote is None else there.hash if there is not None else None
    unless = target_hash if caps.hash_kind.value != "none" else None
    return Put(src, dst, entry, date, REPLACED, unless_hash=unless)


def _same(entry: LocalEntry, there: RemoteEntry, caps: Capabilities, known_hash: str | None) -> bool:
    """Whether the listed target file is still the one we put there."""
    if not there.size_is(entry.size):
        return False
    if known_hash and there.hash:
        return known_hash == there.hash
    if caps.mtime_settable and there.mtime_ns is not None:
        return caps.mtime_matches(there.mtime_ns, entry.mtime_ns)
    return True


def _by_identity(gone: Iterable[str], index: Mapping[str, IndexEntry]) -> dict[tuple[int, int, int], IndexEntry]:
    """The rows of the ``gone`` paths by (inode, size, mtime), by which a file renamed
    is known at its new path; rows without an inode are left out."""
    return {(row.ino, row.size, row.mtime_ns): row for row in map(index.__getitem__, gone) if row.ino}


def pending_count(changes: Mapping[str, LocalEntry | None], rows: Mapping[str, IndexEntry]) -> int:
    """How many files queued ``changes`` (path -> entry, None where gone) change on the
    target, with ``rows`` the index's rows of the gone paths: a file renamed (its row's
    inode, size and time at a new path) is one move, not a deletion and a send, and a
    folder gone, which has no row, is none (its files are queued one by one)."""
    arriving = {(e.ino, e.size, e.mtime_ns) for e in changes.values() if e is not None and e.ino}
    sends = sum(1 for e in changes.values() if e is not None)
    gone = [rows[p] for p, e in changes.items() if e is None and p in rows]
    return sends + sum(1 for row in gone if not (row.ino and (row.ino, row.size, row.mtime_ns) in arriving))


def renamed_away(
    rows: Iterable[IndexEntry], there: Iterable[tuple[str, LocalEntry, str]], stable_inodes: bool = True
) -> dict[str, tuple[str, str]]:
    """The ``rows`` (of files gone from their paths) whose file is one of ``there``:
    (path, entry, why it is not mirrored) of source files mirror does not send, by
    inode, size and mtime; by size and mtime alone where the source's inodes are not
    stable, or one is not known (a copy kept in doubt is the safe side). Each file is
    taken for one row at most, its own inode's first. Old path -> (path now, why)."""
    by_stamp: dict[tuple[int, int], list[tuple[int, str, str]]] = {}
    for path, entry, why in there:
        by_stamp.setdefault((entry.size, entry.mtime_ns), []).append((entry.ino, path, why))
    found: dict[str, tuple[str, str]] = {}
    if not by_stamp:
        return found
    rows = [row for row in rows if (row.size, row.mtime_ns) in by_stamp]

    def take(exact: bool) -> None:
        """Pair rows with files: of the same inode (``exact``), or where none tells."""
        for row in rows:
            files = by_stamp[(row.size, row.mtime_ns)]
            if row.src in found or not files:
                continue
            for at, (ino, path, why) in enumerate(files):
                told = stable_inodes and row.ino != 0 and ino != 0
                if (told and row.ino == ino) if exact else not told:
                    found[row.src] = (path, why)
                    del files[at]
                    break

    take(exact=True)
    take(exact=False)
    return found


def _digest(paths: list[str]) -> str | None:
    """Which paths, in a short name to record (None: no path)."""
    if not paths:
        return None
    return hashlib.sha256("\n".join(paths).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _guard(
    removals: list[Removal],
    managed: int,
    max_delete: int | None,
    source_empty: bool,
    base: int | None = None,
    unsendable: int = 0,
    by_patterns: bool = False,
    unsteady: float | None = None,
) -> tuple[str | None, list[Removal], int]:
    """Withhold destructive removals when the source looks gone or too much would go.
    The old copy of a file sent to its new path is not counted: the file stays on the
    target (removals only run once every transfer landed).

    ``base``: the mirrored files when the guard first withheld deletions, while it still
    withholds some. Until a plan of the whole source withholds nothing, the default limit
    is a tenth of that count, not half of today's: a source disk replaced and restored
    from the target a folder at a time, or written anew by the program, fell under half
    long before it was whole again, and the copies not yet restored were deleted from the
    very target they were being restored from. Nor do they go before the same ones have
    stood for the target's release_after (``unsteady``: they have not, and that is how
    long they must): the last tenth of such a restore was deleted before the restore got
    to it. A folder emptied and written anew (a nightly re-export) is whole again by
    then, and its few real deletions go.
    ``by_patterns``: the source is empty only as this target's patterns see it."""
    destructive = [r for r in removals if not isinstance(r, Forget) and r.forget]
    if not destructive:
        return None, removals, 0
    count = len(destructive)
    reason = None
    if source_empty:
        held = f"but the target holds {counted(managed, 'mirrored file')}"
        reason = f"the source folder is empty {held}"
        if unsendable:
            reason = f"the source folder holds no file mirror can send ({unsendable} left out) {held}"
        elif by_patterns:
            reason = (
                f"this target's include/exclude patterns take in no file of the source {held}; "
                "check the patterns in the config"
            )
    elif max_delete is not None and count > max_delete:
        reason = f"{counted(count, 'file')} would be deleted, more than max_delete = {max_delete}"
    elif max_delete is None and base is not None and count > 10 and count * RELEASE_SHARE > base:
        reason = (
            f"{count} files are still gone from the source since deletions were first withheld "
            f"({base} were mirrored then); they stay on the target until the source has them again, "
            f"or until a run with --max-delete {count} confirms they are meant to go"
        )
    elif max_delete is None and base is not None and unsteady is not None:
        reason = (
            f"{counted(count, 'file')} still gone from the source since deletions were first withheld; "
            f"they go once the source has stayed so for {human_duration(unsteady)} (release_after; a restore may "
            f"be under way), or at once with a run with --max-delete {count}"
        )
    elif max_delete is None and count > 10 and count * 2 > managed:
        reason = (
            f"{count} of {managed} mirrored files would be deleted (over half); "
            "raise max_delete (or --max-delete) if this is intended"
        )
    if reason is None:
        return None, removals, 0
    return reason, [r for r in removals if isinstance(r, Forget) or not r.forget], count
