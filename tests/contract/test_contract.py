"""The contract every backend keeps, run against each name in tests/contract/targets.py.

Driver level: hostile names and awkward content round-trip, puts replace, moves replace,
glob characters are never expanded, hashes and mtimes are what the capabilities promise.
Engine level: a first copy, a no-change pass, an edit, a rename and a delete converge and
verify clean.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from mirror.backends.dropbox import DropboxDriver
from mirror.backends.gdrive import GDriveDriver
from mirror.backends.onedrive import OneDriveDriver
from mirror.backends.sftp import SFTPDriver
from mirror.backends.webdav import WebdavDriver
from moto.server import ThreadedMotoServer

from mirror import api, registry
from mirror import config as config_mod
from mirror import runner as runner_mod
from mirror.driver import BatchPut, Driver
from mirror.engine import Mirror
from mirror.errors import ItemError
from mirror.events import Observer, Report
from mirror.execute import RetryPolicy
from mirror.filters import Filter
from mirror.hashing import HashKind
from mirror.plan import refused_name
from mirror.scan import scan
from mirror.source_files import SourceFiles
from mirror.verify import compare
from tests.cli import files, wait_for
from tests.contract.targets import BACKENDS
from tests.servers.s3 import S3Server
from tests.servers.sshd import free_port
from tests.servers.webdav import start_webdav
from tests.support import TargetSpec

HOSTILE = [
    "plain.pdf",
    "with space.pdf",
    "brackets [1].pdf",
    "star*and?.pdf",
    "hash #1 % 20.pdf",
    "ünïcödé €.pdf",
    "-dash.pdf",
    "deep/er/still/nested.pdf",
    "n" * 200 + ".pdf",
]


@pytest.fixture(params=BACKENDS)
def spec(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> TargetSpec:
    target: TargetSpec = request.getfixturevalue(f"{request.param}_target")
    for key, value in target.env.items():
        monkeypatch.setenv(key, value)
    return target


def make_config(spec: TargetSpec, source: Path, state: Path, **settings: object) -> config_mod.Config:
    data = {
        "source": str(source),
        "state_dir": str(state),
        "targets": {"t": {"url": spec.url, "options": spec.options, **settings}},
        "backends": spec.presets,
    }
    return config_mod.from_dict(data, state / "contract.toml", os.environ)


@pytest.fixture
def driver(spec: TargetSpec, tmp_path: Path) -> Iterator[Driver]:
    cfg = make_config(spec, tmp_path, tmp_path / "state")
    target = cfg.targets[0]
    d = registry.connect(registry.resolve(target.url, target.options, cfg.presets))
    d.makedirs("")
    yield d
    d.close()


def local_file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / "local" / name.replace("/", "_")
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path


def put(driver: Driver, tmp_path: Path, rel: str, data: bytes, mtime_ns: int = 1_700_000_000 * 10**9) -> Path:
    path = local_file(tmp_path, rel, data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    if "/" in rel:
        driver.makedirs(rel.rpartition("/")[0])
    driver.put(str(path), rel, mtime_ns)
    return path


def test_hostile_names_round_trip_with_size_hash_and_mtime(driver: Driver, tmp_path: Path) -> None:
    names = [n for n in HOSTILE if refused_name(n, driver.caps) is None]
    locals_ = {
        n: put(driver, tmp_path, n, n.encode() * 3, 1_700_000_000 * 10**9 + i * 10**9) for i, n in enumerate(names)
    }
    listed = driver.list()
    assert sorted(listed) == sorted(names)
    for name in names:
        entry = listed[name]
        assert entry.size == len(name.encode()) * 3
        assert driver.stat(name) is not None and driver.stat(name).size == entry.size  # type: ignore[union-attr]
        if driver.caps.hash_kind is not HashKind.NONE:
            assert entry.hash == driver.local_hash(str(locals_[name]))
        if driver.caps.mtime_settable:
            assert entry.mtime_ns is not None
            assert abs(entry.mtime_ns - os.stat(locals_[name]).st_mtime_ns) < max(
                driver.caps.mtime_precision_ns, 1
            )
    assert driver.stat("no such file.pdf") is None


AWKWARD_CONTENT = {
    "empty.pdf": b"",
    "cr.pdf": b"%PDF-1.4\r%%EOF\r",
    "lf-cr.pdf": b"%PDF-1.4\n%%EOF\n\r",
    "crlf.pdf": b"%PDF-1.4\r\n%%EOF\r\n",
    "lf.pdf": b"%PDF-1.4\n%%EOF\n",
    "delimiter.txt": b"\r\n--boundary\r\nContent-Type: text/plain\r\n\r\n--boundary--\r\n",
    "every-byte.bin": bytes(range(256)) * 3,
}


def test_content_with_awkward_bytes_arrives_whole(driver: Driver, tmp_path: Path) -> None:
    # uploads wrapped in multipart or line-based framing lose or gain bytes at a part's
    # edge; the last byte of a scan is as likely to be CR as anything else
    locals_ = {name: put(driver, tmp_path, name, data) for name, data in AWKWARD_CONTENT.items()}
    listed = driver.list()
    assert {name: entry.size for name, entry in listed.items()} == {
        name: len(data) for name, data in AWKWARD_CONTENT.items()
    }
    if driver.caps.hash_kind is not HashKind.NONE:
        assert {name: entry.hash for name, entry in listed.items()} == {
            name: driver.local_hash(str(path)) for name, path in locals_.items()
        }


def test_a_file_that_changed_as_its_batch_read_it_never_takes_the_place_of_the_copy_there(
    driver: Driver, tmp_path: Path
) -> None:
    """The executor finds the source file changed once the batch has read it (what was
    read may be half of each version): that file is not put in place, the others are."""
    one, scan = tmp_path / "one.pdf", tmp_path / "scan.pdf"
    one.write_bytes(b"an invoice")
    scan.write_bytes(b"the start of one version and the end of another")
    driver.makedirs("out")
    good = tmp_path / "good.pdf"
    good.write_bytes(b"the good copy")
    driver.put(str(good), "out/scan.pdf", 1_600_000_000 * 10**9)
    mtime_ns = 1_700_000_000 * 10**9
    outcomes = driver.send_batch(
        [
            BatchPut(str(one), "out/.one.~tmp", "out/one.pdf", mtime_ns),
            BatchPut(str(scan), "out/.scan.~tmp", "out/scan.pdf", mtime_ns, unchanged=lambda: False),
        ]
    )
    assert outcomes[0] is None and isinstance(outcomes[1], ItemError), outcomes
    listed = driver.list()
    assert listed["out/one.pdf"].size == len(b"an invoice")
    assert listed["out/scan.pdf"].size == len(b"the good copy")


def test_a_batch_of_small_files_arrives_whole_under_its_final_names(driver: Driver, tmp_path: Path) -> None:
    # as the executor hands them over: opened below the source root, by name and descriptor
    source = tmp_path / "source"
    (source / "in").mkdir(parents=True)
    for name, data in AWKWARD_CONTENT.items():
        (source / "in" / name).write_bytes(data)
    driver.makedirs("out")
    mtime_ns = 1_600_000_000 * 10**9
    with SourceFiles(str(source)) as files:
        items = []
        for name in AWKWARD_CONTENT:
            local, fd, mode = files.opened(f"in/{name}")
            items.append(BatchPut(local, f"out/.{name}.~tmp", f"out/{name}", mtime_ns, fd, mode))
        assert list(driver.send_batch(items)) == [None] * len(items)
    listed = driver.list()
    assert {path: entry.size for path, entry in listed.items()} == {
        f"out/{name}": len(data) for name, data in AWKWARD_CONTENT.items()
    }
    if driver.caps.hash_kind is not HashKind.NONE:
        assert {path: entry.hash for path, entry in listed.items()} == {
            f"out/{name}": driver.local_hash(str(source / "in" / name)) for name in AWKWARD_CONTENT
        }
    if driver.caps.mtime_settable:
        assert {entry.mtime_ns for entry in listed.values()} == {mtime_ns}


def test_put_replaces_an_existing_file(driver: Driver, tmp_path: Path) -> None:
    put(driver, tmp_path, "inv.pdf", b"first version")
    second = put(driver, tmp_path, "inv.pdf", b"second, longer version")
    listed = driver.list()
    assert list(listed) == ["inv.pdf"]
    assert listed["inv.pdf"].size == len(b"second, longer version")
    if driver.caps.hash_kind is not HashKind.NONE:
        assert listed["inv.pdf"].hash == driver.local_hash(str(second))


def test_move_replaces_and_delete_removes(driver: Driver, tmp_path: Path) -> None:
    put(driver, tmp_path, "a.pdf", b"aaaa")
    put(driver, tmp_path, "b.pdf", b"bb")
    driver.makedirs("sub")
    driver.move("a.pdf", "sub/b.pdf")
    driver.move("b.pdf", "sub/c.pdf")
    driver.move("sub/c.pdf", "sub/b.pdf")
    assert {p: e.size for p, e in driver.list().items()} == {"sub/b.pdf": 2}
    driver.delete("sub/b.pdf")
    assert driver.list() == {}
    assert driver.remove_dir_if_empty("sub") is True


def test_moves_and_deletes_in_batches_report_each_file_and_skip_none(driver: Driver, tmp_path: Path) -> None:
    for name in ("a.pdf", "b.pdf", "c.pdf"):
        put(driver, tmp_path, name, name.encode())
    driver.makedirs("sub")
    moved = driver.move_batch([("a.pdf", "sub/a.pdf"), ("gone.pdf", "sub/gone.pdf"), ("b.pdf", "sub/c.pdf")])
    assert moved[0] is None and isinstance(moved[1], ItemError) and moved[2] is None
    assert sorted(driver.list()) == ["c.pdf", "sub/a.pdf", "sub/c.pdf"]
    deleted = driver.delete_batch(["sub/a.pdf", "gone.pdf", "c.pdf"])
    # a file already gone: done for some targets (S3), refused for others, never worse
    assert deleted[0] is None and (deleted[1] is None or isinstance(deleted[1], ItemError)) and deleted[2] is None
    assert sorted(driver.list()) == ["sub/c.pdf"]


def test_a_path_below_a_file_is_no_file(driver: Driver, tmp_path: Path) -> None:
    """After a run cut short, the index can remember ``d/x.pdf`` where the target now
    holds a file ``d``: removing ``d/x.pdf`` must then count as done, not fail forever."""
    put(driver, tmp_path, "d", b"a file where a folder was")
    assert driver.stat("d/x.pdf") is None


def test_a_folder_someone_put_where_mirror_s_file_was_is_never_replaced_nor_deleted(
    driver: Driver, tmp_path: Path
) -> None:
    """Someone replaced a file mirror put on the target with a folder of their own files
    (or made one where a new file goes). On WebDAV the upload's rename into place replaced
    the whole folder (MOVE with Overwrite: T), and the file's removal (DELETE) took the
    folder and all in it. Each fails for that file (a target of keys, S3, holds both, and
    a file gone counts as deleted), and the folder stays as it was."""
    put(driver, tmp_path, "Report.pdf/theirs.txt", b"their own file")
    put(driver, tmp_path, "upload.tmp", b"mirror's new copy")

    def theirs() -> int | None:
        there = driver.list().get("Report.pdf/theirs.txt")
        return there.size if there else None

    (replaced,) = driver.move_batch([("upload.tmp", "Report.pdf")])
    assert replaced is None or isinstance(replaced, ItemError), replaced
    assert theirs() == 14
    (deleted,) = driver.delete_batch(["Report.pdf"])
    assert deleted is None or isinstance(deleted, ItemError), deleted
    assert theirs() == 14


def test_glob_characters_are_never_expanded(driver: Driver, tmp_path: Path) -> None:
    for name in ("a1.pdf", "a[1].pdf", "a*.pdf", "ab.pdf"):
        if refused_name(name, driver.caps) is None:
            put(driver, tmp_path, name, name.encode())
    survivors = set(driver.list())
    for name in ("a[1].pdf", "a*.pdf"):
        if name in survivors:
            driver.delete(name)
            survivors.discard(name)
            assert set(driver.list()) == survivors


def test_makedirs_is_idempotent_and_only_empty_folders_are_removed(driver: Driver, tmp_path: Path) -> None:
    driver.makedirs("x/y")
    driver.makedirs("x/y")
    put(driver, tmp_path, "x/y/z.pdf", b"z")
    assert driver.remove_dir_if_empty("x/y") is False
    assert "x/y/z.pdf" in driver.list()


def test_a_tree_of_empty_folders_is_removed_as_empty(driver: Driver, tmp_path: Path) -> None:
    """A run cut short between deleting a folder's files and pruning its folders leaves a
    tree of empty folders; a file that takes the folder's name needs it gone."""
    driver.makedirs("x/y/z")
    driver.makedirs("x/w")
    assert driver.remove_dir_if_empty("x") is True
    put(driver, tmp_path, "x", b"a file where the folders were")
    assert {p: e.size for p, e in driver.list().items()} == {"x": len(b"a file where the folders were")}


