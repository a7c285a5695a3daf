"""The ``onedrive`` target: OneDriveDriver (httpx + msal) against the local Graph fake.

One fake per test session. The login is made once by ``mirror auth onedrive``'s own
device-code function against the fake identity service, so every target uses a token
file exactly as a user would have it; each target gets a fresh folder in the fake drive.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mirror.backends.onedrive_auth import login

from tests.fakes.graph_api import GraphState, make_handler
from tests.fakes.https import TestCA, serve
from tests.support import TargetSpec


@dataclass
class GraphFake:
    state: GraphState
    url: str
    ca_file: str
    token_file: str

    def options(self, token_file: str) -> dict[str, object]:
        return {
            "token_file": token_file,
            "graph_url": f"{self.url}/v1.0",
            "ca_certs": self.ca_file,
            "max_retries": 5,
        }


@pytest.fixture(scope="session")
def _graph_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GraphFake]:
    folder = tmp_path_factory.mktemp("graph")
    ca = TestCA(folder)
    state = GraphState()
    with serve(make_handler(state), ca) as url:
        state.base_url = url
        token_file = str(folder / "onedrive-token.json")
        login(state.client_id, f"{url}/common", token_file, ca.ca_file, lambda _msg: None)
        yield GraphFake(state, url, ca.ca_file, token_file)


@pytest.fixture
def graph_fake(_graph_server: GraphFake) -> Iterator[GraphFake]:
    state = _graph_server.state
    with state.lock:
        state.throttle.clear()
        state.requests.clear()
        state.token_outage.clear()
    yield _graph_server
    with state.lock:
        state.throttle.clear()
        state.token_outage.clear()


@pytest.fixture
def onedrive_target(graph_fake: GraphFake, tmp_path: Path) -> TargetSpec:
    token_file = tmp_path / "onedrive-token.json"
    shutil.copy(graph_fake.token_file, token_file)
    token_file.chmod(0o600)
    root = f"Mirror Test {uuid.uuid4().hex[:10]}/backup"
    return TargetSpec("onedrive", f"onedrive://{root}", graph_fake.options(str(token_file)))
