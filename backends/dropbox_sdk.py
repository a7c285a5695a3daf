"""The Dropbox SDK's side of the ``dropbox`` backend: SDK calls with our retries
(:class:`Caller`), the fsspec filesystem over them (:class:`DropboxFS`), the batched
commits (:class:`Batcher`), and the SDK's errors as mirror's.

Apart from :mod:`backends.dropbox`, which the registry loads for every run and status of
a Dropbox target, so that the SDK with requests (0.5 s of CPU here) is imported on the
first connection only: a run with nothing to send never connects.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import dropbox
import dropbox.files as dbf
import requests
from dropbox.exceptions import (
    ApiError,
    AuthError,
    BadInputError,
    HttpError,
    InternalServerError,
    PathRootError,
    RateLimitError,
)
from dropboxdrivefs import DropboxDriveFileSystem
from fsspec.spec import AbstractFileSystem

from mirror.driver import QUIET_WAIT, classify_os_error
from mirror.errors import FatalError, ItemError, MirrorError, TransientError

from .dropbox import MAX_BATCH, RELOGIN, api_path, error_tags, tagged_error

T = TypeVar("T")


def api_error(exc: ApiError, path: str) -> MirrorError:
    """A Dropbox endpoint error about ``path`` as one of mirror's errors, with the fix."""
    return tagged_error(error_tags(exc.error), path)


def auth_error(exc: AuthError) -> MirrorError:
    tags = error_tags(exc.error)
    what = tags[0] if tags else "invalid_access_token"
    if what == "missing_scope":
        return FatalError(
            "the Dropbox app lacks a permission (files.content.write, files.content.read, "
            f"files.metadata.read): enable it in the App Console, then {RELOGIN}"
        )
    if what == "user_suspended":
        return FatalError("the Dropbox account is suspended")
    return FatalError(f"Dropbox refused the login ({what}: token revoked or expired); {RELOGIN}")


def http_error(exc: HttpError) -> MirrorError:
    """Errors the SDK raises from the HTTP status alone."""
    if isinstance(exc, RateLimitError):
        tags = error_tags(exc.error) if exc.error is not None else []
        return TransientError(f"Dropbox rate limit ({tags[-1] if tags else 'too_many_requests'})", exc.backoff)
    if isinstance(exc, AuthError):
        return auth_error(exc)
    if isinstance(exc, InternalServerError):
        return TransientError(f"Dropbox server error (HTTP {exc.status_code})")
    if isinstance(exc, BadInputError) and "invalid_client" in (exc.message or ""):
        return FatalError(f"Dropbox does not know this app key; check app_key or {RELOGIN}")
    if isinstance(exc, BadInputError):
        return ItemError(f"Dropbox refused the request: {exc.message}")
    return ItemError(f"Dropbox answered HTTP {exc.status_code}")


def classify_dropbox(exc: BaseException) -> MirrorError:
    """The classification of every exception the SDK and requests raise."""
    if isinstance(exc, MirrorError):
        return exc
    if isinstance(exc, PathRootError):
        return FatalError("Dropbox refused the path root (team space changed?)")
    if isinstance(exc, HttpError):
        return http_error(exc)
    if isinstance(exc, ApiError):
        return api_error(exc, "the item")
    if isinstance(exc, requests.exceptions.RequestException):
        return network_error(exc)
    return classify_os_error(exc)


def network_error(exc: requests.exceptions.RequestException) -> MirrorError:
    if isinstance(exc, requests.exceptions.SSLError):
        return FatalError("the TLS certificate of the Dropbox server could not be verified")
    if isinstance(
        exc,
        (
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ),
    ):
        return TransientError(f"connection to Dropbox failed ({type(exc).__name__})")
    return ItemError(f"request to Dropbox failed ({type(exc).__name__})")


