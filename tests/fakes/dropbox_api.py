"""A local HTTPS fake of the Dropbox API v2, for testing the real SDK and dropboxdrivefs.

It follows the published API (https://www.dropbox.com/developers/documentation/http)
for every route mirror's Dropbox backend uses, errors and limits included:

- ``files/upload``, upload sessions (``start``, ``append``, ``append_v2``, ``finish``,
  ``start_batch``, ``append_batch``, ``finish_batch_v2``), with the sequential-offset
  rules (``incorrect_offset`` carries ``correct_offset``), ``close`` before a batch
  finish, per-request ``content_hash`` checks, and the 150 MiB per-request limit
  (``payload_too_large``);
- ``list_folder`` (+ ``continue``, paged), ``get_metadata``, ``delete_v2``,
  ``create_folder_v2``, ``move_v2``, ``download``, and ``oauth2/token`` (PKCE code
  exchange and refresh);
- case-insensitive paths that keep the case they were created with, Dropbox's refused
  names, ``content_hash`` computed the Dropbox way, a quota (``insufficient_space``);
- faults a test injects: 429 ``too_many_requests`` / ``too_many_write_operations``
  (``Retry-After`` header and JSON ``retry_after``), 5xx, 401 for expired or revoked
  tokens, a connection dropped after the server has done the work (lost answer), and a
  request held until the test releases it (to kill a client mid-upload).

Every request is logged (route, time, body size, whether a content hash came with it),
and the stored bytes are kept, so tests assert on what a user would see.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import itertools
import json
import os
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from tests.fakes.https import dropping_partial_requests, read_body

MAX_REQUEST_BYTES = 150 * 1024 * 1024
#: entries one batch route takes (delete_batch, move_batch_v2, finish_batch_v2)
MAX_BATCH_ENTRIES = 1000
BLOCK = 4 * 1024 * 1024
REFUSED_NAMES = {"desktop.ini", "thumbs.db", ".ds_store", "icon\r"}


def content_hash(data: bytes) -> str:
    """Dropbox's content hash: SHA-256 of the concatenated SHA-256 of each 4 MiB block."""
    outer = hashlib.sha256()
    for start in range(0, len(data), BLOCK):
        outer.update(hashlib.sha256(data[start : start + BLOCK]).digest())
    return outer.hexdigest()


class WriteFailure(Exception):
    """A WriteError union; each route wraps it in its own error shape."""

    def __init__(self, error: dict[str, Any], summary: str) -> None:
        super().__init__(summary)
        self.error = error
        self.summary = summary

    def as_api(self, tag: str) -> ApiFailure:
        return ApiFailure({".tag": tag, tag: self.error}, f"{tag}/{self.summary}")


class ApiFailure(Exception):
    """An endpoint-specific error: HTTP 409 with a JSON ``error`` union."""

    def __init__(self, error: dict[str, Any], summary: str, status: int = 409) -> None:
        super().__init__(summary)
        self.error = error
        self.summary = summary
        self.status = status


@dataclass
class FileNode:
    display: str
    data: bytes
    client_modified: str
    server_modified: str
    rev: str
    id: str
    hash: str


@dataclass
class Session:
    data: bytearray = field(default_factory=bytearray)
    closed: bool = False


@dataclass
class Fault:
    """What to do to the next ``count`` requests matching ``route`` (None: any)."""

    kind: str  # "429", "429_write", "500", "503", "drop", "hold"
    route: str | None = None
    count: int = 1
    retry_after: int = 1
    #: for "hold": the request waits for this event, then is dropped unhandled
    release: threading.Event | None = None


@dataclass
class LoggedRequest:
    route: str
    at: float
    body_bytes: int
    has_content_hash: bool
    status: int = 0


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _not_found(tag: str = "path") -> ApiFailure:
    return ApiFailure({".tag": tag, tag: {".tag": "not_found"}}, f"{tag}/not_found/")


