"""Fixtures every test may use; server fixtures live in tests/servers/ (one module each).

Hypothesis runs without its per-example deadline (200 ms): on a loaded machine (CI runs
four workers on two cores) an example may take longer, and the test would fail on time
alone; speed is for bench/, never a test. A failure prints the blob
that replays it (``@reproduce_failure``), as the seed differs from run to run.
"""

import compileall
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("mirror", deadline=None, print_blob=True)
settings.load_profile("mirror")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile mirror once: the tests start it in a subprocess over a thousand times, and
    where PYTHONDONTWRITEBYTECODE is set (as on the CI machine) each start would compile
    its 14,000 lines anew (0.58 s a start there, 0.33 s compiled)."""
    root = Path(__file__).parent.parent
    for package in ("mirror", "backends"):
        compileall.compile_dir(root / package, quiet=1)


pytest_plugins = [
    "tests.line_numbers",
    "tests.servers.local",
    "tests.servers.dropbox",
    "tests.servers.sshd",
    "tests.servers.webdav",
    "tests.servers.ftp",
    "tests.servers.s3",
    "tests.servers.gdrive",
    "tests.servers.onedrive",
]
