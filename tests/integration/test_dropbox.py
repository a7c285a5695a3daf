"""The Dropbox backend (real SDK + dropboxdrivefs) against the local HTTPS fake of API v2."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mirror.driver import MemoryState
from mirror.errors import FatalError, ItemError, TransientError
from mirror.hashing import dropbox_content_hash
from tests.servers.dropbox import DropboxServer

MiB = 1024 * 1024
MTIME_NS = 1_700_000_000_123_456_789


def write(path: Path, data: bytes, mtime_ns: int = MTIME_NS) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return str(path)


@pytest.mark.parametrize("size", [10 * MiB, 20 * MiB + 3])
@pytest.mark.parametrize("chunk_size", [4 * MiB, 16 * MiB])
def test_large_files_round_trip(dropbox_server: DropboxServer, tmp_path: Path, size: int, chunk_size: int) -> None:
    driver = dropbox_server.driver(chunk_size=chunk_size)
    data = os.urandom(size)
    local = write(tmp_path / "scan.pdf", data)

    entry = driver.put(local, "2024/scan.pdf", MTIME_NS)

    assert dropbox_server.fake.file_bytes("/Mirror/2024/scan.pdf") == data
    assert entry.hash == driver.local_hash(local) == dropbox_content_hash(local)
    listed = driver.list()
    assert set(listed) == {"2024/scan.pdf"}
    assert listed["2024/scan.pdf"].size == size
    assert listed["2024/scan.pdf"].hash == entry.hash
    assert listed["2024/scan.pdf"].mtime_ns == MTIME_NS // 10**9 * 10**9
    uploads = [r for r in dropbox_server.fake.log if r.body_bytes]
    assert all(r.body_bytes <= chunk_size and r.has_content_hash for r in uploads)


def test_plain_dropboxdrivefs_cannot_round_trip_a_large_file(dropbox_server: DropboxServer) -> None:
    """The failure the round-trip test guards against, shown on the library we replaced."""
    from dropboxdrivefs import DropboxDriveFileSystem

    fs = DropboxDriveFileSystem(token=dropbox_server.token)
    data = os.urandom(10 * MiB)
    try:
        with fs.open("/plain/scan.pdf", "wb") as f:
            for start in range(0, len(data), MiB):  # in pieces, as put_file writes
                f.write(data[start : start + MiB])
    except Exception:
        pass
    stored = dropbox_server.fake.state.files.get("/plain/scan.pdf")
    # worse than failing: a truncated file is committed under the final name
    assert stored is not None and stored.data == data[: len(stored.data)] and len(stored.data) < len(data)


def test_thousand_small_files_are_committed_in_batches(dropbox_server: DropboxServer, tmp_path: Path) -> None:
    driver = dropbox_server.driver()
    files = {f"invoices/{i // 100}/inv-{i:04d}.pdf": os.urandom(500 + i) for i in range(1000)}
    locals_ = {rel: write(tmp_path / rel, data) for rel, data in files.items()}

    with ThreadPoolExecutor(driver.default_concurrency) as pool:
        entries = list(pool.map(lambda rel: driver.put(locals_[rel], rel, MTIME_NS), files))

    fake = dropbox_server.fake
    assert {e.path for e in entries} == set(files)
    for rel, data in files.items():
        assert fake.file_bytes(f"/Mirror/{rel}") == data
    routes = fake.routes()
    commits = routes.count("files/upload_session/finish_batch_v2") + routes.count("files/upload")
    assert commits <= 1000 / driver.default_concurrency * 1.6, routes
    assert len(routes) <= 4 * commits
    assert "files/upload_session/finish" not in routes
    assert len(driver.list()) == 1000

    # plain dropboxdrivefs, for the record: its cost is per file (start + finish), so a
    # fifth of the files, times five, keeps this test fast
    from dropboxdrivefs import DropboxDriveFileSystem

    ours = len(routes)
    plain = DropboxDriveFileSystem(token=dropbox_server.token)
    for rel in list(files)[:200]:
        with plain.open(f"/plain/{rel}", "wb") as f:
            f.write(files[rel])
    theirs = (len(fake.routes()) - ours - 1) * 5  # minus our list_folder above
    print(f"\nrequests per 1,000 small files: ours {ours}, plain dropboxdrivefs {theirs}")
    assert ours * 5 < theirs


def test_lone_small_file_is_one_request(dropbox_server: DropboxServer, tmp_path: Path) -> None:
    driver = dropbox_server.driver()
    driver.put(write(tmp_path / "a.pdf", b"invoice"), "a.pdf", MTIME_NS)
    assert dropbox_server.fake.routes() == ["files/upload"]


def test_upload_overwrites_without_autorename(dropbox_server: DropboxServer, tmp_path: Path) -> None:
    driver = dropbox_server.driver()
    driver.put(write(tmp_path / "v1", b"first"), "a.pdf", MTIME_NS)
    entry = driver.put(write(tmp_path / "v2", b"second version"), "A.PDF", MTIME_NS + 10**9)
    fake = dropbox_server.fake
    assert sorted(n.display for n in fake.state.files.values()) == ["/Mirror/a.pdf"]
    assert fake.file_bytes("/Mirror/a.pdf") == b"second version"
    assert entry.hash == dropbox_content_hash(str(tmp_path / "v2"))


def test_a_folder_in_the_way_is_an_item_error_not_a_renamed_copy(
    dropbox_server: DropboxServer, tmp_path: Path
) -> None:
    driver = dropbox_server.driver()
    driver.makedirs("Report.pdf")
    with pytest.raises(ItemError, match=r"^report\.pdf on the target is a folder where a file goes$"):
        driver.put(write(tmp_path / "r", b"x"), "report.pdf", MTIME_NS)
    assert dropbox_server.fake.state.files == {}


def test_a_folder_where_mirror_s_file_was_is_not_deleted(dropbox_server: DropboxServer, tmp_path: Path) -> None:
    """Dropbox deletes a folder with all in it: a delete of the file's path, alone (as
    the executor does an entry a batch refused) or in a batch, leaves someone's folder."""
    driver = dropbox_server.driver()
    driver.put(write(tmp_path / "t", b"theirs"), "Report.pdf/theirs.txt", MTIME_NS)
    driver.put(write(tmp_path / "m", b"mine"), "b.pdf", MTIME_NS)
    with pytest.raises(ItemError) as caught:
        driver.delete("Report.pdf")
    refused = "/Mirror/Report.pdf on the target is a folder, not the file mirror put there; it is not deleted"
    assert str(caught.value) == refused
    outcomes = driver.delete_batch(["Report.pdf", "b.pdf"])
    assert [str(o) if o else None for o in outcomes] == [refused, None]
    assert sorted(driver.list()) == ["Report.pdf/theirs.txt"]


