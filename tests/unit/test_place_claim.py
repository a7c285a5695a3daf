"""The machine-wide claim on a target's place: who holds it is told, and it ends with its holder."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from mirror.place_claim import PlaceClaim

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="an abstract socket name is Linux's")

HOLD = """
import sys, time
from mirror.place_claim import PlaceClaim
claim = PlaceClaim(sys.argv[1])
print(claim.taken_by, flush=True)
time.sleep(30)
"""


def test_a_second_claim_is_told_who_holds_the_place_and_gets_it_once_released() -> None:
    key = uuid.uuid4().hex
    first = PlaceClaim(key)
    assert first.taken_by is None
    assert PlaceClaim(key).taken_by == "here"
    first.release()
    again = PlaceClaim(key)
    assert again.taken_by is None
    again.release()


def test_a_claim_held_by_another_process_ends_with_it_even_when_killed() -> None:
    key = uuid.uuid4().hex
    holder = subprocess.Popen([sys.executable, "-c", HOLD, key], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "None"
        assert PlaceClaim(key).taken_by == "elsewhere"
    finally:
        holder.kill()
        holder.wait(10)
    after = PlaceClaim(key)
    assert after.taken_by is None
    after.release()


def test_a_process_that_may_not_make_sockets_still_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit restricting address families (RestrictAddressFamilies=AF_INET) refuses the
    socket itself: mirror must start, not end in a traceback."""

    def refused(*args: object) -> None:
        raise OSError(97, "Address family not supported by protocol")

    monkeypatch.setattr("mirror.place_claim.socket.socket", refused)
    claim = PlaceClaim(uuid.uuid4().hex)
    assert claim.taken_by is None
    claim.release()


def test_places_that_share_a_claim_with_other_accounts_are_both_mirrored_in_one_process() -> None:
    """A place whose account the driver cannot tell apart from a password is claimed by its
    server and folder alone (two FTP logins on one folder): one config mirrors both."""
    key = uuid.uuid4().hex
    first, second = PlaceClaim(key, "alice"), PlaceClaim(key, "bob")
    assert (first.taken_by, second.taken_by) == (None, None)
    assert PlaceClaim(key, "alice").taken_by == "here"
    first.release()
    assert PlaceClaim(key, "bob").taken_by == "here"
    second.release()
    again = PlaceClaim(key, "alice")
    assert again.taken_by is None
    again.release()


def test_a_claim_whose_holder_cannot_be_told_is_taken_for_a_mirrors(monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit that hides /proc/net (ProcSubset=pid) shows no list of sockets to tell a
    stranger from a mirror by: two mirrors in one place remove each other's uploads."""
    key = uuid.uuid4().hex
    holder = subprocess.Popen([sys.executable, "-c", HOLD, key], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "None"
        monkeypatch.setattr("mirror.place_claim._SOCKETS", "/nonexistent/net/unix")
        assert PlaceClaim(key).taken_by == "elsewhere"
    finally:
        holder.kill()
        holder.wait(10)
