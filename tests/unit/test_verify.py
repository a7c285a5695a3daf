"""What ``mirror verify`` reports, from the source, the index and a target listing."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirror.driver import COARSER_TICKS_NS, Capabilities, RemoteEntry
from mirror.hashing import HashKind
from mirror.index import IndexEntry
from mirror.layout import Layout
from mirror.policy import DeletePolicy
from mirror.scan import LocalEntry, Skip
from mirror.verify import Difference, accounted_for, compare, compared, others

MTIME = 1_772_323_200 * 10**9


def differences(local: dict[str, int], held: dict[str, str], layout: str, caps: Capabilities) -> list[Difference]:
    """``local``: path -> size; ``held``: the index rows (path -> target path), each file
    on the target as the source has it."""
    entries = {src: LocalEntry(src, size, MTIME, i) for i, (src, size) in enumerate(local.items())}
    day = dt.date(2026, 3, 1)
    index = {src: IndexEntry(src, dst, local[src], MTIME, 0, day, None) for src, dst in held.items()}
    remote = {dst: RemoteEntry(dst, local[src]) for src, dst in held.items()}
    return compare(entries, index, remote, Layout.parse(layout), DeletePolicy.MIRROR, caps, lambda _: None)


def test_a_file_whose_target_path_another_holds_is_reported_as_not_mirrored() -> None:
    found = differences({"a/x.pdf": 3, "b/x.pdf": 5}, {"a/x.pdf": "x.pdf"}, "flat", Capabilities())
    assert [(d.src, d.problem) for d in found] == [("b/x.pdf", "not mirrored: 'a/x.pdf' holds that target path")]


def test_names_that_differ_only_in_case_on_a_target_that_ignores_case() -> None:
    ignores_case = Capabilities(case_sensitive=False)
    found = differences({"Invoice.pdf": 3, "INVOICE.pdf": 5}, {"Invoice.pdf": "Invoice.pdf"}, "tree", ignores_case)
    assert [(d.src, d.problem) for d in found] == [
        ("INVOICE.pdf", "not mirrored: 'Invoice.pdf' holds that target path")
    ]
    assert differences({"Invoice.pdf": 3}, {"Invoice.pdf": "Invoice.pdf"}, "tree", ignores_case) == []


def test_files_on_the_target_that_no_source_file_accounts_for_are_listed() -> None:
    entries = {
        "2026/a.pdf": LocalEntry("2026/a.pdf", 3, MTIME, 1),
        "2026/new.pdf": LocalEntry("2026/new.pdf", 4, MTIME, 2),
    }
    day = dt.date(2026, 3, 1)
    # a row whose source is gone still accounts for its file (delete may be pending)
    index = {
        "2026/a.pdf": IndexEntry("2026/a.pdf", "a.pdf", 3, MTIME, 0, day, None),
        "2025/gone.pdf": IndexEntry("2025/gone.pdf", "gone.pdf", 1, MTIME, 0, day, None),
    }
    remote = {
        p: RemoteEntry(p, 1)
        for p in ["a.pdf", "new.pdf", "gone.pdf", "README.txt", "Old/x.pdf", ".mirror-trash/2026-03-01/b.pdf"]
    }
    accounted = accounted_for(entries, index, Layout.parse("flat"), remote, Capabilities())
    assert others(remote, accounted, Capabilities()) == ["Old/x.pdf", "README.txt"]
    assert others({"A.PDF": RemoteEntry("A.PDF", 3)}, accounted, Capabilities(case_sensitive=False)) == []


def test_a_source_folder_that_cannot_be_read_is_a_difference_mirrored_or_not() -> None:
    """verify said 'identical' while a folder never mirrored could not be read."""
    day = dt.date(2026, 3, 1)
    index = {"old/a.pdf": IndexEntry("old/a.pdf", "old/a.pdf", 1, MTIME, 0, day, None)}
    remote = {"old/a.pdf": RemoteEntry("old/a.pdf", 1)}
    tree, caps = Layout.parse("tree"), Capabilities()
    found = compare({}, index, remote, tree, DeletePolicy.MIRROR, caps, lambda _: None, {"old", "2026"})
    assert [(d.src, d.problem) for d in found] == [
        ("old/a.pdf", "cannot be read in the source, so it was not compared"),
        ("2026", "cannot be read in the source, so it is not mirrored"),
    ]


def test_a_file_the_target_refuses_is_reported_as_not_mirrored_with_the_planner_s_reason() -> None:
    """verify said 'identical' while a name the target refuses was not on it."""
    picky = Capabilities(forbidden_chars="?", max_path_chars=20, max_file_bytes=10)
    sizes = {"a.pdf": 3, "what?.pdf": 3, "a/long/way/down/x.pdf": 3, "big.pdf": 11}
    entries = {src: LocalEntry(src, size, MTIME, i) for i, (src, size) in enumerate(sizes.items())}
    remote = {"a.pdf": RemoteEntry("a.pdf", 3)}
    found = compare(entries, {}, remote, Layout.parse("tree"), DeletePolicy.MIRROR, picky, lambda _: None)
    assert [(d.src, d.problem) for d in found] == [
        ("a/long/way/down/x.pdf", "not mirrored: path is longer than the target allows (20 characters)"),
        ("big.pdf", "not mirrored: file is larger than the target allows (10 bytes)"),
        ("what?.pdf", "not mirrored: the target refuses the character(s) '?' in 'what?.pdf'"),
    ]


def test_a_copy_kept_for_a_file_renamed_to_a_name_that_is_not_mirrored_names_both_paths() -> None:
    """Its old name's copy stays (the planner keeps it): not a file removed from the source."""
    day = dt.date(2026, 3, 1)
    picky = Capabilities(forbidden_chars="?")
    index = {
        name: IndexEntry(name, name, 3, MTIME, ino, day, None)
        for ino, name in enumerate(["Rechnung.pdf", "a.pdf", "gone.pdf"], 1)
    }
    remote = {name: RemoteEntry(name, 3) for name in index}
    latin1 = "Rechnung M\udcfcller.pdf"
    renamed_file = LocalEntry(latin1, 3, MTIME, 1)
    left_out = [Skip(latin1, "its name is not valid UTF-8", fix="rename it", entry=renamed_file)]
    entries = {"a?b.pdf": LocalEntry("a?b.pdf", 3, MTIME, 2)}
    tree = Layout.parse("tree")
    found = compare(entries, index, remote, tree, DeletePolicy.MIRROR, picky, lambda _: None, (), left_out)
    kept = "the copy of its old name stays on the target until the file can be mirrored"
    assert [(d.src, d.problem) for d in found] == [
        (latin1, "not mirrored: its name is not valid UTF-8; rename it"),
        ("a?b.pdf", "not mirrored: the target refuses the character(s) '?' in 'a?b.pdf'"),
        (
            "Rechnung.pdf",
            f"renamed in the source to {latin1}, which is not mirrored (its name is not valid UTF-8); {kept}",
        ),
        (
            "a.pdf",
            "renamed in the source to a?b.pdf, which is not mirrored (the target refuses the character(s) '?' "
            f"in 'a?b.pdf'); {kept}",
        ),
        ("gone.pdf", "removed from the source but still on the target"),
    ]