@pytest.mark.parametrize(
    "name",
    ["desktop.ini", "Thumbs.db", ".DS_Store", "Icon\r", ".dropbox.cache", "draft ", "draft.", "x" * 256, "a\\b"],
)
def test_refused_names_are_item_errors(dropbox_server: DropboxServer, tmp_path: Path, name: str) -> None:
    driver = dropbox_server.driver()
    with pytest.raises(ItemError, match=r"Dropbox refuses|Dropbox does not store"):
        driver.put(write(tmp_path / "f", b"x"), f"sub/{name}", MTIME_NS)
    assert dropbox_server.fake.log == []


def test_the_fake_refuses_those_names_too(dropbox_server: DropboxServer, tmp_path: Path) -> None:
    """The driver's own check mirrors what the server does: bypass it and see."""
    from mirror.backends import dropbox as backend

    driver = dropbox_server.driver()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(backend, "check_name", lambda rel: None)
        for name in ("desktop.ini", "trailing. "):
            with pytest.raises(ItemError, match=r"refuses the (name|path)"):
                driver.put(write(tmp_path / "f", b"x"), name, MTIME_NS)
    assert dropbox_server.fake.state.files == {}


def test_listing_is_case_insensitive_and_paged(dropbox_server: DropboxServer, tmp_path: Path) -> None:
    dropbox_server.fake.page_size = 7
    driver = dropbox_server.driver("dropbox://mirror")
    writer = dropbox_server.driver("dropbox://MIRROR")
    for i in range(20):
        writer.put(write(tmp_path / f"{i}", b"%d" % i), f"Sub/f{i}.txt", MTIME_NS)
    listed = driver.list()
    assert sorted(listed) == sorted(f"Sub/f{i}.txt" for i in range(20))
    assert driver.stat("sub/F3.TXT") is not None
    assert "files/list_folder/continue" in dropbox_server.fake.routes()


