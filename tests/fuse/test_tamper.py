"""A flipped byte in the store reads as EIO through the mount, never as wrong bytes."""

from __future__ import annotations

import errno
import os
import subprocess
from typing import Any

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


def test_directory_cycle_is_eio_and_find_ends(make_vault: Any) -> None:
    """A writer lists a folder inside itself: `find` (and any backup walking the
    mount) must end, and the looping name reads as EIO, never as a folder."""
    from csfs.crypto.keys import load_identity
    from csfs.store import open_store
    from csfs.vault import Vault as Lib

    vault = make_vault("local")
    vault.cli("mkdir", "-p", "/a/b")
    lib = Lib.open(open_store(vault.store), load_identity(vault.env["CSFS_KEY"], b"pw"),
                   state_dir=os.path.join(vault.root, "lib-state"))
    a = lib.lookup("/a")
    lib.update_dir(lib.lookup("/a/b").id, lambda m: m.entries.__setitem__("loop", a))
    lib.close()
    m = vault.mount()
    r = subprocess.run(["find", m.path], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "loop" in r.stderr
    found = r.stdout.split()
    assert m.p("a/b") in found and len(found) < 10
    with pytest.raises(OSError) as exc:
        os.stat(m.p("a/b/loop"))
    assert exc.value.errno == errno.EIO
    with pytest.raises(OSError) as exc:
        os.listdir(m.p("a/b/loop/b"))
    assert exc.value.errno == errno.EIO
    assert os.path.ismount(m.path) and os.listdir(m.p("a")) == ["b"]


def test_names_that_are_not_utf8_are_refused_on_the_mount(make_vault: Any) -> None:
    """Vault names are strict UTF-8 (format.md 5.3): a program creating `caf\\xe9`
    (Latin-1) on the mount gets EINVAL, and nothing reaches the vault."""
    vault = make_vault("local")
    m = vault.mount()
    bad = os.fsencode(m.path) + b"/caf\xe9"
    for make in (lambda: open(bad, "wb").close(), lambda: os.mkdir(bad),
                 lambda: os.symlink(b"x", bad)):
        with pytest.raises(OSError) as exc:
            make()
        assert exc.value.errno == errno.EINVAL
    assert os.listdir(m.path) == []
    m.sync()
    assert vault.cli("ls", "/").stdout == b""