def test_a_copy_of_a_file_the_patterns_leave_out_is_not_called_removed() -> None:
    """Patterns changed, deletions withheld by the guard: verify called the copies of files
    still in the source 'removed from the source', and the user went looking for them."""
    index = {"inv/a1.pdf": IndexEntry("inv/a1.pdf", "inv/a1.pdf", 3, MTIME, 1, dt.date(2026, 3, 1), None)}
    remote = {"inv/a1.pdf": RemoteEntry("inv/a1.pdf", 3)}
    tree = Layout.parse("tree")
    found = compare(
        {}, index, remote, tree, DeletePolicy.MIRROR, Capabilities(), lambda _: None, excluded={"inv/a1.pdf"}
    )
    assert [(d.src, d.problem) for d in found] == [
        ("inv/a1.pdf", "left out by this target's patterns but still on the target")
    ]


def test_without_an_index_a_dated_copy_is_found_under_the_date_it_was_given() -> None:
    """A state folder lost (a check from a new machine): a 2024 invoice corrected in 2026
    was called missing in 2026/, and its current copy in 2024/ someone else's file, while
    mirror run adopts that copy."""
    corrected = LocalEntry("inv-17.pdf", 27, MTIME, 1)
    by_year = Layout.parse("by-year")
    remote = {"2024/inv-17.pdf": RemoteEntry("2024/inv-17.pdf", 27, MTIME)}
    caps = Capabilities(mtime_settable=True)
    found = compare({"inv-17.pdf": corrected}, {}, remote, by_year, DeletePolicy.MIRROR, caps, lambda _: None)
    assert found == []
    assert others(remote, accounted_for({"inv-17.pdf": corrected}, {}, by_year, remote, caps), caps) == []


