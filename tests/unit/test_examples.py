"""Config examples a user copies (the README's, the starter config's) are valid as written."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from mirror.backends.dropbox import default_token_file

from mirror import config
from mirror.cli import STARTER

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def test_every_toml_example_in_the_readme_parses() -> None:
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) >= 3
    for block in blocks:
        tomllib.loads(block)


def test_the_starter_config_loads_with_every_commented_example_taken_in(tmp_path: Path) -> None:
    """A novice uncomments the examples of `mirror init`'s file as they stand."""
    text = STARTER.format(name="mirror.toml")
    taken_in = re.sub(r"^# (?=\[|[a-z_]+ = )", "", text, flags=re.MULTILINE)
    assert taken_in.count("\n[") > text.count("\n[")
    cfg = config.from_dict(tomllib.loads(taken_in), tmp_path / "mirror.toml", {"NEXTCLOUD_PASSWORD": "x"})
    assert [t.name for t in cfg.targets] == ["backup", "nas", "dropbox", "cloud"]


def test_every_dropbox_token_file_shown_is_the_one_mirror_auth_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example said dropbox-token.json, `mirror init` dropbox.json, and `mirror auth
    dropbox --app-key KEY`, which they tell to run, wrote dropbox-KEY.json: the run failed."""
    monkeypatch.setenv("HOME", "/home/me")
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    texts = {
        "examples/multi-target.toml": (ROOT / "examples" / "multi-target.toml").read_text(),
        "mirror init": STARTER,
        "docs/dropbox.md": (ROOT / "docs" / "dropbox.md").read_text(),
    }
    for where, text in texts.items():
        shown = re.findall(r"token_file = \"([^\"]+)\"", text)
        assert shown, where
        for path in shown:
            assert Path(path.replace("~", "/home/me", 1)) == default_token_file(), (where, path)


def test_the_options_docs_list_for_each_built_in_backend_are_those_it_takes() -> None:
    """s3fs's client_kwargs, written as fsspec users do, was refused, and no doc said which
    options sftp, s3 and webdav take."""
    from mirror.backends import s3, sftp, webdav

    text = (ROOT / "docs" / "backends.md").read_text(encoding="utf-8")
    for scheme, module in (("sftp", sftp), ("s3", s3), ("webdav", webdav)):
        row = re.search(rf"^\| `{scheme}://` \| (.*) \|$", text, re.MULTILINE)
        assert row is not None, scheme
        assert set(re.findall(r"`(\w+)`", row[1])) == module.OPTIONS, scheme
