"""The webdav driver against a real WebDAV server (wsgidav) on 127.0.0.1, and a config-only preset."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mirror.backends.webdav import WebdavDriver

from mirror import api
from mirror.driver import Driver
from mirror.errors import ConfigError, FatalError, TransientError
from mirror.index import Index
from mirror.registry import Preset
from tests.cli import files, run
from tests.servers.webdav import PASSWORD, USER, WebdavServer, start_webdav


@pytest.fixture
def sub(webdav_server: WebdavServer, request: pytest.FixtureRequest) -> str:
    return f"t-{request.node.name.replace('[', '-').strip(']')}"


@pytest.fixture
def driver(webdav_server: WebdavServer, sub: str) -> Iterator[Driver]:
    d = WebdavDriver.connect(webdav_server.url(sub), webdav_server.options())
    yield d
    d.close()


def test_temp_upload_then_move_replaces_and_lists(
    driver: Driver, webdav_server: WebdavServer, sub: str, tmp_path: Path
) -> None:
    on_disk = webdav_server.folder / sub
    driver.makedirs("a/b")
    for n, data in enumerate([b"first", b"second, longer"]):
        local = tmp_path / f"v{n}"
        local.write_bytes(data)
        driver.put(str(local), f"a/b/.f.pdf.mirror-tmp-{n}", 1_600_000_000 * 10**9)
        driver.move(f"a/b/.f.pdf.mirror-tmp-{n}", "a/b/f.pdf")
    assert (on_disk / "a/b/f.pdf").read_bytes() == b"second, longer"
    assert os.listdir(on_disk / "a/b") == ["f.pdf"]
    listing = driver.list()
    assert list(listing) == ["a/b/f.pdf"]
    assert listing["a/b/f.pdf"].size == 14
    entry = driver.stat("a/b/f.pdf")
    assert entry is not None and entry.size == 14
    assert driver.stat("a/b/none") is None


def test_names_with_spaces_hash_and_percent_land_verbatim(
    driver: Driver, webdav_server: WebdavServer, sub: str, tmp_path: Path
) -> None:
    local = tmp_path / "x"
    local.write_bytes(b"x")
    driver.makedirs("Rechnung 2024")
    for name in ["Rechnung 2024/Nr #1.pdf", "Rechnung 2024/50% off.pdf", "Rechnung 2024/ä ö.pdf"]:
        driver.put(str(local), name, 0)
    assert sorted(os.listdir(webdav_server.folder / sub / "Rechnung 2024")) == [
        "50% off.pdf",
        "Nr #1.pdf",
        "ä ö.pdf",
    ]
    names = ["50% off.pdf", "Nr #1.pdf", "ä ö.pdf"]
    assert sorted(driver.list()) == [f"Rechnung 2024/{n}" for n in names]


def test_delete_and_remove_empty_folders(
    driver: Driver, webdav_server: WebdavServer, sub: str, tmp_path: Path
) -> None:
    local = tmp_path / "x"
    local.write_bytes(b"x")
    driver.makedirs("d/e")
    driver.put(str(local), "d/e/f", 0)
    assert driver.remove_dir_if_empty("d/e") is False
    driver.delete("d/e/f")
    assert driver.remove_dir_if_empty("d/e") is True
    assert not (webdav_server.folder / sub / "d/e").exists()
    with pytest.raises(FileNotFoundError):
        driver.delete("d/gone")


def test_wrong_password_is_a_config_error_without_the_password(webdav_server: WebdavServer) -> None:
    with pytest.raises(ConfigError, match="401") as info:
        WebdavDriver.connect(webdav_server.url("x"), webdav_server.options(password="wrong-pw-4242"))
    assert "wrong-pw-4242" not in str(info.value)


def test_a_server_asking_for_a_login_none_was_given_for_says_to_set_one(webdav_server: WebdavServer) -> None:
    """It said 'refused the credentials of user None'."""
    with pytest.raises(ConfigError) as info:
        WebdavDriver.connect(webdav_server.url("x"), {})
    server = f"http://127.0.0.1:{webdav_server.port}"
    assert (
        str(info.value)
        == f"webdav: {server} asks for a login (401); set username and password in the target's options"
    )


def test_unreachable_server_is_transient() -> None:
    from tests.servers.sshd import free_port

    with pytest.raises(TransientError):
        WebdavDriver.connect(f"webdav://127.0.0.1:{free_port()}/x", {"timeout": 3})


def test_a_timeout_is_written_as_the_config_s_other_durations(webdav_server: WebdavServer) -> None:
    """``timeout = "30s"``, as settle is written, failed the target with a ValueError."""
    WebdavDriver.connect(webdav_server.url("x"), webdav_server.options(timeout="30s")).close()


def test_classify_maps_quota_and_auth_to_fatal(driver: Driver) -> None:
    from webdav4.client import InsufficientStorage

    assert isinstance(driver.classify(InsufficientStorage("/x")), FatalError)


def test_preset_with_base_url_is_config_only(webdav_server: WebdavServer, tmp_path: Path) -> None:
    """A [backends.nextcloud] preset (as in examples/nextcloud.toml) works without code."""
    from mirror.registry import connect, resolve

    (webdav_server.folder / "remote.php/dav/files/alice").mkdir(parents=True, exist_ok=True)
    preset = Preset(
        "nextcloud",
        "webdav",
        {"base_url": f"{webdav_server.base}/remote.php/dav/files/alice", "username": USER, "password": PASSWORD},
    )
    driver = connect(resolve("nextcloud://Invoices", {}, {"nextcloud": preset}))
    assert isinstance(driver, WebdavDriver)
    local = tmp_path / "inv.pdf"
    local.write_bytes(b"%PDF")
    driver.makedirs("")
    driver.makedirs("2024")
    driver.put(str(local), "2024/inv.pdf", 0)
    assert (webdav_server.folder / "remote.php/dav/files/alice/Invoices/2024/inv.pdf").read_bytes() == b"%PDF"
    assert list(driver.list()) == ["2024/inv.pdf"]


def test_names_a_server_cuts_short_are_refused_and_nothing_above_the_target_is_touched(
    webdav_server: WebdavServer, sub: str, tmp_path: Path
) -> None:
    """wsgidav unquotes a MOVE's Destination before parsing it: '..?q' landed as '..', the
    folder above, which the rename replaced, and 'offer;v1.pdf' and 'offer;v2.pdf' both as
    'offer'. Such names are refused, with a reason, and the rest lands."""
    neighbour = webdav_server.folder / f"{sub}-other-team" / "report.xlsx"
    neighbour.parent.mkdir()
    neighbour.write_bytes(b"not mirror's")
    source = tmp_path / "export"
    names = ["sub/..?q", "..;notes", "offer;v1.pdf", "offer;v2.pdf", "scan\x01.pdf", "tab\tname.pdf"]
    for name in [*names, "ok.pdf", "sub/ok.pdf"]:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(name.encode())
    target = api.TargetConfig("dav", webdav_server.url(sub), webdav_server.options())
    cfg = api.Config(source=source, targets=(target,), state_dir=tmp_path / "state")
    with api.running(cfg) as m:
        (report,) = m.run_once()
    on_disk = webdav_server.folder / sub
    assert sorted(str(p.relative_to(on_disk)) for p in on_disk.rglob("*") if p.is_file()) == [
        "ok.pdf",
        "sub/ok.pdf",
    ]
    assert neighbour.read_bytes() == b"not mirror's"
    assert sorted(src for src, _ in report.failed) == sorted(names)
    assert all("refuses the character" in why for _, why in report.failed), report.failed


def test_a_file_or_folder_renamed_to_a_name_the_server_refuses_keeps_its_copies_until_renamed_again(
    webdav_server: WebdavServer, sub: str, tmp_path: Path
) -> None:
    """'renamed-ok.pdf' renamed to 'a?b.pdf', and a folder of invoices to 'Kunde?': the old
    paths were gone and the new ones refused, so their copies were deleted ('4 deleted, 4
    failed') though the files were still in the source, and no target held them any more.
    They stay, pass after pass; named good again, they move there."""
    source = tmp_path / "export"
    source.mkdir()
    (source / "keep.pdf").write_bytes(b"keep")
    (source / "renamed-ok.pdf").write_bytes(b"%PDF the only copy")
    (source / "Kunde").mkdir()
    for i in range(3):
        (source / "Kunde" / f"inv {i}.pdf").write_bytes(f"%PDF Kunde {i}".encode())
    target = api.TargetConfig("dav", webdav_server.url(sub), webdav_server.options())
    cfg = api.Config(source=source, targets=(target,), state_dir=tmp_path / "state")
    on_server = webdav_server.folder / sub
    with api.running(cfg) as m:
        (report,) = m.run_once()
    assert report.ok and files(on_server) == files(source)
    before = files(on_server)
    os.rename(source / "renamed-ok.pdf", source / "a?b.pdf")
    os.rename(source / "Kunde", source / "Kunde?")
    for _ in range(2):  # not merely put off to the next pass
        with api.running(cfg) as m:
            (report,) = m.run_once()
        assert (report.uploaded, report.moved, report.deleted) == (0, 0, 0), report
        assert sorted(src for src, _ in report.failed) == [
            "Kunde?/inv 0.pdf",
            "Kunde?/inv 1.pdf",
            "Kunde?/inv 2.pdf",
            "a?b.pdf",
        ]
        assert files(on_server) == before
    with api.running(cfg, dry_run=True) as m:
        (planned,) = m.run_once()
    assert planned.planned is not None
    assert [(k.src, k.now) for k in planned.planned.renamed] == [
        ("Kunde/inv 0.pdf", "Kunde?/inv 0.pdf"),
        ("Kunde/inv 1.pdf", "Kunde?/inv 1.pdf"),
        ("Kunde/inv 2.pdf", "Kunde?/inv 2.pdf"),
        ("renamed-ok.pdf", "a?b.pdf"),
    ]
    os.rename(source / "a?b.pdf", source / "a-b.pdf")
    os.rename(source / "Kunde?", source / "Kunde 2")
    with api.running(cfg) as m:
        (report,) = m.run_once()
    assert report.ok and (report.uploaded, report.moved, report.deleted) == (0, 4, 0), report
    assert files(on_server) == files(source)


def test_a_preset_pointed_at_another_account_mirrors_there_as_a_new_target_and_keeps_its_files(
    webdav_server: WebdavServer, sub: str, tmp_path: Path
) -> None:
    """The README's nextcloud preset with its base_url changed from alice's files to bob's,
    who has his own Invoices/inv-001.pdf and inv-002.pdf: the run trusted the index of
    alice's files, so deleting inv-001.pdf in the source deleted bob's, editing inv-002.pdf
    overwrote his (nothing in .mirror-trash/), and a run with nothing changed sent nothing
    there while status said in sync. A new timeout is the same place and keeps its index."""
    source = tmp_path / "export"
    source.mkdir()
    (source / "inv-001.pdf").write_bytes(b"alice 1")
    (source / "inv-002.pdf").write_bytes(b"alice 2")
    bob = webdav_server.folder / sub / "bob" / "Invoices"
    bob.mkdir(parents=True)
    (bob / "inv-001.pdf").write_bytes(b"BOB'S OWN CONTRACT")
    (bob / "inv-002.pdf").write_bytes(b"BOB'S OWN LEDGER")
    (webdav_server.folder / sub / "alice").mkdir()
    config, state = tmp_path / "mirror.toml", tmp_path / "state"

    def mirror(account: str, timeout: str) -> tuple[int, str, str]:
        config.write_text(
            f'source = "{source}"\n[backends.nextcloud]\nprotocol = "webdav"\n'
            f'options = {{ base_url = "{webdav_server.base}/{sub}/{account}", username = "{USER}", '
            f'password = "${{MIRROR_TEST_WEBDAV_PASSWORD}}", timeout = "{timeout}" }}\n'
            '[targets.cloud]\nurl = "nextcloud://Invoices"\n'
        )
        done = run("run", "--once", "-c", str(config), state=state, env={"MIRROR_TEST_WEBDAV_PASSWORD": PASSWORD})
        return done.returncode, done.stdout, done.stderr

    code, out, err = mirror("alice", "30s")
    assert code == 0 and "cloud: 2 sent" in out, out + err
    code, out, err = mirror("alice", "60s")
    assert code == 0 and "cloud: 0 sent" in out and "new target" not in err, out + err

    (source / "inv-001.pdf").unlink()
    (source / "inv-002.pdf").write_bytes(b"alice 2, corrected")
    code, out, err = mirror("bob", "60s")
    assert code == 0 and "cloud: 1 sent" in out and "0 deleted" in out, out + err
    assert "target 'cloud' now writes to Invoices on" in err and "as a new target" in err, err
    assert (bob / "inv-001.pdf").read_bytes() == b"BOB'S OWN CONTRACT"
    assert (bob / "inv-002.pdf").read_bytes() == b"alice 2, corrected"
    trashed = [p.read_bytes() for p in (bob / ".mirror-trash").rglob("*") if p.is_file()]
    assert trashed == [b"BOB'S OWN LEDGER"]
    alice = webdav_server.folder / sub / "alice" / "Invoices"
    assert files(alice) == {"inv-001.pdf": b"alice 1", "inv-002.pdf": b"alice 2"}


@pytest.mark.timeout(120)
def test_names_sent_before_the_server_s_rules_refused_them_are_refused_and_never_sent_again(
    webdav_server: WebdavServer, sub: str, tmp_path: Path
) -> None:
    """A mirror from before ';' was refused on WebDAV (a9b0797; here: a preset that let it
    through) sent 'offer;v1.pdf' and 'offer;v2.pdf', which wsgidav stored as 'offer', one
    over the other. After the upgrade its rows were trusted: run said 0 sent and status in
    sync, exit 0, and each listing pass (--rescan, the hourly rescan) put both onto 'offer'
    again, '2 sent'; only verify said v1 was missing. Now they are refused as by a fresh
    mirror, with the reason and exit 1 in run, status and verify, never sent again, and
    'offer' is left as it landed."""
    source = tmp_path / "export"
    source.mkdir()
    for name, data in {
        "inv-1.pdf": b"invoice 1",
        "offer;v1.pdf": b"offer version 1",
        "offer;v2.pdf": b"offer v2",
    }.items():
        (source / name).write_bytes(data)
    config, state = tmp_path / "mirror.toml", tmp_path / "state"
    env = {"MIRROR_TEST_WEBDAV_PASSWORD": PASSWORD}

    def write_config(rules: str) -> None:
        config.write_text(
            f'source = "{source}"\n[backends.dav]\nprotocol = "webdav"\n{rules}'
            f'[targets.nas]\nurl = "dav://{sub}/backup"\n'
            f'options = {{ base_url = "{webdav_server.base}", username = "{USER}", '
            'password = "${MIRROR_TEST_WEBDAV_PASSWORD}" }\n'
        )

    def mirror(*args: str) -> tuple[int, str, str]:
        done = run(*args, "-c", str(config), state=state, env=env)
        return done.returncode, done.stdout, done.stderr

    write_config('capabilities = { forbidden_chars = "" }\n')  # the rules of the older mirror
    code, out, err = mirror("run", "--once")
    on_server = webdav_server.folder / sub / "backup"
    assert code == 0 and "3 sent" in out, out + err
    landed = files(on_server)
    assert sorted(landed) == ["inv-1.pdf", "offer"] and landed["offer"] in (b"offer version 1", b"offer v2")

    write_config("")  # upgraded: the server's rules of today
    refused = [
        f"nas: failed: offer;v{i}.pdf: the target refuses the character(s) ';' in 'offer;v{i}.pdf'" for i in (1, 2)
    ]
    code, out, err = mirror("run", "--once")
    assert code == 1 and "nas: 0 sent (0 B), 0 deleted, 2 failed" in out, out + err
    assert [line for line in err.splitlines() if line.startswith("nas: failed:")] == refused, err
    assert "offer;v1.pdf: the copy sent before the target refused its name is left there as it landed" in err, err
    code, out, err = mirror("status")
    assert code == 1, out + err
    assert [line.split(" (since")[0] for line in out.splitlines() if "failed:" in line] == [
        line.replace("nas: failed:", "  failed:") for line in refused
    ], out
    for _ in range(2):  # a listing pass, as the hourly rescan and the first pass after a crash make
        code, out, err = mirror("run", "--once", "--rescan")
        assert code == 1 and "nas: 0 sent (0 B), 0 deleted, 2 failed" in out, out + err
        assert files(on_server) == landed
    code, out, err = mirror("verify")
    assert code == 1, out + err
    assert out.splitlines() == [
        "nas: offer;v1.pdf: not mirrored: the target refuses the character(s) ';' in 'offer;v1.pdf'",
        "nas: offer;v2.pdf: not mirrored: the target refuses the character(s) ';' in 'offer;v2.pdf'",
        "nas: 1 other file(s) on the target, from no file of the source (mirror leaves them alone): offer",
    ]


def test_a_folder_whose_name_holds_a_hash_is_reached_with_percent_23(
    webdav_server: WebdavServer, sub: str, tmp_path: Path
) -> None:
    driver = WebdavDriver.connect(webdav_server.url(f"{sub}/inv%23a"), webdav_server.options())
    local = tmp_path / "x"
    local.write_bytes(b"x")
    driver.makedirs("")
    driver.put(str(local), "a.pdf", 0)
    assert (webdav_server.folder / sub / "inv#a" / "a.pdf").read_bytes() == b"x"


def test_a_read_only_share_fails_the_target(tmp_path: Path) -> None:
    """A share without write access answered 403 to each file: '0 sent, 2 failed' on every
    pass, the target never failing, so no alert ever came."""
    share = tmp_path / "share"
    (share / "invoices").mkdir(parents=True)
    server = start_webdav(share, read_only=True)
    source = tmp_path / "export"
    source.mkdir()
    for i in (1, 2):
        (source / f"invoice {i}.pdf").write_bytes(f"%PDF {i}".encode())
    target = api.TargetConfig("dav", server.url("invoices"), server.options())
    cfg = api.Config(source=source, targets=(target,), state_dir=tmp_path / "state")
    try:
        with api.running(cfg) as m:
            (report,) = m.run_once()
    finally:
        server.server.stop()
    assert report.fatal is not None and "refuses writes (webdav: server answered 403" in report.fatal, report
    assert not os.listdir(share / "invoices")


@pytest.mark.parametrize("rows", ["lost", "recorded"])
def test_copies_a_pass_cut_short_sent_are_not_taken_for_newer_than_their_files(
    webdav_server: WebdavServer, sub: str, tmp_path: Path, rows: str
) -> None:
    """The server stopped during a first copy of invoices written days before: the files
    that had landed were journaled, and the next run recorded each with its copy's time,
    which WebDAV sets to when it landed, over the row of a file recorded already too. The
    file, taken for older than its copy, had the copy moved into .mirror-trash/ with a
    warning ("the source's file is older than the copy mirror sent"), and was sent again."""
    source = tmp_path / "export"
    source.mkdir()
    days_ago = time.time() - 3 * 86400
    for name in ("a.pdf", "b.pdf"):
        (source / name).write_bytes(f"%PDF {name}".encode())
        os.utime(source / name, (days_ago, days_ago))
    target = api.TargetConfig("dav", webdav_server.url(sub), webdav_server.options())
    cfg = api.Config(source=source, targets=(target,), state_dir=tmp_path / "state")
    with api.running(cfg) as m:
        (report,) = m.run_once()
    assert report.ok and report.uploaded == 2, report
    # what the stop left: the copies there, journaled as being sent, without their rows
    (db,) = (tmp_path / "state" / "targets").glob("*.sqlite")
    index = Index(db)
    recorded = index.entries()
    if rows == "lost":
        index.forget_many(recorded)
    index.sending(recorded.values())
    index.set_meta(clean_shutdown=0)
    index.close()
    with api.running(cfg) as m:
        (report,) = m.run_once()
    # sent again where the row was lost: a copy WebDAV lists is told by its size alone
    assert report.ok and report.uploaded == (2 if rows == "lost" else 0), report
    on_server = webdav_server.folder / sub
    assert not (on_server / ".mirror-trash").exists()
    assert files(on_server) == files(source)


def test_a_login_in_a_preset_s_base_url_stays_out_of_errors_status_and_state(
    webdav_server: WebdavServer, sub: str, tmp_path: Path
) -> None:
    """A Nextcloud preset with the login in its base_url, the password rotated on the
    server: the 401 printed the URL, password and all, on stderr, in status (text and
    JSON) and in the state folder."""
    source, config, state = tmp_path / "src", tmp_path / "mirror.toml", tmp_path / "state"
    source.mkdir()
    (source / "invoice.pdf").write_bytes(b"invoice")
    base = webdav_server.base.replace("://", f"://{USER}:${{NC_PASSWORD}}@", 1)
    config.write_text(
        f'source = "{source}"\n[backends.nc]\nprotocol = "webdav"\noptions = {{ base_url = "{base}" }}\n'
        f'[targets.cloud]\nurl = "nc://{sub}/Invoices"\n'
    )
    secret = "Rotated-Secret-5f3a9"
    env = {"NC_PASSWORD": secret}
    done = run("run", "-c", str(config), "--once", state=state, env=env)
    assert done.returncode != 0 and "asks for a login (401)" in done.stderr, done.stderr
    said = [done.stdout + done.stderr]
    said += [run("status", "-c", str(config), *how, state=state, env=env).stdout for how in ((), ("--json",))]
    assert all(secret not in text for text in said), said
    assert "401" in said[1] and "401" in said[2], said
    assert [f for f in state.rglob("*") if f.is_file() and secret.encode() in f.read_bytes()] == []


def _someone_s_folders(on_server: Path, *names: str) -> dict[str, bytes]:
    """Folders a colleague made on the server at ``names`` (where mirror's files were, or
    not), each holding a file of theirs; their files, as :func:`files` gives them."""
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            (on_server / name).unlink()
        (on_server / name).mkdir()
        (on_server / name / "keep.txt").write_bytes(f"their own {name}".encode())
    return {f"{name}/keep.txt": f"their own {name}".encode() for name in names}


def _mirrored_after_a_first_file(cfg: api.Config, source: Path, names: list[str]) -> None:
    """``names`` sent by a run after the one that sent a.txt: a.txt stays the file a run
    asks about, so the next run lists nothing and asks the server about paths."""
    (source / "a.txt").write_bytes(b"a")
    for new in ([], names):
        for name in new:
            (source / name).write_bytes(f"mine {name}".encode())
        with api.running(cfg) as m:
            (report,) = m.run_once()
        assert report.ok, report


def test_an_edit_or_a_new_file_where_someone_made_a_folder_fails_for_that_file_and_keeps_the_folder(
    webdav_server: WebdavServer, sub: str, tmp_path: Path
) -> None:
    """A colleague replaced Report.pdf on the server with a folder of their files, and made
    a folder Reports: the edited Report.pdf and a new file Reports were uploaded and moved
    into place with Overwrite: T, which replaced each folder whole, and the run said all
    was in sync."""
    source = tmp_path / "export"
    source.mkdir()
    target = api.TargetConfig("dav", webdav_server.url(sub), webdav_server.options())
    cfg = api.Config(source=source, targets=(target,), state_dir=tmp_path / "state")
    _mirrored_after_a_first_file(cfg, source, ["Report.pdf"])
    on_server = webdav_server.folder / sub
    theirs = _someone_s_folders(on_server, "Report.pdf", "Reports")
    (source / "Report.pdf").write_bytes(b"mine, edited")
    (source / "Reports").write_bytes(b"mine, new")
    with api.running(cfg) as m:
        (report,) = m.run_once()
    assert sorted(report.failed) == [
        (name, f"/{sub}/{name} on the target is a folder where a file goes") for name in ("Report.pdf", "Reports")
    ], report
    assert files(on_server) == {"a.txt": b"a", **theirs}


def test_a_rename_or_removal_of_a_file_someone_replaced_with_a_folder_leaves_the_folder_where_it_is(
    webdav_server: WebdavServer, sub: str, tmp_path: Path
) -> None:
    """A colleague replaced Old.pdf and Gone.pdf on the server with folders of their files;
    then Old.pdf was renamed New.pdf in the source, and Gone.pdf deleted: the rename moved
    the colleague's folder to New.pdf (no file New.pdf was on the server, yet status said
    in sync), and the removal's DELETE took the other folder with all in it."""
    source = tmp_path / "export"
    source.mkdir()
    target = api.TargetConfig("dav", webdav_server.url(sub), webdav_server.options())
    cfg = api.Config(source=source, targets=(target,), state_dir=tmp_path / "state")
    _mirrored_after_a_first_file(cfg, source, ["Old.pdf", "Gone.pdf"])
    on_server = webdav_server.folder / sub
    theirs = _someone_s_folders(on_server, "Old.pdf", "Gone.pdf")
    os.rename(source / "Old.pdf", source / "New.pdf")
    (source / "Gone.pdf").unlink()
    for _ in range(2):  # the copy the rename left is removed by the next pass
        with api.running(cfg) as m:
            (report,) = m.run_once()
        assert report.ok, report
        assert files(on_server) == {"a.txt": b"a", "New.pdf": b"mine Old.pdf", **theirs}


