"""Dropbox under stress: rate limits, server errors, lost answers, and a crash mid-upload."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mirror.errors import ItemError, TransientError
from mirror.hashing import dropbox_content_hash
from tests.fakes.dropbox_api import Fault, FileState
from tests.servers.dropbox import DropboxServer
from tests.support import rewrite_in_place

MiB = 1024 * 1024
MTIME_NS = 1_700_000_000_000_000_000


def write(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def put_like_the_engine(driver: Any, local: str, rel: str) -> None:
    """Retry what the driver calls transient, as the executor does, honouring retry_after."""
    for _ in range(10):
        try:
            driver.put(local, rel, MTIME_NS)
            return
        except Exception as exc:
            error = driver.classify(exc)
            if not isinstance(error, TransientError):
                raise
            time.sleep(error.retry_after or 0.05)
    raise AssertionError(f"{rel} never made it")


def test_429_storm_and_5xx_run_converge(dropbox_server: DropboxServer, tmp_path: Path) -> None:
    fake = dropbox_server.fake
    driver = dropbox_server.driver(chunk_size=4 * MiB)
    files = {f"inv/{i:03d}.pdf": os.urandom(300 + i) for i in range(150)}
    files["big/scan.tif"] = os.urandom(9 * MiB)
    locals_ = {rel: write(tmp_path / rel, data) for rel, data in files.items()}
    fake.inject(Fault("429", count=6, retry_after=1))
    fake.inject(Fault("429_write", route="finish_batch_v2", count=2, retry_after=1))
    fake.inject(Fault("503", count=8))
    fake.inject(Fault("500", route="append_v2", count=2))

    start = time.monotonic()
    with ThreadPoolExecutor(driver.default_concurrency) as pool:
        list(pool.map(lambda rel: put_like_the_engine(driver, locals_[rel], rel), files))

    assert all(f.count == 0 for f in fake.faults)
    assert {k: n.data for k, n in fake.state.files.items()} == {f"/mirror/{k}": v for k, v in files.items()}
    assert len([r for r in fake.log if r.status == 429]) == 8
    assert len([r for r in fake.log if r.status >= 500]) == 10
    assert time.monotonic() - start >= 1.0  # Retry-After: 1 was waited out


def test_retry_after_is_honoured_for_both_kinds(dropbox_server: DropboxServer, tmp_path: Path) -> None:
    fake = dropbox_server.fake
    driver = dropbox_server.driver()
    for kind in ("429", "429_write"):
        fake.log.clear()
        fake.inject(Fault(kind, route="files/upload", count=1, retry_after=1))
        time.sleep(0.3)  # let the driver be idle so the lone put takes files/upload
        driver.put(write(tmp_path / kind, kind.encode()), f"{kind}.pdf", MTIME_NS)
        first, second = fake.log[0], fake.log[1]
        assert (first.status, second.status) == (429, 200)
        assert second.at - first.at >= 0.95


def test_endless_rate_limit_becomes_a_transient_error_with_retry_after(
    dropbox_server: DropboxServer, tmp_path: Path
) -> None:
    dropbox_server.fake.inject(Fault("429", count=100, retry_after=0))
    driver = dropbox_server.driver(retries=3)
    with pytest.raises(Exception) as caught:
        driver.put(write(tmp_path / "a", b"a"), "a.pdf", MTIME_NS)
    error = driver.classify(caught.value)
    assert isinstance(error, TransientError)
    assert error.retry_after == 0
    assert len(dropbox_server.fake.log) == 3


@pytest.mark.parametrize("route", ["append_v2", "append_batch", "finish_batch_v2", "files/upload"])
def test_a_lost_answer_is_not_a_duplicate_nor_a_failure(
    dropbox_server: DropboxServer, tmp_path: Path, route: str
) -> None:
    """The server did the work, the answer never came back, the client retried."""
    fake = dropbox_server.fake
    driver = dropbox_server.driver(chunk_size=4 * MiB)
    files = {f"f{i}.pdf": os.urandom(100 + i) for i in range(20)}
    files["big.bin"] = os.urandom(9 * MiB)
    locals_ = {rel: write(tmp_path / rel, data) for rel, data in files.items()}
    fake.inject(Fault("drop", route=route, count=1))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda rel: driver.put(locals_[rel], rel, MTIME_NS), files))
    if route == "files/upload":
        driver.put(locals_["f0.pdf"], "f0.pdf", MTIME_NS)
    assert fake.faults[0].count == 0
    assert {k: n.data for k, n in fake.state.files.items()} == {f"/mirror/{k}": v for k, v in files.items()}


CHILD = """
import sys
from pathlib import Path
from mirror.registry import connect, resolve
from tests.fakes.dropbox_api import FileState