class DropboxState:
    """The account: folders, files and upload sessions, case-insensitive, thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.folders: dict[str, str] = {}  # lower -> display
        self.files: dict[str, FileNode] = {}
        self.sessions: dict[str, Session] = {}
        self.cursors: dict[str, list[dict[str, Any]]] = {}
        self.quota_bytes: int | None = None
        self._ids = itertools.count(1)

    # -- paths ------------------------------------------------------------------
    @staticmethod
    def check_path(path: str, tag: str = "path") -> str:
        if path == "":
            return ""
        if not path.startswith("/") or path.endswith("/") or "//" in path:
            raise ApiFailure({".tag": tag, tag: {".tag": "malformed_path"}}, f"{tag}/malformed_path/")
        return path

    @staticmethod
    def check_write_name(path: str) -> None:
        for part in path.strip("/").split("/"):
            low = part.lower()
            if low in REFUSED_NAMES or low.startswith(".dropbox"):
                raise WriteFailure({".tag": "disallowed_name"}, "disallowed_name/")
            if part != part.rstrip(" .") or len(part) > 255 or "\\" in part:
                raise WriteFailure({".tag": "malformed_path"}, "malformed_path/")

    def display_of(self, path: str) -> str:
        """The stored case of every existing folder on the way, the given case for the rest."""
        parts = path.strip("/").split("/")
        out: list[str] = []
        for i, part in enumerate(parts):
            low = "/" + "/".join(parts[: i + 1]).lower()
            known = self.folders.get(low) or (self.files[low].display if low in self.files else None)
            out.append(known.rsplit("/", 1)[1] if known else part)
        return "/" + "/".join(out)

    def ensure_parents(self, path: str) -> None:
        parts = path.strip("/").split("/")[:-1]
        for i in range(len(parts)):
            low = "/" + "/".join(parts[: i + 1]).lower()
            if low in self.files:
                raise WriteFailure(
                    {".tag": "conflict", "conflict": {".tag": "file_ancestor"}}, "conflict/file_ancestor/"
                )
            if low not in self.folders:
                self.folders[low] = self.display_of("/" + "/".join(parts[: i + 1]))

    def used_bytes(self) -> int:
        return sum(len(f.data) for f in self.files.values())

    # -- metadata -----------------------------------------------------------------
    def file_meta(self, node: FileNode) -> dict[str, Any]:
        return {
            ".tag": "file",
            "name": node.display.rsplit("/", 1)[1],
            "id": node.id,
            "client_modified": node.client_modified,
            "server_modified": node.server_modified,
            "rev": node.rev,
            "size": len(node.data),
            "path_lower": node.display.lower(),
            "path_display": node.display,
            "is_downloadable": True,
            "content_hash": node.hash,
        }

    def folder_meta(self, low: str) -> dict[str, Any]:
        display = self.folders[low]
        return {
            ".tag": "folder",
            "name": display.rsplit("/", 1)[1],
            "id": "id:f" + hashlib.sha1(low.encode()).hexdigest()[:20],
            "path_lower": low,
            "path_display": display,
        }

    def meta(self, path: str, tag: str = "path") -> dict[str, Any]:
        low = path.lower()
        if low in self.files:
            return self.file_meta(self.files[low])
        if low in self.folders:
            return self.folder_meta(low)
        raise _not_found(tag)

    # -- writes -------------------------------------------------------------------
    def commit(self, path: str, data: bytes, commit: dict[str, Any]) -> dict[str, Any]:
        """Store ``data`` at ``path`` following a CommitInfo; raises WriteFailure."""
        if not path.startswith("/") or path.endswith("/") or "//" in path:
            raise WriteFailure({".tag": "malformed_path"}, "malformed_path/")
        self.check_write_name(path)
        mode = commit.get("mode", {".tag": "add"})
        mode_tag = mode if isinstance(mode, str) else mode[".tag"]
        low = path.lower()
        existing = self.files.get(low)
        if self.quota_bytes is not None:
            freed = len(existing.data) if existing else 0
            if self.used_bytes() - freed + len(data) > self.quota_bytes:
                raise WriteFailure({".tag": "insufficient_space"}, "insufficient_space/")
        conflict: str | None = None
        if low in self.folders:
            conflict = "folder"
        elif existing is not None and mode_tag != "overwrite":
            same = existing.data == data if mode_tag == "add" else existing.rev == mode.get("update")
            conflict = None if same else "file"
        if conflict is not None:
            if not commit.get("autorename", False):
                raise WriteFailure({".tag": "conflict", "conflict": {".tag": conflict}}, f"conflict/{conflict}/")
            path = self._free_name(path)
            low = path.lower()
            existing = None
        self.ensure_parents(path)
        display = existing.display if existing else self.display_of(path)
        now = _now()
        node = FileNode(
            display=display,
            data=bytes(data),
            client_modified=commit.get("client_modified") or now,
            server_modified=now,
            rev=f"{next(self._ids):015x}",
            id=existing.id if existing else f"id:{secrets.token_hex(10)}",
            hash=content_hash(data),
        )
        self.files[low] = node
        return self.file_meta(node)

    def _free_name(self, path: str) -> str:
        head, _, name = path.rpartition("/")
        stem, dot, ext = name.partition(".")
        for n in itertools.count(1):
            candidate = f"{head}/{stem} ({n}){dot}{ext}"
            if candidate.lower() not in self.files and candidate.lower() not in self.folders:
                return candidate
        raise AssertionError("unreachable")

    def delete(self, path: str) -> dict[str, Any]:
        path = self.check_path(path, "path_lookup")
        low = path.lower()
        if low in self.files:
            return self.file_meta(self.files.pop(low))
        if low in self.folders:
            meta = self.folder_meta(low)
            for key in [k for k in self.files if k.startswith(low + "/")]:
                del self.files[key]
            for key in [k for k in self.folders if k == low or k.startswith(low + "/")]:
                del self.folders[key]
            return meta
        raise _not_found("path_lookup")

    def move(self, src: str, dst: str) -> dict[str, Any]:
        src = self.check_path(src, "from_lookup")
        dst = self.check_path(dst, "to")
        try:
            self.check_write_name(dst)
        except WriteFailure as exc:
            raise exc.as_api("to") from exc
        ls, ld = src.lower(), dst.lower()
        if ls not in self.files and ls not in self.folders:
            raise _not_found("from_lookup")
        if ld != ls and (ld in self.files or ld in self.folders):
            kind = "file" if ld in self.files else "folder"
            raise ApiFailure(
                {".tag": "to", "to": {".tag": "conflict", "conflict": {".tag": kind}}}, f"to/conflict/{kind}/"
            )
        if ld.startswith(ls + "/"):
            raise ApiFailure({".tag": "cant_move_folder_into_itself"}, "cant_move_folder_into_itself/")
        try:
            self.ensure_parents(dst)
        except WriteFailure as exc:
            raise exc.as_api("to") from exc
        new_display = (
            self.display_of(dst.rsplit("/", 1)[0]) + "/" + dst.rsplit("/", 1)[1] if dst.count("/") > 1 else dst
        )
        if ls in self.files:
            node = self.files.pop(ls)
            node.display = new_display
            self.files[ld] = node
            return self.file_meta(node)
        for key in sorted(k for k in self.folders if k == ls or k.startswith(ls + "/")):
            display = self.folders.pop(key)
            self.folders[ld + key[len(ls) :]] = new_display + display[len(ls) :]
        for key in [k for k in self.files if k.startswith(ls + "/")]:
            node = self.files.pop(key)
            node.display = new_display + node.display[len(ls) :]
            self.files[ld + key[len(ls) :]] = node
        return self.folder_meta(ld)

    def list_entries(self, path: str, recursive: bool) -> list[dict[str, Any]]:
        path = self.check_path(path)
        low = path.lower()
        if low and low not in self.folders:
            if low in self.files:
                raise ApiFailure({".tag": "path", "path": {".tag": "not_folder"}}, "path/not_folder/")
            raise _not_found()
        prefix = low + "/"

        def wanted(key: str) -> bool:
            return key.startswith(prefix) and (recursive or "/" not in key[len(prefix) :])

        entries = [self.folder_meta(k) for k in sorted(self.folders) if wanted(k)]
        entries += [self.file_meta(self.files[k]) for k in sorted(self.files) if wanted(k)]
        if recursive and low:
            entries.insert(0, self.folder_meta(low))
        return entries


class FakeDropbox:
    """The fake service: state, tokens, faults and the request log; serve with :func:`serve`."""

    def __init__(self, page_size: int = 500, max_request_bytes: int = MAX_REQUEST_BYTES) -> None:
        self.state = DropboxState()
        self.page_size = page_size
        self.max_request_bytes = max_request_bytes
        self.app_key = "fake-app-key"
        self.access_tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self.refresh_tokens: set[str] = set()
        self.codes: dict[str, str] = {}  # authorization code -> PKCE challenge
        self.faults: list[Fault] = []
        self.log: list[LoggedRequest] = []
        self._lock = threading.Lock()
        #: background batch jobs: id -> [checks answered "in_progress" before done, result]
        self.jobs: dict[str, list[Any]] = {}
        #: how many checks of a new job answer "in_progress" (a real job takes a while)
        self.job_checks = 1
        #: the next delete_batch job fails whole with this reason (the files stay)
        self.fail_next_delete_job: str | None = None

    # -- test controls ------------------------------------------------------------
    def issue_token(self, lifetime: float = 4 * 3600) -> str:
        token = "sl." + secrets.token_urlsafe(24)
        self.access_tokens[token] = time.monotonic() + lifetime
        return token

    def issue_refresh_token(self) -> str:
        token = "rt-" + secrets.token_urlsafe(24)
        self.refresh_tokens.add(token)
        return token

    def authorize(self, code_challenge: str) -> str:
        """What a user approving the app in the browser produces: a one-time code."""
        code = "code-" + secrets.token_urlsafe(12)
        self.codes[code] = code_challenge
        return code

    def inject(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def routes(self, prefix: str = "") -> list[str]:
        return [r.route for r in self.log if r.route.startswith(prefix)]

    def file_bytes(self, path: str) -> bytes:
        return self.state.files[path.lower()].data

    def _take_fault(self, route: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.count > 0 and (fault.route is None or route.endswith(fault.route)):
                    fault.count -= 1
                    return fault
        return None

    # -- auth ---------------------------------------------------------------------
    def token_endpoint(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        grant = form.get("grant_type")
        if form.get("client_id") != self.app_key:
            return 400, {"error": "invalid_client", "error_description": "Invalid client_id"}
        if grant == "authorization_code":
            challenge = self.codes.pop(form.get("code", ""), None)
            verifier = form.get("code_verifier", "")
            expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
            if challenge is None or challenge != expected:
                return 400, {
                    "error": "invalid_grant",
                    "error_description": "code doesn't exist or has expired",
                }
            return 200, {
                "access_token": self.issue_token(),
                "token_type": "bearer",
                "expires_in": 14400,
                "refresh_token": self.issue_refresh_token(),
                "scope": "files.content.read files.content.write files.metadata.read",
                "uid": "12345",
                "account_id": "dbid:fake-account",
            }
        if grant == "refresh_token":
            if form.get("refresh_token") not in self.refresh_tokens:
                return 400, {
                    "error": "invalid_grant",
                    "error_description": "refresh token is invalid or revoked",
                }
            return 200, {"access_token": self.issue_token(), "token_type": "bearer", "expires_in": 14400}
        return 400, {"error": "unsupported_grant_type"}

    def check_auth(self, header: str | None) -> tuple[int, dict[str, Any]] | None:
        if not header or not header.startswith("Bearer "):
            return 400, {"error": "missing Authorization header"}
        expiry = self.access_tokens.get(header[7:])
        if expiry is None:
            return 401, {"error_summary": "invalid_access_token/", "error": {".tag": "invalid_access_token"}}
        if expiry < time.monotonic():
            return 401, {"error_summary": "expired_access_token/", "error": {".tag": "expired_access_token"}}
        return None

    # -- routes -------------------------------------------------------------------
    def handle(self, route: str, arg: dict[str, Any], body: bytes) -> Any:
        """Run one API route; returns the JSON result or raises ApiFailure."""
        handler: Callable[[dict[str, Any], bytes], Any] | None = getattr(
            self, "r_" + route.replace("/", "__"), None
        )
        if handler is None:
            raise ApiFailure({".tag": "other"}, "unknown route", status=400)
        with self.state.lock:
            return handler(arg, body)

    def _check_body(self, arg: dict[str, Any], body: bytes) -> None:
        """The per-request limits every data-carrying route shares."""
        if len(body) > self.max_request_bytes:
            raise ApiFailure({".tag": "payload_too_large"}, "payload_too_large/")
        expected = arg.get("content_hash")
        if expected is not None and expected != content_hash(body):
            raise ApiFailure({".tag": "content_hash_mismatch"}, "content_hash_mismatch/")

    def r_files__upload(self, arg: dict[str, Any], body: bytes) -> Any:
        self._check_body(arg, body)
        try:
            return self.state.commit(arg["path"], body, arg)
        except WriteFailure as exc:
            raise ApiFailure(
                {".tag": "path", "reason": exc.error, "upload_session_id": ""}, "path/" + exc.summary
            ) from exc

    def _session(self, cursor: dict[str, Any], length: int) -> Session:
        session = self.state.sessions.get(cursor["session_id"])
        if session is None:
            raise ApiFailure({".tag": "not_found"}, "not_found/")
        if cursor["offset"] != len(session.data):
            raise ApiFailure(
                {".tag": "incorrect_offset", "correct_offset": len(session.data)}, "incorrect_offset/"
            )
        if session.closed and length:
            raise ApiFailure({".tag": "closed"}, "closed/")
        return session

    def r_files__upload_session__start(self, arg: dict[str, Any], body: bytes) -> Any:
        self._check_body(arg, body)
        session_id = "sess-" + secrets.token_hex(12)
        self.state.sessions[session_id] = Session(bytearray(body), bool(arg.get("close", False)))
        return {"session_id": session_id}

    def r_files__upload_session__start_batch(self, arg: dict[str, Any], body: bytes) -> Any:
        count = int(arg["num_sessions"])
        if not 1 <= count <= 1000:
            raise ApiFailure({".tag": "other"}, "num_sessions out of range", status=400)
        ids = []
        for _ in range(count):
            session_id = "sess-" + secrets.token_hex(12)
            self.state.sessions[session_id] = Session()
            ids.append(session_id)
        return {"session_ids": ids}

    def _append(self, cursor: dict[str, Any], data: bytes, close: bool) -> None:
        session = self._session(cursor, len(data) or 1)
        session.data += data
        session.closed = session.closed or close

    def r_files__upload_session__append(self, arg: dict[str, Any], body: bytes) -> Any:
        self._check_body(arg, body)
        self._append(arg, body, False)
        return None

    def r_files__upload_session__append_v2(self, arg: dict[str, Any], body: bytes) -> Any:
        self._check_body(arg, body)
        self._append(arg["cursor"], body, bool(arg.get("close", False)))
        return None

    def r_files__upload_session__append_batch(self, arg: dict[str, Any], body: bytes) -> Any:
        self._check_body(arg, body)
        entries = arg["entries"]
        if sum(int(e["length"]) for e in entries) != len(body):
            raise ApiFailure({".tag": "length_mismatch"}, "length_mismatch/")
        results: list[dict[str, Any]] = []
        pos = 0
        for entry in entries:
            piece = body[pos : pos + int(entry["length"])]
            pos += int(entry["length"])
            try:
                self._append(entry["cursor"], piece, bool(entry.get("close", False)))
                results.append({".tag": "success"})
            except ApiFailure as exc:
                results.append({".tag": "failure", "failure": exc.error})
        return {"entries": results}

    def _finish(self, cursor: dict[str, Any], commit: dict[str, Any], data: bytes, need_closed: bool) -> Any:
        session = self.state.sessions.get(cursor["session_id"])
        if session is None:
            raise ApiFailure(
                {".tag": "lookup_failed", "lookup_failed": {".tag": "not_found"}}, "lookup_failed/not_found/"
            )
        if cursor["offset"] != len(session.data):
            raise ApiFailure(
                {
                    ".tag": "lookup_failed",
                    "lookup_failed": {".tag": "incorrect_offset", "correct_offset": len(session.data)},
                },
                "lookup_failed/incorrect_offset/",
            )
        if need_closed and not session.closed:
            raise ApiFailure(
                {".tag": "lookup_failed", "lookup_failed": {".tag": "not_closed"}},
                "lookup_failed/not_closed/",
            )
        payload = bytes(session.data) + data
        try:
            meta = self.state.commit(commit["path"], payload, commit)
        except WriteFailure as exc:
            raise exc.as_api("path") from exc
        del self.state.sessions[cursor["session_id"]]
        return meta

    def r_files__upload_session__finish(self, arg: dict[str, Any], body: bytes) -> Any:
        self._check_body(arg, body)
        return self._finish(arg["cursor"], arg["commit"], body, need_closed=False)

    def r_files__upload_session__finish_batch_v2(self, arg: dict[str, Any], body: bytes) -> Any:
        entries = arg["entries"]
        if len(entries) > MAX_BATCH_ENTRIES:
            raise ApiFailure({".tag": "other"}, "too many entries", status=400)
        results: list[dict[str, Any]] = []
        for entry in entries:
            try:
                meta = self._finish(entry["cursor"], entry["commit"], b"", need_closed=True)
                results.append({**meta, ".tag": "success"})
            except ApiFailure as exc:
                results.append({".tag": "failure", "failure": exc.error})
        return {"entries": results}

    def r_files__get_metadata(self, arg: dict[str, Any], body: bytes) -> Any:
        path = self.state.check_path(arg["path"])
        if path == "":
            raise ApiFailure({".tag": "other"}, "get_metadata on the root is not supported", status=400)
        return self.state.meta(path)

    def r_files__list_folder(self, arg: dict[str, Any], body: bytes) -> Any:
        entries = self.state.list_entries(arg["path"], bool(arg.get("recursive", False)))
        limit = min(int(arg.get("limit") or self.page_size), self.page_size)
        return self._page(entries, limit)

    def _page(self, entries: list[dict[str, Any]], limit: int) -> dict[str, Any]:
        cursor = "cur-" + secrets.token_hex(8)
        page, rest = entries[:limit], entries[limit:]
        self.state.cursors[cursor] = rest
        return {"entries": page, "cursor": cursor, "has_more": bool(rest)}

    def r_files__list_folder__continue(self, arg: dict[str, Any], body: bytes) -> Any:
        rest = self.state.cursors.get(arg["cursor"])
        if rest is None:
            raise ApiFailure({".tag": "reset"}, "reset/")
        return self._page(rest, self.page_size)

    def r_files__delete_v2(self, arg: dict[str, Any], body: bytes) -> Any:
        return {"metadata": self.state.delete(arg["path"])}

    def r_files__create_folder_v2(self, arg: dict[str, Any], body: bytes) -> Any:
        path = self.state.check_path(arg["path"])
        try:
            self.state.check_write_name(path)
        except WriteFailure as exc:
            raise exc.as_api("path") from exc
        low = path.lower()
        if low in self.state.folders or low in self.state.files:
            kind = "folder" if low in self.state.folders else "file"
            raise ApiFailure(
                {".tag": "path", "path": {".tag": "conflict", "conflict": {".tag": kind}}},
                f"path/conflict/{kind}/",
            )
        try:
            self.state.ensure_parents(path)
        except WriteFailure as exc:
            raise exc.as_api("path") from exc
        self.state.folders[low] = self.state.display_of(path)
        return {"metadata": self.state.folder_meta(low)}

    def r_files__move_v2(self, arg: dict[str, Any], body: bytes) -> Any:
        return {"metadata": self.state.move(arg["from_path"], arg["to_path"])}

    # batch routes: each entry on its own (move_batch_v2 is not all-or-nothing), results in
    # the order of the entries, the work done as a background job the client polls
    def r_files__delete_batch(self, arg: dict[str, Any], body: bytes) -> Any:
        if self.fail_next_delete_job is not None:
            reason, self.fail_next_delete_job = self.fail_next_delete_job, None
            return self._launch({".tag": "failed", "failed": {".tag": reason}})
        results = []
        for entry in self._batch_entries(arg):
            try:
                results.append({".tag": "success", "metadata": self.state.delete(entry["path"])})
            except ApiFailure as exc:
                results.append({".tag": "failure", "failure": exc.error})
        return self._launch(results)

    def r_files__delete_batch__check(self, arg: dict[str, Any], body: bytes) -> Any:
        return self._check(arg)

    def r_files__move_batch_v2(self, arg: dict[str, Any], body: bytes) -> Any:
        if arg.get("autorename"):
            raise ApiFailure({".tag": "other"}, "autorename is not faked", status=400)
        results = []
        for entry in self._batch_entries(arg):
            try:
                results.append(
                    {".tag": "success", "success": self.state.move(entry["from_path"], entry["to_path"])}
                )
            except ApiFailure as exc:
                results.append(
                    {".tag": "failure", "failure": {".tag": "relocation_error", "relocation_error": exc.error}}
                )
        return self._launch(results)

    def r_files__move_batch__check_v2(self, arg: dict[str, Any], body: bytes) -> Any:
        return self._check(arg)

    def _batch_entries(self, arg: dict[str, Any]) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = arg["entries"]
        if len(entries) > MAX_BATCH_ENTRIES:
            raise ApiFailure({".tag": "other"}, "too many entries", status=400)
        return entries

    def _launch(self, outcome: list[dict[str, Any]] | dict[str, Any]) -> Any:
        """A job id for ``outcome``: the entries' results, or a job status of failure."""
        job = "dbjid:" + secrets.token_urlsafe(16)
        with self._lock:
            self.jobs[job] = [self.job_checks, outcome]
        return {".tag": "async_job_id", "async_job_id": job}

    def _check(self, arg: dict[str, Any]) -> Any:
        with self._lock:
            job = self.jobs.get(arg["async_job_id"])
            if job is None:
                raise ApiFailure({".tag": "invalid_async_job_id"}, "invalid_async_job_id/")
            if job[0] > 0:
                job[0] -= 1
                return {".tag": "in_progress"}
        return {".tag": "complete", "entries": job[1]} if isinstance(job[1], list) else job[1]

    def r_files__download(self, arg: dict[str, Any], body: bytes) -> Any:
        path = self.state.check_path(arg["path"])
        node = self.state.files.get(path.lower())
        if node is None:
            raise _not_found()
        return (self.state.file_meta(node), node.data)


