"""What the host hands mirror at start: its locale, its standard streams, its limits."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from tests.cli import MIRROR, files, run

NAMES = {"Kunden-Müller/Rechnung-März.pdf": b"m", "Ærø/faktura-ø.pdf": b"o", "plain.pdf": b"p"}


def _source(root: Path) -> Path:
    for rel, data in NAMES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_names_are_read_as_utf8_whatever_the_locale(tmp_path: Path) -> None:
    """Under an ASCII locale with Python's UTF-8 mode off, names with accents were refused
    as 'not valid UTF-8' and their copies' deletion attempted; under ISO-8859-1 every one
    was moved to a garbled name on the target."""
    src, target, state = _source(tmp_path / "src"), tmp_path / "t", tmp_path / "state"
    assert run("run", str(src), str(target), "--once", state=state).returncode == 0
    (src / "Kunden-Müller/Gutschrift-Jänner.pdf").write_bytes(b"g")
    ascii_locale = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": "utf-8"}
    again = run("run", str(src), str(target), "--once", state=state, env=ascii_locale)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 sent" in again.stdout and "0 deleted" in again.stdout
    assert files(target) == {**NAMES, "Kunden-Müller/Gutschrift-Jänner.pdf": b"g"}


def test_closed_standard_streams_neither_stop_nor_fail_a_run(tmp_path: Path) -> None:
    """A wrapper that closes stdin (``<&-``) made mirror fail with a traceback before
    copying anything; with stdout closed the copy was made, then exit 1."""
    src, state = _source(tmp_path / "src"), tmp_path / "state"
    command = shlex.join([*MIRROR, "run", str(src)])
    for n, closing in enumerate(["<&-", ">&-", ">&- 2>&-", "<&- >&- 2>&-"]):
        target = tmp_path / f"t{n}"
        done = subprocess.run(
            ["bash", "-c", f"{command} {shlex.quote(str(target))} --once {closing}"],
            env={**os.environ, "MIRROR_STATE_DIR": str(state)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, (closing, done.stderr)
        assert "Traceback" not in done.stderr
        assert files(target) == NAMES, closing


def _four_targets_under(limit: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """A first copy of 400 files to four local targets, four workers each, under
    ``ulimit LIMIT``."""
    src = tmp_path / "src"
    for i in range(400):
        (src / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 4}/f{i}.pdf").write_bytes(b"x")
    config = tmp_path / "m.toml"
    config.write_text(
        f'source = "{src}"\n'
        + "".join(f'[targets.t{n}]\nurl = "{tmp_path}/t{n}"\nconcurrency = 4\n' for n in range(4))
    )
    command = shlex.join([*MIRROR, "run", "-c", str(config), "--once"])
    return subprocess.run(
        ["bash", "-c", f"ulimit {limit} && {command}"],
        env={**os.environ, "MIRROR_STATE_DIR": str(tmp_path / "state")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_many_targets_fit_under_a_low_soft_limit_of_open_files(tmp_path: Path) -> None:
    """Each worker keeps a batch of source files open: several targets went past the
    soft limit (1,024 on most systems) and files failed with 'Too many open files'."""
    done = _four_targets_under("-S -n 48", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(len(files(tmp_path / f"t{n}")) == 400 for n in range(4))


def test_a_hard_limit_of_open_files_is_named_with_its_fix(tmp_path: Path) -> None:
    done = _four_targets_under("-n 48", tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "too many open files (the limit is 48); raise it (ulimit -n" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
