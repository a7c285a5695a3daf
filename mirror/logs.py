"""Log output: readable lines for people, JSON lines for services, secrets scrubbed."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable

from mirror.redact import SecretFilter

#: what must not reach a log raw: file names may hold it, and a name could forge log lines
#: (C0, DEL, C1 with its NEL, the line and paragraph separators) or pass for another (bidi
#: controls show 'invoice\u202efdp.exe' as 'invoiceexe.pdf'). One compiled regex, as
#: every name of a tree may pass through it.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    c = match[0]
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}")


def printable(text: str) -> str:
    """``text`` with control characters escaped, so one message stays one line and shows
    what it holds, and undecodable bytes shown (:func:`with_bytes_shown`)."""
    return _CONTROL.sub(_escaped, with_bytes_shown(text))


def with_bytes_shown(text: str) -> str:
    """The bytes of a name that is not valid UTF-8 as ``\\xfc``: Python keeps them as
    surrogates, which no terminal can print and JSON cannot carry."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class TextFormatter(logging.Formatter):
    def __init__(self, tracebacks: bool = False) -> None:
        super().__init__()
        #: -v: a reader who asked for details gets where an error came from
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        target = getattr(record, "target", None)
        where = f" [{target}]" if target else ""
        line = f"{stamp} {record.levelname.lower():7s}{where} {printable(record.getMessage())}"
        if record.exc_text and self.tracebacks:
            line += "\n" + record.exc_text
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "message": with_bytes_shown(record.getMessage()),
        }
        target = getattr(record, "target", None)
        if target:
            data["target"] = target
        if record.exc_text:
            data["traceback"] = record.exc_text  # one field: the line stays one JSON line
        # json escapes C0 controls only; the others, escaped the same way, read back as sent
        return _CONTROL.sub(lambda m: f"\\u{ord(m[0]):04x}", json.dumps(data, ensure_ascii=False))


def setup(verbosity: int, fmt: str = "text", secrets: Iterable[str] = ()) -> SecretFilter:
    """Configure the ``mirror`` logger; -v (1) is debug, -q (-1) warnings only."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(tracebacks=verbosity > 0))
    scrubber = SecretFilter(secrets)
    handler.addFilter(scrubber)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    root.setLevel(logging.WARNING)
    logging.getLogger("mirror").setLevel(level)
    # paramiko logs each lost connection as an error with its traceback, the Google
    # client warns of each 403 it meets ('Encountered 403 Forbidden with reason
    # "storageQuotaExceeded"') and the Dropbox SDK of an expired token it cannot renew,
    # with no target named; their backends tell the same failure in mirror's own words
    for library in ("paramiko", "googleapiclient.http", "dropbox"):
        logging.getLogger(library).setLevel(logging.CRITICAL if verbosity <= 0 else logging.NOTSET)
    return scrubber


def as_json() -> bool:
    """Whether log lines go out as JSON (--log-format json), which a one-line error then
    follows: a log shipper reading a service's output takes every line as JSON."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)
