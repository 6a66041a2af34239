"""An unlink removes the file the caller saw, never whatever the name holds later.

Mount A (a FileSystem over a Vault with a long TTL, so its view of the folder is
stale) unlinks or hides a name after client B put a new file there. A's
conditional manifest switch loses, A re-reads the folder, and must then leave
B's file alone: it is newer than A's unlink. A two-mount soak lost an
acknowledged version this way (an editor's save on A: libfuse hides the open
target, which became an unlink of B's new file).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from csfs.errors import ContentionError, NotFound, UsageError
from csfs.vault import Vault
from csfs.vault.filesystem import FileSystem
from tests.vault.conftest import read_bytes, write_bytes


def replace_by_other_client(other: Vault, path: str, data: bytes) -> None:
    """An editor's save on another client: write a temp file, rename it over ``path``."""
    write_bytes(other, path + ".tmp", data)
    other.rename(path + ".tmp", path)


def test_unlink_keeps_the_file_another_client_put_at_the_name(
    vault: Vault, reopen: Callable[..., Vault], tmp_path: Path
) -> None:
    write_bytes(vault, "/doc", b"old")
    fs = FileSystem(reopen(ttl=3600), str(tmp_path / "cache"), 64 << 20)
    try:
        assert fs.getattr("/doc").size == 3  # A's view of the folder: the old doc
        replace_by_other_client(reopen(), "/doc", b"new from B")
        fs.unlink("/doc")  # A removes the old doc, which B already replaced
    finally:
        fs.close()
    assert read_bytes(reopen(), "/doc") == b"new from B"


def test_unlink_keeps_a_newer_version_another_client_wrote_in_place(
    vault: Vault, reopen: Callable[..., Vault], tmp_path: Path
) -> None:
    write_bytes(vault, "/doc", b"old")
    fs = FileSystem(reopen(ttl=3600), str(tmp_path / "cache"), 64 << 20)
    try:
        assert fs.getattr("/doc").size == 3
        write_bytes(reopen(), "/doc", b"newer from B")  # same file, a new version
        fs.unlink("/doc")
    finally:
        fs.close()
    assert read_bytes(reopen(), "/doc") == b"newer from B"


def test_unlink_still_removes_what_the_caller_saw(
    vault: Vault, reopen: Callable[..., Vault], tmp_path: Path
) -> None:
    """A lost race on another name of the folder does not stop the unlink."""
    write_bytes(vault, "/doc", b"old")
    fs = FileSystem(reopen(ttl=3600), str(tmp_path / "cache"), 64 << 20)
    try:
        assert fs.getattr("/doc").size == 3
        write_bytes(reopen(), "/other", b"B")  # A's view is stale: its switch loses
        fs.unlink("/doc")
        with pytest.raises(NotFound):
            fs.getattr("/doc")
    finally:
        fs.close()
    assert sorted(reopen().listdir("/")) == ["other"]


@pytest.mark.parametrize("refreshed", [False, True], ids=["stale-view", "fresh-view"])
def test_editor_save_over_an_open_file_keeps_the_other_clients_version(
    vault: Vault, reopen: Callable[..., Vault], tmp_path: Path, refreshed: bool
) -> None:
    """The soak's loss: A has doc open and saves over it (write .tmp, rename over
    doc) after B put a new doc there. libfuse first hides the open target (a rename
    to .fuse_hidden*), unlinks that name on the last release, then does the rename.
    B's doc must survive as doc or as a conflict copy; A's save takes the name."""
    write_bytes(vault, "/doc", b"old")
    a = reopen(ttl=3600)
    fs = FileSystem(a, str(tmp_path / "cache"), 64 << 20)
    try:
        fh = fs.open("/doc", os.O_RDONLY)
        assert fs.read(fh, 0, 10) == b"old"
        tmp = fs.create("/doc.tmp-a", 0o644)
        fs.write(tmp, 0, b"saved by A")
        fs.release(tmp)
        replace_by_other_client(reopen(), "/doc", b"new from B")
        if refreshed:
            a.load_dir(a.root_id, fresh=True)  # A has seen B's doc (its TTL ran out)
        hidden = "/.fuse_hidden0000000100000001"
        fs.rename("/doc", hidden)  # libfuse's hide of the open target
        fs.rename("/doc.tmp-a", "/doc")
        fs.release(fh)
        fs.unlink(hidden)  # libfuse, on the last release of the hidden file
        assert fs.sync(timeout=30)
    finally:
        fs.close()
    c = reopen()
    contents = {n: read_bytes(c, "/" + n) for n in c.listdir("/")}
    assert contents.get("doc") == b"saved by A", contents
    assert b"new from B" in contents.values(), contents
    assert b"old" not in contents.values(), contents


