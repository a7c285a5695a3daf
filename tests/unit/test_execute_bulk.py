"""Large files go out at most ``Driver.bulk_concurrency`` at a time (SFTP: two), while
every other transfer keeps the target's full concurrency."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.memory import MemoryDriver
from mirror import execute
from mirror.execute import Executor
from mirror.plan import plan
from tests.unit.test_plan import Rig

WAIT_S = 10


class Overlapping(MemoryDriver):
    """Each put waits for ``parties`` puts of its kind to be under way at once (a barrier,
    so the test does not depend on timing) and records the most that ever were."""

    bulk_concurrency = 2

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lock = threading.Lock()
        self.parties = {"large": 2, "small": 4}
        self.barriers = {kind: threading.Barrier(n, timeout=WAIT_S) for kind, n in self.parties.items()}
        self.active = dict.fromkeys(self.parties, 0)
        self.most = dict.fromkeys(self.parties, 0)

    def put(self, local_path: str, rel: str, mtime_ns: int) -> None:
        kind = "large" if os.path.getsize(local_path) >= execute.BULK_FILE_BYTES else "small"
        with self.lock:
            self.active[kind] += 1
            self.most[kind] = max(self.most[kind], self.active[kind])
        try:
            self.barriers[kind].wait()
            super().put(local_path, rel, mtime_ns)
        finally:
            with self.lock:
                self.active[kind] -= 1


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    # 64 KiB counts as large here, so the test needs no 8 MiB files
    monkeypatch.setattr(execute, "BULK_FILE_BYTES", 64 * 1024)
    with tempfile.TemporaryDirectory() as tmp:
        made = Rig(Path(tmp))
        made.driver = Overlapping(made.driver.fs, made.root, made.driver.caps)
        made.write({f"scans/{i}.pdf": bytes([i]) * 100_000 for i in range(8)})
        made.write({f"invoices/{i}.pdf": bytes([i]) * 1_000 for i in range(8)})
        yield made
        made.close()


def first_copy(rig: Rig, bulk_concurrency: int | None) -> execute.RunStats:
    executor = Executor(rig.driver, rig.index, rig.source, 4, threading.Event(), bulk_concurrency=bulk_concurrency)
    return executor.run(plan(rig.local(), {}, rig.settings("tree"), remote={}))


def test_large_files_go_two_at_a_time_and_small_ones_four(rig: Rig) -> None:
    stats = first_copy(rig, Overlapping.bulk_concurrency)
    assert stats.uploaded == 16 and not stats.failed
    assert len(rig.target()) == 16
    assert isinstance(rig.driver, Overlapping)
    assert rig.driver.most == {"large": 2, "small": 4}


def test_without_a_bulk_limit_large_files_take_every_worker(rig: Rig) -> None:
    assert isinstance(rig.driver, Overlapping)
    rig.driver.barriers["large"] = threading.Barrier(4, timeout=WAIT_S)
    stats = first_copy(rig, None)
    assert stats.uploaded == 16 and not stats.failed
    assert rig.driver.most["large"] == 4
