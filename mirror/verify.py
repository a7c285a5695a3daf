"""Comparing a target with the source: what ``mirror verify`` reports."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from contextlib import suppress
from dataclasses import dataclass

from mirror.driver import Capabilities, RemoteEntry
from mirror.errors import ItemError
from mirror.hashing import HashKind
from mirror.index import IndexEntry
from mirror.layout import NAMED, Layout, date_of
from mirror.paths import in_trash, is_temp, path_key
from mirror.plan import FirstDates, refusal, refused_name, renamed_away
from mirror.policy import DeletePolicy
from mirror.scan import LocalEntry, Skip


@dataclass(frozen=True)
class Difference:
    src: str
    dst: str | None
    problem: str
    #: a pass that lists the target (--rescan) sends the file anew: a run that trusts the
    #: index has nothing to do, and said "0 sent" while verify said it was missing
    resent: bool = False


def compare(
    local: Mapping[str, LocalEntry],
    index: Mapping[str, IndexEntry],
    remote: Mapping[str, RemoteEntry],
    layout: Layout,
    delete: DeletePolicy,
    caps: Capabilities,
    local_hash: Callable[[str], str | None],
    unreadable: Collection[str] = (),
    left_out: Collection[Skip] = (),
    stable_inodes: bool = True,
    excluded: Collection[str] = (),
) -> list[Difference]:
    """Every way the target differs from what the source says it should hold.
    ``unreadable``: source files and folders the scan could not read; what the index
    holds below them is not known to be gone, so it is reported as not compared.
    ``left_out``: source files the scan found and no target can take as they are
    (:attr:`Skip.fix`): not on this target either, as a name it refuses is not. A file
    mirrored before and renamed to one of those, or to a path this target refuses, is
    named with the copy of its old name, which stays (as the planner keeps it).
    ``excluded``: source files this target's patterns leave out (not in ``local``)."""
    key = path_key(caps.case_sensitive)
    there = {key(p): r for p, r in remote.items()}
    first = _first_dates(index, there, layout, caps, key)
    # two source files can want one target path (the flat layout, or names that differ
    # only in case on a target that ignores case): the one with the row holds it, and of
    # two rows there (written before the target's case was known) the first in path order,
    # as the planner judges it
    holders: dict[str, str] = {}
    for src, row in sorted(index.items()):
        if src in local and refused_name(row.dst, caps) is None:
            holders.setdefault(key(row.dst), src)
    found = [Difference(skip.path, None, f"not mirrored: {skip.reason}; {skip.fix}") for skip in left_out]
    #: (path, entry, why) of the source files that are not mirrored
    refused = [(skip.path, skip.entry, skip.reason) for skip in left_out if skip.entry is not None]
    for src, entry in sorted(local.items()):
        known = index.get(src)
        try:
            dst = _placed(src, entry, known, layout, first)
        except ItemError as exc:
            found.append(Difference(src, None, f"not mirrored: {exc}"))
            refused.append((src, entry, str(exc)))
            continue
        # the target's rules of today, whoever sent the file (an older mirror sent names
        # the target refuses now, and the file it holds may be under another name)
        if why := refused_name(dst, caps):
            found.append(Difference(src, dst, f"not mirrored: {why}"))
            refused.append((src, entry, why))
            continue
        holder = holders.get(key(dst), src)
        if holder != src:
            found.append(Difference(src, dst, f"not mirrored: {holder!r} holds that target path"))
            refused.append((src, entry, f"{holder!r} holds that target path"))
            continue
        r = there.get(key(dst))
        if r is None:
            # as the planner judges it: a size the target took before is not refused now
            why = None if known is not None and known.dst == dst else refusal(dst, entry.size, caps)
            problem = f"not mirrored: {why}" if why else "missing on the target"
            found.append(Difference(src, dst, problem, resent=not why))
            if why:
                refused.append((src, entry, why))
        elif not r.size_is(entry.size):
            found.append(Difference(src, dst, f"size differs (source {entry.size}, target {r.size})", resent=True))
        elif caps.hash_kind is not HashKind.NONE and r.hash:
            if local_hash(src) != r.hash:
                found.append(Difference(src, dst, "content differs (hash)", resent=True))
        elif caps.mtime_settable and r.mtime_ns is not None and not caps.mtime_matches(r.mtime_ns, entry.mtime_ns):
            found.append(Difference(src, dst, "modification time differs", resent=True))
    found.sort(key=lambda diff: diff.src)
    renamed = renamed_away((row for src, row in index.items() if src not in local), refused, stable_inodes)
    return found + _not_in_source(local, index, there, key, delete, unreadable, renamed, excluded)


