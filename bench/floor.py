"""``python -m bench.floor``: how close a Python program can get to rsync on the ``small`` tree.

Two runs are timed, the tools in rotation: a first copy to an empty local folder, and a
run with nothing changed since. Next to ``rsync -a --delete`` and ``mirror run --once``
runs the least a Python program has to do for the same result: for the first copy, walk
the tree and copy each file to a temp name (sendfile), set its mtime, rename it into
place, and write one index row per file; for the run with nothing changed, walk and stat
every file, read every index row, compare. The interpreter's start alone is timed too.

The same script runs a second time after importing every module a no-change ``mirror
run`` loads, other than mirror's own (click, dataclasses, logging, sqlite3, tomllib,
platformdirs and what they pull in; listed from a real run). That is the floor for a
Python program built on mirror's libraries.

What the bare Python takes, against rsync, is the floor for any Python program that
starts on each run; what mirror takes above the second script is its own work per file
and per start.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
from collections.abc import Sequence
from pathlib import Path

from bench import places, proc, tools, trees
from bench.run import rotated

#: a first copy and nothing else: temp name, mtime, rename, an index row per file
COPY = """
import os, sqlite3, sys
src, dst, index = sys.argv[1:4]
rows, stack = [], [""]
while stack:
    rel = stack.pop()
    os.makedirs(os.path.join(dst, rel), exist_ok=True)
    with os.scandir(os.path.join(src, rel)) as it:
        for e in it:
            path = f"{rel}/{e.name}" if rel else e.name
            st = e.stat(follow_symlinks=False)
            if e.is_dir(follow_symlinks=False):
                stack.append(path)
                continue
            tmp = os.path.join(dst, rel, ".~tmp-" + e.name)
            fi = os.open(e.path, os.O_RDONLY | os.O_NOFOLLOW)
            fo = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            while os.sendfile(fo, fi, None, 1 << 30):
                pass
            os.utime(fo, ns=(st.st_mtime_ns, st.st_mtime_ns))
            os.close(fo)
            os.close(fi)
            os.rename(tmp, os.path.join(dst, path))
            rows.append((path, st.st_size, st.st_mtime_ns))
db = sqlite3.connect(index)
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE files (src TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER)")
db.executemany("INSERT INTO files VALUES (?, ?, ?)", rows)
db.commit()
"""

#: what any no-change check has to do, and nothing else (exits 1 unless all 10,000 match)
CHECK = """
import os, sqlite3, sys
root, index = sys.argv[1], sys.argv[2]
seen, stack = {}, [root]
while stack:
    with os.scandir(stack.pop()) as it:
        for e in it:
            st = e.stat(follow_symlinks=False)
            if e.is_dir(follow_symlinks=False):
                stack.append(e.path)
            else:
                seen[e.path[len(root) + 1:]] = (st.st_size, st.st_mtime_ns)
db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
rows = db.execute("SELECT src, size, mtime_ns FROM files")
changed = sum(1 for src, size, mtime in rows if seen.get(src) != (size, mtime))
sys.exit(1 if changed or len(seen) < 10000 else 0)
"""

#: run as the mirror command: the modules a run loaded that are not mirror's, on stdout
MODULES = """
import sys
from mirror.cli import main
try:
    main()
except SystemExit:
    pass
print(" ".join(sorted(m for m in sys.modules if m.partition(".")[0] not in ("mirror", "__main__"))))
"""


def with_imports(script: str, modules: list[str]) -> str:
    """``script``, after importing ``modules`` (those a fresh interpreter can import by name)."""
    return f"""
import importlib
for name in {modules!r}:
    try:
        importlib.import_module(name)
    except ImportError:
        pass
{script}"""


def mirror_modules(python: str, cmd: list[str], env: dict[str, str]) -> list[str]:
    """The modules ``mirror`` + ``cmd`` (a no-change run) loads that are not its own."""
    done = subprocess.run([python, "-c", MODULES, *cmd], env=env, capture_output=True, text=True, check=True)
    return done.stdout.split()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    tools.ensure_installed()
    src = trees.tree(trees.SPECS["small"])
    work = places.target_root() / "floor"
    mirror = tools.mirror_command()
    python = str(Path(mirror[0]).with_name("python"))
    env = {**os.environ, "MIRROR_STATE_DIR": str(work / "state")}
    commands = {
        "rsync": ["rsync", "-a", "--delete", f"{src}/", f"{work / 'rsync'}/"],
        "mirror run --once": [*mirror, "run", str(src), str(work / "mirror"), "--once", "-q"],
        "bare Python": [python, "-c", COPY, str(src), str(work / "python"), str(work / "python.sqlite")],
    }
    check = [python, "-c", CHECK, str(src), str(work / "python.sqlite")]
    places.fresh(work)
    proc.timed(commands["mirror run --once"], env)
    modules = mirror_modules(python, commands["mirror run --once"][1:], env)
    print(f"bench.floor: a no-change mirror run loads {len(modules)} modules that are not mirror's")
    libs, libs_index = str(work / "libs"), str(work / "libs.sqlite")
    libs_copy = [python, "-c", with_imports(COPY, modules), str(src), libs, libs_index]
    commands["bare Python + mirror's imports"] = libs_copy
    libs_check = [python, "-c", with_imports(CHECK, modules), str(src), libs_index]
    first: dict[str, list[float]] = {name: [] for name in commands}
    again: dict[str, list[float]] = {name: [] for name in [*commands, "python -c pass"]}
    for round_ in range(args.rounds):
        places.fresh(work)
        for name, cmd in rotated(list(commands.items()), round_):
            first[name].append(proc.timed(cmd, env).seconds)
        rerun = {
            **commands,
            "bare Python": check,
            "bare Python + mirror's imports": libs_check,
            "python -c pass": [python, "-c", "pass"],
        }
        for name, cmd in rotated(list(rerun.items()), round_):
            again[name].append(proc.timed(cmd, env).seconds)
    print(f"\n`python -m bench.floor --rounds {args.rounds}` (small tree: 10,000 files of 4 KiB)\n")
    print("| | first copy | nothing changed |\n|---|---|---|")
    for name, samples in again.items():
        print(f"| {name} | {_median(first.get(name, []))} | {_median(samples)} |")


def _median(samples: Sequence[float]) -> str:
    return f"{statistics.median(samples):.3f} s" if samples else "-"


if __name__ == "__main__":
    main()
