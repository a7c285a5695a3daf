"""What ``mirror auth dropbox|gdrive|onedrive`` say when the login service cannot be reached.

The three SDKs talk through requests, which wraps the cause (no name resolution, a
refused connection, a timeout) two or three exceptions deep in urllib3's; the user
needs the host and that cause, not a traceback or the wrappers' text.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import click
import requests

NETWORK_ERRORS = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)


def unreachable(service: str, exc: requests.exceptions.RequestException, command: str) -> click.ClickException:
    """``cannot reach SERVICE at HOST (CAUSE); ...``: one line, with no request content
    (a Dropbox code travels in the body, which this never shows)."""
    url = exc.request.url if exc.request is not None else None
    host = urlsplit(url).hostname if isinstance(url, str) else None
    where = f" at {host}" if host else ""
    return click.ClickException(
        f"cannot reach {service}{where} ({_cause(exc)}); check the network connection (or proxy), "
        f"then run {command} again"
    )


def _cause(exc: BaseException) -> str:
    """The innermost reason: the OS's words where there are some ("Connection refused")."""
    seen: set[int] = set()
    current: BaseException | None = exc
    last = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        seen.add(id(current))
        last = current
        # urllib3's MaxRetryError keeps its cause in .reason, not in the exception chain
        reason = getattr(current, "reason", None)
        current = reason if isinstance(reason, BaseException) else (current.__cause__ or current.__context__)
    return " ".join(str(last).split()) or type(last).__name__
