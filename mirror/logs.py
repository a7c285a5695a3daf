"""Log output: readable lines for people, JSON lines for services, secrets scrubbed."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable

from mirror.redact import SecretFilter

#: control characters are legal in file names; printed raw, a name could forge log lines
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(32), 127]} | {10: "\\n", 13: "\\r", 9: "\\t"}


def printable(text: str) -> str:
    """``text`` with control characters escaped, so one message stays one line, and
    undecodable bytes shown (:func:`with_bytes_shown`)."""
    return with_bytes_shown(text).translate(_CONTROL)


def with_bytes_shown(text: str) -> str:
    """The bytes of a name that is not valid UTF-8 as ``\\xfc``: Python keeps them as
    surrogates, which no terminal can print and JSON cannot carry."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        target = getattr(record, "target", None)
        where = f" [{target}]" if target else ""
        line = f"{stamp} {record.levelname.lower():7s}{where} {printable(record.getMessage())}"
        if record.exc_info and record.levelno <= logging.DEBUG:
            line += "\n" + self.formatException(record.exc_info)
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
        return json.dumps(data, ensure_ascii=False)


def setup(verbosity: int, fmt: str = "text", secrets: Iterable[str] = ()) -> SecretFilter:
    """Configure the ``mirror`` logger; -v (1) is debug, -q (-1) warnings only."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    scrubber = SecretFilter(secrets)
    handler.addFilter(scrubber)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    root.setLevel(logging.WARNING)
    logging.getLogger("mirror").setLevel(level)
    # paramiko logs each lost connection as an error with its traceback, and with no
    # target named; the SFTP backend turns the same failure into mirror's own message
    logging.getLogger("paramiko").setLevel(logging.CRITICAL if verbosity <= 0 else logging.NOTSET)
    if verbosity > 1:
        root.setLevel(logging.DEBUG)
    return scrubber


def as_json() -> bool:
    """Whether log lines go out as JSON (--log-format json), which a one-line error then
    follows: a log shipper reading a service's output takes every line as JSON."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)
