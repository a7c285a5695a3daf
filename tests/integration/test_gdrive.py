"""GDriveDriver with the real Google client against the local Drive v3 fake."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import threading
import time
import webbrowser
from pathlib import Path
from typing import Any

import pytest
from mirror.backends.gdrive import GDriveDriver, load_credentials

from mirror.errors import ConfigError, FatalError, ItemError, TransientError
from tests.cli import run
from tests.fakes.drive_api import FOLDER, DriveFile
from tests.reliability.common import write_config
from tests.servers.gdrive import DriveFake, write_token_file
from tests.support import TargetSpec, rewrite_in_place

MTIME = 1_700_000_000_123_000_000


@pytest.fixture
def driver(gdrive_target: TargetSpec) -> GDriveDriver:
    d = GDriveDriver.connect(gdrive_target.url, gdrive_target.options)
    assert isinstance(d, GDriveDriver)
    yield d
    d.close()


def root_folder(fake: DriveFake, spec: TargetSpec) -> DriveFile:
    folder = fake.state.find(spec.url.removeprefix("gdrive://"))
    assert folder is not None
    return folder


def local(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_reupload_of_changed_file_keeps_one_file(
    driver: GDriveDriver, drive_fake: DriveFake, gdrive_target: TargetSpec, tmp_path: Path
) -> None:
    driver.makedirs("docs")
    first = driver.put(local(tmp_path, "a", b"version one"), "docs/invoice.pdf", MTIME)
    second = driver.put(local(tmp_path, "b", b"version two, longer"), "docs/invoice.pdf", MTIME + 10**9)
    docs = drive_fake.state.find("docs", root_folder(drive_fake, gdrive_target).id)
    assert docs is not None
    on_drive = drive_fake.state.children(docs.id, "invoice.pdf")
    assert len(on_drive) == 1
    assert on_drive[0].content == b"version two, longer"
    assert first is not None and second is not None
    assert dict(first.extra)["id"] == dict(second.extra)["id"] == on_drive[0].id
    assert second.hash == driver.local_hash(str(tmp_path / "b")) == hashlib.md5(b"version two, longer").hexdigest()
    assert driver.stat("docs/invoice.pdf").mtime_ns == MTIME + 10**9


@pytest.mark.parametrize("ending", [b"\r", b"\n\r", b"\r\n", b"\n", b"%%EOF"])
def test_a_file_arrives_whole_whatever_its_last_bytes(
    driver: GDriveDriver, drive_fake: DriveFake, gdrive_target: TargetSpec, tmp_path: Path, ending: bytes
) -> None:
    # the client's multipart body puts a bare LF before each delimiter: a file ending in
    # CR would lose that byte to a parser that takes CRLF as the delimiter's
    driver.makedirs("")
    root = root_folder(drive_fake, gdrive_target)
    for version in (b"%PDF-1.4 first" + ending, b"%PDF-1.4 second, longer" + ending):
        landed = driver.put(local(tmp_path, "scan", version), "scan.pdf", MTIME)
        assert landed is not None and landed.size == len(version)
        [on_drive] = drive_fake.state.children(root.id, "scan.pdf")
        assert on_drive.content == version


def test_an_upload_drive_stores_other_bytes_of_is_an_error_for_that_file(
    driver: GDriveDriver, drive_fake: DriveFake, tmp_path: Path
) -> None:
    drive_fake.state.damaged_uploads = 1
    with pytest.raises(ItemError, match=r"holds other bytes than were sent for invoice\.pdf"):
        driver.put(local(tmp_path, "a", b"total 100.00"), "invoice.pdf", MTIME)
    landed = driver.put(local(tmp_path, "a", b"total 100.00"), "invoice.pdf", MTIME)
    assert landed is not None and landed.size == len(b"total 100.00")


def test_preexisting_duplicates_resolve_to_the_oldest_with_a_warning(
    driver: GDriveDriver,
    drive_fake: DriveFake,
    gdrive_target: TargetSpec,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver.makedirs("")
    root = root_folder(drive_fake, gdrive_target)
    newer = drive_fake.state.add_file(root.id, "dup.txt", b"newer", created="2024-05-01T00:00:00.000Z")
    older = drive_fake.state.add_file(root.id, "dup.txt", b"older", created="2023-01-01T00:00:00.000Z")
    with caplog.at_level(logging.WARNING, logger="mirror.backends.gdrive"):
        listed = driver.list()
    assert listed["dup.txt"].size == len(b"older")
    assert "2 items named 'dup.txt'" in caplog.text
    driver.put(local(tmp_path, "x", b"from the source"), "dup.txt", MTIME)
    files = {f.id: f.content for f in drive_fake.state.children(root.id, "dup.txt")}
    assert files == {older: b"from the source", newer: b"newer"}


def test_parallel_puts_into_new_folders_make_each_folder_once(
    driver: GDriveDriver, drive_fake: DriveFake, gdrive_target: TargetSpec, tmp_path: Path
) -> None:
    src = local(tmp_path, "f", b"x" * 100)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(n, 40, 8):
                driver.makedirs("2024/03")
                driver.put(src, f"2024/03/doc{i}.pdf", MTIME)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    root = root_folder(drive_fake, gdrive_target)
    years = drive_fake.state.children(root.id, "2024")
    assert len(years) == 1 and years[0].mimeType == FOLDER
    months = drive_fake.state.children(years[0].id, "03")
    assert len(months) == 1
    assert len(drive_fake.state.children(months[0].id)) == 40
    # folders are cached: one existence check per put, not a walk of the whole path
    lookups = drive_fake.state.count_requests("GET", "/drive/v3/files")
    assert lookups <= 40 + 12


@pytest.mark.parametrize("fault", ["lose_answer", "hang_up"])
def test_a_folder_create_whose_answer_was_lost_leaves_one_folder_holding_the_files(
    drive_fake: DriveFake, gdrive_target: TargetSpec, tmp_path: Path, fault: str
) -> None:
    """Drive made the folder, its answer never came: a second one was made (by mirror's
    retry, or httplib2's own after a hang-up), the files went there and verify found them
    all missing."""
    source = tmp_path / "export"
    (source / "2024").mkdir(parents=True)
    for i in range(3):
        (source / "2024" / f"invoice-{i}.pdf").write_bytes(b"invoice %d" % i)
    config = write_config(tmp_path / "mirror.toml", source, {"drive": (gdrive_target.url, gdrive_target.options)})
    state = tmp_path / "state"
    assert run("run", "--once", "-c", str(config), state=state).returncode == 0
    (source / "2025").mkdir()
    (source / "2025" / "invoice-3.pdf").write_bytes(b"invoice 3")
    with drive_fake.state.lock:
        drive_fake.state.folder_faults.append(fault)
    assert run("run", "--once", "-c", str(config), state=state).returncode == 0
    root = root_folder(drive_fake, gdrive_target)
    assert len(drive_fake.state.children(root.id, "2025")) == 1
    assert drive_fake.state.children(root.id, "2025", trashed=True) == []
    verify = run("verify", "-c", str(config), state=state)
    assert verify.returncode == 0 and "identical (4 files;" in verify.stdout, verify.stdout + verify.stderr
    assert "items named" not in verify.stderr


@pytest.mark.parametrize("size", [100, 6 * 1024 * 1024], ids=["small", "resumable"])
@pytest.mark.parametrize("fault", ["lose_answer", "hang_up"])
def test_an_upload_whose_answer_was_lost_leaves_one_current_file(
    drive_fake: DriveFake, gdrive_target: TargetSpec, tmp_path: Path, fault: str, size: int
) -> None:
    """Drive stored the file, and the connection closed before its answer: httplib2 sent
    the create again, unasked, and Drive made a second file of the name. The next edit
    went to one of the two; the other kept the old invoice for good, while status and
    verify said identical. The last chunk of a resumable upload, sent again from a
    stream already read, held the upload for the whole timeout, and then it went again."""
    source = tmp_path / "export"
    source.mkdir()
    (source / "invoice.pdf").write_bytes(b"1" * size)
    config = write_config(
        tmp_path / "mirror.toml", source, {"drive": (gdrive_target.url, {**gdrive_target.options, "timeout": 20})}
    )
    state = tmp_path / "state"
    with drive_fake.state.lock:
        drive_fake.state.file_faults.append(fault)
    first = run("run", "--once", "-c", str(config), state=state)
    assert first.returncode == 0, first.stderr
    (source / "invoice.pdf").write_bytes(b"2" * size)
    assert run("run", "--once", "-c", str(config), state=state).returncode == 0
    on_drive = drive_fake.state.children(root_folder(drive_fake, gdrive_target).id, "invoice.pdf")
    assert [f.content == b"2" * size for f in on_drive] == [True]
    # the first upload landed once, and was taken as landed: only the edit went again
    assert drive_fake.state.count_requests("PATCH", "/upload/drive/v3/files") == 1
    assert drive_fake.state.count_requests("PUT, cut short", "/upload/session/") == 0


def test_delete_goes_to_trash_by_default(
    driver: GDriveDriver, drive_fake: DriveFake, gdrive_target: TargetSpec, tmp_path: Path
) -> None:
    driver.put(local(tmp_path, "a", b"keep me recoverable"), "old.txt", MTIME)
    driver.delete("old.txt")
    assert "old.txt" not in driver.list()
    trashed = drive_fake.state.children(root_folder(drive_fake, gdrive_target).id, "old.txt", trashed=True)
    assert [f.content for f in trashed] == [b"keep me recoverable"]


def test_delete_with_trash_false_removes_for_good(
    drive_fake: DriveFake, gdrive_target: TargetSpec, tmp_path: Path
) -> None:
    driver = GDriveDriver.connect(gdrive_target.url, {**gdrive_target.options, "trash": False})
    driver.put(local(tmp_path, "a", b"gone"), "old.txt", MTIME)
    driver.delete("old.txt")
    root = root_folder(drive_fake, gdrive_target)
    assert drive_fake.state.children(root.id, "old.txt", trashed=True) == []
    assert drive_fake.state.children(root.id, "old.txt") == []
    driver.close()


def test_large_file_resumable_upload_resumes_after_failed_chunks(
    drive_fake: DriveFake, gdrive_target: TargetSpec, tmp_path: Path
) -> None:
    driver = GDriveDriver.connect(gdrive_target.url, {**gdrive_target.options, "chunk_size": 1024 * 1024})
    data = os.urandom(13 * 1024 * 1024 + 12345)  # not a multiple of 256 KiB
    src = local(tmp_path, "big", data)
    driver.makedirs("")
    with drive_fake.state.lock:
        drive_fake.state.chunk_faults.extend(["", "reject", "", "lose_answer", "", "", "reject"])
    entry = driver.put(src, "scan.tiff", MTIME)
    on_drive = drive_fake.state.children(root_folder(drive_fake, gdrive_target).id, "scan.tiff")
    assert len(on_drive) == 1 and on_drive[0].content == data
    assert entry is not None and entry.hash == hashlib.md5(data).hexdigest() == driver.local_hash(src)
    # 14 chunks, 3 of them sent twice, plus a status query after each fault
    assert drive_fake.state.count_requests("PUT", "/upload/session/") == 14 + 2 + 3
    driver.close()


def test_throttling_converges_and_honours_retry_after(
    driver: GDriveDriver, drive_fake: DriveFake, gdrive_target: TargetSpec, tmp_path: Path
) -> None:
    driver.makedirs("")
    with drive_fake.state.lock:
        drive_fake.state.throttle.extend(
            [(429, "rateLimitExceeded", 1), (403, "userRateLimitExceeded", None), (503, "backendError", None)]
        )
    started = time.monotonic()
    driver.put(local(tmp_path, "a", b"eventually"), "t.txt", MTIME)
    assert time.monotonic() - started >= 1.0
    on_drive = drive_fake.state.children(root_folder(drive_fake, gdrive_target).id, "t.txt")
    assert [f.content for f in on_drive] == [b"eventually"]


def test_throttling_beyond_the_retry_budget_is_transient_with_retry_after(
    drive_fake: DriveFake, gdrive_target: TargetSpec, tmp_path: Path
) -> None:
    driver = GDriveDriver.connect(gdrive_target.url, {**gdrive_target.options, "max_retries": 0})
    driver.makedirs("")
    with drive_fake.state.lock:
        drive_fake.state.throttle.append((429, "rateLimitExceeded", 7))
    with pytest.raises(Exception) as info:
        driver.put(local(tmp_path, "a", b"x"), "t.txt", MTIME)
    err = driver.classify(info.value)
    assert isinstance(err, TransientError) and err.retry_after == 7
    driver.close()


def test_a_long_retry_after_is_left_to_the_engine(
    driver: GDriveDriver, drive_fake: DriveFake, tmp_path: Path
) -> None:
    """Retry-After: 3600 was slept out in the driver, two minutes at a time, in silence;
    the engine waits for it instead, says so, and ends the wait when mirror stops."""
    driver.makedirs("")
    with drive_fake.state.lock:
        drive_fake.state.throttle.append((429, "rateLimitExceeded", 3600))
    started = time.monotonic()
    with pytest.raises(Exception) as info:
        driver.put(local(tmp_path, "a", b"x"), "t.txt", MTIME)
    assert time.monotonic() - started < 5
    err = driver.classify(info.value)
    assert isinstance(err, TransientError) and err.retry_after == 3600


def test_a_full_drive_says_what_to_do_as_a_full_dropbox_does(
    drive_fake: DriveFake, gdrive_target: TargetSpec, tmp_path: Path
) -> None:
    """A full Drive said only "Google Drive answered 403 (storageQuotaExceeded)", after
    the Google client's own raw 'Encountered 403 Forbidden' warnings."""
    source = tmp_path / "export"
    source.mkdir()
    (source / "invoice.pdf").write_bytes(b"invoice")
    config = write_config(tmp_path / "mirror.toml", source, {"drive": (gdrive_target.url, gdrive_target.options)})
    state = tmp_path / "state"
    with drive_fake.state.lock:
        drive_fake.state.throttle[:] = [(403, "storageQuotaExceeded", None)] * 50
    full = run("run", "--once", "-c", str(config), state=state)
    status = run("status", "-c", str(config), state=state)
    told = "the Google Drive storage is full: free some space (its trash counts too"
    assert full.returncode == 1 and f"drive: target failed: {told}" in full.stderr, full.stderr
    assert "Encountered 403" not in full.stderr and "storageQuotaExceeded" not in full.stderr, full.stderr
    assert status.returncode == 1 and f"last error: {told}" in status.stdout, status.stdout
    with drive_fake.state.lock:
        drive_fake.state.throttle.clear()
    assert run("run", "--once", "-c", str(config), state=state).returncode == 0


def test_revoked_refresh_token_is_fatal_without_leaking_secrets(
    drive_fake: DriveFake, gdrive_target: TargetSpec, tmp_path: Path
) -> None:
    token_file = Path(write_token_file(tmp_path, drive_fake))
    token_file.write_text(token_file.read_text().replace("good-refresh-token", "revoked-token"))
    driver = GDriveDriver.connect(gdrive_target.url, gdrive_target.options)
    with pytest.raises(Exception) as info:
        driver.list()
    err = driver.classify(info.value)
    assert isinstance(err, FatalError)
    assert "revoked-token" not in str(err) and "csecret" not in str(err)
    driver.close()


def test_an_access_token_drive_refuses_before_it_expires_is_renewed(
    driver: GDriveDriver, drive_fake: DriveFake, gdrive_target: TargetSpec, tmp_path: Path
) -> None:
    driver.put(local(tmp_path, "a", b"invoice a"), "a.pdf", MTIME)
    drive_fake.state.revoke_access_tokens()
    driver.put(local(tmp_path, "b", b"invoice b"), "b.pdf", MTIME)
    assert sorted(driver.list()) == ["a.pdf", "b.pdf"]


def test_an_outage_of_googles_login_service_is_waited_out(
    drive_fake: DriveFake, gdrive_target: TargetSpec, tmp_path: Path
) -> None:
    """A 503 from the token endpoint stopped the target for an hour, saying the login was gone."""
    driver = GDriveDriver.connect(gdrive_target.url, {**gdrive_target.options, "max_retries": 0})
    drive_fake.state.token_outage = 3  # google-auth's own three tries
    with pytest.raises(Exception) as info:
        driver.put(local(tmp_path, "a", b"x"), "t.txt", MTIME)
    err = driver.classify(info.value)
    assert isinstance(err, TransientError) and "Google's login service" in str(err)
    assert "mirror auth" not in str(err)
    driver.put(local(tmp_path, "a", b"x"), "t.txt", MTIME)
    assert driver.stat("t.txt") is not None
    driver.close()


def test_shared_drive(drive_fake: DriveFake, gdrive_target: TargetSpec, tmp_path: Path) -> None:
    drive_fake.state.add_shared_drive("shareddrive1")
    driver = GDriveDriver.connect("gdrive://Team/Invoices", {**gdrive_target.options, "drive_id": "shareddrive1"})
    driver.makedirs("2024")
    driver.put(local(tmp_path, "a", b"shared"), "2024/a.pdf", MTIME)
    assert driver.list()["2024/a.pdf"].hash == hashlib.md5(b"shared").hexdigest()
    item = drive_fake.state.find("Team/Invoices/2024/a.pdf", "shareddrive1")
    assert item is not None and item.driveId == "shareddrive1"
    driver.close()


def test_names_with_quotes_and_backslashes(driver: GDriveDriver, tmp_path: Path) -> None:
    name = "it's a \\ test.txt"
    driver.put(local(tmp_path, "a", b"q"), name, MTIME)
    driver.put(local(tmp_path, "b", b"q2"), name, MTIME)
    assert list(driver.list()) == [name]
    assert driver.stat(name).size == 2


def test_move_replaces_the_destination_and_keeps_the_id(
    driver: GDriveDriver, drive_fake: DriveFake, gdrive_target: TargetSpec, tmp_path: Path
) -> None:
    moved = driver.put(local(tmp_path, "a", b"moving"), "in/a.txt", MTIME)
    driver.put(local(tmp_path, "b", b"old dst"), "out/b.txt", MTIME)
    driver.move("in/a.txt", "out/b.txt")
    listed = driver.list()
    assert set(listed) == {"out/b.txt"}
    assert moved is not None and dict(listed["out/b.txt"].extra)["id"] == dict(moved.extra)["id"]
    assert driver.remove_dir_if_empty("in") is True
    assert driver.remove_dir_if_empty("out") is False


def test_names_that_differ_only_in_case_are_mirrored_as_different_files(
    drive_fake: DriveFake, gdrive_target: TargetSpec, tmp_path: Path
) -> None:
    """Drive's name query ignores case: invoice.pdf went over Invoice.pdf, scans/ into Scans/."""
    source = tmp_path / "export"
    (source / "Scans").mkdir(parents=True)
    (source / "Invoice.pdf").write_bytes(b"invoice one")
    (source / "Scans" / "a.pdf").write_bytes(b"scan one")
    config = write_config(tmp_path / "mirror.toml", source, {"drive": (gdrive_target.url, gdrive_target.options)})
    state = tmp_path / "state"
    assert run("run", "--once", "-c", str(config), state=state).returncode == 0
    (source / "scans").mkdir()
    (source / "invoice.pdf").write_bytes(b"invoice two")
    (source / "scans" / "a.pdf").write_bytes(b"scan two")
    second = run("run", "--once", "-c", str(config), state=state)
    assert second.returncode == 0 and "2 sent" in second.stdout, second.stdout + second.stderr
    root = root_folder(drive_fake, gdrive_target)
    assert {f.name: f.content for f in drive_fake.state.children(root.id) if f.mimeType != FOLDER} == {
        "Invoice.pdf": b"invoice one",
        "invoice.pdf": b"invoice two",
    }
    for folder, content in (("Scans", b"scan one"), ("scans", b"scan two")):
        [on_drive] = drive_fake.state.children(root.id, folder)
        assert [f.content for f in drive_fake.state.children(on_drive.id)] == [content]
    verify = run("verify", "-c", str(config), state=state)
    assert verify.returncode == 0 and "identical (4 files;" in verify.stdout, verify.stdout + verify.stderr


def test_a_subfolder_trashed_in_drive_between_passes_is_made_again(
    driver: GDriveDriver, drive_fake: DriveFake, gdrive_target: TargetSpec, tmp_path: Path
) -> None:
    """Someone moved 2024/ to Drive's trash; watch mode's next upload went into it, out of
    sight, for as long as the folder id stayed cached, while mirror said sent."""
    driver.put(local(tmp_path, "a", b"a"), "2024/inv-1.pdf", MTIME)
    root = root_folder(drive_fake, gdrive_target)
    (folder,) = drive_fake.state.children(root.id, "2024")
    drive_fake.state.trash(folder.id)
    driver.begin_pass()
    driver.put(local(tmp_path, "b", b"b"), "2024/inv-2.pdf", MTIME)
    (made_again,) = drive_fake.state.children(root.id, "2024")
    assert made_again.id != folder.id
    assert [f.name for f in drive_fake.state.children(made_again.id)] == ["inv-2.pdf"]


@pytest.mark.parametrize("root", ["Invoices", ""], ids=["folder-below", "that-folder"])
def test_a_root_folder_id_folder_in_the_trash_fails_the_target(
    drive_fake: DriveFake, gdrive_target: TargetSpec, tmp_path: Path, root: str
) -> None:
    """The company folder root_folder_id names was deleted in Drive's web app (moved to the
    trash with all it holds): mirror made the target folder again inside it and sent every
    invoice into the trash, and run, status and verify said all was fine (exit 0)."""
    company = drive_fake.state.add_file("root", f"Company-{tmp_path.name}", folder=True)
    source = tmp_path / "export"
    source.mkdir()
    (source / "a.pdf").write_bytes(b"invoice a")
    options = {**gdrive_target.options, "root_folder_id": company}
    config = write_config(tmp_path / "mirror.toml", source, {"drive": (f"gdrive://{root}", options)})
    state = tmp_path / "state"
    assert run("run", "--once", "-c", str(config), state=state).returncode == 0
    drive_fake.state.trash(company)
    (source / "b.pdf").write_bytes(b"invoice b")
    second = run("run", "--once", "-c", str(config), state=state)
    said = (
        f"Google Drive: the folder root_folder_id={company} is in Drive's trash: "
        "restore it from Drive's trash, or set another root_folder_id"
    )
    assert second.returncode == 1 and said in second.stdout + second.stderr, second.stdout + second.stderr
    assert "Traceback" not in second.stderr
    for command in ("status", "verify"):
        after = run(command, "-c", str(config), state=state)
        assert after.returncode != 0 and said in after.stdout, (command, after.stdout + after.stderr)
    assert not [
        f for f in drive_fake.state.files.values() if f.name == "b.pdf" and below(drive_fake, f.id, company)
    ]


def below(drive_fake: DriveFake, file_id: str, folder_id: str) -> bool:
    """Whether ``file_id`` is somewhere inside ``folder_id`` (the fake serves every test)."""
    files = drive_fake.state.files
    parents = list(files[file_id].parents)
    while parents:
        parent = parents.pop()
        if parent == folder_id:
            return True
        if parent in files:
            parents += files[parent].parents
    return False


def client_secrets(drive_fake: DriveFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client_id: str) -> Path:
    """An installed-app client secrets file pointing at the fake, which the CA bundle trusts."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", drive_fake.ca_file)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    path = tmp_path / "client_secret.json"
    installed = {
        "client_id": client_id,
        "client_secret": "csecret",
        "auth_uri": f"{drive_fake.url}/auth",
        "token_uri": f"{drive_fake.url}/token",
        "redirect_uris": ["http://localhost"],
    }
    path.write_text(json.dumps({"installed": installed}))
    return path


def test_auth_command_paste_flow_writes_a_private_token_the_driver_uses(
    drive_fake: DriveFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner
    from mirror.backends.gdrive_auth import command

    secrets = client_secrets(drive_fake, tmp_path, monkeypatch, "cid.apps.googleusercontent.com")
    token_file = tmp_path / "conf" / "gdrive-token.json"
    result = CliRunner().invoke(
        command,
        ["--client-secrets", str(secrets), "--token-file", str(token_file), "--no-browser"],
        input="good-code\n",
    )
    assert result.exit_code == 0, result.output
    assert f"{drive_fake.url}/auth?" in result.output
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert json.loads(token_file.read_text())["refresh_token"] == "good-refresh-token"
    driver = GDriveDriver.connect(
        "gdrive://authed",
        {
            "token_file": str(token_file),
            "token_uri": f"{drive_fake.url}/token",
            "api_endpoint": f"{drive_fake.url}/drive/v3/",
            "ca_certs": drive_fake.ca_file,
        },
    )
    assert driver.list() == {}
    driver.close()


def test_a_missing_token_file_names_the_command_that_writes_it(tmp_path: Path) -> None:
    """It said to run `mirror auth gdrive --client-secrets FILE`, which writes the default
    file, not the one the config names."""
    token_file = tmp_path / "my logins" / "drive.json"
    with pytest.raises(ConfigError) as caught:
        load_credentials({"token_file": str(token_file)})
    assert f"run `mirror auth gdrive --client-secrets FILE --token-file '{token_file}'`" in str(caught.value)


def test_paste_flow_accepts_the_redirected_address_and_checks_its_state(
    drive_fake: DriveFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from urllib.parse import parse_qs, urlsplit

    from mirror.backends.gdrive_auth import login_paste

    secrets = client_secrets(drive_fake, tmp_path, monkeypatch, "cid")

    def redirect(state: str) -> str:
        return f"http://127.0.0.1:1/?state={state}&code=good-code&scope=https://www.googleapis.com/auth/drive"

    with pytest.raises(Exception, match="from another sign-in"):
        login_paste(str(secrets), str(tmp_path / "bad.json"), lambda url: redirect("forged"))
    assert not (tmp_path / "bad.json").exists()
    login_paste(
        str(secrets), str(tmp_path / "ok.json"), lambda url: redirect(parse_qs(urlsplit(url).query)["state"][0])
    )
    assert json.loads((tmp_path / "ok.json").read_text())["refresh_token"] == "good-refresh-token"


MISTAKES = {
    # "could not locate runnable browser", under a traceback
    "no browser": ([], None, "no web browser found on this machine; run again with --no-browser, "),
    # oauthlib's "(mismatching_state) CSRF Warning! State not equal in request and response."
    "an earlier attempt's address": (
        ["--no-browser"],
        "http://127.0.0.1:1/?state=from-an-earlier-try&code=xyz\n",
        "the pasted address is from another sign-in (an earlier attempt's?); run this command again",
    ),
    # "Client secrets must be for a web or installed app."
    "a client of another type": (["--no-browser"], None, "is not an OAuth client of type 'Desktop app'; create"),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_auth_command_mistakes_are_one_line_saying_what_to_do(
    mistake: str, drive_fake: DriveFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from mirror.cli import main

    flags, typed, said = MISTAKES[mistake]
    secrets = client_secrets(drive_fake, tmp_path, monkeypatch, "cid")
    if mistake == "a client of another type":
        secrets.write_text(json.dumps({"service_account": {}}))

    def no_browser(using: str | None = None) -> webbrowser.BaseBrowser:
        raise webbrowser.Error("could not locate runnable browser")

    monkeypatch.setattr(webbrowser, "get", no_browser)
    token_file = tmp_path / "t.json"
    args = ["auth", "gdrive", "--client-secrets", str(secrets), "--token-file", str(token_file), *flags]
    result = CliRunner().invoke(main, args, input=typed)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mirror: error: ") and said in lines[0], result.stderr
    assert not token_file.exists()


def test_a_file_rewritten_during_its_resumable_upload_is_not_committed(
    drive_fake: DriveFake, gdrive_target: TargetSpec, tmp_path: Path
) -> None:
    """Rewritten in place after the first chunk: the upload was committed as bytes of two
    versions, in place of the good copy, until a later pass sent the file again."""
    driver = GDriveDriver.connect(gdrive_target.url, {**gdrive_target.options, "chunk_size": 1024 * 1024})
    driver.makedirs("")
    first = os.urandom(6 * 1024 * 1024)
    scan = Path(local(tmp_path, "scan.tif", first))
    driver.put(str(scan), "scan.tif", MTIME)
    scan.write_bytes(os.urandom(len(first)))  # the next version, as the pass finds it
    upload = driver._upload

    def rewrite_after_a_chunk(request: Any) -> dict[str, Any]:
        request.next_chunk()
        rewrite_in_place(scan)
        return upload(request)

    driver._upload = rewrite_after_a_chunk  # type: ignore[method-assign]
    with pytest.raises(ItemError, match="changed while it was read; the upload was not committed"):
        driver.put(str(scan), "scan.tif", MTIME)
    (on_drive,) = drive_fake.state.children(root_folder(drive_fake, gdrive_target).id, "scan.tif")
    assert on_drive.content == first
    driver.close()


def test_a_listing_of_a_folder_deleted_since_its_parent_was_read_lists_the_rest(
    driver: GDriveDriver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    driver.put(local(tmp_path, "old", b"old"), ".mirror-trash/2024-01-01/old.pdf", MTIME)
    driver.put(local(tmp_path, "kept", b"kept"), "kept.pdf", MTIME)
    gone = driver._folder_id(".mirror-trash/2024-01-01", create=False)
    assert gone is not None
    real, deleted = driver._children, []

    def children(folder_id: str, name: str | None = None) -> list[dict[str, Any]]:
        if folder_id == gone:  # the trash emptied in the web app, just now
            driver._files.delete(fileId=gone, supportsAllDrives=True).execute()
            deleted.append(gone)
        return real(folder_id, name)

    monkeypatch.setattr(driver, "_children", children)
    assert set(driver.list()) == {"kept.pdf"}
    assert deleted == [gone]
