"""``python -m bench.latency``: time from a write (close) to the file on the target.

Starts ``mirror run SOURCE TARGET`` in watch mode with default settings, waits for the
first full copy, then makes ``--changes`` changes ``--gap`` seconds apart (alternately a
new file and an edit of an existing one), while a poller reads each expected target file
every few milliseconds until its content matches. Ends with SIGTERM and checks exit 0.
With ``--burst N``, writes N new files at once instead and times their arrival, then
moves their folder into another in one rename and times the move on the target, then
deletes them all at once and times their removal from the target. With ``--soak
MINUTES``, changes the source without pause for that long (every quarter second 5 new
files, 5 edits, 2 renames and 5 deletions), samples mirror's memory, descriptors and
threads every 15 s, then times how long the target takes to match the source.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench import places, sshd, trees
from bench.tools import Target, mirror_command, mirror_sftp_config

POLL_S = 0.002


@dataclass
class Poller:
    """Watches the target for expected contents; records write-to-visible delays."""

    target: Path
    pending: dict[str, tuple[bytes, float]] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def expect(self, rel: str, content: bytes, written: float) -> None:
        with self.lock:
            self.pending[rel] = (content, written)

    def run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                todo = list(self.pending.items())
            for rel, (content, written) in todo:
                try:
                    data = (self.target / rel).read_bytes()
                except OSError:
                    continue
                if data == content:
                    seen = time.perf_counter()
                    with self.lock:
                        if self.pending.get(rel, (None, 0.0))[1] == written:
                            del self.pending[rel]
                            self.delays[f"{rel}@{written}"] = seen - written
            time.sleep(POLL_S)


def write(path: Path, content: bytes) -> float:
    """Write and close; the clock starts at close (when a watcher can see the whole file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)
    return time.perf_counter()


def change_path(spec: trees.TreeSpec, i: int) -> str:
    """Even changes create files (new folders every 20), odd ones edit existing files."""
    if i % 2 == 0:
        return f"new/{i // 20:02d}/n{i:04d}.txt"
    return trees.rel_path(spec, (i * 7919) % spec.files)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def wait_for_count(path: Path, files: int, timeout: float, proc: subprocess.Popen[bytes]) -> float:
    """Wait for the first copy; fail fast when mirror has exited (see its log)."""
    started = time.perf_counter()
    while places.count_files(path) < files:
        if proc.poll() is not None:
            raise SystemExit(f"bench: mirror exited with {proc.returncode} before the first copy finished")
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"bench: the first copy did not finish within {timeout:.0f} s")
        time.sleep(0.2)
    return time.perf_counter() - started


@dataclass
class Live:
    """A ``mirror run`` in watch mode whose first copy is done."""

    source: Path
    target: Path
    proc: subprocess.Popen[bytes]
    first: float
    log: Path
    code: int | None = None
    stop_s: float = 0.0


