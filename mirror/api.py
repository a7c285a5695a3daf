"""The embedding API: what a host program needs to mirror folders from inside itself.

The ``mirror`` command is built on exactly these names, so whatever it can do, a host
program can do too::

    from mirror import api

    cfg = api.load_config(Path("mirror.toml"))       # or api.Config(...) built in code
    with api.running(cfg, observers=[MyObserver()]) as m:
        reports = m.run_once()                       # one full pass per target
        # or: m.run_forever() until m.stop is set (m.shutdown() from another thread),
        # or until Ctrl-C in the main thread (its KeyboardInterrupt goes on to the host)
    for s in api.status(cfg):                        # also while another process runs it
        print(s.name, s.files, s.last_complete_sync, s.stale)

One :class:`Mirror` mirrors one source to its targets with its own threads; a host may
run several, each in its own thread, and share one :class:`Metrics` or :class:`Alerts`
per config between them (examples/embed.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from mirror.config import Config, TargetConfig, TargetSettings, ad_hoc
from mirror.config import check as check_config
from mirror.config import load as load_config
from mirror.engine import Mirror
from mirror.events import Observer, Report
from mirror.execute import RetryPolicy
from mirror.index_files import index_of, refused_take_over, state_dir
from mirror.target_place import TargetPlace

if TYPE_CHECKING:
    from mirror.alerts import Alerts
    from mirror.metrics import Metrics
    from mirror.status import TargetStatus

__all__ = [
    "Alerts",
    "Config",
    "Metrics",
    "Mirror",
    "Observer",
    "Report",
    "RetryPolicy",
    "TargetConfig",
    "TargetSettings",
    "TargetStatus",
    "ad_hoc",
    "load_config",
    "running",
    "status",
]


@contextmanager
def running(
    config: Config,
    *,
    observers: Iterable[Observer] = (),
    dry_run: bool = False,
    retry: RetryPolicy | None = None,
) -> Iterator[Mirror]:
    """An opened :class:`Mirror` (indexes locked, source checked); on exit it stops its
    threads and closes, recording a clean shutdown only when every target stopped in time."""
    mirror = Mirror(config, dry_run=dry_run, retry=retry, observers=observers)
    mirror.open()
    try:
        yield mirror
    finally:
        clean = mirror.shutdown()
        mirror.close(clean)


def __getattr__(name: str) -> Any:
    """Alerts, Metrics and TargetStatus load on first use: ``mirror run`` needs them only
    when configured, and every start would pay for their imports."""
    if name == "Alerts":
        from mirror.alerts import Alerts

        return Alerts
    if name == "Metrics":
        from mirror.metrics import Metrics

        return Metrics
    if name == "TargetStatus":
        from mirror.status import TargetStatus

        return TargetStatus
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def status(config: Config) -> list[TargetStatus]:
    """What ``mirror status -c`` shows for each target of ``config``, also those never run."""
    from mirror.redact import redact_url
    from mirror.status import RUNNING_ELSEWHERE, UNREAD, never_run, running_before, running_elsewhere
    from mirror.status import read as _read_status

    check_config(config)
    root = state_dir(config)
    result = []
    for target in config.targets:
        index = index_of(root, config.named_source, target)
        if not index.exists() and config.source_link is not None:
            # named after the folder the link leads to, by an older mirror that may be
            # running on it still: the first run through the link takes it over
            real = index_of(root, config.source, target)
            index = real if real.exists() else index
        where = TargetPlace(config, target, index)
        renamed = False
        if not index.exists() and len(same := where.indexes_of_same_place()) == 1:
            # the target renamed in the config, or its URL spelled anew: the index its next
            # run takes over, which a running mirror still writes under the old name
            index, renamed = same[0], True
        if index.exists():
            found = _read_status(index)
            if renamed or found.state in UNREAD:  # the config knows where it mirrors; the index is not read
                found = replace(found, name=target.name, url=redact_url(target.url), source=str(config.source))
            if renamed and (refused := refused_take_over(config, target, index)) is not None:
                # mirror run refuses the config, every target's with it: status said in sync
                found = replace(found, last_error=f"mirror run refuses this config: {refused}")
            result.append(found)
        else:
            found = never_run(target.name, redact_url(target.url), str(config.source), index)
            if where.claimed_by_a_process():
                found = replace(found, running=True, state=RUNNING_ELSEWHERE, last_error=running_elsewhere(root))
                if (writer := where.last_writer()) is not None:
                    # this state folder's own mirror, started with the config as it was before
                    # (another source, another target name): the edit, not a deleted folder
                    older = _read_status(writer)
                    found = replace(found, last_error=running_before(older), started=older.started)
            result.append(found)
    return result
