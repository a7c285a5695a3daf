"""Mirror several folders to several targets from inside one Python program.

    python examples/embed.py BASE [--once] [--metrics-addr 127.0.0.1:9108]

mirrors BASE/invoices to BASE/backup/invoices and to an in-memory target, and
BASE/scans to BASE/backup/scans (both folders made if missing), each folder with its own
:class:`mirror.api.Mirror` in its own thread, all sharing one metrics endpoint. Without
``--once`` it keeps mirroring until Ctrl-C or SIGTERM. A real host would build the configs
from its own settings, or load them with ``api.load_config(path)``. Exits 0 when every
target is in sync, 1 when not, 2 (with mirror's one-line message) on a mistake in a config.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from mirror import api
from mirror.config import parse_addr
from mirror.errors import ConfigError, GuardRefused, MirrorError


class PrintReports(api.Observer):
    """A host's own observer: here it prints what each pass did."""

    def on_report(self, report: api.Report) -> None:
        # in_sync, not ok: a pass that went well may have been stopped, or left files out
        if report.in_sync:
            what = "in sync"
        elif report.ok:
            what = "stopped before its end" if report.cut_short else f"{report.left_out} source file(s) left out"
        else:
            what = f"problem: {report.fatal or report.down or report.failed}"
        print(f"{report.target}: {report.uploaded} sent, {report.deleted} deleted, {what}", flush=True)


def configs(base: Path) -> list[api.Config]:
    invoices, scans = base / "invoices", base / "scans"
    return [
        api.Config(
            source=invoices,
            targets=(
                api.TargetConfig("invoices-disk", str(base / "backup" / "invoices")),
                api.TargetConfig("invoices-memory", "memory://invoices", settings=api.TargetSettings(settle=0.2)),
            ),
        ),
        api.Config(source=scans, targets=(api.TargetConfig("scans-disk", str(base / "backup" / "scans")),)),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("--once", action="store_true")
    parser.add_argument("--metrics-addr")
    args = parser.parse_args()
    cfgs = configs(args.base.resolve())
    for c in cfgs:
        c.source.mkdir(parents=True, exist_ok=True)  # a new BASE: folders to drop files into
    try:
        ok = mirror_all(cfgs, args.once, args.metrics_addr)
    except MirrorError as exc:  # mirror's messages are meant for users: one line, no traceback
        print(f"embed.py: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    statuses = [s for c in cfgs for s in api.status(c)]
    for s in statuses:
        state = "in sync" if s.in_sync else f"not in sync: {s.last_error or s.withheld or s.state}"
        print(f"status {s.name}: {s.files} files, {s.bytes} bytes, {len(s.failures)} failed, {state}", flush=True)
    # a watching mirror ends on a signal, whatever its targets went through: status tells
    return 0 if ok and all(s.in_sync for s in statuses) else 1


def mirror_all(cfgs: list[api.Config], once: bool, metrics_addr: str | None) -> bool:
    """Each config with its own Mirror, once or until a signal; whether every target is in sync."""
    metrics = api.Metrics()
    ok = True
    mirrors: list[api.Mirror] = []
    stopping = threading.Event()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()
        for m in mirrors:
            m.stop.set()

    if not once:
        # before the mirrors open: a SIGTERM while they did ended the process at once
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
    with ExitStack() as stack:
        for c in cfgs:
            # each Mirror: its own source, targets, indexes and threads
            mirrors.append(stack.enter_context(api.running(c, observers=[metrics, PrintReports()])))
        for m in mirrors:
            metrics.attach(m)
        if metrics_addr:
            metrics.serve(*parse_addr(metrics_addr))
            stack.callback(metrics.close)
        if once:
            # every mirror runs, whatever the ones before it met: its folder is no less wanted
            ok = all([once_ok(m) for m in mirrors])
        else:
            if stopping.is_set():  # asked to stop while the last ones opened
                for m in mirrors:
                    m.stop.set()
            threads = [threading.Thread(target=m.run_forever, name=f"mirror {m.config.source}") for m in mirrors]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    return ok


def once_ok(mirror: api.Mirror) -> bool:
    """One pass of every target of ``mirror``; whether each is in sync. A refusal of this
    source (not mounted, emptied) is told and leaves the other mirrors to run."""
    try:
        return all(r.in_sync for r in mirror.run_once())
    except GuardRefused as exc:
        print(f"embed.py: {mirror.config.source}: {exc}", file=sys.stderr, flush=True)
        return False


if __name__ == "__main__":
    sys.exit(main())
