"""The planner, property-tested: plans applied by the real executor to a memory target
reproduce the source under the layout, planning again yields nothing, nothing outside
the target root is touched, and the deletion guard holds."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import shutil
import tempfile
import threading
import unicodedata
import uuid
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from backends.dropbox import DropboxDriver, check_name
from backends.local import LocalDriver
from backends.memory import MemoryDriver
from backends.onedrive import OneDriveDriver
from backends.onedrive import refusal as onedrive_refusal
from mirror.driver import Capabilities, Driver, RemoteEntry
from mirror.errors import ItemError
from mirror.execute import Executor
from mirror.filters import Filter
from mirror.hashing import HashKind
from mirror.index import Index, IndexEntry
from mirror.layout import Layout, date_of
from mirror.paths import ancestors, path_key
from mirror.plan import (
    Adopt,
    Delete,
    Forget,
    KnownFiles,
    Move,
    Plan,
    PlanSettings,
    Put,
    Refuse,
    Renamed,
    Trash,
    narrow,
    plan,
    refused_name,
)
from mirror.policy import DeletePolicy
from mirror.scan import Entries, LocalEntry, scan
from mirror.source_files import generation_of

NAME_CHARS = st.sampled_from([*list("abcXYZ019 _-.#%[]*?é中"), "́"])
names = st.text(NAME_CHARS, min_size=1, max_size=8).filter(lambda n: n not in (".", "..") and n.strip("."))
paths = st.lists(names, min_size=1, max_size=3).map("/".join)
layouts = st.sampled_from(["tree", "flat", "by-year", "by-month", "{year}/{stem}{suffix}", "x/{parent}/{name}"])


def _prefix_free(rels: list[str]) -> list[str]:
    """Drop paths that are a folder of another path (a name cannot be both)."""
    chosen: list[str] = []
    for rel in rels:
        parts = rel.split("/")
        prefixes = {"/".join(parts[:i]) for i in range(1, len(parts))}
        if rel in chosen or prefixes & set(chosen) or any(c.startswith(rel + "/") for c in chosen):
            continue
        chosen.append(rel)
    return chosen


trees = st.lists(st.tuples(paths, st.binary(max_size=40)), max_size=12).map(
    lambda items: dict((p, data) for p, data in items if p in _prefix_free([q for q, _ in items]))
)


class BatchingMemoryDriver(MemoryDriver):
    """Takes small files three at a time, through the Driver's own send_batch."""

    batch_files = 3


class FoldingMemoryDriver(MemoryDriver):
    """A memory target that takes names as a share that ignores case does: 'Inv.pdf' and
    'inv.pdf' (or a name's two Unicode spellings) are one file, whatever mirror thinks."""

    def full(self, rel: str) -> str:
        return super().full(unicodedata.normalize("NFC", rel).casefold())


class Rig:
    """A real source folder, a memory target, an index and an executor."""

    def __init__(
        self, base: Path, caps: Capabilities | None = None, batched: bool = False, disk: bool = False
    ) -> None:
        self.source = base / "src"
        self.source.mkdir()
        self.root = f"/rig-{uuid.uuid4().hex}"
        self.driver: Driver
        if disk:
            # a real folder: a file where a folder must go (or the reverse) fails, as on
            # every real target; fsspec's memory filesystem lets a name be both
            self.root = str(base / "target")
            self.driver = LocalDriver(None, self.root, None)
        else:
            if batched:
                # batches are for targets that upload to a temp name and rename it into place
                caps = dataclasses.replace(caps or MemoryDriver.capabilities, atomic_rename=True)
            driver_class = BatchingMemoryDriver if batched else MemoryDriver
            self.driver = driver_class(fsspec.filesystem("memory"), self.root, caps)
        self.index = Index(base / "index.sqlite")
        self.executor = Executor(self.driver, self.index, self.source, 3, threading.Event())

    def write(self, tree: dict[str, bytes]) -> None:
        for rel, data in tree.items():
            path = self.source / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def local(self) -> dict[str, LocalEntry]:
        return scan(self.source, Filter()).entries

    def generation(self, rel: str) -> int:
        """A source file's inode generation, as the runner asks it of a plan."""
        return generation_of(str(self.source), rel)

    def settings(self, layout: str, delete: DeletePolicy = DeletePolicy.MIRROR, max_delete: int | None = None):
        return PlanSettings(Layout.parse(layout), delete, self.driver.caps, max_delete, dt.date(2026, 1, 2))

    def target(self) -> dict[str, bytes]:
        if isinstance(self.driver, LocalDriver):
            return {rel: Path(self.root, rel).read_bytes() for rel in self.driver.list()}
        fs = self.driver.fs
        return {rel: fs.cat_file(f"{self.root}/{rel}") for rel in self.driver.list()}

    def close(self) -> None:
        self.index.close()


@pytest.fixture
def base() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp())
    yield folder
    shutil.rmtree(folder)


def _store_keys_outside(root: str) -> set[str]:
    fs = fsspec.filesystem("memory")
    keys = set(fs.store) | set(fs.pseudo_dirs)
    return {k for k in keys if k and not (k == root or k.startswith(root + "/"))}


