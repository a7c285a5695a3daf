"""The ``dropbox`` backend: Dropbox API v2 through the official SDK, with our own write path.

dropboxdrivefs is kept for what it does right (metadata dicts with ``content_hash`` and
``client_modified``); listing, lookups, folders and deletes are re-done here so that they
raise what fsspec expects (FileNotFoundError instead of a log line or None), and the
whole upload path is ours, because the library's commits a truncated file for anything
of 4 MiB or more (see docs/dropbox.md):

- a file up to ``chunk_size`` is read once and committed whole; when the driver is idle
  that is one ``files/upload``, otherwise it joins a batch: one ``start_batch`` + one
  ``append_batch`` carry the bytes of every waiting file and one ``finish_batch_v2``
  commits them together, so thousands of invoices cost a few requests per batch and no
  ``too_many_write_operations``;
- a larger file goes through its own upload session in ``chunk_size`` pieces (at most
  148 MiB, under Dropbox's 150 MiB per request), remembers session id and offset in the
  driver's StateStore after every piece, and resumes there after a crash; its commit
  joins the same serialized batches;
- every commit is ``overwrite`` without autorename, carries ``client_modified`` from the
  local mtime, and is checked against the local content hash (the SDK also sends a
  ``content_hash`` with every request body, which Dropbox verifies).

Retries are ours as well (the SDK's are switched off): 429 of either kind waits what
Retry-After says, 5xx and dropped connections back off exponentially, both bounded, and
what is left is classified for the engine.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import platformdirs

from mirror.driver import (
    Capabilities,
    Driver,
    ReadToCommit,
    RemoteEntry,
    info_mtime_ns,
)
from mirror.errors import ConfigError, FatalError, ItemError, MirrorError, TargetFull, TransientError
from mirror.hashing import DROPBOX_BLOCK, HashKind, dropbox_content_hash
from mirror.private_files import read_private_json

if TYPE_CHECKING:
    # the SDK is imported on the first connection, with backends.dropbox_sdk
    import dropbox.files as dbf

    from .dropbox_sdk import DropboxFS

MiB = 1024 * 1024
#: Dropbox refuses request bodies over 150 MiB; keep chunks a multiple of its 4 MiB block
MAX_CHUNK = 148 * MiB
DEFAULT_CHUNK = 16 * MiB
#: upload sessions live 7 days; older saved sessions are not worth a failed request
SESSION_MAX_AGE_S = 6 * 24 * 3600
#: names Dropbox refuses or silently never syncs (compared in lower case)
REFUSED_NAMES = frozenset({"desktop.ini", "thumbs.db", ".ds_store", "icon\r", ".dropbox", ".dropbox.attr"})
MAX_BATCH = 1000
#: how long a background batch job (moves, deletions) may run before its items are retried
JOB_TIMEOUT_S = 300.0
STATE_PREFIX = "dropbox.upload:"
OPTIONS = frozenset(
    {
        "token",
        "refresh_token",
        "app_key",
        "app_secret",
        "token_file",
        "chunk_size",
        "retries",
        "retry_backoff",
    }
)
RELOGIN = "run `mirror auth dropbox --app-key KEY` to log in again"

T = TypeVar("T")


def api_path(path: str) -> str:
    """Dropbox's spelling of a path: ``""`` for the root, else ``/a/b``."""
    path = path.strip("/")
    return "/" + path if path else ""


def error_tags(error: Any) -> list[str]:
    """The chain of union tags in a Dropbox error, e.g. ``["path", "conflict", "file"]``."""
    tags: list[str] = []
    while error is not None:
        tag = getattr(error, "_tag", None)
        if tag is None:
            reason = getattr(error, "reason", None)  # UploadWriteFailed wraps a WriteError
            error = reason if reason is not None and reason is not error else None
            continue
        tags.append(tag)
        error = getattr(error, "_value", None)
    return tags


