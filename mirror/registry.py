"""Which backends exist, and how a target URL becomes a connected driver.

Sources of backends, first match wins: user presets from the config file
(``[backends.NAME]``), the built-ins below, the ``mirror.backends`` entry-point group
(third-party packages), and finally any protocol fsspec itself knows, with the generic
driver. Imports are lazy, so a missing optional package only matters to targets using it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from mirror.driver import Capabilities, Driver
from mirror.errors import ConfigError, FatalError
from mirror.hashing import HashKind
from mirror.redact import redact_url

ENTRY_POINT_GROUP = "mirror.backends"


@dataclass(frozen=True)
class BackendInfo:
    """A known backend: where its driver lives and what it needs installed."""

    protocol: str
    summary: str
    driver: str = "mirror.driver:Driver"
    requires: tuple[str, ...] = ()
    extra: str | None = None
    aliases: tuple[str, ...] = ()
    #: the module that imports what the backend needs (an fsspec implementation: fsspec
    #: is always there, what its smb module needs may not be) and its owner's install hint
    loads: str | None = None
    hint: str | None = None
    #: naming rules the filesystem holds names to, as capability overrides, where the
    #: generic driver serves it and cannot ask
    rules: tuple[tuple[str, Any], ...] = ()

    def install_hint(self) -> str:
        if self.extra:
            return f"pip install 'fsspec-mirror[{self.extra}]'"
        if self.hint:
            return self.hint
        if self.requires:
            return "pip install " + " ".join(self.requires)
        return ""

    def missing(self) -> list[str]:
        """Import names this backend needs that are not installed."""
        missing = [name for name in self.requires if not _installed(name)]
        if not missing and self.loads and (absent := _absent(self.loads)):
            missing.append(absent)
        return missing


def _absent(module: str) -> str | None:
    """What is missing for ``module`` to import, if anything."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return exc.name or module
    return None


