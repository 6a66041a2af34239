"""fsync of a small change uploads the changed chunks, not the whole file (issue 11,
"fsync amplification"; format.md 2.6): delta versions that draw the rest from
earlier versions, read back by every reader, kept by fsck, and tamper-evident."""

from __future__ import annotations

import os
import random

import pytest

from tests.fuse.helpers import Vault, requires_fuse

pytestmark = [pytest.mark.mount, requires_fuse]

MIB = 1 << 20
CHUNK = 1 << 16


def version_bytes(vault: Vault) -> int:
    """Bytes of every file version in the store: payloads and envelopes."""
    return sum(len(vault.get_raw(k)) for p in ("c/", "k/") for k in vault.list_keys(p))


def write_at(path: str, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def test_fsync_of_one_byte_in_a_4_mib_file_uploads_a_few_chunks(vault: Vault) -> None:
    m = vault.mount()
    rng = random.Random(11)  # noqa: S311 (test data, seeded)
    data = bytearray(rng.randbytes(4 * MIB))
    with open(m.p("db"), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    m.sync()
    start = version_bytes(vault)
    for n in range(24):  # more than the 8 sources a version may name
        before = version_bytes(vault)
        at = rng.randrange(len(data))
        write_at(m.p("db"), at, bytes([n]))
        data[at] = n
        added = version_bytes(vault) - before
        # The changed chunk and the last one, now and then a merge of earlier small
        # versions (at most 8 sources); was 4 MiB every time.
        assert added < 2 * MIB, (n, added)
    assert version_bytes(vault) - start < 24 * 5 * CHUNK
    with open(m.p("db"), "rb") as f:
        assert f.read() == data
    # Another process, reading only the store: the CLI and a mount with an empty cache.
    assert vault.cat("/db") == data
    fresh = vault.mount("fresh", cache_dir=os.path.join(vault.root, "fresh-cache"))
    with open(fresh.p("db"), "rb") as f:
        f.seek(3 * MIB)
        assert f.read(MIB) == data[3 * MIB :]
        f.seek(0)
        assert f.read() == data


def test_fsck_repair_keeps_the_sources_of_the_current_version(vault: Vault) -> None:
    m = vault.mount()
    data = bytearray(random.Random(12).randbytes(2 * MIB))  # noqa: S311 (test data)
    with open(m.p("f"), "wb") as f:
        f.write(data)
    m.sync()
    for at in (5, MIB + 7, 2 * MIB - 3):
        write_at(m.p("f"), at, b"#")
        data[at] = ord("#")
    m.sync()
    out = vault.cli("fsck", "--repair", "--grace", "0").stdout.decode()
    assert "problem" not in out.lower(), out
    assert vault.cat("/f") == data  # the first version, holding most chunks, was kept
    fresh = vault.mount("fresh", cache_dir=os.path.join(vault.root, "fresh-cache"))
    with open(fresh.p("f"), "rb") as f:
        assert f.read() == data


def test_a_source_chunk_swapped_in_the_store_fails_the_read(vault: Vault) -> None:
    m = vault.mount()
    data = random.Random(13).randbytes(MIB)  # noqa: S311 (test data)
    with open(m.p("f"), "wb") as f:
        f.write(data)
    m.sync()
    (first,) = vault.list_keys("c/")
    write_at(m.p("f"), 10, b"!")
    m.sync()
    src = vault.get_raw(first)
    slot = CHUNK + 16
    body = src[32:]  # a dense first version: chunks from offset 32
    vault.put_raw(first, src[:32] + body[2 * slot : 3 * slot] + body[slot : 2 * slot]
                  + body[:slot] + body[3 * slot :])
    fresh = vault.mount("fresh", cache_dir=os.path.join(vault.root, "fresh-cache"))
    with open(fresh.p("f"), "rb") as f:
        f.seek(2 * CHUNK)
        with pytest.raises(OSError):
            f.read(CHUNK)
    assert vault.cli("cat", "/f", check=False).returncode != 0
