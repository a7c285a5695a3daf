"""Layouts: every accepted template maps every source path inside the target root."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirror.errors import ItemError
from mirror.layout import FIELDS, NAMED, Layout, date_of
from mirror.paths import check_relative

NAME_CHARS = st.characters(codec="utf-8", exclude_characters="/\x00", exclude_categories=("Cs",))
names = st.text(NAME_CHARS, min_size=1, max_size=12).filter(lambda n: n not in (".", ".."))
rel_paths = st.lists(names, min_size=1, max_size=4).map("/".join)
dates = st.dates(min_value=dt.date(1980, 1, 1), max_value=dt.date(2100, 12, 31))
literal = st.text(st.sampled_from("ab-_/. x"), max_size=4)
templates = st.lists(
    st.one_of(literal, st.sampled_from([f"{{{f}}}" for f in FIELDS])), min_size=1, max_size=6
).map("".join)


@given(rel_paths, dates, st.sampled_from(sorted(NAMED)))
def test_named_layouts_keep_the_name_and_stay_inside(rel: str, date: dt.date, name: str) -> None:
    out = Layout.parse(name).target_path(rel, date)
    assert check_relative(out) == out
    assert out.rpartition("/")[2] == rel.rpartition("/")[2]


@given(rel_paths, dates)
def test_tree_is_identity_and_by_month_prefixes_the_date(rel: str, date: dt.date) -> None:
    assert Layout.parse("tree").target_path(rel, date) == rel
    assert Layout.parse("by-month").target_path(rel, date) == f"{date.year:04d}/{date.month:02d}/{rel}"


@given(templates, rel_paths, dates)
def test_any_accepted_template_never_escapes(template: str, rel: str, date: dt.date) -> None:
    try:
        layout = Layout.parse(template)
    except ValueError:
        return
    try:
        out = layout.target_path(rel, date)
    except ItemError:
        return
    assert out and not out.startswith("/")
    assert all(part not in ("", ".", "..") for part in out.split("/"))


@pytest.mark.parametrize(
    "template",
    [
        "../{path}",
        "/{path}",
        "{year}/../{name}",
        "{year}",
        "{nope}/{name}",
        "{name:>10}",
        "{path!r}",
        "{",
        ".mirror-trash/{path}",
    ],
)
def test_bad_templates_are_refused_with_a_reason(template: str) -> None:
    with pytest.raises(ValueError, match=r"layout|field|template"):
        Layout.parse(template)


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("{year}.{month}/{name}", "2026.02/Invoice 7.pdf"),
        ("{stem}.{year}{suffix}", "Invoice 7.2026.pdf"),
        ("{year}/{month}.{day}/{name}", "2026/02.03/Invoice 7.pdf"),
        ("{stem}..{suffix}", "Invoice 7...pdf"),
    ],
)
def test_a_dot_between_fields_is_no_dot_folder(template: str, path: str) -> None:
    """The check joined the template's literal parts, so '{year}.{month}' read as a '.'
    folder and the template was refused, 'must stay inside the target (no '..')'."""
    assert Layout.parse(template).target_path("a/Invoice 7.pdf", dt.date(2026, 2, 3)) == path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("by-yaer", "unknown layout 'by-yaer'; did you mean 'by-year'?"),
        ("Flat", "unknown layout 'Flat'; did you mean 'flat'?"),
        ("tree ", "unknown layout 'tree '; did you mean 'tree'?"),
        ("invoices", "unknown layout 'invoices'; use tree, flat, by-year, by-month, or a template"),
    ],
)
def test_a_mistyped_layout_name_is_told_as_one(text: str, message: str) -> None:
    """--layout by-yaer said 'must contain {path}, {name} or {stem}', as if it were a template."""
    with pytest.raises(ValueError, match=re.escape(message)):
        Layout.parse(text)


def test_template_fields() -> None:
    layout = Layout.parse("{year}/{month}/{day}/{parent}/{stem}-copy{suffix}")
    assert layout.target_path("a/b/Invoice 7.pdf", dt.date(2026, 2, 3)) == "2026/02/03/a/b/Invoice 7-copy.pdf"
    assert layout.target_path("top.txt", dt.date(2026, 2, 3)) == "2026/02/03/top-copy.txt"


def test_a_name_that_would_become_dot_dot_is_an_item_error() -> None:
    layout = Layout.parse("{stem}")
    with pytest.raises(ItemError):
        layout.target_path("dir/...", dt.date(2026, 1, 1))


@pytest.mark.parametrize(
    ("layout", "path", "date"),
    [
        ("by-year", "2024/c/inv.pdf", dt.date(2024, 1, 1)),
        ("by-month", "2024/05/c/inv.pdf", dt.date(2024, 5, 1)),
        ("{year}/{stem}-{month}{day}{suffix}", "2024/inv-0517.pdf", dt.date(2024, 5, 17)),
    ],
)
def test_a_dated_layout_finds_the_date_a_target_path_was_given(layout: str, path: str, date: dt.date) -> None:
    lay = Layout.parse(layout)
    found = lay.dates_of([path, "2024/13/c/inv.pdf", "notes.txt"])
    assert found[lay.undated("c/inv.pdf")] == [(date, path)]
    assert lay.target_path("c/inv.pdf", date) == path
    assert not Layout.parse("tree").dated and lay.dated


def test_the_last_instant_of_a_year_is_dated_in_that_year() -> None:
    last = int(dt.datetime(2024, 12, 31, 23, 59, 59).timestamp()) * 1_000_000_000 + 999_999_700
    assert date_of(last) == dt.date(2024, 12, 31)
    assert Layout.parse("by-year").target_path("inv.pdf", date_of(last)) == "2024/inv.pdf"
