"""A target listed while folders on it go (the trash emptied by hand): the listing lists
the rest, it does not fail whole.

The folders go from the disk the target is on, fast enough to meet the listing in the
middle; the backend lists over and over until they are gone. The WebDAV server here
(wsgidav) answers 500 to a listing that meets a file going (its own fault, which a retry
covers), so a WebDAV folder goes just before the listing asks for it instead."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from mirror import registry
from tests.contract.test_contract import make_config
from tests.support import TargetSpec


def _served(request: pytest.FixtureRequest, backend: str) -> tuple[TargetSpec, Path]:
    """A target of ``backend``, and the folder on this machine's disk it writes into."""
    spec: TargetSpec = request.getfixturevalue(f"{backend}_target")
    if backend == "file":
        return spec, Path(spec.url)
    return spec, Path(unquote(urlsplit(spec.url).path))


@pytest.mark.parametrize("backend", ["file", "sftp"])
def test_a_listing_while_folders_go_lists_the_rest(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, backend: str
) -> None:
    spec, root = _served(request, backend)
    for name, value in spec.env.items():
        monkeypatch.setenv(name, value)
    for n in range(60):
        (root / "trash" / f"d{n}").mkdir(parents=True)
        (root / "trash" / f"d{n}" / "old.pdf").write_bytes(b"old")
    (root / "kept.pdf").write_bytes(b"kept")
    cfg = make_config(spec, tmp_path, tmp_path / "state")
    target = cfg.targets[0]
    driver = registry.connect(registry.resolve(target.url, target.options, cfg.presets))
    emptied = threading.Event()

    def empty() -> None:
        for folder in sorted((root / "trash").iterdir(), reverse=True):
            (folder / "old.pdf").unlink()
            folder.rmdir()
        emptied.set()

    emptier = threading.Thread(target=empty)
    try:
        emptier.start()
        while not emptied.is_set():
            assert "kept.pdf" in driver.list()
        assert set(driver.list()) == {"kept.pdf"}
    finally:
        emptier.join()
        driver.close()


def test_a_webdav_listing_of_a_folder_gone_since_its_parent_was_read_lists_the_rest(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec: TargetSpec = request.getfixturevalue("webdav_target")
    root = request.getfixturevalue("webdav_server").folder / spec.url.rsplit("/", 1)[1]
    for name, value in spec.env.items():
        monkeypatch.setenv(name, value)
    (root / "trash" / "2024-01-01").mkdir(parents=True)
    (root / "trash" / "2024-01-01" / "old.pdf").write_bytes(b"old")
    (root / "kept.pdf").write_bytes(b"kept")
    cfg = make_config(spec, tmp_path, tmp_path / "state")
    target = cfg.targets[0]
    driver = registry.connect(registry.resolve(target.url, target.options, cfg.presets))
    real = driver.client.ls

    def ls(path: str, *args: object, **kwargs: object) -> object:
        if path.rstrip("/").endswith("trash/2024-01-01"):
            shutil.rmtree(root / "trash" / "2024-01-01")  # emptied by hand, just now
        return real(path, *args, **kwargs)

    monkeypatch.setattr(driver.client, "ls", ls)
    try:
        assert set(driver.list()) == {"kept.pdf"}
    finally:
        driver.close()