@contextlib.contextmanager
def live_mirror(kind: str, server: sshd.Server | None, workload: str, root: Path) -> Iterator[Live]:
    """Watch mode from a copy of ``workload`` (under ``root``) to a fresh target; SIGTERM
    at the end (the exit code and stop time are filled in on the way out)."""
    spec = trees.SPECS[workload]
    work = places.fresh(root / "latency" / kind)
    src = work / "source"
    subprocess.run(["cp", "-a", f"{trees.tree(spec)}/.", f"{src}/"], check=True)
    target = Target(kind, places.fresh(places.target_root() / f"latency-{kind}"), server)
    env = dict(os.environ, MIRROR_STATE_DIR=str(work / "state"))
    if server is None:
        cmd = [*mirror_command(), "run", str(src), str(target.path)]
    else:
        config = work / "mirror.toml"
        config.write_text(mirror_sftp_config(src, target))
        cmd = [*mirror_command(), "run", "-c", str(config)]
    # each run's log is kept: a change that never arrives is only explained by it
    log_path = trees.cache_dir() / "results" / time.strftime(f"latency-{kind}-%Y%m%d-%H%M%S.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "wb")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
    live = Live(src, target.path, proc, 0.0, log_path)
    try:
        live.first = wait_for_count(target.path, spec.files, 600, proc)
        time.sleep(1.0)  # let the watcher settle after the first copy
        yield live
    finally:
        proc.send_signal(signal.SIGTERM)
        stop_started = time.perf_counter()
        try:
            live.code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            live.code = proc.wait()
        live.stop_s = time.perf_counter() - stop_started
        log.close()


def measure(kind: str, server: sshd.Server | None, args: argparse.Namespace) -> str:
    spec = trees.SPECS[args.workload]
    poller = Poller(Path())
    with live_mirror(kind, server, args.workload, trees.cache_dir()) as live:
        poller.target = live.target
        watcher = threading.Thread(target=poller.run, daemon=True)
        watcher.start()
        try:
            for i in range(args.changes):
                rel = change_path(spec, i)
                content = f"change {i} at {time.time()}\n".encode() * 64
                poller.expect(rel, content, write(live.source / rel, content))
                time.sleep(args.gap)
            deadline = time.perf_counter() + 15
            while poller.pending and time.perf_counter() < deadline:
                time.sleep(0.05)
        finally:
            poller.stop.set()
    delays = list(poller.delays.values())
    missing = len(poller.pending)
    if missing:
        print(
            f"bench: {kind}: not on the target after 15 s: {', '.join(sorted(poller.pending))}; "
            f"mirror's log: {live.log}",
            file=sys.stderr,
        )
    if not delays:
        return f"| {kind} | {live.first:.1f} s | no change arrived | | | {missing} | {live.code} |"
    return (
        f"| {kind} | {live.first:.1f} s | {statistics.median(delays):.3f} s | {percentile(delays, 0.99):.3f} s "
        f"| {max(delays):.3f} s | {len(delays)}/{args.changes} ({missing} missing) "
        f"| {live.code} ({live.stop_s:.1f} s) |"
    )


def burst(kind: str, server: sshd.Server | None, args: argparse.Namespace) -> str:
    """``--burst`` new files of 1 KiB written at once (an export of a whole year),
    ``--per-folder`` to a new folder: how long after the last write until all are on the
    target. The source is on the tmpfs too, so the writes come faster than a disk lets
    them and the passes get large; mirror's CPU time shows what the passes cost."""
    with live_mirror(kind, server, args.workload, places.target_root()) as live:
        started = time.perf_counter()
        cpu_before = cpu_seconds(live.proc.pid)
        for i in range(args.burst):
            write(live.source / "burst" / f"{i // args.per_folder:05d}" / f"b{i:06d}.pdf", bytes(1024))
        written = time.perf_counter()
        deadline = written + 600
        arrived = 0
        while arrived < args.burst and time.perf_counter() < deadline:
            time.sleep(0.2)
            arrived = places.count_files(live.target / "burst")
        done = time.perf_counter()
        cpu = cpu_seconds(live.proc.pid) - cpu_before
        # then the export filed away in one rename (into an archive folder) ...
        cpu_before = cpu_seconds(live.proc.pid)
        (live.source / "archive").mkdir()
        (live.source / "burst").rename(live.source / "archive" / "burst")
        renamed = time.perf_counter()
        moved = 0
        while moved < arrived and time.perf_counter() < renamed + 600:
            time.sleep(0.2)
            moved = places.count_files(live.target / "archive")
        move_s = time.perf_counter() - renamed
        move_cpu = cpu_seconds(live.proc.pid) - cpu_before
        # ... and deleted at once (a year's archive cleaned up)
        cpu_before = cpu_seconds(live.proc.pid)
        shutil.rmtree(live.source / "archive")
        removed = time.perf_counter()
        left = moved
        while left and time.perf_counter() < removed + 600:
            time.sleep(0.2)
            left = places.count_files(live.target / "archive")
        gone = time.perf_counter() - removed
        delete_cpu = cpu_seconds(live.proc.pid) - cpu_before
    return (
        f"| {kind} | {args.burst} | {written - started:.1f} s | {done - written:.1f} s "
        f"| {arrived / (done - started):.0f} | {cpu:.1f} s | {arrived}/{args.burst} "
        f"| {move_s:.1f} s, CPU {move_cpu:.1f} s, {moved} moved "
        f"| {gone:.1f} s, CPU {delete_cpu:.1f} s, {left} left | {live.code} |"
    )


#: --soak: seconds between samples of mirror's process, and between rounds of changes
SAMPLE_S = 15.0
TICK_S = 0.25


@dataclass(frozen=True)
class ProcSample:
    """What a long-running mirror holds, read from /proc."""

    at: float
    rss_kib: int
    fds: int
    threads: int


def proc_sample(pid: int, at: float) -> ProcSample:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return ProcSample(
        at, int(status["VmRSS"].split()[0]), len(os.listdir(f"/proc/{pid}/fd")), int(status["Threads"])
    )


def files_of(root: Path) -> dict[str, tuple[int, int]]:
    """Size and mtime (whole seconds, as SFTP keeps it) of every file below ``root``."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            st = os.stat(os.path.join(folder, name))
            found[os.path.relpath(os.path.join(folder, name), root)] = (st.st_size, st.st_mtime_ns // 10**9)
    return found


def churn(source: Path, names: list[str], rng: random.Random, round_: int) -> int:
    """One round of changes to the source: new files, edits, renames, deletions."""
    for i in range(5):
        rel = f"soak/{round_ // 40:05d}/s{round_:06d}-{i}.pdf"
        write(source / rel, rng.randbytes(rng.randrange(200, 6000)))
        names.append(rel)
    for rel in rng.sample(names, 5):
        with open(source / rel, "ab") as f:
            f.write(b"edited")
    for _ in range(2):
        old = names.pop(rng.randrange(len(names)))
        new = f"renamed/{round_ // 40:05d}/{old.replace('/', '-')}"
        (source / new).parent.mkdir(parents=True, exist_ok=True)
        (source / old).rename(source / new)
        names.append(new)
    for _ in range(5):
        (source / names.pop(rng.randrange(len(names)))).unlink()
    return 17


def growth_per_hour(samples: list[ProcSample]) -> float:
    """RSS growth in MiB per hour: the least-squares slope over the samples after the first minute."""
    late = [s for s in samples if s.at >= samples[0].at + 60] or samples
    if len(late) < 2:
        return 0.0
    slope = statistics.linear_regression([s.at for s in late], [s.rss_kib / 1024 for s in late]).slope
    return slope * 3600


def soak(kind: str, server: sshd.Server | None, args: argparse.Namespace) -> str:
    """``--soak`` minutes of changes with no pause: does mirror's memory, or its count of
    open files or threads, grow with the work it has done, and does it keep up?"""
    rng = random.Random(7)
    with live_mirror(kind, server, args.workload, places.target_root()) as live:
        names = sorted(files_of(live.source))
        started = time.perf_counter()
        samples = [proc_sample(live.proc.pid, 0.0)]
        changes = round_ = 0
        while (elapsed := time.perf_counter() - started) < args.soak * 60:
            changes += churn(live.source, names, rng, round_)
            round_ += 1
            if elapsed - samples[-1].at >= SAMPLE_S:
                samples.append(proc_sample(live.proc.pid, elapsed))
            time.sleep(TICK_S)
        stopped = time.perf_counter()
        matched = False
        while not matched and time.perf_counter() < stopped + 120:
            time.sleep(0.5)
            matched = files_of(live.source) == files_of(live.target)
        caught_up = time.perf_counter() - stopped
        samples.append(proc_sample(live.proc.pid, time.perf_counter() - started))
    one_minute = next((s for s in samples if s.at >= 60), samples[-1])
    fds = [s.fds for s in samples]
    return (
        f"| {kind} | {args.soak:g} min | {changes} | {one_minute.rss_kib / 1024:.1f} MiB "
        f"| {samples[-1].rss_kib / 1024:.1f} MiB | {growth_per_hour(samples):+.2f} MiB/h "
        f"| {min(fds)}-{max(fds)} | {max(s.threads for s in samples)} "
        f"| {'matched' if matched else 'DIFFERS'} after {caught_up:.1f} s | {live.code} |"
    )


def cpu_seconds(pid: int) -> float:
    """User and system CPU a running process has used (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def maybe_sshd(kinds: list[str]) -> Iterator[sshd.Server | None]:
    if "sftp" in kinds:
        with sshd.loopback(trees.cache_dir() / "sshd") as server:
            yield server
    else:
        yield None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__)
    p.add_argument("--targets", default="local", help="comma list of: local,sftp")
    p.add_argument("--workload", default="small", help="tree the source starts from")
    p.add_argument("--changes", type=int, default=100)
    p.add_argument("--gap", type=float, default=0.3, help="seconds between changes")
    p.add_argument("--burst", type=int, default=0, metavar="N", help="instead: N new files written at once")
    p.add_argument("--per-folder", type=int, default=500, metavar="N", help="with --burst: files per new folder")
    p.add_argument("--soak", type=float, default=0, metavar="MINUTES", help="instead: change the source that long")
    args = p.parse_args(argv)
    if args.burst and args.burst >= trees.SPECS[args.workload].files:
        # deleting the burst would be over half the mirrored files: mirror's delete guard
        # withholds it, and the bench would time the guard instead of the deletes
        p.error(f"--burst must be fewer files than --workload {args.workload} has; take a larger workload")
    kinds = args.targets.split(",")
    run = burst if args.burst else soak if args.soak else measure
    rows = []
    with maybe_sshd(kinds) as server:
        for kind in kinds:
            rows.append(run(kind, server if kind == "sftp" else None, args))
    print(
        f"\n`python -m bench.latency {' '.join(sys.argv[1:] if argv is None else argv)}` "
        f"({time.strftime('%Y-%m-%d %H:%M')}; source {args.workload}, default settings)\n"
    )
    if args.soak:
        print(
            "| target | changing for | changes | RSS after 1 min | RSS at the end | RSS growth "
            "| open descriptors | threads | target, once the changes stop | exit |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
    elif args.burst:
        print(
            "| target | files | writing them | then until all arrived | files/s | mirror CPU | arrived "
            "| moved in one folder rename: until moved | then deleted at once: until gone | exit |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
    else:
        print("| target | first copy | p50 | p99 | max | arrived | exit code (stop time) |")
        print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
