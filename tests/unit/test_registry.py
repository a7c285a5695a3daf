"""A backend whose libraries are not installed is named with its install hint."""

from __future__ import annotations

import datetime as dt
import errno
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.registry import known_implementations

from mirror import api
from mirror import config as config_mod
from mirror.errors import ConfigError, FatalError
from mirror.events import Report
from mirror.registry import BackendInfo, Preset, capabilities, connect, known_backends, load_driver_class, resolve
from mirror.target_place import resolved

#: like Google Drive's google.oauth2, a module inside a package that is not installed
GDRIVE_LIKE = BackendInfo(
    "gdrive", "Google Drive", "mirror.backends.gdrive:GDriveDriver", ("mirror_absent_pkg.oauth2",), "gdrive"
)


def test_a_module_of_a_missing_package_counts_as_missing() -> None:
    assert GDRIVE_LIKE.missing() == ["mirror_absent_pkg.oauth2"]


def test_the_backend_says_what_to_install_rather_than_failing_inside() -> None:
    hint = r"needs mirror_absent_pkg\.oauth2.*pip install 'fsspec-mirror\[gdrive\]'"
    with pytest.raises(ConfigError, match=hint):
        load_driver_class(GDRIVE_LIKE)


@pytest.fixture
def fsspec_backends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two fsspec implementations as fsspec lists them, like its smb (whose module imports
    a package that is not installed) and its hdfs (whose class imports one when built)."""
    (tmp_path / "absent_at_import.py").write_text("import mirror_absent_smbclient\n")
    (tmp_path / "absent_when_built.py").write_text(
        "from fsspec import AbstractFileSystem\n\n\n"
        "class LateFileSystem(AbstractFileSystem):\n"
        "    def __init__(self, *args, **kwargs):\n"
        "        import mirror_absent_pyarrow  # noqa: F401\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    smb = {"class": "absent_at_import.SmbFileSystem", "err": 'SMB-like requires "smbprotocol" installed'}
    monkeypatch.setitem(known_implementations, "smblike", smb)
    monkeypatch.setitem(known_implementations, "hdfslike", {"class": "absent_when_built.LateFileSystem"})


@pytest.mark.usefixtures("fsspec_backends")
def test_an_fsspec_backend_whose_packages_are_missing_says_so_before_the_run() -> None:
    listed = {info.protocol: info for info in known_backends()}
    assert listed["smblike"].missing() == ["mirror_absent_smbclient"]
    assert listed["memory"].missing() == []
    with pytest.raises(
        ConfigError, match=r'needs mirror_absent_smbclient.*SMB-like requires "smbprotocol" installed'
    ):
        load_driver_class(resolve("smblike://host/share", {}, {}).backend)
    with pytest.raises(FatalError, match="needs mirror_absent_pyarrow, which is not installed"):
        connect(resolve("hdfslike://host/x", {}, {}))


@pytest.mark.usefixtures("fsspec_backends")
def test_a_missing_backend_package_names_the_config_and_the_target_that_needs_it(tmp_path: Path) -> None:
    """Of three targets, the error named the backend alone: not the file, nor the target."""
    (tmp_path / "src").mkdir()
    cfg = tmp_path / "mirror.toml"
    cfg.write_text(
        f'source = "{tmp_path / "src"}"\n[targets.usb]\nurl = "{tmp_path / "usb"}"\n'
        '[targets.share]\nurl = "smblike://host/share"\n'
    )
    config = config_mod.load(cfg)
    usb, share = config.targets
    resolved(config, usb)
    with pytest.raises(
        ConfigError, match=rf"^{cfg}: targets\.share: backend 'smblike' needs mirror_absent_smbclient, "
    ):
        resolved(config, share)


def test_several_missing_modules_read_as_a_list() -> None:
    two = BackendInfo(
        "dropbox", "Dropbox", "mirror.backends.dropbox:DropboxDriver", ("absent_a", "absent_b"), "dropbox"
    )
    with pytest.raises(ConfigError, match="needs absent_a and absent_b, which are not installed: pip install"):
        load_driver_class(two)


def test_a_capability_the_generic_driver_cannot_honour_is_refused_before_the_run() -> None:
    """mtime_settable on FTP: every file landed, failed setting its time, and was sent again on every run."""
    preset = Preset("nas", "ftp", {"port": 2121}, {"mtime_settable": True})
    with pytest.raises(ConfigError, match="mtime_settable = true cannot hold for backend 'ftp'"):
        capabilities(resolve("nas://host/x", {}, {"nas": preset}))


def test_a_hash_kind_the_driver_never_reads_is_refused_before_the_run() -> None:
    """The README's Nextcloud preset with hash_kind = "md5": verify said 'sizes and hashes
    compared: identical' of a file whose bytes differed; WebDAV reports no hash."""
    for protocol in ("webdav", "sftp", "ftp"):
        preset = Preset("nas", protocol, {"base_url": "https://h/dav"}, {"hash_kind": "md5"})
        with pytest.raises(
            ConfigError, match=f"backends.nas.capabilities: hash_kind = 'md5' cannot hold for backend '{protocol}'"
        ):
            capabilities(resolve("nas://host/x", {}, {"nas": preset}))
    kept_out = Preset("minio", "s3", {}, {"hash_kind": "none"})  # SSE-KMS: S3's ETags are no MD5 there
    assert capabilities(resolve("minio://bucket/x", {}, {"minio": kept_out})).hash_kind.value == "none"


