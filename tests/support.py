"""Shared test vocabulary: how a server fixture describes the target it provides, watch
mode run in the test's own process, a source file saved again in place, and a log a
program keeps writing."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mirror import api
from mirror.driver import Driver


@dataclass(frozen=True)
class TargetSpec:
    """An empty target root on a running backend, as a user would configure it.

    ``url`` and ``options`` go into a ``[targets.NAME]`` table; ``env`` holds the
    environment variables the options refer to as ``${VAR}`` (secrets); ``presets`` are
    extra ``[backends.NAME]`` tables the URL may refer to.
    """

    backend: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)


@contextlib.contextmanager
def watching(cfg: api.Config, observers: Iterable[api.Observer] = ()) -> Iterator[None]:
    """``mirror run`` in watch mode, in this process (so that an error can be raised
    inside, or a clock set), stopped at the end."""
    with api.running(cfg, observers=observers) as m:
        thread = threading.Thread(target=m.run_forever, daemon=True)
        thread.start()
        try:
            yield
        finally:
            m.shutdown()
            thread.join(15)


@contextlib.contextmanager
def written_on(path: Path, every: float) -> Iterator[None]:
    """A line appended to ``path`` every ``every`` seconds while inside, as a program
    writes its log: a file that never settles."""
    done = threading.Event()

    def append() -> None:
        with open(path, "a") as out:
            while not done.wait(every):
                out.write("line\n")
                out.flush()

    writer = threading.Thread(target=append, daemon=True)
    writer.start()
    try:
        yield
    finally:
        done.set()
        writer.join(5)


def rewrite_in_place(path: Path) -> None:
    """Rewrite ``path`` in place, as a program saving it again does (same size, new bytes,
    a later time)."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.write(os.urandom(st.st_size))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def putting(driver: Driver, local: Path, rel: str, mtime_ns: int) -> tuple[threading.Thread, list[BaseException]]:
    """``driver.put`` started in a thread of its own: the thread, and what the put raised
    once it has ended (nothing if it went through)."""
    raised: list[BaseException] = []

    def put() -> None:
        try:
            driver.put(str(local), rel, mtime_ns)
        except BaseException as exc:
            raised.append(exc)

    worker = threading.Thread(target=put, daemon=True)
    worker.start()
    return worker, raised