def test_missing_paths_raise_what_fsspec_expects(dropbox_server: DropboxServer) -> None:
    driver = dropbox_server.driver()
    assert driver.list() == {}
    assert driver.stat("nope.txt") is None
    with pytest.raises(FileNotFoundError):
        driver.fs.ls("/Mirror/nope")
    with pytest.raises(FileNotFoundError):
        driver.fs.info("/Mirror/nope")
    with pytest.raises(FileNotFoundError):
        driver.delete("nope.txt")


def test_move_delete_and_empty_folders(dropbox_server: DropboxServer, tmp_path: Path) -> None:
    driver = dropbox_server.driver()
    driver.put(write(tmp_path / "a", b"a"), "in/a.pdf", MTIME_NS)
    driver.put(write(tmp_path / "b", b"b"), "out/b.pdf", MTIME_NS)
    driver.move("in/a.pdf", "out/b.pdf")
    assert dropbox_server.fake.file_bytes("/Mirror/out/b.pdf") == b"a"
    driver.move("out/b.pdf", "out/B.pdf")
    assert sorted(driver.list()) == ["out/B.pdf"]
    assert driver.remove_dir_if_empty("out") is False
    assert driver.remove_dir_if_empty("in") is True
    driver.delete("out/B.pdf")
    assert driver.list() == {}
    assert dropbox_server.fake.routes().count("files/upload") == 2


def test_full_quota_is_fatal(dropbox_server: DropboxServer, tmp_path: Path) -> None:
    dropbox_server.fake.state.quota_bytes = 100
    driver = dropbox_server.driver()
    with pytest.raises(FatalError, match="account is full"):
        driver.put(write(tmp_path / "big", b"x" * 200), "big.pdf", MTIME_NS)


def test_revoked_token_is_fatal_with_a_clear_message(dropbox_server: DropboxServer, tmp_path: Path) -> None:
    driver = dropbox_server.driver()
    dropbox_server.fake.access_tokens.clear()
    with pytest.raises(Exception) as caught:
        driver.put(write(tmp_path / "a", b"a"), "a.pdf", MTIME_NS)
    error = driver.classify(caught.value)
    assert isinstance(error, FatalError)
    assert "mirror auth dropbox" in str(error)
    assert dropbox_server.token not in str(error)


def test_a_request_over_150_mib_is_refused_by_the_fake(dropbox_server: DropboxServer) -> None:
    """The fake enforces the per-request limit (scaled down here to keep the test fast)."""
    import dropbox

    dropbox_server.fake.max_request_bytes = 1 * MiB
    client = dropbox.Dropbox(dropbox_server.token, max_retries_on_error=0)
    with pytest.raises(dropbox.exceptions.ApiError) as caught:
        client.files_upload(b"x" * (MiB + 1), "/big.bin")
    assert caught.value.error.is_payload_too_large()


def test_chunk_size_is_bounded(dropbox_server: DropboxServer) -> None:
    from mirror.errors import ConfigError

    for bad in (150 * MiB, 5 * MiB, 0):
        with pytest.raises(ConfigError, match="chunk_size"):
            dropbox_server.driver(chunk_size=bad)


def test_skip_decision_inputs_match(dropbox_server: DropboxServer, tmp_path: Path) -> None:
    """local_hash equals what list() reports, for empty, block-sized and odd-sized files."""
    driver = dropbox_server.driver(chunk_size=4 * MiB)
    for i, size in enumerate((0, 1, 4 * MiB, 4 * MiB + 1, 9 * MiB)):
        local = write(tmp_path / f"f{i}", os.urandom(size))
        driver.put(local, f"f{i}", MTIME_NS)
        assert driver.list()[f"f{i}"].hash == driver.local_hash(local)