def test_a_server_that_tells_no_file_sizes_gets_each_file_once_and_verifies_clean(
    webdav_server: WebdavServer, sub: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server may leave getcontentlength out of its PROPFIND answers (RFC 4918: a
    SHOULD): each copy was read as 0 bytes, verify called every file different, and each
    listing pass moved every copy into .mirror-trash/ and sent it again."""
    from wsgidav.fs_dav_provider import FileResource

    monkeypatch.setattr(FileResource, "get_content_length", lambda self: None)
    source = tmp_path / "export"
    source.mkdir()
    for i in range(3):
        (source / f"inv-{i}.pdf").write_bytes(b"invoice %d" % i)
    config = tmp_path / "mirror.toml"
    config.write_text(
        f'source = "{source}"\n[targets.dav]\nurl = "{webdav_server.url(sub)}"\n'
        f'options = {{ username = "{USER}", password = "{PASSWORD}" }}\n'
    )
    state = tmp_path / "state"
    assert run("run", "--once", "-c", str(config), state=state).returncode == 0
    for _ in range(2):
        again = run("run", "--once", "--rescan", "-c", str(config), state=state)
        assert again.returncode == 0 and "0 sent" in again.stdout, again.stdout + again.stderr
    checked = run("verify", "-c", str(config), state=state)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert files(webdav_server.folder / sub) == files(source)
