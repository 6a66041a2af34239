"""The ``store`` fixture: one fresh, empty store per test, for every backend."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from csfs.store.base import Store
from csfs.store.local import LocalStore
from tests.servers import make_bucket

RGW_SKIP = (
    "Ceph RGW not running: start it with scripts/ceph-rgw start "
    "(the RGW stage of scripts/test does)"
)
S3_PREFIX = "vaults/test"  # S3 stores use a prefix, to prove it is honoured


def _rgw_store() -> Iterator[Store]:
    endpoint = os.environ.get("CSFS_RGW_ENDPOINT")
    access_key = os.environ.get("CSFS_RGW_ACCESS_KEY")
    secret_key = os.environ.get("CSFS_RGW_SECRET_KEY")
    if not (endpoint and access_key and secret_key):
        pytest.skip(RGW_SKIP)
    from csfs.store.s3 import S3Store

    bucket = make_bucket(
        endpoint,
        f"csfs-test-{uuid.uuid4().hex[:16]}",
        access_key=access_key,
        secret_key=secret_key,
    )
    store = S3Store(
        bucket,
        S3_PREFIX,
        endpoint_url=endpoint,
        path_style=True,
        access_key_id=access_key,
        secret_access_key=secret_key,
    )
    yield store
    # RGW keeps data on disk between tests: leave nothing behind.
    with contextlib.suppress(Exception):
        for info in list(store.list()):
            store.delete(info.key)
        store._client.delete_bucket(Bucket=bucket)


@pytest.fixture(params=["local", "moto", pytest.param("rgw", marks=pytest.mark.rgw)])
def backend_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty store of each backend kind."""
    if request.param == "local":
        yield LocalStore(os.path.join(tmp_path, "store"))
    elif request.param == "moto":
        from csfs.store.s3 import S3Store

        server = request.getfixturevalue("moto_server")
        bucket = request.getfixturevalue("s3_bucket")
        yield S3Store(bucket, S3_PREFIX, endpoint_url=server.endpoint_url, path_style=True)
    else:
        yield from _rgw_store()


@pytest.fixture
def store(backend_store: Store) -> Store:
    """The bare backend; the conformance suite also wraps it (test_conformance.py)."""
    return backend_store
