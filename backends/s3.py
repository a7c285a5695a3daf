"""The ``s3`` backend (``s3://bucket/prefix``): Amazon S3 and S3-compatible servers, on s3fs.

``endpoint_url`` points it at MinIO, Ceph, Wasabi, Backblaze, Garage and the like.

Change detection uses the ETag, which S3 computes from the bytes: the MD5 of the object
for a single-part upload, and for a multipart upload the MD5 of the concatenated part
MD5s followed by ``-<parts>``. This module decides the part size itself (a function of
the file size only), so :func:`s3_etag` reproduces the ETag of every file it uploads
and the planner can skip files the bucket already holds. Objects written by other tools
with other part sizes simply do not match and are uploaded again; servers whose ETags
are not MD5-based (SSE-KMS, SSE-C) need ``hash_kind = "none"`` in the target's
capabilities.

A PUT is committed whole, so no temp name is needed. S3 cannot set LastModified: the
source mtime is kept in the object metadata as ``mtime`` (seconds, the key rclone
reads), for restores. There are no folders: ``makedirs`` does nothing and the listing
cache of s3fs is off, because another writer may change the bucket between calls.

Credentials refused (a revoked key, a wrong secret, an expired token) stop the target,
mid-run as at start-up. An AccessDenied (or a HEAD's bare 403) may concern one object
(a bucket policy denying a prefix) or the whole bucket: the bucket is asked, as connect
asks it, and only a bucket still open makes it the file's own failure.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import botocore.exceptions
import s3fs
from botocore.exceptions import (
    CredentialRetrievalError,
    NoCredentialsError,
    PartialCredentialsError,
    TokenRetrievalError,
)

from mirror.driver import Capabilities, Driver, RemoteEntry, classify_os_error, quiet_loop
from mirror.errors import ConfigError, FatalError, ItemError, MirrorError, TransientError
from mirror.hashing import HashKind

OPTIONS = frozenset({"key", "secret", "token", "endpoint_url", "region", "profile", "anon", "verify"})
MIN_PART = 16 * 1024 * 1024
MAX_PARTS = 10_000
#: one request carries at most 5 GiB
MAX_SINGLE = 5 * 1024**3
READ = 1024 * 1024
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
#: no credentials to be had at all, mid-run too: a profile's file gone, a token service down
NO_CREDENTIALS = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError, TokenRetrievalError)


def part_size(size: int) -> int:
    """Bytes per part for a file of ``size`` bytes (deterministic: s3_etag relies on it)."""
    return max(MIN_PART, -(-size // MAX_PARTS))


def single_part(size: int) -> bool:
    """Whether s3fs sends this file in one PUT (its rule, with our part size)."""
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


class S3Driver(Driver):
    capabilities = Capabilities(
        case_sensitive=True,
        hash_kind=HashKind.MD5,
        atomic_put=True,
        server_side_move=True,
        max_name_bytes=1024,
        max_path_chars=1024,
        max_file_bytes=5 * 1024**4,
    )
    default_concurrency = 8
    #: deletions go up to 64 to a DeleteObjects request, where one at a time each costs a
    #: round trip (uploads are not batched: each is one atomic PUT already)
    batch_files = 64

    @classmethod
    def check_target(cls, url: str, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - OPTIONS)
        if unknown:
            raise ConfigError(f"unknown s3 option(s) {', '.join(unknown)}; known: {', '.join(sorted(OPTIONS))}")
        if not url.split("://", 1)[1].strip("/"):
            raise ConfigError("s3 URL needs a bucket: s3://bucket/prefix")
        # no bucket name holds ':' or '@'; a secret may hold '/', so it can end up in the
        # path, but whatever comes first holds the key
        bucket = url.split("://", 1)[1].split("/", 1)[0]
        if "@" in url and (":" in bucket or "@" in bucket):
            raise ConfigError(
                'do not put credentials in the s3 URL; set options.key and options.secret = "${ENV_VAR}"'
            )

    @classmethod
    def connect(cls, url: str, options: Mapping[str, Any], caps: Capabilities | None = None) -> Driver:
        cls.check_target(url, options)
        root = url.split("://", 1)[1].strip("/")
        bucket = root.split("/", 1)[0]
        client_kwargs: dict[str, Any] = {}
        if options.get("region"):
            client_kwargs["region_name"] = options["region"]
        if "verify" in options:
            client_kwargs["verify"] = options["verify"]
        fs = s3fs.S3FileSystem(
            key=options.get("key"),
            secret=options.get("secret"),
            token=options.get("token"),
            endpoint_url=options.get("endpoint_url"),
            profile=options.get("profile"),
            anon=bool(options.get("anon", False)),
            client_kwargs=client_kwargs,
            use_listings_cache=False,
            skip_instance_cache=True,
        )
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

    def entry(self, rel: str, info: Mapping[str, Any]) -> RemoteEntry:
        base = super().entry(rel, info)
        etag = str(info.get("ETag") or "").strip('"') or None
        return RemoteEntry(path=rel, size=base.size, mtime_ns=base.mtime_ns, hash=etag)

    def local_hash(self, local_path: str) -> str | None:
        if self.caps.hash_kind is HashKind.NONE:
            return None
        return s3_etag(local_path)

    def put(self, local_path: str, rel: str, mtime_ns: int) -> RemoteEntry | None:
        size = os.path.getsize(local_path)
        self.fs.put_file(
            local_path,
            self.full(rel),
            chunksize=part_size(size),
            Metadata={"mtime": f"{mtime_ns // 1_000_000_000}.{mtime_ns % 1_000_000_000:09d}"},
        )
        return None

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

    def root_lost(self) -> bool:
        # no folders: an emptied prefix is the folder deleted; one key tells it is not
        bucket, _, prefix = self.root.partition("/")
        found = self.fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=f"{prefix}/" if prefix else "", MaxKeys=1)
        return not found.get("KeyCount", len(found.get("Contents", [])))

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


def _bucket_refused(bucket: str) -> str:
    return f"s3: access to bucket {bucket!r} refused; check key, secret (or profile) and the bucket policy"


def _code(exc: BaseException) -> str:
    """The S3 error code of ``exc``: s3fs raises a PermissionError (or other OSError) made
    of botocore's ClientError, which it keeps as the cause."""
    for error in (exc, exc.__cause__):
        if isinstance(error, botocore.exceptions.ClientError):
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
    transient = (
        botocore.exceptions.EndpointConnectionError,
        botocore.exceptions.ConnectTimeoutError,
        botocore.exceptions.ReadTimeoutError,
        botocore.exceptions.ConnectionClosedError,
    )
    if isinstance(exc, transient):
        return TransientError(f"s3: connection problem ({type(exc).__name__})")
    if isinstance(exc, NO_CREDENTIALS):
        return FatalError(f"s3: no credentials to sign with ({exc}); check key, secret (or profile)")
    code = _code(exc)
    if code in CREDENTIALS_REFUSED:
        return FatalError(f"s3 refused the credentials ({code}): {CREDENTIALS_REFUSED[code]}")
    if isinstance(exc, botocore.exceptions.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status in (429, 500, 502, 503, 504) or code in ("SlowDown", "RequestTimeout", "Throttling"):
            return TransientError(f"s3: server busy ({code or status})")
    return classify_os_error(exc)
