"""The s3 driver against an S3-compatible server (moto) on 127.0.0.1: bytes, ETags, metadata."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest.mock import ANY

import pytest
from mirror.backends import s3 as s3_backend
from mirror.backends.s3 import S3Driver, s3_etag

from mirror.driver import Driver, RemoteEntry
from mirror.errors import ConfigError, FatalError, ItemError, MirrorError, TransientError
from tests.cli import MIRROR, run, start, wait_for
from tests.contract.test_cli_contract import config_file
from tests.servers.s3 import S3Server
from tests.support import TargetSpec, putting

MTIME_NS = 1_600_000_000_123_456_789


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    return s3_server.new_bucket()


@pytest.fixture
def driver(s3_server: S3Server, bucket: str) -> Iterator[Driver]:
    d = S3Driver.connect(f"s3://{bucket}/backup", s3_server.options())
    yield d
    d.close()


def body(s3_server: S3Server, bucket: str, key: str) -> bytes:
    return s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def test_put_lands_bytes_md5_etag_and_mtime_metadata(
    driver: Driver, s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    local = tmp_path / "inv.pdf"
    local.write_bytes(b"%PDF-1.7 invoice")
    driver.makedirs("2024/03")
    landed = driver.put(str(local), "2024/03/inv.pdf", MTIME_NS)
    assert body(s3_server, bucket, "backup/2024/03/inv.pdf") == b"%PDF-1.7 invoice"
    head = s3_server.client().head_object(Bucket=bucket, Key="backup/2024/03/inv.pdf")
    assert head["Metadata"]["mtime"] == "1600000000.123456789"
    entry = driver.stat("2024/03/inv.pdf")
    assert entry is not None
    assert entry.size == 16
    assert entry.hash == hashlib.md5(b"%PDF-1.7 invoice").hexdigest() == driver.local_hash(str(local))
    assert landed == RemoteEntry("2024/03/inv.pdf", 16, hash=entry.hash)
    assert driver.list() == {"2024/03/inv.pdf": entry}
    assert driver.stat("2024/03") is None
    assert driver.stat("nothing") is None


def test_multipart_etag_is_reproduced_locally(
    driver: Driver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # moto accepts 5 MiB parts; a smaller part size keeps this test fast and uses
    # the same code path as a 40 GiB file with real part sizes
    monkeypatch.setattr(s3_backend, "MIN_PART", 5 * 1024 * 1024)
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(11 * 1024 * 1024 + 5))
    landed = driver.put(str(local), "big.bin", MTIME_NS)
    remote = driver.stat("big.bin")
    assert remote is not None and remote.hash is not None
    assert remote.hash.endswith("-3")
    assert s3_etag(str(local)) == remote.hash
    assert landed == RemoteEntry("big.bin", 11 * 1024 * 1024 + 5, hash=remote.hash)
    # a file that differs in one byte does not match
    data = bytearray(local.read_bytes())
    data[-1] ^= 1
    local.write_bytes(bytes(data))
    assert s3_etag(str(local)) != remote.hash


def test_a_large_file_moved_keeps_its_etag_and_its_mtime(
    driver: Driver, s3_server: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A plain copy gave a multipart upload the MD5 of its bytes for an ETag: `mirror
    verify` then said 'content differs (hash)' for a large file renamed in the source,
    and a listing took the copy for one changed on the target."""
    monkeypatch.setattr(s3_backend, "MIN_PART", 5 * 1024 * 1024)
    local = tmp_path / "scan.tif"
    local.write_bytes(os.urandom(11 * 1024 * 1024 + 5))
    landed = driver.put(str(local), "2024/scan.tif", MTIME_NS)
    driver.move("2024/scan.tif", "archive/scan.tif")
    assert driver.list() == {"archive/scan.tif": RemoteEntry("archive/scan.tif", landed.size, ANY, landed.hash)}
    assert landed.hash == s3_etag(str(local))
    assert body(s3_server, bucket, "backup/archive/scan.tif") == local.read_bytes()
    head = s3_server.client().head_object(Bucket=bucket, Key="backup/archive/scan.tif")
    assert head["Metadata"]["mtime"] == "1600000000.123456789"


