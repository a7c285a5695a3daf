"""How far a pass has got, told to those who cannot see a progress bar; human units.

A terminal gets a bar (the command line's). A service has only ``mirror status``, the
``mirror_pending`` metric and its log: :class:`PassProgress` writes the actions a pass
has left to the index's meta at most once a second, and logs a line with an estimate of
the time left every :data:`LOG_EVERY` seconds of a long pass. The executor's workers
feed it as items complete.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: how often the actions left reach the index, where status and metrics read them
WRITE_EVERY = 1.0
#: how often a long pass says how far it has got in the log
LOG_EVERY = 30.0


class PassProgress:
    """Counts the files (transfers and moves) and bytes of one pass as they complete."""

    def __init__(
        self,
        files: int,
        size: int,
        write: Callable[[int], None],
        log: Callable[[str], None] | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.files = files
        self.size = size
        self.done_files = 0
        self.done_bytes = 0
        self._write = write
        self._log = log
        self._clock = clock
        self._started = self._written = self._logged = clock()
        self._lock = threading.Lock()

    def done(self, files: int, size: int) -> None:
        """``files`` more files, of ``size`` bytes in all, are on the target."""
        with self._lock:
            self.done_files += files
            self.done_bytes += size
            now = self._clock()
            write = now - self._written >= WRITE_EVERY
            if write:
                self._written = now
            line = self._log is not None and now - self._logged >= LOG_EVERY
            if line:
                self._logged = now
            left = max(self.files - self.done_files, 0)
            told = self.line(now) if line else ""
        # outside the lock: the index has its own, and a slow write must not stall workers
        if write:
            self._write(left)
        if line and self._log is not None:
            self._log(told)

    def line(self, now: float) -> str:
        """``1,200 of 10,000 files (12 %), 4.9 MB of 41.0 MB sent; about 2 min left``."""
        text = f"{self.done_files:,} of {self.files:,} files ({self.done_files * 100 // max(self.files, 1)} %)"
        if self.size:
            text += f", {human_bytes(self.done_bytes)} of {human_bytes(self.size)} sent"
        # files and bytes weigh alike: small files cost their count, large ones their size
        shares = [self.done_files / self.files] if self.files else []
        if self.size:
            shares.append(self.done_bytes / self.size)
        share = sum(shares) / len(shares) if shares else 0.0
        if 0 < share < 1:
            text += f"; about {human_duration((now - self._started) * (1 - share) / share)} left"
        return text


def human_duration(seconds: float) -> str:
    if seconds >= 7200:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def counted(n: int, noun: str) -> str:
    """``1 file``, ``2 files``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
