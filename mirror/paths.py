"""Rules for the relative paths that cross the engine: what a safe target path is."""

from __future__ import annotations

import re

from mirror.errors import ItemError

#: empty, absolute, an empty / "." / ".." part, or a NUL anywhere
_UNSAFE = re.compile(r"\A\Z|\A/|//|/\Z|(?:\A|/)\.{1,2}(?:/|\Z)|\x00")


def check_relative(rel: str) -> str:
    """Return ``rel`` if it is a safe root-relative path, else raise ItemError.

    Safe: not empty, not absolute, ``/``-separated parts that are neither empty,
    ``.`` nor ``..``, and no NUL. Every path that reaches a target passes here.
    """
    if _UNSAFE.search(rel):
        raise ItemError(f"unsafe target path {rel!r}")
    return rel


def parent(rel: str) -> str:
    """The folder part of a relative path (``""`` for the root)."""
    head, _, _ = rel.rpartition("/")
    return head


def ancestors(rel: str) -> list[str]:
    """Every folder above ``rel``, nearest first, without the root."""
    result = []
    cut = rel.rfind("/")
    while cut > 0:
        result.append(rel[:cut])
        cut = rel.rfind("/", 0, cut)
    return result