def test_fchmod_after_another_client_saved_over_the_name_changes_only_the_open_file(
    vault: Vault, reopen: Callable[..., Vault], tmp_path: Path
) -> None:
    """fchmod (libfuse 3 passes the handle) goes to the open file, not to the other
    client's file that the path names by now."""
    write_bytes(vault, "/doc", b"old")
    a = reopen(ttl=3600)
    fs = FileSystem(a, str(tmp_path / "cache"), 64 << 20)
    try:
        fh = fs.open("/doc", os.O_RDWR)
        replace_by_other_client(reopen(), "/doc", b"new from B")
        a.load_dir(a.root_id, fresh=True)
        fs.chmod("/doc", 0o600, fh=fh)
        fs.utimens("/doc", 5, 7, fh=fh)
        assert fs.fgetattr(fh).mode & 0o777 == 0o600
        assert fs.fgetattr(fh).mtime_ns == 7
        fs.release(fh)
        assert fs.sync(timeout=30)
    finally:
        fs.close()
    c = reopen()
    assert c.lookup("/doc").mode == 0o644
    assert c.lookup("/doc").mtime_ns != 7
    assert read_bytes(c, "/doc") == b"new from B"


def test_hide_of_a_file_whose_name_another_client_took_keeps_its_queued_version(
    tmp_path: Path,
) -> None:
    """A rewrote doc in place (its version still queued) while B saved a new doc over
    it; A then saves over doc (it read B's doc there) with its own file still open.
    libfuse hides that open file: A's queued version was never replaced by anything
    A saw, so it must still reach the store (as a conflict copy), not be dropped."""
    from csfs.crypto import generate_identity
    from csfs.store import open_store
    from tests.vault.test_upload_queue import HeldStore

    me = generate_identity()
    inner = open_store(str(tmp_path / "store"))
    b = Vault.create(inner, me, state_dir=str(tmp_path / "b"))
    write_bytes(b, "/doc", b"base")
    held = HeldStore(inner)
    a = Vault.open(held, me, state_dir=str(tmp_path / "a"), ttl=3600)  # type: ignore[arg-type]
    fs = FileSystem(a, str(tmp_path / "cache"), 64 << 20)
    try:
        fh = fs.open("/doc", os.O_RDWR)
        fs.truncate(None, 0, fh)
        fs.write(fh, 0, b"rewritten by A")
        fs.flush(fh)  # close(): A's version is acknowledged, its upload held back
        replace_by_other_client(b, "/doc", b"saved by B")
        a.load_dir(a.root_id, fresh=True)
        peek = fs.open("/doc", os.O_RDONLY)  # A's save reads what doc holds now: B's
        assert fs.read(peek, 0, 100) == b"saved by B"
        fs.release(peek)
        tmp = fs.create("/doc.tmp-a", 0o644)
        fs.write(tmp, 0, b"saved by A")
        fs.release(tmp)
        hidden = "/.fuse_hidden0000000200000002"
        fs.rename("/doc", hidden)  # A's rewrite is still open (its release is late)
        fs.rename("/doc.tmp-a", "/doc")
        fs.release(fh)
        fs.unlink(hidden)
        held.release.set()
        assert fs.sync(timeout=30)
    finally:
        held.release.set()
        fs.close()
    c = Vault.open(inner, me, state_dir=str(tmp_path / "c"))
    contents = {n: read_bytes(c, "/" + n) for n in c.listdir("/")}
    assert contents.get("doc") == b"saved by A", contents
    assert b"rewritten by A" in contents.values(), contents