def expected(tree: dict[str, bytes], layout: str, refused: set[str], rig: Rig) -> dict[str, bytes]:
    lay = Layout.parse(layout)
    local = rig.local()
    return {
        lay.target_path(rel, date_of(local[rel].mtime_ns)): data
        for rel, data in tree.items()
        if rel not in refused
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=trees, layout=layouts, batched=st.booleans())
def test_first_copy_reproduces_the_source_and_a_second_plan_is_empty(
    tree: dict[str, bytes], layout: str, batched: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rig = Rig(Path(tmp), batched=batched)
        outside_before = _store_keys_outside(rig.root)
        rig.write(tree)
        first = plan(rig.local(), {}, rig.settings(layout), remote={})
        stats = rig.executor.run(first)
        refused = {r.src for r in first.refusals}
        # only genuine collisions of the layout are refused, each naming who holds the path
        assert all("already taken" in r.reason for r in first.refusals)
        assert len(refused) == len(tree) - len(
            {Layout.parse(layout).target_path(p, date_of(e.mtime_ns)) for p, e in rig.local().items()}
        )
        assert stats.uploaded == len(tree) - len(refused)
        assert rig.target() == expected(tree, layout, refused, rig)
        again = plan(rig.local(), rig.index.entries(), rig.settings(layout), remote=rig.driver.list())
        assert again.transfers == again.moves == again.removals == ()
        assert {r.src for r in again.refusals} == refused
        assert _store_keys_outside(rig.root) == outside_before
        rig.close()


@settings(max_examples=80, deadline=None)
@given(
    tree=trees,
    others=trees,
    taken=st.lists(st.sampled_from(["other size", "same size", "none"]), max_size=12),
    layout=layouts,
    listed=st.booleans(),
    disk=st.booleans(),
)
def test_someone_else_s_files_on_the_target_are_never_lost(
    tree: dict[str, bytes], others: dict[str, bytes], taken: list[str], layout: str, listed: bool, disk: bool
) -> None:
    """Files mirror did not put on the target stay, or go into the trash whole where a
    source file of another size takes their place (found by a listing, or asked for);
    one of the same size is taken for the source file's copy."""
    with tempfile.TemporaryDirectory() as tmp:
        rig = Rig(Path(tmp), disk=disk)
        rig.write(tree)
        lay, local = Layout.parse(layout), rig.local()
        theirs = {p: b"theirs: " + d for p, d in others.items()}
        for (src, data), how in zip(sorted(tree.items()), taken, strict=False):
            dst = lay.target_path(src, date_of(local[src].mtime_ns))
            if how != "none":
                theirs[dst] = b"T" * len(data) if how == "same size" else b"theirs: " + data
        placed: dict[str, bytes] = {}
        for rel, data in sorted(theirs.items()):
            with contextlib.suppress(OSError, ItemError):  # a name another of theirs holds as a file
                rig.driver.makedirs(rel.rpartition("/")[0])
                if rig.driver.stat(rel) is None and rel not in placed:
                    copy = Path(tmp) / "theirs"
                    copy.write_bytes(data)
                    rig.driver.put(str(copy), rel, 0)
                    placed[rel] = data
        remote = rig.driver.list() if listed else None
        rig.executor.run(plan(rig.local(), {}, rig.settings(layout), remote=remote))
        after = rig.target()
        trashed = {p.split("/", 2)[2]: d for p, d in after.items() if p.startswith(".mirror-trash/")}
        for rel, data in placed.items():
            kept = after.get(rel) == data or trashed.get(rel) == data
            taken_over = rel in after and len(after[rel]) == len(data)
            assert kept or taken_over, (rel, data, after)
        rig.close()


edits = st.lists(
    st.tuples(st.sampled_from(["delete", "edit", "rename", "add", "replace"]), st.integers(0, 50), paths),
    max_size=6,
)


@settings(max_examples=60, deadline=None)
# a rename that keeps its target path (flat: 0/00 -> 00) once deleted the target's copy
@example(
    tree={"0/00": b""},
    layout="flat",
    changes=[("rename", 0, "00")],
    incremental=False,
    hold=False,
    relayout=False,
    batched=False,
    folded=False,
    disk=False,
    listed=False,
)
# a new layout that puts a file below its own old path (2026/0 -> 2026/0/0/0) once failed every pass
@example(
    tree={"0/0/0": b""},
    layout="{year}/{stem}{suffix}",
    changes=[],
    incremental=False,
    hold=False,
    relayout=True,
    batched=False,
    folded=False,
    disk=True,
    listed=False,
)
# a file renamed to a path another file holds (flat: c/y -> b/x, where a/x holds x) is
# refused there, and its copy y stays: it is still in the source
@example(
    tree={"a/x": b"a", "c/y": b"c"},
    layout="flat",
    changes=[("rename", 1, "b/x")],
    incremental=False,
    hold=False,
    relayout=False,
    batched=False,
    folded=False,
    disk=False,
    listed=False,
)
# a new layout where one file's old path is another's new folder once failed a pass
# (2026/1%0X%X?0 leaves for 2026/a?9%[/X*́/1%0X%X?0 while 2026/1%0X%X?0/?/... arrives)
@example(
    tree={"a?9%[/X*́/1%0X%X?0": b"\xf1", "1%0X%X?0/?/1_é1.0?_": b"\x94", "́[/#́/?": b"r"},
    layout="{year}/{stem}{suffix}",
    changes=[],
    incremental=False,
    hold=True,
    relayout=True,
    batched=False,
    folded=False,
    disk=True,
    listed=False,
)
# a new file taking a gone file's target path, of its size and time (flat: a/x gone, b/x
# made with cp -p): a listing pass took the gone file's copy there for the new file's
@example(
    tree={"a/x": b"a"},
    layout="flat",
    changes=[("replace", 0, "b/x")],
    incremental=False,
    hold=False,
    relayout=False,
    batched=False,
    folded=False,
    disk=True,
    listed=True,
)
@given(
    tree=trees,
    layout=layouts,
    changes=edits,
    incremental=st.booleans(),
    hold=st.booleans(),
    relayout=st.booleans(),
    batched=st.booleans(),
    folded=st.booleans(),
    disk=st.booleans(),
    listed=st.booleans(),
)
def test_after_edits_the_target_follows_the_source(
    tree: dict[str, bytes],
    layout: str,
    changes: list[tuple[str, int, str]],
    incremental: bool,
    hold: bool,
    relayout: bool,
    batched: bool,
    folded: bool,
    disk: bool,
    listed: bool,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        caps = Capabilities(server_side_move=True, case_sensitive=not folded)
        # a folder here matches names exactly: a target that ignores case stays in memory
        rig = Rig(Path(tmp), caps, batched=batched, disk=disk and not folded)
        rig.write(tree)
        rig.executor.run(plan(rig.local(), {}, rig.settings(layout), remote={}))
        current = dict(tree)
        touched: set[str] = set()

        def free(new: str) -> bool:
            """``new`` can be created: no file or folder there, no file above it."""
            parts = new.split("/")
            above = ("/".join(parts[:i]) for i in range(1, len(parts)))
            return not (rig.source / new).exists() and not any((rig.source / a).is_file() for a in above)

        for kind, n, new in changes:
            existing = sorted(current)
            if kind == "add" or not existing:
                if free(new):
                    current[new] = b"added %d" % n
                    rig.write({new: current[new]})
                    touched.add(new)
                continue
            rel = existing[n % len(existing)]
            if kind == "delete":
                del current[rel]
                os.unlink(rig.source / rel)
            elif kind == "edit":
                current[rel] = current[rel] + b"+edit"
                rig.write({rel: current[rel]})
            elif kind == "replace" and free(new) and new not in tree:
                # another file made in a deleted one's place: ext4 hands it the inode
                # freed, and it gets the same size and time (cp -p, an unzip). Not at a
                # path the index holds: there a file of the row's inode, size and time is
                # the row's file (the quick check rsync makes too; README, "changed")
                was = (rig.source / rel).stat()
                current[new] = bytes(b ^ 1 for b in current.pop(rel))
                os.unlink(rig.source / rel)
                rig.write({new: current[new]})
                os.utime(rig.source / new, ns=(was.st_mtime_ns, was.st_mtime_ns))
                touched.add(new)
            elif kind == "rename" and free(new):
                (rig.source / new).parent.mkdir(parents=True, exist_ok=True)
                os.rename(rig.source / rel, rig.source / new)
                current[new] = current.pop(rel)
                touched.add(new)
            touched.add(rel)
        local = rig.local()
        settings_ = rig.settings("by-year" if relayout else layout, max_delete=1000)
        # a new layout is only ever met by a full pass (the first of every run); a scoped
        # pass would leave unchanged files at their old paths, where a changed file's new
        # path may need them gone
        if incremental and not relayout:
            # as the engine does: the changed paths plus the items that failed before
            touched |= {f.src for f in rig.index.failures()}
            mine = {p: e for p, e in local.items() if p in touched}
            step = plan(
                mine, rig.index.entries(), settings_, scope=touched, hold_gone=hold, generation=rig.generation
            )
            asked = known_files(rig, touched, touched, rig.index.count())
            assert same_plan(
                plan(mine, asked, settings_, scope=touched, hold_gone=hold, generation=rig.generation), step
            )
        elif listed:
            # a pass that lists the target (--rescan, each rescan_interval, after a crash)
            step = plan(local, rig.index.entries(), settings_, remote=rig.driver.list(), generation=rig.generation)
        else:
            step = plan(local, rig.index.entries(), settings_, generation=rig.generation)
            assert same_plan(narrowed_plan(rig, local, settings_), step)
        stats = rig.executor.run(step)
        if step.held:
            # as the engine does once the source stops losing files: the held paths again
            released = set(step.held)
            later = plan(
                {p: e for p, e in local.items() if p in released},
                rig.index.entries(),
                settings_,
                scope=released,
                generation=rig.generation,
            )
            stats.failed += rig.executor.run(later).failed
            step = dataclasses.replace(
                step,
                guard=step.guard or later.guard,
                withheld=step.withheld + later.withheld,
                renamed=step.renamed + later.renamed,
            )
        assert not [f for f in stats.failed if "already taken" not in f[1] and "clashes" not in f[1]]
        refused = {f.src for f in rig.index.failures()}
        # what the index says we manage is exactly what the target holds, byte for byte
        index = rig.index.entries()
        target = rig.target()
        kept = set(index) - set(current)
        # a file renamed to a path refused it is still in the source: its copy stays, as it was
        renamed = {r.src: r.now for r in step.renamed}
        assert {src: target[index[src].dst] for src in renamed} == {s: current[n] for s, n in renamed.items()}
        assert set(renamed) <= refused | kept and set(renamed.values()) <= refused
        if step.guard:
            # the guard withheld deletions: the removed files stay, and stay managed
            assert kept and step.withheld
        else:
            assert kept == set(renamed)
        assert {e.dst: current[e.src] for e in index.values() if e.src in current} == {
            dst: data for dst, data in target.items() if dst not in {index[s].dst for s in kept}
        }
        assert set(index) - kept == set(current) - refused
        rig.close()


def narrowed_plan(rig: Rig, local: dict[str, LocalEntry], settings_: PlanSettings) -> Plan:
    """The plan as the engine makes it for a full pass: unchanged rows only counted."""
    kept, scope, total = narrow(Entries(local.items()), rig.index.stamps(), settings_.layout)
    known = known_files(rig, kept, scope, total)
    return plan(local, known, settings_, scope=scope, source_empty=not local, generation=rig.generation)


def known_files(rig: Rig, kept: Collection[str], scope: Collection[str], total: int) -> KnownFiles:
    """The index as the engine hands it to a plan: asked, not read whole."""
    index = rig.index
    loaded = index.lookup_many(kept)
    return KnownFiles(
        loaded, scope, total, index.rows, index.lookup, index.targets, index.holders, index.held_below
    )


def same_plan(a: Plan, b: Plan) -> bool:
    """Equal up to the order refusals are reported in."""

    def order(r: Refuse) -> tuple[str, str, str]:
        return (r.src, r.dst or "", r.reason)

    return dataclasses.replace(a, refusals=tuple(sorted(a.refusals, key=order))) == dataclasses.replace(
        b, refusals=tuple(sorted(b.refusals, key=order))
    )


def entry(path: str, size: int = 1, mtime_ns: int = 1_700_000_000 * 10**9, ino: int = 0) -> LocalEntry:
    return LocalEntry(path, size, mtime_ns, ino)


def known(path: str, dst: str | None = None, size: int = 1, ino: int = 0) -> IndexEntry:
    return IndexEntry(path, dst or path, size, 1_700_000_000 * 10**9, ino, dt.date(2023, 11, 14))


SETTINGS = PlanSettings(Layout.parse("tree"), DeletePolicy.MIRROR, Capabilities(), None)


def test_guard_withholds_deletes_when_the_source_is_empty() -> None:
    index = {f"f{i}": known(f"f{i}") for i in range(3)}
    result = plan({}, index, SETTINGS)
    assert result.removals == () and result.withheld == 3
    assert "empty" in (result.guard or "")


def test_guard_names_the_patterns_when_they_take_in_no_file_of_the_source() -> None:
    """include = ["*.PDF"] for files named *.pdf: "the source folder is empty" sent the
    user looking for a disk not mounted."""
    index = {f"inv{i}.pdf": known(f"inv{i}.pdf") for i in range(3)}
    result = plan({}, index, SETTINGS, excluded=lambda src: src.endswith(".pdf"))
    assert result.removals == () and result.withheld == 3
    assert "include/exclude patterns take in no file" in (result.guard or "")
    emptied = plan({}, index, SETTINGS, excluded=lambda src: False)
    assert "the source folder is empty" in (emptied.guard or "")


def test_guard_withholds_deleting_more_than_half_by_default_and_honours_max_delete() -> None:
    index = {f"f{i}": known(f"f{i}") for i in range(30)}
    local = {f"f{i}": entry(f"f{i}") for i in range(14)}
    result = plan(local, index, SETTINGS)
    assert result.removals == () and result.withheld == 16 and "half" in (result.guard or "")
    allowed = plan(local, index, PlanSettings(SETTINGS.layout, DeletePolicy.MIRROR, Capabilities(), 20))
    assert len([r for r in allowed.removals if isinstance(r, Delete)]) == 16 and allowed.guard is None
    fewer = plan({f"f{i}": entry(f"f{i}") for i in range(20)}, index, SETTINGS)
    assert len(fewer.removals) == 10 and fewer.guard is None


def test_guard_counts_one_file_as_one() -> None:
    """It said '1 files would be deleted, more than max_delete = 0'."""
    index = {"f0": known("f0"), "f1": known("f1")}
    one_gone = plan({"f1": entry("f1")}, index, dataclasses.replace(SETTINGS, max_delete=0))
    assert one_gone.guard == "1 file would be deleted, more than max_delete = 0"
    emptied = plan({}, {"f0": known("f0")}, SETTINGS)
    assert emptied.guard == "the source folder is empty but the target holds 1 mirrored file"
    # the only file renamed to a name that cannot be sent (not UTF-8): there, not empty
    renamed = plan({}, {"f0": known("f0")}, SETTINGS, unsendable=1)
    assert renamed.removals == () and renamed.guard == (
        "the source folder holds no file mirror can send (1 left out) but the target holds 1 mirrored file"
    )


def test_old_copies_of_files_sent_to_a_new_layout_do_not_count_as_deletions() -> None:
    """Files edited while the layout changed are sent to their new paths and their old
    copies removed: no file leaves the target, so the guard has nothing to withhold."""
    index = {f"f{i}": known(f"f{i}") for i in range(20)}
    local = {src: entry(src, size=2) for src in index}
    by_year = dataclasses.replace(SETTINGS, layout=Layout.parse("by-year"))
    relaid = plan(local, index, by_year)
    assert relaid.guard is None and relaid.withheld == 0
    assert len(relaid.transfers) == 20 and {r.dst for r in relaid.removals} == set(index)
    # with a file gone from the source too, the guard judges that one alone
    del local["f0"]
    relaid = plan(local, index, dataclasses.replace(by_year, max_delete=0))
    assert relaid.withheld == 1 and {r.dst for r in relaid.removals} == set(index) - {"f0"}


def test_held_deletions_wait_and_the_guard_judges_them_with_the_rest() -> None:
    # watch mode: deletions of files gone from the source wait for a later plan
    index = {f"f{i}": known(f"f{i}") for i in range(30)}
    index["old.pdf"] = known("old.pdf", ino=7)
    local = {f"f{i}": entry(f"f{i}") for i in range(6, 30)} | {"new.pdf": entry("new.pdf", ino=7)}
    caps = Capabilities(server_side_move=True)
    settings = PlanSettings(SETTINGS.layout, DeletePolicy.MIRROR, caps)
    step = [*(f"f{i}" for i in range(6)), "old.pdf", "new.pdf"]
    held = plan(local, index, settings, scope=step, hold_gone=True)
    assert held.removals == () and held.guard is None
    assert sorted(held.held) == [f"f{i}" for i in range(6)]
    assert [(m.old_dst, m.dst) for m in held.moves] == [("old.pdf", "new.pdf")]  # renames still move
    # 6 more gone: judged alone, still under half; judged with the held 6, over half
    for i in range(6, 18):
        local.pop(f"f{i}")
    later = plan(local, index, settings, scope=[f"f{i}" for i in range(18)])
    assert later.removals == () and later.withheld == 18 and "over half" in (later.guard or "")


def test_once_the_guard_withheld_deletions_a_source_restored_part_way_loses_nothing() -> None:
    """A source disk replaced and restored from the target a year at a time: past half,
    the files not yet restored were deleted from the very target they came from."""
    index = {f"{year}/f{i}": known(f"{year}/f{i}") for year in range(5) for i in range(20)}
    empty = plan({}, index, SETTINGS)
    assert empty.withheld == 100 and empty.guard_base == 100
    restored = {src: entry(src) for src in index if not src.startswith(("3/", "4/"))}  # 3 of 5 years
    assert plan(restored, index, SETTINGS).guard is None  # without the memory: 40 of 100 go
    tripped = dataclasses.replace(SETTINGS, guard_base=empty.guard_base)
    part_way = plan(restored, index, tripped)
    assert part_way.removals == () and part_way.withheld == 40 and "--max-delete 40" in (part_way.guard or "")
    assert part_way.guard_base == 100
    # new files the program writes meanwhile never outvote the missing ones
    busy = restored | {f"new/f{i}": entry(f"new/f{i}") for i in range(200)}
    assert plan(busy, index, tripped).withheld == 40
    # a run that confirms with --max-delete lets them go, and the guard is at rest again
    confirmed = plan(restored, index, dataclasses.replace(tripped, max_delete=40))
    assert len(confirmed.removals) == 40 and confirmed.guard is None and confirmed.guard_base is None


def test_a_folder_written_anew_after_the_guard_withheld_lets_its_few_deletions_go() -> None:
    """A nightly re-export empties the folder first: once it is written again, only its
    real deletions remain, and they go once they have stood for release_after; a watch
    pass of a few paths decides nothing."""
    index = {f"f{i}": known(f"f{i}") for i in range(100)}
    tripped = dataclasses.replace(SETTINGS, guard_base=100)
    rewritten = {f"f{i}": entry(f"f{i}") for i in range(10, 100)}
    scoped = plan(rewritten, index, tripped, scope=["f0", "f50"])
    assert scoped.guard is None and scoped.guard_base == 100
    first = plan(rewritten, index, tripped)
    assert first.removals == () and first.withheld == 10 and first.guard_base == 100
    assert "they go once the source has stayed so for 30 min (release_after" in (first.guard or "")
    whole = plan(rewritten, index, dataclasses.replace(tripped, guard_steady=first.withheld_digest))
    assert len(whole.removals) == 10 and whole.guard is None and whole.guard_base is None
    # the limit a user set is theirs: the memory only tightens the default
    explicit = plan(
        {f"f{i}": entry(f"f{i}") for i in range(50, 100)}, index, dataclasses.replace(tripped, max_delete=60)
    )
    assert len(explicit.removals) == 50


def test_the_last_tenth_of_a_restore_under_way_is_not_deleted() -> None:
    """A source disk replaced and restored from the target a folder at a time, with mirror
    watching: once 185 of 200 were back, the 15 not yet copied were deleted from the
    target, their only copies. Each folder copied back changes which are gone, and the
    wait starts anew."""
    index = {f"{y}/f{i}": known(f"{y}/f{i}") for y in range(4) for i in range(50)}
    tripped = dataclasses.replace(SETTINGS, guard_base=200)
    back = {p: entry(p) for p in index if not p.startswith("3/")}
    half = plan(back, index, tripped)
    assert half.removals == () and half.withheld == 50  # over a tenth: withheld as ever
    more = {**back, **{f"3/f{i}": entry(f"3/f{i}") for i in range(35)}}
    steady_before = dataclasses.replace(tripped, guard_steady=half.withheld_digest)
    nearly = plan(more, index, steady_before)
    assert nearly.removals == () and nearly.withheld == 15 and nearly.withheld_digest != half.withheld_digest


MTIME_SET = Capabilities(mtime_settable=True)


def test_a_size_the_target_does_not_tell_is_no_change_to_a_copy_nor_proof_a_file_is_mirror_s() -> None:
    """A WebDAV server may leave sizes out of its listing: read as 0 bytes, every copy
    mirror put there was taken for changed, moved into the trash and sent again at each
    listing. Such a copy stays as it is; a file no row holds still goes aside before a
    source file takes its place, as no size tells it is that file's copy."""
    index = {"inv.pdf": known("inv.pdf", size=5)}
    local = {"inv.pdf": entry("inv.pdf", size=5), "new.pdf": entry("new.pdf", size=5)}
    remote = {"inv.pdf": RemoteEntry("inv.pdf", None), "new.pdf": RemoteEntry("new.pdf", None)}
    result = plan(local, index, dataclasses.replace(SETTINGS, today=dt.date(2026, 11, 30)), remote)
    assert [(t.src, t.aside) for t in result.transfers] == [("new.pdf", ".mirror-trash/2026-11-30/new.pdf")]
    assert result.moves == () and result.removals == ()


def test_an_older_version_restored_into_the_source_keeps_the_newer_copy_in_the_trash() -> None:
    index = {"inv.pdf": known("inv.pdf", size=5), "other.pdf": known("other.pdf", size=5)}
    older = 1_700_000_000 * 10**9 - 86_400 * 10**9
    local = {
        "inv.pdf": LocalEntry("inv.pdf", 4, older, 0),  # last week's version, from a backup
        "other.pdf": entry("other.pdf", size=6),  # an edit: newer, replaced as ever
    }
    result = plan(local, index, dataclasses.replace(SETTINGS, today=dt.date(2026, 11, 30)))
    puts = {t.src: t for t in result.transfers if isinstance(t, Put)}
    assert puts["inv.pdf"].aside == ".mirror-trash/2026-11-30/inv.pdf"
    assert "older than the copy mirror sent" in (puts["inv.pdf"].keep or "")
    assert puts["other.pdf"].aside is None and puts["other.pdf"].keep is None


def test_a_source_restored_from_an_older_backup_moves_the_copies_of_newer_files_into_the_trash() -> None:
    """The backup lacked the invoices written since: in the pass that kept the corrected
    invoice's copy, their copies, the only ones left, were deleted."""
    older = 1_700_000_000 * 10**9 - 86_400 * 10**9
    index = {f"inv{i}.pdf": known(f"inv{i}.pdf", size=5) for i in range(20)}
    local = {f"inv{i}.pdf": entry(f"inv{i}.pdf", size=5) for i in range(16)}
    local["inv0.pdf"] = LocalEntry("inv0.pdf", 4, older, 0)  # last month's version
    settings_ = dataclasses.replace(SETTINGS, today=dt.date(2026, 12, 3))
    result = plan(local, index, settings_)
    assert sorted((r.src, r.trash_dst) for r in result.removals if isinstance(r, Trash)) == [
        (f"inv{i}.pdf", f".mirror-trash/2026-12-03/inv{i}.pdf") for i in range(16, 20)
    ]
    assert not [r for r in result.removals if isinstance(r, Delete)]
    assert "the source holds files older than their copies (a restore?)" in result.removals[0].reason
    assert result.restored == 1
    # without a file older than its copy, the deletions are deletions
    local["inv0.pdf"] = entry("inv0.pdf", size=5)
    assert {type(r) for r in plan(local, index, settings_).removals} == {Delete}
    # unless an earlier pass found one: watching, a restore copied over the source and the
    # removal of what it lacks come in passes of their own
    lately = dataclasses.replace(settings_, restored_lately=True)
    assert {type(r) for r in plan(local, index, lately, scope=["inv17.pdf"]).removals} == {Trash}


def test_while_the_guard_withholds_a_smaller_file_keeps_the_copy_it_replaces() -> None:
    """A restore cut short (a 4 MiB scan copied back as 1 MiB) replaced the only
    complete copy on the target."""
    index = {f"f{i}": known(f"f{i}", size=4) for i in range(20)}
    local = {"f0": entry("f0", size=1), "f1": entry("f1", size=4), "f2": entry("f2", size=9)}
    tripped = dataclasses.replace(SETTINGS, guard_base=20)
    puts = {t.src: t for t in plan(local, index, tripped).transfers if isinstance(t, Put)}
    assert puts["f0"].keep is not None and puts["f0"].aside is not None
    assert puts["f2"].keep is None  # grown: a folder written anew (a re-export), replaced as ever
    at_rest = {t.src: t for t in plan(local, index, SETTINGS, scope=["f0"]).transfers if isinstance(t, Put)}
    assert at_rest["f0"].keep is None


def test_a_newer_file_of_the_same_size_on_the_target_is_kept_when_an_index_is_new() -> None:
    """A lost index and a source older than the target: the target's newer version of the
    same size was taken for the source's copy and overwritten."""
    now = 1_700_000_000 * 10**9
    local = {
        "inv.pdf": LocalEntry("inv.pdf", 5, now - 86_400 * 10**9, 0),
        "same.pdf": LocalEntry("same.pdf", 5, now, 0),
    }
    remote = {
        "inv.pdf": RemoteEntry("inv.pdf", 5, now),
        "same.pdf": RemoteEntry("same.pdf", 5, now - 10**9 * 3600),
    }
    settings_ = dataclasses.replace(SETTINGS, caps=MTIME_SET)
    puts = {t.src: t for t in plan(local, {}, settings_, remote).transfers if isinstance(t, Put)}
    source, target = (
        f"{dt.datetime.fromtimestamp(ns / 1e9):%Y-%m-%d %H:%M}" for ns in (now - 86_400 * 10**9, now)
    )
    # each time named: two bare times read as swapped after 'the target's file is newer'
    assert (puts["inv.pdf"].keep or "").endswith(f"newer than the source's (source {source}, target {target})")
    assert puts["same.pdf"].keep is None  # the target's is older: the source's replaces it
    # a target that keeps no times cannot tell
    puts = {t.src: t for t in plan(local, {}, SETTINGS, remote).transfers if isinstance(t, Put)}
    assert puts["inv.pdf"].keep is None


def test_someone_s_file_in_place_of_a_mirrored_folder_goes_to_the_trash_in_a_listing_pass() -> None:
    """The folder's files failed at every run, naming a run with --rescan as the fix, and
    that run did not move the file: only files going to a new path cleared their way."""
    index = {"sub/a.txt": known("sub/a.txt"), "sub/b.txt": known("sub/b.txt")}
    local = {rel: entry(rel) for rel in index}
    remote = {"sub": RemoteEntry("sub", 9, 1_700_000_000 * 10**9)}
    result = plan(local, index, dataclasses.replace(SETTINGS, today=dt.date(2026, 12, 3)), remote)
    puts = sorted((t.src, t.in_the_way, t.aside) for t in result.transfers if isinstance(t, Put))
    assert puts == [("sub/a.txt", "sub", ".mirror-trash/2026-12-03/sub"), ("sub/b.txt", None, None)]


def test_a_file_restored_with_a_new_inode_keeps_the_copy_edited_since_in_the_trash() -> None:
    """The machine restored from an image a week old, its state folder with it: each file
    has the size and time its row records, on a new inode, and the listing pass wrote
    last week's invoice over the corrected one, with no trash and no warning."""
    now = 1_700_000_000 * 10**9
    index = {name: known(name, size=5, ino=7) for name in ("inv.pdf", "same.pdf")}
    local = {name: LocalEntry(name, 5, now, 9) for name in ("inv.pdf", "same.pdf")}
    remote = {"inv.pdf": RemoteEntry("inv.pdf", 14, now + 10**12), "same.pdf": RemoteEntry("same.pdf", 5, now)}
    settings_ = dataclasses.replace(SETTINGS, caps=MTIME_SET, stable_inodes=True)
    puts = {t.src: t for t in plan(local, index, settings_, remote).transfers if isinstance(t, Put)}
    assert puts["inv.pdf"].reason == "another file took its place"
    assert (
        puts["inv.pdf"].keep
        == "the copy on the target changed since mirror put it there: its size changed (5 to 14 bytes)"
    )
    assert puts["same.pdf"].keep is None  # the copy mirror put there: replaced as ever


def test_a_copy_newer_than_the_source_s_file_of_its_size_is_kept_where_the_target_keeps_times() -> None:
    """A snapshot of the machine rolled back, source and state folder with it: the invoice
    corrected and sent since (its size kept) differed from the row only by its time, and
    the listing pass wrote the older version over it."""
    now = 1_700_000_000 * 10**9
    index = {name: known(name, size=5) for name in ("inv.pdf", "touched.pdf")}
    local = {name: LocalEntry(name, 5, now, 0) for name in ("inv.pdf", "touched.pdf")}
    remote = {
        "inv.pdf": RemoteEntry("inv.pdf", 5, now + 86_400 * 10**9),
        "touched.pdf": RemoteEntry("touched.pdf", 5, now - 86_400 * 10**9),
    }
    settings_ = dataclasses.replace(SETTINGS, caps=MTIME_SET)
    puts = {t.src: t for t in plan(local, index, settings_, remote).transfers if isinstance(t, Put)}
    assert "the target's file is newer than the source's" in (puts["inv.pdf"].keep or "")
    assert puts["touched.pdf"].keep is None  # older there: the source's replaces it


@pytest.mark.parametrize("delete", [DeletePolicy.KEEP, DeletePolicy.TRASH])
@pytest.mark.parametrize("listed", [False, True])
def test_a_kept_copy_goes_into_the_trash_when_another_file_takes_its_path_in_the_same_pass(
    base: Path, delete: DeletePolicy, listed: bool
) -> None:
    """flat, delete = keep or trash: 2025/inv-001.pdf deleted and 2026/inv-001.pdf written
    while the target was down overwrote the copy of the 2025 invoice in one pass, which two
    passes moved into the trash. So does a file renamed onto that path."""
    rig = Rig(base, Capabilities(server_side_move=True))
    rig.write({"2025/inv-001.pdf": b"2025, customer A", "2025/inv-002.pdf": b"2025, customer C", "x/y.pdf": b"y"})
    rig.executor.run(plan(rig.local(), {}, rig.settings("flat", delete), remote={}))
    for old in ("2025/inv-001.pdf", "2025/inv-002.pdf"):
        (rig.source / old).unlink()
    rig.write({"2026/inv-001.pdf": b"2026, customer B, longer"})
    (rig.source / "x/y.pdf").rename(rig.source / "x/inv-002.pdf")
    remote = rig.driver.list() if listed else None
    rig.executor.run(plan(rig.local(), rig.index.entries(), rig.settings("flat", delete), remote=remote))
    assert rig.target() == {
        "inv-001.pdf": b"2026, customer B, longer",
        "inv-002.pdf": b"y",
        ".mirror-trash/2026-01-02/inv-001.pdf": b"2025, customer A",
        ".mirror-trash/2026-01-02/inv-002.pdf": b"2025, customer C",
    }
    rig.close()


def test_a_file_edited_before_a_layout_change_leaves_no_old_copy_under_keep(base: Path) -> None:
    """delete = keep, an invoice corrected and the layout changed before the next run: its
    old version stayed at the old path, out of the index for good (verify: "other file").
    keep keeps the copies of files gone from the source; this file is still there."""
    rig = Rig(base, Capabilities(server_side_move=True))
    rig.write({"acme/inv1.pdf": b"invoice 1", "acme/inv2.pdf": b"invoice 2"})
    rig.executor.run(plan(rig.local(), {}, rig.settings("tree", DeletePolicy.KEEP), remote={}))
    rig.write({"acme/inv1.pdf": b"invoice 1, corrected"})
    relaid = rig.settings("by-year", DeletePolicy.KEEP)
    rig.executor.run(plan(rig.local(), rig.index.entries(), relaid, generation=rig.generation))
    year = dt.date.fromtimestamp((rig.source / "acme/inv1.pdf").stat().st_mtime).year
    assert rig.target() == {
        f"{year}/acme/inv1.pdf": b"invoice 1, corrected",
        f"{year}/acme/inv2.pdf": b"invoice 2",
    }
    rig.close()


def test_a_copy_edited_on_the_target_goes_into_the_trash_when_another_file_takes_its_path(base: Path) -> None:
    """A listing shows the copy of a file gone from the source edited on the target: it is
    left there, with a warning, and was then overwritten by a file taking its path."""
    rig = Rig(base)
    rig.write({"2025/inv.pdf": b"2025"})
    rig.executor.run(plan(rig.local(), {}, rig.settings("flat"), remote={}))
    rig.driver.fs.pipe_file(f"{rig.root}/inv.pdf", b"2025, annotated on the target")
    (rig.source / "2025/inv.pdf").unlink()
    rig.write({"2026/inv.pdf": b"2026"})
    rig.executor.run(plan(rig.local(), rig.index.entries(), rig.settings("flat"), remote=rig.driver.list()))
    assert rig.target() == {
        "inv.pdf": b"2026",
        ".mirror-trash/2026-01-02/inv.pdf": b"2025, annotated on the target",
    }
    rig.close()


def test_a_copy_of_the_target_s_trash_in_the_source_is_not_mirrored_and_its_rows_are_forgotten(
    base: Path,
) -> None:
    """A source restored from the target with its .mirror-trash: mirror took the trash for
    files of its own, and deleted it once the user tidied the source."""
    (base / ".mirror-trash/2026-11-30/a").mkdir(parents=True)
    (base / ".mirror-trash/2026-11-30/a/inv.pdf").write_bytes(b"newer")
    (base / "a").mkdir()
    (base / "a/inv.pdf").write_bytes(b"older")
    assert set(scan(base, Filter()).entries) == {"a/inv.pdf"}
    row = ".mirror-trash/2026-11-30/a/inv.pdf"
    index = {row: known(row), **{f"f{i}": known(f"f{i}") for i in range(20)}}
    local = {f"f{i}": entry(f"f{i}") for i in range(20)}
    result = plan(local, index, dataclasses.replace(SETTINGS, delete=DeletePolicy.TRASH))
    assert [type(r).__name__ for r in result.removals] == ["Forget"] and result.removals[0].src == row


def test_a_held_file_whose_place_a_new_one_needs_is_deleted_at_once() -> None:
    index = {"scans": known("scans")}
    local = {"scans/2026.pdf": entry("scans/2026.pdf")}
    result = plan(local, index, SETTINGS, scope=["scans", "scans/2026.pdf"], hold_gone=True)
    assert result.held == () and [r.dst for r in result.early] == ["scans"]


@pytest.mark.parametrize("listed", [False, True])
@pytest.mark.parametrize("turned", ["file into folder", "folder into file"])
def test_delete_keep_keeps_a_copy_in_the_trash_where_a_new_file_needs_its_name(
    base: Path, listed: bool, turned: str
) -> None:
    """delete = keep: a file replaced by a folder of its name (or the reverse) in one pass
    failed on every pass, 'statements on the target is a file where a folder is needed',
    and the folder's files were never mirrored."""
    rig = Rig(base, disk=True)
    before, after = ("statements", "statements/2026-01.pdf")
    if turned == "folder into file":
        before, after = after, before
    rig.write({before: b"kept", "y.pdf": b"y"})
    keep = rig.settings("tree", DeletePolicy.KEEP)
    rig.executor.run(plan(rig.local(), {}, keep, remote={}))
    if turned == "folder into file":
        shutil.rmtree(rig.source / "statements")
    else:
        (rig.source / before).unlink()
    rig.write({after: b"new"})
    stats = rig.executor.run(plan(rig.local(), rig.index.entries(), keep, rig.driver.list() if listed else None))
    assert not stats.failed
    assert rig.target() == {"y.pdf": b"y", after: b"new", f".mirror-trash/2026-01-02/{before}": b"kept"}
    rig.close()


def test_a_file_kept_by_delete_keep_where_a_folder_is_needed_goes_to_the_trash_at_a_listing(base: Path) -> None:
    """The copy kept a pass before the source made a folder of its name: no row holds
    it, so a pass that lists the target finds it in the way and moves it into the trash."""
    rig = Rig(base, disk=True)
    rig.write({"statements": b"kept", "y.pdf": b"y"})
    keep = rig.settings("tree", DeletePolicy.KEEP)
    rig.executor.run(plan(rig.local(), {}, keep, remote={}))
    (rig.source / "statements").unlink()
    rig.executor.run(plan(rig.local(), rig.index.entries(), keep))
    rig.write({"statements/2026-01.pdf": b"jan", "statements/2026-02.pdf": b"feb"})
    failed = rig.executor.run(plan(rig.local(), rig.index.entries(), keep)).failed
    assert [why for _, why in failed if "--rescan moves it into .mirror-trash/" in why]
    stats = rig.executor.run(plan(rig.local(), rig.index.entries(), keep, rig.driver.list()))
    assert not stats.failed
    assert rig.target() == {
        "y.pdf": b"y",
        "statements/2026-01.pdf": b"jan",
        "statements/2026-02.pdf": b"feb",
        ".mirror-trash/2026-01-02/statements": b"kept",
    }
    rig.close()


def test_without_its_row_a_file_keeps_the_date_of_its_copy_under_a_dated_layout() -> None:
    """A lost index: a 2024 invoice edited in 2026 was sent again into 2026/. Its copy of
    the same size and time under 2024/ is adopted with that date; one that differs is not
    taken for it, nor is a path another row holds."""
    by_year = PlanSettings(Layout.parse("by-year"), DeletePolicy.MIRROR, MTIME_SET)
    edited = LocalEntry("c/inv.pdf", 5, 1_790_000_000 * 10**9, 0)  # 2026
    year = date_of(edited.mtime_ns).year
    copy = RemoteEntry("2024/c/inv.pdf", 5, edited.mtime_ns)
    (adopted,) = plan({"c/inv.pdf": edited}, {}, by_year, {copy.path: copy}).transfers
    assert isinstance(adopted, Adopt) and adopted.dst == "2024/c/inv.pdf"
    assert adopted.date.year == 2024
    other = dataclasses.replace(copy, size=6)
    (sent,) = plan({"c/inv.pdf": edited}, {}, by_year, {other.path: other}).transfers
    assert isinstance(sent, Put) and sent.dst == f"{year}/c/inv.pdf"
    held = {"x": known("x", dst="2024/c/inv.pdf")}
    (sent,) = plan(
        {"c/inv.pdf": edited, "x": entry("x")}, held, by_year, {copy.path: copy}, scope=["c/inv.pdf"]
    ).transfers
    assert sent.dst == f"{year}/c/inv.pdf"


def test_keep_policy_never_deletes_and_trash_moves_into_a_dated_folder() -> None:
    index = {"a.pdf": known("a.pdf")}
    keep = plan({"b": entry("b")}, index, PlanSettings(SETTINGS.layout, DeletePolicy.KEEP, Capabilities()))
    assert all(isinstance(r, Forget) for r in keep.removals)
    trash = plan(
        {"b": entry("b")},
        index,
        PlanSettings(SETTINGS.layout, DeletePolicy.TRASH, Capabilities(), today=dt.date(2026, 5, 6)),
    )
    assert [r.trash_dst for r in trash.removals] == [".mirror-trash/2026-05-06/a.pdf"]  # type: ignore[union-attr]


@given(lengths=st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=8))
@example(lengths=[50] * 7 + [20])  # 377 below a folder of 19: fits, but not in .mirror-trash/DAY/
def test_a_copy_the_trash_cannot_hold_stays_with_a_reason_naming_its_trash_path(lengths: list[int]) -> None:
    """delete = "trash" on OneDrive: a deleted file whose copy fits in 400 characters, but
    not once in .mirror-trash/DAY/, failed on every pass, naming the copy's own path and no
    way out. Every trash path planned now fits; a copy whose would not stays, refused with
    its trash path and the fix, and the others go to the trash."""
    caps = OneDriveDriver.capabilities_for("onedrive://Mirror Test/backup")
    deep = "/".join(str(i) * n for i, n in enumerate(lengths))
    index = {"a.pdf": known("a.pdf"), deep: known(deep)}
    trashing = PlanSettings(SETTINGS.layout, DeletePolicy.TRASH, caps, today=dt.date(2026, 5, 6))
    assume(refused_name(deep, caps) is None)
    result = plan({"b": entry("b")}, index, trashing)
    assert all(refused_name(r.trash_dst, caps) is None for r in result.removals if isinstance(r, Trash))
    trashed = {r.src for r in result.removals if isinstance(r, Trash)}
    assert "a.pdf" in trashed
    refused = {r.src: r.reason for r in result.refusals}
    assert (deep in trashed) != (deep in refused)
    if deep in refused:
        assert f"'.mirror-trash/2026-05-06/{deep}'" in refused[deep] and 'delete = "mirror"' in refused[deep]


def test_only_files_in_the_index_are_ever_deleted() -> None:
    remote_only = {"theirs.pdf": __import__("mirror.driver").driver.RemoteEntry("theirs.pdf", 5)}
    result = plan({"mine": entry("mine")}, {}, SETTINGS, remote=remote_only)
    assert result.removals == ()


def test_flat_collisions_are_refused_not_overwritten() -> None:
    flat = PlanSettings(Layout.parse("flat"), DeletePolicy.MIRROR, Capabilities())
    result = plan({"a/x.pdf": entry("a/x.pdf"), "b/x.pdf": entry("b/x.pdf")}, {}, flat)
    assert [t.src for t in result.transfers] == ["a/x.pdf"]
    assert [(r.src, r.dst) for r in result.refusals] == [("b/x.pdf", "x.pdf")]


def test_the_established_owner_of_a_path_keeps_it() -> None:
    flat = PlanSettings(Layout.parse("flat"), DeletePolicy.MIRROR, Capabilities())
    result = plan(
        {"a/x.pdf": entry("a/x.pdf"), "b/x.pdf": entry("b/x.pdf")}, {"b/x.pdf": known("b/x.pdf", "x.pdf")}, flat
    )
    assert result.transfers == ()
    assert [r.src for r in result.refusals] == ["a/x.pdf"]


def test_case_twins_conflict_on_a_case_insensitive_target() -> None:
    caps = Capabilities(case_sensitive=False)
    result = plan(
        {"Inv.pdf": entry("Inv.pdf"), "inv.pdf": entry("inv.pdf")},
        {},
        PlanSettings(SETTINGS.layout, DeletePolicy.MIRROR, caps),
    )
    assert len(result.transfers) == 1 and len(result.refusals) == 1
    sensitive = plan({"Inv.pdf": entry("Inv.pdf"), "inv.pdf": entry("inv.pdf")}, {}, SETTINGS)
    assert len(sensitive.transfers) == 2


def test_unicode_spellings_of_one_name_conflict_on_a_target_that_ignores_case() -> None:
    """Dropbox and OneDrive take a name made on a Mac (decomposed) and its composed form
    as one: sent both, the second replaced the first, and the run said 2 sent."""
    composed, decomposed = "Über/Ärger.pdf", unicodedata.normalize("NFD", "Über/Ärger.pdf")
    local = {composed: entry(composed), decomposed: entry(decomposed)}
    caps = Capabilities(case_sensitive=False)
    result = plan(local, {}, PlanSettings(SETTINGS.layout, DeletePolicy.MIRROR, caps))
    assert len(result.transfers) == 1 and len(result.refusals) == 1
    # told apart: 'taken by' a name that reads the same left the user no way to choose
    assert result.refusals[0].reason.endswith(
        "the same name in another Unicode spelling (decomposed, as a Mac does); rename one of the two"
    )
    assert len(plan(local, {}, SETTINGS).transfers) == 2, "a Linux disk or SFTP server keeps both"


def test_a_flat_layout_s_clash_of_one_plain_name_is_not_blamed_on_unicode() -> None:
    """old/invoice.pdf and invoice.pdf, both to invoice.pdf: the refusal said 'the same name
    in another Unicode spelling' of two names spelled alike."""
    local = {"old/invoice.pdf": entry("old/invoice.pdf"), "invoice.pdf": entry("invoice.pdf")}
    result = plan(local, {}, PlanSettings(Layout.parse("flat"), DeletePolicy.MIRROR, Capabilities()))
    assert [r.reason for r in result.refusals] == ["'invoice.pdf' on the target is already taken by 'invoice.pdf'"]


def test_names_that_differ_in_more_than_case_are_two_files_on_a_target_that_ignores_case() -> None:
    """Dropbox and OneDrive fold case, not spellings: 'Straße' and 'Strasse' are two
    files there. Taken for one, the second invoice was refused, and once the first was
    deleted its copy stayed on the target for good, with status in sync."""
    local = {name: entry(name) for name in ("Hauptstraße 5.pdf", "Hauptstrasse 5.pdf", "ﬁle.pdf", "file.pdf")}
    caps = Capabilities(case_sensitive=False)
    result = plan(local, {}, PlanSettings(SETTINGS.layout, DeletePolicy.MIRROR, caps))
    assert len(result.transfers) == 4 and not result.refusals


def test_a_file_named_like_the_trash_folder_is_refused() -> None:
    """Sent, a source file named .mirror-trash took the trash folder's place on the
    target, and every deletion under delete = trash failed at every pass."""
    result = plan({".mirror-trash": entry(".mirror-trash"), "a.pdf": entry("a.pdf")}, {}, SETTINGS)
    assert [t.src for t in result.transfers] == ["a.pdf"]
    assert [(r.src, r.reason) for r in result.refusals] == [
        (".mirror-trash", ".mirror-trash is the name of mirror's trash folder on the target; rename the file")
    ]


def test_a_file_named_like_a_folder_on_the_target_is_refused() -> None:
    """On a case-insensitive target, a file ``docs`` and a folder ``Docs`` cannot both exist."""
    caps = Capabilities(case_sensitive=False)
    settings_ = PlanSettings(SETTINGS.layout, DeletePolicy.MIRROR, caps)
    local = {"Docs/x.pdf": entry("Docs/x.pdf"), "docs": entry("docs")}
    established = plan(local, {"Docs/x.pdf": known("Docs/x.pdf")}, settings_)
    assert [r.src for r in established.refusals] == ["docs"] and not established.transfers


FOLDED_NAMES = st.sampled_from(["belege", "Belege", "BELEGE", "Über", unicodedata.normalize("NFD", "Über"), "x"])


@given(rels=st.lists(st.lists(FOLDED_NAMES, min_size=1, max_size=3).map("/".join), min_size=1, max_size=8))
@example(rels=["Belege/beleg-0.pdf", "belege"])
def test_a_file_and_a_folder_a_new_target_takes_for_one_name_send_the_folder(rels: list[str]) -> None:
    """A folder Belege/ of invoices and a stray file 'belege' to a new Dropbox or OneDrive
    folder: both were refused, on every pass, as clashing 'with a file or folder of the
    same name on the target' while it was empty. Now what is sent never clashes, every
    refusal names what it clashes with among what is sent, and the folder's files win."""
    caps = Capabilities(case_sensitive=False)
    key = path_key(False)
    local = {rel: entry(rel) for rel in _prefix_free(rels)}
    result = plan(local, {}, PlanSettings(SETTINGS.layout, DeletePolicy.MIRROR, caps))
    sent = {key(t.dst) for t in result.transfers}
    folders = {a for k in sent for a in ancestors(k)}
    assert len(sent) == len(result.transfers) and sent.isdisjoint(folders)
    assert {t.src for t in result.transfers} | {r.src for r in result.refusals} == set(local)
    for refusal in result.refusals:
        k = key(refusal.src)
        assert k in sent or k in folders or any(a in sent for a in ancestors(k)), refusal
    # a file is never sent where a folder of files it clashes with was refused for it
    for src in {t.src for t in result.transfers}:
        assert not any(key(r.src).startswith(key(src) + "/") for r in result.refusals), (src, result.refusals)


def test_a_file_refused_its_new_path_keeps_its_folders_from_newcomers() -> None:
    """Under flat, a.pdf/x is refused (03/x holds x) and stays in the folder a.pdf: a new
    file q/a.pdf wanting the name a.pdf is refused too, not sent to fail on every pass
    (and hold back every deletion with it)."""
    index = {"03/x": known("03/x", "x"), "a.pdf/x": known("a.pdf/x")}
    local = {src: entry(src) for src in [*index, "q/a.pdf"]}
    result = plan(local, index, dataclasses.replace(SETTINGS, layout=Layout.parse("flat")))
    assert not result.transfers and not result.moves and not result.removals
    assert [(r.src, "already taken" in r.reason or "clashes" in r.reason) for r in result.refusals] == [
        ("a.pdf/x", True),
        ("q/a.pdf", True),
    ]
    # and so does a plan that asks the index about the new paths (watch mode)
    with tempfile.TemporaryDirectory() as tmp:
        db = Index(Path(tmp) / "index.sqlite")
        db.record_many(index.values())
        scope = set(local)
        asked = KnownFiles(
            db.lookup_many(scope), scope, db.count(), db.rows, db.lookup, db.targets, db.holders, db.held_below
        )
        flat = dataclasses.replace(SETTINGS, layout=Layout.parse("flat"))
        assert sorted(r.src for r in plan(local, asked, flat, scope=scope).refusals) == ["a.pdf/x", "q/a.pdf"]
        db.close()


S3_PARTS = st.text(st.sampled_from(["a", "ü", "€", "📄", " "]), min_size=1, max_size=60).filter(str.strip)


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.lists(S3_PARTS, max_size=4).map("/".join),
    path=st.lists(S3_PARTS, min_size=1, max_size=16).map("/".join),
)
@example(
    prefix="mirror", path="/".join(["Übergabeprotokolle " + "ü" * 107] * 4 + ["Prüfbericht " + "ä" * 100 + ".pdf"])
)
def test_an_s3_key_over_1024_bytes_with_its_prefix_is_refused_in_the_plan(prefix: str, path: str) -> None:
    """S3 takes keys of 1024 bytes of UTF-8, the prefix (the target's folder) included;
    mirror counted 1024 characters below the prefix, so a deep folder of German names
    was planned, to fail with KeyTooLongError on every pass."""
    from backends.s3 import S3Driver

    caps = S3Driver.capabilities_for(f"s3://bucket/{prefix}")
    key = f"{prefix}/{path}" if prefix else path
    too_long = len(key.encode()) > 1024
    assert (refused_name(path, caps) is not None) == too_long
    planned = plan({path: entry(path)}, {}, dataclasses.replace(SETTINGS, caps=caps))
    assert [r.src for r in planned.refusals] == ([path] if too_long else [])
    assert [t.dst for t in planned.transfers] == ([] if too_long else [path])
    if too_long:
        assert f"path is {len(path.encode())} bytes of UTF-8" in planned.refusals[0].reason


