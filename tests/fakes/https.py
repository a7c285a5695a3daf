"""A local HTTPS server for API fakes: a test CA (trustme), a threaded server, JSON helpers.

Google's client always uploads over https and msal/httpx verify certificates, so the
fakes speak TLS with a certificate from a throwaway CA whose PEM the tests hand to the
client. TCP_NODELAY is set on every connection: without it each small response waits
for the peer's delayed ACK (~40 ms), which would make the suites slow.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme


class ClientGone(Exception):
    """The client hung up before its request body had all arrived."""


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request body; ClientGone when the connection ends before Content-Length bytes.

    A real service never acts on part of a body (a killed client's upload must not
    become a short file), so a fake must not either.
    """
    length = int(handler.headers.get("Content-Length") or 0)
    data = handler.rfile.read(length) if length else b""
    if len(data) < length:
        handler.close_connection = True
        raise ClientGone
    return data


def dropping_partial_requests(handle_one_request: Any) -> Any:
    """Wraps a handler's ``handle_one_request``: a request whose client left is dropped, quietly."""

    def handle(self: BaseHTTPRequestHandler) -> None:
        try:
            handle_one_request(self)
        except ClientGone:
            self.close_connection = True

    return handle


class TestCA:
    """A certificate authority for 127.0.0.1, with its PEM written to ``ca_file``."""

    def __init__(self, folder: Path) -> None:
        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = str(folder / "fake-ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.cert.configure_cert(ctx)
        return ctx


class JSONHandler(BaseHTTPRequestHandler):
    """Keep-alive request handler with helpers to read the request and answer JSON."""

    protocol_version = "HTTP/1.1"
    fake: Any

    def setup(self) -> None:
        self.request.do_handshake()
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest shows failures, not every request."""

    handle_one_request = dropping_partial_requests(BaseHTTPRequestHandler.handle_one_request)

    def dispatch(self, method: str) -> None:
        """Answer one request; each fake routes by method and path."""
        raise NotImplementedError

    def do_GET(self) -> None:
        self.dispatch("GET")

    def do_POST(self) -> None:
        self.dispatch("POST")

    def do_PATCH(self) -> None:
        self.dispatch("PATCH")

    def do_PUT(self) -> None:
        self.dispatch("PUT")

    def do_DELETE(self) -> None:
        self.dispatch("DELETE")

    # -- reading ----------------------------------------------------------------------
    @property
    def route(self) -> str:
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query, keep_blank_values=True).items()}

    def body(self) -> bytes:
        return read_body(self)

    def json_body(self) -> dict[str, Any]:
        raw = self.body()
        return json.loads(raw) if raw else {}

    # -- answering --------------------------------------------------------------------
    def send(self, status: int, payload: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json; charset=UTF-8")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def serve(handler: type[JSONHandler], ca: TestCA) -> Iterator[str]:
    """Run ``handler`` on a free port of 127.0.0.1 over TLS; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    # the handshake runs in the handler thread, so one stalled client cannot block accept()
    server.socket = ca.server_context().wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
