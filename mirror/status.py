"""What ``mirror status`` shows: facts read from the indexes, also while a run is going."""

from __future__ import annotations

import json
import time
from contextlib import suppress
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from mirror import index_lock
from mirror.index import DamagedIndex, Failure, Index, NewerIndex, no_room
from mirror.private_files import write_private

#: the rescan interval of indexes written before it was recorded
DEFAULT_RESCAN = 3600.0
#: the state of a configured target that has no index yet
NEVER_RUN = "never run"
#: the state of a target whose mirror process ended without stopping cleanly
INTERRUPTED = "ended without stopping cleanly"
#: a mirror process mirrors the target, and this state folder holds no index of it
RUNNING_ELSEWHERE = "running without an index here"
#: the state of a target whose index a newer mirror wrote (after a downgrade)
NEWER = "written by a newer mirror"
#: the state of a target whose index reads as damaged
DAMAGED = "index damaged"
#: states of an index this mirror cannot read: its line says why, and nothing else
UNREAD = (NEWER, DAMAGED)
#: how far in the future a recorded time may lie before it counts as recorded with the
#: clock ahead: a clock set right by NTP steps back by a second or so
CLOCK_SLACK = 60.0
#: seconds requests may be tried again before status counts the target as not in sync:
#: a server that stopped answering takes a timeout a try, minutes before it counts as down
RETRYING_LONG = 60.0
#: seconds between a watching mirror's words that it is alive (Mirror._tell_alive), and
#: since its last after which status counts it as not responding: a scan of a very large
#: source holds the watch loop for a while
ALIVE_EVERY = 30.0
SILENT_AFTER = 180.0


@dataclass(frozen=True)
class TargetStatus:
    name: str
    url: str
    source: str
    running: bool
    state: str
    files: int
    bytes: int
    pending: int
    last_complete_sync: float | None
    last_error: str | None
    failures: tuple[Failure, ...]
    index: str
    #: the last complete sync is older than the rescan schedule allows (or never happened
    #: long after the start): something keeps this target from getting in sync
    stale: bool = False
    #: how often a complete sync is expected (twice the rescan interval)
    expected_every: float = 2 * DEFAULT_RESCAN
    #: why the last pass that had deletions to make withheld them (the delete guard)
    withheld: str | None = None
    #: the last pass was stopped or killed before it ended, and no pass has ended since
    incomplete: bool = False
    #: source files and folders the last full scan could not read, or that the target's
    #: patterns take in and no target can take as they are (a name that is not UTF-8):
    #: not backed up, whatever else is in sync
    left_out: int = 0
    #: the last complete sync (or the start) lies in the future: recorded while the
    #: clock was ahead, it cannot tell how old the copy is, so it counts as stale
    clock_ahead: bool = False
    #: when a run last tried this target, never run, and failed (its error: last_error)
    last_attempt: float | None = None
    #: how the running mirror follows the source when not by inotify: "polling (why)"
    watching: str | None = None
    #: when the run that mirrors it (or did last) started it, with the config it read then
    started: float | None = None
    #: why the running mirror is trying requests again, and since when
    retrying: str | None = None
    retrying_since: float | None = None
    #: files that have kept changing for a minute and more, so not sent (a log)
    restless: int = 0
    #: when the running mirror last said it is alive (watch mode only)
    alive: float | None = None

    @property
    def in_sync(self) -> bool:
        """Nothing for a user to look into: no error, failed item, withheld deletion, no
        pass cut short, nothing of the source left out, no process that ended without
        stopping cleanly, and a complete sync (a first copy under way has none yet) as
        recent as the rescan schedule promises."""
        problem = (
            self.last_error or self.failures or self.withheld or self.stale or self.last_complete_sync is None
        )
        problem = problem or (self.incomplete and not self.running) or self.left_out > 0
        # a process killed or crashed mirrors nothing until it is started again
        problem = problem or (self.state == INTERRUPTED and not self.running)
        problem = problem or self.retrying_long or self.restless > 0 or self.silent
        return not problem and self.state not in ("failed", NEVER_RUN, *UNREAD)

    @property
    def silent(self) -> bool:
        """A running mirror that has not said it is alive for SILENT_AFTER: stopped, or stuck."""
        return self.running and self.alive is not None and time.time() - self.alive > SILENT_AFTER

    @property
    def retrying_long(self) -> bool:
        """Requests to the target have been tried again for over RETRYING_LONG."""
        return self.retrying_since is not None and time.time() - self.retrying_since > RETRYING_LONG

    @property
    def never_synced(self) -> bool:
        """No run has ever finished a pass without errors on this target, and none is
        running: an older mirror's run killed in its first copy or that never reached the
        target (neither marked it incomplete), or a run stopped before its first pass."""
        return self.last_complete_sync is None and not self.running

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["failures"] = [asdict(f) for f in self.failures]
        # the verdicts the exit code is made of: a collector need not redo status's rules
        data["in_sync"], data["never_synced"] = self.in_sync, self.never_synced
        return data


def read(index_file: Path) -> TargetStatus:
    try:
        index = Index(index_file, readonly=True)
    except (NewerIndex, DamagedIndex) as exc:
        return _unread(index_file, exc)
    try:
        return of_index(index, index_file, index_lock.held(index_file))
    except DamagedIndex as exc:  # damage in pages the open did not read
        return _unread(index_file, exc)
    finally:
        index.close()