def disk_root(spec: TargetSpec) -> Path:
    """The target's folder on this machine's disk, for a backend whose folders can be
    symbolic links; the others (cloud services, object stores) have none: skipped."""
    if spec.backend == "file":
        return Path(spec.url)
    if spec.backend == "sftp":
        return Path(unquote(urlsplit(spec.url).path))
    pytest.skip(f"{spec.backend} has no symbolic links")


def outside_with_files(tmp_path: Path) -> Path:
    """A folder of someone else's, outside the target, with files and a folder of theirs."""
    outside = tmp_path / "outside"
    (outside / "empty").mkdir(parents=True)
    (outside / "x.pdf").write_bytes(b"their own x.pdf")
    (outside / "y.pdf").write_bytes(b"their own y.pdf")
    return outside


def swap_for_a_link(folder: Path, outside: Path) -> None:
    """Someone replaces a folder of the target with a link to a folder of theirs."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.symlink_to(outside)


def tree(folder: Path) -> list[tuple[str, bytes | None]]:
    """Every file (with its content) and folder below ``folder``."""
    return sorted(
        (p.relative_to(folder).as_posix(), p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")
    )


def test_no_upload_rename_or_delete_goes_through_a_folder_swapped_for_a_link(
    spec: TargetSpec, driver: Driver, tmp_path: Path
) -> None:
    """Someone replaced a folder of the target with a link to a folder of theirs: the
    server follows it, so mirror deleted their x.pdf through it, and wrote its own
    files among theirs. Each call below it fails instead, naming the link."""
    root = disk_root(spec)
    (root / "kept").mkdir()
    (root / "kept" / "k.pdf").write_bytes(b"k")
    outside = outside_with_files(tmp_path)
    swap_for_a_link(root / "sub", outside)
    before = tree(outside)
    local = local_file(tmp_path, "new.pdf", b"new")
    mtime = 1_700_000_000 * 10**9
    refused = "symbolic link; mirror does not write through it"
    for call in (
        lambda: driver.delete("sub/x.pdf"),
        lambda: driver.move("sub/y.pdf", "kept/y.pdf"),
        lambda: driver.move("kept/k.pdf", "sub/k.pdf"),
        lambda: driver.put(str(local), "sub/new.pdf", mtime),
        lambda: driver.makedirs("sub/2026"),
    ):
        with pytest.raises(ItemError, match=refused):
            call()
    assert driver.remove_dir_if_empty("sub/empty") is False
    outcomes = [
        *driver.send_batch([BatchPut(str(local), "sub/.~mirror-000000000001.tmp", "sub/new.pdf", mtime)]),
        *driver.delete_batch(["sub/x.pdf", "sub/y.pdf"]),
        *driver.move_batch([("sub/x.pdf", "x.pdf"), ("kept/k.pdf", "sub/k.pdf")]),
    ]
    assert all(isinstance(o, ItemError) and refused in str(o) for o in outcomes), outcomes
    assert tree(outside) == before
    assert (root / "kept" / "k.pdf").read_bytes() == b"k"


class Reports(Observer):
    def __init__(self) -> None:
        self.reports: list[Report] = []

    def on_report(self, report: Report) -> None:
        self.reports.append(report)

    def failed(self) -> list[str]:
        return [reason for report in self.reports for _, reason in report.failed]


def test_a_folder_swapped_for_a_link_while_mirror_watches_is_not_written_through(
    spec: TargetSpec, tmp_path: Path
) -> None:
    """A folder mirror made is swapped for a link while mirror watches, then a file is
    written into that folder of the source: it landed outside the target (the watching
    mirror remembered the folder made, and never looked at it again)."""
    root = disk_root(spec)
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "x.pdf").write_bytes(b"mirror's x")
    (source / "top.pdf").write_bytes(b"top")
    cfg = make_config(spec, source, tmp_path / "state", settle=0.1)
    reports = Reports()
    with watching(cfg, observers=[reports]):
        wait_for(lambda: (root / "sub" / "x.pdf").exists(), 30, "the first copy")
        outside = outside_with_files(tmp_path)
        swap_for_a_link(root / "sub", outside)
        before = tree(outside)
        (source / "sub" / "new.pdf").write_bytes(b"a new invoice")
        wait_for(
            lambda: any("symbolic link" in r for r in reports.failed()) or (outside / "new.pdf").exists(),
            30,
            "the file failed, naming the link",
        )
    assert tree(outside) == before
    assert files(root) == {"top.pdf": b"top"}


@contextlib.contextmanager
def watching(cfg: config_mod.Config, **options: Any) -> Iterator[Mirror]:
    """``cfg``'s mirror running on in a thread of its own (watch mode) for the block."""
    mirror = Mirror(cfg, **options)
    mirror.open()
    thread = threading.Thread(target=mirror.run_forever)
    thread.start()
    try:
        yield mirror
    finally:
        mirror.shutdown()
        thread.join(15)
        mirror.close()


