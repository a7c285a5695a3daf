"""Content hashes computed locally the way a backend computes them on its side."""

from __future__ import annotations

import hashlib
from enum import Enum

CHUNK = 4 * 1024 * 1024
#: Dropbox hashes each 4 MiB block, then hashes the concatenated block digests
DROPBOX_BLOCK = 4 * 1024 * 1024


class HashKind(Enum):
    """Which content hash a backend reports, so the same one can be computed locally."""

    NONE = "none"
    MD5 = "md5"
    SHA1 = "sha1"
    SHA256 = "sha256"
    DROPBOX = "dropbox"
    QUICKXOR = "quickxor"


def file_hash(path: str, kind: HashKind) -> str | None:
    """Hex digest of the file at ``path`` in the scheme ``kind``; None for NONE/QUICKXOR.

    QUICKXOR is left to the backend that needs it (it overrides ``Driver.local_hash``).
    """
    if kind in (HashKind.MD5, HashKind.SHA1, HashKind.SHA256):
        digest = hashlib.new(kind.value)
        with open(path, "rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
        return digest.hexdigest()
    if kind is HashKind.DROPBOX:
        return dropbox_content_hash(path)
    return None


def dropbox_content_hash(path: str) -> str:
    """Dropbox's ``content_hash``: SHA-256 over the SHA-256 digests of 4 MiB blocks."""
    outer = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(DROPBOX_BLOCK):
            outer.update(hashlib.sha256(block).digest())
    return outer.hexdigest()
