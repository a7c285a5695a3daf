"""OneDriveDriver (httpx + msal) against the local Graph fake, and its quickXorHash."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import random
import stat
import time
import unicodedata
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msal
import pytest
from click.testing import CliRunner
from mirror.backends.onedrive import CHUNK_UNIT, OneDriveDriver, TokenSource, quickxor_hash
from mirror.backends.onedrive_auth import command as auth_command
from mirror.backends.onedrive_auth import login

from mirror import api
from mirror.driver import MemoryState
from mirror.errors import ConfigError, FatalError, ItemError, TargetFull, TransientError
from mirror.events import Report
from mirror.registry import Preset
from tests.cli import run
from tests.fakes.graph_api import quickxor_reference
from tests.reliability.common import write_config
from tests.servers.onedrive import GraphFake
from tests.support import TargetSpec, putting, rewrite_in_place

MTIME = 1_700_000_000_000_000_000
# (size, base64 data, quickXorHash) published with Microsoft's reference implementation
VECTORS = [
    (0, "", "AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
    (1, "Sg==", "SgAAAAAAAAAAAAAAAQAAAAAAAAA="),
    (16, "2fuxhBJXtpWFe8dOfdGeHw==", "O9tHLAghgSvYohKFyMMxnNCHaHg="),
    (17, "XBV6YKU9V7yMakZnFIxIkuU=", "HbplHsBQih5cgReMQYMRzkABRiA="),
    (20, "T6LYJIfDh81JrAK309H2JMJTXis=", "zBTHrspn3mEcohlJdIUAbjGNaNg="),
]


@pytest.fixture
def driver(onedrive_target: TargetSpec) -> OneDriveDriver:
    d = OneDriveDriver.connect(onedrive_target.url, onedrive_target.options)
    assert isinstance(d, OneDriveDriver)
    yield d
    d.close()


def local(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def root_path(spec: TargetSpec) -> str:
    return spec.url.removeprefix("onedrive://")


@pytest.mark.parametrize(("size", "data", "expected"), VECTORS)
def test_quickxor_matches_published_vectors(tmp_path: Path, size: int, data: str, expected: str) -> None:
    raw = base64.b64decode(data)
    assert len(raw) == size
    assert quickxor_hash(local(tmp_path, "v", raw)) == expected == quickxor_reference(raw)


def test_quickxor_agrees_with_the_reference_across_block_edges(tmp_path: Path) -> None:
    rnd = random.Random(5)
    for size in (159, 160, 161, 4999, 160 * 32768 - 1, 160 * 32768 + 7):
        data = rnd.randbytes(size)
        assert quickxor_hash(local(tmp_path, "r", data)) == quickxor_reference(data), size


def test_twenty_mib_file_goes_up_through_an_upload_session(
    driver: OneDriveDriver, graph_fake: GraphFake, onedrive_target: TargetSpec, tmp_path: Path
) -> None:
    data = os.urandom(20 * 1024 * 1024 + 4321)
    src = local(tmp_path, "big.bin", data)
    driver.makedirs("scans")
    entry = driver.put(src, "scans/big.bin", MTIME)
    item = graph_fake.state.find(f"{root_path(onedrive_target)}/scans/big.bin")
    assert item is not None and item.content == data
    assert entry is not None and entry.hash == driver.local_hash(src) and entry.size == len(data)
    assert entry.mtime_ns == MTIME
    chunks = [r for r in graph_fake.state.requests if r[0] == "PUT" and r[1].startswith("/upload/")]
    assert len(chunks) == -(-len(data) // driver.chunk_size) and driver.chunk_size % CHUNK_UNIT == 0
    assert not any(has_auth for _, _, has_auth in chunks)


def test_upload_session_resumes_after_a_broken_chunk_and_after_a_restart(
    graph_fake: GraphFake, onedrive_target: TargetSpec, tmp_path: Path
) -> None:
    opts = {**onedrive_target.options, "chunk_size": CHUNK_UNIT * 4, "max_retries": 0}
    data = os.urandom(CHUNK_UNIT * 4 * 5 + 99)
    src = local(tmp_path, "big", data)
    state = MemoryState()
    first = OneDriveDriver.connect(onedrive_target.url, opts)
    first.state = state
    first.makedirs("")
    # the third chunk hits a 503 and the driver gives up (max_retries 0): the session stays
    calls = {"n": 0}
    original = first.http.put

    def flaky_put(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            with graph_fake.state.lock:
                graph_fake.state.throttle.append((503, None))
        return original(*args, **kwargs)

    first.http.put = flaky_put  # type: ignore[method-assign]
    with pytest.raises(Exception) as info:
        first.put(src, "big.bin", MTIME)
    assert isinstance(first.classify(info.value), TransientError)
    first.close()
    second = OneDriveDriver.connect(onedrive_target.url, opts)
    second.state = state
    graph_fake.state.requests.clear()
    second.put(src, "big.bin", MTIME)
    item = graph_fake.state.find(f"{root_path(onedrive_target)}/big.bin")
    assert item is not None and item.content == data
    sent = [r for r in graph_fake.state.requests if r[0] == "PUT" and r[1].startswith("/upload/")]
    assert len(sent) == 4  # chunks 3..6 only: the first two were not sent again
    assert not any(r[1].endswith("/createUploadSession") for r in graph_fake.state.requests)
    second.close()


def test_throttling_converges_and_honours_retry_after(
    driver: OneDriveDriver, graph_fake: GraphFake, onedrive_target: TargetSpec, tmp_path: Path
) -> None:
    driver.makedirs("")
    with graph_fake.state.lock:
        graph_fake.state.throttle.extend([(429, 1), (503, None), (429, None)])
    started = time.monotonic()
    driver.put(local(tmp_path, "a", b"after the storm"), "t.txt", MTIME)
    assert time.monotonic() - started >= 1.0
    item = graph_fake.state.find(f"{root_path(onedrive_target)}/t.txt")
    assert item is not None and item.content == b"after the storm"


def test_throttling_beyond_the_budget_is_transient_with_retry_after(
    graph_fake: GraphFake, onedrive_target: TargetSpec, tmp_path: Path
) -> None:
    driver = OneDriveDriver.connect(onedrive_target.url, {**onedrive_target.options, "max_retries": 0})
    with graph_fake.state.lock:
        graph_fake.state.throttle.append((429, 17))
    with pytest.raises(Exception) as info:
        driver.list()
    err = driver.classify(info.value)
    assert isinstance(err, TransientError) and err.retry_after == 17
    driver.close()


def test_a_long_retry_after_is_left_to_the_engine(driver: OneDriveDriver, graph_fake: GraphFake) -> None:
    """Retry-After: 3600 was slept out in the driver, two minutes at a time, in silence;
    the engine waits for it instead, says so, and ends the wait when mirror stops."""
    with graph_fake.state.lock:
        graph_fake.state.throttle.append((429, 3600))
    started = time.monotonic()
    with pytest.raises(Exception) as info:
        driver.list()
    assert time.monotonic() - started < 5
    err = driver.classify(info.value)
    assert isinstance(err, TransientError) and err.retry_after == 3600


def test_a_run_whose_first_request_is_throttled_waits_and_sends(
    graph_fake: GraphFake, onedrive_target: TargetSpec, tmp_path: Path
) -> None:
    """The first request of a pass asks whether the target folder is still the one mirror
    filled: a 429 with Retry-After failed the whole --once run ("target failed", exit 1,
    nothing sent), where every later request waits as Graph asks."""
    source, state = tmp_path / "export", tmp_path / "state"
    source.mkdir()
    (source / "a.pdf").write_bytes(b"a")
    # max_retries 0: the driver hands each throttled answer to the engine at once
    options = {**onedrive_target.options, "max_retries": 0}
    config = write_config(tmp_path / "mirror.toml", source, {"od": (onedrive_target.url, options)})
    assert run("run", "--once", "-c", str(config), state=state).returncode == 0
    (source / "b.pdf").write_bytes(b"b")
    with graph_fake.state.lock:
        graph_fake.state.throttle.append((429, 1))
    second = run("run", "--once", "-c", str(config), state=state)
    assert second.returncode == 0, second.stderr
    item = graph_fake.state.find(f"{root_path(onedrive_target)}/b.pdf")
    assert item is not None and item.content == b"b"


def test_case_insensitive_replace_keeps_one_item(
    driver: OneDriveDriver, graph_fake: GraphFake, onedrive_target: TargetSpec, tmp_path: Path
) -> None:
    driver.makedirs("Docs")
    driver.put(local(tmp_path, "a", b"one"), "Docs/Report.PDF", MTIME)
    driver.put(local(tmp_path, "b", b"two"), "docs/report.pdf", MTIME)
    folder = graph_fake.state.find(f"{root_path(onedrive_target)}/Docs")
    assert folder is not None
    kids = graph_fake.state.children(folder)
    assert [(k.name, k.content) for k in kids] == [("Report.PDF", b"two")]
    assert list(driver.list()) == ["Docs/Report.PDF"]


@pytest.mark.parametrize(
    "name",
    [
        'a"b.txt',
        "what?.txt",
        "CON",
        "desktop.ini",
        "x_vti_y",
        " lead.txt",
        "trail.txt ",
        ".lock",
        "a:b",
        "LPT1",
        "~$lock.docx",
    ],
)
def test_refused_names_are_item_errors_with_the_reason(driver: OneDriveDriver, tmp_path: Path, name: str) -> None:
    src = local(tmp_path, "a", b"x")
    with pytest.raises(ItemError, match="OneDrive"):
        driver.put(src, f"ok/{name}", MTIME)


def test_too_long_path_is_an_item_error(driver: OneDriveDriver, tmp_path: Path) -> None:
    with pytest.raises(ItemError, match="400"):
        driver.put(local(tmp_path, "a", b"x"), "/".join(["d" * 99] * 4) + "/f.txt", MTIME)


def test_server_refusal_is_classified_as_item_error(driver: OneDriveDriver, tmp_path: Path) -> None:
    # a name the local check lets through reaches the server, which refuses it with a 400
    driver.check = lambda rel: None  # type: ignore[method-assign]
    with pytest.raises(Exception) as info:
        driver.makedirs("bad|name")
    assert isinstance(driver.classify(info.value), ItemError)


def test_a_full_drive_says_what_to_free(driver: OneDriveDriver) -> None:
    """It said only 'OneDrive answered 507 (quotaLimitReached: ...)'; the recycle bin,
    where mirror's deletions go, counts against the quota."""
    body = {"error": {"code": "quotaLimitReached", "message": "Insufficient Space Available"}}
    answer = httpx.Response(507, json=body, request=httpx.Request("PUT", "https://graph.example/x"))
    error = driver.classify(httpx.HTTPStatusError("full", request=answer.request, response=answer))
    assert isinstance(error, TargetFull)
    assert str(error) == (
        "the OneDrive is full (OneDrive answered 507 (quotaLimitReached: Insufficient Space Available)): free "
        "some space (empty its recycle bin too: mirror's deletions go there) or buy more, then run again"
    )


