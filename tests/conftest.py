"""Fixtures every test may use; server fixtures live in tests/servers/ (one module each).

Hypothesis runs without its per-example deadline (200 ms): on a loaded machine (CI runs
four workers on two cores) an example may take longer, and the test would fail on time
alone; speed is for bench/, never a test. A failure prints the blob
that replays it (``@reproduce_failure``), as the seed differs from run to run.
"""

from hypothesis import settings

settings.register_profile("mirror", deadline=None, print_blob=True)
settings.load_profile("mirror")

pytest_plugins = [
    "tests.servers.local",
    "tests.servers.dropbox",
    "tests.servers.sshd",
    "tests.servers.webdav",
    "tests.servers.ftp",
    "tests.servers.s3",
    "tests.servers.gdrive",
    "tests.servers.onedrive",
]
