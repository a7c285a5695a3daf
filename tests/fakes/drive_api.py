"""A local fake of the Google Drive v3 API: the calls GDriveDriver makes, as Drive answers them.

Faithful where the driver's correctness depends on it: several files may share a name in
one folder (Drive never refuses a duplicate), ``files.create`` always makes a new file,
media updates keep the file id, ``md5Checksum``/``size``/``modifiedTime`` as Drive
reports them (size as a string), only the fields asked for (``fields``), resumable
uploads with 256 KiB chunk granularity and ``308 Range`` answers, trash vs delete,
shared drives (``supportsAllDrives``), ``name =`` in queries matching regardless of case,
OAuth refresh at ``/token`` (its outages, and access tokens refused before they
expire, with the 401 challenge Drive sends), and throttling (429/403 rateLimitExceeded with Retry-After)
injected by tests.
"""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import hashlib
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from tests.fakes.https import ClientGone, JSONHandler

FOLDER = "application/vnd.google-apps.folder"
CHUNK_GRANULARITY = 256 * 1024
DEFAULT_FIELDS = ("kind", "id", "name", "mimeType")
#: what Drive answers with a 401 (a bare "Bearer" is a header httplib2 cannot parse)
GOOGLE_CHALLENGE = 'Bearer realm="https://accounts.google.com/", error="invalid_token"'


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class DriveFile:
    id: str
    name: str
    mimeType: str
    parents: list[str]
    createdTime: str
    modifiedTime: str
    content: bytes = b""
    trashed: bool = False
    driveId: str | None = None

    def resource(self) -> dict[str, Any]:
        res: dict[str, Any] = {
            "kind": "drive#file",
            "id": self.id,
            "name": self.name,
            "mimeType": self.mimeType,
            "parents": list(self.parents),
            "createdTime": self.createdTime,
            "modifiedTime": self.modifiedTime,
            "trashed": self.trashed,
        }
        if self.driveId:
            res["driveId"] = self.driveId
        if self.mimeType != FOLDER:
            res["size"] = str(len(self.content))
            res["md5Checksum"] = hashlib.md5(self.content).hexdigest()
        return res


@dataclass
class UploadSession:
    file_id: str | None
    metadata: dict[str, Any]
    total: int | None
    data: bytearray = field(default_factory=bytearray)


