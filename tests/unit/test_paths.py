"""The one gate every target path passes: check_relative."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mirror.errors import ItemError
from mirror.paths import check_relative

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