def check_name(rel: str) -> None:
    """Refuse, as a per-item error, the names Dropbox would refuse or silently ignore."""
    for part in rel.split("/"):
        low = part.lower()
        if low in REFUSED_NAMES or low.startswith(".dropbox"):
            raise ItemError(f"Dropbox does not store files named {part!r} (it reserves or ignores them): {rel}")
        if part != part.rstrip(" ."):
            raise ItemError(f"Dropbox refuses names ending in a space or a dot: {rel!r}")
        if len(part) > 255:
            raise ItemError(f"Dropbox refuses names longer than 255 characters: {rel}")
        if "\\" in part:
            raise ItemError(f"Dropbox refuses backslashes in names: {rel!r}")


#: endpoint error tags, most serious first, and what they mean for mirror
API_ERRORS: tuple[tuple[frozenset[str], Callable[[str, list[str]], MirrorError]], ...] = (
    (
        frozenset({"insufficient_space", "team_folder_insufficient_space", "member_folder_insufficient_space"}),
        lambda path, tags: TargetFull("the Dropbox account is full: free some space or upgrade, then run again"),
    ),
    (
        frozenset({"upload_traffic_limit_reached"}),
        lambda path, tags: FatalError("the Dropbox team has used up its data transport limit for this month"),
    ),
    (
        frozenset({"too_many_write_operations"}),
        lambda path, tags: TransientError("Dropbox is busy with other writes (too_many_write_operations)", 1.0),
    ),
    (
        frozenset({"content_hash_mismatch"}),
        lambda path, tags: TransientError(f"data for {path} was corrupted in transit (content_hash_mismatch)"),
    ),
    (
        frozenset({"disallowed_name"}),
        lambda path, tags: ItemError(f"Dropbox refuses the name of {path} (a name it reserves or ignores)"),
    ),
    (
        frozenset({"malformed_path"}),
        lambda path, tags: ItemError(
            f"Dropbox refuses the path {path!r} (trailing space or dot, too long, or a bad character)"
        ),
    ),
    (
        frozenset({"conflict"}),
        # a folder where a file goes is said as every backend says it; never replaced
        lambda path, tags: ItemError(
            f"{path} on the target is a folder where a file goes"
            if tags[-1] == "folder"
            else f"{path} conflicts with an existing {tags[-1].replace('_', ' ')} on Dropbox "
            "(Dropbox compares names ignoring case)"
        ),
    ),
    (
        frozenset({"no_write_permission", "access_restricted"}),
        lambda path, tags: ItemError(f"no permission to write {path} on Dropbox (a read-only shared folder?)"),
    ),
)


def tagged_error(tags: list[str], path: str) -> MirrorError:
    """A Dropbox error union's chain of tags as one of mirror's errors, with the fix."""
    for wanted, make in API_ERRORS:
        if wanted & set(tags):
            return make(path, tags)
    return ItemError(f"Dropbox refused {path}: {'/'.join(tags) or 'unknown error'}")


