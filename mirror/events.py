"""What the engine tells the world while it runs: pass reports and target states.

Observers (alerts, metrics, a host program embedding mirror) receive these; they must
return quickly and never raise (an observer's error is logged and ignored).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from mirror.plan import Plan

log = logging.getLogger("mirror")


@dataclass(frozen=True)
class Report:
    """The outcome of one pass over one target, for humans and exit codes."""

    target: str
    kind: str
    uploaded: int = 0
    adopted: int = 0
    moved: int = 0
    #: files removed from the target, those moved to its trash (``trashed``) included
    deleted: int = 0
    bytes: int = 0
    failed: tuple[tuple[str, str], ...] = ()
    guard: str | None = None
    fatal: str | None = None
    down: str | None = None
    seconds: float = 0.0
    planned: Plan | None = None
    #: mirror's own state could not be written; what was sent before that is counted
    state_error: str | None = None
    #: mirror was stopped before the pass ran to its end: the target is not complete
    cut_short: bool = False
    trashed: int = 0
    #: the fatal error is a full target or quota (mirror.errors.TargetFull)
    full: bool = False
    #: source files and folders the last scan found but could not read, or that no target
    #: can take as they are (a name not valid UTF-8): not on the target (status's "left out")
    left_out: int = 0

    @property
    def error(self) -> str | None:
        """Why the pass failed as a whole, if it did (beyond single items and the guard)."""
        return self.fatal or self.down or self.state_error

    @property
    def ok(self) -> bool:
        """Nothing in this pass failed, and no deletion was withheld."""
        return not (self.failed or self.guard or self.error)

    @property
    def in_sync(self) -> bool:
        """The target holds the whole source as of this pass: what exit 0 of ``mirror run
        --once`` says. A pass that went well (:attr:`ok`) may still have been stopped before
        its end (:attr:`cut_short`), or have files left out of it (:attr:`left_out`)."""
        return self.ok and not self.cut_short and not self.left_out


class Observer:
    """Base class with no-op hooks; override the ones you need."""

    def on_report(self, report: Report) -> None:
        """A pass over a target finished (full or incremental)."""

    def on_state(self, target: str, state: str, error: str | None) -> None:
        """A target changed state: ``syncing``, ``idle``, ``failing`` (retrying) or ``failed``."""

    def on_retry(self, target: str, error: str) -> None:
        """One call to a target failed transiently and will be retried."""

    def on_changes(self, count: int) -> None:
        """The watcher handed on ``count`` settled changes."""

    def on_transfer(self, target: str, size: int, seconds: float) -> None:
        """One file of ``size`` bytes reached the target in ``seconds`` (retries included)."""

    def on_sent(self, target: str, files: int, size: int) -> None:
        """``files`` files of ``size`` bytes in all were sent and count as sent, as the
        pass's report will (one read while it changed does not): as they land, not
        when the pass ends, which a first copy of many files takes hours to reach."""

    def on_taken_over(self, target: str, index: str) -> None:
        """``target`` took over the index named ``index`` (its file's stem): the target was
        renamed in the config, or its URL or source spelled anew. What was kept under
        that name, such as an open incident, is the target's now."""


class Observers(Observer):
    """Fans every event out to several observers, shielding the engine from their errors."""

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self.observers = list(observers)
        #: the observer call each thread is in (:meth:`calling`)
        self._calls: dict[threading.Thread, str] = {}

    def calling(self, thread: threading.Thread) -> str | None:
        """The observer call ``thread`` is in, or ended in: one that never returns (a
        dashboard that does not answer) holds up its target; one that calls sys.exit()
        ends the target's thread. Either was told as an upload or the machine at fault."""
        return self._calls.get(thread)

    def _each(self, name: str, *args: object) -> None:
        me = threading.current_thread()
        for observer in self.observers:
            self._calls[me] = f"observer {type(observer).__name__} in {name}"
            try:
                getattr(observer, name)(*args)
            except Exception as exc:  # a broken observer must not stop the mirror
                log.warning(
                    "observer %s failed in %s: %s: %s",
                    type(observer).__name__,
                    name,
                    type(exc).__name__,
                    exc,
                    exc_info=True,
                )
            # kept past a SystemExit, which ends the thread, for the watchdog to tell
            self._calls.pop(me, None)

    def on_report(self, report: Report) -> None:
        self._each("on_report", report)

    def on_state(self, target: str, state: str, error: str | None) -> None:
        self._each("on_state", target, state, error)

    def on_retry(self, target: str, error: str) -> None:
        self._each("on_retry", target, error)

    def on_changes(self, count: int) -> None:
        self._each("on_changes", count)

    def on_transfer(self, target: str, size: int, seconds: float) -> None:
        self._each("on_transfer", target, size, seconds)

    def on_sent(self, target: str, files: int, size: int) -> None:
        self._each("on_sent", target, files, size)

    def on_taken_over(self, target: str, index: str) -> None:
        self._each("on_taken_over", target, index)