def test_special_characters_are_encoded(driver: OneDriveDriver, tmp_path: Path) -> None:
    names = ["a #1.txt", "100%20 done.txt", "ünïcode €.txt", "semi;colon&amp.txt"]
    driver.makedirs("sub dir")
    for i, name in enumerate(names):
        driver.put(local(tmp_path, f"f{i}", name.encode()), f"sub dir/{name}", MTIME)
    listed = driver.list()
    assert sorted(listed) == sorted(f"sub dir/{n}" for n in names)
    assert driver.stat("sub dir/100%20 done.txt").size == len(b"100%20 done.txt")


def test_move_delete_and_case_only_rename(
    driver: OneDriveDriver, graph_fake: GraphFake, onedrive_target: TargetSpec, tmp_path: Path
) -> None:
    driver.makedirs("in")
    driver.makedirs("out")
    driver.put(local(tmp_path, "a", b"moving"), "in/a.txt", MTIME)
    driver.put(local(tmp_path, "b", b"old"), "out/b.txt", MTIME)
    driver.move("in/a.txt", "out/b.txt")
    assert {k: v.size for k, v in driver.list().items()} == {"out/b.txt": 6}
    driver.move("out/b.txt", "out/B.txt")
    assert list(driver.list()) == ["out/B.txt"]
    driver.delete("out/B.txt")
    assert driver.list() == {}
    assert any(i.name == "B.txt" for i in graph_fake.state.recycle_bin)
    assert driver.remove_dir_if_empty("in") is True
    driver.put(local(tmp_path, "c", b"c"), "out/c.txt", MTIME)
    assert driver.remove_dir_if_empty("out") is False


