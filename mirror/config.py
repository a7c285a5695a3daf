"""The configuration: the TOML file and command-line flags turned into frozen records.

Everything a user can get wrong is checked here, before anything runs, and reported as a
ConfigError naming the file, the key and what is expected.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from mirror.errors import ConfigError
from mirror.filters import check_patterns
from mirror.layout import Layout
from mirror.logs import with_bytes_shown
from mirror.policy import DeletePolicy
from mirror.private_files import user_name
from mirror.registry import Preset, check_plain_path


@dataclass(frozen=True)
class TargetSettings:
    """Per-target behaviour; ``[defaults]`` fills what a target table leaves out."""

    layout: Layout = field(default_factory=lambda: Layout.parse("tree"))
    #: whether ``layout`` was given (a config key, --layout), not left to the default: a
    #: target whose files lie in another layout is then filled anew in this one
    layout_chosen: bool = False
    delete: DeletePolicy = DeletePolicy.MIRROR
    #: whether ``delete`` was given (a config key, --delete), not left to the default: an
    #: index another name wrote with another policy is then taken over with this one
    delete_chosen: bool = False
    max_delete: int | None = None
    #: once the guard withheld deletions, how long the same ones must stand before the
    #: last tenth goes (mirror.plan._guard)
    release_after: float = 1800.0
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    settle: float = 0.5
    rescan_interval: float = 3600.0
    concurrency: int | None = None
    poll: bool = False
    #: alerts (mirror.alerts): a command run when the target stays broken, and a ping URL
    on_failure: str | tuple[str, ...] | None = None
    healthcheck_url: str | None = None
    alert_after: float = 900.0

    @property
    def alerts(self) -> bool:
        """Whether anyone is told when this target stays broken."""
        return bool(self.on_failure or self.healthcheck_url)


@dataclass(frozen=True)
class TargetConfig:
    """One named target: where it is, how to reach it, how to mirror into it."""

    name: str
    url: str
    options: Mapping[str, Any] = field(default_factory=dict)
    settings: TargetSettings = field(default_factory=TargetSettings)
    #: values that came from ``${VAR}``: scrubbed from every log line and message
    secrets: tuple[str, ...] = ()


#: the origin of a config built from ``mirror run SOURCE TARGET`` or in code
COMMAND_LINE = "command line"


@dataclass(frozen=True)
class Config:
    """A whole run: one source, its targets, backend presets, where state lives."""

    source: Path
    targets: tuple[TargetConfig, ...]
    presets: Mapping[str, Preset] = field(default_factory=dict)
    state_dir: Path | None = None
    #: where ``mirror run`` serves metrics (HOST:PORT), unless --metrics-addr says
    metrics_addr: str | None = None
    origin: str = COMMAND_LINE
    #: the source as given, where a link on its way leads to ``source`` (current ->
    #: releases/7): what names the source's indexes, as the link may lead elsewhere later
    source_link: Path | None = None

    @property
    def named_source(self) -> Path:
        """The source as it names its indexes: as given, links and all."""
        return self.source_link or self.source

    def select(self, names: Collection[str]) -> Config:
        """Only the targets called ``names`` (all when none); one name may be given as is."""
        if isinstance(names, str):
            names = (names,)
        if not names:
            return self
        for name in names:
            if not any(t.name == name for t in self.targets):
                known = ", ".join(t.name for t in self.targets) or "none"
                raise ConfigError(f"{self.origin}: no target named {name!r} (targets: {known})")
        return replace(self, targets=tuple(t for t in self.targets if t.name in names))


#: what a config may set: every setting but what mirror derives itself (whether a layout
#: was given, which a "layout" key says)
SETTING_KEYS = {f.name for f in fields(TargetSettings)} - {"layout_chosen", "delete_chosen"}
TOP_KEYS = {"source", "state_dir", "metrics_addr", "defaults", "targets", "backends"}
TARGET_KEYS = {"url", "options"} | SETTING_KEYS
PRESET_KEYS = {"protocol", "options", "capabilities"}
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
#: the longest duration a setting takes, in seconds
LONGEST = 366 * 86400.0
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)?\s*$", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "": 1.0}
#: the units written out, as people write them: "1 hour", "30 seconds", "2 days"
_UNIT_WORDS = {"sec": "s", "second": "s", "min": "m", "minute": "m", "hour": "h", "day": "d"}
_ENV_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def parse_duration(value: object, where: str) -> float:
    """Seconds from a number or a string like ``500ms``, ``30s``, ``5m``, ``1h``."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration such as 30, '30s', '5m' or '1h', got {value!r}")
    seconds = None
    if isinstance(value, (int, float)) and value >= 0:
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        unit = (m.group(2) or "").lower()
        if len(unit) > 2:
            unit = _UNIT_WORDS.get(unit.removesuffix("s"), unit)
        if unit in _UNITS:
            seconds = float(m.group(1)) * _UNITS[unit]
    if seconds is None:
        raise ConfigError(f"{where}: expected a duration such as 30, '30s', '5m' or '1h', got {value!r}")
    if seconds > LONGEST:
        # inf or 1e300 passed, and every wait on it failed as an internal error
        raise ConfigError(f"{where}: {value!r} is longer than a year; give a duration such as '30s', '5m' or '1h'")
    return seconds


