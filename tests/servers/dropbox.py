"""The fake Dropbox API (tests/fakes/dropbox_api.py) as fixtures, and ``dropbox_target``.

The dropbox SDK reads ``DROPBOX_API_HOST`` / ``DROPBOX_API_CONTENT_HOST`` once, when it
is imported, and always speaks https. So this plugin binds the fake's port when pytest
loads it (before any test imports the SDK) and points both variables there; one HTTPS
server then runs for the session, and every test gets a fresh, empty fake account behind
it. The self-signed certificate is trusted through ``REQUESTS_CA_BUNDLE`` (the existing
bundle plus ours), set per test.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.dropbox_api import FakeDropbox, make_certificate, serve
from tests.support import TargetSpec

_SOCKET = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
_SOCKET.bind(("127.0.0.1", 0))
_SOCKET.listen(128)
HOST = f"127.0.0.1:{_SOCKET.getsockname()[1]}"
os.environ["DROPBOX_API_HOST"] = HOST
os.environ["DROPBOX_API_CONTENT_HOST"] = HOST
os.environ["DROPBOX_API_NOTIFY_HOST"] = HOST


@dataclass
class DropboxServer:
    """The running fake: ``fake`` is this test's account, ``env`` what a child process needs."""

    fake: FakeDropbox
    host: str
    ca_bundle: str
    token: str

    def driver(self, url: str = "dropbox://Mirror", **options: Any) -> Any:
        """A DropboxDriver logged in to this fake (fast retries unless told otherwise)."""
        from mirror.registry import connect, resolve

        options = {"token": self.token, "retry_backoff": 0.01, **options}
        return connect(resolve(url, options, {}))

    @property
    def env(self) -> dict[str, str]:
        return {
            "DROPBOX_API_HOST": self.host,
            "DROPBOX_API_CONTENT_HOST": self.host,
            "DROPBOX_API_NOTIFY_HOST": self.host,
            "REQUESTS_CA_BUNDLE": self.ca_bundle,
        }


class _Holder:
    fake: FakeDropbox = FakeDropbox()


@pytest.fixture(scope="session")
def _dropbox_https() -> Iterator[tuple[_Holder, Path]]:
    if "dropbox" in sys.modules:
        import dropbox.dropbox_client

        if dropbox.dropbox_client.API_HOST != HOST:
            raise RuntimeError("the dropbox SDK was imported before tests.servers.dropbox set DROPBOX_API_HOST")
    with tempfile.TemporaryDirectory(prefix="fake-dropbox-") as tmp:
        cert, key = make_certificate(Path(tmp))
        existing = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if not existing:
            import certifi

            existing = certifi.where()
        bundle = Path(tmp) / "bundle.pem"
        bundle.write_bytes(Path(existing).read_bytes() + b"\n" + cert.read_bytes())
        holder = _Holder()
        with serve(_Proxy(holder), _SOCKET, cert, key):
            yield holder, bundle


class _Proxy(FakeDropbox):
    """Forwards to the holder's current fake, so the server outlives each test's account."""

    def __init__(self, holder: _Holder) -> None:
        self._holder = holder

    def __getattribute__(self, name: str) -> Any:
        if name in ("_holder", "__class__"):
            return object.__getattribute__(self, name)
        return getattr(object.__getattribute__(self, "_holder").fake, name)


@pytest.fixture
def dropbox_server(
    _dropbox_https: tuple[_Holder, Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[DropboxServer]:
    holder, bundle = _dropbox_https
    fake = FakeDropbox()
    holder.fake = fake
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    server = DropboxServer(fake, HOST, str(bundle), fake.issue_token())
    yield server
    for fault in fake.faults:
        if fault.release is not None:
            fault.release.set()
    holder.fake = FakeDropbox()


@pytest.fixture
def dropbox_target(dropbox_server: DropboxServer) -> TargetSpec:
    return TargetSpec(
        "dropbox",
        f"dropbox://mirror-test-{uuid.uuid4().hex[:8]}",
        options={"token": "${DROPBOX_TOKEN}"},
        env={"DROPBOX_TOKEN": dropbox_server.token, **dropbox_server.env},
    )
