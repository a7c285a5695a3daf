"""Fixtures every test may use; server fixtures live in tests/servers/ (one module each)."""

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
