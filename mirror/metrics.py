"""Prometheus/OpenMetrics exporter: ``mirror run --metrics-addr HOST:PORT``.

Two kinds of numbers, both labelled by target:

* counters and histograms fed by engine events (a :class:`Metrics` is an Observer):
  uploads, moves, deletes, bytes, failed items, retries, passes, per-file transfer
  durations, pass durations, watcher events;
* gauges read from each target's index at scrape time (files and bytes managed, pending
  work, failed items, last complete sync, state): the same facts ``mirror status`` shows.

Each exporter has its own registry, so a host program may run several mirrors in one
process and serve them all from one endpoint (:meth:`Metrics.attach` each).
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mirror.errors import ConfigError
from mirror.events import Observer, Report
from mirror.status import of_index, recorded_ahead

if TYPE_CHECKING:
    from mirror.engine import Mirror

log = logging.getLogger("mirror")

STATES = ("starting", "syncing", "idle", "failing", "failed", "stopped")
#: per-file transfer times: documents are small, a few are large
TRANSFER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
PASS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


class Metrics(Observer):
    """Counters fed by engine events, gauges read from the indexes, and the HTTP endpoint."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self._mirrors: list[Mirror] = []
        self._lock = threading.Lock()
        self._server: Any = None
        self.port: int | None = None

        def counter(name: str, doc: str, labels: tuple[str, ...] = ("target",)) -> Any:
            return Counter(name, doc, labels, registry=self.registry)

        self.uploads = counter("mirror_uploads", "Files sent to the target.")
        self.uploaded_bytes = counter("mirror_uploaded_bytes", "Bytes sent to the target.")
        self.moves = counter("mirror_moves", "Files moved or renamed on the target.")
        self.deletes = counter("mirror_deletes", "Files deleted from the target (or moved to its trash).")
        self.item_failures = counter("mirror_item_failures", "Items that failed in a pass.")
        self.retries = counter("mirror_retries", "Calls to the target that failed transiently and were retried.")
        self.passes = counter(
            "mirror_passes", "Passes over the target, by kind and result.", ("target", "kind", "result")
        )
        self.watcher_events = Counter(
            "mirror_watcher_events", "Settled source changes the watcher handed on.", registry=self.registry
        )
        self.transfer_seconds = Histogram(
            "mirror_transfer_duration_seconds",
            "Time to send one file (retries included).",
            ("target",),
            buckets=TRANSFER_BUCKETS,
            registry=self.registry,
        )
        self.pass_seconds = Histogram(
            "mirror_pass_duration_seconds",
            "Time of one pass over a target.",
            ("target",),
            buckets=PASS_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_IndexCollector(self))

    # -- wiring ---------------------------------------------------------------------
    def attach(self, mirror: Mirror) -> None:
        """Read this mirror's indexes at every scrape (its targets' gauges). A target
        named as one of another open mirror attached here is refused: their series would
        carry the same labels, and Prometheus keeps one of them (a failing target's
        ``mirror_in_sync 0`` hidden behind a namesake's 1)."""
        with self._lock:
            if mirror in self._mirrors:
                return
            for other in self._mirrors:
                # a closed mirror (one before a reload) has no index open, and no series
                taken = {r.name for r in other.runners if r.index is not None}
                if clash := next((r.name for r in mirror.runners if r.name in taken), None):
                    raise ConfigError(
                        f"metrics: target {clash!r} of {mirror.config.source} has the name of a target of "
                        f"{other.config.source}, attached before; "
                        "give each target of one api.Metrics a name of its own"
                    )
            self._mirrors.append(mirror)
        per_target = (
            self.uploads,
            self.uploaded_bytes,
            self.moves,
            self.deletes,
            self.item_failures,
            self.retries,
            self.transfer_seconds,
            self.pass_seconds,
        )
        for runner in mirror.runners:
            for family in per_target:
                family.labels(runner.name)  # a series at 0 from the start, not after the first event

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP endpoint in a thread; the port it listens on."""
        from prometheus_client import start_http_server

        try:
            server, _thread = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            raise _refused(exc, host, port) from None
        self._server = server
        self.port = int(server.server_address[1])
        log.info("metrics at http://%s:%d/metrics", _shown(host), self.port)
        return self.port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- observer hooks ------------------------------------------------------------------
    def on_report(self, report: Report) -> None:
        t = report.target
        self.moves.labels(t).inc(report.moved)
        self.deletes.labels(t).inc(report.deleted)
        self.item_failures.labels(t).inc(len(report.failed))
        result = "ok" if report.ok else "failed" if report.error else "partial"
        self.passes.labels(t, report.kind, result).inc()
        self.pass_seconds.labels(t).observe(report.seconds)

    def on_retry(self, target: str, error: str) -> None:
        self.retries.labels(target).inc()

    def on_changes(self, count: int) -> None:
        self.watcher_events.inc(count)

    def on_transfer(self, target: str, size: int, seconds: float) -> None:
        self.transfer_seconds.labels(target).observe(seconds)

    def on_sent(self, target: str, files: int, size: int) -> None:
        # counted as they land: counted from the pass's report, a first copy of 100,000
        # files showed none sent until its end, graphed as stalled
        self.uploads.labels(target).inc(files)
        self.uploaded_bytes.labels(target).inc(size)


def check_free(host: str, port: int) -> None:
    """Raise ConfigError where :meth:`Metrics.serve` could not listen at ``host:port``: a
    reload checks an edited address with it, as the start after it cannot go back."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the endpoint's server does
            probe.bind(address)
    except OSError as exc:
        raise _refused(exc, host, port) from None