class Caller:
    """Runs SDK calls with bounded retries: Retry-After for 429, backoff for 5xx/resets."""

    def __init__(self, client: dropbox.Dropbox, attempts: int, backoff: float) -> None:
        self.client = client
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self._refresh = threading.Lock()

    def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        for attempt in range(self.attempts):
            with self._refresh:
                # one thread refreshes an expiring access token, the others then reuse it
                self.client.check_and_refresh_access_token()
            try:
                return fn(*args, **kwargs)
            except RateLimitError as exc:
                if attempt + 1 >= self.attempts or (exc.backoff or 0) > QUIET_WAIT:
                    raise
                wait = exc.backoff if exc.backoff is not None else 5.0
            except (
                InternalServerError,
                requests.exceptions.ConnectionError,
                requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                if attempt + 1 >= self.attempts or isinstance(exc, requests.exceptions.SSLError):
                    raise
                wait = self.backoff * 2**attempt * (0.5 + random.random() / 2)  # noqa: S311 - jitter
            time.sleep(wait)
        raise AssertionError("unreachable")


class DropboxFS(DropboxDriveFileSystem):  # type: ignore[misc]
    """dropboxdrivefs with errors raised the fsspec way and every call retried."""

    protocol = "dropbox"
    cachable = False

    def __init__(self, call: Caller) -> None:
        AbstractFileSystem.__init__(self)
        self.call = call
        self.dbx = call.client

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        if path.startswith("dropbox://"):
            path = path[len("dropbox://") :]
        return "/" + path.strip("/")

    def ls(self, path: str, detail: bool = True, recursive: bool = False, **kwargs: Any) -> list[Any]:
        target = api_path(self._strip_protocol(path))
        try:
            page = self.call(self.dbx.files_list_folder, target, recursive=recursive, limit=2000)
        except ApiError as exc:
            tags = error_tags(exc.error)
            if "not_found" in tags:
                raise FileNotFoundError(path) from None
            if "not_folder" in tags:
                raise NotADirectoryError(path) from None
            raise
        entries = list(page.entries)
        while page.has_more:
            page = self.call(self.dbx.files_list_folder_continue, page.cursor)
            entries.extend(page.entries)
        result = [self._refactor_metadata(m) for m in entries if not isinstance(m, dbf.DeletedMetadata)]
        # a recursive listing includes the folder itself
        result = [m for m in result if m["name"].lower() != target.lower()]
        return result if detail else [m["name"] for m in result]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        target = api_path(self._strip_protocol(path))
        if target == "":
            return {"name": "/", "size": 0, "type": "directory"}
        try:
            return dict(self._refactor_metadata(self.call(self.dbx.files_get_metadata, target)))
        except ApiError as exc:
            if "not_found" in error_tags(exc.error):
                raise FileNotFoundError(path) from None
            raise

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        target = api_path(self._strip_protocol(path))
        if target == "":
            raise FileExistsError(path)
        try:
            self.call(self.dbx.files_create_folder_v2, target, autorename=False)
        except ApiError as exc:
            tags = error_tags(exc.error)
            if "conflict" in tags:
                if tags[-1] == "folder":
                    raise FileExistsError(path) from None
                raise NotADirectoryError(f"a file is in the way of folder {path}") from None
            raise api_error(exc, path) from None

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        try:
            self.mkdir(path)
        except FileExistsError:
            if not exist_ok:
                raise

    def rm_file(self, path: str) -> None:
        self._rm(path)

    def _rm(self, path: str) -> None:
        try:
            self.call(self.dbx.files_delete_v2, api_path(self._strip_protocol(path)))
        except ApiError as exc:
            if "not_found" in error_tags(exc.error):
                raise FileNotFoundError(path) from None
            raise api_error(exc, path) from None

    def rmdir(self, path: str) -> None:
        """Remove a folder that holds no file; empty folders below it go with it (Dropbox
        deletes a folder whole, so what is below is looked at first)."""
        if any(info.get("type") != "directory" for info in self.ls(path, detail=True, recursive=True)):
            raise OSError(f"folder not empty: {path}")
        self._rm(path)

    def mv(self, path1: str, path2: str, **kwargs: Any) -> None:
        src, dst = api_path(self._strip_protocol(path1)), api_path(self._strip_protocol(path2))
        try:
            self.call(self.dbx.files_move_v2, src, dst, autorename=False)
        except ApiError as exc:
            tags = error_tags(exc.error)
            if tags[:1] == ["from_lookup"] and "not_found" in tags:
                raise FileNotFoundError(path1) from None
            raise api_error(exc, path2) from None

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        try:
            _, response = self.call(self.dbx.files_download, api_path(self._strip_protocol(path)))
        except ApiError as exc:
            if "not_found" in error_tags(exc.error):
                raise FileNotFoundError(path) from None
            raise
        with response:
            data: bytes = response.content
        return data[start:end]

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        raise NotImplementedError("the Dropbox backend writes with put_file and reads with cat_file")


@dataclass
class Pending:
    """One file waiting for its batch commit."""

    commit: dbf.CommitInfo
    expected_hash: str
    data: bytes | None = None  # bytes still to send; None: session already closed
    session_id: str | None = None
    offset: int = 0
    queued_at: float = field(default_factory=time.monotonic)
    result: dbf.FileMetadata | None = None
    error: BaseException | None = None
    done: bool = False


class Batcher:
    """Commits files together, one batch at a time (Dropbox wants batch finishes serial).

    Puts register before they read their file; a batch goes when every registered put is
    waiting and nothing new arrived for ``quiet`` seconds, when the oldest has waited
    ``linger`` seconds, or at Dropbox's 1,000 entries.
    """

    def __init__(self, fs: DropboxFS, max_body: int, quiet: float = 0.02, linger: float = 0.5) -> None:
        self.fs = fs
        self.max_body = max_body
        self.quiet = quiet
        self.linger = linger
        self._cond = threading.Condition()
        self._pending: list[Pending] = []
        self._registered = 0
        self._direct = 0
        self._last_event = 0.0
        self._flushing = False

    @contextmanager
    def alone(self) -> Iterator[bool]:
        """Yields True when no other put is under way and no batch went a moment ago: a
        lone file then goes straight up in one request. Inside, the put counts as busy."""
        with self._cond:
            quiet = self._registered == 0 and self._direct == 0 and time.monotonic() - self._last_event > 0.25
            self._direct += 1
        try:
            yield quiet
        finally:
            with self._cond:
                self._direct -= 1

    @contextmanager
    def registered(self) -> Iterator[None]:
        with self._cond:
            self._registered += 1
            self._last_event = time.monotonic()
        try:
            yield
        finally:
            with self._cond:
                self._registered -= 1
                self._last_event = time.monotonic()
                self._cond.notify_all()

    def submit(self, item: Pending) -> dbf.FileMetadata:
        """Queue ``item`` and return once its batch is committed (raises its error)."""
        with self._cond:
            self._pending.append(item)
            self._last_event = time.monotonic()
            self._cond.notify_all()
            while not item.done:
                wait = self._due_in()
                if self._flushing or wait > 0:
                    self._cond.wait(timeout=wait if not self._flushing and wait > 0 else 0.05)
                    continue
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                self._flushing = True
                self._cond.release()
                try:
                    self._flush(batch)
                finally:
                    self._cond.acquire()
                    self._flushing = False
                    self._last_event = time.monotonic()
                    self._cond.notify_all()
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    def _due_in(self) -> float:
        """Seconds until the pending batch should go (0: now)."""
        if not self._pending:
            return 0.05
        now = time.monotonic()
        if len(self._pending) >= MAX_BATCH:
            return 0.0
        by_linger = self._pending[0].queued_at + self.linger - now
        if len(self._pending) >= self._registered:
            return max(0.0, min(self._last_event + self.quiet - now, by_linger))
        return max(0.0, by_linger)

    def _flush(self, batch: list[Pending]) -> None:
        try:
            self._send_data([i for i in batch if i.data is not None])
            self._finish([i for i in batch if i.error is None])
        except BaseException as exc:
            for item in batch:
                if not item.done and item.error is None:
                    item.error = exc
        finally:
            for item in batch:
                item.done = True

    def _send_data(self, items: list[Pending]) -> None:
        """Open one session per file and send all their bytes in as few requests as fit."""
        if not items:
            return
        started = self.fs.call(self.fs.dbx.files_upload_session_start_batch, len(items))
        for item, session_id in zip(items, started.session_ids, strict=True):
            item.session_id = session_id
        group: list[Pending] = []
        size = 0
        for item in items:
            assert item.data is not None
            if group and size + len(item.data) > self.max_body:
                self._append_group(group)
                group, size = [], 0
            group.append(item)
            size += len(item.data)
        self._append_group(group)

    def _append_group(self, group: list[Pending]) -> None:
        entries = [
            dbf.UploadSessionAppendBatchArgEntry(
                dbf.UploadSessionCursor(i.session_id, 0), len(i.data or b""), close=True
            )
            for i in group
        ]
        body = b"".join(i.data or b"" for i in group)
        result = self.fs.call(self.fs.dbx.files_upload_session_append_batch, body, entries)
        for item, entry in zip(group, result.entries, strict=True):
            length = len(item.data or b"")
            item.data, item.offset = None, length
            if entry.is_failure():
                failure = entry.get_failure()
                # a retried request whose first attempt landed: the bytes are there
                landed = failure.is_incorrect_offset() and failure.get_incorrect_offset().correct_offset == length
                if not landed:
                    item.error = api_error(ApiError("", failure, None, None), item.commit.path)

    def _finish(self, items: list[Pending]) -> None:
        if not items:
            return
        args = [
            dbf.UploadSessionFinishArg(dbf.UploadSessionCursor(i.session_id, i.offset), i.commit) for i in items
        ]
        result = self.fs.call(self.fs.dbx.files_upload_session_finish_batch_v2, args)
        for item, entry in zip(items, result.entries, strict=True):
            if entry.is_success():
                item.result = entry.get_success()
                continue
            failure = entry.get_failure()
            if "not_found" in error_tags(failure):
                # the session is gone: a retried finish whose first attempt committed it?
                item.result = self._committed(item)
                if item.result is not None:
                    continue
            item.error = api_error(ApiError("", failure, None, None), item.commit.path)

    def _committed(self, item: Pending) -> dbf.FileMetadata | None:
        try:
            meta = self.fs.call(self.fs.dbx.files_get_metadata, item.commit.path)
        except ApiError:
            return None
        if isinstance(meta, dbf.FileMetadata) and meta.content_hash == item.expected_hash:
            return meta
        return None