def test_put_replaces_and_move_and_delete(
    driver: Driver, s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    local = tmp_path / "f"
    local.write_bytes(b"one")
    driver.put(str(local), "a.txt", MTIME_NS)
    local.write_bytes(b"two!")
    driver.put(str(local), "a.txt", MTIME_NS)
    assert body(s3_server, bucket, "backup/a.txt") == b"two!"
    driver.move("a.txt", "sub/b.txt")
    assert sorted(driver.list()) == ["sub/b.txt"]
    assert driver.remove_dir_if_empty("sub") is False
    driver.delete("sub/b.txt")
    assert driver.list() == {}
    assert driver.remove_dir_if_empty("sub") is True


def test_a_batch_of_deletions_is_one_request(
    driver: Driver, s3_server: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = s3_server.client()
    for i in range(40):
        client.put_object(Bucket=bucket, Key=f"backup/2024/{i:02d}.pdf", Body=b"%d" % i)
    client.put_object(Bucket=bucket, Key="backup/keep.pdf", Body=b"kept")
    calls: list[str] = []
    real = driver.fs.call_s3
    monkeypatch.setattr(
        driver.fs, "call_s3", lambda method, *a, **kw: calls.append(method) or real(method, *a, **kw)
    )
    outcomes = driver.delete_batch([f"2024/{i:02d}.pdf" for i in range(40)])
    assert outcomes == [None] * 40 and calls == ["delete_objects"]
    assert sorted(driver.list()) == ["keep.pdf"]


def test_missing_bucket_and_bad_credentials_are_config_errors(s3_server: S3Server) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        S3Driver.connect("s3://no-such-bucket-here/x", s3_server.options())
    with pytest.raises(ConfigError, match="unknown s3 option"):
        S3Driver.connect("s3://b/x", s3_server.options(endpoint="x"))


@pytest.mark.parametrize(
    ("option", "told"),
    [
        ({"verify": "no"}, "s3 option verify = 'no' names no CA bundle file; give true, false or the path of one"),
        ({"anon": "yes"}, "s3 option anon must be true or false, not 'yes'"),
        ({"region": 1}, "s3 option region must be text, not 1"),
        (
            {"timeout": "soon"},
            "s3 option timeout: expected a duration such as 30, '30s', '5m' or '1h', got 'soon'",
        ),
        ({"timeout": 0}, 's3 option timeout must be more than 0, not 0; for example "30s"'),
    ],
)
def test_an_option_of_the_wrong_type_is_a_config_error(
    s3_target: TargetSpec, tmp_path: Path, option: dict[str, object], told: str
) -> None:
    """verify = "no" (meant as false) was taken for the path of a CA bundle: every run
    failed with 'HTTPClientError: An HTTP Client raised an unhandled exception: [Errno 2]
    No such file or directory', exit 1."""
    source = tmp_path / "export"
    source.mkdir()
    spec = TargetSpec("s3", s3_target.url, {**s3_target.options, **option}, env=s3_target.env)
    config = config_file(spec, source, tmp_path / "mirror.toml")
    done = run("run", "-c", str(config), "--once", state=tmp_path / "state", env=s3_target.env)
    assert done.returncode == 2, done.stdout + done.stderr
    # one line, naming the config file and the target's table
    assert done.stderr.strip().splitlines() == [f"mirror: error: {config}: targets.t: {told}"], done.stderr


def test_unreachable_endpoint_is_transient(bucket: str) -> None:
    from tests.servers.sshd import free_port

    with pytest.raises(TransientError):
        dead = f"http://127.0.0.1:{free_port()}"
        S3Driver.connect(f"s3://{bucket}/x", {"endpoint_url": dead, "key": "k", "secret": "s"})


def test_an_endpoint_that_hangs_is_told_unreachable_after_its_timeout_a_try(bucket: str) -> None:
    """A gateway that takes connections and never answers: botocore's retries under
    s3fs's waited it out for 7 minutes, the target 'idle' with nothing pending meanwhile.
    Now each of s3fs's tries waits the ``timeout`` option once: 2 minutes by default."""
    hung = socket.create_server(("127.0.0.1", 0))
    taken: list[socket.socket] = []
    threading.Thread(target=lambda: taken.extend(iter(lambda: hung.accept()[0], None)), daemon=True).start()
    told: list[BaseException] = []
    options = {"endpoint_url": f"http://127.0.0.1:{hung.getsockname()[1]}", "key": "k", "secret": "s"}

    def connect() -> None:
        try:
            S3Driver.connect(f"s3://{bucket}/x", {**options, "timeout": "2s"})
        except MirrorError as exc:
            told.append(exc)

    attempt = threading.Thread(target=connect, daemon=True)
    attempt.start()
    attempt.join(timeout=60)
    assert not attempt.is_alive(), "still waiting for the endpoint after a minute"
    assert isinstance(told[0], TransientError), told
    # each try waits on a connection of its own: botocore's retry under each of s3fs's
    # tries made it 4 (4 minutes with the default timeout)
    assert len(taken) == s3_backend.S3FS_TRIES, f"{len(taken)} tries"


def test_a_key_refused_mid_run_is_fatal_and_an_object_refused_alone_is_per_item(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """A revoked key made each file a PermissionError of its own: the target stayed
    'idle' with one failure per file, and no alert fired."""
    local = tmp_path / "inv.pdf"
    local.write_bytes(b"%PDF-1.7")
    key, secret = s3_server.iam_key(
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/backup/private/*"},
    )
    # connected while moto takes any key: keys refused later, as a revoked one is
    wrong_secret = S3Driver.connect(f"s3://{bucket}/backup", s3_server.options(key=key, secret="not-the-secret"))
    unknown = S3Driver.connect(f"s3://{bucket}/backup", s3_server.options())
    with s3_server.checking_credentials():
        allowed = S3Driver.connect(f"s3://{bucket}/backup", s3_server.options(key=key, secret=secret))
        allowed.put(str(local), "inv.pdf", MTIME_NS)
        with pytest.raises(PermissionError) as refused:
            allowed.put(str(local), "private/inv.pdf", MTIME_NS)
        error = allowed.classify(refused.value)
        assert isinstance(error, ItemError) and "AccessDenied" in str(error), error

        with pytest.raises(PermissionError) as refused:
            wrong_secret.put(str(local), "inv2.pdf", MTIME_NS)
        assert str(wrong_secret.classify(refused.value)) == (
            "s3 refused the credentials (SignatureDoesNotMatch): the secret does not match the access key; "
            "check key and secret"
        )
        calls = {
            "put": lambda: unknown.put(str(local), "inv3.pdf", MTIME_NS),
            # a HEAD answer has no body: only its 403 tells
            "stat": lambda: unknown.stat("inv.pdf"),
            "move": lambda: unknown.move("inv.pdf", "moved.pdf"),
        }
        for name, call in calls.items():
            with pytest.raises(OSError) as refused:
                call()
            assert isinstance(unknown.classify(refused.value), FatalError), name
        assert all(isinstance(outcome, FatalError) for outcome in unknown.delete_batch(["inv.pdf"]))


def test_a_key_revoked_while_watching_stops_the_target_with_the_reason(
    s3_server: S3Server, s3_target: TargetSpec, tmp_path: Path
) -> None:
    """Each new invoice failed on its own ('failed: inv-1.pdf: PermissionError: The AWS
    Access Key Id you provided does not exist'), status said '(running, idle)'."""
    source, state, log = tmp_path / "export", tmp_path / "state", tmp_path / "mirror.log"
    source.mkdir()
    (source / "first.pdf").write_bytes(b"first")
    config = tmp_path / "mirror.toml"
    config.write_text(
        f'source = "{source}"\n[defaults]\nsettle = "0.2s"\n'
        f'[targets.s3]\nurl = "{s3_target.url}"\n'
        "options = { " + ", ".join(f'{k} = "{v}"' for k, v in s3_target.options.items()) + " }\n"
    )
    proc = start("run", "-c", str(config), state=state, env=s3_target.env, log=log)
    try:
        wait_for(lambda: "1 sent" in log.read_text(), timeout=30, what="the first copy")
        with s3_server.checking_credentials():
            for i in range(3):
                (source / f"inv-{i}.pdf").write_bytes(b"invoice %d" % i)
            wait_for(lambda: "target stopped" in log.read_text(), timeout=30, what="the target stopped")
            status = run("status", "-c", str(config), state=state, env=s3_target.env)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    # a new file's first request may be the HEAD asking what stands at its path, whose
    # 403 carries no error code: then the key is named among what to check
    reasons = (
        "s3 refused the credentials (InvalidAccessKeyId): the access key is not known",
        "refused; check key, secret (or profile) and the bucket policy",
    )
    assert any("[s3] target stopped: s3" in line and r in line for line in text.splitlines() for r in reasons), (
        text
    )
    assert "failed: inv-" not in text, text
    assert status.returncode == 1, status.stdout
    assert any(r in status.stdout for r in reasons), status.stdout


class Proxy:
    """A TCP proxy to the S3 server; :meth:`lose_server` makes it a load balancer whose
    server went away: open connections closed under the client, new ones accepted and
    closed at once."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.lost = threading.Event()
        #: set: the parts of multipart uploads are held back, never sent on (a link that hangs)
        self.holding_parts = threading.Event()
        #: set once a part was held back
        self.held = threading.Event()
        #: set: nothing the client sends reaches the server, which so never answers
        self.hanging = threading.Event()
        #: once this many bytes went to the server, what the client sends is no longer
        #: read (a server that stopped taking an upload, its TCP window closed)
        self.stall_after: int | None = None
        self._forwarded = 0
        self.sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            if self.lost.is_set():
                client.close()
                continue
            server = socket.create_connection(("127.0.0.1", self.port))
            self.sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, outgoing: bool = False) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if outgoing and self.stall_after is not None:
                    self._forwarded += len(data)
                    if self._forwarded > self.stall_after:
                        return  # the socket stays open, unread
                if outgoing and self.holding_parts.is_set() and b"partNumber=" in data:
                    self.held.set()
                    return
                if not (outgoing and self.hanging.is_set()):
                    sink.sendall(data)

    def lose_server(self) -> None:
        self.lost.set()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def test_a_folder_made_in_the_s3_console_is_no_one_s_file(
    s3_server: S3Server, s3_target: TargetSpec, tmp_path: Path
) -> None:
    """'Create folder' in the console leaves a marker object, 'mirror/Scans/': it was taken
    for someone's file 'Scans', said to be moved into the trash (nothing was), and verify
    named it among the target's files."""
    source, state = tmp_path / "export", tmp_path / "state"
    (source / "Scans").mkdir(parents=True)
    (source / "Scans" / "scan 1.pdf").write_bytes(b"scan")
    config = tmp_path / "mirror.toml"
    config.write_text(
        f'source = "{source}"\n[targets.s3]\nurl = "{s3_target.url}"\n'
        "options = { " + ", ".join(f'{k} = "{v}"' for k, v in s3_target.options.items()) + " }\n"
    )
    bucket = s3_target.url.removeprefix("s3://").split("/")[0]
    s3_server.client().put_object(Bucket=bucket, Key="mirror/Scans/", Body=b"")
    done = run("run", "-c", str(config), "--once", state=state, env=s3_target.env)
    assert done.returncode == 0 and "trash" not in done.stdout + done.stderr, done.stdout + done.stderr
    checked = run("verify", "-c", str(config), state=state, env=s3_target.env)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_bucket_deleted_and_made_again_while_watching_is_filled_again(
    s3_server: S3Server, s3_target: TargetSpec, tmp_path: Path
) -> None:
    """An admin's cleanup deletes the bucket, and it is made again, empty: 'The specified
    bucket does not exist' failed one file, the bucket made again got only the files
    written since, and status said in sync with every earlier file missing."""
    source, state, log = tmp_path / "export", tmp_path / "state", tmp_path / "mirror.log"
    source.mkdir()
    for i in range(5):
        (source / f"old-{i}.pdf").write_bytes(b"invoice %d" % i)
    config = tmp_path / "mirror.toml"
    config.write_text(
        f'source = "{source}"\n[defaults]\nsettle = "0.2s"\n'
        f'[targets.s3]\nurl = "{s3_target.url}"\n'
        "options = { " + ", ".join(f'{k} = "{v}"' for k, v in s3_target.options.items()) + " }\n"
    )
    bucket = s3_target.url.removeprefix("s3://").split("/")[0]
    client = s3_server.client()

    def keys() -> set[str]:
        try:
            listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        except client.exceptions.NoSuchBucket:
            return set()
        return {o["Key"].removeprefix("mirror/") for o in listed}

    proc = start("run", "-c", str(config), state=state, env=s3_target.env, log=log)
    try:
        wait_for(lambda: len(keys()) == 5, timeout=30, what="the first copy", log=log)
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": f"mirror/{k}"} for k in keys()]})
        client.delete_bucket(Bucket=bucket)
        (source / "new-1.pdf").write_bytes(b"written while the bucket was gone")
        wait_for(lambda: "bucket does not exist" in log.read_text(), timeout=30, what="the bucket missed", log=log)
        client.create_bucket(Bucket=bucket)
        (source / "new-2.pdf").write_bytes(b"written once it was back")
        everything = {p.name for p in source.iterdir()}
        wait_for(lambda: keys() == everything, timeout=60, what="the bucket filled again", log=log)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def through(proxy: Proxy, source: Path, s3_target: TargetSpec, tmp_path: Path, **options: str) -> Path:
    """A config mirroring ``source`` to the S3 target through ``proxy``, with ``options``."""
    options = {
        **s3_target.options,
        "endpoint_url": f"http://127.0.0.1:{proxy.listener.getsockname()[1]}",
        **options,
    }
    config = tmp_path / "mirror.toml"
    config.write_text(
        f'source = "{source}"\n[defaults]\nsettle = "0.2s"\n'
        f'[targets.s3]\nurl = "{s3_target.url}"\n'
        "options = { " + ", ".join(f'{k} = "{v}"' for k, v in options.items()) + " }\n"
    )
    return config


def test_an_endpoint_that_stops_answering_shows_as_retrying_in_status(
    s3_server: S3Server, s3_target: TargetSpec, tmp_path: Path
) -> None:
    """The S3 endpoint stopped answering (a load balancer that hangs): each request waited
    out botocore's 60 s, tried again for minutes before the target counted as down, and
    status said syncing, in sync (exit 0), all along. Status now tells what is tried again
    and since when, until an answer comes; the timeout option shortens each wait."""
    proxy = Proxy(int(s3_server.endpoint.rsplit(":", 1)[1]))
    source, state, log = tmp_path / "export", tmp_path / "state", tmp_path / "mirror.log"
    source.mkdir()
    (source / "first.pdf").write_bytes(b"first")
    config = through(proxy, source, s3_target, tmp_path, timeout="1s")
    env = {**s3_target.env, "AWS_MAX_ATTEMPTS": "1"}

    def status() -> subprocess.CompletedProcess[str]:
        return run("status", "-c", str(config), state=state, env=env)

    proc = start("run", "-c", str(config), state=state, env=env, log=log)
    try:
        wait_for(lambda: "1 sent" in log.read_text(), timeout=30, what="the first copy", log=log)
        proxy.hanging.set()
        (source / "second.pdf").write_bytes(b"second")
        wait_for(
            lambda: "retrying since" in status().stdout, timeout=30, what="status telling of retries", log=log
        )
        assert "timeout" in status().stdout.lower()
        proxy.hanging.clear()
        bucket, _, prefix = s3_target.url.removeprefix("s3://").partition("/")
        key = f"{prefix.strip('/')}/second.pdf"
        client = s3_server.client()
        wait_for(lambda: client.list_objects_v2(Bucket=bucket, Prefix=key)["KeyCount"] == 1, 60, "the send", log)
        wait_for(lambda: status().returncode == 0, timeout=30, what="status in sync again", log=log)
        assert "retrying" not in status().stdout
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_connections_reset_by_the_server_leave_no_asyncio_errors_in_the_log(
    s3_server: S3Server, s3_target: TargetSpec, tmp_path: Path
) -> None:
    """Each request cut off logged 'error   Task exception was never retrieved\\nfuture:
    <Task finished ... ClientRequest.write_bytes() ... ClientConnectionResetError(...)>',
    with no target named: 19 of 21 lines of the log."""
    proxy = Proxy(int(s3_server.endpoint.rsplit(":", 1)[1]))
    source, state, log = tmp_path / "export", tmp_path / "state", tmp_path / "mirror.log"
    source.mkdir()
    (source / "first.pdf").write_bytes(b"first")
    config = through(proxy, source, s3_target, tmp_path)
    # botocore's own retries (5 attempts, backing off) would hold mirror's back for long
    env = {**s3_target.env, "AWS_MAX_ATTEMPTS": "1"}
    proc = start("run", "-c", str(config), state=state, env=env, log=log)
    try:
        wait_for(lambda: "1 sent" in log.read_text(), timeout=30, what="the first copy")
        proxy.lose_server()
        for i in range(3):
            (source / f"inv-{i}.pdf").write_bytes(os.urandom(50_000))
        wait_for(lambda: "[s3] retrying" in log.read_text(), timeout=30, what="mirror's retry")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    assert "Task exception" not in text and "future:" not in text, text


def test_an_upload_to_an_endpoint_that_stops_taking_it_fails_after_its_timeouts(
    s3_server: S3Server, s3_target: TargetSpec, tmp_path: Path
) -> None:
    """An endpoint that stopped reading amid an upload (a hung server, a middlebox that
    closed the window): aiohttp waited for the go-ahead to send a part (Expect:
    100-continue), or for room to send it, with no timeout. mirror run --once hung for
    good, and in watch mode status said in sync."""
    proxy = Proxy(int(s3_server.endpoint.rsplit(":", 1)[1]))
    proxy.stall_after = 3_000_000
    source = tmp_path / "export"
    source.mkdir()
    (source / "scan.tif").write_bytes(os.urandom(24 * 1024 * 1024))
    config = through(proxy, source, s3_target, tmp_path, timeout="2s")
    done = run("run", "-c", str(config), "--once", state=tmp_path / "state", env=s3_target.env, timeout=100)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "s3: failed: scan.tif: gave up after" in done.stderr, done.stderr


def test_an_upload_whose_abort_failed_as_the_link_dropped_is_aborted_after_the_retry_s(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """The link dropped during a large upload, and the abort of its parts failed with it;
    the retry's upload took its place in the record, so no listing pass ever aborted the
    first, whose parts stayed stored and billed for good."""
    proxy = Proxy(int(s3_server.endpoint.rsplit(":", 1)[1]))
    proxy.holding_parts.set()
    scan = tmp_path / "scan.tif"
    scan.write_bytes(os.urandom(40 * 1024 * 1024))  # sent in parts
    endpoint = f"http://127.0.0.1:{proxy.listener.getsockname()[1]}"
    # a part whose link drops with the window closed fails after the timeout, unacknowledged
    options = s3_server.options(endpoint_url=endpoint, timeout="5s")
    driver = S3Driver.connect(f"s3://{bucket}/backup", options)
    sending, failed = putting(driver, scan, "scan.tif", MTIME_NS)
    wait_for(proxy.held.is_set, timeout=30, what="the upload under way")
    proxy.lose_server()  # the upload and its abort fail
    sending.join(timeout=60)
    assert failed and not sending.is_alive()
    proxy.lost.clear()
    proxy.holding_parts.clear()
    driver.put(str(scan), "scan.tif", MTIME_NS)  # the retry
    assert driver.drop_abandoned() == ["scan.tif"]
    driver.close()
    assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def upload_held_back(
    s3_server: S3Server, s3_target: TargetSpec, tmp_path: Path, *args: str, scans: int = 1
) -> tuple[subprocess.Popen[str], Path, Path, Proxy, Callable[[], list[str]], str, bytes]:
    """``mirror run ARGS`` sending a large scan (or ``scans`` of them) to S3 through a
    link that holds back their parts, once their multipart uploads are open; beside it,
    another tool's upload to the same key. The process, its config and state folder, the
    proxy, a function giving the ids of the bucket's open uploads, the other tool's upload
    id and the scan."""
    proxy = Proxy(int(s3_server.endpoint.rsplit(":", 1)[1]))
    proxy.holding_parts.set()
    source, state = tmp_path / "export", tmp_path / "state"
    source.mkdir()
    scan = os.urandom(40 * 1024 * 1024)
    (source / "scan.tif").write_bytes(scan)
    for i in range(2, scans + 1):
        (source / f"scan-{i}.tif").write_bytes(scan)
    for written in source.iterdir():
        # settled: a first pass that found them young left them to watch passes, which
        # send large files one at a time (the bulk lane), so two uploads were never open
        os.utime(written, (time.time() - 3600,) * 2)
    options = {**s3_target.options, "endpoint_url": f"http://127.0.0.1:{proxy.listener.getsockname()[1]}"}
    config = config_file(TargetSpec("s3", s3_target.url, options, env=s3_target.env), source, tmp_path / "m.toml")
    bucket = s3_target.url.split("/")[2]
    client = s3_server.client()
    theirs = str(client.create_multipart_upload(Bucket=bucket, Key="mirror/scan.tif")["UploadId"])

    def uploads() -> list[str]:
        return [u["UploadId"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]

    proc = start("run", "-c", str(config), *args, state=state, env=s3_target.env, log=tmp_path / "mirror.log")
    try:
        # a part is sent once mirror has recorded its upload: the upload alone, a kill
        # may cut off before it is recorded, and the next run cannot tell it from another
        # tool's (S3 lists neither metadata nor tags of an upload)
        wait_for(proxy.held.is_set, timeout=30, what="mirror's upload under way")
        wait_for(lambda: len(uploads()) == scans + 1, timeout=30, what="every upload open")
    except BaseException:
        proc.kill()
        proc.wait(timeout=30)
        raise
    return proc, config, state, proxy, uploads, theirs, scan


def test_an_upload_a_kill_cut_off_is_aborted_by_the_next_run_and_another_tools_is_not(
    s3_server: S3Server, s3_target: TargetSpec, tmp_path: Path
) -> None:
    """A kill during a large upload left its multipart upload open for good ('14 parts,
    230686720 bytes stored'), kept and billed by S3, out of any listing, while the next
    run sent the file again and status and verify said all was well."""
    proc, config, state, proxy, uploads, theirs, scan = upload_held_back(s3_server, s3_target, tmp_path, "--once")
    proc.kill()
    proc.wait(timeout=30)
    proxy.holding_parts.clear()
    again = run("run", "-c", str(config), "--once", state=state, env=s3_target.env)
    assert again.returncode == 0 and "1 sent" in again.stdout, again.stdout + again.stderr
    assert "aborted the upload of scan.tif a stopped run left unfinished" in again.stdout + again.stderr
    assert uploads() == [theirs]
    assert body(s3_server, s3_target.url.split("/")[2], "mirror/scan.tif") == scan


def test_a_stop_that_gives_up_on_an_upload_aborts_it(
    s3_server: S3Server, s3_target: TargetSpec, tmp_path: Path
) -> None:
    """systemctl stop during a large upload on a slow link: 'stopped with an upload still
    running', and its parts stayed stored and billed on S3."""
    proc, _, _, _, uploads, theirs, _ = upload_held_back(s3_server, s3_target, tmp_path)
    proc.terminate()
    assert proc.wait(timeout=60) == 0
    assert uploads() == [theirs]


def test_a_stop_that_gives_up_on_two_uploads_aborts_both(
    s3_server: S3Server, s3_target: TargetSpec, tmp_path: Path
) -> None:
    """The index was closed before the S3 connection: the first abort's record could not
    be dropped, and the second upload stayed open, its parts stored and billed."""
    proc, *_, uploads, theirs, _ = upload_held_back(s3_server, s3_target, tmp_path, scans=2)
    proc.terminate()
    assert proc.wait(timeout=60) == 0
    assert uploads() == [theirs]


def test_a_first_copy_of_large_scans_keeps_memory_bounded(s3_target: TargetSpec, tmp_path: Path) -> None:
    """Each large file held ten parts of 16 MiB in memory while it was sent, eight files
    at once: five 128 MiB scans took 1.4 GiB of memory, where SFTP or WebDAV take 50 MiB.
    Four 40 MiB scans (three parts each) held all their parts at once."""
    source, state = tmp_path / "export", tmp_path / "state"
    source.mkdir()
    for i in range(4):
        (source / f"scan-{i}.tif").write_bytes(os.urandom(40 * 1024 * 1024))
    config = config_file(s3_target, source, tmp_path / "mirror.toml")
    # the peak memory of mirror alone: this process's other children count in its own
    measured = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    env = {**os.environ, "MIRROR_STATE_DIR": str(state), **s3_target.env}
    done = subprocess.run(
        [sys.executable, "-c", measured, *MIRROR, "run", "-c", str(config), "--once"],
        capture_output=True,
        text=True,
        env=env,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0 and "4 sent" in done.stdout, done.stdout + done.stderr
    peak_mib = int(done.stdout.split()[-1]) // 1024
    assert peak_mib < 320, f"{peak_mib} MiB"


def invoices(source: Path) -> dict[str, bytes]:
    """A month of invoices and a large scan (sent in parts), written into ``source``."""
    made = {f"2026/03/Rechnung-{i:02d}.pdf": b"Rechnung %02d Summe 100,00 EUR" % i for i in range(8)}
    made["scans/2026-03.tif"] = os.urandom(33 * 1024 * 1024)
    for rel, data in made.items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_bytes(data)
    return made


def mirrored_then_restored(
    s3_target: TargetSpec, tmp_path: Path, copy: Callable[[str, str], object]
) -> tuple[Path, Path, Path, dict[str, bytes]]:
    """A source mirrored to S3, then put back as a restore would, every file copied anew
    with ``copy``: the source, state folder, config and what the source holds."""
    source, state = tmp_path / "export", tmp_path / "state"
    made = invoices(source)
    config = config_file(s3_target, source, tmp_path / "mirror.toml")
    first = run("run", "-c", str(config), "--once", state=state, env=s3_target.env)
    assert first.returncode == 0 and "9 sent" in first.stdout, first.stdout + first.stderr
    shutil.copytree(source, tmp_path / "restored", copy_function=copy)
    shutil.rmtree(source)
    (tmp_path / "restored").rename(source)
    return source, state, config, made


def test_an_object_changed_on_the_target_with_its_size_is_sent_again_by_a_rescan(
    s3_server: S3Server, s3_target: TargetSpec, tmp_path: Path
) -> None:
    """A copy re-uploaded in the console with other bytes of the same size: `mirror verify`
    said 'content differs (hash)', but `mirror run --once --rescan` sent nothing (exit 0),
    and status said all was well: the damage stayed."""
    source, state = tmp_path / "export", tmp_path / "state"
    made = invoices(source)
    config = config_file(s3_target, source, tmp_path / "mirror.toml")
    first = run("run", "-c", str(config), "--once", state=state, env=s3_target.env)
    assert first.returncode == 0 and "9 sent" in first.stdout, first.stdout + first.stderr
    bucket, prefix = s3_target.url.removeprefix("s3://").split("/", 1)
    key = f"{prefix}/2026/03/Rechnung-07.pdf"
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=b"Rechnung 07 Summe 999,99 EUR")

    repair = run("run", "-c", str(config), "--once", "--rescan", state=state, env=s3_target.env)
    assert repair.returncode == 0 and "1 sent" in repair.stdout, repair.stdout + repair.stderr
    assert body(s3_server, bucket, key) == made["2026/03/Rechnung-07.pdf"]
    verify = run("verify", "-c", str(config), state=state, env=s3_target.env)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_source_restored_with_new_inodes_is_matched_by_hash_not_sent_again(
    s3_target: TargetSpec, tmp_path: Path
) -> None:
    """After a restore with `cp -a` (same names, sizes and times; new inodes) the next
    run sent every file to S3 again, the large scan too, though S3 held the same bytes."""
    source, state, config, made = mirrored_then_restored(s3_target, tmp_path, shutil.copy2)
    assert (source / "scans/2026-03.tif").read_bytes() == made["scans/2026-03.tif"]

    again = run("run", "-c", str(config), "--once", state=state, env=s3_target.env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 sent (0 B), 9 already there" in again.stdout, again.stdout


def test_a_source_restored_with_new_times_is_matched_by_hash_not_sent_again(
    s3_server: S3Server, s3_target: TargetSpec, tmp_path: Path
) -> None:
    """A restore that lost the times (`cp -r`, a download) made the next run send every
    file to S3 again, the large scan too, though S3 held the same bytes; one given an
    older time had its copy moved into the trash as well."""
    source, state, config, made = mirrored_then_restored(s3_target, tmp_path, shutil.copyfile)
    os.utime(source / "2026/03/Rechnung-01.pdf", (1_600_000_000, 1_600_000_000))  # older than the copy sent
    edited = b"Rechnung 05 Summe 500,00 EUR"  # a real edit among them, of the same size
    assert len(edited) == len(made["2026/03/Rechnung-05.pdf"])
    (source / "2026/03/Rechnung-05.pdf").write_bytes(edited)

    again = run("run", "-c", str(config), "--once", state=state, env=s3_target.env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 sent (28 B), 8 already there" in again.stdout, again.stdout
    bucket, prefix = s3_target.url.removeprefix("s3://").split("/", 1)
    assert body(s3_server, bucket, f"{prefix}/2026/03/Rechnung-05.pdf") == edited
    listed = s3_server.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    assert not [o["Key"] for o in listed.get("Contents", []) if ".mirror-trash" in o["Key"]]
    settled = run("run", "-c", str(config), "--once", state=state, env=s3_target.env)
    assert "0 sent (0 B), 0 deleted" in settled.stdout, settled.stdout


def test_a_key_over_1024_bytes_with_its_prefix_is_not_mirrored_and_other_files_are(
    s3_server: S3Server, s3_target: TargetSpec, tmp_path: Path
) -> None:
    """A deep folder of German names, 624 characters below the prefix but a key of over
    1024 bytes: mirror planned it (it counted characters, without the prefix), and real
    S3 answers KeyTooLongError on every pass, holding back every deletion (moto takes it)."""
    source = tmp_path / "export"
    folder = source.joinpath(*["Übergabeprotokolle " + "ü" * 107] * 4)
    folder.mkdir(parents=True)
    deep = folder / ("Prüfbericht " + "ä" * 100 + ".pdf")
    deep.write_bytes(b"%PDF report")
    (source / "Rechnung.pdf").write_bytes(b"%PDF invoice")
    rel = deep.relative_to(source).as_posix()
    bucket, prefix = s3_target.url.removeprefix("s3://").split("/", 1)
    assert len(rel) < 1024 < len(f"{prefix}/{rel}".encode())
    config = config_file(s3_target, source, tmp_path / "mirror.toml")
    state = tmp_path / "state"
    ran = run("run", "-c", str(config), "--once", state=state, env=s3_target.env)
    assert ran.returncode == 1 and "1 sent" in ran.stdout, ran.stdout + ran.stderr
    limit = 1024 - len(f"{prefix}/".encode())
    why = f"path is {len(rel.encode())} bytes of UTF-8, longer than the target allows ({limit} bytes)"
    assert f"not mirrored: {rel}: {why}" in ran.stderr, ran.stderr
    listed = s3_server.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    assert [o["Key"] for o in listed.get("Contents", [])] == [f"{prefix}/Rechnung.pdf"]
    checked = run("verify", "-c", str(config), state=state, env=s3_target.env)
    assert checked.returncode == 1 and f"t: {rel}: not mirrored: {why}" in checked.stdout, checked.stdout


def test_a_dry_run_on_a_new_machine_does_not_promise_uploads_a_hash_will_spare(
    s3_target: TargetSpec, tmp_path: Path
) -> None:
    """With the state lost, a dry run said 'put ... (new)' for every file the bucket held
    already; the real run then sent none of them ('9 already there')."""
    source = tmp_path / "export"
    invoices(source)
    config = config_file(s3_target, source, tmp_path / "mirror.toml")
    first = run("run", "-c", str(config), "--once", state=tmp_path / "state", env=s3_target.env)
    assert first.returncode == 0 and "9 sent" in first.stdout, first.stdout + first.stderr

    lost = tmp_path / "new-machine"
    dry = run("run", "-c", str(config), "--once", "--dry-run", state=lost, env=s3_target.env)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "\n  put   " not in dry.stdout, dry.stdout
    line = "  put or adopt 2026/03/Rechnung-03.pdf -> 2026/03/Rechnung-03.pdf  (new; not sent if the copy there"
    assert line in dry.stdout, dry.stdout
    real = run("run", "-c", str(config), "--once", state=lost, env=s3_target.env)
    assert "0 sent (0 B), 9 already there" in real.stdout, real.stdout + real.stderr
