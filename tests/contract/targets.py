"""Backends the contract suite runs against: each name needs a fixture ``<name>_target``
(yielding a tests.support.TargetSpec with a fresh, empty root) in a plugin listed in
tests/conftest.py."""

BACKENDS = [
    "memory",
    "file",
    "dropbox",
    "gdrive",
    "onedrive",
    "sftp",
    "webdav",
    "s3",
    "ftp",
]