def three_invoices(tmp_path: Path) -> Path:
    """A source folder holding 2024/inv-0.pdf to 2024/inv-2.pdf."""
    source = tmp_path / "src"
    (source / "2024").mkdir(parents=True)
    for i in range(3):
        (source / "2024" / f"inv-{i}.pdf").write_bytes(b"invoice %d" % i)
    return source


def files_on(driver: Driver) -> int:
    """How many files the target holds, -1 while a listing races mirror at work there
    (wsgidav answers 500 to a folder whose temp file was renamed while it listed it)."""
    try:
        return len(driver.list())
    except Exception:  # whatever the backend's library raises: the caller polls again
        return -1


def run_once(cfg: config_mod.Config) -> list:
    mirror = Mirror(cfg)
    mirror.open()
    try:
        return mirror.run_once()
    finally:
        mirror.close()


def two_passes(cfg: config_mod.Config, meanwhile: Callable[[], None]) -> Report:
    """The second pass of one mirror that runs on (as in watch mode), after ``meanwhile``;
    its first pass sends two files."""
    mirror = Mirror(cfg)
    mirror.open()
    try:
        (first,) = mirror.run_once()
        assert first.ok and first.uploaded == 2, first
        meanwhile()
        (second,) = mirror.run_once()
        return second
    finally:
        mirror.close()


