"""The ``gdrive`` backend: Google Drive through the official client (Drive API v3).

Built on google-api-python-client rather than gdrive-fsspec or pydrive2, which both
create a second file when a path is uploaded again (see docs/gdrive.md). Drive addresses
files by id and lets several files share a name in one folder, so this module owns the
path → id mapping: folders are resolved once and cached (thread-safely), a changed file
is updated in place by id (Drive keeps its revisions, links and sharing), and pre-existing
duplicates are resolved deterministically (the oldest wins) with a warning.

URL: ``gdrive://Folder/Sub`` is a folder under My Drive, or under the shared drive
``drive_id`` / the folder ``root_folder_id`` when those options are set. Options:
``service_account_file`` (+ ``subject`` for domain-wide delegation) or ``token_file``
(written by ``mirror auth gdrive``), ``token_uri``, ``trash`` (default true: deletions go to the
trash), ``chunk_size``, ``max_retries``, and for tests ``api_endpoint``/``ca_certs``.
"""

from __future__ import annotations

import datetime as dt
import http.client
import logging
import mimetypes
import os
import random
import shlex
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO, TypeVar

import google.auth.exceptions
import httplib2
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account
from google_auth_httplib2 import AuthorizedHttp  # type: ignore[import-untyped]
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import MediaIoBaseUpload

from mirror.driver import QUIET_WAIT, Capabilities, Driver, ReadToCommit, RemoteEntry, classify_os_error
from mirror.errors import ConfigError, FatalError, ItemError, MirrorError, TargetFull, TransientError
from mirror.hashing import HashKind, file_hash
from mirror.paths import parent
from mirror.private_files import read_private_json

log = logging.getLogger(__name__)

SCOPES = ["https://www.googleapis.com/auth/drive"]
FOLDER = "application/vnd.google-apps.folder"
#: Google Docs, shortcuts, forms: no bytes to compare, never overwritten by a put
GOOGLE_APPS = "application/vnd.google-apps."
#: seconds a resolved folder id is used without asking Drive again (see _cached_folder)
FOLDER_TTL = 60.0
FILE_FIELDS = "id,name,mimeType,size,md5Checksum,modifiedTime,createdTime,parents"
#: up to this size one multipart request carries the file (read into memory)
SIMPLE_UPLOAD_MAX = 5 * 1024 * 1024
#: Drive wants resumable chunks in multiples of 256 KiB
CHUNK_UNIT = 256 * 1024
DEFAULT_CHUNK = 32 * CHUNK_UNIT
RETRY_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "backendError", "internalError"}
FATAL_REASONS = {"storageQuotaExceeded", "quotaExceeded", "teamDriveFileLimitExceeded", "dailyLimitExceeded"}
MAX_WAIT = 120.0

T = TypeVar("T")


def default_token_file() -> str:
    from platformdirs import user_config_dir

    return os.path.join(user_config_dir("mirror"), "gdrive-token.json")


