"""The ``webdav`` backend (Nextcloud, ownCloud, Apache, ...) on webdav4 and httpx.

URLs: ``webdav://host[:port]/path`` (http) and ``webdavs://host[:port]/path`` (https);
or, with a ``base_url`` option (usually from a ``[backends.NAME]`` preset such as a
Nextcloud account's ``https://cloud.example.com/remote.php/dav/files/alice``), the URL
after ``webdav://`` is a folder under that base. Basic auth from ``username`` and
``password`` (``${ENV}`` in the config).

What this module changes from webdav4's fsspec filesystem: uploads go straight to one
PUT (fsspec's ``put_file`` first probes every parent folder); a move replaces a file at
its destination, which is how a temp upload is committed, but never a folder (a MOVE or
a DELETE takes a collection whole, with all in it: someone's folder where mirror's file
was); folders are made with one MKCOL when the parent exists; webdav4's own retries are
off, so the engine's backoff (which honours Retry-After) is the only one. A plain WebDAV PUT is not
atomic on every server (some write in place), so the executor uploads to a temp name
and moves it. WebDAV cannot set a file's mtime, nor report a content hash, portably; a
server may leave a file's size out of its listing (``getcontentlength`` is a SHOULD),
and such a size is unknown (None), not 0.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from contextlib import suppress
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from mirror.config import parse_duration
from mirror.driver import (
    IN_A_CONFIG,
    Capabilities,
    Driver,
    RemoteEntry,
    check_url_path,
    check_verify,
    classify_os_error,
)
from mirror.errors import ConfigError, FatalError, ItemError, MirrorError, Refused, TargetFull, TransientError
from mirror.paths import is_temp, parent
from mirror.redact import has_password

if TYPE_CHECKING:
    # webdav4 with httpx (0.2 s of CPU here) is imported on the first connection, not
    # with this module: the registry loads it for every run and status of a WebDAV
    # target, and a run with nothing to send never connects
    import httpx

OPTIONS = frozenset({"base_url", "username", "password", "verify", "timeout"})
SCHEMES = {"webdav": "http", "dav": "http", "webdavs": "https", "davs": "https"}


def parse(url: str, options: Mapping[str, Any]) -> tuple[str, str]:
    """(base URL of the server, root folder under it) from a target URL and options."""
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise ConfigError(f"unknown webdav option(s) {', '.join(unknown)}; known: {', '.join(sorted(OPTIONS))}")
    check_url_path(url)
    scheme, _, rest = url.partition("://")
    if options.get("base_url"):
        base = str(options["base_url"]).rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise ConfigError(f"webdav base_url must start with http:// or https://, not {base!r}")
        return base, "/" + unquote(rest).strip("/")
    if scheme not in SCHEMES:
        raise ConfigError(f"webdav URL must start with one of {', '.join(SCHEMES)}://")
    parts = urlsplit(f"{SCHEMES[scheme]}://{rest}")
    if parts.password or parts.username or has_password(url):
        raise ConfigError(f"do not put credentials in the webdav URL; set username and password {IN_A_CONFIG}")
    if not parts.hostname:
        raise ConfigError("webdav URL needs a host: webdav://host[:port]/path")
    return f"{parts.scheme}://{parts.netloc}", unquote(parts.path) or "/"


def _timeout(options: Mapping[str, Any]) -> float:
    """Seconds, or written as every other duration of the config is ("30s")."""
    return parse_duration(options.get("timeout", 60), "webdav option timeout")


#: refused in names: servers differ in how they decode a MOVE's Destination header.
#: wsgidav unquotes it before parsing it, so '?' and ';' end the path there: 'offer;v1.pdf'
#: and 'offer;v2.pdf' both land as 'offer', and '..?x' lands as '..', the folder above,
#: which the MOVE (Overwrite: T) replaces. Control characters break the XML of every
#: later listing. A server known to take them can be told so in a preset's capabilities.
UNSAFE_CHARS = "?;" + "".join(map(chr, range(32))) + "\x7f"


class WebdavDriver(Driver):
    capabilities = Capabilities(
        case_sensitive=True,
        atomic_rename=True,
        server_side_move=True,
        max_name_bytes=255,
        forbidden_chars=UNSAFE_CHARS,
    )
    default_concurrency = 4
    thread_safe = True
    place_picks = True

    @classmethod
    def check_target(cls, url: str, options: Mapping[str, Any]) -> None:
        parse(url, options)
        _timeout(options)
        check_verify("webdav", options)

    @classmethod
    def place(cls, url: str, options: Mapping[str, Any]) -> tuple[str, str, str]:
        base, root = parse(url, options)
        parts = urlsplit(base)
        # the user may pick which files a path shows (a server's home folders)
        return f"{parts.scheme}://{parts.netloc.lower()}{parts.path}", root, str(options.get("username") or "")

    @classmethod
    def connect(cls, url: str, options: Mapping[str, Any], caps: Capabilities | None = None) -> Driver:
        from webdav4.client import HTTPError
        from webdav4.fsspec import WebdavFileSystem

        base_url, root = parse(url, options)
        auth = None
        if options.get("username") is not None:
            auth = (str(options["username"]), str(options.get("password") or ""))
        fs = WebdavFileSystem(
            base_url,
            auth=auth,
            retry=False,
            verify=options.get("verify", True),
            timeout=_timeout(options),
        )
        driver = cls(fs, root, caps)
        try:
            fs.client.propfind("/", headers={"Depth": "0"})
        except HTTPError as exc:
            if exc.status_code == HTTPStatus.UNAUTHORIZED and auth is None:
                raise ConfigError(
                    f"webdav: {base_url} asks for a login (401); set username and password in the target's options"
                ) from None
            if exc.status_code == HTTPStatus.UNAUTHORIZED:
                raise ConfigError(
                    f"webdav: {base_url} refused the credentials of user {options.get('username')!r} (401); "
                    "check username and password"
                ) from None
            raise driver.classify(exc) from None
        except Exception as exc:
            raise driver.classify(exc) from None
        return driver

    @property
    def client(self) -> Any:
        return self.fs.client

    def _dav(self, rel: str) -> str:
        """The path as webdav4 must get it: percent-encoded, since it builds URLs verbatim
        (a raw ``#`` or ``%`` in a name is otherwise refused or cut)."""
        return quote(self.root if rel == "" else self.full(rel))

    def list(self) -> dict[str, RemoteEntry]:
        # names in webdav4 listings are relative to base_url, so paths are rebuilt
        # from the folder being walked rather than matched against the root
        from webdav4.client import ResourceNotFound

        result: dict[str, RemoteEntry] = {}
        try:
            pending = [("", self.client.ls(self._dav(""), detail=True, allow_listing_resource=False))]
        except ResourceNotFound:
            return result
        while pending:
            rel_dir, items = pending.pop()
            for info in items:
                name = str(info["name"]).rstrip("/").rsplit("/", 1)[-1]
                rel = f"{rel_dir}/{name}" if rel_dir else name
                if info.get("type") == "directory":
                    # a folder gone since its parent was read (the trash emptied by hand)
                    with suppress(ResourceNotFound):
                        pending.append((rel, self.client.ls(self._dav(rel), detail=True)))
                else:
                    result[rel] = self.entry(rel, {**info, "size": info.get("content_length")})
        return result

    def root_lost(self, known: str) -> bool:
        return self.stat(known) is None

    def stat(self, rel: str) -> RemoteEntry | None:
        info = self._info(rel)
        if info is None or info.get("type") != "file":
            return None
        return self.entry(rel, {**info, "size": info.get("content_length")})

    def _info(self, rel: str) -> dict[str, Any] | None:
        """What the server tells of ``rel`` itself (``type`` "file" or "directory"), None
        where nothing is there: one PROPFIND of Depth 0, where webdav4's ``info`` asks for
        Depth 1, which lists every file of a folder."""
        from webdav4.client import ResourceNotFound

        try:
            found = self.client.propfind(self._dav(rel), headers={"Depth": "0"})
        except ResourceNotFound:
            return None
        # the one answer of Depth 0, however the server spells its path (a folder's with a "/")
        return next((r.properties.as_dict() for r in found.responses.values()), None)

    def _not_a_folder(self, rel: str, what: str) -> None:
        """ItemError when ``rel`` is a folder (someone's, where mirror's file was), which
        a MOVE or a DELETE of ``rel`` would take whole; ``what`` the request's fate."""
        info = self._info(rel)
        if info is not None and info.get("type") == "directory":
            raise ItemError(f"{self.full(rel)} on the target is a folder, not the file mirror put there; {what}")

    def entry(self, rel: str, info: Mapping[str, Any]) -> RemoteEntry:
        mtime = info.get("modified")
        if isinstance(mtime, str):
            mtime = email.utils.parsedate_to_datetime(mtime)
        return super().entry(rel, {"size": info.get("size"), "modified": mtime})

    def put(self, local_path: str, rel: str, mtime_ns: int) -> RemoteEntry | None:
        with open(local_path, "rb") as f:
            self.client.upload_fileobj(f, self._dav(rel), overwrite=True)
        return None

    def move(self, src: str, dst: str) -> None:
        from webdav4.client import ResourceAlreadyExists

        # a temp name is mirror's own file, just sent or set aside; any other path is asked
        # about (a rename, a move into the trash), one request more for those alone
        if not is_temp(src):
            self._not_a_folder(src, "it is not moved")
        try:
            # a new path, the most common, in one request: Overwrite: F fails where
            # anything is there (412), rather than replacing it
            self.client.move(self._dav(src), self._dav(dst), overwrite=False)
        except ResourceAlreadyExists:
            if (there := self._info(dst)) is not None and there.get("type") == "directory":
                raise ItemError(f"{self.full(dst)} on the target is a folder where a file goes") from None
            self.client.move(self._dav(src), self._dav(dst), overwrite=True)

    def delete(self, rel: str) -> None:
        from webdav4.client import ResourceNotFound

        self._not_a_folder(rel, "it is not deleted")
        try:
            self.client.remove(self._dav(rel))
        except ResourceNotFound:
            raise FileNotFoundError(rel) from None

    def remove_dir_if_empty(self, rel_dir: str) -> bool:
        from webdav4.client import ResourceNotFound

        try:
            if self._holds_files(rel_dir):
                return False
            # DELETE takes a collection whole: only empty ones are left below it
            self.client.remove(self._dav(rel_dir))
        except ResourceNotFound:
            return False
        return True

    def _holds_files(self, rel_dir: str) -> bool:
        """Whether a file lies anywhere below ``rel_dir`` (or it is a file itself)."""
        for info in self.client.ls(self._dav(rel_dir), detail=True):
            name = str(info["name"]).rstrip("/").rsplit("/", 1)[-1]
            if info.get("type") != "directory" or self._holds_files(f"{rel_dir}/{name}"):
                return True
        return False

    def root_there(self) -> bool:
        from webdav4.client import ResourceNotFound

        try:
            return self.client.isdir(self._dav(""))
        except ResourceNotFound:
            return False

    def makedirs(self, rel_dir: str) -> None:
        self._mkcol(self._dav(rel_dir))

    def _mkcol(self, path: str) -> None:
        from webdav4.client import ResourceAlreadyExists, ResourceConflict

        try:
            self.client.mkdir(path)
        except ResourceAlreadyExists:
            return
        except ResourceConflict:
            # 409: the parent is missing; make it, then try again
            above = parent(path.strip("/"))
            if not above:
                raise
            self._mkcol("/" + above)
            try:
                self.client.mkdir(path)
            except ResourceAlreadyExists:
                return

    def classify(self, exc: BaseException) -> MirrorError:
        return classify_webdav_error(exc)


def classify_webdav_error(exc: BaseException) -> MirrorError:  # noqa: PLR0911  # one exit per family
    if isinstance(exc, MirrorError):
        return exc
    import httpx
    from webdav4.client import ClientError, HTTPError, InsufficientStorage, ResourceNotFound

    if isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)):
        return TransientError(f"webdav: connection problem ({type(exc).__name__})")
    if isinstance(exc, InsufficientStorage):
        return TargetFull("webdav: the server is out of space or over quota (507)")
    if isinstance(exc, HTTPError):
        status = exc.status_code
        if status in (HTTPStatus.UNAUTHORIZED,):
            return FatalError("webdav: the server no longer accepts the credentials (401)")
        if status >= 500 and _out_of_space(exc.response):
            return TargetFull(f"webdav: the server is out of space (it answered {status}: no space left)")
        if status == HTTPStatus.TOO_MANY_REQUESTS or status >= 500:
            return TransientError(f"webdav: server answered {status}", retry_after=_retry_after(exc.response))
        if status == HTTPStatus.FORBIDDEN:
            return Refused(f"webdav: server answered {status} (forbidden)")
        return ItemError(f"webdav: server answered {status}")
    if isinstance(exc, ResourceNotFound):
        return ItemError(f"webdav: {exc.path} not found")
    if isinstance(exc, ClientError):
        return ItemError(f"webdav: {exc}")
    return classify_os_error(exc)


def _out_of_space(response: httpx.Response) -> bool:
    """Whether an error page tells a full disk: servers such as wsgidav answer 500, not
    507, with the OS error in the page, and retried as a server in trouble, the target
    counted as down."""
    try:
        page = response.text[:4096]
    except Exception:  # a body not read (streamed), or not text: no page to go by
        return False
    return "No space left on device" in page or "Errno 28" in page or "ENOSPC" in page


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
