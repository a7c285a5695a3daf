"""The ``onedrive`` backend: OneDrive (personal and business) through Microsoft Graph.

Plain httpx against Graph, with msal for delegated tokens, rather than msgraphfs, whose
upload reads whole files into memory, ignores Retry-After, does not URL-encode names and
cannot log in to a personal account (see docs/onedrive.md). This module owns: chunked
upload sessions (multiples of 320 KiB, resumed where the server stands, remembered in
the driver state across restarts), quickXorHash computed locally, fileSystemInfo
mtimes, throttling (429/503 + Retry-After) and outages of Microsoft's login service, and
names OneDrive refuses, reported per item with the reason.

URL: ``onedrive://Folder/Sub`` is a folder of the signed-in user's drive, or of the drive
``drive_id`` (a SharePoint library, another user's drive). Options: ``token_file``
(written by ``mirror auth onedrive``), ``client_id``/``authority`` (override the token
file's), ``chunk_size``, ``max_retries``, ``timeout``, and for tests ``graph_url``/``ca_certs``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import logging
import os
import random
import re
import shlex
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from mirror.driver import QUIET_WAIT, Capabilities, Driver, ReadToCommit, RemoteEntry, classify_os_error
from mirror.errors import ConfigError, FatalError, ItemError, MirrorError, TargetFull, TransientError
from mirror.hashing import HashKind
from mirror.private_files import read_private_json, write_private

if TYPE_CHECKING:
    # httpx, msal and requests (0.3 s of CPU here) are imported on the first connection,
    # not with this module: the registry loads it for every run and status of a OneDrive
    # target, and a run with nothing to send never connects
    import httpx
    import msal
    import requests

log = logging.getLogger(__name__)

GRAPH = "https://graph.microsoft.com/v1.0"
AUTHORITY = "https://login.microsoftonline.com/common"
SCOPES = ["Files.ReadWrite.All"]
#: up to this size one PUT carries the file; Graph's limit for a simple upload is 250 MB,
#: but larger files go through a resumable session so a broken line costs one chunk
SIMPLE_UPLOAD_MAX = 4 * 1024 * 1024
#: Graph wants upload-session fragments in multiples of 320 KiB, at most 60 MiB
CHUNK_UNIT = 320 * 1024
DEFAULT_CHUNK = 32 * CHUNK_UNIT
MAX_WAIT = 120.0
FORBIDDEN_CHARS = '"*:<>?/\\|'
RESERVED = frozenset(
    {"con", "prn", "aux", "nul", ".lock", "desktop.ini"}
    | {f"com{i}" for i in range(10)}
    | {f"lpt{i}" for i in range(10)}
)
MAX_PATH = 400
SELECT = "id,name,size,file,folder,fileSystemInfo,parentReference"

# -- quickXorHash --------------------------------------------------------------------------
QX_WIDTH = 160
QX_SHIFT = 11
QX_MASK = (1 << QX_WIDTH) - 1
#: read blocks are multiples of 160 bytes, so byte i of a block sits at shift 11*i mod 160
QX_BLOCK = 160 * 32768


def _fold160(block: bytes) -> int:
    """XOR of all 160-byte slices of ``block`` (zero-padded), as a little-endian integer."""
    units = -(-len(block) // 160)
    value = int.from_bytes(block, "little")
    while units > 1:
        half = units // 2
        bits = half * 160 * 8
        value = (value & ((1 << bits) - 1)) ^ (value >> bits)
        units -= half
    return value


def quickxor_hash(path: str) -> str:
    """OneDrive's quickXorHash of a file, base64 as Graph reports it.

    Byte i is XORed into a 160-bit circular register at bit 11*i mod 160; as 11 and 160
    are coprime, bytes 160 apart share a position, so whole blocks are folded to 160
    bytes first (big-integer XOR runs in C) and only 160 shifts remain. The file length
    is then XORed into the last 8 bytes.
    """
    folded = 0
    length = 0
    with open(path, "rb") as f:
        while block := f.read(QX_BLOCK):
            folded ^= _fold160(block)
            length += len(block)
    register = 0
    lanes = folded.to_bytes(160, "little")
    for k, byte in enumerate(lanes):
        if byte:
            shift = (QX_SHIFT * k) % QX_WIDTH
            value = byte << shift
            register ^= (value & QX_MASK) ^ (value >> QX_WIDTH)
    digest = bytearray(register.to_bytes(20, "little"))
    for i, b in enumerate(length.to_bytes(8, "little")):
        digest[12 + i] ^= b
    return base64.b64encode(bytes(digest)).decode()


# -- names ------------------------------------------------------------------------------
def refusal(full_path: str) -> str | None:
    """Why OneDrive would refuse this drive path, or None when it is acceptable."""
    if len(full_path) > MAX_PATH:
        return f"path is {len(full_path)} characters; OneDrive allows {MAX_PATH}"
    for name in full_path.split("/"):
        bad = sorted({c for c in name if c in FORBIDDEN_CHARS})
        if bad:
            return f"name {name!r} contains {' '.join(bad)}, which OneDrive refuses"
        if name != name.strip(" "):
            return f"name {name!r} starts or ends with a space, which OneDrive refuses"
        if name.lower() in RESERVED:
            return f"name {name!r} is reserved on OneDrive"
        if "_vti_" in name.lower():
            return f"name {name!r} contains '_vti_', which OneDrive refuses"
        if name.startswith("~$"):
            return f"name {name!r} starts with '~$', which OneDrive refuses"
    return None


def _root(url: str) -> str:
    """The target's folder, as a drive path."""
    return (url.split("://", 1)[1] if "://" in url else url).strip("/")


