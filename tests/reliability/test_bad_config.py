"""A corpus of bad configs (tests/corpus/configs): one line naming file and key, exit 2.

Each file's first line says what the error must mention (``# expect: a | b``). Every
config goes through the real ``mirror run`` command (in-process with click's runner, so
the corpus stays fast); nothing may be created in the state folder. A target that cannot
even be opened is not a config error but must still fail the run: exit 1, never 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mirror.cli import main
from tests.cli import run, start, wait_for

CORPUS = Path(__file__).parent.parent / "corpus" / "configs"
CASES = sorted(CORPUS.glob("*.toml"))


def broken(folder: Path) -> str:
    """A target whose filesystem fails as it is built, with an error nothing expects: a zip
    archive that is a folder (read-only zip:// itself is refused before that, as a target).
    The folder is each test's own: with one for all, the tests running at once (xdist) were
    one place, which the second was refused as already being mirrored."""
    return (
        'source = "export"\n[targets.z]\nurl = "dir://inner"\n'
        f'options = {{ target_protocol = "zip", target_options = {{ fo = "{folder}" }} }}\n'
    )


def expectations(path: Path) -> list[str]:
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    assert first.startswith("# expect:"), f"{path.name} must start with '# expect: ...'"
    return [word.strip() for word in first.removeprefix("# expect:").split("|")]


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_a_bad_config_is_one_line_naming_file_and_key_exit_2(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "export").mkdir()
    config = tmp_path / path.name
    config.write_bytes(path.read_bytes())
    env = {"MIRROR_STATE_DIR": str(tmp_path / "state")}
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["run", "-c", str(config), "--once"], env=env)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mirror: error: "), result.stderr
    assert str(config) in lines[0], lines[0]
    for word in expectations(path):
        assert word in lines[0], f"{word!r} missing from: {lines[0]}"
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").rglob("*.sqlite"))


def test_the_corpus_covers_every_family() -> None:
    names = {p.stem for p in CASES}
    for family in ("syntax", "unknown", "wrong_type", "protocol", "secret", "template"):
        assert any(family in n for n in names), family


def test_a_target_that_cannot_be_opened_fails_the_run(tmp_path: Path) -> None:
    """Opening this target raises an unexpected error inside the connect; before the fix
    the run printed a thread traceback and exited 0 with nothing mirrored."""
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "a.pdf").write_bytes(b"a")
    config = tmp_path / "m.toml"
    config.write_text(broken(tmp_path))
    result = run("run", "-c", str(config), "--once", state=tmp_path / "state", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "z: target failed:" in result.stderr


@pytest.mark.parametrize("flags", [[], ["-v"], ["--log-format", "json"]], ids=["text", "verbose", "json"])
def test_watch_mode_names_an_unexpected_error_in_its_log(tmp_path: Path, flags: list[str]) -> None:
    """The same target in watch mode logged 'unexpected error; will rescan' every few
    seconds, saying nothing of what went wrong, not even with -v or in JSON."""
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "a.pdf").write_bytes(b"a")
    config = tmp_path / "m.toml"
    config.write_text(broken(tmp_path))
    log = tmp_path / "log"
    proc = start("run", "-c", str(config), *flags, state=tmp_path / "state", log=log)
    try:
        wait_for(lambda: "will rescan" in log.read_text(), what="the error in the log", log=log)
    finally:
        proc.terminate()
        proc.wait(15)
    error = next(line for line in log.read_text().splitlines() if "will rescan" in line)
    if "--log-format" in flags:
        record = json.loads(error)
        assert record["message"].startswith("IsADirectoryError: [Errno 21] Is a directory"), record
        assert "Traceback (most recent call last)" in record["traceback"]
    else:
        assert " error   [z] IsADirectoryError: [Errno 21] Is a directory: " in error, error
        assert ("Traceback (most recent call last)" in log.read_text()) == ("-v" in flags)
