"""Which source files are mirrored: default junk names plus gitignore-style patterns."""

from __future__ import annotations

import fnmatch
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from mirror.paths import TRASH_DIR

#: files that applications leave behind while working, or that no target wants
JUNK_PATTERNS = (
    "thumbs.db",
    "desktop.ini",
    ".ds_store",
    "~$*",
    ".~lock.*#",
    "*.tmp",
    "*.part",
    "*.crdownload",
)
_JUNK_RE = re.compile("|".join(fnmatch.translate(p) for p in JUNK_PATTERNS))


class Filter:
    """Decides for a source-relative path whether it takes part in the mirror."""

    def __init__(self, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> None:
        # patterns and names compared in one Unicode form: "Entwürfe/" typed in a config
        # (composed) missed the folder a Mac had named (decomposed), and the drafts went out
        include, exclude = [_nfc(p) for p in include], [_nfc(p) for p in exclude]
        # pathspec is only loaded (and consulted) when there are patterns
        self._include = _spec(include) if include else None
        self._exclude = _spec(exclude) if exclude else None
        # a '!' pattern can take a file back below a folder the others exclude
        # ("*", "!*.pdf": PDFs in every subfolder), as wants_file does
        self._reincludes = any(pattern.startswith("!") for pattern in exclude)

    @property
    def narrows(self) -> bool:
        """True when patterns narrow the set beyond the default junk filter."""
        return self._include is not None or self._exclude is not None

    def wants_dir(self, rel: str) -> bool:
        """False when a folder is excluded as a whole (no file below it is wanted), and
        for a copy of a target's trash folder (mirror's own, on the target) in the source.
        Never False where a file below could be wanted: watch mode judged files by their
        folders, and deleted the copies of the PDFs that "*", "!*.pdf" mirrors."""
        if rel == TRASH_DIR:
            return False
        return self._exclude is None or self._reincludes or not self._exclude.match_file(_nfc(rel) + "/")

    def wants_file(self, rel: str) -> bool:
        return not is_junk(rel.rpartition("/")[2]) and self.wants_by_pattern(rel)

    def wants_by_pattern(self, rel: str) -> bool:
        """The include/exclude patterns alone (the scan tests junk names itself)."""
        if self._exclude is None and self._include is None:
            return True
        rel = _nfc(rel)
        if self._exclude is not None and self._exclude.match_file(rel):
            return False
        return self._include is None or bool(self._include.match_file(rel))


def is_junk(name: str) -> bool:
    """A name applications leave behind while working (JUNK_PATTERNS, any case)."""
    return _JUNK_RE.match(name.lower()) is not None


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _spec(patterns: list[str]) -> Any:
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(patterns)


def check_patterns(patterns: Iterable[str]) -> None:
    """Raise ValueError naming the first pattern that is no gitignore pattern: found as the
    first file was filtered, it was an internal error that asked to be reported."""
    for pattern in patterns:
        body = rest = pattern.removeprefix("!")
        while rest.startswith(("./", "../")):
            rest = rest.partition("/")[2]
        if rest != body:
            # gitignore matches no path so: './private/' let the private folder go out
            raise ValueError(
                f"the pattern {pattern!r} matches nothing: patterns are relative to the source folder; "
                f"write {pattern[: len(pattern) - len(body)]}/{rest} for a path at its top"
            )
        if pattern.startswith("!") and not pattern[1:].strip():
            raise ValueError(
                f"the pattern {pattern!r} takes back nothing; write what follows the '!', as in '!keep.pdf'"
            )
        try:
            _spec([pattern])
        except ValueError:
            raise ValueError(
                f"the pattern {pattern!r} is not a gitignore pattern; use / between folders, and a "
                "backslash only before a character it makes literal (\\#, \\!, \\*)"
            ) from None