class DriveState:
    """Everything the fake Drive holds; shared by all handler threads under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids = (f"id{n:06d}" for n in itertools.count(1))
        self.files: dict[str, DriveFile] = {}
        self.root_id = "rootfolder"
        self.files[self.root_id] = DriveFile(self.root_id, "My Drive", FOLDER, [], now_rfc3339(), now_rfc3339())
        self.drives: set[str] = set()
        self.sessions: dict[str, UploadSession] = {}
        #: the file each completed upload session made or updated
        self.uploaded: dict[str, str] = {}
        #: the access tokens Drive takes; each token request hands out a new one
        self.tokens: set[str] = set()
        self.token_numbers = itertools.count(1)
        self.refresh_tokens = {"good-refresh-token"}
        #: token requests still to be answered 503, as in an outage of Google's login service
        self.token_outage = 0
        #: (status, reason, retry_after) answered to the next requests, one each
        self.throttle: list[tuple[int, str, int | None]] = []
        self.requests: list[tuple[str, str]] = []
        #: faults for the next data-carrying upload chunks: "reject" (503, nothing stored)
        #: or "lose_answer" (stored, yet answered 503, as when a proxy drops the reply)
        self.chunk_faults: list[str] = []
        #: faults for the next folder creates, the folder made each time: "lose_answer"
        #: (answered 503) or "hang_up" (the connection closed with no answer)
        self.folder_faults: list[str] = []
        #: the same for the next uploads of a file's content (a create, an update, or
        #: the last chunk of a resumable upload), the file stored each time
        self.file_faults: list[str] = []
        #: uploads still to be stored one byte short, as behind a proxy that damages bodies
        self.damaged_uploads = 0
        self.base_url = ""

    # -- helpers for tests ------------------------------------------------------------
    def revoke_access_tokens(self) -> None:
        """Drive stops taking the access tokens handed out so far before they expire
        (access revoked early, a clock put back) and answers 401; refresh tokens stay good."""
        with self.lock:
            self.tokens.clear()

    def new_access_token(self) -> str:
        with self.lock:
            token = f"token-{next(self.token_numbers)}"
            self.tokens.add(token)
            return token

    def add_shared_drive(self, drive_id: str) -> None:
        with self.lock:
            self.drives.add(drive_id)
            self.files[drive_id] = DriveFile(
                drive_id, "Shared", FOLDER, [], now_rfc3339(), now_rfc3339(), driveId=drive_id
            )

    def add_file(
        self, parent: str, name: str, content: bytes = b"", folder: bool = False, created: str | None = None
    ) -> str:
        with self.lock:
            return self._create(
                {
                    "name": name,
                    "parents": [parent],
                    "mimeType": FOLDER if folder else "application/octet-stream",
                    "createdTime": created,
                },
                content,
            ).id

    def children(self, parent: str, name: str | None = None, trashed: bool = False) -> list[DriveFile]:
        with self.lock:
            return [
                f
                for f in self.files.values()
                if parent in f.parents and f.trashed == trashed and (name is None or f.name == name)
            ]

    def find(self, path: str, base: str | None = None) -> DriveFile | None:
        """The single untrashed item at a /-separated path (None if absent, error if ambiguous)."""
        current = self.files[base or self.root_id]
        for part in path.split("/"):
            found = self.children(current.id, part)
            if not found:
                return None
            assert len(found) == 1, f"{len(found)} items named {part!r}"
            current = found[0]
        return current

    def trash(self, file_id: str) -> None:
        """Someone deletes the item in Drive's web app: it goes to the trash."""
        with self.lock:
            self._trash(self.get(file_id), True)

    def count_requests(self, method: str, prefix: str) -> int:
        with self.lock:
            return sum(1 for m, p in self.requests if m == method and p.startswith(prefix))

    # -- the model --------------------------------------------------------------------
    def resolve_id(self, file_id: str) -> str:
        return self.root_id if file_id == "root" else file_id

    def _create(self, meta: dict[str, Any], content: bytes) -> DriveFile:
        parents = [self.resolve_id(p) for p in meta.get("parents") or [self.root_id]]
        parent = self.files.get(parents[0])
        if parent is None or parent.mimeType != FOLDER:
            raise ApiError(404, "notFound", f"File not found: {parents[0]}.")
        stamp = now_rfc3339()
        item = DriveFile(
            id=next(self.ids),
            name=meta.get("name") or "Untitled",
            mimeType=meta.get("mimeType") or "application/octet-stream",
            parents=parents,
            createdTime=meta.get("createdTime") or stamp,
            modifiedTime=meta.get("modifiedTime") or stamp,
            content=content,
            # made in a trashed folder, it is in the trash with it
            trashed=parent.trashed,
            driveId=parent.driveId,
        )
        self.files[item.id] = item
        return item

    def _update(
        self, file_id: str, meta: dict[str, Any], query: dict[str, str], content: bytes | None
    ) -> DriveFile:
        item = self.get(file_id)
        if "name" in meta:
            item.name = meta["name"]
        if "trashed" in meta:
            self._trash(item, bool(meta["trashed"]))
        if query.get("addParents") or query.get("removeParents"):
            removed = {self.resolve_id(p) for p in query.get("removeParents", "").split(",") if p}
            added = [self.resolve_id(p) for p in query.get("addParents", "").split(",") if p]
            for pid in added:
                if pid not in self.files:
                    raise ApiError(404, "notFound", f"File not found: {pid}.")
            item.parents = [p for p in item.parents if p not in removed] + added
        if content is not None:
            item.content = content
        item.modifiedTime = meta.get("modifiedTime") or (
            now_rfc3339() if content is not None else item.modifiedTime
        )
        return item

    def _trash(self, item: DriveFile, trashed: bool) -> None:
        """Drive trashes, and restores, what a folder holds with the folder."""
        item.trashed = trashed
        for child in [f for f in self.files.values() if item.id in f.parents]:
            self._trash(child, trashed)

    def arrived(self, content: bytes) -> bytes:
        """The bytes of an upload as they reach the store."""
        if self.damaged_uploads and content:
            self.damaged_uploads -= 1
            return content[:-1]
        return content

    def get(self, file_id: str) -> DriveFile:
        item = self.files.get(self.resolve_id(file_id))
        if item is None:
            raise ApiError(404, "notFound", f"File not found: {file_id}.")
        return item

    def _delete(self, item: DriveFile) -> None:
        for child in [f for f in self.files.values() if item.id in f.parents]:
            self._delete(child)
        del self.files[item.id]


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


