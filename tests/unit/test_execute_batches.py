"""Small files sent in batches (Driver.send_batch): what fails in a batch is sent again
alone, a file that changes while its batch is out is sent again, nothing is left behind.
Moves and deletes in batches (Driver.move_batch, delete_batch): what fails in a batch is
done again alone, with the single path's fallbacks."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from backends.memory import MemoryDriver
from mirror.driver import BatchPut, Capabilities, RemoteEntry
from mirror.errors import FatalError, ItemError, MirrorError, TransientError
from mirror.execute import BATCH_FILE_BYTES, RetryPolicy, RunStats
from mirror.plan import plan
from mirror.policy import DeletePolicy
from tests.unit.test_plan import BatchingMemoryDriver, Rig

TREE = {f"invoices/{i:02}.pdf": b"invoice %d" % i for i in range(8)}


class Rigged(BatchingMemoryDriver):
    """Records each batch and runs ``hook`` on it, which may answer for its items; deletes
    fail while ``deletes_refused`` lasts."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.batches: list[list[str]] = []
        #: deletes that fail as if the connection were down
        self.deletes_refused = 0
        self.delete_attempts = 0
        self.hook: Callable[[Sequence[BatchPut]], Sequence[MirrorError | None] | None] = lambda items: None

    def send_batch(self, items: Sequence[BatchPut]) -> Sequence[MirrorError | None]:
        self.batches.append([item.dst for item in items])
        forced = self.hook(items)
        return forced if forced is not None else super().send_batch(items)

    def delete(self, rel: str) -> None:
        self.delete_attempts += 1
        if self.deletes_refused:
            self.deletes_refused -= 1
            raise ConnectionResetError("connection lost")
        super().delete(rel)

    def move_batch(self, moves: Sequence[tuple[str, str]]) -> Sequence[MirrorError | None]:
        self.batches.append([f"move {dst}" for _, dst in moves])
        return super().move_batch(moves)

    def delete_batch(self, rels: Sequence[str]) -> Sequence[MirrorError | None]:
        self.batches.append([f"delete {rel}" for rel in rels])
        return super().delete_batch(rels)


@pytest.fixture
def rig() -> Iterator[Rig]:
    with tempfile.TemporaryDirectory() as tmp:
        made = Rig(Path(tmp), batched=True)
        made.driver = Rigged(made.driver.fs, made.root, made.driver.caps)
        made.executor.driver = made.driver
        made.write(TREE)
        yield made
        made.close()


def first_copy(rig: Rig) -> RunStats:
    return rig.executor.run(plan(rig.local(), {}, rig.settings("tree"), remote={}))


def test_small_files_go_in_batches_and_land_whole(rig: Rig) -> None:
    stats = first_copy(rig)
    assert stats.uploaded == len(TREE) and not stats.failed
    assert rig.target() == TREE
    assert sorted(len(b) for b in rig.driver.batches) == [2, 3, 3]  # batches go out in parallel
    assert set(rig.index.entries()) == set(TREE)


def test_a_file_that_fails_in_its_batch_is_sent_again_alone(rig: Rig) -> None:
    def refuse_one(items: Sequence[BatchPut]) -> Sequence[MirrorError | None] | None:
        # the temp file is written, then the rename is refused
        refused = [item for item in items if item.dst == "invoices/04.pdf"]
        for item in refused:
            rig.driver.put(item.local_path, item.tmp, item.mtime_ns)
        rest = BatchingMemoryDriver.send_batch(rig.driver, [item for item in items if item not in refused])
        outcomes = iter(rest)
        return [ItemError("refused") if item in refused else next(outcomes) for item in items]

    rig.driver.hook = refuse_one
    stats = first_copy(rig)
    assert stats.uploaded == len(TREE) and not stats.failed
    assert rig.target() == TREE  # sent alone on the second try, and no temp file left
    assert rig.index.failures() == []


def test_a_batch_that_fails_whole_sends_each_file_alone(rig: Rig) -> None:
    def drop(items: Sequence[BatchPut]) -> Sequence[MirrorError | None] | None:
        raise TransientError("connection lost")

    rig.driver.hook = drop
    stats = first_copy(rig)
    assert stats.uploaded == len(TREE) and not stats.failed
    assert rig.target() == TREE