class FileState:
    """A StateStore in a JSON file: what the engine's index gives a driver, across processes
    (tests kill a client mid-upload and resume in another)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, str]:
        try:
            return dict(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return {}

    def get(self, key: str) -> str | None:
        return self._load().get(key)

    def set(self, key: str, value: str) -> None:
        self.path.write_text(json.dumps({**self._load(), key: value}))

    def delete(self, key: str) -> None:
        data = self._load()
        data.pop(key, None)
        self.path.write_text(json.dumps(data))


def _json_response(
    handler: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(body)


def make_handler(fake: FakeDropbox) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        handle_one_request = dropping_partial_requests(BaseHTTPRequestHandler.handle_one_request)

        def do_POST(self) -> None:
            body = read_body(self)
            if self.path == "/oauth2/token":
                form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                status, payload = fake.token_endpoint(form)
                _json_response(self, status, payload)
                return
            if not self.path.startswith("/2/"):
                _json_response(self, 404, {"error": "not found"})
                return
            route = self.path[3:]
            raw_arg = self.headers.get("Dropbox-API-Arg")
            arg_text = raw_arg if raw_arg is not None else (body.decode() if body else "null")
            data = body if raw_arg is not None else b""
            arg = json.loads(arg_text) if arg_text else None
            entry = LoggedRequest(
                route, time.monotonic(), len(data), isinstance(arg, dict) and "content_hash" in arg
            )
            with fake._lock:
                fake.log.append(entry)
            denied = fake.check_auth(self.headers.get("Authorization"))
            if denied is not None:
                entry.status = denied[0]
                _json_response(self, *denied)
                return
            fault = fake._take_fault(route)
            if fault is not None and self._apply_fault(fault, entry):
                return
            try:
                result = fake.handle(route, arg or {}, data)
            except ApiFailure as exc:
                entry.status = exc.status
                if exc.status == 409:
                    _json_response(self, 409, {"error_summary": exc.summary, "error": exc.error})
                else:
                    self._text(exc.status, exc.summary)
                return
            if fault is not None and fault.kind == "drop":
                # the work is done, only the answer is lost
                entry.status = -1
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            entry.status = 200
            if route == "files/download":
                meta, payload = result
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Dropbox-API-Result", json.dumps(meta))
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            _json_response(self, 200, result)

        def _apply_fault(self, fault: Fault, entry: LoggedRequest) -> bool:
            """Answer with the fault; False when the request should still be handled."""
            if fault.kind == "hold":
                # the client is killed meanwhile: the request never lands
                assert fault.release is not None
                fault.release.wait(60)
                entry.status = -1
                self.close_connection = True
                return True
            if fault.kind == "drop":
                return False
            if fault.kind in ("429", "429_write"):
                reason = "too_many_requests" if fault.kind == "429" else "too_many_write_operations"
                entry.status = 429
                _json_response(
                    self,
                    429,
                    {
                        "error_summary": f"{reason}/",
                        "error": {"reason": {".tag": reason}, "retry_after": fault.retry_after},
                    },
                    {"Retry-After": str(fault.retry_after)},
                )
                return True
            status = int(fault.kind)
            entry.status = status
            self._text(status, "Internal Server Error" if status == 500 else "Service Unavailable")
            return True

        def _text(self, status: int, text: str) -> None:
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        # without it every small response waits for the peer's delayed ACK (~40 ms)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (cert.pem, key.pem)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake dropbox")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    os.chmod(key_path, 0o600)
    return cert_path, key_path


@contextmanager
def serve(fake: FakeDropbox, sock: socket.socket, cert: Path, key: Path) -> Iterator[str]:
    """Serve ``fake`` over HTTPS on an already bound, listening ``sock``; yields host:port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    host, port = sock.getsockname()[:2]
    server = _Server(sock.getsockname(), make_handler(fake), bind_and_activate=False)
    server.socket.close()
    server.socket = context.wrap_socket(sock, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
