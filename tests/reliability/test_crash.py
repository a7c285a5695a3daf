"""kill -9 at random moments of a first copy, then restart: nothing partial, nothing lost.

Each trial starts a fresh target and state, kills a real ``mirror run`` (``--once`` or
watch mode) with SIGKILL one to three times at random moments, and checks after every
kill that each file under a final name on the target equals the source file (the source
does not change during a trial, so "the content at some point in time" is today's).
Then one ``mirror run --once`` must converge without re-sending what already landed,
``mirror verify`` must pass, no temp file may remain, and the source must be untouched
(content, size, mtime and mode of every entry). The seed of each trial is printed on
failure so it can be replayed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import random
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from mirror.index import Index, IndexEntry
from tests.cli import files, run, start, wait_for
from tests.reliability.common import MIB, digest, hashes, make_source, sent, sftp_options, temp_files, write_config
from tests.reliability.common import landed as landed_files
from tests.servers.sshd import SshServer


@dataclass
class Bench:
    """One source, and how to make a fresh target for it on one backend."""

    source: Path
    work: Path
    backend: str
    server: SshServer | None = None

    def fresh(self, trial: int) -> tuple[Path, Path, Path]:
        """(config, state folder, folder on disk holding the target's files) for one trial."""
        folder = self.work / f"trial-{trial}"
        if folder.exists():
            shutil.rmtree(folder)
        remote = folder / "remote"
        remote.mkdir(parents=True)
        if self.server is not None:
            url, options = self.server.url(remote), sftp_options(self.server)
        else:
            url, options = str(remote), {}
        config = write_config(folder / "mirror.toml", self.source, {"box": (url, options)}, settle="0s")
        return config, folder / "state", remote


def check_no_partial(expected: dict[str, str], remote: Path, context: str) -> int:
    """Every file under a final name is complete; returns how many source files are missing."""
    # an SFTP server may still finish requests of a killed client: read each file once, as it is
    landed = {rel: hashlib.sha256(data).hexdigest() for rel, data in landed_files(remote).items()}
    extra = sorted(set(landed) - set(expected))
    assert not extra, f"{context}: files that are not in the source: {extra[:5]}"
    partial = sorted(rel for rel, h in landed.items() if h != expected[rel])
    assert not partial, f"{context}: partial or wrong files under their final name: {partial[:5]}"
    return len(set(expected) - set(landed))


def trial(
    bench: Bench, number: int, seed: int, budget: float, before: dict[str, tuple[str, int, int, int]]
) -> int:
    """One crash trial; returns the number of kills that hit a running process."""
    rng = random.Random(seed)
    expected = {rel: info[0] for rel, info in before.items() if info[0]}
    config, state, remote = bench.fresh(number)
    hits = 0
    for kill in range(rng.randint(1, 3)):
        once = rng.random() < 0.5
        log = config.parent / f"run-{kill}.log"
        proc = start("run", "-c", str(config), *(["--once"] if once else []), state=state, log=log)
        delay = rng.uniform(0.05, 1.0) * budget
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            hits += 1
        context = f"seed {seed}, kill {kill} after {delay:.2f} s ({'--once' if once else 'watch'})"
        check_no_partial(expected, remote, context)
    missing = check_no_partial(expected, remote, f"seed {seed}, before the converging run")
    converge = run("run", "-c", str(config), "--once", state=state, timeout=300)
    context = f"seed {seed}: {converge.stdout[-2000:]}{converge.stderr[-2000:]}"
    assert converge.returncode == 0, context
    # what already landed is adopted from the listing, never sent again
    assert sent(converge.stdout) <= missing, context
    verify = run("verify", "-c", str(config), state=state, timeout=300)
    assert verify.returncode == 0, f"seed {seed}: {verify.stdout[-2000:]}"
    assert temp_files(remote) == [], f"seed {seed}: temp files left behind"
    assert hashes(remote) == expected, f"seed {seed}: the target differs from the source"
    assert digest(bench.source) == before, f"seed {seed}: the source was touched"
    shutil.rmtree(config.parent)
    return hits


def calibrate(bench: Bench) -> float:
    """Seconds an uninterrupted first copy takes: kills are spread over that span."""
    config, state, remote = bench.fresh(-1)
    began = time.monotonic()
    first = run("run", "-c", str(config), "--once", state=state, timeout=600)
    took = time.monotonic() - began
    assert first.returncode == 0, first.stderr
    assert hashes(remote) == hashes(bench.source)
    shutil.rmtree(config.parent)
    return took


def trials(bench: Bench, count: int, base_seed: int) -> None:
    before = digest(bench.source)
    budget = calibrate(bench)
    hits = sum(trial(bench, n, base_seed + n, budget, before) for n in range(count))
    # a trial series in which no kill ever hit a running process proved nothing
    assert hits >= count, f"only {hits} of the kills hit a running mirror (budget {budget:.1f} s)"
    print(f"{bench.backend}: {count} trials, {hits} kills, all converged, 0 lost; first copy {budget:.1f} s")


@pytest.mark.parametrize(("backend", "count"), [("local", 2), ("sftp", 1)])
def test_kill_9_during_a_first_copy_converges_quick(
    backend: str, count: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    source = make_source(tmp_path / "export", small=500, large=2, large_bytes=8 * MIB)
    server = request.getfixturevalue("sshd") if backend == "sftp" else None
    trials(Bench(source, tmp_path / "work", backend, server), count, base_seed=1000)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize(("backend", "count", "large_mib"), [("local", 20, 100), ("sftp", 8, 100)])
def test_kill_9_during_a_first_copy_converges_many_trials(
    backend: str, count: int, large_mib: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    source = make_source(tmp_path / "export", small=3000, large=2, large_bytes=large_mib * MIB)
    server = request.getfixturevalue("sshd") if backend == "sftp" else None
    seed = int(os.environ.get("MIRROR_CRASH_SEED", "2000"))
    trials(Bench(source, tmp_path / "work", backend, server), count, base_seed=seed)


def test_files_a_killed_pass_moved_but_did_not_record_are_followed_to_their_new_path(tmp_path: Path) -> None:
    """What kill -9 leaves in a new layout's moves: the file at its new path, its move
    journaled, its row not yet. The next run, with another layout again, once sent the
    file anew and left the moved copy at the abandoned layout's path for good."""
    source, target, state = tmp_path / "export", tmp_path / "backup", tmp_path / "state"
    (source / "reports").mkdir(parents=True)
    for name in ("a.pdf", "b.pdf"):
        (source / "reports" / name).write_bytes(name.encode())
        os.utime(source / "reports" / name, (1_714_521_600, 1_714_521_600))  # 2024-05-01
    assert run("run", str(source), str(target), "--once", state=state).returncode == 0
    (target / "2024" / "reports").mkdir(parents=True)
    (target / "reports" / "a.pdf").rename(target / "2024" / "reports" / "a.pdf")
    (db,) = (state / "targets").glob("*.sqlite")
    index = Index(db)
    moved = index.lookup("reports/a.pdf")
    assert moved is not None
    index.sending([moved._replace(dst="2024/reports/a.pdf")])
    index.set_meta(clean_shutdown=0)
    index.close()
    flat = run("run", str(source), str(target), "--once", "--layout", "flat", state=state)
    assert flat.returncode == 0, flat.stdout + flat.stderr
    assert files(target) == {"a.pdf": b"a.pdf", "b.pdf": b"b.pdf"}
    assert sent(flat.stdout) == 0, flat.stdout


def killed_while_sending(state: Path, rows: list[IndexEntry], lost: tuple[str, ...] = ()) -> None:
    """Leave the index as a kill -9 leaves it: ``rows`` journaled as being sent, the
    rows of ``lost`` gone with the transaction the kill ended."""
    (db,) = (state / "targets").glob("*.sqlite")
    index = Index(db)
    index.forget_many(lost)
    index.sending(rows)
    index.set_meta(clean_shutdown=0)
    index.close()


def test_a_file_replaced_by_one_of_its_size_and_time_after_a_kill_is_sent_again(tmp_path: Path) -> None:
    """A file that landed before the kill, its row lost, replaced while mirror was down
    by a new file of the same size and time (cp -p, saved through a temp file): the
    restart recorded the copy by the listing's size and time, with no inode, and the
    new file was never sent; verify said identical."""
    source, target, state = tmp_path / "export", tmp_path / "backup", tmp_path / "state"
    source.mkdir()
    invoice = source / "inv-17.pdf"
    invoice.write_bytes(b"draft 17")
    os.utime(invoice, (1_700_000_000, 1_700_000_000))
    assert run("run", str(source), str(target), "--once", state=state).returncode == 0
    st = invoice.stat()
    day = dt.date(2023, 11, 14)
    journaled = IndexEntry("inv-17.pdf", "inv-17.pdf", st.st_size, st.st_mtime_ns, st.st_ino, day)
    killed_while_sending(state, [journaled], lost=("inv-17.pdf",))
    saved = source / "inv-17.pdf.tmp"
    saved.write_bytes(b"final 17")
    os.utime(saved, (1_700_000_000, 1_700_000_000))
    saved.rename(invoice)
    restarted = run("run", str(source), str(target), "--once", state=state)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert files(target) == {"inv-17.pdf": b"final 17"}


def test_invoices_of_one_size_and_time_filed_crosswise_are_sent_after_a_kill(tmp_path: Path) -> None:
    """Flat layout: open/a.pdf filed as paid/b.pdf and open/b.pdf as paid/a.pdf, all of
    one size and time, and mirror killed as it moved them: the restart took each copy
    there for the file journaled to it (1,691 of 2,000 target files held the other
    invoice), with run, status and verify in sync."""
    source, target, state = tmp_path / "export", tmp_path / "backup", tmp_path / "state"
    (source / "open").mkdir(parents=True)
    (source / "paid").mkdir()
    for name in ("a", "b"):
        (source / "open" / f"{name}.pdf").write_bytes(f"invoice {name}".encode())
        os.utime(source / "open" / f"{name}.pdf", (1_700_000_000, 1_700_000_000))
    flat = ("run", str(source), str(target), "--layout", "flat", "--once")
    assert run(*flat, state=state).returncode == 0
    (source / "open" / "a.pdf").rename(source / "paid" / "b.pdf")
    (source / "open" / "b.pdf").rename(source / "paid" / "a.pdf")
    day = dt.date(2023, 11, 14)
    journaled = []
    for name in ("a", "b"):
        st = (source / "paid" / f"{name}.pdf").stat()
        journaled.append(IndexEntry(f"paid/{name}.pdf", f"{name}.pdf", st.st_size, st.st_mtime_ns, st.st_ino, day))
    killed_while_sending(state, journaled)  # before any of the moves was made
    restarted = run(*flat, state=state)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert files(target) == {"a.pdf": b"invoice b", "b.pdf": b"invoice a"}


def test_a_folder_a_killed_upload_made_goes_with_its_temp_file(tmp_path: Path) -> None:
    """kill -9 while a scan was being sent into 2024/scans, then 2024 renamed on the source
    before the restart: the temp file was removed and the empty 2024/scans stayed on the
    target for good (folders emptied by deletions and moves are removed)."""
    source, target, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    (source / "2024-archived" / "scans").mkdir(parents=True)
    (source / "2024-archived" / "scans" / "scan.tif").write_bytes(b"scan")
    assert run("run", str(source), str(target), "--once", state=state).returncode == 0
    # what the kill left: a folder holding only the upload's temp file
    (target / "2024" / "scans").mkdir(parents=True)
    (target / "2024" / "scans" / ".~mirror-0123456789ab.tmp").write_bytes(b"sca")
    again = run("run", str(source), str(target), "--once", "--rescan", state=state)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "removed leftover temp file 2024/scans/" in again.stderr
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "2024-archived",
        "2024-archived/scans",
        "2024-archived/scans/scan.tif",
    ]


def test_status_tells_a_killed_mirror_from_a_stopped_one(tmp_path: Path) -> None:
    source, target, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    source.mkdir()
    (source / "a.pdf").write_bytes(b"a")
    proc = start("run", str(source), str(target), state=state)
    try:
        wait_for(lambda: files(target) == files(source), what="the first copy")
    finally:
        proc.kill()
        proc.wait(10)
    shown = run("status", state=state)
    assert "(not running, ended without stopping cleanly)" in shown.stdout, shown.stdout
    assert run("run", str(source), str(target), "--once", state=state).returncode == 0
    assert "(not running, stopped)" in run("status", state=state).stdout
