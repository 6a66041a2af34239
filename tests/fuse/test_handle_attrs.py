"""fchmod, fchown and futimens act on the open file, not on whatever its path names.

mfusepy 3.1.1 drops libfuse 3's file handle for chmod, chown and utimens (as it did
for truncate), so the file system sees only a path: for a file unlinked while open,
libfuse's hidden name."""

from __future__ import annotations

import os
import stat

import pytest

from tests.fuse.helpers import Mount, requires_fuse

pytestmark = [pytest.mark.mount, requires_fuse]


def test_fchmod_futimens_fchown_of_an_unlinked_open_file(local_mounted: Mount) -> None:
    path = local_mounted.p("f")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"data")
        os.unlink(path)
        os.fchmod(fd, 0o600)
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
        os.utime(fd, ns=(1_000_000_000, 2_000_000_000))
        assert os.fstat(fd).st_mtime_ns == 2_000_000_000
        os.fchown(fd, -1, os.getgid())
        os.write(fd, b" more")
        assert os.pread(fd, 100, 0) == b"data more"
    finally:
        os.close(fd)
    assert os.listdir(local_mounted.path) == []
