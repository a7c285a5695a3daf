"""A damaged or lost index is rebuilt from a listing: no crash, no mass re-upload.

The index is a cache. Whatever happens to the sqlite file (deleted, overwritten with
garbage, cut in half, its WAL mangled), the next ``mirror run --once`` must exit 0, send
nothing the target already holds identically, and leave a target that ``verify`` passes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from mirror.errors import MirrorError
from mirror.index import DamagedIndex, Index
from tests.cli import run
from tests.reliability.common import hashes, make_source, sent


def _delete(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def _garbage(db: Path) -> None:
    db.write_bytes(os.urandom(db.stat().st_size or 4096))


def _truncate(db: Path) -> None:
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])


def _emptied(db: Path) -> None:
    """Cut to nothing, its log gone too (a disk that does not order writes, after a crash):
    sqlite takes such a file for a new index, and it was used as one, without a word."""
    db.write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def _zero_pages(db: Path) -> None:
    """Keep the header (so sqlite opens it) but wipe pages in the middle: quick_check fails."""
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    for start in range(page, len(data), 2 * page):
        data[start : start + page] = os.urandom(min(page, len(data) - start))
    db.write_bytes(bytes(data))


def _bad_wal(db: Path) -> None:
    Path(f"{db}-wal").write_bytes(os.urandom(8192))


#: how the index is damaged, and whether its rows are lost (else sqlite shrugs it off)
DAMAGE: dict[str, tuple[Callable[[Path], None], bool]] = {
    "deleted": (_delete, True),
    "garbage": (_garbage, True),
    "truncated": (_truncate, True),
    "emptied": (_emptied, True),
    "pages wiped": (_zero_pages, True),
    # a WAL with a bad header is ignored by sqlite: the checkpointed rows are still there
    "wal mangled": (_bad_wal, False),
}


SLOW_DAMAGE = ("truncated", "wal mangled")


@pytest.mark.parametrize(
    "damage", [pytest.param(d, marks=[pytest.mark.slow] if d in SLOW_DAMAGE else []) for d in DAMAGE]
)
def test_a_damaged_index_is_rebuilt_without_sending_again(damage: str, tmp_path: Path) -> None:
    source = make_source(tmp_path / "export", small=80, large=1, large_bytes=2 * 1024 * 1024)
    target, state = tmp_path / "backup", tmp_path / "state"
    first = run("run", str(source), str(target), "--once", state=state)
    assert first.returncode == 0, first.stderr
    assert sent(first.stdout) == 81
    (db,) = (state / "targets").glob("*.sqlite")
    spoil, rows_lost = DAMAGE[damage]
    spoil(db)

    again = run("run", str(source), str(target), "--once", state=state)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Traceback" not in again.stderr
    assert sent(again.stdout) == 0, again.stdout
    if rows_lost:
        assert "81 already there" in again.stdout
    assert hashes(target) == hashes(source)
    assert run("verify", str(source), str(target), state=state).returncode == 0
    # the rebuilt index is complete, so the next restart needs neither listing nor upload
    with sqlite3.connect(db) as check:
        assert check.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 81
        assert check.execute("SELECT value FROM meta WHERE key = 'clean_shutdown'").fetchone()[0] == "1"
    if damage in ("garbage", "pages wiped", "emptied"):
        assert "damaged" in again.stderr, again.stderr
        assert list((state / "targets").glob("*.corrupt-*")), "the damaged index was not kept for inspection"


def test_a_lost_index_keeps_a_file_edited_since_in_the_year_it_was_first_mirrored(tmp_path: Path) -> None:
    """by-year: a 2024 invoice corrected in 2026 stays in 2024/ (the index remembers the
    date). With the state folder lost, it was sent again into 2026/, and the 2024 copy was
    left for good: never updated nor deleted, and verify exited 0."""
    source, target, state = tmp_path / "src", tmp_path / "backup", tmp_path / "state"
    (source / "clients").mkdir(parents=True)
    inv = source / "clients/inv-17.pdf"
    inv.write_bytes(b"invoice v1")
    os.utime(inv, (1714521600, 1714521600))  # 2024-05-01
    (source / "clients/inv-18.pdf").write_bytes(b"invoice 18")
    args = ("run", str(source), str(target), "--layout", "by-year", "--once")
    assert run(*args, state=state).returncode == 0
    inv.write_bytes(b"invoice v2, corrected")
    assert run(*args, state=state).returncode == 0
    (db,) = (state / "targets").glob("*.sqlite")
    _delete(db)
    again = run(*args, state=state)
    assert again.returncode == 0, again.stderr
    assert sent(again.stdout) == 0 and "2 already there" in again.stdout, again.stdout
    copies = [path for path in hashes(target) if path.endswith("/inv-17.pdf")]
    assert copies == ["2024/clients/inv-17.pdf"]
    inv.unlink()
    assert run(*args, state=state).returncode == 0
    assert [path for path in hashes(target) if path.endswith("/inv-17.pdf")] == []


def test_an_index_with_two_rows_for_one_target_path_keeps_the_file_that_is_there(tmp_path: Path) -> None:
    """Earlier builds could leave the row of a replaced file behind (its removal postponed
    by a failed transfer); the next pass then deleted the new file at that path."""
    source, target, state = tmp_path / "export", tmp_path / "backup", tmp_path / "state"
    (source / "a").mkdir(parents=True)
    (source / "a" / "x.pdf").write_bytes(b"old")
    assert run("run", str(source), str(target), "--once", "--layout", "flat", state=state).returncode == 0
    (db,) = (state / "targets").glob("*.sqlite")
    # what such a build left: b/x.pdf replaced a/x.pdf at x.pdf, a/x.pdf's row stayed
    (source / "a" / "x.pdf").unlink()
    (source / "b").mkdir()
    new = source / "b" / "x.pdf"
    new.write_bytes(b"new")
    (target / "x.pdf").write_bytes(b"new")
    st = new.stat()
    os.utime(target / "x.pdf", ns=(st.st_atime_ns, st.st_mtime_ns))
    with sqlite3.connect(db) as old:
        old.execute("ALTER TABLE files DROP COLUMN gen")  # format 1's table
        old.execute("PRAGMA user_version = 1")
        old.execute("DROP INDEX IF EXISTS files_dst_one")
        old.execute("CREATE INDEX IF NOT EXISTS files_dst ON files(dst)")
        day = old.execute("SELECT date FROM files").fetchone()[0]
        old.execute(
            "INSERT INTO files VALUES ('b/x.pdf', 'x.pdf', ?, ?, ?, ?, NULL)", (3, st.st_mtime_ns, st.st_ino, day)
        )
    old.close()

    again = run("run", str(source), str(target), "--once", "--layout", "flat", state=state)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (target / "x.pdf").read_bytes() == b"new"
    assert sent(again.stdout) == 0, again.stdout
    with sqlite3.connect(db) as check:
        assert check.execute("SELECT src, dst FROM files").fetchall() == [("b/x.pdf", "x.pdf")]
    check.close()


@pytest.mark.parametrize("older", [False, True], ids=["", "written-by-an-older-mirror"])
def test_rows_that_still_read_outlive_a_damaged_page(tmp_path: Path, older: bool) -> None:
    """Rebuilt from a listing alone, the index forgot which files were mirror's: a file
    removed from the source stayed on the target for good, and a by-year copy of a file
    edited since got a second one under this year (the listing's copy differs). So too
    from an older mirror's index, whose files table lacks columns added since."""
    source, target, state = tmp_path / "export", tmp_path / "backup", tmp_path / "state"
    source.mkdir()
    for i in range(40):
        (source / f"invoice {i:02}.pdf").write_bytes(b"invoice %d" % i)
        os.utime(source / f"invoice {i:02}.pdf", (1_680_000_000, 1_680_000_000))  # 2023
    by_year = ("run", str(source), str(target), "--once", "--layout", "by-year")
    assert run(*by_year, state=state).returncode == 0
    (source / "invoice 01.pdf").write_bytes(b"invoice 1, corrected")
    assert run(*by_year, state=state).returncode == 0
    (source / "invoice 02.pdf").unlink()
    (db,) = (state / "targets").glob("*.sqlite")
    if older:
        with sqlite3.connect(db) as old:
            old.execute("ALTER TABLE files DROP COLUMN gen")
            old.execute("PRAGMA user_version = 1")
        old.close()
    with db.open("r+b") as f:  # one page of the files table, not the schema
        f.seek(3 * 4096)
        f.write(os.urandom(4096))

    again = run(*by_year, state=state)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 deleted" in again.stdout, again.stdout
    assert sorted(p.name for p in target.rglob("invoice 0[12].pdf")) == ["invoice 01.pdf"]
    assert hashes(target) == {f"2023/{rel}": h for rel, h in hashes(source).items()}
    assert "damaged" in again.stderr and "file record(s) that still read" in again.stderr


def test_an_index_a_newer_mirror_wrote_is_refused_not_used(tmp_path: Path) -> None:
    """An older mirror took a newer one's index as its own, without a word: rows it read
    otherwise stood as facts (verify said identical, with files left to delete)."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"a")
    assert run("run", str(src), str(dst), "--once", state=state).returncode == 0
    (db,) = (state / "targets").glob("*.sqlite")
    with sqlite3.connect(db) as newer:
        newer.execute("PRAGMA user_version = 99")
    refused = run("run", str(src), str(dst), "--once", state=state)
    assert refused.returncode == 2 and "written by a newer mirror (index format 99" in refused.stderr
    assert "Traceback" not in refused.stderr and db.exists()


def test_a_dry_run_on_an_older_mirror_s_index_plans_and_leaves_it_as_it_was(tmp_path: Path) -> None:
    """After an upgrade, mirror run --dry-run failed with 'target failed: cannot use the
    index ... (no such table: leftovers)', exit 1, where the real run upgraded the index."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"a")
    (src / "b.pdf").write_bytes(b"b")
    assert run("run", str(src), str(dst), "--once", state=state).returncode == 0
    (db,) = (state / "targets").glob("*.sqlite")
    with sqlite3.connect(db) as old:  # as mirror wrote it before these tables, columns and the format number
        old.execute("ALTER TABLE files DROP COLUMN gen")
        old.execute("DROP TABLE leftovers")
        old.execute("DROP TABLE sending")
        old.execute("PRAGMA user_version = 0")
    old.close()
    (src / "a.pdf").unlink()
    (src / "c.pdf").write_bytes(b"c")
    before = db.read_bytes()

    dry = run("run", str(src), str(dst), "--dry-run", state=state)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "put          c.pdf -> c.pdf  (new)" in dry.stdout, dry.stdout
    assert "delete       a.pdf  (removed from the source)" in dry.stdout, dry.stdout
    assert sorted(hashes(dst)) == ["a.pdf", "b.pdf"] and db.read_bytes() == before

    real = run("run", str(src), str(dst), "--once", state=state)
    assert real.returncode == 0 and sorted(hashes(dst)) == ["b.pdf", "c.pdf"], real.stdout + real.stderr


def test_readers_refuse_an_index_a_newer_mirror_wrote(tmp_path: Path) -> None:
    """After a downgrade, only the run refused a newer mirror's index: a dry run planned
    from it (exit 0), verify compared with it, and status showed its files as in sync."""
    src, state, cfg = tmp_path / "src", tmp_path / "state", tmp_path / "mirror.toml"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"a")
    (src / "b.pdf").write_bytes(b"b")
    cfg.write_text(
        f'source = "{src}"\n[targets.usb]\nurl = "{tmp_path / "usb"}"\n[targets.nas]\nurl = "{tmp_path / "nas"}"\n'
    )
    assert run("run", "-c", str(cfg), "--once", state=state).returncode == 0
    (db,) = (state / "targets").glob("usb-*.sqlite")
    with sqlite3.connect(db) as newer:
        newer.execute("PRAGMA user_version = 99")
    newer.close()
    written = db.read_bytes()
    (src / "b.pdf").unlink()
    said = "was written by a newer mirror (index format 99; this one reads 2); run the newer mirror"
    for command in (("run", "-c", str(cfg), "--dry-run"), ("verify", "-c", str(cfg))):
        refused = run(*command, state=state)
        assert refused.returncode == 2 and said in refused.stderr, refused.stdout + refused.stderr
        assert "Traceback" not in refused.stderr and "b.pdf" not in refused.stdout, refused.stdout
    shown = run("status", "-c", str(cfg), state=state)
    assert shown.returncode == 1, shown.stdout
    newer_line = f"usb: {tmp_path / 'usb'}  (not running, written by a newer mirror)\n  the index {db} {said}"
    assert newer_line in shown.stdout, shown.stdout
    assert f"nas: {tmp_path / 'nas'}  (not running, stopped)\n" in shown.stdout, shown.stdout
    every = run("status", "--json", state=state)
    assert every.returncode == 1
    assert {(s["name"], s["state"]) for s in json.loads(every.stdout)} == {
        ("usb", "written by a newer mirror"),
        ("nas", "stopped"),
    }
    assert db.read_bytes() == written and (tmp_path / "usb" / "b.pdf").exists()


