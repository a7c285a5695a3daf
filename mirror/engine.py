"""The engine: one source, several targets; full reconciles, then live updates.

One scan feeds every target. Each target has its own runner (mirror.runner: driver,
index, executor, thread and queue), so a slow or broken target never stalls the others.
This module is also the embedding API: build a :class:`Mirror` from a
:class:`mirror.config.Config`, then call :meth:`Mirror.run_once` or
:meth:`Mirror.run_forever`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mirror.config import Config, TargetSettings
from mirror.config import check as check_config
from mirror.errors import ConfigError, GuardRefused, MirrorError
from mirror.events import Observer, Observers, Report
from mirror.execute import RetryPolicy
from mirror.filters import Filter
from mirror.index import Index
from mirror.index_files import check_state_folder, state_dir
from mirror.index_lock import Holding
from mirror.mounts import (
    Identity,
    folder_identity,
    mounts_below,
    nearly_none,
    not_mounted,
    overlapping,
    place_of,
)
from mirror.paths import ancestors
from mirror.redact import redact_url
from mirror.runner import TargetRunner
from mirror.scan import COARSE_NS, Entries, Skip, Snapshot, check_source, racy, scan, stat_paths
from mirror.status import ALIVE_EVERY
from mirror.wording import described

if TYPE_CHECKING:
    from mirror.watch import SourceWatcher

log = logging.getLogger("mirror")

#: how long a stop waits for what each target is doing (an upload of a large file is
#: then abandoned, and sent again by the next run)
STOP_WAIT = 5.0
#: how long a full pass waits at most for files still being written to settle; those
#: that have not are left for the next pass
SETTLE_WAIT = 30.0


class Mirror:
    """One source mirrored to the targets of a config: the embedding API."""

    def __init__(
        self,
        config: Config,
        *,
        dry_run: bool = False,
        retry: RetryPolicy | None = None,
        observers: Iterable[Observer] = (),
    ) -> None:
        check_config(config)
        self.config = config
        self.stop = threading.Event()
        self.observer = Observers(observers)
        self.runners = [
            TargetRunner(config, t, self.stop, dry_run=dry_run, retry=retry, observer=self.observer)
            for t in config.targets
        ]
        self.filter = Filter()
        #: what the last full scan could not read (so a run that held it back is not "in sync")
        self.unreadable: frozenset[str] = frozenset()
        #: source files the last full scan found but no target can take (see Skip.fix)
        self.unmirrorable: frozenset[str] = frozenset()
        #: source files a run_once left for the next run as they kept changing: not on
        #: the targets, so that run is not "in sync" (exit 0 said it was)
        self.unsettled: frozenset[str] = frozenset()
        #: targets whose include/exclude patterns take in none of the files the last full
        #: scan found ("*.pdf" where the scanner writes .PDF): nothing of the source on them
        self.unmatched: tuple[str, ...] = ()
        #: what scans skipped and said so (each is told once a run)
        self._told: set[Skip] = set()
        #: shares and disks mounted inside the source, or expected there, each with the
        #: filesystem the last scan saw there (see _look_at_inner_mounts)
        self.inner_mounts: dict[str, Identity] = {}
        #: those of them not mounted at the last scan
        self.away_mounts: frozenset[str] = frozenset()
        #: watch mode: the source holds too few of the files mirrored from it (source_doubted)
        self._doubted = False
        #: run_once: each target's pass, by target name (one a stop gave up on may still run)
        self._passes: dict[str, threading.Thread] = {}
        #: run_once: when the wait for the passes ends, counted from the stop (shutdown waits no longer)
        self._stop_by: float | None = None

    def open(self) -> None:
        try:
            check_source(self.config.source)
        except ConfigError:
            mirrored = [r for r in self.runners if _holds_files(r.index_file)]
            if mirrored:
                # a source that was there before is more likely unmounted than mistyped
                why = f"source folder {self.config.source} is missing (not mounted?)"
                self._tell_unusable(mirrored, why)
                raise GuardRefused(
                    f"{why}; nothing was changed on {', '.join(r.name for r in mirrored)}; mount it and run again"
                ) from None
            raise
        self._check_distinct()
        opened = []
        try:
            for runner in self.runners:
                runner.open()
                opened.append(runner)
        except BaseException:
            for runner in opened:
                runner.close()
            raise

    def check(self) -> None:
        """Raise ConfigError for what :meth:`open` would refuse in the config itself,
        touching nothing: a target the backend can never use, two targets in one place, a
        source folder that is not there, a state folder that cannot be written, a target
        or state folder inside the source. A reload checks the edited config with it
        before it stops the running mirror: a source typo stopped the service for good."""
        check_source(self.config.source)
        check_state_folder(state_dir(self.config))
        for runner in self.runners:
            runner.check()
            runner.where.check_overlap()
        self._check_distinct()

    def _tell_unusable(self, runners: Sequence[TargetRunner], why: str) -> None:
        """Record ``why`` for status and alerts in each runner's index, opened for it if
        need be (a run that stops before it opens them)."""
        for runner in runners:
            opened = runner.index is None and not runner.dry_run
            try:
                if opened:
                    runner.open()
                runner.failing(why)
            except MirrorError:
                continue  # locked by a running mirror, which tells for itself
            finally:
                if opened:
                    runner.close()

    def source_moved(self) -> str | None:
        """Why the source folder is not the one the targets were filled from: missing, or
        on another mount than before (a share or disk not mounted, and the folder below
        its mount point showing, maybe recreated by the program that writes into it).
        None when it is the same, or nothing tells."""
        return self._link_switched() or self.source_not_mounted() or self._place_changed()

    def _link_switched(self) -> str | None:
        link = self.config.source_link
        if link is not None and (now := os.path.realpath(link)) != str(self.config.source):
            # a link switched (current -> releases/8): changes here are not the source's
            return (
                f"source folder {link} now leads to {now}, not to {self.config.source} where this mirror "
                "reads it; restart mirror to mirror the folder it leads to"
            )
        return None

    def _place_changed(self) -> str | None:
        place = place_of(str(self.config.source))
        if place is None:
            return None
        for runner in self.runners:
            recorded = runner.source_place()
            if recorded is not None and recorded != place:
                if place == "":
                    return f"source folder {self.config.source} is missing (not mounted?)"
                return (
                    f"source folder {self.config.source} is on {place}, but mirror read it on {recorded}: "
                    "is the share or disk mounted?"
                )
        return None

    def source_not_mounted(self) -> str | None:
        """Why the source folder is not the share's or disk's it should be on: below a
        mount point that /etc/fstab or a systemd mount unit lists, with nothing mounted
        there (mirror.mounts.not_mounted). Needs no record, so it holds for a first run
        and for an index of any age."""
        if (expected := not_mounted(str(self.config.source))) is None:
            return None
        return (
            f"source folder {self.config.source} is below {expected.point}, where {expected.by} mounts a share "
            f"or disk, but none is mounted there: mount it (gone for good? take it out of {expected.by})."
        )

    def source_doubted(self, snap: Snapshot) -> str | None:
        """Why a source folder that holds (nearly) none of the files a target got from it
        may not be the folder they came from, where the target's index (from an older
        mirror) does not say which mount it read them on: an empty mount point of a share
        not mounted, maybe made again by the program that writes into it. Trusted, its
        emptiness deletes every copy (with max_delete raised, or a small folder), and its
        mount is recorded as the source's, which then refuses the share once it is back.
        None when the source holds enough of the files, or a recorded mount tells
        (:meth:`source_moved`)."""
        if "" in snap.unreadable or not place_of(str(self.config.source)):
            return None
        for runner in self.runners:
            index = runner.index
            if index is None or runner.source_place() is not None:
                continue
            known = present = 0
            for src, _ in index.targets():
                known += 1
                present += src in snap.entries or (
                    bool(snap.unreadable) and not snap.unreadable.isdisjoint((src, *ancestors(src)))
                )
            if nearly_none(present, known):
                return (
                    f"source folder {self.config.source} holds {f'only {present}' if present else 'none'} of the "
                    f"{known} files mirror copied from it to {runner.name}, whose index, from an older mirror, "
                    "does not say which disk it read them on: is the share or disk mounted?"
                )
        return None

    def source_unusable(self, snap: Snapshot) -> str | None:
        """Why the files of ``snap`` do not stand for the source the targets were filled
        from (:meth:`source_moved`, :meth:`source_doubted`): compared with the targets, an
        empty mount point made every copy a file removed from the source."""
        return self.source_moved() or self.source_doubted(snap)

    def _check_distinct(self) -> None:
        """Two targets writing to one place would undo each other: one's deletions would
        defeat another's ``keep``, and each would count the other's files as strangers.
        One inside another's folder is refused too: their files land on each other's
        (a ``flat`` target in ``backup/sub`` overwrote the tree target's ``sub/``)."""
        seen: list[tuple[tuple[str, ...], tuple[str, ...], str]] = []
        for runner in self.runners:
            key = runner.where.distinct_place()
            place = key if key[0] == "folder" else runner.where.place()
            for other, other_key, name in seen:
                if key == other_key:
                    raise ConfigError(
                        f"targets {name!r} and {runner.name!r} both write to {_shown(place)}; "
                        "give each target a folder of its own"
                    )
                if (inner := _inside(key, other_key)) is not None:
                    inner_name, outer_name, inner_place = (
                        (runner.name, name, place) if inner == key else (name, runner.name, other)
                    )
                    raise ConfigError(
                        f"target {inner_name!r} writes to {_shown(inner_place)}, inside the folder of target "
                        f"{outer_name!r}; give each target a folder of its own, not one inside another"
                    )
                if key[0] == other_key[0] == "folder" and overlapping(key[1], other_key[1]):
                    # a bind mount of usb as kept: usb's deletions took the copies kept keeps
                    raise ConfigError(
                        f"targets {name!r} and {runner.name!r} write to one folder, or one inside the other, "
                        f"through a bind mount ({_shown(other)} and {_shown(place)}); give each target a "
                        "folder of its own"
                    )
            seen.append((place, key, runner.name))

    def close(self, clean: bool = True) -> None:
        """``clean``: every runner stopped in time (:meth:`shutdown`); one stuck does not
        make the others' stop unclean."""
        for runner in self.runners:
            runner.close(clean or self._join(runner, 0))

    def scan(self) -> Snapshot:
        check_source(self.config.source)
        # looked at before the scan: a share mounted or unmounted while it runs then shows
        # the watcher another filesystem than the one looked at, and the watcher rescans
        away = self.away_mounts = self._look_at_inner_mounts()
        snap = scan(self.config.source, self.filter)
        # a file every target's patterns leave out is none of theirs, whatever its name or
        # kind: told to rename it (exit 1, for ever) over logs a program owns and nobody
        # wants mirrored, and a FIFO or a link in an excluded folder told at every run
        wanted = [r.filter.wants_file for r in self.runners]
        snap.skipped = [s for s in snap.skipped if s.unreadable or any(wants(s.path) for wants in wanted)]
        # and a folder they all leave out as a whole, read or not: lost+found at a disk's
        # root, excluded, kept every run, status and verify at exit 1 for good
        ignored = {u for u in snap.unreadable if not any(r.wants_below(u) for r in self.runners)}
        if ignored:
            snap.unreadable -= ignored
            snap.skipped = [s for s in snap.skipped if not (s.unreadable and s.path in ignored)]
        for rel in sorted(away):
            snap.hold(rel, "the share or disk mounted here is not mounted (gone for good? remove the folder)")
        for skip in snap.skipped:
            # told once a run: each hourly rescan told every link and odd name again, for ever
            told = skip in self._told
            self._told.add(skip)
            if skip.unreadable:
                log.log(
                    logging.DEBUG if told else logging.WARNING,
                    "skipped %s: %s; its copies on the targets stay until it can be read",
                    skip.path,
                    skip.reason,
                )
            elif skip.fix:
                log.log(
                    logging.DEBUG if told else logging.WARNING,
                    "not mirrored: %s: %s; %s",
                    skip.path,
                    skip.reason,
                    skip.fix,
                )
            else:
                log.log(logging.DEBUG if told else logging.INFO, "skipped %s: %s", skip.path, skip.reason)
        # for status: what the source holds that the target does not get, as of this scan
        not_sent = snap.left_out()
        for runner in self.runners:
            runner.unsendable = sum(1 for s in snap.skipped if s.fix and runner.filter.wants_file(s.path))
            # a mirrored file renamed to one of these keeps its copy (mirror.plan)
            runner.not_sent = {p: e for p, e in not_sent.items() if runner.filter.wants_file(p)}
            count = runner.unsendable + sum(1 for s in snap.skipped if s.unreadable and runner.wants_below(s.path))
            left_out = str(count) if count else None
            runner.left_out = count
            index = runner.index
            if index is not None and not runner.dry_run and index.get_meta("left_out") != left_out:
                runner.note(left_out=left_out)  # written when it changes: a commit costs
        unmatched = tuple(r.name for r in self.runners if snap.entries and not _takes_any(r, snap.entries))
        for name in unmatched if unmatched != self.unmatched else ():
            log.warning(
                "[%s] its include/exclude patterns take in none of the %d files in the source; check the patterns "
                "in the config (they tell upper and lower case apart)",
                name,
                len(snap.entries),
            )
        self.unmatched = unmatched
        return snap

    def _look_at_inner_mounts(self) -> frozenset[str]:
        """Shares and disks mounted inside the source that are not mounted now: each
        shows as an empty folder, its files would count as deleted, and their copies go
        from every target. The scan holds them like a folder that cannot be read, until
        they are back; a folder removed (not only emptied) is a share given up."""
        source = str(self.config.source)
        mounted = mounts_below(source)
        recorded = [(runner, runner.inner_mounts()) for runner in self.runners]
        known = frozenset().union(*(mounts for _, mounts in recorded))
        away = frozenset(m for m in known - mounted if os.path.isdir(os.path.join(source, m)))
        self.inner_mounts = {rel: folder_identity(os.path.join(source, rel)) for rel in mounted | away}
        for runner, mounts in recorded:
            if mounts != self.inner_mounts.keys():
                runner.remember_inner_mounts(frozenset(self.inner_mounts))
        return away

    def _settle(self) -> float:
        """How long a file must stay unchanged before it is sent: the longest ``settle`` of
        the targets, in full passes and watch mode alike. With the shortest, a target given
        5 s for a scanner's pauses between pages got a scan of one page under its final name."""
        return max((r.settings.settle for r in self.runners), default=TargetSettings.settle)

    def settle(self, snap: Snapshot) -> set[str]:
        """Wait until recently modified files settle; return those that never did.

        A file has settled once a stat ``limit`` seconds after the last shows no change,
        whatever its mtime says: a date in the future (a camera's wrong clock, an archive
        with odd dates) stays "recent" for years.
        """
        limit = self._settle()
        deadline = time.monotonic() + SETTLE_WAIT
        young = _young(snap.entries, limit)
        while young and time.monotonic() < deadline and not self.stop.is_set():
            self.stop.wait(limit)
            fresh = stat_paths(self.config.source, young, self.filter)
            still = set()
            for rel, entry in fresh.items():
                if entry is None:
                    snap.entries.pop(rel, None)
                    continue
                if entry != snap.entries.get(rel) or racy(entry.mtime_ns, time.time_ns()):
                    still.add(rel)
                snap.entries[rel] = entry
            young = still
        return young

    def run_once(self, *, listing: bool = False) -> list[Report]:
        """One full pass for every target (in parallel); the targets' reports. A listing
        asked for also accepts a local target folder that moved to another disk, and a
        source folder that did. Once :attr:`stop` is set, a pass gets STOP_WAIT seconds to
        end; one still running then (an upload of a large file) has no report, and
        :meth:`close` leaves it to the next run."""
        self._holding(Holding.ONE_OFF)
        if why := self.source_not_mounted():
            self._tell_unusable(self.runners, why)
            raise GuardRefused(f"{why} Nothing was changed on the targets")
        # source_moved without the mount check just made (it reads /etc/fstab and the mount table)
        if not listing and (why := self._link_switched() or self._place_changed()):
            self._tell_unusable(self.runners, why)
            raise GuardRefused(
                f"{why} Nothing was changed on the targets; mount it and run again (if the folder moved "
                "on purpose, run once with --rescan)"
            )
        if not listing:
            for runner in self.runners:
                runner.ask_early()
        snap = self.scan()
        if not listing and (why := self.source_doubted(snap)):
            self._tell_unusable(self.runners, why)
            raise GuardRefused(
                f"{why} Nothing was changed on the targets; mount it and run again (if the files left the "
                "source on purpose, run once with --rescan)"
            )
        self.unreadable = frozenset(snap.unreadable)
        self.unmirrorable = frozenset(skip.path for skip in snap.skipped if skip.fix)
        unsettled = self.settle(snap)
        self.unsettled = frozenset(unsettled)
        for rel in sorted(unsettled):
            log.warning("%s keeps changing; left for the next run", rel)
        local = snap.entries
        if unsettled:
            local = Entries((p, e) for p, e in snap.entries.items() if p not in unsettled)
        reports: dict[str, Report] = {}
        for runner in self.runners:
            runner.accept_new_place = listing

        def one(runner: TargetRunner) -> None:
            try:
                reports[runner.name] = runner.pass_(
                    local,
                    listing=listing or runner.needs_listing(),
                    scope=None,
                    # an empty source is empty for every target; else the runner judges it
                    # through the target's patterns, as in watch mode
                    source_empty=True if not snap.entries else None,
                    skip=unsettled | snap.unreadable,
                )
            except Exception as exc:
                # any error, even a per-item one from connecting, fails this target's report:
                # a target without a report would count as in sync
                if not isinstance(exc, MirrorError):
                    log.debug("internal error on target %s", runner.name, exc_info=True)
                reports[runner.name] = Report(runner.name, "full", fatal=described(exc))
                self.observer.on_report(reports[runner.name])
                runner.failing(described(exc), "failed")

        self._passes = {r.name: threading.Thread(target=one, args=(r,), daemon=True) for r in self.runners}
        for t in self._passes.values():
            t.start()
        # the stop's wait, as in watch mode: a Ctrl-C went unheeded for as long as a large
        # upload took (most of an hour for 2 GiB on a slow uplink)
        for t in self._passes.values():
            while t.is_alive() and (self._stop_by is None or time.monotonic() < self._stop_by):
                t.join(0.2)
                if self._stop_by is None and self.stop.is_set():
                    self._stop_by = time.monotonic() + STOP_WAIT
        return [reports[r.name] for r in self.runners if r.name in reports]

    def _holding(self, what: Holding) -> None:
        """Tell mirrors refused a target what this one does with it (index_lock)."""
        for runner in self.runners:
            runner.holding(what)

    def run_forever(self) -> None:
        """Full pass, then follow changes until :attr:`stop` is set, or Ctrl-C comes in
        the main thread: then :attr:`stop` is set, and the KeyboardInterrupt goes on.

        The full passes (the first, after a watcher restart, and every rescan_interval,
        by the monotonic clock or, after a suspend, by the wall clock) start from the
        watcher's rescan requests: the first comes once its watches are in place, so
        nothing that changes while mirror starts up can slip between scan and watch.
        """
        from mirror.watch import SourceWatcher

        self._holding(Holding.WATCHING)
        known = Entries()
        lock = threading.Lock()
        for runner in self.runners:
            runner.start(known, lock, self.source_moved)
        rescan_every = min(r.settings.rescan_interval for r in self.runners)
        watcher = SourceWatcher(
            self.config.source,
            self.config.source_link,
            self.filter,
            self._settle(),
            any(r.settings.poll for r in self.runners),
            self.stop,
            known,
            retry_every=rescan_every,  # a watcher that fell back to polling tries inotify again
        )
        try:
            self._follow(watcher, known, lock, rescan_every)
        except KeyboardInterrupt:
            # Ctrl-C in a host that runs this in its main thread (the CLI sets stop on SIGINT
            # instead): stopped as stop.set() does, then the host's to handle
            self.stop.set()
            raise
        finally:
            unsent = watcher.unsent()
            for runner in self.runners:
                runner.stopped_with(unsent)

    def _follow(self, watcher: SourceWatcher, known: Entries, lock: threading.Lock, rescan_every: float) -> None:
        """:meth:`run_forever`'s loop: the watcher's batches, and the full passes when due."""
        settle = self._settle()
        next_rescan = time.monotonic() + rescan_every
        # the monotonic clock stands still while the machine sleeps: after a night suspended
        # the pass is due by the wall clock, which "last complete sync" is stamped with
        rescanned = time.time()
        away: str | None = None
        settling = 0
        restless: frozenset[str] | None = None
        watching: str | None = None
        alive = (float("-inf"), float("-inf"))
        for batch in watcher.batches():
            for runner in self.runners:
                runner.check_thread()
            alive = self._tell_alive(alive)
            settling = self._tell_settling(watcher.unsettled(), settling)
            restless = self._tell_restless(watcher.restless(), restless)
            watching = self._tell_watching(watcher.watching, watching)
            back = False
            if away or batch.rescan or batch.changes or batch.missing:
                back, away = away is not None, self._source_away(away)
                if away:
                    continue
            # a wall clock set back makes no pass due, and holds off none of the monotonic ones
            due = time.monotonic() >= next_rescan or time.time() - rescanned >= rescan_every
            # while in doubt (_full_scan), a change is looked at by a scan of a folder nearly empty
            if back or batch.rescan or due or (self._doubted and batch.changes):
                next_rescan, rescanned = time.monotonic() + rescan_every, time.time()
                if (fresh := self._full_scan()) is None:
                    continue
                # files still being written go to the watcher, which hands each on once it
                # settles: a file that never settles (a growing log) must hold up nothing
                young = frozenset(_young(fresh.entries, settle))
                with lock:
                    known.clear()
                    known.update((p, e) for p, e in fresh.entries.items() if p not in young)
                watcher.expect(young)
                watcher.inner_mounts = dict(self.inner_mounts)
                watcher.away_mounts = self.away_mounts
                watcher.unreadable = set(fresh.unreadable)
                watcher.linked = set(fresh.linked)
                watcher.links_found(fresh.links())
                for runner in self.runners:
                    runner.submit(full=True, listing=due, skip=young | fresh.unreadable)
            elif batch.changes:
                self.observer.on_changes(len(batch.changes))
                for runner in self.runners:
                    runner.submit(batch.changes)
            if all(r.dead for r in self.runners) and not any(r.reached for r in self.runners):
                # no target ever got a pass: a mistake in the config or the login, for the
                # user to fix. Targets that were mirrored wait for their retry instead (a
                # full disk gets space): an exit would end the alerts, and the retries it
                # promised, for a service manager that restarts only failures
                log.error("every target has stopped before its first pass; exiting")
                self.stop.set()

    def _full_scan(self) -> Snapshot | None:
        """Watch mode: the scan for a full pass; None when there is none to make: the
        source cannot be read, or is in doubt (:meth:`source_doubted`, told once as the
        doubt starts and once as it ends)."""
        try:
            fresh = self.scan()
        except ConfigError as exc:
            log.warning("%s", exc)
            return None
        why = self.source_doubted(fresh)
        if why and not self._doubted:
            log.warning("%s (waiting for it; nothing is changed on the targets)", why)
            for runner in self.runners:
                runner.failing(why)
        elif self._doubted and not why:
            log.info("source folder %s holds its files again; mirroring it", self.config.source)
        self._doubted = why is not None
        return None if why else fresh

    def _tell_settling(self, files: int, told: int) -> int:
        """Files waiting to settle count as pending in status (a scan written for a
        minute showed "idle, pending 0"); written when the count changes from ``told``."""
        if files != told:
            for runner in self.runners:
                runner.settling(files)
        return files

    def _tell_alive(self, told: tuple[float, float]) -> tuple[float, float]:
        """Say the watch loop turns, every ALIVE_EVERY seconds (``told``: when it last
        said so, by the monotonic clock and the wall clock): a process stopped or stuck
        held its lock, and status said running, idle, in sync, for as long as it lasted.
        At once when the wall clock jumped (a resume after a night suspended)."""
        now = (time.monotonic(), time.time())
        if now[0] - told[0] < ALIVE_EVERY and 0 <= now[1] - told[1] < ALIVE_EVERY:
            return told
        for runner in self.runners:
            runner.note(alive=now[1])
        return now

    def _tell_restless(self, files: frozenset[str], told: frozenset[str] | None) -> frozenset[str]:
        """Files that keep changing (a log written on and on) are never sent: status said
        "in sync", exit 0, where a --once run exits 1; written when they change from ``told``."""
        if files != told:
            for runner in self.runners:
                runner.restless(files)
        return files

    def _tell_watching(self, how: str | None, told: str | None) -> str | None:
        """How the watcher follows the source, for status, when not by inotify ("polling
        (why)"); written when it changes from ``told``."""
        if how != told:
            for runner in self.runners:
                runner.note(watching=how)
        return how

    def _source_away(self, away: str | None) -> str | None:
        """Watch mode: why the source cannot be mirrored now (:meth:`source_moved`), told
        once as it starts and once as it ends; ``away``: the reason told before. Changes
        read from a folder below a mount point would overwrite good copies."""
        why = self.source_moved()
        if why and why != away:
            log.warning("%s (waiting for it; nothing is changed on the targets)", why)
            for runner in self.runners:
                runner.failing(why)
        elif away and not why:
            log.info("source folder %s is back; rescanning", self.config.source)
        return why

    def shutdown(self, timeout: float = STOP_WAIT) -> bool:
        """Stop the runners; True when every one finished its current action in time."""
        self.stop.set()
        for runner in self.runners:
            runner.wake()
        deadline = self._stop_by if self._stop_by is not None else time.monotonic() + timeout
        return all(self._join(r, max(0.0, deadline - time.monotonic())) for r in self.runners)

    def _join(self, runner: TargetRunner, timeout: float) -> bool:
        """Wait up to ``timeout`` for a runner, and for its pass of :meth:`run_once`."""
        done = runner.join(timeout)
        if (once := self._passes.get(runner.name)) is not None:
            once.join(timeout)
            done = done and not once.is_alive()
        return done


def _holds_files(index_file: Path) -> bool:
    if not index_file.exists():
        return False
    index = Index(index_file, readonly=True)
    try:
        return index.totals()[0] > 0
    finally:
        index.close()


def _takes_any(runner: TargetRunner, files: Iterable[str]) -> bool:
    """Whether the target's include/exclude patterns take in any of ``files``."""
    return not runner.filter.narrows or any(map(runner.filter.wants_file, files))


def _young(entries: Entries, settle: float) -> set[str]:
    """Files modified within ``settle`` seconds, or whose time's step has not passed (racy)."""
    now = time.time_ns()
    since = now - int(settle * 1e9)
    recent = entries.modified_after(since - COARSE_NS)
    return {rel for rel in recent if entries[rel].mtime_ns > since or racy(entries[rel].mtime_ns, now)}


def _inside(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...] | None:
    """Of two targets' places (:meth:`TargetPlace.place`), the one inside the other's
    folder; None when neither is."""
    if a[0] != b[0] or a[2:] != b[2:]:
        return None
    if a[1].startswith(b[1].rstrip("/") + "/"):
        return a
    if b[1].startswith(a[1].rstrip("/") + "/"):
        return b
    return None


def _shown(place: tuple[str, ...]) -> str:
    return place[1] if place[0] == "folder" else redact_url(place[1])