@pytest.mark.parametrize("committed", [False, True], ids=["queued-tmp", "committed-tmp"])
def test_rename_over_a_name_this_mount_said_was_empty_keeps_the_other_clients_file(
    vault: Vault, reopen: Callable[..., Vault], tmp_path: Path, committed: bool
) -> None:
    """A program checks that ``doc`` does not exist (stat: ENOENT), writes a temp file
    and renames it to ``doc``. If another client made ``doc`` meanwhile and this
    mount's view caught up during the rename, that file was replaced silently (a
    soak loss under injected faults): it is kept as a conflict copy."""
    a = reopen(ttl=3600)
    fs = FileSystem(a, str(tmp_path / "cache"), 64 << 20)
    try:
        with pytest.raises(NotFound):
            fs.getattr("/doc")  # the program sees no doc
        tmp = fs.create("/doc.tmp-a", 0o644)
        fs.write(tmp, 0, b"saved by A")
        fs.release(tmp)
        if committed:
            assert fs.sync(timeout=30)
        write_bytes(reopen(), "/doc", b"made by B")
        a.load_dir(a.root_id, fresh=True)  # A's view catches up before the rename
        fs.rename("/doc.tmp-a", "/doc")
        assert fs.sync(timeout=30)
    finally:
        fs.close()
    c = reopen()
    contents = {n: read_bytes(c, "/" + n) for n in c.listdir("/")}
    assert sorted(contents.values()) == [b"made by B", b"saved by A"], contents


def test_exchange_swaps_two_names_or_nothing(
    vault: Vault, reopen: Callable[..., Vault]
) -> None:
    """renameat2(RENAME_EXCHANGE): one switch; if another client put a new file at one
    of the names since the caller looked, nothing moves (that file is not swapped away)."""
    write_bytes(vault, "/a", b"A")
    write_bytes(vault, "/b", b"B")
    vault.exchange("/a", "/b")
    assert (read_bytes(reopen(), "/a"), read_bytes(reopen(), "/b")) == (b"B", b"A")
    stale = reopen(ttl=3600)
    stale.lookup("/a")
    replace_by_other_client(reopen(), "/a", b"new from C")
    with pytest.raises(ContentionError):
        stale.exchange("/a", "/b")
    c = reopen()
    assert (read_bytes(c, "/a"), read_bytes(c, "/b")) == (b"new from C", b"A")
    vault.mkdir("/sub")
    write_bytes(vault, "/sub/x", b"x")
    with pytest.raises(UsageError):
        vault.exchange("/a", "/sub/x")  # two folders: refused, nothing moves
    assert read_bytes(reopen(), "/sub/x") == b"x"


def test_saving_over_a_file_whose_new_version_is_still_queued_makes_no_conflict(
    vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One writer: x has a version still queued (the uploader is slow) when an editor
    renames its new temp file over x. The rename replaces what the store holds of x
    (its earlier version); it used to expect the queued one, which never reaches the
    store, and kept the earlier version as a conflict copy (seen under CI load)."""
    fs = FileSystem(vault, str(tmp_path / "cache"), 64 << 20)
    gate = threading.Event()
    try:
        fh = fs.create("/x", 0o644)
        fs.write(fh, 0, b"v1")
        fs.release(fh)
        assert fs.sync(timeout=30)
        upload = fs.queue._upload_objects

        def slow_upload(rec: Any) -> None:
            assert gate.wait(30)
            upload(rec)

        monkeypatch.setattr(fs.queue, "_upload_objects", slow_upload)
        fh = fs.open("/x", os.O_RDWR)
        fs.truncate(None, 0, fh=fh)
        fs.write(fh, 0, b"v2")
        fs.release(fh)  # v2 sealed and queued, not uploaded
        tmp = fs.create("/x.tmp", 0o644)
        fs.write(tmp, 0, b"new")
        fs.release(tmp)
        fs.rename("/x.tmp", "/x")
        gate.set()
        assert fs.sync(timeout=30)
    finally:
        gate.set()
        fs.close()
    assert sorted(vault.listdir("/")) == ["x"]
    assert read_bytes(vault, "/x") == b"new"
