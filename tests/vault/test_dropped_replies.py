"""A manifest switch whose reply is lost: the store did the work, the client never hears.

botocore sends the PUT again, the store answers 412 (the manifest moved on: to our own
version), and the client re-reads the folder and applies its change again. A change
that cannot be applied twice (a rename: the source is gone by then) failed with
ENOENT although it had happened. The switch that landed is recognised as ours.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from csfs.crypto import Identity
from csfs.store import open_store
from csfs.vault import Vault
from tests.faultproxy import FaultProxy


@pytest.fixture
def proxied(
    fault_proxy: FaultProxy, s3_bucket: str, identity: Identity, state_dir: str
) -> Iterator[Vault]:
    store = open_store(f"s3://{s3_bucket}", endpoint_url=fault_proxy.endpoint_url,
                       path_style=True)
    v = Vault.create(store, identity, state_dir=state_dir)
    yield v
    v.close()


def _read(v: Vault, path: str) -> bytes:
    buf = io.BytesIO()
    v.read_file(path, buf)
    return buf.getvalue()


@pytest.mark.parametrize("across", [False, True], ids=["same-folder", "across-folders"])
def test_a_rename_whose_reply_was_lost_succeeds(
    proxied: Vault, fault_proxy: FaultProxy, across: bool
) -> None:
    v = proxied
    v.mkdir("/sub")
    v.write_file("/a", io.BytesIO(b"content"))
    dst = "/sub/b" if across else "/b"
    v.lookup("/a")
    v.listdir("/sub")  # everything the rename reads is cached: its first request is the PUT
    fault_proxy.drops(1)
    v.rename("/a", dst)
    assert fault_proxy.counts["faults"] == 1  # the reply was dropped
    assert _read(v, dst) == b"content"
    assert not v.exists("/a")


def test_an_unlink_whose_reply_was_lost_succeeds(proxied: Vault, fault_proxy: FaultProxy) -> None:
    v = proxied
    v.write_file("/a", io.BytesIO(b"content"))
    seen = v.lookup("/a")
    fault_proxy.drops(1)
    removed = v.remove("/a", expect=(seen.id, seen.version))
    assert fault_proxy.counts["faults"] == 1
    assert removed is not None and removed.id == seen.id  # not "the name held another"
    assert not v.exists("/a")
