"""Keeping secrets out of everything mirror prints or stores."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

#: ``scheme://user:secret@host``. A secret typed raw may hold '/' and '@', so it runs to
#: the last '@' of the address (masking a name with '@' after it too, rather than leaving
#: part of a secret); but ``host:443/path/alice@example.com`` is a port and a path, so
#: digits then '/' never start a secret
_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/@:\s]*):(?!\d+/)[^\s\"'`]*@")
#: ``user:secret@host`` without a scheme, as libraries echo the parts of a URL (botocore's
#: 'Invalid bucket name "KEY:SECRET@bucket"'); only a plausible login (a secret of 4 or
#: more characters, no spaces, quotes or slashes), so a name like 10:30@office.pdf stays
_LOGIN = re.compile(r"(?P<user>[\w.+-]+):[^\s/@\"'`]{4,}@")


def redact_url(url: str) -> str:
    """``sftp://user:secret@host/x`` -> ``sftp://user:***@host/x``."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


def has_password(url: str) -> bool:
    """Whether ``url`` carries a ``user:secret@`` login, '/' in the secret or not."""
    return redact_url(url) != url


def hide_logins(text: str) -> str:
    """``text`` with the secret of each ``user:secret@`` login in it masked."""
    text = redact_url(text)
    if "@" in text:  # in few messages: the search costs more than the rest of the scrub
        text = _LOGIN.sub(lambda m: f"{m['user']}:***@", text)
    return text


class SecretFilter(logging.Filter):
    """Replaces known secret values in every log record (defence in depth)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: set[str] = {s for s in secrets if len(s) >= 4}

    def add(self, secrets: Iterable[str]) -> None:
        self.secrets.update(s for s in secrets if len(s) >= 4)

    def scrub(self, text: str) -> str:
        text = hide_logins(text)
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.scrub(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            # a traceback quotes messages, and those can hold what a message may not
            record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
        return True
