"""Files only their owner may read: tokens and passwords on disk."""

from __future__ import annotations

import json
import os
import pwd
import stat
import tempfile
from pathlib import Path
from typing import Any

from mirror.errors import ConfigError


def write_private(path: str | Path, text: str) -> None:
    """Replace ``path`` atomically with ``text``, mode 0600, in a folder made 0700."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_private(path: str | Path, what: str, hint: str = "") -> str:
    """The text of a secret file; ConfigError if it is missing, unreadable or not private
    (readable by others, or owned by another user than the one mirror runs as).

    ``what`` names the file for the message ("Dropbox token file"); ``hint`` says how to
    create it when it is missing.
    """
    path = Path(path).expanduser()
    try:
        found = os.stat(path)
        if stat.S_IMODE(found.st_mode) & 0o077:
            raise ConfigError(f"{what} {path} is readable by others; run: chmod 600 {path}")
        if found.st_uid != os.geteuid():
            # whoever owns a token picks the account the backup goes to (as ssh refuses a
            # key of another user's); root reads any file, so the mode alone let one in
            me = user_name(os.geteuid())
            raise ConfigError(
                f"{what} {path} is owned by another user ({user_name(found.st_uid)}), not {me} that mirror "
                f"runs as; if it is yours, run: chown {me} {path}"
            )
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist{'; ' + hint if hint else ''}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path} cannot be read ({type(exc).__name__})") from None


def user_name(uid: int) -> str:
    """The login name of ``uid``, or the number where it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def read_private_json(path: str | Path, what: str, hint: str = "") -> dict[str, Any]:
    """The JSON object in a secret file (:func:`read_private`); ConfigError if it is none."""
    path = Path(path).expanduser()
    try:
        data = json.loads(read_private(path, what, hint))
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} is not valid JSON{'; ' + hint if hint else ''}")
    return data