# -- the q language (the subset the driver uses) ---------------------------------------------
_TOKEN = re.compile(r"\s*('(?:[^'\\]|\\.)*'|\(|\)|!=|=|[A-Za-z]+)")


def _tokens(q: str) -> list[str]:
    result, pos = [], 0
    while pos < len(q):
        m = _TOKEN.match(q, pos)
        if not m:
            if q[pos:].strip() == "":
                break
            raise ApiError(400, "invalid", f"Invalid Value: q at {pos}")
        result.append(m.group(1))
        pos = m.end()
    return result


def _literal(tok: str) -> str:
    return re.sub(r"\\(.)", r"\1", tok[1:-1])


def compile_query(q: str) -> Any:
    """A predicate for q: terms joined by and/or, parentheses, in parents, =, !=."""
    toks = _tokens(q)
    pos = 0

    def term() -> Any:
        nonlocal pos
        tok = toks[pos]
        if tok == "(":
            pos += 1
            pred = expr()
            pos += 1  # ")"
            return pred
        if tok.startswith("'") and toks[pos + 1] == "in":
            value = _literal(tok)
            pos += 3  # 'x' in parents
            return lambda f, st: st.resolve_id(value) in f.parents
        key, op, raw = tok, toks[pos + 1], toks[pos + 2]
        pos += 3
        value: Any = _literal(raw) if raw.startswith("'") else raw == "true"
        if key not in ("name", "mimeType", "trashed"):
            raise ApiError(400, "invalid", f"Invalid Value: q field {key}")
        if op not in ("=", "!="):
            # contains, <, > and the rest mean other things on Drive; the driver uses none
            raise ApiError(400, "invalid", f"Invalid Value: q operator {op} (not in this fake)")
        if key == "name":
            # Drive compares names ignoring case: name = 'a.pdf' also finds A.PDF
            value = value.casefold()
            if op == "=":
                return lambda f, st: f.name.casefold() == value
            return lambda f, st: f.name.casefold() != value
        if op == "=":
            return lambda f, st: getattr(f, key) == value
        return lambda f, st: getattr(f, key) != value

    def expr() -> Any:
        nonlocal pos
        preds = [term()]
        ops = []
        while pos < len(toks) and toks[pos] in ("and", "or"):
            ops.append(toks[pos])
            pos += 1
            preds.append(term())
        if "or" in ops and "and" in ops:
            raise ApiError(400, "invalid", "Invalid Value: mixed and/or without parentheses")
        if "or" in ops:
            return lambda f, st: any(p(f, st) for p in preds)
        return lambda f, st: all(p(f, st) for p in preds)

    return expr()


def select_fields(resource: dict[str, Any], spec: str | None) -> dict[str, Any]:
    wanted = [s.strip() for s in spec.split(",")] if spec else list(DEFAULT_FIELDS)
    if "*" in wanted:
        return resource
    return {k: v for k, v in resource.items() if k in wanted}


def list_fields(spec: str | None) -> tuple[str | None, bool]:
    """(fields of each file, whether nextPageToken was asked) from a files.list spec."""
    if not spec:
        return None, True
    m = re.search(r"files\(([^)]*)\)", spec)
    return (m.group(1) if m else None), "nextPageToken" in spec


