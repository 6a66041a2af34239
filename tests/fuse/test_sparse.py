"""Holes cost (almost) nothing, huge sizes fail fast with EFBIG, and a store cannot
turn data into a hole (issue 11; format.md 2.5)."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.fuse.helpers import Vault, requires_fuse

pytestmark = [pytest.mark.mount, requires_fuse]

GIB = 1 << 30


def store_bytes(vault: Vault, prefix: str = "c/") -> int:
    return sum(len(vault.get_raw(k)) for k in vault.list_keys(prefix))


def test_truncate_1g_is_fast_and_costs_little_in_the_store(vault: Vault) -> None:
    m = vault.mount()
    with open(m.p("f"), "wb") as f:
        f.write(b"head")
    m.sync()
    before = store_bytes(vault)
    t = time.monotonic()
    subprocess.run(["truncate", "-s", "1G", m.p("f")], check=True)  # open, ftruncate, close
    assert os.stat(m.p("f")).st_blocks * 512 < 1 << 20  # at once, not after the attr TTL
    m.sync()
    took = time.monotonic() - t
    st = os.stat(m.p("f"))
    assert st.st_size == GIB
    assert st.st_blocks * 512 < 1 << 20
    added = store_bytes(vault) - before
    assert added < 1 << 20, added  # was 1 GiB of ciphertext
    assert took < 5, took  # was 3.5 s (truncate) and 7 s (write) sealing 1 GiB
    with open(m.p("f"), "rb") as f:
        assert f.read(4) == b"head"
        f.seek(GIB // 2)
        assert f.read(1 << 20) == bytes(1 << 20)
        f.seek(GIB - 5)
        assert f.read() == bytes(5)
    # Another process reading the store sees the same file.
    fresh = vault.mount("fresh", cache_dir=os.path.join(vault.root, "fresh-cache"))
    with open(fresh.p("f"), "rb") as f:
        f.seek(GIB - 3)
        assert f.read() == bytes(3)


def test_write_at_1g_is_fast_and_reads_back(vault: Vault) -> None:
    m = vault.mount()
    t = time.monotonic()
    fd = os.open(m.p("g"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b"tail", GIB)
        os.fsync(fd)
    finally:
        os.close(fd)
    took = time.monotonic() - t
    assert took < 5, took  # was 3.5 s (truncate) and 7 s (write) sealing 1 GiB
    assert store_bytes(vault) < 1 << 20
    assert os.stat(m.p("g")).st_size == GIB + 4
    with open(m.p("g"), "rb") as f:
        f.seek(GIB - 2)
        assert f.read() == b"\0\0tail"


@pytest.mark.parametrize("how", ["truncate", "pwrite"])
def test_past_2_48_is_efbig_at_once(vault: Vault, how: str) -> None:
    m = vault.mount()
    with open(m.p("h"), "wb") as f:
        f.write(b"x")
    t = time.monotonic()
    with pytest.raises(OSError) as exc:
        if how == "truncate":
            os.truncate(m.p("h"), 1 << 60)
        else:
            fd = os.open(m.p("h"), os.O_WRONLY)
            try:
                os.pwrite(fd, b"y", 1 << 48)
            finally:
                os.close(fd)
    assert exc.value.errno == errno.EFBIG
    assert time.monotonic() - t < 2
    assert os.stat(m.p("h")).st_size == 1
    # The largest size the format holds is still accepted, and costs nothing.
    os.truncate(m.p("h"), 1 << 48)
    m.sync()
    assert os.stat(m.p("h")).st_size == 1 << 48
    assert store_bytes(vault) < 1 << 20
    # fsck verifies it without decrypting 256 TiB of zeros.
    report = vault.cli("fsck", timeout=60).stderr
    assert b"281474976710656 bytes verified, 0 problems" in report, report


def _sparse_file(vault: Vault) -> tuple[str, bytes]:
    """A file of data, a long hole, data: the key of its only payload and the data."""
    m = vault.mount()
    data = os.urandom(70_000)
    fd = os.open(m.p("s"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, 0)
        os.pwrite(fd, data, 64 << 20)
    finally:
        os.close(fd)
    m.sync()
    m.umount()
    [key] = vault.list_keys("c/")
    assert vault.cat("s")[: len(data)] == data
    return key, data


def _tampered(vault: Vault, edit: Callable[[bytes], bytes]) -> None:
    key, _ = _sparse_file(vault)
    raw = vault.get_raw(key)
    assert raw[:8] == b"csfs-pl2"
    vault.put_raw(key, edit(raw))
    r = vault.cli("cat", "s", check=False)
    assert r.returncode != 0 and b"Traceback" not in r.stderr
    m = vault.mount("again", cache_dir=os.path.join(vault.root, "again-cache"))
    with open(m.p("s"), "rb") as f, pytest.raises(OSError) as exc:
        f.seek(0)
        f.read(200_000)
        f.seek((64 << 20) - 10)
        f.read(100_000)
    assert exc.value.errno == errno.EIO


def test_store_cannot_punch_a_hole_by_removing_a_chunk(vault: Vault) -> None:
    # Drop the first stored data chunk (right after the 32-byte header and the map):
    # a reader must not take it for a hole.
    def drop_first_chunk(raw: bytes) -> bytes:
        map_size = int.from_bytes(raw[12:16], "big")
        at = 32 + map_size
        return raw[:at] + raw[at + 65536 + 16 :]
    _tampered(vault, drop_first_chunk)


def test_store_cannot_rewrite_the_chunk_map(vault: Vault) -> None:
    def flip_map(raw: bytes) -> bytes:
        return raw[:40] + bytes([raw[40] ^ 1]) + raw[41:]
    _tampered(vault, flip_map)


def test_store_cannot_turn_a_sparse_payload_dense(vault: Vault) -> None:
    # Claim "no holes" (the dense magic, reserved bytes zero): the header hash changes.
    def densify(raw: bytes) -> bytes:
        return b"csfs-pl1" + raw[8:9] + bytes(7) + raw[16:]
    _tampered(vault, densify)