def _installed(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it (only its parent package)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False  # "google.oauth2" without google: find_spec imports the parent, and fails


#: names Windows keeps for devices, in any case
WINDOWS_DEVICES = ("con", "prn", "aux", "nul", *(f"{d}{i}" for d in ("com", "lpt") for i in range(1, 10)))

BUILTINS: tuple[BackendInfo, ...] = (
    BackendInfo("file", "a local or mounted folder", "mirror.backends.local:LocalDriver", aliases=("local",)),
    BackendInfo("memory", "in-process memory, for tests", "mirror.backends.memory:MemoryDriver"),
    BackendInfo(
        "dropbox",
        "Dropbox (API v2)",
        "mirror.backends.dropbox:DropboxDriver",
        ("dropbox", "dropboxdrivefs"),
        "dropbox",
    ),
    BackendInfo("sftp", "SSH/SFTP server", "mirror.backends.sftp:SFTPDriver", ("paramiko",), "sftp", ("ssh",)),
    BackendInfo(
        "webdav",
        "WebDAV server (Nextcloud, ownCloud, ...)",
        "mirror.backends.webdav:WebdavDriver",
        ("webdav4",),
        "webdav",
        ("webdavs", "dav", "davs"),
    ),
    BackendInfo(
        "s3", "Amazon S3 and S3-compatible storage", "mirror.backends.s3:S3Driver", ("s3fs",), "s3", ("s3a",)
    ),
    BackendInfo(
        "gdrive",
        "Google Drive",
        "mirror.backends.gdrive:GDriveDriver",
        ("googleapiclient", "google.oauth2"),
        "gdrive",
    ),
    BackendInfo(
        "smb",
        "Windows or Samba share (SMB 2/3)",
        hint="pip install smbprotocol",
        loads="fsspec.implementations.smb",
        # a share folds case, and a backslash is its separator: a source file named
        # 'a<backslash>b.pdf' landed on a/b.pdf, over another file, and the run said 2 sent
        rules=(
            ("case_sensitive", False),
            ("forbidden_chars", '"*:<>?\\|'),
            ("forbidden_trailing", " ."),
            ("forbidden_names", WINDOWS_DEVICES),
        ),
    ),
    BackendInfo(
        "ftp",
        "FTP server",
        loads="fsspec.implementations.ftp",
        # no FTP command can carry a CR or LF (ftplib refuses them): such a name failed
        # at every pass, as a transfer error that held back every deletion
        rules=(("forbidden_chars", "\r\n"),),
    ),
    BackendInfo(
        "onedrive",
        "Microsoft OneDrive (personal and business)",
        "mirror.backends.onedrive:OneDriveDriver",
        ("msal", "httpx"),
        "onedrive",
    ),
)


@dataclass(frozen=True)
class Preset:
    """A backend defined in the config file: a protocol plus default options."""

    name: str
    protocol: str
    options: Mapping[str, Any] = field(default_factory=dict)
    capabilities: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Resolved:
    """A target URL resolved to a backend, ready to connect."""

    backend: BackendInfo
    url: str
    options: Mapping[str, Any]
    capability_overrides: Mapping[str, Any]
    #: the ``[backends.NAME]`` preset the URL names, if any: where its options and
    #: capabilities come from, for messages
    preset: str | None = None


#: fsspec implementations whose module imports without what they need, which they import
#: only as a filesystem is built: ``mirror backends`` called hdfs installed without pyarrow
_BUILT_WITH = {"fsspec.implementations.arrow": ("pyarrow",)}


def known_backends() -> list[BackendInfo]:
    """Built-ins, then entry-point backends, then other fsspec protocols."""
    from importlib.metadata import entry_points

    result = list(BUILTINS)
    taken = {name for info in result for name in (info.protocol, *info.aliases)}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in taken:
            # its module is what must import: a package half installed was listed as installed
            module = ep.value.partition(":")[0]
            result.append(BackendInfo(ep.name, f"third-party backend ({ep.value})", ep.value, loads=module))
            taken.add(ep.name)
    from fsspec.registry import known_implementations

    for name, spec in sorted(known_implementations.items()):
        if name not in taken:
            module = spec["class"].rpartition(".")[0]
            summary = f"fsspec {spec['class']}"
            requires = (module.split(".")[0], *_BUILT_WITH.get(module, ()))
            result.append(BackendInfo(name, summary, requires=requires, loads=module, hint=spec.get("err")))
            taken.add(name)
    return result


def read_only(info: BackendInfo) -> bool:
    """Whether an installed backend can never be a target: fsspec's filesystem of its
    protocol cannot delete files (http, zip), which every run refuses."""
    try:
        return not load_driver_class(info).writable(info.protocol)
    except ConfigError:
        return False  # a broken third-party backend: a run says what is wrong with it


def shadowed_entry_points() -> list[tuple[str, str]]:
    """(name, value) of the ``mirror.backends`` entry points a built-in takes the name of:
    never used, which only ``mirror backends`` can tell."""
    from importlib.metadata import entry_points

    builtin = {name for info in BUILTINS for name in (info.protocol, *info.aliases)}
    return [(ep.name, ep.value) for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name in builtin]


def _lookup(protocol: str) -> BackendInfo | None:
    # built-ins first: resolving them must not import fsspec or scan entry points
    for info in BUILTINS:
        if protocol == info.protocol or protocol in info.aliases:
            return info
    for info in known_backends():
        if protocol == info.protocol or protocol in info.aliases:
            return info
    from fsspec.registry import registry as fsspec_registry

    if protocol in fsspec_registry:
        return BackendInfo(protocol, "fsspec (registered at run time)")
    return None


#: ``sftp:/host/path``: a URL with a slash missing, which as a plain path mirrored into
#: a local folder named ``sftp:`` and reported success
_ONE_SLASH = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):/(?!/)")


def check_plain_path(path: str, what: str) -> None:
    """Refuse a plain path (no ``://``) that reads as a URL with a slash missing; a folder
    truly named so is written ``./sftp:/...``."""
    typo = _ONE_SLASH.match(path)
    if typo is None:
        return
    name, rest = typo[1], path[typo.end() :]
    info = _lookup(name.lower())
    if info is None and len(name) == 1:
        # a Windows drive (C:/backup): 'write c://backup' named an unknown protocol in turn
        raise ConfigError(
            f"{what} {path!r} is no folder path nor URL mirror knows ({name + ':'!r} is no protocol); give a "
            f"folder's path such as /srv/backup (a local folder named {name + ':'!r} is written ./{name}:/...)"
        )
    meant = f"file:///{rest}" if info is not None and info.protocol == "file" else f"{name.lower()}://{rest}"
    raise ConfigError(
        f"{what} starts with {name + ':/'!r}, a URL with a slash missing: write {redact_url(meant)} "
        f"(a local folder named {name + ':'!r} is written ./{name}:/...)"
    )


def split_url(url: str) -> tuple[str, str]:
    """(protocol, rest) of a target URL; a plain path is protocol ``file``."""
    if "://" not in url:
        return "file", os.path.abspath(os.path.expanduser(url))
    protocol, rest = url.split("://", 1)
    return protocol.lower(), rest


