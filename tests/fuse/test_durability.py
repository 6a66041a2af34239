"""Close is durable (kill -9 before upload loses nothing); fsync returns once in the store."""

from __future__ import annotations

import os

import pytest

from tests.fuse.helpers import Vault, requires_fuse

pytestmark = [pytest.mark.mount, requires_fuse]


def test_kill_9_with_uploads_pending(vault: Vault) -> None:
    m = vault.mount(ttl=600)  # the manifest stays cached: close needs no store round trip
    files = {f"f{i}.bin": os.urandom(size) for i, size in
             enumerate([0, 1, 5000, 65536, 70_000, 300_000, 2_500_000])}
    fds = {}
    for name in files:
        fds[name] = os.open(m.p(name), os.O_WRONLY | os.O_CREAT, 0o644)
    with vault.uploads_blocked():
        for name, data in files.items():
            os.write(fds[name], data)
            os.close(fds[name])  # returns once the version is in the local queue
        assert "pending uploads: 6 files"  # the empty file needs no upload in m.status()
        m.kill()
    assert not os.path.ismount(m.path)
    # Nothing was committed while the store was blocked: the names are not in the store
    # yet (a new file reaches its directory together with its first version).
    listing = vault.cli("ls", "/").stdout.decode().split()
    assert not set(files) & set(listing)
    m.mount()
    m.sync()
    assert "pending uploads: 0 files" in m.status()
    for name, data in files.items():
        assert vault.cat(name) == data, name
    fresh = vault.mount("fresh", cache_dir=os.path.join(vault.root, "fresh-cache"))
    for name, data in files.items():
        with open(fresh.p(name), "rb") as f:
            assert f.read() == data, name


def test_fsync_means_in_store(vault: Vault) -> None:
    m = vault.mount()
    for i, size in enumerate([10, 1_500_000]):
        data = os.urandom(size)
        with open(m.p(f"s{i}"), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            # Still open: another process reading the store already sees the content.
            assert vault.cat(f"s{i}") == data
        data2 = data[: size // 2] + b"changed"
        fd = os.open(m.p(f"s{i}"), os.O_WRONLY)
        os.pwrite(fd, b"changed", size // 2)
        os.ftruncate(fd, size // 2 + 7)
        os.fsync(fd)
        assert vault.cat(f"s{i}") == data2
        os.close(fd)
