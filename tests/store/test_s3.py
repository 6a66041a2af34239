"""S3 specifics on moto: prefixes, pagination, multipart, error mapping, open_store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from csfs.errors import NotFound, PreconditionFailed, StoreError, TransientStoreError
from csfs.store import ObjectInfo, open_store
from csfs.store.retry import RetryStore
from csfs.store.s3 import MULTIPART_THRESHOLD, S3Store
from tests.servers import MotoServer

MIB = 1 << 20


@pytest.fixture
def s3(moto_server: MotoServer, s3_bucket: str) -> Iterator[S3Store]:
    yield S3Store(s3_bucket, "pre/fix", endpoint_url=moto_server.endpoint_url, path_style=True)


def _raw_keys(store: S3Store) -> list[str]:
    response = store._client.list_objects_v2(Bucket=store.bucket)
    return [obj["Key"] for obj in response.get("Contents", [])]


def test_keys_live_under_the_prefix(s3: S3Store) -> None:
    s3.put("a/b", b"1")
    assert _raw_keys(s3) == ["pre/fix/a/b"]
    assert s3.url == f"s3://{s3.bucket}/pre/fix"


def test_foreign_objects_are_skipped(s3: S3Store) -> None:
    """A console's "folder/" marker is not a valid key and must not break listing."""
    s3._client.put_object(Bucket=s3.bucket, Key="pre/fix/folder/", Body=b"")
    s3._client.put_object(Bucket=s3.bucket, Key="pre/fixture", Body=b"")  # outside the prefix
    s3.put("folder/real", b"x")
    assert [i.key for i in s3.list()] == ["folder/real"]


def test_small_pages(s3: S3Store) -> None:
    s3.page_size = 3
    keys = [f"k{i:02d}" for i in range(10)]
    for key in keys:
        s3.put(key, b"")
    assert [i.key for i in s3.list()] == keys
    assert [i.key for i in s3.list("k0")] == keys


def test_large_objects_use_multipart(s3: S3Store, tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(os.urandom(MULTIPART_THRESHOLD + 1))
    etag = s3.put_file("big", str(path))
    assert etag.endswith("-2"), "S3 marks multipart etags with their part count"
    # Past the early HEAD check (made to miss: a racing writer lands after it), the
    # server's If-None-Match on completion decides.
    def head_misses(key: str) -> ObjectInfo:
        raise NotFound(key)

    real_head, s3.head = s3.head, head_misses  # type: ignore[method-assign]
    try:
        with pytest.raises(PreconditionFailed):
            s3.put_file("big", str(path), if_none_match=True)
    finally:
        s3.head = real_head  # type: ignore[method-assign]
    uploads = s3._client.list_multipart_uploads(Bucket=s3.bucket)
    assert not uploads.get("Uploads"), "the failed upload was aborted"
    assert s3.head("big").etag == etag


def test_lost_response_of_a_conditional_put_is_a_success(s3: S3Store) -> None:
    """botocore retries a PUT whose response was lost; the retry then meets our own write."""
    retried = []

    def pretend_the_first_response_was_lost(attempts: int, **kwargs: Any) -> int | None:
        if attempts == 1:
            retried.append(True)
            return 0  # retry immediately
        return None

    s3._client.meta.events.register("needs-retry.s3.PutObject", pretend_the_first_response_was_lost)
    etag = s3.put("lock", b"mine", if_none_match=True)
    assert retried
    assert s3.get_with_etag("lock") == (b"mine", etag)


def test_missing_bucket_is_not_a_missing_object(moto_server: MotoServer) -> None:
    store = S3Store("csfs-no-such-bucket", endpoint_url=moto_server.endpoint_url, path_style=True)
    with pytest.raises(StoreError) as info:
        store.get("k")
    assert not isinstance(info.value, NotFound)
    assert "NoSuchBucket" in str(info.value)
    assert info.value.hint
    with pytest.raises(StoreError):
        list(store.list())


def test_errors_are_one_clean_line(moto_server: MotoServer, s3_bucket: str) -> None:
    store = S3Store(
        s3_bucket,
        endpoint_url=moto_server.endpoint_url,
        path_style=True,
        secret_access_key="not-the-real-secret",  # noqa: S106 - a dummy
        access_key_id="AKIDEXAMPLE",
    )
    with pytest.raises(NotFound) as info:
        store.head("missing")
    message = str(info.value)
    assert "\n" not in message
    assert "not-the-real-secret" not in message
    assert message.startswith(f"S3 head s3://{s3_bucket}/missing failed")


def test_unreachable_endpoint_is_transient(unused_port: int) -> None:
    store = S3Store(
        "bucket", endpoint_url=f"http://127.0.0.1:{unused_port}", path_style=True, max_attempts=1
    )
    with pytest.raises(TransientStoreError, match="S3 get s3://bucket/k failed"):
        store.get("k")


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_open_store_s3(
    moto_server: MotoServer, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(f"s3://{s3_bucket}/a/b/", endpoint_url=moto_server.endpoint_url)
    assert isinstance(store, RetryStore)
    inner = store.inner
    assert isinstance(inner, S3Store)
    assert (inner.bucket, inner.prefix, inner.url) == (s3_bucket, "a/b", f"s3://{s3_bucket}/a/b")
    assert inner._client.meta.config.s3["addressing_style"] == "path"
    store.put("k", b"v")
    assert store.get("k") == b"v"

    # The endpoint may come from the environment instead.
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    from_env = open_store(f"s3://{s3_bucket}/a/b")
    assert from_env.get("k") == b"v"

    monkeypatch.delenv("AWS_ENDPOINT_URL")
    aws = open_store("s3://bucket")
    assert isinstance(aws, RetryStore) and isinstance(aws.inner, S3Store)
    assert aws.inner._client.meta.config.s3["addressing_style"] == "virtual"
    monkeypatch.setenv("CSFS_S3_PATH_STYLE", "1")
    forced = open_store("s3://bucket")
    assert isinstance(forced, RetryStore) and isinstance(forced.inner, S3Store)
    assert forced.inner._client.meta.config.s3["addressing_style"] == "path"


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "s3://bucket/../x", "s3://bucket/a b"])
def test_open_store_rejects_bad_s3_urls(url: str) -> None:
    with pytest.raises(ValueError):
        open_store(url)
