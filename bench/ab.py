"""``python -m bench.ab REV REV ...``: mirror builds from git revisions, run in turn.

Whether a change made mirror faster is hard to see on a machine whose speed swings by
20-30 % from one minute to the next, and a full ``bench.run`` takes half an hour. Here
each revision is installed on its own (a regular install, bytecode compiled, as a user
has it), then every round runs each build once on one workload, in an order rotated
round by round, each with an empty target and state. Prints the median and the minimum
of each build and its ratio of medians to the first revision named.

    python -m bench.ab 8dddf74 HEAD --workload large --target sftp --rounds 5
    python -m bench.ab HEAD~1 HEAD --run again        # the no-change re-run
    python -m bench.ab HEAD~1 HEAD --target sftp --run edits   # the re-run after 10 edits
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import places, sshd, trees
from bench.proc import timed
from bench.run import EDIT_PAUSE, rotated, warm
from bench.tools import Target, mirror_command, mirror_sftp_config

TOP = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Build:
    """One revision, installed under ``path`` (a folder for PYTHONPATH); ``script`` is
    what its ``mirror`` command calls, as ``module:function`` (it changed over time)."""

    rev: str
    commit: str
    path: Path
    script: str


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.ab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("revs", nargs="+", help="git revisions to compare (the first is the base)")
    p.add_argument("--workload", default="small", choices=sorted(trees.SPECS))
    p.add_argument("--target", default="local", choices=["local", "sftp"])
    p.add_argument(
        "--run",
        default="first",
        choices=["first", "again", "edits"],
        help="first copy, no-change re-run, or re-run after 10 edits",
    )
    p.add_argument("--rounds", type=int, default=5)
    return p.parse_args(argv)


def venv_python() -> Path:
    """The Python of the bench venv (created by :func:`bench.tools.mirror_command`)."""
    return Path(mirror_command()[0]).parent / "python"


def install(rev: str) -> Build:
    """``rev`` installed once into the bench cache (reused while the commit is the same)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=TOP, check=True, capture_output=True, text=True
    ).stdout.strip()
    out = trees.cache_dir() / "ab" / commit
    if (out / ".done").exists():
        return Build(rev, commit, out, console_script(out))
    python = venv_python()
    shutil.rmtree(out, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", commit], cwd=TOP, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--target", out, tmp], check=True)
    subprocess.run([python, "-m", "compileall", "-q", out], check=True, stdout=subprocess.DEVNULL)
    (out / ".done").touch()
    return Build(rev, commit, out, console_script(out))


def console_script(installed: Path) -> str:
    """What the ``mirror`` script of the build installed at ``installed`` calls."""
    parser = configparser.ConfigParser()
    parser.read(next(installed.glob("*.dist-info/entry_points.txt")))
    return parser["console_scripts"]["mirror"].strip()


def command(build: Build, src: Path, target: Target, scratch: Path) -> list[str]:
    module, function = build.script.split(":")
    # -P: the working folder (maybe this checkout) must not shadow the build on sys.path
    head = [str(venv_python()), "-P", "-c", f"from {module} import {function}; {function}()", "run"]
    if target.server is None:
        return [*head, str(src), str(target.path), "--once", "-q"]
    config = scratch / "mirror.toml"
    config.write_text(mirror_sftp_config(src, target))
    return [*head, "-c", str(config), "--once", "-q"]


@contextlib.contextmanager
def server_for(kind: str) -> Iterator[sshd.Server | None]:
    if kind != "sftp":
        yield None
        return
    with sshd.loopback(trees.cache_dir() / "sshd") as server:
        yield server


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    builds = [install(rev) for rev in args.revs]
    spec = trees.SPECS[args.workload]
    src = trees.tree(spec)
    warm(src)
    times: dict[Build, list[float]] = {b: [] for b in builds}
    cpu: dict[Build, list[float]] = {b: [] for b in builds}
    with server_for(args.target) as server:
        for round_ in range(args.rounds):
            for build in rotated(builds, round_):
                scratch = places.fresh(trees.cache_dir() / "scratch" / "ab")
                target = Target(args.target, places.fresh(places.target_root() / "ab"), server)
                cmd = command(build, src, target, scratch)
                env = dict(os.environ, PYTHONPATH=str(build.path), MIRROR_STATE_DIR=str(scratch / "state"))
                edited: list[str] = []
                if args.run != "first":
                    timed(cmd, env)
                if args.run == "edits":
                    edited = trees.edit(spec, src, int(time.time() * 1000))
                    time.sleep(EDIT_PAUSE)
                warm(src)
                sample = timed(cmd, env)
                seconds = sample.seconds
                if places.count_files(target.path) != spec.files:
                    raise SystemExit(f"bench: {build.rev} left the target incomplete")
                if any((src / rel).read_bytes() != (target.path / rel).read_bytes() for rel in edited):
                    raise SystemExit(f"bench: {build.rev} did not copy the edits")
                times[build].append(seconds)
                cpu[build].append(sample.cpu_seconds)
                name = f"{build.rev} ({build.commit})"
                used = f"CPU {sample.cpu_seconds:.2f} s"
                print(f"  round {round_ + 1} {name} {seconds:.2f} s, {used}", file=sys.stderr)
    base = statistics.median(times[builds[0]])
    base_cpu = statistics.median(cpu[builds[0]]) or 1.0
    print(f"\n`python -m bench.ab {' '.join(sys.argv[1:] if argv is None else argv)}`\n")
    print("| build | median | min | ratio to the first | CPU median | CPU ratio | runs |")
    print("|---|---|---|---|---|---|---|")
    for build, samples in times.items():
        median = statistics.median(samples)
        cpu_median = statistics.median(cpu[build])
        name = f"{build.rev} ({build.commit})"
        print(
            f"| {name} | {median:.2f} s | {min(samples):.2f} s | {median / base:.2f}x "
            f"| {cpu_median:.2f} s | {cpu_median / base_cpu:.2f}x | {len(samples)} |"
        )


if __name__ == "__main__":
    main()
