"""The one gate every target path passes (check_relative), and the numbered names of trashed copies."""

from __future__ import annotations

import pytest
from hypothesis import example, given
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


# names that reach a target are valid UTF-8 (the scan refuses others): no lone surrogates
@given(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=255),
    st.integers(2, 10**6),
)
@example("a." + "e" * 252, 2)
def test_a_numbered_name_fits_where_its_original_did(name: str, n: int) -> None:
    """A 251-byte name trashed twice in a day needs ' (2)': the target refuses 257 bytes."""
    if len(name.encode()) > 255:
        return
    found = numbered(f"a/{name}", n)
    folder, _, numbered_name = found.partition("/")
    assert folder == "a" and len(numbered_name.encode()) <= 255
    assert f" ({n})" in numbered_name and numbered(f"a/{name}", n + 1) != found


def test_a_long_name_is_cut_short_at_a_whole_character() -> None:
    assert numbered("x" * 251 + ".pdf", 2) == "x" * 247 + " (2).pdf"
    assert numbered("ü" * 125 + ".pdf", 2) == "ü" * 123 + " (2).pdf"
    assert numbered("a." + "e" * 252, 2) == "a." + "e" * 249 + " (2)"
