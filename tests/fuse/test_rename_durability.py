"""Durability at the edges: renames, the queue's conflict rules, quarantine, queue metadata.

Each test is a user's story on real mounts over moto S3 (two mounts of one vault
where it takes two), with kill -9 where the story has a crash in it.
"""

from __future__ import annotations

import errno
import os
import time

import pytest

from tests.fuse.helpers import Mount, Vault, poll, requires_fuse
from tests.fuse.helpers import read_file as read

pytestmark = [pytest.mark.mount, requires_fuse]


def write(path: str, data: bytes, *, fsync: bool = False) -> None:
    with open(path, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def cached_content_keys(m: Mount) -> set[str]:
    """The content objects this mount's cache holds (the block maps name their keys)."""
    out = set()
    objects = os.path.join(m.cache_dir, "objects")
    for name in os.listdir(objects):
        if name.endswith(".map"):
            with open(os.path.join(objects, name)) as f:
                key = f.read().split("\n", 1)[0]
            if key.startswith("c/"):
                out.add(key)
    return out


def test_kill_9_after_rename_of_fresh_file_over_a_name(moto_vault: Vault) -> None:
    """mv fresh X: until the new X is committed, the store keeps the old X, and after a
    kill -9 the new one arrives; at no moment does neither exist."""
    m = moto_vault.mount(ttl=600)
    write(m.p("X"), b"old X", fsync=True)
    big = os.urandom(40 << 20)  # its upload is still running when the daemon dies
    write(m.p("fresh"), big)
    os.rename(m.p("fresh"), m.p("X"))
    m.kill()
    listing = moto_vault.cli("ls", "/").stdout.decode().split()
    assert "X" in listing, listing  # the store still has the old X (or already the new one)
    assert moto_vault.cat("X") in (b"old X", big)
    m.mount()
    m.sync(timeout=120)
    assert moto_vault.cat("X") == big
    assert sorted(os.listdir(m.p())) == ["X"]


@pytest.mark.parametrize("tmp_committed", [False, True], ids=["tmp-queued", "tmp-committed"])
def test_rename_over_keeps_the_other_clients_newer_version(
    moto_vault: Vault, tmp_committed: bool
) -> None:
    """An editor on B saves doc (write .doc.tmp, rename over doc) while B has not yet
    seen A's newer doc: both versions survive, one of them as a conflict copy. The
    temp file may still be queued at the rename, or already in the store."""
    a = moto_vault.mount("a", ttl=1)
    write(a.p("doc"), b"v1", fsync=True)
    b = moto_vault.mount("b", ttl=600)  # B keeps its view of the folder
    assert read(b.p("doc")) == b"v1"
    if tmp_committed:
        write(b.p(".doc.tmp"), b"B's edit of v1", fsync=True)
    write(a.p("doc"), b"A's v2", fsync=True)
    if not tmp_committed:
        write(b.p(".doc.tmp"), b"B's edit of v1")
    os.rename(b.p(".doc.tmp"), b.p("doc"))
    b.sync()
    a.sync()
    names = [n for n in moto_vault.cli("ls", "/").stdout.decode().split("\n") if n]
    contents = {moto_vault.cat(n) for n in names}
    assert contents == {b"A's v2", b"B's edit of v1"}, (names, contents)
    assert "doc" in names and len(names) == 2
    assert any("(conflict" in n for n in names), names


@pytest.mark.parametrize("tmp_committed", [False, True], ids=["tmp-queued", "tmp-committed"])
def test_save_keeps_a_version_the_editor_never_read(moto_vault: Vault, tmp_committed: bool) -> None:
    """A's editor reads doc (v1); B saves v2; A's mount then learns of v2 (a listing
    after its cache expired) but the editor never reads it, and saves over doc. v2 was
    never seen by anyone on A: it is kept as a conflict copy, not silently replaced.
    (The soak lost versions this way: the mount's refreshed view stood in for what the
    editor had read.)"""
    a = moto_vault.mount("a", ttl=1)
    b = moto_vault.mount("b", ttl=1)
    write(a.p("doc"), b"v1", fsync=True)
    a.sync()
    assert read(a.p("doc")) == b"v1"  # what A's editor loads
    assert poll(lambda: read(b.p("doc")) == b"v1")  # B edits the same file
    write(b.p("doc"), b"B's v2", fsync=True)
    b.sync()
    if tmp_committed:
        write(a.p(".doc.tmp"), b"A's edit of v1", fsync=True)
        a.sync()
    assert poll(lambda: os.stat(a.p("doc")).st_size == len(b"B's v2"), timeout=10)
    if not tmp_committed:
        write(a.p(".doc.tmp"), b"A's edit of v1")
    os.rename(a.p(".doc.tmp"), a.p("doc"))
    a.sync()
    names = [n for n in moto_vault.cli("ls", "/").stdout.decode().split("\n") if n]
    contents = {moto_vault.cat(n) for n in names}
    assert contents == {b"B's v2", b"A's edit of v1"}, (names, contents)
    assert moto_vault.cat("doc") == b"A's edit of v1"


def test_ftruncate_of_an_open_file_truncates_that_file(moto_vault: Vault) -> None:
    """A opens doc and keeps it open; B saves over doc (a new file at the name); A then
    ftruncate()s and rewrites its descriptor. That edits the file A has open: B's save
    survives. (mfusepy drops the handle of ftruncate under libfuse 3, and the path then
    named B's file: the soak lost B's versions to an empty one.)"""
    a = moto_vault.mount("a", ttl=1)
    b = moto_vault.mount("b", ttl=1)
    write(a.p("doc"), b"v1", fsync=True)
    a.sync()
    assert poll(lambda: read(b.p("doc")) == b"v1")
    with open(a.p("doc"), "r+b") as f:
        write(b.p(".doc.tmp"), b"B's save")
        os.rename(b.p(".doc.tmp"), b.p("doc"))
        b.sync()
        assert poll(lambda: read(a.p("doc")) == b"B's save")
        f.truncate(0)
        f.write(b"A's rewrite")
    a.sync()
    names = [n for n in moto_vault.cli("ls", "/").stdout.decode().split("\n") if n]
    contents = {moto_vault.cat(n) for n in names}
    assert contents == {b"B's save", b"A's rewrite"}, (names, contents)


def test_move_to_another_folder_takes_the_other_clients_newer_version(
    moto_vault: Vault,
) -> None:
    """B rewrites doc in place; A, whose view of the folder predates that, moves doc into
    sub. The move takes B's version along (the move drops what the source holds, and
    that is B's), instead of putting A's older view of doc in sub and dropping B's."""
    a = moto_vault.mount("a", ttl=600)  # A keeps its view of the folder
    b = moto_vault.mount("b", ttl=1)
    os.mkdir(a.p("sub"))
    write(a.p("doc"), b"v1", fsync=True)
    a.sync()
    assert poll(lambda: read(b.p("doc")) == b"v1")
    with open(b.p("doc"), "r+b") as f:
        f.truncate(0)
        f.write(b"B's v2")
    b.sync()
    assert read(a.p("doc")) == b"v1"  # still A's view
    os.rename(a.p("doc"), a.p("sub", "doc"))
    a.sync()
    names = [n for n in moto_vault.cli("ls", "/sub").stdout.decode().split("\n") if n]
    assert names == ["doc"], names
    assert moto_vault.cat("sub/doc") == b"B's v2"
    assert "doc" not in moto_vault.cli("ls", "/").stdout.decode().split()


def test_crash_between_two_queued_versions_keeps_the_newest(moto_vault: Vault) -> None:
    """One writer: version N is uploading, N+1 is queued, kill -9. After the restart the
    name shows N+1, and there is no conflict copy (there was only one writer)."""
    m = moto_vault.mount(ttl=600)
    write(m.p("f"), b"N-1", fsync=True)
    with moto_vault.uploads_blocked():
        write(m.p("f"), b"N")
        time.sleep(1.5)  # the uploader takes N and hangs in its PUT
        write(m.p("f"), b"N+1")
        m.kill()
    m.mount()
    m.sync()
    assert sorted(os.listdir(m.p())) == ["f"]
    assert moto_vault.cat("f") == b"N+1"


def test_an_upload_that_cannot_succeed_is_quarantined(moto_vault: Vault, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A queued object whose key is taken by other bytes can never upload. It is
    quarantined (kept, listed with its path, exportable), the rest moves on, and
    `csfs sync` and `csfs umount` return."""
    m = moto_vault.mount(ttl=600)
    os.mkdir(m.p("docs"))
    m.sync()
    assert os.listdir(m.p("docs")) == []  # the new folder's manifest is in the cache now
    stuck = os.urandom(5000)
    with moto_vault.uploads_blocked():
        write(m.p("docs", "stuck.txt"), stuck)
        m.kill()
    keys = cached_content_keys(m)
    assert len(keys) == 1
    moto_vault.put_raw(keys.pop(), os.urandom(9999))  # someone else's bytes under that key
    m.mount()
    write(m.p("other.txt"), b"other")
    m.sync(timeout=60)  # returns: the stuck one no longer blocks the queue
    assert moto_vault.cat("other.txt") == b"other"
    status = m.status()
    assert "quarantined: 1" in status, status
    assert "/docs/stuck.txt" in status, status
    assert "csfs quarantine export" in status, status
    errors = [line for line in status.splitlines() if line.startswith("  ")]
    assert len(errors) == len(set(errors)), status  # each error once
    ls = m.cli("quarantine", "ls", m.path).stdout.decode()
    assert "/docs/stuck.txt" in ls, ls
    qid = ls.split()[0]
    out = tmp_path / "rescued.txt"
    m.cli("quarantine", "export", m.path, qid, str(out))
    assert out.read_bytes() == stuck
    # Once rescued, the user drops it: gone from the list, for good (after a remount).
    bad = m.cli("quarantine", "drop", m.path, "nosuchid", check=False)
    assert bad.returncode != 0 and "nothing quarantined under 'nosuchid'" in bad.stderr.decode()
    assert bad.stderr.decode().count("csfs: error:") == 1 and b"Traceback" not in bad.stderr
    m.cli("quarantine", "drop", m.path, qid)
    assert m.cli("quarantine", "ls", m.path).stdout.decode() == ""
    m.umount()  # returns too
    m.mount()
    assert m.cli("quarantine", "ls", m.path).stdout.decode() == ""
    assert "quarantined: 0" in m.status()


def test_no_plaintext_name_on_local_disk_while_an_upload_waits(moto_vault: Vault) -> None:
    m = moto_vault.mount(ttl=600)
    os.mkdir(m.p("d"))
    m.sync()
    assert os.listdir(m.p("d")) == []
    secret = "payroll-2026-topsecret-name.xlsx"
    with moto_vault.uploads_blocked():
        write(m.p("d", secret), b"content")
        os.rename(m.p("d", secret), m.p("d", secret + ".renamed"))
        time.sleep(0.5)
        found = []
        for top in (m.cache_dir, moto_vault.env["XDG_STATE_HOME"],
                    moto_vault.env["XDG_CACHE_HOME"]):
            for d, _, files in os.walk(top):
                for f in files:
                    assert b"payroll" not in f.encode()
                    try:
                        with open(os.path.join(d, f), "rb") as fh:
                            if b"payroll-2026" in fh.read():
                                found.append(os.path.join(d, f))
                    except OSError:
                        pass
        m.kill()
    assert not found, found
    m.mount()
    m.sync()
    assert moto_vault.cat("d/" + secret + ".renamed") == b"content"


def test_move_to_another_folder_carries_the_other_clients_newer_version(
    moto_vault: Vault,
) -> None:
    """mv f sub/ on a mount whose view of f is old: the version another client wrote
    to f meanwhile moves with it; the old one does not come back in its place."""
    a = moto_vault.mount("a", ttl=600)  # a's view of / stays as it first read it
    os.mkdir(a.p("sub"))
    write(a.p("f"), b"first")
    a.sync()
    assert read(a.p("f")) == b"first"
    b = moto_vault.mount("b", ttl=1)
    with open(b.p("f"), "r+b") as f:  # in place: the same file, a newer version
        f.write(b"SECOND")
    b.sync()
    assert moto_vault.cat("f") == b"SECOND"
    os.rename(a.p("f"), a.p("sub", "f"))
    a.sync()
    assert moto_vault.cat("sub/f") == b"SECOND"
    assert "f" not in moto_vault.cli("ls", "/").stdout.decode().split()


def test_rmdir_on_one_mount_keeps_a_file_another_mount_wrote_in_the_folder(
    moto_vault: Vault,
) -> None:
    """Mount B still sees the folder empty (its TTL) when it runs rmdir, after A wrote
    a file into it: B's rmdir fails ENOTEMPTY and the file stays, where it used to be
    left in a folder nothing listed (and `fsck --repair` deleted it)."""
    a = moto_vault.mount("a", ttl=1)
    os.mkdir(a.p("box"))
    a.sync()
    b = moto_vault.mount("b", ttl=600)  # B keeps its view of the folder
    assert os.listdir(b.p("box")) == []
    write(a.p("box", "f"), b"from A", fsync=True)
    with pytest.raises(OSError) as err:
        os.rmdir(b.p("box"))
    assert err.value.errno == errno.ENOTEMPTY
    assert moto_vault.cat("box/f") == b"from A"
    r = moto_vault.cli("fsck", "--repair", "--grace", "0", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert moto_vault.cat("box/f") == b"from A"