local, state, token, mtime = sys.argv[1:5]
driver = connect(resolve("dropbox://Mirror", {"token": token, "chunk_size": 4 * 1024 * 1024}, {}))
driver.state = FileState(Path(state))
driver.put(local, "scans/big.tif", int(mtime))
"""


def test_a_crash_mid_upload_resumes_the_session(dropbox_server: DropboxServer, tmp_path: Path) -> None:
    fake = dropbox_server.fake
    data = os.urandom(21 * MiB)
    local = write(tmp_path / "big.tif", data)
    state_path = tmp_path / "state.json"
    release, arrived = threading.Event(), threading.Event()
    original = fake._take_fault

    def take(route: str) -> Fault | None:
        # the start and two appends go through; the third is held while the process is killed
        if route.endswith("append_v2") and len(fake.routes("files/upload_session/append_v2")) == 3:
            arrived.set()
            return Fault("hold", release=release)
        return original(route)

    fake._take_fault = take  # type: ignore[method-assign]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, local, str(state_path), dropbox_server.token, str(MTIME_NS)],
        env={**os.environ, **dropbox_server.env},
        cwd=Path(__file__).parents[2],
    )
    try:
        assert arrived.wait(20), f"the child never reached its third append: {fake.routes()}"
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        release.set()
        if child.poll() is None:
            child.kill()
            child.wait(30)
    fake._take_fault = original  # type: ignore[method-assign]
    saved = json.loads(json.loads(state_path.read_text())["dropbox.upload:/mirror/scans/big.tif"])
    assert saved["offset"] == 12 * MiB
    assert fake.state.files == {}
    before = len(fake.log)

    driver = dropbox_server.driver(chunk_size=4 * MiB)
    driver.state = FileState(state_path)
    entry = driver.put(local, "scans/big.tif", MTIME_NS)

    assert fake.file_bytes("/Mirror/scans/big.tif") == data
    assert entry.hash == dropbox_content_hash(local)
    resumed = fake.log[before:]
    assert "files/upload_session/start" not in [r.route for r in resumed]
    assert sum(r.body_bytes for r in resumed) == len(data) - 12 * MiB
    assert json.loads(state_path.read_text()) == {}


def test_an_expired_session_starts_over(dropbox_server: DropboxServer, tmp_path: Path) -> None:
    fake = dropbox_server.fake
    driver = dropbox_server.driver(chunk_size=4 * MiB)
    data = os.urandom(9 * MiB)
    local = write(tmp_path / "big", data)
    record = {"session_id": "sess-gone", "offset": 4 * MiB, "size": len(data), "mtime_ns": MTIME_NS}
    driver.state.set("dropbox.upload:/mirror/big.bin", json.dumps({**record, "started": time.time()}))
    driver.put(local, "big.bin", MTIME_NS)
    assert fake.file_bytes("/Mirror/big.bin") == data
    assert driver.state.get("dropbox.upload:/mirror/big.bin") is None


def test_a_file_rewritten_during_its_upload_session_is_not_committed(
    dropbox_server: DropboxServer, tmp_path: Path
) -> None:
    """Rewritten in place after the first piece: the session was committed as bytes of
    two versions, in place of the good copy, until a later pass sent the file again."""
    fake = dropbox_server.fake
    driver = dropbox_server.driver(chunk_size=4 * MiB)
    first = os.urandom(9 * MiB)
    scan = tmp_path / "scan.tif"
    driver.put(write(scan, first), "scan.tif", MTIME_NS)
    scan.write_bytes(os.urandom(len(first)))  # the next version, as the pass finds it
    dbx = driver.fs.dbx
    append, pieces = dbx.files_upload_session_append_v2, []

    def append_then_rewrite(*args: Any, **kwargs: Any) -> Any:
        pieces.append(args)
        answer = append(*args, **kwargs)
        if len(pieces) == 1:
            rewrite_in_place(scan)
        return answer

    dbx.files_upload_session_append_v2 = append_then_rewrite
    with pytest.raises(ItemError, match="changed while it was read; the upload was not committed"):
        driver.put(str(scan), "scan.tif", MTIME_NS)
    assert fake.file_bytes("/Mirror/scan.tif") == first


def test_a_long_retry_after_is_left_to_the_engine(dropbox_server: DropboxServer, tmp_path: Path) -> None:
    """Retry-After: 3600 was slept out in the driver, up to six times, in silence: the
    target showed 'starting' for hours, and a stop blamed an upload. The engine waits
    for it instead, says so in the log, and ends the wait at once when mirror stops."""
    dropbox_server.fake.inject(Fault("429", count=1, retry_after=3600))
    driver = dropbox_server.driver()
    started = time.monotonic()
    with pytest.raises(Exception) as caught:
        driver.put(write(tmp_path / "a", b"a"), "a.pdf", MTIME_NS)
    assert time.monotonic() - started < 5
    error = driver.classify(caught.value)
    assert isinstance(error, TransientError) and error.retry_after == 3600
