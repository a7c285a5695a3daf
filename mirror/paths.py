"""Rules for the relative paths that cross the engine: what a safe target path is."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from mirror.errors import ItemError

#: the folder on a target that holds what mirror set aside or trashed (never mirrored from
#: the source: a source restored from a target brings it along)
TRASH_DIR = ".mirror-trash"


def temp_name(dst: str, token: str) -> str:
    """The hidden name a file is uploaded under before being renamed to ``dst`` (and a
    copy set aside under while a file takes its place): listed, it is removed."""
    head, _, _ = dst.rpartition("/")
    name = f".~mirror-{token}.tmp"
    return f"{head}/{name}" if head else name


#: how long a temp name is: its token is 12 hex digits (mirror.execute)
TEMP_NAME_BYTES = len(temp_name("", "0" * 12))
TEMP_RE = re.compile(r"^\.~mirror-[0-9a-f]{12}\.tmp$")


def is_temp(path: str) -> bool:
    """Whether a target path is one of mirror's upload temp files (:func:`temp_name`)."""
    return TEMP_RE.match(path.rpartition("/")[2]) is not None


#: a "." or ".." part
_DOT_PART = re.compile(r"(?:\A|/)\.{1,2}(?:/|\Z)")


def check_relative(rel: str) -> str:
    """Return ``rel`` if it is a safe root-relative path, else raise ItemError.

    Safe: not empty, not absolute, ``/``-separated parts that are neither empty,
    ``.`` nor ``..``, and no NUL. Every path that reaches a target passes here.
    """
    # plain string tests first: this runs for every file of every pass
    if (
        not rel
        or rel[0] == "/"
        or rel[-1] == "/"
        or "//" in rel
        or "\x00" in rel
        or ((rel[0] == "." or "/." in rel) and _DOT_PART.search(rel))
    ):
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


#: the longest file name most filesystems take, in bytes of UTF-8
NAME_BYTES = 255


def numbered(rel: str, n: int) -> str:
    """``rel`` with `` (n)`` before its extension: ``a/inv.pdf`` -> ``a/inv (2).pdf``;
    the stem is cut short where the name would grow past :data:`NAME_BYTES`."""
    folder, slash, name = rel.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not stem:  # no extension, or a name that starts with its only dot (".env")
        stem, dot, ext = name, "", ""
    tail = f" ({n}){dot}{ext}"
    if len(tail.encode()) >= NAME_BYTES:  # an "extension" that long is part of the name
        stem, tail = name, f" ({n})"
    room = NAME_BYTES - len(tail.encode())
    if len(stem.encode()) > room:
        stem = stem.encode()[:room].decode(errors="ignore")
    return f"{folder}{slash}{stem}{tail}"


def numbered_top(rel: str, n: int) -> str:
    """``rel`` with its top folder numbered (``a/b.txt`` -> ``a (2)/b.txt``), or the file
    itself if it has none (:func:`numbered`)."""
    top, slash, rest = rel.partition("/")
    return f"{top} ({n}){slash}{rest}" if slash else numbered(rel, n)


def path_key(case_sensitive: bool) -> Callable[[str], str]:
    """How a target tells paths apart: as they are, or as the services that ignore case
    do, which also take a name's Unicode spellings as one (Dropbox and OneDrive: a name
    made on a Mac, decomposed, and its composed form; two such source files landed on
    one item, the second replacing the first)."""
    return _as_is if case_sensitive else _folded


def _as_is(rel: str) -> str:
    return rel


def _folded(rel: str) -> str:
    # lower(), not casefold(): that takes 'ß' for 'ss' (and 'ﬁ' for 'fi'), where these
    # services keep 'Straße.pdf' and 'Strasse.pdf' apart
    return unicodedata.normalize("NFC", rel).lower()


def in_trash(rel: str) -> bool:
    """Whether a root-relative path lies in :data:`TRASH_DIR` (or is it)."""
    return rel == TRASH_DIR or rel.startswith(f"{TRASH_DIR}/")