@pytest.mark.parametrize("damage", ["garbage", "pages wiped", "emptied"])
def test_status_shows_a_damaged_index_on_its_target_s_line_beside_the_others(damage: str, tmp_path: Path) -> None:
    """One damaged index made `mirror status` (and --json) print only 'mirror: error:
    cannot use the index ... (database disk image is malformed)': no other target, no
    JSON, no word that mirror run rebuilds it."""
    src, state, cfg = tmp_path / "src", tmp_path / "state", tmp_path / "mirror.toml"
    make_source(src, small=300, large=0, large_bytes=0)
    cfg.write_text(
        f'source = "{src}"\n[targets.usb]\nurl = "{tmp_path / "usb"}"\n[targets.nas]\nurl = "{tmp_path / "nas"}"\n'
    )
    assert run("run", "-c", str(cfg), "--once", state=state).returncode == 0
    (db,) = (state / "targets").glob("usb-*.sqlite")
    DAMAGE[damage][0](db)
    said = "is damaged (", "); a start of mirror run moves it aside and rebuilds it"
    shown = run("status", "-c", str(cfg), state=state)
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert f"usb: {tmp_path / 'usb'}  (not running, index damaged)\n  the index {db} {said[0]}" in shown.stdout
    assert said[1] in shown.stdout and f"nas: {tmp_path / 'nas'}  (not running, stopped)\n" in shown.stdout
    every = run("status", "--json", state=state)
    assert every.returncode == 1, every.stderr
    assert {(s["name"], s["state"], s["in_sync"]) for s in json.loads(every.stdout)} == {
        ("usb", "index damaged", False),
        ("nas", "stopped", True),
    }
    assert run("run", "-c", str(cfg), "--once", state=state).returncode == 0
    assert run("status", "-c", str(cfg), state=state).returncode == 0


def test_an_index_read_while_it_is_made_is_never_taken_for_a_damaged_one(tmp_path: Path) -> None:
    """mirror status or verify, run in the instant a first run made the index, found an
    empty file and said "(running, index damaged)", exit 1."""
    for n in range(40):
        path = tmp_path / f"t{n}.sqlite"
        told: list[Exception] = []
        made = threading.Event()

        def read(path: Path = path, made: threading.Event = made, told: list[Exception] = told) -> None:
            while not made.is_set():
                try:
                    Index(path, readonly=True).close()
                except DamagedIndex as exc:
                    told.append(exc)
                except MirrorError:
                    pass  # not there yet

        reader = threading.Thread(target=read)
        reader.start()
        try:
            Index(path).close()
        finally:
            made.set()
            reader.join()
        assert not told, told[0]
