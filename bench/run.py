"""``python -m bench.run``: every tool on every workload and target, one markdown table.

For each repeat the tools run in a rotated order; each gets an empty target, then is
timed for a first copy, a no-change re-run, and a re-run after 10 source edits.
Every timed run is preceded by re-reading the source (so every tool finds it in the page
cache) and ``sync``; targets live on a tmpfs, sources on disk.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

from bench import places, sshd, trees
from bench.proc import ToolFailed, timed
from bench.table import Record, render
from bench.tools import TOOLS, Target, Tool, ensure_installed

T = TypeVar("T")

#: edited files must be older than mirror's settle time (0.5 s), or it waits for them
EDIT_PAUSE = 1.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument("--workloads", default="small,huge", help="comma list of: " + ",".join(trees.SPECS))
    p.add_argument("--targets", default="local", help="comma list of: local,sftp")
    p.add_argument("--tools", default=",".join(TOOLS), help="comma list of: " + ",".join(TOOLS))
    p.add_argument("--repeat", type=int, default=3, help="runs per tool (medians are reported)")
    p.add_argument("--no-edits", action="store_true", help="skip the re-run after 10 edits")
    p.add_argument("--json", type=Path, help="also write every sample here")
    return p.parse_args(argv)


def warm(path: Path) -> None:
    """Read the whole source once so every tool finds it in the page cache."""
    for folder, _dirs, files in os.walk(path):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                while f.read(1 << 20):
                    pass


def rotated(items: list[T], shift: int) -> list[T]:
    shift %= len(items)
    return items[shift:] + items[:shift]


class Bench:
    """Holds the samples and the scratch layout of one benchmark session."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.records: list[Record] = []
        self.failures: list[str] = []
        self.scratch = trees.cache_dir() / "scratch"
        self.edit_round = int(time.time())

    def one_tool(self, workload: str, src: Path, files: int, target: Target, tool: Tool, repeat: int) -> None:
        spec = trees.SPECS[workload]
        slug = tool.name.replace(" ", "").replace("-", "")
        scratch = places.fresh(self.scratch / slug)
        target = Target(target.kind, places.fresh(target.path / slug), target.server)
        inv = tool.build(src, target, scratch)

        def run(scenario: str) -> None:
            # rclone drops the files it read from the page cache (fadvise DONTNEED): without
            # this, whichever tool came next read its source from disk
            warm(src)
            s = timed(inv.cmd, inv.env)
            self.records.append(Record(workload, target.kind, scenario, tool.name, repeat, s.seconds, s.rss_kib))
            print(
                f"  {workload:7s} {target.kind:5s} {tool.name:7s} {scenario:10s} {s.seconds:7.2f} s "
                f"{s.rss_kib / 1024:6.0f} MiB",
                file=sys.stderr,
                flush=True,
            )

        run("first copy")
        got = places.count_files(target.path)
        if got != files:
            raise SystemExit(f"bench: {tool.name} left {got} files on the target, expected {files}")
        if tool.reruns:
            run("no change")
            if not self.args.no_edits:
                self.edit_round += 1
                edited = trees.edit(spec, src, self.edit_round)
                time.sleep(EDIT_PAUSE)
                run("10 edits")
                for rel in edited:
                    if (src / rel).read_bytes() != (target.path / rel).read_bytes():
                        raise SystemExit(f"bench: {tool.name} did not copy the edit of {rel}")
        shutil.rmtree(target.path)

    def workload(self, name: str, kinds: list[str], servers: dict[str, sshd.Server | None]) -> None:
        spec = trees.SPECS[name]
        print(f"bench: preparing {name} ({spec.files} x {spec.size} B)", file=sys.stderr, flush=True)
        src = trees.tree(spec)
        warm(src)
        files = places.count_files(src)
        root = places.target_root()
        chosen = [TOOLS[t] for t in self.args.tools.split(",")]
        for kind in kinds:
            tools = [t for t in chosen if kind in t.kinds]
            base = Target(kind, root / kind, servers.get(kind))
            for repeat in range(self.args.repeat):
                for tool in rotated(tools, repeat):
                    try:
                        self.one_tool(name, src, files, base, tool, repeat)
                    except ToolFailed as exc:
                        # one broken run (a tree mid-edit, a crash) must not lose the others
                        self.failures.append(f"{name} {kind} {tool.name} repeat {repeat}: {exc}".splitlines()[0])
                        print(f"bench: {exc}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def servers_for(kinds: list[str], workdir: Path) -> Iterator[dict[str, sshd.Server | None]]:
    if "sftp" not in kinds:
        yield {"local": None}
        return
    with sshd.loopback(workdir) as server:
        yield {"local": None, "sftp": server}


def revision() -> str:
    """The commit measured (read-only git), with ``+dirty`` for uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], check=False, cwd=Path(__file__).parent, capture_output=True, text=True
        )
        return done.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--", "mirror", "backends") else "")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    kinds = args.targets.split(",")
    workloads = args.workloads.split(",")
    for w in workloads:
        if w not in trees.SPECS:
            raise SystemExit(f"bench: unknown workload {w!r}")
    ensure_installed()
    bench = Bench(args)
    started = time.time()
    load_before = os.getloadavg()[0]
    with servers_for(kinds, trees.cache_dir() / "sshd") as servers:
        for w in workloads:
            bench.workload(w, kinds, servers)
    tools = [t for t in TOOLS if t in args.tools.split(",")]
    print(
        f"\n`python -m bench.run {' '.join(sys.argv[1:] if argv is None else argv)}` "
        f"(mirror {revision()}, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, "
        f"load {load_before:.1f} -> "
        f"{os.getloadavg()[0]:.1f}, {time.time() - started:.0f} s; "
        f"median time · largest peak RSS, targets on tmpfs)\n"
    )
    print(render(bench.records, tools))
    for failure in bench.failures:
        print(f"\nfailed (left out of the table): {failure}")
    out = args.json or trees.cache_dir() / "results" / time.strftime("run-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([asdict(r) for r in bench.records], indent=1))
    print(f"\nsamples: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
