"""The ``mirror`` command (and ``python -m mirror``): SIGHUP held off while it loads.

Loading the command takes half a second, more on a busy machine. A SIGHUP meanwhile
(``systemctl reload`` just after a start or a restart) ended mirror with status 129,
nothing logged, and the service was restarted 10 s later. Until the command is loaded,
and ``mirror run`` takes the signal (:class:`mirror.cli.Signals`), it is ignored: the
config that run reads next is the edited one anyway. Ctrl-C meanwhile stops it in one
line, as later, not with a traceback.
"""

from __future__ import annotations

import signal
import sys
from typing import NoReturn


def entry() -> NoReturn:
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        from mirror.cli import entry as command
    except KeyboardInterrupt:
        sys.stderr.write("mirror: error: interrupted\n")
        sys.exit(1)
    signal.signal(signal.SIGHUP, before)
    command()


if __name__ == "__main__":
    entry()
