"""Alerts: tell someone when a target stays broken, and again when it heals.

An :class:`Alerts` observer turns target states into *incidents*. An incident opens when a
target starts failing (unreachable, fatal error) and closes with the next pass that reaches
it; or when the delete guard withholds deletions (an emptied or unmounted source), which
needs a person as much, and closes with the first pass that plans every deletion again
(a full one) without the guard: when ``mirror status`` stops naming them.
Once an incident has lasted ``alert_after``, it is announced exactly once: the target's
``on_failure`` command runs (``MIRROR_EVENT=failure``) and its ``healthcheck_url`` gets a
``/fail`` ping; a command that fails (the mail relay down in the same outage) runs again
after a backoff while the incident lasts. When it heals, the command runs again with
``MIRROR_EVENT=recovery`` and the URL gets a plain ping (the healthchecks.io convention).
Each channel (the command, the ping) is on its own: one that fails, hangs or raises keeps
neither the other from being told nor the next alert from going, and an incident keeps the
channels it still owes its announcement (``owed``), tried again with the command's backoff.
Every complete sync pings the URL too (at most once a minute), and a running mirror pings
every five minutes, so a stopped service shows up as a missed ping: "healthy" only while
no incident is open.

Incidents are kept in the state folder (``alerts/<target>.json``), so a restart or a cron
run of ``mirror run --once`` neither forgets an incident nor announces it twice. All I/O
(commands, pings) runs on one worker thread, in order, never on the engine's threads; only
an announcement's channels run side by side, so a ping that hangs does not hold the
command past the few seconds a cron run waits for its alerts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import os
import queue
import re
import shlex
import signal
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import IO, TypeVar

from mirror.config import Config, TargetConfig
from mirror.events import Observer, Report
from mirror.index import private_dir
from mirror.index_files import index_path, state_dir
from mirror.redact import SecretFilter

log = logging.getLogger("mirror")
_T = TypeVar("_T")

#: a complete sync pings at most this often (busy folders pass many times a minute)
PING_EVERY = 60.0
#: a healthy mirror with nothing to do still pings this often
KEEPALIVE = 300.0
#: how long an on_failure command may run
COMMAND_TIMEOUT = 60.0
#: a failed on_failure command is tried again after this, doubling up to RETRY_MAX
RETRY_FIRST = 60.0
RETRY_MAX = 1800.0
PING_TIMEOUT = 10.0
PING_ATTEMPTS = 3
FAILING = frozenset({"failing", "failed"})
#: an announcement's channels, as an incident names those it still owes
COMMAND = "command"
PING = "ping"


@dataclass
class Incident:
    """A target that has been failing since ``since``; ``alerted`` once announced. The
    channels that have not told anyone yet (``owed``: a command that failed, a ping that
    got no answer, either cut off by the end of a cron run) are tried again at
    ``retry_at``, after ``tries`` failed tries in a row."""

    since: float
    reason: str
    alerted: bool = False
    tries: int = 0
    retry_at: float | None = None
    #: deletions the guard withheld are part of it: a pass that reaches the target does
    #: not end it, only one that no longer withholds them (see Alerts.on_report)
    withheld: bool = False
    owed: list[str] = field(default_factory=list)


class Alerts(Observer):
    """The ``on_failure`` / ``healthcheck_url`` / ``alert_after`` settings of a config, at work."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.targets = {t.name: t for t in config.targets if t.settings.alerts}
        root = state_dir(config) / "alerts"
        self.files = {
            name: root / f"{index_path(root, config.named_source, t).stem}.json"
            for name, t in self.targets.items()
        }
        #: where an incident of a source given through a link was kept before such a source
        #: named its files by the link (as its index is taken over: TargetRunner)
        self._older = {
            name: root / f"{index_path(root, config.source, t).stem}.json"
            for name, t in self.targets.items()
            if config.source_link is not None
        }
        self.scrub = {name: SecretFilter(t.secrets).scrub for name, t in self.targets.items()}
        #: each target's lines carry its name, as the engine's do (a collector filters on it)
        self.logs = {name: logging.LoggerAdapter(log, {"target": name}) for name in self.targets}
        #: incidents, some carried over from an earlier run (``alerts/*.json``)
        self.incidents: dict[str, Incident] = {name: i for name in self.targets if (i := self._load(name))}
        #: targets seen failing by this process: a carried-over incident is announced only
        #: once the target fails again, never because of an earlier run's failure alone
        self._confirmed: set[str] = set()
        self._lock = threading.Lock()
        #: targets whose incident could not be saved (told once, until a save works)
        self._unsaved: set[str] = set()
        self._last_ping: dict[str, float] = {}
        self._jobs: queue.Queue[Callable[[], object] | None] = queue.Queue()
        self._closing = False
        #: the on_failure commands running now, by target name: their process ids
        self._running: dict[str, int] = {}
        #: each target's announcements, in order, on a thread of its own (_Lane); the
        #: targets whose failure alert is queued or under way there
        self._lanes: dict[str, _Lane] = {}
        self._lanes_lock = threading.Lock()
        self._alerting: set[str] = set()
        self._worker: threading.Thread | None = None
        if self.targets:
            self._worker = threading.Thread(target=self._work, name="mirror-alerts", daemon=True)
            self._worker.start()

    # -- observer hooks (engine threads: decide and queue, never block) -------------------
    def on_state(self, target: str, state: str, error: str | None) -> None:
        if target in self.targets and state in FAILING:
            self._open(target, error or f"target {state}")

    def on_report(self, report: Report) -> None:
        name = report.target
        if name not in self.targets:
            return
        # as status has it: a pass that withholds deletions says so, and one that plans every
        # deletion (a full one) says it withholds none; a watch pass says nothing of the
        # guard's (one that deletes another file leaves the withheld ones standing)
        withheld = True if report.guard else False if report.kind == "full" else None
        if report.error or report.guard:
            self._open(name, report.error or f"deletions withheld: {report.guard}", withheld)
            return
        with self._lock:
            incident = self.incidents.get(name)
            if incident is not None and incident.withheld and withheld is None:
                return
            self.incidents.pop(name, None)
            self._confirmed.discard(name)
            if incident is not None:
                self._save(name, None)
            url = self.targets[name].settings.healthcheck_url
            healthy = url is not None and not self._url_down(url)
            if incident is not None and incident.alerted:
                self._lane(name).put(lambda: self._recovered(name, incident, url if healthy else None))
            elif report.ok and healthy and url is not None and self._ping_due(url, PING_EVERY):
                self._jobs.put(lambda: self._ping(url, f"{name}: {_one_line(_summary(report))}"))
        self._jobs.put(None)  # let the worker reconsider its deadlines

    def on_taken_over(self, target: str, index: str) -> None:
        if target not in self.targets:
            return
        old = self.files[target].with_name(f"{index}.json")
        with self._lock:
            # an incident left under the old name was never closed: its recovery was never
            # announced, and the same outage was announced again under the new name
            if target not in self.incidents and old.exists():
                with contextlib.suppress(OSError):
                    old.replace(self.files[target])
                if (incident := self._load(target)) is not None:
                    self.incidents[target] = incident
            with contextlib.suppress(OSError):
                old.unlink(missing_ok=True)
        self._jobs.put(None)

    def retire(self, kept: Iterable[TargetConfig]) -> None:
        """End the incidents of the targets a reload leaves out of the config (``kept``:
        the config's targets after it), a recovery for one announced: no later run knows
        such a target, and its receiver (a healthchecks check, a ticket) stayed down for
        good. A target renamed keeps its place, and its incident goes with its index."""
        places = {t.url for t in kept}
        for name, target in self.targets.items():
            if target.url in places:
                continue
            with self._lock:
                incident = self.incidents.pop(name, None)
                self._confirmed.discard(name)
                if incident is None:
                    continue
                self._save(name, None)
            if incident.alerted:
                self.logs[name].info("left out of the config: its incident ends")
                url = target.settings.healthcheck_url
                healthy = url is not None and not self._url_down(url)
                self._lane(name).put(functools.partial(self._recovered, name, incident, url if healthy else None))

    # -- lifecycle --------------------------------------------------------------------
    def close(self, timeout: float = 15.0) -> None:
        """Announce incidents that are due, finish queued alerts (up to ``timeout``), stop."""
        if self._worker is None:
            return
        self._closing = True
        deadline = time.monotonic() + timeout
        self._jobs.put(None)
        self._worker.join(timeout)
        with self._lanes_lock:
            lanes = list(self._lanes.values())
        for lane in lanes:
            lane.close()
        for lane in lanes:
            lane.join(max(0.0, deadline - time.monotonic()))
        if not self._worker.is_alive() and not any(lane.alive() for lane in lanes):
            return
        with self._lock:
            # a command still running is left to finish (it has a session of its own) and
            # owed no more: it delivered its alert after this process ended, and the next
            # run, finding it owed, ran it again (a slow mail relay: one failure, a mail a run)
            for name, pid in self._running.items():
                incident = self.incidents.get(name)
                if incident is not None and COMMAND in incident.owed:
                    incident.owed.remove(COMMAND)
                    self._save(name, incident)
                    self.logs[name].info(
                        "on_failure command still running after %.0f s (pid %d): left to finish", timeout, pid
                    )
            owed = any(i.owed for i in self.incidents.values())
        if owed:
            log.warning(
                "stopped waiting for alerts after %.0f s: a failure alert not yet delivered"
                " is tried again by the next run",
                timeout,
            )

    # -- incidents ----------------------------------------------------------------------
    def _open(self, name: str, reason: str, withheld: bool | None = None) -> None:
        """Open the target's incident, or tell it the latest reason; ``withheld``: whether
        the guard withholds deletions now (None: not told)."""
        reason = _one_line(self.scrub[name](reason))
        with self._lock:
            incident = self.incidents.get(name)
            if incident is None:
                incident = self.incidents[name] = Incident(self.clock(), reason)
                self.logs[name].info("failing (%s); alerting if it lasts %s", reason, _duration(self._after(name)))
            else:
                incident.reason = reason
            if withheld is not None:
                incident.withheld = withheld
            self._confirmed.add(name)
            self._save(name, incident)
        self._jobs.put(None)

    def _after(self, name: str) -> float:
        return self.targets[name].settings.alert_after

    def _url_down(self, url: str) -> bool:
        """A URL shared by several targets stays down while any of them is alerted."""
        return any(i.alerted for n, i in self.incidents.items() if self.targets[n].settings.healthcheck_url == url)

    def _ping_due(self, url: str, every: float) -> bool:
        now = self.clock()
        # a clock set back (NTP, a VM resumed) makes the last ping lie ahead: the monitor
        # heard nothing for that hour too, and called the service down
        if 0 <= now - self._last_ping.get(url, float("-inf")) < every:
            return False
        self._last_ping[url] = now
        return True

    def _due(self) -> tuple[list[tuple[str, Incident]], list[tuple[str, str]], float]:
        """Incidents to announce now (or whose channels owe it still), URLs owed a
        keep-alive ping with what it says, and the seconds until the next deadline."""
        now = self.clock()
        due: list[tuple[str, Incident]] = []
        keepalive: list[tuple[str, str]] = []
        wait = KEEPALIVE
        with self._lock:
            for name, incident in self.incidents.items():
                if incident.since > now:
                    # begun while the clock was ahead (a VM resumed, NTP not yet synced): due
                    # at since + alert_after, it would be announced only once the clock caught
                    # up, days later maybe, and say it had been failing since a time to come
                    incident.since = now
                    self._save(name, incident)
                if (incident.alerted and not incident.owed) or name not in self._confirmed:
                    continue
                # a clock set back holds a retry off no longer than the longest backoff
                retry = 0.0 if incident.retry_at is None else min(incident.retry_at - now, RETRY_MAX)
                left = max(incident.since + self._after(name) - now, retry)
                if left <= 0:
                    if not incident.alerted:
                        incident.owed = self._channels(name)
                        incident.alerted = True
                        # kept as owed until told: a run cut off now tries them again
                        self._save(name, incident)
                    due.append((name, incident))
                else:
                    wait = min(wait, left)
            urls = {t.settings.healthcheck_url for t in self.targets.values()}
            for url in sorted(u for u in urls if u in self._last_ping and not self._url_down(u)):
                if self._ping_due(url, KEEPALIVE):
                    keepalive.append((url, self._keepalive(url)))
                else:
                    wait = min(wait, self._last_ping[url] + KEEPALIVE - now)
        return due, keepalive, max(wait, 0.05)

    def _channels(self, name: str) -> list[str]:
        """The channels that announce the target's incident: its URL only if no other
        target's incident has told it already."""
        settings = self.targets[name].settings
        url = settings.healthcheck_url
        ping = [PING] if url is not None and not self._url_down(url) else []
        return ping + ([COMMAND] if settings.on_failure is not None else [])

    def _keepalive(self, url: str) -> str:
        """What a keep-alive ping to ``url`` says: the service runs, and whether all is well
        (an incident not yet announced is no reason to call the check down)."""
        opened = [
            f"{n}: {i.reason}"
            for n, i in self.incidents.items()
            if self.targets[n].settings.healthcheck_url == url
        ]
        return f"running, not healthy: {'; '.join(opened)}" if opened else "healthy; nothing to mirror"

    # -- the worker: deadlines and keep-alive pings; each target's announcements in its lane --
    def _lane(self, name: str) -> _Lane:
        with self._lanes_lock:  # its own: on_report asks for a lane holding _lock
            if (lane := self._lanes.get(name)) is None:
                lane = self._lanes[name] = _Lane(name)
            return lane

    def _work(self) -> None:
        while True:
            due, keepalive, wait = _contained(self._due) or ([], [], KEEPALIVE)
            for name, incident in due:
                if name not in self._alerting:
                    self._alerting.add(name)
                    self._lane(name).put(functools.partial(self._alert_in_lane, name, incident))
            for url, body in keepalive:
                _contained(functools.partial(self._ping, url, body))
            if self._closing and self._jobs.empty():
                return
            try:
                job = self._jobs.get(timeout=wait)
            except queue.Empty:
                continue
            if job is not None:
                _contained(job)

    def _alert_in_lane(self, name: str, incident: Incident) -> None:
        try:
            self._alert(name, incident)  # what it raises, its lane logs (_contained)
        finally:
            self._alerting.discard(name)
            self._jobs.put(None)  # the worker reconsiders its deadlines: a retry's, say

    def _alert(self, name: str, incident: Incident) -> None:
        """Tell each channel the incident still owes, side by side; keep those that failed."""
        since = _stamp(incident.since)
        if not incident.tries:  # a retry runs what failed only: the rest was announced
            self.logs[name].error("failing since %s: %s", since, incident.reason)
        settings = self.targets[name].settings
        url = settings.healthcheck_url
        send: dict[str, Callable[[], str | None]] = {}
        if settings.on_failure is not None:
            send[COMMAND] = lambda: self._command(self.targets[name], "failure", incident)
        if url is not None:
            send[PING] = lambda: self._ping(f"{url}/fail", f"{name}: failing since {since}: {incident.reason}")
        failed: dict[str, str] = {}
        with self._lock:
            # a channel set up no more (the config changed since) owes nothing
            incident.owed = [c for c in incident.owed if c in send]
            tried = list(incident.owed)
            # as if this try failed, should the run end before it does (a cron run's alerts
            # get a few seconds): the next run tries again after the backoff, not at once
            incident.retry_at = self.clock() + _backoff(incident.tries + 1)
            if self.incidents.get(name) is incident:
                self._save(name, incident)

        def tell(channel: str) -> None:
            try:
                how = send[channel]()
            except Exception as exc:  # one channel's fault must not cost the other its alert
                how = f"{type(exc).__name__}: {exc}"
            with self._lock:
                if how is not None:
                    failed[channel] = how
                    return
                if channel in incident.owed:  # not handed off by close() meanwhile
                    incident.owed.remove(channel)
                # at once: a cron run cut off before the other channel is done must not
                # send this one again
                if self.incidents.get(name) is incident:
                    self._save(name, incident)

        threads = [threading.Thread(target=tell, args=(c,), name=f"mirror-alert-{c}", daemon=True) for c in tried]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with self._lock:
            tries = incident.tries + 1
            wait = _backoff(tries)
            incident.tries, incident.retry_at = (tries, self.clock() + wait) if failed else (0, None)
            if self.incidents.get(name) is incident:  # not healed meanwhile
                self._save(name, incident)
        if COMMAND in failed:
            self.logs[name].warning(
                "on_failure command failed: %s; trying it again in %s while the target is failing",
                failed[COMMAND],
                _duration(wait),
            )
        if PING in failed:  # _ping said why
            self.logs[name].warning(
                "sending the /fail ping again in %s while the target is failing", _duration(wait)
            )
        if COMMAND in tried and COMMAND not in failed and tries > 1:
            self.logs[name].info("on_failure command succeeded at try %d", tries)

    def _recovered(self, name: str, incident: Incident, url: str | None) -> None:
        # as in _due: the clock may have been set back since _due last saw the incident
        incident.since = min(incident.since, self.clock())
        self.logs[name].info("recovered (failing since %s)", _stamp(incident.since))
        if url is not None:
            self._ping(url, f"{name}: recovered; failing since {_stamp(incident.since)}")
        failed = self._command(self.targets[name], "recovery", incident)
        if failed is not None:
            self.logs[name].warning("on_failure command failed: %s", failed)

    def _command(self, target: TargetConfig, event: str, incident: Incident) -> str | None:
        """Run the target's ``on_failure`` command; how it failed, None when it succeeded
        (or there is none)."""
        command = target.settings.on_failure
        if command is None:
            return None
        env = {
            **os.environ,
            "MIRROR_EVENT": event,
            "MIRROR_TARGET": target.name,
            "MIRROR_REASON": incident.reason,
            "MIRROR_SINCE": _stamp(incident.since),
        }
        import subprocess  # only configs with on_failure run commands
        import tempfile

        program = _program(command)
        # files, not pipes: a command that exits at once and leaves a child in the
        # background (``notify ... &``) is done when it exits, not when the child closes
        # its output; and one that says much cannot block on a full pipe
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(
                    command if isinstance(command, str) else list(command),
                    shell=isinstance(command, str),  # the user's own command line, by design
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,  # a group of its own: a timeout ends all it started
                )
            except OSError as exc:
                return f"{program} could not run ({exc.strerror or exc})"
            if event == "failure":
                with self._lock:
                    self._running[target.name] = proc.pid
            try:
                code = proc.wait(timeout=COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return f"{program} timed out after {COMMAND_TIMEOUT:.0f} s"
            finally:
                with self._lock:
                    self._running.pop(target.name, None)
            if code == 0:
                return None
            said = _one_line(_masked(_said(err) or _said(out), command))
        return f"{program} exited with {code}" + (f" ({said})" if said else "")

    def _ping(self, url: str, body: str) -> str | None:
        """POST ``body`` to ``url``; why it got no answer, None when it did."""
        # urllib.request is slow to import and only needed by configs that ping
        import http.client
        import urllib.error
        import urllib.request

        where = _redact_ping(url)
        for attempt in range(PING_ATTEMPTS):
            request = urllib.request.Request(url, data=body.encode()[:10_000], method="POST")  # noqa: S310 - config allows http(s) only
            try:
                with urllib.request.urlopen(request, timeout=PING_TIMEOUT) as response:  # noqa: S310
                    response.read()
                log.debug("pinged %s", where)
                self._last_ping.setdefault(url, self.clock())
                return None
            # HTTPException: something that is no HTTP server answered (a wrong port)
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                if attempt + 1 == PING_ATTEMPTS:
                    log.warning("healthcheck ping to %s failed: %s: %s", where, type(exc).__name__, exc)
                    return f"{type(exc).__name__}: {exc}"
                time.sleep(2**attempt)
        return None

    # -- persistence ---------------------------------------------------------------------
    def _load(self, name: str) -> Incident | None:
        older = self._older.get(name)
        if older is not None and older.exists() and not self.files[name].exists():
            # its recovery is announced only if the incident is found under today's name
            with contextlib.suppress(OSError):
                older.replace(self.files[name])
        try:
            data = json.loads(self.files[name].read_text(encoding="utf-8"))
            retry = data.get("retry_at")  # absent from the files of older versions, as withheld
            # older versions owed only a command, and only while a retry was set
            owed = data.get("owed", [] if retry is None else [COMMAND])
            return Incident(
                float(data["since"]),
                str(data["reason"]),
                bool(data["alerted"]),
                int(data.get("tries", 0)),
                None if retry is None else float(retry),
                bool(data.get("withheld")),
                [str(c) for c in owed if c in (COMMAND, PING)],
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable alert state %s", self.files[name])
            return None

    def _save(self, name: str, incident: Incident | None) -> None:
        path = self.files[name]
        try:
            if incident is None:
                path.unlink(missing_ok=True)
            else:
                private_dir(path.parent)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(asdict(incident)), encoding="utf-8")
                tmp.replace(path)
        except OSError as exc:
            # told once while it lasts: an incident is saved at each step of its alert,
            # and a full state disk made five warnings of one outage
            level = logging.DEBUG if name in self._unsaved else logging.WARNING
            self._unsaved.add(name)
            log.log(level, "cannot keep alert state in %s: %s", path, exc)
        else:
            self._unsaved.discard(name)


class _Lane:
    """One target's announcements, in order, on a thread of its own: an on_failure
    command that hangs (a mail relay down in the same outage) held back every other
    target's alert until it was killed, a minute on."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.Queue[Callable[[], object] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"mirror-alerts-{name}", daemon=True)
        self._thread.start()

    def put(self, job: Callable[[], object]) -> None:
        self._jobs.put(job)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            _contained(job)

    def close(self) -> None:
        """End the lane once the jobs queued before are done."""
        self._jobs.put(None)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def alive(self) -> bool:
        return self._thread.is_alive()


def _contained(work: Callable[[], _T]) -> _T | None:
    """Run ``work``; an exception is logged, never the end of the alert worker (the next
    alert, a recovery, a keep-alive ping must still go)."""
    try:
        return work()
    except Exception as exc:
        log.warning("alert failed: %s: %s", type(exc).__name__, exc)
        log.debug("alert failed", exc_info=True)
        return None


def _said(output: IO[bytes]) -> str:
    """What a command wrote, in whatever encoding (a mail tool in a Latin-1 locale)."""
    output.seek(0)
    return output.read(10_000).decode(errors="replace")


#: an address in what a command said, up to its path: a webhook's or a topic's secret
_URL_PATH = re.compile(r"\b([a-zA-Z][\w+.-]*://[^/\s]+)/\S*")


def _masked(said: str, command: str | tuple[str, ...]) -> str:
    """What a command said, as the log may show it: without its arguments (which it may
    echo: wget its URL, token and all) or the paths of the addresses in it."""
    words = list(command) if not isinstance(command, str) else _words(command)
    for word in sorted(words[1:], key=len, reverse=True):
        if len(word) >= 4:  # a short word ("-q", "1") would mask the text around it
            said = said.replace(word, "…")
    return _URL_PATH.sub(r"\1/…", said)


def _words(command: str) -> list[str]:
    """A shell line's words, as near as a shell would split them."""
    try:
        return shlex.split(command)
    except ValueError:  # unbalanced quotes: the shell says so when it runs
        return command.split()


def _backoff(tries: int) -> float:
    """How long after ``tries`` failed tries in a row the channels are tried again."""
    return min(RETRY_FIRST * 2.0 ** (tries - 1), RETRY_MAX)


def _summary(report: Report) -> str:
    trashed = f", {report.trashed} moved to trash" if report.trashed else ""
    deleted = report.deleted - report.trashed
    return f"in sync: {report.uploaded} sent, {deleted} deleted{trashed} ({report.kind} pass)"


def _one_line(text: str, limit: int = 500) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _program(command: str | tuple[str, ...]) -> str:
    """What a log line names of a command: its program, never the arguments (a token)."""
    if not isinstance(command, str):
        return command[0]
    # TOKEN=... curl ...: an assignment is no program, and its value may be the secret
    return next((w for w in _words(command) if not re.match(r"\w+=", w)), "sh")


def _stamp(when: float) -> str:
    return dt.datetime.fromtimestamp(when).astimezone().isoformat(timespec="seconds")


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def _redact_ping(url: str) -> str:
    """A ping URL's path is its secret (the check's UUID): log the host only."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}/…"
