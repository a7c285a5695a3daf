"""Which file in mirror's state folder holds a target's index, and finding it again
under another name.

One index per (source, target URL) pair, named after the target for humans: a target
renamed in the config, or run as ``mirror run SOURCE TARGET``, is found by the pair's key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sqlite3
from contextlib import suppress
from pathlib import Path

import platformdirs

from mirror.config import COMMAND_LINE, Config, TargetConfig, TargetSettings, real_path
from mirror.errors import ConfigError, MirrorError
from mirror.index import Index
from mirror.layout import Layout
from mirror.redact import redact_url


def state_dir(config: Config) -> Path:
    """Where indexes live: --state-dir / config, MIRROR_STATE_DIR, or the platform dir."""
    if config.state_dir is not None:
        return config.state_dir
    env = os.environ.get("MIRROR_STATE_DIR")
    if env:
        return real_path(Path(env).expanduser(), "MIRROR_STATE_DIR")
    return Path(platformdirs.user_state_dir("mirror", appauthor=False))


def check_state_folder(root: Path) -> None:
    """Raise ConfigError where the state folder ``root`` cannot be made or written into:
    a file in its place, or a folder on its way this user may not write."""
    existing = next(p for p in (root, *root.parents) if p.exists())
    if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return
    why = f"{existing} is not a folder" if not existing.is_dir() else f"{existing} is not writable"
    raise ConfigError(
        f"cannot use {root} as mirror's state folder: {why}; set state_dir, --state-dir or MIRROR_STATE_DIR "
        "to a folder mirror can write"
    )


def forgotten_setting(index_file: Path, settings: TargetSettings) -> tuple[str, str] | None:
    """The setting ("layout" or "delete") the index ``index_file`` was last mirrored with
    another value of, and that value, where ``settings`` leave it to its default: a flag or
    key only left out, whose default would move every file on the target (tree), or delete
    for good the next file removed from a target kept with keep or trash (mirror). None
    where none is, there is no index, or it cannot be read (the run's own open says what
    and why)."""
    try:
        if not index_file.exists():
            return None
        index = Index(index_file, readonly=True)
        try:
            layout, delete = index.get_meta("layout"), index.get_meta("delete")
        finally:
            index.close()
    except (MirrorError, OSError, sqlite3.Error):
        return None
    if not settings.layout_chosen and layout is not None and layout != settings.layout.template:
        return "layout", Layout.parse(layout).name
    if not settings.delete_chosen and delete is not None and delete != settings.delete.value:
        return "delete", delete
    return None


def refused_take_over(config: Config, target: TargetConfig, old: Path) -> str | None:
    """Why a run refuses to take over the index ``old`` for ``target`` (renamed in the
    config, or given by another URL spelling), if it does: :func:`forgotten_setting`."""
    if (forgotten := forgotten_setting(old, target.settings)) is None:
        return None
    key, value = forgotten
    where = f"targets.{target.name}" if config.origin != COMMAND_LINE else "the command line"
    return (
        f"target {target.name!r} mirrors where the index {old.stem} was mirrored with "
        f"{key} = {value!r}, which {config.origin} leaves out; "
        f"set {key} = {value!r} in {where} to go on as before (or another value, on purpose)"
    )


def index_path(root: Path, source: Path, target: TargetConfig) -> Path:
    """One index per (source, target URL) pair, named after the target for humans."""
    return root / "targets" / f"{target.name}-{_pair_key(source, target)}.sqlite"


def index_of(root: Path, source: Path, target: TargetConfig) -> Path:
    """The index of ``target``. A URL with a ``${VAR}`` left unset (status from a shell
    without the service's environment) names no pair: the index its name and source had."""
    path = index_path(root, source, target)
    if path.exists() or "${" not in target.url:
        return path
    named = sorted(
        (f for f in (root / "targets").glob(f"{target.name}-*.sqlite") if f.stem.rsplit("-", 1)[0] == target.name),
        key=lambda f: f.stat().st_mtime,
    )
    for candidate in reversed(named):
        index = Index(candidate, readonly=True)
        try:
            if index.get_meta("source") in (str(source), os.path.realpath(source)):
                return candidate
        finally:
            index.close()
    return path


def _pair_key(source: Path, target: TargetConfig) -> str:
    return hashlib.sha256(f"{source}\0{redact_url(target.url)}".encode()).hexdigest()[:12]


def mirrored_as(root: Path, source: Path, target: TargetConfig) -> TargetConfig:
    """``target`` under the name its source and URL were last mirrored as, if another:
    ``mirror status`` and ``verify`` of SOURCE TARGET then find a config's target (its
    layout, its history) instead of a target never run."""
    try:
        if index_path(root, source, target).exists():
            return target
        found = sorted(
            (root / "targets").glob(f"*-{_pair_key(source, target)}.sqlite"), key=lambda f: f.stat().st_mtime
        )
    except OSError:
        return target  # a state folder it cannot read: opening the index says so
    if not found:
        return target
    return dataclasses.replace(target, name=found[-1].name.rsplit("-", 1)[0])


def move_index(old: Path, new: Path) -> None:
    """Rename an index with its sqlite journal files."""
    for suffix in ("", "-wal", "-shm"):
        with suppress(FileNotFoundError):
            os.rename(f"{old}{suffix}", f"{new}{suffix}")
