"""Uploads through the bulk SSH sender (backends/ssh_data.py), against a real OpenSSH.

The sender seals channel packets itself and keeps paramiko's books; OpenSSH checks
every packet, so any slip (a counter, a length, the window) fails the upload.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mirror.backends.sftp import SFTPDriver

from mirror.driver import BatchPut
from tests.servers.sshd import SshServer

MTIME_NS = 1_600_000_000_000_000_000
MiB = 1024 * 1024


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "remote"
    path.mkdir()
    return path


def connect(server: SshServer, root: Path) -> SFTPDriver:
    driver = SFTPDriver.connect(server.url(root), server.options())
    assert isinstance(driver, SFTPDriver)
    return driver


@pytest.fixture
def driver(sshd: SshServer, root: Path) -> Iterator[SFTPDriver]:
    d = connect(sshd, root)
    yield d
    d.close()


def put(driver: SFTPDriver, tmp_path: Path, name: str, data: bytes) -> None:
    local = tmp_path / f"local-{name}"
    local.write_bytes(data)
    driver.put(str(local), name, MTIME_NS)


def packets_through_paramiko(driver: SFTPDriver) -> list[Any]:
    """Record every message paramiko's own send path takes on the next connection used."""
    sent: list[Any] = []
    with driver._session() as link:
        packetizer = link.client.get_transport().packetizer
    original = packetizer.send_message

    def counting(message: Any) -> None:
        sent.append(message)
        original(message)

    packetizer.send_message = counting
    return sent


def test_a_large_upload_goes_out_past_paramikos_packet_path(
    driver: SFTPDriver, root: Path, tmp_path: Path
) -> None:
    """8 MiB is about 260 channel packets; paramiko's path would send each as a message
    of its own (if this fails, a paramiko upgrade has switched the fast path off)."""
    sent = packets_through_paramiko(driver)
    data = os.urandom(8 * MiB + 3)
    put(driver, tmp_path, "scan.pdf", data)
    assert (root / "scan.pdf").read_bytes() == data
    assert len(sent) < 20


def test_uploads_stay_whole_across_key_exchanges(
    driver: SFTPDriver, root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A new key every MiB (paramiko's default is every 512 MiB): the sender asks for
    each exchange, waits it out and picks up the new key and counter."""
    with driver._session() as link:
        transport = link.client.get_transport()
        transport.packetizer.REKEY_BYTES = MiB
    files = {f"export-{i}.csv": os.urandom(4 * MiB + i) for i in range(4)}
    with caplog.at_level(logging.DEBUG, logger="paramiko.transport"):
        for name, data in files.items():
            put(driver, tmp_path, name, data)
    for name, data in files.items():
        assert (root / name).read_bytes() == data
    assert sum("Switch to new keys" in r.getMessage() for r in caplog.records) >= 5
    assert transport.is_active()


def test_a_server_that_takes_only_aes256_gcm_gets_sealed_packets(tmp_path: Path, root: Path) -> None:
    """Hardened servers often allow AES-GCM with 256-bit keys only: same construction,
    longer key."""
    server = SshServer(tmp_path / "sshd", extra_config=["Ciphers aes256-gcm@openssh.com"])
    server.start()
    try:
        driver = connect(server, root)
        try:
            with driver._session() as link:
                assert link.client.get_transport().local_cipher == "aes256-gcm@openssh.com"
            sent = packets_through_paramiko(driver)
            data = os.urandom(4 * MiB + 1)
            put(driver, tmp_path, "payroll.pdf", data)
            assert (root / "payroll.pdf").read_bytes() == data
            assert len(sent) < 20
        finally:
            driver.close()
    finally:
        server.stop()


def test_a_cipher_other_than_aes_gcm_uploads_through_paramiko(tmp_path: Path, root: Path) -> None:
    """A server without AES-GCM: the sender hands every batch to paramiko, with the
    window it took given back (a window counted twice would stall the upload)."""
    server = SshServer(tmp_path / "sshd", extra_config=["Ciphers aes128-ctr"])
    server.start()
    try:
        driver = connect(server, root)
        try:
            sent = packets_through_paramiko(driver)
            data = os.urandom(6 * MiB + 5)
            put(driver, tmp_path, "invoice.pdf", data)
            assert (root / "invoice.pdf").read_bytes() == data
            assert len(sent) > 150  # every channel packet went through paramiko
        finally:
            driver.close()
    finally:
        server.stop()


def test_a_cipher_not_sealed_here_goes_through_paramiko(driver: SFTPDriver, root: Path, tmp_path: Path) -> None:
    """The sender seals only what it knows by name: a connection that says it uses
    another cipher (chacha20-poly1305, say, were paramiko to add it) is left to paramiko."""
    with driver._session() as link:
        link.client.get_transport().local_cipher = "chacha20-poly1305@openssh.com"
    sent = packets_through_paramiko(driver)
    data = os.urandom(2 * MiB)
    put(driver, tmp_path, "credit-note.pdf", data)
    assert (root / "credit-note.pdf").read_bytes() == data
    assert len(sent) > 50


def test_many_small_files_in_batches_arrive_whole(driver: SFTPDriver, root: Path, tmp_path: Path) -> None:
    """Batches of small files make many short requests in one channel write, and packets
    that end mid-request."""
    files = {f"n{i:03}.txt": os.urandom(i * 37 % 5000) for i in range(150)}
    items = []
    for name, data in files.items():
        local = tmp_path / name
        local.write_bytes(data)
        items.append(BatchPut(str(local), f".{name}.tmp", name, MTIME_NS))
    for at in range(0, len(items), driver.batch_files):
        assert all(outcome is None for outcome in driver.send_batch(items[at : at + driver.batch_files]))
    for name, data in files.items():
        assert (root / name).read_bytes() == data
