"""``mirror auth dropbox`` (PKCE without redirect) and refresh-token logins, against the fake."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from click.testing import CliRunner

from mirror.errors import ConfigError, FatalError
from tests.cli import run
from tests.servers.dropbox import DropboxServer


def approve(server: DropboxServer, url: str) -> str:
    """What the user does with the printed URL: sign in, click Allow, copy the code."""
    query = parse_qs(urlparse(url).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["token_access_type"] == ["offline"]
    assert query["client_id"] == [server.fake.app_key]
    return server.fake.authorize(query["code_challenge"][0])


def login(
    server: DropboxServer, token_file: Path, monkeypatch: pytest.MonkeyPatch, args: list[str] | None = None
) -> str:
    import dropbox
    from mirror.backends.dropbox_auth import command

    printed: list[str] = []
    original = dropbox.DropboxOAuth2FlowNoRedirect.start

    def start(self: object) -> str:
        printed.append(original(self))
        return printed[-1]

    monkeypatch.setattr(dropbox.DropboxOAuth2FlowNoRedirect, "start", start)
    # the terminal: the code typed at the prompt is the one Dropbox showed for that URL
    monkeypatch.setattr("click.prompt", lambda *a, **k: approve(server, printed[-1]))
    args = args or ["--app-key", server.fake.app_key, "--token-file", str(token_file), "--folder", "Invoices"]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output
    assert printed[-1] in result.output
    return result.output


def test_auth_stores_a_private_refresh_token_and_prints_the_config(
    dropbox_server: DropboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "conf" / "dropbox.json"
    output = login(dropbox_server, token_file, monkeypatch)

    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    stored = json.loads(token_file.read_text())
    assert stored["refresh_token"] in dropbox_server.fake.refresh_tokens
    assert stored["app_key"] == dropbox_server.fake.app_key
    assert stored["refresh_token"] not in output
    assert 'url = "dropbox://Invoices"' in output
    assert f'token_file = "{token_file}"' in output

    # the stored login works without any access token in the config
    driver = dropbox_server.driver("dropbox://Invoices", token=None, token_file=str(token_file))
    local = tmp_path / "a.pdf"
    local.write_bytes(b"invoice")
    driver.put(str(local), "a.pdf", time.time_ns())
    assert dropbox_server.fake.file_bytes("/Invoices/a.pdf") == b"invoice"


def test_a_missing_token_file_names_the_command_that_writes_it(
    dropbox_server: DropboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It said 'run `mirror auth dropbox`', which wrote dropbox-KEY.json elsewhere."""
    token_file = tmp_path / "my logins" / "dropbox-token.json"
    with pytest.raises(ConfigError) as caught:
        dropbox_server.driver(token=None, token_file=str(token_file))
    said = f"Dropbox token file {re.escape(str(token_file))} does not exist; run `mirror auth dropbox (.*)`"
    told = re.fullmatch(said, str(caught.value))
    assert told, caught.value
    args = shlex.split(told[1].replace("YOUR_APP_KEY", dropbox_server.fake.app_key))
    login(dropbox_server, token_file, monkeypatch, args)
    dropbox_server.driver(token=None, token_file=str(token_file)).list()


def test_a_wrong_code_fails_cleanly(dropbox_server: DropboxServer, tmp_path: Path) -> None:
    from mirror.backends.dropbox_auth import command

    result = CliRunner().invoke(
        command,
        ["--app-key", dropbox_server.fake.app_key, "--token-file", str(tmp_path / "t.json")],
        input="bad\n",
    )
    assert result.exit_code != 0
    assert "did not accept the code" in result.output
    assert not (tmp_path / "t.json").exists()


def test_expired_access_tokens_are_renewed_from_the_refresh_token(
    dropbox_server: DropboxServer, tmp_path: Path
) -> None:
    fake = dropbox_server.fake
    refresh = fake.issue_refresh_token()
    driver = dropbox_server.driver(token=None, refresh_token=refresh, app_key=fake.app_key)
    local = tmp_path / "a.pdf"
    local.write_bytes(b"a")
    driver.put(str(local), "a.pdf", time.time_ns())
    for token in fake.access_tokens:  # hours later: every access token has expired
        fake.access_tokens[token] = 0.0
    time.sleep(0.3)
    driver.put(str(local), "b.pdf", time.time_ns())
    assert sorted(driver.list()) == ["a.pdf", "b.pdf"]


def test_a_revoked_refresh_token_is_fatal(dropbox_server: DropboxServer, tmp_path: Path) -> None:
    fake = dropbox_server.fake
    refresh = fake.issue_refresh_token()
    driver = dropbox_server.driver(token=None, refresh_token=refresh, app_key=fake.app_key)
    fake.refresh_tokens.clear()
    local = tmp_path / "a.pdf"
    local.write_bytes(b"a")
    with pytest.raises(Exception) as caught:
        driver.put(str(local), "a.pdf", time.time_ns())
    error = driver.classify(caught.value)
    assert isinstance(error, FatalError)
    assert "mirror auth dropbox" in str(error)
    assert refresh not in str(error)


def test_token_file_must_be_private(dropbox_server: DropboxServer, tmp_path: Path) -> None:
    token_file = tmp_path / "t.json"
    token_file.write_text(json.dumps({"app_key": "k", "refresh_token": "r"}))
    os.chmod(token_file, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        dropbox_server.driver(token=None, token_file=str(token_file))


def test_the_login_mirror_auth_stores_by_default_is_used_without_options(
    dropbox_server: DropboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mirror run ./export dropbox://Invoices` right after `mirror auth dropbox` said the
    target "needs a login", as if the file that command wrote were not there (gdrive://
    and onedrive:// read theirs)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    stored = tmp_path / "config" / "mirror" / "dropbox-token.json"
    missing = run("run", str(tmp_path), "dropbox://Invoices", "--once", state=tmp_path / "state")
    assert missing.returncode == 2 and len(missing.stderr.splitlines()) == 1, missing.stderr
    assert "needs a login: run `mirror auth dropbox" in missing.stderr, missing.stderr
    assert f"(it stores one in {stored})" in missing.stderr, missing.stderr
    login(dropbox_server, stored, monkeypatch, ["--app-key", dropbox_server.fake.app_key])
    assert stored.exists()
    source = tmp_path / "export"
    source.mkdir()
    (source / "a.pdf").write_bytes(b"invoice")
    state = tmp_path / "state"
    done = run("run", str(source), "dropbox://Invoices", "--once", state=state, env=dropbox_server.env)
    assert done.returncode == 0, done.stderr
    assert dropbox_server.fake.file_bytes("/Invoices/a.pdf") == b"invoice"


def test_missing_login_and_unknown_options_are_config_errors(
    dropbox_server: DropboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="needs a login"):
        dropbox_server.driver(token=None)
    with pytest.raises(ConfigError, match="needs app_key"):
        dropbox_server.driver(token=None, refresh_token="r")
    with pytest.raises(ConfigError, match="unknown Dropbox option"):
        dropbox_server.driver(tokn="x")