def resolve(url: str, options: Mapping[str, Any], presets: Mapping[str, Preset]) -> Resolved:
    """Find the backend for ``url``; raises ConfigError naming the fix when there is none."""
    protocol, rest = split_url(url)
    overrides: Mapping[str, Any] = {}
    merged = dict(options)
    where = "in target URL"
    preset_name = None
    if protocol in presets:
        preset = presets[protocol]
        preset_name = preset.name
        merged = {**preset.options, **options}
        overrides = preset.capabilities
        where = f"in [backends.{preset.name}] protocol"
        if preset.protocol.lower() in presets:
            where += " (a preset is built on a protocol, not on another preset)"
        protocol = preset.protocol
    if "::" in protocol:
        # fsspec's chained URLs: 'dir::file' read as one protocol was "unknown", with
        # "did you mean 'file'?", which drops the wrapper
        raise ConfigError(
            f"target URL {redact_url(url)} chains filesystems ({protocol.split('::', 1)[0]}::...), which a target "
            'URL cannot; give the outer one\'s URL and the inner one in its options, e.g. url = "dir://FOLDER" '
            'with options = { path = "/mnt", target_protocol = "file" }'
        )
    info = _lookup(protocol)
    if info is None:
        names = sorted({b.protocol for b in BUILTINS})
        close = difflib.get_close_matches(protocol.lower(), names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"unknown protocol {protocol!r} {where}; {hint}use one of {', '.join(names)}, "
            "another fsspec protocol, or a [backends.NAME] preset of the config"
        )
    if info.protocol == "file":
        host, slash, path = rest.partition("/")
        if host not in ("", "localhost"):
            # file://relative/x names the host "relative"; taken as /relative/x, files
            # would land far from where the user meant
            raise ConfigError(
                f"target URL {url!r} names a host ({host!r}); "
                "a local folder is file:///absolute/path or a plain path"
            )
        # percent-encoded, as RFC 8089 has it and file managers copy it: file:///x/My%20Backup
        # filled a new folder literally named 'My%20Backup'
        fsspec_url = unquote(slash + path) if slash else "/"
    else:
        fsspec_url = f"{protocol}://{rest}"
    return Resolved(info, fsspec_url, merged, overrides, preset_name)


def load_driver_class(info: BackendInfo) -> type[Driver]:
    """Import the driver class of ``info`` or explain how to install what it needs."""
    missing = info.missing()
    hint = info.install_hint()
    if missing:
        how = hint or f"pip install {missing[0].split('.')[0]}"
        names = " and ".join(filter(None, (", ".join(missing[:-1]), missing[-1])))
        which = "which is" if len(missing) == 1 else "which are"
        raise ConfigError(f"backend {info.protocol!r} needs {names}, {which} not installed: {how}")
    module_name, _, class_name = info.driver.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        fix = f"; {hint}" if hint else ""
        raise ConfigError(f"backend {info.protocol!r} could not be loaded: {exc}{fix}") from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise ConfigError(f"backend {info.protocol!r}: {info.driver} is not a mirror Driver class")
    return cls


def capabilities(resolved: Resolved) -> Capabilities:
    """What the target's backend promises, with the preset's overrides; no connection made."""
    cls = load_driver_class(resolved.backend)
    caps = cls.capabilities_for(resolved.url)
    where = f"backends.{resolved.preset}.capabilities" if resolved.preset else "capabilities"
    if resolved.backend.rules:
        caps = caps.with_overrides(dict(resolved.backend.rules))
    if resolved.capability_overrides:
        reported = caps.hash_kind
        caps = caps.with_overrides(resolved.capability_overrides)
        if reported is HashKind.NONE and caps.hash_kind is not HashKind.NONE:
            # verify would say "hashes compared" of files it compared by size alone
            raise ConfigError(
                f"{where}: hash_kind = {caps.hash_kind.value!r} cannot hold for "
                f"backend {resolved.backend.protocol!r}: it reads no hash of a file from the target; remove it"
            )
    if caps.mtime_settable and cls.set_mtime is Driver.set_mtime:
        raise ConfigError(
            f"{where}: mtime_settable = true cannot hold for backend "
            f"{resolved.backend.protocol!r}: the generic driver has no way to set a file's modification time "
            "there; remove it"
        )
    return caps


def connect(resolved: Resolved, caps: Capabilities | None = None) -> Driver:
    """Build the driver (and with it the fsspec filesystem) for a resolved target;
    ``caps``: its :func:`capabilities`, when the caller has them already."""
    cls = load_driver_class(resolved.backend)
    try:
        return cls.connect(resolved.url, resolved.options, caps or capabilities(resolved))
    except ImportError as exc:
        # fsspec implementations that import what they need only when built (pyarrow for hdfs)
        info = resolved.backend
        raise FatalError(
            f"backend {info.protocol!r} needs {exc.name or exc}, which is not installed: "
            f"{info.install_hint() or f'pip install {exc.name}'}"
        ) from exc
