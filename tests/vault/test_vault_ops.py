"""Vault operations on every backend: paths, files, versions, trees, random access."""

from __future__ import annotations

import io
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from csfs.errors import NotFound, UsageError
from csfs.vault import Vault
from csfs.vault import transfer
from csfs.vault.layout import content_key, envelope_key
from tests.vault.conftest import make_tree, read_bytes, write_bytes

KIB, MIB = 1 << 10, 1 << 20


def test_mkdir_and_parents(vault: Vault) -> None:
    vault.mkdir("/a")
    assert vault.lookup("/a").type == "d"
    with pytest.raises(UsageError, match="already exists"):
        vault.mkdir("/a")
    with pytest.raises(NotFound):
        vault.mkdir("/x/y")  # no parent without -p
    e = vault.mkdir("/x/y/z", parents=True)
    assert vault.lookup("/x/y/z").id == e.id
    # -p on an existing directory is not an error and returns the same node
    assert vault.mkdir("/x/y/z", parents=True).id == e.id
    assert set(vault.listdir("/")) == {"a", "x"}
    assert set(vault.listdir("/x")) == {"y"}
    write_bytes(vault, "/a/f", b"x")
    with pytest.raises(UsageError, match="already exists"):
        vault.mkdir("/a/f", parents=True)  # -p over a file must fail
    with pytest.raises(UsageError):
        vault.mkdir("/a/f/g")  # a file is not a directory


@pytest.mark.parametrize("size", [0, 1, 64 * KIB, MIB + 1])
def test_write_read_round_trip(vault: Vault, size: int) -> None:
    data = os.urandom(size)
    e = write_bytes(vault, "/f.bin", data)
    assert e.size == size and e.type == "f"
    assert read_bytes(vault, "/f.bin") == data
    assert vault.lookup("/f.bin").size == size


def test_large_file_path(vault: Vault) -> None:
    """20 MiB: larger than SMALL_FILE (8 MiB), so upload goes through a temp file
    (and multipart on S3), and the read through get_to_file."""
    data = random.Random(1).randbytes(20 * MIB)  # noqa: S311 - test data
    write_bytes(vault, "/big", data)
    assert read_bytes(vault, "/big") == data


def test_overwrite_keeps_id_new_version(vault: Vault) -> None:
    e1 = write_bytes(vault, "/f", b"one")
    e2 = write_bytes(vault, "/f", b"second content")
    assert e2.id == e1.id
    assert e2.version != e1.version
    assert read_bytes(vault, "/f") == b"second content"
    # the old version's objects still exist (orphans until fsck --repair); never modified
    assert vault.store.head(content_key(e1.id, e1.version))
    assert vault.store.head(envelope_key(e1.id, e1.version))
    assert list(vault.listdir("/")) == ["f"]


def test_overwrite_keeps_mode(vault: Vault) -> None:
    write_bytes(vault, "/f", b"1", mode=0o600)
    assert write_bytes(vault, "/f", b"2").mode == 0o600


def test_rename_within_and_across(vault: Vault) -> None:
    e = write_bytes(vault, "/a.txt", b"hello")
    vault.rename("/a.txt", "/b.txt")
    assert not vault.exists("/a.txt")
    assert vault.lookup("/b.txt").id == e.id
    vault.mkdir("/d")
    moved = vault.rename("/b.txt", "/d/c.txt")
    assert moved.id == e.id and moved.version == e.version  # no content copied
    assert set(vault.listdir("/")) == {"d"}
    assert read_bytes(vault, "/d/c.txt") == b"hello"
    # directories move with their contents
    vault.mkdir("/e")
    vault.rename("/d", "/e/d2")
    assert read_bytes(vault, "/e/d2/c.txt") == b"hello"


def test_rename_over_existing_file(vault: Vault) -> None:
    a = write_bytes(vault, "/a", b"AAA")
    write_bytes(vault, "/b", b"BBBB")
    vault.rename("/a", "/b")
    assert list(vault.listdir("/")) == ["b"]
    assert vault.lookup("/b").id == a.id
    assert read_bytes(vault, "/b") == b"AAA"
    # across directories, too
    vault.mkdir("/d")
    write_bytes(vault, "/d/x", b"old")
    vault.rename("/b", "/d/x")
    assert read_bytes(vault, "/d/x") == b"AAA"
    assert list(vault.listdir("/")) == ["d"]
    vault.mkdir("/e")
    with pytest.raises(UsageError, match="cannot replace non-directory"):
        vault.rename("/e", "/d/x")  # a directory never replaces a file
    assert read_bytes(vault, "/d/x") == b"AAA"


