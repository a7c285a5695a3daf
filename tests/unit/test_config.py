"""The config loader: good files load, bad ones give one line naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirror import config
from mirror.errors import ConfigError
from mirror.policy import DeletePolicy


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mirror.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_full_config_loads_with_defaults_presets_and_secrets(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
source = "export"
[defaults]
layout = "by-month"
settle = "250ms"
rescan_interval = "2h"
exclude = ["*.bak"]
[backends.nextcloud]
protocol = "webdav"
options = { base_url = "https://cloud.example/dav", auth = ["me", "${NC_PASS}"] }
capabilities = { atomic_rename = true }
[targets.disk]
url = "backup"
delete = "trash"
max_delete = 5
[targets.cloud]
url = "nextcloud://Invoices"
concurrency = 2
""",
    )
    cfg = config.load(path, {"NC_PASS": "s3cret-pass"})
    assert cfg.source == tmp_path / "export"
    disk, cloud = cfg.targets
    assert disk.url == str(tmp_path / "backup")
    assert disk.settings.delete is DeletePolicy.TRASH and disk.settings.max_delete == 5
    assert disk.settings.layout.template == "{year}/{month}/{path}"
    assert disk.settings.settle == 0.25 and disk.settings.rescan_interval == 7200
    assert cloud.options == {"base_url": "https://cloud.example/dav", "auth": ["me", "s3cret-pass"]}
    assert cloud.secrets == ("s3cret-pass",)
    assert cloud.settings.concurrency == 2 and cloud.settings.exclude == ("*.bak",)
    assert cfg.presets["nextcloud"].protocol == "webdav"
    assert cfg.select("cloud").targets == (cloud,)


BAD = [
    ("source = ", "invalid TOML"),
    ('source = "x"\n[targets.a]\nurl = "/t"\nlayuot = "flat"\n', "targets.a: unknown key 'layuot'"),
    ('source = "x"\n[target.a]\nurl = "/t"\n', "unknown key 'target'; did you mean 'targets'?"),
    (
        'source = "x"\n[backends.file]\nprotocol = "memory"\n[targets.a]\nurl = "/t"\n',
        "backends.file: 'file' names the built-in local folder backend",
    ),
    (
        'source = "x"\n[targets.a]\nurl = "/t"\nlayout = "by-yaer"\n',
        "unknown layout 'by-yaer'; did you mean 'by-year'?",
    ),
    ('source = "x"\n[targets.a]\nurl = "/t"\ndelete = "maybe"\n', "targets.a.delete: expected one of mirror"),
    ('source = "x"\n[targets.a]\nurl = "/t"\nmax_delete = -1\n', "targets.a.max_delete"),
    ('source = "x"\n[targets.a]\nurl = "/t"\nsettle = "soon"\n', "targets.a.settle: expected a duration"),
    ('source = "x"\n[targets.a]\nurl = "/t"\nlayout = "../{path}"\n', "targets.a.layout"),
    ('source = "x"\n[targets.a]\nurl = "/t"\noptions = { password = "${NOPE}" }\n', "NOPE is not set"),
    ('source = "x"\n[targets.a]\nurl = 3\n', "targets.a.url"),
    ('source = "x"\n', "no targets"),
    ('[targets.a]\nurl = "/t"\n', "source"),
    ('source = "x"\n[targets."a b"]\nurl = "/t"\n', "target names"),
    ('source = "x"\n[backends.n]\noptions = {}\n[targets.a]\nurl = "/t"\n', "backends.n.protocol"),
    (
        'source = "x"\n[backends.n]\nprotocol = "webdav"\ncapabilities = { hash_kind = "crc" }\n'
        '[targets.a]\nurl = "/t"\n',
        "hash_kind",
    ),
    ('source = "x"\nbogus = 1\n[targets.a]\nurl = "/t"\n', "unknown key 'bogus'"),
    ('source = "x"\n[targets.a]\nurl = "/t"\nconcurrency = true\n', "targets.a.concurrency"),
    # Windows' separator at the end, and a lone '!': an internal error at the first file filtered
    (
        'source = "x"\n[targets.a]\nurl = "/t"\nexclude = ["drafts\\\\"]\n',
        "targets.a.exclude: the pattern 'drafts\\\\' is not a gitignore pattern; use / between folders",
    ),
    (
        'source = "x"\n[defaults]\ninclude = ["!"]\n[targets.a]\nurl = "/t"\n',
        "defaults.include: the pattern '!' takes",
    ),
    (
        'source = "x"\n[targets.a]\nurl = "/t"\nexclude = ["./private/"]\n',
        "targets.a.exclude: the pattern './private/' matches nothing: patterns are relative to the source "
        "folder; write /private/ for a path at its top",
    ),
    ('source = "x"\n[targets.a]\nurl = "/t"\ninclude = ["!./.hidden/"]\n', "write !/.hidden/ for a path"),
    # an internal error at the first wait on it
    ('source = "x"\n[targets.a]\nurl = "/t"\nsettle = inf\n', "targets.a.settle: inf is longer than a year"),
    ('source = "x"\n[defaults]\nrescan_interval = 1e300\n[targets.a]\nurl = "/t"\n', "longer than a year"),
    # what mirror derives from a layout key is none to set
    ('source = "x"\n[targets.a]\nurl = "/t"\nlayout_chosen = "banana"\n', "unknown key 'layout_chosen'"),
    # every file failed as longer than -5 bytes
    (
        'source = "x"\n[backends.n]\nprotocol = "file"\ncapabilities = { max_name_bytes = -5 }\n'
        '[targets.a]\nurl = "n:///t"\n',
        "backends.n.capabilities.max_name_bytes: expected a positive number, got -5",
    ),
    # an older mirror's key, both ends at once: "did you mean 'forbidden_leading'?" dropped the other
    (
        'source = "x"\n[backends.n]\nprotocol = "file"\ncapabilities = { forbidden_edges = " ." }\n'
        '[targets.a]\nurl = "n:///t"\n',
        "backends.n.capabilities: 'forbidden_edges' is an older mirror's key; "
        "set forbidden_leading and forbidden_trailing to its value instead",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_configs_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        config.load(path, {})
    text_of_error = str(err.value)
    assert str(path) in text_of_error and message in text_of_error
    assert "\n" not in text_of_error


def test_a_missing_config_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mirror init"):
        config.load(tmp_path / "nope.toml")


toml_values = st.recursive(
    st.one_of(st.booleans(), st.integers(-5, 5), st.text(max_size=6), st.floats(allow_nan=False)),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
keys = st.sampled_from(sorted(config.TARGET_KEYS | {"x"}))


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(keys, toml_values, max_size=5),
    st.dictionaries(st.sampled_from(sorted(config.TOP_KEYS)), toml_values, max_size=3),
)
def test_fuzzed_configs_load_or_raise_config_error(target: dict[str, object], top: dict[str, object]) -> None:
    data = {"source": "x", **top, "targets": {"a": target}}
    try:
        config.from_dict(data, Path("/cfg/mirror.toml"), {})
    except ConfigError as exc:
        assert "/cfg/mirror.toml" in str(exc)


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("1 hour", 3600), ("2 Hours", 7200), ("30 seconds", 30), ("10 mins", 600), ("1 day", 86400), ("500 ms", 0.5)],
)
def test_durations_written_out_as_people_write_them_are_understood(written: str, seconds: float) -> None:
    assert config.parse_duration(written, "defaults.rescan_interval") == seconds


