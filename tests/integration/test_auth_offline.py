"""``mirror auth dropbox|gdrive|onedrive`` when the login service cannot be reached: one
line that says so and why, never a traceback, nor a code blamed for a network failure.

Each login is pointed at a port on 127.0.0.1 that is bound but not listening, so every
connection is refused at once.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest

from tests.cli import run


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def login(backend: str, port: int, tmp_path: Path) -> list[str]:
    """``mirror auth BACKEND`` against the closed port; the code the user pastes is typed."""
    url = f"https://127.0.0.1:{port}"
    env: dict[str, str] = {}
    if backend == "dropbox":
        env["DROPBOX_API_HOST"] = f"127.0.0.1:{port}"
        args = ["--app-key", "key", "--token-file", str(tmp_path / "token.json")]
    elif backend == "gdrive":
        secrets = tmp_path / "client_secret.json"
        installed = {
            "client_id": "cid",
            "client_secret": "csecret",
            "auth_uri": f"{url}/auth",
            "token_uri": f"{url}/token",
            "redirect_uris": ["http://localhost"],
        }
        secrets.write_text(json.dumps({"installed": installed}))
        args = ["--client-secrets", str(secrets), "--token-file", str(tmp_path / "token.json"), "--no-browser"]
    else:
        # a CA bundle of its own turns off msal's instance discovery on the real Microsoft host
        args = ["--client-id", "abc", "--authority-url", url, "--ca-certs", certifi.where()]
        args += ["--token-file", str(tmp_path / "token.json")]
    done = run("auth", backend, *args, state=tmp_path / "state", env=env, typed="the-code\n", timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "token.json").exists()
    return done.stderr.splitlines()


@pytest.mark.parametrize(
    ("backend", "service"),
    [("dropbox", "Dropbox"), ("gdrive", "Google's login service"), ("onedrive", "Microsoft's login service")],
)
def test_an_unreachable_login_service_is_one_line_that_says_so(
    backend: str, service: str, closed_port: int, tmp_path: Path
) -> None:
    (line,) = login(backend, closed_port, tmp_path)
    assert line.startswith(f"mirror: error: cannot reach {service} at 127.0.0.1 (Connection refused)"), line
    assert f"then run mirror auth {backend} again" in line
    assert "the-code" not in line and "did not accept" not in line
