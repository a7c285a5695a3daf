"""``python -m bench.floor``: how close a Python program can get to rsync on a run with nothing to do.

Times, on the ``small`` tree with nothing changed since the last run, in rotation:
``rsync -a --delete``, ``mirror run --once``, the interpreter starting and stopping, and
the least a Python program can do to tell nothing changed (walk and stat every file,
read every row of mirror's index, compare). Where the last takes about as long as
rsync's whole run, "no slower than rsync" is out of reach for any Python program
that starts on each run.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from bench import places, proc, tools, trees

#: the floor: what any no-change check has to do, and nothing else
FLOOR = """
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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    p.add_argument("--rounds", type=int, default=11)
    args = p.parse_args(argv)
    src = trees.tree(trees.SPECS["small"])
    work = places.fresh(places.target_root() / "floor")
    mirror = tools.mirror_command()
    python = str(Path(mirror[0]).with_name("python"))
    env = {"MIRROR_STATE_DIR": str(work / "state")}
    first = [*mirror, "run", str(src), str(work / "mirror"), "--once", "-q"]
    proc.timed(first, {**os.environ, **env})
    (index,) = (work / "state" / "targets").glob("*.sqlite")
    commands = {
        "rsync": ["rsync", "-a", "--delete", f"{src}/", f"{work / 'rsync'}/"],
        "mirror run --once": first,
        "python -c pass": [python, "-c", "pass"],
        "walk + index + compare": [python, "-c", FLOOR, str(src), str(index)],
    }
    proc.timed(commands["rsync"])
    times: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for round_ in range(args.rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            times[name].append(proc.timed(commands[name], {**os.environ, **env}).seconds)
    print(f"\n`python -m bench.floor --rounds {args.rounds}` (small tree, nothing changed)\n")
    print("| command | median | min |\n|---|---|---|")
    for name, samples in times.items():
        print(f"| {name} | {statistics.median(samples):.3f} s | {min(samples):.3f} s |")


if __name__ == "__main__":
    main()
