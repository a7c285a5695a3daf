"""The ``gdrive`` target: GDriveDriver's real client against the local Drive v3 fake.

One fake server per test session (the CA and TLS setup cost more than the tests); each
target gets its own fresh folder under the fake's My Drive and its own token file, whose
refresh token makes the first request go through the real OAuth refresh path.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakes.drive_api import DriveState, make_handler
from tests.fakes.https import TestCA, serve
from tests.support import TargetSpec


@dataclass
class DriveFake:
    state: DriveState
    url: str
    ca_file: str

    def options(self, token_file: str) -> dict[str, object]:
        return {
            "token_file": token_file,
            "api_endpoint": f"{self.url}/drive/v3/",
            "ca_certs": self.ca_file,
            "token_uri": f"{self.url}/token",
            "max_retries": 5,
        }


@pytest.fixture(scope="session")
def fake_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def _drive_server(fake_ca: TestCA) -> Iterator[DriveFake]:
    state = DriveState()
    with serve(make_handler(state), fake_ca) as url:
        state.base_url = url
        yield DriveFake(state, url, fake_ca.ca_file)


@pytest.fixture
def drive_fake(_drive_server: DriveFake) -> Iterator[DriveFake]:
    """The session's fake, with throttling and counters reset around each test."""
    state = _drive_server.state
    with state.lock:
        state.throttle.clear()
        state.requests.clear()
        state.token_outage = 0
    yield _drive_server
    with state.lock:
        state.throttle.clear()
        state.folder_faults.clear()
        state.token_outage = 0


def write_token_file(folder: Path, fake: DriveFake) -> str:
    """An authorized-user file as `mirror auth gdrive` writes it, pointing at the fake."""
    path = folder / "gdrive-token.json"
    path.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "cid.apps.googleusercontent.com",
                "client_secret": "csecret",
                "refresh_token": "good-refresh-token",
                "token_uri": f"{fake.url}/token",
            }
        )
    )
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def gdrive_target(drive_fake: DriveFake, tmp_path: Path) -> TargetSpec:
    root = f"mirror-test-{uuid.uuid4().hex[:12]}/backup"
    return TargetSpec("gdrive", f"gdrive://{root}", drive_fake.options(write_token_file(tmp_path, drive_fake)))
