"""The ``s3`` backend (``s3://bucket/prefix``): Amazon S3 and S3-compatible servers, on s3fs.

``endpoint_url`` points it at MinIO, Ceph, Wasabi, Backblaze, Garage and the like.

Change detection uses the ETag, which S3 computes from the bytes: the MD5 of the object
for a single-part upload, and for a multipart upload the MD5 of the concatenated part
MD5s followed by ``-<parts>``. This module uploads itself, in parts of a size that is a
function of the file size only, so :func:`s3_etag` reproduces the ETag of every file it
uploads and the planner can skip files the bucket already holds; the ETag each upload
answers with is what the index records as the copy's hash (a move copies a multipart
upload part by part, so it keeps it). Objects written by other tools with other part
sizes simply do not match and are uploaded again; servers whose ETags are not MD5-based
(SSE-KMS, SSE-C) need ``hash_kind = "none"`` in the target's capabilities.

A PUT is committed whole, so no temp name is needed. S3 cannot set LastModified: the
source mtime is kept in the object metadata as ``mtime`` (seconds, the key rclone
reads), for restores. There are no folders: ``makedirs`` does nothing and the listing
cache of s3fs is off, because another writer may change the bucket between calls.

A multipart upload a stop or a kill cut off keeps its parts, stored (and billed) until
it is aborted, and out of every listing of objects. Each one this module starts is
recorded in the target's state (Driver.state) until it completes or is aborted; a stop
aborts those under way (close), and the next listing pass those a kill left
(drop_abandoned). Uploads another tool started are never touched.

Credentials refused (a revoked key, a wrong secret, an expired token) stop the target,
mid-run as at start-up. An AccessDenied (or a HEAD's bare 403) may concern one object
(a bucket policy denying a prefix) or the whole bucket: the bucket is asked, as connect
asks it, and only a bucket still open makes it the file's own failure.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mirror.config import parse_duration
from mirror.driver import (
    IN_A_CONFIG,
    Capabilities,
    Driver,
    RemoteEntry,
    check_verify,
    classify_os_error,
    quiet_loop,
)
from mirror.errors import ConfigError, FatalError, ItemError, MirrorError, RootGone, TransientError
from mirror.hashing import HashKind

if TYPE_CHECKING:
    # s3fs (with aiobotocore, botocore and asyncio: 0.8 s of CPU here) is imported on
    # the first connection, not with this module: the registry loads it for every run
    # and status of an S3 target, and a run with nothing to send never connects
    import s3fs

OPTIONS = frozenset({"key", "secret", "token", "endpoint_url", "region", "profile", "anon", "verify", "timeout"})
#: what the options that are not text take: botocore took verify = "no" for the path of
#: a CA bundle, and failed each request on it ('No such file or directory')
OPTION_KINDS: dict[str, tuple[tuple[type, ...], str]] = {
    "anon": ((bool,), "true or false"),
    "verify": ((bool, str), "true, false or the path of a CA bundle file"),
    "timeout": ((int, float, str), 'seconds, or a duration such as "20s"'),
}
#: seconds a request waits to connect, and for each answer (botocore's own default): an
#: endpoint that stopped answering costs that much a try (S3FS_TRIES of them a request)
TIMEOUT = 60.0
MIN_PART = 16 * 1024 * 1024
MAX_PARTS = 10_000
#: parts of one file sent at once: so many parts (of 16 MiB and up) are held in memory
#: for each large file in flight, and those go bulk_concurrency at a time
PARTS_AT_ONCE = 4
#: tries s3fs gives a request that fails on the way (a reset): the executor's retries,
#: which back off and tell a target down, come on top
S3FS_TRIES = 2
#: one request carries at most 5 GiB
MAX_SINGLE = 5 * 1024**3
READ = 1024 * 1024
#: Driver.state key (with the object's key after it) of a multipart upload under way
UPLOAD_STATE = "s3-upload:"
#: seconds a stop waits for the abort of an upload under way: a link that hangs would
#: hold the stop for botocore's whole timeout; the next listing aborts it then
ABORT_WAIT = 5
#: error codes that refuse the credentials themselves, whatever the request: every other
#: request fails the same way, so the target stops with what to fix
CREDENTIALS_REFUSED = {
    "InvalidAccessKeyId": "the access key is not known (revoked or deleted?); check key and secret",
    "SignatureDoesNotMatch": "the secret does not match the access key; check key and secret",
    "ExpiredToken": "the session token has expired; renew token (or the profile's credentials)",
    "InvalidToken": "the session token is not valid; renew token (or the profile's credentials)",
    "TokenRefreshRequired": "the session token has expired; renew token (or the profile's credentials)",
    "RequestTimeTooSkewed": "this computer's clock is more than 15 minutes off the server's; set it right",
    "AccountProblem": "the account has a problem (billing?); see the provider's console",
    "AllAccessDisabled": "all access to the bucket is disabled; see the provider's console",
    "NotSignedUp": "the account is not signed up for S3",
}
#: a refusal that may concern one object only (a bucket policy denying a prefix) or the
#: whole bucket (the key's policy taken away); a HEAD answer carries no code, only 403
MAYBE_ONE_OBJECT = frozenset({"AccessDenied", "403"})


def _session() -> Any:
    """An aiobotocore session whose requests send their bodies at once, without asking
    the server first (``Expect: 100-continue``): aiohttp waits for its go-ahead with no
    timeout, and starts the read timeout only once the body is sent, so a server that
    stopped reading amid an upload hung it for good. Sent at once, the body fills the
    connection, and TCP_USER_TIMEOUT (:func:`_send_timeout`) ends it."""
    from aiobotocore.session import AioSession

    session = AioSession()
    session.get_component("event_emitter").register_last("before-call.s3", _no_expect)
    return session


def _no_expect(params: dict[str, Any], **_: Any) -> None:
    params.get("headers", {}).pop("Expect", None)


def _send_timeout(timeout: float) -> dict[str, Any]:
    """aiobotocore's settings that end a connection whose data the server has not taken
    for ``timeout`` seconds (TCP_USER_TIMEOUT, which also bounds a closed window): botocore's
    timeouts cover connecting and waiting for an answer, not sending a request's body, and
    an upload to a server that stopped reading it hung for good, status saying in sync.
    None where aiobotocore takes no socket factory (before late 2025)."""
    import socket

    from aiobotocore.config import AioConfig
    from botocore.exceptions import ParamValidationError

    def new_socket(addr_info: tuple[Any, ...]) -> socket.socket:
        family, kind, proto, _, _ = addr_info
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, max(1, round(timeout * 1000)))
        return sock

    settings = {"socket_factory": new_socket}
    try:
        AioConfig(connector_args=settings)
    except ParamValidationError:
        return {}
    return {"connector_args": settings}


def _timeout(options: Mapping[str, Any]) -> float:
    """The ``timeout`` option in seconds (see TIMEOUT)."""
    seconds = parse_duration(options.get("timeout", TIMEOUT), "s3 option timeout")
    if seconds <= 0:
        raise ConfigError(f's3 option timeout must be more than 0, not {options["timeout"]!r}; for example "30s"')
    return seconds


def part_size(size: int) -> int:
    """Bytes per part for a file of ``size`` bytes (deterministic: s3_etag relies on it)."""
    return max(MIN_PART, -(-size // MAX_PARTS))


def single_part(size: int) -> bool:
    """Whether a file of ``size`` bytes goes in one PUT rather than in parts."""
    return size < min(MAX_SINGLE, 2 * part_size(size))


def s3_etag(path: str) -> str:
    """The ETag S3 gives this file when S3Driver uploads it."""
    size = os.path.getsize(path)
    whole = hashlib.md5(usedforsecurity=False)
    if single_part(size):
        with open(path, "rb") as f:
            while block := f.read(READ):
                whole.update(block)
        return whole.hexdigest()
    chunk = part_size(size)
    digests = b""
    parts = 0
    with open(path, "rb") as f:
        while True:
            part = hashlib.md5(usedforsecurity=False)
            left = chunk
            while left and (block := f.read(min(READ, left))):
                part.update(block)
                left -= len(block)
            if left == chunk:
                break
            digests += part.digest()
            parts += 1
    return f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{parts}"


#: the longest key S3 takes, in bytes of UTF-8, prefix included
#: (https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html)
KEY_BYTES = 1024


class S3Driver(Driver):
    capabilities = Capabilities(
        case_sensitive=True,
        hash_kind=HashKind.MD5,
        atomic_put=True,
        server_side_move=True,
        max_name_bytes=1024,
        max_path_bytes=KEY_BYTES,
        max_file_bytes=5 * 1024**4,
    )
    default_concurrency = 8
    thread_safe = True
    #: each large file holds PARTS_AT_ONCE parts in memory while it is sent: eight at once
    #: took 1.4 GiB for five 128 MiB scans
    bulk_concurrency = 2
    #: deletions go up to 64 to a DeleteObjects request, where one at a time each costs a
    #: round trip (uploads are not batched: each is one atomic PUT already)
    batch_files = 64
    place_picks = True

    @classmethod
    def capabilities_for(cls, url: str) -> Capabilities:
        # the key's limit holds the prefix (the target's folder) and its '/' too
        prefix = url.split("://", 1)[1].strip("/").partition("/")[2]
        taken = len(f"{prefix}/".encode()) if prefix else 0
        return dataclasses.replace(cls.capabilities, max_path_bytes=KEY_BYTES - taken)

    @classmethod
    def check_target(cls, url: str, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - OPTIONS)
        if unknown:
            raise ConfigError(f"unknown s3 option(s) {', '.join(unknown)}; known: {', '.join(sorted(OPTIONS))}")
        for name, value in options.items():
            kinds, words = OPTION_KINDS.get(name, ((str,), "text"))
            if not isinstance(value, kinds):
                raise ConfigError(f"s3 option {name} must be {words}, not {value!r}")
        check_verify("s3", options)
        _timeout(options)
        if not url.split("://", 1)[1].strip("/"):
            raise ConfigError("s3 URL needs a bucket: s3://bucket/prefix")
        # no bucket name holds ':' or '@'; a secret may hold '/', so it can end up in the
        # path, but whatever comes first holds the key
        bucket = url.split("://", 1)[1].split("/", 1)[0]
        if "@" in url and (":" in bucket or "@" in bucket):
            raise ConfigError(
                f'do not put credentials in the s3 URL; set key and secret = "${{ENV_VAR}}" {IN_A_CONFIG}'
            )

    @classmethod
    def place(cls, url: str, options: Mapping[str, Any]) -> tuple[str, str, str]:
        # a bucket's name picks it on its server (on AWS, among all), whichever key reaches it
        endpoint = urlsplit(str(options.get("endpoint_url") or "https://s3.amazonaws.com"))
        return f"{endpoint.netloc.lower()}{endpoint.path.rstrip('/')}", url.split("://", 1)[1], ""

    @classmethod
    def same_server(cls, server: str) -> str:
        # a bucket's name is unique on all of AWS (within its partition), so every endpoint
        # there reaches the same one: the default and a regional one were two places, and
        # one target's deletions took the other's kept files
        host = server.split("/", 1)[0].rsplit(":", 1)[0]
        for partition in ("amazonaws.com.cn", "amazonaws.com"):
            if host == partition or host.endswith(f".{partition}"):
                return f"s3.{partition}"
        return super().same_server(server)

    @classmethod
    def connect(cls, url: str, options: Mapping[str, Any], caps: Capabilities | None = None) -> Driver:
        cls.check_target(url, options)
        root = url.split("://", 1)[1].strip("/")
        bucket = root.split("/", 1)[0]
        timeout = _timeout(options)
        client_kwargs: dict[str, Any] = {}
        if options.get("region"):
            client_kwargs["region_name"] = options["region"]
        if "verify" in options:
            client_kwargs["verify"] = options["verify"]
        import s3fs
        from botocore.exceptions import NoCredentialsError

        fs = s3fs.S3FileSystem(
            session=_session(),
            key=options.get("key"),
            secret=options.get("secret"),
            token=options.get("token"),
            endpoint_url=options.get("endpoint_url"),
            profile=options.get("profile"),
            anon=bool(options.get("anon", False)),
            client_kwargs=client_kwargs,
            # botocore's own retries (5 attempts) under s3fs's (5) waited out a hung endpoint
            # for 7 minutes, with status idle and nothing pending; mirror retries by itself.
            # max_attempts counts retries, not tries: at 1 it still made each try two
            config_kwargs={
                "retries": {"total_max_attempts": 1},
                "connect_timeout": timeout,
                "read_timeout": timeout,
                **_send_timeout(timeout),
            },
            use_listings_cache=False,
            skip_instance_cache=True,
        )
        fs.retries = S3FS_TRIES
        quiet_loop(fs)  # before the first request: a server resetting connections is noisy at once
        try:
            fs.call_s3("head_bucket", Bucket=bucket)
        except (PermissionError, NoCredentialsError):
            raise ConfigError(_bucket_refused(bucket)) from None
        except FileNotFoundError:
            raise ConfigError(f"s3: bucket {bucket!r} does not exist; create it first") from None
        except Exception as exc:
            raise classify_s3_error(exc) from None
        return cls(fs, root, caps)

    def __init__(self, fs: s3fs.S3FileSystem, root: str, caps: Capabilities | None = None) -> None:
        super().__init__(fs, root, caps)
        #: multipart uploads under way in this process, by upload id
        self._open: dict[str, dict[str, str]] = {}

    def entry(self, rel: str, info: Mapping[str, Any]) -> RemoteEntry:
        base = super().entry(rel, info)
        return RemoteEntry(path=rel, size=base.size, mtime_ns=base.mtime_ns, hash=_etag(info))

    def local_hash(self, local_path: str) -> str | None:
        if self.caps.hash_kind is HashKind.NONE:
            return None
        return s3_etag(local_path)

    def put(self, local_path: str, rel: str, mtime_ns: int) -> RemoteEntry:
        # sent here rather than by s3fs's put_file, which drops the ETag S3 answers with:
        # recorded, it tells a copy changed on the target (same size, other bytes) from
        # ours, and lets a source file restored with new inodes be matched by its hash
        where = self._where(rel)
        metadata = {"mtime": f"{mtime_ns // 1_000_000_000}.{mtime_ns % 1_000_000_000:09d}"}
        with open(local_path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if single_part(size):
                data = f.read()
                reply = self.fs.call_s3("put_object", **where, Body=data, Metadata=metadata)
                return RemoteEntry(rel, len(data), hash=_etag(reply))
            chunk = part_size(size)
            sent = 0

            def part(upload: str, number: int) -> Awaitable[Mapping[str, Any]] | None:
                nonlocal sent
                data = f.read(chunk)
                sent += len(data)
                if not data:
                    return None
                return self.fs._call_s3("upload_part", **where, UploadId=upload, PartNumber=number, Body=data)

            reply = self._multipart(where, metadata, part)
        return RemoteEntry(rel, sent, hash=_etag(reply))

    def move(self, src: str, dst: str) -> None:
        # a plain copy of a multipart upload gets the MD5 of its bytes for an ETag, which
        # neither the hash the index recorded for it nor s3_etag is: a listing would take
        # the moved copy for one changed on the target (sent again, or left there when its
        # source goes). Copied part by part, in the parts put sends, it keeps its ETag
        source, where = self._where(src), self._where(dst)
        head = self.fs.call_s3("head_object", **source)
        size = int(head["ContentLength"])
        if single_part(size):
            self.fs.call_s3("copy_object", **where, CopySource=source)
        else:
            chunk = part_size(size)

            def part(upload: str, number: int) -> Awaitable[Mapping[str, Any]] | None:
                start = (number - 1) * chunk
                if start >= size:
                    return None
                return self.fs._call_s3(
                    "upload_part_copy",
                    **where,
                    UploadId=upload,
                    PartNumber=number,
                    CopySource=source,
                    CopySourceRange=f"bytes={start}-{min(start + chunk, size) - 1}",
                )

            self._multipart(where, head.get("Metadata") or {}, part)
        self.fs.call_s3("delete_object", **source)

    def _multipart(
        self,
        where: dict[str, str],
        metadata: Mapping[str, str],
        part: Callable[[str, int], Awaitable[Mapping[str, Any]] | None],
    ) -> Mapping[str, Any]:
        """A multipart upload to ``where``: ``part(upload_id, n)`` sends part ``n`` (None
        when there is none); the reply that completes it. One that fails is aborted: its
        parts would be kept (and billed) otherwise; recorded, one a kill cuts off is
        aborted by the next listing pass (drop_abandoned)."""
        from fsspec.asyn import sync

        upload = str(self.fs.call_s3("create_multipart_upload", **where, Metadata=metadata)["UploadId"])
        self._open[upload] = where
        self._note_upload(where["Key"], upload, open_=True)
        try:
            reply = sync(self.fs.loop, self._parts, where, upload, part)
        except BaseException:
            self._abort(where, upload)
            raise
        finally:
            self._open.pop(upload, None)
        self._note_upload(where["Key"], upload, open_=False)
        return reply

    def _uploads_of(self, key: str) -> list[str]:
        """The ids of the uploads to ``key`` this module started and has not seen end."""
        return (self.state.get(UPLOAD_STATE + key) or "").split()

    def _note_upload(self, key: str, upload: str, open_: bool) -> None:
        """Record ``upload`` to ``key`` as open, or as ended. A key holds several: an upload
        whose abort failed (the link down) stays recorded while the retry's runs, and
        recorded alone, the retry's took its place, and its parts stayed billed for good."""
        uploads = [u for u in self._uploads_of(key) if u != upload] + ([upload] if open_ else [])
        if uploads:
            self.state.set(UPLOAD_STATE + key, " ".join(uploads))
        else:
            self.state.delete(UPLOAD_STATE + key)

    async def _parts(
        self,
        where: Mapping[str, str],
        upload: str,
        part: Callable[[str, int], Awaitable[Mapping[str, Any]] | None],
    ) -> Mapping[str, Any]:
        """The parts of ``upload``, PARTS_AT_ONCE at a time, the next one read as one
        ends (a part read is held in memory until sent), and the reply that completes it."""
        import asyncio  # running in s3fs's loop: imported with it

        etags: dict[int, str] = {}
        running: dict[asyncio.Future[Mapping[str, Any]], int] = {}
        number, more = 0, True
        try:
            while True:
                while more and len(running) < PARTS_AT_ONCE:
                    number += 1
                    sending = part(upload, number)
                    more = sending is not None
                    if sending is not None:
                        running[asyncio.ensure_future(sending)] = number
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    reply = task.result()
                    # an upload_part_copy answers with its ETag one level down
                    etags[running.pop(task)] = reply.get("ETag") or reply["CopyPartResult"]["ETag"]
        finally:
            for task in running:
                task.cancel()
        parts = [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]
        call = self.fs._call_s3
        return dict(
            await call("complete_multipart_upload", **where, UploadId=upload, MultipartUpload={"Parts": parts})
        )

    def _abort(self, where: Mapping[str, str], upload: str) -> None:
        """Abort ``upload`` and forget it; one S3 did not take stays recorded for the next
        listing pass."""
        try:
            self.fs.call_s3("abort_multipart_upload", **where, UploadId=upload, timeout=ABORT_WAIT)
        except FileNotFoundError:
            pass  # aborted already (NoSuchUpload)
        except Exception:
            return
        self._note_upload(where["Key"], upload, open_=False)

    def drop_abandoned(self) -> list[str]:
        bucket, _, prefix = self.root.partition("/")
        found: list[str] = []
        more: dict[str, str] = {}
        while True:
            try:
                page = self.fs.call_s3(
                    "list_multipart_uploads", Bucket=bucket, Prefix=f"{prefix}/" if prefix else "", **more
                )
            except Exception as exc:
                if isinstance(classify_s3_error(exc), (TransientError, FatalError)):
                    raise
                # a key allowed to write but not to list uploads (a narrow policy), a
                # server without the request: not this pass's failure; a lifecycle rule
                # (AbortIncompleteMultipartUpload) is left to clear them
                return found
            for upload in page.get("Uploads", []):
                key, upload_id = upload["Key"], upload["UploadId"]
                mine = upload_id in self._uploads_of(key)
                if mine and upload_id not in self._open:
                    self._abort({"Bucket": bucket, "Key": key}, upload_id)
                    found.append(key[len(prefix) + 1 :] if prefix else key)
            if not page.get("IsTruncated"):
                return found
            more = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}

    def close(self) -> None:
        # a stop that gave up on an upload under way (a large file on a slow link): its
        # parts would stay stored until the next listing pass
        for upload, where in list(self._open.items()):
            self._abort(where, upload)

    def _where(self, rel: str) -> dict[str, str]:
        """The Bucket and Key arguments of a request about ``rel``."""
        bucket, key = self.full(rel).split("/", 1)
        return {"Bucket": bucket, "Key": key}

    def delete_batch(self, rels: Sequence[str]) -> Sequence[MirrorError | None]:
        bucket = self.root.split("/", 1)[0]
        at = {self.full(rel).split("/", 1)[1]: i for i, rel in enumerate(rels)}
        try:
            # quiet: the reply lists only the keys that could not be deleted
            reply = self.fs.call_s3(
                "delete_objects", Bucket=bucket, Delete={"Objects": [{"Key": key} for key in at], "Quiet": True}
            )
        except Exception as exc:
            return [self.classify(exc)] * len(rels)
        outcomes: list[MirrorError | None] = [None] * len(rels)
        for refused in reply.get("Errors", []):
            if refused.get("Key") in at:
                outcomes[at[refused["Key"]]] = _refused_delete(refused.get("Code", ""), refused.get("Message", ""))
        return outcomes

    def makedirs(self, rel_dir: str) -> None:
        """S3 has no folders; a key's prefix needs nothing made."""

    def root_lost(self, known: str) -> bool:
        # a HEAD of the key: a bucket gone answers 404 too, and the listing then tells it
        try:
            self.fs.call_s3("head_object", **self._where(known))
        except FileNotFoundError:
            return True
        return False

    def remove_dir_if_empty(self, rel_dir: str) -> bool:
        try:
            return not self.fs.ls(self.full(rel_dir), detail=False)
        except FileNotFoundError:
            return True

    def classify(self, exc: BaseException) -> MirrorError:
        error = classify_s3_error(exc)
        if isinstance(error, ItemError) and _code(exc) in MAYBE_ONE_OBJECT:
            # the request cannot tell whether the key lost the bucket or only this object:
            # the bucket itself, as connect checked it, does
            bucket = self.root.split("/", 1)[0]
            try:
                self.fs.call_s3("head_bucket", Bucket=bucket)
            except PermissionError:
                return FatalError(_bucket_refused(bucket))
            except Exception as probe:
                return classify_s3_error(probe)
            return ItemError(f"s3 refused access to this object ({_code(exc)}); check the bucket policy")
        return error


