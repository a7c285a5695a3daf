"""A local fake of Microsoft Graph (OneDrive) and of the Microsoft identity platform.

Covers the calls OneDriveDriver and ``mirror auth onedrive`` make, as Graph documents
them: path addressing (``root:/a/b:``) resolved case-insensitively while names keep
their case, ``conflictBehavior``, refused names (400), upload sessions (fragments in
multiples of 320 KiB, ``nextExpectedRanges``, no Authorization header allowed on the
upload URL), quickXorHash, fileSystemInfo, deletes into a recycle bin, paging with
``@odata.nextLink``, and throttling (429/503 + Retry-After) injected by tests. The login
side serves OpenID discovery, the device-code flow and refresh tokens for msal, and
outages of its token endpoint (503) and access tokens refused before they expire, both
injected by tests.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import itertools
import json
import operator
import re
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from tests.fakes.https import JSONHandler

FRAGMENT_UNIT = 320 * 1024
PAGE = 200
FORBIDDEN = set('"*:<>?/\\|')
RESERVED = (
    {"con", "prn", "aux", "nul", ".lock", "desktop.ini"}
    | {f"com{i}" for i in range(10)}
    | {f"lpt{i}" for i in range(10)}
)


def quickxor_reference(data: bytes) -> str:
    """quickXorHash the way Microsoft's reference implementation states it.

    Independent of the driver's version on purpose (the two must agree): bytes 160 apart
    land on the same bits, so 160-byte rows are XORed word by word first, then the
    reference's three-cell register takes the 160 resulting bytes.
    """
    padded = data + bytes(-len(data) % 160)
    words = memoryview(padded).cast("Q")
    lanes = b"".join(functools.reduce(operator.xor, words[j::20], 0).to_bytes(8, "little") for j in range(20))
    cells = [0, 0, 0]  # 64 + 64 + 32 bits
    shift = 0
    for b in lanes:
        index, bit = divmod(shift, 64)
        width = 32 if index == 2 else 64
        cells[index] ^= (b << bit) & ((1 << width) - 1)
        if bit > width - 8:
            cells[(index + 1) % 3] ^= b >> (width - bit)
        shift = (shift + 11) % 160
    digest = bytearray(
        cells[0].to_bytes(8, "little") + cells[1].to_bytes(8, "little") + cells[2].to_bytes(4, "little")
    )
    for i, lb in enumerate(len(data).to_bytes(8, "little")):
        digest[12 + i] ^= lb
    return base64.b64encode(bytes(digest)).decode()


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Item:
    id: str
    name: str
    parent: str | None
    folder: bool
    content: bytes = b""
    modified: str = field(default_factory=now_iso)
    hash: str = ""


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class GraphState:
    """The fake drive and login service, shared by all handler threads under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids = (f"ITEM{n:06d}" for n in itertools.count(1))
        self.items: dict[str, Item] = {"root": Item("root", "root", None, True)}
        self.recycle_bin: list[Item] = []
        self.sessions: dict[str, dict[str, Any]] = {}
        self.access_tokens: set[str] = set()
        self.refresh_tokens: set[str] = set()
        #: numbers tokens: one revoked is never handed out again
        self.token_numbers = itertools.count(1)
        #: 503s for the next token requests, as in an outage of the login service: the
        #: Retry-After of each (None: none; msal then answers the 503 itself for 60 s)
        self.token_outage: list[int | None] = []
        self.throttle: list[tuple[int, int | None]] = []
        self.requests: list[tuple[str, str, bool]] = []
        self.device_codes: dict[str, int] = {}
        self.base_url = ""
        self.client_id = "11111111-2222-3333-4444-555555555555"

    # -- for tests ------------------------------------------------------------------------
    def revoke_access_token(self, token: str) -> None:
        """Graph stops taking ``token`` before it expires (access revoked early, or the
        client's clock was ahead when it was issued) and answers 401
        InvalidAuthenticationToken, as for an expired one; refresh tokens stay good."""
        with self.lock:
            self.access_tokens.discard(token)

    def find(self, path: str) -> Item | None:
        with self.lock:
            return self._walk(path)

    def children(self, item: Item) -> list[Item]:
        with self.lock:
            return [i for i in self.items.values() if i.parent == item.id]

    # -- the model ------------------------------------------------------------------------
    def _child(self, parent: Item, name: str) -> Item | None:
        # OneDrive ignores case and takes a name's Unicode spellings as one (rclone#8634)
        key = unicodedata.normalize("NFC", name).lower()
        for item in self.items.values():
            if item.parent == parent.id and unicodedata.normalize("NFC", item.name).lower() == key:
                return item
        return None

    def _walk(self, path: str) -> Item | None:
        item: Item | None = self.items["root"]
        for part in [p for p in path.split("/") if p]:
            assert item is not None
            item = self._child(item, part)
            if item is None:
                return None
        return item

    def _folders(self, path: str) -> Item:
        """The folder at ``path``, made with those above it where missing."""
        item = self.items["root"]
        for part in [p for p in path.split("/") if p]:
            child = self._child(item, part)
            if child is None:
                self._check_name(part)
                child = Item(next(self.ids), part, item.id, True)
                self.items[child.id] = child
            elif not child.folder:
                raise GraphError(409, "nameAlreadyExists", "A file with that name exists.")
            item = child
        return item

    def _check_name(self, name: str) -> None:
        if (
            set(name) & FORBIDDEN
            or name != name.strip(" ")
            or name.lower() in RESERVED
            or "_vti_" in name.lower()
            or name.startswith("~$")
            or not name
        ):
            raise GraphError(400, "invalidRequest", "The name contains invalid characters or is reserved.")

    def _path_of(self, item: Item) -> str:
        parts = []
        while item.parent is not None:
            parts.append(item.name)
            item = self.items[item.parent]
        return "/".join(reversed(parts))

    def resource(self, item: Item) -> dict[str, Any]:
        res: dict[str, Any] = {
            "id": item.id,
            "name": item.name,
            "fileSystemInfo": {"lastModifiedDateTime": item.modified},
            "parentReference": {"id": item.parent, "driveId": "drive1"} if item.parent else {"driveId": "drive1"},
        }
        if item.folder:
            res["folder"] = {"childCount": sum(1 for i in self.items.values() if i.parent == item.id)}
            res["size"] = 0
        else:
            res["file"] = {"mimeType": "application/octet-stream", "hashes": {"quickXorHash": item.hash}}
            res["size"] = len(item.content)
        return res

    def _write(self, parent: Item, name: str, content: bytes, modified: str | None) -> Item:
        self._check_name(name)
        if len(self._path_of(parent)) + len(name) + 1 > 400:
            raise GraphError(400, "invalidRequest", "The path is too long.")
        item = self._child(parent, name)
        if item is None:
            item = Item(next(self.ids), name, parent.id, False)
            self.items[item.id] = item
        elif item.folder:
            raise GraphError(409, "nameAlreadyExists", "A folder with that name exists.")
        item.content = content
        item.hash = quickxor_reference(content)
        item.modified = modified or now_iso()
        return item

    def _delete(self, item: Item) -> None:
        for child in [i for i in self.items.values() if i.parent == item.id]:
            self._delete(child)
        self.recycle_bin.append(self.items.pop(item.id))


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


