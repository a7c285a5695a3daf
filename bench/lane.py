"""``python -m bench.lane``: how late invoices arrive while a large file goes out.

Watch mode, in process, to a local target whose every upload first waits as long as
the bytes would take on a slow link (``--mbit``, 20 Mbit/s by default; the loopback is
too fast to show anything, and shaping it with tc would slow the shared machine). After
the first copy, one large file (``--size`` MiB, a scan) is written, then ``--invoices``
small files one second apart; each one's time from write to arrival is printed, and
when the large file landed. ``--no-lane`` sends everything in the watch pass, as before
the bulk lane (mirror.bulk), for a side-by-side figure from the same build.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

from mirror.backends.local import LocalDriver  # type: ignore[import-not-found] # backends/, installed there

from mirror import api, bulk


def _slow_link(bytes_per_second: float) -> None:
    """Every upload to a local target waits as long as the link would take for it."""
    put = LocalDriver.put

    def slow(self: LocalDriver, local_path: str, rel: str, mtime_ns: int) -> api.RemoteEntry | None:
        time.sleep(os.path.getsize(local_path) / bytes_per_second)
        return put(self, local_path, rel, mtime_ns)

    LocalDriver.put = slow
    LocalDriver.batch_files = 1  # each file through put, so small ones pay the link too


def _arrival(path: Path, written: float, into: dict[str, float]) -> None:
    while not path.exists():
        time.sleep(0.005)
    into[path.name] = time.monotonic() - written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mbit", type=float, default=20.0, help="the emulated link's upload rate")
    parser.add_argument("--size", type=int, default=20, help="the large file, in MiB")
    parser.add_argument("--invoices", type=int, default=6)
    parser.add_argument("--no-lane", action="store_true", help="no bulk lane: every file in its watch pass")
    args = parser.parse_args()
    _slow_link(args.mbit * 1e6 / 8)
    if args.no_lane:
        bulk.LANE_FILE_BYTES = 1 << 62
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "src"), Path(tmp, "dst")
        src.mkdir()
        (src / "first.pdf").write_bytes(b"x")
        target = api.TargetConfig("t", str(dst), settings=api.TargetSettings())
        config = api.Config(source=src, targets=(target,), state_dir=Path(tmp, "state"))
        with api.running(config) as mirror:
            threading.Thread(target=mirror.run_forever, daemon=True).start()
            while not (dst / "first.pdf").exists():
                time.sleep(0.01)
            started = time.monotonic()
            (src / "scan.pdf").write_bytes(os.urandom(args.size << 20))
            arrived: dict[str, float] = {}
            pollers = []
            for i in range(args.invoices):
                time.sleep(1.0)
                invoice = src / f"inv{i}.pdf"
                invoice.write_bytes(os.urandom(50_000))
                poller = threading.Thread(target=_arrival, args=(dst / invoice.name, time.monotonic(), arrived))
                poller.start()
                pollers.append(poller)
            for poller in pollers:
                poller.join()
            while not (dst / "scan.pdf").exists():
                time.sleep(0.01)
            landed = time.monotonic() - started
            mirror.stop.set()
    late = " ".join(f"{arrived[f'inv{i}.pdf']:.2f}" for i in range(args.invoices))
    lane = "no lane" if args.no_lane else f"lane from {bulk.LANE_FILE_BYTES >> 20} MiB"
    print(f"{lane}, {args.size} MiB at {args.mbit:g} Mbit/s: it landed after {landed:.1f} s; invoices (s): {late}")


if __name__ == "__main__":
    main()
