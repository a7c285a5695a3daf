"""What ``mirror verify`` reports, from the source, the index and a target listing."""

from __future__ import annotations

import datetime as dt

from mirror.driver import Capabilities, RemoteEntry
from mirror.index import IndexEntry
from mirror.layout import Layout
from mirror.policy import DeletePolicy
from mirror.scan import LocalEntry
from mirror.verify import Difference, compare

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