def test_refused_names_are_per_item_errors_with_a_reason() -> None:
    caps = Capabilities(
        forbidden_names=frozenset({"desktop.ini"}), forbidden_chars=":", forbidden_trailing=" .", max_name_bytes=10
    )
    local = {p: entry(p) for p in ["Desktop.ini", "a:b", "trail. ", "x" * 11, "ok.pdf"]}
    result = plan(local, {}, PlanSettings(SETTINGS.layout, DeletePolicy.MIRROR, caps))
    assert [t.src for t in result.transfers] == ["ok.pdf"]
    reasons = {r.src: r.reason for r in result.refusals}
    assert set(reasons) == {"Desktop.ini", "a:b", "trail. ", "x" * 11}
    assert all(reason for reason in reasons.values())


NAME_PIECES = st.sampled_from(["_vti_", "_VTI_", "~$", ".dropbox", " ", ".", "a", "Ü", "x" * 60, ":", "\\", "con"])
DRIVE_ROOT = "Mirror Test 1c204d8d6e/backup"


@given(
    rel=st.lists(st.lists(NAME_PIECES, min_size=1, max_size=4).map("".join), min_size=1, max_size=8).map("/".join)
)
@example(rel="Export_vti_cnf.pdf")
@example(rel=".dropbox.cache")
@example(rel="/".join(["x" * 60] * 6) + "/" + "y" * 23 + ".pdf")  # 393 below the folder
def test_the_plan_refuses_every_name_and_path_onedrive_and_dropbox_refuse(rel: str) -> None:
    """A path of 390 characters under a OneDrive folder of 29 (OneDrive allows 400 with
    the folder), a file named 'Export_vti_cnf.pdf' there, or '.dropbox.cache' on Dropbox:
    only the driver refused them, when sending, so each failed on every pass and held back
    every deletion. The plan refuses them now, as 'not mirrored', and deletions go on."""
    onedrive = OneDriveDriver.capabilities_for(f"onedrive://{DRIVE_ROOT}")
    if onedrive_refusal(f"{DRIVE_ROOT}/{rel}"):
        assert refused_name(rel, onedrive)
    with contextlib.suppress(ItemError):
        check_name(rel)
        return
    assert refused_name(rel, DropboxDriver.capabilities)


