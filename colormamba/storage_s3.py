"""The object-store implementation of `colormamba.storage.Storage`: S3/MinIO through the `minio` SDK.

Why these choices:
- One bucket, docs/system.md's layout as key prefixes (`datasets/`, `runs/`, `checkpoints/`, `reports/`...),
  optionally under a `prefix` so that several deployments can share a bucket.
- Atomic from a reader's point of view: an S3 object becomes visible only when its single PUT (or the
  CompleteMultipartUpload of a large one) succeeds, so a reader sees the old object or the new one, never
  a half-written one. Each object also carries the SHA-256 of its bytes in its metadata, and reads verify
  it, so a truncated transfer is an error and not a corrupt checkpoint.
- Retries are ours, not urllib3's: transient failures (connection refused or reset, timeouts, 5xx,
  SlowDown) are retried with exponential backoff until `retry_seconds` have passed, then raise
  StorageError saying which endpoint was unreachable, after how many attempts and how many seconds
  (measured, not the budget). Permanent ones (bad credentials, no such bucket, an invalid bucket name)
  fail at once with the reason. urllib3's own retries are switched off so the bound is the one stated.
- Every request's timeouts are bounded by what is left of the budget (`_BudgetedPool`): a server that
  accepts connections and never answers costs `retry_seconds`, not urllib3's read timeout on top. Those
  timeouts bound silence, not transfers: each is per socket operation (the longest wait for the next
  bytes, sent or received), and each answered request renews the budget for the requests that follow, so
  a checkpoint of hundreds of MB (a multipart upload: one request per 5 MiB part) goes through a slow
  link as long as bytes keep flowing. Only the retries stop at `retry_seconds` from the operation's start
  (an operation that fails later is not tried again), so that an operation whose attempts always get
  part of the way (the upload's first request, never its parts) cannot be retried for ever.
- One log line per operation: the first retry is a WARNING (a worker's log shows an outage began),
  later ones DEBUG; a person's command (`interactive`) logs none, its one line is the final error.
"""

from __future__ import annotations

import hashlib
import io
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlparse

import urllib3

from colormamba.env import (
    S3_ACCESS_KEY,
    S3_BUCKET,
    S3_ENDPOINT,
    S3_REGION,
    S3_RETRY_SECONDS,
    S3_SECRET_KEY,
    S3_SECURE,
    redact_url,
)
from colormamba.storage import LocalStorage, ObjectNotFound, Storage, StorageError, check_key

log = logging.getLogger(__name__)

T = TypeVar("T")

SHA_META = "sha256"  # user metadata key (sent as x-amz-meta-sha256)
_MISSING = {"NoSuchKey", "NoSuchObject"}
_TRANSIENT = {"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout", "OperationAborted"}
# what a server answers to a wrong key or secret (AccessDenied also to a key without the permission)
_CREDENTIALS = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "InvalidToken", "ExpiredToken"}

CONNECT_TIMEOUT_S = 5.0  # a TCP connection not open after this long is not going to open
IDLE_TIMEOUT_S = 120.0  # the longest wait for the next bytes of an answer, however long the budget
MIN_ATTEMPT_S = 1.0  # an attempt started at the very end of the budget still gets this long
# the slowest link an upload is sized for: the answer to a request lags its last byte sent by what the
# network still buffers, up to the whole body, so a request's read timeout is at least body / this rate
SLOW_LINK_BYTES_PER_S = 256 * 1024
# a person at a command line (submit.py, predict) hears "the store is down" within seconds; workers wait
# COLORMAMBA_S3_RETRY_SECONDS
INTERACTIVE_RETRY_SECONDS = 5.0


class S3CredentialsRefused(StorageError):
    """The server refused the access key or secret (or the key lacks a permission): retrying is useless."""