def test_the_generic_driver_sends_through_a_temp_name_where_the_filesystem_renames() -> None:
    """FTP renames (RNFR/RNTO): no file is seen half-sent under its name; memory cannot."""
    assert capabilities(resolve("ftp://host/x", {}, {})).atomic_rename
    assert not capabilities(resolve("memory://x", {}, {})).atomic_rename


def test_a_preset_built_on_another_preset_is_named_with_its_table() -> None:
    presets = {"base": Preset("base", "file"), "usb": Preset("usb", "base")}
    with pytest.raises(
        ConfigError, match=r"unknown protocol 'base' in \[backends\.usb\] protocol \(a preset is built"
    ):
        resolve("usb:///mnt/x", {}, presets)
    with pytest.raises(ConfigError, match="did you mean 'webdav'"):
        resolve("nas://h/x", {}, {"nas": Preset("nas", "webdaw")})


class SmbLike(MemoryFileSystem):
    """Answers as smbprotocol does: a missing path is an OSError carrying ENOENT (not a
    FileNotFoundError), and a rename onto an existing name is refused."""

    protocol = "smblike-fs"
    store: ClassVar[dict[str, Any]] = {}
    pseudo_dirs: ClassVar[list[str]] = [""]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return dict(super().info(path, **kwargs))
        except FileNotFoundError:
            raise OSError(errno.ENOENT, "[NtStatus 0xc0000034] No such file", path) from None

    def mv(self, path1: str, path2: str, **kwargs: Any) -> None:
        if self.exists(path2):
            raise OSError(errno.EEXIST, "[NtStatus 0xc0000035] File exists", path1)
        super().mv(path1, path2, **kwargs)


def test_a_filesystem_that_renames_as_smb_does_gets_changes_and_trash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """smb:// by config: a changed file failed for ever ('File exists' renaming its temp
    file onto it), holding back every deletion, and nothing could go into the trash."""
    monkeypatch.setitem(known_implementations, SmbLike.protocol, {"class": f"{__name__}.SmbLike"})
    source = tmp_path / "export"
    source.mkdir()
    (source / "invoice.pdf").write_bytes(b"v1")
    (source / "gone.pdf").write_bytes(b"old")
    data = {
        "source": str(source),
        "state_dir": str(tmp_path / "state"),
        "targets": {"nas": {"url": f"{SmbLike.protocol}://share/inv", "delete": "trash"}},
    }
    cfg = config_mod.from_dict(data, tmp_path / "mirror.toml", {})

    def once() -> Report:
        with api.running(cfg) as mirror:
            (report,) = mirror.run_once()
        return report

    assert once().ok
    (source / "invoice.pdf").write_bytes(b"v2, corrected")
    (source / "gone.pdf").unlink()
    report = once()
    assert report.ok and report.uploaded == 1 and report.trashed == 1, report
    top = f"{SmbLike.protocol}://share/inv"
    assert SmbLike.store[f"{top}/invoice.pdf"].getvalue() == b"v2, corrected"
    assert sorted(SmbLike.store) == [f"{top}/.mirror-trash/{dt.date.today()}/gone.pdf", f"{top}/invoice.pdf"]


class Share(SmbLike):
    """An SMB share of its own (the store is per class)."""

    store: ClassVar[dict[str, Any]] = {}
    pseudo_dirs: ClassVar[list[str]] = [""]


def test_an_smb_share_is_held_to_windows_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A share folds case and takes a backslash for a separator: 'a\\b.pdf' landed on
    a/b.pdf, over the other file, and Inv.pdf over inv.pdf, with the run saying 4 sent."""
    monkeypatch.setitem(known_implementations, "smb", {"class": f"{__name__}.Share"})
    source = tmp_path / "export"
    (source / "a").mkdir(parents=True)
    (source / "a" / "b.pdf").write_bytes(b"the real a/b.pdf")
    (source / "a\\b.pdf").write_bytes(b"a name with a backslash")
    (source / "Inv.pdf").write_bytes(b"Inv")
    (source / "inv.pdf").write_bytes(b"inv, another file")
    (source / "aux").write_bytes(b"a device name")
    data = {
        "source": str(source),
        "state_dir": str(tmp_path / "state"),
        "targets": {"nas": {"url": "smb://nas/inv"}},
    }
    with api.running(config_mod.from_dict(data, tmp_path / "mirror.toml", {})) as mirror:
        (report,) = mirror.run_once()
    refused = dict(report.failed)
    assert refused["a\\b.pdf"] == "the target refuses the character(s) '\\\\' in 'a\\\\b.pdf'", refused
    assert "already taken by 'Inv.pdf'" in refused["inv.pdf"], refused
    assert refused["aux"] == "the target refuses the name 'aux'", refused
    assert {k.removeprefix("smb://nas/inv/"): v.getvalue() for k, v in Share.store.items()} == {
        "a/b.pdf": b"the real a/b.pdf",
        "Inv.pdf": b"Inv",
    }