def _shown(host: str) -> str:
    return f"[{host}]" if ":" in host else host  # an IPv6 address, as a URL writes it


def _refused(exc: OSError, host: str, port: int) -> ConfigError:
    """Why the endpoint cannot listen there, and what to do about it."""
    why = exc.strerror or str(exc)
    if isinstance(exc, socket.gaierror):
        fix = f"cannot resolve {host} ({why}); give an address of this machine such as 127.0.0.1"
    elif exc.errno == errno.EADDRNOTAVAIL:
        fix = f"{host} is not an address of this machine; give one of its own such as 127.0.0.1"
    elif exc.errno == errno.EACCES:
        fix = f"cannot listen ({why}); a port below 1024 needs root: choose one above"
    else:
        fix = f"cannot listen ({why}); choose a free port"
    return ConfigError(f"metrics address {_shown(host)}:{port}: {fix}")


class _IndexCollector:
    """Gauges read from each attached mirror's indexes when Prometheus scrapes."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []  # the metric names depend on no target; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        files = GaugeMetricFamily("mirror_files", "Files mirror manages on the target.", labels=["target"])
        size = GaugeMetricFamily("mirror_bytes", "Bytes mirror manages on the target.", labels=["target"])
        pending = GaugeMetricFamily("mirror_pending", "Changes not on the target yet.", labels=["target"])
        failed = GaugeMetricFamily(
            "mirror_failed_items", "Items that failed and will be tried again.", labels=["target"]
        )
        last = GaugeMetricFamily(
            "mirror_last_complete_sync_timestamp_seconds",
            "When the target was last completely in sync (Unix time; 0 when recorded with the clock ahead).",
            labels=["target"],
        )
        state = GaugeMetricFamily(
            "mirror_target_state", "1 for the target's current state.", labels=["target", "state"]
        )
        in_sync = GaugeMetricFamily(
            "mirror_in_sync",
            "1 when mirror status has nothing for anyone to look into for the target (its exit 0), "
            "else 0: an error, failed items, withheld deletions, files left out, no complete sync yet.",
            labels=["target"],
        )
        with self.metrics._lock:
            mirrors = list(self.metrics._mirrors)
        for mirror in mirrors:
            for runner in mirror.runners:
                index = runner.index
                if index is None:
                    continue
                try:
                    # one read of the index for every gauge, as mirror status reads it
                    told = of_index(index, runner.index_file, running=True)
                    files.add_metric([runner.name], told.files)
                    size.add_metric([runner.name], told.bytes)
                    pending.add_metric([runner.name], float(told.pending))
                    failed.add_metric([runner.name], len(told.failures))
                    if (stamp := told.last_complete_sync) is not None:
                        # recorded with the clock ahead, it tells no age: 0 has the usual age
                        # alert fire, as mirror status flags it
                        last.add_metric([runner.name], 0.0 if recorded_ahead(stamp) else stamp)
                    for s in STATES:
                        state.add_metric([runner.name, s], 1.0 if s == told.state else 0.0)
                    in_sync.add_metric([runner.name], 1.0 if told.in_sync else 0.0)
                except Exception:  # a closing index must not break the scrape of the others
                    log.debug("metrics: cannot read the index of %s", runner.name, exc_info=True)
        yield from (files, size, pending, failed, last, state, in_sync)
