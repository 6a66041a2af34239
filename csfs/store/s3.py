"""S3 backend over boto3 (the only module in csfs that imports boto3/botocore).

Works against AWS S3, moto and Ceph RGW.  Choices made for the latter two:

- ETags are sent unquoted in If-Match: Ceph RGW (Pacific) refuses quoted ones.
- Request checksums only "when_required": botocore's default trailing CRC
  checksums (aws-chunked uploads) are not understood by older RGW releases.
- Path-style addressing whenever an endpoint is given (moto and RGW need it).

Large transfers use our own multipart upload and parallel ranged GETs rather
than ``upload_file``/``download_file``: s3transfer cannot send If-None-Match on
an upload, flattens errors into ``S3UploadFailedError`` strings, and does not
report which ETag a download read.  Sizes follow boto3's TransferConfig
defaults we would have chosen: 8 MiB threshold and parts, 8 threads.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from csfs.errors import NotFound, PreconditionFailed, StoreError, TransientStoreError
from csfs.store.base import TEMP_PREFIX, ObjectInfo, check_range, validate_key, validate_prefix

MIB = 1 << 20
MULTIPART_THRESHOLD = 8 * MIB
PART_SIZE = 8 * MIB
MAX_CONCURRENCY = 8
_MAX_PARTS = 10_000  # S3's limit on parts per upload

T = TypeVar("T")
R = TypeVar("R")

_THROTTLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
    }
)
_AUTH_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
)
_BUCKET_HINT = "check the bucket name and the endpoint, or create the bucket"
_CREDENTIALS_HINT = (
    "check the AWS credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE) "
    "and that they may access this bucket"
)


def _unquote(etag: str) -> str:
    return etag.strip('"')


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _was_retried(exc: ClientError) -> bool:
    return int(exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) or 0) > 0


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Store:
    """A :class:`~csfs.store.base.Store` over ``s3://bucket/prefix``."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        path_style: bool = False,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        page_size: int = 1000,
        max_attempts: int = 5,
    ) -> None:
        if not bucket or "/" in bucket:
            raise ValueError(f"invalid bucket name {bucket!r}")
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix)
        self.bucket = bucket
        self.prefix = prefix
        self.page_size = page_size
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self._root = prefix + "/" if prefix else ""
        # Credentials come from boto3's standard chain unless given explicitly.
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
        )
        config = Config(
            retries={"mode": "standard", "max_attempts": max_attempts},
            max_pool_connections=2 * MAX_CONCURRENCY + 16,
            s3={"addressing_style": "path" if path_style else "virtual"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=10,
            read_timeout=60,
        )
        self._client: Any = session.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=session.region_name or "us-east-1",
            config=config,
        )

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    # -- helpers -----------------------------------------------------------

    def _key(self, key: str) -> str:
        return self._root + validate_key(key)

    def _error(self, exc: Exception, op: str, key: str = "") -> StoreError:
        """Turn a botocore exception into a one-line csfs error (no stack, no secrets)."""
        where = f"s3://{self.bucket}/{self._root}{key}" if key else self.url
        if isinstance(exc, ClientError):
            code, status = _code(exc), _status(exc)
            message = exc.response.get("Error", {}).get("Message") or ""
            text = _one_line(f"S3 {op} {where} failed: {code or status} {message}")
            if status == 412 or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return PreconditionFailed(text)
            if code == "NoSuchBucket":
                return StoreError(text, hint=_BUCKET_HINT)
            if status == 404 or code in ("NoSuchKey", "NotFound"):
                return NotFound(text)
            if status == 429 or status >= 500 or code in _THROTTLE_CODES:
                return TransientStoreError(text)
            if status == 403 or code in _AUTH_CODES:
                return StoreError(text, hint=_CREDENTIALS_HINT)
            return StoreError(text)
        if isinstance(exc, NoCredentialsError):
            return StoreError(
                f"S3 {op} {where} failed: no AWS credentials found", hint=_CREDENTIALS_HINT
            )
        if isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError):
            return TransientStoreError(_one_line(f"S3 {op} {where} failed: {exc}"))
        return StoreError(_one_line(f"S3 {op} {where} failed: {exc}"))

    def _call(self, op: str, key: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, op, key) from None

    def _read_body(self, op: str, key: str, response: Any) -> bytes:
        try:
            return bytes(response["Body"].read())
        except BotoCoreError as exc:
            raise self._error(exc, op, key) from None

    def _landed(self, key: str, data: bytes) -> str | None:
        """The etag of ``key`` if it now holds exactly ``data``, else None.

        Used when a conditional PUT fails only after botocore retried it: the
        first attempt may have succeeded with its response lost, and the retry
        then trips over our own write.
        """
        try:
            current, etag = self.get_with_etag(key)
        except StoreError:
            return None
        return etag if current == data else None

    # -- Store -------------------------------------------------------------

    def put(
        self,
        key: str,
        data: bytes,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> str:
        kwargs: dict[str, Any] = {"Key": self._key(key), "Body": data}
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        if if_match is not None:
            kwargs["IfMatch"] = _unquote(if_match)  # RGW refuses a quoted ETag
        try:
            response = self._client.put_object(Bucket=self.bucket, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            error = self._error(exc, "put", key)
            if if_match is not None and isinstance(error, NotFound):
                # S3 answers 404 for If-Match on a missing key; to callers it
                # is the same lost race as a changed etag.
                raise PreconditionFailed(error.message) from None
            if isinstance(error, PreconditionFailed) and isinstance(exc, ClientError):
                if _was_retried(exc) and (etag := self._landed(key, data)) is not None:
                    return etag
            raise error from None
        return _unquote(response["ETag"])

    def put_file(self, key: str, path: str, *, if_none_match: bool = False) -> str:
        validate_key(key)
        try:
            size = os.path.getsize(path)
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from None
        if size < MULTIPART_THRESHOLD:
            with open(path, "rb") as f:
                return self.put(key, f.read(), if_none_match=if_none_match)
        part_size = max(PART_SIZE, math.ceil(size / _MAX_PARTS / MIB) * MIB)
        return self.put_parts(key, _file_parts(path, part_size), if_none_match=if_none_match)

    def put_parts(self, key: str, parts: Iterable[bytes], *, if_none_match: bool = False) -> str:
        validate_key(key)
        it = iter(parts)
        first = next(it, b"")
        second = next(it, None)
        if second is None:
            return self.put(key, first, if_none_match=if_none_match)
        if if_none_match:
            # Fail before uploading megabytes; the condition on the completion
            # below is what actually guards against a racing writer.
            with contextlib.suppress(NotFound):
                self.head(key)
                raise PreconditionFailed(f"{key} already exists in {self.url}")
        full_key = self._key(key)
        upload_id = self._call("put", key, self._client.create_multipart_upload, Key=full_key)[
            "UploadId"
        ]

        def upload_part(number: int, body: bytes) -> dict[str, Any]:
            response = self._call(
                "put",
                key,
                self._client.upload_part,
                Key=full_key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
            )
            return {"PartNumber": number, "ETag": response["ETag"]}

        try:
            slots = threading.BoundedSemaphore(MAX_CONCURRENCY)  # bounds parts held in memory
            futures = []
            with ThreadPoolExecutor(MAX_CONCURRENCY, thread_name_prefix="csfs-part") as pool:
                for number, body in enumerate(itertools.chain([first, second], it), start=1):
                    slots.acquire()
                    future = pool.submit(upload_part, number, body)
                    future.add_done_callback(lambda _: slots.release())
                    futures.append(future)
                parts_done = [f.result() for f in futures]
            extra: dict[str, Any] = {"IfNoneMatch": "*"} if if_none_match else {}
            response = self._call(
                "put",
                key,
                self._client.complete_multipart_upload,
                Key=full_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts_done},
                **extra,
            )
        except BaseException:
            with contextlib.suppress(Exception):
                self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=full_key, UploadId=upload_id
                )
            raise
        return _unquote(response.get("ETag") or "") or self.head(key).etag

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        check_range(start, end)
        full_key = self._key(key)
        if end is not None and end <= start:
            return b""
        kwargs: dict[str, Any] = {}
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=full_key, **kwargs)
        except ClientError as exc:
            if _status(exc) == 416 or _code(exc) == "InvalidRange":
                return b""  # the range starts at or past the end of an existing object
            raise self._error(exc, "get", key) from None
        except BotoCoreError as exc:
            raise self._error(exc, "get", key) from None
        return self._read_body("get", key, response)

    def get_with_etag(self, key: str, *, end: int | None = None) -> tuple[bytes, str]:
        check_range(0, end)
        kwargs: dict[str, Any] = {}
        if end is not None:
            if end == 0:
                return b"", self.head(key).etag
            kwargs["Range"] = f"bytes=0-{end - 1}"
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key), **kwargs)
        except ClientError as exc:
            if end is not None and (_status(exc) == 416 or _code(exc) == "InvalidRange"):
                return b"", self.head(key).etag  # an empty object
            raise self._error(exc, "get", key) from None
        except BotoCoreError as exc:
            raise self._error(exc, "get", key) from None
        return self._read_body("get", key, response), _unquote(response["ETag"])

    def get_to_file(self, key: str, path: str, *, end: int | None = None) -> ObjectInfo:
        check_range(0, end)
        info = self.head(key)
        size = info.size if end is None else min(end, info.size)
        full_key = self._key(key)
        dest = os.path.abspath(path)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=os.path.dirname(dest))
        try:
            with os.fdopen(fd, "wb") as out:

                def fetch(offset: int) -> None:
                    # If-Match pins every range to the version head() saw.
                    kwargs: dict[str, Any] = {"IfMatch": info.etag}
                    if size > PART_SIZE or size < info.size:
                        last = min(offset + PART_SIZE, size) - 1
                        kwargs["Range"] = f"bytes={offset}-{last}"
                    try:
                        response = self._call(
                            "get", key, self._client.get_object, Key=full_key, **kwargs
                        )
                    except (PreconditionFailed, NotFound) as exc:
                        raise TransientStoreError(
                            f"{key} changed while it was being downloaded"
                        ) from exc
                    os.pwrite(out.fileno(), self._read_body("get", key, response), offset)

                if size:
                    _run_parallel(fetch, range(0, size, PART_SIZE))
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return info

    def head(self, key: str) -> ObjectInfo:
        response = self._call("head", key, self._client.head_object, Key=self._key(key))
        size, etag = int(response["ContentLength"]), _unquote(response["ETag"])
        modified = response.get("LastModified")
        return ObjectInfo(
            key=key, size=size, etag=etag, mtime=modified.timestamp() if modified else 0.0
        )

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)  # eagerly, not on the first next()
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket,
            Prefix=self._root + prefix,
            PaginationConfig={"PageSize": self.page_size},
        )
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(self._root) :]
                    try:
                        validate_key(key)
                    except ValueError:
                        continue  # not ours, e.g. a console's "folder/" marker
                    modified = obj.get("LastModified")
                    yield ObjectInfo(
                        key=key,
                        size=int(obj["Size"]),
                        etag=_unquote(obj["ETag"]),
                        mtime=modified.timestamp() if modified else 0.0,
                    )
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "list", prefix) from None

    def presigned_get(self, key: str, seconds: int) -> str:
        """A GET URL for ``key`` signed in its query string (SigV4), valid ``seconds``."""
        return str(self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=seconds
        ))

    def delete(self, key: str) -> None:
        with contextlib.suppress(NotFound):
            self._call("delete", key, self._client.delete_object, Key=self._key(key))


def _run_parallel(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """Map ``fn`` over ``items`` on MAX_CONCURRENCY threads; stop early on the first error."""
    with ThreadPoolExecutor(max_workers=MAX_CONCURRENCY, thread_name_prefix="csfs-s3") as pool:
        futures: list[Future[R]] = [pool.submit(fn, item) for item in items]
        try:
            return [future.result() for future in futures]
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _file_parts(path: str, part_size: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while part := f.read(part_size):
            yield part