class DriveHandler(JSONHandler):
    state: DriveState

    def fail(self, status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> None:
        self.send(
            status,
            {
                "error": {
                    "code": status,
                    "message": message,
                    "errors": [
                        {
                            "domain": "usageLimits" if status in (403, 429) else "global",
                            "reason": reason,
                            "message": message,
                        }
                    ],
                }
            },
            headers,
        )

    def dispatch(self, method: str) -> None:
        st = self.state
        route = self.route
        try:
            body = self.body()
        except ClientGone:
            with st.lock:
                st.requests.append((f"{method}, cut short", route))
            raise
        with st.lock:
            st.requests.append((method, route))
            throttle = st.throttle.pop(0) if st.throttle and route != "/token" else None
        if route == "/token":
            self.token(body)
            return
        if throttle:
            status, reason, retry = throttle
            self.fail(
                status, reason, "Rate Limit Exceeded", {"Retry-After": str(retry)} if retry is not None else None
            )
            return
        auth = self.headers.get("Authorization", "")
        if not route.startswith("/upload/session/") and auth.removeprefix("Bearer ") not in st.tokens:
            self.fail(401, "authError", "Invalid Credentials", {"WWW-Authenticate": GOOGLE_CHALLENGE})
            return
        try:
            with st.lock:
                status, payload, headers = self.api(method, route, body)
        except ApiError as exc:
            self.fail(exc.status, exc.reason, exc.message)
            return
        self.send(status, payload, headers)

    def token(self, body: bytes) -> None:
        with self.state.lock:
            down = self.state.token_outage > 0
            if down:
                self.state.token_outage -= 1
        if down:
            self.send(503, {"error": "internal_failure", "error_description": "Backend Error"})
            return
        form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
        grant = form.get("grant_type")
        if grant == "authorization_code" and form.get("code") == "good-code":
            self.send(
                200,
                {
                    "access_token": self.state.new_access_token(),
                    "expires_in": 3599,
                    "token_type": "Bearer",
                    "refresh_token": "good-refresh-token",
                    "scope": "https://www.googleapis.com/auth/drive",
                },
            )
            return
        ok = (grant == "refresh_token" and form.get("refresh_token") in self.state.refresh_tokens) or (
            grant == "urn:ietf:params:oauth:grant-type:jwt-bearer" and form.get("assertion")
        )
        if not ok:
            self.send(400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
            return
        self.send(
            200,
            {
                "access_token": self.state.new_access_token(),
                "expires_in": 3599,
                "token_type": "Bearer",
                "scope": "https://www.googleapis.com/auth/drive",
            },
        )

    def api(self, method: str, route: str, body: bytes) -> tuple[int, Any, dict[str, str] | None]:
        st, q = self.state, self.query
        if route.startswith("/upload/session/"):
            return self.upload_chunk(route.rsplit("/", 1)[1], body)
        m = re.fullmatch(r"(/upload)?/drive/v3/files(?:/([^/]+))?", route)
        if not m:
            raise ApiError(404, "notFound", f"no route {route}")
        upload, file_id = bool(m.group(1)), m.group(2)
        if method == "GET" and file_id is None:
            return 200, self.list_files(q), None
        if method == "GET":
            item = st.get(file_id)
            return 200, select_fields(item.resource(), q.get("fields")), None
        if method == "DELETE":
            assert file_id is not None
            st._delete(st.get(file_id))
            return 204, None, None
        if method in ("POST", "PATCH"):
            if q.get("uploadType") == "resumable":
                sid = f"s{len(st.sessions) + 1}"
                total = self.headers.get("X-Upload-Content-Length")
                st.sessions[sid] = UploadSession(file_id, json.loads(body or b"{}"), int(total) if total else None)
                return 200, None, {"Location": f"{st.base_url}/upload/session/{sid}"}
            meta, content = self.media(body) if upload else (json.loads(body or b"{}"), None)
            content = None if content is None else st.arrived(content)
            if method == "POST":
                item = st._create(meta, content or b"")
                faults = st.folder_faults if item.mimeType == FOLDER else st.file_faults
            else:
                assert file_id is not None
                item = st._update(file_id, meta, q, content)
                faults = st.file_faults if content is not None else []
            _answer_lost(faults)
            return 200, select_fields(item.resource(), q.get("fields")), None
        raise ApiError(405, "methodNotAllowed", method)

    def media(self, body: bytes) -> tuple[dict[str, Any], bytes]:
        ctype = self.headers.get("Content-Type", "")
        if self.query.get("uploadType") == "media":
            return {}, body
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body
        )
        parts = list(msg.iter_parts())
        meta = json.loads(parts[0].get_payload(decode=True) or b"{}")
        return meta, parts[1].get_payload(decode=True) or b""

    def list_files(self, q: dict[str, str]) -> dict[str, Any]:
        st = self.state
        if (q.get("corpora") == "drive" or q.get("driveId")) and (
            q.get("supportsAllDrives") != "true" or q.get("includeItemsFromAllDrives") != "true"
        ):
            raise ApiError(
                403, "teamDrivesParameterRequired", "includeItemsFromAllDrives and supportsAllDrives must be set"
            )
        pred = compile_query(q["q"]) if q.get("q") else (lambda f, s: True)
        matches = sorted((f for f in st.files.values() if f.id != st.root_id and pred(f, st)), key=lambda f: f.id)
        if q.get("includeItemsFromAllDrives") != "true":
            matches = [f for f in matches if f.driveId is None]
        size = min(int(q.get("pageSize") or 100), 1000)
        start = int(q.get("pageToken") or 0)
        page = matches[start : start + size]
        file_fields, want_token = list_fields(q.get("fields"))
        result: dict[str, Any] = {"files": [select_fields(f.resource(), file_fields) for f in page]}
        if start + size < len(matches) and want_token:
            result["nextPageToken"] = str(start + size)
        return result

    def upload_chunk(self, sid: str, body: bytes) -> tuple[int, Any, dict[str, str] | None]:
        st = self.state
        session = st.sessions.get(sid)
        if session is None and sid in st.uploaded:
            # Drive answers a session's status query with the file once the upload is complete
            return 200, st.get(st.uploaded[sid]).resource(), None
        if session is None:
            raise ApiError(404, "notFound", "upload session not found")
        crange = self.headers.get("Content-Range", "")
        m = re.fullmatch(r"bytes (\*|(\d+)-(\d+))/(\*|\d+)", crange)
        if m is None and body:
            raise ApiError(400, "badContentRange", f"bad Content-Range {crange!r}")
        total = None if m is None or m.group(4) == "*" else int(m.group(4))
        if m is not None and m.group(2) is not None:
            start, end = int(m.group(2)), int(m.group(3))
            if start != len(session.data) or end - start + 1 != len(body):
                raise ApiError(400, "badContentRange", "chunk does not continue the upload")
            if total is None and len(body) % CHUNK_GRANULARITY:
                raise ApiError(400, "badContentRange", "chunk size must be a multiple of 256 KiB")
            fault = st.chunk_faults.pop(0) if st.chunk_faults else None
            if fault != "reject":
                session.data.extend(body)
            if fault:
                raise ApiError(503, "backendError", "Backend Error")
        elif m is None:
            total = 0
        if total is not None and len(session.data) == total:
            content = st.arrived(bytes(session.data))
            del st.sessions[sid]
            if session.file_id is None:
                item = st._create(session.metadata, content)
            else:
                item = st._update(session.file_id, session.metadata, {}, content)
            st.uploaded[sid] = item.id
            _answer_lost(st.file_faults)
            return 200, item.resource(), None
        headers = {"Range": f"bytes=0-{len(session.data) - 1}"} if session.data else {}
        return 308, None, headers


def _answer_lost(faults: list[str]) -> None:
    """The next of ``faults``, once the work is done: the connection closed with no
    answer ("hang_up"), or a 503 in place of the answer ("lose_answer")."""
    fault = faults.pop(0) if faults else None
    if fault == "hang_up":
        raise ClientGone
    if fault:
        raise ApiError(503, "backendError", "Backend Error")


def make_handler(state: DriveState) -> type[DriveHandler]:
    return type("BoundDriveHandler", (DriveHandler,), {"state": state})
