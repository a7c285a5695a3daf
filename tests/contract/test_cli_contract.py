"""The same user story on every backend, through the real command line: a first copy,
an edit, a no-change pass, then ``mirror verify`` — as a subprocess configured only by a
TOML file and the environment, exactly as a user would run it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.cli import run
from tests.contract.test_contract import (
    disk_root,
    outside_with_files,
    spec,  # noqa: F401 - the parametrized fixture
    swap_for_a_link,
    tree,
)
from tests.support import TargetSpec

#: the libraries each backend talks to its service through. Google Drive's are loaded to
#: check its login at every start: not yet on the list
CLIENT_LIBRARIES = {
    "s3": {"s3fs", "aiobotocore", "botocore"},
    "dropbox": {"dropbox", "dropboxdrivefs", "requests"},
    "sftp": {"paramiko"},
    "webdav": {"webdav4", "httpx"},
    "onedrive": {"msal", "httpx", "requests"},
}


def toml_value(value: object) -> str:
    """An inline TOML value for the plain data a TargetSpec holds."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def config_file(spec: TargetSpec, source: Path, path: Path) -> Path:  # noqa: F811
    lines = [f"source = {toml_value(str(source))}", "", "[targets.t]", f"url = {toml_value(spec.url)}"]
    lines.append(f"options = {toml_value(spec.options)}")
    for name, preset in spec.presets.items():
        lines += ["", f"[backends.{name}]"] + [f"{k} = {toml_value(v)}" for k, v in preset.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_run_edit_run_verify_through_the_cli(spec: TargetSpec, tmp_path: Path) -> None:  # noqa: F811
    if spec.backend == "memory":
        pytest.skip("a memory target does not outlive the process that wrote it")
    source = tmp_path / "export"
    (source / "2026" / "04").mkdir(parents=True)
    for i in range(8):
        (source / "2026" / "04" / f"invoice #{i} [draft].pdf").write_bytes(os.urandom(500 + i))
    (source / "big scan.tif").write_bytes(os.urandom(5 * 1024 * 1024 + 11))
    config = config_file(spec, source, tmp_path / "mirror.toml")
    state = tmp_path / "state"

    first = run("run", "-c", str(config), "--once", state=state, env=spec.env, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "9 sent" in first.stdout
    (source / "2026" / "04" / "invoice #3 [draft].pdf").write_bytes(b"corrected")
    second = run("run", "-c", str(config), "--once", state=state, env=spec.env, cwd=tmp_path)
    assert second.returncode == 0 and "1 sent" in second.stdout, second.stdout + second.stderr
    # a run with nothing to send never connects, nor does status: neither loads the
    # backend's client libraries (S3's took 0.8 s of CPU at every start, Dropbox's 0.7 s)
    told = {**spec.env, "PYTHONPROFILEIMPORTTIME": "1"}
    third = run("run", "-c", str(config), "--once", state=state, env=told, cwd=tmp_path)
    assert third.returncode == 0 and "0 sent" in third.stdout, third.stdout + third.stderr
    status = run("status", "-c", str(config), state=state, env=told, cwd=tmp_path)
    assert status.returncode == 0, status.stdout + status.stderr
    for quiet in (third, status):
        imported = {line.rpartition("|")[2].strip() for line in quiet.stderr.splitlines() if "|" in line}
        assert not imported & CLIENT_LIBRARIES.get(spec.backend, set()), quiet.args
    verify = run("verify", "-c", str(config), state=state, env=spec.env, cwd=tmp_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # no temp file or other leftover beside the mirrored files
    assert "other file" not in verify.stdout, verify.stdout
    for secret in spec.env.values():
        if len(secret) >= 8 and not secret.startswith(("/", "http")):
            assert secret not in first.stdout + first.stderr + verify.stdout + verify.stderr


#: mtimes outside what some targets hold (SFTP v3: unsigned 32-bit seconds) or in the future
ODD_DATES = {"1938.pdf": -1_000_000_000, "epoch.pdf": 0, "2100.pdf": 4_102_444_800, "2200.pdf": 7_258_118_400}


def test_files_dated_far_in_the_past_or_future_are_sent_once(spec: TargetSpec, tmp_path: Path) -> None:  # noqa: F811
    if spec.backend == "memory":
        pytest.skip("a memory target does not outlive the process that wrote it")
    source = tmp_path / "export"
    source.mkdir()
    for name, seconds in ODD_DATES.items():
        (source / name).write_bytes(name.encode() * 10)
        os.utime(source / name, ns=(seconds * 10**9, seconds * 10**9))
    config = config_file(spec, source, tmp_path / "mirror.toml")
    state = tmp_path / "state"
    first = run("run", "-c", str(config), "--once", state=state, env=spec.env, cwd=tmp_path)
    # a date in the future is no sign of a file still being written
    assert first.returncode == 0 and "4 sent" in first.stdout, first.stdout + first.stderr
    assert "keeps changing" not in first.stderr
    # a target that keeps the nearest date it can hold has not changed since
    listed = run("run", "-c", str(config), "--once", "--rescan", state=state, env=spec.env, cwd=tmp_path)
    assert listed.returncode == 0 and "0 sent" in listed.stdout, listed.stdout + listed.stderr
    verify = run("verify", "-c", str(config), state=state, env=spec.env, cwd=tmp_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_folder_swapped_for_a_link_on_the_target_fails_its_files_and_changes_nothing_outside(
    spec: TargetSpec,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Someone replaced a folder mirror made on the target with a link to a folder of
    theirs: the next run deleted their x.pdf through it ("1 deleted", exit 0), a new file
    was written there, on a fresh run and with --rescan alike. Now each file below the
    link fails, naming it, nothing outside the target changes, and the exit code tells."""
    root = disk_root(spec)
    source = tmp_path / "export"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "x.pdf").write_bytes(b"mirror's x")
    (source / "sub" / "y.pdf").write_bytes(b"mirror's y")
    (source / "top.pdf").write_bytes(b"top")
    config = config_file(spec, source, tmp_path / "mirror.toml")
    state = tmp_path / "state"

    def mirror(*args: str) -> tuple[int, str, str]:
        done = run(*args, "-c", str(config), state=state, env=spec.env, cwd=tmp_path)
        return done.returncode, done.stdout, done.stderr

    code, out, err = mirror("run", "--once")
    assert code == 0 and "3 sent" in out, out + err
    outside = outside_with_files(tmp_path)
    swap_for_a_link(root / "sub", outside)
    before = tree(outside)
    refused = f"{root / 'sub'} on the target is a symbolic link; mirror does not write through it"
    (source / "sub" / "x.pdf").unlink()
    code, out, err = mirror("run", "--once")
    assert code == 1 and "0 deleted" in out and refused in err, out + err
    assert tree(outside) == before
    (source / "sub" / "new.pdf").write_bytes(b"a new invoice")
    os.rename(source / "sub" / "y.pdf", source / "y.pdf")
    for again in (["run", "--once"], ["run", "--once", "--rescan"]):
        code, out, err = mirror(*again)
        assert code == 1 and refused in err, out + err
        assert tree(outside) == before
    code, out, err = mirror("status")
    assert code == 1 and "symbolic link" in out, out + err
