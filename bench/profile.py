"""``python -m bench.profile -- CMD...``: py-spy over every thread, top functions as text.

py-spy samples all threads (pyinstrument only sees the main one, and mirror works in
per-target threads). Prints the functions with the most samples, inclusive and self,
so a finding can be reported without a flame graph viewer.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections import Counter

IDLE = ("_wait_for_tstate_lock", "wait (threading.py", "select (selectors.py", "join (threading.py")


def _function(frame: str) -> str:
    """``name (file.py:12)`` -> ``name (file.py)``: one row per function, not per line."""
    head, sep, line = frame.rpartition(":")
    return f"{head})" if sep and line.rstrip(")").isdigit() else frame


def summarize(raw: str, top: int) -> str:
    """Collapsed stacks (``a;b;c N``) to two top-N lists, idle waits left out of 'self'."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_function(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    lines = [f"{total} samples", "", "inclusive:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    lines += ["", "self (idle waits excluded):"]
    busy = [(f, n) for f, n in own.most_common() if not any(i in f for i in IDLE)]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in busy[:top]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument("--rate", type=int, default=250, help="samples per second")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--native", action="store_true", help="include C frames (py-spy --native)")
    p.add_argument("--idle", action="store_true", help="include idle threads (waits, sleeps)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the command to profile")
    args = p.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        p.error("give the command after --")
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as out:
        spy = ["py-spy", "record", "-r", str(args.rate), "-f", "raw", "-o", out.name, "--nonblocking"]
        if args.idle:
            spy.append("--idle")
        if args.native:
            spy.append("--native")
        code = subprocess.call([*spy, "--", *cmd], stdout=sys.stderr)
        print(summarize(out.read(), args.top))
    sys.exit(code)


if __name__ == "__main__":
    main()
