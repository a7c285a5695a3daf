"""Deletions held back in watch mode until the source stops losing files.

The watcher reports a folder being emptied in several batches as the deletions happen:
judged batch by batch, an early batch is always under the delete guard's limit and goes
through, and an emptied export folder would take part of the backup with it before the
guard stopped the rest. So a watch pass only plans the deletion of files gone from the
source once no more have gone for ``settle`` seconds (``wait_max`` after the first held,
at the latest); until then they are held here, and the guard judges them all at once.
Uploads and moves are never held.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from mirror.paths import ancestors

#: seconds without another file going before held deletions are planned
SETTLE_S = 2.0
#: held deletions are planned this long after the first, even while files keep going
WAIT_MAX_S = 60.0


class HeldDeletions:
    """Source paths gone, whose deletion from the target waits; times are monotonic."""

    def __init__(self, settle: float = SETTLE_S, wait_max: float = WAIT_MAX_S) -> None:
        self.settle = settle
        self.wait_max = wait_max
        self.paths: set[str] = set()
        self._first: float | None = None
        self._due: float | None = None

    def holding(self, now: float) -> bool:
        """Whether a pass planned now leaves deletions for later: yes, unless some are
        held and due (that pass plans them, with whatever went since)."""
        return self._due is None or now < self._due

    def hold(self, paths: Iterable[str], now: float) -> None:
        added = set(paths) - self.paths
        if not added:
            return
        self.paths |= added
        if self._first is None:
            self._first = now
        self._due = min(now + self.settle, self._first + self.wait_max)

    def due_in(self, now: float) -> float | None:
        """Seconds until the held deletions are due (0 once they are); None: none held."""
        if self._due is None:
            return None
        return max(0.0, self._due - now)

    def in_the_way(self, paths: Collection[str]) -> set[str]:
        """Take out the held paths that one of ``paths`` needs gone now: a folder above
        one of them (a file replaced by a folder of its name), or a file below one (the
        reverse). Held, they kept the new file waiting and refused as a clash."""
        if not self.paths:
            return set()
        above = {a for p in paths for a in ancestors(p)}
        found = {h for h in self.paths if h in above or any(a in paths for a in ancestors(h))}
        self.paths -= found
        return found

    def release(self) -> set[str]:
        """The held paths, for a pass that plans their deletion; holding starts afresh."""
        paths, self.paths = self.paths, set()
        self._first = self._due = None
        return paths
