"""The fault proxy itself: each mode does what the durability tests rely on."""

from __future__ import annotations

import time

import pytest

from csfs.errors import TransientStoreError
from csfs.store import RetryStore
from csfs.store.s3 import S3Store
from tests.faultproxy import FaultProxy


def _store(proxy: FaultProxy, bucket: str, attempts: int = 0) -> S3Store:
    return S3Store(bucket, endpoint_url=proxy.endpoint_url, path_style=True,
                   max_attempts=attempts)  # retries after the first try


def test_modes(fault_proxy: FaultProxy, s3_bucket: str) -> None:
    store = _store(fault_proxy, s3_bucket)
    store.put("a", b"1")
    assert store.get("a") == b"1"
    fault_proxy.errors(1)
    with pytest.raises(TransientStoreError):
        store.get("a")
    fault_proxy.resets(1)
    with pytest.raises(TransientStoreError):
        store.get("a")
    fault_proxy.drops(1)
    with pytest.raises(TransientStoreError):
        store.put("b", b"2")
    assert store.get("b") == b"2"  # the dropped request was done by the store
    fault_proxy.outage(0.5)
    with pytest.raises(TransientStoreError):
        store.head("a")
    time.sleep(0.6)
    assert store.head("a").size == 1
    fault_proxy.slow(0.3)
    t = time.monotonic()
    assert store.get("a") == b"1"
    assert time.monotonic() - t >= 0.3
    fault_proxy.restore()
    assert fault_proxy.counts["faults"] == 4


def test_retries_ride_over_faults(fault_proxy: FaultProxy, s3_bucket: str) -> None:
    store = RetryStore(_store(fault_proxy, s3_bucket, attempts=3))
    store.put("k", b"x" * 1000)
    for arm in (fault_proxy.errors, fault_proxy.resets, fault_proxy.drops):
        arm(2)
        assert store.get("k") == b"x" * 1000