def test_a_rename_becomes_a_move_when_the_target_can_move() -> None:
    caps = Capabilities(server_side_move=True)
    index = {"old.pdf": known("old.pdf", ino=7)}
    local = {"new.pdf": entry("new.pdf", ino=7)}
    result = plan(local, index, PlanSettings(SETTINGS.layout, DeletePolicy.MIRROR, caps))
    assert result.moves == (
        Move(
            "new.pdf",
            "old.pdf",
            "new.pdf",
            local["new.pdf"],
            dt.date(2023, 11, 14),
            "renamed from 'old.pdf'",
            "old.pdf",
            # no listing tells what stands at the new path: the target is asked
            aside=".mirror-trash/1970-01-01/new.pdf",
            ask=True,
        ),
    )
    assert result.transfers == () and result.removals == ()


@pytest.mark.parametrize(
    ("recorded", "now", "moved"),
    [(5, 5, True), (5, 6, False), (0, 6, True), (5, 0, True)],
    ids=["same-generation", "inode-reused", "row-without-generation", "file-without-generation"],
)
def test_a_new_file_with_a_gone_file_s_inode_is_a_rename_only_of_the_same_generation(
    recorded: int, now: int, moved: bool
) -> None:
    """A new file given the inode a deleted one freed, with its size and time, was taken
    for it renamed: its copy moved to the new name, the new file never sent. Where either
    generation is not known (an older mirror's row, tmpfs), inode, size and time decide."""
    caps = Capabilities(server_side_move=True)
    index = {"RE-1001.pdf": known("RE-1001.pdf", "2023/RE-1001.pdf", ino=7)._replace(gen=recorded)}
    local = {"RE-1002.pdf": entry("RE-1002.pdf", ino=7)}
    asked: list[str] = []

    def generation(src: str) -> int:
        asked.append(src)
        return now

    by_year = PlanSettings(Layout.parse("by-year"), DeletePolicy.MIRROR, caps, today=dt.date(2026, 12, 2))
    result = plan(local, index, by_year, generation=generation)
    assert asked == ([] if not recorded else ["RE-1002.pdf"])  # asked once, and only where it tells
    if moved:
        assert [(m.old_dst, m.dst, m.gen) for m in result.moves] == [
            ("2023/RE-1001.pdf", "2023/RE-1002.pdf", recorded)
        ]
        assert result.transfers == () and result.removals == ()
    else:
        assert result.moves == ()
        # dated as a new file: by its own time, not by the gone file's row
        assert [(t.dst, t.reason) for t in result.transfers] == [("2023/RE-1002.pdf", "new")]
        assert [r.dst for r in result.removals] == ["2023/RE-1001.pdf"]


