"""Each kind of refusal has its own class in csfs/errors.py (the FUSE layer maps
them to errno in one table): a read-only mount, a bad file handle, and a change
given up after losing every retry to other writers."""

from __future__ import annotations

from pathlib import Path

import pytest

from csfs.crypto import Identity, generate_identity
from csfs.crypto.keys import public_key_file
from csfs.errors import (
    BadHandle,
    ConflictError,
    ContentionError,
    PreconditionFailed,
    ReadOnlyMount,
)
from csfs.store import open_store
from csfs.store.base import Store
from csfs.vault import Vault, sharing
from csfs.vault.filesystem import FileSystem
from tests.vault.conftest import write_bytes


class LosingStore:
    """A real store on which every PUT under ``prefix`` with ``condition``
    (``if_match``: a switch, ``if_none_match``: an append) loses, as if another
    writer always got there first: a race we cannot lose on purpose otherwise.
    Everything else goes to the real store."""

    def __init__(self, inner: Store, prefix: str, condition: str) -> None:
        self.inner = inner
        self.url = inner.url
        self.prefix = prefix
        self.condition = condition

    def put(self, key: str, data: bytes, **kw: object) -> str:
        if key.startswith(self.prefix) and kw.get(self.condition):
            raise PreconditionFailed(f"{key}: another writer was first")
        return self.inner.put(key, data, **kw)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def _vault(tmp_path: Path, *losing: str) -> tuple[Vault, Identity]:
    me = generate_identity()
    store = open_store(str(tmp_path / "store"))
    kw = {"state_dir": str(tmp_path / "state"), "config_dir": str(tmp_path / "config")}
    Vault.create(store, me, **kw).close()
    wrapped = LosingStore(store, *losing) if losing else store
    return Vault.open(wrapped, me, **kw), me  # type: ignore[arg-type]


def test_a_read_only_mount_refuses_changes_with_its_own_error(tmp_path: Path) -> None:
    vault, _ = _vault(tmp_path)
    fs = FileSystem(vault, str(tmp_path / "cache"), 64 << 20, read_only=True)
    try:
        with pytest.raises(ReadOnlyMount):
            fs.create("/f", 0o644)
        with pytest.raises(ReadOnlyMount):
            fs.mkdir("/d", 0o755)
    finally:
        fs.close()


def test_a_bad_file_handle_has_its_own_error(tmp_path: Path) -> None:
    vault, _ = _vault(tmp_path)
    fs = FileSystem(vault, str(tmp_path / "cache"), 64 << 20)
    try:
        fh = fs.create("/f", 0o644)
        fs.release(fh)
        with pytest.raises(BadHandle):
            fs.read(fh, 0, 10)  # released
        with pytest.raises(BadHandle):
            fs.write(123456, 0, b"x")  # never given out
    finally:
        fs.close()


def test_a_directory_change_that_always_loses_gives_up_as_contention(tmp_path: Path) -> None:
    vault, _ = _vault(tmp_path, "m/", "if_match")
    with pytest.raises(ContentionError) as exc:
        vault.mkdir("/d")
    assert isinstance(exc.value, ConflictError)
    vault.close()


def test_an_access_log_append_that_always_loses_gives_up_as_contention(tmp_path: Path) -> None:
    vault, _ = _vault(tmp_path, "a/", "if_none_match")
    with pytest.raises(ContentionError):
        sharing.add_member(vault, public_key_file(generate_identity()), "bob")
    vault.close()


def test_an_envelope_rewrap_that_always_loses_gives_up_as_contention(tmp_path: Path) -> None:
    vault, me = _vault(tmp_path)
    vault.mkdir("/A")
    write_bytes(vault, "/A/f", b"data")
    sharing.add_member(vault, public_key_file(generate_identity()), "bob")
    vault.close()
    kw = {"state_dir": str(tmp_path / "state"), "config_dir": str(tmp_path / "config")}
    store = LosingStore(open_store(str(tmp_path / "store")), "k/", "if_match")
    losing = Vault.open(store, me, **kw)  # type: ignore[arg-type]
    with pytest.raises(ContentionError):
        sharing.share(losing, "/A", "bob")
    losing.close()
