"""kill -9 at each step of seal -> upload -> commit -> rename: no acknowledged close is lost,
and no rename leaves neither the old nor the new file.

The daemon kills itself at a named point (CSFS_CRASH_AT, csfs/vault/crashpoint.py);
the test then remounts without it and checks every acknowledged close.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.fuse.helpers import Mount, Vault, requires_fuse
from tests.fuse.helpers import read_file as read

pytestmark = [pytest.mark.mount, requires_fuse]


def mount_crashing_at(vault: Vault, m: Mount, point: str) -> None:
    vault.env["CSFS_CRASH_AT"] = point
    try:
        m.mount()
    finally:
        del vault.env["CSFS_CRASH_AT"]


def attempt(fn) -> bool:  # type: ignore[no-untyped-def]
    """True if the operation was acknowledged (returned without error)."""
    try:
        fn()
    except (OSError, AssertionError, subprocess.TimeoutExpired):
        return False  # the daemon is gone (ENOTCONN), or `csfs sync` failed
    return True


def save(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("point", ["sealed", "uploaded", "committed", "renamed"])
@pytest.mark.parametrize("queued", [True, False], ids=["queued", "committed-first"])
def test_editor_save_killed_at(moto_vault: Vault, point: str, queued: bool) -> None:
    """An editor's save (write .doc.tmp, rename it over doc) with the daemon killed at
    ``point``: doc always exists, and holds the new content once the rename was
    acknowledged; the new content is never lost once its close was acknowledged."""
    m = moto_vault.mount(ttl=600)
    save(m.p("doc"), b"old")
    m.umount()
    mount_crashing_at(moto_vault, m, point)
    new = os.urandom(3 << 20)  # a few MB: the upload is still running at the rename
    closed = attempt(lambda: save(m.p(".doc.tmp"), new))
    if closed and not queued:
        attempt(lambda: m.sync(timeout=30))
    renamed = closed and attempt(lambda: os.rename(m.p(".doc.tmp"), m.p("doc")))
    attempt(lambda: m.sync(timeout=30))
    m.kill()
    # The store's view right after the crash: never neither.
    listing = moto_vault.cli("ls", "/").stdout.decode().split()
    assert "doc" in listing, (point, listing)
    m.mount()
    m.sync()
    names = sorted(os.listdir(m.p()))
    contents = {n: read(m.p(n)) for n in names}
    assert "doc" in names, (point, names)
    assert not [n for n in names if "(conflict" in n], names  # one writer: no conflict
    if renamed:
        assert contents["doc"] == new, point
        assert names == ["doc"], names
    elif closed:
        assert new in contents.values(), (point, names)
        assert contents["doc"] in (b"old", new)
    else:
        assert contents["doc"] in (b"old", new)


@pytest.mark.parametrize("point", ["renamed", "renamed-across"])
def test_move_across_folders_killed_at(moto_vault: Vault, point: str) -> None:
    m = moto_vault.mount(ttl=600)
    os.mkdir(m.p("a"))
    os.mkdir(m.p("b"))
    save(m.p("a", "x"), b"x content")
    m.umount()
    mount_crashing_at(moto_vault, m, point)
    moved = attempt(lambda: os.rename(m.p("a", "x"), m.p("b", "x")))
    m.kill()
    m.mount()
    where = [d for d in ("a", "b") if os.path.exists(m.p(d, "x"))]
    assert where, "the moved file is in neither folder"
    for d in where:
        assert read(m.p(d, "x")) == b"x content"
    if moved:
        assert "b" in where