def test_a_file_changed_while_its_batch_was_out_is_sent_again(rig: Rig) -> None:
    changed = rig.source / "invoices/01.pdf"

    def edit_once(items: Sequence[BatchPut]) -> Sequence[MirrorError | None] | None:
        outcomes = BatchingMemoryDriver.send_batch(rig.driver, items)
        if any(item.dst == "invoices/01.pdf" for item in items):
            changed.write_bytes(b"invoice 1, corrected and longer")
            rig.driver.hook = lambda items: None
        return outcomes

    rig.driver.hook = edit_once
    stats = first_copy(rig)
    assert not stats.failed
    assert rig.target()["invoices/01.pdf"] == b"invoice 1, corrected and longer"
    recorded = rig.index.entries()["invoices/01.pdf"]
    assert recorded.size == len(b"invoice 1, corrected and longer")


def test_a_batch_is_in_the_index_even_when_sending_one_of_its_files_again_fails_the_pass(rig: Rig) -> None:
    corrected = b"invoice 1, corrected and longer"

    def edit_once(items: Sequence[BatchPut]) -> Sequence[MirrorError | None] | None:
        outcomes = BatchingMemoryDriver.send_batch(rig.driver, items)
        if any(item.dst == "invoices/01.pdf" for item in items):
            (rig.source / "invoices/01.pdf").write_bytes(corrected)
            rig.driver.hook = lambda items: None
        return outcomes

    put = rig.driver.put

    def put_unless_corrected(local_path: str, rel: str, mtime_ns: int) -> None:
        if Path(local_path).read_bytes() == corrected:
            raise FatalError("the target's storage is full")
        put(local_path, rel, mtime_ns)

    rig.driver.hook = edit_once
    rig.driver.put = put_unless_corrected  # type: ignore[method-assign]
    stats = first_copy(rig)
    assert stats.fatal == "the target's storage is full"
    batch = next(b for b in rig.driver.batches if "invoices/01.pdf" in b)
    recorded = rig.index.entries()
    # its other files are on the target: they must be known, or no later pass owns them
    assert {dst for dst in batch if dst != "invoices/01.pdf"} <= set(recorded)
    # known as the version that landed: the next pass sees the edit and sends it again
    assert recorded["invoices/01.pdf"].size == len(TREE["invoices/01.pdf"])
    following = plan(rig.local(), recorded, rig.settings("tree"))
    assert "invoices/01.pdf" in {a.src for a in following.transfers}


