"""The one error hierarchy of mirror: what went wrong, and how the engine must react.

Library exceptions are converted into these at the boundary (a backend's ``classify``),
so the engine only ever decides between: retry (transient), record and go on (per item),
stop this target (fatal), or stop before starting (configuration).
"""

from __future__ import annotations

from mirror.redact import hide_logins


class MirrorError(Exception):
    """Base of every error mirror raises on purpose; its message is meant for users, and
    for the state folder, status and alerts: a login in a URL it quotes is masked (a
    WebDAV preset's ``base_url``, as a 401 names it), as only the log scrubs the rest."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(hide_logins(a) if isinstance(a, str) else a for a in args))


class ConfigError(MirrorError):
    """Bad flags, config file, URL or missing secret: nothing was started (exit 2)."""


class TargetBusy(ConfigError):
    """Another mirror mirrors the target now: it holds the target's lock. A watcher waits
    for a one-off run there (cron's), as it waits for any holder when started again on
    SIGHUP (a one-off run took the target in between); a one-off run leaves the target to
    the one-off run before it."""

    def __init__(self, what: str, advice: str, target: str | None = None, ends: bool = False) -> None:
        super().__init__(f"{what}; {advice}")
        #: who mirrors what, without the advice
        self.what = what
        #: the config's target taken (by a mirror with this state folder), if one is
        self.target = target
        #: the holder is a one-off run, or starting: it lets go by itself
        self.ends = ends


class TransientError(MirrorError):
    """Worth retrying: connection reset, timeout, 429/5xx. ``retry_after`` in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TargetDown(TransientError):
    """Too many items in a row failed with transient errors: the target is unreachable."""


class RootGone(TargetDown):
    """The folder the target writes into went while mirror was filling it (deleted, or its
    disk or share unmounted; a bucket deleted): the target is unreachable, whatever item
    found it out. Once it is back, the runner asks whether it came back empty."""


class ItemError(MirrorError):
    """One file cannot be mirrored (refused name, unreadable file): record it, go on."""


class Refused(ItemError):
    """The target refused to write one item (permission denied, HTTP 403). Its own
    failure, unless the target's folder refuses writes too: when every upload of a pass
    is refused, the executor asks, and then the target fails (FatalError)."""


class FatalError(MirrorError):
    """The target cannot be used any more (auth revoked, quota full, host key changed)."""


class TargetFull(FatalError):
    """The target has no room left: a full disk, an account or quota used up. Space is
    freed within minutes as often as not, so it is tried again sooner than other fatal
    errors, and it is no mistake in the config to exit for."""


class StateError(MirrorError):
    """mirror's own state (a target's index in the state folder) cannot be read or
    written: a full or read-only disk. Nothing is wrong with the target; the pass stops
    and is tried again, listing the target to recover what the index lost."""


class GuardRefused(MirrorError):
    """A safety guard refused deletions (empty source, too many deletes)."""
