"""The upload queue's version chain, with uploads held back on purpose.

The store wrapper below only delays PUTs (a fault we cannot cause otherwise);
everything else is the real local store, vault and file system layer.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

from csfs.crypto import generate_identity
from csfs.store import open_store
from csfs.store.base import Store
from csfs.vault import Vault
from csfs.vault.filesystem import FileSystem


class HeldStore:
    """Delegates to a real store; content uploads wait until ``release`` is set."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = inner.url
        self.release = threading.Event()
        self.waiting = threading.Event()

    def put(self, key: str, data: bytes, **kw: object) -> str:
        if key.startswith("c/"):
            self.waiting.set()
            assert self.release.wait(30)
        return self.inner.put(key, data, **kw)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def write_version(fs: FileSystem, path: str, data: bytes) -> None:
    fh = fs.open(path, os.O_WRONLY | os.O_TRUNC)
    fs.write(fh, 0, data)
    fs.release(fh)


def test_version_replaced_while_another_uploads(tmp_path: Path) -> None:
    me = generate_identity()
    inner = open_store(str(tmp_path / "store"))
    Vault.create(inner, me, state_dir=str(tmp_path / "state"))
    held = HeldStore(inner)
    vault = Vault.open(held, me, state_dir=str(tmp_path / "state"))  # type: ignore[arg-type]
    fs = FileSystem(vault, str(tmp_path / "cache"), 64 << 20)
    try:
        fh = fs.create("/f", 0o644)
        fs.write(fh, 0, b"one")
        fs.release(fh)  # v1 is queued; the uploader takes it and waits in its PUT
        assert held.waiting.wait(10)
        write_version(fs, "/f", b"two")  # v2: based on v1, which is uploading
        write_version(fs, "/f", b"three")  # v3 replaces v2, which never left the queue
        held.release.set()
        assert fs.sync(timeout=30)
        names = sorted(vault.listdir("/"))
        assert names == ["f"], names  # no "(conflict ...)" copy
        fh = fs.open("/f", os.O_RDONLY)
        assert fs.read(fh, 0, 100) == b"three"
        fs.release(fh)
    finally:
        held.release.set()
        fs.close()


class FailingSwitchStore(HeldStore):
    """Content uploads wait for ``release``; once ``fail_switch`` is set, the next
    manifest switch fails as an unreachable store would (a fault we cannot time
    otherwise)."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.fail_switch = False

    def put(self, key: str, data: bytes, **kw: object) -> str:
        if key.startswith("m/") and self.release.is_set() and self.fail_switch:
            self.fail_switch = False
            from csfs.errors import TransientStoreError
            raise TransientStoreError("connection reset (injected)")
        return super().put(key, data, **kw)


def test_version_written_while_a_failing_upload_was_under_way(tmp_path: Path) -> None:
    """v2 is written while v1 uploads, so v2 names v1 as its base; then v1's manifest
    switch fails. v2 must still replace v0 in the directory, not become a conflict copy."""
    me = generate_identity()
    inner = open_store(str(tmp_path / "store"))
    Vault.create(inner, me, state_dir=str(tmp_path / "state"))
    held = FailingSwitchStore(inner)
    vault = Vault.open(held, me, state_dir=str(tmp_path / "state"))  # type: ignore[arg-type]
    fs = FileSystem(vault, str(tmp_path / "cache"), 64 << 20)
    try:
        fh = fs.create("/f", 0o644)
        fs.write(fh, 0, b"zero")
        fs.release(fh)
        held.release.set()
        assert fs.sync(timeout=30)
        held.release.clear()
        held.waiting.clear()
        write_version(fs, "/f", b"one")  # uploading: waits in its content PUT
        assert held.waiting.wait(10)
        write_version(fs, "/f", b"two")  # based on "one", which is under way
        held.fail_switch = True
        held.release.set()  # "one" reaches its manifest switch, which fails
        assert fs.sync(timeout=30)
    finally:
        fs.close()
    assert list(vault.listdir("/")) == ["f"]
    buf = io.BytesIO()
    vault.read_file("/f", buf)
    assert buf.getvalue() == b"two"