def test_a_file_unreadable_after_its_batch_fails_alone(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    unreadable = str(rig.source / "invoices/03.pdf")
    stat = os.stat

    def deny(path: str, *args: object, **kwargs: object) -> os.stat_result:
        if path == unreadable:
            raise PermissionError(13, "Permission denied", path)
        return stat(path, *args, **kwargs)  # type: ignore[arg-type]

    def lock_after_sending(items: Sequence[BatchPut]) -> Sequence[MirrorError | None] | None:
        outcomes = BatchingMemoryDriver.send_batch(rig.driver, items)
        if any(item.dst == "invoices/03.pdf" for item in items):
            monkeypatch.setattr(os, "stat", deny)
        return outcomes

    rig.driver.hook = lock_after_sending
    stats = first_copy(rig)
    assert stats.failed == [("invoices/03.pdf", "cannot read the source file (Permission denied)")]
    # it reached the target: known as the version sent, or nothing would own that copy
    assert set(rig.index.entries()) == set(TREE)
    assert [f.src for f in rig.index.failures()] == ["invoices/03.pdf"]


def test_a_file_gone_while_its_batch_was_out_is_taken_off_the_target_by_the_next_pass(rig: Rig) -> None:
    gone = rig.source / "invoices/02.pdf"

    def delete(items: Sequence[BatchPut]) -> Sequence[MirrorError | None] | None:
        outcomes = BatchingMemoryDriver.send_batch(rig.driver, items)
        if gone.exists() and any(item.dst == "invoices/02.pdf" for item in items):
            os.unlink(gone)
        return outcomes

    rig.driver.hook = delete
    stats = first_copy(rig)
    assert not stats.failed and "invoices/02.pdf" in rig.target()
    rig.executor.run(plan(rig.local(), rig.index.entries(), rig.settings("tree")))
    assert rig.target() == {rel: data for rel, data in TREE.items() if rel != "invoices/02.pdf"}
    assert "invoices/02.pdf" not in rig.index.entries()


class MovedAway(MemoryDriver):
    """Moves the source file away once it has been sent, as a program that writes a file
    and then files it elsewhere."""

    def __init__(self, *args: object, source: Path) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.source: Path | None = source

    def put(self, local_path: str, rel: str, mtime_ns: int) -> RemoteEntry | None:
        landed = super().put(local_path, rel, mtime_ns)
        if self.source is not None:
            (self.source / "filed").mkdir(exist_ok=True)
            os.rename(self.source / rel, self.source / "filed" / Path(rel).name)
        return landed


def test_a_file_moved_away_while_it_was_sent_alone_ends_up_only_at_its_new_path() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rig = Rig(Path(tmp), Capabilities(server_side_move=True))
        rig.driver = MovedAway(rig.driver.fs, rig.root, rig.driver.caps, source=rig.source)
        rig.executor.driver = rig.driver
        rig.write({"invoice.pdf": b"total 100.00"})
        first_copy(rig)
        rig.driver.source = None
        rig.executor.run(plan(rig.local(), rig.index.entries(), rig.settings("tree")))
        assert rig.target() == {"filed/invoice.pdf": b"total 100.00"}
        rig.close()


def test_large_files_are_not_batched(rig: Rig) -> None:
    (rig.source / "scan.tif").write_bytes(b"x" * BATCH_FILE_BYTES)
    stats = first_copy(rig)
    assert not stats.failed
    assert all("scan.tif" not in dst for batch in rig.driver.batches for dst in batch)
    assert rig.target()["scan.tif"] == b"x" * BATCH_FILE_BYTES


def test_temp_files_a_lost_connection_kept_are_removed_by_the_end_of_the_pass(rig: Rig) -> None:
    def drop_after_writing(items: Sequence[BatchPut]) -> Sequence[MirrorError | None] | None:
        for item in items:
            rig.driver.put(item.local_path, item.tmp, item.mtime_ns)
        # the connection is down for the cleanup too, which stops at its first refusal
        rig.driver.deletes_refused = 1
        rig.driver.hook = lambda items: None
        raise TransientError("connection lost")

    rig.driver.hook = drop_after_writing
    stats = first_copy(rig)
    assert stats.uploaded == len(TREE) and not stats.failed
    assert rig.target() == TREE
    assert not rig.executor.temps


def test_cleaning_up_temp_files_stops_at_the_first_the_target_cannot_be_reached_for(rig: Rig) -> None:
    # at shutdown with the target gone, each attempt could wait for a connection timeout
    rig.executor.temps.update({"a/.~mirror-1.tmp", "b/.~mirror-2.tmp", "c/.~mirror-3.tmp"})
    rig.driver.deletes_refused = 100
    rig.executor.remove_temps()
    assert rig.driver.delete_attempts == 1
    assert len(rig.executor.temps) == 3  # still listed, for a later try


def test_temp_files_the_target_cannot_remove_are_left_to_a_listing_pass(rig: Rig) -> None:
    rig.executor.temps.add("a/.~mirror-1.tmp")
    rig.driver.deletes_refused = 100  # unreachable for the whole pass
    first_copy(rig)
    assert not rig.executor.temps  # the list does not grow while a target stays down


class ReplyLost(MemoryDriver):
    """Renames, then loses the reply once, as a connection that drops at that moment."""

    lost = False

    def move(self, src: str, dst: str) -> None:
        super().move(src, dst)
        if not self.lost:
            self.lost = True
            raise ConnectionResetError("connection lost before the reply")


def test_a_rename_whose_reply_was_lost_counts_as_done() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rig = Rig(Path(tmp), Capabilities(atomic_rename=True))
        rig.driver = ReplyLost(rig.driver.fs, rig.root, rig.driver.caps)
        rig.executor.driver = rig.driver
        rig.executor.retry = RetryPolicy(initial=0.01)
        rig.write({"invoice.pdf": b"paid"})
        stats = first_copy(rig)
        assert rig.driver.lost
        assert stats.uploaded == 1 and not stats.failed
        assert rig.target() == {"invoice.pdf": b"paid"}
        assert rig.index.failures() == []
        rig.close()


class Truncating(MemoryDriver):
    """Stores one byte less than it is sent and says so, as a target that damages uploads."""

    damaging = True

    def put(self, local_path: str, rel: str, mtime_ns: int) -> RemoteEntry | None:
        super().put(local_path, rel, mtime_ns)
        if not self.damaging:
            return None
        data = self.fs.cat_file(self.full(rel))[:-1]
        self.fs.pipe_file(self.full(rel), data)
        return RemoteEntry(rel, len(data))


def test_a_file_the_target_holds_short_after_sending_fails_and_is_sent_again() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rig = Rig(Path(tmp))
        rig.driver = Truncating(rig.driver.fs, rig.root, rig.driver.caps)
        rig.executor.driver = rig.driver
        rig.write({"invoice.pdf": b"total 100.00\r"})
        stats = first_copy(rig)
        assert stats.uploaded == 0
        [(src, reason)] = stats.failed
        assert src == "invoice.pdf" and "holds 12 bytes after 13 were sent" in reason
        assert "invoice.pdf" not in rig.index.entries()
        rig.driver.damaging = False
        again = rig.executor.run(plan(rig.local(), rig.index.entries(), rig.settings("tree")))
        assert again.uploaded == 1
        assert rig.target() == {"invoice.pdf": b"total 100.00\r"}
        rig.close()


class Shortened(MemoryDriver):
    """The source file is cut shorter during its upload, which the upload refuses (as the
    cloud drivers do when a session cannot reach the size it began with)."""

    cut: Path | None = None

    def put(self, local_path: str, rel: str, mtime_ns: int) -> RemoteEntry | None:
        if self.cut is not None:
            self.cut.write_bytes(b"short")
            self.cut = None
            raise ItemError(f"{rel} got shorter while it was sent")
        return super().put(local_path, rel, mtime_ns)


def test_a_file_cut_shorter_while_it_was_sent_is_sent_again_once_it_settles() -> None:
    """The scanner rewrote it shorter under its upload session: it may still be being
    written, so it is not sent again at once (a commit then may hold half of it); the pass
    names it, and the next one (in watch mode: once it has settled) sends the new version."""
    with tempfile.TemporaryDirectory() as tmp:
        rig = Rig(Path(tmp))
        # sent in place, as Dropbox and OneDrive send (a temp name's batch sends it again)
        rig.driver = Shortened(rig.driver.fs, rig.root, dataclasses.replace(rig.driver.caps, atomic_put=True))
        rig.executor.driver = rig.driver
        rig.write({"scan.tif": b"a long first version"})
        rig.driver.cut = rig.source / "scan.tif"
        stats = first_copy(rig)
        [(src, reason)] = stats.failed
        assert src == "scan.tif" and "changed while it was sent" in reason and stats.uploaded == 0
        assert rig.target() == {}
        again = rig.executor.run(plan(rig.local(), rig.index.entries(), rig.settings("tree")))
        assert again.uploaded == 1 and not again.failed, again
        assert rig.target() == {"scan.tif": b"short"}
        rig.close()


def batched(rig: Rig, verb: str) -> list[int]:
    return sorted(len(b) for b in rig.driver.batches if b[0].startswith(f"{verb} "))


@pytest.fixture
def movable(rig: Rig) -> Rig:
    """A rig whose target moves files itself (renames become moves), and a source file
    that stays, so that deleting the rest is no empty source for the delete guard."""
    rig.driver.caps = dataclasses.replace(rig.driver.caps, server_side_move=True)
    rig.write({"keep.pdf": b"stays"})
    return rig


def delete_tree(rig: Rig, policy: DeletePolicy = DeletePolicy.MIRROR) -> RunStats:
    """Delete every file of TREE from the source and run the pass that follows."""
    for rel in TREE:
        (rig.source / rel).unlink()
    settings = rig.settings("tree", delete=policy, max_delete=100)
    return rig.executor.run(plan(rig.local(), rig.index.entries(), settings))


def test_a_renamed_folder_is_moved_and_a_deleted_one_removed_in_batches(movable: Rig) -> None:
    rig = movable
    first_copy(rig)
    os.rename(rig.source / "invoices", rig.source / "filed")
    stats = rig.executor.run(plan(rig.local(), rig.index.entries(), rig.settings("tree")))
    assert stats.moved == len(TREE) and stats.uploaded == 0 and not stats.failed
    assert batched(rig, "move") == [2, 3, 3]
    moved = {rel.replace("invoices/", "filed/"): data for rel, data in TREE.items()} | {"keep.pdf": b"stays"}
    assert rig.target() == moved
    assert set(rig.index.entries()) == set(moved)
    for path in (rig.source / "filed").iterdir():
        path.unlink()
    stats = rig.executor.run(plan(rig.local(), rig.index.entries(), rig.settings("tree", max_delete=100)))
    assert stats.deleted == len(TREE) and not stats.failed
    assert batched(rig, "delete") == [2, 3, 3]
    assert rig.target() == {"keep.pdf": b"stays"} and set(rig.index.entries()) == {"keep.pdf"}


def test_a_few_moves_are_spread_over_every_worker(movable: Rig) -> None:
    # one batch of 8 would take one worker, and a target that moves a batch one file at
    # a time would lose its parallel requests
    rig = movable
    rig.driver.batch_files = 64
    first_copy(rig)
    os.rename(rig.source / "invoices", rig.source / "filed")
    stats = rig.executor.run(plan(rig.local(), rig.index.entries(), rig.settings("tree")))
    assert stats.moved == len(TREE) and batched(rig, "move") == [2, 3, 3]


def test_deleted_files_go_to_the_trash_folder_in_batches(movable: Rig) -> None:
    rig = movable
    first_copy(rig)
    stats = delete_tree(rig, DeletePolicy.TRASH)
    assert stats.deleted == len(TREE) and not stats.failed
    assert batched(rig, "move") == [2, 3, 3]
    trashed = {f".mirror-trash/2026-01-02/{rel}": data for rel, data in TREE.items()}
    assert rig.target() == trashed | {"keep.pdf": b"stays"}
    assert set(rig.index.entries()) == {"keep.pdf"}


def test_a_move_whose_old_copy_vanished_from_the_target_sends_the_file_again(movable: Rig) -> None:
    rig = movable
    first_copy(rig)
    rig.driver.delete("invoices/05.pdf")  # behind mirror's back
    os.rename(rig.source / "invoices", rig.source / "filed")
    stats = rig.executor.run(plan(rig.local(), rig.index.entries(), rig.settings("tree")))
    assert stats.moved == len(TREE) - 1 and stats.uploaded == 1 and not stats.failed
    assert rig.target() == {rel.replace("invoices/", "filed/"): data for rel, data in TREE.items()} | {
        "keep.pdf": b"stays"
    }


def test_a_delete_of_a_file_already_gone_from_the_target_counts_as_done(movable: Rig) -> None:
    rig = movable
    first_copy(rig)
    rig.driver.delete("invoices/05.pdf")
    stats = delete_tree(rig)
    assert stats.deleted == len(TREE) and not stats.failed
    assert rig.target() == {"keep.pdf": b"stays"} and set(rig.index.entries()) == {"keep.pdf"}


def test_a_delete_lost_to_a_dropped_connection_is_made_again_alone(movable: Rig) -> None:
    rig = movable
    first_copy(rig)
    rig.driver.deletes_refused = 1
    stats = delete_tree(rig)
    assert stats.deleted == len(TREE) and not stats.failed
    assert rig.target() == {"keep.pdf": b"stays"}


def test_a_batch_tries_no_further_file_once_the_target_seems_down(rig: Rig) -> None:
    first_copy(rig)
    rig.driver.deletes_refused = 100
    outcomes = rig.driver.delete_batch(list(TREE))
    assert len(outcomes) == len(TREE) and all(isinstance(o, TransientError) for o in outcomes)
    # on a target that is gone, each file would wait out a timeout of its own
    assert rig.driver.delete_attempts == 1


class Frozen(Rigged):
    """A server that stops answering once its first batch is in: every later call fails
    as a timeout would (each waits out the connection's timeout in real life), counted."""

    frozen = False
    calls_frozen = 0

    def _answer(self) -> None:
        if self.frozen:
            self.calls_frozen += 1
            raise TimeoutError("timed out")

    def send_batch(self, items: Sequence[BatchPut]) -> Sequence[MirrorError | None]:
        self._answer()
        self.frozen = True
        return super().send_batch(items)

    def put(self, local_path: str, rel: str, mtime_ns: int) -> None:
        self._answer()
        super().put(local_path, rel, mtime_ns)

    def delete(self, rel: str) -> None:
        self._answer()
        super().delete(rel)


def test_a_server_that_stops_answering_ends_the_pass_after_few_timeouts(rig: Rig) -> None:
    """An SFTP server frozen mid first copy (a hung NAS): each failed batch removed its
    temp files one by one, and each file was then tried five times, every try waiting
    out the timeout: 8 files of 5 tries, and 64 removals a batch, held `mirror run --once`
    for over 10 minutes without a word. Once a file has given up, the others get one try
    each, and no removal is tried while the target looks down."""
    rig.write({f"scans/{i:03}.pdf": b"scan %d" % i for i in range(60)})
    rig.driver = Frozen(rig.driver.fs, rig.root, rig.driver.caps)
    rig.executor.driver = rig.driver
    rig.executor.retry = RetryPolicy(attempts=5, initial=0.001, maximum=0.002)
    stats = first_copy(rig)
    assert stats.down is not None and "target unreachable" in stats.down, stats
    # the first files alone (a worker each) with all their tries, then a try for each of
    # the files down_after asks for and for each batch that workers took meanwhile (76 before)
    assert rig.driver.calls_frozen <= 40, rig.driver.calls_frozen