def _not_in_source(
    local: Mapping[str, LocalEntry],
    index: Mapping[str, IndexEntry],
    there: Collection[str],
    key: Callable[[str], str],
    delete: DeletePolicy,
    unreadable: Collection[str],
    renamed: Mapping[str, tuple[str, str]],
    excluded: Collection[str],
) -> list[Difference]:
    """What the scan did not find: files removed but still on the target, files renamed
    to a path that is not mirrored (``renamed``: old path -> (path now, why)), whose copy
    stays, and what it could not read, mirrored before (not compared) or never (not
    mirrored)."""
    found: list[Difference] = []
    held = tuple(f"{u}/" for u in unreadable if u)
    for src, known in sorted(index.items()):
        if src in local:
            continue
        if "" in unreadable or src in unreadable or src.startswith(held):
            found.append(Difference(src, known.dst, "cannot be read in the source, so it was not compared"))
        elif src in renamed and key(known.dst) in there:
            now, why = renamed[src]
            found.append(
                Difference(
                    src,
                    known.dst,
                    f"renamed in the source to {now}, which is not mirrored ({why}); "
                    "the copy of its old name stays on the target until the file can be mirrored",
                )
            )
        elif delete is not DeletePolicy.KEEP and key(known.dst) in there:
            # under trash too: a removed file's copy goes into the trash, and one still at
            # its path (a deletion withheld, a move into the trash that failed) differs
            # told apart: 'removed' made a user look for a file that is there
            gone = "left out by this target's patterns" if src in excluded else "removed from the source"
            found.append(Difference(src, known.dst, f"{gone} but still on the target"))
    for path in sorted(unreadable):
        if not any(src == path or src.startswith(f"{path}/") or not path for src in index):
            found.append(Difference(path or ".", None, "cannot be read in the source, so it is not mirrored"))
    return found


def accounted_for(
    local: Mapping[str, LocalEntry],
    index: Mapping[str, IndexEntry],
    layout: Layout,
    remote: Mapping[str, RemoteEntry],
    caps: Capabilities,
) -> set[str]:
    """The target paths the source's files belong at, and those the index holds."""
    paths = {row.dst for row in index.values()}
    key = path_key(caps.case_sensitive)
    first = _first_dates(index, {key(p): r for p, r in remote.items()}, layout, caps, key)
    for src, entry in local.items():
        try:
            paths.add(_placed(src, entry, index.get(src), layout, first))
        except ItemError:
            continue  # no path on the target: nothing there it could account for
    return paths


def others(remote: Mapping[str, RemoteEntry], accounted: set[str], caps: Capabilities) -> list[str]:
    """Files on the target that nothing in ``accounted`` (:func:`accounted_for`) covers:
    put there by someone else, or kept after their source went (``delete = "keep"``).
    mirror leaves them alone, and a target holding them is still a faithful mirror; but
    a user asking whether the target is identical should hear of them."""
    key = path_key(caps.case_sensitive)
    accounted = {key(p) for p in accounted}
    return sorted(p for p in remote if key(p) not in accounted and not in_trash(p) and not is_temp(p))


def uploads(remote: Mapping[str, RemoteEntry]) -> list[str]:
    """mirror's own temp files on the target: uploads under way, or left by a run that
    was stopped (the next run removes those). Not someone else's files."""
    return sorted(p for p in remote if is_temp(p))


