"""How a pass's outcome and an error no backend classified are put in words: the one
summary line the log, the terminal and a host program show, and what status says of a
bug or of a machine out of memory or threads.
"""

from __future__ import annotations

from mirror.errors import MirrorError
from mirror.events import Report
from mirror.execute import CHANGED_WHILE_SENT
from mirror.progress import human_bytes


def described(exc: BaseException) -> str:
    """How status and reports name an error no backend classified (a bug, most likely):
    by its message if mirror raised it on purpose, else with its type, as a bare message
    ('HTTP Error: 503') says little."""
    if isinstance(exc, MirrorError):
        return str(exc)
    return starved(exc) or f"internal error: {type(exc).__name__}: {exc}"


def starved(exc: BaseException) -> str | None:
    """What a lack of memory or threads means, if ``exc`` is one: no bug to report, and
    'internal error: MemoryError: ' said nothing at all."""
    if isinstance(exc, MemoryError):
        return "out of memory (a memory limit such as ulimit -v, or MemoryMax= of the service?)"
    if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
        return (
            "cannot start a thread: out of memory, or a limit on threads "
            "(ulimit -u, ulimit -v, or TasksMax= of the service?)"
        )
    return None


def summarize(report: Report, named: bool = True) -> str:
    """One line for a pass: what it sent, moved, deleted and failed, and how long it took;
    ``named``: begun with the target's name."""
    parts = [f"{report.uploaded} sent ({human_bytes(report.bytes)})"]
    if report.adopted:
        parts.append(f"{report.adopted} already there")
    if report.moved:
        parts.append(f"{report.moved} moved")
    parts.append(f"{report.deleted - report.trashed} deleted")
    if report.trashed:
        parts.append(f"{report.trashed} moved to trash")
    # the way of a folder being written, not a fault: told apart from the failures
    changed = sum(1 for _, why in report.failed if why.startswith(CHANGED_WHILE_SENT))
    parts.append(f"{len(report.failed) - changed} failed")
    if changed:
        parts.append(f"{changed} changed while sent (sent again once settled)")
    text = ", ".join(parts) + f" in {report.seconds:.1f} s"
    if report.cut_short:
        text += "; stopped before the pass finished (the next run carries on)"
    return f"{report.target}: {text}" if named else text
