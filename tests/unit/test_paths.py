"""The one gate every target path passes (check_relative), and the numbered names of trashed copies."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirror.errors import ItemError
from mirror.paths import check_relative, numbered, numbered_top

paths = st.text(st.sampled_from(list("ab./\x00")), max_size=8)


def safe(rel: str) -> bool:
    """The definition, spelled out: no NUL, not absolute, no empty / "." / ".." part."""
    return bool(rel) and "\x00" not in rel and all(p not in ("", ".", "..") for p in rel.split("/"))


@given(paths)
def test_check_relative_accepts_exactly_the_safe_paths(rel: str) -> None:
    try:
        check_relative(rel)
    except ItemError:
        assert not safe(rel)
    else:
        assert safe(rel)


@pytest.mark.parametrize(
    ("rel", "numbered_"),
    [
        ("inv.pdf", "inv (2).pdf"),
        ("2026/03/inv.final.pdf", "2026/03/inv.final (2).pdf"),
        ("README", "README (2)"),
        ("a.b/c", "a.b/c (2)"),
        (".env", ".env (2)"),
    ],
)
def test_a_numbered_name_keeps_its_folder_and_extension(rel: str, numbered_: str) -> None:
    assert numbered(rel, 2) == numbered_


@pytest.mark.parametrize(
    ("rel", "numbered_"),
    [("a/b.txt", "a (3)/b.txt"), ("a/b/c.pdf", "a (3)/b/c.pdf"), ("inv.pdf", "inv (3).pdf"), ("a", "a (3)")],
)
def test_a_numbered_top_folder_keeps_the_path_below_it(rel: str, numbered_: str) -> None:
    assert numbered_top(rel, 3) == numbered_