@pytest.mark.parametrize(
    ("how", "now", "sent"),
    [("watch", 6, True), ("listing", 6, True), ("watch", 5, False), ("watch", 0, False), ("full", 6, False)],
    ids=["watch-new-file", "listing-new-file", "watch-same-file", "watch-no-generation", "full-not-asked"],
)
def test_a_new_file_with_the_inode_size_and_time_of_the_file_at_its_path_is_sent_where_the_plan_looks_closer(
    how: str, now: int, sent: bool
) -> None:
    """A program deleted an invoice and wrote it again, corrected, dated with the
    invoice's date, and ext4 gave it the old inode: the plan took it for the file its row
    records, and the target kept the old invoice. A plan that looks at its files one by
    one anyway (a watch pass's changed paths, a listing pass) asks the generation; a full
    pass without a listing does not (one open per file of the source)."""
    caps = Capabilities(server_side_move=True)
    index = {"RE-1001.pdf": known("RE-1001.pdf", "RE-1001.pdf", ino=7)._replace(gen=5)}
    local = {"RE-1001.pdf": entry("RE-1001.pdf", ino=7)}
    tree = PlanSettings(Layout.parse("tree"), DeletePolicy.MIRROR, caps)
    listed = {"RE-1001.pdf": RemoteEntry("RE-1001.pdf", local["RE-1001.pdf"].size, local["RE-1001.pdf"].mtime_ns)}
    result = plan(
        local,
        index,
        tree,
        remote=listed if how == "listing" else None,
        scope=["RE-1001.pdf"] if how == "watch" else None,
        generation=lambda src: now,
    )
    assert [(t.dst, t.reason) for t in result.transfers] == (
        [("RE-1001.pdf", "another file took its place")] if sent else []
    )
    assert result.removals == ()