@pytest.mark.parametrize("size", [5, 5 * 1024 * 1024], ids=["one request", "upload session"])
def test_someone_s_folder_where_mirror_s_file_was_is_never_replaced_nor_deleted(
    driver: OneDriveDriver, graph_fake: GraphFake, onedrive_target: TargetSpec, tmp_path: Path, size: int
) -> None:
    """A colleague's folder Report.pdf/ where mirror's file was: an edit (sent straight to
    its place), a move onto it and the file's removal each fail for that file, said as
    every backend says it, and the folder stays, out of the recycle bin."""
    binned = len(graph_fake.state.recycle_bin)
    driver.makedirs("Report.pdf")
    driver.put(local(tmp_path, "theirs", b"their own file"), "Report.pdf/theirs.txt", MTIME)
    driver.put(local(tmp_path, "mine", b"mine"), "b.pdf", MTIME)
    where = f"{root_path(onedrive_target)}/Report.pdf"
    with pytest.raises(ItemError) as put:
        driver.put(local(tmp_path, "edit", b"x" * size), "Report.pdf", MTIME)
    with pytest.raises(ItemError) as moved:
        driver.move("b.pdf", "Report.pdf")
    with pytest.raises(ItemError) as deleted:
        driver.delete("Report.pdf")
    assert [str(put.value), str(moved.value)] == [f"{where} on the target is a folder where a file goes"] * 2
    assert (
        str(deleted.value)
        == f"{where} on the target is a folder, not the file mirror put there; it is not deleted"
    )
    assert sorted(driver.list()) == ["Report.pdf/theirs.txt", "b.pdf"]
    assert len(graph_fake.state.recycle_bin) == binned  # the fake's drive serves every test


