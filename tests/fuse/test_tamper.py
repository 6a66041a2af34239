"""A flipped byte in the store reads as EIO through the mount, never as wrong bytes."""

from __future__ import annotations

import errno
import os

import pytest

from tests.fuse.helpers import Vault, requires_fuse

pytestmark = [pytest.mark.mount, requires_fuse]


def test_tampered_content_is_eio(vault: Vault) -> None:
    m = vault.mount()
    victim = os.urandom(300_000)
    with open(m.p("victim.bin"), "wb") as f:
        f.write(victim)
    m.sync()
    before = set(vault.list_keys("c/"))
    with open(m.p("other.txt"), "wb") as f:
        f.write(b"still fine\n")
    m.umount()
    others = set(vault.list_keys("c/")) - before
    assert len(before) == 1 and len(others) == 1
    key = before.pop()
    raw = bytearray(vault.get_raw(key))
    raw[len(raw) // 2] ^= 0x01  # in the middle of the second chunk
    vault.put_raw(key, bytes(raw))

    fresh = vault.mount("fresh", cache_dir=os.path.join(vault.root, "fresh-cache"))
    with open(fresh.p("victim.bin"), "rb") as f:
        assert f.read(1000) == victim[:1000]  # an untouched chunk still reads
        with pytest.raises(OSError) as exc:
            f.seek(0)
            f.read()
    assert exc.value.errno == errno.EIO
    with pytest.raises(OSError) as exc:
        with open(fresh.p("victim.bin"), "rb") as f:
            f.seek(len(victim) // 2)
            f.read(10)
    assert exc.value.errno == errno.EIO
    # The mount is still up and serving other files.
    assert os.path.ismount(fresh.path)
    assert sorted(os.listdir(fresh.path)) == ["other.txt", "victim.bin"]
    with open(fresh.p("other.txt"), "rb") as f:
        assert f.read() == b"still fine\n"
    assert "errors: 0" not in fresh.status()