def compared(caps: Capabilities, remote: Mapping[str, RemoteEntry], accounted: set[str]) -> str:
    """What a verify of a target with ``caps`` compared, for its verdict: sizes and hashes
    only as far as the target told them for the files ``accounted`` (:func:`accounted_for`)."""
    key = path_key(caps.case_sensitive)
    wanted = {key(p) for p in accounted}
    files = [r for p, r in remote.items() if key(p) in wanted]
    told = _compared(caps, files)
    untold = sum(1 for r in files if r.size is None)
    if untold:
        return f"{told}; the target told no size for {untold} of {len(files)} files: those were only found there"
    return told


def _compared(caps: Capabilities, files: list[RemoteEntry]) -> str:
    """:func:`compared`, of the target's ``files`` that verify accounted for."""
    hashed = sum(1 for r in files if r.hash) if caps.hash_kind is not HashKind.NONE else 0
    what = ["sizes"]
    if caps.mtime_settable:
        what.append("times")
    if files and hashed == len(files):
        what.append("hashes")
    told = " and ".join(what) + " compared"
    if 0 < hashed < len(files):
        return f"{told}, and hashes of {hashed} of {len(files)} files: the target reported none for the others"
    if len(what) > 1:
        return told
    if caps.hash_kind is not HashKind.NONE and files:
        return f"{told}: this target keeps no times and reported no hashes"
    return f"{told}: this target keeps no times and offers no hashes"


def layout_of(index: Mapping[str, IndexEntry], first: Layout) -> Layout | None:
    """The named layout that put most of the index's files where its rows say they are,
    ``first`` when it does as well as any (a file at the top is where ``tree`` and
    ``flat`` both put it); None when none placed more than half of them (a template).
    For an index that records no layout: an older mirror's."""
    candidates = [first, *(Layout(t) for t in NAMED.values() if t != first.template)]
    placed = dict.fromkeys(candidates, 0)
    for row in index.values():
        for layout in candidates:
            with suppress(ItemError):
                placed[layout] += layout.target_path(row.src, row.date) == row.dst
    best = max(candidates, key=lambda layout: placed[layout])  # the first of equals
    return best if placed[best] * 2 > len(index) else None


def layout_on(
    local: Mapping[str, LocalEntry], remote: Mapping[str, RemoteEntry], first: Layout
) -> tuple[Layout, int]:
    """The named layout that puts most source files where the target holds a file of
    their size, ``first`` when it does as well as any, and how many it puts there; for a
    target whose index this state folder does not hold (a new machine, a check from
    another account). Only ``first`` is tried when it places over half of them."""
    placed = _found_in(local, remote, first)
    if placed * 2 > len(local):
        return first, placed
    best = (first, placed)
    for template in NAMED.values():
        if template != first.template and (count := _found_in(local, remote, Layout(template))) > best[1]:
            best = (Layout(template), count)
    return best


def _found_in(local: Mapping[str, LocalEntry], remote: Mapping[str, RemoteEntry], layout: Layout) -> int:
    found = 0
    for src, entry in local.items():
        with suppress(ItemError):
            there = remote.get(layout.target_path(src, date_of(entry.mtime_ns)))
            found += there is not None and there.size_is(entry.size)
    return found


def _placed(src: str, entry: LocalEntry, known: IndexEntry | None, layout: Layout, first: FirstDates) -> str:
    """Where ``src`` belongs on the target (ItemError: its layout gives no safe path):
    at the date of its row, else at the one its copy there was given, as mirror run
    judges it (without an index, a 2024 invoice corrected in 2026 was called missing in
    2026/, its copy in 2024/ someone else's file)."""
    return layout.target_path(src, known.date if known else first.of(src, entry))


def _first_dates(
    index: Mapping[str, IndexEntry],
    there: Mapping[str, RemoteEntry],
    layout: Layout,
    caps: Capabilities,
    key: Callable[[str], str],
) -> FirstDates:
    owned = {key(row.dst) for row in index.values()}
    return FirstDates(layout, there, caps, key, owned.__contains__)
