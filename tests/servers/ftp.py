"""An FTP server on 127.0.0.1 (pyftpdlib, in a thread): ``ftp_server``, ``ftp_target``.

FTP has no module in mirror: it is reached through fsspec's own ``ftp`` implementation
and the generic driver, the way a user adds a backend by configuration alone. The server
serves a temporary folder to one user, so tests can read what landed on disk.
"""

from __future__ import annotations

import errno
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import DTPHandler, FTPHandler
from pyftpdlib.servers import ThreadedFTPServer

from tests.servers.sshd import free_port
from tests.support import TargetSpec

USER = "bookkeeper"
PASSWORD = "ftp-test-password-3b9e"  # a throwaway local test server

#: what a target's options naming the password as ${MIRROR_TEST_FTP_PASSWORD} need in the environment
ENV = {"MIRROR_TEST_FTP_PASSWORD": PASSWORD}


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


class RenamesOntoNoName(AbstractedFS):
    """Storage that refuses to rename onto an existing name, as IIS's FTP server and
    pyftpdlib on Windows do ('550 File exists.')."""

    def rename(self, src: str, dst: str) -> None:
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, "File exists")
        super().rename(src, dst)


def serve(
    folder: Path,
    port: int | None = None,
    dtp: type[DTPHandler] = DTPHandler,
    storage: type[AbstractedFS] = AbstractedFS,
    password: str = PASSWORD,
) -> FtpServer:
    """An FTP server for ``folder`` on ``port`` (a free one if None), running; ``dtp``
    moves the bytes of each transfer (a test's may hold them), ``storage`` reaches the
    folder (a test's may refuse what some servers refuse); ``USER`` logs in with ``password``."""
    authorizer = DummyAuthorizer()
    authorizer.add_user(USER, password, str(folder), perm="elradfmwMT")
    attrs = {
        "authorizer": authorizer,
        "banner": "mirror test server",
        "dtp_handler": dtp,
        "abstracted_fs": storage,
    }
    handler = type("Handler", (FTPHandler,), attrs)
    port = port or free_port()
    server = ThreadedFTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.2}, daemon=True)
    thread.start()
    return FtpServer(folder, port, server, thread)


def _serving(folder: Path, storage: type[AbstractedFS] = AbstractedFS) -> Iterator[FtpServer]:
    server = serve(folder, storage=storage)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    yield from _serving(tmp_path_factory.mktemp("ftp"))


@pytest.fixture(scope="session")
def iis_like_ftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    yield from _serving(tmp_path_factory.mktemp("ftp-iis"), RenamesOntoNoName)


@pytest.fixture
def ftp_target(ftp_server: FtpServer) -> TargetSpec:
    return TargetSpec(
        "ftp",
        f"ftp://127.0.0.1/t-{uuid.uuid4().hex}",
        {"port": ftp_server.port, "username": USER, "password": "${MIRROR_TEST_FTP_PASSWORD}"},
        env=ENV,
    )