class S3Unreachable(StorageError):
    """The server did not answer within the retry budget; `reason` is the last error, in short."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Deadline(threading.local):
    """When the current operation's requests stop waiting (monotonic seconds; None outside an operation):
    its budget, renewed by each answered request. Per thread: several threads may share a store and its
    connection pool."""

    at: float | None = None


class _BudgetedPool(urllib3.PoolManager):
    """The SDK's connection pool, with each request's connect and read timeouts bounded by what is left
    of the operation's budget (at least MIN_ATTEMPT_S), and the budget renewed by every answered request
    (2xx): progress, so the bound is on silence, not on a long transfer's total time.

    A request body goes out in urllib3's 16 KiB blocks (given as a stream): the connect timeout is also
    the socket's send timeout, and a socket bounds one `sendall` as a whole, so a 5 MiB part sent in one
    piece would need to be through within it; a block at a time, the timeout is the wait for progress.
    The answer may lag the last block by what the network buffers (SLOW_LINK_BYTES_PER_S)."""

    def __init__(self, retry_seconds: float, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._retry_seconds = retry_seconds
        self._deadline = deadline

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any) -> Any:
        at = self._deadline.at
        left = IDLE_TIMEOUT_S if at is None else max(round(at - time.monotonic(), 1), MIN_ATTEMPT_S)
        body = kw.get("body")
        drain = len(body) / SLOW_LINK_BYTES_PER_S if isinstance(body, bytes) else 0.0
        kw["timeout"] = urllib3.Timeout(connect=min(CONNECT_TIMEOUT_S, left),
                                        read=min(IDLE_TIMEOUT_S, max(left, drain)))  # fmt: skip
        if isinstance(body, bytes):  # the SDK sets Content-Length, so this is no chunked upload
            kw["body"] = io.BytesIO(body)
        response = super().urlopen(method, url, redirect=redirect, **kw)
        if at is not None and 200 <= response.status < 300:
            self._deadline.at = max(self._deadline.at or at, time.monotonic() + self._retry_seconds)
        return response


class S3Storage:
    """Objects in one S3 bucket.

    Args:
        endpoint: "host:port" or "http(s)://host:port".
        access_key, secret_key: credentials.
        bucket: the bucket (created on first use when `create_bucket`).
        secure: TLS; taken from the URL scheme when `endpoint` has one.
        prefix: optional key prefix inside the bucket.
        retry_seconds: how long transient errors (or a silent server) are retried before StorageError.
        region: S3 region (MinIO/SeaweedFS ignore it; AWS needs it).
        quiet_retries: log retries at DEBUG only (a person's command, whose one line is the final error).
    Raises:
        StorageError: an invalid bucket name (never worth retrying).
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = False,
        prefix: str = "",
        retry_seconds: float = 60.0,
        region: str | None = None,
        create_bucket: bool = True,
        quiet_retries: bool = False,
    ) -> None:
        # what pickling carries to a spawned process, which builds its own client and connections
        self._args = (endpoint, access_key, secret_key, bucket)
        self._kwargs = {"secure": secure, "prefix": prefix, "retry_seconds": retry_seconds, "region": region,
                        "create_bucket": create_bucket, "quiet_retries": quiet_retries}  # fmt: skip
        if "://" in endpoint:
            url = urlparse(endpoint)
            secure = url.scheme == "https"
            endpoint = url.netloc
        self.endpoint = endpoint
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.secure = secure
        self.retry_seconds = retry_seconds
        self._quiet_retries = quiet_retries
        self._create_bucket = create_bucket
        self._bucket_checked = False
        # the SDK is imported here, not with the module: a command line on a folder store skips its import
        from minio import Minio
        from minio.error import S3Error
        from minio.helpers import check_bucket_name

        try:
            check_bucket_name(bucket)
        except ValueError as exc:  # the SDK raises it at each request, which would look like an outage
            rule = "S3 bucket names are 3-63 characters of a-z, 0-9, '.' and '-'"
            raise StorageError(f"{exc}: {rule}") from None
        self._s3_error = S3Error
        self._deadline = _Deadline()
        http = _BudgetedPool(
            retry_seconds,
            self._deadline,
            retries=urllib3.Retry(total=0, connect=0, read=0, redirect=0, status=0, raise_on_status=False),
            maxsize=8,
        )
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_s3_storage, (self._args, self._kwargs))

    def __repr__(self) -> str:
        scheme = "https" if self.secure else "http"
        where = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        return f"S3Storage({redact_url(f'{scheme}://{self.endpoint}')}, bucket {where!r})"

    # -- the retry loop --------------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one S3 operation with bounded exponential backoff on transient errors, retried until
        `retry_seconds` from its start; its requests wait until `self._deadline` (which the pool renews
        on progress)."""
        started = time.monotonic()
        self._deadline.at = started + self.retry_seconds
        try:
            return self._retry(what, fn, started)
        finally:
            self._deadline.at = None

    def _retry(self, what: str, fn: Callable[[], T], started: float) -> T:
        deadline = started + self.retry_seconds
        delay = 0.2
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except self._s3_error as exc:
                if exc.code in _MISSING:
                    raise
                if exc.code == "NoSuchBucket":
                    raise StorageError(f"{self!r}: bucket {self.bucket!r} does not exist ({what})") from exc
                if exc.code in _CREDENTIALS:
                    raise S3CredentialsRefused(
                        f"{self!r}: S3 credentials refused ({what}: {exc.code}); check "
                        f"{S3_ACCESS_KEY.name} and {S3_SECRET_KEY.name}, and that the key may use the bucket"
                    ) from exc
                if exc.code not in _TRANSIENT:
                    raise StorageError(f"{self!r}: {what} refused: {exc.code}: {exc.message}") from exc
                reason = f"{exc.code}: {exc.message}"
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                # what failed, without urllib3's "Max retries exceeded with url" around it
                wrapped = isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None
                cause = exc.reason if wrapped else exc
                reason = f"{type(cause).__name__}: {cause}"
            except ValueError as exc:  # minio raises ValueError for some unexpected non-S3 responses
                reason = f"unexpected response: {exc}"
            now = time.monotonic()
            if now >= deadline:
                raise S3Unreachable(
                    f"{self!r} unreachable: {what} failed {attempt} time(s) over {now - started:.1f} s; "
                    f"last error: {reason}. Check that the S3 server is up and the endpoint is right.",
                    reason,
                )
            sleep = min(delay, deadline - now) * (0.5 + random.random() / 2)
            level = logging.WARNING if attempt == 1 and not self._quiet_retries else logging.DEBUG
            log.log(level, "%r: %s failed (%s); retrying in %.1f s, for up to %.0f s", self, what, reason,
                    sleep, deadline - now)  # fmt: skip
            time.sleep(sleep)
            delay = min(delay * 2, 5.0)

    def _ensure_bucket(self) -> None:
        if self._bucket_checked:
            return
        if not self._call("bucket check", lambda: self.client.bucket_exists(self.bucket)):
            if not self._create_bucket:
                raise StorageError(f"{self!r}: bucket {self.bucket!r} does not exist")
            try:
                self._call("bucket creation", lambda: self.client.make_bucket(self.bucket))
            except StorageError as exc:  # another process may have created it meanwhile
                if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
                    raise
        self._bucket_checked = True

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    # -- the Storage protocol --------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes) -> None:
        name = self._name(key)
        self._ensure_bucket()
        digest = hashlib.sha256(data).hexdigest()
        # one part at a time, in this thread: the SDK's parallel part uploads run in threads of their own,
        # outside this operation's budget (`_BudgetedPool`), which each uploaded part renews
        self._call(
            f"upload of {key}",
            lambda: self.client.put_object(
                self.bucket, name, io.BytesIO(data), len(data), metadata={SHA_META: digest},
                num_parallel_uploads=1,
            ),
        )

    def get_bytes(self, key: str) -> bytes:
        name = self._name(key)
        self._ensure_bucket()

        def fetch() -> tuple[bytes, str | None]:
            response = self.client.get_object(self.bucket, name)
            try:
                data = response.read()
                expected = response.headers.get(f"x-amz-meta-{SHA_META}")
            finally:
                response.close()
                response.release_conn()
            return data, expected

        try:
            data, expected = self._call(f"download of {key}", fetch)
        except self._s3_error as exc:
            raise ObjectNotFound(key) from exc
        if expected is not None and hashlib.sha256(data).hexdigest() != expected:
            raise StorageError(f"{self!r}: {key}: checksum mismatch (truncated or corrupt object)")
        return data

    def exists(self, key: str) -> bool:
        name = self._name(key)
        self._ensure_bucket()
        try:
            self._call(f"stat of {key}", lambda: self.client.stat_object(self.bucket, name))
        except self._s3_error:
            return False
        return True

    def list(self, prefix: str) -> list[str]:
        self._ensure_bucket()
        full = self._name(prefix.rstrip("/")) + "/" if prefix else (f"{self.prefix}/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        objects = self._call(
            f"listing of {prefix or '/'}",
            lambda: [
                o.object_name for o in self.client.list_objects(self.bucket, prefix=full, recursive=True)
            ],
        )
        keys = (name[strip:] for name in objects if name and not name.endswith("/"))
        return sorted(k for k in keys if not k.rsplit("/", 1)[-1].startswith("."))

    def delete(self, key: str) -> None:
        name = self._name(key)
        self._ensure_bucket()
        self._call(f"deletion of {key}", lambda: self.client.remove_object(self.bucket, name))


def _rebuild_s3_storage(args: tuple[Any, ...], kwargs: dict[str, Any]) -> S3Storage:
    return S3Storage(*args, **kwargs)


def s3_from_env(bucket: str | None = None, prefix: str = "", create_bucket: bool = True,
                retry_seconds: float | None = None, interactive: bool = False) -> S3Storage:  # fmt: skip
    """An S3Storage configured from the environment (what containers, `submit.py` and `predict` use): the
    variables of `colormamba.env.S3_VARIABLES`; the endpoint and both keys are required. Readers pass
    `create_bucket=False`, so that a mistyped bucket is an error, not a new empty bucket. `retry_seconds`
    (default: COLORMAMBA_S3_RETRY_SECONDS, sized for workers) is shorter for a person at a command line,
    who wants "the store is down" in seconds, not after a minute: `interactive` means that budget
    (INTERACTIVE_RETRY_SECONDS, unless `retry_seconds` says otherwise) and no retry log lines."""
    endpoint = S3_ENDPOINT.read()
    if not endpoint:
        raise StorageError(f"{S3_ENDPOINT.name} is not set (the S3/MinIO endpoint, e.g. localhost:9000)")
    access, secret = S3_ACCESS_KEY.read(), S3_SECRET_KEY.read()
    if not access or not secret:
        raise StorageError(f"S3 credentials missing: set {S3_ACCESS_KEY.name} and {S3_SECRET_KEY.name}")
    retry = S3_RETRY_SECONDS.read()
    try:
        from_env = float(retry)
    except ValueError:
        raise StorageError(f"{S3_RETRY_SECONDS.name} must be a number of seconds, got {retry!r}") from None
    if retry_seconds is None and interactive:
        retry_seconds = INTERACTIVE_RETRY_SECONDS
    retry_seconds = from_env if retry_seconds is None else min(retry_seconds, from_env)
    return S3Storage(
        endpoint,
        access,
        secret,
        bucket or S3_BUCKET.read(),
        secure=S3_SECURE.flag(),
        prefix=prefix,
        retry_seconds=retry_seconds,
        region=S3_REGION.read() or None,
        create_bucket=create_bucket,
        quiet_retries=interactive,
    )


def open_store(url: str, create_bucket: bool = True, retry_seconds: float | None = None,
               interactive: bool = False) -> Storage:  # fmt: skip
    """The store a URL names: `s3://bucket[/prefix]` (endpoint and credentials from the environment, see
    `s3_from_env`, which takes `retry_seconds` and `interactive`) or a local folder path (optionally
    `file://`). Readers pass `create_bucket=False`, so that a mistyped bucket is an error and not a new
    empty bucket."""
    if url.startswith("s3://"):
        rest = url[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        return s3_from_env(bucket or None, prefix, create_bucket=create_bucket, retry_seconds=retry_seconds,
                           interactive=interactive)  # fmt: skip
    return LocalStorage(url.removeprefix("file://"))


def read_s3_url(url: str) -> bytes:
    """The bytes of the object `s3://bucket/key` (the store of `open_store`, never creating a bucket), for
    a person's command (`predict --checkpoint s3://...`): the interactive budget, one line when it fails.

    Raises:
        ValueError: not an s3://bucket/key URL; ObjectNotFound: no such object; StorageError.
    """
    where, _, name = url.rpartition("/")
    if not url.startswith("s3://") or where.count("/") < 2 or not where[len("s3://") :] or not name:
        raise ValueError(f"{url}: expected an object URL s3://bucket/key")
    return open_store(where, create_bucket=False, interactive=True).get_bytes(name)