def test_a_file_renamed_to_a_name_that_is_not_mirrored_keeps_its_copy_until_it_can_be() -> None:
    """'Rechnung.pdf' renamed by a Latin-1 program to 'Rechnung M\xfcller.pdf' (not valid
    UTF-8: the scan leaves it out), or 'a.pdf' to 'a?b.pdf' on a target that refuses '?':
    the old path was gone and the new one refused, so the copy was deleted as if the file
    had left the source. It had not, and no target held it any more. Known by its inode,
    size and time, its copy and row stay (and count for no guard, nor wait as held),
    until a good name makes it a move."""
    caps = Capabilities(server_side_move=True, forbidden_chars="?")
    settings_ = PlanSettings(SETTINGS.layout, DeletePolicy.MIRROR, caps)
    names = ["Rechnung.pdf", "a.pdf", "gone.pdf", "keep.pdf", "twin.pdf"]
    index = {name: known(name, ino=n) for n, name in enumerate(names, 1)}
    latin1 = os.fsdecode(b"Rechnung M\xfcller.pdf")
    local = {
        "a?b.pdf": entry("a?b.pdf", ino=2),
        "keep.pdf": entry("keep.pdf", ino=4),
        "twin?.pdf": entry("twin?.pdf", ino=99),  # of twin.pdf's size and time, another file
    }
    left_out = {latin1: (entry(latin1, ino=1), "its name is not valid UTF-8")}
    renamed = (
        Renamed("Rechnung.pdf", "Rechnung.pdf", latin1, "its name is not valid UTF-8"),
        Renamed("a.pdf", "a.pdf", "a?b.pdf", "the target refuses the character(s) '?' in 'a?b.pdf'"),
    )
    for scope in (None, ["Rechnung.pdf", "a.pdf", "a?b.pdf", "gone.pdf", "twin.pdf", "twin?.pdf"]):
        result = plan(local, index, settings_, scope=scope, left_out=left_out)
        assert result.renamed == renamed
        assert sorted((type(r), r.src) for r in result.removals) == [(Delete, "gone.pdf"), (Delete, "twin.pdf")]
        assert not result.moves and not result.transfers
        assert sorted(r.src for r in result.refusals) == ["a?b.pdf", "twin?.pdf"]
        held = plan(local, index, settings_, scope=scope, left_out=left_out, hold_gone=True)
        assert held.renamed == renamed and held.held == ("gone.pdf", "twin.pdf") and not held.removals
    # the guard counts only the files that left: 2 of 5 is not over half, 2 of 3 would be
    guarded = plan(local, index, dataclasses.replace(settings_, max_delete=1), left_out=left_out)
    assert guarded.renamed == renamed and guarded.withheld == 2
    # a source whose inodes are not stable (FUSE): size and time tell, one copy for each file
    fuse = plan(local, index, dataclasses.replace(settings_, stable_inodes=False), left_out=left_out)
    assert len(fuse.renamed) == 3 and len(fuse.removals) == 1
    # renamed again, to names the target takes: moved, nothing sent, nothing deleted
    back = {"Rechnung Mueller.pdf": entry("Rechnung Mueller.pdf", ino=1), "a-b.pdf": entry("a-b.pdf", ino=2)}
    moved = plan(
        {**back, "keep.pdf": local["keep.pdf"]},
        index,
        settings_,
        remote={n: RemoteEntry(n, 1, None, None) for n in names},
    )
    assert sorted((m.old_dst, m.dst) for m in moved.moves) == [
        ("Rechnung.pdf", "Rechnung Mueller.pdf"),
        ("a.pdf", "a-b.pdf"),
    ]
    assert not moved.renamed and not moved.transfers
    assert sorted(r.src for r in moved.removals) == ["gone.pdf", "twin.pdf"]


def test_a_file_written_anew_where_one_was_renamed_to_a_name_not_mirrored_keeps_the_old_copy(base: Path) -> None:
    """An export written anew under its fixed name, the last one renamed by a Latin-1
    program (or to a name the target refuses): the new file replaced the only copy of
    the renamed one. That copy goes into the trash first."""
    rig = Rig(base, Capabilities(server_side_move=True, forbidden_chars="?"))
    rig.write({"export.pdf": b"first export", "other.pdf": b"o"})
    rig.executor.run(plan(rig.local(), {}, rig.settings("tree"), remote={}))
    root = os.fsencode(rig.source)
    os.rename(root + b"/export.pdf", root + b"/export M\xfcller.pdf")
    os.rename(rig.source / "other.pdf", rig.source / "other?.pdf")
    rig.write({"export.pdf": b"second export, longer", "other.pdf": b"O, again"})
    snap = scan(rig.source, Filter())
    step = plan(snap.entries, rig.index.entries(), rig.settings("tree"), left_out=snap.left_out())
    assert sorted((put.dst, put.aside) for put in step.transfers if isinstance(put, Put)) == [
        ("export.pdf", ".mirror-trash/2026-01-02/export.pdf"),
        ("other.pdf", ".mirror-trash/2026-01-02/other.pdf"),
    ]
    rig.executor.run(step)
    assert rig.target() == {
        "export.pdf": b"second export, longer",
        "other.pdf": b"O, again",
        ".mirror-trash/2026-01-02/export.pdf": b"first export",
        ".mirror-trash/2026-01-02/other.pdf": b"o",
    }
    # without a renamed file behind it, a file written anew replaces its copy as before
    rig.write({"export.pdf": b"third"})
    again = plan(rig.local(), rig.index.entries(), rig.settings("tree"))
    assert [(put.dst, put.aside) for put in again.transfers if isinstance(put, Put)] == [("export.pdf", None)]
    rig.close()


def test_a_copy_the_listing_lacks_or_shows_changed_is_sent_not_moved() -> None:
    """A move takes whatever stands at the old path: with that copy gone (or another file
    there), the file is sent to its new path instead, and the old path is cleared."""
    caps = Capabilities(server_side_move=True)
    year = PlanSettings(Layout.parse("by-year"), DeletePolicy.MIRROR, caps)
    index = {"a.pdf": known("a.pdf")}
    local = {"a.pdf": entry("a.pdf")}
    listed = {"a.pdf": RemoteEntry("a.pdf", 1, None, None)}
    assert [m.dst for m in plan(local, index, year, remote=listed).moves] == ["2023/a.pdf"]
    for remote in ({}, {"a.pdf": RemoteEntry("a.pdf", 2, None, None)}):
        relaid = plan(local, index, year, remote=remote)
        assert not relaid.moves
        assert [(type(t), t.dst) for t in relaid.transfers] == [(Put, "2023/a.pdf")]
        # what stands at the old path goes; where nothing does, nothing is deleted
        removed = [(Delete, "a.pdf", "the file was sent to its new path")] if remote else []
        assert [(type(r), r.dst, r.reason) for r in relaid.removals] == removed
        renamed = plan({"b.pdf": entry("b.pdf")}, index, dataclasses.replace(SETTINGS, caps=caps), remote=remote)
        assert not renamed.moves and [(type(t), t.dst) for t in renamed.transfers] == [(Put, "b.pdf")]
    # a pass cut short after moving the file, before recording it: the file is where it goes
    landed = {"2023/a.pdf": RemoteEntry("2023/a.pdf", 1, None, None)}
    relaid = plan(local, index, year, remote=landed)
    assert [(type(t), t.dst) for t in relaid.transfers] == [(Adopt, "2023/a.pdf")]
    assert not relaid.moves and not relaid.removals


def test_a_copy_changed_on_the_target_stays_there_when_its_source_goes() -> None:
    """Only mirror's own copies are deleted: a listing that shows another size (an edit on
    the target, or someone's file where mirror's was) or another hash leaves the file."""
    index = {name: IndexEntry(name, name, 1, 10**18, 0, dt.date(2023, 11, 14), "h1") for name in "abcd"}
    local = {"keep.pdf": entry("keep.pdf"), **{n: entry(n) for n in "efgh"}}
    listed = {
        "a": RemoteEntry("a", 1, None, "h1"),  # as mirror put it
        "b": RemoteEntry("b", 5, None, "h1"),
        "c": RemoteEntry("c", 1, None, "h2"),
        "d": RemoteEntry("d", 1, None, None),  # no hash listed: the size decides
    }
    for policy in (DeletePolicy.MIRROR, DeletePolicy.TRASH):
        settings = dataclasses.replace(SETTINGS, delete=policy, max_delete=10)
        result = plan(local, index, settings, remote=listed)
        assert sorted(r.dst for r in result.removals if not isinstance(r, Forget)) == ["a", "d"]
        assert sorted((r.src, r.reason) for r in result.removals if isinstance(r, Forget)) == [
            ("b", "left on the target: its size changed (1 to 5 bytes) since mirror put it there"),
            ("c", "left on the target: its content changed since mirror put it there"),
        ]
    # without a listing nothing tells: the row stands for the copy
    unlisted = plan(local, index, dataclasses.replace(SETTINGS, max_delete=10))
    assert sorted(r.dst for r in unlisted.removals) == list("abcd")


def test_old_copies_left_by_earlier_passes_are_removed_unless_a_file_needs_the_path() -> None:
    index = {"a": known("a", "2023/a")}
    local = {"a": entry("a"), "n": entry("n")}
    result = plan(local, index, SETTINGS, leftovers={"old/a": "a", "n": "x"})
    # old/a goes (not counted by the guard, though it is every managed file but one);
    # n is where a new file lands, so the copy there is replaced, not deleted after
    assert [(type(r), r.dst, r.forget) for r in result.removals] == [(Delete, "old/a", False)]
    assert result.guard is None and [t.dst for t in result.transfers] == ["n"]
    kept = plan(local, index, dataclasses.replace(SETTINGS, delete=DeletePolicy.TRASH), leftovers={"old/a": "a"})
    assert [(type(r), r.dst) for r in kept.removals] == [(Trash, "old/a")]