def test_moves_into_one_folder_take_one_request_each(
    driver: OneDriveDriver, graph_fake: GraphFake, tmp_path: Path
) -> None:
    driver.makedirs("2024")
    driver.makedirs("archive/2024")
    for i in range(10):
        driver.put(local(tmp_path, f"f{i}", b"%d" % i), f"2024/inv-{i}.pdf", MTIME)
    graph_fake.state.requests.clear()
    for i in range(10):
        driver.move(f"2024/inv-{i}.pdf", f"archive/2024/inv-{i}.pdf")
    made = [method for method, _, _ in graph_fake.state.requests]
    assert sorted(driver.list()) == sorted(f"archive/2024/inv-{i}.pdf" for i in range(10))
    # a PATCH per file, and one lookup of the folder they go to
    assert made == ["GET"] + ["PATCH"] * 10, made


def test_listing_pages_through_nextlink(driver: OneDriveDriver, tmp_path: Path) -> None:
    src = local(tmp_path, "a", b"p")
    driver.makedirs("many")
    for i in range(230):
        driver.put(src, f"many/{i:03d}.txt", MTIME)
    assert len(driver.list()) == 230


def test_a_listing_of_a_folder_deleted_since_its_parent_was_read_lists_the_rest(
    driver: OneDriveDriver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    driver.put(local(tmp_path, "old", b"old"), ".mirror-trash/2024-01-01/old.pdf", MTIME)
    driver.put(local(tmp_path, "kept", b"kept"), "kept.pdf", MTIME)
    gone = driver._item(".mirror-trash/2024-01-01")
    assert gone is not None
    real = driver._children

    def children(item_id: str) -> Iterator[dict[str, Any]]:
        if item_id == gone["id"]:  # the trash emptied in the web app, just now
            driver.request("DELETE", f"{driver.drive}/items/{item_id}")
        return real(item_id)

    monkeypatch.setattr(driver, "_children", children)
    assert set(driver.list()) == {"kept.pdf"}


def expire_access_token(spec: TargetSpec, refresh_token: str | None = None) -> None:
    """Drop the access token from the login, so the next call renews it (with ``refresh_token``)."""
    token_file = Path(str(spec.options["token_file"]))
    saved = json.loads(token_file.read_text())
    cache = json.loads(saved["cache"])
    cache["AccessToken"] = {}
    for rt in cache["RefreshToken"].values():
        rt["secret"] = refresh_token or rt["secret"]
    saved["cache"] = json.dumps(cache)
    token_file.write_text(json.dumps(saved))


def test_revoked_login_is_fatal(graph_fake: GraphFake, onedrive_target: TargetSpec) -> None:
    expire_access_token(onedrive_target, "revoked")
    driver = OneDriveDriver.connect(onedrive_target.url, onedrive_target.options)
    with pytest.raises(FatalError, match="mirror auth onedrive"):
        driver.list()
    driver.close()


def test_an_access_token_graph_refuses_before_it_expires_is_renewed_from_the_refresh_token(
    graph_fake: GraphFake, tmp_path: Path
) -> None:
    """Graph refused the cached access token before msal's clock said it expired: the run
    failed with 'run `mirror auth onedrive` again', though the refresh token was good."""
    token_file = tmp_path / "od.json"
    # a login of its own: its access token is no other test's
    login(
        graph_fake.state.client_id,
        f"{graph_fake.url}/common",
        str(token_file),
        graph_fake.ca_file,
        lambda _msg: None,
    )
    source = tmp_path / "export"
    source.mkdir()
    (source / "a.pdf").write_bytes(b"invoice a")
    target = (f"onedrive://Mirror Test {uuid.uuid4().hex[:10]}", graph_fake.options(str(token_file)))
    config = write_config(tmp_path / "mirror.toml", source, {"od": target})
    state = tmp_path / "state"
    assert run("run", "--once", "-c", str(config), state=state).returncode == 0
    [cached] = json.loads(json.loads(token_file.read_text())["cache"])["AccessToken"].values()
    graph_fake.state.revoke_access_token(cached["secret"])
    (source / "b.pdf").write_bytes(b"invoice b")
    second = run("run", "--once", "-c", str(config), state=state)
    assert second.returncode == 0 and "1 sent" in second.stdout, second.stdout + second.stderr


def test_an_outage_of_microsofts_login_service_is_waited_out(
    graph_fake: GraphFake, onedrive_target: TargetSpec, tmp_path: Path
) -> None:
    """A 503 from the token endpoint was 'unexpected error; will rescan' in the log, and
    nowhere else; --once said 'target failed: MsalServiceError: HTTP Error: 503'."""
    driver = OneDriveDriver.connect(onedrive_target.url, onedrive_target.options)
    driver.makedirs("")
    driver.close()
    expire_access_token(onedrive_target)
    driver = OneDriveDriver.connect(onedrive_target.url, {**onedrive_target.options, "max_retries": 0})
    graph_fake.state.token_outage.append(None)
    with pytest.raises(msal.exceptions.MsalServiceError) as info:
        driver.put(local(tmp_path, "a", b"x"), "a.pdf", MTIME)
    err = driver.classify(info.value)
    assert isinstance(err, TransientError) and "Microsoft's login service is unavailable" in str(err)
    driver.close()
    # msal answers a 503 without Retry-After itself for 60 s: a new client, as after a restart
    graph_fake.state.token_outage.append(1)
    driver = OneDriveDriver.connect(onedrive_target.url, onedrive_target.options)
    assert driver.put(local(tmp_path, "a", b"x"), "a.pdf", MTIME) is not None
    assert driver.stat("a.pdf") is not None
    driver.close()


@pytest.mark.parametrize("folder", ["Backup/Inv|2024", "Backup/ Invoices", "Backup/CON"])
def test_a_target_folder_whose_name_onedrive_refuses_is_a_config_error(
    onedrive_target: TargetSpec, tmp_path: Path, folder: str
) -> None:
    """Each file failed on its own with "OneDrive answered 400 (invalidRequest: ...)",
    naming the file, not the folder in the config."""
    source = tmp_path / "export"
    source.mkdir()
    (source / "a.pdf").write_bytes(b"a")
    target = (f"onedrive://{folder}", onedrive_target.options)
    config = write_config(tmp_path / "mirror.toml", source, {"od": target})
    result = run("run", "--once", "-c", str(config), state=tmp_path / "state")
    assert result.returncode == 2, result.stderr
    assert f"onedrive://{folder}" in result.stderr and "OneDrive" in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_a_missing_token_file_names_the_command_that_writes_it(tmp_path: Path) -> None:
    """It said to run `mirror auth onedrive --client-id ID`, which writes the default file,
    not the one the config names."""
    token_file = tmp_path / "my logins" / "od.json"
    with pytest.raises(ConfigError) as caught:
        TokenSource(str(token_file), None, None, None)
    assert f"run `mirror auth onedrive --client-id ID --token-file '{token_file}'`" in str(caught.value)


def test_auth_command_device_code_login_writes_a_private_token_file(graph_fake: GraphFake, tmp_path: Path) -> None:
    token_file = tmp_path / "cfg" / "od.json"
    result = CliRunner().invoke(
        auth_command,
        [
            "--client-id",
            graph_fake.state.client_id,
            "--token-file",
            str(token_file),
            "--authority-url",
            graph_fake.url,
            "--ca-certs",
            graph_fake.ca_file,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "ABCD-EFGH" in result.output and "user@example.com" in result.output
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert "refresh-" not in result.output
    driver = OneDriveDriver.connect(
        "onedrive://fresh",
        {"token_file": str(token_file), "graph_url": f"{graph_fake.url}/v1.0", "ca_certs": graph_fake.ca_file},
    )
    assert driver.list() == {}
    driver.close()


def test_unicode_spellings_of_one_name_are_not_sent_onto_one_item(
    onedrive_target: TargetSpec, graph_fake: GraphFake, tmp_path: Path
) -> None:
    """Über.pdf typed on Linux and copied from a Mac (decomposed) are two source files and
    one OneDrive item: the second is refused with the reason, the first keeps its copy."""
    src = tmp_path / "export"
    src.mkdir()
    composed = unicodedata.normalize("NFC", "Über 2024.pdf")
    (src / composed).write_bytes(b"typed on Linux")
    (src / unicodedata.normalize("NFD", composed)).write_bytes(b"copied from a Mac")
    cfg = write_config(tmp_path / "m.toml", src, {"cloud": (onedrive_target.url, onedrive_target.options)})
    done = run("run", "-c", str(cfg), "--once", state=tmp_path / "state")
    assert done.returncode == 1 and "already taken" in done.stderr, done.stdout + done.stderr
    folder = graph_fake.state.find(root_path(onedrive_target))
    assert folder is not None
    kids = [(k.name, k.content) for k in graph_fake.state.children(folder)]
    assert len(kids) == 1 and kids[0][1] in (b"typed on Linux", b"copied from a Mac"), kids


def test_names_and_paths_onedrive_refuses_are_not_mirrored_and_deletions_go_on(
    onedrive_target: TargetSpec, graph_fake: GraphFake, tmp_path: Path
) -> None:
    """A scan whose path fits in 400 characters below the target's folder but not with it
    (OneDrive counts the whole drive path), and an export named 'Export_vti_cnf.pdf':
    both were sent, refused by OneDrive, failed on every run, and held back every deletion
    for ever. The plan now refuses them with the reason, and a deleted file goes."""
    src = tmp_path / "export"
    folder = src / ("Lieferantenrechnungen 2024 " + "x" * 150)
    folder.mkdir(parents=True)
    deep = folder / ("y" * (395 - len(folder.name) - 1 - 4) + ".pdf")  # 395 characters below the folder
    deep.write_bytes(b"%PDF scan")
    (src / "Export_vti_cnf.pdf").write_bytes(b"%PDF export")
    (src / "old.pdf").write_bytes(b"old")
    cfg = write_config(tmp_path / "m.toml", src, {"cloud": (onedrive_target.url, onedrive_target.options)})
    first = run("run", "-c", str(cfg), "--once", state=tmp_path / "state")
    drive_path = len(root_path(onedrive_target)) + 1 + 395
    assert (
        f"not mirrored: {deep.relative_to(src)}: path is {drive_path} characters with the target's folder; "
        "the target allows 400"
    ) in first.stderr, first.stderr
    assert "not mirrored: Export_vti_cnf.pdf: the target refuses names holding '_vti_'" in first.stderr, (
        first.stderr
    )
    (src / "old.pdf").unlink()
    second = run("run", "-c", str(cfg), "--once", state=tmp_path / "state")
    assert "1 deleted" in second.stdout and "postponed" not in second.stderr, second.stdout + second.stderr
    folder_item = graph_fake.state.find(root_path(onedrive_target))
    assert folder_item is not None and not list(graph_fake.state.children(folder_item))


def test_a_deleted_file_whose_trash_path_onedrive_refuses_keeps_its_copy_with_the_reason(
    onedrive_target: TargetSpec, graph_fake: GraphFake, tmp_path: Path
) -> None:
    """delete = "trash": a file whose copy sits at 390 characters (OneDrive allows 400)
    is deleted; in .mirror-trash/DAY/ its path is over 400, and the move failed on every
    run, naming the copy's own path ("path is 420 characters") and no way out. It is now
    refused before any request, naming the trash path and delete = "mirror"."""
    src = tmp_path / "export"
    folder = src / ("Lieferantenrechnungen " + "a" * 178)
    folder.mkdir(parents=True)
    rel_len = 390 - len(root_path(onedrive_target)) - 1  # the whole drive path: 390 characters
    deep = folder / ("b" * (rel_len - len(folder.name) - 1 - 4) + ".pdf")
    deep.write_bytes(b"%PDF")
    (src / "other.pdf").write_bytes(b"o")
    (src / "old.pdf").write_bytes(b"old")
    cfg = write_config(tmp_path / "m.toml", src, {"cloud": (onedrive_target.url, onedrive_target.options)})
    cfg.write_text(cfg.read_text().replace("[targets.cloud]\n", '[targets.cloud]\ndelete = "trash"\n'))
    first = run("run", "-c", str(cfg), "--once", state=tmp_path / "state")
    assert first.returncode == 0, first.stdout + first.stderr
    deep.unlink()
    (src / "old.pdf").unlink()
    second = run("run", "-c", str(cfg), "--once", state=tmp_path / "state")
    assert second.returncode == 1, second.stdout + second.stderr
    rel, trash = deep.relative_to(src).as_posix(), f".mirror-trash/{dt.date.today().isoformat()}/"
    assert (
        f"not mirrored: {rel}: gone from the source, but the target refuses its trash path '{trash}{rel}' "
        f"(path is {390 + len(trash)} characters with the target's folder; the target allows 400); "
        'delete = "mirror" deletes the copy instead'
    ) in second.stderr, second.stderr
    assert "1 moved to trash" in second.stdout, second.stdout  # old.pdf
    assert graph_fake.state.find(f"{root_path(onedrive_target)}/{rel}") is not None


def test_a_file_cut_shorter_during_its_upload_session_fails_at_once(
    onedrive_target: TargetSpec, graph_fake: GraphFake, tmp_path: Path
) -> None:
    """Rewritten shorter after the first fragment: empty fragments with an inverted range
    went out without end, and put never returned."""
    driver = OneDriveDriver.connect(onedrive_target.url, {**onedrive_target.options, "chunk_size": CHUNK_UNIT * 4})
    driver.state = MemoryState()
    driver.makedirs("")
    scan = tmp_path / "scan.tif"
    scan.write_bytes(os.urandom(CHUNK_UNIT * 4 * 5 + 5))
    put = driver.http.put
    fragments = []

    def put_then_cut(*args: Any, **kwargs: Any) -> Any:
        fragments.append(kwargs.get("headers"))
        answer = put(*args, **kwargs)
        if len(fragments) == 1:
            scan.write_bytes(os.urandom(CHUNK_UNIT))
        return answer

    driver.http.put = put_then_cut  # type: ignore[method-assign]
    worker, outcome = putting(driver, scan, "scan.tif", MTIME)
    worker.join(30)
    assert not worker.is_alive(), f"the upload never ends ({len(fragments)} fragments)"
    assert len(outcome) == 1 and "got shorter while it was sent" in str(driver.classify(outcome[0]))


def test_a_file_renamed_to_a_name_onedrive_refuses_keeps_its_copy(
    onedrive_target: TargetSpec, tmp_path: Path
) -> None:
    """'colon.pdf' renamed to 'a:b.pdf': the planner refuses ':', and the copy was deleted
    in a pass that reported '1 failed'. It stays now, while the deletion of a file that
    did leave the source goes on (a refusal is no transfer error). Where only the server
    refuses the name as it is sent (a preset whose rules do not know ':'), the move fails
    and keeps the copy, and as a transfer error holds back the pass's deletions (README,
    promise 3). Named good again, the copies move there."""

    def mirror(url: str, source: Path, preset: Preset | None = None) -> Report:
        spec = api.TargetConfig("t", url, onedrive_target.options)
        presets = {preset.name: preset} if preset is not None else {}
        cfg = api.Config(source=source, targets=(spec,), state_dir=tmp_path / "state", presets=presets)
        with api.running(cfg) as m:
            (report,) = m.run_once()
        return report

    def there(url: str) -> list[str]:
        driver = OneDriveDriver.connect(url, onedrive_target.options)
        try:
            return sorted(driver.list())
        finally:
            driver.close()

    relaxed = Preset("od", "onedrive", {}, {"forbidden_chars": ""})
    cases = [(onedrive_target.url, None), (onedrive_target.url.replace("onedrive://", "od://") + "-2", relaxed)]
    for n, (url, preset) in enumerate(cases):
        source = tmp_path / f"export-{n}"
        source.mkdir()
        for name in ("keep.pdf", "colon.pdf", "old.pdf"):
            (source / name).write_bytes(b"%PDF " + name.encode())
        assert mirror(url, source, preset).ok
        os.rename(source / "colon.pdf", source / "a:b.pdf")
        (source / "old.pdf").unlink()
        report = mirror(url, source, preset)
        assert [src for src, _ in report.failed] == ["a:b.pdf"], report
        # refused by the plan, 'old.pdf' goes; failed as it was sent, it waits
        assert (report.uploaded, report.moved, report.deleted) == (0, 0, 1 if preset is None else 0), report
        assert there(url) == (
            ["colon.pdf", "keep.pdf"] if preset is None else ["colon.pdf", "keep.pdf", "old.pdf"]
        )
        os.rename(source / "a:b.pdf", source / "a-b.pdf")
        report = mirror(url, source, preset)
        assert report.ok and (report.uploaded, report.moved) == (0, 1), report
        assert there(url) == ["a-b.pdf", "keep.pdf"]


def test_a_file_rewritten_during_its_upload_session_is_not_committed(
    onedrive_target: TargetSpec, graph_fake: GraphFake, tmp_path: Path
) -> None:
    """Rewritten in place after the first fragment: the session was committed as bytes of
    two versions, in place of the good copy, until a later pass sent the file again."""
    driver = OneDriveDriver.connect(onedrive_target.url, {**onedrive_target.options, "chunk_size": CHUNK_UNIT * 4})
    driver.state = MemoryState()
    driver.makedirs("")
    first = os.urandom(CHUNK_UNIT * 4 * 4 + 5)  # over the simple upload's 4 MiB: five fragments
    scan = Path(local(tmp_path, "scan.tif", first))
    driver.put(str(scan), "scan.tif", MTIME)
    scan.write_bytes(os.urandom(len(first)))  # the next version, as the pass finds it
    put, fragments = driver.http.put, []

    def put_then_rewrite(*args: Any, **kwargs: Any) -> Any:
        fragments.append(kwargs.get("headers"))
        answer = put(*args, **kwargs)
        if len(fragments) == 1:
            rewrite_in_place(scan)
        return answer

    driver.http.put = put_then_rewrite  # type: ignore[method-assign]
    with pytest.raises(ItemError, match="changed while it was read; the upload was not committed"):
        driver.put(str(scan), "scan.tif", MTIME)
    assert len(fragments) == 4  # the last one, which commits, never went out
    assert [e.hash for e in driver.list().values()] == [quickxor_hash(local(tmp_path, "again", first))]