class DropboxDriver(Driver):
    capabilities = Capabilities(
        case_sensitive=False,
        hash_kind=HashKind.DROPBOX,
        mtime_settable=True,
        mtime_precision_ns=1_000_000_000,
        atomic_put=True,
        atomic_rename=False,
        server_side_move=True,
        forbidden_names=REFUSED_NAMES,
        forbidden_prefixes=frozenset({".dropbox"}),
        forbidden_chars="\\",
        forbidden_trailing=" .",
        max_name_bytes=255,
    )
    #: batches hold one file per worker thread: more workers, fewer commits
    default_concurrency = 16
    thread_safe = True
    #: moves and deletions go up to 64 to a batch route (files/move_batch_v2,
    #: files/delete_batch): each single call takes the account's write lock, and many at
    #: once get too_many_write_operations (uploads are batched by the Batcher instead)
    batch_files = 64

    def __init__(
        self,
        fs: DropboxFS,
        root: str,
        caps: Capabilities | None = None,
        chunk_size: int = DEFAULT_CHUNK,
    ) -> None:
        super().__init__(fs, root, caps)
        from .dropbox_sdk import Batcher

        self._dropbox_fs = fs
        self.chunk_size = chunk_size
        self.batcher = Batcher(fs, max_body=chunk_size)

    @property
    def fs(self) -> DropboxFS:
        return self._dropbox_fs

    # -- construction ---------------------------------------------------------------
    @classmethod
    def check_target(cls, url: str, options: Mapping[str, Any]) -> None:
        unknown = set(options) - OPTIONS
        if unknown:
            raise ConfigError(
                f"unknown Dropbox option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(OPTIONS))}"
            )
        chunk_size = int(options.get("chunk_size", DEFAULT_CHUNK))
        if chunk_size % DROPBOX_BLOCK or not DROPBOX_BLOCK <= chunk_size <= MAX_CHUNK:
            raise ConfigError("Dropbox chunk_size must be a multiple of 4 MiB between 4 MiB and 148 MiB")
        credentials(options)  # a login that is missing or readable by others stops the run

    @classmethod
    def connect(cls, url: str, options: Mapping[str, Any], caps: Capabilities | None = None) -> Driver:
        cls.check_target(url, options)
        chunk_size = int(options.get("chunk_size", DEFAULT_CHUNK))
        import dropbox

        from .dropbox_sdk import Caller, DropboxFS

        client = dropbox.Dropbox(
            **credentials(options),
            max_retries_on_error=0,
            max_retries_on_rate_limit=0,
            session=dropbox.create_session(max_connections=64),
            user_agent="fsspec-mirror",
        )
        call = Caller(client, int(options.get("retries", 6)), float(options.get("retry_backoff", 1.0)))
        root = "/" + url.split("://", 1)[-1].strip("/")
        return cls(DropboxFS(call), root, caps, chunk_size)

    @classmethod
    def place(cls, url: str, options: Mapping[str, Any]) -> tuple[str, str, str]:
        # what the generic driver tells, every option counting (the login picks the
        # account), without asking fsspec for dropboxdrivefs's class: that imports the SDK
        host, _, path = url.partition("://")[2].partition("/")
        return host, path, repr(sorted(options.items()))

    # -- paths ----------------------------------------------------------------------
    def relative(self, name: str) -> str | None:
        # Dropbox answers with the case it stored, which may differ from the configured root
        root = self.root.rstrip("/")
        if not name.lower().startswith(root.lower() + "/"):
            return None
        return name[len(root) + 1 :]

    # -- reading --------------------------------------------------------------------
    def list(self) -> dict[str, RemoteEntry]:
        try:
            found = self.fs.ls(self.root, detail=True, recursive=True)
        except (FileNotFoundError, NotADirectoryError):
            return {}
        result: dict[str, RemoteEntry] = {}
        for info in found:
            rel = self.relative(info["name"])
            if rel is not None and info.get("type") == "file":
                result[rel] = self.entry(rel, info)
        return result

    def entry(self, rel: str, info: Mapping[str, Any]) -> RemoteEntry:
        return RemoteEntry(
            path=rel,
            size=int(info.get("size") or 0),
            mtime_ns=info_mtime_ns({"client_modified": info.get("client_modified")}),
            hash=info.get("content_hash"),
        )

    # -- writing --------------------------------------------------------------------
    def put(self, local_path: str, rel: str, mtime_ns: int) -> RemoteEntry:
        import dropbox.files as dbf
        from dropbox.exceptions import ApiError

        from .dropbox_sdk import api_error

        check_name(rel)
        target = api_path(self.full(rel))
        commit = dbf.CommitInfo(
            path=target,
            mode=dbf.WriteMode.overwrite,
            autorename=False,
            client_modified=dt.datetime.fromtimestamp(mtime_ns // 1_000_000_000, dt.UTC).replace(tzinfo=None),
            mute=True,
        )
        size = os.stat(local_path).st_size
        try:
            if size > self.chunk_size:
                expected = dropbox_content_hash(local_path)
                meta = self._put_large(local_path, commit, size, mtime_ns, expected)
            else:
                meta, expected = self._put_small(local_path, commit)
        except ApiError as exc:
            raise api_error(exc, rel) from None
        if meta.content_hash != expected:
            raise ItemError(f"{rel} changed while it was uploaded; Dropbox holds another version")
        return RemoteEntry(rel, meta.size, info_mtime_ns({"client_modified": meta.client_modified}), expected)

    def _put_small(self, local_path: str, commit: dbf.CommitInfo) -> tuple[dbf.FileMetadata, str]:
        from .dropbox_sdk import Pending

        with self.batcher.alone() as alone:
            if alone:
                with open(local_path, "rb") as f:
                    data = f.read()
                meta = self.fs.call(
                    self.fs.dbx.files_upload,
                    data,
                    commit.path,
                    mode=commit.mode,
                    autorename=False,
                    client_modified=commit.client_modified,
                    mute=True,
                )
                return meta, _hash_bytes(data)
        with self.batcher.registered():
            with open(local_path, "rb") as f:
                data = f.read()
            expected = _hash_bytes(data)
            return self.batcher.submit(Pending(commit, expected, data=data)), expected

    def _put_large(
        self, local_path: str, commit: dbf.CommitInfo, size: int, mtime_ns: int, expected: str
    ) -> dbf.FileMetadata:
        import dropbox.files as dbf
        from dropbox.exceptions import ApiError

        from .dropbox_sdk import Pending

        key = STATE_PREFIX + commit.path.lower()
        session_id, offset = self._saved_session(key, size, mtime_ns)
        restarted = False
        with ReadToCommit(local_path, size) as f:
            while session_id is None or offset < size:
                f.seek(offset)
                data = f.read(self.chunk_size)
                if len(data) < min(self.chunk_size, size - offset):
                    # cut shorter since the upload began: empty appends never reached its end
                    self.state.delete(key)
                    raise ItemError(f"{commit.path} got shorter while it was sent")
                last = offset + len(data) >= size
                try:
                    if session_id is None:
                        session_id = self.fs.call(self.fs.dbx.files_upload_session_start, data).session_id
                    else:
                        cursor = dbf.UploadSessionCursor(session_id, offset)
                        self.fs.call(self.fs.dbx.files_upload_session_append_v2, data, cursor, close=last)
                except ApiError as exc:
                    failure, tags = exc.error, error_tags(exc.error)
                    if session_id is not None and "incorrect_offset" in tags:
                        # a piece landed but its answer was lost (or we crashed right after it)
                        offset = failure.get_incorrect_offset().correct_offset
                        self._save_session(key, session_id, offset, size, mtime_ns)
                        continue
                    if session_id is not None and "not_found" in tags and not restarted:
                        # the saved session expired or is unknown: start over, once
                        self.state.delete(key)
                        session_id, offset, restarted = None, 0, True
                        continue
                    raise
                offset += len(data)
                assert session_id is not None
                self._save_session(key, session_id, offset, size, mtime_ns)
        with self.batcher.registered():
            try:
                meta = self.batcher.submit(Pending(commit, expected, session_id=session_id, offset=offset))
            except BaseException as exc:
                # a closed session can still be committed later, unless the commit itself was refused
                if not isinstance(self.classify(exc), TransientError):
                    self.state.delete(key)
                raise
        self.state.delete(key)
        return meta

    def _saved_session(self, key: str, size: int, mtime_ns: int) -> tuple[str | None, int]:
        raw = self.state.get(key)
        if raw is None:
            return None, 0
        try:
            saved = json.loads(raw)
            fresh = time.time() - float(saved["started"]) < SESSION_MAX_AGE_S
            if fresh and saved["size"] == size and saved["mtime_ns"] == mtime_ns:
                return str(saved["session_id"]), int(saved["offset"])
        except (ValueError, KeyError, TypeError):
            pass
        self.state.delete(key)
        return None, 0

    def _save_session(self, key: str, session_id: str, offset: int, size: int, mtime_ns: int) -> None:
        raw = self.state.get(key)
        started = json.loads(raw).get("started", time.time()) if raw else time.time()
        record = {
            "session_id": session_id,
            "offset": offset,
            "size": size,
            "mtime_ns": mtime_ns,
            "started": started,
        }
        self.state.set(key, json.dumps(record))

    def set_mtime(self, rel: str, mtime_ns: int) -> None:
        raise ItemError(
            f"Dropbox cannot change the time of {rel} without uploading it again (put sets client_modified)"
        )

    def move(self, src: str, dst: str) -> None:
        check_name(dst)
        try:
            self.fs.mv(self.full(src), self.full(dst))
        except ItemError:
            if src.lower() == dst.lower() or self.stat(dst) is None:
                raise
            # Dropbox never moves over an existing file: replace it explicitly
            self.fs.rm_file(self.full(dst))
            self.fs.mv(self.full(src), self.full(dst))

    def delete(self, rel: str) -> None:
        self._not_a_folder(rel)
        self.fs.rm_file(self.full(rel))

    def _not_a_folder(self, rel: str) -> None:
        """ItemError when ``rel`` is a folder (someone's, where mirror's file was): one
        ``files/get_metadata``. Dropbox deletes a folder with all in it, and has no delete
        of a file alone (``parent_rev`` would do, but mirror keeps no file's rev); what
        comes between the two requests is the small race of :meth:`remove_dir_if_empty`."""
        try:
            there = self.fs.info(self.full(rel))
        except FileNotFoundError:
            return  # gone already: the delete says so, as before
        if there.get("type") == "directory":
            raise ItemError(
                f"{self.full(rel)} on the target is a folder, not the file mirror put there; it is not deleted"
            )

    def move_batch(self, moves: Sequence[tuple[str, str]]) -> Sequence[MirrorError | None]:
        import dropbox.files as dbf

        # a name Dropbox would refuse is not sent
        outcomes, sent = _sendable(moves, lambda move: check_name(move[1]))
        if not sent:
            return outcomes
        entries = [
            dbf.RelocationPath(api_path(self.full(moves[i][0])), api_path(self.full(moves[i][1]))) for i in sent
        ]
        started = self.fs.call(self.fs.dbx.files_move_batch_v2, entries, autorename=False)
        for i, result in zip(sent, self._results(started, self.fs.dbx.files_move_batch_check_v2), strict=True):
            outcomes[i] = _entry_outcome(result, moves[i][1])
        return outcomes

    def delete_batch(self, rels: Sequence[str]) -> Sequence[MirrorError | None]:
        import dropbox.files as dbf

        # a folder there is not sent: the batch would take it whole
        outcomes, sent = _sendable(rels, self._not_a_folder)
        if not sent:
            return outcomes
        started = self.fs.call(
            self.fs.dbx.files_delete_batch, [dbf.DeleteArg(api_path(self.full(rels[i]))) for i in sent]
        )
        results = self._results(started, self.fs.dbx.files_delete_batch_check)
        for i, result in zip(sent, results, strict=True):
            outcomes[i] = _entry_outcome(result, rels[i])
        return outcomes

    def _results(self, started: Any, check: Callable[[str], Any]) -> Sequence[Any]:
        """The result of each entry of a batch route, at its place as Dropbox promises:
        at once, or once the background job it started has ended."""
        done = started.get_complete() if started.is_complete() else self._job(check, started.get_async_job_id())
        return list(done.entries)

    def _job(self, check: Callable[[str], Any], job: str) -> Any:
        """The result of a batch job Dropbox runs in the background, polled until it ends
        (a job that failed whole fails every item)."""
        wait, deadline = 0.05, time.monotonic() + JOB_TIMEOUT_S
        while True:
            status = self.fs.call(check, job)
            if status.is_complete():
                return status.get_complete()
            if not status.is_in_progress():  # failed whole: too_many_write_operations, other
                raise tagged_error(error_tags(status), "a batch")
            if time.monotonic() > deadline:
                raise TransientError(f"a Dropbox batch job did not end within {JOB_TIMEOUT_S:.0f} s")
            time.sleep(wait)
            wait = min(wait * 2, 1.0)

    def makedirs(self, rel_dir: str) -> None:
        if rel_dir == "" and self.root == "/":
            return
        path = self.root if rel_dir == "" else self.full(rel_dir)
        if rel_dir:
            check_name(rel_dir)
        self.fs.makedirs(path, exist_ok=True)

    def root_lost(self, known: str) -> bool:
        # uploads make missing folders out of sight, so no answer tells of a folder made
        # again (root_remade stays False): asked of a file mirror put there long ago
        return self.stat(known) is None

    def remove_dir_if_empty(self, rel_dir: str) -> bool:
        # Dropbox deletes folders recursively: check first, and accept the small race
        try:
            self.fs.rmdir(self.full(rel_dir))
        except OSError:
            return False
        return True

    # -- errors -----------------------------------------------------------------------
    def classify(self, exc: BaseException) -> MirrorError:
        from .dropbox_sdk import classify_dropbox

        return classify_dropbox(exc)

    def close(self) -> None:
        self.fs.dbx.close()


def _sendable(items: Sequence[T], check: Callable[[T], None]) -> tuple[list[MirrorError | None], list[int]]:
    """The outcome of each item so far (the ItemError ``check`` raised, else None) and
    the places of the items to send in a batch route: those ``check`` let through."""
    outcomes: list[MirrorError | None] = [None] * len(items)
    sent: list[int] = []
    for i, item in enumerate(items):
        try:
            check(item)
        except ItemError as exc:
            outcomes[i] = exc
            continue
        sent.append(i)
    return outcomes, sent


def _entry_outcome(result: Any, path: str) -> MirrorError | None:
    """One entry's result of a batch route: None, or why Dropbox refused it."""
    return tagged_error(error_tags(result.get_failure()), path) if result.is_failure() else None


def _hash_bytes(data: bytes) -> str:
    """Dropbox's content hash of bytes already in memory (mirror.hashing reads files)."""
    outer = hashlib.sha256()
    for start in range(0, len(data), DROPBOX_BLOCK):
        outer.update(hashlib.sha256(data[start : start + DROPBOX_BLOCK]).digest())
    return outer.hexdigest()


def default_token_file() -> Path:
    """Where ``mirror auth dropbox`` stores the login, and a target without one reads it."""
    return Path(platformdirs.user_config_dir("mirror")) / "dropbox-token.json"


def credentials(options: Mapping[str, Any]) -> dict[str, Any]:
    """SDK keyword arguments for the login in ``options``; ConfigError without a usable one."""
    token_file = options.get("token_file")
    if not (token_file or options.get("refresh_token") or options.get("token")):
        # where `mirror auth dropbox` stores the login, as gdrive:// and onedrive:// read theirs
        token_file = default_token_file()
        if not token_file.exists():
            raise ConfigError(
                f"Dropbox target needs a login: run `mirror auth dropbox --app-key YOUR_APP_KEY` (it stores one "
                f"in {token_file}), or set token_file, refresh_token + app_key, or token (a short-lived access "
                "token, for quick tests) in the target's options"
            )
    if token_file:
        stored = read_token_file(str(token_file))
        return {"oauth2_refresh_token": stored["refresh_token"], "app_key": stored["app_key"]}
    if options.get("refresh_token"):
        if not options.get("app_key"):
            raise ConfigError("Dropbox refresh_token needs app_key (the key of the app it was issued to)")
        creds = {"oauth2_refresh_token": str(options["refresh_token"]), "app_key": str(options["app_key"])}
        if options.get("app_secret"):
            creds["app_secret"] = str(options["app_secret"])
        return creds
    return {"oauth2_access_token": str(options["token"])}


def read_token_file(path: str) -> dict[str, str]:
    """The app key and refresh token stored by ``mirror auth dropbox``; refuses loose modes."""
    path = os.path.expanduser(path)
    # the command that writes this very file: without --token-file it writes the default one
    login = f"run `mirror auth dropbox --app-key YOUR_APP_KEY --token-file {shlex.quote(path)}`"
    stored = read_private_json(path, "Dropbox token file", login)
    if not stored.get("refresh_token") or not stored.get("app_key"):
        raise ConfigError(f"Dropbox token file {path} lacks app_key or refresh_token; {login}")
    return {"refresh_token": str(stored["refresh_token"]), "app_key": str(stored["app_key"])}
