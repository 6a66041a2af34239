"""A conflict copy and an `unshare --reencrypt` decrypt one version and encrypt it
again. Both must stream: no plaintext on the local disk (DESIGN: the local disk holds
ciphertext only) and memory bounded whatever the file's size."""

from __future__ import annotations

import io
import os
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from csfs.crypto import generate_identity
from csfs.crypto.keys import public_key_file
from csfs.store.local import LocalStore
from csfs.vault import sharing
from csfs.vault.vault import Vault
from tests.vault.conftest import read_bytes, write_bytes

MiB = 1 << 20
_watching: list[list[str]] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    # Every file the process opens for writing while a test watches (audit hooks
    # cannot be removed, so this one is idle outside `watch_writes`).
    if _watching and event == "open" and args[0] is not None:
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR)
        )
        if writing and not isinstance(path, int):
            _watching[-1].append(os.fsdecode(path))


sys.addaudithook(_audit)


@pytest.fixture
def watch_writes() -> Iterator[list[str]]:
    opened: list[str] = []
    _watching.append(opened)
    try:
        yield opened
    finally:
        _watching.pop()


def test_conflict_copy_writes_no_local_file(
    vault: Vault, tmp_path: Path, watch_writes: list[str]
) -> None:
    vault.tmp_dir = str(tmp_path / "tmp")
    os.mkdir(vault.tmp_dir)
    data = os.urandom(3 * MiB + 17)
    entry = write_bytes(vault, "/doc", data)
    del watch_writes[:]
    copy = vault.conflict_copy(vault.root_id, "doc", entry)
    assert [p for p in watch_writes if p.startswith(vault.tmp_dir)] == []
    names = [n for n in vault.listdir("/") if n != "doc"]
    assert len(names) == 1 and copy.id != entry.id
    assert read_bytes(vault, "/" + names[0]) == data


def test_reencrypt_holds_no_whole_file_in_memory(tmp_path: Path) -> None:
    # The local store: S3's parallel ranged downloads keep more in flight. The
    # upload still queues a few 8 MiB parts (about 60 MB whatever the size), so the
    # file is larger than that.
    alice, bob = generate_identity(), generate_identity()
    owner = Vault.create(LocalStore(str(tmp_path / "store")), alice, name="alice",
                         state_dir=str(tmp_path / "state"), config_dir=str(tmp_path / "cfg"))
    size = 128 * MiB
    data = os.urandom(size)
    owner.mkdir("/proj")
    owner.write_file("/proj/big.bin", io.BytesIO(data))
    sharing.add_member(owner, public_key_file(bob), "bob")
    sharing.share(owner, "/proj", "bob")
    tracemalloc.start()
    try:
        report = sharing.unshare(owner, "/proj", "bob", reencrypt=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.files_reencrypted == 1
    assert read_bytes(owner, "/proj/big.bin") == data
    # Upload parts in flight, never the whole file.
    assert peak < size * 3 // 4, f"peak traced memory {peak} for a {size}-byte file"