def test_variables_fill_in_source_url_and_state_dir(tmp_path: Path) -> None:
    path = write(
        tmp_path, 'source = "${EXPORTS}/inv"\nstate_dir = "${STATE}"\n[targets.a]\nurl = "${DISK}/backup"\n'
    )
    cfg = config.load(path, {"EXPORTS": "/srv/exports", "STATE": "/var/lib/m", "DISK": "/mnt/usb"})
    assert (str(cfg.source), str(cfg.state_dir), cfg.targets[0].url) == (
        "/srv/exports/inv",
        "/var/lib/m",
        "/mnt/usb/backup",
    )
    with pytest.raises(ConfigError, match=r"targets\.a\.url: environment variable DISK is not set"):
        config.load(path, {"EXPORTS": "/srv/exports", "STATE": "/var/lib/m"})


def test_a_windows_path_in_a_double_quoted_string_is_named_not_made(tmp_path: Path) -> None:
    """'C:\\backup' in "..." holds a backspace: a folder with it in its name was made."""
    path = write(tmp_path, 'source = "x"\n[targets.a]\nurl = "C:\\backup"\n')
    with pytest.raises(ConfigError, match=r"targets\.a\.url: .* control character '\\x08'.*forward slashes"):
        config.load(path, {})


def test_a_config_saved_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    path = tmp_path / "mirror.toml"
    path.write_bytes(b'\xef\xbb\xbfsource = "x"\n[targets.a]\nurl = "/t"\n')
    assert config.load(path, {}).targets[0].url == "/t"


def test_a_preset_s_protocol_is_case_insensitive_as_url_schemes_are(tmp_path: Path) -> None:
    path = write(
        tmp_path, 'source = "x"\n[backends.cloud]\nprotocol = "WebDAV"\n[targets.a]\nurl = "cloud://h/x"\n'
    )
    assert config.load(path, {}).presets["cloud"].protocol == "webdav"
