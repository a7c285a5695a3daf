"""A WebDAV server on 127.0.0.1 (wsgidav on cheroot, in a thread): ``webdav_server``, ``webdav_target``.

wsgidav serves a temporary folder with basic auth for one user, so tests can check
the bytes that landed on disk directly. The password reaches the target only through
``${MIRROR_TEST_WEBDAV_PASSWORD}``, the way a user's config would carry it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cheroot import wsgi
from wsgidav.wsgidav_app import WsgiDAVApp

from tests.servers.sshd import free_port
from tests.support import TargetSpec

USER = "alice"
PASSWORD = "webdav-test-password-7d1f"  # a throwaway local test server


@dataclass
class WebdavServer:
    folder: Path
    port: int
    server: wsgi.Server
    thread: threading.Thread

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, sub: str) -> str:
        return f"webdav://127.0.0.1:{self.port}/{sub}"

    def options(self, **extra: Any) -> dict[str, Any]:
        return {"username": USER, "password": PASSWORD, **extra}


def start_webdav(folder: Path, port: int | None = None, read_only: bool = False) -> WebdavServer:
    """Serve ``folder``; on ``port`` when given (a test that brings a server back)."""
    port = port or free_port()
    app = WsgiDAVApp(
        {
            "host": "127.0.0.1",
            "port": port,
            "provider_mapping": {"/": {"root": str(folder), "readonly": read_only}},
            "simple_dc": {"user_mapping": {"*": {USER: {"password": PASSWORD}}}},
            "http_authenticator": {"accept_basic": True, "accept_digest": False, "default_to_digest": False},
            "verbose": 0,
            "logging": {"enable": False},
        }
    )
    server = wsgi.Server(("127.0.0.1", port), app, numthreads=8)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    return WebdavServer(folder, port, server, thread)


@pytest.fixture(scope="session")
def webdav_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebdavServer]:
    running = start_webdav(tmp_path_factory.mktemp("webdav"))
    try:
        yield running
    finally:
        running.server.stop()
        running.thread.join(timeout=10)


@pytest.fixture
def webdav_target(webdav_server: WebdavServer) -> TargetSpec:
    return TargetSpec(
        "webdav",
        webdav_server.url(f"t-{uuid.uuid4().hex}"),
        {"username": USER, "password": "${MIRROR_TEST_WEBDAV_PASSWORD}"},
        env={"MIRROR_TEST_WEBDAV_PASSWORD": PASSWORD},
    )
