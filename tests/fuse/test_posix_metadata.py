"""POSIX metadata is stored, not made up (issue 11): it survives a remount, reaches a
second mount, and stays encrypted. test_posix.py checks the semantics within one mount."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from tests.fuse.helpers import Vault, requires_fuse
from tests.fuse.posix_helpers import OTHER_GID, OTHER_UID, UTIME_OMIT, as_user, utimensat

pytestmark = [
    pytest.mark.mount,
    requires_fuse,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: files made as another uid"),
]


@pytest.fixture
def vault() -> Iterator[Vault]:
    base = tempfile.mkdtemp(prefix="csfs-meta-")  # outside pytest's 0700 tmp: uid 1000 enters
    os.chmod(base, 0o755)
    os.mkdir(os.path.join(base, "v"), 0o755)
    v = Vault(os.path.join(base, "v"), "local")
    try:
        yield v
    finally:
        v.cleanup()
        subprocess.run(["rm", "-rf", base], check=False)


def test_owner_times_xattrs_special_files_survive_remount(vault: Vault) -> None:
    m = vault.mount("mnt", ttl=1, extra=("-o", "allow_other"))
    os.chmod(m.path, 0o777)
    d = m.p("d")
    os.mkdir(d)
    os.chmod(d, 0o777)

    def make() -> None:
        with open(f"{d}/mine", "wb") as f:
            f.write(b"secret")
        os.mkdir(f"{d}/sub")
        os.mkfifo(f"{d}/fifo", 0o640)

    as_user(make)
    os.setxattr(f"{d}/mine", "user.color", b"blue")
    os.utime(f"{d}/mine", ns=(1_000_000_000, 2_000_000_000))
    os.chown(f"{d}/sub", OTHER_UID + 1, OTHER_GID + 1)
    os.mknod(f"{d}/tty", 0o620 | stat.S_IFCHR, os.makedev(4, 1))
    m.sync()
    m.remount()
    st = os.stat(f"{d}/mine")
    assert (st.st_uid, st.st_gid) == (OTHER_UID, OTHER_GID)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_000, 2_000_000_000)
    assert st.st_ctime_ns > 2_000_000_000
    assert os.getxattr(f"{d}/mine", "user.color") == b"blue"
    assert (os.stat(f"{d}/sub").st_uid, os.stat(f"{d}/sub").st_gid) == (
        OTHER_UID + 1, OTHER_GID + 1)
    assert stat.S_ISFIFO(os.stat(f"{d}/fifo").st_mode)
    tty = os.stat(f"{d}/tty")
    assert stat.S_ISCHR(tty.st_mode) and tty.st_rdev == os.makedev(4, 1)
    assert os.stat(d).st_nlink == 3  # "." , its entry, and sub's ".."
    # None of it is readable in the store: names, owners and xattr values are encrypted.
    for key in vault.list_keys():
        raw = vault.get_raw(key)
        assert b"user.color" not in raw and b"blue" not in raw and b"mine" not in raw


def test_unlinked_open_file_commits_nothing_and_leaves_no_name(vault: Vault) -> None:
    m = vault.mount("mnt", ttl=1)
    path = m.p("gone")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"before")
        os.fsync(fd)
        os.unlink(path)
        assert os.listdir(m.path) == []
        os.write(fd, b" and after")
        os.lseek(fd, 0, os.SEEK_SET)
        assert os.read(fd, 100) == b"before and after"
        assert os.fstat(fd).st_nlink == 0
    finally:
        os.close(fd)
    m.sync()
    m.remount()
    assert os.listdir(m.path) == []


def test_owner_override_shows_everything_as_the_mounting_user(vault: Vault) -> None:
    m = vault.mount("mnt", ttl=1, extra=("--owner-override",))
    path = m.p("f")
    with open(path, "wb") as f:
        f.write(b"x")
    os.chown(path, OTHER_UID, OTHER_GID)  # stored, though not shown
    assert (os.stat(path).st_uid, os.stat(path).st_gid) == (os.getuid(), os.getgid())
    m.umount()
    plain = vault.mount("plain", ttl=1)
    st = os.stat(plain.p("f"))
    assert (st.st_uid, st.st_gid) == (OTHER_UID, OTHER_GID)


def test_folder_times_change_only_with_its_names(vault: Vault) -> None:
    """A folder's mtime follows creations, removals and renames in it, and nothing else:
    not a chmod of a child, not a new version of a child (even once uploaded), and
    not a utimensat that leaves mtime out (UTIME_OMIT)."""
    m = vault.mount("mnt", ttl=1)
    d = m.p("d")
    os.mkdir(d)
    with open(f"{d}/f", "wb") as f:
        f.write(b"one")
    m.sync()
    os.utime(d, ns=(1_000_000_000, 2_000_000_000))
    os.chmod(f"{d}/f", 0o600)
    with open(f"{d}/f", "wb") as f:
        f.write(b"two")
    m.sync()
    utimensat(d, (3, 0), (0, UTIME_OMIT))
    st = os.stat(d)
    assert (st.st_atime_ns, st.st_mtime_ns) == (3_000_000_000, 2_000_000_000)
    m.remount()
    assert os.stat(d).st_mtime_ns == 2_000_000_000
    with open(f"{d}/g", "wb") as f:
        f.write(b"new name")
    assert os.stat(d).st_mtime_ns > 2_000_000_000


def test_xattr_limits_and_mknod_regular(vault: Vault) -> None:
    """format.md 5.3 limits: 64 KiB in all per entry (ENOSPC beyond), user.* only."""
    m = vault.mount("mnt", ttl=1)
    path = m.p("f")
    os.mknod(path, 0o640 | stat.S_IFREG)
    assert stat.S_ISREG(os.stat(path).st_mode) and os.stat(path).st_size == 0
    os.setxattr(path, "user.a", bytes(40_000))
    with pytest.raises(OSError) as info:
        os.setxattr(path, "user.b", bytes(30_000))
    assert info.value.errno == errno.ENOSPC
    with pytest.raises(OSError) as info:
        os.setxattr(path, "trusted.a", b"1")
    assert info.value.errno == errno.ENOTSUP
    assert os.listxattr(path) == ["user.a"]
    os.removexattr(path, "user.a")
    assert os.listxattr(path) == []


def test_vault_root_owner_is_stored(vault: Vault) -> None:
    m = vault.mount("mnt", ttl=1)
    assert os.stat(m.path).st_uid == os.getuid()  # no owner stored yet: the mounting user
    os.chown(m.path, OTHER_UID, OTHER_GID)
    m.sync()
    m.remount()
    assert (os.stat(m.path).st_uid, os.stat(m.path).st_gid) == (OTHER_UID, OTHER_GID)