def differences(cfg: config_mod.Config) -> list:
    """What verify finds between the source and the target, as the config places files."""
    mirror = Mirror(cfg, dry_run=True)
    mirror.open()
    runner = mirror.runners[0]
    try:
        driver = runner.connect()
        index = runner.index.entries() if runner.index else {}
        local = scan(cfg.source, Filter()).entries
        return compare(
            local,
            index,
            driver.list(),
            runner.settings.layout,
            runner.settings.delete,
            driver.caps,
            lambda src: driver.local_hash(str(cfg.source / src)),
        )
    finally:
        mirror.close()


def test_the_engine_converges_on_every_change(spec: TargetSpec, tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "2026" / "03").mkdir(parents=True)
    for i in range(25):
        (source / "2026" / "03" / f"invoice {i:02d} [x].pdf").write_bytes(b"PDF-%d " % i * (i + 1))
    (source / "top.pdf").write_bytes(b"top")
    cfg = make_config(spec, source, tmp_path / "state", max_delete=100)

    def once() -> list:
        return run_once(cfg)

    (first,) = once()
    assert first.ok and first.uploaded == 26, first
    assert differences(cfg) == []
    (second,) = once()
    assert second.ok and second.uploaded == 0 and second.deleted == 0
    (source / "top.pdf").write_bytes(b"TOP")
    os.rename(source / "2026" / "03" / "invoice 07 [x].pdf", source / "2026" / "renamed [7].pdf")
    (source / "2026" / "03" / "invoice 08 [x].pdf").unlink()
    (third,) = once()
    assert third.ok, third
    # the rename is a server-side move where the backend can, else a put plus a delete
    assert third.uploaded + third.moved == 2 and third.deleted == (1 if third.moved else 2)
    assert third.moved == (1 if spec.backend in ("file", "sftp") else third.moved)
    assert differences(cfg) == []