def _unread(index_file: Path, exc: NewerIndex | DamagedIndex) -> TargetStatus:
    """An index this mirror cannot read: the other targets are still shown."""
    name, running = index_file.stem.rsplit("-", 1)[0], index_lock.held(index_file)
    state = NEWER if isinstance(exc, NewerIndex) else DAMAGED
    return TargetStatus(name, "", "", running, state, 0, 0, 0, None, str(exc), (), str(index_file))


def of_index(index: Index, index_file: Path, running: bool) -> TargetStatus:
    """The status an open index tells (``running``: a mirror process mirrors the target)."""
    files, size = index.totals()
    last = index.get_meta("last_complete_sync")
    state = index.get_meta("state") or "unknown"
    # a mirror from before the incomplete mark, killed in a pass, left it "syncing"
    cut = index.get_meta("incomplete") is not None or (state == "syncing" and not running)
    if not running and state != "failed":
        # a process that ended without closing (kill -9, a crash, power lost) did not
        # say "stopped": the next run lists the target to find what it left
        state = "stopped" if index.get_meta("clean_shutdown") != "0" else INTERRUPTED
    # a full state disk takes no record of itself: the index still says what it said last
    # (idle, in sync) while nothing new is mirrored, so the disk is looked at here
    full = no_room(index_file.parent, sure=False)
    if full is not None and running:
        state = "failing"
    expected = 2 * float(index.get_meta("rescan_interval") or DEFAULT_RESCAN)
    since = float(last or index.get_meta("started") or 0) or None
    ahead = since is not None and recorded_ahead(since)
    return TargetStatus(
        name=index.get_meta("target") or index_file.stem,
        url=index.get_meta("url") or "",
        source=index.get_meta("source") or "",
        running=running,
        state=state,
        files=files,
        bytes=size,
        pending=pending(index) if running else 0,
        last_complete_sync=float(last) if last else None,
        last_error=str(full) if full is not None else index.get_meta("last_error"),
        failures=tuple(index.failures()),
        index=str(index_file),
        stale=since is not None and (time.time() - since > expected or ahead),
        expected_every=expected,
        withheld=index.get_meta("withheld"),
        incomplete=cut,
        left_out=int(index.get_meta("left_out") or 0),
        clock_ahead=ahead,
        watching=index.get_meta("watching") if running else None,
        started=float(index.get_meta("started") or 0) or None,
        retrying=index.get_meta("retrying") if running else None,
        retrying_since=float(index.get_meta("retrying_since") or 0) or None if running else None,
        restless=int(index.get_meta("restless") or 0) if running else 0,
        alive=float(index.get_meta("alive") or 0) or None if running else None,
    )


def read_before(statuses: list[TargetStatus], changed: float) -> bool:
    """Whether a running mirror started one of ``statuses`` before its config changed at
    ``changed``: it mirrors the targets the file named then, not those it names now."""
    return any(s.running and s.started is not None and s.started < changed for s in statuses)


def recorded_ahead(stamp: float) -> bool:
    """``stamp`` lies in the future: recorded while the clock was ahead (set a year
    ahead, then put right). Its age is negative, and no age limit ever flagged it."""
    return stamp - time.time() > CLOCK_SLACK


def pending(index: Index) -> int:
    """Changes not on the target yet: left in the pass, waiting for the target to answer,
    or still being written (a file settles before it is sent)."""
    return int(index.get_meta("pending") or 0) + int(index.get_meta("settling") or 0)


def never_run(name: str, url: str, source: str, index_file: Path) -> TargetStatus:
    """The status of a configured target mirror has not run for yet, with why the last
    run that tried failed to reach it."""
    try:
        attempt = json.loads(_attempt_file(index_file).read_text())
    except (OSError, ValueError):
        attempt = {}
    status = TargetStatus(name, url, source, False, NEVER_RUN, 0, 0, 0, None, None, (), str(index_file))
    return replace(status, last_error=attempt.get("error"), last_attempt=attempt.get("at"))


def running_elsewhere(state: Path) -> str:
    """What status says of a target a mirror process mirrors without an index in ``state``."""
    return (
        f"a mirror process mirrors this target, but {state} holds no index of it: the state folder was "
        "deleted while it ran, or it runs with another one (MIRROR_STATE_DIR, state_dir); restart it "
        "(systemctl restart, for the service) so that its state is written here"
    )


def running_before(older: TargetStatus) -> str:
    """What status says of a target whose place a mirror process of this state folder
    mirrors as ``older``, under the config as it was when that process read it."""
    return (
        f"a mirror process mirrors this place as target {older.name!r} of {older.source}, as the config "
        "named it when the process read it"
    )


def note_attempt(index_file: Path, error: str | None) -> None:
    """Remember (or, with no error, forget) why a run did not reach a target whose index it
    then removed: kept, an index would count as a mirrored target (mirror status without a
    config would fail on a mistyped host for ever)."""
    with suppress(OSError):  # a full state disk: the run's own output said it already
        if error is None:
            _attempt_file(index_file).unlink(missing_ok=True)
        else:
            write_private(_attempt_file(index_file), json.dumps({"at": time.time(), "error": error}))


def _attempt_file(index_file: Path) -> Path:
    return index_file.with_suffix(".failed-attempt")
