"""Layouts: where a source file lands on a target (pure; no I/O).

A layout is a template over a few fields of the source path and of the file's date
(its mtime when first mirrored, remembered in the index so later edits never move it).
The named layouts are shorthands for templates. Whatever the names and the template, the
result is a safe relative path or an ItemError: never ``..``, absolute, or empty.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass

from mirror.errors import ItemError
from mirror.paths import TRASH_DIR, check_relative

NAMED = {
    "tree": "{path}",
    "flat": "{name}",
    "by-year": "{year}/{path}",
    "by-month": "{year}/{month}/{path}",
}
FIELDS = ("year", "month", "day", "path", "name", "stem", "suffix", "parent")
DATE_FIELDS = ("year", "month", "day")
#: stands for each date field in :meth:`Layout.undated`
_NO_DATE = "\x00"
#: a template must name the file somehow, or every file would land on the same name
NAMING_FIELDS = {"path", "name", "stem"}


@dataclass(frozen=True)
class Layout:
    """A checked layout template."""

    template: str

    @property
    def name(self) -> str:
        """The layout's name (``by-year``), or its template where it has none."""
        return next((name for name, template in NAMED.items() if template == self.template), self.template)

    @property
    def keeps_paths(self) -> bool:
        """Whether every file lands on its own source path (the ``tree`` layout)."""
        return self.template == "{path}"

    @classmethod
    def parse(cls, text: str) -> Layout:
        """Accept a layout name or a template; ValueError explains what is wrong."""
        template = NAMED.get(text, text)
        if template == text and "{" not in text:
            raise ValueError(_unknown_name(text))
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise ValueError(f"bad layout template {text!r}: {exc}") from None
        used = set()
        for _literal, field_name, spec, conversion in parsed:
            if field_name is None:
                continue
            if field_name not in FIELDS:
                raise ValueError(
                    f"unknown field {{{field_name}}} in layout {text!r}; "
                    f"use {', '.join('{' + f + '}' for f in FIELDS)} or one of {', '.join(NAMED)}"
                )
            if spec or conversion:
                raise ValueError(f"layout {text!r}: format specs and conversions are not supported")
            used.add(field_name)
        if not used & NAMING_FIELDS:
            raise ValueError(f"layout {text!r} must contain {{path}}, {{name}} or {{stem}}")
        literals = "".join(literal for literal, *_ in parsed)
        # each field stands for a name here: '{year}.{month}' is no '.' folder
        shape = "".join(literal + ("x" if field_name is not None else "") for literal, field_name, *_ in parsed)
        if template.startswith("/") or "\\" in literals or any(part in (".", "..") for part in shape.split("/")):
            raise ValueError(f"layout {text!r} must stay inside the target (no leading '/', no '..')")
        if template.split("/")[0] == TRASH_DIR:
            raise ValueError(f"layout {text!r} must not write into {TRASH_DIR}/, mirror's trash on the target")
        return cls(template)

    def target_path(self, rel: str, date: dt.date) -> str:
        """The target path of source file ``rel`` (``/``-separated) dated ``date``."""
        if self.keeps_paths:
            return check_relative(rel)
        result = self._format(rel, year=f"{date.year:04d}", month=f"{date.month:02d}", day=f"{date.day:02d}")
        # an empty {parent} must not leave a leading or doubled slash behind
        cleaned = "/".join(part for part in result.split("/") if part)
        try:
            return check_relative(cleaned)
        except ItemError:
            raise ItemError(f"layout {self.template!r} gives an unsafe path {result!r} for {rel!r}") from None

    @property
    def dated(self) -> bool:
        """Whether the layout puts a file's date in its path (``by-year``)."""
        return any(f"{{{field}}}" in self.template for field in DATE_FIELDS)

    def undated(self, rel: str) -> str:
        """The target path of ``rel`` with each date field masked: what
        :meth:`dates_of` keys the target paths of a dated layout by."""
        result = self._format(rel, **{field: _NO_DATE for field in DATE_FIELDS})
        return "/".join(part for part in result.split("/") if part)

    def _format(self, rel: str, **date: str) -> str:
        """The template filled for source file ``rel`` and the date fields ``date``."""
        parent, _, name = rel.rpartition("/")
        dot = name.rfind(".")
        stem, suffix = (name[:dot], name[dot:]) if dot > 0 else (name, "")
        return self.template.format(path=rel, name=name, stem=stem, suffix=suffix, parent=parent, **date)

    def dates_of(self, paths: Iterable[str]) -> dict[str, list[tuple[dt.date, str]]]:
        """The ``paths`` this layout can give, by :meth:`undated` path: (date, path) of
        each, the date's fields the template does not name taken as 1."""
        parts: list[str] = []
        dated: list[str | None] = []  # per group: the date field it holds, or None
        for literal, field_name, _, _ in string.Formatter().parse(self.template):
            parts.append(re.escape(literal))
            if field_name is not None:
                parts.append(
                    r"(\d{4})" if field_name == "year" else r"(\d{2})" if field_name in DATE_FIELDS else "(.+?)"
                )
                dated.append(field_name if field_name in DATE_FIELDS else None)
        pattern = re.compile("".join(parts))
        found: dict[str, list[tuple[dt.date, str]]] = {}
        for path in paths:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            values = {"year": 1, "month": 1, "day": 1}
            masked = list(path)
            for group, field in enumerate(dated, 1):
                if field is not None:
                    values[field] = int(match.group(group))
                    masked[match.start(group) : match.end(group)] = [_NO_DATE] + [""] * (
                        match.end(group) - match.start(group) - 1
                    )
            try:
                date = dt.date(values["year"], values["month"], values["day"])
            except ValueError:
                continue  # 2024/13/...: not a path this layout gives
            found.setdefault("".join(masked), []).append((date, path))
        return found


def date_of(mtime_ns: int) -> dt.date:
    """The local calendar date of an mtime, as a user sees it in a file manager."""
    # whole seconds: a float rounds to the microsecond, and 23:59:59.9999997 on New Year's
    # Eve went into the next year's folder
    date = dt.datetime.fromtimestamp(mtime_ns // 1_000_000_000).date()
    # a plan keeps one date per new file: a first copy of a million files shares a few
    # hundred objects instead of holding a million (32 MiB)
    return _DATES.setdefault(date, date)


_DATES: dict[dt.date, dt.date] = {}


def _unknown_name(text: str) -> str:
    """What to say of a layout that is neither a name nor a template (a typo, most often)."""
    close = difflib.get_close_matches(text.strip().lower(), NAMED, n=1)
    if close:
        return f"unknown layout {text!r}; did you mean {close[0]!r}?"
    return (
        f"unknown layout {text!r}; use {', '.join(NAMED)}, or a template of the fields "
        f"{' '.join('{' + f + '}' for f in FIELDS)} such as '{{year}}/{{path}}'"
    )