def _etag(reply: Mapping[str, Any]) -> str | None:
    """The ETag in a listing or an upload's reply, without the quotes S3 puts around it."""
    return str(reply.get("ETag") or "").strip('"') or None


def _bucket_refused(bucket: str) -> str:
    return f"s3: access to bucket {bucket!r} refused; check key, secret (or profile) and the bucket policy"


def _code(exc: BaseException) -> str:
    """The S3 error code of ``exc``: s3fs raises a PermissionError (or other OSError) made
    of botocore's ClientError, which it keeps as the cause."""
    from botocore.exceptions import ClientError

    for error in (exc, exc.__cause__):
        if isinstance(error, ClientError):
            return str(error.response.get("Error", {}).get("Code", ""))
    return ""


def _refused_delete(code: str, message: str) -> MirrorError:
    """A key DeleteObjects could not delete (the executor tries it again on its own)."""
    if code in ("SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout"):
        return TransientError(f"s3: server busy ({code})")
    return ItemError(f"s3 refused to delete it ({code}: {message})")


def classify_s3_error(exc: BaseException) -> MirrorError:
    if isinstance(exc, MirrorError):
        return exc
    from botocore import exceptions as botocore

    transient = (
        botocore.EndpointConnectionError,
        botocore.ConnectTimeoutError,
        botocore.ReadTimeoutError,
        botocore.ConnectionClosedError,
    )
    if isinstance(exc, transient):
        return TransientError(f"s3: connection problem ({type(exc).__name__})")
    # no credentials to be had at all, mid-run too: a profile's file gone, a token service down
    no_credentials = (
        botocore.NoCredentialsError,
        botocore.PartialCredentialsError,
        botocore.CredentialRetrievalError,
        botocore.TokenRetrievalError,
    )
    if isinstance(exc, no_credentials):
        return FatalError(f"s3: no credentials to sign with ({exc}); check key, secret (or profile)")
    code = _code(exc)
    if code in CREDENTIALS_REFUSED:
        return FatalError(f"s3 refused the credentials ({code}): {CREDENTIALS_REFUSED[code]}")
    if code == "NoSuchBucket":
        # the target's folder gone, not one file's trouble: taken for a file's, the
        # bucket made again got only the files written since, and status said in sync
        return RootGone(
            "target unreachable: the bucket does not exist (deleted?); mirror does not make it, and carries "
            "on once it is back, filling it again if it comes back empty"
        )
    if isinstance(exc, botocore.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status in (429, 500, 502, 503, 504) or code in ("SlowDown", "RequestTimeout", "Throttling"):
            return TransientError(f"s3: server busy ({code or status})")
    return classify_os_error(exc)