def iso(mtime_ns: int) -> str:
    return dt.datetime.fromtimestamp(mtime_ns // 1_000_000_000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str | None) -> int | None:
    if not value:
        return None
    stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return int(stamp.timestamp()) * 1_000_000_000


def default_token_file() -> str:
    from platformdirs import user_config_dir

    return os.path.join(user_config_dir("mirror"), "onedrive-token.json")


def msal_http(ca_certs: str | None) -> requests.Session:
    import requests

    """A requests session for msal that honours ``ca_certs`` (msal ignores ``verify`` when
    REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE are set, unless the session ignores the environment)."""
    session = requests.Session()
    if ca_certs:
        session.trust_env = False
        session.verify = ca_certs
    return session


def login_errors() -> tuple[type[Exception], ...]:
    """How msal reports Microsoft's login service failing to answer: a 5xx (msal raises its
    own error for those, without the status as an attribute) or no connection at all."""
    import msal
    import requests

    return (msal.exceptions.MsalServiceError, requests.RequestException)


def login_unavailable(exc: BaseException) -> TransientError:
    """The login service is down for a while: the login itself still holds."""
    import msal

    detail = str(exc) if isinstance(exc, msal.exceptions.MsalServiceError) else type(exc).__name__
    return TransientError(f"Microsoft's login service is unavailable for now ({detail})")


class TokenSource:
    """Delegated access tokens from the msal cache kept in the token file (mode 0600)."""

    def __init__(
        self, token_file: str, client_id: str | None, authority: str | None, ca_certs: str | None
    ) -> None:
        import msal

        saved = read_login(token_file)
        self.token_file = token_file
        self.cache = msal.SerializableTokenCache()
        self.cache.deserialize(saved.get("cache") or "{}")
        self.client_id = str(client_id or saved.get("client_id") or "")
        self.authority = authority or saved.get("authority") or AUTHORITY
        if not self.client_id:
            raise ConfigError("onedrive: no client_id in the options or the token file")
        try:
            # msal asks the login service for its endpoints here already
            self.app = msal.PublicClientApplication(
                self.client_id,
                authority=self.authority,
                token_cache=self.cache,
                http_client=msal_http(ca_certs),
                instance_discovery=not ca_certs,
            )
        except login_errors() as exc:
            raise login_unavailable(exc) from exc
        self._lock = threading.Lock()

    def token(self) -> str:
        with self._lock:
            return self._silent(force_refresh=False)

    def renew(self, refused: str) -> None:
        """A new access token from the refresh token in place of ``refused``, unless another
        thread got one already.

        Graph may refuse an access token before msal's clock says it expired: the clock
        was ahead when it was issued, or access was revoked early (continuous access
        evaluation). Only a refused refresh means the login itself is gone.
        """
        with self._lock:
            if self._silent(force_refresh=False) == refused:
                self._silent(force_refresh=True)

    def _silent(self, force_refresh: bool) -> str:
        accounts = self.app.get_accounts()
        result = (
            self.app.acquire_token_silent(SCOPES, account=accounts[0], force_refresh=force_refresh)
            if accounts
            else None
        )
        if not result or "access_token" not in result:
            raise FatalError("OneDrive login expired or was revoked; run `mirror auth onedrive` again")
        if self.cache.has_state_changed:
            save_login(self.token_file, self.client_id, self.authority, self.cache)
        return str(result["access_token"])


def read_login(token_file: str) -> dict[str, Any]:
    """What ``mirror auth onedrive`` stored: the msal cache and the app it logged in with."""
    hint = f"run `mirror auth onedrive --client-id ID --token-file {shlex.quote(token_file)}`"
    return read_private_json(token_file, "OneDrive token file", hint)


def save_login(token_file: str, client_id: str, authority: str, cache: msal.SerializableTokenCache) -> None:
    write_private(
        token_file, json.dumps({"client_id": client_id, "authority": authority, "cache": cache.serialize()})
    )
    cache.has_state_changed = False


class OneDriveDriver(Driver):
    capabilities = Capabilities(
        case_sensitive=False,
        hash_kind=HashKind.QUICKXOR,
        mtime_settable=True,
        mtime_precision_ns=1_000_000_000,
        atomic_put=True,
        server_side_move=True,
        forbidden_names=RESERVED,
        forbidden_prefixes=frozenset({"~$"}),
        forbidden_infixes=frozenset({"_vti_"}),
        forbidden_chars=FORBIDDEN_CHARS,
        forbidden_leading=" ",
        forbidden_trailing=" ",
        max_name_bytes=255,
        max_path_chars=MAX_PATH,
    )
    default_concurrency = 4
    thread_safe = True

    def __init__(
        self,
        tokens: TokenSource,
        root: str,
        caps: Capabilities | None = None,
        *,
        drive_id: str | None = None,
        graph_url: str = GRAPH,
        ca_certs: str | None = None,
        chunk_size: int = DEFAULT_CHUNK,
        max_retries: int = 5,
        timeout: float = 60.0,
    ) -> None:

        # every method the engine calls is implemented on the API client: no fsspec filesystem
        super().__init__(None, root.strip("/"), caps)
        self.root = root.strip("/")
        self.tokens = tokens
        self.drive = f"/drives/{quote(drive_id, safe='')}" if drive_id else "/me/drive"
        self.chunk_size = max(CHUNK_UNIT, min(60 * 1024 * 1024, chunk_size) // CHUNK_UNIT * CHUNK_UNIT)
        self.max_retries = max_retries
        import httpx

        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_certs) if ca_certs else True
        self.http = httpx.Client(
            base_url=graph_url.rstrip("/"), verify=verify, timeout=timeout, trust_env=not ca_certs
        )
        self._lock = threading.Lock()
        #: drive paths of folders known to exist (lower-cased: OneDrive ignores case)
        self._folders: set[str] = set()
        #: item ids of folders moved into, by lower-cased drive path
        self._folder_ids: dict[str, str] = {}
        #: the root folder's item id when last listed, made or asked for (see root_remade)
        self._root_id: str | None = None
        self._remade = False
        #: whether this pass asked for the root folder (see begin_pass); held while asking
        self._root_asked = False
        self._asking = threading.Lock()

    @classmethod
    def check_target(cls, url: str, options: Mapping[str, Any]) -> None:
        known = {
            "token_file",
            "client_id",
            "authority",
            "drive_id",
            "graph_url",
            "ca_certs",
            "chunk_size",
            "max_retries",
            "timeout",
        }
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"onedrive: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        if (why := refusal(_root(url))) is not None:
            # each file failed on its own, named, and the folder in the config not at all
            raise ConfigError(f"onedrive: the target {url}: its {why}; choose a folder name OneDrive takes")
        # a login that is missing or readable by others stops the run
        read_login(str(options.get("token_file") or default_token_file()))

    @classmethod
    def capabilities_for(cls, url: str) -> Capabilities:
        # OneDrive's 400 characters count the whole drive path: a path that fit below the
        # target's folder was sent, refused, and failed every pass (holding back deletions)
        root = _root(url)
        return dataclasses.replace(cls.capabilities, root_chars=len(root) + 1 if root else 0)

    @classmethod
    def connect(cls, url: str, options: Mapping[str, Any], caps: Capabilities | None = None) -> Driver:
        cls.check_target(url, options)
        opts = dict(options)
        tokens = TokenSource(
            str(opts.get("token_file") or default_token_file()),
            opts.get("client_id"),
            opts.get("authority"),
            opts.get("ca_certs"),
        )
        return cls(
            tokens,
            _root(url),
            caps,
            drive_id=opts.get("drive_id"),
            graph_url=opts.get("graph_url", GRAPH),
            ca_certs=opts.get("ca_certs"),
            chunk_size=int(opts.get("chunk_size", DEFAULT_CHUNK)),
            max_retries=int(opts.get("max_retries", 5)),
            timeout=float(opts.get("timeout", 60.0)),
        )

    # -- addressing -----------------------------------------------------------------------
    def drive_path(self, rel: str) -> str:
        return f"{self.root}/{rel}".strip("/") if rel else self.root

    def item_url(self, rel: str) -> str:
        """The Graph URL of the item at root-relative ``rel`` (``""`` = the root)."""
        path = self.drive_path(rel)
        if not path:
            return f"{self.drive}/root"
        # every segment encoded: '#', '%' and spaces are legal in OneDrive names
        return f"{self.drive}/root:/{'/'.join(quote(p, safe='') for p in path.split('/'))}:"

    def check(self, rel: str) -> None:
        reason = refusal(self.drive_path(rel))
        if reason:
            raise ItemError(reason)

    # -- requests -------------------------------------------------------------------------
    def request(self, method: str, url: str, *, ok: tuple[int, ...] = (), **kwargs: Any) -> httpx.Response:
        """One Graph call, retried on throttling, 5xx and broken connections (Retry-After honoured).

        Statuses in ``ok`` are returned instead of raised.
        """
        import httpx

        waited_out: tuple[type[Exception], ...] = (httpx.HTTPStatusError, httpx.TransportError, *login_errors())
        extra = dict(kwargs.pop("headers", None) or {})
        attempt = 0
        renewed = False
        while True:
            try:
                # a token renewal the login service fails is waited out like a Graph 503
                token = self.tokens.token()
                headers = {**extra, "Authorization": f"Bearer {token}"}
                response = self.http.request(method, url, headers=headers, **kwargs)
                # once: a 401 on a token just renewed is the login's own refusal
                if response.status_code == 401 and not renewed:
                    self.tokens.renew(token)
                    renewed = True
                    continue
                if response.status_code not in ok:
                    response.raise_for_status()
                return response
            except waited_out as exc:
                attempt = self._wait_or_raise(exc, attempt)

    def _wait_or_raise(self, exc: Exception, attempt: int) -> int:
        err = self.classify(exc)
        if (
            not isinstance(err, TransientError)
            or attempt >= self.max_retries
            or (err.retry_after or 0) > QUIET_WAIT
        ):
            raise exc
        delay = err.retry_after if err.retry_after is not None else min(MAX_WAIT, 2**attempt * 0.5)
        time.sleep(min(MAX_WAIT, delay) + random.uniform(0, 0.1))  # noqa: S311
        return attempt + 1

    def _item(self, rel: str) -> dict[str, Any] | None:
        response = self.request("GET", self.item_url(rel), params={"$select": SELECT}, ok=(404,))
        return None if response.status_code == 404 else dict(response.json())

    def _entry(self, rel: str, item: Mapping[str, Any]) -> RemoteEntry:
        hashes = (item.get("file") or {}).get("hashes") or {}
        return RemoteEntry(
            path=rel,
            size=int(item.get("size") or 0),
            mtime_ns=parse_iso((item.get("fileSystemInfo") or {}).get("lastModifiedDateTime")),
            hash=hashes.get("quickXorHash"),
            extra=(("id", str(item["id"])),),
        )

    # -- reading --------------------------------------------------------------------------
    def list(self) -> dict[str, RemoteEntry]:
        root = self._item("")
        with self._lock:
            self._root_id, self._remade = (str(root["id"]) if root is not None else None), False
        if root is None:
            return {}
        result: dict[str, RemoteEntry] = {}
        stack = [("", str(root["id"]))]
        while stack:
            rel_dir, item_id = stack.pop()
            for child in self._children(item_id):
                rel = f"{rel_dir}/{child['name']}" if rel_dir else str(child["name"])
                if "folder" in child:
                    with self._lock:
                        self._folders.add(self.drive_path(rel).lower())
                    stack.append((rel, str(child["id"])))
                elif "file" in child:
                    result[rel] = self._entry(rel, child)
        return result

    def root_lost(self, known: str) -> bool:
        return self.stat(known) is None

    def root_remade(self) -> bool:
        with self._lock:
            return self._remade

    def begin_pass(self) -> None:
        with self._asking:
            self._root_asked = False

    def _ask_root(self) -> None:
        """Once a pass, before its first upload: whether the root folder is the one mirror
        filled. Graph makes the folders a simple upload by path needs, so a folder deleted
        in the web app since is made again by that upload, silently, holding it alone."""
        with self._asking:
            if self._root_asked:
                return
            root = self._item("")
            now = str(root["id"]) if root is not None else None
            with self._lock:
                self._remade |= self._root_id is not None and now != self._root_id
                self._root_id = now
                if now is None:
                    self._folders.clear()
                    self._folder_ids.clear()
            self._root_asked = True

    def _holds_files(self, item_id: str) -> bool:
        """Whether a file lies anywhere below folder ``item_id``."""
        children = self._children(item_id)
        return any("folder" not in child or self._holds_files(str(child["id"])) for child in children)

    def _children(self, item_id: str) -> Iterator[dict[str, Any]]:
        """The items in folder ``item_id``; none once it is deleted: one deleted since its
        parent was listed (the trash emptied in the web app) failed the whole listing."""
        url: str | None = f"{self.drive}/items/{quote(item_id, safe='')}/children"
        params: dict[str, Any] | None = {"$select": SELECT, "$top": 1000}
        while url:
            response = self.request("GET", url, params=params, ok=(404,))
            if response.status_code == 404:
                return
            page = response.json()
            yield from page.get("value", [])
            url, params = page.get("@odata.nextLink"), None

    def stat(self, rel: str) -> RemoteEntry | None:
        item = self._item(rel)
        if item is None or "file" not in item:
            return None
        return self._entry(rel, item)

    def entry(self, rel: str, info: Mapping[str, Any]) -> RemoteEntry:
        return self._entry(rel, info)

    def local_hash(self, local_path: str) -> str | None:
        return quickxor_hash(local_path)

    # -- writing --------------------------------------------------------------------------
    def put(self, local_path: str, rel: str, mtime_ns: int) -> RemoteEntry | None:
        import httpx

        self.check(rel)
        self._ask_root()
        size = os.path.getsize(local_path)
        try:
            if size <= SIMPLE_UPLOAD_MAX:
                with open(local_path, "rb") as f:
                    data = f.read()
                self.request(
                    "PUT",
                    f"{self.item_url(rel)}/content",
                    params={"@microsoft.graph.conflictBehavior": "replace"},
                    content=data,
                    headers={"Content-Type": "application/octet-stream"},
                )
                item = self.request("PATCH", self.item_url(rel), json=self._mtime_body(mtime_ns)).json()
            else:
                item = self._upload_session(local_path, rel, size, mtime_ns)
        except httpx.HTTPStatusError as exc:
            # Graph's nameAlreadyExists names no kind: asked only when it comes, said as
            # every backend says a folder where a file goes
            if exc.response.status_code == 409 and (there := self._item(rel)) is not None and "file" not in there:
                raise ItemError(f"{self.full(rel)} on the target is a folder where a file goes") from None
            raise
        return self._entry(rel, item)

    def _mtime_body(self, mtime_ns: int) -> dict[str, Any]:
        return {"fileSystemInfo": {"lastModifiedDateTime": iso(mtime_ns)}}

    def _upload_session(self, local_path: str, rel: str, size: int, mtime_ns: int) -> dict[str, Any]:
        """Upload in chunks through a session, resuming one this driver left unfinished."""
        import httpx

        key = f"onedrive:upload:{self.drive_path(rel)}"
        saved = self._saved_session(key, size, mtime_ns)
        upload_url, offset = saved if saved else (None, 0)
        if upload_url is None:
            body = {"item": {"@microsoft.graph.conflictBehavior": "replace", **self._mtime_body(mtime_ns)}}
            upload_url = str(
                self.request("POST", f"{self.item_url(rel)}/createUploadSession", json=body).json()["uploadUrl"]
            )
            self.state.set(key, json.dumps({"url": upload_url, "size": size, "mtime_ns": mtime_ns}))
        attempt = 0
        with ReadToCommit(local_path, size) as f:
            while True:
                f.seek(offset)
                chunk = f.read(self.chunk_size)
                if len(chunk) < min(self.chunk_size, size - offset):
                    # cut shorter since the session began: empty fragments never reached its end
                    self.state.delete(key)
                    raise ItemError(f"{rel} got shorter while it was sent")
                end = offset + len(chunk) - 1
                try:
                    # the upload URL carries its own authorization; a bearer token must not be sent
                    response = self.http.put(
                        upload_url, content=chunk, headers={"Content-Range": f"bytes {offset}-{end}/{size}"}
                    )
                    if response.status_code in (200, 201):
                        self.state.delete(key)
                        return dict(response.json())
                    response.raise_for_status()
                    offset = self._next_offset(response.json())
                    attempt = 0
                except (httpx.HTTPStatusError, httpx.TransportError) as exc:
                    if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code == 404:
                        # the session expired or was cancelled: forget it, so the engine's
                        # retry of this put starts a new one
                        self.state.delete(key)
                        raise
                    attempt = self._wait_or_raise(exc, attempt)
                    offset = self._server_offset(upload_url)

    def _saved_session(self, key: str, size: int, mtime_ns: int) -> tuple[str, int] | None:
        import httpx

        raw = self.state.get(key)
        if not raw:
            return None
        saved = json.loads(raw)
        if saved.get("size") == size and saved.get("mtime_ns") == mtime_ns:
            try:
                return str(saved["url"]), self._server_offset(str(saved["url"]))
            except httpx.HTTPError:
                pass
        self.state.delete(key)
        return None

    def _server_offset(self, upload_url: str) -> int:
        response = self.http.get(upload_url)
        response.raise_for_status()
        return self._next_offset(response.json())

    @staticmethod
    def _next_offset(status: Mapping[str, Any]) -> int:
        ranges = status.get("nextExpectedRanges") or ["0-"]
        return int(str(ranges[0]).split("-")[0])

    def set_mtime(self, rel: str, mtime_ns: int) -> None:
        self.request("PATCH", self.item_url(rel), json=self._mtime_body(mtime_ns))

    def move(self, src: str, dst: str) -> None:
        self.check(dst)
        folder = dst.rpartition("/")[0]
        folder_id = self._folder_id(folder)
        if folder_id is not None:
            # one PATCH by path in the common case, instead of three lookups and the PATCH
            response = self.request("PATCH", self.item_url(src), ok=(404, 409), json=_move(dst, folder_id))
            if response.status_code < 400:
                return
            if response.status_code == 404:  # the file, or the folder as remembered, is gone
                with self._lock:
                    self._folder_ids.pop(self.drive_path(folder).lower(), None)
        # a file at dst to replace (Graph moves onto no existing name), or something gone:
        # the lookups tell which
        self._move_looking(src, dst)

    def _folder_id(self, rel_dir: str) -> str | None:
        """The item id of the folder at ``rel_dir``, remembered; None if there is none."""
        key = self.drive_path(rel_dir).lower()
        with self._lock:
            known = self._folder_ids.get(key)
        if known is not None:
            return known
        item = self._item(rel_dir)
        if item is None or "folder" not in item:
            return None
        with self._lock:
            self._folder_ids[key] = str(item["id"])
        return str(item["id"])

    def _move_looking(self, src: str, dst: str) -> None:
        item = self._item(src)
        if item is None:
            raise FileNotFoundError(f"no file {src!r} on OneDrive")
        target_parent = self._item(dst.rpartition("/")[0])
        if target_parent is None:
            raise FileNotFoundError(f"no folder for {dst!r} on OneDrive")
        existing = self._item(dst)
        # a case-only rename finds the source itself at dst: it must not be deleted
        if existing is not None and existing["id"] != item["id"]:
            if "file" not in existing:
                # someone's folder, with all in it: Graph's DELETE would take it whole
                raise ItemError(f"{self.full(dst)} on the target is a folder where a file goes")
            # by id: whatever took the path since is not the file looked at
            self.request("DELETE", self._by_id(existing), ok=(404,))
        self.request("PATCH", self._by_id(item), json=_move(dst, str(target_parent["id"])))

    def _by_id(self, item: Mapping[str, Any]) -> str:
        """The Graph URL of ``item`` by its id, which stays with it wherever it goes."""
        return f"{self.drive}/items/{quote(str(item['id']), safe='')}"

    def delete(self, rel: str) -> None:
        # Graph's DELETE takes a folder whole and has no delete of a file alone: what is
        # there is looked at first (one GET), and that item deleted by its id, so that a
        # folder someone put at the path since is not it
        item = self._item(rel)
        if item is not None and "file" not in item:
            raise ItemError(
                f"{self.full(rel)} on the target is a folder, not the file mirror put there; it is not deleted"
            )
        # Graph's DELETE moves the item to the recycle bin
        if item is None or self.request("DELETE", self._by_id(item), ok=(404,)).status_code == 404:
            raise FileNotFoundError(f"no file {rel!r} on OneDrive")

    def makedirs(self, rel_dir: str) -> None:
        if rel_dir:
            self.check(rel_dir)
        path = self.drive_path(rel_dir)
        parts = path.split("/") if path else []
        for i in range(len(parts)):
            here = "/".join(parts[: i + 1])
            with self._lock:
                if here.lower() in self._folders:
                    continue
            parent_path = "/".join(parts[:i])
            parent_url = (
                f"{self.drive}/root:/{'/'.join(quote(p, safe='') for p in parent_path.split('/'))}:"
                if parent_path
                else f"{self.drive}/root"
            )
            response = self.request(
                "POST",
                f"{parent_url}/children",
                ok=(409,),
                json={"name": parts[i], "folder": {}, "@microsoft.graph.conflictBehavior": "fail"},
            )
            with self._lock:
                self._folders.add(here.lower())
                if here == self.root and response.status_code == 201:
                    # made where it had been: someone removed it, with mirror's files
                    self._remade |= self._root_id is not None
                    self._root_id = str(response.json()["id"])

    def remove_dir_if_empty(self, rel_dir: str) -> bool:
        item = self._item(rel_dir)
        if item is None or "folder" not in item:
            return False
        if (item["folder"] or {}).get("childCount", 1) != 0 and self._holds_files(str(item["id"])):
            return False
        # a folder goes with everything below it: only empty folders are left there
        self.request("DELETE", self.item_url(rel_dir), ok=(404,))
        self.forget_folder(rel_dir)
        return True

    def forget_folder(self, rel_dir: str) -> None:
        with self._lock:
            prefix = self.drive_path(rel_dir).lower()

            def kept(path: str) -> bool:
                # a root at the top of the drive ("") holds every folder
                return bool(prefix) and path != prefix and not path.startswith(prefix + "/")

            self._folders = {f for f in self._folders if kept(f)}
            self._folder_ids = {f: i for f, i in self._folder_ids.items() if kept(f)}

    # -- errors ---------------------------------------------------------------------------
    def classify(self, exc: BaseException) -> MirrorError:
        import httpx

        if isinstance(exc, httpx.HTTPStatusError):
            status = exc.response.status_code
            code, message = _graph_error(exc.response)
            text = f"OneDrive answered {status}" + (f" ({code}: {message})" if code else "")
            if status in (429, 503, 509) or (status >= 500 and status != 507):
                return TransientError(text, retry_after=_retry_after(exc.response))
            if status == 507 or code == "quotaLimitReached":
                # its recycle bin counts against the quota, and mirror's deletions go there
                return TargetFull(
                    f"the OneDrive is full ({text}): free some space (empty its recycle bin too: mirror's "
                    "deletions go there) or buy more, then run again"
                )
            if status == 401:
                return FatalError(text + "; run `mirror auth onedrive` again")
            return ItemError(text)
        if isinstance(exc, httpx.TransportError):
            return TransientError(f"OneDrive connection failed: {type(exc).__name__}")
        if isinstance(exc, FileNotFoundError):
            return ItemError(str(exc))
        if isinstance(exc, login_errors()):
            return login_unavailable(exc)
        return classify_os_error(exc)

    def close(self) -> None:
        self.http.close()


def _move(dst: str, folder_id: str) -> dict[str, Any]:
    """The PATCH body that moves an item to ``dst``, in the folder with that id."""
    return {"name": dst.rsplit("/", 1)[-1], "parentReference": {"id": folder_id}}


def _graph_error(response: httpx.Response) -> tuple[str, str]:
    try:
        error = response.json().get("error") or {}
    except ValueError:
        return "", ""
    # Graph messages name items, never tokens; still keep them short
    return str(error.get("code", "")), re.sub(r"\s+", " ", str(error.get("message", "")))[:200]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
