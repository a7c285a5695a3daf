"""Alert settings in the config: per target, inherited from [defaults], checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror import config
from mirror.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mirror.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_alert_keys_load_per_target_and_from_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
source = "export"
[defaults]
on_failure = "mail -s 'mirror: $MIRROR_TARGET' admin@example.com"
healthcheck_url = "https://hc-ping.com/1234/"
[targets.disk]
url = "backup"
alert_after = "2m"
[targets.cloud]
url = "memory://x"
on_failure = ["/usr/local/bin/page", "--urgent"]
healthcheck_url = "http://127.0.0.1:8000/ping/cloud"
""",
    )
    disk, cloud = config.load(path, {}).targets
    assert disk.settings.on_failure == "mail -s 'mirror: $MIRROR_TARGET' admin@example.com"
    assert disk.settings.healthcheck_url == "https://hc-ping.com/1234"
    assert disk.settings.alert_after == 120
    assert cloud.settings.on_failure == ("/usr/local/bin/page", "--urgent")
    assert cloud.settings.healthcheck_url == "http://127.0.0.1:8000/ping/cloud"
    assert cloud.settings.alert_after == 900


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('on_failure = ""', "on_failure: expected a command"),
        ("on_failure = []", "on_failure: expected a command"),
        ("on_failure = 3", "on_failure: expected a command"),
        ('healthcheck_url = "hc-ping.com/x"', "healthcheck_url: expected an http(s) URL"),
        ("healthcheck_url = true", "healthcheck_url: expected an http(s) URL"),
        ('alert_after = "soon"', "alert_after: expected a duration"),
    ],
)
def test_bad_alert_settings_name_the_key(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, f'source = "x"\n[targets.a]\nurl = "/t"\n{line}\n')
    with pytest.raises(ConfigError) as err:
        config.load(path, {})
    assert f"targets.a.{message}" in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)
