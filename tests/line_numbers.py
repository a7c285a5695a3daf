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
    """``tb``, with every entry that has no line number made anew with one."""
    if tb is None:
        return None
    rest = with_lines(tb.tb_next)
    if tb.tb_lineno is not None and rest is tb.tb_next:
        return tb
    lineno = tb.tb_lineno if tb.tb_lineno is not None else line_of(tb.tb_frame.f_code, tb.tb_lasti)
    return types.TracebackType(rest, tb.tb_frame, tb.tb_lasti, lineno)


def give_lines(error: BaseException, seen: set[int]) -> bool:
    """Give line numbers to the tracebacks of ``error`` and of the errors chained to it or
    grouped in it; whether any was missing one."""
    if id(error) in seen:
        return False
    seen.add(id(error))
    fixed = with_lines(error.__traceback__)
    changed = fixed is not error.__traceback__
    if changed:
        error.__traceback__ = fixed
    linked = [error.__cause__, error.__context__, *getattr(error, "exceptions", ())]
    return any([give_lines(other, seen) for other in linked if other is not None]) or changed


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    if call.excinfo is not None and give_lines(call.excinfo.value, set()):
        call.excinfo = pytest.ExceptionInfo.from_exception(call.excinfo.value)
    return (yield)