def test_throughput_of_large_files(dropbox_server: DropboxServer, tmp_path: Path) -> None:
    driver = dropbox_server.driver()
    files = [write(tmp_path / f"big{i}", os.urandom(24 * MiB)) for i in range(3)]
    start = time.perf_counter()
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda i: driver.put(files[i], f"big{i}.bin", MTIME_NS), range(3)))
    elapsed = time.perf_counter() - start
    print(f"\nthroughput: {3 * 24 / elapsed:.0f} MiB/s ({3 * 24} MiB in {elapsed:.2f} s, 3 threads)")
    for i in range(3):
        assert dropbox_server.fake.state.files[f"/mirror/big{i}.bin"].hash == dropbox_content_hash(files[i])


def test_batch_moves_and_deletes_report_each_entry_in_order(dropbox_server: DropboxServer, tmp_path: Path) -> None:
    driver = dropbox_server.driver()
    for name in ("a.pdf", "b.pdf", "taken.pdf"):
        driver.put(write(tmp_path / name, name.encode()), name, MTIME_NS)
    dropbox_server.fake.job_checks = 3  # a job still running for the first checks
    moved = driver.move_batch([("a.pdf", "x/a.pdf"), ("b.pdf", "taken.pdf"), ("gone.pdf", "x/gone.pdf")])
    assert moved[0] is None
    # Dropbox never moves onto a file: the executor then moves it alone, replacing it
    assert isinstance(moved[1], ItemError) and "conflict" in str(moved[1])
    assert isinstance(moved[2], ItemError)
    assert sorted(driver.list()) == ["b.pdf", "taken.pdf", "x/a.pdf"]
    deleted = driver.delete_batch(["x/a.pdf", "nothing.pdf", "b.pdf"])
    assert deleted[0] is None and isinstance(deleted[1], ItemError) and deleted[2] is None
    assert sorted(driver.list()) == ["taken.pdf"]
    assert dropbox_server.fake.routes().count("files/delete_batch/check") == 4


def test_a_delete_job_that_fails_whole_is_a_transient_failure_of_the_call(
    dropbox_server: DropboxServer, tmp_path: Path
) -> None:
    driver = dropbox_server.driver()
    for name in ("a.pdf", "b.pdf"):
        driver.put(write(tmp_path / name, name.encode()), name, MTIME_NS)
    dropbox_server.fake.fail_next_delete_job = "too_many_write_operations"
    # the executor counts it for every file of the batch, and deletes them again alone
    with pytest.raises(TransientError, match="too_many_write_operations"):
        driver.delete_batch(["a.pdf", "b.pdf"])
    assert sorted(driver.list()) == ["a.pdf", "b.pdf"]


def test_a_file_cut_shorter_during_its_upload_session_fails_at_once(
    dropbox_server: DropboxServer, tmp_path: Path
) -> None:
    """A 9 MiB scan rewritten as 2 MiB after its session began: the upload appended empty
    pieces to reach 9 MiB, about 500 requests a second, and never returned."""
    mib = 1 << 20
    driver = dropbox_server.driver(chunk_size=4 * mib)
    driver.state = MemoryState()
    scan = tmp_path / "scan.tif"
    scan.write_bytes(os.urandom(9 * mib))
    start = driver.fs.dbx.files_upload_session_start

    def start_then_cut(data: bytes, *args: Any, **kwargs: Any) -> Any:
        begun = start(data, *args, **kwargs)
        scan.write_bytes(os.urandom(2 * mib))
        return begun

    driver.fs.dbx.files_upload_session_start = start_then_cut
    outcome: list[BaseException] = []
    worker = threading.Thread(
        target=lambda: _catch(outcome, lambda: driver.put(str(scan), "scan.tif", MTIME_NS)), daemon=True
    )
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "the upload never ends"
    assert len(outcome) == 1 and "got shorter while it was sent" in str(driver.classify(outcome[0]))


def _catch(into: list[BaseException], work: Callable[[], object]) -> None:
    try:
        work()
    except BaseException as exc:
        into.append(exc)
