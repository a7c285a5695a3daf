"""An FTP server on 127.0.0.1 (pyftpdlib, in a thread): ``ftp_server``, ``ftp_target``.

FTP has no module in mirror: it is reached through fsspec's own ``ftp`` implementation
and the generic driver, the way a user adds a backend by configuration alone. The server
serves a temporary folder to one user, so tests can read what landed on disk.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import DTPHandler, FTPHandler
from pyftpdlib.servers import ThreadedFTPServer

from tests.servers.sshd import free_port
from tests.support import TargetSpec

USER = "bookkeeper"
PASSWORD = "ftp-test-password-3b9e"  # a throwaway local test server


@dataclass
class FtpServer:
    folder: Path
    port: int
    server: ThreadedFTPServer
    thread: threading.Thread

    def stop(self) -> None:
        """Close the server and every connection to it, as a server restarted does."""
        self.server.close_all()
        self.thread.join(timeout=10)

    def options(self) -> dict[str, Any]:
        """A target's options for this server (the password given in the config)."""
        return {"port": self.port, "username": USER, "password": PASSWORD}


def serve(folder: Path, port: int | None = None, dtp: type[DTPHandler] = DTPHandler) -> FtpServer:
    """An FTP server for ``folder`` on ``port`` (a free one if None), running; ``dtp``
    moves the bytes of each transfer (a test's may hold them)."""
    authorizer = DummyAuthorizer()
    authorizer.add_user(USER, PASSWORD, str(folder), perm="elradfmwMT")
    attrs = {"authorizer": authorizer, "banner": "mirror test server", "dtp_handler": dtp}
    handler = type("Handler", (FTPHandler,), attrs)
    port = port or free_port()
    server = ThreadedFTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.2}, daemon=True)
    thread.start()
    return FtpServer(folder, port, server, thread)


@pytest.fixture(scope="session")
def ftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    server = serve(tmp_path_factory.mktemp("ftp"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ftp_target(ftp_server: FtpServer) -> TargetSpec:
    return TargetSpec(
        "ftp",
        f"ftp://127.0.0.1/t-{uuid.uuid4().hex}",
        {"port": ftp_server.port, "username": USER, "password": "${MIRROR_TEST_FTP_PASSWORD}"},
        env={"MIRROR_TEST_FTP_PASSWORD": PASSWORD},
    )