def test_someone_else_s_file_in_the_way_goes_to_the_trash_not_lost(
    spec: TargetSpec, driver: Driver, tmp_path: Path
) -> None:
    """A file mirror did not put on the target, where a source file of the same name
    goes, was overwritten without a word: at a new target's first copy (found by its
    listing), and later (a file put there by hand, or one kept by ``delete = keep``)."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "inv1.pdf").write_bytes(b"our invoice 1")
    put(driver, tmp_path, "inv1.pdf", b"the accountant's own inv1.pdf")
    cfg = make_config(spec, source, tmp_path / "state")
    (first,) = run_once(cfg)
    assert first.ok and first.uploaded == 1, first
    trash = f".mirror-trash/{dt.date.today().isoformat()}"
    sizes = {rel: e.size for rel, e in driver.list().items()}
    assert sizes == {"inv1.pdf": 13, f"{trash}/inv1.pdf": 29}, sizes
    put(driver, tmp_path, "2026/inv2.pdf", b"someone's 2026/inv2.pdf, by hand")
    (source / "2026").mkdir()
    (source / "2026" / "inv2.pdf").write_bytes(b"our invoice 2")
    (second,) = run_once(cfg)  # no listing: the target is asked
    assert second.ok and second.uploaded == 1, second
    sizes = {rel: e.size for rel, e in driver.list().items()}
    assert sizes == {"inv1.pdf": 13, "2026/inv2.pdf": 13, f"{trash}/inv1.pdf": 29, f"{trash}/2026/inv2.pdf": 32}
    assert differences(cfg) == []


def test_a_file_put_in_the_way_while_mirror_runs_goes_to_the_trash_not_lost(
    spec: TargetSpec, driver: Driver, tmp_path: Path
) -> None:
    """The same, while one mirror runs on (watch mode): on FTP the file someone put into
    the target folder after the first pass was overwritten with no trash copy, as the
    folder's listing cached by that pass said nothing was there."""
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "a.pdf").write_bytes(b"a")
    (source / "sub" / "s.pdf").write_bytes(b"s")  # sent last, its upload made FTP cache the top folder

    def someone_puts_a_file_and_the_source_gets_one() -> None:
        put(driver, tmp_path, "contract.pdf", b"the customer's signed contract")
        (source / "contract.pdf").write_bytes(b"our draft")

    second = two_passes(make_config(spec, source, tmp_path / "state"), someone_puts_a_file_and_the_source_gets_one)
    assert second.ok and second.uploaded == 1, second
    trash = f".mirror-trash/{dt.date.today().isoformat()}"
    sizes = {rel: e.size for rel, e in driver.list().items()}
    assert sizes == {"a.pdf": 1, "sub/s.pdf": 1, "contract.pdf": 9, f"{trash}/contract.pdf": 30}, sizes