def test_rename_refusals(vault: Vault) -> None:
    vault.mkdir("/a/b", parents=True)
    with pytest.raises(UsageError, match="into itself"):
        vault.rename("/a", "/a/b/c")
    with pytest.raises(UsageError, match="into itself"):
        vault.rename("/a", "/a/c")
    write_bytes(vault, "/f", b"f")
    write_bytes(vault, "/g", b"g")
    with pytest.raises(UsageError, match="already exists"):
        vault.rename("/f", "/g", replace_existing=False)
    with pytest.raises(UsageError, match="cannot replace"):
        vault.rename("/f", "/a")  # file over a non-empty directory
    with pytest.raises(UsageError, match="cannot replace non-directory"):
        vault.rename("/a", "/f")
    with pytest.raises(NotFound):
        vault.rename("/nope", "/x")
    assert read_bytes(vault, "/f") == b"f" and read_bytes(vault, "/g") == b"g"
    # a sibling whose name starts with the source's name is not "inside" it
    vault.rename("/a", "/ab")
    assert vault.lookup("/ab/b").type == "d"


def test_remove(vault: Vault) -> None:
    write_bytes(vault, "/f", b"x")
    vault.mkdir("/empty")
    vault.mkdir("/full/sub", parents=True)
    write_bytes(vault, "/full/sub/g", b"y")
    vault.remove("/f")
    assert not vault.exists("/f")
    with pytest.raises(NotFound):
        vault.remove("/f")
    vault.remove("/empty")
    with pytest.raises(UsageError, match="not empty"):
        vault.remove("/full")
    assert read_bytes(vault, "/full/sub/g") == b"y"
    with pytest.raises(UsageError, match="is a directory"):
        vault.remove("/full", recursive=True, expect_dir=False)
    vault.remove("/full", recursive=True)
    assert vault.listdir("/") == {}
    with pytest.raises(UsageError):
        vault.remove("/")


def test_symlink_and_setattr(vault: Vault) -> None:
    write_bytes(vault, "/target", b"t")
    link = vault.symlink("../somewhere/target", "/ln")
    assert link.type == "l" and vault.lookup("/ln").target == "../somewhere/target"
    with pytest.raises(UsageError, match="already exists"):
        vault.symlink("x", "/ln")
    with pytest.raises(UsageError):
        vault.read_file("/ln", io.BytesIO())
    e = vault.setattr("/target", mode=0o600, mtime_ns=1_234_567_890_123_456_789)
    got = vault.lookup("/target")
    assert got.mode == 0o600 and got.mtime_ns == 1_234_567_890_123_456_789 == e.mtime_ns
    assert got.version == e.version and read_bytes(vault, "/target") == b"t"
    vault.setattr("/target", mode=0o640)
    assert vault.lookup("/target").mtime_ns == 1_234_567_890_123_456_789  # untouched
    with pytest.raises(NotFound):
        vault.setattr("/missing", mode=0o600)


def test_listdir(vault: Vault) -> None:
    assert vault.listdir() == {}
    vault.mkdir("/d")
    write_bytes(vault, "/f", b"12345")
    vault.symlink("f", "/l")
    ls = vault.listdir("/")
    assert {n: e.type for n, e in ls.items()} == {"d": "d", "f": "f", "l": "l"}
    assert ls["f"].size == 5
    with pytest.raises(UsageError, match="not a directory"):
        vault.listdir("/f")
    with pytest.raises(NotFound):
        vault.listdir("/nope")


def test_names_round_trip(vault: Vault) -> None:
    for name in ["späce and ünïcode ✓", "a" * 255, "-dash", ".hidden"]:
        write_bytes(vault, "/" + name, name.encode())
        assert read_bytes(vault, "/" + name) == name.encode()
    with pytest.raises(UsageError, match="too long"):
        write_bytes(vault, "/" + "a" * 256, b"")