def _rescan_interval(value: object, where: str) -> float:
    seconds = parse_duration(value, where)
    if seconds < 1:
        raise ConfigError(
            f"{where}: {value!r} would list the target without pause; give a duration of at least 1s, "
            "such as '1h' (the default)"
        )
    return seconds


def _patterns(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        _check_patterns(value, where)
        return tuple(value)
    raise ConfigError(f'{where}: expected a list of patterns like ["*.pdf"], got {value!r}')


def _check_patterns(patterns: Iterable[str], where: str) -> None:
    try:
        check_patterns(patterns)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _positive_int(value: object, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}: expected a whole number >= {minimum}, got {value!r}")
    return value


def _layout(value: object, where: str) -> Layout:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a layout name or template string, got {value!r}")
    try:
        return Layout.parse(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _delete(value: object, where: str) -> DeletePolicy:
    try:
        return DeletePolicy(value)
    except ValueError:
        raise ConfigError(f"{where}: expected one of mirror, keep, trash, got {value!r}") from None


def _flag(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    return value


#: how each setting key's value is read (and checked): value, where -> setting
_SETTINGS: dict[str, Callable[[object, str], Any]] = {
    "layout": _layout,
    "delete": _delete,
    "max_delete": lambda value, where: _positive_int(value, where, 0),
    "include": _patterns,
    "exclude": _patterns,
    "settle": parse_duration,
    "release_after": parse_duration,
    "rescan_interval": _rescan_interval,
    "concurrency": lambda value, where: _positive_int(value, where, 1),
    "poll": _flag,
}


def settings_from(table: Mapping[str, Any], base: TargetSettings, where: str) -> TargetSettings:
    """Apply the setting keys of ``table`` on top of ``base``; ``where`` names the table."""
    values: dict[str, Any] = {k: _alert_setting(k, v, f"{where}.{k}") for k, v in table.items() if k in ALERT_KEYS}
    for key, value in table.items():
        if key in _SETTINGS:
            values[key] = _SETTINGS[key](value, f"{where}.{key}")
    for key in ("layout", "delete"):
        if key in values:
            values[f"{key}_chosen"] = True
    return replace(base, **values)


ALERT_KEYS = {"on_failure", "healthcheck_url", "alert_after"}


def _alert_setting(key: str, value: object, at: str) -> object:
    if key == "alert_after":
        return parse_duration(value, at)
    if key == "healthcheck_url":
        if not isinstance(value, str) or not re.match(r"^https?://[^/\s]+", value):
            raise ConfigError(f'{at}: expected an http(s) URL such as "https://hc-ping.com/UUID", got {value!r}')
        return value.rstrip("/")
    return _command(value, at)


def _command(value: object, where: str) -> str | tuple[str, ...]:
    """A shell command line, or a list of arguments run without a shell."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise ConfigError(
        f'{where}: expected a command such as "notify-send mirror" or ["/usr/local/bin/alert", "mirror"], '
        f"got {value!r}"
    )


def interpolate(value: Any, where: str, secrets: list[str], environ: Mapping[str, str]) -> Any:
    """Replace ``${VAR}`` in strings (recursively) with the environment; ``$$`` is ``$``."""
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name = match.group(1)
            if name not in environ:
                raise ConfigError(f"{where}: environment variable {name} is not set (export {name}=...)")
            secrets.append(environ[name])
            return environ[name]

        return _ENV_RE.sub(sub, value)
    if isinstance(value, list):
        return [interpolate(v, f"{where}[{i}]", secrets, environ) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: interpolate(v, f"{where}.{k}", secrets, environ) for k, v in value.items()}
    return value


#: keys an older mirror read, and what to write instead: the nearest spelling left part
#: of the setting out (forbidden_edges was both ends at once)
_REPLACED = {"forbidden_edges": "set forbidden_leading and forbidden_trailing to its value instead"}


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown and unknown[0] in _REPLACED:
        raise ConfigError(f"{where}: {unknown[0]!r} is an older mirror's key; {_REPLACED[unknown[0]]}")
    if unknown:
        close = difflib.get_close_matches(unknown[0], allowed, n=1)
        if close:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}; did you mean {close[0]!r}?")
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (expected one of: {', '.join(sorted(allowed))})")


def _table(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table, got {value!r}")
    return value


class Unresolved(Mapping[str, str]):
    """The environment, where a variable that is not set stays ``${NAME}``: for commands
    that read the state of a config's targets and never use a secret (mirror status, from
    a shell without the service's environment)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        #: the variables asked for that are not set
        self.unset: set[str] = set()

    def __getitem__(self, name: str) -> str:
        if name not in self.environ:
            self.unset.add(name)
        return self.environ.get(name, f"${{{name}}}")

    def __contains__(self, name: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.environ)

    def __len__(self) -> int:
        return len(self.environ)


def load(path: Path, environ: Mapping[str, str] | None = None, only: Collection[str] = ()) -> Config:
    """Read and check a config file; ``only``: the targets a run will use (all when
    none), whose secrets alone must be set."""
    import tomllib  # a run without a config file never pays for the parser

    env = os.environ if environ is None else environ
    where = str(path)
    try:
        # utf-8-sig: Windows editors save a byte-order mark that TOML calls an invalid statement
        with path.open(encoding="utf-8-sig") as file:
            _check_writers(os.fstat(file.fileno()), where)
            data = tomllib.loads(file.read())
    except FileNotFoundError:
        raise ConfigError(f"{where}: config file not found (create one with: mirror init {where})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read config file ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML: {exc}") from None
    return from_dict(data, path, env, only)


def _check_writers(found: os.stat_result, where: str) -> None:
    """Refuse a config file that a user other than this one and root may write: it names
    the shell line on_failure runs as this user (root, for the system unit) and where the
    files go. Writable by its group is accepted: a user's private group (umask 002, as on
    Debian and many CI machines) makes every file so, and a group is an administrator's
    grant, where a file writable by every user or owned by another is nobody's."""
    me = os.geteuid()
    if found.st_uid not in (me, 0):
        raise ConfigError(
            f"{where}: config file is owned by another user ({user_name(found.st_uid)}), who could choose the "
            f"commands mirror runs as {user_name(me)}; if it is yours, run: chown {user_name(me)} {where}"
        )
    if found.st_mode & stat.S_IWOTH:
        raise ConfigError(
            f"{where}: config file is writable by every user, who could choose the commands mirror runs; "
            f"run: chmod o-w {where}"
        )


def _path(value: str, where: str, environ: Mapping[str, str], secrets: list[str]) -> str:
    """A path or URL as written, ``${VAR}`` filled in; no control characters."""
    value = str(interpolate(value, where, secrets, environ))
    bad = next((c for c in value if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise ConfigError(
            f'{where}: {value!r} holds the control character {bad!r}; a backslash in a "..." string '
            "starts an escape: write the path with forward slashes or in '...'"
        )
    return value


def _presets(data: Mapping[str, Any], where: str) -> dict[str, Preset]:
    """The ``[backends.NAME]`` tables, by lower-case name."""
    presets: dict[str, Preset] = {}
    for name, raw in _table(data.get("backends", {}), f"{where}: backends").items():
        at = f"{where}: backends.{name}"
        table = _table(raw, at)
        _check_keys(table, PRESET_KEYS, at)
        protocol = table.get("protocol")
        if not isinstance(protocol, str) or not protocol:
            raise ConfigError(f'{at}.protocol: expected the fsspec protocol this preset uses, e.g. "webdav"')
        caps = _table(table.get("capabilities", {}), f"{at}.capabilities")
        _check_capabilities(caps, f"{at}.capabilities")
        options = _table(table.get("options", {}), f"{at}.options")
        if name.lower() in ("file", "local"):
            # plain paths are file targets: such a preset would take over every one of them
            raise ConfigError(f"{at}: {name!r} names the built-in local folder backend; call the preset otherwise")
        # URL schemes are case-insensitive: "WebDAV" is webdav
        presets[name.lower()] = Preset(name.lower(), protocol.lower(), dict(options), dict(caps))
    return presets


def from_dict(
    data: Mapping[str, Any], path: Path, environ: Mapping[str, str], only: Collection[str] = ()
) -> Config:
    """Check a parsed config; relative paths are relative to the config file's folder.
    ``only``: the targets a run will use (all when none); the others' variables may be unset."""
    where = str(path)
    _check_keys(data, TOP_KEYS, where)
    base_dir = path.parent
    source = data.get("source")
    if not isinstance(source, str) or not source:
        raise ConfigError(f'{where}: source: expected the path of the folder to mirror, e.g. source = "./export"')
    source = _path(source, f"{where}: source", environ, [])
    state_dir = data.get("state_dir")
    if state_dir is not None and not isinstance(state_dir, str):
        raise ConfigError(f"{where}: state_dir: expected a folder path, got {state_dir!r}")
    if state_dir:
        state_dir = _path(state_dir, f"{where}: state_dir", environ, [])
    metrics_addr = data.get("metrics_addr")
    if metrics_addr is not None:
        if not isinstance(metrics_addr, str):
            raise ConfigError(f'{where}: metrics_addr: expected "HOST:PORT" such as "127.0.0.1:9108"')
        parse_addr(metrics_addr, f"{where}: metrics_addr")
    defaults_table = _table(data.get("defaults", {}), f"{where}: defaults")
    _check_keys(defaults_table, SETTING_KEYS, f"{where}: defaults")
    defaults = settings_from(defaults_table, TargetSettings(), f"{where}: defaults")

    presets = _presets(data, where)
    targets_table = _table(data.get("targets", {}), f"{where}: targets")
    if not targets_table:
        raise ConfigError(f"{where}: no targets: add a [targets.NAME] table with a url")
    targets = []
    for name, raw in targets_table.items():
        at = f"{where}: targets.{name}"
        if not NAME_RE.match(name):
            raise ConfigError(f"{at}: target names may use letters, digits, '_', '-', '.' only")
        table = _table(raw, at)
        _check_keys(table, TARGET_KEYS, at)
        url = table.get("url")
        if not isinstance(url, str) or not url:
            raise ConfigError(f'{at}.url: expected a path or URL such as "/mnt/backup" or "sftp://host/dir"')
        secrets: list[str] = []
        used = environ if not only or name in only else Unresolved(environ)
        url = _target_url(_path(url, f"{at}.url", used, secrets), base_dir, f"{at}.url: target")
        options = interpolate(
            dict(_table(table.get("options", {}), f"{at}.options")), f"{at}.options", secrets, used
        )
        preset = presets.get(url.split("://", 1)[0].lower()) if "://" in url else None
        if preset is not None:
            given = interpolate(preset.options, f"{where}: backends.{preset.name}.options", secrets, used)
            options = {**given, **options}
        settings = settings_from(table, defaults, at)
        targets.append(TargetConfig(name, url, options, settings, tuple(s for s in secrets if s)))
    resolved_presets = {name: Preset(p.name, p.protocol, {}, p.capabilities) for name, p in presets.items()}
    state = real_path(base_dir / os.path.expanduser(state_dir), f"{where}: state_dir") if state_dir else None
    given = base_dir / os.path.expanduser(source)
    real = real_path(given, f"{where}: source folder")
    _utf8_source(given, real, f"{where}: source folder")
    return Config(
        source=real,
        source_link=_link(given, real),
        targets=tuple(targets),
        presets=resolved_presets,
        state_dir=state,
        metrics_addr=metrics_addr,
        origin=where,
    )


def check(config: Config) -> None:
    """Check a config built in code (``api.Config(...)``) as :func:`load` checks a file,
    where the engine takes it: else a mistake surfaced as a library exception from deep
    inside, or passed (no targets read as in sync; a target named ``../../x`` put its
    index outside the state folder; two of one name gave one report for both)."""
    where = "api.Config"
    if not isinstance(config.source, Path):
        raise ConfigError(f"{where}: source: expected a pathlib.Path, got {config.source!r}")
    if config.state_dir is not None and not isinstance(config.state_dir, Path):
        raise ConfigError(f"{where}: state_dir: expected a pathlib.Path or None, got {config.state_dir!r}")
    if not isinstance(config.targets, tuple) or not config.targets:
        raise ConfigError(
            f"{where}: targets: expected a tuple of at least one api.TargetConfig, got {config.targets!r}"
        )
    names: set[str] = set()
    for target in config.targets:
        if not isinstance(target, TargetConfig):
            raise ConfigError(f"{where}: targets: expected api.TargetConfig, got {target!r}")
        at = f"{where}: target {target.name!r}"
        if not isinstance(target.name, str) or not NAME_RE.match(target.name):
            raise ConfigError(f"{at}: target names may use letters, digits, '_', '-', '.' only")
        if target.name in names:
            raise ConfigError(f"{at}: two targets have this name; give each target a name of its own")
        names.add(target.name)
        if not isinstance(target.url, str) or not target.url:
            raise ConfigError(f'{at}: url: expected a path or URL such as "/mnt/backup" or "sftp://host/dir"')
        if "://" not in target.url:
            check_plain_path(target.url, f"{at}: url")
        if not isinstance(target.options, Mapping):
            raise ConfigError(f"{at}: options: expected a mapping, got {target.options!r}")
        _check_settings(target.settings, at)


def _check_settings(settings: object, at: str) -> None:
    if not isinstance(settings, TargetSettings):
        raise ConfigError(f"{at}: settings: expected api.TargetSettings, got {settings!r}")
    # a host may rescan more often than a config file may (its tests do), but never without pause
    for key, zero in (
        ("settle", True),
        ("rescan_interval", False),
        ("alert_after", True),
        ("release_after", True),
    ):
        value = getattr(settings, key)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or value < 0
            or (value == 0 and not zero)
        ):
            least = ">= 0" if zero else "> 0"
            raise ConfigError(f"{at}: {key}: expected seconds as a number {least}, got {value!r}")
    for key, minimum in (("max_delete", 0), ("concurrency", 1)):
        if (value := getattr(settings, key)) is not None:
            _positive_int(value, f"{at}: {key}", minimum)
    if not isinstance(settings.layout, Layout):
        raise ConfigError(f"{at}: layout: expected Layout.parse('tree') or another, got {settings.layout!r}")
    if not isinstance(settings.delete, DeletePolicy):
        raise ConfigError(
            f"{at}: delete: expected mirror.policy.DeletePolicy (MIRROR, KEEP, TRASH), got {settings.delete!r}"
        )
    for key in ("include", "exclude"):
        value = getattr(settings, key)
        if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f'{at}: {key}: expected a tuple of patterns like ("*.pdf",), got {value!r}')
        _check_patterns(value, f"{at}: {key}")
    _flag(settings.poll, f"{at}: poll")


def parse_addr(value: str, where: str = "--metrics-addr") -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9108`` for IPv6) -> (host, port); ``where`` names its origin."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{where}: expected HOST:PORT such as 127.0.0.1:9108, got {value!r}")
    return host, int(port)


_CAPABILITY_TYPES: dict[str, type | tuple[type, ...]] = {
    "case_sensitive": bool,
    "hash_kind": str,
    "mtime_settable": bool,
    "mtime_precision_ns": int,
    "atomic_put": bool,
    "atomic_rename": bool,
    "server_side_move": bool,
    "forbidden_names": list,
    "forbidden_chars": str,
    "forbidden_leading": str,
    "forbidden_trailing": str,
    "max_name_bytes": int,
    "max_path_chars": int,
    "max_path_bytes": int,
    "max_file_bytes": int,
}


def _check_capabilities(table: Mapping[str, Any], where: str) -> None:
    from mirror.hashing import HashKind

    _check_keys(table, set(_CAPABILITY_TYPES), where)
    for key, value in table.items():
        expected = _CAPABILITY_TYPES[key]
        if (isinstance(value, bool) and expected is int) or not isinstance(value, expected):
            raise ConfigError(f"{where}.{key}: expected {getattr(expected, '__name__', expected)}, got {value!r}")
        if isinstance(value, int) and expected is int and value < 1:
            # a limit of -5 bytes passed, and every file then failed as too long for the target
            raise ConfigError(f"{where}.{key}: expected a positive number, got {value!r}")
    if "hash_kind" in table:
        kinds = [k.value for k in HashKind]
        if table["hash_kind"] not in kinds:
            raise ConfigError(f"{where}.hash_kind: expected one of {', '.join(kinds)}, got {table['hash_kind']!r}")


def ad_hoc(source: str, target: str, settings: TargetSettings) -> Config:
    """The config of ``mirror run SOURCE TARGET``: one target called ``default``."""
    url = _target_url(target, Path(), "target")
    given = Path(os.path.expanduser(source))
    real = real_path(given, "source folder")
    _utf8_source(given, real, "source folder")
    return Config(
        source=real,
        source_link=_link(given, real),
        targets=(TargetConfig("default", url, {}, settings),),
    )


def real_path(path: Path, what: str) -> Path:
    """``path`` with every link on the way resolved, or ConfigError: a loop of links
    (a -> b -> a) was an internal error, "please report it"."""
    try:
        return path.resolve()
    except RuntimeError:  # Python before 3.13 says a loop so; later ones raise OSError (ELOOP) on a stat
        raise ConfigError(f"{what} {path}: a loop of symbolic links; point the link at a folder") from None


def _target_url(url: str, base: Path, what: str) -> str:
    """A target's URL, or the absolute path of a plain path (relative to ``base``)."""
    if "://" not in url:
        check_plain_path(url, what)
        url = str(real_path(base / os.path.expanduser(url), what))
    _utf8(url, what)
    return url


def _utf8_source(given: Path, real: Path, what: str) -> None:
    _utf8(os.path.abspath(given), what)
    _utf8(str(real), what)


def _utf8(place: str, what: str) -> None:
    """Refuse a source folder or target whose path is not valid UTF-8 (made by a Latin-1
    program, or a share mounted with iocharset=iso8859-1): the index is named after it,
    and records it, as text."""
    try:
        place.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(
            f"{what} {with_bytes_shown(place)} is not valid UTF-8, which mirror cannot record; rename the folder "
            "to a UTF-8 name (convmv -f latin1 -t utf8), or mount the share with iocharset=utf8"
        ) from None


def _link(source: Path, real: Path) -> Path | None:
    """``source`` as an absolute path, if a link on its way leads to ``real`` (see Config.source_link)."""
    given = Path(os.path.abspath(source))
    return given if given != real else None