def test_files_gone_from_both_sides_are_forgotten_not_deleted_nor_guarded() -> None:
    """A listing that lacks a removed file's copy leaves nothing to delete: the row goes,
    and the guard is not asked about copies that are not there."""
    index = {f"f{i}": known(f"f{i}") for i in range(20)}
    local = {"f0": entry("f0")}
    listed = {"f0": RemoteEntry("f0", 1, None, None), "f1": RemoteEntry("f1", 1, None, None)}
    result = plan(local, index, SETTINGS, remote=listed)
    assert result.guard is None
    assert [(type(r), r.src) for r in result.removals] == [(Delete, "f1")] + [
        (Forget, f"f{i}") for i in sorted(range(2, 20), key=str)
    ]


def test_a_move_whose_old_path_another_new_path_needs_is_parked() -> None:
    """Moves run at once: one whose old path must be gone before another file lands
    (as a folder of it, or a file taking the name of its folder) is moved aside first."""
    caps = Capabilities(server_side_move=True)
    index = {"z/q": known("z/q", "2023/q"), "q/w/v": known("q/w/v", "2023/v"), "a/b": known("a/b", "2023/b")}
    local = {src: entry(src) for src in index}
    result = plan(local, index, PlanSettings(Layout.parse("by-year"), DeletePolicy.MIRROR, caps))
    assert {m.src: m.park for m in result.moves} == {"z/q": True, "q/w/v": False, "a/b": False}
    index = {"r": known("r", "2023/11/r"), "11": known("11", "2023/11/11")}
    local = {src: entry(src) for src in index}
    result = plan(local, index, PlanSettings(Layout.parse("by-year"), DeletePolicy.MIRROR, caps))
    # r leaves the folder 11 takes the name of; 11 itself moves up out of it alone
    assert {m.src: m.park for m in result.moves} == {"r": True, "11": False}


def test_a_same_size_edit_is_seen_through_the_mtime() -> None:
    index = {"a": known("a")}
    result = plan({"a": entry("a", mtime_ns=1_700_000_000 * 10**9 + 1)}, index, SETTINGS)
    assert [type(t) for t in result.transfers] == [Put]


def test_two_files_swapped_by_renames_are_sent_again_though_size_and_time_match() -> None:
    """A program that swaps two files of one size and time through renames leaves every
    stat but the inode as it was: the inode says each path now holds another file."""
    index = {"001.pdf": known("001.pdf", ino=11), "002.pdf": known("002.pdf", ino=12)}
    swapped = {"001.pdf": entry("001.pdf", ino=12), "002.pdf": entry("002.pdf", ino=11)}
    result = plan(swapped, index, SETTINGS)
    assert [(type(t), t.src, t.reason) for t in result.transfers] == [
        (Put, "001.pdf", "another file took its place"),
        (Put, "002.pdf", "another file took its place"),
    ]
    assert not result.removals and not result.moves
    # where the source's filesystem may renumber files (FUSE), the numbers prove nothing
    assert plan(swapped, index, dataclasses.replace(SETTINGS, stable_inodes=False)).is_empty()
    # nor does an inode not known on either side
    assert plan({"a": entry("a")}, {"a": known("a", ino=5)}, SETTINGS).is_empty()
    assert plan({"a": entry("a", ino=5)}, {"a": known("a")}, SETTINGS).is_empty()


def test_a_renumbered_file_is_checked_against_the_targets_hash_before_it_is_sent() -> None:
    """A folder copied to a new disk keeps sizes and times but not inodes: where the
    target keeps hashes, the hash it gave last spares sending an unchanged file again."""
    hashed = dataclasses.replace(SETTINGS, caps=Capabilities(hash_kind=HashKind.SHA256))
    row = IndexEntry("a.pdf", "a.pdf", 1, 1_700_000_000 * 10**9, 7, dt.date(2023, 11, 14), "abc")
    renumbered = {"a.pdf": entry("a.pdf", ino=8)}
    (put,) = plan(renumbered, {"a.pdf": row}, hashed).transfers
    assert isinstance(put, Put) and put.unless_hash == "abc"
    # a listing shows the target's own hash, which wins over the one remembered
    listed = {"a.pdf": RemoteEntry("a.pdf", 1, None, "def")}
    (put,) = plan(renumbered, {"a.pdf": row}, hashed, remote=listed).transfers
    assert isinstance(put, Put) and put.unless_hash == "def"
    # and a target file gone is sent whatever the index remembers
    (put,) = plan(renumbered, {"a.pdf": row}, hashed, remote={}).transfers
    assert isinstance(put, Put) and put.unless_hash is None


def test_a_file_replaced_at_the_same_path_is_not_deleted_afterwards() -> None:
    flat = PlanSettings(Layout.parse("flat"), DeletePolicy.MIRROR, Capabilities())
    index = {"a/x.pdf": known("a/x.pdf", "x.pdf")}
    result = plan({"b/x.pdf": entry("b/x.pdf", size=2)}, index, flat)
    assert [t.dst for t in result.transfers] == ["x.pdf"]
    assert all(isinstance(r, Forget) for r in result.removals)


def test_a_file_moved_to_another_folder_under_the_flat_layout_stays_on_the_target(base: Path) -> None:
    rig = Rig(base, Capabilities(server_side_move=True))
    rig.write({"inbox/x.pdf": b"invoice"})
    rig.executor.run(plan(rig.local(), {}, rig.settings("flat"), remote={}))
    (rig.source / "done").mkdir()
    os.rename(rig.source / "inbox/x.pdf", rig.source / "done/x.pdf")
    step = plan(rig.local(), rig.index.entries(), rig.settings("flat"))
    assert [(m.old_dst, m.dst) for m in step.moves] == [("x.pdf", "x.pdf")]
    stats = rig.executor.run(step)
    assert rig.target() == {"x.pdf": b"invoice"}
    assert [(e.src, e.dst) for e in rig.index.entries().values()] == [("done/x.pdf", "x.pdf")]
    assert stats.uploaded == 0 and not stats.failed
    rig.close()


class FoldingMemory(MemoryFileSystem):
    """A store that ignores case, as Windows shares, macOS disks and most clouds do."""

    cachable = False
    store: ClassVar[dict[str, Any]] = {}
    pseudo_dirs: ClassVar[list[str]] = [""]

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        return str(super()._strip_protocol(path)).lower()


@pytest.mark.parametrize(("old", "new"), [("Inv.pdf", "inv.pdf"), ("Scans/a.pdf", "scans/a.pdf")])
def test_a_rename_that_changes_only_case_keeps_the_file_on_a_target_that_ignores_case(
    base: Path, old: str, new: str
) -> None:
    # a backend set up by hand with server_side_move and no move of its own: fsspec's
    # generic move copies the file onto itself, then deletes it
    caps = Capabilities(case_sensitive=False, server_side_move=True)
    rig = Rig(base, caps)
    rig.driver = MemoryDriver(FoldingMemory(), rig.root.lower(), caps)
    rig.executor.driver = rig.driver
    rig.write({old: b"invoice"})
    rig.executor.run(plan(rig.local(), {}, rig.settings("tree"), remote={}))
    (rig.source / old).rename(base / "moved")
    (rig.source / new).parent.mkdir(exist_ok=True)
    (base / "moved").rename(rig.source / new)
    step = plan(rig.local(), rig.index.entries(), rig.settings("tree"))
    assert [(m.old_dst, m.dst) for m in step.moves] == [(old, new)]
    stats = rig.executor.run(step)
    assert rig.target() == {new.lower(): b"invoice"}
    assert stats.moved == 1 and not stats.failed
    rig.close()


def test_a_replaced_file_survives_a_pass_whose_deletions_were_postponed(base: Path) -> None:
    rig = Rig(base, Capabilities(server_side_move=True))
    rig.write({"a/x.pdf": b"old"})
    rig.executor.run(plan(rig.local(), {}, rig.settings("flat"), remote={}))
    os.unlink(rig.source / "a/x.pdf")
    rig.write({"b/x.pdf": b"new"})
    replaced = plan(rig.local(), rig.index.entries(), rig.settings("flat"))
    assert [type(r) for r in replaced.removals] == [Forget]
    # as when another transfer of the pass failed: the executor postpones every removal
    rig.executor.run(dataclasses.replace(replaced, removals=()))
    following = plan(rig.local(), rig.index.entries(), rig.settings("flat"))
    rig.executor.run(following)
    assert not any(isinstance(r, Delete) for r in following.removals)
    assert rig.target() == {"x.pdf": b"new"}
    assert [(e.src, e.dst) for e in rig.index.entries().values()] == [("b/x.pdf", "x.pdf")]
    rig.close()


def test_a_row_left_for_the_same_file_on_a_target_that_ignores_case_is_forgotten_not_deleted() -> None:
    # the index holds one row per exact path: Inv.pdf and inv.pdf are one file on this target
    flat = PlanSettings(Layout.parse("flat"), DeletePolicy.MIRROR, Capabilities(case_sensitive=False))
    index = {"a/Inv.pdf": known("a/Inv.pdf", "Inv.pdf"), "b/inv.pdf": known("b/inv.pdf", "inv.pdf")}
    result = plan({"b/inv.pdf": entry("b/inv.pdf")}, index, flat)
    assert result.removals == (Forget("a/Inv.pdf", "replaced by another file"),)
    # where case tells files apart, the other row is another file: the gone one is deleted
    sensitive = plan({"b/inv.pdf": entry("b/inv.pdf")}, index, dataclasses.replace(flat, caps=Capabilities()))
    assert [type(r) for r in sensitive.removals] == [Delete]


def test_unsafe_layout_results_are_refused() -> None:
    lay = PlanSettings(Layout.parse("{stem}"), DeletePolicy.MIRROR, Capabilities())
    result = plan({"a/...": entry("a/...")}, {}, lay)
    assert isinstance(result.refusals[0], Refuse) and result.transfers == ()


#: names an older mirror sent, or the same target under other rules: some today's rules
#: refuse (';', '?', a trailing dot or space), some they take for one (case twins, a
#: name's two Unicode spellings)
OLD_NAMES = st.text(st.sampled_from([*"aAbe;?. ", "\u00e9", "\u00c9", "\u0301"]), min_size=1, max_size=3).filter(
    lambda n: n.strip(".") != ""
)
old_trees = st.lists(
    st.tuples(st.lists(OLD_NAMES, min_size=1, max_size=2).map("/".join), st.binary(max_size=6)), max_size=10
).map(lambda items: dict((p, data) for p, data in items if p in _prefix_free([q for q, _ in items])))
#: the target's rules of today
todays_rules = st.builds(
    lambda chars, trailing, folded: Capabilities(
        server_side_move=True, case_sensitive=not folded, forbidden_chars=chars, forbidden_trailing=trailing
    ),
    st.sampled_from(["", ";", ";?"]),
    st.sampled_from(["", " ."]),
    st.booleans(),
)