def _tree_snapshot(root: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for dirpath, dirs, files in os.walk(root):
        for d in dirs:
            p = os.path.join(dirpath, d)
            out[os.path.relpath(p, root)] = ("dir",)
        for f in files:
            p = os.path.join(dirpath, f)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            else:
                out[rel] = ("file", Path(p).read_bytes(), os.stat(p).st_mode & 0o777,
                            os.stat(p).st_mtime_ns)
    return out


def test_put_get_tree(vault: Vault, tmp_path: Path) -> None:
    src = str(tmp_path / "src")
    make_tree(src, {
        "top.txt": b"top",
        "empty.bin": b"",
        "a/one.txt": os.urandom(1000),
        "a/b/c/deep.bin": os.urandom(70_000),
        "x/y.txt": b"y" * 17,
    }, dirs=("emptydir", "a/b/emptier"), links={"a/link": "../top.txt", "dangling": "nowhere"})
    os.chmod(os.path.join(src, "top.txt"), 0o600)
    n = transfer.put_tree(vault, src, "/up")
    assert n == 5
    assert vault.lookup("/up/a/link").target == "../top.txt"
    assert vault.listdir("/up/emptydir") == {}
    dst = str(tmp_path / "dst")
    assert transfer.get_tree(vault, "/up", dst) == 5
    assert _tree_snapshot(dst) == _tree_snapshot(src)
    # putting the same tree again makes new versions of the same nodes, no conflicts
    before = vault.lookup("/up/a/one.txt")
    transfer.put_tree(vault, src, "/up")
    after = vault.lookup("/up/a/one.txt")
    assert after.id == before.id and after.version != before.version
    assert not any("conflict" in n for n in vault.listdir("/up/a"))


def test_random_access_read_range(vault: Vault) -> None:
    rng = random.Random(7)  # noqa: S311 - reproducible test data
    size = 5 * 65536 + 1234  # six chunks, a short last one
    data = rng.randbytes(size)
    write_bytes(vault, "/r", data)
    entry = vault.lookup("/r")
    env, cipher = vault.open_version(entry)
    assert env.length == size
    cases = [(0, 0), (0, 1), (0, size), (65535, 2), (65536, 65536), (size - 1, 10),
             (size, 5), (size + 100, 5), (3 * 65536 - 7, 3 * 65536), (100, 0)]
    cases += [(rng.randrange(size), rng.randrange(1, 200_000)) for _ in range(25)]
    for off, n in cases:
        assert vault.read_range(entry, cipher, off, n) == data[off : off + n], (off, n)


def test_read_range_small_and_empty(vault: Vault) -> None:
    write_bytes(vault, "/s", b"abcdef")
    e = vault.lookup("/s")
    _, cipher = vault.open_version(e)
    assert vault.read_range(e, cipher, 2, 3) == b"cde"
    assert vault.read_range(e, cipher, 4, 100) == b"ef"


def test_reopen_sees_everything(vault: Vault, reopen: Callable[..., Vault]) -> None:
    vault.mkdir("/d/e", parents=True)
    write_bytes(vault, "/d/e/f", b"payload")
    vault.symlink("e/f", "/d/l")
    vault.setattr("/d/e/f", mode=0o640)
    vault.close()
    other = reopen()
    assert other.header.vault_id == vault.header.vault_id
    assert read_bytes(other, "/d/e/f") == b"payload"
    assert other.lookup("/d/e/f").mode == 0o640
    assert other.lookup("/d/l").target == "e/f"
    assert sorted(other.listdir("/d")) == ["e", "l"]
    # and writes from the second object are visible to a third
    write_bytes(other, "/new", b"n")
    other.close()
    assert read_bytes(reopen(), "/new") == b"n"


def test_open_missing_vault(store: object, identity: object, state_dir: str) -> None:
    with pytest.raises(NotFound, match="no csfs vault") as info:
        Vault.open(store, identity, state_dir=state_dir)  # type: ignore[arg-type]
    assert info.value.hint and "csfs init" in info.value.hint


def test_create_twice_refused(vault: Vault, identity: object, state_dir: str) -> None:
    with pytest.raises(UsageError, match="already exists"):
        Vault.create(vault.store, identity, state_dir=state_dir)  # type: ignore[arg-type]