def test_a_folder_someone_removed_from_the_target_is_made_again(
    spec: TargetSpec, driver: Driver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone tidied the backup: a folder mirror made is gone. The next file for it must
    land, where every put failed for as long as mirror ran (it remembered the folder made),
    or, on Drive, went into the trashed folder, out of sight."""
    if spec.backend == "gdrive":
        monkeypatch.setattr("mirror.backends.gdrive.FOLDER_TTL", 0.0)  # as a minute later
    source = tmp_path / "src"
    (source / "2026" / "03").mkdir(parents=True)
    (source / "2026" / "03" / "a.pdf").write_bytes(b"a")
    (source / "top.pdf").write_bytes(b"top")  # the target is not emptied, which a pass would notice

    def someone_removes_the_folder_and_the_source_gets_a_file() -> None:
        driver.delete("2026/03/a.pdf")
        driver.remove_dir_if_empty("2026")
        (source / "2026" / "03" / "b.pdf").write_bytes(b"b")

    second = two_passes(
        make_config(spec, source, tmp_path / "state"), someone_removes_the_folder_and_the_source_gets_a_file
    )
    assert second.ok and second.uploaded == 1, second.failed
    assert "2026/03/b.pdf" in driver.list()


def empty_target(driver: Driver) -> None:
    """Someone selects everything in the mirror's folder and deletes it."""
    listed = driver.list()
    driver.delete_batch(list(listed))
    for folder in sorted({p.split("/", 1)[0] for p in listed if "/" in p}):
        driver.remove_dir_if_empty(folder)


def delete_root(driver: Driver) -> None:
    """Someone deletes the mirror's folder itself, for good: in the service's web app, or
    on the server (a share restored without it)."""
    if isinstance(driver, OneDriveDriver):
        driver.request("DELETE", driver.item_url(""))
    elif isinstance(driver, GDriveDriver):
        root_id = driver._folder_id("", create=False)
        driver._call(lambda: driver._files.delete(fileId=root_id, **driver._drive_args()))
    elif isinstance(driver, DropboxDriver):
        driver.fs.rm_file(driver.root)
    elif isinstance(driver, SFTPDriver):
        empty_target(driver)
        with driver._session() as link:
            link.sftp.rmdir(driver.root)
    elif isinstance(driver, WebdavDriver):
        driver.client.remove(driver._dav(""))
    else:
        raise AssertionError(f"no one deletes the folder of {type(driver).__name__}")


#: backends whose folder a run can find deleted or emptied with one request; on the
#: others only a listing tells, and the rescan_interval listing fills it again
TELLS_EMPTIED = ("file", "s3", "dropbox", "gdrive", "onedrive", "sftp", "webdav")
#: backends on which a folder deleted is a case: in a web app, or on a server (a local one
#: missing waits for its disk; S3 has no folders, emptied is deleted)
DELETABLE = ("dropbox", "gdrive", "onedrive", "sftp", "webdav")


def three_invoices_mirrored(
    spec: TargetSpec, driver: Driver, tmp_path: Path, how: str, lately: bool = False
) -> config_mod.Config:
    """Three invoices mirrored by one run, then the mirror's folder emptied or deleted;
    ``lately``: the next run comes within five minutes of that one."""
    if spec.backend not in (TELLS_EMPTIED if how == "emptied" else DELETABLE):
        pytest.skip(f"{how} is left to the rescan listing on {spec.backend}")
    source = three_invoices(tmp_path)
    cfg = make_config(spec, source, tmp_path / "state", settle=0.1)
    (first,) = run_once(cfg)
    assert first.ok and first.uploaded == 3, first
    empty_target(driver) if how == "emptied" else delete_root(driver)
    assert driver.list() == {}
    if lately:
        return cfg
    # a while later: within five minutes of reaching it, a run trusts the folder is there
    with api.running(cfg) as mirror:
        for runner in mirror.runners:
            assert runner.index is not None
            runner.index.set_meta(target_seen=time.time() - 600)
    return cfg


@pytest.mark.parametrize("how", ["emptied", "deleted"])
@pytest.mark.parametrize("new", [2, 0], ids=["new-files", "nothing-new"])
def test_a_target_folder_deleted_or_emptied_between_runs_is_filled_again(
    spec: TargetSpec, driver: Driver, tmp_path: Path, how: str, new: int
) -> None:
    """The mirror's folder was emptied or deleted between two runs (cron's --once): the
    next run lists it and sends every file again, where it sent only the new ones and
    said all was in sync (the older invoices missing until the hourly rescan); with no
    new file, it sent nothing ('0 sent', exit 0) and the target stayed empty."""
    cfg = three_invoices_mirrored(spec, driver, tmp_path, how)
    for name in ("2024/inv-9.pdf", "inv-root.pdf")[:new]:
        (cfg.source / name).write_bytes(b"invoice " + name.encode())
    (second,) = run_once(cfg)
    assert second.ok and second.uploaded == 3 + new, second
    assert differences(cfg) == []


def test_a_folder_deleted_on_the_target_between_runs_is_filled_again_when_it_held_the_oldest_file(
    spec: TargetSpec, driver: Driver, tmp_path: Path
) -> None:
    """Someone deleted last year's folder on the target between two runs (tidying up
    the NAS): the next run found the target's folder neither gone nor empty, sent
    nothing, and those invoices stayed missing until the hourly rescan. A run asks for
    the file mirror put there longest ago, which was in that folder. (A folder without
    it is left to the rescan listing.)"""
    if spec.backend not in TELLS_EMPTIED:
        pytest.skip(f"a folder deleted is left to the rescan listing on {spec.backend}")
    source = tmp_path / "src"
    (source / "2024").mkdir(parents=True)
    (source / "2024" / "inv-0.pdf").write_bytes(b"invoice 0")
    cfg = make_config(spec, source, tmp_path / "state", settle=0.1)
    (first,) = run_once(cfg)
    assert first.ok and first.uploaded == 1, first
    (source / "2025").mkdir()
    (source / "2025" / "inv-1.pdf").write_bytes(b"invoice 1")
    (second,) = run_once(cfg)
    assert second.ok and second.uploaded == 1, second
    assert driver.delete_batch(["2024/inv-0.pdf"]) == [None]
    driver.remove_dir_if_empty("2024")
    with api.running(cfg) as mirror:
        for runner in mirror.runners:
            assert runner.index is not None
            runner.index.set_meta(target_seen=time.time() - 600)
    (third,) = run_once(cfg)
    assert third.ok and third.uploaded == 1, third
    assert differences(cfg) == []


@pytest.mark.parametrize("how", ["emptied", "deleted"])
def test_a_run_right_after_another_with_a_new_file_fills_a_target_folder_deleted_meanwhile(
    spec: TargetSpec, driver: Driver, tmp_path: Path, how: str
) -> None:
    """The mirror's folder was deleted in the web app, and the next run (cron's --once)
    came within five minutes of the last, with a new invoice: it made the folder again
    with that one alone, and no later run filled it, as the folder was neither gone nor
    empty: the three others missing, status in sync, until the hourly rescan."""
    cfg = three_invoices_mirrored(spec, driver, tmp_path, how, lately=True)
    (cfg.source / "2024" / "inv-9.pdf").write_bytes(b"invoice 9")
    (second,) = run_once(cfg)
    assert second.ok and second.uploaded == 4, second
    assert differences(cfg) == []


@pytest.mark.parametrize("how", ["emptied", "deleted"])
def test_a_target_folder_deleted_or_emptied_while_mirror_was_stopped_is_filled_by_its_start(
    spec: TargetSpec, driver: Driver, tmp_path: Path, how: str
) -> None:
    """The service restarted (or the machine booted) after the NAS share came back empty,
    with nothing new in the source: watch mode's first pass fills the folder again, where
    it sent nothing and the invoices stayed missing until the hourly rescan."""
    cfg = three_invoices_mirrored(spec, driver, tmp_path, how)
    with watching(cfg):
        # asked afresh: Drive's driver would trust the folder ids it resolved for a minute
        wait_for(lambda: driver.forget_folder("") or files_on(driver) == 3, 30, "every file back on the target")
    assert differences(cfg) == []


def trash_root(driver: Driver) -> None:
    """Someone deletes the mirror's folder in Drive's web app: Drive moves it to the trash,
    with what it holds, and uploads into it still succeed there, out of sight."""
    assert isinstance(driver, GDriveDriver)
    root_id = driver._folder_id("", create=False)
    driver._call(lambda: driver._files.update(fileId=root_id, body={"trashed": True}, **driver._drive_args()))


@pytest.mark.parametrize("how", ["deleted", "trashed"])
def test_a_target_folder_deleted_while_watching_is_filled_again(
    spec: TargetSpec, driver: Driver, tmp_path: Path, how: str
) -> None:
    """The mirror's folder was deleted in the web app while mirror watches, then new
    invoices came: the pass that makes the folder again is followed by a listing that
    sends the older files too, where only the new ones went up, status said in sync, and
    the rest waited for the hourly rescan. In Drive's trash, the new ones went into the
    trashed folder, out of sight, for the minute mirror trusted the folder's id."""
    if spec.backend not in ("gdrive", "onedrive"):
        # Dropbox and S3 make it out of sight with the upload, the others when told of it
        pytest.skip(f"a folder deleted in watch mode is left to the rescan listing on {spec.backend}")
    if how == "trashed" and spec.backend != "gdrive":
        pytest.skip(f"a folder deleted on {spec.backend} is gone from its path")
    source = three_invoices(tmp_path)
    cfg = make_config(spec, source, tmp_path / "state", settle=0.1)
    with watching(cfg):
        wait_for(lambda: files_on(driver) == 3, 30, "the first copy")
        trash_root(driver) if how == "trashed" else delete_root(driver)
        (source / "2024" / "inv-9.pdf").write_bytes(b"invoice 9")
        (source / "inv-root.pdf").write_bytes(b"invoice root")
        # asked afresh: this driver would trust the folder ids it resolved for a minute
        wait_for(lambda: driver.forget_folder("") or files_on(driver) == 5, 30, "every file back on the target")
    assert differences(cfg) == []


def test_a_target_folder_emptied_while_watching_is_filled_again_by_a_pass_a_while_later(
    spec: TargetSpec, driver: Driver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone emptied the mirror's folder while mirror watched (a cleanup script, a
    bucket's prefix cleared), and invoices kept coming: each went up alone, so the folder
    was neither gone nor empty when mirror asked, and status said in sync with every
    older invoice missing until the hourly rescan. A pass SEEN_FOR after mirror last
    asked asks again, for the file it put there longest ago, and fills the folder."""
    if spec.backend not in TELLS_EMPTIED:
        pytest.skip(f"emptied is left to the rescan listing on {spec.backend}")
    source = three_invoices(tmp_path)
    cfg = make_config(spec, source, tmp_path / "state", settle=0.1)
    with watching(cfg):
        wait_for(lambda: files_on(driver) == 3, 30, "the first copy")
        # its last rename done: the WebDAV server here answers 500 to a listing that meets one
        wait_for(lambda: api.status(cfg)[0].state == "idle", 30, "the first pass to end")
        empty_target(driver)
        (source / "2024" / "inv-8.pdf").write_bytes(b"invoice 8")
        wait_for(lambda: driver.stat("2024/inv-8.pdf") is not None, 30, "the new invoice sent")
        monkeypatch.setattr(runner_mod, "SEEN_FOR", 0.0)
        (source / "inv-9.pdf").write_bytes(b"invoice 9")
        wait_for(lambda: driver.forget_folder("") or files_on(driver) == 5, 30, "every file back on the target")
    assert differences(cfg) == []


class Outage:
    """The server of a target stopped (every connection dropped) and started again, and
    the target's folder emptied on its disk meanwhile: a NAS share swapped for an empty
    folder, a WebDAV folder made anew, a bucket restarted empty."""

    def __init__(self, spec: TargetSpec, request: pytest.FixtureRequest) -> None:
        self.spec = spec
        self.request = request
        path = unquote(urlsplit(spec.url).path)
        if spec.backend == "sftp":
            self.folder = Path(path)
        elif spec.backend == "webdav":
            self.folder = request.getfixturevalue("webdav_server").folder / path.lstrip("/")
        elif spec.backend != "s3":
            pytest.skip(f"no server of {spec.backend} to stop here")

    def down(self) -> None:
        if self.spec.backend == "sftp":
            self.request.getfixturevalue("sshd").stop()
        elif self.spec.backend == "webdav":
            self.request.getfixturevalue("webdav_server").server.stop()
        else:
            moto = self.request.getfixturevalue("s3_server").server
            moto.stop()
            # stopped, werkzeug still holds the port: connections would wait, not be refused
            moto._server.server_close()

    def empty(self) -> None:
        if self.spec.backend == "s3":
            # moto keeps its buckets in this process: another server on another port reaches them
            port = free_port()
            s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            s3.start()
            try:
                where = urlsplit(self.spec.url)
                bucket, prefix = where.netloc, where.path.strip("/")
                client = S3Server(f"http://127.0.0.1:{port}", s3).client()
                for item in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
                    client.delete_object(Bucket=bucket, Key=item["Key"])
            finally:
                s3.stop()
        else:
            self.folder.rename(self.folder.with_name(self.folder.name + ".old"))
            self.folder.mkdir()

    def up(self) -> None:
        if self.spec.backend == "sftp":
            self.request.getfixturevalue("sshd").start()
        elif self.spec.backend == "webdav":
            server = self.request.getfixturevalue("webdav_server")
            again = start_webdav(server.folder, server.port)
            server.server, server.thread = again.server, again.thread
        else:
            self.request.getfixturevalue("s3_server").server.start()


class States(Observer):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_state(self, target: str, state: str, error: str | None) -> None:
        self.seen.append(state)


def test_a_target_folder_emptied_while_the_target_was_down_is_filled_again(
    spec: TargetSpec, driver: Driver, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The server went down in watch mode and came back with the mirror's folder empty
    (the NAS's share swapped for an empty folder, the bucket restarted empty): the first
    pass after the outage lists it and sends every file, where it sent only the file
    written meanwhile, status said in sync, and the others waited for the hourly rescan
    (a restart did not help: the folder was no longer empty)."""
    outage = Outage(spec, request)
    source = three_invoices(tmp_path)
    cfg = make_config(spec, source, tmp_path / "state", settle=0.1)
    states = States()
    # s3fs retries a refused connection itself, for seconds: few tries of mirror's own
    with watching(cfg, observers=[states], retry=RetryPolicy(attempts=2, initial=0.1)):
        wait_for(lambda: files_on(driver) == 3, 30, "the first copy")
        outage.down()
        try:
            outage.empty()
            # in a new folder: its upload fails making the folder, and leaves no temp file
            # that would have the next pass list the target anyway
            (source / "2025").mkdir()
            (source / "2025" / "during.pdf").write_bytes(b"written during the outage")
            wait_for(lambda: "failing" in states.seen, 60, "the target found down")
        finally:
            outage.up()
        wait_for(lambda: files_on(driver) == 4, 60, "every file back on the target")
    assert differences(cfg) == []


def test_a_new_layout_whose_files_stand_in_each_others_way_converges(spec: TargetSpec, tmp_path: Path) -> None:
    """Old paths that are folders of new ones: 2024/a.pdf must go before 2024/a.pdf/b.pdf
    can land and 2024/b.pdf before 2024/b.pdf/a.pdf (each waits for the other), and
    2024/q.pdf before 2024/q.pdf/w/v.pdf. Parked aside first, then moved into place."""
    source = tmp_path / "src"
    for rel in ("b.pdf/a.pdf", "a.pdf/b.pdf", "z/q.pdf", "q.pdf/w/v.pdf"):
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_bytes(rel.encode())
        os.utime(source / rel, (1_714_521_600, 1_714_521_600))  # 2024-05-01
    (first,) = run_once(make_config(spec, source, tmp_path / "state", layout="{year}/{stem}{suffix}"))
    assert first.ok and first.uploaded == 4, first
    cfg = make_config(spec, source, tmp_path / "state", layout="by-year")
    (relaid,) = run_once(cfg)
    assert relaid.ok and relaid.uploaded + relaid.moved == 4, relaid
    assert differences(cfg) == []
    driver = registry.connect(registry.resolve(cfg.targets[0].url, cfg.targets[0].options, cfg.presets))
    try:
        assert sorted(driver.list()) == [
            "2024/a.pdf/b.pdf",
            "2024/b.pdf/a.pdf",
            "2024/q.pdf/w/v.pdf",
            "2024/z/q.pdf",
        ]
    finally:
        driver.close()


def test_files_dated_beyond_what_nanoseconds_count_are_mirrored(spec: TargetSpec, tmp_path: Path) -> None:
    """ext4 keeps dates to 2446; a count of nanoseconds ends in 2262. One such file (a
    camera's wrong clock) stopped every run with an internal error."""
    source = tmp_path / "src"
    source.mkdir()
    dates = {"future.pdf": 10_413_792_000, "past.pdf": -2_145_916_800, "now.pdf": 1_714_521_600}
    for name, seconds in dates.items():  # 2300-01-01, 1902-01-01, 2024-05-01
        (source / name).write_bytes(name.encode())
        os.utime(source / name, (seconds, seconds))
    cfg = make_config(spec, source, tmp_path / "state")
    (first,) = run_once(cfg)
    assert first.ok and first.uploaded == 3, first
    assert differences(cfg) == []
    (again,) = run_once(cfg)
    assert again.ok and again.uploaded == 0, again


def test_the_stop_flag_stops_a_long_first_copy_cleanly(spec: TargetSpec, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for i in range(60):
        (source / f"f{i:02d}.pdf").write_bytes(b"x" * 1000)
    cfg = make_config(spec, source, tmp_path / "state", concurrency=1)
    mirror = Mirror(cfg)
    mirror.open()
    threading.Timer(0.05, mirror.stop.set).start()
    try:
        mirror.run_once()
    finally:
        mirror.close(clean=mirror.shutdown())
    runner_driver = registry.connect(registry.resolve(cfg.targets[0].url, cfg.targets[0].options, cfg.presets))
    try:
        leftovers = [p for p in runner_driver.list() if ".~mirror-" in p]
    finally:
        runner_driver.close()
    assert leftovers == []