@settings(max_examples=120, deadline=None)
# WebDAV after a9b0797: 'offer;v1.pdf' and 'offer;v2.pdf' were both sent (to 'offer')
@example(
    tree={"offer;v1.pdf": b"v1", "offer;v2.pdf": b"v2"},
    layout="tree",
    rules=Capabilities(server_side_move=True, forbidden_chars=";?"),
    changes=[],
    listed=True,
    incremental=False,
)
# a file sent under a name refused now, removed from the source: never deleted by that name
@example(
    tree={"ok": b"a", "x;1": b"b"},
    layout="tree",
    rules=Capabilities(server_side_move=True, forbidden_chars=";"),
    changes=[("delete", 1)],
    listed=False,
    incremental=False,
)
# ... renamed to a name the target takes: sent there, never moved from the refused name
@example(
    tree={"x;1": b"b"},
    layout="tree",
    rules=Capabilities(server_side_move=True, forbidden_chars=";"),
    changes=[("rename", 0)],
    listed=False,
    incremental=True,
)
# smb after d6860d2: Inv.pdf and inv.pdf were two files, now one name
@example(
    tree={"Inv.pdf": b"upper", "inv.pdf": b"lower"},
    layout="tree",
    rules=Capabilities(server_side_move=True, case_sensitive=False),
    changes=[],
    listed=False,
    incremental=False,
)
# A and a, one file on a target that folds case, the last sent's bytes: a gone, A was
# trusted as it was, and the next pass with a listing found it different
@example(
    tree={"A": b"", "a": b"\x00"},
    layout="tree",
    rules=Capabilities(server_side_move=True, case_sensitive=False),
    changes=[("delete", 1)],
    listed=False,
    incremental=False,
)
# the same, A renamed: moved, the one file took a's bytes to the new name (when a went last)
@example(
    tree={"A": b"", "a": b"\x00\x00\x00\x00"},
    layout="tree",
    rules=Capabilities(server_side_move=True, case_sensitive=False),
    changes=[("rename", 0)],
    listed=False,
    incremental=False,
)
# the same, with files deleted before and after the rename
@example(
    tree={";": b"", "A": b"\x00", "a": b"", "b": b"", ";;": b"", "A;": b"", ";;;": b""},
    layout="tree",
    rules=Capabilities(server_side_move=True, case_sensitive=False),
    changes=[("delete", 0), ("rename", 14), ("delete", 13)],
    listed=False,
    incremental=False,
)
# a copy left under a name refused now ('É/ ', a trailing space) holds the folder that a
# file of the name the target folds it to needs: sent anew, and failing, at each pass
@example(
    tree={"é": b"", "É/ ": b""},
    layout="tree",
    rules=Capabilities(server_side_move=True, case_sensitive=False, forbidden_trailing=" ."),
    changes=[],
    listed=False,
    incremental=False,
)
@given(
    tree=old_trees,
    layout=st.sampled_from(["tree", "flat", "by-year"]),
    rules=todays_rules,
    changes=st.lists(st.tuples(st.sampled_from(["delete", "edit", "rename"]), st.integers(0, 20)), max_size=3),
    listed=st.booleans(),
    incremental=st.booleans(),
)
def test_rows_sent_under_other_rules_never_lead_to_a_refused_name_or_two_files_on_one_path(
    tree: dict[str, bytes],
    layout: str,
    rules: Capabilities,
    changes: list[tuple[str, int]],
    listed: bool,
    incremental: bool,
) -> None:
    """An index filled under other naming rules (an older mirror, or the target's rules
    changed since) is planned by today's: nothing is sent to a name the target refuses,
    no delete or move reaches one, no two files go to one path, and what was sent under
    a refused name is left on the target. After one pass the index holds no such row, and
    the next pass has nothing to send."""
    with tempfile.TemporaryDirectory() as tmp:
        rig = Rig(Path(tmp), Capabilities(server_side_move=True))
        # the target folds case all along; the first copy's rules did not know it
        driver_class = MemoryDriver if rules.case_sensitive else FoldingMemoryDriver
        rig.driver = driver_class(rig.driver.fs, rig.root, rig.driver.caps)
        # one at a time: of two files that fold to one name, sent at once under rules that
        # did not know, which one the target kept changed from run to run, and hypothesis
        # found a failure it could not reproduce
        rig.executor = Executor(rig.driver, rig.index, rig.source, 1, threading.Event())
        rig.write(tree)
        rig.executor.run(plan(rig.local(), {}, rig.settings(layout), remote={}))
        touched: set[str] = set()
        for kind, n in changes:
            existing = sorted(p for p in tree if (rig.source / p).exists())
            if not existing:
                break
            rel = existing[n % len(existing)]
            touched.add(rel)
            if kind == "delete":
                os.unlink(rig.source / rel)
            elif kind == "edit":
                rig.write({rel: tree[rel] + b"+edit"})
            elif not (rig.source / (new := f"{rel}-renamed" if n % 2 else f"renamed{n}")).exists():
                os.rename(rig.source / rel, rig.source / new)  # a name today's rules may take
                touched.add(new)
        before = rig.target()
        # the same target, held to today's rules
        rig.driver = driver_class(rig.driver.fs, rig.root, rules)
        rig.executor = Executor(rig.driver, rig.index, rig.source, 3, threading.Event())
        key = path_key(rules.case_sensitive)

        def refused(path: str) -> bool:
            return refused_name(path, rules) is not None

        local = rig.local()
        settings_ = rig.settings(layout, max_delete=1000)
        if incremental:
            # a watch pass of the changed paths, the index asked row by row
            mine = {p: e for p, e in local.items() if p in touched}
            asked = known_files(rig, touched, touched, rig.index.count())
            step = plan(mine, asked, settings_, scope=touched)
        else:
            step = plan(local, rig.index.entries(), settings_, remote=rig.driver.list() if listed else None)
        sent = [*step.moves, *step.transfers]
        assert not [a.dst for a in sent if refused(a.dst)]
        assert not [m.old_dst for m in step.moves if refused(m.old_dst)]
        removed = [r for r in (*step.early, *step.removals) if isinstance(r, (Delete, Trash))]
        assert not [r.dst for r in removed if refused(r.dst)]
        # one file per path of the target: no two sent there, nor one where a row stays
        assert len({key(a.dst) for a in sent}) == len(sent)
        rig.executor.run(step)
        after = rig.target()
        # what was sent under a name refused now stays on the target as it was
        assert {p: d for p, d in before.items() if refused(p)} == {p: d for p, d in after.items() if refused(p)}
        if incremental:
            rig.close()
            return
        rows = rig.index.entries()
        assert not [e.dst for e in rows.values() if refused(e.dst)]
        assert len({key(e.dst) for e in rows.values()}) == len(rows)
        # each source file is on the target, or failed with its reason
        failures = {f.src: f.error for f in rig.index.failures()}
        assert set(local) <= set(rows) | set(failures)
        assert all(failures.values())
        for checked in (False, True):  # as the next pass, and as any later one trusting the rows
            again = plan(local, rig.index.entries(), settings_, remote=rig.driver.list(), rows_checked=checked)
            assert again.transfers == again.moves == again.unfit == ()
            assert {r.src for r in again.refusals} == set(failures) & set(local)
        rig.close()


WIDE_NAMES = st.text(
    st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="/"), min_size=1, max_size=6
).filter(lambda n: n not in (".", ".."))


@settings(max_examples=80, deadline=None)
@given(
    indexed=st.sets(st.lists(WIDE_NAMES, min_size=1, max_size=3).map("/".join), max_size=25),
    fresh=st.sets(st.lists(WIDE_NAMES, min_size=1, max_size=3).map("/".join), max_size=10),
    changed_every=st.integers(min_value=1, max_value=5),
)
def test_narrowing_keeps_exactly_the_new_changed_and_gone_paths(
    indexed: set[str], fresh: set[str], changed_every: int
) -> None:
    """The merge of a scan with the index (sqlite's order) never loses or invents a path."""
    tree = Layout.parse("tree")
    rows = sorted(indexed)
    with tempfile.TemporaryDirectory() as tmp:
        index = Index(Path(tmp) / "index.sqlite")
        for src in rows:
            index.record(known(src))
        index.flush()
        present = rows[::2]
        changed = set(present[::changed_every])
        local = {src: entry(src, size=2 if src in changed else 1) for src in present}
        local.update({src: entry(src) for src in fresh - indexed})
        kept, scope, total = narrow(Entries(local.items()), index.stamps(), tree)
        index.close()
    gone = indexed - set(present)
    assert total == len(indexed)
    assert set(kept) == changed | gone
    assert scope == (fresh - indexed) | changed | gone


def test_narrowing_keeps_the_files_another_file_took_the_place_of() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        index = Index(Path(tmp) / "index.sqlite")
        for src, ino in (("a", 1), ("b", 2), ("c", 3), ("d", 0)):
            index.record(known(src, ino=ino))
        index.flush()
        local = Entries((src, entry(src, ino=ino)) for src, ino in (("a", 2), ("b", 1), ("c", 3), ("d", 9)))
        kept, scope, _ = narrow(local, index.stamps(), Layout.parse("tree"))
        renumbered, _, _ = narrow(local, index.stamps(), Layout.parse("tree"), stable_inodes=False)
        index.close()
    assert kept == scope == {"a", "b"}
    assert renumbered == set()


@pytest.mark.parametrize(
    ("held", "new", "gone", "refused"),
    [
        ({"old.pdf": "x/a"}, "x/a/b.pdf", [], True),  # a file stays where a folder is needed
        ({"old.pdf": "x/a/b.pdf"}, "x/a", [], True),  # a file stays below the new path
        ({"old.pdf": "x/a/b.pdf"}, "x/a", ["old.pdf"], False),  # ... unless it leaves
        ({"old.pdf": "x/a/b.pdf", "old2.pdf": "x/a/c.pdf"}, "x/a", ["old.pdf"], True),
        ({"old.pdf": "x/a b/c.pdf", "old2.pdf": "x/a0/c.pdf"}, "x/a", [], False),  # neighbours only
        ({"old.pdf": "x"}, "x/a/b.pdf", [], True),  # any folder above
    ],
)
def test_an_asked_index_refuses_file_folder_clashes_as_a_read_one(
    held: dict[str, str], new: str, gone: list[str], refused: bool
) -> None:
    """Watch mode asks the index about a new file's surroundings; a full read must agree."""
    settings_ = PlanSettings(Layout.parse("tree"), DeletePolicy.MIRROR, Capabilities(), None)
    with tempfile.TemporaryDirectory() as tmp:
        index = Index(Path(tmp) / "index.sqlite")
        for src, dst in held.items():
            index.record(known(src, dst))
        local = {src: entry(src) for src in held if src not in gone} | {new: entry(new)}
        scope = {new, *gone}
        read = plan(local, index.entries(), settings_, scope=scope)
        asked = KnownFiles(
            index.lookup_many(scope), scope, index.count(), index.rows, index.lookup, index.targets,
            index.holders, index.held_below,
        )  # fmt: skip
        assert asked.answers_by_path
        same = plan(local, asked, settings_, scope=scope)
        index.close()
    assert same_plan(same, read)
    assert [r.src for r in same.refusals if "clashes" in r.reason] == ([new] if refused else [])


@pytest.mark.parametrize("layout", ["tree", "by-year"])
def test_narrowing_keeps_unchanged_files_the_layout_now_puts_elsewhere(layout: str) -> None:
    """Back to the tree layout (or to another one), a file laid out elsewhere must move."""
    with tempfile.TemporaryDirectory() as tmp:
        index = Index(Path(tmp) / "index.sqlite")
        index.record(known("a/in-place.pdf", "2023/a/in-place.pdf" if layout == "by-year" else None))
        index.record(known("a/moved.pdf", "a/moved.pdf" if layout == "by-year" else "2023/a/moved.pdf"))
        index.flush()
        local = {src: entry(src) for src in ("a/in-place.pdf", "a/moved.pdf")}
        kept, scope, total = narrow(Entries(local.items()), index.stamps(), Layout.parse(layout))
        index.close()
    assert (kept, scope, total) == ({"a/moved.pdf"}, {"a/moved.pdf"}, 2)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.sets(st.lists(WIDE_NAMES, min_size=1, max_size=3).map("/".join), max_size=20),
    held=st.lists(st.lists(WIDE_NAMES, min_size=0, max_size=2).map("/".join), max_size=3),
)
@example(rows={"a/b", "a/b/c.pdf", "a/b c.pdf", "a/b0", "a/b0/x.pdf", "a/b-/y.pdf", "a/bc"}, held=["a/b"])
def test_rows_under_held_paths_are_exactly_those_at_or_below_them(rows: set[str], held: list[str]) -> None:
    """What an unreadable folder holds back: neither a neighbour like "a/b c" nor "a/b0"."""
    with tempfile.TemporaryDirectory() as tmp:
        index = Index(Path(tmp) / "index.sqlite")
        for src in rows:
            index.record(known(src))
        found = index.under(held)
        index.close()
    assert found == {r for r in rows for h in held if not h or r == h or r.startswith(h + "/")}


def test_lookup_many_finds_exactly_the_rows_asked_for_across_query_batches() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        index = Index(Path(tmp) / "index.sqlite")
        for i in range(1200):
            index.record(known(f"d{i % 7}/f{i:04}.pdf"))
        index.flush()
        present = [f"d{i % 7}/f{i:04}.pdf" for i in range(1100)]
        found = index.lookup_many([*present, "nowhere.pdf", "d1/f9999.pdf"])
        assert set(found) == set(present)
        assert all(found[src] == index.lookup(src) for src in present[::97])
        assert index.lookup_many([]) == {}
        index.close()
