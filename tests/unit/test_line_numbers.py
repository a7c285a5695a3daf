"""The suite reports a failing test whose traceback stops on a line without a number,
and goes on with the rest, instead of stopping with an INTERNALERROR (tests/line_numbers.py)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

FAILING = """
import sys, types

def send():
    raise ValueError("the invoice was not sent")

def test_stops_on_an_instruction_without_a_line():
    frame = sys._getframe()
    nowhere = next(at * 2 for at, (line, *_) in enumerate(frame.f_code.co_positions()) if line is None)
    try:
        send()
    except ValueError as error:
        # as an exception raised by a signal handler may stop: on an instruction of no line
        stopped = types.TracebackType(error.__traceback__, frame, nowhere, -1)
        raise error.with_traceback(stopped) from KeyError("the cause")

def test_after_it():
    pass
"""


def test_a_failure_on_a_line_without_a_number_is_reported_and_the_run_goes_on(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_invoices=FAILING)
    result = pytester.runpytest_inprocess("-p", "tests.line_numbers", "-p", "no:cacheprovider")
    assert "INTERNALERROR" not in result.stdout.str()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*KeyError*the cause*", "*ValueError: the invoice was not sent*"])