@pytest.mark.parametrize(
    ("delete", "told"), [(DeletePolicy.MIRROR, True), (DeletePolicy.TRASH, True), (DeletePolicy.KEEP, False)]
)
def test_a_copy_still_at_the_path_of_a_file_removed_from_the_source_differs_unless_kept(
    delete: DeletePolicy, told: bool
) -> None:
    """delete = trash: verify said identical while the copies of 11 removed files were
    still at their paths (the guard had withheld their move into the trash)."""
    index = {"gone.pdf": IndexEntry("gone.pdf", "gone.pdf", 3, MTIME, 1, dt.date(2026, 3, 1), None)}
    remote = {"gone.pdf": RemoteEntry("gone.pdf", 3)}
    found = compare({}, index, remote, Layout.parse("tree"), delete, Capabilities(), lambda _: None, (), [])
    assert [(d.src, d.problem) for d in found] == (
        [("gone.pdf", "removed from the source but still on the target")] if told else []
    )


@given(
    local_ns=st.integers(min_value=0, max_value=2**62),
    tick=st.sampled_from(COARSER_TICKS_NS),
    off=st.integers(min_value=1, max_value=5 * 10**9),
)
def test_a_copy_on_a_filesystem_with_coarser_times_is_the_source_s_file(
    local_ns: int, tick: int, off: int
) -> None:
    """A USB stick under a local target (NTFS, exFAT, ext3, FAT) keeps the time cut down to
    its tick: every listing sent every file again, and verify never passed."""
    exact = Capabilities(mtime_settable=True, mtime_precision_ns=1)
    cut = local_ns - local_ns % tick
    assert exact.mtime_matches(cut, local_ns)
    assert exact.mtime_matches(local_ns, local_ns)
    # a time the copy cannot have been given: later than the source's, or a tick or more earlier
    assert not exact.mtime_matches(local_ns + off, local_ns)
    assert not exact.mtime_matches(cut - max(off, 2 * 10**9), local_ns)


def test_verify_claims_hashes_compared_only_for_files_the_target_reported_one_for() -> None:
    """A target whose listing held no hash (a WebDAV preset that declared md5, an S3 object
    sent in parts) was called 'identical (sizes and hashes compared)'."""
    caps = Capabilities(hash_kind=HashKind.MD5)
    hashed = {"a.pdf": RemoteEntry("a.pdf", 3, hash="0cc175b9c0f1b6a831c399e269772661")}
    bare = {"b.pdf": RemoteEntry("b.pdf", 3), "c.pdf": RemoteEntry("c.pdf", 3)}
    assert compared(caps, bare, {"b.pdf", "c.pdf"}) == (
        "sizes compared: this target keeps no times and reported no hashes"
    )
    assert compared(caps, {**hashed, **bare}, {"a.pdf", "b.pdf", "c.pdf"}) == (
        "sizes compared, and hashes of 1 of 3 files: the target reported none for the others"
    )
    assert compared(caps, {**hashed, **bare}, {"a.pdf"}) == "sizes and hashes compared"


def test_verify_claims_sizes_compared_only_for_files_the_target_told_one_for() -> None:
    """A WebDAV server that leaves sizes out of its listing: its files were called
    'identical (sizes compared ...)', though only their presence was."""
    told = {"a.pdf": RemoteEntry("a.pdf", 3)}
    untold = {"b.pdf": RemoteEntry("b.pdf", None), "c.pdf": RemoteEntry("c.pdf", None)}
    assert compared(Capabilities(), {**told, **untold}, {"a.pdf", "b.pdf", "c.pdf"}) == (
        "sizes compared: this target keeps no times and offers no hashes; "
        "the target told no size for 2 of 3 files: those were only found there"
    )
    assert (
        compared(Capabilities(), told, {"a.pdf"})
        == "sizes compared: this target keeps no times and offers no hashes"
    )