def rfc3339(mtime_ns: int) -> str:
    stamp = dt.datetime.fromtimestamp(mtime_ns // 1_000_000 / 1000, dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_rfc3339(value: str | None) -> int | None:
    if not value:
        return None
    stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return int(stamp.timestamp() * 1000) * 1_000_000


def quote_q(value: str) -> str:
    """A string literal for Drive's q language."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def ends_with_cr(stream: BinaryIO) -> bool:
    """Whether the file's last byte is a CR; the stream is left at its start.

    The client separates a multipart upload's parts with a bare LF, so such a file reads
    as ending in the CRLF that RFC 2046 makes part of the next delimiter, and a parser
    that follows the RFC drops its last byte. A resumable upload sends the bytes bare.
    """
    stream.seek(0, os.SEEK_END)
    if stream.tell() == 0:
        return False
    stream.seek(-1, os.SEEK_END)
    last = stream.read(1)
    stream.seek(0)
    return last == b"\r"


def _reason(exc: HttpError) -> str:
    details = exc.error_details
    if isinstance(details, list) and details and isinstance(details[0], dict):
        return str(details[0].get("reason", ""))
    return ""


def _retry_after(exc: HttpError) -> float | None:
    value = exc.resp.get("retry-after") if exc.resp is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _holds(item: Mapping[str, Any], md5: str | None, mtime_ns: int) -> bool:
    """Whether the Drive file ``item`` has the bytes and the time an upload gives it."""
    return (
        md5 is not None
        and item.get("md5Checksum") == md5
        and parse_rfc3339(item.get("modifiedTime")) == parse_rfc3339(rfc3339(mtime_ns))
    )


def pick(items: list[dict[str, Any]], where: str) -> dict[str, Any]:
    """The one of several same-named items mirror uses: the oldest, then the lowest id.

    The oldest is the one links and shares most likely point to; the others are left
    alone (they are not mirror's to delete) and reported.
    """
    chosen = min(items, key=lambda f: (f.get("createdTime") or "", f["id"]))
    if len(items) > 1:
        log.warning(
            "Google Drive: %d items named %r in %s; using the oldest (id %s) and leaving the others alone",
            len(items),
            chosen["name"],
            where or "the target root",
            chosen["id"],
        )
    return chosen


class GDriveDriver(Driver):
    capabilities = Capabilities(
        case_sensitive=True,
        hash_kind=HashKind.MD5,
        mtime_settable=True,
        mtime_precision_ns=1_000_000,
        atomic_put=True,
        server_side_move=True,
        max_name_bytes=32767,
    )
    default_concurrency = 4
    thread_safe = True

    def __init__(
        self,
        credentials: Any,
        root: str,
        caps: Capabilities | None = None,
        *,
        drive_id: str | None = None,
        root_folder_id: str | None = None,
        api_endpoint: str | None = None,
        ca_certs: str | None = None,
        trash: bool = True,
        chunk_size: int = DEFAULT_CHUNK,
        max_retries: int = 5,
        timeout: float = 60.0,
    ) -> None:
        # every method the engine calls is implemented on the API client: no fsspec filesystem
        super().__init__(None, root.strip("/"), caps)
        self.root = root.strip("/")
        self._credentials = credentials
        self._drive_id = drive_id
        self._root_folder_id = root_folder_id
        self._base_id = root_folder_id or drive_id or "root"
        self._endpoint = api_endpoint
        self._ca_certs = ca_certs
        self._timeout = timeout
        self.trash = trash
        self.chunk_size = max(CHUNK_UNIT, chunk_size // CHUNK_UNIT * CHUNK_UNIT)
        self.max_retries = max_retries
        self._local = threading.local()
        self._https: list[httplib2.Http] = []
        self._lock = threading.Lock()
        #: root-relative folder → Drive folder id ("" is the target root)
        #: folder path -> (id, until when it is trusted without asking Drive again)
        self._folders: dict[str, tuple[str, float]] = {}
        self._resolve_lock = threading.RLock()
        #: the root folder's id when last listed or resolved (see root_remade)
        self._root_id: str | None = None
        self._remade = False
        #: whether this pass asked Drive where the root folder is (see begin_pass)
        self._root_asked = False

    @classmethod
    def check_target(cls, url: str, options: Mapping[str, Any]) -> None:
        known = {
            "service_account_file",
            "subject",
            "token_file",
            "token_uri",
            "drive_id",
            "root_folder_id",
            "api_endpoint",
            "ca_certs",
            "trash",
            "chunk_size",
            "max_retries",
            "timeout",
        }
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"gdrive: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        load_credentials(options)  # a login that is missing or readable by others stops the run

    @classmethod
    def connect(cls, url: str, options: Mapping[str, Any], caps: Capabilities | None = None) -> Driver:
        cls.check_target(url, options)
        opts = dict(options)
        path = url.split("://", 1)[1] if "://" in url else url
        return cls(
            load_credentials(opts),
            path,
            caps,
            drive_id=opts.get("drive_id"),
            root_folder_id=opts.get("root_folder_id"),
            api_endpoint=opts.get("api_endpoint"),
            ca_certs=opts.get("ca_certs"),
            trash=bool(opts.get("trash", True)),
            chunk_size=int(opts.get("chunk_size", DEFAULT_CHUNK)),
            max_retries=int(opts.get("max_retries", 5)),
            timeout=float(opts.get("timeout", 60.0)),
        )

    # -- the client, one per thread (httplib2 is not thread-safe) ------------------------
    @property
    def _files(self) -> Any:
        service = getattr(self._local, "service", None)
        if service is None:
            http = _SendsOnce(timeout=self._timeout, ca_certs=self._ca_certs)
            # 308 is Drive's "resume incomplete", not a redirect
            http.redirect_codes = http.redirect_codes - {308}
            with self._lock:
                self._https.append(http)
            authed = AuthorizedHttp(self._credentials, http=http)
            client_options = {"api_endpoint": self._endpoint} if self._endpoint else None
            service = build(
                "drive",
                "v3",
                http=authed,
                client_options=client_options,
                static_discovery=True,
                cache_discovery=False,
            )
            self._local.service = service
        return service.files()

    def _call(self, make: Callable[[], Any]) -> Any:
        """Execute a request, retrying throttling and server errors (honouring Retry-After).

        The client itself ignores Retry-After, so its own retries are not used.
        """
        attempt = 0
        while True:
            try:
                return make().execute()
            except Exception as exc:
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

    def _drive_args(self) -> dict[str, Any]:
        return {"supportsAllDrives": True}

    def _list_args(self) -> dict[str, Any]:
        if self._drive_id:
            return {
                "supportsAllDrives": True,
                "includeItemsFromAllDrives": True,
                "corpora": "drive",
                "driveId": self._drive_id,
            }
        return {"supportsAllDrives": True, "includeItemsFromAllDrives": True}

    def _query(self, q: str, page_size: int = 1000) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            page = self._call(
                lambda token=token: self._files.list(  # type: ignore[misc]
                    q=q,
                    fields=f"nextPageToken,files({FILE_FIELDS})",
                    pageSize=page_size,
                    pageToken=token,
                    **self._list_args(),
                )
            )
            yield from page.get("files", [])
            token = page.get("nextPageToken")
            if not token:
                return

    def _children(self, folder_id: str, name: str | None = None) -> list[dict[str, Any]]:
        q = f"{quote_q(folder_id)} in parents and trashed = false"
        if name is None:
            return list(self._query(q))
        q += f" and name = {quote_q(name)}"
        # Drive's = ignores case, yet Drive holds Invoice.pdf and invoice.pdf side by side:
        # taken as a match, the one would be written over with the other's bytes
        return [f for f in self._query(q) if f["name"] == name]

    def _holds_files(self, folder_id: str) -> bool:
        """Whether a file lies anywhere below folder ``folder_id``."""
        return any(f["mimeType"] != FOLDER or self._holds_files(f["id"]) for f in self._children(folder_id))

    # -- folders ----------------------------------------------------------------------
    def _folder_id(self, rel_dir: str, create: bool) -> str | None:
        """The id of folder ``rel_dir`` under the root ("" = the root), made if asked."""
        if not self._root_asked:
            with self._resolve_lock:
                if not self._root_asked:
                    # a root gone is asked again by the next use, a put makes it
                    self._root_asked = self._resolve_folder("", create) is not None
        cached = self._cached_folder(rel_dir)
        if cached is not None:
            return cached
        # uncached folders are resolved one at a time: threads starting together on a new
        # tree would otherwise each walk it, and each create the folders they miss
        with self._resolve_lock:
            cached = self._cached_folder(rel_dir)
            if cached is not None:
                return cached
            return self._resolve_folder(rel_dir, create)

    def _cached_folder(self, rel_dir: str) -> str | None:
        """A folder id resolved less than FOLDER_TTL ago: someone may trash the folder in
        Drive, and uploads into a trashed folder succeed, out of sight, until it is purged."""
        with self._lock:
            cached = self._folders.get(rel_dir)
        if cached is None or cached[1] < time.monotonic():
            return None
        return cached[0]

    def _remember_folder(self, rel_dir: str, folder_id: str) -> None:
        with self._lock:
            self._folders[rel_dir] = (folder_id, time.monotonic() + FOLDER_TTL)

    def _resolve_folder(self, rel_dir: str, create: bool) -> str | None:
        folder_id: str | None
        if rel_dir == "":
            folder_id = self._base_id
            parts = self.root.split("/") if self.root else []
            if not parts:
                self._check_base()
            for i, part in enumerate(parts):
                where = "/".join(parts[:i])
                child = self._find_folder(folder_id, part, where)
                if child is None:
                    self._check_base()
                    if not create:
                        return None
                    child = self._make_folder(folder_id, part, where)
                folder_id = child
        else:
            parent_id = self._folder_id(parent(rel_dir), create)
            if parent_id is None:
                return None
            folder_id = self._child_folder(parent_id, rel_dir.rsplit("/", 1)[-1], parent(rel_dir), create)
        if folder_id is not None:
            self._remember_folder(rel_dir, folder_id)
        if rel_dir == "" and folder_id is not None:
            with self._lock:
                # another id for the root path: the folder listed was trashed or deleted
                # (then made again here, or by someone), and mirror's files went with it
                moved = self._root_id is not None and folder_id != self._root_id
                self._remade |= moved
                self._root_id = folder_id
                if moved:
                    # the folders below went with the old one
                    self._folders = {"": self._folders[""]}
        return folder_id

    def _check_base(self) -> None:
        """Stop where the folder ``root_folder_id`` names is in Drive's trash or gone: mirror
        cannot make that one again, and uploads into a trashed folder succeed out of sight
        until Drive purges them (the folders it holds are trashed with it, so the target
        folder reads as gone and would be made again in there)."""
        if self._root_folder_id is None:
            return
        try:
            item = self._call(
                lambda: self._files.get(fileId=self._base_id, fields="id,trashed", **self._drive_args())
            )
        except HttpError as exc:
            if exc.resp is None or int(exc.resp.status) != 404:
                raise
            item = None
        if item is None or item.get("trashed"):
            where = "is in Drive's trash" if item is not None else "is gone"
            raise FatalError(
                f"Google Drive: the folder root_folder_id={self._root_folder_id} {where}: "
                "restore it from Drive's trash, or set another root_folder_id"
            )

    def _child_folder(self, parent_id: str, name: str, where: str, create: bool) -> str | None:
        found = self._find_folder(parent_id, name, where)
        if found is not None or not create:
            return found
        return self._make_folder(parent_id, name, where)

    def _find_folder(self, parent_id: str, name: str, where: str) -> str | None:
        found = self._named_folders(parent_id, name)
        return str(pick(found, where)["id"]) if found else None

    def _named_folders(self, parent_id: str, name: str) -> list[dict[str, Any]]:
        return [f for f in self._children(parent_id, name) if f["mimeType"] == FOLDER]

    def _make_folder(self, parent_id: str, name: str, where: str) -> str:
        """Make the folder ``name``, found missing. Looked up again before every further
        attempt: a create whose answer was lost has still made it, and a second create
        would split the files between two."""
        attempt = 0
        while True:
            try:
                body = {"name": name, "mimeType": FOLDER, "parents": [parent_id]}
                made = self._files.create(body=body, fields="id", **self._drive_args()).execute()
            except Exception as exc:
                attempt = self._wait_or_raise(exc, attempt)
                found = self._find_folder(parent_id, name, where)
                if found is not None:
                    return found
                continue
            return str(made["id"])

    def forget_folder(self, rel_dir: str) -> None:
        with self._lock:
            for key in [k for k in self._folders if not rel_dir or k == rel_dir or k.startswith(rel_dir + "/")]:
                del self._folders[key]

    def root_lost(self, known: str) -> bool:
        # each folder on the way asked afresh: an id resolved within FOLDER_TTL would
        # answer for a folder in the trash since, and uploads into it succeed out of sight
        self.forget_folder("")
        return self.stat(known) is None

    def root_remade(self) -> bool:
        with self._lock:
            return self._remade

    def begin_pass(self) -> None:
        # the folder cache would send a watch pass's uploads into a folder trashed in the
        # web app since, out of sight while mirror said sent: each folder a pass uses is
        # asked for again, the root first
        with self._resolve_lock:
            self._root_asked = False
            with self._lock:
                self._folders = {}

    def _file(self, rel: str) -> dict[str, Any] | None:
        """The Drive file at ``rel`` (the oldest of duplicates), or None."""
        folder_id = self._folder_id(parent(rel), create=False)
        if folder_id is None:
            return None
        name = rel.rsplit("/", 1)[-1]
        found = [f for f in self._children(folder_id, name) if not f["mimeType"].startswith(GOOGLE_APPS)]
        return pick(found, parent(rel)) if found else None

    def _entry(self, rel: str, item: Mapping[str, Any]) -> RemoteEntry:
        return RemoteEntry(
            path=rel,
            size=int(item.get("size") or 0),
            mtime_ns=parse_rfc3339(item.get("modifiedTime")),
            hash=item.get("md5Checksum"),
            extra=(("id", str(item["id"])),),
        )

    # -- reading ----------------------------------------------------------------------
    def list(self) -> dict[str, RemoteEntry]:
        root_id = self._folder_id("", create=False)
        with self._lock:
            self._root_id, self._remade = root_id, False
        if root_id is None:
            return {}
        result: dict[str, RemoteEntry] = {}
        stack = [("", root_id)]
        while stack:
            rel_dir, folder_id = stack.pop()
            by_name: dict[str, list[dict[str, Any]]] = {}
            for item in self._children(folder_id):
                by_name.setdefault(item["name"], []).append(item)
            for name, items in by_name.items():
                rel = f"{rel_dir}/{name}" if rel_dir else name
                folders = [f for f in items if f["mimeType"] == FOLDER]
                files = [f for f in items if not f["mimeType"].startswith(GOOGLE_APPS)]
                if folders:
                    chosen_id = str(pick(folders, rel_dir)["id"])
                    self._remember_folder(rel, chosen_id)
                    stack.append((rel, chosen_id))
                if files:
                    result[rel] = self._entry(rel, pick(files, rel_dir))
        return result

    def stat(self, rel: str) -> RemoteEntry | None:
        item = self._file(rel)
        return None if item is None else self._entry(rel, item)

    def entry(self, rel: str, info: Mapping[str, Any]) -> RemoteEntry:
        return self._entry(rel, info)

    # -- writing ----------------------------------------------------------------------
    def put(self, local_path: str, rel: str, mtime_ns: int) -> RemoteEntry | None:
        parent_id = self._folder_id(parent(rel), create=True)
        assert parent_id is not None
        name = rel.rsplit("/", 1)[-1]
        size = os.path.getsize(local_path)
        mimetype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        expected = file_hash(local_path, HashKind.MD5)
        attempt = 0
        while True:
            # looked up again on every attempt: a create whose answer was lost has
            # still made the file, and a second create would duplicate it
            existing = self._file(rel)
            if attempt and existing is not None and _holds(existing, expected, mtime_ns):
                return self._entry(rel, existing)  # the upload whose answer was lost landed
            try:
                with ReadToCommit(local_path, size) as stream:
                    resumable = size > SIMPLE_UPLOAD_MAX or ends_with_cr(stream)
                    media = MediaIoBaseUpload(
                        stream, mimetype=mimetype, chunksize=self.chunk_size, resumable=resumable
                    )
                    if existing is not None:
                        request = self._files.update(
                            fileId=existing["id"],
                            body={"modifiedTime": rfc3339(mtime_ns)},
                            media_body=media,
                            fields=FILE_FIELDS,
                            **self._drive_args(),
                        )
                    else:
                        request = self._files.create(
                            body={"name": name, "parents": [parent_id], "modifiedTime": rfc3339(mtime_ns)},
                            media_body=media,
                            fields=FILE_FIELDS,
                            **self._drive_args(),
                        )
                    item = self._upload(request) if resumable else request.execute()
            except Exception as exc:
                attempt = self._wait_or_raise(exc, attempt)
                continue
            landed = item.get("md5Checksum")
            if landed is not None and landed != expected:
                raise ItemError(
                    f"Google Drive holds other bytes than were sent for {rel} (changed while it was sent, "
                    "or damaged on the way); it is sent again on the next pass"
                )
            return self._entry(rel, item)

    def _upload(self, request: Any) -> dict[str, Any]:
        """Drive a resumable upload to the end, resuming where the server stands after errors.

        ``next_chunk(num_retries=n)`` would re-send a stream it already read; calling
        ``next_chunk()`` again after an error first asks the server for its offset.
        """
        attempt = 0
        response = None
        while response is None:
            try:
                _, response = request.next_chunk()
                attempt = 0
            except Exception as exc:
                attempt = self._wait_or_raise(exc, attempt)
        return dict(response)

    def set_mtime(self, rel: str, mtime_ns: int) -> None:
        item = self._require(rel)
        self._call(
            lambda: self._files.update(
                fileId=item["id"], body={"modifiedTime": rfc3339(mtime_ns)}, fields="id", **self._drive_args()
            )
        )

    def _require(self, rel: str) -> dict[str, Any]:
        item = self._file(rel)
        if item is None:
            raise FileNotFoundError(f"no file {rel!r} on Google Drive")
        return item

    def move(self, src: str, dst: str) -> None:
        item = self._require(src)
        old_parent = self._folder_id(parent(src), create=False)
        new_parent = self._folder_id(parent(dst), create=True)
        assert old_parent is not None and new_parent is not None
        existing = self._file(dst)
        if existing is not None and existing["id"] != item["id"]:
            self._dispose(existing["id"])
        args: dict[str, Any] = {}
        if new_parent != old_parent:
            args = {"addParents": new_parent, "removeParents": old_parent}
        self._call(
            lambda: self._files.update(
                fileId=item["id"], body={"name": dst.rsplit("/", 1)[-1]}, fields="id", **args, **self._drive_args()
            )
        )

    def delete(self, rel: str) -> None:
        self._dispose(self._require(rel)["id"])

    def _dispose(self, file_id: str) -> None:
        if self.trash:
            self._call(
                lambda: self._files.update(
                    fileId=file_id, body={"trashed": True}, fields="id", **self._drive_args()
                )
            )
        else:
            self._call(lambda: self._files.delete(fileId=file_id, **self._drive_args()))

    def makedirs(self, rel_dir: str) -> None:
        self._folder_id(rel_dir, create=True)

    def remove_dir_if_empty(self, rel_dir: str) -> bool:
        folder_id = self._folder_id(rel_dir, create=False)
        if folder_id is None or self._holds_files(folder_id):
            return False
        # a folder goes with everything below it: only empty folders are left there
        self._dispose(folder_id)
        self.forget_folder(rel_dir)
        return True

    # -- errors -----------------------------------------------------------------------
    def classify(self, exc: BaseException) -> MirrorError:
        if isinstance(exc, HttpError):
            return self._answered(exc)
        if isinstance(exc, google.auth.exceptions.RefreshError):
            # google-auth marks a 5xx, 429 or 408 of the token endpoint retryable: the login
            # still holds, the service that renews it is down for a while
            if exc.retryable:
                return TransientError("Google's login service could not renew the access token for now")
            return FatalError("Google Drive refused the stored credentials; run `mirror auth gdrive` again")
        if isinstance(exc, google.auth.exceptions.TransportError | httplib2.HttpLib2Error):
            return TransientError(f"Google Drive connection failed: {type(exc).__name__}")
        if isinstance(exc, FileNotFoundError):
            return ItemError(str(exc))
        return classify_transport_error(exc)

    def _answered(self, exc: HttpError) -> MirrorError:
        """What an error Drive answered means for mirror."""
        status = int(exc.resp.status) if exc.resp is not None else 0
        reason = _reason(exc)
        text = f"Google Drive answered {status}" + (f" ({reason})" if reason else "")
        if status == 429 or (status == 403 and reason in RETRY_REASONS) or status >= 500:
            return TransientError(text, retry_after=_retry_after(exc))
        if reason == "storageQuotaExceeded":
            trash = " (its trash counts too, and mirror's deletions go there: empty it)" if self.trash else ""
            return TargetFull(
                f"the Google Drive storage is full: free some space{trash} or buy more, then run again"
            )
        if reason in FATAL_REASONS or status == 401:
            return FatalError(text + ("; run `mirror auth gdrive` again" if status == 401 else ""))
        return ItemError(text)

    def close(self) -> None:
        with self._lock:
            https, self._https = self._https, []
        for conn in https:
            conn.close()


class _SendsOnce(httplib2.Http):  # type: ignore[misc]
    """httplib2.Http that sends a request that makes or changes something once.

    httplib2 sends a request again, unasked, when the connection closes before the
    answer: a file create whose answer was lost made a second file of its name, and the
    last chunk of a resumable upload, sent again from a stream already read, held the
    upload for the whole timeout. The failure comes back instead, and the driver looks
    at what Drive holds before it tries again (put, _make_folder, _upload).
    """

    def _conn_request(self, conn: Any, request_uri: str, method: str, body: Any, headers: Any) -> Any:
        if method in ("GET", "HEAD", "DELETE"):
            return super()._conn_request(conn, request_uri, method, body, headers)
        return super()._conn_request(_Once(conn), request_uri, method, body, headers)


class _Once:
    """A connection that takes one request: a second raises, ending httplib2's retry."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._sent = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self._sent:
            raise ConnectionAbortedError("the connection closed before Google Drive answered")
        self._sent = True
        self._conn.request(*args, **kwargs)


def classify_transport_error(exc: BaseException) -> MirrorError:
    """TLS and HTTP-protocol failures: a wrong certificate is fatal, a broken line transient."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return FatalError(f"Google Drive: TLS certificate not trusted ({exc.verify_message})")
    if isinstance(exc, ssl.SSLError | http.client.HTTPException):
        return TransientError(f"Google Drive connection failed: {type(exc).__name__}")
    return classify_os_error(exc)


def load_credentials(opts: Mapping[str, Any]) -> Any:
    """Credentials from a service-account JSON or the token file ``mirror auth gdrive`` wrote."""
    sa_file = opts.get("service_account_file")
    creds: Any
    try:
        if sa_file:
            creds = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                str(sa_file), scopes=SCOPES
            )
            if opts.get("subject"):
                creds = creds.with_subject(opts["subject"])
            return creds.with_token_uri(opts["token_uri"]) if opts.get("token_uri") else creds
        token_file = str(opts.get("token_file") or default_token_file())
        info = read_private_json(
            token_file,
            "Google Drive token file",
            f"run `mirror auth gdrive --client-secrets FILE --token-file {shlex.quote(token_file)}` "
            "or set service_account_file",
        )
        creds = user_credentials.Credentials.from_authorized_user_info(  # type: ignore[no-untyped-call]
            info, scopes=SCOPES
        )
        # google-auth ignores the file's token_uri; a proxy or a test server needs it set
        return creds.with_token_uri(opts["token_uri"]) if opts.get("token_uri") else creds
    except (ValueError, KeyError, OSError) as exc:
        raise ConfigError(f"gdrive: unreadable credentials file ({type(exc).__name__})") from exc