class GraphHandler(JSONHandler):
    state: GraphState

    def dispatch(self, method: str) -> None:
        st = self.state
        raw = self.path.split("?", 1)[0]
        body = self.body()
        has_auth = "Authorization" in self.headers
        with st.lock:
            st.requests.append((method, raw, has_auth))
        if raw.startswith("/common/") or raw.startswith("/consumers/"):
            self.login(raw, body)
            return
        with st.lock:
            throttle = st.throttle.pop(0) if st.throttle else None
        if throttle:
            status, retry = throttle
            code = "activityLimitReached" if status == 429 else "serviceNotAvailable"
            self.send(
                status,
                {"error": {"code": code, "message": "Throttled"}},
                {"Retry-After": str(retry)} if retry is not None else None,
            )
            return
        try:
            if raw.startswith("/upload/"):
                if has_auth:
                    raise GraphError(401, "unauthenticated", "Authorization header not allowed on upload URLs")
                with st.lock:
                    status, payload = self.upload(method, raw.rsplit("/", 1)[1], body)
            else:
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                if token not in st.access_tokens:
                    raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty or invalid.")
                with st.lock:
                    status, payload = self.api(method, raw, body)
        except GraphError as exc:
            self.send(exc.status, {"error": {"code": exc.code, "message": exc.message}})
            return
        self.send(status, payload)

    # -- Graph ----------------------------------------------------------------------------
    def api(self, method: str, raw: str, body: bytes) -> tuple[int, Any]:
        st, q = self.state, self.query
        m = re.fullmatch(r"/v1\.0/(?:me/drive|drives/[^/]+)/(?:root(?::/(.*?):)?|items/([^/]+))(/[A-Za-z]+)?", raw)
        if not m:
            raise GraphError(400, "invalidRequest", f"Unsupported URL {raw}")
        path, item_id, action = m.group(1), m.group(2), (m.group(3) or "")[1:]
        item = st.items.get(unquote(item_id)) if item_id is not None else st._walk(unquote(path or ""))
        if action == "content" and method == "PUT":
            parent_path, _, name = unquote(path or "").rpartition("/")
            # Graph makes the folders a simple upload by path needs (onedrive-api-docs#83);
            # an upload session needs its folder there (#364)
            parent = st._folders(parent_path)
            if item is not None and q.get("@microsoft.graph.conflictBehavior") == "fail":
                raise GraphError(409, "nameAlreadyExists", "exists")
            return (200 if item else 201), st.resource(st._write(parent, name, body, None))
        if action == "createUploadSession" and method == "POST":
            parent_path, _, name = unquote(path or "").rpartition("/")
            parent = st._walk(parent_path)
            if parent is None:
                raise GraphError(404, "itemNotFound", "The parent folder does not exist.")
            st._check_name(name)
            sid = f"u{len(st.sessions) + 1}x{int(time.time() * 1000)}"
            meta = json.loads(body or b"{}").get("item", {})
            st.sessions[sid] = {
                "parent": parent.id,
                "name": name,
                "data": bytearray(),
                "size": None,
                "modified": (meta.get("fileSystemInfo") or {}).get("lastModifiedDateTime"),
            }
            return 200, {
                "uploadUrl": f"{st.base_url}/upload/{sid}",
                "expirationDateTime": "2099-01-01T00:00:00Z",
                "nextExpectedRanges": ["0-"],
            }
        if item is None:
            raise GraphError(404, "itemNotFound", "The resource could not be found.")
        if action == "children" and method == "GET":
            kids = sorted((i for i in st.items.values() if i.parent == item.id), key=lambda i: i.id)
            top = int(q.get("$top") or PAGE)
            start = int(q.get("$skiptoken") or 0)
            result: dict[str, Any] = {"value": [st.resource(i) for i in kids[start : start + min(top, PAGE)]]}
            if start + min(top, PAGE) < len(kids):
                result["@odata.nextLink"] = f"{st.base_url}{raw}?$skiptoken={start + min(top, PAGE)}"
            return 200, result
        if action == "children" and method == "POST":
            meta = json.loads(body)
            st._check_name(meta["name"])
            existing = st._child(item, meta["name"])
            if existing is not None:
                if meta.get("@microsoft.graph.conflictBehavior") == "fail":
                    raise GraphError(409, "nameAlreadyExists", "An item with the same name already exists.")
                return 200, st.resource(existing)
            made = Item(next(st.ids), meta["name"], item.id, True)
            st.items[made.id] = made
            return 201, st.resource(made)
        if action:
            raise GraphError(400, "invalidRequest", f"Unsupported action {action}")
        if method == "GET":
            return 200, st.resource(item)
        if method == "DELETE":
            if item.id == "root":
                raise GraphError(403, "accessDenied", "cannot delete the root")
            st._delete(item)
            return 204, None
        if method == "PATCH":
            meta = json.loads(body or b"{}")
            if "fileSystemInfo" in meta:
                item.modified = meta["fileSystemInfo"]["lastModifiedDateTime"]
            new_parent = st.items.get((meta.get("parentReference") or {}).get("id") or item.parent or "")
            new_name = meta.get("name", item.name)
            if new_parent is None:
                raise GraphError(404, "itemNotFound", "The destination folder does not exist.")
            if new_name != item.name or new_parent.id != item.parent:
                st._check_name(new_name)
                clash = st._child(new_parent, new_name)
                if clash is not None and clash.id != item.id:
                    raise GraphError(409, "nameAlreadyExists", "An item with the same name already exists.")
                item.name, item.parent = new_name, new_parent.id
            return 200, st.resource(item)
        raise GraphError(405, "invalidRequest", method)

    def upload(self, method: str, sid: str, body: bytes) -> tuple[int, Any]:
        st = self.state
        session = st.sessions.get(sid)
        if session is None:
            raise GraphError(404, "itemNotFound", "The upload session was not found.")
        data: bytearray = session["data"]
        if method == "GET":
            return 200, {"nextExpectedRanges": [f"{len(data)}-"], "expirationDateTime": "2099-01-01T00:00:00Z"}
        if method == "DELETE":
            del st.sessions[sid]
            return 204, None
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", self.headers.get("Content-Range", ""))
        if m is None:
            raise GraphError(400, "invalidRange", "Content-Range is required")
        start, end, total = (int(g) for g in m.groups())
        if start != len(data) or end - start + 1 != len(body):
            raise GraphError(416, "invalidRange", f"expected the range starting at {len(data)}")
        if end + 1 < total and len(body) % FRAGMENT_UNIT:
            raise GraphError(400, "invalidRange", "fragments must be a multiple of 320 KiB")
        if len(body) > 60 * 1024 * 1024:
            raise GraphError(413, "requestTooLarge", "fragment over 60 MiB")
        data.extend(body)
        if len(data) < total:
            return 202, {"nextExpectedRanges": [f"{len(data)}-"], "expirationDateTime": "2099-01-01T00:00:00Z"}
        del st.sessions[sid]
        item = st._write(st.items[session["parent"]], session["name"], bytes(data), session["modified"])
        return 201, st.resource(item)

    # -- identity platform ----------------------------------------------------------------
    def login(self, raw: str, body: bytes) -> None:
        st = self.state
        tenant = raw.split("/")[1]
        base = f"{st.base_url}/{tenant}"
        if raw.endswith("/.well-known/openid-configuration"):
            self.send(
                200,
                {
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                    "issuer": f"{st.base_url}/{{tenantid}}/v2.0",
                },
            )
            return
        form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
        if raw.endswith("/devicecode"):
            code = f"dc{len(st.device_codes) + 1}"
            with st.lock:
                st.device_codes[code] = 0
            self.send(
                200,
                {
                    "device_code": code,
                    "user_code": "ABCD-EFGH",
                    "verification_uri": "https://microsoft.com/devicelogin",
                    "expires_in": 900,
                    "interval": 0,
                    "message": "To sign in, open https://microsoft.com/devicelogin and enter the code ABCD-EFGH.",
                },
            )
            return
        if raw.endswith("/token"):
            grant = form.get("grant_type", "")
            with st.lock:
                if st.token_outage:
                    retry = st.token_outage.pop(0)
                    self.send(
                        503,
                        {"error": "temporarily_unavailable", "error_description": "AADSTS90033"},
                        {"Retry-After": str(retry)} if retry is not None else None,
                    )
                    return
                if grant.endswith("device_code"):
                    polls = st.device_codes.get(form.get("device_code", ""), -1)
                    if polls < 0:
                        self.send(400, {"error": "expired_token", "error_description": "AADSTS70020"})
                        return
                    st.device_codes[form["device_code"]] = polls + 1
                    if polls == 0:
                        self.send(400, {"error": "authorization_pending", "error_description": "AADSTS70016"})
                        return
                elif grant != "refresh_token" or form.get("refresh_token") not in st.refresh_tokens:
                    self.send(400, {"error": "invalid_grant", "error_description": "AADSTS70000: revoked"})
                    return
                n = next(st.token_numbers)
                access, refresh = f"access-{n}", f"refresh-{n}"
                st.access_tokens.add(access)
                st.refresh_tokens.add(refresh)
            now = int(time.time())
            id_token = ".".join(
                [
                    _b64({"alg": "none"}),
                    _b64(
                        {
                            "aud": form.get("client_id"),
                            "iss": f"{st.base_url}/tid/v2.0",
                            "tid": "tid",
                            "oid": "oid",
                            "sub": "sub",
                            "preferred_username": "user@example.com",
                            "iat": now,
                            "exp": now + 3600,
                        }
                    ),
                    "",
                ]
            )
            self.send(
                200,
                {
                    "token_type": "Bearer",
                    "scope": "Files.ReadWrite.All",
                    "expires_in": 3600,
                    "access_token": access,
                    "refresh_token": refresh,
                    "id_token": id_token,
                    "client_info": _b64({"uid": "oid", "utid": "tid"}),
                },
            )
            return
        self.send(404, {"error": "not_found"})


def make_handler(state: GraphState) -> type[GraphHandler]:
    return type("BoundGraphHandler", (GraphHandler,), {"state": state})
