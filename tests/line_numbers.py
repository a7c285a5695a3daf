"""A failing test is reported, whatever line its traceback stops on.

On Python 3.11 a traceback entry can stop on an instruction that has no line number (an
exception raised by a signal handler, as pytest-timeout's is, or by the garbage collector).
Its ``tb_lineno`` is then None, and pytest, computing ``tb_lineno - 1`` while it formats the
failure, stops the whole run with an INTERNALERROR: one failing test costs every result
after it, and its own message is lost. This plugin gives such entries the line of the
nearest instruction before them that has one, before pytest formats the failure.
"""

from __future__ import annotations

import types
from collections.abc import Generator

import pytest


def line_of(code: types.CodeType, lasti: int) -> int:
    """The line of the instruction at ``lasti``, or of the nearest one before it that has
    a line (each instruction is 2 bytes); the function's first line if none has."""
    lines = [start for start, *_ in code.co_positions()]
    for at in range(min(lasti // 2, len(lines) - 1), -1, -1):
        if lines[at] is not None:
            return lines[at]
    return code.co_firstlineno


def with_lines(tb: types.TracebackType | None) -> types.TracebackType | None:
    """``tb``, made anew if any of its entries has no line number, with one for each.
    A loop, not recursion: a RecursionError's traceback is as deep as the limit."""
    entries = []
    while tb is not None:
        entries.append(tb)
        tb = tb.tb_next
    if all(entry.tb_lineno is not None for entry in entries):
        return entries[0] if entries else None
    rebuilt = None
    for entry in reversed(entries):
        lineno = entry.tb_lineno or line_of(entry.tb_frame.f_code, entry.tb_lasti)
        rebuilt = types.TracebackType(rebuilt, entry.tb_frame, entry.tb_lasti, lineno)
    return rebuilt


def give_lines(error: BaseException, seen: set[int]) -> bool:
    """Give line numbers to the tracebacks of ``error`` and of the errors chained to it or
    grouped in it; whether any was missing one."""
    if id(error) in seen:
        return False
    seen.add(id(error))
    fixed = with_lines(error.__traceback__)
    changed = fixed is not error.__traceback__
    error.__traceback__ = fixed
    for other in (error.__cause__, error.__context__, *getattr(error, "exceptions", ())):
        if other is not None and give_lines(other, seen):
            changed = True
    return changed


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    if call.excinfo is not None and give_lines(call.excinfo.value, set()):
        call.excinfo = pytest.ExceptionInfo.from_exception(call.excinfo.value)
    return (yield)
